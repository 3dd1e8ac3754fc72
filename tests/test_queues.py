"""Unit tests of cmultiprocessing.queues (Queue, JoinableQueue, SimpleQueue).

Every test counts the messages that arrive: each one put must come out
exactly once, in order for a single producer, except those the feeder-error
hook reports as dropped.
"""
import os
import pickle
import queue as pyqueue
import sys
import threading
import types
import contextlib

import pytest

import cmultiprocessing as cmp
from cmultiprocessing import queues

CTX = cmp.get_context("fork")
SHORT = 0.05
LONG = 60.0            # generous bound for things that must happen


def closing(q):
    """Close a queue at the end of a with block, waiting for its feeder."""
    @contextlib.contextmanager
    def manage():
        try:
            yield q
        finally:
            q.close()
            if isinstance(q, queues.Queue):
                q.join_thread()
    return manage()


class Unpicklable:
    """Pickling raises from __reduce__."""

    def __init__(self):
        self.reduced = False

    def __reduce__(self):
        self.reduced = True
        raise AttributeError("no pickling for you")


class RecordingQueue(queues.Queue):
    """Queue whose feeder-error hook records instead of printing."""
    reported = []

    @staticmethod
    def _on_queue_feeder_error(e, obj):
        RecordingQueue.reported.append((type(e), obj))


def recording_queue(maxsize=0):
    RecordingQueue.reported = []
    return RecordingQueue(maxsize, ctx=CTX)


SAMPLES = [
    None, True, False, 0, 1, 255, 256, 65535, 65536, -1, -2**31, 2**31 - 1,
    2**31, -2**31 - 1, 2**100, -2**100, 0.0, -0.0, 1.5, float("inf"),
    b"", b"x", b"y" * 255, b"z" * 256, b"w" * 5000, b"v" * 200000,
    "", "a", "é" * 100, "\u20ac" * 300, "s" * 100000, "\udc80bad",
    (1, 2), [1, "two", 3.0], {"k": [None]}, {1, 2}, bytearray(b"ba"),
    True is True, 10**30, types.SimpleNamespace(a=1),
]


# --------------------------------------------------------------------------
# round trips and the wire format

def test_round_trip_in_order():
    q = CTX.Queue()
    with closing(q):
        for obj in SAMPLES:
            q.put(obj)
        got = [q.get(timeout=LONG) for _ in SAMPLES]
        assert got == SAMPLES
        assert [type(x) for x in got] == [type(x) for x in SAMPLES]
        with pytest.raises(pyqueue.Empty):
            q.get_nowait()


def test_frames_are_connection_frames():
    # what put() writes is what Connection.recv() reads, and back
    q = CTX.Queue()
    with closing(q):
        for obj in SAMPLES:
            q.put(obj)
        got = [q._reader.recv() for _ in SAMPLES]
        assert got == SAMPLES
        small = [o for o in SAMPLES if len(pickle.dumps(o)) < 30000]
        for obj in small:              # one at a time: send() may block
            q._writer.send(obj)
            assert q.get(timeout=LONG) == obj


def test_direct_encodings_are_valid_pickles():
    # the payloads put() writes itself must mean the same to pickle.loads
    q = CTX.Queue()
    with closing(q):
        for obj in SAMPLES:
            q.put(obj)
            payload = q._reader.recv_bytes()
            assert pickle.loads(payload) == obj


def test_simple_queue_round_trip():
    # SimpleQueue.put blocks while the pipe is full: keep under its size
    small = [o for o in SAMPLES if len(pickle.dumps(o)) < 1000]
    q = CTX.SimpleQueue()
    try:
        assert q.empty()
        for obj in small:
            q.put(obj)
        assert not q.empty()
        assert [q.get() for _ in small] == small
        big = b"B" * 300000
        t = threading.Thread(target=q.put, args=(big,))
        t.start()
        assert q.get() == big
        t.join()
        assert q.empty()
    finally:
        q.close()
    q.close()   # twice is fine
    assert q._reader.closed and q._writer.closed
    with pytest.raises(OSError):
        q.get()
    with pytest.raises(OSError):
        q.put(1)


def test_simple_queue_put_raises_pickling_errors():
    q = CTX.SimpleQueue()
    try:
        with pytest.raises(AttributeError):
            q.put(Unpicklable())
        q.put("after")
        assert q.get() == "after"
        assert q.empty()
    finally:
        q.close()


