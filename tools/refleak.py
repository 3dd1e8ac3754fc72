"""A pytest plugin that hunts reference leaks the way CPython's `-R 3:3`
does; it needs a debug interpreter (sys.gettotalrefcount).

    PYTHONPATH=tools python3.14-dbg -m pytest -p refleak --refleak 3:3 \\
        --refleak-json out.json tests/test_queues.py

Before pytest's ordinary run, each test is run WARMUPS + RUNS times in a
row, every fixture it uses (module- and session-scoped ones too) set up and
torn down each time; then pytest runs every test once more the ordinary
way, and that run is the one it reports (test failures, teardown errors).
Around each repetition, after a garbage collection and with the
interpreter's caches emptied, it reads three counters:

    refs    sys.gettotalrefcount(): references held, all objects together
    blocks  sys.getallocatedblocks(): memory blocks held by the allocator
    fds     open file descriptors (/proc/self/fd)

The warm-ups fill what is filled once (imports, caches, helper processes:
the resource tracker, the fork server); a test leaks when a counter grew
on every one of the RUNS measured repetitions (CPython's rule: a leak
gives [5, 5, 6] or [10, 1, 1], noise [3, 0, 0] or [8, -8, 1]).

The per-test deltas and the verdict are written as JSON (--refleak-json),
and one line is printed at the end:

    refleak: 212 tests checked (3 warm-ups, 3 runs), 0 leaks

A leak makes the session fail (exit status 1) even when every test passed.
Run it with `-p no:warnings` (the warnings plugin keeps a report of every
warning of every repetition, which reads as a leak) and without
--junitxml, for the same reason.
"""
import gc
import json
import os
import sys

import pytest

COUNTERS = ("refs", "blocks", "fds")


def leaking(deltas):
    """CPython's verdict for one counter: it grew on every measured run."""
    return bool(deltas) and all(d >= 1 for d in deltas)


def verdict(deltas_by_counter):
    """The counters (in COUNTERS order) that leak."""
    return [c for c in COUNTERS if leaking(deltas_by_counter.get(c, []))]


def parse_spec(spec):
    """'3:3' -> (3, 3): warm-ups, measured runs."""
    warm, _, runs = spec.partition(":")
    warm, runs = int(warm), int(runs or 3)
    if warm < 1 or runs < 1:
        raise ValueError("--refleak wants WARMUPS:RUNS, each at least 1")
    return warm, runs


def _fd_count():
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _clear_caches():
    """What CPython's regrtest empties between repetitions, as far as the
    modules these tests use go: caches that fill once per new key."""
    for name, attr in (("re", "purge"), ("struct", "_clearcache"),
                       ("linecache", "clearcache")):
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, attr):
            getattr(mod, attr)()
    typing = sys.modules.get("typing")
    for clean in getattr(typing, "_cleanups", ()):
        clean()
    # isinstance() against an ABC caches the classes it saw (CPython's
    # regrtest clears those of collections.abc the same way)
    import collections.abc
    for name in collections.abc.__all__:
        cls = getattr(collections.abc, name)
        for c in [cls] + cls.__subclasses__():
            clear = getattr(c, "_abc_caches_clear", None)
            if clear is not None:
                clear()
    clear = getattr(sys, "_clear_internal_caches", None) or \
        getattr(sys, "_clear_type_cache", None)
    if clear is not None:
        clear()
    gc.collect()
    gc.collect()


def _sample(buf, k):
    """The counters, in COUNTERS order, into buf[3k:3k+3] (an array, so
    that keeping them makes no object the next sample would count)."""
    _clear_caches()
    buf[3 * k] = sys.gettotalrefcount()
    buf[3 * k + 1] = sys.getallocatedblocks()
    buf[3 * k + 2] = _fd_count()


