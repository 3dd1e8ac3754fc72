"""A queue whose writer or reader dies in the middle of a message (see
Modules/queue_robust.c).  The stdlib's queue hangs in every case here: the
dead process holds the queue's lock for ever, and a reader waits for the
rest of a message that will never come."""
import os
import queue
import signal
import struct
import sys
import time

import pytest

import cmultiprocessing
from cmultiprocessing.queues import TornMessageError

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
    pytest.mark.timeout(90),
]

CTX = cmultiprocessing.get_context("fork")
BIG = 64 << 20          # far more than a pipe holds: its writer blocks
WRITING = 1


def record(lock):
    """(owner pid, state) of a queue lock's owner record."""
    owner, state = struct.unpack_from(
        "=QQ", memoryview(lock._owner_block).cast("B"), 0)
    return owner >> 32, state


def wait_for(check, what, limit=30.0):
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, "never: " + what
        time.sleep(0.01)


def put_big(q):
    q.put(b"x" * BIG)
    time.sleep(60)


def put_then_sleep(q, items):
    for item in items:
        q.put(item)
    time.sleep(60)


def writer_cut_off_mid_message(q):
    """A child that is writing a BIG message into q, blocked on the full
    pipe (nobody reads yet), SIGKILLed there."""
    p = CTX.Process(target=put_big, args=(q,))
    p.start()
    wait_for(lambda: record(q._wlock) ==
             (p.pid, (p.pid << 32) | WRITING), "the child writing")
    time.sleep(0.1)                 # the pipe fills
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    return p


def test_writer_killed_mid_message_other_producer_goes_on():
    q = CTX.Queue()
    try:
        dead = writer_cut_off_mid_message(q)
        # a second producer: its writes wait for the stream to be settled
        other = CTX.Process(target=put_then_sleep, args=(q, range(1000)))
        other.start()
        t0 = time.monotonic()
        with pytest.raises(TornMessageError,
                           match="process %d was cut off" % dead.pid):
            q.get(timeout=5)
        assert time.monotonic() - t0 < 5
        assert [q.get(timeout=5) for _ in range(1000)] == list(range(1000))
        with pytest.raises(queue.Empty):
            q.get(timeout=0.2)
        other.kill()
        other.join()
    finally:
        q.close()
        q.join_thread()


def test_writer_killed_mid_message_lone_reader_settles_it():
    # No other writer takes the lock over: the reader does, when no more
    # of the message comes; the lock is free for the next writer.
    q = CTX.Queue()
    try:
        dead = writer_cut_off_mid_message(q)
        with pytest.raises(TornMessageError, match=str(dead.pid)):
            q.get(timeout=5)
        with pytest.raises(queue.Empty):
            q.get(timeout=0.2)
        assert record(q._wlock) == (0, 0)
        q.put("after")
        assert q.get(timeout=5) == "after"
    finally:
        q.close()
        q.join_thread()


def test_writer_killed_before_its_message_costs_nothing():
    # The writer died holding the lock with nothing of its message in the
    # pipe (the state says a write was under way): no error, nothing lost.
    q = CTX.Queue()
    try:
        p = CTX.Process(target=put_then_sleep, args=(q, ["first"]))
        p.start()
        assert q.get(timeout=5) == "first"
        # make the child look as if it died holding the lock just before
        # writing: the lock taken, its record naming the child (whose
        # start time it does not match: gone either way) and a write
        # under way
        assert q._wlock.acquire(timeout=5)
        block = memoryview(q._wlock._owner_block).cast("B")
        struct.pack_into("=QQ", block, 0, p.pid << 32,
                         (p.pid << 32) | WRITING)
        p.kill()
        p.join()
        other = CTX.Process(target=put_then_sleep, args=(q, ["second"]))
        other.start()
        assert q.get(timeout=5) == "second"
        other.kill()
        other.join()
    finally:
        q.close()
        q.join_thread()


def get_one(q):
    q.get()


def test_reader_killed_mid_message_next_reader_drops_the_rest():
    q = CTX.Queue()
    writer = CTX.Process(target=put_then_sleep,
                         args=(q, [b"y" * BIG, "after"]))
    reader = CTX.Process(target=get_one, args=(q,))
    try:
        writer.start()
        wait_for(lambda: record(q._wlock)[1] != 0, "the writer writing")
        os.kill(writer.pid, signal.SIGSTOP)       # mid-message, alive
        reader.start()
        wait_for(lambda: record(q._rlock)[1] > 0, "the reader mid-message")
        left = record(q._rlock)[1]
        # through the ring, where the message ends (frame.h's
        # CMP_WIRE_LEFT_AT); through the pipe, the bytes left
        assert left >> 63 or 0 < left < BIG
        os.kill(reader.pid, signal.SIGKILL)
        reader.join()
        os.kill(writer.pid, signal.SIGCONT)
        # the rest of the dead reader's message is dropped; the next one
        # comes whole
        assert q.get(timeout=10) == "after"
        assert record(q._rlock) == (0, 0)
    finally:
        os.kill(writer.pid, signal.SIGCONT)
        writer.kill()
        writer.join()
        q.close()
        q.join_thread()


def test_reader_killed_while_waiting_loses_nothing():
    q = CTX.Queue()
    reader = CTX.Process(target=get_one, args=(q,))
    reader.start()
    wait_for(lambda: record(q._rlock)[0] == reader.pid, "the reader waiting")
    os.kill(reader.pid, signal.SIGKILL)
    reader.join()
    try:
        q.put("kept")
        assert q.get(timeout=5) == "kept"
    finally:
        q.close()
        q.join_thread()


def simple_put_big(sq):
    sq.put(b"z" * BIG)