# --------------------------------------------------------------------------
# objects that cannot be sent

def test_unpicklable_object_reported_and_dropped():
    q = recording_queue()
    with closing(q):
        q.put(lambda: None)          # pickle cannot find a lambda
        q.put("next")
        assert q.get(timeout=LONG) == "next"
        assert q.empty()
    assert len(RecordingQueue.reported) == 1
    assert issubclass(RecordingQueue.reported[0][0], pickle.PicklingError) \
        or issubclass(RecordingQueue.reported[0][0], AttributeError)


def test_pickling_error_keeps_queue_size_right():
    q = recording_queue(maxsize=1)
    with closing(q):
        bad = Unpicklable()
        q.put(bad)
        assert bad.reduced
        assert RecordingQueue.reported == [(AttributeError, bad)]
        assert q.qsize() == 0
        q.put(True, timeout=LONG)     # the unit came back: no Full here
        assert q.qsize() == 1
        assert q.get(timeout=LONG) is True
        assert q.empty() and q.qsize() == 0


def test_default_hook_prints_the_traceback(capsys):
    q = CTX.Queue()
    with closing(q):
        q.put(Unpicklable())
        q.put(1)
        assert q.get(timeout=LONG) == 1
    err = capsys.readouterr().err
    assert "AttributeError" in err and "no pickling for you" in err


def test_keyboard_interrupt_while_pickling_propagates():
    class Interrupting:
        def __reduce__(self):
            raise KeyboardInterrupt
    q = recording_queue(maxsize=1)
    with closing(q):
        with pytest.raises(KeyboardInterrupt):
            q.put(Interrupting())
        assert RecordingQueue.reported == []
        q.put_nowait(2)              # the size unit was given back
        assert q.get(timeout=LONG) == 2


def test_broken_pipe_is_reported_or_ignored():
    q = recording_queue()
    with closing(q):
        q._reader.close()            # no reader left anywhere
        q.put("lost")
        assert RecordingQueue.reported == [(BrokenPipeError, "lost")]
    q = recording_queue()
    q._ignore_epipe = True
    with closing(q):
        q._reader.close()
        q.put("lost")
        assert RecordingQueue.reported == []


def test_a_closed_pipe_end_fails_as_its_fileno_does():
    # the queue reads its pipe's handle straight from its own Connection
    # (no fileno() call): a closed end still fails with fileno()'s
    # OSError, on the reading side at every form of get(), and on the
    # writing side through the feeder-error hook
    q = recording_queue()
    with closing(q):
        q.put(1)
        q._reader.close()
        for get in (lambda: q.get(), lambda: q.get(timeout=SHORT),
                    lambda: q.get(False), lambda: q.get_many(
                        max_messages_to_get=2)):
            with pytest.raises(OSError, match="handle is closed"):
                get()
    q = recording_queue()
    with closing(q):
        q._writer.close()
        q.put("x")
    assert [(t, o) for t, o in RecordingQueue.reported] == [(OSError, "x")]


# --------------------------------------------------------------------------
# sizes, timeouts, close

def test_maxsize_full_and_timeouts():
    q = CTX.Queue(maxsize=2)
    with closing(q):
        assert q.empty() and not q.full()
        q.put(1)
        q.put(2)
        assert q.full() and q.qsize() == 2
        with pytest.raises(pyqueue.Full):
            q.put(3, block=False)
        with pytest.raises(pyqueue.Full):
            q.put_nowait(3)
        with pytest.raises(pyqueue.Full):
            q.put(3, True, SHORT)
        with pytest.raises(pyqueue.Full):
            q.put(3, timeout=SHORT)
        assert q.get() == 1
        q.put(3, timeout=LONG)
        assert [q.get(), q.get()] == [2, 3]
        with pytest.raises(pyqueue.Empty):
            q.get(timeout=SHORT)
        with pytest.raises(pyqueue.Empty):
            q.get(True, 0)
        with pytest.raises(pyqueue.Empty):
            q.get(False)
        with pytest.raises(pyqueue.Empty):
            q.get_nowait()
        with pytest.raises(pyqueue.Empty):
            q.get(True, -1)


