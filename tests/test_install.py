"""The alias: cmultiprocessing.install()/uninstall(), `python -m
cmultiprocessing`, the CMULTIPROCESSING_ALIAS environment variable, and
concurrent.futures' ProcessPoolExecutor on top of the package.

Each check runs in a fresh interpreter (the alias changes sys.modules for
good) with a time limit, and reports what it found as JSON on its last line
of output; the assertions are made here.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import cmultiprocessing

METHODS = ("fork", "spawn", "forkserver")
TIMEOUT = 120
ENV_VAR = "CMULTIPROCESSING_ALIAS"

# A child's report: the name `multiprocessing` gives, and every module of
# the stdlib's package that the process loaded.
PROBE = textwrap.dedent("""
    import sys

    def stdlib_modules():
        return sorted(k for k, m in list(sys.modules.items())
                      if (k == 'multiprocessing' or
                          k.startswith(('multiprocessing.',
                                        '_multiprocessing')))
                      and not getattr(m, '__name__', '').startswith(
                          ('cmultiprocessing', '_cmultiprocessing')))

    def probe(q):
        import os
        import multiprocessing
        import multiprocessing.connection
        import concurrent.futures.process
        q.put({'name': multiprocessing.__name__,
               'pid': os.getpid(),
               'stdlib': stdlib_modules(),
               'env': os.environ.get('CMULTIPROCESSING_ALIAS')})
