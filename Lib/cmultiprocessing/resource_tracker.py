"""The resource tracker: a helper process that unlinks named semaphores and
shared-memory segments which the program forgot to unlink.

Every process of a program writes ``CMD:name:rtype`` lines into one pipe
whose read end the tracker holds; the tracker sees EOF once every writer
has exited and then unlinks whatever is still registered, warning about
each kind it had to clean.  The tracker ignores SIGINT and SIGTERM so that
Ctrl-C or ``killall python`` leave it to do its job.
"""

import os
import sys
import _thread

import _cmultiprocessing

from . import spawn
from . import util

__all__ = ['ensure_running', 'register', 'unregister']

_VERSION = sys.version_info[:2]

# Messages are written with one write(); POSIX makes pipe writes of at most
# PIPE_BUF (>= 512) bytes atomic, so several writers never interleave.
_MAX_MESSAGE = 512


def _unlink_semaphore(name):
    return _cmultiprocessing.sem_unlink(name)


def _unlink_shared_memory(name):
    return _cmultiprocessing.shm_unlink(name)


if _VERSION >= (3, 13):
    def _noop(name):
        raise RuntimeError('noop should never be registered or cleaned up')

    _CLEANUP_FUNCS = {
        'noop': _noop,
        'dummy': lambda name: None,     # resource type used by the tests
    }
else:
    _CLEANUP_FUNCS = {'noop': lambda: None}

if os.name == 'posix':
    _CLEANUP_FUNCS['semaphore'] = _unlink_semaphore
    _CLEANUP_FUNCS['shared_memory'] = _unlink_shared_memory


class ReentrantCallError(RuntimeError):
    pass


def _warn(message):
    import warnings
    warnings.warn(message)


class _CountingRLock:
    """An RLock that can tell how deep its owner holds it, for the Pythons
    whose RLock lacks _recursion_count() (before 3.11.6, e.g. Debian 12's
    3.11.2 -- the one LLDB embeds there)."""

    def __init__(self):
        self._rlock = _thread.RLock()
        self._depth = 0

    def __enter__(self):
        self._rlock.acquire()
        self._depth += 1
        return self

    def __exit__(self, *exc_info):
        self._depth -= 1
        self._rlock.release()

    def _recursion_count(self):
        return self._depth if self._rlock._is_owned() else 0


if hasattr(_thread.RLock(), '_recursion_count'):
    _TrackerLock = _thread.RLock
else:
    _TrackerLock = _CountingRLock


def _command(cmd, doc):
    """A ResourceTracker method sending cmd about (name, rtype)."""
    def method(self, name, rtype):
        self._send(cmd, name, rtype)
    method.__name__ = method.__qualname__ = cmd.lower()
    method.__doc__ = doc
    return method


class ResourceTracker(object):
    """The client side: starts the tracker and sends it messages."""

    def __init__(self):
        self._lock = _TrackerLock()
        self._fd = None         # write end of the tracker's pipe
        self._pid = None        # set only in the process that started it
        if _VERSION >= (3, 13):
            self._exitcode = None

    def _reentrant_call_error(self):
        # A finalizer run by the garbage collector while this thread is
        # inside the tracker (gh-109629) must not re-enter it.
        raise ReentrantCallError(
            "Reentrant call into the multiprocessing resource tracker")

    def _locked_once(self):
        """Whether the lock is held only by the current call."""
        return self._lock._recursion_count() <= 1

    def _reap(self):
        """Wait for the tracker we started; note its exit code (3.13)."""
        pid, self._pid = self._pid, None
        if pid is None:
            return
        try:
            status = os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return
        if _VERSION >= (3, 13):
            try:
                self._exitcode = os.waitstatus_to_exitcode(status)
            except ValueError:
                self._exitcode = None

    def _stop(self):
        with self._lock:
            if not self._locked_once():
                return self._reentrant_call_error()
            if self._fd is None:
                return
            # The tracker ends when its pipe has no writer left.
            os.close(self._fd)
            self._fd = None
            self._reap()

    def getfd(self):
        self.ensure_running()
        return self._fd

    def ensure_running(self):
        '''Make sure that the resource tracker process is running.

        A child normally inherits the tracker of its parent, so this starts
        one only in the first process that needs it, or again if it died.'''
        with self._lock:
            if not self._locked_once():
                return self._reentrant_call_error()
            if self._fd is not None:
                if self._check_alive():
                    return
                self._forget_dead_tracker()
            self._fd, self._pid = self._launch()
            if _VERSION >= (3, 13):
                self._exitcode = None

    def _forget_dead_tracker(self):
        os.close(self._fd)
        self._fd = None
        self._reap()
        _warn('resource_tracker: process died unexpectedly, '
              'relaunching.  Some resources might leak.')

    def _launch(self):
        """Start a tracker; returns (write end of its pipe, pid)."""
        inherited = []
        try:
            inherited.append(sys.stderr.fileno())
        except Exception:
            pass
        exe = spawn.get_executable()
        r, w = os.pipe()
        try:
            inherited.append(r)
            argv = [exe] + util._args_from_interpreter_flags() + [
                '-c', spawn._child_code(
                    'from cmultiprocessing.resource_tracker import main;'
                    'main(%d)' % r)]
            pid = _spawn_with_signals_blocked(exe, argv, inherited)
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        return w, pid

    def _check_alive(self):
        '''Whether the tracker still reads its pipe (a probe message).'''
        try:
            os.write(self._fd, b'PROBE:0:noop\n')
        except OSError:
            return False
        return True

    register = _command(
        'REGISTER', 'Have the tracker unlink name (an rtype) at shutdown '
        'unless it is unregistered first.')
    unregister = _command(
        'UNREGISTER', 'Tell the tracker that name (an rtype) was unlinked.')

    def _send(self, cmd, name, rtype):
        message = ('%s:%s:%s\n' % (cmd, name, rtype)).encode('ascii')
        if len(message) > _MAX_MESSAGE:
            raise ValueError('msg too long')
        # The message itself tells whether the tracker still reads its pipe
        # (a write to a pipe nobody reads fails with EPIPE): one write per
        # message, and the probe, restart and warning only after a failure.
        if self._fd is not None and _write_message(self._fd, message):
            return
        try:
            self.ensure_running()
        except ReentrantCallError:
            _warn(f"ResourceTracker called reentrantly for resource cleanup, "
                  f"which is unsupported. "
                  f"The {rtype} object {name!r} might leak.")
        _write_message(self._fd, message, must=True)


