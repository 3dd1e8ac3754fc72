"""Unit tests of cmultiprocessing.pool (Pool, ThreadPool).

Besides the stdlib behaviour, they cover what the stdlib gets wrong: a
worker killed while it runs a task makes that task's result raise
WorkerLostError (naming the worker) instead of hanging, and the pool goes on
serving; a failing initializer fails the tasks instead of looping forever.
"""
import collections
import gc
import itertools
import os
import pickle
import signal
import struct
import threading
import time
import unittest.mock
import warnings

import pytest

import cmultiprocessing as cmp
from cmultiprocessing import pool as mpool

from support import is_gone, open_fd_count

LONG = 60.0          # bound for things that must happen (never reached)


# -- task functions (module level, so that they pickle) ---------------------

def square(x):
    return x * x


def add(x, y):
    return x + y


def slow_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def fail(message):
    raise ValueError(message)


def return_lambda():
    return lambda: 1


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError('this exception does not pickle')


def raise_unpicklable():
    raise Unpicklable('x')


def bad_initializer():
    raise RuntimeError('initializer says no')


_INIT_VALUE = None


def set_init_value(value):
    global _INIT_VALUE
    _INIT_VALUE = value


def get_init_value(_):
    return _INIT_VALUE


def die(code):
    os._exit(code)


def die_by_signal(signum):
    import faulthandler
    faulthandler.disable()          # just the signal, not a traceback dump
    os.kill(os.getpid(), signum)
    time.sleep(LONG)


def segfault_in_c(_):
    # a crash in C code, as a buggy extension would have it
    import ctypes
    import faulthandler
    faulthandler.disable()          # just the signal, not a traceback dump
    ctypes.string_at(0)


def numbers_then_error(count):
    yield from range(count)
    raise KeyError('generator failed')


class NoPickle:
    def __reduce__(self):
        raise RuntimeError('cannot pickle NoPickle')


# -- fixtures ---------------------------------------------------------------

@pytest.fixture(params=['fork', 'spawn'])
def ctx(request):
    return cmp.get_context(request.param)


@pytest.fixture
def pool():
    p = cmp.get_context('fork').Pool(3)
    try:
        yield p
    finally:
        p.terminate()
        p.join()


@pytest.fixture
def tpool():
    p = mpool.ThreadPool(3)
    try:
        yield p
    finally:
        p.terminate()
        p.join()


# -- the API ----------------------------------------------------------------

def test_every_way_of_mapping_matches_builtins(ctx):
    data = list(range(57))
    pairs = list(zip(data, reversed(data)))
    with ctx.Pool(2) as p:
        assert p.apply(square, (7,)) == 49
        assert p.apply(add, (), {'x': 1, 'y': 2}) == 3
        assert p.apply_async(square, (8,)).get(LONG) == 64
        for size in (None, 1, 5, 100):
            assert p.map(square, data, size) == [x * x for x in data]
            assert p.map_async(square, data, size).get(LONG) == \
                [x * x for x in data]
            assert p.starmap(add, pairs, size) == [a + b for a, b in pairs]
            assert p.starmap_async(add, pairs, size).get(LONG) == \
                [a + b for a, b in pairs]
        for size in (1, 4, 100):
            assert list(p.imap(square, data, size)) == [x * x for x in data]
            assert sorted(p.imap_unordered(square, data, size)) == \
                sorted(x * x for x in data)
    p.join()


def test_inputs_without_len_and_ranges(pool):
    assert pool.map(square, iter(range(10))) == [x * x for x in range(10)]
    assert pool.map(square, range(1000), 7) == [x * x for x in range(1000)]
    assert pool.map(square, tuple(range(9)), 2) == [x * x for x in range(9)]
    assert pool.map(square, []) == []
    assert list(pool.imap(square, [])) == []
    assert list(pool.imap_unordered(square, iter([]), 3)) == []


def test_imap_next_with_timeout(pool):
    it = pool.imap(slow_pid, [0.5, 0])
    with pytest.raises(cmp.TimeoutError):
        it.next(timeout=0.01)
    assert isinstance(it.next(timeout=LONG), int)
    assert isinstance(it.next(timeout=LONG), int)
    with pytest.raises(StopIteration):
        it.next(timeout=LONG)