def test_blocked_put_resumes_when_room_appears():
    q = CTX.Queue(maxsize=1)
    taken = []
    with closing(q):
        q.put("a")
        t = threading.Thread(
            target=lambda: taken.extend(q.get(timeout=LONG) for _ in "ab"))
        t.start()
        q.put("b", timeout=LONG)      # waits for the thread's first get
        q.put("c", timeout=LONG)      # and this one for its second
        t.join()
        assert taken == ["a", "b"]
        assert q.get(timeout=LONG) == "c"
        assert q.empty()


def test_close_semantics():
    q = CTX.Queue()
    q.put("x")
    with pytest.raises(AssertionError):
        q.join_thread()               # not closed yet
    q.close()
    q.close()
    q.join_thread()
    with pytest.raises(ValueError, match="is closed"):
        q.put("y")
    with pytest.raises(ValueError, match="is closed"):
        q.get()
    with pytest.raises(ValueError, match="is closed"):
        q.get_nowait()
    jq = CTX.JoinableQueue()
    jq.close()
    with pytest.raises(ValueError, match="is closed"):
        jq.put("y")


def test_bad_arguments():
    q = CTX.Queue()
    with closing(q):
        with pytest.raises(TypeError):
            q.put()
        with pytest.raises(TypeError):
            q.put(1, colour="red")
        with pytest.raises(TypeError):
            q.put(1, True, None, "extra")
        with pytest.raises(TypeError):
            q.put(1, obj=2)
        with pytest.raises(TypeError):
            q.get(timeout="soon")
        with pytest.raises(TypeError):
            q.get(True, None, 3)
        with pytest.raises(ValueError):
            q.get(timeout=float("nan"))
        assert q.empty()              # nothing was put by the bad calls


def test_unset_up_subclass_raises():
    class Raw(queues.Queue):
        def __init__(self):
            pass
    r = Raw()
    with pytest.raises(RuntimeError):
        r.put(1)
    with pytest.raises(RuntimeError):
        r.get()


def test_pickling_outside_spawning_is_refused():
    q = CTX.Queue()
    with closing(q):
        with pytest.raises(RuntimeError):
            pickle.dumps(q)
    s = CTX.SimpleQueue()
    try:
        with pytest.raises(RuntimeError):
            pickle.dumps(s)
    finally:
        s.close()


def test_class_getitem():
    assert isinstance(queues.Queue[int], types.GenericAlias)
    assert isinstance(queues.JoinableQueue[int], types.GenericAlias)
    if sys.version_info >= (3, 12):
        assert isinstance(queues.SimpleQueue[int], types.GenericAlias)


# --------------------------------------------------------------------------
# the pipe filling up

def test_put_does_not_block_on_a_full_pipe():
    big = b"q" * 65536
    q = CTX.Queue()
    with closing(q):
        for i in range(100):          # ~6.5 MB: far more than a pipe holds
            q.put((i, big) if i % 2 else big + bytes([i]))
        assert q._feed.pending > 0
        for i in range(100):
            got = q.get(timeout=LONG)
            assert got == ((i, big) if i % 2 else big + bytes([i]))
        assert q.empty()


def test_order_kept_across_direct_and_buffered_writes():
    q = CTX.Queue()
    with closing(q):
        expected = []
        for i in range(3000):
            obj = b"x" * 40000 if i % 97 == 0 else i
            expected.append(obj)
            q.put(obj)
        assert [q.get(timeout=LONG) for _ in expected] == expected


def _late_reader(q, go, n, blob):
    go.wait(LONG)
    got = [q.get(timeout=LONG) for _ in range(n)]
    sys.exit(0 if got == [(i, blob) for i in range(n)] else 2)


def test_close_flushes_pending_before_join_returns():
    q = CTX.Queue()
    go = CTX.Event()
    blob = b"p" * 300000
    reader = CTX.Process(target=_late_reader, args=(q, go, 20, blob))
    reader.start()
    for i in range(20):
        q.put((i, blob))
    assert q._feed.pending > 0        # most of the 6 MB is still here
    q.close()
    go.set()
    q.join_thread()                   # returns once all of it is written
    assert q._feed.pending == 0
    reader.join(LONG)
    assert reader.exitcode == 0


# --------------------------------------------------------------------------
# between processes

def _produce(q, start, count, payload):
    for i in range(start, start + count):
        q.put((i, payload))
    # returning right away: the feeder must still deliver everything


def _consume(q, count, out):
    got = [q.get(timeout=LONG) for _ in range(count)]
    out.put(got)


