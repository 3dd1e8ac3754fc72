"""cmultiprocessing.sharedctypes: shared ctypes values and arrays, their
locks, and passing them to child processes."""
import ctypes
import os
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


# --------------------------------------------------------------------------
# The lock a fork context's Value/Array makes for itself: a process-shared
# semaphore made in a heap block (sem_init), not a named one.

from cmultiprocessing import synchronize  # noqa: E402

in_memory = pytest.mark.skipif(
    synchronize._SEM_IN_MEMORY_SIZE == 0,
    reason="no process-shared semaphore in plain memory here")

LONG = 60.0


def _sem_mappings():
    """How many named semaphores this process has mapped (glibc maps each
    from /dev/shm/sem.*, shown '(deleted)' once unlinked)."""
    with open("/proc/self/maps") as f:
        return sum("/dev/shm/sem." in line for line in f)


def _in_heap(lock):
    """Whether the lock's semaphore lies in a block of the locks' heap."""
    for arena in synchronize._owner_heap._arenas:
        start = ctypes.addressof(ctypes.c_char.from_buffer(arena.buffer))
        if start <= lock.handle < start + arena.size:
            return True
    return False


@in_memory
def test_fork_value_lock_is_made_in_memory():
    ctx = cmultiprocessing.get_context("fork")
    before = _sem_mappings()
    keep = [ctx.Value("d") for _ in range(300)]
    keep += [ctx.Array("i", 4) for _ in range(300)]
    keep += [sc.Value("i", ctx=ctx), sc.Array("b", 3, ctx=ctx)]
    assert _sem_mappings() == before      # no named semaphore was made
    locks = [v.get_lock() for v in keep]
    assert all(type(lk) is synchronize.RLock and lk.name is None
               and lk._is_fork_ctx and _in_heap(lk) for lk in locks)
    assert len({lk.handle for lk in locks}) == len(locks)
    del keep, locks
    # ctx.RLock() / ctx.Lock() themselves stay named semaphores, unlinked
    lk = ctx.RLock()
    assert lk.name is None and not _in_heap(lk)
    assert _sem_mappings() == before + 1
    del lk
    assert _sem_mappings() == before


@in_memory
def test_fork_value_lock_refuses_spawn_pickling():
    from cmultiprocessing import context, reduction
    v = cmultiprocessing.get_context("fork").Value("i", 1)
    context.set_spawning_popen(object())
    try:
        with pytest.raises(RuntimeError, match="fork context"):
            reduction.ForkingPickler.dumps(v.get_lock())
    finally:
        context.set_spawning_popen(None)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_spawned_contexts_keep_named_locks(method):
    from support import sem_file
    ctx = cmultiprocessing.get_context(method)
    v = ctx.Value("i", 0)
    name = v.get_lock().name
    assert isinstance(name, str) and os.path.exists(sem_file(name))
    del v
    import gc
    gc.collect()
    assert not os.path.exists(sem_file(name))


def _bump_many(v, n, conn):
    conn.recv()                     # start together
    lock = v.get_lock()
    for _ in range(n):
        with lock:
            with lock:              # the RLock is recursive
                x = v.get_obj().value
                os.sched_yield()
                v.get_obj().value = x + 1


def _start_bumpers(ctx, v, n, nproc):
    import cmultiprocessing.connection as mpc
    pipes = [mpc.Pipe() for _ in range(nproc)]
    procs = [ctx.Process(target=_bump_many, args=(v, n, r))
             for r, _ in pipes]
    for p in procs:
        p.start()
    return procs, pipes


@pytest.mark.timeout(120)
@pytest.mark.parametrize("make", ["Value", "Array"])
def test_in_memory_lock_excludes_across_forked_children(make):
    ctx = cmultiprocessing.get_context("fork")
    if make == "Value":
        v = ctx.Value("q", 0)
    else:
        a = ctx.Array("q", 1)
        v = sc.Value("q", 0, lock=a.get_lock(), ctx=ctx)
    procs, pipes = _start_bumpers(ctx, v, 500, 4)
    for _, w in pipes:
        w.send(None)
    for p in procs:
        p.join(LONG)
        assert p.exitcode == 0
    assert v.value == 2000


def _hold_then_wait(v, held, go):
    lock = v.get_lock()
    lock.acquire()
    lock.acquire()
    held.send(None)
    go.recv()
    lock.release()                  # still held once
    held.send(None)
    go.recv()
    lock.release()
    held.send(None)


@pytest.mark.timeout(60)
def test_in_memory_lock_timeouts_and_recursion_across_fork():
    import cmultiprocessing.connection as mpc
    ctx = cmultiprocessing.get_context("fork")
    v = ctx.Value("i", 0)
    lock = v.get_lock()
    held_r, held_w = mpc.Pipe(False)
    go_r, go_w = mpc.Pipe(False)
    p = ctx.Process(target=_hold_then_wait, args=(v, held_w, go_r))
    p.start()
    try:
        assert held_r.poll(LONG)
        held_r.recv()
        assert lock.acquire(False) is False
        assert lock.acquire(timeout=0.05) is False
        go_w.send(None)
        held_r.recv()
        assert lock.acquire(timeout=0.05) is False    # one level left
        go_w.send(None)
        held_r.recv()
        assert lock.acquire(timeout=LONG) is True
        lock.release()
    finally:
        p.join(LONG)
    assert p.exitcode == 0


@in_memory
@pytest.mark.timeout(120)
def test_lock_of_early_value_survives_thousands_more():
    ctx = cmultiprocessing.get_context("fork")
    v = ctx.Value("q", 0)
    procs, pipes = _start_bumpers(ctx, v, 300, 2)
    # the parent makes (and drops half of) thousands of Values meanwhile,
    # each with a lock in the same heap: none may land on v's lock
    more = [ctx.Value("d", float(i)) for i in range(4000)]
    del more[::2]
    more += [ctx.Value("d") for _ in range(2000)]
    handles = {m.get_lock().handle for m in more}
    assert v.get_lock().handle not in handles
    assert len(handles) == len(more)
    for m in more[:200]:
        with m.get_lock():
            m.value += 1.0
    for _, w in pipes:
        w.send(None)
    for _ in range(300):
        with v.get_lock():
            x = v.get_obj().value
            os.sched_yield()
            v.get_obj().value = x + 1
    for p in procs:
        p.join(LONG)
        assert p.exitcode == 0
    assert v.value == 900
