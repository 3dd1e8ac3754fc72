"""Process objects for cmultiprocessing.

A ``BaseProcess`` is the parent's handle on one child (started through the
``_Popen`` of its context); the module also keeps the current process's view
of itself (``current_process()``), of its parent (``parent_process()``) and
of the children it started and has not yet seen finish.
"""

import itertools
import os
import signal
import sys
import threading
from weakref import WeakSet

__all__ = ['BaseProcess', 'current_process', 'active_children',
           'parent_process']


def _startup_cwd():
    try:
        return os.path.abspath(os.getcwd())
    except OSError:
        return None


# Where the main program started; spawned children chdir back to it.
ORIGINAL_DIR = _startup_cwd()

# Exit codes of processes killed by a signal, as '-SIGNAME' for reprs.
_exitcode_to_name = {
    -value: '-' + key
    for key, value in list(vars(signal).items())
    if key.startswith('SIG') and '_' not in key
}

# Every process object ever created (weakly), for leak checks in tests.
_dangling = WeakSet()


def current_process():
    """The process object of the running process."""
    return _current_process


def parent_process():
    """The process object of the parent, or None in the main process."""
    return _parent_process


def active_children():
    """Children started by this process that have not finished yet."""
    _cleanup()
    return list(_children)


def _cleanup():
    """Forget children whose exit has been collected."""
    for child in tuple(_children):
        popen = child._popen
        if popen is not None and popen.poll() is not None:
            _children.discard(child)


