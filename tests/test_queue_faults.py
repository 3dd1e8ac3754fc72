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
        assert 0 < left < BIG
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
