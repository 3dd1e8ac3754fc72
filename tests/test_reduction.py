"""Unit tests of cmultiprocessing.reduction (ForkingPickler, reducers,
descriptor passing) and cmultiprocessing.resource_sharer."""
import functools
import io
import os
import pickle
import socket
import sys
import threading

import pytest

import _cmultiprocessing as native
from cmultiprocessing import reduction, resource_sharer
from cmultiprocessing.connection import Pipe, Connection

from support import open_fds

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX fds")


@pytest.fixture
def stop_sharer():
    yield
    resource_sharer.stop(timeout=30)


class Point:
    def __init__(self, x):
        self.x = x

    def get(self):
        return self.x


# ---------------------------------------------------------- ForkingPickler

def test_dumps_loads_roundtrip():
    data = {"a": [1, 2.5, None], "b": (b"x", "y")}
    buf = reduction.ForkingPickler.dumps(data)
    assert isinstance(buf, memoryview)
    assert reduction.ForkingPickler.loads(buf) == data
    f = io.BytesIO()
    reduction.dump(data, f)
    assert pickle.loads(f.getvalue()) == data


def test_register_custom_reducer_and_isolation():
    class Custom:
        pass
    reduction.register(Custom, lambda obj: (int, (7,)))
    try:
        assert pickle.loads(reduction.ForkingPickler.dumps(Custom())) == 7
        # each pickler has its own table: changing one leaves the class alone
        p = reduction.ForkingPickler(io.BytesIO())
        p.dispatch_table[Custom] = lambda obj: (int, (8,))
        assert pickle.loads(reduction.ForkingPickler.dumps(Custom())) == 7
    finally:
        del reduction.ForkingPickler._extra_reducers[Custom]
    # plain pickle never saw the registration
    with pytest.raises(Exception):  # noqa: B017 -- whichever pickle raises
        pickle.dumps(Custom())


def test_copyreg_registrations_after_import_are_seen():
    import copyreg

    class Late:
        pass
    copyreg.pickle(Late, lambda obj: (str, ("late",)))
    try:
        assert pickle.loads(reduction.ForkingPickler.dumps(Late())) == "late"
    finally:
        del copyreg.dispatch_table[Late]


def test_callables_pickle():
    m = Point(3).get
    assert pickle.loads(reduction.ForkingPickler.dumps(m))() == 3
    d = pickle.loads(reduction.ForkingPickler.dumps(list.append))
    assert d is list.append
    s = pickle.loads(reduction.ForkingPickler.dumps(int.__add__))
    assert s(1, 2) == 3
    p = functools.partial(int, base=2)
    assert pickle.loads(reduction.ForkingPickler.dumps(p))("101") == 5


def test_abstract_reducer_names():
    for name in ("ForkingPickler", "register", "dump", "send_handle",
                 "recv_handle", "sendfds", "recvfds", "DupFd"):
        assert hasattr(reduction.AbstractReducer, name)

    class Mine(reduction.AbstractReducer):
        pass
    Mine()                          # installs the default reducers again
    assert reduction.HAVE_SEND_HANDLE


# ----------------------------------------------------------- fd passing

def sending(func, *args):
    """Run func(*args) in a thread, returned for joining: from 3.14 on the
    sender waits for the receiver's one-byte acknowledgement."""
    t = threading.Thread(target=func, args=args, daemon=True)
    t.start()
    return t


def test_receiver_acknowledges_from_314():
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        native.sendfds(a.fileno(), [r], bytes((1,)))     # no waiting here
        for fd in reduction.recvfds(b, 1):
            os.close(fd)
        a.settimeout(0.5)
        expect_ack = sys.version_info >= (3, 14) or sys.platform == "darwin"
        if expect_ack:
            assert a.recv(1) == b"A"
        else:
            with pytest.raises(socket.timeout):
                a.recv(1)
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


def test_sendfds_recvfds():
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        t = sending(reduction.sendfds, a, [r, w])
        got = reduction.recvfds(b, 2)
        t.join(30)
        assert len(got) == 2 and set(got).isdisjoint({r, w})
        os.write(got[1], b"via copy")
        assert os.read(r, 100) == b"via copy"
        assert not os.get_inheritable(got[0])
        for fd in got:
            os.close(fd)
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


def test_send_recv_handle_over_connection():
    c1, c2 = Pipe()
    r, w = os.pipe()
    try:
        t = sending(reduction.send_handle, c1, w, os.getpid())
        fd = reduction.recv_handle(c2)
        t.join(30)
        os.write(fd, b"ok")
        os.close(fd)
        assert os.read(r, 10) == b"ok"
    finally:
        os.close(r)
        os.close(w)
        c1.close()
        c2.close()


def test_recv_without_fd_is_runtime_error():
    c1, c2 = Pipe()
    os.write(c1.fileno(), b"\0")
    with pytest.raises(RuntimeError):
        reduction.recv_handle(c2)
    c1.close()
    c2.close()


def test_recv_at_eof():
    c1, c2 = Pipe()
    c1.close()
    with pytest.raises(EOFError):
        reduction.recv_handle(c2)
    c2.close()


def test_too_many_fds_are_closed_not_leaked():
    a, b = socket.socketpair()
    r, w = os.pipe()
    before = open_fds()
    try:
        t = sending(reduction.sendfds, a, [r, w, r])
        with pytest.raises(RuntimeError):
            reduction.recvfds(b, 1)
        t.join(30)
        assert open_fds() == before
    finally:
        os.close(r)
        os.close(w)
        a.close()
        b.close()


