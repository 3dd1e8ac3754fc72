"""The forkserver start method.

A server process, started once per program on a fresh interpreter (with the
main module and any preload modules imported), forks a child for every
request.  The server's loop is native: ``_cmultiprocessing.forkserver_serve``
waits for requests, SIGCHLD and the end of the program without the GIL,
forks, answers each client with the child's pid and later its exit code,
and returns only inside a new child.

A request is a connection to the server's AF_UNIX socket.  From 3.14 on
(as in the stdlib) the two sides first prove to each other that they hold
the server's authkey -- 32 random bytes the parent hands to the server
through a pipe when it starts it, never in its argv: the server challenges
the client and then answers the client's challenge, with this
interpreter's handshake (connection.deliver_challenge and
answer_challenge).  Then the client sends, as SCM_RIGHTS, the child's ends
of two pipes (data in, status out), the server's "alive" fd, the resource
tracker's fd and whatever fds the process object's pickle asked to
duplicate.  The handshake is the one step of the loop that runs Python
code; a client that does not complete it (or send its fds) within
connection.HANDSHAKE_TIMEOUT seconds is dropped.

Before 3.14 requests are not authenticated, as in the stdlib: the socket
file lives in a private (0o700) directory, with mode 0o600, so only the
same user can connect, and the handshake's three round trips would slow
every process start.
"""

import os
import struct
import sys
import _thread

import _cmultiprocessing

from . import connection
from . import process
from . import resource_tracker
from . import spawn
from . import util

__all__ = ['ensure_running', 'get_inherited_fds', 'connect_to_new_process',
           'set_forkserver_preload']

MAXFDS_TO_SEND = 256
SIGNED_STRUCT = struct.Struct('q')     # wide enough for a pid_t
# Requests are authenticated from 3.14 on, as in the stdlib (see above).
# The key goes to the server in one write to an empty pipe: <= PIPE_BUF.
_AUTHENTICATE = sys.version_info >= (3, 14)
_AUTHKEY_LEN = 32

# 3.15 lets set_forkserver_preload() choose what a failed preload does.
_PRELOAD_POLICY = sys.version_info >= (3, 15)
_ON_ERROR = ('ignore', 'warn', 'fail')
_PRELOAD_CRASH_NOTE = ('Forkserver process may have crashed during module '
                       'preloading. Check stderr.')

# The parent's sys.argv follows the code as real arguments (the server
# takes them from its own sys.argv): inside the -c string a long one could
# pass the system's limit on the length of one argument.
_SERVER_CMD = ('import sys; from cmultiprocessing.forkserver import main; '
               'main(%d, %d, %r, sys_argv=sys.argv[1:], **%r)')


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _close_given(*fds):
    util.close_fds(*(fd for fd in fds if fd is not None))


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
        self._preload_on_error = 'ignore'
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
        self._forkserver_authkey = None
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

    def _set_preload(self, modules_names, on_error):
        if not all(type(name) is str for name in modules_names):
            raise TypeError('module_names must be a list of strings')
        if on_error not in _ON_ERROR:
            raise ValueError("on_error must be 'ignore', 'warn', or 'fail', "
                             "not %r" % (on_error,))
        self._preload_modules = modules_names
        self._preload_on_error = on_error

    if _PRELOAD_POLICY:
        def set_forkserver_preload(self, modules_names, *, on_error='ignore'):
            '''Set list of module names to try to load in forkserver process.

            on_error says what a module that fails to import does: "ignore"
            (the default) nothing, "warn" an ImportWarning in the server,
            "fail" stops the server, so that starting a process fails.
            '''
            self._set_preload(modules_names, on_error)
    else:
        def set_forkserver_preload(self, modules_names):
            '''Set list of module names to try to load in forkserver process.'''
            self._set_preload(modules_names, 'ignore')

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

    def _server_command(self, listener_fd, alive_fd, authkey_fd):
        """(executable, argv) of a new server process."""
        options = {}
        if authkey_fd is not None:
            options['authkey_r'] = authkey_fd
        argv_tail = []
        if spawn._alias_installed():
            options['alias'] = True
        if self._preload_modules:
            data = spawn.get_preparation_data('ignore')
            options['sys_path'] = data['sys_path']
            if 'init_main_from_path' in data:
                options['main_path'] = data['init_main_from_path']
            argv_tail = data['sys_argv']
            if self._preload_on_error != 'ignore':
                options['on_error'] = self._preload_on_error
        from ._interpreter import _interpreter_argv
        start = _interpreter_argv()
        code = spawn._child_code(_SERVER_CMD % (
            listener_fd, alive_fd, self._preload_modules, options))
        return start[0], [*start, *util._args_from_interpreter_flags(),
                          '-c', code, *argv_tail]

    def _launch(self):
        listener, address = _bound_listener()
        with listener:
            # Every client holds alive_w; when the last one is gone the
            # server sees EOF on alive_r and exits.  The key travels in a
            # pipe of its own, read once by the server: never in its argv.
            alive_r, alive_w = os.pipe()
            key_r = key_w = None
            started = False
            try:
                if _AUTHENTICATE:
                    key_r, key_w = os.pipe()
                passed = [fd for fd in (listener.fileno(), alive_r, key_r)
                          if fd is not None]
                exe, argv = self._server_command(listener.fileno(), alive_r,
                                                 key_r)
                pid = _spawn_without_sigint(exe, argv, passed)
                started = True
            finally:
                _close_given(alive_r, key_r)
                if not started:
                    _close_given(alive_w, key_w)
                    _unlink_quietly(address)
        self._forkserver_address = address
        self._forkserver_alive_fd = alive_w
        self._forkserver_pid = pid
        if key_w is not None:
            self._send_authkey(key_w)

    def _send_authkey(self, key_w):
        """Give the new server its key: one write, then EOF."""
        authkey = os.urandom(_AUTHKEY_LEN)
        try:
            os.write(key_w, authkey)
        except BaseException:
            # The server died before reading it: reap it and start over
            # next time.
            pid = self._forkserver_pid
            self._forget_server()
            os.waitpid(pid, 0)
            raise
        finally:
            os.close(key_w)
        self._forkserver_authkey = authkey

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
            _cmultiprocessing.forkserver_send(
                self._forkserver_address, sent,
                _client_handshake(self._forkserver_authkey))
            ok = True
        except (EOFError, ConnectionError) as exc:
            # The server went away under us: with on_error='fail' most
            # likely because a preload failed (3.15).
            if (_PRELOAD_POLICY and self._preload_modules and
                    self._preload_on_error == 'fail'):
                exc.add_note(_PRELOAD_CRASH_NOTE)
            raise
        finally:
            # The server has its own copies now (or never will).
            util.close_fds(data_r, status_w)
            if not ok:
                util.close_fds(status_r, data_w)
        return status_r, data_w


