#!/usr/bin/env python3
"""Run the interpreter's own multiprocessing test suite against cmultiprocessing.

    python suite/stdlib_suite.py --start-method fork            # cmultiprocessing
    python suite/stdlib_suite.py --start-method fork --stdlib   # the stdlib, same runner
    python suite/stdlib_suite.py --start-method spawn --compare # both, side by side

The suite is the running interpreter's ``test/_test_multiprocessing.py``.  For
cmultiprocessing it is copied into a scratch folder with the module names
rewritten (``multiprocessing`` -> ``cmultiprocessing``, ``_multiprocessing`` ->
``_cmultiprocessing``, and its own name); nothing else in it changes.  The
helper scripts it runs (every ``mp_*.py`` beside it: ``mp_fork_bomb.py``,
``mp_preload*.py``) are rewritten beside it.

The tests run in a worker process that reports every test's start and outcome
as it goes.  A test that runs longer than ``--test-timeout`` is killed with a
traceback of every thread (faulthandler), recorded as hung, and the run goes on
in a new worker after it; the whole run is stopped after ``--timeout``.
Results go to ``--json`` and a table per test class goes to stdout.
"""
import argparse
import collections
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

# The copy keeps "test_multiprocessing.py" in its file name: some tests look
# for it in tracebacks.
SUITE_MODULE = "_cmp_test_multiprocessing"

# Tests that cannot apply to a package outside the standard library, with the
# reason.  They are not run and count as not passed.
NOT_APPLICABLE = {
    # 3.14+: imports the package in a child started with -I -S, where only
    # the standard library is importable (no site-packages, no PYTHONPATH).
    # tests/test_context.py checks the same property (importing the package
    # loads neither tempfile, shutil nor subprocess, and fixes no method).
    r"TestStartMethod\.test_import_does_not_determine_default_start_method":
        "imports the package under -I -S, where no installed package "
        "outside the standard library can be imported",
}

OUTCOMES = ("passed", "failed", "errors", "skipped", "hung", "n/a")


# --------------------------------------------------------------------------
# Preparing the suite
# --------------------------------------------------------------------------

def stdlib_test_dir():
    spec = importlib.util.find_spec("test._test_multiprocessing")
    if spec is None or spec.origin is None:
        sys.exit("this interpreter has no test._test_multiprocessing "
                 "(install its test package)")
    return os.path.dirname(spec.origin)


_NAME_RULES = [
    (re.compile(r"\btest\._test_multiprocessing\b"), SUITE_MODULE),
    # the forkserver preloads the module holding the generated test classes
    (re.compile(r"\btest\.test_multiprocessing_forkserver\b"),
     "_cmp_suite_forkserver"),
    (re.compile(r"(?<![\w.])_multiprocessing\b"), "_cmultiprocessing"),
    (re.compile(r"(?<!\w)multiprocessing\b"), "cmultiprocessing"),
]


def rewrite_names(text):
    for pattern, replacement in _NAME_RULES:
        text = pattern.sub(replacement, text)
    return text


def prepare_suite(folder, stdlib):
    """Write the suite module into folder; return its module name."""
    src_dir = stdlib_test_dir()
    if stdlib:
        return "test._test_multiprocessing"
    with open(os.path.join(src_dir, "_test_multiprocessing.py"),
              encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(folder, SUITE_MODULE + ".py"), "w",
              encoding="utf-8") as f:
        f.write(rewrite_names(text))
    for script in sorted(os.listdir(src_dir)):
        path = os.path.join(src_dir, script)
        if script.startswith("mp_") and script.endswith(".py"):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            with open(os.path.join(folder, script), "w",
                      encoding="utf-8") as f:
                f.write(rewrite_names(text))
    link_package_under_test(folder)
    return SUITE_MODULE


