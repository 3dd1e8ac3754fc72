#!/usr/bin/env python3
"""The project's test run: what `.ci/run` and the README's test command do.

    python3 suite/ci.py                       # everything (about an hour here)
    python3 suite/ci.py --pythons 3.12 --methods fork --no-extras
    python3 suite/ci.py --pythons 3.14 --compare   # also re-run the stdlib
    python3 suite/ci.py --pythons 3.12 --no-unit --no-extras --only Queue

For each interpreter it makes a virtual environment under .ci-venvs/,
installs the package with its test and lint extras (the C extension built
with -Werror), runs the unit tests with pytest (tests/; tests/test_lint.py
runs ruff and clang-format over the tree), then runs that interpreter's own
multiprocessing suite (test/_test_multiprocessing.py) against
cmultiprocessing: under every start method on 3.12 and 3.14, under the
version's default method on 3.11, 3.13 and 3.15.  3.11-3.13 come from pyenv
(or PATH); 3.14 and 3.15 from a Debian sid chroot made and reused by
tools/sid-pythons.sh (about two minutes the first time).

The suite is not re-run for the stdlib in CI: each row is compared with the
stdlib's own result for the same interpreter, committed in
suite/stdlib_results.json (which tests the stdlib passes).  `--compare` runs
the stdlib beside ours instead, `--record-stdlib` writes that file from such
runs.

Then, on each interpreter, CPython's test_concurrent_futures runs on
cmultiprocessing through the alias (suite/cf_suite.py: the worker is
`python -m cmultiprocessing`), compared with the stdlib's own results for
the same interpreter, committed in suite/stdlib_cf_results.json
(`--record-cf-from` writes it from `suite/cf_suite.py --stdlib --json`
runs); the row fails on a test the stdlib passes and we do not, a hang, a
leak warning the stdlib's run does not have, or a module of the stdlib's
multiprocessing loaded under the alias.  Interpreters without that suite
(the pyenv builds of 3.11 and 3.12 here) say so in the table.  After the
first interpreter, CI also runs the check inside LLDB's embedded Python
(tests/lldb/: lldb-16 here, lldb-21 in the sid chroot), the C embedding host
on every version (tests/embed/), the cross-compile check for macOS and Windows
(tools/crosscheck.sh), the Windows platform layer's tests under wine
(tests/platform_c/), a bounded libFuzzer run (tools/fuzz.sh), and real
libraries' own suites on the stdlib and through the alias, compared test by
test (suite/clients.py: pebble).  Then the unit tests once more on an
extension built with ASan and UBSan (the runtime preloaded into every
process; a sanitizer report anywhere fails the stage), and a reference-leak
run of the unit tests of the C-heavy modules on the sid chroot's
python3.14-dbg (tools/refleak.py, CPython's -R 3:3 rule), and the cluster
Pool's tests with cmultiprocessing[dask] in a venv of its own (a LocalCluster,
and namespaces for the multi-host test; tests/test_cluster*.py).

Every run has a time limit.  The run fails when a unit test fails, when a
suite row passes fewer tests than the committed ratchet (suite/ratchet.json,
a few below the last clean-clone counts, to absorb timing flakes on a loaded
2-core machine), or when a planned row did not run (no interpreter, no time
left).  It ends with the suite table and a table of every stage's time.
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

HERE = os.path.dirname(os.path.abspath(__file__))     # suite/
ROOT = os.path.dirname(HERE)
RATCHET = os.path.join(HERE, "ratchet.json")
STDLIB_RESULTS = os.path.join(HERE, "stdlib_results.json")
CF_RESULTS = os.path.join(HERE, "stdlib_cf_results.json")
VENVS = os.path.join(ROOT, ".ci-venvs")
RESULTS = os.path.join(ROOT, "results")
SID = os.path.join(ROOT, "tools", "sid-pythons.sh")

# The versions Debian sid provides for this project (tools/sid-pythons.sh).
SID_VERSIONS = ("3.14", "3.15")
DEFAULT_PYTHONS = "3.12,3.14,3.11,3.13,3.15"
ALL_METHODS_ON = "3.12,3.14"
METHODS = ("fork", "spawn", "forkserver")


def log(msg):
    print("[ci %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def default_method(version):
    """The start method that version's stdlib picks on this platform."""
    if sys.platform in ("win32", "darwin"):
        return "spawn"
    return "forkserver" if tuple(map(int, version.split("."))) >= (3, 14) \
        else "fork"


class Stages:
    """Wall-clock time of each stage, printed as a table at the end."""

    def __init__(self):
        self.rows = []
        self.figures = {}      # row index -> what the stage counted

    def run(self, name, func, *args, judge=None, **kwargs):
        """func(*args, **kwargs), timed; its row says FAILED when it returns
        False, or when judge(result) is false."""
        t0 = time.monotonic()
        status = "ok"
        try:
            result = func(*args, **kwargs)
            if result is False or (judge is not None and not judge(result)):
                status = "FAILED"
            return result
        except subprocess.TimeoutExpired:
            status = "TIMED OUT"
            raise
        except BaseException:
            status = "ERROR"
            raise
        finally:
            self.rows.append((name, time.monotonic() - t0, status))

    def fail_last(self):
        """Mark the last stage FAILED (a verdict reached after it ran)."""
        name, secs, status = self.rows[-1]
        if status == "ok":
            self.rows[-1] = (name, secs, "FAILED")

    def note(self, name, status):
        self.rows.append((name, 0.0, status))

    def annotate(self, figures):
        """Figures of the last stage (tests run, leaks...), for its row."""
        self.figures[len(self.rows) - 1] = figures

    def print(self, total):
        print("\n== stage times ==")
        for i, (name, secs, status) in enumerate(self.rows):
            line = "  %-52s %7.0f s  %s" % (name, secs, status)
            if i in self.figures:
                line += "  (%s)" % self.figures[i]
            print(line)
        print("  %-52s %7.0f s" % ("total", total))


