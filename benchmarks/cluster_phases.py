#!/usr/bin/env python3
"""Where the time of a cluster Pool's map goes: a map of ITEMS tiny tasks
(x + 1) on a 2-worker LocalCluster, warm (one map first), with timestamps
taken in the client (the pool's engine, wrapped) and in the workers (their
_run_batch, wrapped; perf_counter is one clock for the whole machine).

    python3 benchmarks/cluster_phases.py [--items 100000] [--reps 11]

Each phase is the median of REPS maps (min..max).  A diagnostic, reaching
into cluster.py's engine: see bench_cluster.py for the comparison with a
local pool.  Needs cmultiprocessing[dask].
"""
import argparse
import statistics
import sys
import time

from cmultiprocessing import cluster

EVENTS = []


def _tiny(x):
    return x + 1


def _mark(name, key=None):
    EVENTS.append((time.perf_counter(), name, key))


def _timed_batch(payloads, init_blob, budget):
    # runs in the workers (pickled by value from __main__)
    import time
    import cmultiprocessing.cluster as mod
    start = time.perf_counter()
    blobs = mod._real_run_batch(payloads, init_blob, budget)
    mod.__dict__.setdefault('_phases', []).append(
        (start, time.perf_counter()))
    return blobs


def _install_in_worker():
    import cmultiprocessing.cluster as mod
    if not hasattr(mod, '_real_run_batch'):
        mod._real_run_batch = mod._run_batch
    mod._run_batch = _timed_batch


def _worker_times():
    import cmultiprocessing.cluster as mod
    return mod.__dict__.pop('_phases', [])


def _wrap_engine():
    engine = cluster._Engine
    submit, deliver, call = engine.submit, engine._deliver, engine._call

    def timed_submit(self, *args):
        result = submit(self, *args)
        _mark('submitted')
        return result

    def timed_deliver(self, *args):
        result = deliver(self, *args)
        _mark('delivered')
        return result

    async def timed_call(self, slot, batch):
        result = await call(self, slot, batch)
        _mark('reply', slot.address)
        return result
    engine.submit, engine._deliver, engine._call = (
        timed_submit, timed_deliver, timed_call)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=100000)
    p.add_argument("--reps", type=int, default=11)
    args = p.parse_args(argv)
    _wrap_engine()
    _timed_batch.__module__ = '__main__'
    phases = {}
    with cluster.Pool(2) as pool:
        pool.client.run(_install_in_worker)
        data = range(args.items)
        pool.map(_tiny, data)
        for _ in range(args.reps):
            pool.client.run(_worker_times)
            EVENTS.clear()
            t0 = time.perf_counter()
            pool.map(_tiny, data)
            t1 = time.perf_counter()
            runs = {w: v[0] for w, v in pool.client.run(_worker_times).items()
                    if v}
            seen = {}
            for t, name, key in EVENTS:
                seen.setdefault((name, key), []).append(t)
            submitted = seen[('submitted', None)][0]
            replies = sorted(seen[('reply', w)][0] for w in runs)
            delivered = seen[('delivered', None)]
            row = {
                'pickle the chunks, queue them (client)': submitted - t0,
                'queued -> first worker thread starts':
                    min(a for a, _ in runs.values()) - submitted,
                'a chunk on its worker (the longest)':
                    max(b - a for a, b in runs.values()),
                'chunk ends -> reply on the client (the longest)':
                    max(seen[('reply', w)][0] - runs[w][1] for w in runs),
                'reply -> delivered (unpickle, unpack; 1st)':
                    delivered[0] - replies[0],
                'reply -> delivered (last)': delivered[-1] - replies[-1],
                'total': t1 - t0,
            }
            for name, secs in row.items():
                phases.setdefault(name, []).append(secs)
    pool.join()
    print("map of %d tiny tasks, 2-worker LocalCluster, %d warm runs"
          % (args.items, args.reps))
    for name, secs in phases.items():
        print("%-48s %7.2f ms  [%5.2f..%5.2f]" % (
            name, statistics.median(secs) * 1e3, min(secs) * 1e3,
            max(secs) * 1e3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
