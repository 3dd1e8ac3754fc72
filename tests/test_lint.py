"""Lint of the tree: ruff over the Python files (configuration:
[tool.ruff] in pyproject.toml) and clang-format over the C files
(configuration: .clang-format).  Each check runs where its tool is
installed -- the test command installs both, pinned, as the lint extra
(`pip install .[lint]`) -- and is skipped elsewhere."""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What ruff checks: the Python of the tests, the runners, the tools and the
# benchmarks.  (Lib/ joins once its own findings are fixed: `ruff check .`
# in the GitHub lint job covers the whole tree.)
RUFF_PATHS = ["setup.py", "Lib", "tests", "suite", "tools", "benchmarks"]


def _tool(name):
    """The program name of this interpreter's environment (where pip put
    it), else on PATH, else None."""
    for folder in (sysconfig.get_path("scripts"),
                   os.path.dirname(sys.executable)):
        for exe in (name, name + ".exe"):
            path = os.path.join(folder, exe)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
    return shutil.which(name)


def _c_sources():
    found = []
    for pattern in ("Modules/**/*.c", "Modules/**/*.h"):
        found += glob.glob(os.path.join(ROOT, pattern), recursive=True)
    return sorted(found)


def test_ruff():
    ruff = _tool("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install .[lint])")
    proc = subprocess.run([ruff, "check", "--no-cache"] + RUFF_PATHS,
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_clang_format():
    clang_format = _tool("clang-format")
    if clang_format is None:
        pytest.skip("clang-format is not installed (pip install .[lint])")
    if not os.path.exists(os.path.join(ROOT, ".clang-format")):
        pytest.skip("no .clang-format in the tree: no style to check")
    sources = _c_sources()
    assert sources
    proc = subprocess.run([clang_format, "--dry-run", "--Werror"] + sources,
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]
