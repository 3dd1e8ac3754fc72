#!/usr/bin/env python3
"""cmultiprocessing against the standard library's multiprocessing, side by side.

    python3 benchmarks/bench.py --quick            # about a minute
    python3 benchmarks/bench.py                    # the full run
    python3 benchmarks/bench.py --only queue       # benchmarks whose name matches
    python3 benchmarks/bench.py --json out.json    # also write every sample
    python3 benchmarks/bench.py --workers 16       # size the scaling rows

Every benchmark runs the stdlib variant and the cmultiprocessing variant
(and billiard, multiprocess, faster-fifo when they are installed) in the same
run, interleaved repetition by repetition, and reports the median.  "ratio"
is stdlib time / cmultiprocessing time: above 1 means cmultiprocessing is
faster.  A feature cmultiprocessing does not provide yet shows as "n/a".

Rows that scale with the machine take their size from --workers N (default:
the CPU count): "Queue, 16 B msgs, P+P procs" (P producer and P consumer
processes on one Queue, for P = 1, 2 and N/2), Pool(N).map and
Pool(N).apply_async of tiny tasks, and Pool(2N) oversubscribed with ~2 ms
pure-Python tasks, shown as efficiency (ideal time / measured time, the
ideal being the tasks' single-process time, taken around each sample,
spread over min(N, CPUs); the median of the samples' efficiencies, and the
ratio is ours over the stdlib's).
Under every queue row a "CPU per message" line gives the CPU seconds that
all processes together spent per message (time.process_time() of each
child from go to done, plus the parent's).  The "put/get_many x64" rows
use Queue.put_many() / Queue.get_many(max_messages_to_get=64) where the
library has them (cmultiprocessing, faster-fifo; n/a while absent) and the
stdlib's put()/get() loop, as the stdlib has no batching.

A second table gives plain C figures for the same machine (benchmarks/cref),
built with the system C compiler on first use, so each figure can be read
against what the operating system allows at best.

Kept light at the top: under the spawn and forkserver start methods the
children import this file again as __mp_main__, and must not pay for (or
import) anything they do not need.
"""
import os
import sys
import time

MiB = 1 << 20


# ---------------------------------------------------------------------------
# Code run in the child processes.  Module-level so that spawn can find it.

def _noop():
    pass


def _tiny(x):
    return x + 1


def _gated(ctl, fn, args):
    """Child side of a gated run: say ready, wait for go, work, say done
    with the CPU seconds the work took (all threads of this process) and
    what fn returned (an int or None)."""
    ctl.send_bytes(b"r")
    ctl.recv_bytes()
    cpu = time.process_time()
    try:
        ret = fn(*args)
    except BaseException as exc:  # report instead of leaving the parent waiting
        ctl.send_bytes(b"e" + repr(exc).encode("utf-8", "replace")[:500])
        raise
    cpu = time.process_time() - cpu
    ctl.send_bytes(b"d%r %r" % (cpu, ret))


def _echo_bytes(conn):
    while True:
        msg = conn.recv_bytes()
        if not msg:
            return
        conn.send_bytes(msg)


def _echo_objects(conn):
    while True:
        obj = conn.recv()
        if obj is None:
            return
        conn.send(obj)


def _drain_bytes(conn, count):
    total = 0
    for _ in range(count):
        total += len(conn.recv_bytes())
    conn.send(total)


def _drain_oneway(conn, back, count):
    total = 0
    for _ in range(count):
        total += len(conn.recv_bytes())
    back.send(total)


def _produce(q, count, size):
    payload = b"m" * size
    for _ in range(count):
        q.put(payload)
    q.put(None)


def _produce_only(q, count, size, batch):
    """A producer of the P+C rows: `count` messages, one put() each or
    (batch > 1) put_many() of `batch` at a time; then flush, so that the
    parent's end markers cannot overtake what a feeder thread still holds."""
    payload = b"m" * size
    if batch > 1:
        put_many = q.put_many
        chunk = [payload] * batch
        full, rest = divmod(count, batch)
        for _ in range(full):
            put_many(chunk)
        if rest:
            put_many(chunk[:rest])
    else:
        put = q.put
        for _ in range(count):
            put(payload)
    for name in ("close", "join_thread"):
        fn = getattr(q, name, None)
        if fn is not None:
            fn()


def _consume(q, batch):
    """A consumer of the P+C rows: messages until an end marker (None);
    returns how many.  With get_many() a batch may hold several markers:
    the ones this consumer does not need go back for the others."""
    got = 0
    if batch > 1:
        get_many = q.get_many
        while True:
            items = get_many(max_messages_to_get=batch)
            ends = items.count(None)
            got += len(items) - ends
            if ends:
                for _ in range(ends - 1):
                    q.put(None)
                return got
    get = q.get
    while get() is not None:
        got += 1
    return got


def _sem_pong(ping, pong, count):
    for _ in range(count):
        ping.acquire()
        pong.release()


def _increment(value, count):
    lock = value.get_lock()
    for _ in range(count):
        with lock:
            value.value += 1


def _cpu_task(loops):
    """Pure-Python CPU-bound work (the oversubscribed pool's task)."""
    x = 0
    for i in range(loops):
        x += i ^ 5
    return x


# ---------------------------------------------------------------------------
# The libraries under test.

class NotAvailable(Exception):
    """The library under test does not provide what the benchmark needs."""


class BenchTimeout(Exception):
    pass


