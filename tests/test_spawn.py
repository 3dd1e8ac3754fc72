"""spawnv_passfds (C), the spawn module and the spawn start method."""
import errno
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import _cmultiprocessing
import cmultiprocessing
from cmultiprocessing import _interpreter, spawn

from support import child_states

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX only")
HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.join(os.path.dirname(HERE), "Lib")


def _child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _run_script(tmp_path, body, timeout=120):
    script = tmp_path / "main_script.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True,
                          text=True, timeout=timeout, env=_child_env(),
                          cwd=str(tmp_path))


# -- spawnv_passfds ----------------------------------------------------------

def _open_fds_of_child(passfds, extra_inheritable=()):
    r, w = os.pipe()
    try:
        prog = ("import os; os.write(%d, ' '.join(sorted(os.listdir("
                "'/proc/self/fd'), key=int)).encode())" % w)
        pid = _cmultiprocessing.spawnv_passfds(
            sys.executable, [sys.executable, "-S", "-c", prog],
            list(passfds) + [w])
        os.close(w)
        w = None
        with open(r, "rb", closefd=False) as f:
            listing = f.read().decode()
        assert os.waitpid(pid, 0)[1] == 0
        return {int(x) for x in listing.split()}, pid
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


@posix_only
def test_spawnv_passfds_keeps_exactly_passfds():
    a_r, a_w = os.pipe()              # CLOEXEC by default (PEP 446)
    b_r, b_w = os.pipe()
    os.set_inheritable(b_r, True)     # inheritable but not passed
    try:
        seen, _ = _open_fds_of_child([a_r])
        assert a_r in seen            # passed: kept although CLOEXEC
        assert b_r not in seen        # not passed: closed though inheritable
        assert a_w not in seen and b_w not in seen
        assert {0, 1, 2} <= seen
        assert os.get_inheritable(a_r) is False   # parent's flag untouched
    finally:
        for fd in (a_r, a_w, b_r, b_w):
            os.close(fd)


@posix_only
def test_spawnv_passfds_accepts_keywords_and_duplicates():
    r, w = os.pipe()
    try:
        pid = _cmultiprocessing.spawnv_passfds(
            path=sys.executable, args=[sys.executable, "-S", "-c",
                                       "import os; os.write(%d, b'x')" % w],
            passfds=(w, w, w))
        assert os.read(r, 1) == b"x"
        assert os.waitpid(pid, 0)[1] == 0
    finally:
        os.close(r)
        os.close(w)


@posix_only
def test_spawnv_passfds_exec_failure_is_oserror(tmp_path):
    before = child_states()
    missing = str(tmp_path / "no-such-python")
    with pytest.raises(FileNotFoundError) as info:
        _cmultiprocessing.spawnv_passfds(missing, [missing], [])
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == missing
    notexec = tmp_path / "data.txt"
    notexec.write_text("x")
    with pytest.raises(PermissionError):
        _cmultiprocessing.spawnv_passfds(str(notexec), ["x"], [])
    # the failed children were reaped: no new child of ours, running or
    # zombie (helpers earlier tests started, e.g. the resource tracker,
    # may still be our children in a full run)
    assert not set(child_states()) - set(before)


@posix_only
@pytest.mark.parametrize("passfds, exc", [
    ([-1], ValueError),
    (["3"], TypeError),
    ([2 ** 40], (OverflowError, ValueError)),
    (None, TypeError),
    (5, TypeError),
])
def test_spawnv_passfds_bad_passfds(passfds, exc):
    with pytest.raises(exc):
        _cmultiprocessing.spawnv_passfds(sys.executable, ["x"], passfds)


@posix_only
def test_spawnv_passfds_closed_fd_and_bad_args():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as info:
        _cmultiprocessing.spawnv_passfds(sys.executable, ["x"], [r])
    assert info.value.errno == errno.EBADF
    with pytest.raises(ValueError):
        _cmultiprocessing.spawnv_passfds(sys.executable, [], [])
    with pytest.raises(ValueError):     # embedded NUL
        _cmultiprocessing.spawnv_passfds(sys.executable, ["a\0b"], [])
    with pytest.raises(TypeError):
        _cmultiprocessing.spawnv_passfds(sys.executable, [1], [])
    with pytest.raises(TypeError):
        _cmultiprocessing.spawnv_passfds(sys.executable, ["x"])
    with pytest.raises(TypeError):
        _cmultiprocessing.spawnv_passfds(sys.executable, ["x"], [], 1)
    with pytest.raises(TypeError):
        _cmultiprocessing.spawnv_passfds(sys.executable, ["x"], [],
                                         bogus=1)
    with pytest.raises(TypeError):
        _cmultiprocessing.spawnv_passfds(sys.executable, ["x"],
                                         passfds=[], path="y")