@pytest.mark.parametrize("payload", [b"", b"m" * 70000])
def test_producer_that_exits_right_after_put(payload):
    q = CTX.Queue()
    with closing(q):
        p = CTX.Process(target=_produce, args=(q, 0, 60, payload))
        p.start()
        got = [q.get(timeout=LONG) for _ in range(60)]
        p.join(LONG)
        assert p.exitcode == 0
        assert got == [(i, payload) for i in range(60)]
        assert q.empty()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_four_producers_two_consumers_exactly_once(method):
    ctx = cmp.get_context(method)
    q = ctx.Queue(maxsize=50)
    out = ctx.Queue()
    n = 500
    payload = b"k" * 3000
    producers = [ctx.Process(target=_produce, args=(q, k * n, n, payload))
                 for k in range(4)]
    consumers = [ctx.Process(target=_consume, args=(q, 2 * n, out))
                 for _ in range(2)]
    for p in producers + consumers:
        p.start()
    got = out.get(timeout=LONG) + out.get(timeout=LONG)
    for p in producers + consumers:
        p.join(LONG)
        assert p.exitcode == 0
    assert sorted(i for i, _ in got) == list(range(4 * n))
    assert all(data == payload for _, data in got)
    for k in range(4):               # each producer's items stay in order
        mine = [i for i, _ in got if k * n <= i < (k + 1) * n]
        assert len(mine) == n
    q.close()
    q.join_thread()
    out.close()
    out.join_thread()


def test_threads_put_concurrently_exactly_once():
    q = CTX.Queue()
    with closing(q):
        def work(k):
            for i in range(2000):
                q.put((k, i) if i % 50 else (k, i, b"t" * 9000))
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        got = [q.get(timeout=LONG) for _ in range(8000)]
        for t in threads:
            t.join()
        for k in range(4):
            mine = [g[1] for g in got if g[0] == k]
            assert mine == list(range(2000))


def _child_puts_after_fork(q):
    for i in range(10, 20):
        q.put(i)


def test_fork_does_not_resend_parent_buffer():
    q = CTX.Queue()
    with closing(q):
        big = b"f" * 3000000          # more than even a grown pipe holds
        q.put(big)                    # leaves frames pending in the feed
        for i in range(10):
            q.put(i)
        p = CTX.Process(target=_child_puts_after_fork, args=(q,))
        p.start()
        got = [q.get(timeout=LONG) for _ in range(21)]
        p.join(LONG)
        assert got[0] == big
        # each producer's messages once and in its order; between the two
        # the order is the writer lock's (the child may win it as soon as
        # the big message is through, as with the stdlib's feeders)
        assert [x for x in got[1:] if x < 10] == list(range(10))
        assert [x for x in got[1:] if x >= 10] == list(range(10, 20))
        with pytest.raises(pyqueue.Empty):
            q.get(timeout=SHORT)


def _simple_child(sq, n):
    for i in range(n):
        sq.put(i)
    sq.put(sq.empty() in (True, False))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_simple_queue_between_processes(method):
    ctx = cmp.get_context(method)
    sq = ctx.SimpleQueue()
    try:
        p = ctx.Process(target=_simple_child, args=(sq, 500))
        p.start()
        got = [sq.get() for _ in range(501)]
        p.join(LONG)
        assert p.exitcode == 0
        assert got == list(range(500)) + [True]
    finally:
        sq.close()


def _worker(jq):
    for _item in iter(jq.get, None):
        jq.task_done()
    jq.task_done()


def test_joinable_queue_task_done_and_join():
    jq = CTX.JoinableQueue()
    workers = [CTX.Process(target=_worker, args=(jq,)) for _ in range(3)]
    for w in workers:
        w.start()
    for i in range(100):
        jq.put(i)
    jq.join()                         # all 100 processed
    for _ in workers:
        jq.put(None)
    jq.join()
    for w in workers:
        w.join(LONG)
        assert w.exitcode == 0
    with pytest.raises(ValueError, match="too many times"):
        jq.task_done()
    jq.close()
    jq.join_thread()


