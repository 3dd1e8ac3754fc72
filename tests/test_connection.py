"""Unit tests of the native Connection, Pipe, Listener/Client, wait() and the
authentication handshake of cmultiprocessing.connection.

Malformed frames are produced by writing raw bytes into the other end of a
socketpair, so every bad-input path of the reader is reached without a
misbehaving peer process.  The interop tests (the only ones importing the
stdlib's multiprocessing) pair a cmultiprocessing end with a stdlib end.
"""
import array
import os
import signal
import socket
import struct
import sys
import threading
import time
import weakref

import pytest

import _cmultiprocessing as native
from cmultiprocessing import connection
from cmultiprocessing.connection import Connection, Pipe, Listener, Client, wait

LONG = 30.0


def raw_pair():
    """(Connection, raw socket) joined by a socketpair."""
    a, b = socket.socketpair()
    return Connection(a.detach()), b


def frame(payload):
    return struct.pack("!i", len(payload)) + payload


@pytest.fixture
def pair():
    a, b = Pipe()
    yield a, b
    a.close()
    b.close()


# ---------------------------------------------------------------- basics

def test_send_recv_objects_and_bytes(pair):
    a, b = pair
    for obj in [None, 1, 2.5, "text", [1, (2, 3)], {"k": b"v"}, b"", b"x" * 70000]:
        a.send(obj)
        assert b.recv() == obj
    a.send_bytes(b"hello")
    assert b.recv_bytes() == b"hello"
    b.send_bytes(b"")
    assert a.recv_bytes() == b""


def test_send_bytes_offset_and_size(pair):
    a, b = pair
    msg = b"abcdefghijklmnopqrstuvwxyz"
    a.send_bytes(msg, 5)
    assert b.recv_bytes() == msg[5:]
    a.send_bytes(msg, 7, 8)
    assert b.recv_bytes() == msg[7:15]
    a.send_bytes(msg, 26)
    assert b.recv_bytes() == b""
    a.send_bytes(msg, size=3)
    assert b.recv_bytes() == b"abc"
    arr = array.array("i", range(4))
    a.send_bytes(arr, 4, 8)               # offsets count bytes
    assert b.recv_bytes() == arr.tobytes()[4:12]


@pytest.mark.parametrize("args,text", [
    ((27,), "buffer length < offset"),
    ((22, 5), "buffer length < offset \\+ size"),
    ((-1,), "offset is negative"),
    ((4, -1), "size is negative"),
])
def test_send_bytes_bad_ranges(pair, args, text):
    a, b = pair
    with pytest.raises(ValueError, match=text):
        a.send_bytes(b"abcdefghijklmnopqrstuvwxyz", *args)
    assert not b.poll()                   # nothing went out


def test_send_bytes_bad_types(pair):
    a, b = pair
    with pytest.raises(TypeError):
        a.send_bytes("not bytes")
    with pytest.raises(TypeError):
        a.send_bytes(b"abc", "1")
    with pytest.raises(TypeError):
        a.send_bytes(b"abc", bogus=1)
    with pytest.raises(TypeError):
        a.send_bytes()
    assert not b.poll()


def test_unpicklable_object_sends_nothing(pair):
    a, b = pair
    # whatever the pickler raises (PicklingError, AttributeError...)
    with pytest.raises(Exception):  # noqa: B017 -- any error, as the stdlib's
        a.send(lambda: None)
    a.send(42)
    assert b.recv() == 42


def test_recv_bytes_into(pair):
    a, b = pair
    arr = array.array("i", range(4))
    buf = array.array("i", [0] * 10)
    a.send_bytes(arr)
    assert b.recv_bytes_into(buf) == 16
    assert list(buf) == [0, 1, 2, 3] + [0] * 6
    buf = array.array("i", [0] * 10)
    a.send_bytes(arr)
    assert b.recv_bytes_into(buf, 3 * buf.itemsize) == 16
    assert list(buf) == [0] * 3 + [0, 1, 2, 3] + [0] * 3
    ba = bytearray(5)
    a.send_bytes(b"12345")
    assert b.recv_bytes_into(ba) == 5 and ba == b"12345"


def test_recv_bytes_into_too_short_keeps_message(pair):
    a, b = pair
    a.send_bytes(b"x" * 50)
    with pytest.raises(native.BufferTooShort) as info:
        b.recv_bytes_into(bytearray(40))
    assert info.value.args == (b"x" * 50,)
    assert connection.BufferTooShort is native.BufferTooShort
    a.send_bytes(b"next")                 # the stream is still in step
    assert b.recv_bytes() == b"next"


