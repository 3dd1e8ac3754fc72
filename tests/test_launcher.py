"""The child launcher (Modules/launcher/): children started over the very
libpython the parent runs on, for hosts with no python program.

Most tests need this interpreter to run from a shared libpython (pyenv's
builds here do; Debian's /usr/bin/python3.X is linked statically, and there
the launcher is refused with a clear error, which is tested too).
"""
import glob
import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap

import pytest

import _cmultiprocessing
from cmultiprocessing import _interpreter, spawn

LIBRARY = _cmultiprocessing.runtime_library()
needs_shared = pytest.mark.skipif(
    LIBRARY is None, reason="Python is linked statically into this program")
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX only")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc/self/maps")

USAGE, LOAD = 64, 71          # the launcher's own exit statuses


@pytest.fixture
def fresh_interpreter_choice(monkeypatch):
    for name, value in (("explicit", None), ("found", None), ("probed", {}),
                        ("launch", ()), ("why", None)):
        monkeypatch.setattr(_interpreter._Interpreter, name, value)
    yield


def launcher(args, timeout=60, **kw):
    return subprocess.run([_interpreter._launcher_file(), *args],
                          capture_output=True, text=True, timeout=timeout,
                          **kw)


def identity():
    return [sys.version, sys.prefix]


# -- the library and the program ---------------------------------------------

def _mapped_libpythons():
    """Real paths of the libpython files mapped into this process."""
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "/" in line}
    return {os.path.realpath(p) for p in paths
            if os.path.basename(p).startswith("libpython")}


def test_runtime_library_matches_the_build():
    if sys.platform.startswith("linux"):
        # The truth is what is mapped: Debian's python3.X is linked
        # statically although its sysconfig says Py_ENABLE_SHARED.
        mapped = _mapped_libpythons()
        if mapped:
            assert LIBRARY is not None
            assert os.path.realpath(LIBRARY) in mapped
        else:
            assert LIBRARY is None
    elif sysconfig.get_config_var("Py_ENABLE_SHARED"):
        assert LIBRARY is not None and os.path.isfile(LIBRARY)
        name = os.path.basename(LIBRARY)
        assert name.startswith(("libpython", "Python", "python")), name


@linux_only
@needs_shared
def test_runtime_library_is_loaded_in_this_process():
    with open("/proc/self/maps") as f:
        mapped = {line.split()[-1] for line in f if "/" in line}
    assert os.path.realpath(LIBRARY) in {os.path.realpath(p) for p in mapped}


def test_launcher_is_installed_next_to_the_package():
    path = _interpreter._launcher_file()
    assert os.path.dirname(path) == os.path.dirname(spawn.__file__)
    assert os.path.isfile(path) and os.access(path, os.X_OK), path


# -- the launcher's command line ---------------------------------------------

@needs_shared
def test_launcher_runs_this_interpreter_with_the_given_config():
    opts = _interpreter._launcher_options(LIBRARY)
    probe = ("import sys, json; print(json.dumps([sys.version, sys.prefix, "
             "sys.exec_prefix, sys.base_prefix, sys.executable, sys.path, "
             "sys.argv]))")
    done = launcher(opts + ["-c", probe, "x y"])
    assert done.returncode == 0, done.stderr
    version, prefix, exec_prefix, base_prefix, exe, path, argv = \
        json.loads(done.stdout)
    assert (version, prefix) == (sys.version, sys.prefix)
    assert exec_prefix == sys.exec_prefix and base_prefix == sys.base_prefix
    assert exe == sys.executable
    assert argv == ["-c", "x y"]
    given = [o[len("--path="):] for o in opts if o.startswith("--path=")]
    assert [p for p in path if p in given][:len(given)] == given


@needs_shared
def test_launcher_parses_python_flags_and_returns_the_exit_status():
    opts = _interpreter._launcher_options(LIBRARY)
    done = launcher(opts + ["-I", "-X", "utf8", "-c",
                            "import sys; print(sys.flags.isolated, "
                            "sys.flags.utf8_mode); raise SystemExit(7)"])
    assert done.returncode == 7, done.stderr
    assert done.stdout.split() == ["1", "1"]


@pytest.mark.parametrize("args, text", [
    ([], "missing '--'"),
    (["--", "-c", "pass"], "missing --libpython"),
    (["--libpython=x", "--nonsense=1", "--"], "unknown option"),
    (["-c", "pass"], "unknown option"),
])
def test_launcher_usage_errors(args, text):
    done = launcher(args)
    assert done.returncode == USAGE
    assert done.stderr.startswith("cmultiprocessing launcher: ")
    assert text in done.stderr


@posix_only
def test_launcher_library_that_cannot_be_loaded(tmp_path):
    junk = tmp_path / "libpython-junk.so"
    junk.write_bytes(b"this is not a shared library\n" * 10)
    for path in (str(junk), str(tmp_path / "absent.so")):
        done = launcher(["--libpython=" + path, "--", "-c", "pass"])
        assert done.returncode == LOAD, done.stderr
        assert "cannot load libpython" in done.stderr
        assert path in done.stderr