def test_bind_rejects_bad_arguments():
    q = CTX.Queue()
    with closing(q):
        with pytest.raises(TypeError):
            q._bind(q._reader)
        with pytest.raises(TypeError):
            q._bind(q._reader, q._writer, q._rlock, q._wlock, q._sem,
                    "not callable", pickle.loads)
        with pytest.raises(TypeError):
            q._bind(q._reader, q._writer, None, q._wlock, q._sem,
                    pickle.dumps, pickle.loads)
        q.put(1)                        # still bound as before
        assert q.get(timeout=LONG) == 1


# --------------------------------------------------------------------------
# long messages: the pipe buffer and the one-read body

def _pipe_size(conn):
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        pytest.skip("no F_GETPIPE_SZ here")
    return fcntl.fcntl(conn.fileno(), fcntl.F_GETPIPE_SZ)


def _pipe_max():
    try:
        with open("/proc/sys/fs/pipe-max-size") as f:
            return int(f.read())
    except OSError:
        pytest.skip("no /proc/sys/fs/pipe-max-size")


def _may_grow(want):
    import fcntl
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, want)
        return True
    except OSError:
        return False
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("kind", ["Queue", "SimpleQueue"])
def test_long_message_grows_the_pipe_small_ones_do_not(kind, monkeypatch):
    # the pipe transport (queues without a ring: macOS, Windows, or
    # CMP_QUEUE_RING=0; a ring's queue never grows its pipe)
    monkeypatch.setenv("CMP_QUEUE_RING", "0")
    import gc
    gc.collect()        # queues of earlier tests give back their budget
    want = min(1 << 20, _pipe_max())
    small, big = getattr(CTX, kind)(), getattr(CTX, kind)()
    try:
        before = _pipe_size(small._writer)
        for i in range(50):
            small.put(i)
        assert [small.get() for _ in range(50)] == list(range(50))
        assert _pipe_size(small._writer) == before
        blob = b"g" * 70000
        big.put(blob)
        assert big.get() == blob
        # both ends see the one buffer, as large as asked for wherever this
        # process may have a pipe that large (the per-user budget allows)
        assert _pipe_size(big._reader) >= (want if _may_grow(want) else before)
        # a long message now fits: several go in before anyone reads
        # (in a thread: SimpleQueue.put waits while the pipe is full)
        if _pipe_size(big._writer) >= 6 * 70100:
            t = threading.Thread(target=lambda: [big.put(blob + bytes([i]))
                                                 for i in range(5)],
                                 daemon=True)
            t.start()
            t.join(LONG)
            assert not t.is_alive()
            if kind == "Queue":
                assert big._feed.pending == 0      # no feeder was needed
            assert [big.get() for _ in range(5)] == [blob + bytes([i])
                                                      for i in range(5)]
    finally:
        for q in (small, big):
            q.close()
            if isinstance(q, queues.Queue):
                q.join_thread()


def _send_raw(q, payload):
    # a frame from outside put(): take the unit of room get() gives back
    assert q._sem.acquire(timeout=LONG)
    q._writer.send_bytes(payload)


def test_long_frames_read_in_one_piece_decode_like_pickle():
    # long payloads of every shape the one-read path looks at: bytes and
    # str written by put(), and frames written by other picklers or by
    # hand that only look similar -- each must come out as pickle.loads
    # makes it
    n = 5000
    utf8 = "é" * n
    surrogates = "\udc80" * n
    hand_str = (b"\x80\x04X" + (3 * n).to_bytes(4, "little") +
                b"\xed\xb2\x80" * n + b".")      # surrogatepass UTF-8
    hand_bytes_bad_len = (b"\x80\x04B" + (n + 1).to_bytes(4, "little") +
                          b"b" * n + b".")        # not a valid pickle
    q = CTX.Queue()
    with closing(q):
        for obj in (b"b" * n, utf8, surrogates, (1, b"t" * n), [utf8]):
            q.put(obj)
            assert q.get(timeout=LONG) == obj
        for obj in (b"b" * n, utf8, bytearray(n)):
            _send_raw(q, pickle.dumps(obj, protocol=5))
            assert q.get(timeout=LONG) == obj
        _send_raw(q, hand_str)
        assert q.get(timeout=LONG) == pickle.loads(hand_str) == surrogates
        with pytest.raises(Exception) as expected:
            pickle.loads(hand_bytes_bad_len)
        _send_raw(q, hand_bytes_bad_len)
        with pytest.raises(expected.type):
            q.get(timeout=LONG)
        q.put("after")                           # the stream is still in step
        assert q.get(timeout=LONG) == "after"