def test_async_result_api(pool):
    res = pool.apply_async(slow_pid, (0.3,))
    with pytest.raises(ValueError):
        res.successful()
    with pytest.raises(cmp.TimeoutError):
        res.get(timeout=0.01)
    res.wait(LONG)
    assert res.ready() and res.successful()
    bad = pool.apply_async(fail, ('boom',))
    bad.wait(LONG)
    assert bad.ready() and not bad.successful()
    assert mpool.AsyncResult is mpool.ApplyResult
    assert mpool.ApplyResult[int].__origin__ is mpool.ApplyResult


def test_callbacks(pool):
    got = []
    done = threading.Event()

    def record(value):
        got.append(value)
        done.set()
    pool.apply_async(square, (3,), callback=record,
                     error_callback=record).wait(LONG)
    pool.map_async(int, ['1', '2'], callback=record,
                   error_callback=record).wait(LONG)
    pool.map_async(int, ['x'], callback=record,
                   error_callback=record).wait(LONG)
    assert got[0] == 9 and got[1] == [1, 2]
    assert isinstance(got[2], ValueError)


def test_failing_callback_does_not_break_the_pool(pool, capsys):
    def broken(_):
        raise RuntimeError('callback failed')
    res = pool.apply_async(square, (2,), callback=broken)
    assert res.get(LONG) == 4
    assert pool.apply(square, (3,)) == 9


def test_errors_carry_the_remote_traceback(pool):
    with pytest.raises(ValueError) as info:
        pool.apply(fail, ('remote',))
    cause = info.value.__cause__
    assert isinstance(cause, mpool.RemoteTraceback)
    assert 'raise ValueError(message)' in cause.tb
    # an error of the input iterable is raised as it is, without a cause
    with pytest.raises(KeyError) as info:
        pool.map(square, numbers_then_error(3), 1)
    assert info.value.__cause__ is None


def test_iterable_errors_arrive_in_order(pool):
    it = pool.imap(square, numbers_then_error(4))
    assert [next(it) for _ in range(4)] == [0, 1, 4, 9]
    with pytest.raises(KeyError):
        next(it)
    it = pool.imap(square, numbers_then_error(5), 2)
    assert [next(it) for _ in range(4)] == [0, 1, 4, 9]
    with pytest.raises(KeyError):
        next(it)


def test_thread_pool_does_not_wrap_exceptions(tpool):
    with pytest.raises(ValueError) as info:
        tpool.apply(fail, ('local',))
    assert info.value.__cause__ is None
    assert tpool.map(square, range(20), 3) == [x * x for x in range(20)]
    assert sorted(tpool.imap_unordered(square, range(5))) == [0, 1, 4, 9, 16]


# -- bad input ----------------------------------------------------------------

def test_invalid_arguments():
    with pytest.raises(ValueError):
        cmp.get_context('fork').Pool(0)
    for bad in (0, -1, 0.5, '3'):
        with pytest.raises(ValueError):
            cmp.get_context('fork').Pool(1, maxtasksperchild=bad)
    with pytest.raises(TypeError):
        cmp.get_context('fork').Pool(1, initializer=3)


def test_bad_chunksize_and_states(pool):
    with pytest.raises(ValueError):
        pool.imap(square, [1], 0)
    with pytest.raises(ValueError):
        pool.join()                     # still running
    with pytest.raises(NotImplementedError):
        pickle.dumps(pool)
    pool.close()
    for submit in (lambda: pool.apply_async(square, (1,)),
                   lambda: pool.map(square, [1]),
                   lambda: pool.imap(square, [1])):
        with pytest.raises(ValueError):
            submit()
    with pytest.raises(ValueError):
        pool.__enter__()
    pool.join()