def test_recv_bytes_into_bad_arguments(pair):
    a, b = pair
    a.send_bytes(b"abc")
    with pytest.raises(ValueError, match="negative offset"):
        b.recv_bytes_into(bytearray(10), -1)
    with pytest.raises(ValueError, match="offset too large"):
        b.recv_bytes_into(bytearray(10), 11)
    with pytest.raises((TypeError, BufferError)):
        b.recv_bytes_into(b"read-only buffer")
    assert b.recv_bytes() == b"abc"       # nothing was consumed


def test_maxlength_refuses_without_reading_payload():
    c, raw = raw_pair()
    with c, raw:
        raw.sendall(frame(b"0123456789"))
        with pytest.raises(OSError, match="bad message length"):
            c.recv_bytes(5)
        assert not c.readable             # duplex: stops reading
        assert c.writable
        # The payload is still in the socket: it was never read.
        assert os.read(c.fileno(), 100) == b"0123456789"
        with pytest.raises(OSError, match="write-only"):
            c.recv_bytes()


def test_maxlength_on_read_only_end_closes_it():
    r, w = Pipe(duplex=False)
    w.send_bytes(b"toolongmessage")
    with pytest.raises(OSError, match="bad message length"):
        r.recv_bytes(3)
    assert r.closed
    w.close()


def test_negative_maxlength(pair):
    with pytest.raises(ValueError, match="negative maxlength"):
        pair[1].recv_bytes(-1)


def test_negative_length_header():
    c, raw = raw_pair()
    with c, raw:
        raw.sendall(struct.pack("!i", -5) + b"junk")
        with pytest.raises(OSError, match="bad message length"):
            c.recv_bytes()


@pytest.mark.parametrize("claim", [2**63 + 5, 2**50])
def test_absurd_long_header_raises_promptly(claim):
    c, raw = raw_pair()
    with c, raw:
        raw.sendall(struct.pack("!i", -1) + struct.pack("!Q", claim))
        t = time.monotonic()
        with pytest.raises(OSError, match="bad message length"):
            c.recv_bytes()
        assert time.monotonic() - t < LONG


def test_extended_header_accepted_for_any_length():
    c, raw = raw_pair()
    with c, raw:
        raw.sendall(struct.pack("!i", -1) + struct.pack("!Q", 5) + b"hello")
        assert c.recv_bytes() == b"hello"


def test_huge_claim_then_peer_dies():
    # 200 MiB announced, a little sent, then the peer goes away: the reader
    # must not allocate the whole first, and reports the cut message.
    c, raw = raw_pair()
    with c:
        raw.sendall(struct.pack("!i", 200 << 20) + b"x" * 1000)
        raw.close()
        with pytest.raises(OSError, match="end of file during message"):
            c.recv_bytes()


def test_eof_cases():
    c, raw = raw_pair()
    raw.close()
    with c, pytest.raises(EOFError):
        c.recv_bytes()
    c, raw = raw_pair()
    raw.sendall(b"\0\0")                  # half a header
    raw.close()
    with c, pytest.raises(OSError, match="end of file during message"):
        c.recv()
    c, raw = raw_pair()
    raw.sendall(struct.pack("!i", 10))    # header, no payload: as stdlib
    raw.close()
    with c, pytest.raises(EOFError):
        c.recv_bytes()
    c, raw = raw_pair()
    raw.sendall(struct.pack("!i", 10) + b"abc")
    raw.close()
    with c, pytest.raises(OSError, match="end of file during message"):
        c.recv_bytes()


def test_send_to_closed_peer_raises(pair):
    a, b = pair
    b.close()
    with pytest.raises(OSError):
        for _ in range(100):
            a.send_bytes(b"x" * 100000)


# --------------------------------------------------------- state & errors

def test_closed_connection_everything_raises():
    a, b = Pipe()
    a.close()
    a.close()                             # idempotent
    assert a.closed and a._handle is None
    for call in (a.recv, a.recv_bytes, lambda: a.send(1),
                 lambda: a.send_bytes(b"x"), a.poll, a.fileno,
                 lambda: a.recv_bytes_into(bytearray(4))):
        with pytest.raises(OSError, match="handle is closed"):
            call()
    b.close()