class Impl:
    """One library under test: a multiprocessing-like package and a context."""

    def __init__(self, label, modname, method):
        self.label = label
        self.modname = modname
        self.method = method
        self.mod = None
        self.error = None
        try:
            import importlib
            self.mod = importlib.import_module(modname)
            self.ctx = self.mod.get_context(method)
        except Exception as exc:  # a peer that is absent or broken
            self.error = "%s: %s" % (type(exc).__name__, exc)

    def context(self, method=None):
        if self.mod is None:
            raise NotAvailable(self.error)
        if method is None or method == self.method:
            return self.ctx
        try:
            return self.mod.get_context(method)
        except ValueError as exc:
            raise NotAvailable(str(exc))

    def submodule(self, name):
        import importlib
        if self.mod is None:
            raise NotAvailable(self.error)
        try:
            return importlib.import_module(self.modname + "." + name)
        except ImportError as exc:
            raise NotAvailable(str(exc))

    def cleanup(self):
        """After a failure: end the children this library still has."""
        if self.mod is None:
            return
        try:
            children = self.mod.active_children()
        except Exception:
            return
        for p in children:
            try:
                p.kill()
                p.join(5)
            except Exception:
                pass


class FasterFifo:
    """faster-fifo: only a Queue; its producers run as stdlib processes."""

    label = "faster-fifo"

    def __init__(self, method):
        import faster_fifo
        import multiprocessing
        self.faster_fifo = faster_fifo
        self.mp = multiprocessing
        self.ctx = multiprocessing.get_context(method)
        self.error = None

    def cleanup(self):
        for p in self.mp.active_children():
            p.kill()
            p.join(5)


# ---------------------------------------------------------------------------
# Running children with a gate, so that process start-up is not timed.

def gated_run(ctx, jobs, parent_side=None, stats=None, after=None):
    """Start one process per (fn, args) in jobs; once all are ready, start
    the clock, let them go, run parent_side() and wait until every child
    says done.  Returns the elapsed time.

    after=(k, fn): fn() runs in the parent once the first k children are
    done (the P+C rows put their end markers then).  stats, a dict, gets
    "cpu": CPU seconds of the children's work and of this process from go
    to the end, and "results": what each child's fn returned."""
    procs, ctls = [], []
    cpu_children, results = 0.0, []
    try:
        for fn, args in jobs:
            ours, theirs = ctx.Pipe()
            p = ctx.Process(target=_gated, args=(theirs, fn, args), daemon=True)
            p.start()
            theirs.close()
            procs.append(p)
            ctls.append(ours)
        for c in ctls:
            c.recv_bytes()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for c in ctls:
            c.send_bytes(b"g")
        if parent_side is not None:
            parent_side()
        for i, c in enumerate(ctls):
            if after is not None and i == after[0]:
                after[1]()
            status = c.recv_bytes()
            if status[:1] != b"d":
                raise RuntimeError("child failed: " + status[1:].decode())
            cpu, ret = status[1:].split()
            cpu_children += float(cpu)
            results.append(None if ret == b"None" else int(ret))
        t1 = time.perf_counter()
        if stats is not None:
            stats["cpu"] = cpu_children + time.process_time() - cpu0
            stats["results"] = results
        for p in procs:
            p.join(10)
            if p.exitcode != 0:
                raise RuntimeError("child exit code %r" % (p.exitcode,))
        return t1 - t0
    finally:
        for c in ctls:
            c.close()
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)


# ---------------------------------------------------------------------------
# The benchmarks.  Each returns seconds per operation; n is the operation
# count chosen by the Bench entry (smaller under --quick).

def b_pipe_rtt_bytes(impl, n):
    ctx = impl.context()
    a, b = ctx.Pipe()
    msg = b"x" * 64

    def parent():
        a.send_bytes(msg)
        a.recv_bytes()
        t0 = time.perf_counter()
        for _ in range(n):
            a.send_bytes(msg)
            a.recv_bytes()
        parent.t = time.perf_counter() - t0
        a.send_bytes(b"")
    try:
        gated_run(ctx, [(_echo_bytes, (b,))], parent)
    finally:
        a.close()
        b.close()
    return parent.t / n


def b_pipe_rtt_objects(impl, n):
    ctx = impl.context()
    a, b = ctx.Pipe()
    obj = (12345, "a short string", 3.25, [1, 2, 3], {"k": None})

    def parent():
        a.send(obj)
        a.recv()
        t0 = time.perf_counter()
        for _ in range(n):
            a.send(obj)
            a.recv()
        parent.t = time.perf_counter() - t0
        a.send(None)
    try:
        gated_run(ctx, [(_echo_objects, (b,))], parent)
    finally:
        a.close()
        b.close()
    return parent.t / n


def b_pipe_bandwidth(impl, n):
    ctx = impl.context()
    a, b = ctx.Pipe()
    block = b"z" * MiB

    def parent():
        for _ in range(n):
            a.send_bytes(block)
        total = a.recv()
        if total != n * MiB:
            raise RuntimeError("received %r bytes, sent %r" % (total, n * MiB))
    try:
        elapsed = gated_run(ctx, [(_drain_bytes, (b, n))], parent)
    finally:
        a.close()
        b.close()
    return elapsed / n


