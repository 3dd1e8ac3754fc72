"""Popen for the spawn start method on POSIX: a fresh interpreter started by
_cmultiprocessing.spawnv_passfds, fed its process object over a pipe."""

import os

from . import popen_fork
from . import spawn
from . import util

__all__ = ['Popen']


class _DupFd:
    """An fd the spawned child inherits under the same number."""

    __slots__ = ('fd',)

    def __init__(self, fd):
        self.fd = fd

    def detach(self):
        return self.fd


class Popen(popen_fork.Popen):
    method = 'spawn'
    DupFd = _DupFd

    def __init__(self, process_obj):
        self._fds = []          # descriptors the child must inherit
        super().__init__(process_obj)

    def duplicate_for_child(self, fd):
        self._fds.append(fd)
        return fd

    def _launch(self, process_obj):
        from . import resource_tracker
        tracker_fd = resource_tracker.getfd()
        self._fds.append(tracker_fd)
        payload = spawn._pickle_for_child(self, process_obj)
        # exit_r sees EOF when the child (holding exit_w) exits;
        # feed_r is how the child gets its data, and while we keep
        # feed_w open the child knows its parent is alive.
        exit_r, exit_w = os.pipe()
        try:
            feed_r, feed_w = os.pipe()
        except BaseException:
            util.close_fds(exit_r, exit_w)
            raise
        self.finalizer = util.Finalize(self, util.close_fds,
                                       (exit_r, feed_w))
        try:
            argv = spawn.get_command_line(tracker_fd=tracker_fd,
                                          pipe_handle=feed_r)
            self.pid = util.spawnv_passfds(spawn.get_executable(), argv,
                                           self._fds + [feed_r, exit_w])
            self.sentinel = exit_r
        finally:
            util.close_fds(feed_r, exit_w)
        spawn._write_all(feed_w, payload)
