"""Process objects for cmultiprocessing.

A ``BaseProcess`` is the parent's handle on one child (started through the
``_Popen`` of its context); the module also keeps the current process's view
of itself (``current_process()``), of its parent (``parent_process()``) and
of the children it started and has not yet seen finish.
"""

__all__ = ['BaseProcess', 'current_process', 'active_children',
           'parent_process']

import itertools
import os
import sys
# The light module behind weakref.WeakSet: `weakref` and `threading` are
# left to the code that uses them, so a new child does not load them.
from _weakrefset import WeakSet


def _startup_cwd():
    try:
        return os.path.abspath(os.getcwd())
    except OSError:
        return None


# Where the main program started; spawned children chdir back to it.
ORIGINAL_DIR = _startup_cwd()

_signal_names = {}


def _exit_code_names():
    """{-signum: '-SIGNAME'}: how repr() shows a child killed by a signal.

    Made on first use: the signal module brings enum along, which a new
    child would otherwise import for nothing."""
    if not _signal_names:
        import signal
        for attr, value in vars(signal).items():
            if attr[:3] == 'SIG' and '_' not in attr:
                _signal_names[-int(value)] = '-' + attr
    return _signal_names


def __getattr__(name):
    # The standard library's name for the table above.
    if name == '_exitcode_to_name':
        return _exit_code_names()
    raise AttributeError('module %r has no attribute %r' % (__name__, name))

# Every process object ever created (weakly), for leak checks in tests.
_dangling = WeakSet()


def _cleanup():
    """Forget children whose exit has been collected."""
    finished = [child for child in list(_children)
                if child._popen is not None
                and child._popen.poll() is not None]
    _children.difference_update(finished)


def active_children():
    """Children started by this process that have not finished yet."""
    _cleanup()
    return [*_children]


def _exit_code_of(exc):
    """Map a SystemExit raised by the child's run() to an exit code."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write('%s\n' % (code,))
    return 1


_NOT_RUNNING_YET = 'initial'


def _print_crash(name):
    """Report an exception that escaped run() on the child's stderr."""
    from traceback import print_exc
    sys.stderr.write('Process %s:\n' % name)
    print_exc()


def _loaded_threading():
    """The threading module if this process has imported it, else None
    (with no threading module, there are no threads to join or fix up)."""
    return sys.modules.get('threading')


def _leave_child(util, exitcode):
    """Last steps of a child: wait for its non-daemon threads, flush."""
    threading = _loaded_threading()
    if threading is not None:
        threading._shutdown()
    util.info('process exiting with exitcode %d' % exitcode)
    util._flush_std_streams()


# (context, util), filled on first need.  start() fills it in the parent
# so that a forked child skips the import machinery (in a fresh child every
# page the interpreter writes costs a copy-on-write fault).
_PACKAGE_MODULES = []


def _package_modules():
    if not _PACKAGE_MODULES:
        from . import context, util
        _PACKAGE_MODULES[:] = context, util
    return _PACKAGE_MODULES


def _reset_after_fork():
    """Default after-fork work of a child: forget the parent's finalizers,
    run the hooks registered with util.register_after_fork()."""
    util = _package_modules()[1]
    if util._finalizer_registry:
        util._finalizer_registry.clear()
    util._run_after_forkers()


_PY314 = sys.version_info >= (3, 14)
# The default of BaseProcess(kwargs=...): None from 3.14 on, {} before.
_NO_KWARGS = None if _PY314 else {}