class Interpreter:
    """A Python X.Y to test with: on this machine, or in the sid chroot
    (then every command runs through tools/sid-pythons.sh run)."""

    def __init__(self, version, base, in_sid):
        self.version, self.base, self.in_sid = version, base, in_sid
        self.venv = os.path.join(VENVS, "py" + version)
        self.python = os.path.join(self.venv, "bin", "python")

    def cmd(self, args):
        return (["bash", SID, "run"] + args) if self.in_sid else args

    def run(self, args, timeout=None, check=False, **kwargs):
        """subprocess.run in a session of its own: a time-out kills the
        whole group (in the chroot, the wrapper's children too)."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        with subprocess.Popen(self.cmd(args), start_new_session=True,
                              **kwargs) as proc:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired as e:
                kill_group(proc)
                out, _ = proc.communicate()
                e.output = out
                raise
            except BaseException:
                kill_group(proc)
                raise
        if check and proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, args)
        return subprocess.CompletedProcess(args, proc.returncode, out, err)


def kill_group(proc):
    import signal
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


def find_host_python(version):
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


def find_interpreter(version, stages):
    """Interpreter for version, or None (the reason is logged)."""
    base = find_host_python(version)
    if base is not None:
        return Interpreter(version, base, False)
    if version not in SID_VERSIONS or not sys.platform.startswith("linux"):
        log("no Python %s found (pyenv or PATH)" % version)
        return None
    if not os.path.exists(os.path.join(_sid_dir(), ".cmp-sid-ready")) or \
            not os.path.exists(os.path.join(_sid_dir(), "usr", "bin",
                                            "python" + version)):
        rc = stages.run("sid chroot (tools/sid-pythons.sh setup)",
                        lambda: subprocess.run(
                            ["bash", SID, "setup"], stdin=subprocess.DEVNULL,
                            timeout=1800).returncode == 0)
        if not rc:
            log("the sid chroot for Python %s could not be made" % version)
            return None
    return Interpreter(version, "python" + version, True)


def _sid_dir():
    return subprocess.run(["bash", SID, "path"], capture_output=True,
                          text=True).stdout.strip()


def make_venv(interp):
    env = dict(os.environ, CMP_WERROR="1")
    if not os.path.exists(interp.python):
        log("creating venv for %s from %s%s" % (
            interp.version, interp.base, " (sid chroot)" if interp.in_sid
            else ""))
        interp.run([interp.base, "-m", "venv", interp.venv], check=True,
                   timeout=600)
    log("installing cmultiprocessing[test,lint] into %s" % interp.venv)
    py = interp.python
    interp.run(["env", "CMP_WERROR=1", py, "-m", "pip", "install", "-q",
                "--upgrade", "pip", "setuptools", "wheel"], check=True,
               env=env, timeout=900)
    interp.run(["env", "CMP_WERROR=1", py, "-m", "pip", "install", "-q",
                "--force-reinstall", "--no-deps", ROOT], check=True, env=env,
               timeout=900)
    # the test extra, and the lint extra for tests/test_lint.py (ruff and
    # clang-format, pinned in pyproject.toml)
    interp.run(["env", "CMP_WERROR=1", py, "-m", "pip", "install", "-q",
                ROOT + "[test,lint]"], check=True, env=env, timeout=900)
    return True


def run_pytest(interp, extra, timeout):
    log("unit tests on Python %s" % interp.version)
    junit = os.path.join(RESULTS, "pytest-%s.xml" % interp.version)
    # Run from outside the tree so that the installed package is tested.
    cmd = [interp.python, "-m", "pytest", "-q", "-rfEs", "--timeout=300",
           "-p", "no:cacheprovider", "--junitxml", junit,
           os.path.join(ROOT, "tests")] + extra
    output, rc = pytest_output(interp, cmd, timeout)
    counts = pytest_counts(output)
    ok = rc in (0, 5) and counts["failed"] == 0 and counts["errors"] == 0
    return ok, counts


def pytest_output(interp, cmd, timeout):
    """(output, exit status) of a pytest run from RESULTS, echoed; a run
    stopped by its time limit gives -1 and says so."""
    try:
        proc = interp.run(cmd, cwd=RESULTS, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
        output, rc = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as e:
        output = (e.output or b"").decode("utf-8", "replace") \
            if isinstance(e.output, bytes) else (e.output or "")
        output += "\nunit tests stopped after %d s\n" % timeout
        rc = -1
    sys.stdout.write(output)
    return output, rc


def pytest_counts(output):
    """passed/failed/skipped/errors from pytest's closing line (the last
    line that has them: a helper process may write after it)."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    pattern = r"(\d+) (passed|failed|skipped|errors?)\b"
    for line in reversed(output.strip().splitlines()):
        found = re.findall(pattern, line)
        if found and re.search(r" in [\d.]+s", line):
            for n, word in found:
                counts["errors" if word.startswith("error") else word] += \
                    int(n)
            break
    return counts


def run_suite(interp, method, timeout, test_timeout, compare, only=None):
    out = os.path.join(RESULTS, "stdlib-suite-%s-%s.json"
                       % (interp.version, method))
    if os.path.exists(out):
        os.unlink(out)
    cmd = [interp.python, os.path.join(HERE, "stdlib_suite.py"),
           "--start-method", method, "--json", out,
           "--timeout", str(timeout), "--test-timeout", str(test_timeout)]
    if compare:
        cmd.append("--compare")
    if only:
        cmd += ["--only", only]
    log("stdlib suite on Python %s, %s (cmultiprocessing%s), limit %d s"
        % (interp.version, method, " and stdlib" if compare else "",
           timeout))
    return run_runner(interp, cmd, out, (2 if compare else 1) * timeout,
                      "the suite runner itself")


def run_cf(interp, timeout, test_timeout, only=None):
    """CPython's test_concurrent_futures on cmultiprocessing (through the
    alias); the result dict, or None where the runner failed."""
    out = os.path.join(RESULTS, "cf-suite-%s.json" % interp.version)
    if os.path.exists(out):
        os.unlink(out)
    cmd = [interp.python, os.path.join(HERE, "cf_suite.py"),
           "--json", out, "--timeout", str(timeout),
           "--test-timeout", str(test_timeout)]
    if only:
        cmd += ["--only", only]
    log("test_concurrent_futures on Python %s (cmultiprocessing through "
        "the alias), limit %d s" % (interp.version, timeout))
    return run_runner(interp, cmd, out, timeout,
                      "the test_concurrent_futures runner")


def run_runner(interp, cmd, out, limit, what):
    """Run a suite runner that writes its result to out, given limit
    seconds (and 300 more for its own set-up and teardown, past which it
    is killed); the result dict, or None where the runner failed."""
    try:
        interp.run(cmd, cwd=RESULTS, timeout=limit + 300)
    except subprocess.TimeoutExpired:
        log("%s overran its limit" % what)
    if not os.path.exists(out):
        return None
    with open(out, encoding="utf-8") as f:
        return json.load(f)


def _tracker_warnings(lines):
    """The resource tracker's leak reports among the warning lines, each
    reduced to its kind and count ("6 leaked semaphore")."""
    found = []
    for line in lines:
        m = re.search(r"There appear to be (\d+) leaked (\w+)", line)
        if m:
            found.append("%s leaked %s" % m.groups())
    return sorted(found)