""")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env.update(extra)
    return env


def run_python(args, cwd, env=None, timeout=TIMEOUT):
    return subprocess.run([sys.executable] + args, cwd=cwd,
                          env=env or clean_env(), capture_output=True,
                          text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def run_code(tmp_path, code, args=(), env=None, name="prog.py"):
    """Write code (with PROBE before it) to a script; run it; return the
    JSON of its last stdout line."""
    script = tmp_path / name
    script.write_text(PROBE + textwrap.dedent(code))
    proc = run_python([str(script), *args], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def hook_installed():
    """True where the start-up hook (.pth) sits beside the installed
    package, which the environment variable needs."""
    site = os.path.dirname(os.path.dirname(cmultiprocessing.__file__))
    return os.path.exists(os.path.join(site, "cmultiprocessing-alias.pth"))


needs_hook = pytest.mark.skipif(
    not hook_installed(),
    reason="the package is not installed (no cmultiprocessing-alias.pth)")


# --------------------------------------------------------------------------
# install() and uninstall()

@pytest.mark.timeout(TIMEOUT)
def test_install_gives_our_modules_under_both_names(tmp_path):
    got = run_code(tmp_path, """
        import importlib, importlib.util, json
        import cmultiprocessing
        cmultiprocessing.install()
        cmultiprocessing.install()          # twice: harmless
        import multiprocessing, multiprocessing.pool, _multiprocessing
        import multiprocessing.dummy.connection
        from multiprocessing import shared_memory, Pool
        import _cmultiprocessing, cmultiprocessing.dummy.connection
        try:
            import multiprocessing.no_such_module
            missing = None
        except ModuleNotFoundError as e:
            missing = e.name
        print(json.dumps({
            'same': [multiprocessing is cmultiprocessing,
                     multiprocessing.pool is cmultiprocessing.pool,
                     _multiprocessing is _cmultiprocessing,
                     multiprocessing.dummy.connection is
                     cmultiprocessing.dummy.connection,
                     shared_memory is cmultiprocessing.shared_memory,
                     Pool == cmultiprocessing.Pool],
            'names': [multiprocessing.pool.__name__,
                      multiprocessing.pool.__spec__.name,
                      multiprocessing.__spec__.name,
                      _multiprocessing.__spec__.name],
            'find_spec': importlib.util.find_spec('multiprocessing.pool').name,
            'find_missing': importlib.util.find_spec(
                'multiprocessing.no_such_module') is None,
            'missing': missing,
            'reload': importlib.reload(multiprocessing).__name__,
            'stdlib': stdlib_modules()}))
    """)
    assert got["same"] == [True] * 6
    assert got["names"] == ["cmultiprocessing.pool", "cmultiprocessing.pool",
                            "cmultiprocessing", "_cmultiprocessing"]
    assert got["find_spec"] == "cmultiprocessing.pool"
    assert got["find_missing"] is True
    assert got["missing"] == "multiprocessing.no_such_module"
    assert got["reload"] == "cmultiprocessing"
    assert got["stdlib"] == []


@pytest.mark.timeout(TIMEOUT)
def test_uninstall_gives_the_stdlib_back(tmp_path):
    got = run_code(tmp_path, """
        import json, os, sys
        import cmultiprocessing
        cmultiprocessing.install()
        os.environ['CMULTIPROCESSING_ALIAS'] = '1'
        import multiprocessing.queues
        ours = multiprocessing.__name__
        cmultiprocessing.uninstall()
        left = sorted(k for k in sys.modules if k.startswith(
            ('multiprocessing', '_multiprocessing')))
        import multiprocessing
        print(json.dumps({'ours': ours, 'left': left,
                          'after': multiprocessing.__name__,
                          'file': multiprocessing.__file__,
                          'env': os.environ.get('CMULTIPROCESSING_ALIAS'),
                          'pool_still_ours': sys.modules['cmultiprocessing.queues'].__name__}))
    """)
    assert got["ours"] == "cmultiprocessing"
    assert got["left"] == []
    assert got["after"] == "multiprocessing"
    assert "cmultiprocessing" not in got["file"]
    assert got["env"] is None
    assert got["pool_still_ours"] == "cmultiprocessing.queues"


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("first", ["multiprocessing", "_multiprocessing"])
def test_already_imported_is_refused_with_nothing_changed(tmp_path, first):
    got = run_code(tmp_path, """
        import json, sys
        import %s
        import cmultiprocessing
        before = (list(sys.meta_path), dict(sys.modules))
        try:
            cmultiprocessing.install()
            error = None
        except RuntimeError as e:
            error = str(e)
        unchanged = (list(sys.meta_path) == before[0] and
                     all(sys.modules.get(k) is v
                         for k, v in before[1].items()) and
                     not [k for k in sys.modules if k not in before[1]
                          and k.startswith('multiprocessing')])
        print(json.dumps({'error': error, 'unchanged': unchanged}))
    """ % first)
    assert got["unchanged"] is True
    error = got["error"]
    assert error is not None
    assert "already imported" in error and first in error
    # it says what to do
    assert "before anything imports multiprocessing" in error
    assert "python -m cmultiprocessing" in error


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("method", METHODS)
def test_children_see_the_alias(tmp_path, method):
    # install() alone, no environment variable: the children get the alias
    # through what their start method carries (fork: the parent's modules;
    # spawn: the preparation data; forkserver: the server's options).
    got = run_code(tmp_path, """
        import json
        import cmultiprocessing
        cmultiprocessing.install()
        import multiprocessing as mp
        if __name__ == '__main__':
            ctx = mp.get_context(%r)
            q = ctx.Queue()
            p = ctx.Process(target=probe, args=(q,))
            p.start()
            child = q.get(timeout=60)
            p.join(60)
            print(json.dumps({'child': child, 'parent': stdlib_modules(),
                              'exitcode': p.exitcode}))
    """ % method)
    assert got["exitcode"] == 0
    assert got["child"]["name"] == "cmultiprocessing"
    assert got["child"]["stdlib"] == []
    assert got["child"]["env"] is None
    assert got["parent"] == []


@pytest.mark.timeout(TIMEOUT)
def test_uninstalled_children_get_the_stdlib(tmp_path):
    # a forkserver started under the alias, then uninstall(): its later
    # children follow the parent
    got = run_code(tmp_path, """
        import json
        import cmultiprocessing
        cmultiprocessing.install()
        if __name__ == '__main__':
            ctx = cmultiprocessing.get_context('forkserver')
            def one():
                q = ctx.Queue()
                p = ctx.Process(target=probe, args=(q,))
                p.start()
                got = q.get(timeout=60)
                p.join(60)
                return got['name']
            first = one()
            cmultiprocessing.uninstall()
            print(json.dumps([first, one()]))
    """)
    assert got == ["cmultiprocessing", "multiprocessing"]


@pytest.mark.timeout(TIMEOUT)
def test_child_that_cannot_import_the_alias_says_so(tmp_path):
    # the parent found _cmultiprocessing_alias on a path its spawned child
    # does not get: the child fails in its preparation, naming the module,
    # and the parent sees it exit (no hang)
    import shutil
    import _cmultiprocessing
    import _cmultiprocessing_alias
    pkg, alias = tmp_path / "pkg", tmp_path / "alias"
    shutil.copytree(os.path.dirname(cmultiprocessing.__file__),
                    pkg / "cmultiprocessing",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(_cmultiprocessing.__file__, pkg)
    alias.mkdir()
    shutil.copy2(_cmultiprocessing_alias.__file__, alias)
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent("""
        import sys
        sys.path[:0] = [%r, %r]
        import cmultiprocessing
        cmultiprocessing.install()
        sys.path.remove(%r)

        def work():
            pass

        if __name__ == '__main__':
            p = cmultiprocessing.get_context('spawn').Process(target=work)
            p.start()
            p.join(60)
            print(p.exitcode)
    """ % (str(pkg), str(alias), str(alias))))
    env = clean_env()
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-S", str(script)], cwd=tmp_path,
                          env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
    assert "cannot import its module, _cmultiprocessing_alias" in proc.stderr


# --------------------------------------------------------------------------
# python -m cmultiprocessing, and the environment variable

@pytest.mark.timeout(TIMEOUT)
def test_command_runs_a_script_as_main(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROBE + textwrap.dedent("""
        import json, os, sys
        import multiprocessing as mp
        if __name__ == '__main__':
            out = {}
            for method in ('fork', 'spawn', 'forkserver'):
                ctx = mp.get_context(method)
                q = ctx.Queue()
                p = ctx.Process(target=probe, args=(q,))
                p.start()
                out[method] = q.get(timeout=60)
                p.join(60)
            print(json.dumps({'argv': sys.argv, 'name': mp.__name__,
                              'path0': sys.path[0], 'children': out,
                              'main_file': sys.modules['__main__'].__file__,
                              'parent': stdlib_modules()}))
            sys.exit(3)
    """))
    proc = run_python(["-m", "cmultiprocessing", str(script), "a", "-b"],
                      tmp_path)
    assert proc.returncode == 3, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["argv"] == [str(script), "a", "-b"]
    assert got["name"] == "cmultiprocessing"
    assert got["path0"] == str(tmp_path)
    assert got["main_file"] == str(script)
    assert got["parent"] == []
    for method, child in got["children"].items():
        assert child["name"] == "cmultiprocessing", method
        assert child["stdlib"] == [], method
        assert child["env"] == "1", method


@pytest.mark.timeout(TIMEOUT)
def test_command_runs_a_module(tmp_path):
    pkg = tmp_path / "apkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tool.py").write_text(PROBE + textwrap.dedent("""
        import json, sys
        import multiprocessing as mp
        if __name__ == '__main__':
            ctx = mp.get_context('spawn')
            q = ctx.Queue()
            p = ctx.Process(target=probe, args=(q,))
            p.start()
            child = q.get(timeout=60)
            p.join(60)
            print(json.dumps({'argv': sys.argv, 'spec': __spec__.name,
                              'name': mp.__name__, 'child': child}))
    """))
    proc = run_python(["-m", "cmultiprocessing", "-m", "apkg.tool", "x"],
                      tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["argv"] == [str(pkg / "tool.py"), "x"]
    assert got["spec"] == "apkg.tool"
    assert got["name"] == "cmultiprocessing"
    assert got["child"]["name"] == "cmultiprocessing"
    assert got["child"]["stdlib"] == []


@pytest.mark.timeout(TIMEOUT)
def test_command_usage_and_bad_arguments(tmp_path):
    proc = run_python(["-m", "cmultiprocessing"], tmp_path)
    assert proc.returncode == 2
    assert "python -m cmultiprocessing SCRIPT" in proc.stdout
    proc = run_python(["-m", "cmultiprocessing", "-m"], tmp_path)
    assert proc.returncode == 2
    assert "-m needs a module name" in proc.stderr
    proc = run_python(["-m", "cmultiprocessing",
                       str(tmp_path / "missing.py")], tmp_path)
    assert proc.returncode == 2
    assert "can't open file" in proc.stderr


@needs_hook
@pytest.mark.timeout(TIMEOUT)
def test_environment_variable_installs_lazily(tmp_path):
    code = ("import json, sys; before = 'cmultiprocessing' in sys.modules; "
            "import multiprocessing, _multiprocessing; "
            "print(json.dumps([before, multiprocessing.__name__, "
            "_multiprocessing.__name__]))")
    proc = run_python(["-c", code], tmp_path, clean_env(**{ENV_VAR: "1"}))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [False, "cmultiprocessing",
                                       "_cmultiprocessing"]
    # "0" and unset leave the interpreter alone
    for env in (clean_env(**{ENV_VAR: "0"}), clean_env()):
        proc = run_python(["-c", code], tmp_path, env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)[1] == "multiprocessing"


@needs_hook
@pytest.mark.timeout(TIMEOUT)
def test_command_reaches_grandchildren_through_the_environment(tmp_path):
    # a program that starts another Python program (a test runner's
    # workers, say): that one has the alias from its first line
    script = tmp_path / "outer.py"
    script.write_text(textwrap.dedent("""
        import subprocess, sys
        code = ('import multiprocessing, sys; '
                'print(multiprocessing.__name__)')
        print(subprocess.run([sys.executable, '-c', code], text=True,
                             capture_output=True, timeout=60).stdout.strip())
    """))
    proc = run_python(["-m", "cmultiprocessing", str(script)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "cmultiprocessing"


@needs_hook
@pytest.mark.timeout(TIMEOUT)
def test_environment_variable_in_a_sub_interpreter(tmp_path):
    # a legacy (shared-GIL) sub-interpreter runs site, and so the hook
    code = textwrap.dedent("""
        import os
        import _testcapi
        r, w = os.pipe()
        rc = _testcapi.run_in_subinterp(
            'import multiprocessing, os; '
            'os.write(%d, multiprocessing.__name__.encode())' % w)
        os.close(w)
        print(rc, os.read(r, 100).decode())
    """)
    proc = run_python(["-c", code], tmp_path, clean_env(**{ENV_VAR: "1"}))
    if proc.returncode != 0 and "_testcapi" in proc.stderr:
        pytest.skip("no _testcapi to start a sub-interpreter with")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "cmultiprocessing"]


@needs_hook
@pytest.mark.timeout(TIMEOUT)
def test_environment_variable_in_an_isolated_sub_interpreter(tmp_path):
    # an interpreter with a GIL of its own (InterpreterPoolExecutor's): the
    # hook runs there, and the package loads and works there
    if sys.version_info < (3, 12):
        pytest.skip("isolated sub-interpreters are 3.12+")
    inner = textwrap.dedent("""
        import os
        import multiprocessing, _multiprocessing
        a, b = multiprocessing.Pipe()
        a.send([1, 'two'])
        got = b.recv()
        os.write(W, ('%s %s %r' % (multiprocessing.__name__,
                                   _multiprocessing.__name__, got)).encode())
    """)
    code = textwrap.dedent("""
        import os
        try:
            import _interpreters as interpreters
        except ImportError:
            import _xxsubinterpreters as interpreters
        r, w = os.pipe()
        iid = interpreters.create()
        try:
            interpreters.run_string(iid, %r.replace('W', str(w)))
        finally:
            interpreters.destroy(iid)
        os.close(w)
        print(os.read(r, 4096).decode())
    """) % inner
    proc = run_python(["-c", code], tmp_path, clean_env(**{ENV_VAR: "1"}))
    if "No module named" in proc.stderr and "interpreters" in proc.stderr:
        pytest.skip("no sub-interpreter module")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == \
        "cmultiprocessing _cmultiprocessing [1, 'two']"


# --------------------------------------------------------------------------
# concurrent.futures on top

POOL_CHECKS = textwrap.dedent("""
    import json, os, signal, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    def double(x):
        return 2 * x

    def die(_):
        os._exit(1)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('not picklable')

    def checks(ctx):
        out = {}
        with ProcessPoolExecutor(2, mp_context=ctx) as ex:
            out['map'] = list(ex.map(double, range(8)))
            f = ex.submit(double, Unpicklable())
            try:
                f.result(timeout=60)
            except RuntimeError as e:
                out['unpicklable'] = str(e)
            out['after'] = ex.submit(double, 21).result(timeout=60)
        ex = ProcessPoolExecutor(2, mp_context=ctx)
        try:
            ex.submit(die, 0).result(timeout=60)
        except BrokenProcessPool:
            out['broken'] = True
        ex.shutdown(wait=True)
        if hasattr(ProcessPoolExecutor, 'terminate_workers'):   # 3.14+
            with ProcessPoolExecutor(2, mp_context=ctx) as ex:
                out['buffered'] = list(ex.map(double, range(6),
                                              buffersize=2))
                ex.submit(time.sleep, 30)
                ex.terminate_workers()
            with ProcessPoolExecutor(2, mp_context=ctx) as ex:
                ex.submit(time.sleep, 30)
                ex.kill_workers()
            out['stopped'] = True
        with ProcessPoolExecutor(1, mp_context=ctx) as ex:
            blocker = ex.submit(time.sleep, 0.5)
            later = [ex.submit(double, i) for i in range(20)]
            ex.shutdown(wait=True, cancel_futures=True)
            out['cancelled'] = any(f.cancelled() for f in later)
            out['blocker'] = blocker.result() is None
        if ctx.get_start_method() != 'fork':
            # one at a time, as CPython's test does (map() with
            # max_tasks_per_child can hang on the stdlib too)
            with ProcessPoolExecutor(1, mp_context=ctx,
                                     max_tasks_per_child=2) as ex:
                out['pids'] = len({ex.submit(os.getpid).result(timeout=60)
                                   for _ in range(6)})
        return out
""")


@pytest.mark.timeout(TIMEOUT * 2)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("through", ["alias", "mp_context"])
def test_process_pool_executor(tmp_path, method, through):
    head = textwrap.dedent("""
        import cmultiprocessing
        if %r == 'alias':
            cmultiprocessing.install()
    """ % through)
    tail = textwrap.dedent("""
        if __name__ == '__main__':
            out = checks(cmultiprocessing.get_context(%r))
            out['stdlib'] = stdlib_modules()
            print(json.dumps(out))
    """ % method)
    got = run_code(tmp_path, head + POOL_CHECKS + tail)
    assert got["map"] == [0, 2, 4, 6, 8, 10, 12, 14]
    assert got["unpicklable"] == "not picklable"
    assert got["after"] == 42
    assert got["broken"] is True
    if method != "fork":
        assert got["pids"] == 3     # a new worker every two tasks
    assert got["cancelled"] is True and got["blocker"] is True
    if sys.version_info >= (3, 14):
        assert got["buffered"] == [0, 2, 4, 6, 8, 10]
        assert got["stopped"] is True
    if through == "alias":
        assert got["stdlib"] == []
