"""Popen for the forkserver start method: the child is forked by the fork
server, so its pid and exit code come from the server over a pipe (the
sentinel) instead of from waitpid()."""

import os

from . import forkserver
from . import popen_fork
from . import spawn
from . import util

__all__ = ['Popen']

# The exit code reported when the server vanished without telling.
_LOST = 255


class _DupFd:
    """An fd the child finds at position ind of its inherited fds."""

    __slots__ = ('ind',)

    def __init__(self, ind):
        self.ind = ind

    def detach(self):
        return forkserver.get_inherited_fds()[self.ind]


def _readable(fd, timeout):
    """Wait until fd is readable (timeout None: for ever)."""
    import select
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    return bool(poller.poll(ms))


class Popen(popen_fork.Popen):
    method = 'forkserver'
    DupFd = _DupFd

    def __init__(self, process_obj):
        self._fds = []          # fds the child will find in inherited fds
        super().__init__(process_obj)

    def duplicate_for_child(self, fd):
        self._fds.append(fd)
        return len(self._fds) - 1

    def _launch(self, process_obj):
        payload = spawn._pickle_for_child(self, process_obj)
        try:
            self.sentinel, data_w = forkserver.connect_to_new_process(
                self._fds)
            # The child watches the data pipe for EOF to learn that we
            # died: keep a copy of its write end open as long as we live.
            keep = os.dup(data_w)
            self.finalizer = util.Finalize(self, util.close_fds,
                                           (keep, self.sentinel))
            try:
                spawn._write_all(data_w, payload)
            finally:
                os.close(data_w)
        finally:
            # payload is a view of a BytesIO: let go of it now, not when a
            # traceback holding both is collected (which would find the
            # BytesIO still exported).
            payload.release()
        self.pid = forkserver.read_signed(self.sentinel)

    def poll(self, flag=os.WNOHANG):
        if self.returncode is None:
            if not _readable(self.sentinel,
                             0 if flag == os.WNOHANG else None):
                return None
            self.returncode = self._read_exit_code()
        return self.returncode

    def _read_exit_code(self):
        try:
            return forkserver.read_signed(self.sentinel)
        except (OSError, EOFError):
            return _LOST        # the server was killed

    def wait(self, timeout=None):
        if self.returncode is None:
            if not _readable(self.sentinel, timeout):
                return None
            self.returncode = self._read_exit_code()
        return self.returncode
