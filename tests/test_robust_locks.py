"""Locks whose holder dies: a Lock or RLock made with robust=True (also
serving a Condition or a Value) is taken over by the next acquirer, with
an AbandonedLockWarning, and Event's own lock quietly; the stdlib's stay
locked for ever, and so do the default ones here (pebble's pool counts on
it).  Counting semaphores cannot be robust (see
cmultiprocessing.synchronize's docstring; the queues' locks:
test_queue_faults.py)."""
import os
import signal
import struct
import subprocess
import sys
import time
import warnings

import pytest

import cmultiprocessing
from cmultiprocessing.synchronize import AbandonedLockWarning

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
    pytest.mark.timeout(60),
]

METHODS = [m for m in ("fork", "spawn", "forkserver")
           if m in cmultiprocessing.get_all_start_methods()]


def _hold(lock, held):
    lock.acquire()
    held.set()
    time.sleep(60)


def _hold_then_exit(lock, held):
    lock.acquire()
    held.set()
    os._exit(0)


def _held_by_child(ctx, lock, target=_hold):
    """A child that holds `lock` (and sleeps, unless target says else)."""
    held = ctx.Event()
    p = ctx.Process(target=target, args=(lock, held))
    p.start()
    assert held.wait(30)
    return p


def _kill(p):
    os.kill(p.pid, signal.SIGKILL)


def _abandoned_lock():
    """A fork-context Lock whose holder was SIGKILLed (and reaped), and
    the holder."""
    ctx = cmultiprocessing.get_context("fork")
    lock = ctx.Lock(robust=True)
    p = _held_by_child(ctx, lock)
    _kill(p)
    p.join()
    return lock, p


