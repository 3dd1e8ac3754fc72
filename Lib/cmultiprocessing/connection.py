"""Connections between processes: Pipe, Listener/Client and wait().

The Connection type itself is native (``_cmultiprocessing.Connection``):
framing, pickling into the frame, poll and wait run in C.  This module
adds the ways to obtain connections, the authentication handshake (that of
the running interpreter's stdlib, so either peer may be the stdlib), and
the reducers that let a connection travel to another process.
"""

__all__ = ['Client', 'Listener', 'Pipe', 'wait']

import os
import sys
import time

import _cmultiprocessing as _native
# BufferTooShort is re-exported, as the stdlib's connection module does
from _cmultiprocessing import AuthenticationError, BufferTooShort  # noqa: F401

from . import util
from . import reduction

_ForkingPickler = reduction.ForkingPickler

# 3.14 reads in pieces of the usual pipe buffer's size; names of listener
# sockets and pipes come from os.urandom there instead of tempfile.
_RANDOM_NAMES = sys.version_info >= (3, 14)
BUFSIZE = 64 * 1024 if _RANDOM_NAMES else 8192
# Local connections are quick: this is a generous bound.
CONNECTION_TIMEOUT = 20.

_WINDOWS = sys.platform == 'win32'

# On Windows, Pipe() and the AF_PIPE family are named pipes, made by the
# native winpipe_* functions (which exist there only).
_NAMED_PIPES = _WINDOWS and hasattr(_native, 'winpipe_pair')
# socket and tempfile are imported where they are used: a spawned child that
# only receives a Pipe end should not pay for them at start.
families = ['AF_INET']
if os.name == 'posix':
    families.append('AF_UNIX')
if _NAMED_PIPES:
    families.append('AF_PIPE')
default_family = families[-1]

# Connection over a file descriptor (socket or pipe end).  The stdlib's
# pure-Python base class is the same type here.
Connection = _native.Connection
_ConnectionBase = Connection

# wait(object_list, timeout=None): poll(2) over connections, sockets,
# objects with fileno() and integer handles (process sentinels).
wait = _native.wait


def _init_timeout(timeout=CONNECTION_TIMEOUT):
    return time.monotonic() + timeout


def _check_timeout(t):
    return time.monotonic() > t


# --------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------