def test_direction_errors():
    r, w = Pipe(duplex=False)
    with r, w:
        assert (r.readable, r.writable, w.readable, w.writable) == \
            (True, False, False, True)
        with pytest.raises(OSError, match="read-only"):
            r.send(2)
        with pytest.raises(OSError, match="write-only"):
            w.recv()
        with pytest.raises(OSError, match="write-only"):
            w.poll()
        w.send(1)
        assert r.recv() == 1


def test_constructor_validation():
    with pytest.raises(ValueError):
        Connection(-1)
    with pytest.raises(TypeError):
        Connection("3")
    with pytest.raises(ValueError):
        Connection(0, readable=False, writable=False)
    with pytest.raises(TypeError):
        Connection()


def test_invalid_handle_operations():
    c = Connection(44977608)
    with pytest.raises(OSError):
        c.poll()
    with pytest.raises(OSError):
        c.recv_bytes()
    c._handle = None                      # forget it, nothing to close
    assert c.closed


def test_handle_attribute_forgets_without_closing():
    a, b = Pipe()
    fd = a.fileno()
    a._handle = None
    os.fstat(fd)                          # still open
    del a
    os.fstat(fd)
    os.close(fd)
    b.close()


def test_context_manager_and_del_close():
    a, b = Pipe()
    with a, b:
        a.send(1729)
        assert b.recv() == 1729
        assert not a.closed
    assert a.closed and b.closed
    a, b = Pipe()
    fd = a.fileno()
    del a
    with pytest.raises(OSError):
        os.fstat(fd)
    b.close()


def test_subclass_and_weakref():
    class Sub(Connection):
        def extra(self):
            return self.fileno()
    a, b = socket.socketpair()
    s = Sub(a.detach())
    s.note = "attribute"
    r = weakref.ref(s)
    assert s.extra() >= 0 and r() is s and s.note == "attribute"
    s.close()
    b.close()


def test_plain_pickle_refused(pair):
    import pickle
    with pytest.raises(TypeError):
        pickle.dumps(pair[0])


# ------------------------------------------------------------------ poll

def test_poll(pair):
    a, b = pair
    assert a.poll() is False
    assert a.poll(-1) is False
    assert a.poll(0.05) is False
    b.send_bytes(b"")
    assert a.poll() and a.poll(None)      # does not consume
    assert a.recv_bytes() == b""
    with pytest.raises(TypeError):
        a.poll("soon")
    with pytest.raises(ValueError):
        a.poll(float("nan"))


def test_poll_wakes_when_data_arrives(pair):
    a, b = pair
    t = threading.Timer(0.1, b.send, (5,))
    t.start()
    assert a.poll(LONG)
    assert a.recv() == 5
    t.join()


def test_poll_sees_eof(pair):
    a, b = pair
    b.close()
    assert a.poll(LONG)
    with pytest.raises(EOFError):
        a.recv()


# ------------------------------------------------------------------ wait

def test_wait_connections_sockets_and_ints():
    a, b = Pipe()
    s1, s2 = socket.socketpair()
    r, w = os.pipe()
    try:
        objs = [a, b, s1, r]
        assert wait(objs, 0) == []
        assert wait(objs, -1) == []
        b.send(None)
        s2.send(b"x")
        os.write(w, b"x")
        assert wait(objs, LONG) == [a, s1, r]
        assert wait(iter(objs), 0) == [a, s1, r]
    finally:
        for o in (a, b, s1, s2):
            o.close()
        os.close(r)
        os.close(w)


def test_wait_timeout_and_wakeup():
    a, b = Pipe()
    with a, b:
        t = time.monotonic()
        assert wait([a], 0.1) == []
        assert time.monotonic() - t >= 0.09
        threading.Timer(0.1, b.send_bytes, (b"x",)).start()
        assert wait([a, b], None) == [a]


def test_wait_bad_inputs():
    a, b = Pipe()
    with pytest.raises(TypeError):
        wait([object()])
    with pytest.raises(ValueError):
        wait([-1])
    with pytest.raises(TypeError):
        wait(5)
    with pytest.raises(TypeError):
        wait([a], "x")
    b.close()
    a.close()
    with pytest.raises(OSError, match="handle is closed"):
        wait([a], 0)