def link_package_under_test(folder):
    """Make the package importable from the suite's folder (its children's
    working directory) too: some tests start interpreters with -E -S, which
    see neither PYTHONPATH nor site-packages, only the current directory."""
    for name in ("cmultiprocessing", "_cmultiprocessing"):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            sys.exit("cannot find %s to test: install the package or set "
                     "PYTHONPATH" % name)
        if spec.submodule_search_locations:
            src = list(spec.submodule_search_locations)[0]
        else:
            src = spec.origin
        os.symlink(src, os.path.join(folder, os.path.basename(src)))


# --------------------------------------------------------------------------
# The worker: runs tests, reports each as a JSON line
# --------------------------------------------------------------------------

def worker_main(args):
    import faulthandler
    import unittest

    events = open(args.events, "a", buffering=1, encoding="utf-8")

    def emit(**kw):
        events.write(json.dumps(kw) + "\n")
        events.flush()

    # Like the stdlib's test_multiprocessing_<method> packages: a real module
    # file holds the generated classes, so that spawned children can import
    # them by name.
    holder_name = "_cmp_suite_" + args.start_method
    with open(holder_name + ".py", "w", encoding="utf-8") as f:
        f.write("from %s import install_tests_in_module_dict\n"
                "install_tests_in_module_dict(globals(), %r)\n"
                % (args.suite_module, args.start_method))
    sys.path.insert(0, os.getcwd())
    holder = importlib.import_module(holder_name)

    loader = unittest.TestLoader()
    done = set()
    if args.skip_file and os.path.exists(args.skip_file):
        with open(args.skip_file, encoding="utf-8") as f:
            done = {line.strip() for line in f if line.strip()}
    only = re.compile(args.only) if args.only else None
    exclude = re.compile(args.exclude) if args.exclude else None

    def wanted(test):
        tid = test_id(test)
        if tid in done:
            return False
        if only and not only.search(tid):
            return False
        if exclude and exclude.search(tid):
            return False
        return True

    def test_id(test):
        return "%s.%s" % (type(test).__name__, test._testMethodName)

    selected = unittest.TestSuite()
    for test in iter_tests(loader.loadTestsFromModule(holder)):
        if wanted(test):
            selected.addTest(test)

    result = make_reporter(emit, test_id, args.test_timeout)
    emit(event="begin", count=selected.countTestCases())
    selected.run(result)
    faulthandler.cancel_dump_traceback_later()
    emit(event="end")
    events.close()
    # Leave like the suite's own tearDownModule would have; skip interpreter
    # shutdown work that a broken implementation could hang in.
    sys.stdout.flush()
    sys.stderr.flush()
    return 0


def make_reporter(emit, test_id, test_timeout):
    """A unittest result that emits one JSON event per test start and
    outcome (the worker's report, shared with cf_suite.py); a test running
    past test_timeout seconds has every thread's traceback dumped and the
    worker exits."""
    import faulthandler
    import unittest

    class Reporter(unittest.TestResult):
        def startTest(self, test):
            super().startTest(test)
            self._t0 = time.monotonic()
            emit(event="start", test=test_id(test))
            faulthandler.dump_traceback_later(test_timeout, exit=True)

        def _out(self, test, outcome, detail=""):
            faulthandler.cancel_dump_traceback_later()
            emit(event="outcome", test=test_id(test), outcome=outcome,
                 seconds=round(time.monotonic() - getattr(self, "_t0",
                                                          time.monotonic()),
                               3),
                 detail=detail[-4000:])

        def addSuccess(self, test):
            super().addSuccess(test)
            self._out(test, "passed")

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._out(test, "failed", self.failures[-1][1])

        def addError(self, test, err):
            super().addError(test, err)
            if isinstance(test, unittest.TestCase):
                self._out(test, "errors", self.errors[-1][1])
            else:   # a class or module fixture failed
                emit(event="fixture_error", test=str(test),
                     detail=self.errors[-1][1][-4000:])

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            if isinstance(test, unittest.TestCase):
                self._out(test, "skipped", reason)

        def addExpectedFailure(self, test, err):
            super().addExpectedFailure(test, err)
            self._out(test, "passed", "expected failure")

        def addUnexpectedSuccess(self, test):
            super().addUnexpectedSuccess(test)
            self._out(test, "failed", "unexpected success")

        def addSubTest(self, test, subtest, err):
            super().addSubTest(test, subtest, err)
            if err is not None:
                # a failing subtest fails its test; the outcome line for
                # the test itself follows from unittest as a success, so
                # record the failure now and let the collector keep the worst.
                kind = "failed" if issubclass(err[0], test.failureException) \
                    else "errors"
                detail = (self.failures if kind == "failed"
                          else self.errors)[-1][1]
                emit(event="outcome", test=test_id(test), outcome=kind,
                     seconds=0, detail=("subtest %s\n" % subtest) + detail[-4000:])

    return Reporter()


