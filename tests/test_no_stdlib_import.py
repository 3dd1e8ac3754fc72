"""cmultiprocessing never imports the standard library's multiprocessing.

Neither the package nor anything it starts may load `multiprocessing`,
`_multiprocessing`, `_posixshmem`, `_posixsubprocess` or `concurrent.futures`
(nor their submodules).  Two kinds of check:

* static: no line under Lib/cmultiprocessing imports them, by an import
  statement or by importlib/__import__ with a literal name;
* dynamic: for each feature, a fresh interpreter imports cmultiprocessing and
  uses the feature, including child processes under each start method; the
  parent and every child report their sys.modules, and no process that the
  run starts may have a command line naming the stdlib package.

Every feature listed exists, so a feature that fails to run fails its test.
"""
import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(ROOT, "Lib", "cmultiprocessing")
FORBIDDEN = ("multiprocessing", "_multiprocessing", "_posixshmem",
             "_posixsubprocess", "concurrent.futures")


def is_forbidden(name):
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


# ---------------------------------------------------------------------------
# static check

def _package_files():
    for folder, _, files in os.walk(PACKAGE_DIR):
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.join(folder, f)


def forbidden_imports(source, filename="<source>"):
    """[(line, name)] for each import of a forbidden module in source."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if is_forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                if is_forbidden(node.module):
                    found.append((node.lineno, node.module))
                elif node.module == "concurrent" and any(
                        a.name == "futures" for a in node.names):
                    found.append((node.lineno, "concurrent.futures"))
        elif isinstance(node, ast.Call):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else \
                func.id if isinstance(func, ast.Name) else None
            if fname in ("import_module", "__import__", "find_spec",
                         "import_fresh_module") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) \
                        and is_forbidden(arg.value):
                    found.append((node.lineno, arg.value))
    return found


def test_static_checker_finds_each_form():
    # the checker itself: every form of import it must catch, and none it must not
    src = textwrap.dedent("""
        import multiprocessing
        import os, _posixshmem
        from multiprocessing import connection
        from _multiprocessing import SemLock
        import multiprocessing.shared_memory as sm
        from concurrent import futures
        from concurrent.futures import Future
        import importlib; importlib.import_module("_posixsubprocess")
        __import__("multiprocessing.pool")
        from . import connection
        from .context import reduction
        import cmultiprocessing, _cmultiprocessing
        x = "multiprocessing"
    """)
    names = [n for _, n in forbidden_imports(src)]
    assert names == ["multiprocessing", "_posixshmem", "multiprocessing",
                     "_multiprocessing", "multiprocessing.shared_memory",
                     "concurrent.futures", "concurrent.futures",
                     "_posixsubprocess", "multiprocessing.pool"]


def test_no_line_of_the_package_imports_the_stdlib():
    files = list(_package_files())
    assert files, "no Python files found under %s" % PACKAGE_DIR
    bad = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        for line, name in forbidden_imports(source, path):
            bad.append("%s:%d imports %s" % (os.path.relpath(path, ROOT), line, name))
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------------------
# dynamic check: a script run in a fresh interpreter, once per feature

FEATURE_SCRIPT = r'''
import json, os, sys, traceback

FORBIDDEN = %(forbidden)r
REPORT_DIR = os.environ.get("CMP_NOSTD_REPORT_DIR", ".")


def forbidden_loaded():
    return sorted(m for m in sys.modules
                  if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def report(tag):
    """Called in a child: write down which forbidden modules it holds."""
    path = os.path.join(REPORT_DIR, "child-%%s-%%d.json" %% (tag, os.getpid()))
    with open(path, "w") as f:
        json.dump({"tag": tag, "forbidden": forbidden_loaded(),
                   "main": getattr(sys.modules.get("__main__"), "__file__", None)}, f)


def child_report(tag):
    report(tag)


def child_put(q, tag):
    report(tag)
    q.put(("hello", tag))
    q.put(b"x" * 70000)


def child_sync(ev, lock, sem, cond, barrier, tag):
    report(tag)
    with lock:
        pass
    sem.acquire()
    barrier.wait(30)
    with cond:
        cond.notify_all()
    ev.set()


def child_value(val, arr, tag):
    report(tag)
    with val.get_lock():
        val.value += 5
    arr[0] = 42


def child_shm(name, tag):
    from cmultiprocessing import shared_memory
    report(tag)
    shm = shared_memory.SharedMemory(name=name)
    shm.buf[:5] = b"child"
    shm.close()


def child_client(address, authkey, tag):
    from cmultiprocessing.connection import Client
    report(tag)
    with Client(address, authkey=authkey) as c:
        c.send(c.recv() * 2)


def child_conn(conn, tag):
    report(tag)
    conn.send(conn.recv() + 1)


def pool_task(x):
    report("pool")
    return x * x


def manager_report():
    report("manager-server")
    return {}


def child_recv_fd(conn, tag):
    from cmultiprocessing import reduction
    report(tag)
    fd = reduction.recv_handle(conn)
    os.write(fd, b"via SCM_RIGHTS")
    os.close(fd)


# ---- the features -----------------------------------------------------------

def f_import_all():
    import pkgutil
    import cmultiprocessing
    names = []
    for info in pkgutil.walk_packages(cmultiprocessing.__path__, "cmultiprocessing."):
        try:
            __import__(info.name)
        except ImportError as exc:      # other platforms' modules (_winapi, ...)
            if exc.name and exc.name.startswith(("cmultiprocessing", "_cmultiprocessing")):
                raise
            continue
        names.append(info.name)
    assert names, "no submodule imported"


def f_basics():
    import cmultiprocessing as mp
    assert mp.cpu_count() >= 1
    assert mp.current_process().name == "MainProcess"
    assert mp.parent_process() is None
    assert mp.get_start_method() in mp.get_all_start_methods()
    assert mp.active_children() == []
    mp.freeze_support()


def f_pipe():
    import cmultiprocessing as mp
    a, b = mp.Pipe()
    a.send({"k": [1, 2]})
    assert b.recv() == {"k": [1, 2]}
    b.send_bytes(b"abc")
    assert a.poll(5) and a.recv_bytes() == b"abc"
    r, w = mp.Pipe(duplex=False)
    w.send_bytes(b"x" * 60000)      # fits the pipe's buffer: no reader yet
    assert len(r.recv_bytes()) == 60000
    for c in (a, b, r, w):
        c.close()
    return False


def process_feature(method):
    def run():
        import cmultiprocessing as mp
        if method not in mp.get_all_start_methods():
            raise NotImplementedError("start method %%s not offered here" %% method)
        ctx = mp.get_context(method)
        p = ctx.Process(target=child_report, args=(method,))
        p.start()
        p.join(60)
        assert p.exitcode == 0, p.exitcode
        a, b = ctx.Pipe()
        p = ctx.Process(target=child_conn, args=(b, method + "-pipe"))
        p.start()
        a.send(41)
        assert a.recv() == 42
        p.join(60)
        assert p.exitcode == 0, p.exitcode
        return True
    return run


def f_synchronize():
    import cmultiprocessing as mp
    ctx = mp.get_context()
    lock, rlock = ctx.Lock(), ctx.RLock()
    sem, bsem = ctx.Semaphore(0), ctx.BoundedSemaphore(1)
    cond, ev, barrier = ctx.Condition(), ctx.Event(), ctx.Barrier(2)
    with rlock, rlock, bsem:
        pass
    p = ctx.Process(target=child_sync, args=(ev, lock, sem, cond, barrier, "sync"))
    p.start()
    sem.release()
    barrier.wait(30)
    assert ev.wait(30)
    p.join(60)
    assert p.exitcode == 0, p.exitcode
    return True


def f_queues():
    import cmultiprocessing as mp
    ctx = mp.get_context()
    for make in (ctx.Queue, ctx.SimpleQueue, ctx.JoinableQueue):
        q = make()
        p = ctx.Process(target=child_put, args=(q, make.__name__))
        p.start()
        assert q.get() == ("hello", make.__name__)
        assert len(q.get()) == 70000
        p.join(60)
        assert p.exitcode == 0, p.exitcode
        q.close()
    return True


def f_pool():
    import cmultiprocessing as mp
    with mp.get_context().Pool(2) as pool:
        assert pool.map(pool_task, range(10)) == [x * x for x in range(10)]
        assert pool.apply_async(pool_task, (7,)).get(60) == 49
        assert sorted(pool.imap_unordered(pool_task, range(5))) == [0, 1, 4, 9, 16]
    pool.join()
    return True


try:        # module level, so that the spawn and forkserver methods find it
    from cmultiprocessing.managers import SyncManager as _SyncManager

    class ReportingManager(_SyncManager):
        pass
    ReportingManager.register("report", callable=manager_report)
except Exception as exc:
    ReportingManager = exc


def f_manager():
    if isinstance(ReportingManager, BaseException):
        raise ReportingManager
    with ReportingManager() as m:
        d = m.dict()
        d["a"] = 1
        lst = m.list([1, 2])
        lst.append(3)
        ns = m.Namespace(x=1)
        ns.x += 1
        q = m.Queue()
        q.put(5)
        assert (d["a"], list(lst), ns.x, q.get()) == (1, [1, 2, 3], 2, 5)
        with m.Lock():
            pass
        m.report()
    return True


def f_sharedctypes():
    import cmultiprocessing as mp
    ctx = mp.get_context()
    val, arr = ctx.Value("i", 1), ctx.Array("d", [0.0] * 4)
    raw_v, raw_a = ctx.RawValue("l", 3), ctx.RawArray("b", 10)
    raw_a[3] = 7
    assert raw_v.value == 3 and raw_a[3] == 7
    p = ctx.Process(target=child_value, args=(val, arr, "sharedctypes"))
    p.start()
    p.join(60)
    assert p.exitcode == 0, p.exitcode
    assert (val.value, arr[0]) == (6, 42.0)
    return True


def f_shared_memory():
    import cmultiprocessing as mp
    from cmultiprocessing import shared_memory
    shm = shared_memory.SharedMemory(name=os.environ["CMP_NOSTD_SHM_NAME"],
                                     create=True, size=4096)
    try:
        p = mp.get_context().Process(target=child_shm, args=(shm.name, "shm"))
        p.start()
        p.join(60)
        assert p.exitcode == 0, p.exitcode
        assert bytes(shm.buf[:5]) == b"child"
        sl = shared_memory.ShareableList([1, "two", 3.0])
        try:
            assert list(sl) == [1, "two", 3.0]
        finally:
            sl.shm.close()
            sl.shm.unlink()
    finally:
        shm.close()
        shm.unlink()
    return True


def f_heap():
    from cmultiprocessing import heap
    bufs = [heap.BufferWrapper(n) for n in (1, 100, 5000, 1 << 20)]
    for b in bufs:
        view = b.create_memoryview()
        view[0] = 1
        view.release()
    return False


def f_listener():
    import cmultiprocessing as mp
    from cmultiprocessing.connection import Listener
    for family in ("AF_UNIX", "AF_INET"):
        with Listener(family=family, authkey=b"secret") as listener:
            address = listener.address
            p = mp.get_context().Process(target=child_client,
                                         args=(address, b"secret", family))
            p.start()
            with listener.accept() as conn:
                conn.send(21)
                assert conn.recv() == 42
            p.join(60)
            assert p.exitcode == 0, p.exitcode
    return True


def f_fd_passing():
    import cmultiprocessing as mp
    from cmultiprocessing import reduction
    ctx = mp.get_context()
    a, b = ctx.Pipe()
    p = ctx.Process(target=child_recv_fd, args=(b, "fdpass"))
    p.start()
    r, w = os.pipe()
    reduction.send_handle(a, w, p.pid)
    os.close(w)
    p.join(60)
    assert p.exitcode == 0, p.exitcode
    assert os.read(r, 100) == b"via SCM_RIGHTS"
    os.close(r)
    return True


def f_dummy():
    import cmultiprocessing.dummy as dummy
    with dummy.Pool(2) as pool:
        assert pool.map(abs, [-1, -2]) == [1, 2]
    q = dummy.Queue()
    t = dummy.Process(target=q.put, args=(1,))
    t.start()
    t.join()
    assert q.get() == 1
    a, b = dummy.Pipe()
    a.send(3)
    assert b.recv() == 3
    return False


FEATURES = {
    "import_all": f_import_all, "basics": f_basics, "pipe": f_pipe,
    "process_fork": process_feature("fork"),
    "process_spawn": process_feature("spawn"),
    "process_forkserver": process_feature("forkserver"),
    "synchronize": f_synchronize, "queues": f_queues, "pool": f_pool,
    "manager": f_manager, "sharedctypes": f_sharedctypes,
    "shared_memory": f_shared_memory, "heap": f_heap, "listener": f_listener,
    "fd_passing": f_fd_passing, "dummy": f_dummy,
}


def descendants_cmdlines():
    """Command lines of the live processes below this one (Linux only)."""
    if not os.path.isdir("/proc/self/task"):
        return []
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%%s/stat" %% name, "rb") as f:
                    stat = f.read()
                parents[int(name)] = int(stat[stat.rfind(b")") + 2:].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    mine, grew = {os.getpid()}, True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                grew = True
    out = []
    for pid in mine - {os.getpid()}:
        try:
            with open("/proc/%%d/cmdline" %% pid, "rb") as f:
                out.append(f.read().replace(b"\0", b" ").decode("utf-8", "replace"))
        except OSError:
            pass
    return out


def main():
    name = sys.argv[1]
    result = {"feature": name}
    feature, _, method = name.partition("@")
    try:
        if method:      # the same feature with children of another start method
            import cmultiprocessing
            if method not in cmultiprocessing.get_all_start_methods():
                raise NotImplementedError("start method %%s not offered here" %% method)
            cmultiprocessing.set_start_method(method)
        expects_children = FEATURES[feature]()
        result["status"] = "ok"
        result["expects_children"] = bool(expects_children)
    except BaseException as exc:
        result["status"] = "fail"
        result["detail"] = "".join(traceback.format_exception(exc))
    # the long-lived helpers (resource tracker, fork server) are still up here
    result["cmdlines"] = descendants_cmdlines()
    result["parent_forbidden"] = forbidden_loaded()
    with open(os.path.join(REPORT_DIR, "result.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
'''


def _module_dirs():
    """Folders to put on the children's path so they find what we run."""
    import importlib
    dirs = []
    for name in ("cmultiprocessing", "_cmultiprocessing"):
        mod = importlib.import_module(name)
        path = os.path.dirname(os.path.abspath(mod.__file__))
        if name == "cmultiprocessing":
            path = os.path.dirname(path)
        if path not in dirs:
            dirs.append(path)
    return dirs