def test_wait_runs_signal_handlers():
    if not hasattr(signal, "setitimer"):
        pytest.skip("needs setitimer")
    a, b = Pipe()
    seen = []

    class Stop(Exception):
        pass

    def handler(*args):
        seen.append(1)
        raise Stop
    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Stop):
            wait([a], LONG)
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Stop):
            a.recv()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        a.close()
        b.close()
    assert len(seen) == 2


def test_recv_survives_ignored_signals():
    if not hasattr(signal, "setitimer"):
        pytest.skip("needs setitimer")
    a, b = Pipe()
    old = signal.signal(signal.SIGALRM, lambda *args: None)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
        threading.Timer(0.3, b.send_bytes, (b"y" * (4 << 20),)).start()
        assert a.recv_bytes() == b"y" * (4 << 20)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        a.close()
        b.close()


# -------------------------------------------------------- big & threaded

def test_large_messages_both_kinds():
    for duplex in (True, False):
        r, w = Pipe(duplex)
        if duplex:
            r, w = r, w
        big = os.urandom(1 << 20) * 17
        t = threading.Thread(target=w.send_bytes, args=(big,))
        t.start()
        assert r.recv_bytes() == big
        t.join()
        t = threading.Thread(target=w.send, args=([big, 1],))
        t.start()
        assert r.recv() == [big, 1]
        t.join()
        r.close()
        w.close()


def test_frames_stay_whole_with_two_readers():
    r, w = Pipe(duplex=False)
    lock = threading.Lock()
    got = []

    def reader():
        while True:
            with lock:
                msg = r.recv_bytes()
            if msg == b"end":
                return
            got.append(msg)
    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    msgs = [bytes([i % 256]) * (i * 37 % 5000) for i in range(400)]
    for m in msgs:
        w.send_bytes(m)
    w.send_bytes(b"end")
    w.send_bytes(b"end")
    for t in threads:
        t.join()
    assert sorted(got) == sorted(msgs)
    r.close()
    w.close()


@pytest.mark.skipif(os.environ.get("CMP_BIG_TESTS") != "1",
                    reason="moves 2 GiB; set CMP_BIG_TESTS=1")
def test_over_2gib_uses_extended_header():
    a, raw = raw_pair()
    n = (1 << 31) + 10
    payload = bytearray(n)
    payload[-1] = 7
    got = []
    t = threading.Thread(target=lambda: got.append(_read_raw(raw, 12)))
    t.start()
    # only look at the header: the rest is drained by the thread
    a.send_bytes(payload)
    t.join()
    assert got[0][:4] == struct.pack("!i", -1)
    assert struct.unpack("!Q", got[0][4:12])[0] == n
    a.close()
    raw.close()


def _read_raw(sock, header):
    head = b""
    while len(head) < header:
        head += sock.recv(header - len(head))
    left = struct.unpack("!Q", head[4:12])[0]
    while left:
        left -= len(sock.recv(min(left, 1 << 20)))
    return head


# ------------------------------------------------------ listener / client

def test_address_helpers():
    assert connection.address_type(("localhost", 0)) == "AF_INET"
    assert connection.address_type("/tmp/x") == "AF_UNIX"
    assert connection.address_type(r"\\.\pipe\x") == "AF_PIPE"
    with pytest.raises((ValueError, TypeError)):   # TypeError: as stdlib
        connection.address_type(5)
    with pytest.raises(ValueError):
        connection.arbitrary_address("AF_BOGUS")
    assert isinstance(connection.arbitrary_address("AF_UNIX"), str)


def test_invalid_family_and_authkey():
    with pytest.raises(ValueError):
        Listener(r"\\.\test")
    with pytest.raises(TypeError):
        Listener(authkey="text")
    with pytest.raises(ValueError):
        Client(r"\\.\pipe\nothing")


@pytest.mark.parametrize("family", connection.families)
def test_listener_client_families(family):
    with Listener(family=family, backlog=5) as l:
        address = l.address
        with Client(l.address) as c, l.accept() as d:
            c.send(1729)
            assert d.recv() == 1729
            d.send_bytes(b"back")
            assert c.recv_bytes() == b"back"
            if family == "AF_INET":
                assert l.last_accepted[0] == "127.0.0.1"
    with pytest.raises(OSError):
        l.accept()
    if family == "AF_UNIX":
        assert not os.path.exists(address)


def test_multiple_bind():
    for family in connection.families:
        with Listener(family=family) as l:
            with pytest.raises(OSError):
                Listener(l.address, family)