def test_end_of_file_inside_a_long_frame():
    q = CTX.Queue()
    with closing(q):
        frame = pickle.dumps(b"e" * 5000, protocol=4)
        # a header that promises more than the writer sends before closing
        os.write(q._writer.fileno(),
                 len(frame).to_bytes(4, "big") + frame[:3000])
        q._writer.close()
        with pytest.raises(OSError, match="end of file"):
            q.get(timeout=LONG)


# --------------------------------------------------------------------------
# the pickler a queue keeps between puts

class Point:
    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return type(other) is Point and other.x == self.x


class Tagged:
    """Pickled as a (class, args) pair naming a module-level function."""
    def __init__(self, tag):
        self.tag = tag


def _rebuild_tagged(tag):
    return ("rebuilt", tag)


def test_kept_pickler_sees_reducers_registered_later():
    import copyreg
    q = CTX.Queue()
    with closing(q):
        q.put(Point(1))                       # the pickler is made here
        assert q.get(timeout=LONG) == Point(1)
        cmp.reduction.ForkingPickler.register(
            Tagged, lambda t: (_rebuild_tagged, (t.tag,)))
        try:
            q.put(Tagged("a"))
            assert q.get(timeout=LONG) == ("rebuilt", "a")
        finally:
            del cmp.reduction.ForkingPickler._extra_reducers[Tagged]
        copyreg.pickle(Tagged, lambda t: (_rebuild_tagged, ("c" + t.tag,)))
        try:
            q.put(Tagged("b"))
            assert q.get(timeout=LONG) == ("rebuilt", "cb")
        finally:
            del copyreg.dispatch_table[Tagged]
        q.put(Point(2))
        assert q.get(timeout=LONG) == Point(2)


def test_kept_pickler_forgets_each_object():
    import gc
    import weakref
    q = CTX.Queue()
    with closing(q):
        p = Point([1, 2])
        ref = weakref.ref(p)
        q.put(p)
        q.put(Point([1, 2]))                 # equal, not the same: no memo hit
        del p
        gc.collect()
        assert ref() is None
        assert q.get(timeout=LONG) == q.get(timeout=LONG) == Point([1, 2])


class PutsWhilePickled:
    """Its reducer puts another object on the same queue."""
    def __init__(self, q, inner):
        self.q, self.inner = q, inner

    def __reduce__(self):
        self.q.put(self.inner)
        return (Point, ("outer",))


def test_put_from_inside_a_reducer():
    q = CTX.Queue()
    with closing(q):
        q.put(PutsWhilePickled(q, Point("inner")))
        assert q.get(timeout=LONG) == Point("inner")
        assert q.get(timeout=LONG) == Point("outer")
        q.put(Point(3))                       # and the kept one still works
        assert q.get(timeout=LONG) == Point(3)


class SlowToReduce:
    """Lets other threads run in the middle of its pickling."""
    def __init__(self, k, i):
        self.k, self.i = k, i

    def __reduce__(self):
        import time
        time.sleep(0)
        return (tuple, ((self.k, self.i),))


def test_threads_pickling_at_once_exactly_once():
    q = CTX.Queue()
    with closing(q):
        def work(k):
            for i in range(300):
                q.put(SlowToReduce(k, i))
        ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        got = [q.get(timeout=LONG) for _ in range(1200)]
        for t in ts:
            t.join()
        for k in range(4):
            assert [i for kk, i in got if kk == k] == list(range(300))


def test_failed_pickle_leaves_no_trace_in_the_next():
    q = recording_queue()
    with closing(q):
        q.put(Point(1))
        bad = Unpicklable()
        q.put([Point(2), bad])                # fails half way through
        q.put(Point(3))
        assert q.get(timeout=LONG) == Point(1)
        assert q.get(timeout=LONG) == Point(3)
        assert [kind for kind, _ in RecordingQueue.reported] == [
            AttributeError]