def _acquire_recording(lock, **kwargs):
    """acquire(**kwargs) -> (result, seconds, warnings raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.monotonic()
        got = lock.acquire(**kwargs)
        took = time.monotonic() - t0
    return got, took, [w for w in caught
                       if issubclass(w.category, AbandonedLockWarning)]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_lock_of_a_killed_holder_is_taken_over(method, kind):
    ctx = cmultiprocessing.get_context(method)
    lock = getattr(ctx, kind)(robust=True)
    p = _held_by_child(ctx, lock)
    try:
        assert lock._owner() == p.pid
        got, _, told = _acquire_recording(lock, timeout=0.2)
        assert (got, told) == (False, [])          # the holder lives
        _kill(p)                                   # not joined: a zombie
        got, took, told = _acquire_recording(lock, timeout=2)
        assert got is True and took < 2
        assert len(told) == 1
        message = str(told[0].message)
        assert message.startswith("%s taken over from process %d" %
                                  (kind, p.pid))
        assert told[0].filename == __file__        # points at the caller
        assert lock._owner() == os.getpid()
        lock.release()
        assert lock._owner() is None
        got, _, told = _acquire_recording(lock, timeout=1)
        assert (got, told) == (True, [])           # an ordinary lock again
        lock.release()
    finally:
        p.kill()
        p.join()
    assert p.exitcode == -signal.SIGKILL


def test_untimed_and_non_blocking_acquires_take_over_too():
    ctx = cmultiprocessing.get_context("fork")
    lock, _ = _abandoned_lock()
    got, _, told = _acquire_recording(lock, block=False)
    assert got is True and len(told) == 1
    lock.release()

    rlock = ctx.RLock(robust=True)
    q = _held_by_child(ctx, rlock)
    _kill(q)
    got, took, told = _acquire_recording(rlock)     # no timeout
    assert got is True and len(told) == 1 and took < 5
    assert rlock.acquire(timeout=0)                 # recursive, ours now
    rlock.release()
    rlock.release()
    q.join()


def test_a_holder_that_exits_holding_it_abandons_it():
    # No death by signal needed: a process that ends holding a Lock has
    # abandoned it (a Lock meant to be released by another process is
    # released while its acquirer lives, or is not affected).
    ctx = cmultiprocessing.get_context("fork")
    lock = ctx.Lock(robust=True)
    p = _held_by_child(ctx, lock, target=_hold_then_exit)
    p.join()
    assert p.exitcode == 0
    got, _, told = _acquire_recording(lock, timeout=2)
    assert got is True and len(told) == 1
    lock.release()


def test_a_lock_released_by_another_process_is_not_abandoned():
    ctx = cmultiprocessing.get_context("fork")
    lock = ctx.Lock(robust=True)
    lock.acquire()
    p = ctx.Process(target=lock.release)
    p.start()
    p.join()
    assert p.exitcode == 0
    assert lock._owner() is None
    got, _, told = _acquire_recording(lock, timeout=2)
    assert (got, told) == (True, [])
    lock.release()


def test_warning_made_an_error_leaves_the_lock_abandoned():
    lock, p = _abandoned_lock()
    with warnings.catch_warnings():
        warnings.simplefilter("error", AbandonedLockWarning)
        with pytest.raises(AbandonedLockWarning, match="taken over from"):
            lock.acquire(timeout=2)
        with pytest.raises(AbandonedLockWarning):
            with lock:
                pass
    assert lock._owner() == p.pid                  # still the dead holder's
    got, _, told = _acquire_recording(lock, timeout=2)
    assert got is True and len(told) == 1          # the next one is told too
    lock.release()


def test_a_reused_pid_is_not_taken_for_the_holder():
    # The record names the holder by pid and start time: a live process
    # with the recorded pid but another start time is not the holder.
    ctx = cmultiprocessing.get_context("fork")
    lock = ctx.Lock(robust=True)
    p = _held_by_child(ctx, lock)
    try:
        record = memoryview(lock._owner_block).cast("B")
        (tag,) = struct.unpack_from("=Q", record, 0)
        assert tag >> 32 == p.pid
        struct.pack_into("=Q", record, 0, tag ^ 1)  # same pid, other start
        got, _, told = _acquire_recording(lock, timeout=2)
        assert got is True and len(told) == 1
        assert "process %d" % p.pid in str(told[0].message)
        lock.release()
    finally:
        p.kill()
        p.join()


def _hold_condition(cond, held):
    cond.acquire()
    held.set()
    time.sleep(60)


def test_condition_event_and_value_locks_are_taken_over():
    ctx = cmultiprocessing.get_context("fork")
    cond = ctx.Condition(ctx.RLock(robust=True))
    p = _held_by_child(ctx, cond, target=_hold_condition)
    _kill(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AbandonedLockWarning)
        assert cond.acquire(timeout=2)
        assert cond.wait(0.01) is False            # usable: waits, times out
        cond.notify_all()
        cond.release()
    p.join()

    value = ctx.Value("i", 7, lock=ctx.RLock(robust=True))
    q = _held_by_child(ctx, value.get_lock())
    _kill(q)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AbandonedLockWarning)
        assert value.get_lock().acquire(timeout=2)
        value.value += 1
        value.get_lock().release()
    assert value.value == 8
    q.join()

    event = ctx.Event()
    r = _held_by_child(ctx, event._cond)           # the lock inside Event
    _kill(r)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AbandonedLockWarning)
        event.set()                                # taken over quietly
        assert event.wait(0)
    r.join()


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_default_locks_stay_locked_as_the_stdlib_has_them(kind):
    # What pebble's pool counts on: an acquire of a lock whose holder died
    # times out, so the pool knows the channel it guards may be broken.
    ctx = cmultiprocessing.get_context("fork")
    lock = getattr(ctx, kind)()
    p = _held_by_child(ctx, lock)
    _kill(p)
    p.join()
    got, took, told = _acquire_recording(lock, timeout=0.3)
    assert (got, told) == (False, []) and took >= 0.3
    assert lock.acquire(False) is False
    assert lock._owner() is None                   # nothing recorded
    from cmultiprocessing import synchronize
    with pytest.raises(ValueError, match="cannot be robust"):
        synchronize.Semaphore(1, ctx=ctx, robust=True)


def test_semaphores_stay_as_the_stdlib_has_them():
    ctx = cmultiprocessing.get_context("fork")
    sem = ctx.BoundedSemaphore(1)
    p = _held_by_child(ctx, sem)
    _kill(p)
    p.join()
    got, _, told = _acquire_recording(sem, timeout=0.3)
    assert (got, told) == (False, [])              # a unit has no owner
    assert sem._owner() is None

    # (the queues' locks are taken over quietly: tests/test_queue_faults.py)


def test_native_semlock_takes_a_record_only_where_one_fits():
    import _cmultiprocessing
    sem = cmultiprocessing.get_context("fork").Semaphore(2)
    with pytest.raises(ValueError, match="counting semaphore"):
        sem._set_owner_record(bytearray(24))
    lock = cmultiprocessing.get_context("fork").Lock(robust=True)
    with pytest.raises(ValueError, match="has its owner record"):
        lock._set_owner_record(bytearray(24))
    bare = _cmultiprocessing.SemLock(1, 1, 1, "/cmp-robust-%d" % os.getpid(),
                                     True)
    with pytest.raises(ValueError, match="24 bytes"):
        bare._set_owner_record(bytearray(8))
    with pytest.raises(BufferError):
        bare._set_owner_record(b"x" * 24)          # not writable
    assert bare._owner() is None


def _record_line(lock):
    import ctypes
    from cmultiprocessing import synchronize
    view = synchronize._owner_view(lock._owner_block)
    return ctypes.addressof(ctypes.c_char.from_buffer(view)) // 128, view


def test_each_owner_record_has_a_cache_line_of_its_own():
    # A queue's reader and writer locks are made one after the other: their
    # records once shared a line, and every get missed the cache on it.
    ctx = cmultiprocessing.get_context("fork")
    q = ctx.Queue()
    locks = [q._rlock, q._wlock]
    locks += [ctx.Lock(robust=True) for _ in range(50)]
    locks += [ctx.RLock(robust=True) for _ in range(50)]
    lines = [_record_line(lock) for lock in locks]
    assert len({line for line, _ in lines}) == len(locks)
    for _, view in lines:
        assert view.nbytes == 24
    # the record is where the lock keeps its owner: taking the lock writes it
    lock = locks[2]
    _, view = _record_line(lock)
    assert bytes(view[:8]) == bytes(8)
    with lock:
        assert bytes(view[:8]) != bytes(8)
    assert bytes(view[:8]) == bytes(8)
    q.close()
    q.join_thread()


# A second interpreter of its own: the holder dies while the parent is
# already blocked in an untimed acquire (the stdlib hangs here for ever).
_BLOCKED_THEN_KILLED = r"""
import os, signal, threading, time, warnings
import cmultiprocessing

def hold(lock, held):
    lock.acquire()
    held.set()
    time.sleep(60)

if __name__ == '__main__':
    warnings.simplefilter('ignore')
    ctx = cmultiprocessing.get_context('spawn')
    lock, held = ctx.Lock(robust=True), ctx.Event()
    p = ctx.Process(target=hold, args=(lock, held))
    p.start()
    assert held.wait(30)
    threading.Timer(0.5, os.kill, (p.pid, signal.SIGKILL)).start()
    t0 = time.monotonic()
    with lock:
        print('acquired after', round(time.monotonic() - t0, 1) < 5)
    p.join()
"""


def test_a_blocked_acquire_wakes_when_the_holder_dies(tmp_path):
    script = tmp_path / "blocked.py"
    script.write_text(_BLOCKED_THEN_KILLED)
    out = subprocess.run([sys.executable, str(script)], capture_output=True,
                         text=True, timeout=50)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["acquired", "after", "True"]
