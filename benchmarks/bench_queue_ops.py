#!/usr/bin/env python3
"""The code of one Queue.put() and one Queue.get(), with no other process:
what a message costs a producer and a consumer before any cache line has to
travel between CPUs.

    python3 benchmarks/bench_queue_ops.py                 # cmultiprocessing beside the stdlib
    python3 benchmarks/bench_queue_ops.py --python A --python B   # two builds

One sample puts `--batch` small ints into a queue and gets them back, in one
process, `--batches` times, and keeps the best batch of each (the per-call
time with the least disturbance); a run is `--runs` samples per
contender, alternating, each in a fresh process, and prints their medians.
With --python (twice or more) the contenders are those interpreters'
cmultiprocessing, for an A/B of two builds (each a venv with the package
installed); otherwise the running interpreter's cmultiprocessing and
multiprocessing.  The stdlib's put() hands the message to its feeder thread
and its get() reads the pipe, so its figures include a thread switch now
and then; the cross-process rows of bench.py are the ones that count for a
pipeline, this one says what the C code of each call costs.
"""
import argparse
import statistics
import subprocess
import sys

SAMPLE = r"""
import sys, time
mod = __import__(sys.argv[1])
batch, batches = int(sys.argv[2]), int(sys.argv[3])
def main():
    q = mod.get_context("fork").Queue()
    put, get = q.put, q.get
    best_put = best_get = float("inf")
    for _ in range(batches):
        t0 = time.perf_counter()
        for i in range(batch):
            put(i)
        t1 = time.perf_counter()
        for i in range(batch):
            if get() != i:
                raise SystemExit("out of order")
        t2 = time.perf_counter()
        best_put = min(best_put, t1 - t0)
        best_get = min(best_get, t2 - t1)
    q.close()
    q.join_thread()
    print(best_put / batch * 1e9, best_get / batch * 1e9)
main()
"""


def sample(python, module, batch, batches):
    out = subprocess.run([python, "-c", SAMPLE, module, str(batch),
                          str(batches)], capture_output=True, text=True,
                         timeout=300)
    if out.returncode != 0:
        raise SystemExit("%s %s failed:\n%s" % (python, module, out.stderr))
    put, get = map(float, out.stdout.split())
    return put, get


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", action="append", default=[],
                    help="an interpreter whose cmultiprocessing to time "
                         "(twice or more: an A/B of builds)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--batches", type=int, default=400)
    args = ap.parse_args()
    if len(args.python) == 1:
        ap.error("--python: give two or more, or none")
    if args.python:
        contenders = [(p, p, "cmultiprocessing") for p in args.python]
    else:
        contenders = [("stdlib", sys.executable, "multiprocessing"),
                      ("cmultiprocessing", sys.executable, "cmultiprocessing")]
    results = {label: [] for label, _, _ in contenders}
    for r in range(args.runs):
        order = contenders if r % 2 == 0 else contenders[::-1]
        for label, python, module in order:
            results[label].append(sample(python, module, args.batch,
                                         args.batches))
    first = contenders[0][0]
    base = [statistics.median(c) for c in zip(*results[first])]
    print("one process, %d small ints put then got, best of %d batches; "
          "medians of %d runs" % (args.batch, args.batches, args.runs))
    print("%-40s %10s %10s %8s %8s" % ("", "put", "get", "put", "get"))
    for label, _, _ in contenders:
        put, get = (statistics.median(c) for c in zip(*results[label]))
        print("%-40s %7.1f ns %7.1f ns %7.2fx %7.2fx" % (
            label[-40:], put, get, base[0] / put, base[1] / get))
    print("(ratios: the first row's time over each row's; above 1: faster)")


if __name__ == "__main__":
    main()