def test_native_fdpass_bad_input():
    a, b = socket.socketpair()
    try:
        with pytest.raises(ValueError):
            native.sendfds(a.fileno(), [-1], b"x")
        with pytest.raises(TypeError):
            native.sendfds(a.fileno(), 5, b"x")
        with pytest.raises(TypeError):
            native.sendfds(a.fileno(), ["0"], b"x")
        with pytest.raises(ValueError):
            native.sendfds(a.fileno(), [0], b"")
        with pytest.raises(TypeError):
            native.sendfds(a.fileno(), [0])
        with pytest.raises(ValueError):
            native.recvfds(b.fileno(), -1)
        with pytest.raises(ValueError):
            native.recvfds(b.fileno(), 1, 0)
        with pytest.raises(TypeError):
            native.recvfds(b.fileno())
        r, w = os.pipe()
        try:
            with pytest.raises(OSError):        # not a socket
                native.sendfds(w, [r], b"x")
        finally:
            os.close(r)
            os.close(w)
    finally:
        a.close()
        b.close()


# ------------------------------------------- DupFd and the resource sharer

def test_dupfd_through_sharer(stop_sharer):
    r, w = os.pipe()
    try:
        ticket = pickle.loads(pickle.dumps(resource_sharer.DupFd(w)))
        fd = ticket.detach()
        os.write(fd, b"shared")
        os.close(fd)
        assert os.read(r, 10) == b"shared"
    finally:
        os.close(r)
        os.close(w)


def test_connection_and_socket_pickle_roundtrip(stop_sharer):
    a, b = Pipe()
    s1, s2 = socket.socketpair()
    try:
        a2 = pickle.loads(reduction.ForkingPickler.dumps(a))
        assert isinstance(a2, Connection) and a2.fileno() != a.fileno()
        a2.send("through the copy")
        assert b.recv() == "through the copy"
        a2.close()
        s3 = pickle.loads(reduction.ForkingPickler.dumps(s1))
        s3.sendall(b"sock")
        assert s2.recv(10) == b"sock"
        assert (s3.family, s3.type) == (s1.family, s1.type)
        s3.close()
    finally:
        for o in (a, b, s1, s2):
            o.close()


@pytest.mark.filterwarnings("ignore:This process.*multi-threaded:DeprecationWarning")
def test_dupfd_in_forked_child(stop_sharer):
    r, w = os.pipe()
    c1, c2 = Pipe()
    payload = reduction.ForkingPickler.dumps(resource_sharer.DupFd(w))
    pid = os.fork()
    if pid == 0:
        try:
            fd = pickle.loads(payload).detach()
            os.write(fd, b"from child")
            os._exit(0)
        except BaseException:
            os._exit(1)
    try:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert os.read(r, 20) == b"from child"
    finally:
        for fd in (r, w):
            os.close(fd)
        c1.close()
        c2.close()


def test_sharer_stop_releases_offers():
    r, w = os.pipe()
    before = open_fds()
    resource_sharer.DupFd(w)             # never detached
    assert len(open_fds() - before) >= 1
    resource_sharer.stop(timeout=30)
    leftover = open_fds() - before
    assert leftover == set()
    os.close(r)
    os.close(w)


def _fresh_python(code):
    import subprocess
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    res = subprocess.run([sys.executable, "-S", "-c", code],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_import_brings_in_neither_pickle_py_nor_socket():
    # What a spawned child pays for: the C pickler, not pickle.py with its
    # re and enum; socket only once the program itself uses sockets.
    out = _fresh_python(
        "import sys, _cmultiprocessing\n"
        "before = set(sys.modules)\n"
        "from cmultiprocessing import reduction\n"
        "print(sorted(set(sys.modules) - before & "
        "{'pickle', 'socket', 're', 'enum', 'selectors', 'struct'}))")
    assert out == "[]"


def test_socket_reducer_installed_once_socket_is_imported():
    out = _fresh_python(
        "import io, sys\n"
        "from cmultiprocessing import reduction\n"
        "assert 'socket' not in sys.modules\n"
        "FP = reduction.ForkingPickler\n"
        "first = FP(io.BytesIO()).dispatch_table\n"
        "import socket\n"
        "second = FP(io.BytesIO()).dispatch_table\n"
        "print(any(getattr(k, '__name__', '') == 'socket' and "
        "k.__module__ == 'socket' for k in first),\n"
        "      second.get(socket.socket) is reduction._reduce_socket,\n"
        "      FP._extra_reducers.get(socket.socket) is "
        "reduction._reduce_socket)")
    assert out == "False True True"


def test_socket_reducer_present_here():
    # In this process socket is imported: every new pickler knows sockets.
    table = reduction.ForkingPickler(io.BytesIO()).dispatch_table
    assert table[socket.socket] is reduction._reduce_socket


def test_pickler_and_loads_are_the_c_ones():
    assert issubclass(reduction.ForkingPickler, pickle.Pickler)
    assert reduction.ForkingPickler.loads is pickle.loads
    data = reduction.ForkingPickler.dumps({"a": [1, 2.5, "x"]})
    assert reduction.ForkingPickler.loads(data) == {"a": [1, 2.5, "x"]}