def test_unpicklable_task_fails_alone(pool):
    with pytest.raises(RuntimeError, match='cannot pickle NoPickle'):
        pool.map(square, [NoPickle()] * 5)
    mixed = [pool.apply_async(add, (NoPickle(), 1)) for _ in range(3)]
    mixed.append(pool.apply_async(square, (5,)))
    for res in mixed[:3]:
        with pytest.raises(RuntimeError):
            res.get(LONG)
    assert mixed[3].get(LONG) == 25


def test_unpicklable_result_and_exception(pool):
    for _ in range(5):
        with pytest.raises(mpool.MaybeEncodingError) as info:
            pool.apply(return_lambda)
        assert 'Error sending result' in str(info.value)
        assert info.value.exc and info.value.value
    with pytest.raises(mpool.MaybeEncodingError):
        pool.apply(raise_unpicklable)
    assert pool.map(square, range(6)) == [0, 1, 4, 9, 16, 25]


# -- workers that fail ----------------------------------------------------------

def test_killed_worker_fails_its_task_and_pool_goes_on(pool):
    res = pool.apply_async(slow_pid, (LONG,))
    deadline = time.monotonic() + LONG
    victim = None
    while victim is None and time.monotonic() < deadline:
        busy = [slot.proc for slot in list(pool._engine.slots.values())
                if slot.batches]
        victim = busy[0] if busy else time.sleep(0.01)
    before = {w.pid for w in pool._pool}
    os.kill(victim.pid, signal.SIGKILL)
    with pytest.raises(mpool.WorkerLostError) as info:
        res.get(LONG)
    err = info.value
    assert err.pid == victim.pid and err.exitcode == -signal.SIGKILL
    assert str(victim.pid) in str(err) and 'signal 9' in str(err)
    assert isinstance(err, cmp.ProcessError)
    assert str(pickle.loads(pickle.dumps(err))) == str(err)
    # the pool replaces the worker and serves new work
    assert pool.map(square, range(30), 1) == [x * x for x in range(30)]
    deadline = time.monotonic() + LONG
    while len(pool._pool) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(pool._pool) == 3 and {w.pid for w in pool._pool} != before


def test_worker_exiting_by_itself(pool):
    with pytest.raises(mpool.WorkerLostError, match='exited with code 7'):
        pool.apply(die, (7,))
    assert pool.apply(square, (4,)) == 16


@pytest.mark.timeout(60)
@pytest.mark.parametrize('how', ['SIGTERM', 'SIGABRT', 'SIGSEGV in C'])
def test_worker_dying_by_other_signals(pool, how):
    if how == 'SIGSEGV in C':
        res = pool.apply_async(segfault_in_c, (0,))
        signum = signal.SIGSEGV
    else:
        signum = getattr(signal, how)
        res = pool.apply_async(die_by_signal, (signum,))
    with pytest.raises(mpool.WorkerLostError) as info:
        res.get(LONG)
    assert info.value.exitcode == -signum
    assert 'signal %d' % signum in str(info.value)
    assert pool.map(square, range(10), 1) == [x * x for x in range(10)]


def test_failing_initializer_fails_tasks_instead_of_hanging():
    p = cmp.get_context('fork').Pool(2, initializer=bad_initializer)
    try:
        for res in [p.apply_async(square, (i,)) for i in range(4)]:
            with pytest.raises(mpool.WorkerLostError) as info:
                res.get(LONG)
            assert 'initializer says no' in repr(info.value.__cause__)
    finally:
        p.terminate()
        p.join()


def test_initializer_runs_in_every_worker(ctx):
    with ctx.Pool(2, initializer=set_init_value, initargs=(42,)) as p:
        assert p.map(get_init_value, range(8), 1) == [42] * 8
    p.join()


def test_maxtasksperchild_replaces_workers():
    p = cmp.get_context('fork').Pool(2, maxtasksperchild=3)
    try:
        first = {w.pid for w in p._pool}
        results = [p.apply_async(slow_pid, (0,)) for _ in range(30)]
        pids = {r.get(LONG) for r in results}
        assert len(pids) >= 10            # at most 3 tasks per worker
        assert not first >= pids
        p._repopulate_pool()
        assert len(p._pool) <= 2
    finally:
        p.close()
        p.join()