def record_cf_row(data, recorded, version, failures, narrowed=False):
    """A table row for test_concurrent_futures on version, judged against
    the stdlib's committed result (narrowed: by --only, so only against the
    tests that ran)."""
    if data is None:
        failures.append("test_concurrent_futures %s: no result (the runner "
                        "failed)" % version)
        return dict(version=version, not_run="runner failed")
    if data.get("absent"):
        return dict(version=version, python=data["python"],
                    not_run="this Python has no test_concurrent_futures")
    ours = data["result"]
    passed = {t for t, o in ours["tests"].items() if o == "passed"}
    entry = recorded.get(version)
    std = None if not entry or entry.get("absent") else set(entry["passed"])
    if narrowed and std is not None:
        std &= set(ours["tests"])
    missing = None if std is None else sorted(std - passed)
    leaks = _tracker_warnings(ours["warnings"])
    std_leaks = None if not entry else sorted(entry.get("leaks", []))
    extra_leaks = [w for w in leaks if std_leaks is None or
                   leaks.count(w) > std_leaks.count(w)]
    row = dict(version=version, python=ours["python"], passed=len(passed),
               stdlib=None if std is None else len(std),
               stdlib_python=entry and entry.get("python"),
               missing=missing, hung=ours["totals"]["hung"],
               leaks=leaks, stdlib_leaks=std_leaks,
               stdlib_modules=ours["stdlib_modules"],
               seconds=ours["seconds"], stopped=ours.get("stopped"))
    if missing:
        failures.append("test_concurrent_futures %s: %d tests the stdlib "
                        "passes did not pass" % (version, len(missing)))
    if std is None:
        failures.append("test_concurrent_futures %s: no stdlib result "
                        "recorded in %s" % (version, CF_RESULTS))
    if ours["totals"]["hung"] or ours.get("stopped"):
        failures.append("test_concurrent_futures %s: hung or stopped"
                        % version)
    if extra_leaks:
        failures.append("test_concurrent_futures %s: leak warnings the "
                        "stdlib's run does not give: %s"
                        % (version, extra_leaks))
    if ours["stdlib_modules"]:
        failures.append("test_concurrent_futures %s: the stdlib's "
                        "multiprocessing was loaded: %s"
                        % (version, ours["stdlib_modules"]))
    return row


def print_cf_table(rows):
    if not rows:
        return
    print("\n== CPython's test_concurrent_futures through the alias: tests "
          "passed by cmultiprocessing, by the stdlib (same interpreter), "
          "leak warnings (ours / the stdlib's) ==")
    print("  %-8s %6s %7s %5s %7s  %s" % ("Python", "ours", "stdlib", "hung",
                                         "seconds", "leak warnings"))
    for r in rows:
        if r.get("not_run"):
            print("  %-8s NOT RUN: %s" % (r.get("python", r["version"]),
                                          r["not_run"]))
            continue
        std = "-" if r["stdlib"] is None else str(r["stdlib"])
        print("  %-8s %6d %7s %5d %7.0f  %s / %s" % (
            r["python"], r["passed"], std, r["hung"], r["seconds"],
            ", ".join(r["leaks"]) or "none",
            "-" if r["stdlib_leaks"] is None else
            (", ".join(r["stdlib_leaks"]) or "none")))
        for tid in (r["missing"] or [])[:15]:
            print("      not passed: %s" % tid)
        if r["stdlib_modules"]:
            print("      STDLIB MODULES LOADED: %s" % r["stdlib_modules"])
        if r.get("stopped"):
            print("      STOPPED: %s" % r["stopped"])
    sys.stdout.flush()


def record_cf_from(paths):
    """suite/stdlib_cf_results.json from `cf_suite.py --stdlib --json`
    files (a file of an interpreter without the suite records that)."""
    recorded = load_json(CF_RESULTS)
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("absent"):
            version = ".".join(data["python"].split(".")[:2])
            recorded[version] = {"python": data["python"], "absent": True}
            log("%s: no test_concurrent_futures" % data["python"])
            continue
        result = data.get("stdlib") or data["result"]
        if result["implementation"] != "stdlib":
            raise SystemExit("%s: not a run of the stdlib" % path)
        version = ".".join(result["python"].split(".")[:2])
        passed = sorted(t for t, o in result["tests"].items()
                        if o == "passed")
        recorded[version] = {"python": result["python"], "passed": passed,
                             "leaks": _tracker_warnings(result["warnings"])}
        log("%s: the stdlib passed %d of test_concurrent_futures (%s)"
            % (result["python"], len(passed), path))
    write_json(CF_RESULTS, recorded)
    return 0


def load_json(path):
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return {}


def write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


def stdlib_reference(data, recorded, version, method):
    """(python version string, set of test ids the stdlib passed) for this
    row: from this run when it also ran the stdlib, else as committed."""
    if data and data.get("stdlib"):
        ref = data["stdlib"]
        return ref["python"], {t for t, o in ref["tests"].items()
                               if o == "passed"}, "this run"
    entry = recorded.get(version, {}).get(method)
    if not entry:
        return None, None, "none recorded"
    return entry["python"], set(entry["passed"]), "recorded"


def run_lldb_check():
    log("cmultiprocessing inside LLDB's embedded Python")
    return subprocess.run(["sh", os.path.join(ROOT, "tests", "lldb",
                                              "run_lldb_check.sh")],
                          stdin=subprocess.DEVNULL,
                          timeout=1800).returncode == 0


def run_embed_check(versions):
    """tests/embed/: a C program embedding each version's libpython, with
    no python program to be found (pyenv's here, sid's in the chroot)."""
    script = os.path.join(ROOT, "tests", "embed", "run_embed_check.sh")
    ok = True
    for version in versions:
        log("cmultiprocessing in a C program embedding Python %s" % version)
        base = find_host_python(version)
        if base is not None:
            argv = ["sh", script, base]
        elif version in SID_VERSIONS and os.path.exists(
                os.path.join(_sid_dir(), ".cmp-sid-ready")):
            argv = ["bash", SID, "run", "sh", script, "python" + version]
        else:
            log("embed check %s: no Python %s" % (version, version))
            ok = False
            continue
        try:
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL,
                                timeout=900).returncode
        except subprocess.TimeoutExpired:
            log("embed check %s: stopped after 900 s" % version)
            rc = 1
        ok = ok and rc == 0
    return ok


def run_lldb21_sid_check():
    """The LLDB check with lldb-21 (it embeds Python 3.14) in the chroot."""
    log("cmultiprocessing inside LLDB 21's embedded Python (sid chroot)")
    if subprocess.run(["bash", SID, "--lldb", "setup"],
                      stdin=subprocess.DEVNULL, timeout=1800).returncode:
        return False
    return subprocess.run(["bash", SID, "run", "sh",
                           os.path.join(ROOT, "tests", "lldb",
                                        "run_lldb_check.sh"), "21"],
                          stdin=subprocess.DEVNULL,
                          timeout=1800).returncode == 0


def run_script(what, argv, timeout=1800, env=None):
    log(what)
    return subprocess.run(argv, stdin=subprocess.DEVNULL, env=env,
                          timeout=timeout).returncode == 0


def ensure_clang():
    if any(shutil.which("clang-%d" % v) for v in range(14, 20)):
        return
    for pkgs in (["clang-16", "libclang-rt-16-dev"],
                 ["clang-14", "libclang-rt-14-dev"]):
        for attempt in range(2):
            if attempt:
                subprocess.run(["apt-get", "update", "-q"],
                               stdin=subprocess.DEVNULL, timeout=600,
                               stdout=subprocess.DEVNULL)
            if subprocess.run(["apt-get", "install", "-y", "-q"] + pkgs,
                              stdin=subprocess.DEVNULL, timeout=1200,
                              stdout=subprocess.DEVNULL).returncode == 0:
                return


