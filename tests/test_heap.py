"""The native arena heap (_cmultiprocessing.Heap) and heap.BufferWrapper."""
import gc
import mmap
import os
import pickle
import random
import sys
import threading

import pytest

import _cmultiprocessing
import cmultiprocessing
from cmultiprocessing import heap

PAGE = mmap.PAGESIZE


def layout(h):
    """Every block of every arena, sorted: (arena index, start, stop, kind)."""
    arenas = h._arenas
    blocks = []
    for length, seq in h._len_to_seq.items():
        for arena, start, stop in seq:
            assert stop - start == length
            blocks.append((arenas.index(arena), start, stop, "free"))
    for arena, spans in h._allocated_blocks.items():
        for start, stop in spans:
            blocks.append((arenas.index(arena), start, stop, "used"))
    return sorted(blocks)


def check_consistent(h):
    """Blocks tile every arena exactly; free blocks never touch."""
    blocks = layout(h)
    sizes = [a.size for a in h._arenas]
    assert sum(stop - start for _, start, stop, _ in blocks) == sum(sizes)
    for (i, _s, e, kind), (j, s2, _e2, kind2) in zip(blocks, blocks[1:]):
        if i == j:
            assert e == s2
            assert not (kind == kind2 == "free"), "free blocks not merged"
        else:
            assert e == sizes[i] and s2 == 0
    assert h._lengths == sorted(h._len_to_seq)


def test_fresh_heap_is_empty():
    h = _cmultiprocessing.Heap()
    assert h._arenas == [] and h._len_to_seq == {} and h._lengths == []
    assert h._allocated_blocks == {} and h._pending_free_blocks == []
    assert h._n_mallocs == h._n_frees == 0
    assert h._lastpid == os.getpid() and h._alignment == 8
    assert h._size == PAGE


def test_take_gives_aligned_zeroed_blocks():
    h = _cmultiprocessing.Heap()
    blocks = [h.take(n) for n in (1, 7, 8, 9, 100, 0)]
    for b in blocks:
        assert b.start % 8 == 0
        assert len(memoryview(b)) == b.size
        assert bytes(memoryview(b)) == bytes(b.size)
    memoryview(blocks[2])[:] = b"\xff" * 8
    assert bytes(memoryview(blocks[1])) == bytes(7)    # no overlap
    starts = [b.start for b in blocks]
    assert starts == [0, 8, 16, 24, 40, 144]
    check_consistent(h)
    # a reused block is zeroed again
    del blocks[2]
    again = h.take(8)
    assert again.start == 16 and bytes(memoryview(again)) == bytes(8)


def test_free_coalesces_neighbours():
    h = _cmultiprocessing.Heap()
    a, b, c = h.take(64), h.take(64), h.take(64)
    del a, c
    check_consistent(h)
    assert len(h._len_to_seq[64]) == 1
    del b                                   # merges with both neighbours
    assert h._len_to_seq == {PAGE: [(h._arenas[0], 0, PAGE)]}
    assert h._allocated_blocks == {}
    assert h._n_mallocs == h._n_frees == 3


def test_best_fit():
    h = _cmultiprocessing.Heap()
    keep = []
    holes = {}
    for size in (256, 8, 64, 8, 128, 8):
        b = h.take(size)
        (holes if size > 8 else {})[size] = b
        keep.append(b)
    starts = {size: b.start for size, b in holes.items()}
    keep = [b for b in keep if b.size == 8]
    holes.clear()
    b = h.take(60)
    assert b.start == starts[64]             # smallest hole that fits
    b2 = h.take(100)
    assert b2.start == starts[128]


def test_arenas_grow_and_are_released_when_empty():
    h = _cmultiprocessing.Heap()
    h._DISCARD_FREE_SPACE_LARGER_THAN = 0
    big = [h.take(PAGE) for _ in range(4)]
    sizes = [a.size for a in h._arenas]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    del big
    assert h._arenas == [] and h._len_to_seq == {}
    # with the default threshold, small arenas are kept for reuse
    h2 = _cmultiprocessing.Heap()
    assert h2._DISCARD_FREE_SPACE_LARGER_THAN == 4 << 20
    b = h2.take(10)
    del b
    assert len(h2._arenas) == 1