def arbitrary_address(family):
    '''A fresh address nobody listens on yet, for `family`.'''
    if family == 'AF_INET':
        return ('localhost', 0)
    if family == 'AF_UNIX':
        if _RANDOM_NAMES:
            # bind() reports the (unlikely) clash as EADDRINUSE; the folder
            # is private to this process.
            return os.path.join(util.get_temp_dir(), util._SOCKET_PREFIX +
                                os.urandom(util._SOCKET_SUFFIX_HEX // 2).hex())
        import tempfile
        return tempfile.mktemp(prefix='listener-', dir=util.get_temp_dir())
    if family == 'AF_PIPE':
        prefix = r'\\.\pipe\pyc-%d-%d-' % (os.getpid(), next(_pipe_serial))
        if _RANDOM_NAMES:
            return prefix + os.urandom(8).hex()
        import tempfile
        return tempfile.mktemp(prefix=prefix, dir='')
    raise ValueError('unrecognized family')


def _pipe_counter():
    import itertools
    return itertools.count()


_pipe_serial = _pipe_counter()


def _validate_family(family):
    '''Refuse a family this platform (or cmultiprocessing) cannot do.'''
    import socket
    if family == 'AF_PIPE' and _NAMED_PIPES:
        return
    if family == 'AF_PIPE' or (family == 'AF_UNIX' and
                               not hasattr(socket, family)):
        raise ValueError('Family %s is not recognized.' % family)


def address_type(address):
    '''The family of `address`: 'AF_INET', 'AF_UNIX' or 'AF_PIPE'.'''
    if type(address) is tuple:
        return 'AF_INET'
    if type(address) is str:
        # Windows pipe names start with two backslashes.
        return 'AF_PIPE' if address.startswith('\\\\') else 'AF_UNIX'
    if util.is_abstract_socket_namespace(address):
        return 'AF_UNIX'
    raise ValueError('address type of %r unrecognized' % (address,))


# --------------------------------------------------------------------------
# Pipe
# --------------------------------------------------------------------------

def Pipe(duplex=True):
    '''Two connected Connection objects: (reader, writer) when not duplex.'''
    if not duplex and not _WINDOWS:
        r, w = os.pipe()
        return Connection(r, writable=False), Connection(w, readable=False)
    if _NAMED_PIPES:
        # a named pipe pair (message mode, overlapped I/O): the first end
        # only reads and the second only writes when not duplex
        first, second = _native.winpipe_pair(duplex)
        if duplex:
            return Connection(first), Connection(second)
        return (Connection(first, writable=False),
                Connection(second, readable=False))
    # A socket pair (on Windows for the one-way kind too, where the two
    # ends are told which way they go).
    import socket
    left, right = socket.socketpair()
    ends = []
    for s in (left, right):
        s.setblocking(True)
        ends.append(s.detach())
    if duplex:
        return Connection(ends[0]), Connection(ends[1])
    return (Connection(ends[0], writable=False),
            Connection(ends[1], readable=False))


# --------------------------------------------------------------------------
# Sockets: listening and connecting
# --------------------------------------------------------------------------

class SocketListener(object):
    '''A socket bound to `address` and listening.'''

    def __init__(self, address, family, backlog=1):
        import socket
        sock = socket.socket(getattr(socket, family))
        try:
            if os.name == 'posix':
                # (On Windows SO_REUSEADDR means something else: gh-46794.)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(True)
            sock.bind(address)
            sock.listen(backlog)
            self._address = sock.getsockname()
        except BaseException:
            sock.close()
            raise
        self._socket = sock
        self._family = family
        self._last_accepted = None
        self._unlink = None
        if family == 'AF_UNIX' and not util.is_abstract_socket_namespace(
                address):
            # The socket file goes away with the listener (abstract names
            # vanish by themselves).
            self._unlink = util.Finalize(self, os.unlink, args=(address,),
                                         exitpriority=0)

    def _accept_socket(self):
        sock, self._last_accepted = self._socket.accept()
        sock.setblocking(True)
        return sock

    def accept(self):
        return Connection(self._accept_socket().detach())

    def close(self):
        unlink, self._unlink = self._unlink, None
        try:
            self._socket.close()
        finally:
            if unlink is not None:
                unlink()


def SocketClient(address):
    '''A Connection to the listening socket at `address`.'''
    import socket
    sock = socket.socket(getattr(socket, address_type(address)))
    try:
        sock.setblocking(True)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return Connection(sock.detach())


# --------------------------------------------------------------------------
# Windows named pipes (AF_PIPE)
# --------------------------------------------------------------------------

def _close_handle(handle):
    import _winapi
    _winapi.CloseHandle(handle)


def _close_spare(box):
    # (a finalizer: the listener's waiting instance, if it still has one)
    handle, box[0] = box[0], None
    if handle is not None:
        _close_handle(handle)


class PipeListener(object):
    '''The server side of the named pipe `address`.  One instance of the
    pipe always waits for the next client: accept() hands the waiting one
    out once a client has connected to it, after making its successor.'''

    def __init__(self, address, family='AF_PIPE', backlog=None):
        # the first instance claims the name (it fails if it is taken)
        self._spare = [_native.winpipe_create(address, first=True)]
        self._address = address
        self._last_accepted = None
        self._closer = util.Finalize(self, _close_spare, args=(self._spare,),
                                     exitpriority=0)

    def _connected_handle(self):
        serving = self._spare[0]
        if serving is None:
            raise OSError('listener is closed')
        self._spare[0] = _native.winpipe_create(self._address)
        try:
            _native.winpipe_accept(serving)
        except BaseException:
            _close_handle(serving)
            raise
        return serving

    def accept(self):
        return Connection(self._connected_handle())

    def _accept_authenticated(self, authkey):
        conn = self.accept()
        try:
            channel = _PipeDeadline(conn, HANDSHAKE_TIMEOUT)
            deliver_challenge(channel, authkey)
            answer_challenge(channel, authkey)
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self):
        self._closer()


class _PipeDeadline(object):
    '''The handshake of an accepted pipe client within `seconds`: each
    receive waits for the next message only until the deadline.'''

    def __init__(self, conn, seconds):
        self._conn = conn
        self._seconds = seconds
        self._end = None if seconds is None else time.monotonic() + seconds

    def send_bytes(self, buf):
        self._conn.send_bytes(buf)

    def recv_bytes(self, maxlength=None):
        if self._end is not None:
            left = self._end - time.monotonic()
            if left <= 0 or not self._conn.poll(left):
                raise AuthenticationError(
                    'authentication handshake timed out: the peer did not '
                    'complete it within %g seconds' % self._seconds)
        return self._conn.recv_bytes(maxlength)


def PipeClient(address):
    '''A Connection to the named pipe `address`, waiting up to
    CONNECTION_TIMEOUT seconds while every instance is busy.'''
    return Connection(_native.winpipe_connect(address,
                                              timeout=CONNECTION_TIMEOUT))


def _check_authkey_type(authkey):
    if authkey is not None and not isinstance(authkey, bytes):
        raise TypeError('authkey should be a byte string')


# 3.13 authenticates with an empty key too (bpo-43952); before, b'' meant
# no authentication on the listening side.
_EMPTY_KEY_AUTHENTICATES = sys.version_info >= (3, 13)


class Listener(object):
    '''Accepts connections on a bound socket, authenticating them when an
    authkey is given.'''

    def __init__(self, address=None, family=None, backlog=1, authkey=None):
        family = (family or (address and address_type(address))
                  or default_family)
        _validate_family(family)
        _check_authkey_type(authkey)
        address = address or arbitrary_address(family)
        if family == 'AF_PIPE':
            self._listener = PipeListener(address, family, backlog)
        else:
            self._listener = SocketListener(address, family, backlog)
        self._authkey = authkey

    def _wants_auth(self):
        if _EMPTY_KEY_AUTHENTICATES:
            return self._authkey is not None
        return bool(self._authkey)

    def accept(self):
        '''Wait for a client and return the Connection to it.

        With an authkey the client must complete the handshake within
        HANDSHAKE_TIMEOUT seconds; one that does not is disconnected and
        this call raises AuthenticationError (a malformed frame gives
        OSError/EOFError as a Connection would), so that the next call
        serves the next client.'''
        if self._listener is None:
            raise OSError('listener is closed')
        if not self._wants_auth():
            return self._listener.accept()
        if isinstance(self._listener, PipeListener):
            return self._listener._accept_authenticated(self._authkey)
        sock = self._listener._accept_socket()
        try:
            _authenticate_accepted(sock, self._authkey)
        except BaseException:
            sock.close()
            raise
        return Connection(sock.detach())

    def close(self):
        '''Stop listening (and remove an AF_UNIX socket file).'''
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    address = property(lambda self: self._listener._address)
    last_accepted = property(lambda self: self._listener._last_accepted)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


# Seconds a client accepted by an authenticating Listener has to complete
# the whole handshake (a real one needs well under a millisecond); None
# waits for ever, as the stdlib does.
HANDSHAKE_TIMEOUT = 5.0


class _DeadlineChannel(object):
    '''send_bytes/recv_bytes in the Connection wire format over a socket,
    every call bounded by one absolute deadline.  Used for the handshake of
    a freshly accepted client only: frames are read byte-exact (what follows
    the handshake stays in the socket for the Connection), and a peer that
    stalls or trickles gets AuthenticationError once the deadline passes.'''

    _CHUNK = 65536

    def __init__(self, sock, seconds):
        self._sock = sock
        self._seconds = seconds
        self._deadline = (None if seconds is None
                          else time.monotonic() + seconds)

    def _arm(self):
        # Give the socket what is left of the deadline for its next call.
        if self._deadline is None:
            self._sock.settimeout(None)
            return
        left = self._deadline - time.monotonic()
        if left <= 0:
            self._expired()
        self._sock.settimeout(left)

    def _expired(self):
        raise AuthenticationError(
            'authentication handshake timed out: the peer did not complete '
            'it within %g seconds' % self._seconds)

    def _take(self, n, started):
        '''Exactly n bytes; `started` says a frame is already under way
        (an end of file then cuts a message short).'''
        import socket
        got = bytearray()
        while len(got) < n:
            self._arm()
            try:
                piece = self._sock.recv(min(n - len(got), self._CHUNK))
            except socket.timeout:
                piece = None
            if piece is None:
                self._expired()
            if not piece:
                if got or started:
                    raise OSError('got end of file during message')
                raise EOFError
            got += piece
        return bytes(got)

    def recv_bytes(self, maxlength=None):
        size = int.from_bytes(self._take(4, False), 'big', signed=True)
        if size == -1:
            size = int.from_bytes(self._take(8, True), 'big')
        elif size < 0:
            raise OSError('bad message length')
        if maxlength is not None and size > maxlength:
            raise OSError('bad message length')
        return self._take(size, True)

    def send_bytes(self, buf):
        import socket
        data = bytes(buf)
        if len(data) > 0x7fffffff:
            head = b'\xff\xff\xff\xff' + len(data).to_bytes(8, 'big')
        else:
            head = len(data).to_bytes(4, 'big')
        self._arm()
        try:
            self._sock.sendall(head + data)
            return
        except socket.timeout:
            pass
        self._expired()


def _authenticate_accepted(sock, authkey):
    '''Both halves of the serving side's handshake on an accepted socket,
    within HANDSHAKE_TIMEOUT; leaves the socket blocking.'''
    channel = _DeadlineChannel(sock, HANDSHAKE_TIMEOUT)
    deliver_challenge(channel, authkey)
    answer_challenge(channel, authkey)
    sock.settimeout(None)


def _authenticate_connection(conn, authkey):
    '''The serving side's handshake on an already accepted Connection (a
    manager authenticates in the thread it starts per connection), within
    HANDSHAKE_TIMEOUT when the handle is a socket.  The Connection stays
    open and blocking either way; on failure the caller closes it.'''
    import socket
    try:
        sock = socket.socket(fileno=conn.fileno())
    except OSError:
        sock = None             # not a socket: no deadline to put on it
    if sock is None:
        deliver_challenge(conn, authkey)
        answer_challenge(conn, authkey)
        return
    try:
        _authenticate_accepted(sock, authkey)
    finally:
        # The handle stays the Connection's (and blocking).
        sock.settimeout(None)
        sock.detach()


def Client(address, family=None, authkey=None):
    '''A Connection to the Listener at `address`.'''
    family = family or address_type(address)
    _validate_family(family)
    conn = PipeClient(address) if family == 'AF_PIPE' else SocketClient(address)
    try:
        _check_authkey_type(authkey)
        if authkey is not None:
            answer_challenge(conn, authkey)
            deliver_challenge(conn, authkey)
    except BaseException:
        conn.close()
        raise
    return conn


# --------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------

def _require_bytes(authkey):
    if not isinstance(authkey, bytes):
        raise ValueError(
            "Authkey must be bytes, not {0!s}".format(type(authkey)))


def _hmac(authkey, message, digest_name):
    import hmac
    return hmac.new(authkey, message, digest_name).digest()


if sys.version_info >= (3, 12):
    # The negotiating handshake of 3.12+: the challenge names its digest,
    # b'{sha256}' + 40 random bytes; the answer is b'{name}' + HMAC over the
    # whole challenge.  Legacy (<= 3.11) peers are told apart by length: a
    # 20-byte challenge, or a bare 16-byte HMAC-MD5 answer.
    MESSAGE_LENGTH = 40

    _CHALLENGE = b'#CHALLENGE#'
    _WELCOME = b'#WELCOME#'
    _FAILURE = b'#FAILURE#'

    _ALLOWED_DIGESTS = frozenset(
        {b'md5', b'sha256', b'sha384', b'sha3_256', b'sha3_384'})
    _MAX_DIGEST_LEN = max(map(len, _ALLOWED_DIGESTS))
    _MD5ONLY_MESSAGE_LENGTH = 20
    _MD5_DIGEST_LEN = 16
    _LEGACY_LENGTHS = (_MD5ONLY_MESSAGE_LENGTH, _MD5_DIGEST_LEN)

    def _get_digest_name_and_payload(message):
        '''(digest name, payload) of a challenge or answer; the name is ''
        for the legacy unprefixed HMAC-MD5 form.'''
        if len(message) in _LEGACY_LENGTHS:
            return '', message
        close = (message.find(b'}', 1, _MAX_DIGEST_LEN + 2)
                 if message[:1] == b'{' else -1)
        name = message[1:close] if close > 0 else None
        if name not in _ALLOWED_DIGESTS:
            raise AuthenticationError(
                'unsupported message length, missing digest prefix, '
                'or unsupported digest: message=%r' % (message,))
        return name.decode('ascii'), message[close + 1:]

    def _create_response(authkey, message):
        '''The answer to challenge `message`: the digest it asks for,
        prefixed with its name, or a bare HMAC-MD5 for a legacy peer.'''
        name = _get_digest_name_and_payload(message)[0]
        if not name:
            try:
                return _hmac(authkey, message, 'md5')
            except ValueError:
                # No MD5 here (FIPS): answer in the modern form; a legacy
                # peer will refuse it, which is all that can happen.
                name = 'sha256'
        return b'{%s}%s' % (name.encode('ascii'),
                            _hmac(authkey, message, name))

    def _verify_challenge(authkey, message, response):
        '''Check `response` to our challenge `message`; the peer may pick
        any allowed digest, the prefix is covered by the MAC.'''
        import hmac
        name, mac = _get_digest_name_and_payload(response)
        name = name or 'md5'
        try:
            expected = _hmac(authkey, message, name)
        except ValueError:
            raise AuthenticationError('response_digest=%r unsupported'
                                      % (name,)) from None
        if len(mac) != len(expected):
            raise AuthenticationError('expected %r of length %d got %d'
                                      % (name, len(expected), len(mac)))
        if not hmac.compare_digest(mac, expected):
            raise AuthenticationError('digest received was wrong')

    def deliver_challenge(connection, authkey, digest_name='sha256'):
        '''Serving side: challenge the peer, check its answer.'''
        _require_bytes(authkey)
        challenge = (b'{' + digest_name.encode('ascii') + b'}' +
                     os.urandom(MESSAGE_LENGTH))
        connection.send_bytes(_CHALLENGE + challenge)
        answer = connection.recv_bytes(256)    # a longer one is refused
        try:
            _verify_challenge(authkey, challenge, answer)
        except AuthenticationError:
            connection.send_bytes(_FAILURE)
            raise
        connection.send_bytes(_WELCOME)

    def answer_challenge(connection, authkey):
        '''Client side: answer the peer's challenge.'''
        _require_bytes(authkey)
        message = connection.recv_bytes(256)   # a longer one is refused
        if message[:len(_CHALLENGE)] != _CHALLENGE:
            raise AuthenticationError(
                'Protocol error, expected challenge: message=%r' % (message,))
        challenge = message[len(_CHALLENGE):]
        if len(challenge) < _MD5ONLY_MESSAGE_LENGTH:
            raise AuthenticationError('challenge too short: %d bytes'
                                      % len(challenge))
        connection.send_bytes(_create_response(authkey, challenge))
        if connection.recv_bytes(256) != _WELCOME:
            raise AuthenticationError('digest sent was rejected')

else:
    # 3.11: HMAC-MD5 over a 20-byte random challenge, no negotiation.
    MESSAGE_LENGTH = 20

    CHALLENGE = b'#CHALLENGE#'
    WELCOME = b'#WELCOME#'
    FAILURE = b'#FAILURE#'

    def deliver_challenge(connection, authkey):
        '''Serving side: challenge the peer, check its answer.'''
        import hmac
        _require_bytes(authkey)
        challenge = os.urandom(MESSAGE_LENGTH)
        connection.send_bytes(CHALLENGE + challenge)
        answer = connection.recv_bytes(256)    # a longer one is refused
        good = hmac.compare_digest(answer, _hmac(authkey, challenge, 'md5'))
        connection.send_bytes(WELCOME if good else FAILURE)
        if not good:
            raise AuthenticationError('digest received was wrong')

    def answer_challenge(connection, authkey):
        '''Client side: answer the peer's challenge.'''
        _require_bytes(authkey)
        message = connection.recv_bytes(256)   # a longer one is refused
        assert message[:len(CHALLENGE)] == CHALLENGE, 'message = %r' % message
        connection.send_bytes(
            _hmac(authkey, message[len(CHALLENGE):], 'md5'))
        if connection.recv_bytes(256) != WELCOME:
            raise AuthenticationError('digest sent was rejected')


# --------------------------------------------------------------------------
# xmlrpc serialisation (managers' 'xmlrpclib' serializer)
# --------------------------------------------------------------------------

class ConnectionWrapper(object):
    '''A connection whose send/recv use other dumps/loads functions.'''

    _FORWARDED = ('fileno', 'close', 'poll', 'recv_bytes', 'send_bytes')

    def __init__(self, conn, dumps, loads):
        self._conn = conn
        self._dumps = dumps
        self._loads = loads
        for name in self._FORWARDED:
            setattr(self, name, getattr(conn, name))

    def send(self, obj):
        self._conn.send_bytes(self._dumps(obj))

    def recv(self):
        return self._loads(self._conn.recv_bytes())


def _xml_dumps(obj):
    import xmlrpc.client
    return xmlrpc.client.dumps((obj,), None, None, None, 1).encode('utf-8')


def _xml_loads(s):
    import xmlrpc.client
    params, _method = xmlrpc.client.loads(s.decode('utf-8'))
    return params[0]


class XmlListener(Listener):
    def accept(self):
        return ConnectionWrapper(Listener.accept(self), _xml_dumps,
                                 _xml_loads)


def XmlClient(*args, **kwds):
    return ConnectionWrapper(Client(*args, **kwds), _xml_dumps, _xml_loads)


# --------------------------------------------------------------------------
# Sending connections to other processes
# --------------------------------------------------------------------------

if _WINDOWS:
    def rebuild_connection(ds, readable, writable):
        return Connection(ds.detach().detach(), readable, writable)

    def _rebuild_pipe_end(dh, readable, writable):
        return Connection(dh.detach(), readable, writable)

    def reduce_connection(conn):
        import _winapi
        handle = conn.fileno()
        if _winapi.GetFileType(handle) == _winapi.FILE_TYPE_PIPE:
            # a named pipe end (Pipe(), AF_PIPE): the handle itself is
            # duplicated for the receiver, with the rights its use needs
            rights = 0
            if conn.readable:
                rights |= _winapi.FILE_GENERIC_READ
            if conn.writable:
                rights |= _winapi.FILE_GENERIC_WRITE
            return _rebuild_pipe_end, (reduction.DupHandle(handle, rights),
                                       conn.readable, conn.writable)
        import socket
        from .resource_sharer import DupSocket
        # fromfd() works on a duplicate; the sharer keeps one more, for
        # the receiving process.
        with socket.fromfd(handle, socket.AF_INET, socket.SOCK_STREAM) as s:
            ds = DupSocket(s)
        return rebuild_connection, (ds, conn.readable, conn.writable)
else:
    def rebuild_connection(df, readable, writable):
        return Connection(df.detach(), readable, writable)

    def reduce_connection(conn):
        return rebuild_connection, (reduction.DupFd(conn.fileno()),
                                    conn.readable, conn.writable)


reduction.register(Connection, reduce_connection)