def run_fuzz(py, seconds):
    """The frame reader, the handshake and the queue's decoder under
    libFuzzer (tools/fuzz.sh), for a bounded time per target, with clang
    from Debian."""
    ensure_clang()
    env = dict(os.environ, PYTHON=py,
               FUZZ_OUT=os.path.join(ROOT, "results", "fuzz"))
    return run_script("fuzzing the frame reader, the handshake and the "
                      "queue's decoder (%d s a target)" % seconds,
                      ["sh", os.path.join(ROOT, "tools", "fuzz.sh"),
                       str(seconds)], env=env)


# ------------------------------------------ sanitizers and reference leaks

# The unit tests on an extension built with -fsanitize=address,undefined
# (setup.py's CMP_SANITIZE) by clang into a venv of their own, with the
# ASan runtime preloaded into every process: the children of fork, spawn
# and the fork server inherit the environment.  clang, as tools/fuzz.sh:
# its shared ASan runtime holds UBSan too, so both write their reports
# where log_path says (gcc's separate libubsan writes to stderr, which a
# test may swallow).
ASAN_SANITIZE = "address,undefined"
# Unit tests the sanitized run leaves out, and why.
ASAN_DESELECT = {
    "tests/test_build.py": "builds sdists and wheels with pip and the "
    "compiler: packaging, where none of our C runs but the compiler would "
    "run under the preloaded runtime (a third of the stage's time)",
    "tests/test_pool.py::test_worker_dying_by_other_signals[SIGSEGV in C]":
    "a worker segfaults on purpose (ctypes.string_at(0)): ASan reports the "
    "SEGV and ends the worker with exit status 1, not the signal the test "
    "expects",
}
# The reference-leak run: a debug interpreter from the sid chroot, the
# unit tests of the modules with the most C under them, each repeated
# (tools/refleak.py: 3 warm-ups, then 3 measured runs).
REFLEAK_PYTHON = "python3.14-dbg"
REFLEAK_TESTS = ("test_connection.py", "test_queues.py", "test_synchronize.py",
                 "test_robust_locks.py", "test_heap.py", "test_queue_ring.py",
                 "test_shared_memory.py", "test_sharedctypes.py",
                 "test_pool.py")
REFLEAK_RUNS = "3:3"
# Tests of those files the refleak run leaves out, and why.
REFLEAK_DESELECT = {}


def sanitizer_env(runtime, logdir):
    """The environment of the sanitized run: the runtime preloaded, every
    report written to a file in logdir (a child's stderr may go nowhere)."""
    return {
        "LD_PRELOAD": runtime,
        # CPython does not free all it allocated at exit, so LeakSanitizer
        # would report the interpreter's own memory in every process.
        # allocator_may_return_null: a huge malloc() gives NULL (and a
        # MemoryError) as it would without ASan, not a report.
        "ASAN_OPTIONS": "detect_leaks=0:allocator_may_return_null=1:"
                        "log_path=%s/asan" % logdir,
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:"
                         "log_path=%s/ubsan" % logdir,
        # every object in malloc'd memory, where ASan sees overruns
        "PYTHONMALLOC": "malloc",
    }


def sanitizer_reports(logdir):
    """[(file name, text)] of the sanitizer reports written in logdir."""
    if not os.path.isdir(logdir):
        return []
    found = []
    for name in sorted(os.listdir(logdir)):
        with open(os.path.join(logdir, name), encoding="utf-8",
                  errors="replace") as f:
            found.append((name, f.read()))
    return found


def judge_asan(rc, counts, reports):
    """(ok, figures) of the sanitized unit-test run."""
    ok = rc == 0 and counts["passed"] > 0 and counts["failed"] == 0 and \
        counts["errors"] == 0 and not reports
    figures = "%d passed, %d failed, %d skipped, %d sanitizer reports" % (
        counts["passed"], counts["failed"] + counts["errors"],
        counts["skipped"], len(reports))
    return ok, figures


def judge_refleak(rc, counts, data):
    """(ok, figures, leak lines) of the reference-leak run; data is
    tools/refleak.py's JSON, or None when it wrote none."""
    if data is None:
        return False, "no result (the run did not finish)", []
    leaks = ["%s: %s" % (test, ", ".join(
        "%s grew by %s" % (c, d) for c, d in sorted(counters.items())))
        for test, counters in sorted(data["leaks"].items())]
    failed = counts["failed"] + counts["errors"]
    ok = rc == 0 and not leaks and failed == 0 and data["checked"] > 0
    figures = "%d tests checked, %d leaks, %d failed" % (
        data["checked"], len(leaks), failed)
    return ok, figures, leaks


def _test_requirements():
    """The test extra of pyproject.toml (pytest and its time-out plugin)."""
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]["test"]


def _venv_of(interp, venv, deadline):
    """A venv for interp at venv (made once), with the test extra."""
    interp.venv, interp.python = venv, os.path.join(venv, "bin", "python")
    if not os.path.exists(interp.python):
        interp.run([interp.base, "-m", "venv", venv], check=True,
                   timeout=_left(deadline))
        interp.run([interp.python, "-m", "pip", "install", "-q",
                    "--upgrade", "pip", "setuptools", "wheel"], check=True,
                   timeout=_left(deadline))
    interp.run([interp.python, "-m", "pip", "install", "-q"] +
               _test_requirements(), check=True, timeout=_left(deadline))
    return interp


