#!/usr/bin/env python3
"""Run the interpreter's own concurrent.futures test suite on cmultiprocessing.

    python suite/cf_suite.py                 # through `python -m cmultiprocessing`
    python suite/cf_suite.py --stdlib        # the stdlib, same runner
    python suite/cf_suite.py --compare       # both, side by side

The suite is the running interpreter's ``test.test_concurrent_futures`` (a
package from 3.13 on, a module before; the pyenv builds of 3.11.7 and 3.12.1
here ship neither, and the run then says so and writes no result).  Nothing
in it is rewritten: for cmultiprocessing the worker itself runs as
``python -m cmultiprocessing suite/cf_suite.py --worker ...``, so every
``multiprocessing`` that the suite and concurrent.futures import is
cmultiprocessing through the alias (cmultiprocessing.install()), and every
child gets the alias from the command's environment variable.

As suite/stdlib_suite.py does, the tests run in a worker process that reports
each test's start and outcome as it goes; a test that runs longer than
``--test-timeout`` is killed (faulthandler traceback), recorded as hung, and
the run goes on in a new worker; the whole run stops after ``--timeout``.
The worker also reports, at its end, any module of the stdlib's
multiprocessing found in its sys.modules, and the run collects every
leaked-resource warning (the resource tracker's "leaked semaphore" and the
like, support's "Warning -- ..." lines) from the processes' output.
"""
import argparse
import importlib.util
import json
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from stdlib_suite import (common_options, event_lines,  # noqa: E402
                          iter_tests, kill_group,
                          make_reporter, read_events, run_record,
                          run_worker, tail_of)

PACKAGE = "test.test_concurrent_futures"

# Lines of output that mean a resource was leaked or left behind.
WARNING_PATTERNS = re.compile(
    r"leaked (semaphore|shared_memory|folder|file|fd|memory)|"
    r"There appear to be \d+ leaked|Warning -- |ResourceWarning|"
    r"resource_tracker: ")


def has_suite():
    try:
        return importlib.util.find_spec(PACKAGE) is not None
    except ImportError:
        return False


# --------------------------------------------------------------------------
# The worker
# --------------------------------------------------------------------------

def test_id(test):
    module = type(test).__module__
    if module.startswith(PACKAGE + "."):
        module = module[len(PACKAGE) + 1:]
    elif module == PACKAGE:
        module = "test_concurrent_futures"
    return "%s.%s.%s" % (module, type(test).__name__, test._testMethodName)


def worker_main(args):
    import faulthandler
    import unittest

    events = open(args.events, "a", buffering=1, encoding="utf-8")

    def emit(**kw):
        events.write(json.dumps(kw) + "\n")
        events.flush()

    done = set()
    if args.skip_file and os.path.exists(args.skip_file):
        with open(args.skip_file, encoding="utf-8") as f:
            done = {line.strip() for line in f if line.strip()}
    only = re.compile(args.only) if args.only else None
    suite = unittest.defaultTestLoader.loadTestsFromName(PACKAGE)
    selected = unittest.TestSuite()
    for test in iter_tests(suite):
        tid = test_id(test) if isinstance(test, unittest.TestCase) else None
        if tid is None:     # a module that failed to import
            selected.addTest(test)
        elif tid not in done and (only is None or only.search(tid)):
            selected.addTest(test)

    emit(event="begin", count=selected.countTestCases())
    selected.run(make_reporter(emit, test_id, args.test_timeout))
    faulthandler.cancel_dump_traceback_later()
    foreign = []
    if os.environ.get("CMULTIPROCESSING_ALIAS"):
        import _cmultiprocessing_alias
        foreign = _cmultiprocessing_alias.foreign_modules()
    emit(event="end", stdlib_modules=foreign)
    events.close()
    sys.stdout.flush()
    sys.stderr.flush()
    return 0


# --------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------