def test_abstract_socket():
    with Listener("\0cmp-conn-test-%d" % os.getpid()) as l:
        with Client(l.address) as c, l.accept() as d:
            c.send("abstract")
            assert d.recv() == "abstract"


def _serve_once(listener, out):
    try:
        with listener.accept() as d:
            out.append(d.recv())
            d.send("ok")
    except Exception as e:          # noqa: BLE001 -- reported to the test
        out.append(e)


@pytest.mark.parametrize("family", connection.families)
def test_authenticated(family):
    with Listener(family=family, authkey=b"secret") as l:
        out = []
        t = threading.Thread(target=_serve_once, args=(l, out))
        t.start()
        with Client(l.address, authkey=b"secret") as c:
            c.send("in")
            assert c.recv() == "ok"
        t.join()
        assert out == ["in"]


def test_wrong_key_refused():
    with Listener(authkey=b"secret") as l:
        out = []
        t = threading.Thread(target=_serve_once, args=(l, out))
        t.start()
        with pytest.raises(native.AuthenticationError):
            Client(l.address, authkey=b"wrong")
        t.join()
        assert isinstance(out[0], native.AuthenticationError)


def test_client_authkey_type():
    with Listener() as l:
        with pytest.raises(TypeError):
            Client(l.address, authkey="text")


def test_challenge_functions_bad_input():
    class Fake:
        def __init__(self, replies):
            self.replies = list(replies)
            self.sent = []

        def recv_bytes(self, size=None):
            return self.replies.pop(0)

        def send_bytes(self, data):
            self.sent.append(bytes(data))

    with pytest.raises(ValueError):
        connection.deliver_challenge(Fake([]), "str key")
    with pytest.raises(ValueError):
        connection.answer_challenge(Fake([]), 1234)
    with pytest.raises(native.AuthenticationError):
        connection.deliver_challenge(Fake([b"something bogus"]), b"abc")
    if sys.version_info >= (3, 12):
        chal = connection._CHALLENGE
        with pytest.raises(native.AuthenticationError):
            connection.answer_challenge(Fake([chal]), b"abc")      # too short
        with pytest.raises(native.AuthenticationError):
            connection.answer_challenge(Fake([b"#NOPE#" + b"x" * 40]), b"k")
        with pytest.raises(native.AuthenticationError):
            connection.answer_challenge(
                Fake([chal + b"{bogus}" + b"x" * 40]), b"k")
        with pytest.raises(native.AuthenticationError):
            connection._verify_challenge(b"k", b"{sha256}" + b"m" * 40,
                                         b"{sha256}short")
    else:
        with pytest.raises(native.AuthenticationError):
            connection.answer_challenge(
                Fake([connection.CHALLENGE, b"bogus"]), b"abc")


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.12+ negotiation")
def test_challenge_response_digests():
    key = b"supadupasecretkey"
    for prefix in (b"", b"{md5}", b"{sha256}", b"{sha384}"):
        msg = prefix + b"is-twenty-bytes-long"
        resp = connection._create_response(key, msg)
        assert resp.startswith(prefix)
        connection._verify_challenge(key, msg, resp)
        with pytest.raises(native.AuthenticationError):
            connection._verify_challenge(b"other", msg, resp)


def test_xml_connection_wrapper():
    with connection.XmlListener() as l:
        out = []

        def serve():
            d = l.accept()          # a wrapper: no context manager
            out.append(d.recv())
            d.send({"a": [1, 2]})
            d.close()
        t = threading.Thread(target=serve)
        t.start()
        c = connection.XmlClient(l.address)
        c.send(("x", 1))
        assert c.recv() == {"a": [1, 2]}
        c.close()
        t.join()
        assert out == [["x", 1]]


# ---------------------------------------------- interop with the stdlib

def test_stdlib_connection_wire_compatible():
    std_conn = pytest.importorskip("multiprocessing.connection")
    a, b = socket.socketpair()
    ours = Connection(a.detach())
    theirs = std_conn.Connection(b.detach())
    try:
        big = os.urandom(3 << 20)
        for obj in [1, "two", [3.0], b"", big]:
            t = threading.Thread(target=ours.send, args=(obj,))
            t.start()
            assert theirs.recv() == obj
            t.join()
            t = threading.Thread(target=theirs.send, args=(obj,))
            t.start()
            assert ours.recv() == obj
            t.join()
        theirs.send_bytes(b"raw")
        assert ours.recv_bytes() == b"raw"
        ours.send_bytes(b"raw2")
        assert theirs.recv_bytes() == b"raw2"
    finally:
        ours.close()
        theirs.close()


