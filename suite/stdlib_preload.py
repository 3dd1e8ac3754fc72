#!/usr/bin/env python3
"""Run the interpreter's test_multiprocessing_forkserver/test_preload.py
(3.15+) against cmultiprocessing, or with --stdlib against the stdlib.

    python suite/stdlib_preload.py [--stdlib] [-v]

The file is copied into a scratch folder with the module names rewritten as
suite/stdlib_suite.py does, and run there with unittest; the exit status is
unittest's.  An interpreter without the file skips (exit status 0).
"""
import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from stdlib_suite import rewrite_names  # noqa: E402

RELATIVE = os.path.join("test_multiprocessing_forkserver", "test_preload.py")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--stdlib", action="store_true",
                   help="run the stdlib's own file, unchanged")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)

    spec = importlib.util.find_spec("test")
    source = os.path.join(os.path.dirname(spec.origin), RELATIVE)
    if not os.path.exists(source):
        print("skipped: this interpreter has no %s" % RELATIVE)
        return 0
    scratch = tempfile.mkdtemp(prefix="cmp-preload-")
    try:
        target = os.path.join(scratch, "cmp_test_preload.py")
        with open(source, encoding="utf-8") as f:
            text = f.read()
        if not args.stdlib:
            text = rewrite_names(text)
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
        cmd = [sys.executable, "-m", "unittest"]
        if args.verbose:
            cmd.append("-v")
        cmd.append("cmp_test_preload")
        return subprocess.call(cmd, cwd=scratch, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
