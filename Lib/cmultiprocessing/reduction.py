"""Pickling across processes: ForkingPickler, the reducers cmultiprocessing
installs on it, and handle passing between processes.

Descriptors travel over AF_UNIX sockets with SCM_RIGHTS, done natively by
``_cmultiprocessing.sendfds``/``recvfds``; the wire convention (a one-byte
message carrying ``len(fds) % 256``) is the stdlib's, so either side may be
the standard library.
"""

import copyreg
import functools
import io
import os
import sys
from abc import ABCMeta

try:
    # The C pickler itself: pickle.py would bring re, enum and struct into
    # every child (pickle.Pickler and pickle.loads are these very objects).
    from _pickle import Pickler as _Pickler, loads as _loads
except ImportError:         # an interpreter without the accelerator
    from pickle import Pickler as _Pickler, loads as _loads

import _cmultiprocessing as _native

from . import context

__all__ = ['send_handle', 'recv_handle', 'ForkingPickler', 'register', 'dump']

_WINDOWS = sys.platform == 'win32'

# True where one process can hand an open file (or socket) to another.
HAVE_SEND_HANDLE = _WINDOWS or hasattr(_native, 'sendfds')


def _note_socket_class(cls):
    """Register the socket reducer once the socket module is loaded.

    Importing socket costs a new child more than everything else here, so
    this module does not: a socket object cannot exist before its module
    is imported, and every pickler is made after that check."""
    if cls._socket_registered:
        return
    sockets = sys.modules.get('socket')
    kind = getattr(sockets, 'socket', None)
    if isinstance(kind, type):
        cls._socket_registered = True
        _register(cls, kind, _reduce_socket)


def _dispatch_snapshot(cls):
    # copyreg's table first, then what cmultiprocessing registered on top;
    # a fresh dict per pickler so that one pickler's changes stay its own.
    _note_socket_class(ForkingPickler)
    stdlib = context._stdlib_module('reduction')
    theirs = {} if stdlib is None else \
        getattr(getattr(stdlib, 'ForkingPickler', None), '_extra_reducers', {})
    return {**cls._copyreg_dispatch_table, **theirs, **cls._extra_reducers}


def _register(cls, type, reduce):
    '''Use reduce(obj) to pickle instances of `type`.'''
    cls._extra_reducers[type] = reduce
    # Connections keep a pickler between sends: this tells them the
    # snapshot it holds is out of date.
    ForkingPickler._generation += 1


def _dumps(cls, obj, protocol=None):
    '''Pickle obj; the result is a bytes-like object (a memoryview).'''
    sink = io.BytesIO()
    cls(sink, protocol).dump(obj)
    return sink.getbuffer()


class ForkingPickler(_Pickler):
    '''The pickler cmultiprocessing sends objects with: pickle.Pickler plus
    the reducers given to register().'''

    _extra_reducers = {}
    _copyreg_dispatch_table = copyreg.dispatch_table
    _generation = 0
    _socket_registered = False
    register = classmethod(_register)
    dumps = classmethod(_dumps)
    loads = staticmethod(_loads)

    def __init__(self, *args, **kwds):
        if kwds:
            super().__init__(*args, **kwds)
        else:
            # Keywords, even none, take _pickle's keyword parser, which
            # 3.12 keeps per process: freed by an interpreter with a GIL of
            # its own, it crashes the process at exit ("double free").
            super().__init__(*args)
        self.dispatch_table = _dispatch_snapshot(type(self))


register = ForkingPickler.register


def dump(obj, file, protocol=None):
    '''pickle.dump() through ForkingPickler.'''
    ForkingPickler(file, protocol).dump(obj)


# --------------------------------------------------------------------------
# Handles
# --------------------------------------------------------------------------

def _fd_of(obj):
    return obj if isinstance(obj, int) else obj.fileno()


if _WINDOWS:
    import _winapi

    __all__ += ['DupHandle', 'duplicate', 'steal_handle']

    def duplicate(handle, target_process=None, inheritable=False,
                  *, source_process=None):
        '''Duplicate a handle (target_process is a process handle).'''
        me = _winapi.GetCurrentProcess()
        return _winapi.DuplicateHandle(
            me if source_process is None else source_process, handle,
            me if target_process is None else target_process,
            0, inheritable, _winapi.DUPLICATE_SAME_ACCESS)

    def _open_for_dup(pid):
        return _winapi.OpenProcess(_winapi.PROCESS_DUP_HANDLE, False, pid)

    def _pull_handle(pid, handle, access, flags):
        # Duplicate `handle` out of process `pid` into this one.
        owner = _open_for_dup(pid)
        try:
            return _winapi.DuplicateHandle(
                owner, handle, _winapi.GetCurrentProcess(), access, False,
                flags)
        finally:
            _winapi.CloseHandle(owner)

    def steal_handle(source_pid, handle):
        '''Take `handle` out of process `source_pid` into this one.'''
        return _pull_handle(source_pid, handle, 0,
                            _winapi.DUPLICATE_SAME_ACCESS |
                            _winapi.DUPLICATE_CLOSE_SOURCE)

    class DupHandle(object):
        '''A handle made ready for another process (picklable).'''

        def __init__(self, handle, access, pid=None):
            self._pid = os.getpid() if pid is None else pid
            self._access = access
            target = _open_for_dup(self._pid)
            try:
                self._handle = _winapi.DuplicateHandle(
                    _winapi.GetCurrentProcess(), handle, target, access,
                    False, 0)
            finally:
                _winapi.CloseHandle(target)

        def detach(self):
            '''The handle, in this process; call once.'''
            if self._pid == os.getpid():
                return self._handle      # already duplicated for us
            return _pull_handle(self._pid, self._handle, self._access,
                                _winapi.DUPLICATE_CLOSE_SOURCE)

    def send_handle(conn, handle, destination_pid):
        '''Send a handle over a local connection.'''
        conn.send(DupHandle(handle, _winapi.DUPLICATE_SAME_ACCESS,
                            destination_pid))

    def recv_handle(conn):
        '''Receive a handle sent with send_handle().'''
        return conn.recv().detach()

