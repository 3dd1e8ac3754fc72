"""Popen for the spawn start method on Windows (importable only there).

The child is created with CreateProcessW (the native winspawn, which
inherits exactly the handles it is given: none here); it duplicates the
read end of an anonymous pipe out of this process (see spawn.spawn_main)
and reads its preparation data and process object from it.  The process
handle is the sentinel.
"""

import msvcrt
import os
import signal
import sys
import _winapi

import _cmultiprocessing as _native

from . import spawn
from . import util
from .context import get_spawning_popen, reduction

__all__ = ['Popen']

TERMINATE = 0x10000          # exit code given by terminate()
WINEXE = spawn.WINEXE
WINSERVICE = spawn.WINSERVICE


def _same_path(a, b):
    return a == b or os.path.normcase(a) == os.path.normcase(b)


# In a venv, sys.executable is a redirector; children are started on the
# base interpreter told about the venv (bpo-35797).
WINENV = not _same_path(sys.executable,
                        getattr(sys, '_base_executable', sys.executable))


def _close_handles(*handles):
    for handle in handles:
        _winapi.CloseHandle(handle)


def _quote(args):
    return ' '.join('"%s"' % arg for arg in args)


def _environment_block(env):
    """env (a mapping) as the NUL-separated str winspawn takes, names in
    the case-blind order Windows keeps them in."""
    if env is None:
        return None
    entries = []
    for name in sorted(env, key=str.upper):
        value = env[name]
        if '\0' in name or '\0' in value or '=' in name[1:] or not name:
            raise ValueError('illegal environment variable name or value: '
                             '%r' % (name,))
        entries.append('%s=%s\0' % (name, value))
    return ''.join(entries)


def _start_child(exe, cmdline, env):
    """(process handle, pid) of a new child that inherits no handle."""
    if hasattr(_native, 'winspawn'):
        return _native.winspawn(exe, cmdline, (), _environment_block(env))
    hp, ht, pid, _tid = _winapi.CreateProcess(
        exe, cmdline, None, None, False, 0, env, None, None)
    _winapi.CloseHandle(ht)
    return hp, pid


def _program_and_env(cmd):
    exe = spawn.get_executable()
    if WINENV and _same_path(exe, sys.executable):
        exe = cmd[0] = sys._base_executable
        env = dict(os.environ, __PYVENV_LAUNCHER__=sys.executable)
        return exe, env
    return exe, None


class Popen(object):
    method = 'spawn'

    def __init__(self, process_obj):
        spawn._check_not_importing_main()    # before creating anything
        rhandle, whandle = _winapi.CreatePipe(None, 0)
        wfd = msvcrt.open_osfhandle(whandle, 0)
        cmd = spawn.get_command_line(parent_pid=os.getpid(),
                                     pipe_handle=rhandle)
        exe, env = _program_and_env(cmd)
        with open(wfd, 'wb', closefd=True) as to_child:
            try:
                hp, pid = _start_child(exe, _quote(cmd), env)
            except BaseException:
                _winapi.CloseHandle(rhandle)
                raise
            self._adopt(hp, pid, rhandle)
            # Pickled now that the child exists: handles are duplicated
            # straight into it (duplicate_for_child).
            to_child.write(spawn._pickle_for_child(self, process_obj))

    def _adopt(self, process_handle, pid, rhandle):
        self.returncode = None
        self.pid = pid
        self._handle = process_handle
        self.sentinel = int(process_handle)
        # The child duplicates rhandle out of us: keep it until we go.
        self.finalizer = util.Finalize(
            self, _close_handles, (self.sentinel, int(rhandle)))

    def duplicate_for_child(self, handle):
        assert self is get_spawning_popen()
        return reduction.duplicate(handle, self.sentinel)

    def wait(self, timeout=None):
        if self.returncode is not None:
            return self.returncode
        ms = (_winapi.INFINITE if timeout is None
              else max(0, int(timeout * 1000 + 0.5)))
        if _winapi.WaitForSingleObject(int(self._handle), ms) == \
                _winapi.WAIT_OBJECT_0:
            code = _winapi.GetExitCodeProcess(self._handle)
            self.returncode = -signal.SIGTERM if code == TERMINATE else code
        return self.returncode

    def poll(self):
        return self.wait(timeout=0)

    def _end(self):
        """Terminate the process; its exit code."""
        handle = int(self._handle)
        try:
            _winapi.TerminateProcess(handle, TERMINATE)
            return -signal.SIGTERM
        except PermissionError:
            # Access is denied once the process has ended by itself.
            code = _winapi.GetExitCodeProcess(handle)
            if code != _winapi.STILL_ACTIVE:
                return code
            raise

    def terminate(self):
        if self.returncode is None:
            self.returncode = self._end()

    kill = terminate

    def close(self):
        self.finalizer()
