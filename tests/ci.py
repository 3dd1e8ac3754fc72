#!/usr/bin/env python3
"""The project's test run: what `.ci/run` and the README's test command do.

    python3 tests/ci.py                     # unit tests, then the stdlib suite
    python3 tests/ci.py --pythons 3.12 --methods fork
    python3 tests/ci.py --update-ratchet    # raise tests/ratchet.json

For each interpreter (3.12 first, then 3.11 and 3.13 while the time budget
lasts) it makes a virtual environment under .ci-venvs/, installs the package
with its test extra (the C extension built with -Werror), runs the unit tests
with pytest, then runs the interpreter's own multiprocessing suite against
cmultiprocessing and against the stdlib for each start method, printing the
tables side by side.  In CI it also runs the check inside LLDB's embedded
Python (tests/lldb/), the cross-compile check for macOS and Windows
(tools/crosscheck.sh), the Windows platform layer's tests under wine
(tests/platform_c/) and a bounded libFuzzer run of the frame reader and the
handshake (tools/fuzz.sh).

It fails when a unit test fails, or when a suite's pass count falls below the
committed ratchet (tests/ratchet.json).  The ratchet sits 3 tests below the
counts of the last clean-clone run (which equalled the stdlib's), to absorb
the suite's timing flakes on a loaded 2-core machine; raise it with
--update-ratchet as more passes.
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATCHET = os.path.join(ROOT, "tests", "ratchet.json")
VENVS = os.path.join(ROOT, ".ci-venvs")
RESULTS = os.path.join(ROOT, "results")


def log(msg):
    print("[ci %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def find_python(version):
    """An interpreter of the given X.Y version: pyenv's, or one on PATH."""
    candidates = []
    for root in filter(None, [os.environ.get("PYENV_ROOT"),
                              os.path.expanduser("~/.pyenv")]):
        candidates += sorted(glob.glob(os.path.join(
            root, "versions", version + ".*", "bin", "python" + version)),
            reverse=True)
    found = shutil.which("python" + version)
    if found:
        candidates.append(found)
    for c in candidates:
        try:
            out = subprocess.run([c, "-c", "import sys; print('%d.%d' % "
                                  "sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == version:
            return c
    return None


def make_venv(version):
    base = find_python(version)
    if base is None:
        raise SystemExit("no Python %s found (pyenv or PATH)" % version)
    venv = os.path.join(VENVS, "py" + version)
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        log("creating venv for %s from %s" % (version, base))
        subprocess.run([base, "-m", "venv", venv], check=True)
    env = dict(os.environ, CMP_WERROR="1")
    log("installing cmultiprocessing[test] into %s" % venv)
    subprocess.run([py, "-m", "pip", "install", "-q", "--upgrade", "pip",
                    "setuptools", "wheel"], check=True, env=env)
    subprocess.run([py, "-m", "pip", "install", "-q", "--force-reinstall",
                    "--no-deps", ROOT], check=True, env=env)
    subprocess.run([py, "-m", "pip", "install", "-q", ROOT + "[test]"],
                   check=True, env=env)
    return py


def run_pytest(py, version, extra):
    log("unit tests on Python %s" % version)
    junit = os.path.join(RESULTS, "pytest-%s.xml" % version)
    # Run from outside the tree so that the installed package is tested.
    cmd = [py, "-m", "pytest", "-q", "-rfEs", "--timeout=300",
           "--junitxml", junit, os.path.join(ROOT, "tests")] + extra
    proc = subprocess.run(cmd, cwd=RESULTS, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(proc.stdout)
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    tail = proc.stdout.strip().splitlines()[-1:] or [""]
    for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)",
                              tail[0]):
        counts["errors" if word.startswith("error") else word] += int(n)
    ok = proc.returncode in (0, 5) and counts["failed"] == 0 \
        and counts["errors"] == 0
    return ok, counts


def run_suite(py, version, method, timeout, test_timeout, compare=True):
    out = os.path.join(RESULTS, "stdlib-suite-%s-%s.json" % (version, method))
    cmd = [py, os.path.join(ROOT, "tests", "stdlib_suite.py"),
           "--start-method", method, "--json", out,
           "--timeout", str(timeout), "--test-timeout", str(test_timeout)]
    if compare:
        cmd.append("--compare")
    log("stdlib suite on Python %s, %s (cmultiprocessing and stdlib)"
        % (version, method))
    subprocess.run(cmd, cwd=RESULTS, timeout=2 * timeout + 600)
    with open(out, encoding="utf-8") as f:
        return json.load(f)


def load_ratchet():
    if os.path.exists(RATCHET):
        with open(RATCHET, encoding="utf-8") as f:
            return json.load(f)
    return {}


def run_lldb_check(failures):
    log("cmultiprocessing inside LLDB's embedded Python")
    rc = subprocess.run(["sh", os.path.join(ROOT, "tests", "lldb",
                                            "run_lldb_check.sh")],
                        stdin=subprocess.DEVNULL, timeout=1800).returncode
    if rc != 0:
        failures.append("the LLDB check failed (exit %d)" % rc)


def run_platform_checks(failures):
    """The code paths of the platforms that do not run here: every C file
    cross-compiled for macOS arm64 and Windows x64 with -Werror (and linked
    against their system libraries), and the Windows platform layer's C
    tests built with MinGW-w64 and run under wine."""
    for what, script in (("cross-compile check", ["bash", os.path.join(
                              ROOT, "tools", "crosscheck.sh")]),
                         ("Windows platform tests under wine", ["bash",
                          os.path.join(ROOT, "tests", "platform_c",
                                       "run.sh")])):
        log(what)
        rc = subprocess.run(script, stdin=subprocess.DEVNULL,
                            timeout=1800).returncode
        if rc != 0:
            failures.append("%s failed (exit %d)" % (what, rc))


def run_fuzz(failures, py, seconds):
    """The frame reader and the handshake under libFuzzer (tools/fuzz.sh),
    for a bounded time per target, with clang from Debian."""
    log("fuzzing the frame reader and the handshake (%d s a target)" % seconds)
    if not any(shutil.which("clang-%d" % v) for v in range(14, 20)):
        for pkgs in (["clang-16", "libclang-rt-16-dev"],
                     ["clang-14", "libclang-rt-14-dev"]):
            rc = subprocess.run(["apt-get", "install", "-y", "-q"] + pkgs,
                                stdin=subprocess.DEVNULL, timeout=1200,
                                stdout=subprocess.DEVNULL).returncode
            if rc != 0:
                subprocess.run(["apt-get", "update", "-q"],
                               stdin=subprocess.DEVNULL, timeout=600,
                               stdout=subprocess.DEVNULL)
                rc = subprocess.run(["apt-get", "install", "-y", "-q"] + pkgs,
                                    stdin=subprocess.DEVNULL, timeout=1200,
                                    stdout=subprocess.DEVNULL).returncode
            if rc == 0:
                break
    env = dict(os.environ, PYTHON=py,
               FUZZ_OUT=os.path.join(ROOT, "results", "fuzz"))
    rc = subprocess.run(["sh", os.path.join(ROOT, "tools", "fuzz.sh"),
                         str(seconds)], stdin=subprocess.DEVNULL, env=env,
                        timeout=1800).returncode
    if rc != 0:
        failures.append("fuzzing failed (exit %d)" % rc)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pythons",
                   default=os.environ.get("CMP_PYTHONS", "3.12,3.11,3.13"),
                   help="comma-separated X.Y versions, the first one "
                   "required, the others run while the time budget lasts "
                   "(default 3.12,3.11,3.13)")
    p.add_argument("--budget", type=int, default=4500,
                   help="seconds the whole run may take; runs for the "
                   "optional versions that would not fit are skipped and "
                   "reported (default 4500)")
    p.add_argument("--methods", default="fork,spawn,forkserver")
    p.add_argument("--no-suite", action="store_true",
                   help="unit tests only")
    p.add_argument("--no-unit", action="store_true",
                   help="stdlib suite only")
    p.add_argument("--suite-timeout", type=int, default=900,
                   help="time limit for one suite run, seconds")
    p.add_argument("--test-timeout", type=int, default=90,
                   help="time limit for one suite test, seconds")
    p.add_argument("--lldb", choices=["auto", "yes", "no"], default="auto",
                   help="run the check inside LLDB's embedded Python "
                   "(installs lldb with apt); auto: only in CI on Linux")
    p.add_argument("--platforms", choices=["auto", "yes", "no"],
                   default="auto", help="cross-compile for macOS/Windows and "
                   "run the Windows platform tests under wine (installs "
                   "ziglang, mingw-w64 and wine); auto: only in CI")
    p.add_argument("--fuzz", type=int, default=None, metavar="SECONDS",
                   help="fuzz each target for SECONDS (tools/fuzz.sh; "
                   "installs clang with apt); default: 60 in CI, else none")
    p.add_argument("--update-ratchet", action="store_true",
                   help="raise tests/ratchet.json to today's pass counts")
    p.add_argument("pytest_args", nargs="*")
    args = p.parse_args(argv)

    os.makedirs(RESULTS, exist_ok=True)
    ratchet = load_ratchet()
    failures = []
    unit_totals = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    suite_rows = []
    want_lldb = args.lldb == "yes" or (
        args.lldb == "auto" and os.environ.get("CI") == "true"
        and sys.platform.startswith("linux") and shutil.which("apt-get"))
    want_platforms = args.platforms == "yes" or (
        args.platforms == "auto" and os.environ.get("CI") == "true"
        and sys.platform.startswith("linux") and shutil.which("apt-get"))
    fuzz_seconds = args.fuzz
    if fuzz_seconds is None:
        fuzz_seconds = 60 if (os.environ.get("CI") == "true"
                              and sys.platform.startswith("linux")
                              and shutil.which("apt-get")) else 0
    t0 = time.monotonic()
    versions = [v.strip() for v in args.pythons.split(",") if v.strip()]
    skipped = []

    def left():
        return args.budget - (time.monotonic() - t0)

    for index, version in enumerate(versions):
        required = index == 0
        # an optional version needs room for its unit tests and one slow
        # suite run per start method, ours and the stdlib's
        if not required and left() < 600 + 2 * 240 * len(
                args.methods.split(",")):
            skipped.append("Python %s (time budget)" % version)
            continue
        if not required and find_python(version) is None:
            skipped.append("Python %s (not installed)" % version)
            continue
        py = make_venv(version)
        if not args.no_unit:
            ok, counts = run_pytest(py, version, args.pytest_args)
            for k in unit_totals:
                unit_totals[k] += counts[k]
            if not ok:
                failures.append("unit tests failed on %s" % version)
        if args.no_suite:
            continue
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        for done, method in enumerate(methods):
            timeout = args.suite_timeout
            if not required:
                # share what is left of the budget between the runs to go
                # (ours and the stdlib's for each remaining start method)
                runs_left = 2 * (len(methods) - done)
                timeout = int(max(120, min(timeout,
                                           (left() - 60) / runs_left)))
            data = run_suite(py, version, method, timeout,
                             args.test_timeout)
            ours, ref = data["result"], data["stdlib"]
            passed = ours["totals"]["passed"]
            floor = ratchet.get(version, {}).get(method, 0)
            ref_passed = ref["totals"]["passed"] if ref else None
            missing = None
            if ref:
                missing = sum(1 for tid, o in ref["tests"].items()
                              if o == "passed"
                              and ours["tests"].get(tid) != "passed")
            suite_rows.append((version, method, passed, ref_passed, floor,
                               missing))
            if passed < floor:
                failures.append("stdlib suite %s/%s: %d passed, below the "
                                "ratchet's %d" % (version, method, passed,
                                                  floor))
            if args.update_ratchet and passed > floor:
                ratchet.setdefault(version, {})[method] = passed
        if required and want_lldb:
            run_lldb_check(failures)
        if required and want_platforms:
            run_platform_checks(failures)
        if required and fuzz_seconds > 0:
            run_fuzz(failures, py, fuzz_seconds)

    if suite_rows:
        print("\n== stdlib suite: tests passed (cmultiprocessing / stdlib /"
              " ratchet; passed by the stdlib but not by cmultiprocessing) ==")
        for version, method, ours_n, std_n, floor, missing in suite_rows:
            print("  Python %-5s %-11s %4d / %4s / %4d; %s" % (
                version, method, ours_n, "-" if std_n is None else std_n,
                floor, "-" if missing is None else missing))
    if args.update_ratchet:
        with open(RATCHET, "w", encoding="utf-8") as f:
            json.dump(ratchet, f, indent=2, sort_keys=True)
            f.write("\n")
        log("ratchet written: %s" % RATCHET)
    for what in skipped:
        log("not run: " + what)
    for f in failures:
        log("FAILED: " + f)
    if not args.no_unit:
        print("unit: %d passed, %d failed, %d skipped" % (
            unit_totals["passed"],
            unit_totals["failed"] + unit_totals["errors"],
            unit_totals["skipped"]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
