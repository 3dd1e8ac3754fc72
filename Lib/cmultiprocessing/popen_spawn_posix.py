"""Popen for the spawn start method on POSIX: a fresh interpreter started by
_cmultiprocessing.spawnv_passfds, fed its process object over a pipe."""

import errno
import os

from . import popen_fork
from . import spawn
from . import util

__all__ = ['Popen']


class _DupFd(int):
    """An fd that the spawned child inherits under the same number."""

    fd = property(int.__int__)

    def detach(self):
        return int(self)


class Popen(popen_fork.Popen):
    method = 'spawn'
    DupFd = _DupFd

    def duplicate_for_child(self, fd):
        # Passed to spawnv_passfds: the child has it under the same number.
        self._fds.append(fd)
        return fd

    def __init__(self, process_obj):
        self._fds = []
        popen_fork.Popen.__init__(self, process_obj)

    def _launch(self, process_obj):
        from . import resource_tracker
        tracker_fd = resource_tracker.getfd()
        self._fds.append(tracker_fd)
        payload = spawn._pickle_for_child(self, process_obj)
        # exit_r sees EOF when the child (holding exit_w) exits; the child
        # reads its data from feed_r, and while we keep feed_w open it
        # knows its parent is alive.
        exit_r, exit_w, feed_r, feed_w = spawn._open_pipes(2)
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
        try:
            spawn._write_all(feed_w, payload)
        except BrokenPipeError:
            # The new program ended before reading its data (a message
            # that fits the pipe is written anyway, and the exit code
            # tells): say which program, and how it ended.
            code = self.wait(5)
            how = ('is still running' if code is None else
                   'exited with status %d' % code if code >= 0 else
                   'was killed by signal %d' % -code)
            raise BrokenPipeError(
                errno.EPIPE, 'the new process (pid %d, %s) %s before it '
                'read its data; its own messages, if any, went to stderr'
                % (self.pid, os.fsdecode(argv[0]), how)) from None
        finally:
            payload.release()