def test_close_finishes_queued_work_with_short_lived_workers():
    p = cmp.get_context('fork').Pool(2, maxtasksperchild=1)
    results = [p.apply_async(square, (i,)) for i in range(6)]
    p.close()
    p.join()
    assert [r.get(0) for r in results] == [i * i for i in range(6)]
    assert p._pool == [] or all(w.exitcode is not None for w in p._pool)


# -- life cycle -------------------------------------------------------------------

def test_terminate_with_work_outstanding():
    p = cmp.get_context('fork').Pool(2)
    p.map_async(time.sleep, [LONG] * 50, 1)
    p.terminate()
    p.join()
    assert all(w.exitcode is not None for w in p._pool)


def test_context_manager_terminates(ctx):
    with ctx.Pool(1) as p:
        assert p.apply(square, (3,)) == 9
    assert p._state == mpool.TERMINATE
    with pytest.raises(ValueError):
        p.map_async(square, [1])
    p.join()


def test_resource_warning_for_a_running_pool():
    p = mpool.ThreadPool(1)
    p.terminate()
    p.join()
    p._state = mpool.RUN
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        del p
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) and
               'unclosed running cmultiprocessing pool' in str(w.message)
               for w in caught)


def test_creation_failure_leaks_no_worker():
    made = []

    class Flaky:
        fail_after = 2

        def __init__(self, **kwds):
            self.name, self.exitcode, self.alive = 'Flaky', None, False
            made.append(self)

        def start(self):
            if Flaky.fail_after == 0:
                raise OSError('no more processes')
            Flaky.fail_after -= 1
            self.alive = True

        def terminate(self):
            self.alive = False

        def join(self, timeout=None):
            pass

        def is_alive(self):
            return self.alive

    fake = unittest.mock.MagicMock(Process=Flaky)
    with pytest.raises(OSError, match='no more processes'):
        mpool.Pool(4, context=fake)
    assert len(made) == 3 and not any(p.is_alive() for p in made)


def test_results_do_not_keep_tasks_alive(tpool):
    class Counted:
        alive = 0

        def __init__(self):
            type(self).alive += 1

        def __del__(self):
            type(self).alive -= 1
    objs = [Counted() for _ in range(10)]
    out = tpool.map(lambda o: o, objs)
    assert out == objs
    del objs, out
    deadline = time.monotonic() + LONG
    while Counted.alive and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert Counted.alive == 0


def test_many_tiny_tasks(pool):
    results = [pool.apply_async(add, (i, 1)) for i in range(3000)]
    assert [r.get(LONG) for r in results] == [i + 1 for i in range(3000)]
    assert pool.starmap(add, zip(range(20000), itertools.repeat(2))) == \
        [i + 2 for i in range(20000)]


def test_tasks_queued_behind_a_killed_task_still_run():
    p = cmp.get_context('fork').Pool(1)
    try:
        # short tasks first: the pool then queues a second batch on a
        # busy worker, which must move to the replacement worker
        assert p.map(square, range(200), 1) == [x * x for x in range(200)]
        doomed = p.apply_async(slow_pid, (LONG,))
        deadline = time.monotonic() + LONG
        while not any(s.batches for s in list(p._engine.slots.values())):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        behind = [p.apply_async(square, (i,)) for i in range(5)]
        time.sleep(0.2)
        os.kill(p._pool[0].pid, signal.SIGKILL)
        with pytest.raises(mpool.WorkerLostError, match='while running'):
            doomed.get(LONG)
        assert [r.get(LONG) for r in behind] == [0, 1, 4, 9, 16]
    finally:
        p.terminate()
        p.join()


class _StartGate:
    open = True


class GatedPool(mpool.Pool):
    """A pool whose new workers can be made to fail to start."""

    @staticmethod
    def Process(ctx, *args, **kwds):
        if not _StartGate.open:
            raise OSError('cannot start a worker now')
        return ctx.Process(*args, **kwds)


