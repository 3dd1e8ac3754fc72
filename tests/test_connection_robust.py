"""Robustness of the authenticating Listener against misbehaving clients.

A client accepted by a Listener with an authkey must finish the handshake
within ``connection.HANDSHAKE_TIMEOUT`` seconds.  Clients that stay silent,
trickle, send malformed frames or the wrong key make that accept() raise
(AuthenticationError for a timeout or a refused digest, OSError/EOFError for
a broken frame, as a Connection does), their socket is closed, and the next
accept() serves the next client.  Every test here ends by serving a good
client through the same Listener.

The tests shorten HANDSHAKE_TIMEOUT and assert what accept() returns or
raises, never how long it took.
"""
import os
import socket
import struct
import threading
import time

import pytest

from cmultiprocessing import connection
from cmultiprocessing.connection import (AuthenticationError, Client,
                                         Listener)

from support import thread_count

KEY = b"robust-key"
FAMILIES = ["AF_INET", "AF_UNIX"]
JOIN = 60.0


@pytest.fixture(autouse=True)
def short_deadline(monkeypatch):
    monkeypatch.setattr(connection, "HANDSHAKE_TIMEOUT", 0.4)


class Runner(threading.Thread):
    """Run fn in a thread; join() re-raises nothing, `.result`/`.error`
    hold the outcome."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args = fn, args
        self.result = self.error = None

    def run(self):
        try:
            self.result = self.fn(*self.args)
        except BaseException as e:  # noqa: B902 -- reported to the test
            self.error = e

    def finish(self):
        self.join(JOIN)
        assert not self.is_alive()
        return self


def raw_connect(address, family):
    s = socket.socket(getattr(socket, family))
    s.settimeout(JOIN)
    s.connect(address)
    return s


def frame(payload):
    return struct.pack("!i", len(payload)) + payload


def read_frame(sock):
    """One frame from a raw socket, or None at end of file."""
    head = recv_exact(sock, 4)
    if head is None:
        return None
    return recv_exact(sock, struct.unpack("!i", head)[0])


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        got = sock.recv(n - len(buf))
        if not got:
            return None
        buf += got
    return buf


def drained_to_eof(sock):
    """Read until the server closes; True when it did (a reset counts: a
    socket closed with unread input resets the connection)."""
    while True:
        try:
            got = sock.recv(4096)
        except ConnectionResetError:
            return True
        if not got:
            return True


def good_client(address, payload=b"hello"):
    with Client(address, authkey=KEY) as c:
        c.send_bytes(payload)
        return c.recv_bytes()


def serve_good_client(listener):
    """Accept one good client and echo one message back to it."""
    r = Runner(good_client, listener.address, b"ping")
    r.start()
    with listener.accept() as conn:
        msg = conn.recv_bytes()
        conn.send_bytes(msg[::-1])
    r.finish()
    assert r.error is None, r.error
    assert r.result == b"gnip"


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def listener(family):
    with Listener(family=family, authkey=KEY, backlog=64) as l:
        yield l


def test_handshake_timeout_attribute():
    # The fixture shortened it; the documented default is a few seconds.
    import importlib
    assert connection.HANDSHAKE_TIMEOUT == 0.4
    src = importlib.util.find_spec("cmultiprocessing.connection").origin
    with open(src) as f:
        assert "HANDSHAKE_TIMEOUT = 5.0" in f.read()


def test_silent_client_times_out(listener, family):
    silent = raw_connect(listener.address, family)
    try:
        with pytest.raises(AuthenticationError, match="timed out"):
            listener.accept()
        # It was sent the challenge, then disconnected.
        challenge = read_frame(silent)
        assert challenge.startswith(b"#CHALLENGE#")
        assert drained_to_eof(silent)
    finally:
        silent.close()
    serve_good_client(listener)


def test_many_half_open_clients(listener, family, monkeypatch):
    monkeypatch.setattr(connection, "HANDSHAKE_TIMEOUT", 0.2)
    stalled = [raw_connect(listener.address, family) for _ in range(20)]
    try:
        runner = Runner(good_client, listener.address, b"ping")
        runner.start()
        timeouts = served = 0
        while not served:
            try:
                conn = listener.accept()
            except AuthenticationError as e:
                assert "timed out" in str(e)
                timeouts += 1
                continue
            with conn:
                conn.send_bytes(conn.recv_bytes()[::-1])
            served += 1
        runner.finish()
        assert runner.error is None, runner.error
        assert runner.result == b"gnip"
        # Accepted in arrival order: all twenty stalled ones first.
        assert timeouts == 20
        for s in stalled:
            assert drained_to_eof(s)
    finally:
        for s in stalled:
            s.close()


class TrickleConn:
    """The client's side of a handshake over a raw socket whose sends go
    out one byte at a time."""

    def __init__(self, sock, pause):
        self.sock, self.pause = sock, pause

    def send_bytes(self, data):
        for b in frame(bytes(data)):
            self.sock.sendall(bytes([b]))
            time.sleep(self.pause)

    def recv_bytes(self, maxlength=None):
        data = read_frame(self.sock)
        if data is None:
            raise EOFError
        return data


def trickling_client(address, family, pause):
    with raw_connect(address, family) as s:
        tc = TrickleConn(s, pause)
        connection.answer_challenge(tc, KEY)
        connection.deliver_challenge(tc, KEY)
        tc.send_bytes(b"after")
        return read_frame(s)


def test_trickling_client_does_not_extend_deadline(listener, family):
    # Every byte arrives well inside the deadline, the whole would not.
    r = Runner(trickling_client, listener.address, family, 0.05)
    r.start()
    with pytest.raises(AuthenticationError, match="timed out"):
        listener.accept()
    r.finish()
    assert isinstance(r.error, (OSError, EOFError, AuthenticationError))
    serve_good_client(listener)


def test_trickling_client_is_a_valid_peer(listener, family, monkeypatch):
    # The same client is served when there is no deadline: the timeout
    # above is what refused it.
    monkeypatch.setattr(connection, "HANDSHAKE_TIMEOUT", None)
    r = Runner(trickling_client, listener.address, family, 0.002)
    r.start()
    with listener.accept() as conn:
        assert conn.recv_bytes() == b"after"
        conn.send_bytes(b"done")
    r.finish()
    assert r.error is None, r.error
    assert r.result == b"done"


# (name, bytes sent instead of an answer, what accept() raises)
BAD_ANSWERS = [
    ("absurd-length", struct.pack("!i", 0x7fffffff) + b"x" * 64, OSError),
    ("over-maxlength", frame(b"y" * 257), OSError),
    ("negative-length", struct.pack("!i", -5) + b"z" * 8, OSError),
    ("huge-64bit-length", struct.pack("!iQ", -1, 2 ** 63) + b"z", OSError),
    ("truncated-header", b"\x00\x00", OSError),
    ("truncated-payload", struct.pack("!i", 100) + b"a" * 10, OSError),
    ("truncated-long-header", struct.pack("!i", -1) + b"\x00\x00", OSError),
    ("nothing-then-eof", b"", EOFError),
    ("garbage-answer", frame(b"q" * 30), AuthenticationError),
    ("unknown-digest", frame(b"{sha1}" + b"0" * 20), AuthenticationError),
]


@pytest.mark.parametrize("name,data,exc", BAD_ANSWERS,
                         ids=[b[0] for b in BAD_ANSWERS])
def test_bad_answer_frames(listener, family, name, data, exc):
    # Sent before the challenge arrives: it waits in the socket for the
    # server's read of the answer.
    bad = raw_connect(listener.address, family)
    try:
        bad.sendall(data)
        bad.shutdown(socket.SHUT_WR)
        with pytest.raises(exc) as info:
            listener.accept()
        # Exactly that type family, not some other error in passing.
        assert isinstance(info.value, (OSError, EOFError,
                                       AuthenticationError))
        assert drained_to_eof(bad)
    finally:
        bad.close()
    serve_good_client(listener)


def test_bad_frame_without_closing_times_out(listener, family):
    # Half a frame and then silence (the writing side stays open).
    bad = raw_connect(listener.address, family)
    try:
        bad.sendall(struct.pack("!i", 50) + b"half")
        with pytest.raises(AuthenticationError, match="timed out"):
            listener.accept()
        assert drained_to_eof(bad)
    finally:
        bad.close()
    serve_good_client(listener)


def test_wrong_key_client_refused(listener, family):
    def wrong():
        return Client(listener.address, authkey=b"not-the-key")

    r = Runner(wrong)
    r.start()
    with pytest.raises(AuthenticationError):
        listener.accept()
    r.finish()
    assert isinstance(r.error, AuthenticationError)
    serve_good_client(listener)


def test_client_rejecting_server_answer(listener, family):
    # The client answers correctly, then refuses the server's answer to
    # its own challenge: the server's half fails the other way round.
    def rogue():
        with raw_connect(listener.address, family) as s:
            conn = TrickleConn(s, 0)
            connection.answer_challenge(conn, KEY)
            challenge = b"#CHALLENGE#" + b"{sha256}" + os.urandom(40) \
                if hasattr(connection, "_CHALLENGE") else \
                b"#CHALLENGE#" + os.urandom(20)
            conn.send_bytes(challenge)
            conn.recv_bytes()                 # the server's answer
            conn.send_bytes(b"#FAILURE#")
            return read_frame(s)

    r = Runner(rogue)
    r.start()
    with pytest.raises(AuthenticationError, match="rejected"):
        listener.accept()
    r.finish()
    assert r.error is None and r.result is None    # closed by the server
    serve_good_client(listener)


def test_wrong_key_server_refused(family):
    # A Listener with another key: the connecting side refuses it too.
    with Listener(family=family, authkey=b"other-key") as l:
        r = Runner(l.accept)
        r.start()
        with pytest.raises(AuthenticationError):
            Client(l.address, authkey=KEY)
        r.finish()
        assert isinstance(r.error, AuthenticationError)


def test_connection_blocking_after_handshake(listener, family):
    # The deadline covers the handshake only: afterwards the connection
    # waits as long as it takes, and bytes the client sent straight after
    # the handshake were left for it.
    def client():
        with Client(listener.address, authkey=KEY) as c:
            c.send_bytes(b"one")
            c.send_bytes(b"two")
            time.sleep(3 * connection.HANDSHAKE_TIMEOUT)
            c.send_bytes(b"late")
            return c.recv_bytes()

    r = Runner(client)
    r.start()
    with listener.accept() as conn:
        assert os.get_blocking(conn.fileno())
        assert [conn.recv_bytes() for _ in range(3)] == [b"one", b"two",
                                                          b"late"]
        conn.send_bytes(b"ok")
    r.finish()
    assert r.error is None, r.error
    assert r.result == b"ok"


def test_unauthenticated_listener_unchanged(family):
    # Without an authkey there is no handshake and so no deadline.
    with Listener(family=family) as l:
        s = raw_connect(l.address, family)
        with s, l.accept() as conn:
            time.sleep(2 * connection.HANDSHAKE_TIMEOUT)
            s.sendall(frame(b"plain"))
            assert conn.recv_bytes() == b"plain"


def test_stdlib_client_served_within_deadline(listener, family):
    from multiprocessing.connection import Client as StdClient

    def std():
        with StdClient(listener.address, authkey=KEY) as c:
            c.send_bytes(b"std")
            return c.recv_bytes()

    r = Runner(std)
    r.start()
    with listener.accept() as conn:
        conn.send_bytes(conn.recv_bytes().upper())
    r.finish()
    assert r.error is None, r.error
    assert r.result == b"STD"


# ------------------------------------------------------------ managers

def test_manager_serves_past_stalled_and_wrong_key_clients():
    import cmultiprocessing
    ctx = cmultiprocessing.get_context("fork")
    with ctx.Manager() as m:
        family = connection.address_type(m.address)
        stalled = [raw_connect(m.address, family) for _ in range(3)]
        try:
            with pytest.raises(AuthenticationError):
                Client(m.address, authkey=b"wrong")
            half = raw_connect(m.address, family)
            half.sendall(struct.pack("!i", 1000) + b"partial")
            stalled.append(half)
            d = m.dict()
            d["x"] = 41
            d["x"] += 1
            assert d.copy() == {"x": 42}
            assert m.list(range(3))[:] == [0, 1, 2]
        finally:
            for s in stalled:
                s.close()


# ------------------------------------------------------- fuzz corpus replay

def test_fuzz_corpus_replays():
    # The committed fuzz corpus through the fuzz targets' checks with this
    # (unsanitized) build, in a fresh interpreter: fuzz_targets patches
    # the module (fixed challenges, a recv() that refuses every global)
    # before anything has cached the real loads.
    import subprocess
    import sys
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz")
    out = subprocess.run(
        [sys.executable, os.path.join(here, "fuzz_targets.py")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    counts = dict(line.split(":") for line in out.stdout.splitlines())
    for target in ("conn", "handshake"):
        folder = os.path.join(here, "corpus", target)
        assert counts["replayed " + target].split() == [
            str(len(os.listdir(folder))), "inputs"]
        assert len(os.listdir(folder)) > 20


# ------------------------------------- handshake on an accepted Connection

def test_authenticate_connection_silent_peer_times_out(family):
    # What a manager's per-connection thread can use: the deadline on a
    # Connection it already holds; the Connection stays open and usable.
    with Listener(family=family) as l:
        silent = raw_connect(l.address, family)
        with silent, l.accept() as conn:
            with pytest.raises(AuthenticationError, match="timed out"):
                connection._authenticate_connection(conn, KEY)
            assert not conn.closed
            assert os.get_blocking(conn.fileno())
            assert read_frame(silent).startswith(b"#CHALLENGE#")
            silent.sendall(frame(b"still here"))
            assert conn.recv_bytes() == b"still here"


def test_authenticate_connection_good_and_wrong_clients(family):
    with Listener(family=family) as l:
        for key, ok in ((KEY, True), (b"wrong", False)):
            r = Runner(Client, l.address, "AF_UNIX" if family == "AF_UNIX"
                       else None, key)
            r.start()
            with l.accept() as conn:
                if ok:
                    connection._authenticate_connection(conn, KEY)
                    conn.send_bytes(b"welcome")
                else:
                    with pytest.raises(AuthenticationError):
                        connection._authenticate_connection(conn, KEY)
            r.finish()
            if ok:
                assert r.error is None, r.error
                with r.result as c:
                    assert c.recv_bytes() == b"welcome"
            else:
                assert isinstance(r.error, AuthenticationError)


def test_authenticate_connection_not_a_socket():
    # A handle that is not a socket cannot take a deadline: the handshake
    # then runs as before, over the object's own send/recv.
    from cmultiprocessing.connection import Pipe
    a, b = Pipe(duplex=True)
    r_fd, w_fd = os.pipe()

    class NotASocket:
        fileno = staticmethod(lambda: r_fd)
        send_bytes = a.send_bytes
        recv_bytes = a.recv_bytes

    r = Runner(lambda: (connection.answer_challenge(b, KEY),
                        connection.deliver_challenge(b, KEY)))
    r.start()
    try:
        connection._authenticate_connection(NotASocket(), KEY)
        r.finish()
        assert r.error is None, r.error
        a.send_bytes(b"after")
        assert b.recv_bytes() == b"after"
    finally:
        for fd in (r_fd, w_fd):
            os.close(fd)
        a.close()
        b.close()


def _manager_bounds_handshake():
    import inspect
    from cmultiprocessing import managers
    return "_authenticate_connection" in inspect.getsource(
        managers.Server._server_function)


@pytest.mark.skipif(not _manager_bounds_handshake(),
                    reason="managers.Server does not bound its handshake")
def test_manager_drops_stalled_clients_after_deadline():
    # Each connection gets a thread in the manager; a stalled client's
    # thread ends once HANDSHAKE_TIMEOUT passes (the forked manager
    # inherits the shortened value), so stalled clients cannot pile up.
    import cmultiprocessing
    ctx = cmultiprocessing.get_context("fork")

    with ctx.Manager() as m:
        family = connection.address_type(m.address)
        pid = m._process.pid
        base = thread_count(pid)
        stalled = [raw_connect(m.address, family) for _ in range(8)]
        try:
            for s in stalled:
                # each was challenged: its thread exists by now
                assert read_frame(s).startswith(b"#CHALLENGE#")
            assert thread_count(pid) >= base + 8
            for s in stalled:
                assert drained_to_eof(s)       # closed after the deadline
        finally:
            for s in stalled:
                s.close()
        assert m.list([1, 2])[:] == [1, 2]