def _interop(listener_mod, client_mod, family, key, client_key=None):
    client_key = key if client_key is None else client_key
    with listener_mod.Listener(family=family, authkey=key) as l:
        out = []
        t = threading.Thread(target=_serve_once, args=(l, out))
        t.start()
        try:
            c = client_mod.Client(l.address, authkey=client_key)
        except BaseException:
            t.join()
            return out, None
        with c:
            c.send("ping")
            reply = c.recv()
        t.join()
        return out, reply


@pytest.mark.parametrize("family", ["AF_UNIX", "AF_INET"])
@pytest.mark.parametrize("key", [None, b"shared-key"])
@pytest.mark.parametrize("direction", ["ours-listens", "stdlib-listens"])
def test_interop_listener_client(family, key, direction):
    import multiprocessing.connection as std
    lmod, cmod = (connection, std) if direction == "ours-listens" \
        else (std, connection)
    out, reply = _interop(lmod, cmod, family, key)
    assert out == ["ping"] and reply == "ok"


@pytest.mark.parametrize("family", ["AF_UNIX", "AF_INET"])
@pytest.mark.parametrize("direction", ["ours-listens", "stdlib-listens"])
def test_interop_wrong_key_refused(family, direction):
    import multiprocessing.connection as std
    import multiprocessing
    lmod, cmod = (connection, std) if direction == "ours-listens" \
        else (std, connection)
    with pytest.raises((native.AuthenticationError,
                        multiprocessing.AuthenticationError)):
        with lmod.Listener(family=family, authkey=b"right") as l:
            out = []
            t = threading.Thread(target=_serve_once, args=(l, out))
            t.start()
            try:
                cmod.Client(l.address, authkey=b"wrong")
            finally:
                t.join()
    assert len(out) == 1 and "AuthenticationError" in type(out[0]).__name__


# ------------------------------------------------- the reused pickler

class _Registered:
    pass


def test_register_after_sends_takes_effect(pair):
    from cmultiprocessing import reduction
    a, b = pair
    a.send("warm the cached pickler")
    assert b.recv() == "warm the cached pickler"
    reduction.register(_Registered, lambda obj: (str, ("reduced",)))
    try:
        a.send(_Registered())
        assert b.recv() == "reduced"
        reduction.register(_Registered, lambda obj: (str, ("again",)))
        # same number of reducers, yet the reused pickler sees the change
        a.send(_Registered())
        assert b.recv() == "again"
        assert pickle_roundtrip(_Registered()) == "again"
    finally:
        del reduction.ForkingPickler._extra_reducers[_Registered]


def pickle_roundtrip(obj):
    from cmultiprocessing import reduction
    return reduction.ForkingPickler.loads(reduction.ForkingPickler.dumps(obj))


class _SendsWhilePickled:
    """Its reducer sends on a connection: a send inside a send."""
    conn = None

    def __reduce__(self):
        self.conn.send("inner")
        return (str, ("outer",))


def test_send_from_inside_a_reducer(pair):
    a, b = pair
    c, d = Pipe()
    with c, d:
        obj = _SendsWhilePickled()
        obj.conn = c
        a.send([obj, obj])
        assert b.recv() == ["outer", "outer"]
        assert d.recv() == "inner"
        assert not d.poll()               # __reduce__ ran once (memo)
        a.send(obj)                       # the memo was cleared in between
        assert b.recv() == "outer" and d.recv() == "inner"


def test_failed_pickle_leaves_no_state(pair):
    a, b = pair
    class Bad:
        def __reduce__(self):
            raise ValueError("cannot")
    with pytest.raises(ValueError):
        a.send(["x" * 100000, Bad()])     # part of it was already framed
    a.send("clean")
    assert b.recv() == "clean"


def test_threads_sending_objects_concurrently():
    pairs = [Pipe() for _ in range(4)]
    errors = []

    def worker(conn, tag):
        try:
            for i in range(300):
                conn.send((tag, i, "p" * (i % 50)))
        except Exception as e:          # noqa: BLE001 -- reported below
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(p[0], t))
               for t, p in enumerate(pairs)]
    for t in threads:
        t.start()
    for tag, (_, r) in enumerate(pairs):
        for i in range(300):
            assert r.recv() == (tag, i, "p" * (i % 50))
    for t in threads:
        t.join()
    assert errors == []
    for p in pairs:
        p[0].close()
        p[1].close()