def test_bind_pickler_argument():
    q = CTX.Queue()
    with closing(q):
        fp = cmp.reduction.ForkingPickler
        args = (q._reader, q._writer, q._rlock._semlock, q._wlock._semlock,
                q._sem._semlock, fp.dumps, fp.loads)
        with pytest.raises(TypeError):
            q._bind(*args, "not a class")
        with pytest.raises(TypeError):
            q._bind(*args, fp, q._ring, False, "one too many")
        with pytest.raises(ValueError, match="counted queue"):
            q._bind(*args, fp, q._ring, True)       # and a size semaphore
        with pytest.raises(ValueError, match="counted queue"):
            q._bind(*args[:4], None, *args[5:], fp, None, True)  # no ring
        with pytest.raises(TypeError):
            q._bind(*args, fp, "not a buffer")   # the ring's block
        for pickler in (None, pickle.Pickler, fp):  # none kept / no tables / kept
            q._bind(*args, pickler)
            q.put(Point(pickler))
            assert q.get(timeout=LONG) == Point(pickler)


def test_one_pickler_for_many_puts():
    fp = cmp.reduction.ForkingPickler

    class Counting(fp):
        made = 0

        def __init__(self, *args, **kwds):
            Counting.made += 1
            super().__init__(*args, **kwds)

        @classmethod
        def dumps(cls, obj, protocol=None):
            return super().dumps(obj, protocol)

    q = CTX.Queue()
    with closing(q):
        q._bind(q._reader, q._writer, q._rlock._semlock, q._wlock._semlock,
                q._sem._semlock, Counting.dumps, Counting.loads, Counting)
        for i in range(20):
            q.put(Point(i))
        assert [q.get(timeout=LONG) for _ in range(20)] == [
            Point(i) for i in range(20)]
        assert Counting.made == 1
        fp.register(Tagged, lambda t: (_rebuild_tagged, (t.tag,)))
        try:
            q.put(Point(0))                   # tables changed: a new one
            assert q.get(timeout=LONG) == Point(0)
            assert Counting.made == 2
        finally:
            del fp._extra_reducers[Tagged]


_EXIT_SCRIPT = r"""
import sys
import cmultiprocessing as cmp

def consume(q, n, path, started, go):
    started.set()
    go.wait(60)
    got = [q.get(timeout=60) for _ in range(n)]
    ok = got == [(i, b"x" * 200000) for i in range(n)]
    with open(path, "w") as f:
        f.write("ok" if ok else "bad")

if __name__ == "__main__":
    ctx = cmp.get_context(sys.argv[1])
    q = ctx.Queue()
    started, go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=consume, args=(q, 40, sys.argv[2], started, go))
    p.start()
    # (a spawned child must have unpickled its arguments before this
    # process exits and its semaphores go: so it is with the stdlib too)
    assert started.wait(60)
    for i in range(40):          # 8 MB: most of it still in this process
        q.put((i, b"x" * 200000))
    assert q._feed.pending > 0
    go.set()
    # no close(), no join: the interpreter exits here
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_main_process_exit_flushes_what_put_buffered(tmp_path, method):
    import subprocess
    script = tmp_path / "main_exits.py"
    script.write_text(_EXIT_SCRIPT)
    result = tmp_path / "result"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in sys.path if p))
    proc = subprocess.run([sys.executable, str(script), method, str(result)],
                          env=env, timeout=LONG, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert result.read_text() == "ok"


def test_feeder_batches_of_mixed_sizes_keep_order():
    # the feeder copies short pieces together and writes long ones in
    # place: sizes around the boundary, a backlog well past the pipe's size
    # (so frames are cut at every place), all in order, exactly once
    sizes = [0, 1, 255, 256, 1000, 1017, 1018, 1019, 1023, 1024, 1025,
             1100, 5000, 70000, 300000]
    expected = []
    for i in range(1200):
        n = sizes[i % len(sizes)]
        obj = bytes([i % 251]) * n if i % 3 else (i, "s" * n)
        expected.append(obj)
    q = CTX.Queue()
    with closing(q):
        for obj in expected:
            q.put(obj)
        assert q._feed.pending > 0
        assert [q.get(timeout=LONG) for _ in expected] == expected
        assert q.empty()


_BUDGET_SCRIPT = r"""
import fcntl, gc
import cmultiprocessing as cmp

def size(q):
    return fcntl.fcntl(q._writer.fileno(), fcntl.F_GETPIPE_SZ)

ctx = cmp.get_context("fork")
blob = b"b" * 40000      # long enough to grow, short enough to fit
queues = []
for i in range(20):
    q = ctx.SimpleQueue()
    q.put(blob)
    assert q.get() == blob
    queues.append(q)
grown = [size(q) > 65536 for q in queues]
print(sum(grown), grown.index(False))
for q in queues[:4]:
    q.close()