@linux_only
def test_launcher_library_that_is_not_python():
    with open("/proc/self/maps") as f:
        libc = [line.split()[-1] for line in f
                if os.path.basename(line.split()[-1]).startswith("libc")]
    assert libc
    done = launcher(["--libpython=" + libc[0], "--", "-c", "pass"])
    assert done.returncode == LOAD
    assert "has no PyConfig_InitPythonConfig" in done.stderr


def _other_versions_library():
    ours = "%d.%d" % sys.version_info[:2]
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for pattern in (os.path.join(pyenv, "versions/*/lib/libpython3.*.so.1.0"),
                    "/usr/lib/*/libpython3.*.so.1.0",
                    "/usr/local/lib/libpython3.*.so.1.0"):
        for path in sorted(glob.glob(pattern)):
            # libpython3.14.so.1.0, libpython3.14d.so.1.0 (debug, the same
            # version: not another), libpython3.14t.so.1.0 (free-threaded)
            m = re.match(r"libpython(\d+\.\d+)([a-z]*)\.so",
                         os.path.basename(path))
            if m and m.group(1) != ours and "t" not in m.group(2):
                return path
    return None


@posix_only
def test_launcher_refuses_another_python_version():
    other = _other_versions_library()
    if other is None:
        pytest.skip("no libpython of another version on this machine")
    done = launcher(["--libpython=" + other, "--", "-c", "pass"])
    assert done.returncode == USAGE, done.stderr
    assert ("this launcher is for Python %d.%d" % sys.version_info[:2]
            in done.stderr)


@needs_shared
def test_launcher_interpreter_that_cannot_initialise(tmp_path):
    bad = str(tmp_path)
    done = launcher(["--libpython=" + LIBRARY, "--prefix=" + bad,
                     "--exec-prefix=" + bad, "--path=" + bad, "--",
                     "-c", "pass"])
    assert done.returncode == 1
    assert "Fatal Python error" in done.stderr
    assert "encodings" in done.stderr


# -- the choice of the children's interpreter --------------------------------

def test_a_real_interpreter_comes_first(fresh_interpreter_choice):
    assert spawn.get_executable() == os.fsencode(sys.executable)
    assert "program of this installation" in spawn.describe_executable()
    cmd = spawn.get_command_line(pipe_handle=5)
    assert not any(str(a).startswith("--libpython=") for a in cmd)


@needs_shared
def test_the_launcher_when_no_program_is_found(monkeypatch,
                                               fresh_interpreter_choice):
    monkeypatch.setattr(_interpreter, "_interpreter_candidates", lambda: iter(()))
    exe = spawn.get_executable()
    assert exe == os.fsencode(_interpreter._launcher_file())
    why = spawn.describe_executable()
    assert "child launcher" in why and LIBRARY in why
    cmd = spawn.get_command_line(pipe_handle=5)
    assert cmd[0] == exe and cmd[1] == "--libpython=" + LIBRARY
    assert cmd[cmd.index("--") + 1:][-3:-2] == ["-c"]
    # set_executable() still wins, without the launcher's options
    spawn.set_executable(sys.executable)
    cmd = spawn.get_command_line(pipe_handle=5)
    assert cmd[0] == os.fsencode(sys.executable)
    assert not any(str(a).startswith("--libpython=") for a in cmd)
    assert "set_executable()" in spawn.describe_executable()


def _refused(monkeypatch):
    """get_executable()'s RuntimeError with no program to find."""
    monkeypatch.setattr(_interpreter, "_interpreter_candidates", lambda: iter(()))
    with pytest.raises(RuntimeError, match="set_executable") as info:
        spawn.get_executable()
    assert _interpreter._Interpreter.found is None
    return str(info.value)


def test_refused_when_python_is_linked_statically(monkeypatch,
                                                 fresh_interpreter_choice):
    monkeypatch.setattr(_cmultiprocessing, "runtime_library", lambda: None)
    assert "linked statically" in _refused(monkeypatch)


@needs_shared
def test_refused_when_the_launcher_is_missing(monkeypatch, tmp_path,
                                              fresh_interpreter_choice):
    gone = str(tmp_path / _interpreter.LAUNCHER)
    monkeypatch.setattr(_interpreter, "_launcher_file", lambda: gone)
    assert "the launcher %s is missing" % gone in _refused(monkeypatch)


@posix_only
@needs_shared
def test_refused_when_the_launcher_is_not_executable(
        monkeypatch, tmp_path, fresh_interpreter_choice):
    copy = tmp_path / _interpreter.LAUNCHER
    copy.write_bytes(open(_interpreter._launcher_file(), "rb").read())
    copy.chmod(0o644)
    monkeypatch.setattr(_interpreter, "_launcher_file", lambda: str(copy))
    assert "is not executable" in _refused(monkeypatch)