class _Weak:
    pass


def test_sent_objects_are_not_kept_alive(pair):
    a, b = pair
    obj = _Weak()
    ref = weakref.ref(obj)
    a.send([obj, "x"])
    b.recv()
    del obj
    assert ref() is None                  # the reused pickler forgot it


def test_no_growth_over_many_messages(pair):
    import gc
    import tracemalloc
    a, b = pair
    msg = {"k": [1, 2.5, "s" * 100]}
    for _ in range(200):
        a.send(msg)
        b.recv()
        a.send_bytes(b"x" * 1000)
        b.recv_bytes()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(3000):
        a.send(msg)
        b.recv()
        a.send_bytes(b"x" * 1000)
        b.recv_bytes()
        a.send_bytes(b"y" * 10)
        b.recv_bytes_into(bytearray(16))
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 64 * 1024


def test_message_above_probe_size_arrives_whole():
    # Longer than the first part the reader takes before allocating the
    # whole (64 MiB): both parts must land in the right place.
    a, b = Pipe()
    big = bytearray(os.urandom(1 << 20) * 80)
    big[-1] ^= 0xFF
    t = threading.Thread(target=a.send_bytes, args=(big,))
    t.start()
    got = b.recv_bytes()
    t.join()
    assert got == big
    a.close()
    b.close()


# ------------------------------- handshake with another Python version

_OTHER_PEER = r'''
import sys
from multiprocessing.connection import Listener, Client
role, key = sys.argv[1], sys.argv[2].encode()
if role == "listen":
    with Listener(("127.0.0.1", 0), authkey=key) as l:
        print("%s %d" % l.address, flush=True)
        try:
            with l.accept() as c:
                c.send(c.recv() + " back")
        except Exception as e:
            print(type(e).__name__, flush=True)
else:
    host, port = sys.stdin.readline().split()
    try:
        with Client((host, int(port)), authkey=key) as c:
            c.send("from other")
            print(c.recv(), flush=True)
    except Exception as e:
        print(type(e).__name__, flush=True)
'''


def _other_python():
    other = "3.11" if sys.version_info >= (3, 12) else "3.12"
    here = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
    path = os.path.join(os.path.dirname(here), "py" + other, "bin", "python")
    if not os.path.exists(path):
        pytest.skip("no Python %s beside this one to talk to" % other)
    return path


@pytest.mark.parametrize("key,ok", [(b"k", True), (b"wrong", False)])
def test_handshake_with_other_version_listener(key, ok):
    import subprocess
    proc = subprocess.Popen([_other_python(), "-c", _OTHER_PEER, "listen",
                             "k"], stdout=subprocess.PIPE, text=True)
    try:
        host, port = proc.stdout.readline().split()
        if ok:
            with Client((host, int(port)), authkey=key) as c:
                c.send("hello")
                assert c.recv() == "hello back"
        else:
            with pytest.raises(native.AuthenticationError):
                Client((host, int(port)), authkey=key)
            assert proc.stdout.readline().strip() == "AuthenticationError"
    finally:
        proc.stdout.close()
        assert proc.wait(LONG) == 0


@pytest.mark.parametrize("key,ok", [(b"k", True), (b"wrong", False)])
def test_handshake_with_other_version_client(key, ok):
    import subprocess
    with Listener(("127.0.0.1", 0), authkey=b"k") as l:
        proc = subprocess.Popen([_other_python(), "-c", _OTHER_PEER,
                                 "connect", key.decode()],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        try:
            proc.stdin.write("%s %d\n" % l.address)
            proc.stdin.close()
            if ok:
                with l.accept() as d:
                    d.send(d.recv() + " too")
                assert proc.stdout.readline().strip() == "from other too"
            else:
                with pytest.raises(native.AuthenticationError):
                    l.accept()
                assert proc.stdout.readline().strip() == \
                    "AuthenticationError"
        finally:
            proc.stdout.close()
            assert proc.wait(LONG) == 0


def test_detach_leaves_the_descriptor_open():
    a, b = socket.socketpair()
    with b:
        conn = Connection(a.fileno())
        conn._detach()
        assert conn.closed
        del conn                    # nothing closed on the way out
        a.sendall(b"still open")
        assert b.recv(64) == b"still open"
        a.close()