del q, queues[:4]
gc.collect()
late = ctx.SimpleQueue()
late.put(blob)
assert late.get() == blob
print(size(late) > 65536)
"""


def test_pipes_grown_within_a_budget(tmp_path):
    import subprocess
    want = min(1 << 20, _pipe_max())
    if want < (1 << 20) or not _may_grow(want):
        pytest.skip("pipes cannot grow to 1 MiB here")
    script = tmp_path / "budget.py"
    script.write_text(_BUDGET_SCRIPT)
    env = dict(os.environ, CMP_QUEUE_RING="0", PYTHONPATH=os.pathsep.join(
        p for p in sys.path if p))
    proc = subprocess.run([sys.executable, str(script)], env=env,
                          timeout=LONG, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # 16 MiB for the pipes of one process: the first 16 grow, then none,
    # until queues that grew theirs are gone
    assert proc.stdout.split() == ["16", "16", "True"]


def _drain_into(q, n, out):
    out.put([(k, i, len(b)) for k, i, b in
             (q.get(timeout=LONG) for _ in range(n))])


def test_threads_putting_while_the_feeder_waits_for_the_gil():
    # several threads put long messages while the feeder is behind: puts
    # hand the GIL over to the feeder (one at a time), none is lost
    q, out = CTX.Queue(), CTX.Queue()
    blob = b"h" * 100000
    reader = CTX.Process(target=_drain_into, args=(q, 600, out))
    reader.start()
    try:
        def work(k):
            for i in range(200):
                q.put((k, i, blob))
        ts = [threading.Thread(target=work, args=(k,)) for k in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(LONG)
        got = out.get(timeout=LONG)
        for k in range(3):                # each thread's own order kept
            assert [m for m in got if m[0] == k] == [
                (k, i, len(blob)) for i in range(200)]
        assert len(got) == 600
    finally:
        reader.join(LONG)
        for qq in (q, out):
            qq.close()
            qq.join_thread()
    assert reader.exitcode == 0


# -- put() when no thread can start; failed pickles and reference cycles ----

@pytest.mark.timeout(60)
def test_put_raises_when_the_feeder_cannot_start(monkeypatch):
    # gh-109047: at interpreter shutdown a thread cannot start; the stdlib's
    # put() starts its feeder and so raises, and concurrent.futures breaks
    # its pool on that.  Ours raises too, though the pipe has room, and
    # keeps nothing of the message.
    def refuse(self):
        raise RuntimeError("can't create new thread at interpreter shutdown")
    q = CTX.Queue(1)
    with monkeypatch.context() as m:
        m.setattr(threading.Thread, "start", refuse)
        with pytest.raises(RuntimeError, match="interpreter shutdown"):
            q.put("lost")
    with closing(q):
        assert q.empty()
        q.put("kept", timeout=LONG)  # the size unit came back: no Full
        assert q.get(timeout=LONG) == "kept"


@pytest.mark.timeout(60)
def test_failed_pickle_makes_no_reference_cycle():
    # concurrent.futures' hook gives the exception to the work item's
    # future, which the frame calling put() holds: the exception must not
    # lead back to that frame, or the queue's semaphores wait for the
    # cyclic collector.  Everything here is freed by reference counting.
    import gc
    import traceback
    import weakref

    class Holder:
        exc = None

    def caller():
        q = CTX.Queue()
        holder = Holder()           # the work item, held by this frame
        pending = {"item": holder}  # the hook finds it as the pool's does

        def hook(e, obj):
            item = pending.pop("item")
            item.exc = e
            item.text = "".join(traceback.format_exception(e))
        q._on_queue_feeder_error = hook
        q.put(Unpicklable())
        frames = [f.f_code.co_name
                  for f, _ in traceback.walk_tb(holder.exc.__traceback__)]
        refs = [weakref.ref(x) for x in (q, q._sem, q._wlock, holder)]
        with closing(q):
            pass
        return refs, frames, holder.text

    enabled = gc.isenabled()
    gc.disable()
    try:
        refs, frames, text = caller()
        alive = [r() is not None for r in refs]
    finally:
        if enabled:
            gc.enable()
    # the hook saw the exception with the frames that failed to pickle
    assert "__reduce__" in frames
    assert "no pickling for you" in text
    assert alive == [False, False, False, False]