def oneway_bench(size):
    """Pipe(duplex=False): the parent sends n messages of `size` bytes, a
    child drains them and sends back the total."""
    def run(impl, n):
        ctx = impl.context()
        r, w = ctx.Pipe(duplex=False)
        back_r, back_w = ctx.Pipe(duplex=False)
        msg = b"z" * size

        def parent():
            send = w.send_bytes
            for _ in range(n):
                send(msg)
            total = back_r.recv()
            if total != n * size:
                raise RuntimeError("received %r bytes, sent %r"
                                   % (total, n * size))
        try:
            elapsed = gated_run(ctx, [(_drain_oneway, (r, back_w, n))],
                                parent)
        finally:
            for c in (r, w, back_r, back_w):
                c.close()
        return elapsed / n
    return run


def queue_bench(kind, producers, size):
    def run(impl, n):
        per = max(1, n // producers)
        if isinstance(impl, FasterFifo):
            if kind != "Queue":
                raise NotAvailable("faster-fifo has no SimpleQueue")
            q = impl.faster_fifo.Queue(max_size_bytes=64 * MiB)
            ctx = impl.ctx
        else:
            ctx = impl.context()
            q = getattr(ctx, kind)()

        def parent():
            done = got = 0
            while done < producers:
                item = q.get()
                if item is None:
                    done += 1
                else:
                    got += 1
            if got != per * producers:
                raise RuntimeError("lost messages: %d of %d" % (got, per * producers))
        stats = {}
        try:
            elapsed = gated_run(ctx, [(_produce, (q, per, size))] * producers, parent,
                                stats=stats)
        finally:
            close = getattr(q, "close", None)
            if close is not None:
                close()
        total = per * producers
        return elapsed / total, {"cpu": stats["cpu"] / total}
    return run


def pc_queue_bench(pairs, size, batch=1):
    """`pairs` producer and `pairs` consumer processes on one Queue; the
    parent only puts the end markers once every producer is done.  With
    batch > 1 the producers use put_many() and the consumers get_many() of
    up to `batch` messages where the library has them (cmultiprocessing,
    faster-fifo); the stdlib has no batching, so its variant is the plain
    put()/get() loop.  Seconds and CPU seconds (all processes) per message."""
    def run(impl, n):
        per = max(1, n // pairs)
        use = batch
        if isinstance(impl, FasterFifo):
            q = impl.faster_fifo.Queue(max_size_bytes=64 * MiB)
            ctx = impl.ctx
        else:
            ctx = impl.context()
            q = ctx.Queue()
            if batch > 1 and impl.label == "stdlib":
                use = 1
            elif batch > 1 and not (hasattr(q, "put_many") and hasattr(q, "get_many")):
                q.close()
                raise NotAvailable("%s's Queue has no put_many/get_many" % impl.label)

        def put_ends():
            for _ in range(pairs):
                q.put(None)
        jobs = ([(_produce_only, (q, per, size, use))] * pairs +
                [(_consume, (q, use))] * pairs)
        stats = {}
        try:
            elapsed = gated_run(ctx, jobs, stats=stats, after=(pairs, put_ends))
        finally:
            close = getattr(q, "close", None)
            if close is not None:
                close()
        total = per * pairs
        got = sum(stats["results"][pairs:])
        if got != total:
            raise RuntimeError("lost messages: %d of %d" % (got, total))
        return elapsed / total, {"cpu": stats["cpu"] / total}
    return run


def b_lock(impl, n):
    lock = impl.context().Lock()
    t0 = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - t0) / n


def b_rlock(impl, n):
    lock = impl.context().RLock()
    t0 = time.perf_counter()
    for _ in range(n):
        with lock:
            pass
    return (time.perf_counter() - t0) / n


def b_sem_pingpong(impl, n):
    ctx = impl.context()
    ping, pong = ctx.Semaphore(0), ctx.Semaphore(0)

    def parent():
        for _ in range(n):
            ping.release()
            pong.acquire()
    return gated_run(ctx, [(_sem_pong, (ping, pong, n))], parent) / n


def b_value_contention(impl, n, workers=2):
    ctx = impl.context()
    value = ctx.Value("l", 0)
    per = n // workers
    elapsed = gated_run(ctx, [(_increment, (value, per))] * workers)
    if value.value != per * workers:
        raise RuntimeError("lost increments: %d of %d" % (value.value, per * workers))
    return elapsed / (per * workers)


def b_pool_map(impl, n, workers=2):
    with impl.context().Pool(workers) as pool:
        pool.map(_tiny, range(64))
        t0 = time.perf_counter()
        out = pool.map(_tiny, range(n))
        elapsed = time.perf_counter() - t0
    if out != list(range(1, n + 1)):
        raise RuntimeError("wrong results from Pool.map")
    return elapsed / n


def b_apply_async(impl, n, workers=2):
    with impl.context().Pool(workers) as pool:
        pool.apply_async(_tiny, (0,)).get(30)
        t0 = time.perf_counter()
        pending = [pool.apply_async(_tiny, (i,)) for i in range(n)]
        out = [r.get(60) for r in pending]
        elapsed = time.perf_counter() - t0
    if out != list(range(1, n + 1)):
        raise RuntimeError("wrong results from apply_async")
    return elapsed / n


def pool_bench(fn, workers):
    def run(impl, n):
        return fn(impl, n, workers)
    return run


_calibrated = {}


def cpu_task_loops(seconds=0.002):
    """Loop count for _cpu_task to take about `seconds` here (best of a few
    timings, measured once per run so every library gets the same task)."""
    if seconds not in _calibrated:
        probe = 20000
        best = min(_timed(_cpu_task, probe) for _ in range(5))
        _calibrated[seconds] = max(1, int(probe * seconds / best))
        _calibrated[seconds, "t"] = min(_timed(_cpu_task, _calibrated[seconds])
                                       for _ in range(5))
    return _calibrated[seconds], _calibrated[seconds, "t"]


def _timed(fn, arg):
    t0 = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t0


def oversubscribed_bench(workers):
    """Pool(2 * workers) running `n` pure-Python tasks of about 2 ms, one
    per message (chunksize=1): twice as many processes as CPUs to keep
    busy, so CPU that waiting workers burn is CPU the tasks do not get.
    The ideal time is the tasks' single-process time spread over
    min(workers, CPUs); "efficiency" is ideal / measured.  The task's own
    time is taken again just before and just after each sample (the best of
    3 each, the pool idle): on a VM whose speed drifts from minute to
    minute, a time taken once at the start made the efficiency of either
    library swing between 60% and 91%."""
    def run(impl, n):
        loops, _ = cpu_task_loops()
        cpus = min(workers, os.cpu_count() or 1)
        with impl.context().Pool(2 * workers) as pool:
            pool.map(_cpu_task, [1] * (4 * workers), chunksize=1)
            before = min(_timed(_cpu_task, loops) for _ in range(3))
            t0 = time.perf_counter()
            out = pool.map(_cpu_task, [loops] * n, chunksize=1)
            elapsed = time.perf_counter() - t0
            after = min(_timed(_cpu_task, loops) for _ in range(3))
        if len(out) != n or out[0] != _cpu_task(loops):
            raise RuntimeError("wrong results from Pool.map")
        return elapsed / n, {"ideal": (before + after) / 2 / cpus}
    return run


def small_alloc_bench(make):
    """`n` small shared objects made and kept alive in a list, then freed
    together: seconds per object, making and freeing."""
    def run(impl, n):
        ctx = impl.context()
        make(ctx)
        t0 = time.perf_counter()
        keep = [make(ctx) for _ in range(n)]
        del keep
        return (time.perf_counter() - t0) / n
    return run


def start_bench(method):
    def run(impl, n):
        ctx = impl.context(method)
        warm = ctx.Process(target=_noop)      # starts the forkserver, if any
        warm.start()
        warm.join(60)
        t0 = time.perf_counter()
        for _ in range(n):
            p = ctx.Process(target=_noop)
            p.start()
            p.join(60)
            if p.exitcode != 0:
                raise RuntimeError("child exit code %r" % (p.exitcode,))
        return (time.perf_counter() - t0) / n
    return run


def b_start_launcher(impl, n):
    """spawn start+join with cmultiprocessing's children run by its child
    launcher over this process's libpython (what a host with no python
    program gets); the other libraries run the python program as usual."""
    if impl.label != "cmultiprocessing":
        return start_bench("spawn")(impl, n)
    sp = impl.submodule("_interpreter")
    try:
        launcher, options, _library = sp._launcher()
    except sp._LauncherUnusable as exc:
        raise NotAvailable(str(exc))
    state = sp._Interpreter
    saved = state.found, state.launch
    state.found, state.launch = os.fsencode(launcher), tuple(options)
    try:
        return start_bench("spawn")(impl, n)
    finally:
        state.found, state.launch = saved


def b_shared_memory(impl, n):
    SharedMemory = impl.submodule("shared_memory").SharedMemory
    t0 = time.perf_counter()
    for _ in range(n):
        shm = SharedMemory(create=True, size=65536)
        shm.buf[0] = 1
        shm.close()
        shm.unlink()
    return (time.perf_counter() - t0) / n


def b_rawarray(impl, n):
    ctx = impl.context()
    ctx.RawArray("d", 10000)
    t0 = time.perf_counter()
    for _ in range(n):
        arr = ctx.RawArray("d", 10000)
        arr[0] = 1.0
        del arr
    return (time.perf_counter() - t0) / n


def b_manager_dict(impl, n):
    with impl.context().Manager() as manager:
        d = manager.dict()
        d["warm"] = 0
        t0 = time.perf_counter()
        for i in range(n):
            key = "k%d" % (i & 63)
            d[key] = i
            if d[key] != i:
                raise RuntimeError("manager dict returned a wrong value")
        return (time.perf_counter() - t0) / n


class Bench:
    """name, how to show it, the function, and op counts (quick, full).

    fn(impl, n) returns seconds per operation, or (seconds, extras) where
    extras may hold "cpu" (CPU seconds per operation, all processes: shown
    on a line of its own under the row) and "ideal" (the best possible
    seconds per operation: kind "efficiency" shows ideal / measured)."""

    def __init__(self, name, fn, quick, full, kind="latency", nbytes=0,
                 peers=("billiard", "multiprocess")):
        self.name, self.fn, self.kind, self.nbytes = name, fn, kind, nbytes
        self.quick, self.full = quick, full
        self.peers = peers


def all_benches(workers=None):
    """The benchmarks; `workers` (default: the CPU count) sizes the rows
    that scale with the machine."""
    workers = max(1, workers or os.cpu_count() or 1)
    q_peers = ("billiard", "multiprocess", "faster-fifo")
    out = [
        Bench("pipe round trip, 64 B bytes", b_pipe_rtt_bytes, 2000, 8000),
        Bench("pipe round trip, small object", b_pipe_rtt_objects, 2000, 8000),
        Bench("pipe bandwidth, 1 MiB messages", b_pipe_bandwidth, 100, 400,
              kind="bandwidth", nbytes=MiB),
        Bench("Pipe(duplex=False) bandwidth, 1 MiB", oneway_bench(MiB), 100, 400,
              kind="bandwidth", nbytes=MiB),
        Bench("Pipe(duplex=False) 64 B msgs", oneway_bench(64), 20000, 80000,
              kind="rate"),
    ]
    for kind in ("Queue", "SimpleQueue"):
        for size, label in ((16, "16 B"), (65536, "64 KiB")):
            for producers in (1, 4):
                small = size < 1024
                out.append(Bench(
                    "%s, %s msgs, %d producer%s" % (kind, label, producers,
                                                   "s" if producers > 1 else ""),
                    queue_bench(kind, producers, size),
                    4000 if small else 400, 100000 if small else 1600,
                    kind="rate" if small else "bandwidth", nbytes=size,
                    peers=q_peers if kind == "Queue" else ("billiard", "multiprocess")))
    # P producers + P consumers on one Queue: the rate should not fall as
    # pairs are added (2+2 at least the 1+1 rate; W/2+W/2 ideally more).
    # The full run moves 100,000 small messages a sample: through the ring
    # 16,000 took 5-8 ms, where a time slice of the scheduler (or a late
    # start of one side) made the rate vary by 2x from sample to sample.
    pairs = sorted({1, 2, max(1, workers // 2)})
    for p in pairs:
        out.append(Bench("Queue, 16 B msgs, %d+%d procs" % (p, p),
                         pc_queue_bench(p, 16), 4000 * p, 100000,
                         kind="rate", nbytes=16, peers=q_peers))
    for p in sorted({1, pairs[-1]}):
        out.append(Bench("Queue, 16 B, put/get_many x64, %d+%d" % (p, p),
                         pc_queue_bench(p, 16, batch=64), 8000 * p, 200000,
                         kind="rate", nbytes=16, peers=q_peers))
    out += [
        Bench("Lock acquire+release", b_lock, 100000, 400000),
        Bench("RLock acquire+release", b_rlock, 100000, 400000),
        Bench("Semaphore ping-pong, 2 procs", b_sem_pingpong, 2000, 8000),
        Bench("Value += 1 under lock, 2 procs", b_value_contention, 10000, 40000),
        Bench("Pool(2).map, tiny tasks", b_pool_map, 5000, 20000, kind="rate"),
        Bench("Pool(2).apply_async, tiny", b_apply_async, 1000, 4000, kind="rate"),
    ]
    if workers != 2:
        out += [
            Bench("Pool(%d).map, tiny tasks" % workers, pool_bench(b_pool_map, workers),
                  5000, 20000, kind="rate"),
            Bench("Pool(%d).apply_async, tiny" % workers,
                  pool_bench(b_apply_async, workers), 1000, 4000, kind="rate"),
        ]
    out += [
        Bench("Pool(%d) oversubscribed, 2 ms CPU tasks" % (2 * workers),
              oversubscribed_bench(workers), 50 * workers, 200 * workers,
              kind="efficiency"),
        Bench("Process start+join, fork", start_bench("fork"), 20, 60),
        Bench("Process start+join, spawn", start_bench("spawn"), 3, 8),
        Bench("Process start+join, forkserver", start_bench("forkserver"), 10, 30),
        Bench("Process start+join, spawn via launcher", b_start_launcher, 3, 8,
              peers=()),
        Bench("SharedMemory create+close+unlink", b_shared_memory, 200, 800),
        Bench("RawArray('d', 10000) alloc+free", b_rawarray, 2000, 8000),
        Bench("RawArray('b', 100) x5000 kept, freed",
              small_alloc_bench(lambda ctx: ctx.RawArray("b", 100)), 5000, 5000),
        Bench("Value('d') x5000 kept, freed",
              small_alloc_bench(lambda ctx: ctx.Value("d")), 5000, 5000),
        Bench("Manager dict set+get", b_manager_dict, 300, 1200),
    ]
    return out


# ---------------------------------------------------------------------------
# Measurement

def _on_alarm(signum, frame):
    raise BenchTimeout("no result within the time limit")


def measure(bench, impl, n, limit):
    """One sample: ('ok', seconds per op) or ('na'|'error', reason)."""
    import gc
    import signal
    gc.collect()
    has_alarm = hasattr(signal, "SIGALRM")
    if has_alarm:
        old = signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(limit)
    try:
        value = bench.fn(impl, n)
        return "ok", value if isinstance(value, tuple) else (value, {})
    except (NotAvailable, AttributeError, NotImplementedError, ImportError) as exc:
        impl.cleanup()
        return "na", "%s: %s" % (type(exc).__name__, exc)
    except Exception as exc:
        impl.cleanup()
        return "error", "%s: %s" % (type(exc).__name__, exc)
    finally:
        if has_alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)


def run_bench(bench, impls, reps, quick, limit):
    """Interleave the libraries repetition by repetition; rotate who goes
    first, so that warm caches and machine noise fall on all alike."""
    import statistics
    n = bench.quick if quick else bench.full
    samples = {impl.label: [] for impl in impls}
    extras = {impl.label: {} for impl in impls}
    status = {impl.label: None for impl in impls}
    for rep in range(reps):
        order = impls[rep % len(impls):] + impls[:rep % len(impls)]
        for impl in order:
            if status[impl.label] is not None:   # failed before: do not retry
                continue
            kind, value = measure(bench, impl, n, limit)
            if kind == "ok":
                samples[impl.label].append(value[0])
                for key, v in value[1].items():
                    extras[impl.label].setdefault(key, []).append(v)
            else:
                status[impl.label] = (kind, value)
    result = {}
    for impl in impls:
        s = samples[impl.label]
        if status[impl.label] is not None:
            kind, why = status[impl.label]
            result[impl.label] = {"status": kind, "reason": why, "samples": s}
        else:
            result[impl.label] = {"status": "ok", "median": statistics.median(s),
                                  "samples": s}
            for key, v in extras[impl.label].items():
                result[impl.label][key] = statistics.median(v)
                result[impl.label][key + "_samples"] = v
            ideal = extras[impl.label].get("ideal")
            if ideal:
                # each sample against its own ideal (see oversubscribed_bench)
                result[impl.label]["efficiency"] = statistics.median(
                    i / t for i, t in zip(ideal, s))
    return result


def stale_bytecode(mod):
    """Modules of the package mod whose cached bytecode is missing or out
    of date: spawn and forkserver children compile those from source on
    every start (with PYTHONDONTWRITEBYTECODE set, nothing updates them)."""
    import importlib.util
    import struct
    stale = []
    for folder in getattr(mod, "__path__", []):
        for root, _, files in os.walk(folder):
            for f in files:
                if not f.endswith(".py"):
                    continue
                src = os.path.join(root, f)
                try:
                    st = os.stat(src)
                    with open(importlib.util.cache_from_source(src), "rb") as pyc:
                        head = pyc.read(16)
                    flags, mtime, size = struct.unpack("<III", head[4:16])
                    if flags == 0 and (mtime != int(st.st_mtime) & 0xFFFFFFFF or
                                       size != st.st_size & 0xFFFFFFFF):
                        stale.append(f)
                except (OSError, struct.error, NotImplementedError):
                    stale.append(f)
    return stale


# ---------------------------------------------------------------------------
# Display

def fmt_value(bench, entry):
    if entry is None:
        return "-"
    if entry["status"] != "ok":
        return "n/a" if entry["status"] == "na" else "error"
    sec = entry["median"]
    if bench.kind == "bandwidth":
        rate = bench.nbytes / sec
        if rate >= (1 << 30):
            return "%.2f GiB/s" % (rate / (1 << 30))
        return "%.0f MiB/s" % (rate / MiB)
    if bench.kind == "rate":
        rate = 1.0 / sec
        return "%.2fM/s" % (rate / 1e6) if rate >= 1e6 else "%.0fk/s" % (rate / 1e3)
    if bench.kind == "efficiency" and "efficiency" in entry:
        return "%.0f%%" % (100.0 * entry["efficiency"])
    return fmt_time(sec)


def fmt_cpu(entry):
    if entry is None or entry["status"] != "ok" or "cpu" not in entry:
        return "-"
    return fmt_time(entry["cpu"])


def cpu_ratio(res, base="stdlib", other="cmultiprocessing"):
    a, b = res.get(base), res.get(other)
    if not a or not b or "cpu" not in a or "cpu" not in b or not b["cpu"]:
        return None
    return a["cpu"] / b["cpu"]


def fmt_time(sec):
    if sec >= 1e-3:
        return "%.2f ms" % (sec * 1e3)
    if sec >= 1e-6:
        return "%.2f us" % (sec * 1e6)
    return "%.0f ns" % (sec * 1e9)


def ratio(res, base="stdlib", other="cmultiprocessing"):
    a, b = res.get(base), res.get(other)
    if not a or not b or a["status"] != "ok" or b["status"] != "ok":
        return None
    if "efficiency" in a and "efficiency" in b:
        return b["efficiency"] / a["efficiency"]
    return a["median"] / b["median"]


class Table:
    def __init__(self, headers, widths):
        self.headers, self.widths = headers, widths

    def line(self, cells):
        parts = []
        for i, (c, w) in enumerate(zip(cells, self.widths)):
            parts.append(c.ljust(w) if i == 0 else c.rjust(w))
        print("  ".join(parts).rstrip(), flush=True)

    def head(self):
        self.line(self.headers)
        self.line(["-" * w for w in self.widths])


# ---------------------------------------------------------------------------
# The C reference

CREF = [
    # test, label, count quick, count full, the benchmarks it is the floor of
    ("pipe_rtt", "pipe round trip, 64 B (2 pipes)", 5000, 20000,
     ["pipe round trip, 64 B bytes"]),
    ("sock_rtt", "socketpair round trip, 64 B", 5000, 20000,
     ["pipe round trip, 64 B bytes", "pipe round trip, small object"]),
    ("sock_bw", "socketpair bandwidth, 1 MiB", 200, 800,
     ["pipe bandwidth, 1 MiB messages"]),
    ("pipe_bw", "pipe bandwidth, 1 MiB", 100, 400,
     ["Pipe(duplex=False) bandwidth, 1 MiB"]),
    ("futex_pingpong", "futex ping-pong, 2 procs", 5000, 20000,
     ["Semaphore ping-pong, 2 procs"]),
    ("sem_pingpong", "sem_t ping-pong, 2 procs", 5000, 20000,
     ["Semaphore ping-pong, 2 procs"]),
    ("fork_wait", "fork + _exit + waitpid", 200, 800,
     ["Process start+join, fork", "Process start+join, forkserver"]),
    # Not C: the same in this very Python process, whose size (page tables
    # to copy, pages to copy on write) bounds what any fork-based start
    # can reach here.
    ("py_fork_wait", "os.fork+_exit+waitpid here", 100, 400,
     ["Process start+join, fork"]),
    ("spawn_true", "posix_spawn /bin/true + wait", 100, 400,
     ["Process start+join, spawn"]),
    ("spawn_exe", "posix_spawn python -c pass", 5, 15,
     ["Process start+join, spawn"]),
]


def cref_binary():
    """Build benchmarks/cref/cref.c once per source version into a cache
    outside the tree; returns the binary's path, or None with a reason."""
    import hashlib
    import shutil
    import subprocess
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cref", "cref.c")
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or
                         os.path.join(os.path.expanduser("~"), ".cache"),
                         "cmultiprocessing-bench")
    exe = os.path.join(cache, "cref-" + digest)
    if os.path.exists(exe):
        return exe, None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None, "no C compiler found (set CC)"
    os.makedirs(cache, exist_ok=True)
    tmp = exe + ".%d.tmp" % os.getpid()
    proc = subprocess.run([cc, "-O2", "-o", tmp, src, "-pthread"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return None, "build failed: " + proc.stderr.strip()[:300]
    os.replace(tmp, exe)
    return exe, None


def py_fork_wait(count):
    """Seconds per bare os.fork() + os._exit(0) + os.waitpid() from this
    process: no library at all, the floor of a fork-based start here."""
    t0 = time.perf_counter()
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return (time.perf_counter() - t0) / count


class CrefSampler:
    """Runs the C reference tests.  Samples are taken next to the Python
    benchmarks they bound (one before and one after each), plus reps more at
    the end, so that the floor sees the same machine load; the floor is the
    best sample, as a floor should be."""

    def __init__(self, exe, quick):
        self.exe, self.quick = exe, quick
        self.samples = {t[0]: [] for t in CREF}
        self.nbytes = {t[0]: 0 for t in CREF}
        self.errors = {}

    def sample(self, test):
        import subprocess
        if test in self.errors:
            return
        spec = next(t for t in CREF if t[0] == test)
        count = spec[2] if self.quick else spec[3]
        if test == "py_fork_wait":
            if hasattr(os, "fork"):
                self.samples[test].append(py_fork_wait(count))
            else:
                self.errors[test] = "no fork on this system"
            return
        cmd = [self.exe, test, str(count)]
        if test == "spawn_exe":
            cmd.append(sys.executable)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            self.errors[test] = "timed out"
            return
        if proc.returncode == 2:
            self.errors[test] = "not available on this system"
        elif proc.returncode != 0:
            self.errors[test] = proc.stderr.strip() or "exit %d" % proc.returncode
        else:
            sec, nb = proc.stdout.split()
            self.samples[test].append(float(sec))
            self.nbytes[test] = int(nb)

    def around(self, bench_name):
        for test, _, _, _, versus in CREF:
            if bench_name in versus:
                self.sample(test)

    def finish(self, reps, bench_names):
        rows = []
        for test, label, _, _, versus in CREF:
            versus = [v for v in versus if v in bench_names]
            if not versus:
                continue
            while len(self.samples[test]) < reps and test not in self.errors:
                self.sample(test)
            values = self.samples[test]
            rows.append({"test": test, "label": label, "versus": list(versus),
                         "best": min(values) if values and test not in self.errors else None,
                         "nbytes": self.nbytes[test], "samples": values,
                         "error": self.errors.get(test)})
        return rows


def fmt_cref(row):
    if row["best"] is None:
        return "n/a"
    if row["nbytes"]:
        rate = row["nbytes"] / row["best"]
        if rate >= (1 << 30):
            return "%.2f GiB/s" % (rate / (1 << 30))
        return "%.0f MiB/s" % (rate / MiB)
    return fmt_time(row["best"])


# ---------------------------------------------------------------------------

def main(argv=None):
    import argparse
    import json
    import platform

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (about a minute)")
    ap.add_argument("--only", metavar="NAME", action="append",
                    help="run the benchmarks whose name contains NAME "
                    "(case-insensitive; repeatable)")
    ap.add_argument("--json", metavar="FILE", help="write every sample as JSON")
    ap.add_argument("--reps", type=int,
                    help="repetitions per library (default 3, or 5 for a full run)")
    ap.add_argument("--start-method", default=None,
                    help="start method for the worker processes (default: fork where it exists)")
    ap.add_argument("--no-peers", action="store_true",
                    help="leave out billiard, multiprocess, faster-fifo")
    ap.add_argument("--no-cref", action="store_true", help="leave out the C reference table")
    ap.add_argument("--workers", type=int, metavar="N", default=os.cpu_count() or 1,
                    help="size of the rows that scale with the machine: N/2 producers + "
                    "N/2 consumers, Pool(N), Pool(2N) oversubscribed "
                    "(default: the CPU count, %(default)s)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be at least 1")

    benches = all_benches(args.workers)
    if args.list:
        for b in benches:
            print(b.name)
        return 0
    if args.only:
        wanted = [w.lower() for w in args.only]
        benches = [b for b in benches if any(w in b.name.lower() for w in wanted)]
        if not benches:
            ap.error("no benchmark matches %s (see --list)" % ", ".join(args.only))
    reps = args.reps or (3 if args.quick else 5)
    if reps < 1:
        ap.error("--reps must be at least 1")
    method = args.start_method or ("fork" if sys.platform.startswith("linux") else "spawn")
    limit = 60 if args.quick else 300

    impls = [Impl("stdlib", "multiprocessing", method),
             Impl("cmultiprocessing", "cmultiprocessing", method)]
    extra = {}
    if not args.no_peers:
        import importlib.util
        for label, modname in (("billiard", "billiard"), ("multiprocess", "multiprocess")):
            if importlib.util.find_spec(modname) is not None:
                peer = Impl(label, modname, method)
                if peer.error is None:
                    impls.append(peer)
        if importlib.util.find_spec("faster_fifo") is not None:
            try:
                extra["faster-fifo"] = FasterFifo(method)
            except Exception:
                pass

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print("cmultiprocessing benchmarks: Python %s on %s, %s CPUs, start method %s, "
          "%d repetitions (median)"
          % (platform.python_version(), platform.platform(terse=True), os.cpu_count(),
             method, reps))
    if load is not None:
        busy = load[0] > (os.cpu_count() or 1) * 0.5
        print("load average %.2f %.2f %.2f%s" % (load + (
            "  (a busy machine: figures will be noisy)" if busy else "",)))
    if impls[1].error:
        print("cmultiprocessing could not be imported (%s): its column is n/a" % impls[1].error)
    if impls[1].mod is not None:
        stale = stale_bytecode(impls[1].mod)
        if stale:
            print("note: %d cmultiprocessing modules have no up-to-date .pyc, so spawned children "
                  "compile them each time (python3 -m compileall %s fixes it)"
                  % (len(stale), os.path.dirname(impls[1].mod.__file__)))
    print("ratio = stdlib time / cmultiprocessing time (above 1: cmultiprocessing is faster);"
          " on 'CPU per message' lines, stdlib CPU / cmultiprocessing CPU;"
          " 'efficiency' = ideal time / measured time")
    print("--workers %d: the P+C queue rows, Pool(%d) and the oversubscribed Pool(%d)"
          % (args.workers, args.workers, 2 * args.workers))
    print()

    sampler, cref_why = None, None
    if not args.no_cref:
        exe, cref_why = cref_binary()
        if exe is not None:
            sampler = CrefSampler(exe, args.quick)

    peer_labels = [i.label for i in impls[2:]] + list(extra)
    table = Table(["benchmark", "stdlib", "cmultiprocessing", "ratio"] + peer_labels,
                  [37, 11, 16, 7] + [max(12, len(p)) for p in peer_labels])
    table.head()
    results = []
    started = time.perf_counter()
    for bench in benches:
        run_on = impls[:2] + [i for i in impls[2:] if i.label in bench.peers]
        run_on += [e for label, e in extra.items() if label in bench.peers]
        if sampler is not None:
            sampler.around(bench.name)
        t_bench = time.perf_counter()
        res = run_bench(bench, run_on, reps, args.quick, limit)
        t_bench = time.perf_counter() - t_bench
        if sampler is not None:
            sampler.around(bench.name)
        r = ratio(res)
        cells = [bench.name, fmt_value(bench, res.get("stdlib")),
                 fmt_value(bench, res.get("cmultiprocessing")),
                 "%.2fx" % r if r is not None else "-"]
        cells += [fmt_value(bench, res.get(p)) for p in peer_labels]
        table.line(cells)
        row = {"name": bench.name, "kind": bench.kind, "nbytes": bench.nbytes,
               "ops": bench.quick if args.quick else bench.full,
               "ratio": r, "wall_seconds": t_bench, "results": res}
        if any("cpu" in e for e in res.values()):
            rc = cpu_ratio(res)
            row["cpu_ratio"] = rc
            table.line(["  CPU per message, all processes", fmt_cpu(res.get("stdlib")),
                        fmt_cpu(res.get("cmultiprocessing")),
                        "%.2fx" % rc if rc is not None else "-"] +
                       [fmt_cpu(res.get(p)) for p in peer_labels])
        results.append(row)

    problems = [(row["name"], label, e["reason"]) for row in results
                for label, e in row["results"].items() if e["status"] != "ok"]
    if problems:
        print()
        print("not measured:")
        for name, label, why in problems:
            print("  %-37s %-16s %s" % (name, label, why[:100]))

    cref = None
    if not args.no_cref:
        print()
        if sampler is None:
            print("C reference skipped: " + cref_why)
        else:
            cref = sampler.finish(reps, {b.name for b in benches})
        if cref:
            print("C reference on this machine (benchmarks/cref/cref.c; the row 'here' is a bare"
                  " os.fork() from this Python): the best of its samples, taken next to the"
                  " benchmarks above")
            by_name = {row["name"]: row for row in results}
            print("'Nx floor': the Python figure takes N times the C floor's time per operation")
            t2 = Table(["C reference", "floor", "floor of", "stdlib", "cmultiprocessing"],
                       [31, 11, 37, 16, 16])
            t2.head()
            for row in cref:
                first = True
                for versus in row["versus"]:
                    cells = [row["label"] if first else "", fmt_cref(row) if first else "",
                             versus]
                    first = False
                    r = by_name.get(versus)
                    for label in ("stdlib", "cmultiprocessing"):
                        e = r["results"].get(label) if r else None
                        if row["best"] is None or not e or e["status"] != "ok":
                            cells.append("-")
                        else:
                            cells.append("%.1fx floor" % (e["median"] / row["best"]))
                    t2.line(cells)
            for row in cref:
                if row["error"]:
                    print("  %s: %s" % (row["test"], row["error"][:200]))
    print()
    print("done in %.0f s" % (time.perf_counter() - started))

    if args.json:
        doc = {"python": platform.python_version(), "platform": platform.platform(),
               "cpus": os.cpu_count(), "loadavg": load, "start_method": method,
               "quick": args.quick, "reps": reps, "workers": args.workers,
               "benchmarks": results, "cref": cref,
               "libraries": {i.label: i.modname for i in impls}}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
