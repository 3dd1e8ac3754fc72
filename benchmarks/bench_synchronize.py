"""Synchronization primitives: cmultiprocessing against the stdlib, in one run.

    PYTHONPATH=<build>:Lib python benchmarks/bench_synchronize.py [--quick]

Each figure is the best of several repetitions (stdlib and
cmultiprocessing alternate), in nanoseconds per
operation; the last column is stdlib time / cmultiprocessing time (above 1
means cmultiprocessing is faster).  The ping-pong uses two processes (fork)
and two semaphores: one round trip is two cross-process hand-offs.
"""
import argparse
import os
import sys
import time

import multiprocessing as std_mp
import cmultiprocessing as c_mp


def best_ns(fn, n, repeat):
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn(n)
        dt = (time.perf_counter_ns() - t0) / n
        best = dt if best is None or dt < best else best
    return best


def lock_acquire_release(ctx):
    lock = ctx.Lock()

    def run(n):
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire()
            release()
    return run


def lock_with(ctx):
    lock = ctx.Lock()

    def run(n):
        for _ in range(n):
            with lock:
                pass
    return run


def rlock_nested(ctx):
    lock = ctx.RLock()

    def run(n):
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire()
            acquire()
            release()
            release()
    return run


def sem_nonblocking_miss(ctx):
    sem = ctx.Semaphore(0)

    def run(n):
        acquire = sem.acquire
        for _ in range(n):
            acquire(False)
    return run


def event_is_set(ctx):
    ev = ctx.Event()

    def run(n):
        is_set = ev.is_set
        for _ in range(n):
            is_set()
    return run


def event_set_clear(ctx):
    ev = ctx.Event()

    def run(n):
        for _ in range(n):
            ev.set()
            ev.clear()
    return run


def condition_notify_nobody(ctx):
    cond = ctx.Condition()

    def run(n):
        with cond:
            notify = cond.notify
            for _ in range(n):
                notify()
    return run


def lock_create(ctx):
    def run(n):
        for _ in range(n):
            ctx.Lock()
    return run


def sem_ping_pong(ctx):
    def run(n):
        ping, pong = ctx.Semaphore(0), ctx.Semaphore(0)
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(n):
                    ping.acquire()
                    pong.release()
            finally:
                os._exit(0)
        for _ in range(n):
            ping.release()
            pong.acquire()
        os.waitpid(pid, 0)
    return run


def condition_ping_pong(ctx):
    """Event.set in one process wakes Event.wait in the other, both ways."""
    def run(n):
        there, back = ctx.Event(), ctx.Event()
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(n):
                    there.wait()
                    there.clear()
                    back.set()
            finally:
                os._exit(0)
        for _ in range(n):
            there.set()
            back.wait()
            back.clear()
        os.waitpid(pid, 0)
    return run


CASES = [
    ("Lock acquire+release", lock_acquire_release, 200_000),
    ("with Lock", lock_with, 200_000),
    ("RLock nested x2", rlock_nested, 100_000),
    ("Semaphore acquire(False) miss", sem_nonblocking_miss, 200_000),
    ("Event.is_set", event_is_set, 100_000),
    ("Event set+clear", event_set_clear, 50_000),
    ("Condition.notify, no waiter", condition_notify_nobody, 100_000),
    ("Lock() creation", lock_create, 2_000),
    ("Semaphore ping-pong (2 procs)", sem_ping_pong, 20_000),
    ("Event ping-pong (2 procs)", condition_ping_pong, 5_000),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    scale, repeat = (0.1, 2) if args.quick else (1.0, 7)
    std_ctx = std_mp.get_context("fork")
    c_ctx = c_mp.get_context("fork")
    print("Python %s, %d CPUs" % (sys.version.split()[0], os.cpu_count()))
    print("%-32s %12s %12s %7s" % ("operation (ns/op)", "stdlib",
                                   "cmp", "ratio"))
    for label, factory, n in CASES:
        n = max(10, int(n * scale))
        # alternate the two so that load from elsewhere hits both alike
        run_std, run_c = factory(std_ctx), factory(c_ctx)
        t_std = t_c = float("inf")
        for _ in range(repeat):
            t_std = min(t_std, best_ns(run_std, n, 1))
            t_c = min(t_c, best_ns(run_c, n, 1))
        print("%-32s %12.0f %12.0f %6.2fx" % (label, t_std, t_c,
                                              t_std / t_c))


if __name__ == "__main__":
    main()