class RefleakPlugin:
    def __init__(self, warm, runs, json_path):
        self.warm, self.runs, self.json_path = warm, runs, json_path
        self.results = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        """Measure every test first; then pytest's own loop runs them all
        once more, as a plain run (whose results are the ones reported)."""
        if session.testsfailed or session.config.option.collectonly:
            return None
        import faulthandler
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line("refleak: measuring %d tests (%d warm-ups, %d "
                          "runs each)" % (len(session.items), self.warm,
                                          self.runs))
        limit = session.config.getoption("timeout", None) or 300
        for item in session.items:
            # pytest-timeout watches the ordinary run only: a test that
            # hangs here ends the run with every thread's stack printed
            # (--timeout seconds for all its repetitions together)
            faulthandler.dump_traceback_later(float(limit), exit=True)
            try:
                self.results[item.nodeid] = self.measure(item)
            finally:
                faulthandler.cancel_dump_traceback_later()
            if session.shouldstop:
                break
        return None

    def measure(self, item):
        from array import array
        from _pytest.runner import runtestprotocol
        samples = array("q", [0] * (3 * (self.runs + 1)))
        status = "checked"
        for i in range(self.warm + self.runs):
            # the report sections (captured output, logs) of earlier
            # repetitions would read as growth
            item._report_sections = []
            if i == self.warm:
                # (each measured run's "after" is the next one's "before":
                # a clean-up costs more than many a test)
                _sample(samples, 0)
            # Every fixture is set up and torn down with each repetition,
            # as CPython's -R repeats a test module with its setUpModule:
            # a module's fixture may collect what each test made, and a
            # session-scoped one keeps a finalizer of each function
            # fixture that used it (tmp_path does) until it is torn down.
            reports = runtestprotocol(item, log=False, nextitem=None)
            outcome = _outcome(reports)
            del reports
            item._report_sections = []
            if outcome != "passed":
                status = outcome
                break
            if i >= self.warm:
                _sample(samples, i - self.warm + 1)
        deltas = {c: [] for c in COUNTERS}
        if status == "checked":
            for k in range(self.runs):
                for j, c in enumerate(COUNTERS):
                    deltas[c].append(samples[3 * (k + 1) + j] -
                                     samples[3 * k + j])
        return dict(status=status, leaks=verdict(deltas), **deltas)

    def summary(self):
        checked = [t for t, r in self.results.items()
                   if r["status"] == "checked"]
        leaks = {t: r for t, r in self.results.items() if r["leaks"]}
        return dict(python=sys.version.split()[0], warmups=self.warm,
                    runs=self.runs, checked=len(checked),
                    not_checked={t: r["status"]
                                 for t, r in self.results.items()
                                 if r["status"] != "checked"},
                    leaks={t: {c: r[c] for c in r["leaks"]}
                           for t, r in leaks.items()},
                    tests=self.results)

    def pytest_sessionfinish(self, session):
        data = self.summary()
        if self.json_path:
            with open(self.json_path, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.write("\n")
        if data["leaks"] and session.exitstatus == 0:
            session.exitstatus = 1

    def pytest_terminal_summary(self, terminalreporter):
        data = self.summary()
        tr = terminalreporter
        for test, counters in sorted(data["leaks"].items()):
            tr.write_line("refleak: LEAK %s %s" % (test, " ".join(
                "%s=%s" % (c, d) for c, d in counters.items())))
        tr.write_line("refleak: %d tests checked (%d warm-ups, %d runs), "
                      "%d leaks" % (data["checked"], self.warm, self.runs,
                                    len(data["leaks"])))


def _outcome(reports):
    """How a repetition went, by its set-up and call.  A failed teardown
    does not stop the measuring: every finalizer still ran, and with the
    module's fixtures torn down after each repetition a module fixture's
    own check of the whole module (test_shared_memory's: some segment was
    made) may fail for a test alone; the ordinary run after the measuring
    reports teardowns as pytest always does."""
    for rep in reports:
        if rep.when != "teardown" and rep.failed:
            return "failed"
    for rep in reports:
        if rep.skipped:
            return "skipped"
    return "passed"


def pytest_addoption(parser):
    group = parser.getgroup("refleak", "reference leak hunting (debug "
                            "interpreter)")
    group.addoption("--refleak", metavar="WARMUPS:RUNS", default=None,
                    help="run each test WARMUPS+RUNS times and fail on a "
                    "counter that grew on each of the RUNS (e.g. 3:3)")
    group.addoption("--refleak-json", metavar="FILE", default=None,
                    help="write the per-test deltas and leaks here")


def pytest_configure(config):
    spec = config.getoption("--refleak")
    if not spec:
        return
    if not hasattr(sys, "gettotalrefcount"):
        raise pytest.UsageError("--refleak needs a debug build of Python "
                                "(sys.gettotalrefcount)")
    warm, runs = parse_spec(spec)
    config.pluginmanager.register(
        RefleakPlugin(warm, runs, config.getoption("--refleak-json")),
        "refleak-runner")
