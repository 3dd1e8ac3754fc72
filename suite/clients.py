#!/usr/bin/env python3
"""Real libraries' own test suites, on the standard library and through
`python -m cmultiprocessing` (the alias), compared test by test.

    python suite/clients.py --python PY [--client NAME] [--timeout S] [--json OUT]

PY is an interpreter with cmultiprocessing, pytest and pytest-timeout
installed (a CI venv).  Each client is pinned: its source distribution,
which holds its tests, is downloaded once into
~/.cache/cmultiprocessing-clients/ and unpacked into a temporary folder; the
client itself is installed into PY's environment from that source.  Its
suite then runs twice with pytest: plainly (the stdlib) and as
`PY -m cmultiprocessing -m pytest` (every `import multiprocessing` of the
client, and of its children, gets cmultiprocessing).  Each run has a time
limit, and each test one of its own (pytest-timeout).

Exit status 1 when a test the stdlib run passes does not pass through the
alias, or a run does not finish in time; the table says which.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET

CACHE = os.path.join(os.path.expanduser("~"), ".cache",
                     "cmultiprocessing-clients")

# name -> (requirement pinned, folder of its tests inside the sdist,
#          extra pytest arguments); the name is also what the alias probe
#          imports
CLIENTS = {
    "pebble": ("pebble==5.2.3", "test", []),
}


def log(msg):
    print("[clients %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def fetch_sdist(py, requirement):
    os.makedirs(CACHE, exist_ok=True)
    name, _, version = requirement.partition("==")
    for f in os.listdir(CACHE):
        low = f.lower()
        if low.startswith("%s-%s" % (name.lower(), version)) and \
                low.endswith(".tar.gz"):
            return os.path.join(CACHE, f)
    subprocess.run([py, "-m", "pip", "download", "-q", "--no-deps",
                    "--no-binary", ":all:", "--disable-pip-version-check",
                    "-d", CACHE, requirement], check=True, timeout=600,
                   stdin=subprocess.DEVNULL)
    return fetch_sdist(py, requirement)


def unpack(sdist, into):
    with tarfile.open(sdist) as tf:
        top = tf.getnames()[0].split("/")[0]
        try:
            tf.extractall(into, filter="data")
        except TypeError:            # Pythons before the filter argument
            tf.extractall(into)
    return os.path.join(into, top)


def outcomes(junit_path):
    """{test id: passed/failed/skipped} from a pytest junit XML file."""
    found = {}
    if not os.path.exists(junit_path):
        return found
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        tid = "%s::%s" % (case.get("classname"), case.get("name"))
        if case.find("skipped") is not None:
            found[tid] = "skipped"
        elif case.find("failure") is not None or \
                case.find("error") is not None:
            found[tid] = "failed"
        else:
            found[tid] = "passed"
    return found


def run_suite(py, src, tests, extra, alias, timeout, junit):
    argv = [py]
    if alias:
        argv += ["-m", "cmultiprocessing"]
    argv += ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
             "addopts=", "--timeout=120", "--junitxml=" + junit, tests,
             *extra]
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, cwd=src, env=env,
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)
        out, _ = proc.communicate(timeout=timeout)
        stopped = None
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        stopped = "stopped after %d s" % timeout
    tail = out.decode("utf-8", "replace").strip().splitlines()[-1:]
    return dict(seconds=time.monotonic() - start, stopped=stopped,
                summary=tail[0] if tail else "", tests=outcomes(junit))


PROBE = """
import sys
import %s
import multiprocessing
stdlib = sorted(m for m, mod in sys.modules.items()
                if (m == 'multiprocessing' or m.startswith('multiprocessing.'))
                and getattr(mod, '__name__', '').startswith('multiprocessing'))
print(multiprocessing.__spec__.name, stdlib)
"""


def alias_probe(py, name, work):
    """Through the command, the client's `import multiprocessing` gets
    cmultiprocessing and nothing of the stdlib's package loads: else the
    comparison would compare the stdlib with itself."""
    script = os.path.join(work, "alias_probe.py")
    with open(script, "w") as f:
        f.write(PROBE % name)
    out = subprocess.run([py, "-m", "cmultiprocessing", script],
                         capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL, cwd=work)
    return out.stdout.strip() or out.stderr.strip()[-500:]


def run_client(py, name, timeout):
    requirement, tests, extra = CLIENTS[name]
    sdist = fetch_sdist(py, requirement)
    work = tempfile.mkdtemp(prefix="cmp-client-%s-" % name)
    try:
        src = unpack(sdist, work)
        done = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps",
                               "--disable-pip-version-check", src],
                              timeout=600, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError("cannot install %s:\n%s%s"
                               % (src, done.stdout, done.stderr))
        result = {"alias": alias_probe(py, name, work)}
        log("alias in effect: %s" % result["alias"])
        for label, alias in (("stdlib", False), ("cmultiprocessing", True)):
            log("%s's suite on %s" % (name, label))
            result[label] = run_suite(
                py, src, tests, extra, alias, timeout,
                os.path.join(work, "junit-%s.xml" % label))
            log("  %s (%.0f s)" % (result[label]["summary"],
                                   result[label]["seconds"]))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compare(name, result):
    std, ours = result["stdlib"], result["cmultiprocessing"]
    std_passed = {t for t, o in std["tests"].items() if o == "passed"}
    our_passed = {t for t, o in ours["tests"].items() if o == "passed"}
    missing = sorted(std_passed - our_passed)
    alias_ok = result["alias"] == "cmultiprocessing []"
    ok = (not missing and not ours["stopped"] and bool(std_passed)
          and alias_ok)
    if not alias_ok:
        print("  %-10s the alias was not in effect: %s" % (name,
                                                          result["alias"]))
    print("  %-10s stdlib %4d passed  cmultiprocessing %4d passed  "
          "missing %d%s%s" % (name, len(std_passed), len(our_passed),
                              len(missing),
                              "  STOPPED" if ours["stopped"] else "",
                              "" if std_passed else "  (stdlib passed none)"))
    for tid in missing[:20]:
        print("      not passed: %s" % tid)
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--client", action="append", choices=sorted(CLIENTS))
    ap.add_argument("--timeout", type=int, default=600,
                    help="seconds one suite run may take")
    ap.add_argument("--json", help="write every outcome here")
    args = ap.parse_args(argv)
    results, ok = {}, True
    for name in args.client or sorted(CLIENTS):
        results[name] = run_client(args.python, name, args.timeout)
    print("\n== client suites: tests passed on the stdlib and through the "
          "alias ==")
    for name, result in results.items():
        ok = compare(name, result) and ok
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
