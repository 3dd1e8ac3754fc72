"""cmultiprocessing.sharedctypes: shared ctypes values and arrays, their
locks, and passing them to child processes."""
import ctypes
import pickle
import sys

import pytest

import cmultiprocessing
from cmultiprocessing import heap, sharedctypes as sc


class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_double)]


def test_typecodes_match_stdlib():
    from multiprocessing import sharedctypes as std
    assert sc.typecode_to_type == std.typecode_to_type


def test_raw_value_and_array():
    v = sc.RawValue("d", 2.5)
    assert v.value == 2.5 and isinstance(v, ctypes.c_double)
    z = sc.RawValue("q")
    assert z.value == 0
    p = sc.RawValue(Point, 3, 1.5)
    assert (p.x, p.y) == (3, 1.5)
    a = sc.RawArray("i", [5, 6, 7])
    assert list(a) == [5, 6, 7] and len(a) == 3
    b = sc.RawArray(ctypes.c_ubyte, 5)
    assert list(b) == [0] * 5
    assert not hasattr(a, "get_lock") and not hasattr(v, "get_obj")


def test_arrays_are_zeroed_on_reuse():
    for _ in range(5):
        a = sc.RawArray("i", 64)
        assert list(a) == [0] * 64
        a[:] = range(1, 65)
        del a


def test_bad_arguments():
    with pytest.raises(ValueError):
        sc.RawArray("i", -1)
    with pytest.raises(TypeError):
        sc.RawArray("i", 2.5)
    with pytest.raises(TypeError):
        sc.RawValue("not a typecode")
    with pytest.raises(IndexError):
        sc.RawArray("i", 2).__init__(1, 2, 3)
    with pytest.raises(TypeError):
        sc.RawValue("i", "text")


@pytest.mark.parametrize("make", [
    lambda **kw: sc.Value("i", 5, **kw),
    lambda **kw: sc.Array("i", range(10), **kw),
])
def test_lock_choices(make):
    plain = make(lock=False)
    assert not hasattr(plain, "get_lock")
    for lock in (True, None):
        wrapped = make(lock=lock)
        assert isinstance(wrapped, sc.SynchronizedBase)
        assert type(wrapped.get_lock()).__name__ == "RLock"
    mine = cmultiprocessing.Lock()
    wrapped = make(lock=mine)
    assert wrapped.get_lock() is mine
    assert wrapped.acquire == mine.acquire
    with pytest.raises(AttributeError):
        make(lock="notalock")


def test_synchronized_value():
    v = sc.Value("i", 7)
    assert v.value == 7
    v.value += 1
    assert v.get_obj().value == 8
    with v:
        v.value = 9                     # RLock: re-entrant
    assert v.value == 9
    assert "Synchronized wrapper for c_int(9)" in repr(v)


def test_synchronized_array_and_string():
    a = sc.Array("d", [1.0, 2.0, 3.0])
    assert len(a) == 3 and a[1] == 2.0 and a[:] == [1.0, 2.0, 3.0]
    a[0:2] = [5.0, 6.0]
    a[-1] = 7.0
    assert a[:] == [5.0, 6.0, 7.0]
    with pytest.raises(IndexError):
        a[3]
    s = sc.Array("c", 10)
    assert isinstance(s, sc.SynchronizedString)
    s.value = b"hello"
    assert s.value == b"hello" and s.raw[:6] == b"hello\0"
    with pytest.raises(ValueError):
        s.value = b"x" * 11


def test_synchronized_structure():
    p = sc.Value(Point, 1, 2.0)
    assert type(p).__name__ == "SynchronizedPoint"
    p.x += 4
    p.y *= 2
    assert (p.x, p.y) == (5, 4.0)
    assert type(sc.Value(Point, lock=True)) is type(p)   # class is cached


def test_synchronized_twice_is_refused():
    v = sc.Value("i", 1)
    with pytest.raises(AssertionError):
        sc.synchronized(v)


