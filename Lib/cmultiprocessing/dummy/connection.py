"""Thread-backed stand-in for `cmultiprocessing.connection`.

A connection is a pair of `queue.Queue` objects, one per direction; a
listener's address is the queue on which clients drop their pair.
"""

from queue import Queue

__all__ = ['Client', 'Listener', 'Pipe']

# The only "address family": the address is a queue object.
families = [None]


class Connection(object):
    """One end of a queue pair: what is sent lands in the peer's inbox."""

    def __init__(self, _in, _out):
        self._in, self._out = _in, _out
        # Bound straight to the queues (as the stdlib does), so the extra
        # arguments of recv/send are those of Queue.get/Queue.put.
        self.recv = self.recv_bytes = _in.get
        self.send = self.send_bytes = _out.put

    def poll(self, timeout=0.0):
        inbox = self._in
        if inbox.qsize():
            return True
        if timeout > 0.0:
            with inbox.not_empty:
                inbox.not_empty.wait(timeout)
            return inbox.qsize() > 0
        return False

    def close(self):
        """Queues hold no OS resource; nothing to release."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def Pipe(duplex=True):
    """Two connected ends (always duplex)."""
    left_inbox, right_inbox = Queue(), Queue()
    return (Connection(left_inbox, right_inbox),
            Connection(right_inbox, left_inbox))


class Listener(object):
    """Hands out the server end of each pair a Client queues up."""

    def __init__(self, address=None, family=None, backlog=1):
        self._backlog_queue = Queue(backlog)

    @property
    def address(self):
        return self._backlog_queue

    def accept(self):
        server_in, server_out = self._backlog_queue.get()
        return Connection(server_in, server_out)

    def close(self):
        self._backlog_queue = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def Client(address):
    """Connect to a Listener whose address is the queue *address*."""
    mine, theirs = Queue(), Queue()
    address.put((theirs, mine))
    return Connection(mine, theirs)
