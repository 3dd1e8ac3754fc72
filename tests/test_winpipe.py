"""Windows named pipes: Pipe() and the AF_PIPE family of Listener/Client.

On Windows these run against the real thing (winpipe.c over
platform/win32_npipe.c).  Elsewhere only the POSIX contract is checked:
the winpipe_* functions do not exist and AF_PIPE is refused as the stdlib
refuses it.  (The platform layer under them is tested in plain C under
wine: tests/platform_c.)
"""
import sys
import threading

import pytest

import _cmultiprocessing
from cmultiprocessing import connection
from cmultiprocessing.connection import Client, Listener, Pipe

WINDOWS = sys.platform == "win32"
on_windows = pytest.mark.skipif(not WINDOWS, reason="Windows named pipes")
off_windows = pytest.mark.skipif(WINDOWS, reason="POSIX behaviour")


@off_windows
def test_posix_has_no_named_pipes():
    for name in ("winpipe_pair", "winpipe_create", "winpipe_accept",
                 "winpipe_connect"):
        assert not hasattr(_cmultiprocessing, name)
    assert "AF_PIPE" not in connection.families
    assert connection.default_family == "AF_UNIX"
    with pytest.raises(ValueError):
        Listener(family="AF_PIPE")
    with pytest.raises(ValueError):
        Listener(r"\\.\pipe\cmp-test-nothing")
    with pytest.raises(ValueError):
        Client(r"\\.\pipe\cmp-test-nothing")


@on_windows
def test_pipe_both_ways_and_large():
    a, b = Pipe()
    with a, b:
        a.send_bytes(b"ping")
        assert b.recv_bytes() == b"ping"
        b.send({"x": [1, 2]})
        assert a.recv() == {"x": [1, 2]}
        big = bytes(range(256)) * 4096          # 1 MiB
        t = threading.Thread(target=a.send_bytes, args=(big,))
        t.start()
        assert b.recv_bytes() == big
        t.join()
        assert not b.poll(0)
        a.send_bytes(b"")
        assert b.poll(5)
        assert b.recv_bytes() == b""


@on_windows
def test_one_way_pipe_and_eof():
    r, w = Pipe(duplex=False)
    with r:
        assert not r.writable and not w.readable
        with pytest.raises(OSError):
            w.recv_bytes()
        w.send_bytes(b"last")
        w.close()
        assert r.recv_bytes() == b"last"
        assert r.poll(5)              # end of file counts as readable
        with pytest.raises(EOFError):
            r.recv_bytes()


@on_windows
def test_wait_on_pipe_ends():
    a, b = Pipe()
    c, d = Pipe()
    with a, b, c, d:
        assert connection.wait([b, d], timeout=0.05) == []
        a.send(1)
        assert connection.wait([b, d], timeout=5) == [b]
        assert b.recv() == 1


@on_windows
@pytest.mark.parametrize("authkey", [None, b"secret"])
def test_listener_client(authkey):
    with Listener(family="AF_PIPE", authkey=authkey) as listener:
        assert connection.address_type(listener.address) == "AF_PIPE"
        got = []

        def serve():
            with listener.accept() as conn:
                got.append(conn.recv())
                conn.send("welcome")

        t = threading.Thread(target=serve)
        t.start()
        with Client(listener.address, authkey=authkey) as conn:
            conn.send("hello")
            assert conn.recv() == "welcome"
        t.join()
        assert got == ["hello"]


@on_windows
def test_listener_wrong_key_and_missing_pipe():
    with Listener(family="AF_PIPE", authkey=b"right") as listener:
        errors = []

        def serve():
            try:
                listener.accept()
            except connection.AuthenticationError as e:
                errors.append(e)

        t = threading.Thread(target=serve)
        t.start()
        with pytest.raises(connection.AuthenticationError):
            Client(listener.address, authkey=b"wrong")
        t.join()
        assert errors
    with pytest.raises(FileNotFoundError):
        Client(r"\\.\pipe\cmp-test-no-such-pipe")
    # the name of a live listener cannot be taken by a second one
    with Listener(family="AF_PIPE") as first:
        with pytest.raises(OSError):
            Listener(first.address)