def test_large_block_gets_its_own_arena():
    h = _cmultiprocessing.Heap()
    b = h.take(10 * PAGE + 1)
    assert h._arenas[0].size == 11 * PAGE
    del b


def test_random_workload_stays_consistent():
    rng = random.Random(1234)
    h = _cmultiprocessing.Heap()
    h._DISCARD_FREE_SPACE_LARGER_THAN = 0
    live = []
    for _ in range(3000):
        live.append(h.take(int(rng.lognormvariate(0, 1) * 1000)))
        if len(live) > 40:
            del live[rng.randrange(40)]
    check_consistent(h)
    rng.shuffle(live)
    while live:
        live.pop()
    assert h._n_frees == h._n_mallocs == 3000
    assert h._arenas == [] and h._allocated_blocks == {}
    assert h._len_to_seq == {} and h._pending_free_blocks == []


@pytest.mark.parametrize("bad, exc", [
    (-1, ValueError), (-(2 ** 70), ValueError), (sys.maxsize, OverflowError),
    (2 ** 70, OverflowError), (1.5, TypeError), ("8", TypeError),
])
def test_bad_sizes(bad, exc):
    h = _cmultiprocessing.Heap()
    with pytest.raises(exc):
        h.take(bad)
    with pytest.raises(exc):
        h.malloc(bad)
    with pytest.raises(exc):
        heap.BufferWrapper(bad)
    assert h._n_mallocs == 0 and h._arenas == []


def test_malloc_free_tuples_and_double_free():
    h = _cmultiprocessing.Heap()
    block = h.malloc(20)
    arena, start, stop = block
    assert (start, stop) == (0, 24) and arena is h._arenas[0]
    h.free(block)
    with pytest.raises(ValueError, match="already freed"):
        h.free(block)
    with pytest.raises(ValueError):
        h.free((arena, 8, 16))               # never handed out
    with pytest.raises(ValueError):
        h.free((_cmultiprocessing.Arena(PAGE), 0, 24))
    with pytest.raises(TypeError):
        h.free("block")
    with pytest.raises(TypeError, match=r"block must be \(arena, start, stop\)"):
        h.free((arena, 0))
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        h.free((arena, "0", 24))
    # a block owned by a HeapBlock object cannot be freed by tuple
    owned = h.take(8)
    with pytest.raises(ValueError):
        h.free(owned.block)
    assert h._n_frees == 1


def test_free_while_locked_is_deferred():
    h = _cmultiprocessing.Heap()
    a, b = h.take(8), h.take(8)
    lock = h._lock
    assert lock.acquire(False)
    try:
        assert lock.locked()
        del a                                 # cannot take the lock: queued
        assert h._pending_free_blocks == [(h._arenas[0], 0, 8)]
        assert h._n_frees == 0
    finally:
        lock.release()
    del b                                     # drains the queue first
    assert h._pending_free_blocks == [] and h._n_frees == 2
    check_consistent(h)


def test_free_from_gc_does_not_deadlock():
    old = heap.BufferWrapper._heap
    heap.BufferWrapper._heap = h = _cmultiprocessing.Heap()
    thresholds = gc.get_threshold()
    gc.set_threshold(10)
    try:
        for _ in range(3000):
            a = heap.BufferWrapper(1)
            b = heap.BufferWrapper(1)
            a.buddy, b.buddy = b, a
        del a, b
        gc.collect()
        last = heap.BufferWrapper(1)          # drains anything pending
        assert h._n_mallocs == h._n_frees + 1
        del last
        assert h._pending_free_blocks == []
    finally:
        gc.set_threshold(*thresholds)
        heap.BufferWrapper._heap = old


