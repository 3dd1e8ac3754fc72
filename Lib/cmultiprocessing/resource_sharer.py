"""Hands open descriptors (sockets on Windows) to other processes on demand.

Pickling a DupFd (or DupSocket) keeps a duplicate of the descriptor here and
pickles only a ticket: the sharer's address and a key.  The process that
unpickles it connects to the sharer, presents the ticket and its pid, and
receives the descriptor (SCM_RIGHTS) over that connection.  One daemon
thread per process serves the tickets; it starts with the first offer.
"""

import functools
import itertools
import os
import signal
import socket
import sys
import threading

from . import process
from . import util
from .context import reduction

__all__ = ['stop']


class _Sharer(object):
    '''The per-process ticket office: a listener, a thread, the offers.'''

    def __init__(self):
        self._reset()
        util.register_after_fork(self, _Sharer._reset_in_child)

    def _reset(self):
        self._lock = threading.Lock()
        self._offers = {}            # key -> (send, close)
        self._keys = itertools.count(1)
        self._listener = None
        self._address = None
        self._thread = None

    # -- offering side ---------------------------------------------------

    def register(self, send, close):
        '''Keep an offer: send(conn, pid) hands the resource over, close()
        releases it.  Returns the ticket (address, key).'''
        with self._lock:
            if self._address is None:
                self._open()
            key = next(self._keys)
            self._offers[key] = (send, close)
            return self._address, key

    def _open(self):
        from .connection import Listener
        util.debug('starting listener and thread for sending handles')
        listener = Listener(authkey=_authkey())
        self._listener = listener
        self._address = listener.address
        worker = threading.Thread(target=self._serve, args=(listener,),
                                  name='cmultiprocessing-resource-sharer',
                                  daemon=True)
        worker.start()
        self._thread = worker

    def _serve(self, listener):
        if hasattr(signal, 'pthread_sigmask'):
            # Signals are for the main thread; this one only serves.
            signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        while self._serve_one(listener):
            pass

    def _serve_one(self, listener):
        try:
            with listener.accept() as conn:
                return self._answer(conn, conn.recv())
        except Exception:
            if not util.is_exiting():
                sys.excepthook(*sys.exc_info())
        return True

    def _answer(self, conn, request):
        # None asks the server to stop; otherwise (key, pid) of a ticket.
        if request is None:
            return False
        offer = self._offers.pop(request[0])
        try:
            offer[0](conn, request[1])
        finally:
            offer[1]()
        return True

    def _release_offers(self):
        offers, self._offers = self._offers, {}
        for _send, close in offers.values():
            close()

    def stop(self, timeout=None):
        '''Stop serving and release every pending offer.'''
        from .connection import Client
        with self._lock:
            if self._address is None:
                return
            with Client(self._address, authkey=_authkey()) as c:
                c.send(None)
            self._thread.join(timeout)
            if self._thread.is_alive():
                util.sub_warning('_ResourceSharer thread did '
                                 'not stop when asked')
            self._listener.close()
            self._listener = self._address = self._thread = None
            self._release_offers()

    def _reset_in_child(self):
        # A forked child has no serving thread; the parent's offers are the
        # parent's to keep, but their duplicates here must go.
        self._release_offers()
        listener = self._listener
        self._reset()
        if listener is not None:
            listener.close()

    # -- receiving side --------------------------------------------------

    @staticmethod
    def get_connection(ticket):
        '''Connect to the sharer holding `ticket` and ask for it.'''
        return _present(*ticket)


def _authkey():
    return process.current_process().authkey


def _present(address, key):
    # The sharer answers on this very connection; our pid lets a Windows
    # sharer prepare the socket for us.
    from .connection import Client
    conn = Client(address, authkey=_authkey())
    conn.send((key, os.getpid()))
    return conn


_resource_sharer = _Sharer()
stop = _resource_sharer.stop


class _Ticket(object):
    '''What a DupFd/DupSocket pickles into: the sharer's ticket.'''

    def _offer(self, send, close):
        self._id = _resource_sharer.register(send, close)

    def detach(self):
        '''The resource, in this process; call once.'''
        with _resource_sharer.get_connection(self._id) as conn:
            return self._take(conn)


def _hand_over_fd(fd, conn, pid):
    reduction.send_handle(conn, fd, pid)


def _hand_over_socket(sock, conn, pid):
    conn.send_bytes(sock.share(pid))


if sys.platform == 'win32':
    __all__ += ['DupSocket']

    class DupSocket(_Ticket):
        '''A picklable socket: the receiver gets its own copy.'''

        def __init__(self, sock):
            mine = sock.dup()
            self._offer(functools.partial(_hand_over_socket, mine),
                        mine.close)

        @staticmethod
        def _take(conn):
            return socket.fromshare(conn.recv_bytes())

else:
    __all__ += ['DupFd']

    class DupFd(_Ticket):
        '''A picklable descriptor, usable whenever it is unpickled.'''

        def __init__(self, fd):
            mine = os.dup(fd)
            self._offer(functools.partial(_hand_over_fd, mine),
                        functools.partial(os.close, mine))

        @staticmethod
        def _take(conn):
            return reduction.recv_handle(conn)