class BaseProcess(object):
    """Activity run in a separate process; the API of threading.Thread."""

    _start_method = None

    def _Popen(self):
        raise NotImplementedError

    def __init__(self, group=None, target=None, name=None, args=(),
                 kwargs=_NO_KWARGS, *, daemon=None):
        assert group is None, 'group argument must be None for now'
        creator = _current_process
        ident = (*creator._identity, next(_process_counter))
        self._identity, self._config = ident, dict(creator._config)
        self._parent_pid, self._parent_name = os.getpid(), creator.name
        self._popen, self._closed = None, False
        self._target, self._args, self._kwargs = \
            target, tuple(args), \
            (dict(kwargs) if kwargs or not _PY314 else {})
        self._name = name or '%s-%s' % (type(self).__name__,
                                        ':'.join(map(str, ident)))
        _dangling.add(self)
        if daemon is not None:
            self.daemon = daemon

    # -- guards ------------------------------------------------------------

    def _popen_of_child(self, what):
        """The Popen of a child of this very process (checks included)."""
        self._check_closed()
        assert self._parent_pid == os.getpid(), what
        return self._popen

    def _check_closed(self):
        if not self._closed:
            return
        raise ValueError("process object is closed")

    def _start_problem(self):
        """Why this object may not start a child now, or None."""
        if self._popen is not None:
            return 'cannot start a process twice'
        if self._parent_pid != os.getpid():
            return 'can only start a process object created by current process'
        if _current_process._config.get('daemon'):
            return 'daemonic processes are not allowed to have children'
        return None

    # -- the child's side --------------------------------------------------

    def run(self):
        """The code run in the child; by default, target(*args, **kwargs)."""
        target = self._target
        if target:
            target(*self._args, **self._kwargs)

    # -- the parent's side -------------------------------------------------

    def start(self):
        """Start the child process."""
        self._check_closed()
        problem = self._start_problem()
        assert problem is None, problem
        _cleanup()
        _package_modules()
        self._popen = self._Popen(self)
        self._sentinel = self._popen.sentinel
        # The child has its own copy now; dropping ours avoids a cycle when
        # the target refers back to this object (bpo-30775).
        for attr in ('_target', '_args', '_kwargs'):
            delattr(self, attr)
        _children.add(self)

    def _signal(self, how):
        self._check_closed()
        getattr(self._popen, how)()

    if _PY314:
        def interrupt(self):
            """Interrupt the child (SIGINT: KeyboardInterrupt in Python)."""
            self._signal('interrupt')

    def terminate(self):
        """Ask the child to stop (SIGTERM)."""
        self._signal('terminate')

    def kill(self):
        """Stop the child at once (SIGKILL)."""
        self._signal('kill')

    def join(self, timeout=None):
        """Wait until the child ends, or until `timeout` seconds passed."""
        popen = self._popen_of_child('can only join a child process')
        assert popen is not None, 'can only join a started process'
        if popen.wait(timeout) is None:
            return
        _children.discard(self)

    def is_alive(self):
        """Whether the process has started and not yet ended."""
        self._check_closed()
        if self is _current_process:
            return True
        popen = self._popen_of_child('can only test a child process')
        running = popen is not None and popen.poll() is None
        if popen is not None and not running:
            _children.discard(self)
        return running

    def close(self):
        """Release the resources of a finished process object."""
        popen = self._popen
        if popen is not None and popen.poll() is None:
            raise ValueError(
                "Cannot close a process while it is still running. "
                "You should first call join() or terminate().")
        if popen is not None:
            popen.close()
            self._popen = None
            del self._sentinel
            _children.discard(self)
        self._closed = True

    # -- attributes --------------------------------------------------------

    def _set_name(self, name):
        assert isinstance(name, str), 'name must be a string'
        self._name = name

    name = property(lambda self: self._name, _set_name)

    def _set_daemon(self, daemonic):
        assert self._popen is None, 'process has already started'
        self._config['daemon'] = daemonic

    daemon = property(
        lambda self: self._config.get('daemon', False), _set_daemon,
        doc="Daemonic children are terminated when their parent exits.")

    def _set_authkey(self, authkey):
        self._config['authkey'] = AuthenticationString(authkey)

    authkey = property(lambda self: self._config['authkey'], _set_authkey)

    @property
    def exitcode(self):
        """The exit code, -N if killed by signal N, None while running."""
        self._check_closed()
        return self._popen.poll() if self._popen is not None else None

    @property
    def ident(self):
        """The pid, or None before start."""
        self._check_closed()
        if self is not _current_process:
            return self._popen and self._popen.pid
        return os.getpid()

    pid = ident

    @property
    def sentinel(self):
        """A handle that becomes ready when the process ends."""
        self._check_closed()
        if '_sentinel' not in self.__dict__:
            raise ValueError("process not started")
        return self._sentinel

    def _status(self):
        """(status word, exit code or None) for repr()."""
        if self is _current_process:
            return 'started', None
        if self._closed:
            return 'closed', None
        if self._parent_pid != os.getpid():
            return 'unknown', None
        if self._popen is None:
            return _NOT_RUNNING_YET, None
        code = self._popen.poll()
        return ('started', None) if code is None else ('stopped', code)

    def __repr__(self):
        status, code = self._status()
        parts = ['%s name=%r' % (type(self).__name__, self._name)]
        if self._popen is not None:
            parts.append('pid=%s' % (self._popen.pid,))
        parts.append('parent=%s %s' % (self._parent_pid, status))
        if code is not None:
            parts.append('exitcode=%s' % (_exit_code_names().get(code, code),))
        if self.daemon:
            parts.append('daemon')
        return '<%s>' % ' '.join(parts)

    # -- bootstrap, run in the new process ---------------------------------

    def _become_current(self, parent_sentinel):
        """Install this object as the current process of a new child."""
        global _current_process, _parent_process
        global _process_counter, _children
        context, util = _package_modules()
        method = self._start_method
        if method is not None:
            context._force_start_method(method)
        _process_counter, _children = itertools.count(1), set()
        util._close_stdin()
        # The parent's process object may have finalizers of its own: keep
        # it alive until the after-fork hooks have run.
        previous, _current_process = _current_process, self
        _parent_process = _ParentProcess(
            self._parent_name, self._parent_pid, parent_sentinel)
        threading = _loaded_threading()
        if getattr(threading, '_HAVE_THREAD_NATIVE_ID', False):
            threading.main_thread()._set_native_id()
        try:
            self._after_fork()
        finally:
            del previous

    def _run_then_exit_function(self, util):
        if not _EXIT_FUNCTION_IN_BOOTSTRAP:
            self.run()
            return
        try:
            self.run()
        finally:
            util._exit_function()

    def _bootstrap(self, parent_sentinel=None):
        util = _package_modules()[1]
        exitcode = 1
        try:
            self._become_current(parent_sentinel)
            util.info('child process calling self.run()')
            self._run_then_exit_function(util)
            exitcode = 0
        except SystemExit as exc:
            exitcode = _exit_code_of(exc)
        except BaseException:
            _print_crash(self.name)
        finally:
            _leave_child(util, exitcode)
        return exitcode

    _after_fork = staticmethod(_reset_after_fork)