def _left(deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise subprocess.TimeoutExpired("stage", 0)
    return left


def _copy_tree(dest):
    """A copy of the sources to build from: pip builds in the tree, and the
    ordinary build folder of the same interpreter would hand it the
    unsanitized extension as up to date."""
    if os.path.exists(dest):
        shutil.rmtree(dest)

    def ignore(folder, names):
        return [n for n in names if n in (".git", "build", "dist", "results",
                                          ".ci-venvs", "__pycache__") or
                n.endswith((".so", ".o", ".egg-info")) or
                n.startswith("_cmp_launcher")]
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def find_clang():
    """The newest clang-NN on PATH (Debian's), else clang, else None."""
    for v in range(25, 13, -1):
        if shutil.which("clang-%d" % v):
            return "clang-%d" % v
    return shutil.which("clang")


def run_asan(interp, timeout):
    """The unit tests on the extension built with ASan and UBSan; a
    sanitizer report from any process fails the stage."""
    deadline = time.monotonic() + timeout
    ensure_clang()
    cc = find_clang()
    if cc is None:
        log("ASan+UBSan: no clang (apt-get install clang-16 "
            "libclang-rt-16-dev)")
        return {"ok": False, "figures": "no clang"}
    runtime = subprocess.run([cc, "-print-file-name=libclang_rt.asan-"
                              "x86_64.so"], stdout=subprocess.PIPE,
                             text=True, check=True, timeout=60).stdout.strip()
    san = Interpreter(interp.version, interp.base, False)
    log("ASan+UBSan: building the extension for Python %s with %s "
        "-fsanitize=%s" % (interp.version, cc, ASAN_SANITIZE))
    _venv_of(san, os.path.join(VENVS, "asan-" + interp.version), deadline)
    src = _copy_tree(os.path.join(VENVS, "asan-src"))
    # -shared-libsan: the extension needs the runtime's shared library
    # (preloaded below), as a program linked with -fsanitize would
    build_env = ["env", "CC=" + cc, "LDFLAGS=-shared-libsan",
                 "CMP_WERROR=1", "CMP_SANITIZE=" + ASAN_SANITIZE]
    san.run(build_env + [san.python, "-m", "pip", "install", "-q",
                         "--force-reinstall", "--no-deps", src],
            check=True, timeout=_left(deadline))
    logdir = os.path.join(RESULTS, "asan-reports")
    if os.path.exists(logdir):
        shutil.rmtree(logdir)
    os.makedirs(logdir)
    env = ["env"] + ["%s=%s" % kv for kv in
                     sorted(sanitizer_env(runtime, logdir).items())]
    cmd = env + [san.python, "-m", "pytest", "-q", "-rfEs", "--timeout=300",
                 "-p", "no:cacheprovider", "--junitxml",
                 os.path.join(RESULTS, "pytest-asan.xml"),
                 os.path.join(ROOT, "tests")]
    cmd += _leave_out(ASAN_DESELECT, "ASan+UBSan")
    log("ASan+UBSan: unit tests (%s preloaded), limit %d s"
        % (runtime, _left(deadline)))
    output, rc = _run_until_report(san, cmd, _left(deadline), logdir)
    reports = sanitizer_reports(logdir)
    for name, text in reports:
        print("\n== sanitizer report %s ==\n%s" % (name, text[:6000]))
    ok, figures = judge_asan(rc, pytest_counts(output), reports)
    log("ASan+UBSan: %s" % figures)
    return {"ok": ok, "figures": figures}


def _leave_out(tests, stage):
    """pytest options that leave out these files and tests, each logged
    with its reason: a file by its path, a test by its node id (which
    pytest takes relative to the rootdir, this repository)."""
    args = []
    for test, why in sorted(tests.items()):
        log("%s: not run: %s (%s)" % (stage, test, why))
        if "::" in test:
            args += ["--deselect", test]
        else:
            args += ["--ignore", os.path.join(ROOT, test)]
    return args


def _run_until_report(interp, cmd, timeout, logdir, grace=10):
    """pytest_output(), but stopped `grace` seconds after the first
    sanitizer report appears in logdir: UBSan halts the process it
    reports in, and a test waiting for that child would otherwise wait
    out its time limit, for a stage that has failed already."""
    import tempfile
    with tempfile.TemporaryFile("w+", encoding="utf-8",
                                errors="replace") as out:
        with subprocess.Popen(interp.cmd(cmd), cwd=RESULTS, stdout=out,
                              stderr=subprocess.STDOUT, text=True,
                              stdin=subprocess.DEVNULL,
                              start_new_session=True) as proc:
            end, stop_at, why = time.monotonic() + timeout, None, None
            while proc.poll() is None:
                now = time.monotonic()
                if stop_at is None and os.listdir(logdir):
                    stop_at = now + grace
                if now > end or (stop_at is not None and now > stop_at):
                    why = ("unit tests stopped after %d s" % timeout
                           if now > end else "stopped %d s after the first "
                           "sanitizer report" % grace)
                    kill_group(proc)
                    proc.wait()
                    break
                time.sleep(1)
        out.seek(0)
        output = out.read()
    if why:
        output += "\n%s\n" % why
    sys.stdout.write(output)
    return output, -1 if why else proc.returncode


def _sid_has(program):
    return os.path.exists(os.path.join(_sid_dir(), "usr", "bin", program))


def run_refleak(timeout):
    """REFLEAK_TESTS on the debug interpreter of the sid chroot, each test
    repeated by tools/refleak.py; a test whose reference count, memory
    blocks or descriptors grow on every measured run fails the stage."""
    deadline = time.monotonic() + timeout
    if not _sid_has(REFLEAK_PYTHON):
        log("refleak: installing %s into the sid chroot" % REFLEAK_PYTHON)
        subprocess.run(["bash", SID, "setup"], stdin=subprocess.DEVNULL,
                       check=True, timeout=_left(deadline))
    dbg = Interpreter("3.14-dbg", REFLEAK_PYTHON, True)
    _venv_of(dbg, os.path.join(VENVS, "py3.14-dbg"), deadline)
    log("refleak: installing cmultiprocessing for %s" % REFLEAK_PYTHON)
    # Without -Werror: the debug build compiles with -Og, where gcc warns
    # of what -O2 does not (-Wclobbered across vfork()); the ordinary
    # builds hold the warnings to zero.
    dbg.run([dbg.python, "-m", "pip", "install", "-q", "--force-reinstall",
             "--no-deps", ROOT], check=True, timeout=_left(deadline))
    out = os.path.join(RESULTS, "refleak.json")
    if os.path.exists(out):
        os.unlink(out)
    # -p no:warnings: the warnings plugin keeps a record of each warning
    # of each repetition, which would read as a leak
    cmd = ["env", "PYTHONPATH=" + os.path.join(ROOT, "tools"), dbg.python,
           "-m", "pytest", "-q", "-rfEs", "--timeout=300",
           "-p", "no:cacheprovider", "-p", "no:warnings", "-p", "refleak",
           "--refleak", REFLEAK_RUNS, "--refleak-json", out]
    cmd += [os.path.join(ROOT, "tests", t) for t in REFLEAK_TESTS]
    cmd += _leave_out(REFLEAK_DESELECT, "refleak")
    log("refleak: %s, %s a test, limit %d s"
        % (REFLEAK_PYTHON, REFLEAK_RUNS, _left(deadline)))
    output, rc = pytest_output(dbg, cmd, _left(deadline))
    data = load_json(out) if os.path.exists(out) else None
    ok, figures, leaks = judge_refleak(rc, pytest_counts(output), data)
    for line in leaks:
        log("refleak: LEAK " + line)
    for test, status in sorted((data or {}).get("not_checked", {}).items()):
        log("refleak: not measured (%s in a repetition): %s" % (status, test))
    log("refleak: %s" % figures)
    return {"ok": ok, "figures": figures}


def host_interpreter(interp, versions):
    """interp, or where it is the sid chroot's, the first of versions
    found on this machine (the sanitized build uses this machine's clang),
    or None."""
    if not interp.in_sid:
        return interp
    for version in versions:
        base = find_host_python(version)
        if base is not None:
            return Interpreter(version, base, False)
    return None


# The cluster Pool's tests (cmultiprocessing.cluster on Dask), in a venv of
# their own with the dask extra (Dask imports the stdlib's multiprocessing:
# kept out of the venv of the other stages); their LocalClusters and
# network namespaces are made and removed by the tests themselves.
CLUSTER_TESTS = ("test_cluster.py", "test_cluster_pool.py",
                 "test_cluster_netns.py")


def judge_cluster(rc, counts):
    """(ok, figures) of the cluster tests: every test must run (a skip
    here means Dask, root or ip netns was missing, which this stage is
    there to have) and pass."""
    ok = rc == 0 and counts["passed"] > 0 and counts["failed"] == 0 and \
        counts["errors"] == 0 and counts["skipped"] == 0
    figures = "%d passed, %d failed, %d skipped" % (
        counts["passed"], counts["failed"] + counts["errors"],
        counts["skipped"])
    return ok, figures


def run_cluster(interp, timeout):
    """cmultiprocessing[dask] into .ci-venvs/dask-X.Y, then the cluster
    tests, all within timeout seconds."""
    deadline = time.monotonic() + timeout
    dask = Interpreter(interp.version, interp.base, False)
    dask.venv = os.path.join(VENVS, "dask-" + interp.version)
    dask.python = os.path.join(dask.venv, "bin", "python")
    if not os.path.exists(dask.python):
        dask.run([dask.base, "-m", "venv", dask.venv], check=True,
                 timeout=_left(deadline))
        dask.run([dask.python, "-m", "pip", "install", "-q", "--upgrade",
                  "pip", "setuptools", "wheel"], check=True,
                 timeout=_left(deadline))
    log("cluster: installing cmultiprocessing[test,dask] into %s"
        % dask.venv)
    dask.run(["env", "CMP_WERROR=1", dask.python, "-m", "pip", "install",
              "-q", "--force-reinstall", "--no-deps", ROOT], check=True,
             timeout=_left(deadline))
    dask.run([dask.python, "-m", "pip", "install", "-q", ROOT + "[test,dask]"],
             check=True, timeout=_left(deadline))
    cmd = [dask.python, "-m", "pytest", "-q", "-rfEs", "--timeout=180",
           "-p", "no:cacheprovider", "--junitxml",
           os.path.join(RESULTS, "pytest-cluster.xml")] + \
        [os.path.join(ROOT, "tests", t) for t in CLUSTER_TESTS]
    log("cluster: %s, limit %d s" % (" ".join(CLUSTER_TESTS),
                                     _left(deadline)))
    output, rc = pytest_output(dask, cmd, _left(deadline))
    ok, figures = judge_cluster(rc, pytest_counts(output))
    log("cluster: %s" % figures)
    return {"ok": ok, "figures": figures}


def run_checks(stages, failures, interp, asan_timeout, refleak_timeout,
               versions=(), cluster_timeout=0):
    """The sanitized unit tests (on interp's version, or a host one), the
    reference leak run and the cluster tests; a timeout of 0 leaves that
    stage out."""
    checks = []
    host = host_interpreter(interp, versions) if asan_timeout else None
    if asan_timeout and host is None:
        log("ASan+UBSan: no Python of %s on this machine" % (versions,))
        stages.note("ASan+UBSan unit tests", "NOT RUN")
        failures.append("ASan+UBSan unit tests not run: no interpreter")
    elif asan_timeout:
        checks.append(("ASan+UBSan unit tests, %s" % host.version,
                       run_asan, (host, asan_timeout)))
    if refleak_timeout:
        checks.append(("refleak run, %s" % REFLEAK_PYTHON, run_refleak,
                       (refleak_timeout,)))
    if cluster_timeout:
        host = host_interpreter(interp, versions)
        if host is None:
            stages.note("cluster tests (Dask)", "NOT RUN")
            failures.append("cluster tests not run: no interpreter")
        else:
            checks.append(("cluster tests (Dask), %s" % host.version,
                           run_cluster, (host, cluster_timeout)))
    for name, func, fargs in checks:
        try:
            result = stages.run(name, func, *fargs,
                                judge=lambda r: r["ok"])
            stages.annotate(result["figures"])
            ok = result["ok"]
        except (subprocess.CalledProcessError,
                subprocess.TimeoutExpired) as e:
            log("%s: %s" % (name, e))
            ok = False
        if not ok:
            failures.append("%s failed" % name)


def plan_rows(versions, methods_arg, all_methods_on):
    """[(version, [methods])] in the order they run."""
    plan = []
    for v in versions:
        if methods_arg:
            methods = [m for m in methods_arg.split(",") if m]
        elif v in all_methods_on:
            methods = list(METHODS)
        else:
            methods = [default_method(v)]
        plan.append((v, methods))
    return plan


def main(argv=None):
    # Started as a background job (`cmd &` in a script), this process and
    # so every test would inherit SIGINT ignored, and the suite's signal
    # tests (Process.interrupt, SIGINT to a manager...) would fail for
    # reasons of the launch, not of the code.  A handled signal goes back
    # to its default action in each program exec'd from here.
    import signal
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pythons",
                   default=os.environ.get("CMP_PYTHONS", DEFAULT_PYTHONS),
                   help="comma-separated X.Y versions, in the order they run "
                   "(default %s)" % DEFAULT_PYTHONS)
    p.add_argument("--all-methods-on", default=ALL_METHODS_ON,
                   help="versions whose suite runs under every start method; "
                   "the others run their default method (default %s)"
                   % ALL_METHODS_ON)
    p.add_argument("--methods", default="",
                   help="run these start methods on every version instead")
    p.add_argument("--budget", type=int, default=4800,
                   help="seconds the whole run may take; a row that would "
                   "start past it is not run, and the run fails (4800)")
    p.add_argument("--no-suite", action="store_true", help="unit tests only")
    p.add_argument("--no-unit", action="store_true", help="stdlib suite only")
    p.add_argument("--unit-timeout", type=int, default=1200,
                   help="time limit for one interpreter's unit tests")
    p.add_argument("--suite-timeout", type=int, default=900,
                   help="time limit for one suite run, seconds")
    p.add_argument("--test-timeout", type=int, default=90,
                   help="time limit for one suite test, seconds")
    p.add_argument("--compare", action="store_true",
                   help="run the stdlib's suite beside ours in each row "
                   "instead of using suite/stdlib_results.json")
    p.add_argument("--record-stdlib", action="store_true",
                   help="with --compare: write the stdlib's results of the "
                   "rows run into suite/stdlib_results.json")
    p.add_argument("--record-stdlib-from", nargs="+", metavar="JSON",
                   help="write suite/stdlib_results.json from these files of "
                   "`suite/stdlib_suite.py --stdlib --json FILE` runs, and "
                   "stop")
    p.add_argument("--only", metavar="REGEX",
                   help="run only the suite tests (multiprocessing and "
                   "test_concurrent_futures) whose id matches REGEX; such a "
                   "row is judged by the tests that ran, not the ratchet")
    p.add_argument("--no-cf", action="store_true",
                   help="no test_concurrent_futures stage")
    p.add_argument("--no-mp-suite", action="store_true",
                   help="no multiprocessing suite rows (the unit tests and "
                   "test_concurrent_futures still run)")
    p.add_argument("--cf-timeout", type=int, default=900,
                   help="time limit for one test_concurrent_futures run")
    p.add_argument("--record-cf-from", nargs="+", metavar="JSON",
                   help="write suite/stdlib_cf_results.json from these files "
                   "of `suite/cf_suite.py --stdlib --json FILE` runs, and "
                   "stop")
    p.add_argument("--no-extras", action="store_true",
                   help="no LLDB, cross-compile, wine, fuzzing, "
                   "sanitizer or reference-leak stages")
    p.add_argument("--lldb", choices=["auto", "yes", "no"], default="auto",
                   help="run the checks inside LLDB's embedded Python "
                   "(lldb-16 with apt, lldb-21 in the sid chroot) and in a C "
                   "program embedding each version; auto: only in CI on "
                   "Linux")
    p.add_argument("--platforms", choices=["auto", "yes", "no"],
                   default="auto", help="cross-compile for macOS/Windows and "
                   "run the Windows platform tests under wine (installs "
                   "ziglang, mingw-w64 and wine); auto: only in CI")
    p.add_argument("--clients", choices=["auto", "yes", "no"],
                   default="auto", help="run real libraries' own suites on "
                   "the stdlib and through the alias (suite/clients.py: "
                   "downloads their pinned sources); auto: only in CI")
    p.add_argument("--fuzz", type=int, default=None, metavar="SECONDS",
                   help="fuzz each target for SECONDS (tools/fuzz.sh; "
                   "installs clang with apt); default: 60 in CI, else none")
    p.add_argument("--no-asan", action="store_true",
                   help="no ASan+UBSan run of the unit tests (the extension "
                   "built with -fsanitize=address,undefined, in "
                   ".ci-venvs/asan-X.Y)")
    p.add_argument("--asan-timeout", type=int, default=600,
                   help="time limit of the ASan+UBSan stage, its build "
                   "included (600)")
    p.add_argument("--no-refleak", action="store_true",
                   help="no reference-leak run (%s from the sid chroot, "
                   "tools/refleak.py over the unit tests of the C-heavy "
                   "modules)" % REFLEAK_PYTHON)
    p.add_argument("--refleak-timeout", type=int, default=600,
                   help="time limit of the reference-leak stage, its "
                   "set-up included (600)")
    p.add_argument("--no-cluster", action="store_true",
                   help="no run of the cluster Pool's tests on Dask "
                   "(cmultiprocessing[dask] in .ci-venvs/dask-X.Y)")
    p.add_argument("--cluster-timeout", type=int, default=300,
                   help="time limit of the cluster stage, its install "
                   "included (300)")
    p.add_argument("--update-ratchet", action="store_true",
                   help="raise suite/ratchet.json to today's pass counts")
    p.add_argument("pytest_args", nargs="*")
    args = p.parse_args(argv)
    if args.record_stdlib:
        args.compare = True
    if args.record_stdlib_from:
        return record_stdlib_from(args.record_stdlib_from)
    if args.record_cf_from:
        return record_cf_from(args.record_cf_from)

    t0 = time.monotonic()
    os.makedirs(RESULTS, exist_ok=True)
    ratchet = load_json(RATCHET)
    recorded = load_json(STDLIB_RESULTS)
    recorded_cf = load_json(CF_RESULTS)
    cf_rows = []
    stages = Stages()
    failures = []
    unit_totals = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    suite_rows = []
    in_ci = os.environ.get("CI") == "true" and \
        sys.platform.startswith("linux") and bool(shutil.which("apt-get"))

    def wanted(flag):
        return not args.no_extras and (flag == "yes" or
                                       (flag == "auto" and in_ci))
    fuzz_seconds = args.fuzz if args.fuzz is not None else \
        (60 if in_ci else 0)
    if args.no_extras:
        fuzz_seconds = 0

    def left():
        return args.budget - (time.monotonic() - t0)

    versions = [v.strip() for v in args.pythons.split(",") if v.strip()]
    plan = plan_rows(versions, args.methods,
                     [v.strip() for v in args.all_methods_on.split(",")])
    for index, (version, methods) in enumerate(plan):
        def not_run(why, methods=methods, version=version):
            for m in (methods if not args.no_suite else ["unit tests"]):
                suite_rows.append(dict(version=version, method=m,
                                       not_run=why))
            failures.append("Python %s not run: %s" % (version, why))
        if left() < 300:
            not_run("time budget spent")
            continue
        interp = find_interpreter(version, stages)
        if interp is None:
            not_run("no interpreter")
            continue
        try:
            stages.run("venv + install, %s" % version, make_venv, interp)
        except (subprocess.CalledProcessError,
                subprocess.TimeoutExpired) as e:
            not_run("install failed (%s)" % e)
            continue
        if not args.no_unit:
            ok, counts = stages.run("unit tests, %s" % version, run_pytest,
                                    interp, args.pytest_args,
                                    min(args.unit_timeout, max(60, left())),
                                    judge=lambda result: result[0])
            for k in unit_totals:
                unit_totals[k] += counts[k]
            if not ok:
                failures.append("unit tests failed on %s" % version)
        if not args.no_suite and not args.no_mp_suite:
            for method in methods:
                if left() < 120:
                    suite_rows.append(dict(version=version, method=method,
                                           not_run="time budget spent"))
                    failures.append("suite %s/%s not run: time budget"
                                    % (version, method))
                    continue
                limit = int(min(args.suite_timeout, max(120, left() - 60)))
                data = stages.run("suite %s %s" % (version, method),
                                  run_suite, interp, method, limit,
                                  args.test_timeout, args.compare, args.only)
                before = len(failures)
                row = record_row(data, recorded, ratchet, version, method,
                                 failures, args.update_ratchet,
                                 bool(args.only))
                if len(failures) > before:
                    stages.fail_last()
                suite_rows.append(row)
                if args.record_stdlib and data and data.get("stdlib"):
                    recorded.setdefault(version, {})[method] = \
                        stdlib_entry(data["stdlib"])
        if not args.no_suite and not args.no_cf:
            if left() < 120:
                cf_rows.append(dict(version=version,
                                    not_run="time budget spent"))
                failures.append("test_concurrent_futures %s not run: time "
                                "budget" % version)
            else:
                limit = int(min(args.cf_timeout, max(120, left() - 60)))
                data = stages.run("test_concurrent_futures %s" % version,
                                  run_cf, interp, limit, args.test_timeout,
                                  args.only)
                before = len(failures)
                cf_rows.append(record_cf_row(data, recorded_cf, version,
                                             failures, bool(args.only)))
                if len(failures) > before:
                    stages.fail_last()
        if index == 0:
            run_extras(stages, failures, interp, wanted(args.lldb),
                       wanted(args.platforms), fuzz_seconds, versions,
                       wanted(args.clients))
            if not args.no_extras:
                run_checks(stages, failures, interp,
                           0 if args.no_asan else
                           int(min(args.asan_timeout, max(120, left()))),
                           0 if args.no_refleak else
                           int(min(args.refleak_timeout, max(120, left()))),
                           versions,
                           0 if args.no_cluster else
                           int(min(args.cluster_timeout, max(120, left()))))

    print_suite_table(suite_rows)
    print_cf_table(cf_rows)
    if args.update_ratchet:
        write_json(RATCHET, ratchet)
        log("ratchet written: %s" % RATCHET)
    if args.record_stdlib:
        write_json(STDLIB_RESULTS, recorded)
        log("stdlib results written: %s" % STDLIB_RESULTS)
    stages.print(time.monotonic() - t0)
    for f in failures:
        log("FAILED: " + f)
    if not args.no_unit:
        print("unit: %d passed, %d failed, %d skipped" % (
            unit_totals["passed"],
            unit_totals["failed"] + unit_totals["errors"],
            unit_totals["skipped"]))
    return 1 if failures else 0