def read_events(lines, outcomes, details, fixture_errors):
    """Fold one worker's event lines into outcomes, details and
    fixture_errors (shared with cf_suite.py).  Returns (the test started
    and not finished, or None; whether the worker began; its "end" event,
    or None)."""
    current, began, end = None, False, None
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        kind = ev.get("event")
        if kind == "start":
            current = ev["test"]
        elif kind == "outcome":
            tid = ev["test"]
            outcomes[tid] = worst(ev["outcome"], outcomes.get(tid, "passed"))
            if ev["outcome"] != "passed" and ev.get("detail"):
                details[tid] = ev["detail"]
            current = None
        elif kind == "fixture_error":
            fixture_errors.append(ev)
        elif kind == "begin":
            began = True
        elif kind == "end":
            end = ev
    return current, began, end


def iter_tests(suite):
    import unittest
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item


# --------------------------------------------------------------------------
# The driver: starts workers, survives hangs, collects and prints
# --------------------------------------------------------------------------

def worst(a, b):
    order = {"passed": 0, "skipped": 1, "failed": 2, "errors": 3, "hung": 4}
    return a if order.get(a, 0) >= order.get(b, 0) else b


def run_suite(start_method, stdlib, only=None, exclude=None, timeout=1500,
              test_timeout=120, log=None, python=None):
    """Run one start method; return the result dict."""
    python = python or sys.executable
    scratch = tempfile.mkdtemp(prefix="cmp-suite-")
    t_start = time.monotonic()
    outcomes = {}
    details = {}
    hung = []
    fixture_errors = []
    stopped = None
    try:
        module = prepare_suite(scratch, stdlib)
        events = os.path.join(scratch, "events.jsonl")
        skip_file = os.path.join(scratch, "done.txt")
        logf = open(log or os.path.join(scratch, "worker.log"), "ab")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [scratch] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                         if p])
        env.setdefault("PYTHONFAULTHANDLER", "1")
        # Let the 6,000-line suite be compiled once, not in every child.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        seen_lines = 0
        rounds = 0
        while True:
            rounds += 1
            remaining = timeout - (time.monotonic() - t_start)
            if remaining <= 0:
                stopped = "time limit of %ds reached" % timeout
                break
            cmd = [python, os.path.abspath(__file__), "--worker",
                   "--start-method", start_method, "--suite-module", module,
                   "--events", events, "--skip-file", skip_file,
                   "--test-timeout", str(test_timeout)]
            if only:
                cmd += ["--only", only]
            if exclude:
                cmd += ["--exclude", exclude]
            proc, timed_out = run_worker(cmd, scratch, env, logf, remaining)
            if timed_out:
                stopped = "time limit of %ds reached" % timeout
            lines = event_lines(events)     # what this worker reported
            current, began, end = read_events(lines[seen_lines:], outcomes,
                                              details, fixture_errors)
            finished = end is not None
            seen_lines = len(lines)
            # the processes a test left behind would disturb the next worker
            kill_group(proc)
            if finished or stopped:
                if stopped and current:
                    outcomes[current] = "hung"
                    hung.append({"test": current,
                                 "where": tail_of(logf.name, 60)})
                break
            if not began:
                fixture_errors.append({"event": "suite_failed_to_load",
                                       "detail": tail_of(logf.name, 60)})
                stopped = "the suite failed to load"
                break
            if current is None:
                # the worker died between tests
                fixture_errors.append({"event": "worker_died",
                                       "detail": tail_of(logf.name, 60)})
                if rounds > 3:
                    stopped = "worker died outside any test"
                    break
            else:
                outcomes[current] = "hung"
                hung.append({"test": current, "where": tail_of(logf.name, 60)})
            with open(skip_file, "w", encoding="utf-8") as f:
                f.write("\n".join(outcomes) + "\n")
        logf.close()
    finally:
        worker_log = os.path.join(scratch, "worker.log")
        kept_log = None
        if os.path.exists(worker_log) and log is None:
            kept_log = os.path.join(tempfile.gettempdir(),
                                    "cmp-suite-%s-%s-%s.log" % (
                                        "stdlib" if stdlib else "cmp",
                                        start_method, os.getpid()))
            shutil.copy(worker_log, kept_log)
        shutil.rmtree(scratch, ignore_errors=True)
    for pattern, reason in (() if stdlib else NOT_APPLICABLE.items()):
        for tid in list(outcomes):
            if re.fullmatch(pattern, tid):
                outcomes[tid] = "n/a"
                details[tid] = reason
    return run_record(stdlib, t_start, stopped, hung, fixture_errors,
                      outcomes, details, start_method=start_method,
                      log=log or kept_log, not_applicable=NOT_APPLICABLE)