def _exit_code_of(exc):
    """Map a SystemExit raised by the child's run() to an exit code."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write('%s\n' % (code,))
    return 1


class BaseProcess(object):
    """Activity run in a separate process; the API of threading.Thread."""

    _start_method = None

    def _Popen(self):
        raise NotImplementedError

    def __init__(self, group=None, target=None, name=None, args=(), kwargs={},
                 *, daemon=None):
        assert group is None, 'group argument must be None for now'
        me = _current_process
        self._identity = me._identity + (next(_process_counter),)
        self._config = dict(me._config)
        self._parent_pid = os.getpid()
        self._parent_name = me.name
        self._popen = None
        self._closed = False
        self._target = target
        self._args = tuple(args)
        self._kwargs = dict(kwargs)
        if name:
            self._name = name
        else:
            digits = ':'.join(map(str, self._identity))
            self._name = '%s-%s' % (type(self).__name__, digits)
        if daemon is not None:
            self.daemon = daemon
        _dangling.add(self)

    # -- guards ------------------------------------------------------------

    def _check_closed(self):
        if self._closed:
            raise ValueError("process object is closed")

    def _check_owner(self, message):
        assert self._parent_pid == os.getpid(), message

    # -- the child's side --------------------------------------------------

    def run(self):
        """The code run in the child; by default, target(*args, **kwargs)."""
        if self._target:
            self._target(*self._args, **self._kwargs)

    # -- the parent's side -------------------------------------------------

    def start(self):
        """Start the child process."""
        self._check_closed()
        assert self._popen is None, 'cannot start a process twice'
        self._check_owner(
            'can only start a process object created by current process')
        assert not _current_process._config.get('daemon'), \
            'daemonic processes are not allowed to have children'
        _cleanup()
        popen = self._Popen(self)
        self._popen = popen
        self._sentinel = popen.sentinel
        # The child has its own copy now; dropping ours avoids a cycle when
        # the target refers back to this object (bpo-30775).
        del self._target, self._args, self._kwargs
        _children.add(self)

    def terminate(self):
        """Ask the child to stop (SIGTERM)."""
        self._check_closed()
        self._popen.terminate()

    def kill(self):
        """Stop the child at once (SIGKILL)."""
        self._check_closed()
        self._popen.kill()

    def join(self, timeout=None):
        """Wait until the child ends, or until `timeout` seconds passed."""
        self._check_closed()
        self._check_owner('can only join a child process')
        popen = self._popen
        assert popen is not None, 'can only join a started process'
        if popen.wait(timeout) is not None:
            _children.discard(self)

    def is_alive(self):
        """Whether the process has started and not yet ended."""
        self._check_closed()
        if self is _current_process:
            return True
        self._check_owner('can only test a child process')
        popen = self._popen
        if popen is None:
            return False
        if popen.poll() is None:
            return True
        _children.discard(self)
        return False

    def close(self):
        """Release the resources of a finished process object."""
        popen = self._popen
        if popen is not None:
            if popen.poll() is None:
                raise ValueError(
                    "Cannot close a process while it is still running. "
                    "You should first call join() or terminate().")
            popen.close()
            self._popen = None
            del self._sentinel
            _children.discard(self)
        self._closed = True

    # -- attributes --------------------------------------------------------

    @property
    def name(self):
        return self._name

    @name.setter
    def name(self, name):
        assert isinstance(name, str), 'name must be a string'
        self._name = name

    @property
    def daemon(self):
        """Daemonic children are terminated when their parent exits."""
        return self._config.get('daemon', False)

    @daemon.setter
    def daemon(self, daemonic):
        assert self._popen is None, 'process has already started'
        self._config['daemon'] = daemonic

    @property
    def authkey(self):
        return self._config['authkey']

    @authkey.setter
    def authkey(self, authkey):
        self._config['authkey'] = AuthenticationString(authkey)

    @property
    def exitcode(self):
        """The exit code, -N if killed by signal N, None while running."""
        self._check_closed()
        popen = self._popen
        return None if popen is None else popen.poll()

    @property
    def ident(self):
        """The pid, or None before start."""
        self._check_closed()
        if self is _current_process:
            return os.getpid()
        popen = self._popen
        return popen and popen.pid

    pid = ident

    @property
    def sentinel(self):
        """A handle that becomes ready when the process ends."""
        self._check_closed()
        try:
            return self._sentinel
        except AttributeError:
            raise ValueError("process not started") from None

    def _status(self):
        """(status word, exit code or None) for repr()."""
        if self is _current_process:
            return 'started', None
        if self._closed:
            return 'closed', None
        if self._parent_pid != os.getpid():
            return 'unknown', None
        if self._popen is None:
            return 'initial', None
        code = self._popen.poll()
        return ('started', None) if code is None else ('stopped', code)

    def __repr__(self):
        status, code = self._status()
        parts = ['%s name=%r' % (type(self).__name__, self._name)]
        if self._popen is not None:
            parts.append('pid=%s' % (self._popen.pid,))
        parts.append('parent=%s %s' % (self._parent_pid, status))
        if code is not None:
            parts.append('exitcode=%s' % (_exitcode_to_name.get(code, code),))
        if self.daemon:
            parts.append('daemon')
        return '<%s>' % ' '.join(parts)

    # -- bootstrap, run in the new process ---------------------------------

    def _become_current(self, parent_sentinel):
        """Install this object as the current process of a new child."""
        global _current_process, _parent_process
        global _process_counter, _children
        from . import context, util
        if self._start_method is not None:
            context._force_start_method(self._start_method)
        _process_counter = itertools.count(1)
        _children = set()
        util._close_stdin()
        previous = _current_process
        _current_process = self
        _parent_process = _ParentProcess(
            self._parent_name, self._parent_pid, parent_sentinel)
        if getattr(threading, '_HAVE_THREAD_NATIVE_ID', False):
            threading.main_thread()._set_native_id()
        try:
            self._after_fork()
        finally:
            # The parent's process object may have finalizers of its own:
            # let it go only once the after-fork hooks have run.
            del previous

    def _bootstrap(self, parent_sentinel=None):
        from . import util
        exitcode = 1
        try:
            self._become_current(parent_sentinel)
            util.info('child process calling self.run()')
            if _EXIT_FUNCTION_IN_BOOTSTRAP:
                try:
                    self.run()
                finally:
                    util._exit_function()
            else:
                self.run()
            exitcode = 0
        except SystemExit as exc:
            exitcode = _exit_code_of(exc)
        except:
            exitcode = 1
            import traceback
            sys.stderr.write('Process %s:\n' % self.name)
            traceback.print_exc()
        finally:
            threading._shutdown()
            util.info('process exiting with exitcode %d' % exitcode)
            util._flush_std_streams()
        return exitcode

    @staticmethod
    def _after_fork():
        from . import util
        util._finalizer_registry.clear()
        util._run_after_forkers()


# Before 3.13 the child runs multiprocessing's exit function itself; from
# 3.13 on it is left to atexit (which popen_fork runs before _exit).
_EXIT_FUNCTION_IN_BOOTSTRAP = sys.version_info < (3, 13)


class AuthenticationString(bytes):
    """bytes that refuse to be pickled except to start a child process."""

    def __reduce__(self):
        from .context import get_spawning_popen
        if get_spawning_popen() is None:
            raise TypeError(
                'Pickling an AuthenticationString object is '
                'disallowed for security reasons')
        return AuthenticationString, (bytes(self),)


def _sentinel_ready(sentinel, timeout):
    if isinstance(sentinel, int) and os.name == 'posix':
        import _cmultiprocessing
        return _cmultiprocessing.wait_readable(sentinel, timeout)
    from .connection import wait
    return bool(wait([sentinel], timeout=timeout))


class _ParentProcess(BaseProcess):
    """The parent as seen from a child, watched through a sentinel."""

    def __init__(self, name, pid, sentinel):
        self._identity = ()
        self._config = {}
        self._name = name
        self._pid = pid
        self._parent_pid = None
        self._popen = None
        self._closed = False
        self._sentinel = sentinel

    def is_alive(self):
        return not _sentinel_ready(self._sentinel, 0)

    def join(self, timeout=None):
        """Wait until the parent process ends."""
        _sentinel_ready(self._sentinel, timeout)

    @property
    def ident(self):
        return self._pid

    pid = ident


class _MainProcess(BaseProcess):
    """The process the program was started in."""

    def __init__(self):
        self._identity = ()
        self._name = 'MainProcess'
        self._parent_pid = None
        self._popen = None
        self._closed = False
        # Inherited by every descendant.  The semaphore prefix is short on
        # purpose: some systems cap semaphore names at 14 characters.
        self._config = {'semprefix': '/mp',
                        'authkey': AuthenticationString(os.urandom(32))}

    def close(self):
        pass


_parent_process = None
_current_process = _MainProcess()
_process_counter = itertools.count(1)
_children = set()
del _MainProcess