def stdlib_entry(result):
    return {"python": result["python"],
            "passed": sorted(t for t, o in result["tests"].items()
                             if o == "passed")}


def record_stdlib_from(paths):
    recorded = load_json(STDLIB_RESULTS)
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        result = data.get("stdlib") or data["result"]
        if result["implementation"] != "stdlib":
            raise SystemExit("%s: not a run of the stdlib" % path)
        version = ".".join(result["python"].split(".")[:2])
        entry = stdlib_entry(result)
        recorded.setdefault(version, {})[result["start_method"]] = entry
        log("%s %s: the stdlib passed %d (%s)" % (
            result["python"], result["start_method"], len(entry["passed"]),
            path))
    write_json(STDLIB_RESULTS, recorded)
    return 0


def run_extras(stages, failures, interp, lldb, platforms, fuzz_seconds,
               versions=(), clients=False):
    checks = []
    if clients and not interp.in_sid:
        checks.append(("client suites", run_script, (
            "real libraries' suites, on the stdlib and through the alias",
            [interp.python, os.path.join(HERE, "clients.py"),
             "--python", interp.python, "--timeout", "600"], 1500)))
    if lldb:
        checks.append(("LLDB check", run_lldb_check, ()))
        if versions:
            checks.append(("embed check", run_embed_check, (versions,)))
        if sys.platform.startswith("linux"):
            checks.append(("LLDB 21 check (sid)", run_lldb21_sid_check, ()))
    if platforms:
        # the headers of the first interpreter (tools/crosscheck.sh)
        headers = {} if interp.in_sid else {"PYTHON": interp.python}
        checks.append(("cross-compile check", run_script, (
            "cross-compile check", ["bash", os.path.join(
                ROOT, "tools", "crosscheck.sh")], 1800,
            dict(os.environ, **headers))))
        checks.append(("Windows platform tests under wine", run_script, (
            "Windows platform tests under wine", ["bash", os.path.join(
                ROOT, "tests", "platform_c", "run.sh")])))
    if fuzz_seconds > 0 and not interp.in_sid:
        checks.append(("fuzzing (%d s a target)" % fuzz_seconds, run_fuzz,
                       (interp.python, fuzz_seconds)))
    for name, func, fargs in checks:
        try:
            ok = stages.run(name, func, *fargs)
        except subprocess.TimeoutExpired:
            ok = False
        if not ok:
            failures.append("%s failed" % name)