def run_record(stdlib, t_start, stopped, hung, fixture_errors, outcomes,
               details, **extra):
    """What one run of a suite runner reports (the --json file)."""
    record = {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "implementation": "stdlib" if stdlib else "cmultiprocessing",
        "seconds": round(time.monotonic() - t_start, 1),
        "stopped": stopped,
        "hung": hung,
        "fixture_errors": fixture_errors,
        "totals": totals(outcomes),
        "classes": per_class(outcomes),
        "tests": outcomes,
        "details": details,
    }
    record.update(extra)
    return record


def run_worker(cmd, cwd, env, log, seconds):
    """Start one worker in a session of its own, its output to `log`, and
    wait for it at most `seconds` (then kill its group).  Returns (proc,
    timed_out); the caller kills the group again (kill_group) once it has
    read the events, for children the worker left behind."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        proc.wait(timeout=seconds)
        return proc, False
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return proc, True


def event_lines(events):
    """The lines a worker has written to its events file so far."""
    if not os.path.exists(events):
        return []
    with open(events, encoding="utf-8") as f:
        return f.readlines()


def kill_group(proc):
    import signal
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def tail_of(path, nlines):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 20000))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-nlines:])


def totals(outcomes):
    counts = collections.Counter(outcomes.values())
    return {k: counts.get(k, 0) for k in OUTCOMES}


def per_class(outcomes):
    classes = collections.defaultdict(collections.Counter)
    for tid, outcome in outcomes.items():
        classes[tid.rsplit(".", 1)[0]][outcome] += 1
    return {name: {k: c.get(k, 0) for k in OUTCOMES}
            for name, c in sorted(classes.items())}


# --------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------

def fmt_counts(c):
    if c is None:
        return "%4s %4s %4s %4s" % ("-", "-", "-", "-")
    bad = c["failed"] + c["errors"] + c["hung"] + c["n/a"]
    return "%4d %4d %4d %4d" % (c["passed"], bad, c["skipped"],
                                c["passed"] + bad + c["skipped"])


def print_table(ours, ref=None, out=sys.stdout):
    title = "%s on Python %s, start method %s" % (
        ours["implementation"], ours["python"], ours["start_method"])
    out.write("\n== stdlib test suite: %s ==\n" % title)
    header = "%-46s %19s" % ("test class", "pass fail skip  all")
    if ref:
        header += "  |  %19s" % "stdlib: pass fail skip all"
    out.write(header + "\n")
    names = sorted(set(ours["classes"]) | set(ref["classes"] if ref else ()))
    for name in names:
        row = "%-46s %19s" % (name[:46], fmt_counts(ours["classes"].get(name)))
        if ref:
            row += "  |  %19s" % fmt_counts(ref["classes"].get(name))
        out.write(row + "\n")
    t = ours["totals"]
    out.write("%-46s %19s" % ("TOTAL", fmt_counts(t)))
    if ref:
        out.write("  |  %19s" % fmt_counts(ref["totals"]))
    out.write("\n")
    out.write("  %s: %d passed, %d failed, %d errors, %d skipped, %d hung, "
              "%d n/a in %.0fs\n" % (ours["implementation"], t["passed"],
                                     t["failed"], t["errors"], t["skipped"],
                                     t["hung"], t["n/a"], ours["seconds"]))
    if ref:
        r = ref["totals"]
        out.write("  stdlib: %d passed, %d failed, %d errors, %d skipped, "
                  "%d hung in %.0fs\n" % (r["passed"], r["failed"],
                                          r["errors"], r["skipped"],
                                          r["hung"], ref["seconds"]))
        missing = sorted(tid for tid, o in ref["tests"].items()
                         if o == "passed" and
                         ours["tests"].get(tid) not in ("passed", "n/a"))
        out.write("  passed by the stdlib, not by cmultiprocessing: %d "
                  "(not applicable here: %d)\n" % (len(missing), t["n/a"]))
    for h in ours["hung"]:
        out.write("  HUNG: %s\n" % h["test"])
    if ours["stopped"]:
        out.write("  STOPPED: %s\n" % ours["stopped"])
    for fe in ours["fixture_errors"][:5]:
        out.write("  fixture error: %s\n    %s\n" % (
            fe.get("test", fe.get("event")),
            fe.get("detail", "").strip().splitlines()[-1:]))
    out.flush()


def common_options(p, timeout, test_timeout):
    """The options of both suite runners (this one and cf_suite.py), with
    the hidden ones of their worker mode."""
    p.add_argument("--stdlib", action="store_true",
                   help="run against the stdlib's multiprocessing instead")
    p.add_argument("--compare", action="store_true",
                   help="run the stdlib too and print them side by side")
    p.add_argument("--only", help="regex: run only tests whose id "
                   "(Class.test_name) matches")
    p.add_argument("--timeout", type=float, default=timeout,
                   help="time limit for the whole run, seconds")
    p.add_argument("--test-timeout", type=float, default=test_timeout,
                   help="time limit for one test, seconds")
    p.add_argument("--json", help="write results here")
    p.add_argument("--show", action="store_true",
                   help="print the details of tests that did not pass")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--events", help=argparse.SUPPRESS)
    p.add_argument("--skip-file", help=argparse.SUPPRESS)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start-method", "-m", default="fork",
                   choices=["fork", "spawn", "forkserver"])
    common_options(p, timeout=1500, test_timeout=120)
    p.add_argument("--exclude", help="regex: leave out matching tests")
    p.add_argument("--suite-module", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        return worker_main(args)

    ref = None
    if args.compare:
        ref = run_suite(args.start_method, True, args.only, args.exclude,
                        args.timeout, args.test_timeout)
    result = run_suite(args.start_method, args.stdlib, args.only,
                       args.exclude, args.timeout, args.test_timeout)
    print_table(result, ref)
    if args.show:
        for tid, outcome in sorted(result["tests"].items()):
            if outcome not in ("passed", "skipped"):
                print("\n--- %s: %s\n%s" % (tid, outcome,
                                          result["details"].get(tid, "")))
        for h in result["hung"]:
            print("\n--- HUNG %s\n%s" % (h["test"], h["where"]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"result": result, "stdlib": ref}, f, indent=1,
                      sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
