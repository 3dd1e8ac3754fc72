"""Queue / SimpleQueue throughput, cmultiprocessing vs the stdlib, one run.

    PYTHONPATH=build:Lib python bench_queues.py [--quick]
"""
import sys
import time

import multiprocessing as std_mp
import cmultiprocessing as c_mp


class Record:
    """A small object of a user class: pickled by ForkingPickler (no fast
    path), which the queue keeps between puts."""

    def __init__(self, key, value):
        self.key, self.value = key, value


def _producer(q, n, payload, done_marker):
    for _ in range(n):
        q.put(payload)
    q.put(done_marker)


def run_case(mp, kind, nprod, n, payload):
    ctx = mp.get_context("fork")
    q = ctx.SimpleQueue() if kind == "simple" else ctx.Queue()
    procs = [ctx.Process(target=_producer, args=(q, n, payload, None))
             for _ in range(nprod)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    finished = got = 0
    get = q.get
    while finished < nprod:
        if get() is None:
            finished += 1
        else:
            got += 1
    dt = time.perf_counter() - t0
    for p in procs:
        p.join()
    if kind != "simple":
        q.close()
        q.join_thread()
    else:
        q.close()
    assert got == n * nprod, (got, n * nprod)
    return got / dt, got * len(payload if isinstance(payload, bytes) else b"") / dt


CASES = [
    ("Queue, 1 producer, small ints", "queue", 1, 200_000, 12345),
    ("Queue, 1 producer, 64 KiB bytes", "queue", 1, 20_000, b"x" * 65536),
    ("SimpleQueue, 1 producer, small ints", "simple", 1, 200_000, 12345),
    ("Queue, 4 producers, small ints", "queue", 4, 50_000, 12345),
    ("Queue, 4 producers, 64 KiB bytes", "queue", 4, 5_000, b"x" * 65536),
    ("Queue, 1 producer, small tuples", "queue", 1, 100_000, (1, "a", 2.0)),
    ("Queue, 1 producer, small user objects", "queue", 1, 100_000,
     Record(1, "a")),
    ("SimpleQueue, 1 producer, 64 KiB bytes", "simple", 1, 20_000,
     b"x" * 65536),
]


def main():
    quick = "--quick" in sys.argv
    print(f"{'case':42} {'stdlib':>14} {'cmultiproc':>14} {'ratio':>7}")
    for name, kind, nprod, n, payload in CASES:
        if quick:
            n //= 4
        std = run_case(std_mp, kind, nprod, n, payload)
        ours = run_case(c_mp, kind, nprod, n, payload)
        if isinstance(payload, bytes):
            s, o = f"{std[1] / 1e9:.2f} GB/s", f"{ours[1] / 1e9:.2f} GB/s"
        else:
            s, o = f"{std[0] / 1e3:.0f}k msg/s", f"{ours[0] / 1e3:.0f}k msg/s"
        print(f"{name:42} {s:>14} {o:>14} {ours[0] / std[0]:6.2f}x", flush=True)


if __name__ == "__main__":
    main()