def record_row(data, recorded, ratchet, version, method, failures,
               update_ratchet, narrowed=False):
    """A table row for one suite run, judged against the ratchet; a run
    narrowed by --only is judged instead by the tests that ran: each that
    the stdlib passes must pass (and the ratchet is left alone)."""
    floor = 0 if narrowed else ratchet.get(version, {}).get(method, 0)
    if data is None:
        failures.append("suite %s/%s: no result (the runner failed)"
                        % (version, method))
        return dict(version=version, method=method, not_run="runner failed")
    ours = data["result"]
    passed_ids = {t for t, o in ours["tests"].items() if o == "passed"}
    not_applicable = {t for t, o in ours["tests"].items() if o == "n/a"}
    std_python, std_passed, source = stdlib_reference(data, recorded,
                                                      version, method)
    missing = None
    if std_passed is not None:
        if narrowed:
            std_passed &= set(ours["tests"])
        missing = sorted(std_passed - passed_ids - not_applicable)
    row = dict(version=version, method=method, python=ours["python"],
               passed=len(passed_ids), floor=floor,
               hung=ours["totals"]["hung"], na=len(not_applicable),
               stdlib=None if std_passed is None else len(std_passed),
               stdlib_python=std_python, source=source, missing=missing,
               seconds=ours["seconds"], stopped=ours.get("stopped"))
    if len(passed_ids) < floor:
        failures.append("stdlib suite %s/%s: %d passed, below the ratchet's "
                        "%d" % (version, method, len(passed_ids), floor))
    if narrowed and missing:
        failures.append("stdlib suite %s/%s (--only): %d tests the stdlib "
                        "passes did not pass" % (version, method,
                                                 len(missing)))
    if update_ratchet and not narrowed and len(passed_ids) > floor:
        ratchet.setdefault(version, {})[method] = len(passed_ids)
    return row