def test_lock_object():
    h = _cmultiprocessing.Heap()
    lock = h._lock
    with pytest.raises(RuntimeError):
        lock.release()
    with lock:
        assert h._lock.locked()
        assert not h._lock.acquire(timeout=0.01)
        assert not h._lock.acquire(blocking=False)
    assert not lock.locked()
    with pytest.raises(ValueError):
        lock.acquire(False, 1)
    with pytest.raises(ValueError):
        lock.acquire(timeout=-5)
    with pytest.raises(TypeError):
        lock.acquire(bogus=1)


def test_threads_allocate_concurrently():
    h = _cmultiprocessing.Heap()
    errors = []

    def work(seed):
        rng = random.Random(seed)
        mine = []
        try:
            for _ in range(500):
                b = h.take(rng.randrange(1, 300))
                memoryview(b)[:1] = bytes([seed])
                mine.append(b)
                if len(mine) > 20:
                    mine.pop(rng.randrange(20))
            for b in mine:
                assert memoryview(b)[0] == seed
        except Exception as exc:             # pragma: no cover
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert h._n_mallocs == h._n_frees == 2000
    check_consistent(h)


# ---- fork ---------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_starts_a_fresh_heap():
    h = _cmultiprocessing.Heap()
    kept = h.take(32)
    memoryview(kept)[:4] = b"par."
    before = layout(h)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                             # child
        code = 1
        try:
            os.close(r)
            ok = (h._arenas == [] and h._n_mallocs == 0 and
                  h._lastpid == os.getpid())
            b = h.take(32)                    # from a new arena of its own
            ok = ok and b.arena is not kept.arena
            memoryview(b)[:4] = b"kid."
            ok = ok and bytes(memoryview(kept)[:4]) == b"par."
            memoryview(kept)[:4] = b"both"    # inherited: still shared
            del kept                          # not handed out again here
            ok = ok and h._n_frees == 0
            os.write(w, b"1" if ok else b"0")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    answer = os.read(r, 1)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer == b"1"
    assert bytes(memoryview(kept)[:4]) == b"both"
    assert layout(h) == before                # parent's books untouched


# ---- Arena ----------------------------------------------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="fallocate(2): Linux")
def test_arena_memory_is_reserved_at_creation():
    # The pages behind an arena are allocated when it is made, so a file
    # system or memory limit that cannot hold them fails the creation
    # (OSError) instead of killing the process with SIGBUS at first touch.
    size = 64 * PAGE
    a = _cmultiprocessing.Arena(size)
    assert os.fstat(a.fd).st_blocks * 512 >= size
    del a


def test_arena_errors_and_attach():
    with pytest.raises(ValueError):
        _cmultiprocessing.Arena(0)
    with pytest.raises(ValueError):
        _cmultiprocessing.Arena(-4)
    with pytest.raises(TypeError):
        _cmultiprocessing.Arena()
    a = _cmultiprocessing.Arena(PAGE)
    a.buffer[:3] = b"abc"
    fd = os.dup(a.fd)
    with pytest.raises(OSError):
        _cmultiprocessing.Arena(2 * PAGE, fd)      # larger than the memory
    b = _cmultiprocessing.Arena(PAGE, fd)           # owns fd now
    assert bytes(b.buffer[:3]) == b"abc"
    r, w = os.pipe()
    os.close(w)
    with pytest.raises(OSError):
        _cmultiprocessing.Arena(PAGE, r)            # not mappable
    os.close(r)
    with pytest.raises(ValueError):
        a.view(PAGE - 4, 8)
    with pytest.raises(ValueError):
        a.view(-1, 4)
    v = a.view(1, 2)
    assert bytes(memoryview(v)) == b"bc" and v.heap is None


# ---- BufferWrapper ----------------------------------------------------------