def test_copy():
    p = Point(2, 5.0)
    q = sc.copy(p)
    p.x = 0
    assert (q.x, q.y) == (2, 5.0)
    assert q._wrapper is not None           # lives in shared memory


def test_pickling_refused_outside_spawning():
    for obj in (sc.RawValue("i", 1), sc.RawArray("i", 3), sc.Value("i", 1)):
        with pytest.raises(RuntimeError):
            cmultiprocessing.reduction.ForkingPickler.dumps(obj)
    with pytest.raises(RuntimeError):
        pickle.dumps(sc.Value("i", 1))


def _double_all(v, a, s, p):
    v.value *= 2
    for i in range(len(a)):
        a[i] *= 2
    s.value = s.value * 2
    p.x *= 2


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("lock", [False, True])
def test_children_see_and_change_the_same_memory(method, lock):
    ctx = cmultiprocessing.get_context(method)
    v = ctx.Value("i", 21, lock=lock)
    a = ctx.Array("d", [0.5, 1.5], lock=lock)
    s = ctx.Array("c", 8, lock=lock)
    s.value = b"ab"
    p = sc.Value(Point, 3, 0.0, lock=lock, ctx=ctx)
    proc = ctx.Process(target=_double_all, args=(v, a, s, p))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert v.value == 42 and a[:] == [1.0, 3.0]
    assert s.value == b"abab" and p.x == 6


def _add(counter, n):
    for _ in range(n):
        with counter.get_lock():
            counter.value += 1


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_increments_under_the_lock_are_not_lost(method):
    ctx = cmultiprocessing.get_context(method)
    counter = ctx.Value("i", 0)
    procs = [ctx.Process(target=_add, args=(counter, 2000)) for _ in range(2)]
    for p in procs:
        p.start()
    _add(counter, 2000)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert counter.value == 6000


def test_heap_blocks_return_when_objects_die():
    h = heap.BufferWrapper._heap
    frees = h._n_frees
    a = sc.RawArray("i", 100)
    v = sc.Value("d", 1.0)
    del a, v
    assert h._n_frees == frees + 2


def test_failed_access_releases_the_lock():
    import threading
    v = sc.Value("i", 1)
    s = sc.Array("c", 4)
    p = sc.Value(Point, 1, 2.0)
    for fail in (lambda: setattr(v, "value", "text"),
                 lambda: setattr(s, "value", b"x" * 10),
                 lambda: setattr(p, "x", "text")):
        with pytest.raises((TypeError, ValueError)):
            fail()
    got = []

    def probe(lock):
        # another thread takes and gives back the lock: it is free
        if lock.acquire(timeout=5):
            lock.release()
            got.append(True)
    for w in (v, s, p):
        t = threading.Thread(target=probe, args=(w.get_lock(),))
        t.start()
        t.join()
    assert got == [True, True, True]
    assert v.value == 1 and p.x == 1


@pytest.mark.parametrize("make", [
    lambda: sc.Value("x", None), lambda: sc.RawValue("x", None),
    lambda: sc.Array("x", []), lambda: sc.RawArray("x", []),
    lambda: sc.RawArray("x", 3), lambda: sc.Value(5),
])
def test_bad_typecode_message(make):
    """3.15 names the typecodes it accepts (and chains ctypes' error);
    earlier versions let ctypes.sizeof()'s TypeError through."""
    with pytest.raises(TypeError) as info:
        make()
    if sys.version_info >= (3, 15):
        assert str(info.value) == (
            "bad typecode (must be a ctypes type or one of c, b, B, u, h, "
            "H, i, I, l, L, q, Q, f or d)")
        assert isinstance(info.value.__cause__, TypeError)
    else:
        assert "bad typecode" not in str(info.value)


def test_bad_typecode_is_reported_before_a_bad_lock():
    with pytest.raises(TypeError):
        sc.Value("x", None, lock=object())
    with pytest.raises(AttributeError, match="acquire"):
        sc.Value("i", 1, lock=object())