def run_suite(stdlib, only=None, timeout=1800, test_timeout=180, log=None):
    scratch = tempfile.mkdtemp(prefix="cmp-cf-")
    t_start = time.monotonic()
    outcomes, details, hung, fixture_errors = {}, {}, [], []
    stdlib_modules = []
    stopped = None
    events = os.path.join(scratch, "events.jsonl")
    skip_file = os.path.join(scratch, "done.txt")
    log_path = log or os.path.join(scratch, "worker.log")
    logf = open(log_path, "ab")
    env = dict(os.environ)
    env.pop("CMULTIPROCESSING_ALIAS", None)
    env.setdefault("PYTHONFAULTHANDLER", "1")
    start = [sys.executable] if stdlib else \
        [sys.executable, "-m", "cmultiprocessing"]
    seen_lines = 0
    rounds = 0
    try:
        while True:
            rounds += 1
            remaining = timeout - (time.monotonic() - t_start)
            if remaining <= 0:
                stopped = "time limit of %ds reached" % timeout
                break
            cmd = start + [os.path.abspath(__file__), "--worker",
                           "--events", events, "--skip-file", skip_file,
                           "--test-timeout", str(test_timeout)]
            if only:
                cmd += ["--only", only]
            proc, timed_out = run_worker(cmd, scratch, env, logf, remaining)
            if timed_out:
                stopped = "time limit of %ds reached" % timeout
            lines = event_lines(events)
            current, began, end = read_events(lines[seen_lines:], outcomes,
                                              details, fixture_errors)
            finished = end is not None
            if finished:
                stdlib_modules = end.get("stdlib_modules", [])
            seen_lines = len(lines)
            kill_group(proc)
            if finished or stopped:
                if stopped and current:
                    outcomes[current] = "hung"
                    hung.append({"test": current,
                                 "where": tail_of(log_path, 60)})
                break
            if not began:
                fixture_errors.append({"event": "suite_failed_to_load",
                                       "detail": tail_of(log_path, 60)})
                stopped = "the suite failed to load"
                break
            if current is None:
                fixture_errors.append({"event": "worker_died",
                                       "detail": tail_of(log_path, 60)})
                if rounds > 3:
                    stopped = "worker died outside any test"
                    break
            else:
                outcomes[current] = "hung"
                hung.append({"test": current, "where": tail_of(log_path, 60)})
            with open(skip_file, "w", encoding="utf-8") as f:
                f.write("\n".join(outcomes) + "\n")
    finally:
        logf.close()
        with open(log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        # from where the warning starts: tests print timings without a
        # newline, and a warning often shares their line
        warnings = [line[m.start():].strip() for line in text.splitlines()
                    for m in [WARNING_PATTERNS.search(line)] if m]
        kept_log = log
        if log is None:
            kept_log = os.path.join(tempfile.gettempdir(), "cmp-cf-%s-%s.log"
                                    % ("stdlib" if stdlib else "cmp",
                                       os.getpid()))
            with open(kept_log, "w", encoding="utf-8") as f:
                f.write(text)
        import shutil
        shutil.rmtree(scratch, ignore_errors=True)
    return run_record(stdlib, t_start, stopped, hung, fixture_errors,
                      outcomes, details, warnings=warnings,
                      stdlib_modules=stdlib_modules, log=kept_log)


def summary(result, ref=None, out=sys.stdout):
    t = result["totals"]
    out.write("%s on Python %s: %d passed, %d failed, %d errors, %d skipped, "
              "%d hung in %.0fs; %d leak warnings\n" % (
                  result["implementation"], result["python"], t["passed"],
                  t["failed"], t["errors"], t["skipped"], t["hung"],
                  result["seconds"], len(result["warnings"])))
    for w in result["warnings"][:10]:
        out.write("  warning: %s\n" % w)
    if result["stdlib_modules"]:
        out.write("  STDLIB MODULES LOADED: %s\n" % result["stdlib_modules"])
    if result["stopped"]:
        out.write("  STOPPED: %s\n" % result["stopped"])
    for h in result["hung"]:
        out.write("  HUNG: %s\n" % h["test"])
    if ref is not None:
        missing = sorted(tid for tid, o in ref["tests"].items()
                         if o == "passed" and
                         result["tests"].get(tid) != "passed")
        out.write("  passed by the stdlib, not by cmultiprocessing: %d\n"
                  % len(missing))
        for tid in missing:
            out.write("    %s: %s\n" % (tid, result["tests"].get(tid)))
    out.flush()


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    common_options(p, timeout=1800, test_timeout=180)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args)
    if not has_suite():
        print("Python %d.%d.%d has no %s (its test package lacks it): "
              "nothing to run" % (sys.version_info[:3] + (PACKAGE,)))
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"absent": True, "python": "%d.%d.%d"
                           % sys.version_info[:3]}, f)
        return 0
    ref = None
    if args.compare:
        ref = run_suite(True, args.only, args.timeout, args.test_timeout)
        summary(ref)
    result = run_suite(args.stdlib, args.only, args.timeout,
                       args.test_timeout)
    summary(result, ref)
    if args.show:
        for tid, d in sorted(result["details"].items()):
            if result["tests"].get(tid) not in ("passed", "skipped"):
                print("\n--- %s (%s)\n%s" % (tid, result["tests"][tid], d))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"result": result, "stdlib": ref}, f, indent=1,
                      sort_keys=True)
    bad = result["stopped"] or result["hung"] or result["stdlib_modules"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
