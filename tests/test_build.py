"""Packaging: `python -m build` makes an sdist and a wheel, both install into
a fresh virtual environment, and the installed package works there (a
spawned child finds it too, and -I children as well, since it is installed).

The tree is copied to a scratch folder first (the files git tracks, as they
are on disk), so building leaves nothing in the work tree.  The `build`
front end is installed into a venv of its own; building in isolation fetches
setuptools and wheel from the package index, as pip does.
"""
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_TIMEOUT = 900

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT * 3)


def run(cmd, cwd=None, timeout=BUILD_TIMEOUT):
    # Without PYTHONPATH: a development run's path (the work tree's Lib, with
    # an egg-info left by a build there) would make pip think the package is
    # installed already and skip the wheel under test.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)
    if proc.returncode != 0:
        pytest.fail("command failed (%d): %s\n--- stdout\n%s\n--- stderr\n%s"
                    % (proc.returncode, " ".join(map(str, cmd)),
                       proc.stdout[-4000:], proc.stderr[-4000:]))
    return proc


def venv_python(venv):
    sub = "Scripts" if sys.platform == "win32" else "bin"
    exe = "python.exe" if sys.platform == "win32" else "python"
    return os.path.join(venv, sub, exe)


def make_venv(path):
    run([sys.executable, "-m", "venv", str(path)], timeout=300)
    return venv_python(str(path))


def tracked_files():
    """The project's files: what git tracks (as on disk), or a walk that
    leaves build products out when there is no git."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT,
                             capture_output=True, timeout=60)
        if out.returncode == 0 and out.stdout:
            names = [n for n in out.stdout.decode().split("\0") if n]
            return [n for n in names if os.path.isfile(os.path.join(ROOT, n))]
    except OSError:
        pass
    skip = {".git", ".ci-venvs", "build", "dist", "__pycache__", "results",
            ".pytest_cache"}
    found = []
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs
                   if d not in skip and not d.endswith(".egg-info")]
        for f in files:
            if not f.endswith((".so", ".o", ".pyd", ".pyc")):
                found.append(os.path.relpath(os.path.join(top, f), ROOT))
    return found


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    dest = tmp_path_factory.mktemp("project")
    files = tracked_files()
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), target)
    return dest, files


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    py = make_venv(tmp_path_factory.mktemp("build-venv") / "v")
    run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "build"], timeout=600)
    return py


# What a fresh environment must be able to do with the installed package.
SMOKE = textwrap.dedent("""
    import os, sys
    import cmultiprocessing, _cmultiprocessing
    prefix = os.path.realpath(sys.prefix)
    for mod in (cmultiprocessing, _cmultiprocessing):
        where = os.path.realpath(mod.__file__)
        assert where.startswith(prefix), (mod.__name__, where, prefix)
    from cmultiprocessing import _interpreter
    launcher = _interpreter._launcher_file()
    assert os.path.isfile(launcher) and os.access(launcher, os.X_OK), launcher

    def work(q, n):
        q.put(sum(range(n)))

    if __name__ == "__main__":
        for method in cmultiprocessing.get_all_start_methods():
            ctx = cmultiprocessing.get_context(method)
            q = ctx.Queue()
            p = ctx.Process(target=work, args=(q, 1000))
            p.start()
            got = q.get(timeout=60)
            p.join(60)
            assert got == 499500, (method, got)
            assert p.exitcode == 0, (method, p.exitcode)
            q.close()
            q.join_thread()
        assert "multiprocessing" not in sys.modules
        print("smoke ok", sorted(cmultiprocessing.get_all_start_methods()))
""")


def install_and_smoke(tmp_path, wheel):
    py = make_venv(tmp_path / "use-venv")
    run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
         "--disable-pip-version-check", str(wheel)], timeout=300)
    script = tmp_path / "smoke.py"
    script.write_text(SMOKE)
    # -I: the installed package alone, not the work tree nor PYTHONPATH
    out = run([py, "-I", str(script)], cwd=str(tmp_path), timeout=300)
    assert "smoke ok" in out.stdout


def only(folder, suffix):
    found = [os.path.join(folder, f) for f in os.listdir(folder)
             if f.endswith(suffix)]
    assert len(found) == 1, found
    return found[0]


def test_wheel_from_the_tree_installs_and_runs(project, builder, tmp_path):
    src, _ = project
    out = tmp_path / "dist"
    run([builder, "-m", "build", "--wheel", "--outdir", str(out), str(src)])
    wheel = only(str(out), ".whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert any(n.startswith("_cmultiprocessing") for n in names), names
    assert "cmultiprocessing/__init__.py" in names
    assert "cmultiprocessing/dummy/__init__.py" in names
    # the child launcher, built with the extension, executable
    launcher = "cmultiprocessing/_cmp_launcher" + (
        ".exe" if sys.platform == "win32" else "")
    assert launcher in names, names
    if sys.platform != "win32":
        with zipfile.ZipFile(wheel) as zf:
            mode = zf.getinfo(launcher).external_attr >> 16
        assert mode & 0o111, oct(mode)
    # no sources, tests or tools in the wheel
    assert not [n for n in names if n.startswith(("Modules/", "tests/",
                                                  "tools/"))]
    install_and_smoke(tmp_path, wheel)


def test_sdist_holds_every_source_and_builds_a_working_wheel(
        project, builder, tmp_path):
    src, files = project
    out = tmp_path / "dist"
    run([builder, "-m", "build", "--sdist", "--outdir", str(out), str(src)])
    sdist = only(str(out), ".tar.gz")
    with tarfile.open(sdist) as tf:
        members = tf.getnames()
    top = members[0].split("/")[0]
    inside = {m[len(top) + 1:] for m in members if m.startswith(top + "/")}
    needed = [f for f in files
              if f.startswith(("Modules/", "Lib/cmultiprocessing/"))
              and f.endswith((".c", ".h", ".py"))]
    needed += ["setup.py", "pyproject.toml", "README.md", "LICENSE", "NOTICE",
               "Lib/cmultiprocessing/py.typed",
               "Lib/_cmultiprocessing-stubs/__init__.pyi"]
    missing = sorted(f for f in needed if f not in inside)
    assert not missing, "not in the sdist: %s" % missing

    # the wheel is built from the unpacked sdist alone
    unpacked = tmp_path / "unpacked"
    with tarfile.open(sdist) as tf:
        if sys.version_info >= (3, 12):
            tf.extractall(unpacked, filter="data")
        else:
            tf.extractall(unpacked)
    wheels = tmp_path / "wheels"
    run([builder, "-m", "build", "--wheel", "--outdir", str(wheels),
         str(unpacked / top)])
    install_and_smoke(tmp_path, only(str(wheels), ".whl"))