def _write_message(fd, message, must=False):
    """Write message to the tracker's pipe in one piece.  False if the
    pipe is broken or closed (unless `must`: then that raises)."""
    try:
        written = os.write(fd, message)
    except OSError:
        if must:
            raise
        return False
    # At most PIPE_BUF bytes: a pipe takes them whole or not at all.
    assert written == len(message), (
        "nbytes {0:n} but len(msg) {1:n}".format(written, len(message)))
    return True


def _ignored_signals():
    # signal is imported here: children that never start a tracker should
    # not pay for it (it builds enums).
    import signal
    return signal, (signal.SIGINT, signal.SIGTERM)


def _spawn_with_signals_blocked(exe, argv, fds):
    # The new tracker inherits the mask, so SIGINT/SIGTERM cannot kill it
    # before main() has set them to be ignored (bpo-33613).
    signal, ignored = _ignored_signals()
    if not hasattr(signal, 'pthread_sigmask'):
        return util.spawnv_passfds(exe, argv, fds)
    signal.pthread_sigmask(signal.SIG_BLOCK, ignored)
    try:
        return util.spawnv_passfds(exe, argv, fds)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, ignored)


_resource_tracker = ResourceTracker()
ensure_running = _resource_tracker.ensure_running
register = _resource_tracker.register
unregister = _resource_tracker.unregister
getfd = _resource_tracker.getfd


# ---------------------------------------------------------------------------
# The tracker process
# ---------------------------------------------------------------------------

class _Registry:
    """Names registered per resource type, and the exit status (3.13)."""

    def __init__(self):
        self.names = {rtype: set() for rtype in _CLEANUP_FUNCS}
        self.exit_code = 0

    def handle(self, line):
        cmd, name, rtype = line.strip().decode('ascii').split(':')
        if rtype not in _CLEANUP_FUNCS:
            raise ValueError(
                f'Cannot register {name} for automatic cleanup: '
                f'unknown resource type {rtype}')
        if cmd == 'PROBE':
            return
        if cmd == 'REGISTER':
            self.names[rtype].add(name)
        elif cmd == 'UNREGISTER':
            self.names[rtype].remove(name)
        else:
            raise RuntimeError('unrecognized command %r' % cmd)

    def report_leaks(self, rtype, names):
        if _VERSION < (3, 13):
            _warn('resource_tracker: There appear to be %d '
                  'leaked %s objects to clean up at shutdown'
                  % (len(names), rtype))
            return
        self.exit_code = 1
        if rtype != 'dummy':        # the tests leak 'dummy' on purpose
            _warn(f'resource_tracker: There appear to be {len(names)} '
                  f'leaked {rtype} objects to clean up at shutdown: {names}')

    def clean_up(self):
        for rtype, names in self.names.items():
            if not names:
                continue
            try:
                self.report_leaks(rtype, names)
            except Exception:
                pass
            unlink = _CLEANUP_FUNCS[rtype]
            for name in names:
                # Whoever registered name died without unregistering it.
                try:
                    unlink(name)
                except Exception as exc:
                    if _VERSION >= (3, 13):
                        self.exit_code = 2
                    _warn('resource_tracker: %r: %s' % (name, exc))


def _shield_from_signals():
    # Outlive ^C and "killall python": ignore SIGINT and SIGTERM, then lift
    # the mask our parent started us with.
    signal, ignored = _ignored_signals()
    for signum in ignored:
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, 'pthread_sigmask'):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, ignored)


def _close_quietly(stream):
    try:
        stream.close()
    except Exception:
        pass


def _report_bad_line():
    try:
        sys.excepthook(*sys.exc_info())
    except BaseException:
        pass


# After handling what had arrived, the tracker pauses before it reads again.
# A writer wakes the tracker only when the tracker sleeps in read(): while it
# pauses, messages just collect in the pipe.  Without the pause each register
# and unregister would pay for waking another process (on an idle CPU, tens
# of microseconds: more than creating a shared-memory segment).  The cost is
# that clean-up at exit may start this much later.
_BATCH_PAUSE = 0.005


def _lines_in_batches(fd):
    '''The lines written into the pipe `fd` until every writer has closed
    it, read a batch at a time (see _BATCH_PAUSE).'''
    import time
    partial = b''
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            *lines, partial = (partial + chunk).split(b'\n')
            for line in lines:
                yield line + b'\n'
            time.sleep(_BATCH_PAUSE)
        if partial:
            yield partial
    finally:
        os.close(fd)


def main(fd):
    '''Run the resource tracker on the read end fd of its pipe.'''
    _shield_from_signals()
    _close_quietly(sys.stdin)
    _close_quietly(sys.stdout)
    registry = _Registry()
    try:
        for line in _lines_in_batches(fd):
            try:
                registry.handle(line)
            except Exception:
                if _VERSION >= (3, 13):
                    registry.exit_code = 3
                _report_bad_line()
    finally:
        # Every process of the program has exited: clean what is left.
        registry.clean_up()
    if _VERSION >= (3, 13):
        sys.exit(registry.exit_code)
