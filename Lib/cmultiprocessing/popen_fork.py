"""Start a child process by forking the current one.

The fork, the two sentinel pipes and the waiting all happen in
_cmultiprocessing: the parent keeps the read end of a pipe whose write end
only the child holds (readable at EOF once the child is gone), and the child
keeps the read end of a pipe the parent holds open (its view of the parent).
"""

import os
import sys

# The signal numbers straight from the built-in module the interpreter
# loaded at start-up: `signal` itself would import enum into every child.
from _signal import SIGINT, SIGKILL, SIGTERM

import _cmultiprocessing as _native

from . import util

__all__ = ['Popen']

_WNOHANG = getattr(os, 'WNOHANG', 1)

if sys.version_info >= (3, 13):
    import atexit

    def _run_child(process_obj, parent_sentinel):
        # 3.13: atexit runs in the child (with only our exit function
        # registered), since the child leaves through os._exit().
        atexit._clear()
        atexit.register(util._exit_function)
        try:
            return process_obj._bootstrap(parent_sentinel=parent_sentinel)
        finally:
            atexit._run_exitfuncs()
else:
    def _run_child(process_obj, parent_sentinel):
        return process_obj._bootstrap(parent_sentinel=parent_sentinel)


if sys.version_info >= (3, 14):
    _TRACKER_MODULE = __name__.rpartition('.')[0] + '.resource_tracker'

    def _fork():
        # Tell the resource tracker's at-fork handler that this child is a
        # Process: it keeps the tracker's pipe and uses the parent's tracker
        # (a bare os.fork() child lets go of it).  A program that never
        # loaded the tracker has none to keep.
        tracker = sys.modules.get(_TRACKER_MODULE)
        if tracker is None:
            return _native.fork_with_sentinels()
        intent = tracker._fork_intent
        intent.preserve_fd = True
        try:
            return _native.fork_with_sentinels()
        finally:
            # In the parent and the child alike: a later bare fork in this
            # thread is not a Process.
            intent.preserve_fd = False
else:
    _fork = _native.fork_with_sentinels


# 3.12+: os.fork() in a process with other threads warns in the parent
# (gh-100228); the native fork does what os.fork does, the warning too.
_WARNS_ABOUT_THREADS = sys.version_info >= (3, 12)


def _thread_count():
    """The threads of this process, counted as os.fork() counts them: the
    kernel's count where /proc has it, else threading's."""
    try:
        with open('/proc/self/stat', 'rb') as f:
            stat = f.read()
        return int(stat[stat.rfind(b')') + 2:].split()[17])
    except (OSError, ValueError, IndexError):
        threading = sys.modules.get('threading')
        if threading is None:
            return 1
        return len(threading._active) + len(threading._limbo)


def _warn_if_threaded(name):
    if _thread_count() > 1:
        import warnings
        warnings.warn('This process (pid=%d) is multi-threaded, use of %s() '
                      'may lead to deadlocks in the child.'
                      % (os.getpid(), name), DeprecationWarning, stacklevel=2)


def _child_main(process_obj, parent_sentinel):
    """Run in the new child; never returns."""
    code = 1
    try:
        code = _run_child(process_obj, parent_sentinel)
    finally:
        os._exit(code)


class Popen(object):
    method = 'fork'

    def __init__(self, process_obj):
        util._flush_std_streams()
        self.returncode = self.finalizer = None
        self._launch(process_obj)

    def duplicate_for_child(self, fd):
        # A forked child inherits every descriptor as it is.
        return fd

    def _record(self, code):
        if self.returncode is None and code is not None:
            self.returncode = code
        return self.returncode

    def poll(self, flag=_WNOHANG):
        """The exit code, or None while the child runs.  With flag 0, wait
        for it."""
        if self.returncode is not None:
            return self.returncode
        return self._record(_native.reap(self.pid, not flag & _WNOHANG))

    def wait(self, timeout=None):
        """Wait for the child to end (at most `timeout` seconds); the exit
        code, or None on timeout."""
        if self.returncode is not None:
            return self.returncode
        return self._record(
            _native.wait_child(self.pid, self.sentinel, timeout))

    def _send_signal(self, sig):
        if self.returncode is not None:
            return
        try:
            # A child that is already gone (ESRCH) is not an error.
            _native.send_signal(self.pid, sig)
        except OSError:
            # e.g. EPERM: fine if the child turns out to be over.
            if self.wait(timeout=0.1) is None:
                raise

    if sys.version_info >= (3, 14):
        def interrupt(self):
            """Send SIGINT to the child (nothing if it is over)."""
            self._send_signal(SIGINT)

    def terminate(self):
        """Send SIGTERM to the child (nothing if it is over)."""
        self._send_signal(SIGTERM)

    def kill(self):
        """Send SIGKILL to the child (nothing if it is over)."""
        self._send_signal(SIGKILL)

    def _launch(self, process_obj):
        util._prepare_stdin_spare()
        pid, sentinel, keepalive = _fork()
        if pid == 0:
            _child_main(process_obj, sentinel)
        if _WARNS_ABOUT_THREADS:
            _warn_if_threaded('fork')
        self.pid, self.sentinel = pid, sentinel
        self.finalizer = util.Finalize(self, util.close_fds,
                                       (sentinel, keepalive))

    def close(self):
        if self.finalizer is not None:
            self.finalizer()
