"""Start a child process by forking the current one.

The fork, the two sentinel pipes and the waiting all happen in
_cmultiprocessing: the parent keeps the read end of a pipe whose write end
only the child holds (readable at EOF once the child is gone), and the child
keeps the read end of a pipe the parent holds open (its view of the parent).
"""

import os
import signal
import sys

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


class Popen(object):
    method = 'fork'

    def __init__(self, process_obj):
        util._flush_std_streams()
        self.returncode = None
        self.finalizer = None
        self._launch(process_obj)

    def duplicate_for_child(self, fd):
        # A forked child inherits every descriptor as it is.
        return fd

    def poll(self, flag=_WNOHANG):
        """The exit code, or None while the child runs.  With flag 0, wait
        for it."""
        if self.returncode is None:
            code = _native.reap(self.pid, not (flag & _WNOHANG))
            if code is not None:
                self.returncode = code
        return self.returncode

    def wait(self, timeout=None):
        """Wait for the child to end (at most `timeout` seconds); the exit
        code, or None on timeout."""
        if self.returncode is None:
            code = _native.wait_child(self.pid, self.sentinel, timeout)
            if code is not None:
                self.returncode = code
        return self.returncode

    def _send_signal(self, sig):
        if self.returncode is not None:
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass
        except OSError:
            # e.g. EPERM from a child that already turned into a zombie
            # owned by someone else: fine if it is over.
            if self.wait(timeout=0.1) is None:
                raise

    def terminate(self):
        self._send_signal(signal.SIGTERM)

    def kill(self):
        self._send_signal(signal.SIGKILL)

    def _launch(self, process_obj):
        util._prepare_stdin_spare()
        pid, sentinel, keepalive = _native.fork_with_sentinels()
        if pid == 0:
            code = 1
            try:
                code = _run_child(process_obj, sentinel)
            finally:
                os._exit(code)
        self.pid = pid
        self.sentinel = sentinel
        self.finalizer = util.Finalize(self, util.close_fds,
                                       (sentinel, keepalive))

    def close(self):
        if self.finalizer is not None:
            self.finalizer()
