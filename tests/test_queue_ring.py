"""The queues' shared-memory ring (Modules/ring.h) and the batched calls
(get_many/put_many, faster-fifo's names).

The ring carries the same byte stream as the pipe, so the queue tests of
test_queues.py and test_queue_faults.py run over it already; these are the
ring's own cases: messages longer than the ring, leaving the ring for the
pipe when ``_reader``/``_writer`` are handed out (with messages still in
the ring, and with a writer blocked on a full ring), and the knob."""
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

import _cmultiprocessing
import cmultiprocessing

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not _cmultiprocessing.QUEUE_RING_BYTES,
                       reason="no shared-memory ring on this platform"),
]

RING = _cmultiprocessing.QUEUE_RING_BYTES
KINDS = ["Queue", "SimpleQueue", "JoinableQueue"]


def _produce(q, items):
    for item in items:
        q.put(item)


def _items():
    # small ones, ones about as long as the ring, and longer ones, mixed
    out = []
    for i in range(300):
        out.append(i)
        if i % 50 == 7:
            out.append(bytes([i % 256]) * (RING // 2 + i))
        if i % 100 == 42:
            out.append(("long", b"z" * (3 * RING + i)))
    return out


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("kind", ["Queue", "SimpleQueue"])
def test_messages_through_the_ring_in_order(kind, method):
    ctx = cmultiprocessing.get_context(method)
    q = getattr(ctx, kind)()
    assert q._ring is not None
    items = _items()
    p = ctx.Process(target=_produce, args=(q, items))
    p.start()
    got = [q.get() for _ in items]
    p.join(30)
    assert p.exitcode == 0
    assert got == items
    q.close()


@pytest.mark.parametrize("kind", ["Queue", "SimpleQueue"])
def test_small_messages_cut_by_the_ring_s_end_at_every_place(kind):
    # A small message that is whole in the ring is taken header and body
    # at once (Modules/frame.c, cmp_wire_take_whole); here such frames
    # straddle the ring's end at every offset.  Bytes of 6 and 8 take
    # 15- and 17-byte frames (4 of header, 5 of pickle around the data),
    # and the ring's 2**18 bytes are 4 more than a multiple of either, so
    # each lap moves the cut 4 bytes on: 15 (17) laps cut a frame at each
    # of its offsets, the header's among them.
    cap = 1 << (RING.bit_length() - 1)
    q = getattr(cmultiprocessing.get_context("fork"), kind)()
    for length in (6, 8):
        frame = 4 + 5 + length
        for i in range(cap + 2 * frame):     # cap frames: `frame` laps
            item = bytes([i % 251]) * length
            q.put(item)
            got = q.get()
            if got != item:
                pytest.fail("message %d: %r for %r" % (i, got, item))
    q.close()


@pytest.mark.parametrize("kind", KINDS)
def test_reader_handed_out_moves_the_ring_into_the_pipe(kind):
    q = getattr(cmultiprocessing, kind)()
    for i in range(100):
        q.put(i)
    time.sleep(0.1)                # Queue: every put has gone in
    reader = q._reader             # leaves the ring, in every process
    assert reader.poll(5)
    assert [reader.recv() for _ in range(100)] == list(range(100))
    q.put("after")                 # now into the pipe
    assert reader.poll(5) and reader.recv() == "after"
    q.put("and get()")
    assert q.get() == "and get()"
    assert not reader.poll(0)
    q.close()


def test_reader_handed_out_while_a_writer_waits_for_room():
    # the writer holds the writer lock, waiting for room in a full ring:
    # handing out _reader must neither wait for that lock nor lose bytes
    q = cmultiprocessing.SimpleQueue()
    blob = b"r" * 1000
    count = 4 * RING // len(blob)
    t = threading.Thread(target=_produce, args=(q, [blob + str(i).encode()
                                                    for i in range(count)]),
                         daemon=True)
    t.start()
    time.sleep(0.3)
    assert t.is_alive()            # blocked on the full ring
    reader = q._reader
    got = []
    while len(got) < count:
        assert reader.poll(10), "messages lost after %d" % len(got)
        got.append(reader.recv())
    t.join(10)
    assert not t.is_alive()
    assert got == [blob + str(i).encode() for i in range(count)]
    q.close()


def test_writer_handed_out_keeps_the_order():
    q = cmultiprocessing.SimpleQueue()
    q.put("in the ring")
    q._writer.send("in the pipe")  # after the ring's bytes
    assert q.get() == "in the ring"
    assert q.get() == "in the pipe"
    q.close()


def test_empty_sees_the_ring():
    q = cmultiprocessing.SimpleQueue()
    assert q.empty()
    q.put(1)
    assert not q.empty()
    assert q.get() == 1
    assert q.empty()
    q.close()


def test_ring_off_by_environment():
    code = ("import cmultiprocessing as m; q = m.Queue(); "
            "print(q._ring is None, m.SimpleQueue()._ring is None)")
    env = dict(os.environ, CMP_QUEUE_RING="0")
    out = subprocess.run([sys.executable, "-c", code], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "True"], out.stderr


# ---- get_many / put_many ----------------------------------------------------

def test_put_many_get_many_in_order():
    q = cmultiprocessing.Queue()
    q.put_many(range(1000))
    got = []
    while len(got) < 1000:
        got += q.get_many(timeout=5, max_messages_to_get=64)
    assert got == list(range(1000))
    assert q.empty()
    q.close()


def test_get_many_takes_what_is_there_at_most_the_maximum():
    q = cmultiprocessing.Queue()
    q.put_many(["a", "b", "c"])
    time.sleep(0.05)
    assert q.get_many(timeout=5, max_messages_to_get=2) == ["a", "b"]
    assert q.get_many(timeout=5) == ["c"]
    with pytest.raises(queue.Empty):
        q.get_many(timeout=0.05)
    with pytest.raises(queue.Empty):
        q.get_many(block=False)
    with pytest.raises(ValueError):
        q.get_many(max_messages_to_get=0)
    q.close()


def test_get_many_objects_that_need_pickle():
    q = cmultiprocessing.Queue()
    items = [{"k": 1}, [2, 2], (3,), {1, 2}, frozenset([4])]
    q.put_many(items)
    got = []
    while len(got) < len(items):
        got += q.get_many(timeout=5)
    assert got == items
    q.close()


def test_put_many_all_or_nothing_when_full():
    q = cmultiprocessing.Queue(maxsize=5)
    q.put_many([1, 2, 3])
    with pytest.raises(queue.Full):
        q.put_many([4, 5, 6], timeout=0.05)
    assert q.qsize() == 3          # none of 4, 5, 6 went in
    q.put_many([4, 5])
    assert q.full()
    got = []
    while len(got) < 5:
        got += q.get_many(timeout=5)
    assert got == [1, 2, 3, 4, 5]
    q.close()


def test_put_many_drops_what_cannot_be_pickled_alone():
    q = cmultiprocessing.Queue()
    reported = []
    q._on_queue_feeder_error = lambda e, obj: reported.append(obj)
    lock = threading.Lock()
    q.put_many([1, lock, 2])
    got = []
    while len(got) < 2:
        got += q.get_many(timeout=5)
    assert got == [1, 2]
    assert reported == [lock]
    q.close()


def _get_many_child(q, out, n):
    got = []
    while len(got) < n:
        got += q.get_many(timeout=10)
    out.put(got)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_get_many_across_processes(method):
    ctx = cmultiprocessing.get_context(method)
    q, out = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_get_many_child, args=(q, out, 5000))
    p.start()
    for start in range(0, 5000, 500):
        q.put_many(range(start, start + 500))
    assert out.get(timeout=30) == list(range(5000))
    p.join(30)
    assert p.exitcode == 0
    q.close()
    out.close()


# ---- get(timeout) in the middle of a message ----------------------------------

def _put_two_then_sleep(q, first, second):
    q.put(first)
    q.put(second)
    time.sleep(60)


def _wait_stopped(pid, limit=10.0):
    """Until every thread of pid is stopped (Linux /proc)."""
    deadline = time.monotonic() + limit
    task = "/proc/%d/task" % pid
    while time.monotonic() < deadline:
        states = []
        for tid in os.listdir(task):
            with open("%s/%s/stat" % (task, tid)) as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        if all(s in "Tt" for s in states):
            return
        time.sleep(0.01)
    raise AssertionError("process %d never stopped" % pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="SIGSTOP, /proc")
def test_get_timeout_honoured_mid_message_of_a_stopped_writer():
    # The writer is stopped (SIGSTOP) with part of a message in the ring:
    # get(timeout) gives up in time, and the message is still whole for the
    # get() after the writer goes on.  The stdlib's get() waits past its
    # timeout there, holding the reader lock.
    import signal
    ctx = cmultiprocessing.get_context("fork")
    q = ctx.Queue()
    first = b"1" * (RING * 3 // 4)
    second = b"2" * (RING * 3 // 4)
    p = ctx.Process(target=_put_two_then_sleep, args=(q, first, second))
    p.start()
    try:
        deadline = time.monotonic() + 20
        # the first is in the ring, the second's start behind it
        while q._ring is not None and time.monotonic() < deadline:
            time.sleep(0.05)
            if not q.empty():
                break
        time.sleep(0.3)
        os.kill(p.pid, signal.SIGSTOP)
        _wait_stopped(p.pid)       # (kill() does not wait for the stop)
        assert q.get(timeout=10) == first
        t0 = time.monotonic()
        with pytest.raises(queue.Empty):
            q.get(timeout=0.5)
        assert time.monotonic() - t0 < 3
        os.kill(p.pid, signal.SIGCONT)
        assert q.get(timeout=10) == second
    finally:
        os.kill(p.pid, signal.SIGCONT)
        p.terminate()
        p.join(10)
        q.close()


# -- a Queue without a maximum size counts its messages in the ring --------

def _put_range(q, n):
    for i in range(n):
        q.put(i)
    q.close()
    q.join_thread()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_unbounded_queue_counts_in_the_ring_across_processes(method):
    ctx = cmultiprocessing.get_context(method)
    q = ctx.Queue()
    assert q._count() == 0 and q.qsize() == 0
    value = q._sem._semlock._get_value()
    p = ctx.Process(target=_put_range, args=(q, 300))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert q.qsize() == 300
    assert [q.get(timeout=5) for _ in range(100)] == list(range(100))
    assert q.qsize() == 200
    assert len(q.get_many(max_messages_to_get=50)) == 50
    assert q.qsize() == 150
    q.put_many(["a", "b"])
    assert q.qsize() == 152
    # the size semaphore is not touched: its word is not shared per message
    assert q._sem._semlock._get_value() == value
    assert not q.full()
    q.close()
    q.join_thread()


def test_a_dropped_message_is_counted_out():
    q = cmultiprocessing.Queue()
    q._on_queue_feeder_error = lambda e, obj: None
    q.put(threading.Lock())            # cannot be pickled: dropped
    assert q.qsize() == 0
    q.put_many([1, threading.Lock(), 2])
    assert q.qsize() == 2
    assert q.get_many(timeout=5, max_messages_to_get=5) == [1, 2]
    assert q.qsize() == 0
    q.close()


def test_a_bounded_queue_keeps_its_semaphore():
    q = cmultiprocessing.Queue(2)
    assert q._count() is None
    q.put(1)
    q.put(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    assert q.get(timeout=5) == 1 and q.qsize() == 1
    q.close()
    q.join_thread()
