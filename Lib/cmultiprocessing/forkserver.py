"""The forkserver start method.

A server process, started once per program on a fresh interpreter (with the
main module and any preload modules imported), forks a child for every
request.  The server's loop is native: ``_cmultiprocessing.forkserver_serve``
waits for requests, SIGCHLD and the end of the program without the GIL,
forks, answers each client with the child's pid and later its exit code,
and returns only inside a new child.

A request is a connection to the server's AF_UNIX socket carrying, as
SCM_RIGHTS, the child's ends of two pipes (data in, status out), the
server's "alive" fd, the resource tracker's fd and whatever fds the process
object's pickle asked to duplicate.
"""

import os
import struct
import sys
import _thread

import _cmultiprocessing

from . import process
from . import resource_tracker
from . import spawn
from . import util

__all__ = ['ensure_running', 'get_inherited_fds', 'connect_to_new_process',
           'set_forkserver_preload']

MAXFDS_TO_SEND = 256
SIGNED_STRUCT = struct.Struct('q')     # wide enough for a pid_t

_SERVER_CMD = ('from cmultiprocessing.forkserver import main; '
               'main(%d, %d, %r, **%r)')


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _bound_listener():
    """A listening AF_UNIX socket on a new private path, and that path."""
    import socket
    address = _listener_address()
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(address)
        os.chmod(address, 0o600)
        listener.listen()
    except BaseException:
        listener.close()
        _unlink_quietly(address)
        raise
    return listener, address


def _listener_address():
    # A path in the private (0o700) temporary directory rather than an
    # abstract socket: abstract names are open to every local user.
    return os.path.join(util.get_temp_dir(),
                        'forkserver-%s' % os.urandom(6).hex())


class ForkServer(object):

    def __init__(self):
        self._lock = _thread.allocate_lock()
        self._preload_modules = ['__main__']
        self._inherited_fds = None          # set in forkserver children
        self._forget_server()

    # -- lifetime -------------------------------------------------------

    def _forget_server(self):
        """Drop what we know of the server: its alive fd is closed (which
        makes a live server leave) and its socket file removed."""
        alive = getattr(self, '_forkserver_alive_fd', None)
        address = getattr(self, '_forkserver_address', None)
        self._forkserver_pid = None
        self._forkserver_alive_fd = None
        self._forkserver_address = None
        if alive is not None:
            os.close(alive)
        if address is not None and \
                not util.is_abstract_socket_namespace(address):
            _unlink_quietly(address)

    def _stop(self):
        # The test suite stops the server between tests.
        with self._lock:
            pid = self._forkserver_pid
            if pid is not None:
                self._forget_server()
                os.waitpid(pid, 0)

    def _server_running(self):
        """Whether the server we started is still there (reaps it if not)."""
        pid = self._forkserver_pid
        if pid is None:
            return False
        try:
            gone = os.waitpid(pid, os.WNOHANG)[0] != 0
        except ChildProcessError:
            gone = True
        if gone:
            self._forget_server()
        return not gone

    def set_forkserver_preload(self, modules_names):
        '''Set list of module names to try to load in forkserver process.'''
        if not all(type(name) is str for name in modules_names):
            raise TypeError('module_names must be a list of strings')
        self._preload_modules = modules_names

    def get_inherited_fds(self):
        '''The fds passed to this child by its parent, or None when this
        process was not started by a fork server.'''
        return self._inherited_fds

    def ensure_running(self):
        '''Start the fork server unless it is already running.'''
        with self._lock:
            resource_tracker.ensure_running()
            if self._server_running():
                return
            self._launch()

    def _server_command(self, listener_fd, alive_fd):
        """(executable, argv) of a new server process."""
        options = {}
        if self._preload_modules:
            data = spawn.get_preparation_data('ignore')
            options['sys_path'] = data['sys_path']
            if 'init_main_from_path' in data:
                options['main_path'] = data['init_main_from_path']
        exe = spawn.get_executable()
        code = spawn._child_code(_SERVER_CMD % (
            listener_fd, alive_fd, self._preload_modules, options))
        return exe, [exe, *util._args_from_interpreter_flags(), '-c', code]

    def _launch(self):
        listener, address = _bound_listener()
        with listener:
            # Every client holds alive_w; when the last one is gone the
            # server sees EOF on alive_r and exits.
            alive_r, alive_w = os.pipe()
            started = False
            try:
                exe, argv = self._server_command(listener.fileno(), alive_r)
                pid = _spawn_without_sigint(exe, argv,
                                            [listener.fileno(), alive_r])
                started = True
            finally:
                os.close(alive_r)
                if not started:
                    os.close(alive_w)
                    _unlink_quietly(address)
        self._forkserver_address = address
        self._forkserver_alive_fd = alive_w
        self._forkserver_pid = pid

    # -- requests -------------------------------------------------------

    def connect_to_new_process(self, fds):
        '''Ask the server for a new child.

        Returns (status_r, data_w): the child's pid and later its exit code
        arrive on status_r; the pickled preparation data and process object
        go to data_w.'''
        self.ensure_running()
        if len(fds) + 4 >= MAXFDS_TO_SEND:
            raise ValueError('too many fds')
        status_r, status_w, data_r, data_w = spawn._open_pipes(2)
        sent = [data_r, status_w, self._forkserver_alive_fd,
                resource_tracker.getfd()]
        sent.extend(fds)
        ok = False
        try:
            _cmultiprocessing.forkserver_send(self._forkserver_address, sent)
            ok = True
        finally:
            # The server has its own copies now (or never will).
            util.close_fds(data_r, status_w)
            if not ok:
                util.close_fds(status_r, data_w)
        return status_r, data_w


