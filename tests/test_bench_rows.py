"""benchmarks/bench.py's scaling rows work and count what they measure, and
the lookup that ctx.RawArray & co. go through still behaves as the stdlib's
from-imports do.  (Correctness only: no timing is asserted here.)"""
import importlib.util
import os
import sys

import pytest

import cmultiprocessing
from cmultiprocessing import context

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "cmp_bench_under_test", os.path.join(ROOT, "benchmarks", "bench.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class BatchQueue:
    """A queue of scripted get_many() answers that records put()s."""

    def __init__(self, batches):
        self.batches = list(batches)
        self.put_back = []

    def get_many(self, max_messages_to_get):
        return self.batches.pop(0)[:max_messages_to_get]

    def put(self, item):
        self.put_back.append(item)


def test_batched_consumer_returns_extra_end_markers(bench):
    q = BatchQueue([[b"m"] * 3, [b"m", None, None, None]])
    assert bench._consume(q, 64) == 4
    assert q.put_back == [None, None]   # for the other two consumers
    assert q.batches == []


def test_consumer_stops_at_its_end_marker(bench):
    q = cmultiprocessing.SimpleQueue()
    for item in (b"a", b"b", None, b"left for another"):
        q.put(item)
    assert bench._consume(q, 1) == 2
    assert q.get() == b"left for another"
    q.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the rows run under fork")
@pytest.mark.parametrize("pairs", [1, 2])
def test_producer_consumer_row_counts_every_message(bench, pairs):
    impl = bench.Impl("cmultiprocessing", "cmultiprocessing", "fork")
    sec, extras = bench.pc_queue_bench(pairs, 16)(impl, 200)
    assert sec > 0 and extras["cpu"] > 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the rows run under fork")
def test_batched_row_uses_put_many(bench):
    impl = bench.Impl("cmultiprocessing", "cmultiprocessing", "fork")
    row = bench.pc_queue_bench(1, 16, batch=8)
    assert hasattr(cmultiprocessing.queues.Queue, "put_many")
    sec, extras = row(impl, 100)
    assert sec > 0 and extras["cpu"] > 0


def test_gated_run_reports_cpu_and_results(bench):
    ctx = cmultiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    stats, order = {}, []
    elapsed = bench.gated_run(ctx, [(bench._cpu_task, (20000,)), (bench._noop, ())],
                              stats=stats, after=(1, lambda: order.append("after")))
    assert elapsed > 0 and order == ["after"]
    assert stats["results"] == [bench._cpu_task(20000), None]
    assert stats["cpu"] > 0


def test_scaling_rows_follow_workers(bench):
    names = [b.name for b in bench.all_benches(16)]
    for row in ("Queue, 16 B msgs, 1+1 procs", "Queue, 16 B msgs, 2+2 procs",
                "Queue, 16 B msgs, 8+8 procs", "Queue, 16 B, put/get_many x64, 8+8",
                "Pool(16).map, tiny tasks", "Pool(16).apply_async, tiny",
                "Pool(32) oversubscribed, 2 ms CPU tasks"):
        assert row in names
    assert len(names) == len(set(names))
    two = [b.name for b in bench.all_benches(2)]
    assert "Queue, 16 B msgs, 2+2 procs" in two and "Pool(4).map, tiny tasks" not in two


def test_efficiency_is_each_sample_against_its_own_ideal(bench):
    # (seconds, ideal) per sample: stdlib 25%, 100%, 60%; ours 50%, 90%, 70%
    runs = {"stdlib": iter([(0.004, 0.001), (0.002, 0.002), (0.010, 0.006)]),
            "cmultiprocessing": iter([(0.002, 0.001), (0.010, 0.009),
                                      (0.010, 0.007)])}

    class Impl:
        def __init__(self, label):
            self.label = label

        def cleanup(self):
            pass

    def fn(impl, n):
        sec, ideal = next(runs[impl.label])
        return sec, {"ideal": ideal}

    row = bench.Bench("x", fn, 1, 1, kind="efficiency")
    res = bench.run_bench(row, [Impl("stdlib"), Impl("cmultiprocessing")], 3,
                          False, 60)
    # the median of the samples' efficiencies, not median ideal / median
    # time (which would say 50% for the stdlib)
    assert bench.fmt_value(row, res["stdlib"]) == "60%"
    assert bench.fmt_value(row, res["cmultiprocessing"]) == "70%"
    assert abs(bench.ratio(res) - 70 / 60) < 1e-9


def test_sibling_sees_a_patched_attribute(monkeypatch):
    from cmultiprocessing import sharedctypes
    ctx = cmultiprocessing.get_context()
    ctx.RawValue("i")                            # the module found once
    monkeypatch.setattr(sharedctypes, "RawValue", lambda *a: ("patched", a))
    assert ctx.RawValue("i", 3) == ("patched", ("i", 3))


def test_sibling_follows_a_module_replaced_in_sys_modules(monkeypatch):
    name = "cmultiprocessing.sharedctypes"
    context._sibling("sharedctypes", "RawValue")
    stand_in = type(sys)("stand-in")
    stand_in.RawValue = lambda *a: "from the stand-in"
    monkeypatch.setitem(sys.modules, name, stand_in)
    assert context._sibling("sharedctypes", "RawValue")() == "from the stand-in"
    monkeypatch.undo()
    assert context._sibling("sharedctypes", "RawValue") is \
        sys.modules[name].RawValue


@pytest.mark.timeout(120)
def test_queue_ops_script_times_both_and_checks_the_order():
    # benchmarks/bench_queue_ops.py, tiny: both rows printed with their
    # figures; its sample raises on a message out of order
    import re
    import subprocess
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_queue_ops.py"),
         "--runs", "1", "--batch", "50", "--batches", "2"],
        capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(
        r"^(stdlib|cmultiprocessing)\s+([\d.]+) ns", out.stdout, re.M)}
    assert set(rows) == {"stdlib", "cmultiprocessing"}, out.stdout
    assert all(v > 0 for v in rows.values())