# Before 3.13 the child runs multiprocessing's exit function itself; from
# 3.13 on it is left to atexit (which popen_fork runs before _exit).
_EXIT_FUNCTION_IN_BOOTSTRAP = sys.version_info < (3, 13)


class AuthenticationString(bytes):
    """bytes that refuse to be pickled except to start a child process."""

    def __reduce__(self):
        from .context import get_spawning_popen
        if get_spawning_popen() is not None:
            return AuthenticationString, (bytes(self),)
        raise TypeError('Pickling an AuthenticationString object is '
                        'disallowed for security reasons')


def _sentinel_ready(sentinel, timeout):
    if isinstance(sentinel, int) and os.name == 'posix':
        import _cmultiprocessing
        return _cmultiprocessing.wait_readable(sentinel, timeout)
    from .connection import wait
    return bool(wait([sentinel], timeout=timeout))


class _ParentProcess(BaseProcess):
    """The parent as seen from a child, watched through a sentinel."""

    def __init__(self, name, pid, sentinel):
        self.__dict__.update(
            _identity=(), _config={}, _name=name, _pid=pid, _parent_pid=None,
            _popen=None, _closed=False, _sentinel=sentinel)

    def is_alive(self):
        return not _sentinel_ready(self._sentinel, 0)

    def join(self, timeout=None):
        """Wait until the parent process ends."""
        _sentinel_ready(self._sentinel, timeout)

    ident = pid = property(lambda self: self._pid)


class _MainProcess(BaseProcess):
    """The process the program was started in."""

    def __init__(self):
        # Inherited by every descendant.  The semaphore prefix is short on
        # purpose: some systems cap semaphore names at 14 characters.
        config = {'semprefix': '/mp',
                  'authkey': AuthenticationString(os.urandom(32))}
        self.__dict__.update(
            _identity=(), _name='MainProcess', _parent_pid=None,
            _popen=None, _closed=False, _config=config)

    def close(self):
        pass


def current_process():
    """The process object of the running process."""
    return _current_process


def parent_process():
    """The process object of the parent, or None in the main process."""
    return _parent_process


_current_process = _MainProcess()
_parent_process = None
_process_counter = itertools.count(1)
_children = set()
del _MainProcess
