"""Smoke test of an installed cmultiprocessing wheel (cibuildwheel's
test-command; also usable by hand):

    python tools/cross/wheel_smoke.py

Checks that the package and its native core import from the environment
(not from a source tree), that the stdlib's multiprocessing stays out, and
that a child started by every start method the platform has gets an argument
and sends a result back through a Queue, with a Lock and a Value shared on
the way.  Then the child launcher: it is in the wheel and executable, and
where this Python runs from a shared library (python3XY.dll on Windows, the
framework on macOS; not the static manylinux interpreters) a spawn child is
started through it, as in a host with no python program.  Prints one line
per check and "N passed, N failed"; exits 1 on any failure.
"""
import os
import sys
import traceback


def child(q, lock, counter, n):
    with lock:
        counter.value += n
    q.put((os.getpid(), sum(range(n))))


def check_import():
    import cmultiprocessing
    import _cmultiprocessing

    for mod in (cmultiprocessing, _cmultiprocessing):
        where = os.path.realpath(mod.__file__)
        if not where.startswith(os.path.realpath(sys.prefix)):
            raise AssertionError("%s comes from %s, not from the environment"
                                 % (mod.__name__, where))
    return "version %s, native %s" % (
        getattr(cmultiprocessing, "__version__", "?"),
        os.path.basename(_cmultiprocessing.__file__))


def check_method(method):
    import cmultiprocessing

    ctx = cmultiprocessing.get_context(method)
    q = ctx.Queue()
    lock = ctx.Lock()
    counter = ctx.Value("i", 0)
    p = ctx.Process(target=child, args=(q, lock, counter, 1000))
    p.start()
    try:
        pid, total = q.get(timeout=120)
    finally:
        p.join(120)
    if total != 499500 or pid == os.getpid():
        raise AssertionError("child sent %r from pid %r" % (total, pid))
    if p.exitcode != 0:
        raise AssertionError("child exit code %r" % p.exitcode)
    if counter.value != 1000:
        raise AssertionError("shared value is %r" % counter.value)
    q.close()
    q.join_thread()
    return "child %d ok" % pid


def check_launcher_installed():
    from cmultiprocessing import _interpreter

    path = _interpreter._launcher_file()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise AssertionError("no executable launcher at %s" % path)
    return path


def check_launcher_start():
    import _cmultiprocessing
    from cmultiprocessing import _interpreter, spawn

    library = _cmultiprocessing.runtime_library()
    if library is None:
        return "skipped: Python is linked into %s statically" % sys.executable
    # As in a host with no python program: the launcher is the only choice.
    _interpreter._interpreter_candidates = lambda: iter(())
    _interpreter._Interpreter.found = None
    detail = check_method("spawn")
    why = spawn.describe_executable()
    if "child launcher" not in why:
        raise AssertionError("children did not use the launcher: %s" % why)
    return "%s over %s" % (detail, library)


def main():
    results = []

    def attempt(name, fn, *args):
        try:
            detail = fn(*args)
            results.append(True)
            print("ok    %s: %s" % (name, detail), flush=True)
        except Exception:
            results.append(False)
            print("FAIL  %s" % name, flush=True)
            traceback.print_exc(file=sys.stdout)

    attempt("import", check_import)
    if results[-1]:
        import cmultiprocessing

        for method in cmultiprocessing.get_all_start_methods():
            attempt("start method %s" % method, check_method, method)
        attempt("launcher installed", check_launcher_installed)
        attempt("spawn through the launcher", check_launcher_start)
    stdlib = "multiprocessing" in sys.modules
    results.append(not stdlib)
    print("%s  stdlib multiprocessing %s" % (
        "FAIL" if stdlib else "ok  ", "imported" if stdlib else "not imported"))
    failed = results.count(False)
    print("%d passed, %d failed" % (len(results) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