# -- choosing the interpreter ------------------------------------------------

@pytest.fixture
def fresh_interpreter_choice(monkeypatch):
    monkeypatch.setattr(_interpreter._Interpreter, "explicit", None)
    monkeypatch.setattr(_interpreter._Interpreter, "found", None)
    monkeypatch.setattr(_interpreter._Interpreter, "probed", {})
    monkeypatch.setattr(_interpreter._Interpreter, "launch", ())
    monkeypatch.setattr(_interpreter._Interpreter, "why", None)
    yield


def test_get_executable_is_this_python(fresh_interpreter_choice):
    exe = spawn.get_executable()
    assert exe == os.fsencode(sys.executable)


def test_set_executable_kinds(fresh_interpreter_choice):
    for value in (sys.executable, sys.executable.encode(),
                  pathlib.Path(sys.executable)):
        spawn.set_executable(value)
        assert spawn.get_executable() == os.fsencode(sys.executable)
    spawn.set_executable("/somewhere/python")
    assert spawn.get_executable() == b"/somewhere/python"
    spawn.set_executable(None)         # back to discovery
    assert spawn.get_executable() == os.fsencode(sys.executable)


@posix_only
@pytest.mark.parametrize("fake", ["", None, "/bin/sh"])
def test_discovery_without_a_usable_sys_executable(
        monkeypatch, fresh_interpreter_choice, fake):
    """The embedded case: sys.executable is empty or the host program."""
    real = os.path.realpath(sys.executable)
    monkeypatch.setattr(sys, "executable", fake)
    monkeypatch.setattr(sys, "_base_executable", fake, raising=False)
    exe = os.fsdecode(spawn.get_executable())
    assert exe and os.path.realpath(exe) == real or \
        _interpreter._answers_as_us(exe)
    out = subprocess.run([exe, "-c", "import sys; print(sys.version)"],
                         capture_output=True, text=True).stdout.strip()
    assert out == sys.version


@posix_only
def test_discovery_refuses_another_python(monkeypatch, tmp_path,
                                          fresh_interpreter_choice):
    """A 'python3' of another version first (e.g. on PATH) is rejected."""
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\necho '2.7.18 (fake)'\necho /elsewhere\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    monkeypatch.setattr(sys, "_base_executable", str(fake), raising=False)
    exe = spawn.get_executable()
    assert exe != os.fsencode(str(fake))
    assert _interpreter._Interpreter.probed[str(fake)] is False


@posix_only
def test_discovery_failure_says_set_executable(monkeypatch, tmp_path,
                                               fresh_interpreter_choice):
    for attr in ("prefix", "exec_prefix", "base_prefix", "base_exec_prefix"):
        monkeypatch.setattr(sys, attr, str(tmp_path))
    monkeypatch.setattr(sys, "executable", "")
    monkeypatch.setattr(sys, "_base_executable", "", raising=False)
    # no shared libpython either, so the child launcher cannot help
    monkeypatch.setattr(_cmultiprocessing, "runtime_library", lambda: None)
    with pytest.raises(RuntimeError, match="set_executable") as info:
        spawn.get_executable()
    assert "linked statically" in str(info.value)
    # every place looked at is named, the first one too
    assert repr(os.path.join(str(tmp_path), "bin", "python%d.%d"
                             % sys.version_info[:2])) in str(info.value)
    # and a start fails with that error too, leaving nothing behind
    ctx = cmultiprocessing.get_context("spawn")
    p = ctx.Process(target=print)
    with pytest.raises(RuntimeError, match="set_executable"):
        p.start()


# -- command line, preparation data ------------------------------------------

def test_command_line_shape(fresh_interpreter_choice):
    cmd = spawn.get_command_line(tracker_fd=7, pipe_handle=9)
    assert cmd[0] == spawn.get_executable()
    assert cmd[-3] == "-c"
    assert cmd[-1] == "--multiprocessing-fork"
    assert cmd[-2] == ("from cmultiprocessing.spawn import spawn_main; "
                       "spawn_main(tracker_fd=7, pipe_handle=9)")