def _reap_group(pgid, grace=10.0):
    """End what the feature script left running in its session (a pool
    worker or helper that outlived it).  Helpers such as the resource
    tracker exit by themselves once the script is gone, so they get a grace
    period first.  Returns True when something had to be killed."""
    deadline = time.monotonic() + grace
    while True:
        try:
            os.killpg(pgid, 0)
        except OSError:
            return False
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
    return True


def shm_name(tmp_path):
    return "cmpnostd_%d_%s" % (os.getpid(), tmp_path.name[-20:])


def run_feature(feature, tmp_path):
    script = tmp_path / "nostd_feature.py"
    script.write_text(FEATURE_SCRIPT % {"forbidden": FORBIDDEN})
    reports = tmp_path / "reports"
    reports.mkdir()
    env = dict(os.environ)
    env["CMP_NOSTD_REPORT_DIR"] = str(reports)
    env["CMP_NOSTD_SHM_NAME"] = shm_name(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(_module_dirs() + [
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    # its own session, so that on a timeout the whole tree can be ended
    proc = subprocess.Popen([sys.executable, str(script), feature], env=env,
                            cwd=str(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=100)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        _reap_group(proc.pid, grace=0)
        pytest.fail("feature %s did not finish within 100 s:\n%s" % (feature, stderr[-3000:]))
    left_behind = _reap_group(proc.pid)
    result_file = reports / "result.json"
    assert result_file.exists(), \
        "feature script died (exit %s):\n%s" % (proc.returncode, stderr[-3000:])
    result = json.loads(result_file.read_text())
    result["children"] = {}
    for f in sorted(reports.glob("child-*.json")):
        result["children"][f.name] = json.loads(f.read_text())
    result["stderr"] = stderr
    result["returncode"] = proc.returncode
    result["left_behind"] = left_behind
    return result


FEATURES = ["import_all", "basics", "pipe", "process_fork", "process_spawn",
            "process_forkserver", "synchronize", "queues", "pool", "manager",
            "sharedctypes", "shared_memory", "heap", "listener", "fd_passing",
            "dummy"]
# the same with the children started by spawn or forkserver, whose imports
# come from unpickling what the parent sends them
OTHER_METHODS = ["synchronize@spawn", "queues@spawn", "pool@spawn", "manager@spawn",
                 "sharedctypes@spawn", "shared_memory@spawn", "fd_passing@spawn",
                 "queues@forkserver", "pool@forkserver", "manager@forkserver"]


def test_feature_list_matches_script():
    ns = {}
    exec(compile(FEATURE_SCRIPT % {"forbidden": FORBIDDEN}, "<script>", "exec"),
         {"__name__": "not_main", "__builtins__": __builtins__}, ns)
    assert sorted(ns["FEATURES"]) == sorted(FEATURES)
    assert {f.partition("@")[0] for f in OTHER_METHODS} <= set(FEATURES)


@pytest.mark.parametrize("feature", FEATURES + OTHER_METHODS)
def test_feature_loads_no_stdlib_module(feature, tmp_path):
    result = run_feature(feature, tmp_path)
    assert result["status"] == "ok", result["detail"]
    assert result["returncode"] == 0, result["stderr"][-3000:]
    assert result["parent_forbidden"] == [], \
        "the parent loaded %s" % result["parent_forbidden"]
    if result["expects_children"]:
        assert result["children"], "no child reported its modules back"
    for name, rep in result["children"].items():
        assert rep["forbidden"] == [], "%s loaded %s" % (name, rep["forbidden"])
    stdlib_cmdlines = [c for c in result["cmdlines"]
                       if "multiprocessing" in c.replace("cmultiprocessing", "")]
    assert not stdlib_cmdlines, "processes naming the stdlib: %s" % stdlib_cmdlines
    assert not os.path.exists("/dev/shm/" + shm_name(tmp_path)), "segment left behind"
    assert not result["left_behind"], "processes outlived the script by 10 s"
    if feature == "process_spawn":
        # a spawned child loads the parent's main file as __mp_main__, as
        # the stdlib's does (so that functions defined there are found)
        mains = {rep["main"] for rep in result["children"].values()}
        assert mains == {str(tmp_path / "nostd_feature.py")}, mains