def test_simple_queue_writer_killed_mid_message():
    sq = CTX.SimpleQueue()
    p = CTX.Process(target=simple_put_big, args=(sq,))
    p.start()
    wait_for(lambda: record(sq._wlock)[1] != 0, "the child writing")
    time.sleep(0.1)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    t0 = time.monotonic()
    with pytest.raises(TornMessageError, match=str(p.pid)):
        sq.get()                                 # no timeout: still ends
    assert time.monotonic() - t0 < 10
    sq.put("after")
    assert sq.get() == "after"
    sq.close()


# -- producers killed at random, consumers checking order and loss ---------

SIZES = (0, 16, 1000, 70000, 300000)    # the last is longer than the ring


def numbered_producer(q, gen, count):
    for seq in range(count):
        q.put((gen, seq, b"p" * SIZES[seq % len(SIZES)]))
    time.sleep(60)


def numbered_consumer(q, out):
    seen, torn = [], 0
    # (a SimpleQueue's get() has no timeout; the test's limit bounds it)
    get = q.get if isinstance(q, cmultiprocessing.queues.SimpleQueue) else \
        (lambda: q.get(timeout=30))
    while True:
        try:
            item = get()
        except TornMessageError:
            torn += 1
            continue
        if item is None:
            break
        gen, seq, payload = item
        assert len(payload) == SIZES[seq % len(SIZES)]
        seen.append((gen, seq))
    out.put((seen, torn))


def end_all(processes, q):
    """Kill what still runs of processes, then close q (and wait for a
    Queue's feeder)."""
    for p in processes:
        if p.is_alive():
            p.kill()
            p.join()
    q.close()
    if hasattr(q, "join_thread"):
        q.join_thread()


@pytest.mark.parametrize("kind", ["Queue", "SimpleQueue"])
def test_producers_killed_at_random_lose_and_reorder_nothing(kind):
    """Producers SIGKILLed at random points (mid-message among them) while
    two consumers take: each consumer sees every producer's messages in
    order, and together they see a gapless prefix of what each producer put
    (its last message may be torn; a Queue's feeder may hold a few more
    that died with it)."""
    import random
    rng = random.Random(1234)
    q = getattr(CTX, kind)()
    out = CTX.SimpleQueue()
    consumers = [CTX.Process(target=numbered_consumer, args=(q, out))
                 for _ in range(2)]
    for c in consumers:
        c.start()
    live, gen = [], 0
    try:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            while len(live) < 3:
                p = CTX.Process(target=numbered_producer, args=(q, gen, 400))
                p.start()
                live.append(p)
                gen += 1
            time.sleep(rng.uniform(0.0, 0.05))
            victim = live.pop(rng.randrange(len(live)))
            os.kill(victim.pid, signal.SIGKILL)
            victim.join()
        for p in live:
            os.kill(p.pid, signal.SIGKILL)
            p.join()
        live = []
        for _ in consumers:
            q.put(None)
        results = [out.get() for _ in consumers]
        for c in consumers:
            c.join(30)
            assert c.exitcode == 0
    finally:
        end_all(live + consumers, q)
        out.close()
    got = {}
    for seen, _torn in results:
        last = {}
        for g, seq in seen:
            assert seq > last.get(g, -1), "producer %d reordered" % g
            last[g] = seq
            got.setdefault(g, []).append(seq)
    assert gen >= 20 and len(got) >= 10
    for g, seqs in got.items():
        assert sorted(seqs) == list(range(len(seqs))), \
            "producer %d: a message lost before its last" % g


def reporting_consumer(q, out):
    while True:
        item = q.get()
        if item is None:
            return
        _gen, seq, payload = item
        if len(payload) != SIZES[seq % len(SIZES)]:
            out.put(("bad", seq))
            return
        out.put(("got", seq))


@pytest.mark.parametrize("kind", ["Queue", "SimpleQueue"])
def test_consumers_killed_at_random_cost_one_message_each(kind):
    """Consumers SIGKILLed at random points (mid-message among them) while
    one producer puts: the stream stays whole (every later message comes
    intact and in order), and each kill costs at most the one message the
    consumer was taking or had taken without reporting it."""
    import random
    rng = random.Random(4321)
    q = getattr(CTX, kind)()
    out = CTX.SimpleQueue()
    count = 3000
    producer = CTX.Process(target=numbered_producer, args=(q, 0, count))
    live, kills, reports = [], 0, []
    try:
        producer.start()
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            while len(live) < 2:
                c = CTX.Process(target=reporting_consumer, args=(q, out))
                c.start()
                live.append(c)
            time.sleep(rng.uniform(0.0, 0.03))
            victim = live.pop(rng.randrange(len(live)))
            os.kill(victim.pid, signal.SIGKILL)
            victim.join()
            kills += 1
        while len(live) < 2:
            c = CTX.Process(target=reporting_consumer, args=(q, out))
            c.start()
            live.append(c)
        # the producer's messages all written (a Queue's feeder flushed)
        # once the consumers drain them; then the end markers
        wait_for(lambda: not live[0].is_alive() or reports_so_far(out, reports)
                 >= count - kills, "the rest of the messages", limit=60)
        for _ in live:
            q.put(None)
        for c in live:
            c.join(30)
            assert c.exitcode == 0
        reports_so_far(out, reports)
    finally:
        end_all(live + [producer], q)
    assert [r for r in reports if r[0] != "got"] == []
    seqs = [seq for _, seq in reports]
    assert len(set(seqs)) == len(seqs), "a message came twice"
    assert count - len(seqs) <= kills, "more messages lost than consumers killed"
    assert kills >= 20


def reports_so_far(out, reports):
    while not out.empty():
        reports.append(out.get())
    return len(reports)