def print_suite_table(rows):
    if not rows:
        return
    print("\n== stdlib suite: tests passed by cmultiprocessing, by the stdlib "
          "(same interpreter), the ratchet, and those the stdlib passes but "
          "cmultiprocessing does not ==")
    print("  %-7s %-11s %6s %7s %7s %5s %4s %7s  %s" % (
        "Python", "method", "ours", "stdlib", "ratchet", "hung", "n/a",
        "seconds", "passed by the stdlib, not by us"))
    for r in rows:
        if r.get("not_run"):
            print("  %-7s %-11s NOT RUN: %s" % (r["version"], r["method"],
                                                r["not_run"]))
            continue
        std = "-" if r["stdlib"] is None else str(r["stdlib"])
        missing = r["missing"]
        gap = "-" if missing is None else str(len(missing))
        print("  %-7s %-11s %6d %7s %7d %5d %4d %7.0f  %s" % (
            r["python"], r["method"], r["passed"], std, r["floor"],
            r["hung"], r["na"], r["seconds"], gap))
        if r["stdlib_python"] and r["stdlib_python"] != r["python"]:
            print("      (stdlib result %s on Python %s)"
                  % (r["source"], r["stdlib_python"]))
        for tid in (missing or [])[:15]:
            print("      not passed: %s" % tid)
        if r.get("stopped"):
            print("      STOPPED: %s" % r["stopped"])
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