def test_pool_survives_a_failed_replacement(capsys):
    p = GatedPool(2, context=cmp.get_context('fork'))
    try:
        victim = p._pool[0]
        _StartGate.open = False
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + LONG
        while victim in p._pool and time.monotonic() < deadline:
            time.sleep(0.01)
        assert p.apply(square, (3,)) == 9      # the other worker serves
        time.sleep(0.1)                        # a few failed attempts
        _StartGate.open = True
        while len(p._pool) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(p._pool) == 2
        assert p.map(square, range(10), 1) == [x * x for x in range(10)]
    finally:
        _StartGate.open = True
        p.terminate()
        p.join()
    assert 'cannot start a worker now' in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir('/proc/self/fd'), reason='needs /proc')
def test_no_descriptor_leaks():
    class NoStart:
        def __init__(self, **kwds):
            self.name, self.exitcode = 'NoStart', None

        def start(self):
            raise OSError('refused')

    fake = unittest.mock.MagicMock(Process=NoStart)
    ctx = cmp.get_context('fork')
    with ctx.Pool(1) as warm:            # first use may open lasting fds
        warm.map(square, range(3))
    warm.join()
    del warm
    gc.collect()
    before = open_fd_count()
    for _ in range(3):
        p = ctx.Pool(2)
        p.map(square, range(10))
        p.close()
        p.join()
        p = ctx.Pool(2)
        p.map(square, range(10))
        p.terminate()
        p.join()
        with pytest.raises(OSError):
            mpool.Pool(2, context=fake)
    del p
    gc.collect()
    assert open_fd_count() <= before


def test_tasks_batched_behind_a_killed_task_still_run():
    p = cmp.get_context('fork').Pool(1)
    try:
        assert p.map(square, range(200), 1) == [x * x for x in range(200)]
        # submitted together: short tasks after the slow one likely share
        # its batch; the worker notes which task it runs, so only the slow
        # one is lost
        doomed = p.apply_async(slow_pid, (LONG,))
        behind = [p.apply_async(square, (i,)) for i in range(5)]
        deadline = time.monotonic() + LONG
        while not any(s.batches for s in list(p._engine.slots.values())):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)
        os.kill(p._pool[0].pid, signal.SIGKILL)
        with pytest.raises(mpool.WorkerLostError) as info:
            doomed.get(LONG)
        assert info.value.running
        assert [r.get(LONG) for r in behind] == [0, 1, 4, 9, 16]
    finally:
        p.terminate()
        p.join()


