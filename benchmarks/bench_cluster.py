#!/usr/bin/env python3
"""The cluster Pool (cmultiprocessing.cluster, on a 2-worker Dask
LocalCluster) against a local cmultiprocessing Pool(2), and against Ray's
Pool (ray.util.multiprocessing, 2 processes) where Ray is installed.

    python3 benchmarks/bench_cluster.py [--items 100000] [--reps 5]

Rows: map() of ITEMS tiny tasks (x + 1) with the default chunksize; the
same through imap(chunksize=1000); 1,000 apply_async() calls; the map
again, each run after IDLE seconds without work.  Each pool is
made once and warmed by one map before timing (the same for every pool;
that first map is shown on its own, "cold", one run); each other row is the
median of REPS runs (min in brackets).  "vs local" is the row's time / the
local Pool(2)'s: the issue's acceptance is a 100k map within 3x.  Pool
start-up (for the cluster Pool: the LocalCluster, and the pool's runner on
each worker) is timed apart.  Needs cmultiprocessing[dask].
"""
import argparse
import statistics
import sys
import time


# The last row's pause: a cluster Pool idle this long asks the scheduler for
# its workers before its next map (cluster._REFRESH_SECONDS).
IDLE = 1.5


def _tiny(x):
    return x + 1


def _rows(pool, items, reps):
    data = range(items)
    expect = [x + 1 for x in data]
    t0 = time.perf_counter()
    first = pool.map(_tiny, data)                   # warm-up and check
    cold = time.perf_counter() - t0
    assert first == expect
    out = {"first map %d (cold)" % items: (cold, cold)}
    cases = {
        "map %d" % items: lambda: pool.map(_tiny, data),
        "imap %d (chunks of 1000)" % items:
            lambda: sum(1 for _ in pool.imap(_tiny, data, 1000)),
        "1000 apply_async": lambda: [r.get() for r in [
            pool.apply_async(_tiny, (i,)) for i in range(1000)]],
        "map %d after %.1f s idle" % (items, IDLE): lambda: pool.map(
            _tiny, data),
    }
    for name, run in cases.items():
        times = []
        for _ in range(reps):
            if "idle" in name:
                time.sleep(IDLE)
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        out[name] = (statistics.median(times), min(times))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=100000)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)

    import cmultiprocessing
    from cmultiprocessing import cluster

    results, starts = {}, {}
    t0 = time.perf_counter()
    with cmultiprocessing.Pool(2) as pool:
        starts["local Pool(2)"] = time.perf_counter() - t0
        results["local Pool(2)"] = _rows(pool, args.items, args.reps)
    pool.join()

    t0 = time.perf_counter()
    with cluster.Pool(2) as pool:
        starts["cluster Pool, LocalCluster(2)"] = time.perf_counter() - t0
        results["cluster Pool, LocalCluster(2)"] = _rows(pool, args.items,
                                                         args.reps)
    pool.join()

    try:
        from ray.util.multiprocessing import Pool as RayPool
    except ImportError:
        print("ray is not installed: no Ray column")
    else:
        t0 = time.perf_counter()
        pool = RayPool(2)
        try:
            starts["ray Pool(2)"] = time.perf_counter() - t0
            results["ray Pool(2)"] = _rows(pool, args.items, args.reps)
        finally:
            pool.terminate()

    base = results["local Pool(2)"]
    print("\n%-34s %-28s %10s %10s %9s" % ("pool", "benchmark", "median ms",
                                           "(min ms)", "vs local"))
    for kind, rows in results.items():
        for name, (median, best) in rows.items():
            print("%-34s %-28s %10.1f %10.1f %8.2fx" % (
                kind, name, median * 1e3, best * 1e3,
                median / base[name][0]))
    print()
    for kind, secs in starts.items():
        print("start-up of %-34s %6.2f s" % (kind, secs))
    print("Python %s, %d CPUs" % (sys.version.split()[0],
                                  cmultiprocessing.cpu_count()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