@posix_only
def test_refused_when_the_library_cannot_be_loaded(monkeypatch, tmp_path,
                                                   fresh_interpreter_choice):
    junk = tmp_path / "libpython-junk.so"
    junk.write_bytes(b"junk\n")
    monkeypatch.setattr(_cmultiprocessing, "runtime_library",
                        lambda: str(junk))
    text = _refused(monkeypatch)
    assert "exited with status %d" % LOAD in text
    assert "cannot load libpython" in text and str(junk) in text


@needs_shared
def test_refused_when_the_child_cannot_initialise(monkeypatch, tmp_path,
                                                  fresh_interpreter_choice):
    bad = str(tmp_path)
    monkeypatch.setattr(_interpreter, "_launcher_options", lambda lib: [
        "--libpython=" + lib, "--prefix=" + bad, "--exec-prefix=" + bad,
        "--path=" + bad, "--"])
    text = _refused(monkeypatch)
    assert "exited with status 1" in text and "encodings" in text


@posix_only
def test_refused_when_the_launcher_does_not_answer(monkeypatch, tmp_path,
                                                   fresh_interpreter_choice):
    stuck = tmp_path / _interpreter.LAUNCHER
    stuck.write_text("#!/bin/sh\nexec sleep 60\n")
    stuck.chmod(0o755)
    monkeypatch.setattr(_interpreter, "_launcher_file", lambda: str(stuck))
    monkeypatch.setattr(_cmultiprocessing, "runtime_library",
                        lambda: "/nowhere/libpython.so")
    monkeypatch.setattr(_interpreter, "_PROBE_TIMEOUT", 1)
    assert "no answer in 1 seconds" in _refused(monkeypatch)


# -- children through the launcher, end to end -------------------------------

END_TO_END = textwrap.dedent("""
    import json, os, sys
    import cmultiprocessing as mp
    from cmultiprocessing import _interpreter, spawn, shared_memory

    def no_program():
        _interpreter._interpreter_candidates = lambda: iter(())

    def ident(_=None):
        return [sys.version, sys.prefix, sys.executable,
                'multiprocessing' in sys.modules]

    def nested(q):
        # a launched child starts its own child through the launcher too
        no_program()
        ctx = mp.get_context('spawn')
        inner = ctx.SimpleQueue()
        p = ctx.Process(target=inner_put, args=(inner,))
        p.start()
        got = inner.get()
        p.join(60)
        q.put([got, spawn.describe_executable(), p.exitcode])

    def inner_put(q):
        shm = shared_memory.SharedMemory(create=True, size=64)
        shm.close(); shm.unlink()
        q.put(ident())

    if __name__ == '__main__':
        no_program()
        report = {'why': spawn.describe_executable(), 'parent': ident()}
        for method in ('spawn', 'forkserver'):
            ctx = mp.get_context(method)
            with ctx.Pool(2) as pool:
                report[method] = pool.map(ident, range(4))
            q = ctx.Queue()
            p = ctx.Process(target=nested, args=(q,))
            p.start()
            report[method + ' nested'] = q.get(timeout=120)
            p.join(60)
            report[method + ' exit'] = p.exitcode
            q.close(); q.join_thread()
        print(json.dumps(report))
""")


@needs_shared
def test_children_run_through_the_launcher(tmp_path):
    script = tmp_path / "main_script.py"
    script.write_text(END_TO_END)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    done = subprocess.run([sys.executable, str(script)], capture_output=True,
                          text=True, timeout=240, env=env, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert "child launcher" in report["why"]
    parent = report["parent"]
    assert parent[3] is False
    for method in ("spawn", "forkserver"):
        assert report[method] == [parent] * 4, (method, report[method])
        got, why, code = report[method + " nested"]
        assert got == parent and code == 0
        assert "child launcher" in why
        assert report[method + " exit"] == 0


# -- a child program that ends before it reads its data ----------------------

def _big(data):
    return len(data)


@posix_only
def test_child_that_dies_before_reading_names_itself(tmp_path):
    """The stdlib's BrokenPipeError, with the program and its exit status
    (the data is larger than a pipe holds, so the write notices)."""
    import cmultiprocessing
    from cmultiprocessing import resource_tracker
    resource_tracker.ensure_running()    # on this interpreter, not on dies
    dies = tmp_path / "python3-that-exits"
    dies.write_text("#!/bin/sh\nexit 3\n")
    dies.chmod(0o755)
    ctx = cmultiprocessing.get_context("spawn")
    spawn.set_executable(str(dies))
    try:
        p = ctx.Process(target=_big, args=(b"x" * (4 << 20),))
        with pytest.raises(BrokenPipeError) as info:
            p.start()
    finally:
        spawn.set_executable(None)
    text = str(info.value)
    assert str(dies) in text and "exited with status 3" in text, text