def _client_handshake(authkey):
    """forkserver_send's handshake: the client answers the server's
    challenge, then challenges it (the server does the reverse)."""
    if authkey is None:
        return None

    def handshake(fd):
        conn = connection.Connection(fd)
        try:
            connection.answer_challenge(conn, authkey)
            connection.deliver_challenge(conn, authkey)
        finally:
            conn._detach()      # the socket stays forkserver_send's
    return handshake


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

def _preload_failed(on_error, what, exc):
    """Apply the on_error policy to a preload that raised exc; called while
    exc is being handled."""
    if on_error == 'fail':
        # re-raises the exception the caller is handling, as it was raised
        raise  # noqa: PLE0704
    if on_error == 'warn':
        import warnings
        # attributed to whoever called _handle_preload
        warnings.warn('Failed to preload %s: %s' % (what, exc),
                      ImportWarning, stacklevel=3)


def _handle_preload(preload, main_path=None, sys_path=None, sys_argv=None,
                    on_error='ignore'):
    """Import what the server preloads: the parent's main script (as
    __mp_main__, with the parent's sys.argv and sys.path in place) and the
    modules named in preload.  A failure is ignored, warned about or raised
    as on_error says; the standard streams are flushed after, so that no
    child inherits what the imports left in their buffers."""
    if not preload:
        return
    if sys_argv is not None:
        sys.argv[:] = sys_argv
    if sys_path is not None:
        sys.path[:] = sys_path
    if '__main__' in preload and main_path is not None:
        # Children then find __main__ ready instead of each running it.
        me = process.current_process()
        me._inheriting = True
        try:
            spawn.import_main_path(main_path)
        except Exception as exc:
            # the script runs: anything may come out of it
            _preload_failed(on_error, '__main__ from %r' % (main_path,), exc)
        finally:
            del me._inheriting
    for name in preload:
        try:
            __import__(name)
        except ImportError as exc:
            _preload_failed(on_error, 'module %r' % (name,), exc)
    util._flush_std_streams()


def _read_authkey(fd):
    """The server's key, from the pipe the parent wrote it to."""
    try:
        key = b''
        while len(key) < _AUTHKEY_LEN:
            piece = os.read(fd, _AUTHKEY_LEN - len(key))
            if not piece:
                raise RuntimeError('forkserver: got %d of the %d bytes of '
                                   'its authkey' % (len(key), _AUTHKEY_LEN))
            key += piece
        return key
    finally:
        os.close(fd)


def _server_handshake(authkey):
    """forkserver_serve's handshake on each accepted request: the server
    challenges the client, then answers its challenge.  False drops the
    request (a wrong key, a peer that hung up or stalled).  Each message
    must come before connection.HANDSHAKE_TIMEOUT has passed since the
    start (a stall inside a message is cut short by forkserver_serve's
    timeout on the socket)."""
    if authkey is None:
        return None

    def handshake(fd):
        conn = connection.Connection(fd)
        try:
            channel = connection._PipeDeadline(conn,
                                               connection.HANDSHAKE_TIMEOUT)
            connection.deliver_challenge(channel, authkey)
            connection.answer_challenge(channel, authkey)
            return True
        except (EOFError, OSError, _cmultiprocessing.AuthenticationError):
            return False
        finally:
            conn._detach()      # the descriptor stays forkserver_serve's
    return handshake


def main(listener_fd, alive_r, preload, main_path=None, sys_path=None, *,
         sys_argv=None, authkey_r=None, on_error='ignore', alias=False):
    '''Run the fork server (in its own interpreter).'''
    import signal
    if alias:
        # the parent runs with cmultiprocessing.install(): so do the
        # preloaded modules (found on the parent's sys.path, given with
        # them).  Best effort: each child installs it again in prepare(),
        # and says so if it cannot.
        if sys_path is not None:
            sys.path[:] = sys_path
        try:
            import _cmultiprocessing_alias
        except ImportError:
            pass
        else:
            _cmultiprocessing_alias.install()
    authkey = None if authkey_r is None else _read_authkey(authkey_r)
    _handle_preload(preload, main_path, sys_path, sys_argv, on_error)
    util._close_stdin()
    _forkserver._forkserver_address = _sockname(listener_fd)
    old_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)   # ^C-proof
    if hasattr(signal, 'pthread_sigmask'):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    got = _cmultiprocessing.forkserver_serve(
        listener_fd, alive_r, MAXFDS_TO_SEND + 1,
        _server_handshake(authkey), connection.HANDSHAKE_TIMEOUT)
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