else:
    __all__ += ['DupFd', 'sendfds', 'recvfds']

    # macOS may drop descriptors still in flight when the sender closes
    # them: there the receiver confirms each batch (bpo-14669).
    # The receiver acknowledges with one byte: on macOS always (an old bug
    # lost fds otherwise), everywhere from 3.14 on.
    ACKNOWLEDGE = sys.platform == 'darwin' or sys.version_info >= (3, 14)

    def sendfds(sock, fds):
        '''Send the descriptors `fds` over the AF_UNIX socket `sock`.'''
        fds = [int(fd) for fd in fds]
        fd = _fd_of(sock)
        _native.sendfds(fd, fds, bytes((len(fds) % 256,)))
        if ACKNOWLEDGE and os.read(fd, 1) != b'A':
            raise RuntimeError('did not receive acknowledgement of fd')

    def _discard(fds):
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def recvfds(sock, size):
        '''Receive at most `size` descriptors sent by sendfds().'''
        fd = _fd_of(sock)
        msg, fds, truncated = _native.recvfds(fd, size)
        if not msg and not fds:
            raise EOFError
        try:
            if ACKNOWLEDGE:
                os.write(fd, b'A')
            if truncated or not fds or not msg:
                raise RuntimeError(
                    'Invalid data received: %d file descriptors%s'
                    % (len(fds), ' (more were cut off)' if truncated else ''))
            if len(fds) % 256 != msg[0]:
                raise AssertionError('Len is {0:n} but msg[0] is {1!r}'
                                     .format(len(fds), msg[0]))
        except BaseException:
            _discard(fds)
            raise
        return fds

    def send_handle(conn, handle, destination_pid):
        '''Send a file descriptor over a local (AF_UNIX) connection.'''
        sendfds(conn, (handle,))

    def recv_handle(conn):
        '''Receive one file descriptor sent with send_handle().'''
        return recvfds(conn, 1)[0]

    def DupFd(fd):
        '''A picklable stand-in for `fd`, valid in the receiving process.'''
        popen = context.get_spawning_popen()
        if popen is not None:
            # Pickled for a child being spawned: the child inherits it.
            return popen.DupFd(popen.duplicate_for_child(fd))
        if not HAVE_SEND_HANDLE:
            raise ValueError('SCM_RIGHTS appears not to be available')
        from . import resource_sharer
        return resource_sharer.DupFd(fd)


# --------------------------------------------------------------------------
# Reducers for callables and sockets
# --------------------------------------------------------------------------

class _C:
    def f(self):
        pass


def _reduce_method(m):
    # A bound method is looked up again on its object after unpickling.
    return getattr, (m.__self__, m.__func__.__name__)


def _reduce_method_descriptor(m):
    return getattr, (m.__objclass__, m.__name__)


def _rebuild_partial(func, args, keywords):
    return functools.partial(func, *args, **keywords)


def _reduce_partial(p):
    return _rebuild_partial, (p.func, p.args, p.keywords or {})


if _WINDOWS:
    def _rebuild_socket(ds):
        return ds.detach()

    def _reduce_socket(s):
        from .resource_sharer import DupSocket
        return _rebuild_socket, (DupSocket(s),)
else:
    def _rebuild_socket(df, family, type, proto):
        import socket
        return socket.socket(family, type, proto, fileno=df.detach())

    def _reduce_socket(s):
        return _rebuild_socket, (DupFd(s.fileno()), s.family, s.type,
                                 s.proto)


def _default_reducers():
    return (
        (type(_C().f), _reduce_method),
        (type(list.append), _reduce_method_descriptor),
        (type(int.__add__), _reduce_method_descriptor),
        (functools.partial, _reduce_partial),
    )


def _install_default_reducers():
    for kind, reducer in _default_reducers():
        register(kind, reducer)
    ForkingPickler._socket_registered = False
    _note_socket_class(ForkingPickler)


_install_default_reducers()


# an ABC with no abstract method, as the stdlib's (subclasses override what they like)
class AbstractReducer(metaclass=ABCMeta):  # noqa: B024
    '''Base class for a replacement of this module (context.reducer): it
    carries this module's names, and installs the default reducers when
    created.'''

    def __init__(self, *args):
        _install_default_reducers()


def _fill_abstract_reducer():
    shared = ['ForkingPickler', 'register', 'dump', 'send_handle',
              'recv_handle', '_reduce_method', '_reduce_method_descriptor',
              '_rebuild_partial', '_reduce_socket', '_rebuild_socket']
    if _WINDOWS:
        shared += ['steal_handle', 'duplicate', 'DupHandle']
    else:
        shared += ['sendfds', 'recvfds', 'DupFd']
    namespace = globals()
    for name in shared:
        value = namespace[name]
        if callable(value) and not isinstance(value, type):
            value = staticmethod(value)
        setattr(AbstractReducer, name, value)


_fill_abstract_reducer()