def _spawn_without_sigint(exe, argv, fds):
    # The server starts with SIGINT blocked (the mask is inherited) until
    # main() ignores it, so a ^C while it imports cannot kill it.
    import signal
    if not hasattr(signal, 'pthread_sigmask'):
        return util.spawnv_passfds(exe, argv, fds)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
    try:
        return util.spawnv_passfds(exe, argv, fds)
    finally:
        if signal.SIGINT not in old:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


# ---------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------

def _preload(preload, main_path, sys_path):
    if sys_path is not None:
        sys.path[:] = sys_path
    if '__main__' in preload and main_path is not None:
        # Children then find __main__ ready instead of each running it.  If
        # it fails here, each child runs it again and reports the error.
        me = process.current_process()
        me._inheriting = True
        try:
            spawn.import_main_path(main_path)
        except Exception:
            pass
        finally:
            del me._inheriting
    for name in preload:
        try:
            __import__(name)
        except ImportError:
            pass


def main(listener_fd, alive_r, preload, main_path=None, sys_path=None):
    '''Run the fork server (in its own interpreter).'''
    import signal
    if preload:
        _preload(preload, main_path, sys_path)
    util._close_stdin()
    _forkserver._forkserver_address = _sockname(listener_fd)
    old_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)   # ^C-proof
    if hasattr(signal, 'pthread_sigmask'):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    got = _cmultiprocessing.forkserver_serve(listener_fd, alive_r,
                                             MAXFDS_TO_SEND + 1)
    if got is None:
        return              # every client has exited
    # From here on this is a new child.
    signal.signal(signal.SIGINT, old_sigint)
    code = 1
    try:
        code = _run_child(*got)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        sys.stderr.flush()
    finally:
        os._exit(code)


def _sockname(fd):
    import socket
    with socket.socket(fileno=os.dup(fd)) as listener:
        return listener.getsockname()


def _serve_child(data_fd, fds):
    (_forkserver._forkserver_alive_fd,
     resource_tracker._resource_tracker._fd,
     *_forkserver._inherited_fds) = fds
    # The client holds a copy of data_fd's write end: our parent sentinel.
    return spawn._main(data_fd, os.dup(data_fd))


if sys.version_info >= (3, 13):
    def _run_child(data_fd, fds):
        # 3.13 runs atexit callbacks in forkserver children, with only the
        # package's exit function registered.
        import atexit
        atexit._clear()
        atexit.register(util._exit_function)
        try:
            return _serve_child(data_fd, fds)
        finally:
            atexit._run_exitfuncs()
else:
    _run_child = _serve_child


# ---------------------------------------------------------------------------
# Signed numbers on a pipe (pids and exit codes)
# ---------------------------------------------------------------------------

def read_signed(fd):
    chunks = []
    missing = SIGNED_STRUCT.size
    while missing:
        chunk = os.read(fd, missing)
        if not chunk:
            raise EOFError('unexpected EOF')
        chunks.append(chunk)
        missing -= len(chunk)
    return SIGNED_STRUCT.unpack(b''.join(chunks))[0]


def write_signed(fd, n):
    spawn._write_all(fd, SIGNED_STRUCT.pack(n))


_forkserver = ForkServer()
ensure_running = _forkserver.ensure_running
get_inherited_fds = _forkserver.get_inherited_fds
connect_to_new_process = _forkserver.connect_to_new_process
set_forkserver_preload = _forkserver.set_forkserver_preload