def test_buffer_wrapper():
    w = heap.BufferWrapper(10)
    view = w.create_memoryview()
    assert len(view) == 10 and not view.readonly
    block, size = w._state
    assert size == 10 and block[0] is w._block.arena
    view[:2] = b"ok"
    h = heap.BufferWrapper._heap
    before = h._n_frees
    del w
    assert h._n_frees == before               # the view keeps the block
    view.release()
    assert h._n_frees == before + 1


def test_buffer_wrapper_pickles_through_forking_pickler_only():
    w = heap.BufferWrapper(8)
    w.create_memoryview()[:3] = b"abc"
    with pytest.raises(TypeError):
        pickle.dumps(w)                       # the arena needs fd passing
    data = cmultiprocessing.reduction.ForkingPickler.dumps(w)
    again = pickle.loads(data)                # fd from the resource sharer
    assert bytes(again.create_memoryview()) == b"abc" + bytes(5)
    again.create_memoryview()[0] = ord("x")
    assert bytes(w.create_memoryview()[:1]) == b"x"
    assert again._block.heap is None          # never returned to a heap


def _read_wrapper(w, q):
    q.put(bytes(w.create_memoryview()))


def test_buffer_wrapper_reaches_a_spawned_child():
    ctx = cmultiprocessing.get_context("spawn")
    w = heap.BufferWrapper(6)
    w.create_memoryview()[:] = b"spawn!"
    q = ctx.Queue()
    p = ctx.Process(target=_read_wrapper, args=(w, q))
    p.start()
    try:
        assert q.get(timeout=60) == b"spawn!"
    finally:
        p.join(60)
        q.close()
        q.join_thread()
    assert p.exitcode == 0


def test_tunables():
    h = _cmultiprocessing.Heap()
    assert h._DOUBLE_ARENA_SIZE_UNTIL == 4 << 20
    h._DOUBLE_ARENA_SIZE_UNTIL = 0            # arenas stop growing
    a, b = h.take(PAGE), h.take(PAGE)
    assert [x.size for x in h._arenas] == [PAGE, PAGE]
    del a, b
    with pytest.raises(ValueError):
        h._DISCARD_FREE_SPACE_LARGER_THAN = -1
    with pytest.raises(TypeError):
        h._DISCARD_FREE_SPACE_LARGER_THAN = "big"
    with pytest.raises(AttributeError):
        del h._DOUBLE_ARENA_SIZE_UNTIL
    with pytest.raises(AttributeError):
        h._n_mallocs = 5
    with pytest.raises(ValueError):
        _cmultiprocessing.Heap(0)
    assert _cmultiprocessing.Heap(size=PAGE * 4)._size == PAGE * 4


def test_zeroing_tracks_what_was_written():
    h = _cmultiprocessing.Heap()
    a = h.take(100)
    memoryview(a)[:] = b"\x01" * 100
    del a
    b = h.take(300)                           # over a's old bytes and more
    assert bytes(memoryview(b)) == bytes(300)
    memoryview(b)[:] = b"\x02" * 300
    del b
    # bytes written through the whole arena's buffer count as well
    arena = h._arenas[0]
    arena.buffer[1000:1100] = b"\x03" * 100
    c = h.take(2000)
    assert bytes(memoryview(c)) == bytes(2000)


def test_big_blocks_are_not_touched_before_use():
    # 64 MiB from a fresh arena: handed out without writing every page.
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    h = _cmultiprocessing.Heap()
    b = h.take(64 << 20)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < (64 << 20) // PAGE // 2
    view = memoryview(b)
    assert view[0] == 0 and view[-1] == 0
    del view, b


def test_bad_size_messages():
    """The stdlib's texts (3.15 checks in Heap.malloc only, with the same
    outcome for BufferWrapper)."""
    with pytest.raises(ValueError, match=r"^Size -1 out of range$"):
        heap.BufferWrapper(-1)
    with pytest.raises(OverflowError, match=r"^Size %d too large$"
                       % sys.maxsize):
        heap.BufferWrapper(sys.maxsize)
    with pytest.raises(OverflowError, match=r"^Size %d too large$" % 2**64):
        heap.BufferWrapper(2**64)