def test_is_forking_and_fork_args():
    assert spawn.is_forking(["x", "--multiprocessing-fork"])
    assert not spawn.is_forking(["x"])
    assert not spawn.is_forking(["x", "-c"])
    assert spawn._parse_fork_args(["pipe_handle=5", "parent_pid=None"]) == \
        {"pipe_handle": 5, "parent_pid": None}


def test_preparation_data():
    # 3.14+: the method as chosen so far, None if none was (gh-109263);
    # before, asking for it chooses the default.
    method = cmultiprocessing.get_start_method(
        allow_none=sys.version_info >= (3, 14))
    data = spawn.get_preparation_data("child-name")
    assert data["name"] == "child-name"
    assert data["sys_path"] and "" not in data["sys_path"]
    assert data["dir"] == os.getcwd()
    assert data["authkey"] == cmultiprocessing.current_process().authkey
    assert data["start_method"] == method
    for key in ("sys_argv", "orig_dir", "log_to_stderr"):
        assert key in data


def test_not_importing_main_guard():
    me = cmultiprocessing.current_process()
    me._inheriting = True
    try:
        with pytest.raises(RuntimeError, match="bootstrapping phase"):
            spawn.get_preparation_data("x")
    finally:
        del me._inheriting


def test_import_main_path_runs_as_mp_main(tmp_path, monkeypatch):
    script = tmp_path / "somemain.py"
    script.write_text("import sys\nNAME = __name__\nARGV0 = sys.argv[0]\n"
                      "if __name__ == '__main__':\n    raise SystemExit(9)\n")
    old_main = sys.modules["__main__"]
    monkeypatch.setitem(sys.modules, "__main__", old_main)
    monkeypatch.delitem(sys.modules, "__mp_main__", raising=False)
    argv = list(sys.argv)
    spawn.import_main_path(str(script))
    try:
        main = sys.modules["__main__"]
        assert main is sys.modules["__mp_main__"]
        assert main.NAME == "__mp_main__"
        assert main.ARGV0 == str(script)
        assert main.__file__ == str(script)
        assert sys.argv == argv            # restored
    finally:
        spawn.old_main_modules.remove(old_main)
        sys.modules.pop("__mp_main__", None)


# -- the spawn start method end to end ---------------------------------------

def _report(conn):
    conn.send((sys.version, sys.prefix, os.getpid(), __name__))
    conn.close()


def test_spawn_process_runs_on_this_interpreter():
    ctx = cmultiprocessing.get_context("spawn")
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_report, args=(w,))
    p.start()
    w.close()
    version, prefix, pid, _ = r.recv()
    p.join(60)
    r.close()
    assert p.exitcode == 0
    assert (version, prefix, pid) == (sys.version, sys.prefix, p.pid)


def test_spawn_exit_codes():
    ctx = cmultiprocessing.get_context("spawn")
    p = ctx.Process(target=sys.exit, args=(7,))
    p.start()
    p.join(60)
    assert p.exitcode == 7


@posix_only
def test_spawn_missing_executable(tmp_path, fresh_interpreter_choice):
    spawn.set_executable(str(tmp_path / "no-python"))
    ctx = cmultiprocessing.get_context("spawn")
    p = ctx.Process(target=print)
    with pytest.raises(FileNotFoundError):
        p.start()


def test_spawn_script_main_module(tmp_path):
    """A script as main: children import it as __mp_main__."""
    res = _run_script(tmp_path, """
        import os, sys
        import cmultiprocessing as mp

        def work(conn):
            conn.send((__name__, sys.modules['__main__'].__name__,
                       sys.version))

        if __name__ == '__main__':
            ctx = mp.get_context('spawn')
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=work, args=(w,))
            p.start()
            print(r.recv())
            p.join()
            print('exit', p.exitcode)
    """)
    assert res.returncode == 0, res.stderr
    assert "('__mp_main__', '__mp_main__', %r)" % sys.version in res.stdout
    assert "exit 0" in res.stdout


def test_spawn_main_module_failing_to_import(tmp_path):
    """The child reports the failure and exits 1; the parent goes on."""
    res = _run_script(tmp_path, """
        import cmultiprocessing as mp
        if __name__ != '__main__':
            raise ImportError('boom in the child')

        if __name__ == '__main__':
            p = mp.get_context('spawn').Process(target=print)
            p.start()
            p.join(60)
            print('exit', p.exitcode)
    """)
    assert res.returncode == 0, res.stderr
    assert "exit 1" in res.stdout
    assert "boom in the child" in res.stderr