def _pool_then_die(conn, method):
    p = cmp.get_context(method).Pool(2)
    p.map(square, range(10))
    conn.send([w.pid for w in p._pool])
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='needs /proc')
@pytest.mark.parametrize('method', ['fork', 'spawn'])
def test_workers_of_a_killed_pool_exit(method):
    ctx = cmp.get_context('fork')
    reader, writer = ctx.Pipe(duplex=False)
    middle = ctx.Process(target=_pool_then_die, args=(writer, method))
    middle.start()
    writer.close()
    pids = reader.recv()
    reader.close()
    middle.join(LONG)
    deadline = time.monotonic() + LONG
    while not all(map(is_gone, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(map(is_gone, pids))


# -- packed map() results ------------------------------------------------------

class MyInt(int):
    pass


def mixed_result(x):
    return x if x < 5 else str(x)


def typed_result(x):
    kinds = {0: True, 1: MyInt(7), 2: 2 ** 70, 3: -2 ** 63, 4: 2 ** 63 - 1,
             5: float('-inf'), 6: -0.0}
    return kinds.get(x, x)


def halves(x):
    return x / 2


def identity(x):
    return x


def test_map_chunk_packs_only_exact_ints_or_floats():
    from _cmultiprocessing import map_chunk, unpack_into
    packed = map_chunk(square, range(5))
    assert type(packed) is bytes
    out = [None] * 7
    unpack_into(packed, out, 1)
    assert out == [None, 0, 1, 4, 9, 16, None]
    assert all(type(v) is int for v in out[1:6])
    floats = map_chunk(halves, [1, 2, -3])
    out = [None] * 3
    unpack_into(floats, out, 0)
    assert out == [0.5, 1.0, -1.5] and all(type(v) is float for v in out)
    # anything else comes back as the list itself, with exact types
    assert map_chunk(mixed_result, range(7)) == [0, 1, 2, 3, 4, '5', '6']
    assert map_chunk(square, []) == []
    for items in ([1, 2.5], [2.5, 1], [1, True], [1, 2 ** 64], [MyInt(3)]):
        got = map_chunk(identity, items)
        assert got == items and type(got) is list
        assert [type(v) for v in got] == [type(v) for v in items]
    assert map_chunk(add, [(1, 2), [3, 4]], True) == \
        b'q' + struct.pack('=2q', 3, 7)


def test_map_chunk_and_unpack_into_reject_bad_input():
    from _cmultiprocessing import map_chunk, unpack_into
    with pytest.raises(TypeError, match='not callable'):
        map_chunk(3, [1])
    with pytest.raises(TypeError):
        map_chunk(square, 5)
    with pytest.raises(TypeError):
        map_chunk(add, [1, 2], True)          # an item that is no sequence
    with pytest.raises(ValueError, match='boom'):
        map_chunk(fail, ['boom'])
    with pytest.raises(TypeError):
        map_chunk(square)
    packed = map_chunk(square, range(3))
    with pytest.raises(TypeError, match='must be a list'):
        unpack_into(packed, (None,) * 3, 0)
    for start in (-1, 1, 4):
        with pytest.raises(ValueError, match='do not fit'):
            unpack_into(packed, [None] * 3, start)
    for bad in (b'', b'x' + bytes(8), b'q' + bytes(7), b'd' + bytes(9)):
        with pytest.raises(ValueError, match='not a packed chunk'):
            unpack_into(bad, [None] * 3, 0)
    with pytest.raises(TypeError):
        unpack_into('q', [None], 0)
    target = [None] * 3
    unpack_into(bytearray(packed), target, 0)     # any bytes-like object
    assert target == [0, 1, 4]


def test_map_results_keep_their_types(pool):
    data = list(range(8))
    expected = [typed_result(x) for x in data]
    for size in (None, 1, 3, 8):
        got = pool.map(typed_result, data, size)
        assert got == expected
        assert [type(v) for v in got] == [type(v) for v in expected]
        assert str(got[6]) == '-0.0'
    assert pool.map(halves, range(1000)) == [x / 2 for x in range(1000)]
    assert pool.map(mixed_result, range(100), 7) == \
        [mixed_result(x) for x in range(100)]
    pairs = [(x, -x) for x in range(300)]
    assert pool.starmap(add, pairs) == [0] * 300
    got = []
    pool.map_async(square, range(50), 6, callback=got.append).get(LONG)
    assert got == [[x * x for x in range(50)]]


def test_a_map_is_shared_among_the_workers(pool):
    # after tiny tasks (the pool then packs many tasks into one batch),
    # every worker still takes part in one map()
    pool.map(square, range(2000), 1)
    pids = set(pool.map(slow_pid, [0.02] * 12, 1))
    assert len(pids) == 3


def test_a_chunk_that_cannot_be_unpacked_fails_the_map(pool, monkeypatch):
    def broken(data, target, start):
        raise ValueError('cannot unpack')
    monkeypatch.setattr(mpool, '_unpack_into', broken)
    with pytest.raises(ValueError, match='cannot unpack'):
        pool.map(square, range(100), 10)
    monkeypatch.undo()
    assert pool.map(square, range(100), 10) == [x * x for x in range(100)]


def square_or_die(x):
    if x == 'die':
        os._exit(3)
    return x * x


def test_a_map_in_paired_batches_survives_bad_tasks_and_lost_workers():
    # after tiny tasks, an idle worker gets two batches of a map() in one
    # message; a task that does not pickle, or a worker that dies, inside
    # such a pair fails the map as it would alone, and the pool goes on
    p = cmp.get_context('fork').Pool(2)
    try:
        warm = list(range(2000))
        assert p.map(square, warm, 1) == [x * x for x in warm]
        sent = []
        for slot in list(p._engine.slots.values()):
            real = slot.tasks.send
            slot.tasks.send = (lambda msg, real=real:
                               sent.append(type(msg)) or real(msg))
        data = list(range(40))
        assert p.map(square, data, 2) == [x * x for x in data]
        assert tuple in sent            # the pairs were used
        bad = data[:25] + [NoPickle()] + data[25:]
        with pytest.raises(RuntimeError, match='cannot pickle NoPickle'):
            p.map(identity, bad, 2)
        assert p.map(square, data, 2) == [x * x for x in data]
        doomed = data[:30] + ['die'] + data[30:]
        with pytest.raises(mpool.WorkerLostError):
            p.map_async(square_or_die, doomed, 2).get(LONG)
        assert p.map(square, data, 2) == [x * x for x in data]
    finally:
        p.terminate()
        p.join()


# -- the C result type (pool_result.c) and the dispatcher's take_tasks -----

class _FakePool(object):
    def __init__(self):
        self._cache = {}


def test_apply_result_protocol_without_a_pool():
    from _cmultiprocessing import deliver
    fake = _FakePool()
    seen = []
    res = mpool.ApplyResult(fake, seen.append, None)
    assert fake._cache == {res._job: res} and res._pool is fake
    assert not res.ready()
    with pytest.raises(ValueError, match='not ready'):
        res.successful()
    with pytest.raises(mpool.TimeoutError):
        res.get(0)
    assert res.wait(0) is None
    # every attribute dir() lists reads (managers.public_methods reads them)
    assert res._value is None and res._success is None
    assert all(hasattr(res, name) for name in dir(res))
    # a result whose job is gone from the cache is skipped
    deliver(fake._cache, [(res._job + 10 ** 9, 0, True, 'nobody'),
                          (res._job, 0, True, 'done')])
    assert seen == ['done'] and res.ready() and res.successful()
    assert res.get() == 'done' and res.get(timeout=None) == 'done'
    assert fake._cache == {} and res._pool is None
    # the failure path, through _set as the engine calls it
    errors = []
    bad = mpool.ApplyResult(fake, seen.append, errors.append)
    exc = KeyError('x')
    bad._set(0, (False, exc))
    assert errors == [exc] and seen == ['done'] and not bad.successful()
    with pytest.raises(KeyError):
        bad.get()
    # a value that is no exception raises TypeError as `raise` would
    odd = mpool.ApplyResult(fake, None, None)
    odd._set(0, (False, 'no exception'))
    with pytest.raises(TypeError, match='BaseException'):
        odd.get()
    # the generic alias, attributes of its own (as a Python class has)
    assert mpool.ApplyResult[int].__origin__ is mpool.ApplyResult
    odd.note = 1
    assert odd.note == 1


def test_apply_result_and_deliver_reject_bad_input():
    from _cmultiprocessing import deliver, take_tasks
    fake = _FakePool()
    with pytest.raises(TypeError):
        mpool.ApplyResult(fake)
    with pytest.raises(AttributeError):
        mpool.ApplyResult(object(), None, None)        # no _cache
    res = mpool.ApplyResult(fake, None, None)
    with pytest.raises(TypeError):
        res._set(0)
    with pytest.raises(ValueError, match='pair'):
        res._set(0, (True, 1, 2))
    with pytest.raises(TypeError):
        res._set(0, 5)
    assert not res.ready()
    for bad in (float('nan'), -1j, 'x'):
        with pytest.raises((TypeError, ValueError)):
            res.get(bad)
    with pytest.raises(TypeError, match='must be a dict'):
        deliver([], [])
    with pytest.raises(TypeError, match='sequence'):
        deliver({}, 5)
    with pytest.raises(TypeError, match='tuple'):
        deliver({}, [(1, 2, 3)])
    with pytest.raises(TypeError, match='must be a list'):
        take_tasks(collections.deque(), (), 5)
    res._set(0, (True, 3))
    with pytest.raises(ValueError, match='NaN'):
        res.get(float('nan'))                          # even when ready
    assert res.get() == 3


def test_take_tasks_moves_tuples_up_to_a_limit():
    from _cmultiprocessing import take_tasks
    marker = object()
    q = collections.deque([(1,), (2,), (3,), marker, (4,)])
    batch = [(0,)]
    assert take_tasks(q, batch, 3) == 2
    assert batch == [(0,), (1,), (2,)] and list(q) == [(3,), marker, (4,)]
    assert take_tasks(q, batch, 10) == 1
    assert list(q) == [marker, (4,)]          # stops at what is no task
    assert take_tasks(q, batch, 10) == 0 and q[0] is marker
    q.popleft()
    assert take_tasks(q, batch, 10) == 1 and not q
    assert take_tasks(q, batch, 10) == 0


def test_a_failing_callback_in_a_batch_spares_the_others(capsys):
    from _cmultiprocessing import deliver
    fake = _FakePool()
    seen = []

    def picky(value):
        if value == 1:
            raise RuntimeError('callback failed on purpose')
        seen.append(value)

    results = [mpool.ApplyResult(fake, picky, None) for _ in range(3)]
    deliver(fake._cache, [(r._job, 0, True, i) for i, r in enumerate(results)])
    assert seen == [0, 2]
    assert all(r.ready() for r in results) and fake._cache == {}
    assert [r.get() for r in results] == [0, 1, 2]
    assert 'callback failed on purpose' in capsys.readouterr().err
    # what is no Exception stops the delivery, as it would stop the thread
    stop = mpool.ApplyResult(fake, lambda v: sys_exit(), None)
    later = mpool.ApplyResult(fake, None, None)
    with pytest.raises(SystemExit):
        deliver(fake._cache, [(stop._job, 0, True, 1),
                              (later._job, 0, True, 2)])
    assert stop.ready() and not later.ready()


def sys_exit():
    raise SystemExit(3)


def test_results_are_released_after_get(pool):
    import weakref

    class Payload(object):
        pass

    res = pool.apply_async(square, (7,))
    assert res.get(timeout=LONG) == 49
    ref = weakref.ref(res)
    assert pool._cache == {}
    del res
    gc.collect()
    assert ref() is None
    # a value is released with its result
    fake = _FakePool()
    r = mpool.ApplyResult(fake, None, None)
    payload = Payload()
    r._set(0, (True, payload))
    ref = weakref.ref(payload)
    del payload, r
    assert ref() is None


def test_a_pending_result_is_collected_with_its_cycle():
    import weakref
    fake = _FakePool()

    class Holder(object):
        def done(self, value):
            pass

    holder = Holder()
    holder.result = mpool.ApplyResult(fake, holder.done, None)
    holder.result.wait(0)                      # makes its waiter's lock
    ref = weakref.ref(holder.result)
    del holder, fake                           # pool -> cache -> result -> ...
    gc.collect()
    assert ref() is None


def test_get_waits_in_another_thread_and_wakes_every_waiter():
    fake = _FakePool()
    res = mpool.ApplyResult(fake, None, None)
    got = []
    started = threading.Barrier(4)

    def wait_for_it():
        started.wait(LONG)
        got.append(res.get(timeout=LONG))

    threads = [threading.Thread(target=wait_for_it) for _ in range(3)]
    for t in threads:
        t.start()
    started.wait(LONG)
    res._set(0, (True, 'x'))
    for t in threads:
        t.join(LONG)
    assert got == ['x'] * 3


def test_callbacks_run_in_the_collector_thread_in_order(pool):
    threads, values = [], []

    def note(value):
        threads.append(threading.current_thread().name)
        values.append(value)

    results = [pool.apply_async(square, (i,), callback=note)
               for i in range(200)]
    assert [r.get(timeout=LONG) for r in results] == \
        [i * i for i in range(200)]
    assert sorted(values) == [i * i for i in range(200)]
    assert set(threads) == {'PoolCollector'}


def test_a_map_of_no_items_is_ready_at_once(pool):
    seen = []
    res = pool.map_async(square, [], callback=seen.append)
    assert res.ready() and res.get(timeout=LONG) == []
    assert res._job not in pool._cache
