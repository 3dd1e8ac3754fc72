"""The _cmultiprocessing module as a whole (not one concern's types).

* the exception hierarchy is that of the stdlib's multiprocessing.context,
  and the package re-exports the very classes the C code raises;
* multi-phase init: importing again after `del sys.modules[...]` gives a
  fresh module with fresh state, and the old module's objects keep working;
  the module loads in a (legacy) subinterpreter, and an isolated one either
  loads it or refuses it with a clean ImportError -- never a crash;
* repeated calls, on their success and on their error paths, leak neither
  memory blocks nor file descriptors;
* the module-level functions reject bad arguments with TypeError/ValueError.

The interpreter-level checks run in a child interpreter process so that a
crash shows as a failed test, not a dead test run.
"""
import builtins
import gc
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

import _cmultiprocessing as native

from support import open_fd_count

EXCEPTIONS = ("ProcessError", "BufferTooShort", "TimeoutError", "AuthenticationError")


def run_python(code, timeout=120):
    """Run code in a fresh interpreter with our path; return the process."""
    env = dict(os.environ)
    here = [os.path.dirname(os.path.abspath(native.__file__))]
    try:
        import cmultiprocessing
        here.append(os.path.dirname(os.path.dirname(os.path.abspath(cmultiprocessing.__file__))))
    except ImportError:
        pass
    env["PYTHONPATH"] = os.pathsep.join(
        here + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------
# exceptions

def test_exception_hierarchy_matches_the_stdlib():
    import multiprocessing   # only to compare against
    assert issubclass(native.ProcessError, Exception)
    for name in EXCEPTIONS:
        ours, theirs = getattr(native, name), getattr(multiprocessing, name)
        assert isinstance(ours, type) and issubclass(ours, BaseException)
        assert ours.__name__ == theirs.__name__ == name
        assert ours.__module__ == "cmultiprocessing.context"
        assert [c.__name__ for c in ours.__mro__] == [c.__name__ for c in theirs.__mro__]
        if name != "ProcessError":
            assert issubclass(ours, native.ProcessError)
    # like the stdlib's, ours is not the builtin TimeoutError
    assert not issubclass(native.TimeoutError, builtins.TimeoutError)
    assert native.TimeoutError is not builtins.TimeoutError


def test_exceptions_carry_their_arguments():
    exc = native.BufferTooShort(b"whole message")
    assert exc.args == (b"whole message",)
    with pytest.raises(native.ProcessError):
        raise native.AuthenticationError("digest received was wrong")


def test_package_reexports_the_native_exceptions():
    cmp = pytest.importorskip("cmultiprocessing")
    context = pytest.importorskip("cmultiprocessing.context")
    for name in EXCEPTIONS:
        assert getattr(context, name) is getattr(native, name), name
        assert getattr(cmp, name) is getattr(native, name), name


def test_exceptions_pickle_to_the_same_class():
    pytest.importorskip("cmultiprocessing.context")
    for name in EXCEPTIONS:
        cls = getattr(native, name)
        back = pickle.loads(pickle.dumps(cls("why", 3)))
        assert type(back) is cls and back.args == ("why", 3)


# ---------------------------------------------------------------------------
# multi-phase init

def test_reimport_gives_fresh_state_and_old_objects_keep_working():
    proc = run_python("""
        import gc, os, sys
        import _cmultiprocessing as m1
        old_error = m1.ProcessError
        del sys.modules["_cmultiprocessing"]
        import _cmultiprocessing as m2
        assert m1 is not m2
        assert m2.ProcessError is not old_error
        assert issubclass(m2.TimeoutError, m2.ProcessError)
        assert not issubclass(m2.TimeoutError, m1.ProcessError)
        del m2, sys.modules["_cmultiprocessing"]
        gc.collect()
        # the first module's types still find their module state
        name = "/cmp-reimport-%d" % os.getpid()
        if hasattr(m1, "SemLock"):
            s = m1.SemLock(1, 1, 1, name, True)
            assert s.acquire() and not s.acquire(False)
            s.release()
            del s
        if hasattr(m1, "Connection"):
            r, w = os.pipe()
            a, b = m1.Connection(r, writable=False), m1.Connection(w, readable=False)
            b.send_bytes(b"still here")
            assert a.recv_bytes() == b"still here"
            a.close(); b.close()
        print("ok")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_repeated_reimport_frees_the_old_modules():
    proc = run_python("""
        import gc, sys
        def cycle(n):
            for _ in range(n):
                sys.modules.pop("_cmultiprocessing", None)
                __import__("_cmultiprocessing")
            gc.collect()
        cycle(20)
        before = sys.getallocatedblocks()
        cycle(200)
        grown = sys.getallocatedblocks() - before
        print(grown)
    """)
    assert proc.returncode == 0, proc.stderr
    grown = int(proc.stdout.strip())
    # a module that is never freed keeps hundreds of blocks (types, dicts,
    # exceptions) each time: 200 imports would leave tens of thousands
    assert grown < 2000, "%d blocks kept after 200 re-imports" % grown


def test_loads_in_a_legacy_subinterpreter():
    proc = run_python("""
        import os, _testcapi
        r, w = os.pipe()
        code = '''if 1:
            import os, _cmultiprocessing as m
            assert issubclass(m.BufferTooShort, m.ProcessError)
            os.write(%d, b",".join(n.encode() for n in sorted(dir(m)) if not n.startswith("_")))
        ''' % w
        for _ in range(3):      # create and destroy a few times
            assert _testcapi.run_in_subinterp(code) == 0
        os.close(w)
        names = os.read(r, 1 << 20)
        import _cmultiprocessing as main
        expected = ",".join(n for n in sorted(dir(main)) if not n.startswith("_")).encode()
        assert names == expected * 3, (names[:200], expected[:200])
        print("ok")
    """)
    if "No module named '_testcapi'" in proc.stderr:
        pytest.skip("this interpreter has no _testcapi")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_isolated_subinterpreter_loads_it_or_refuses_cleanly():
    proc = run_python("""
        import os
        try:
            import _interpreters as interpreters
        except ImportError:
            import _xxsubinterpreters as interpreters
        r, w = os.pipe()
        iid = interpreters.create()
        try:
            failed = interpreters.run_string(iid, '''if 1:
                import os
                try:
                    import _cmultiprocessing as m
                except ImportError as exc:
                    os.write(%d, b"refused:" + str(exc).encode())
                else:
                    assert issubclass(m.TimeoutError, m.ProcessError)
                    os.write(%d, b"loaded")
            ''' % (w, w))
        except Exception as exc:      # 3.11/3.12 raise RunFailedError
            failed = exc
        finally:
            interpreters.destroy(iid)
        os.close(w)
        print(failed)
        print(os.read(r, 4096).decode())
    """)
    if "No module named '_xxsubinterpreters'" in proc.stderr:
        pytest.skip("this interpreter has no subinterpreter module")
    assert proc.returncode == 0, proc.stderr
    failed, outcome = proc.stdout.strip().splitlines()
    assert failed == "None", failed
    assert outcome == "loaded" or (
        outcome.startswith("refused:") and "subinterpreter" in outcome), outcome
    if sys.version_info >= (3, 12):
        # it declares a GIL per interpreter (concurrent.futures'
        # InterpreterPoolExecutor imports multiprocessing in such ones)
        assert outcome == "loaded", outcome


# ---------------------------------------------------------------------------
# leaks

def assert_no_leak(fn, n=3000, blocks=200):
    """Run fn n times after a warm-up; allocated blocks and open file
    descriptors must not grow with n."""
    for _ in range(200):
        fn()
    gc.collect()
    fds, before = open_fd_count(), sys.getallocatedblocks()
    for _ in range(n):
        fn()
    gc.collect()
    grown = sys.getallocatedblocks() - before
    assert open_fd_count() == fds, "file descriptors leaked"
    assert grown < blocks, "%d memory blocks kept over %d calls" % (grown, n)


def test_no_leak_on_error_paths_of_module_functions():
    funcs = [getattr(native, n) for n in ("sem_unlink", "shm_unlink") if hasattr(native, n)]
    if not funcs:
        pytest.skip("no sem_unlink/shm_unlink yet")
    missing = "/cmp-no-such-name-%d" % os.getpid()

    def call():
        for f in funcs:
            try:
                f(missing)
            except OSError:
                pass
            else:
                raise AssertionError("%s(%r) did not fail" % (f.__name__, missing))
    assert_no_leak(call)


def test_no_leak_creating_and_using_semlocks():
    if not hasattr(native, "SemLock"):
        pytest.skip("no SemLock yet")
    name = "/cmp-leak-%d" % os.getpid()

    def call():
        s = native.SemLock(1, 1, 1, name, True)
        s.acquire()
        s.release()
        try:
            s.release()
        except ValueError:
            pass
    assert_no_leak(call)


def test_no_leak_sending_and_receiving():
    if not hasattr(native, "Connection"):
        pytest.skip("no Connection yet")
    import socket
    s1, s2 = socket.socketpair()
    a, b = native.Connection(s1.detach()), native.Connection(s2.detach())
    payload = {"x": [1, 2.0, "three"], "y": b"\0" * 100}
    buf = bytearray(64)
    try:
        def call():
            a.send(payload)
            assert b.recv() == payload
            b.send_bytes(b"abc" * 10)
            assert a.recv_bytes() == b"abc" * 10
            a.send_bytes(b"z" * 100)
            try:
                b.recv_bytes_into(buf)
            except native.BufferTooShort as exc:
                assert exc.args[0] == b"z" * 100
            else:
                raise AssertionError("BufferTooShort not raised")
            assert not a.poll(0)
        assert_no_leak(call, n=2000)
    finally:
        a.close()
        b.close()


def test_no_leak_opening_connections():
    if not hasattr(native, "Connection"):
        pytest.skip("no Connection yet")

    def call():
        r, w = os.pipe()
        a, b = native.Connection(r, writable=False), native.Connection(w, readable=False)
        b.close()
        del a   # closed by deallocation
    assert_no_leak(call)


# ---------------------------------------------------------------------------
# argument checking of the module-level functions

@pytest.mark.parametrize("fname", ["sem_unlink", "shm_unlink"])
def test_unlink_functions_reject_bad_arguments(fname):
    f = getattr(native, fname, None)
    if f is None:
        pytest.skip("%s not there yet" % fname)
    with pytest.raises(TypeError):
        f()
    with pytest.raises(TypeError):
        f(123)
    with pytest.raises(TypeError):
        f("/a", "/b")
    with pytest.raises((TypeError, ValueError)):
        f(None)
    with pytest.raises(ValueError):
        f("/with\0nul")


def test_flags_match_the_stdlib():
    import _multiprocessing   # only to compare against
    if not hasattr(native, "flags"):
        pytest.skip("no flags yet")
    assert native.flags == _multiprocessing.flags


def test_no_leak_in_shared_memory_segments():
    if not (hasattr(native, "shm_segment") and hasattr(native, "shm_unlink")):
        pytest.skip("no shm_segment yet")
    name = "/cmp-leak-shm-%d" % os.getpid()

    def call():
        h = native.shm_segment(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600, 8192)
        try:
            assert h.size == 8192
        finally:
            h.close()
            native.shm_unlink(name)
    try:
        assert_no_leak(call, n=1000)
    finally:
        try:
            native.shm_unlink(name)
        except OSError:
            pass


def test_no_leak_in_heap_blocks():
    if not hasattr(native, "Heap"):
        pytest.skip("no Heap yet")
    heap = native.Heap()

    def call():
        blocks = [heap.malloc(n) for n in (1, 64, 4000, 70000)]
        for b in blocks:
            heap.free(b)
    assert_no_leak(call)
    assert heap._n_mallocs == heap._n_frees


def test_no_leak_passing_descriptors():
    if not (hasattr(native, "sendfds") and hasattr(native, "recvfds")):
        pytest.skip("no sendfds/recvfds yet")
    import socket
    s1, s2 = socket.socketpair()

    def call():
        r, w = os.pipe()
        try:
            native.sendfds(s1.fileno(), [r, w], b"\x02")
        finally:
            os.close(r)
            os.close(w)
        msg, fds, truncated = native.recvfds(s2.fileno(), 2)
        assert msg == b"\x02" and len(fds) == 2 and not truncated
        for fd in fds:
            os.close(fd)
    try:
        assert_no_leak(call, n=1000)
    finally:
        s1.close()
        s2.close()


def test_no_leak_waiting():
    if not (hasattr(native, "wait") and hasattr(native, "Connection")):
        pytest.skip("no wait yet")
    r, w = os.pipe()
    a, b = native.Connection(r, writable=False), native.Connection(w, readable=False)
    try:
        def call():
            assert native.wait([a], 0) == []
            b.send_bytes(b"x")
            assert native.wait([a, r], 1) != []
            a.recv_bytes()
        assert_no_leak(call, n=2000)
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------------
# the one argument parser (args.c), seen through the functions that use it

def _type_error(fn, *args, **kwargs):
    with pytest.raises(TypeError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_parser_binds_positional_and_keyword_arguments_alike():
    a = native.Connection(os.pipe()[0])
    os.close(a.fileno())
    r, w = os.pipe()
    reader = native.Connection(r, writable=False)
    writer = native.Connection(handle=w, readable=False)
    try:
        writer.send_bytes(b"abcdef", 1, 3)
        writer.send_bytes(buf=b"abcdef", size=2, offset=4)
        writer.send_bytes(b"abcdef", offset=5)
        assert reader.recv_bytes() == b"bcd"
        assert reader.recv_bytes(maxlength=100) == b"ef"
        buf = bytearray(4)
        assert reader.recv_bytes_into(buf, offset=3) == 1 and buf[3:] == b"f"
        assert reader.poll(timeout=0) is False
    finally:
        reader.close()
        writer.close()


def test_parser_messages_are_cpythons():
    r, w = os.pipe()
    conn = native.Connection(w, readable=False)
    try:
        assert _type_error(conn.send_bytes, b"x", 0, 1, 2) == \
            "send_bytes() takes at most 3 arguments (4 given)"
        assert _type_error(conn.send_bytes, b"x", bogus=1) == \
            "send_bytes() got an unexpected keyword argument 'bogus'"
        assert _type_error(conn.send_bytes, b"x", buf=b"y") == \
            "send_bytes() got multiple values for argument 'buf'"
        assert _type_error(conn.send_bytes, offset=1) == \
            "send_bytes() missing required argument 'buf' (pos 1)"
        assert _type_error(conn.recv, 1) == "recv() takes no arguments (1 given)"
        assert _type_error(conn.recv, x=1) == "recv() got an unexpected keyword argument 'x'"
    finally:
        conn.close()
        os.close(r)
    # tp_new slots (tuple + dict) take the same path
    assert _type_error(native.SemLock, 1, 1, 1, "/x") == \
        "SemLock() missing required argument 'unlink' (pos 5)"
    assert _type_error(native.SemLock, 1, 1, 1, "/x", True, kind=1) == \
        "SemLock() got multiple values for argument 'kind'"
    assert _type_error(native.Heap, size=4096, other=1) == \
        "Heap() got an unexpected keyword argument 'other'"
    assert _type_error(native.Heap, 1, 2) == "Heap() takes at most 1 arguments (2 given)"


def test_parser_converters_reject_bad_values():
    # ints: float refused, OverflowError past a C int / Py_ssize_t
    assert "kind must be an integer, not float" in \
        _type_error(native.SemLock, 1.0, 1, 1, "/x", True)
    with pytest.raises(OverflowError):
        native.SemLock(1, 2 ** 40, 1, "/x", True)
    with pytest.raises(TypeError):
        native.Heap("4096")
    with pytest.raises(OverflowError):
        native.Heap(2 ** 70)
    with pytest.raises(ValueError):
        native.Heap(0)
    # a truth value that cannot be had
    class Bad:
        def __bool__(self):
            raise ZeroDivisionError
    r, w = os.pipe()
    try:
        with pytest.raises(ZeroDivisionError):
            native.Connection(r, readable=Bad())
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.skipif(not hasattr(native, "recvfds"), reason="no SCM_RIGHTS")
def test_fd_passing_arguments():
    import socket
    a, b = socket.socketpair()
    try:
        native.sendfds(sock=a.fileno(), fds=[], msg=b"hi")
        msg, fds, truncated = native.recvfds(b.fileno(), msgsize=8, maxfds=0)
        assert (msg, fds, truncated) == (b"hi", [], False)
        with pytest.raises(TypeError):
            native.recvfds(b.fileno(), None)          # maxfds has no default
        with pytest.raises(TypeError, match="missing required argument 'maxfds'"):
            native.recvfds(b.fileno())
        with pytest.raises(TypeError, match="missing required argument 'msg'"):
            native.sendfds(a.fileno(), [])
        # the signature and the text name the parameters in the order they bind
        import inspect
        assert list(inspect.signature(native.recvfds).parameters) == ["sock", "maxfds", "msgsize"]
        assert list(inspect.signature(native.sendfds).parameters) == ["sock", "fds", "msg"]
        doc = native.recvfds.__doc__
        assert doc.index("maxfds") < doc.index("msgsize")
    finally:
        a.close()
        b.close()


@pytest.mark.skipif(not hasattr(native, "recvfds"), reason="no SCM_RIGHTS")
def test_recvfds_rejects_bad_sizes():
    import socket
    a, b = socket.socketpair()
    try:
        for size in (0, 65537, -1):
            with pytest.raises(ValueError, match="msgsize"):
                native.recvfds(b.fileno(), 1, size)
        with pytest.raises(ValueError, match="maxfds"):
            native.recvfds(b.fileno(), 65537)
    finally:
        a.close()
        b.close()


@pytest.mark.skipif(not hasattr(native, "recvfds"), reason="no SCM_RIGHTS")
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="no /proc/self/fd")
def test_recvfds_under_failing_allocations():
    # Each allocation recvfds makes fails in turn.  Every call either works
    # or raises the allocator's MemoryError (never another error over it);
    # a failure before the receive leaves the message in the socket, one
    # after it (building the result) closes the descriptors it received:
    # no descriptor leaks either way.
    proc = run_python("""
        import os, select, socket, sys
        try:
            import _testcapi
        except ImportError:
            sys.exit(77)
        import _cmultiprocessing as native
        a, b = socket.socketpair()
        r, w = os.pipe()
        sock, recvfds = b.fileno(), native.recvfds
        before = len(os.listdir("/proc/self/fd"))
        failed = worked = 0
        for nth in range(16):
            native.sendfds(a.fileno(), [r], b"m")
            _testcapi.set_nomemory(nth, nth + 1)
            try:
                got = recvfds(sock, 4, 16)
            except MemoryError:
                _testcapi.remove_mem_hooks()
                failed += 1
            else:
                _testcapi.remove_mem_hooks()
                worked += 1
                msg, fds, truncated = got
                assert msg and set(msg) == {ord("m")} and not truncated, got
                for fd in fds:
                    os.close(fd)
        while select.select([sock], [], [], 0)[0]:
            msg, fds, truncated = recvfds(sock, 4, 16)
            for fd in fds:
                os.close(fd)
        after = len(os.listdir("/proc/self/fd"))
        print(failed, worked, after - before)
    """)
    if proc.returncode == 77:
        pytest.skip("this interpreter has no _testcapi")
    assert proc.returncode == 0, proc.stderr
    failed, worked, leaked = map(int, proc.stdout.split())
    assert failed > 0 and worked > 0 and failed + worked == 16
    assert leaked == 0
