"""Tests of the native SemLock / _ConditionCore and of
cmultiprocessing.synchronize (Lock, RLock, Semaphore, BoundedSemaphore,
Condition, Event, Barrier).

Cross-process tests use os.fork() directly where they only need a child,
so that they do not depend on the rest of the package; every child ends
with os._exit and is reaped, and every named semaphore is unlinked.
"""
import gc
import itertools
import os
import pickle
import signal
import sys
import threading
import time

import pytest

from support import sem_file

_cmp = pytest.importorskip("_cmultiprocessing")
SemLock = _cmp.SemLock

RECURSIVE_MUTEX = _cmp.RECURSIVE_MUTEX
SEMAPHORE = _cmp.SEMAPHORE

_names = itertools.count()

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX")


def fresh_name():
    return "/cmp-test-%d-%d" % (os.getpid(), next(_names))


def make(kind=SEMAPHORE, value=1, maxvalue=1, unlink=True, cls=SemLock):
    return cls(kind, value, maxvalue, fresh_name(), unlink)


def fork_child(body):
    """Run body() in a forked child; returns the child's exit status
    (body's return value, or 99 when it raised)."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = int(body() or 0)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def ctx(method="fork"):
    import cmultiprocessing
    return cmultiprocessing.get_context(method)


# --------------------------------------------------------------------------
# module surface

def test_module_constants_and_flags():
    assert RECURSIVE_MUTEX == 0 and SEMAPHORE == 1
    assert SemLock.SEM_VALUE_MAX == _cmp.SEM_VALUE_MAX > 0
    assert SemLock.RECURSIVE_MUTEX == 0 and SemLock.SEMAPHORE == 1
    if sys.platform.startswith("linux"):
        assert _cmp.flags == {"HAVE_SEM_OPEN": 1, "HAVE_SEM_TIMEDWAIT": 1}
        assert SemLock.SEM_VALUE_MAX == 2**31 - 1


def test_attributes():
    name = fresh_name()
    s = SemLock(SEMAPHORE, 2, 5, name, False)
    try:
        assert s.name == name
        assert s.kind == SEMAPHORE and s.maxvalue == 5
        assert isinstance(s.handle, int) and s.handle != 0
        assert os.path.exists(sem_file(name))
        with pytest.raises(AttributeError):
            s.kind = 0
    finally:
        _cmp.sem_unlink(name)
    assert not os.path.exists(sem_file(name))
    u = make(unlink=True)
    assert u.name is None


# --------------------------------------------------------------------------
# acquire / release

def test_semaphore_counts():
    s = make(value=2, maxvalue=SemLock.SEM_VALUE_MAX)
    assert s._get_value() == 2 and not s._is_zero()
    assert s.acquire() is True and s.acquire() is True
    assert s._get_value() == 0 and s._is_zero()
    assert s.acquire(False) is False
    assert s._count() == 2
    s.release()
    s.release()
    s.release()
    assert s._get_value() == 3


def test_acquire_keywords():
    s = make(value=1, maxvalue=1)
    assert s.acquire(block=False) is True
    assert s.acquire(block=False, timeout=5) is False   # timeout ignored
    assert s.acquire(timeout=0) is False
    assert s.acquire(True, -1) is False                  # negative = 0
    s.release()
    assert s.acquire(timeout=None) is True
    with pytest.raises(TypeError):
        s.acquire(block=True, bogus=1)
    with pytest.raises(TypeError):
        s.acquire(True, None, 3)
    with pytest.raises(TypeError):
        s.acquire(True, "soon")
    with pytest.raises(ValueError):
        s.acquire(True, float("nan"))


def test_timeout_waits_then_fails():
    s = make(value=0, maxvalue=1)
    start = time.monotonic()
    assert s.acquire(True, 0.3) is False
    # the wait must not end early (lower bound only: this is no benchmark)
    assert time.monotonic() - start >= 0.25


def test_wait_is_woken_by_other_thread():
    s = make(value=0, maxvalue=1)
    t = threading.Timer(0.2, s.release)
    t.start()
    try:
        assert s.acquire(True, 30) is True
    finally:
        t.join()


def test_lock_over_release():
    lock = make(value=1, maxvalue=1)
    with pytest.raises(ValueError, match="released too many times"):
        lock.release()
    bounded = make(value=2, maxvalue=2)
    bounded.acquire()
    bounded.release()
    with pytest.raises(ValueError, match="released too many times"):
        bounded.release()
    assert bounded._get_value() == 2


def test_rlock_recursion_and_ownership():
    r = make(kind=RECURSIVE_MUTEX)
    with pytest.raises(AssertionError, match="not owned by thread"):
        r.release()
    assert r.acquire() and r.acquire() and r.acquire()
    assert r._count() == 3 and r._is_mine()
    assert r._get_value() == 0
    errors = []

    def other():
        try:
            r.release()
        except AssertionError as exc:
            errors.append(str(exc))
        errors.append(r.acquire(False))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors == ["attempt to release recursive lock not owned by "
                      "thread", False]
    r.release()
    r.release()
    assert r._is_mine()
    r.release()
    assert not r._is_mine() and r._get_value() == 1
    with pytest.raises(AssertionError):
        r.release()


def test_lock_released_by_other_thread():
    lock = make()
    lock.acquire()
    t = threading.Thread(target=lock.release)
    t.start()
    t.join()
    assert lock._get_value() == 1


def test_context_manager():
    lock = make()
    with lock as got:
        assert got is True
        assert lock._is_mine()
    assert lock._get_value() == 1
    with pytest.raises(KeyError):
        with lock:
            raise KeyError("x")
    assert lock._get_value() == 1


# --------------------------------------------------------------------------
# signals

@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="setitimer")
def test_signal_handler_exception_interrupts_wait():
    class Alarm(Exception):
        pass

    def handler(signum, frame):
        raise Alarm

    s = make(value=0)
    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Alarm):
            s.acquire()              # no timeout: only the signal ends it
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert s._count() == 0


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="setitimer")
def test_signal_handler_returning_resumes_wait():
    seen = []
    s = make(value=0)
    old = signal.signal(signal.SIGALRM, lambda *a: seen.append(1))
    timer = threading.Timer(0.6, s.release)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1, 0.1)
        timer.start()
        assert s.acquire(True, 30) is True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        timer.join()
    assert len(seen) >= 2            # handlers ran during the wait


def test_keyboard_interrupt_from_other_thread():
    # SIGINT raised while the main thread blocks; the signal may land on any
    # thread, the sliced wait still notices it.
    s = make(value=0)
    t = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            s.acquire()
    finally:
        t.join()


# --------------------------------------------------------------------------
# bad input

def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unrecognized kind"):
        SemLock(7, 1, 1, fresh_name(), True)
    with pytest.raises(ValueError):
        SemLock(SEMAPHORE, -1, 1, fresh_name(), True)
    with pytest.raises(ValueError):
        SemLock(SEMAPHORE, 1, -1, fresh_name(), True)
    with pytest.raises(ValueError):
        SemLock(SEMAPHORE, 1, 1, "/bad\0name", True)
    with pytest.raises(TypeError):
        SemLock(SEMAPHORE, 1, 1, b"/bytes", True)
    with pytest.raises(TypeError):
        SemLock(SEMAPHORE, 1.5, 1, fresh_name(), True)
    with pytest.raises(OverflowError):
        SemLock(SEMAPHORE, 2**40, 1, fresh_name(), True)
    with pytest.raises(TypeError):
        SemLock(SEMAPHORE, 1, 1, fresh_name())
    with pytest.raises(TypeError):
        SemLock(SEMAPHORE, 1, 1, fresh_name(), True, extra=1)
    s = SemLock(kind=SEMAPHORE, value=0, maxvalue=3, name=fresh_name(),
                unlink=True)
    assert s.maxvalue == 3


@posix_only
def test_name_collision_and_unlink_errors():
    name = fresh_name()
    s = SemLock(SEMAPHORE, 1, 1, name, False)
    try:
        with pytest.raises(FileExistsError):
            SemLock(SEMAPHORE, 1, 1, name, False)
    finally:
        _cmp.sem_unlink(name)
    with pytest.raises(FileNotFoundError):
        _cmp.sem_unlink(name)
    with pytest.raises(TypeError):
        _cmp.sem_unlink(None)
    del s


@posix_only
def test_rebuild():
    name = fresh_name()
    s = SemLock(SEMAPHORE, 0, 4, name, False)
    try:
        twin = SemLock._rebuild(s.handle, s.kind, s.maxvalue, s.name)
        assert twin.name == name and twin.maxvalue == 4
        twin.release()
        assert s._get_value() == 1 and s.acquire(False)
    finally:
        _cmp.sem_unlink(name)
    with pytest.raises(FileNotFoundError):
        SemLock._rebuild(0, SEMAPHORE, 1, name)
    with pytest.raises(TypeError):
        SemLock._rebuild(0, SEMAPHORE, 1)
    with pytest.raises(ValueError):
        SemLock._rebuild(0, 9, 1, None)


def test_subclass():
    class MySem(SemLock):
        extra = "x"

        def twice(self):
            return self.acquire(False), self.acquire(False)

    name = fresh_name()
    s = MySem(SEMAPHORE, 1, 10, name, False)
    try:
        assert isinstance(s, SemLock) and s.extra == "x"
        s.note = 1                     # subclasses get a __dict__
        assert s.twice() == (True, False)
        r = MySem._rebuild(s.handle, s.kind, s.maxvalue, name)
        assert type(r) is MySem
    finally:
        _cmp.sem_unlink(name)
    del s, r
    gc.collect()


def test_subclasses_get_their_own_method_descriptors():
    # Each subclass holds descriptors made for itself (what the
    # interpreter's specialized calls need), except where it overrides.
    class Base(SemLock):
        pass

    class Overrides(Base):
        def release(self):
            self.released = True
            return super().release()

    class Deeper(Overrides):
        pass

    for cls in (Base, Overrides, Deeper):
        d = cls.__dict__["acquire"]
        assert type(d) is type(SemLock.__dict__["acquire"])
        assert d.__objclass__ is cls
        assert "__enter__" in cls.__dict__ and "_rebuild" not in cls.__dict__
    assert "release" not in Deeper.__dict__          # the override is kept
    assert Deeper.release is Overrides.release
    s = make(cls=Deeper)
    assert s.acquire() is True
    s.release()
    assert s.released is True
    with s:
        assert s._count() == 1
    assert s._count() == 0
    # a descriptor made for a subclass still refuses foreign objects
    with pytest.raises(TypeError):
        Base.__dict__["acquire"](make())
    import cmultiprocessing.synchronize as sync
    for name in ("Lock", "RLock", "Semaphore", "BoundedSemaphore"):
        cls = getattr(sync, name)
        assert cls.__dict__["acquire"].__objclass__ is cls


def test_init_subclass_takes_no_arguments():
    with pytest.raises(TypeError, match="takes no arguments"):
        class Bad(SemLock, flavour=1):
            pass


def test_plain_semlock_is_not_picklable():
    with pytest.raises(TypeError):
        pickle.dumps(make())


# --------------------------------------------------------------------------
# semaphores made in shared memory (SemLock(..., memory=block))

IN_MEMORY = _cmp._SEM_IN_MEMORY_SIZE


def memory_block(size=None):
    from cmultiprocessing import heap
    return heap.Heap().take(IN_MEMORY if size is None else size)


@pytest.mark.skipif(not IN_MEMORY, reason="no sem_init here")
@pytest.mark.timeout(60)
def test_semaphore_in_memory_counts_and_is_shared_with_forked_child():
    block = memory_block()
    s = SemLock(SEMAPHORE, 2, 2, None, True, block)
    assert s.name is None and s.kind == SEMAPHORE and s.maxvalue == 2
    assert s.acquire(False) and s.acquire(False) and not s.acquire(False)
    assert s._get_value() == 0 and s._is_zero()
    s.release()
    done = SemLock(SEMAPHORE, 0, SemLock.SEM_VALUE_MAX, None, True,
                   memory_block())

    def child():
        # the child takes the parent's last unit, gives two back
        if not s.acquire(True, 30) or s.acquire(False):
            return 1
        s.release()
        done.release()
        return 0

    assert fork_child(child) == 0
    assert done.acquire(True, 30)
    assert s._get_value() == 1


@pytest.mark.skipif(not IN_MEMORY, reason="no sem_init here")
def test_semaphore_in_memory_keeps_its_block():
    from cmultiprocessing import heap
    h = heap.Heap()
    block = h.take(IN_MEMORY)
    s = SemLock(RECURSIVE_MUTEX, 1, 1, None, True, block)
    frees = h._n_frees
    del block
    assert h._n_frees == frees          # the lock holds the block
    assert s.acquire() and s.acquire() and s._count() == 2
    s.release()
    s.release()
    del s
    assert h._n_frees == frees + 1      # returned with the lock


@pytest.mark.skipif(not IN_MEMORY, reason="no sem_init here")
def test_semaphore_in_memory_argument_errors():
    with pytest.raises(ValueError, match="no name"):
        SemLock(SEMAPHORE, 1, 1, fresh_name(), True, memory_block())
    with pytest.raises(OSError):                    # too short: EINVAL
        SemLock(SEMAPHORE, 1, 1, None, True, memory_block(IN_MEMORY - 8))
    with pytest.raises((TypeError, BufferError)):   # read-only
        SemLock(SEMAPHORE, 1, 1, None, True, bytes(IN_MEMORY))
    with pytest.raises(TypeError):                  # still no None name
        SemLock(SEMAPHORE, 1, 1, None, True, None)
    with pytest.raises(ValueError):
        SemLock(SEMAPHORE, -1, 1, None, True, memory_block())


@pytest.mark.skipif(bool(IN_MEMORY), reason="sem_init works here")
def test_semaphore_in_memory_refused_where_unsupported():
    with pytest.raises(OSError):
        SemLock(SEMAPHORE, 1, 1, None, True, bytearray(64))


# --------------------------------------------------------------------------
# fork

@posix_only
def test_after_fork_resets_ownership():
    r = make(kind=RECURSIVE_MUTEX)
    r.acquire()
    r.acquire()

    def child():
        r._after_fork()
        # the child's thread does not own it, and cannot take it: the
        # parent still holds the semaphore
        ok = r._count() == 0 and not r._is_mine() and not r.acquire(False)
        return 0 if ok else 1

    assert fork_child(child) == 0
    assert r._count() == 2 and r._is_mine()
    r.release()
    r.release()


def _report_ownership(locks, conn):
    out = []
    for lock in locks:
        try:
            lock.release()
            released = "released"
        except AssertionError:
            released = "not owned"
        out.append((lock._count(), lock._is_mine(), released))
    conn.send(out)


@posix_only
@pytest.mark.timeout(60)
def test_child_process_forgets_acquisitions_without_a_hook_per_lock():
    from cmultiprocessing import util
    c = ctx("fork")
    hooks = len(util._afterfork_registry)
    r, v = c.RLock(), c.Value("i")
    assert len(util._afterfork_registry) == hooks   # no entry per lock
    locks = [r, v.get_lock()]
    for lock in locks:
        assert lock.acquire() and lock.acquire() and lock._count() == 2
    recv, send = c.Pipe(False)
    p = c.Process(target=_report_ownership, args=(locks, send))
    p.start()
    try:
        assert recv.poll(60)
        assert recv.recv() == [(0, False, "not owned")] * 2
    finally:
        p.join(60)
    assert p.exitcode == 0
    for lock in locks:      # the parent's own counts are untouched
        assert lock._count() == 2 and lock._is_mine()
        lock.release()
        lock.release()

    def child():
        # as in the stdlib, a bare os.fork() child keeps the counts until
        # the after-fork hooks run (a Process child runs them at start)
        kept = r._count() == 2 and r._is_mine()
        util._run_after_forkers()
        return 0 if kept and r._count() == 0 and not r._is_mine() else 1

    assert r.acquire() and r.acquire()
    assert fork_child(child) == 0
    r.release()
    r.release()


@posix_only
def test_semaphore_shared_with_forked_child():
    s = make(value=0, maxvalue=SemLock.SEM_VALUE_MAX)
    done = make(value=0, maxvalue=SemLock.SEM_VALUE_MAX)

    def child():
        for _ in range(100):
            s.acquire()
            done.release()
        return 0

    pid = os.fork()
    if pid == 0:
        os._exit(child())
    for _ in range(100):
        s.release()
        assert done.acquire(True, 30)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@posix_only
def test_killed_holder_leaves_lock_held():
    """POSIX semaphores have no owner: a process killed while holding a lock
    leaves it held.  Waiters time out (or wait until someone releases); no
    crash, no error.  The lock can still be recovered by releasing it."""
    lock = make(value=1, maxvalue=1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        lock.acquire()
        os.write(w, b"x")
        time.sleep(60)
        os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"x"
    os.close(r)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert lock.acquire(True, 0.2) is False
    assert lock._get_value() == 0
    lock.release()                     # a survivor may recover it
    assert lock.acquire(False) is True


# --------------------------------------------------------------------------
# _ConditionCore directly

def core_parts(lock_kind=RECURSIVE_MUTEX):
    big = SemLock.SEM_VALUE_MAX
    lock = make(kind=lock_kind)
    sems = [make(value=0, maxvalue=big) for _ in range(3)]
    return lock, sems


def test_core_rejects_foreign_objects():
    lock, sems = core_parts()
    with pytest.raises(TypeError):
        _cmp._ConditionCore(threading.Lock(), *sems)
    with pytest.raises(TypeError):
        _cmp._ConditionCore(lock, sems[0], sems[1])
    core = _cmp._ConditionCore(lock, *sems)
    with pytest.raises(TypeError):
        core.set()                     # no event flag


def test_core_requires_lock():
    lock, sems = core_parts()
    core = _cmp._ConditionCore(lock, *sems)
    with pytest.raises(AssertionError, match="must acquire"):
        core.wait(0)
    with pytest.raises(AssertionError, match="not owned"):
        core.notify()
    with pytest.raises(AssertionError):
        core.notify_all()


def test_core_wait_restores_recursion_depth():
    lock, sems = core_parts()
    core = _cmp._ConditionCore(lock, *sems)
    lock.acquire()
    lock.acquire()
    assert core.wait(0.05) is False
    assert lock._count() == 2 and lock._is_mine()
    # the timed-out sleeper is accounted for by the next notify
    assert sems[0]._get_value() == 1 and sems[1]._get_value() == 1
    core.notify()
    assert sems[0]._get_value() == 0 and sems[1]._get_value() == 0
    lock.release()
    lock.release()


def test_core_notify_between_threads():
    lock, sems = core_parts()
    core = _cmp._ConditionCore(lock, *sems)
    results = []
    ready = threading.Semaphore(0)

    def waiter():
        lock.acquire()
        ready.release()
        results.append(core.wait(30))
        lock.release()

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in threads:
        ready.acquire()
    lock.acquire()
    core.notify(n=1)
    lock.release()
    deadline = time.monotonic() + 30
    while len(results) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert results == [True]
    lock.acquire()
    core.notify_all()
    lock.release()
    for t in threads:
        t.join()
    assert results == [True, True, True]
    with pytest.raises(TypeError):
        core.notify("many")


def test_core_event_operations():
    lock, sems = core_parts(SEMAPHORE)
    flag = make(value=0, maxvalue=SemLock.SEM_VALUE_MAX)
    ev = _cmp._ConditionCore(lock, *sems, flag)
    assert ev.is_set() is False
    assert ev.event_wait(0.01) is False
    ev.set()
    ev.set()
    assert flag._get_value() == 1
    assert ev.is_set() is True and ev.event_wait() is True
    ev.clear()
    assert ev.is_set() is False
    t = threading.Timer(0.1, ev.set)
    t.start()
    try:
        assert ev.event_wait(30) is True
    finally:
        t.join()
    assert lock._get_value() == 1      # the lock is always given back


# --------------------------------------------------------------------------
# synchronize.py

def test_lock_classes_and_reprs():
    c = ctx()
    lock = c.Lock()
    assert repr(lock) == "<Lock(owner=None)>"
    assert lock.acquire() is True and lock.acquire(False) is False
    assert repr(lock) == "<Lock(owner=MainProcess)>"
    assert lock._semlock is lock and lock._semlock.name is None
    lock.release()
    with pytest.raises(ValueError):
        lock.release()
    rlock = c.RLock()
    rlock.acquire()
    rlock.acquire()
    assert repr(rlock) == "<RLock(MainProcess, 2)>"
    rlock.release()
    rlock.release()
    assert repr(rlock) == "<RLock(None, 0)>"
    sem = c.Semaphore(3)
    assert repr(sem) == "<Semaphore(value=3)>" and sem.get_value() == 3
    bsem = c.BoundedSemaphore(2)
    assert repr(bsem) == "<BoundedSemaphore(value=2, maxvalue=2)>"
    with pytest.raises(ValueError):
        bsem.release()
    with pytest.raises(ValueError):
        c.Semaphore(-1)
    empty = c.BoundedSemaphore(0)      # legal, as in the stdlib and threading
    assert empty.acquire(False) is False
    with pytest.raises(ValueError):
        empty.release()
    seen = []
    t = threading.Thread(target=lambda: (lock.acquire(),
                                         seen.append(repr(lock))),
                         name="T1")
    t.start()
    t.join()
    assert seen == ["<Lock(owner=MainProcess|T1)>"]
    assert repr(lock) == "<Lock(owner=SomeOtherThread)>"
    lock.release()


def test_pickling_only_while_spawning():
    c = ctx()
    for obj in (c.Lock(), c.RLock(), c.Semaphore(), c.Condition(), c.Event()):
        with pytest.raises(RuntimeError, match="inheritance"):
            pickle.dumps(obj)


class _DupFd:
    def __init__(self, fd):
        self.fd = fd

    def detach(self):
        return self.fd


class _SpawningHere:
    """What a spawning Popen gives the pickler: descriptors the child will
    have (here, duplicates in this very process)."""
    DupFd = _DupFd

    def duplicate_for_child(self, fd):
        return os.dup(fd)


def test_spawn_context_names_are_registered_and_removed():
    """Outside fork the name stays (children reopen it) until the object is
    finalized; then it is unlinked -- nothing left in /dev/shm."""
    from cmultiprocessing import synchronize
    c = ctx("spawn")
    lock = c.Lock()
    name = lock.name
    assert name is not None and os.path.exists(sem_file(name))
    state = None
    from cmultiprocessing import context as mpctx
    from cmultiprocessing.reduction import ForkingPickler

    # what a spawned child would receive
    orig = mpctx.get_spawning_popen
    mpctx.set_spawning_popen(_SpawningHere())
    try:
        state = ForkingPickler.dumps(lock)
    finally:
        mpctx.set_spawning_popen(None)
    twin = pickle.loads(state)
    assert type(twin) is synchronize.Lock and twin.name == name
    assert twin.acquire(False) and not lock.acquire(False)
    twin.release()
    del lock, twin
    gc.collect()
    assert not os.path.exists(sem_file(name))
    assert orig is mpctx.get_spawning_popen


def test_fork_context_lock_refuses_spawn_pickling():
    from cmultiprocessing import context as mpctx
    lock = ctx("fork").Lock()
    mpctx.set_spawning_popen(object())
    try:
        with pytest.raises(RuntimeError, match="fork context"):
            pickle.dumps(lock)
    finally:
        mpctx.set_spawning_popen(None)


def test_condition_and_event_with_forked_child():
    c = ctx()
    cond = c.Condition()
    event = c.Event()
    ready = c.Semaphore(0)

    def child():
        with cond:
            ready.release()
            if not cond.wait(30):
                return 2
        event.set()
        return 0

    pid = os.fork()
    if pid == 0:
        os._exit(child())
    assert ready.acquire(True, 30)
    with cond:
        cond.notify()
    assert event.wait(30) is True and event.is_set()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert repr(cond).endswith(", 0)>")
    assert "set" in repr(event)


def test_condition_with_statement_uses_the_locks_methods():
    import contextlib
    for lock in (None, ctx().Lock()):
        cond = ctx().Condition(lock)
        native = cond._lock
        assert cond.__enter__ == native.__enter__     # the lock's own method
        with pytest.raises(ZeroDivisionError):
            with cond as got:
                assert got is True and native._is_mine()
                1 / 0  # noqa: B018 -- raises inside the with block, on purpose
        assert not native._is_mine()
        with contextlib.ExitStack() as stack:       # calls Condition.__enter__(cond)
            assert stack.enter_context(cond) is True
            assert native._is_mine()
        assert not native._is_mine()
        assert type(cond).__enter__(cond) is True
        assert type(cond).__exit__(cond, None, None, None) is None
        assert not native._is_mine()
        with cond:
            assert cond.wait(0) is False            # wait inside `with` keeps the lock
            assert native._is_mine()


def test_condition_wait_for():
    c = ctx()
    cond = c.Condition(c.Lock())
    box = []
    with cond:
        assert cond.wait_for(lambda: box, timeout=0.05) == []

    def fill():
        with cond:
            box.append(1)
            cond.notify_all()

    t = threading.Timer(0.1, fill)
    t.start()
    with cond:
        assert cond.wait_for(lambda: box, timeout=30) == [1]
    t.join()
    with pytest.raises(TypeError):
        c.Condition(threading.Lock())


def test_barrier_between_processes():
    pytest.importorskip("cmultiprocessing.heap")
    import threading as th
    c = ctx()
    barrier = c.Barrier(2, timeout=30)
    assert barrier.parties == 2 and barrier.n_waiting == 0

    def child():
        return 0 if barrier.wait() in (0, 1) else 1

    pid = os.fork()
    if pid == 0:
        os._exit(child())
    assert barrier.wait() in (0, 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    barrier.abort()
    assert barrier.broken
    with pytest.raises(th.BrokenBarrierError):
        barrier.wait()
    with pytest.raises(ValueError):
        c.Barrier(0)


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="setitimer")
def test_condition_wait_interrupted_keeps_lock_and_accounting():
    class Alarm(Exception):
        pass

    def handler(signum, frame):
        raise Alarm

    lock, sems = core_parts()
    core = _cmp._ConditionCore(lock, *sems)
    old = signal.signal(signal.SIGALRM, handler)
    lock.acquire()
    lock.acquire()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Alarm):
            core.wait()                # no timeout: only the signal ends it
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    # the lock is held again at its old depth; the sleeper reported waking
    assert lock._is_mine() and lock._count() == 2
    assert sems[0]._get_value() == 1 and sems[1]._get_value() == 1
    core.notify()
    assert [s._get_value() for s in sems] == [0, 0, 0]
    lock.release()
    lock.release()


def _spawned_child(lock, sem, event, cond):
    with lock:
        sem.release()
    with cond:
        cond.notify_all()
    event.set()


def test_objects_reach_a_spawned_child():
    c = ctx("spawn")
    lock, sem, event, cond = c.Lock(), c.Semaphore(0), c.Event(), c.Condition()
    names = [lock.name, sem.name]
    p = c.Process(target=_spawned_child, args=(lock, sem, event, cond))
    p.start()
    try:
        assert sem.acquire(True, 60)
        assert event.wait(60)
    finally:
        p.join(60)
    assert p.exitcode == 0
    assert lock.acquire(False)
    lock.release()
    del lock, sem, event, cond
    gc.collect()
    assert not any(os.path.exists(sem_file(n)) for n in names)


# --------------------------------------------------------------------------
# bound methods of Event and Condition as a child's target

@posix_only
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_event_wait_as_target_of_a_new_child(method):
    # Event.wait is a method of the native core: it travels to a spawned
    # child as the core's semaphores (3.14's suite starts children with
    # target=event.wait).
    c = ctx(method)
    event = c.Event()
    p = c.Process(target=event.wait, args=(30,))
    p.start()
    event.set()
    p.join(60)
    assert p.exitcode == 0


def test_core_methods_pickle_only_while_spawning():
    c = ctx("spawn")
    event, cond = c.Event(), c.Condition()
    for bound in (event.wait, event.set, cond.notify_all):
        with pytest.raises(RuntimeError, match="inheritance"):
            pickle.dumps(bound)


@posix_only
def test_fork_context_core_refused_for_spawned_child():
    event = ctx("fork").Event()
    p = ctx("spawn").Process(target=event.wait, args=(1,))
    with pytest.raises(RuntimeError, match="fork context"):
        p.start()
# version-dependent surface: locked() and the reprs of 3.14

PY314 = sys.version_info >= (3, 14)


@pytest.mark.skipif(not PY314, reason="locked() is new in 3.14")
def test_locked_on_3_14():
    c = ctx()
    for make in (c.Lock, c.RLock):
        lock = make()
        assert lock.locked() is False
        with lock as entered:
            assert entered is True and lock.locked() is True
        assert lock.locked() is False
    rlock = c.RLock()
    rlock.acquire()
    rlock.acquire()
    rlock.release()
    assert rlock.locked() is True        # still held once
    rlock.release()
    assert rlock.locked() is False
    sem = c.Semaphore(1)                 # on SemLock: semaphores have it too
    assert sem.locked() is False
    sem.acquire()
    assert sem.locked() is True
    sem.release()
    assert c.BoundedSemaphore(0).locked() is True
    # a C method: no Python frame on the call
    from cmultiprocessing import synchronize
    assert type(synchronize.Lock.locked).__name__ == "method_descriptor"


@pytest.mark.skipif(not PY314, reason="locked() is new in 3.14")
@posix_only
def test_locked_seen_from_another_process():
    c = ctx()
    for make in (c.Lock, c.RLock):
        lock, taken = make(), c.Semaphore(0)

        def child(lock=lock, taken=taken):
            lock.acquire()
            ok = lock.locked()
            taken.release()
            return 0 if ok else 1
        assert fork_child(child) == 0
        assert taken.acquire(True, 30)
        # the child exited holding it: taken for this process too (as in
        # the stdlib: only a robust lock is taken over)
        assert lock.locked() is True
        assert lock.acquire(False) is False


@pytest.mark.skipif(PY314, reason="3.11-3.13 have no locked()")
def test_no_locked_before_3_14():
    c = ctx()
    for obj in (c.Lock(), c.RLock(), c.Semaphore(), c.BoundedSemaphore()):
        assert not hasattr(obj, "locked")
    from cmultiprocessing import synchronize
    assert synchronize.Semaphore.get_value.__doc__ is None


def test_reprs_follow_get_value_and_is_zero():
    """3.14 reads counts through get_value() (so a subclass's override
    shows in the repr) and asks _is_zero() whether a lock is free; earlier
    versions read the native _get_value()."""
    from cmultiprocessing import synchronize
    c = ctx()

    class Odd(synchronize.Semaphore):
        __slots__ = ()

        def get_value(self):
            return 42
    sem = Odd(3, ctx=c)
    assert repr(sem) == ("<Odd(value=42)>" if PY314 else "<Odd(value=3)>")

    class Blind(synchronize.Semaphore):
        __slots__ = ()

        def get_value(self):
            raise NotImplementedError
    assert repr(Blind(ctx=c)) == ("<Blind(value=unknown)>" if PY314
                                  else "<Blind(value=1)>")
    cond = c.Condition()
    assert repr(cond) == "<Condition(<RLock(None, 0)>, 0)>"
    if PY314:
        assert "macOS" in synchronize.Semaphore.get_value.__doc__
        # the "free" test of the Lock/RLock reprs is _is_zero(), not the
        # count: a semaphore above 1 is still "owner=None"
        assert synchronize.Lock.__repr__(sem) == "<Odd(owner=None)>"


def test_bound_condition_and_event_methods_as_spawned_targets():
    """event.set / event.wait / cond.notify_all are bound methods of the
    native core: they pickle for a spawned child (as a core over the same
    semaphores), and refuse outside spawning as the objects do."""
    c = ctx("spawn")
    event, go = c.Event(), c.Event()
    with pytest.raises(RuntimeError, match="inheritance"):
        pickle.dumps(event.wait)
    waiter = c.Process(target=go.wait, args=(60,))
    setter = c.Process(target=event.set)
    waiter.start()
    setter.start()
    try:
        assert event.wait(60)
        go.set()
    finally:
        setter.join(60)
        waiter.join(60)
    assert (setter.exitcode, waiter.exitcode) == (0, 0)
    cond = c.Condition()
    p = c.Process(target=cond.notify_all)      # lock not held: it fails
    p.start()
    p.join(60)
    assert p.exitcode == 1