def test_spawn_without_main_guard(tmp_path):
    """A missing `if __name__ == '__main__'` gives the stdlib's error."""
    res = _run_script(tmp_path, """
        import cmultiprocessing as mp
        p = mp.get_context('spawn').Process(target=print)
        p.start()
        p.join(60)
    """)
    assert "bootstrapping phase" in res.stderr


def test_child_finds_a_package_added_at_run_time(tmp_path):
    """As in LLDB: the package is on sys.path only because the host added
    it at run time; children (spawn, forkserver, the tracker) still work,
    and import the very copy the host added.

    The package and its extension are copied to a folder of their own and
    the host runs without site-packages (-S, which children inherit), so
    the copy is importable only through the host's sys.path change, also
    where the package under test is installed in site-packages."""
    import shutil
    import _cmultiprocessing as native
    added = tmp_path / "added"
    shutil.copytree(os.path.dirname(os.path.abspath(cmultiprocessing.__file__)),
                    added / "cmultiprocessing",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(native.__file__, added)
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        sys.path[:0] = [%r]
        import cmultiprocessing as mp
        from cmultiprocessing import spawn

        def work(conn):
            import _cmultiprocessing
            conn.send((sys.version, mp.__file__, _cmultiprocessing.__file__))

        if __name__ == '__main__':
            assert spawn._homes_a_new_interpreter_misses() == [%r]
            for method in ('spawn', 'forkserver'):
                ctx = mp.get_context(method)
                r, w = ctx.Pipe(duplex=False)
                p = ctx.Process(target=work, args=(w,))
                p.start()
                version, package, ext = r.recv()
                assert version == sys.version
                assert package.startswith(sys.path[0] + os.sep), package
                assert ext.startswith(sys.path[0] + os.sep), ext
                p.join()
                print(method, p.exitcode)
    """ % (str(added), str(added))))
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    res = subprocess.run([sys.executable, "-S", str(script)],
                         capture_output=True, text=True, timeout=120, env=env,
                         cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "spawn 0" in res.stdout and "forkserver 0" in res.stdout


# -- compile_main: the spawned child's compile() of its main script ------------

def test_compile_main_matches_compile():
    src = (b"# -*- coding: latin-1 -*-\n"
           b"x = '\xe9'\n"
           b"def f():\n    return x * 2\n")
    ours = _cmultiprocessing.compile_main(src, "/some/main.py")
    theirs = compile(src, "/some/main.py", "exec", dont_inherit=True)
    assert ours.co_filename == "/some/main.py"
    assert ours.co_consts == theirs.co_consts or \
        ours.co_code == theirs.co_code
    ns_a, ns_b = {}, {}
    exec(ours, ns_a)
    exec(theirs, ns_b)
    assert ns_a["x"] == ns_b["x"] == "\xe9"
    assert ns_a["f"]() == "\xe9\xe9"


def test_compile_main_does_not_inherit_future_flags():
    # Called from code under "from __future__ import annotations": compile()
    # without dont_inherit would pass that on; compile_main must not.
    # Reading __annotations__: with the future import they are strings;
    # without it the name is looked up (at def time before 3.14, on first
    # access from 3.14 on, PEP 649) and fails.
    src = b"def f(a: undefined_name): pass\nf.__annotations__\n"
    caller = compile("from __future__ import annotations\n"
                     "inherited = compile(src, 'm.py', 'exec')\n"
                     "ours = compile_main(src, 'm.py')\n", "caller.py", "exec")
    ns = {"src": src, "compile_main": _cmultiprocessing.compile_main}
    exec(caller, ns)
    exec(ns["inherited"], {})          # annotations postponed: no error
    with pytest.raises(NameError):
        exec(ns["ours"], {})           # evaluated


def test_compile_main_errors():
    with pytest.raises(SyntaxError) as info:
        _cmultiprocessing.compile_main(b"x = (\n", "/bad/main.py")
    assert info.value.filename == "/bad/main.py"
    nul_error = SyntaxError if sys.version_info >= (3, 12) else ValueError
    with pytest.raises(nul_error, match="null bytes"):
        _cmultiprocessing.compile_main(b"x = 1\0\n", "m.py")
    with pytest.raises(TypeError, match="bytes"):
        _cmultiprocessing.compile_main("x = 1", "m.py")
    with pytest.raises(TypeError, match="str"):
        _cmultiprocessing.compile_main(b"x = 1", b"m.py")
    with pytest.raises(TypeError, match="2 arguments"):
        _cmultiprocessing.compile_main(b"x = 1")


def test_child_runs_a_latin1_main_script(tmp_path):
    script = tmp_path / "main_script.py"
    script.write_bytes(textwrap.dedent("""\
        # -*- coding: latin-1 -*-
        import cmultiprocessing as mp
        WORD = '\xe9t\xe9'

        def work(conn):
            conn.send(WORD)

        if __name__ == '__main__':
            ctx = mp.get_context('spawn')
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=work, args=(w,))
            p.start()
            print(ascii(r.recv()))
            p.join()
            print(p.exitcode)
    """).encode("latin-1"))
    res = subprocess.run([sys.executable, str(script)], capture_output=True,
                         text=True, timeout=120, env=_child_env(),
                         cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["'\\xe9t\\xe9'", "0"]


def test_spawn_machinery_imports_stay_light():
    # A spawned child imports these before it runs anything of the user's;
    # none of them may pull in the heavy modules (re, enum, pickle.py,
    # socket, signal), whatever _cmultiprocessing itself imports.
    env = _child_env()
    code = ("import sys, _cmultiprocessing\n"
            "before = set(sys.modules)\n"
            "import cmultiprocessing.spawn, cmultiprocessing.resource_tracker\n"
            "import cmultiprocessing.popen_spawn_posix\n"
            "print(sorted(set(sys.modules) - before & {'pickle', 'socket',"
            " 're', 'enum', 'signal', 'selectors', 'struct', 'tempfile'}))")
    res = subprocess.run([sys.executable, "-S", "-c", code],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# -- the main script compiled once by the parent -------------------------------

def test_main_code_for_children(tmp_path, monkeypatch):
    good = tmp_path / "good.py"
    good.write_text("X = 1\n")
    found = spawn._main_code_for_children(str(good))
    st = os.stat(good)
    assert found[:2] == (st.st_mtime_ns, st.st_size)
    assert spawn._main_code_for_children(str(good)) is found    # cached
    ns = {}
    exec(spawn._code_of_script(str(good), found), ns)
    assert ns["X"] == 1
    bad = tmp_path / "bad.py"
    bad.write_text("X = (\n")
    assert spawn._main_code_for_children(str(bad)) is None
    assert spawn._main_code_for_children(str(tmp_path / "gone.py")) is None
    other = tmp_path / "prog"
    other.write_text("X = 1\n")
    assert spawn._main_code_for_children(str(other)) is None
    monkeypatch.setattr(spawn, "_MAX_MAIN_CODE", 10)
    big = tmp_path / "big.py"
    big.write_text("X = %r\n" % ("y" * 100))
    assert spawn._main_code_for_children(str(big)) is None


def test_code_of_script_falls_back_to_the_file(tmp_path):
    script = tmp_path / "m.py"
    script.write_text("X = 2\n")
    st = os.stat(script)
    for compiled in [(st.st_mtime_ns, st.st_size, b"not marshal data"),
                     (st.st_mtime_ns + 1, st.st_size,
                      __import__("marshal").dumps(compile("X = 3", "m", "exec"))),
                     ("junk",), None]:
        ns = {}
        exec(spawn._code_of_script(str(script), compiled), ns)
        assert ns["X"] == 2


def test_spawned_child_runs_the_parents_compiled_main(tmp_path):
    # Like a .pyc: while the script's mtime and size are those the parent
    # compiled, children run that code; once they change, the new source.
    res = _run_script(tmp_path, """
        import os
        import cmultiprocessing as mp
        WORD = 'aaaa'

        def work(conn):
            conn.send(WORD)

        def ask(ctx):
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=work, args=(w,))
            p.start()
            word = r.recv()
            p.join()
            return word

        if __name__ == '__main__':
            ctx = mp.get_context('spawn')
            me = os.path.abspath(__file__)
            first = ask(ctx)
            st = os.stat(me)
            with open(me) as f:
                text = f.read()
            with open(me, 'w') as f:            # same size, same mtime
                f.write(text.replace("'aaaa'", "'bbbb'"))
            os.utime(me, ns=(st.st_atime_ns, st.st_mtime_ns))
            second = ask(ctx)
            with open(me, 'w') as f:            # another size
                f.write(text.replace("'aaaa'", "'cccccc'"))
            third = ask(ctx)
            print(first, second, third)
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["aaaa", "aaaa", "cccccc"]
