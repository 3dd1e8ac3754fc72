"""cmultiprocessing.util: finalizers, after-fork hooks, fork-aware types,
logging, temp dirs, fd helpers, interpreter flags."""
import gc
import io
import os
import subprocess
import sys
import threading

import pytest

import cmultiprocessing
from cmultiprocessing import util

ctx = cmultiprocessing.get_context('fork')


def _in_child(func):
    """Run func() in a forked child; return (exitcode, repr-eval'd result)."""
    r, w = os.pipe()

    def target():
        os.close(r)
        os.write(w, repr(func()).encode())
        os.close(w)

    p = ctx.Process(target=target)
    p.start()
    os.close(w)
    data = b''
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    p.join()
    return p.exitcode, (eval(data.decode()) if data else None)


@pytest.fixture
def registry():
    saved = dict(util._finalizer_registry)
    util._finalizer_registry.clear()
    yield util._finalizer_registry
    gc.collect()
    leftover = dict(util._finalizer_registry)
    util._finalizer_registry.clear()
    util._finalizer_registry.update(saved)
    assert not leftover


class Obj:
    pass


# -- Finalize ----------------------------------------------------------------

def test_finalize_runs_when_object_dies(registry):
    calls = []
    o = Obj()
    f = util.Finalize(o, calls.append, args=('gone',))
    assert f.still_active()
    del o
    gc.collect()
    assert calls == ['gone']
    assert not f.still_active()
    assert f() is None                      # second call: nothing


def test_finalize_call_returns_result_once(registry):
    o = Obj()
    f = util.Finalize(o, lambda a, b=0: a + b, args=(1,), kwargs={'b': 2})
    assert f() == 3
    assert f() is None
    del o
    gc.collect()


def test_finalize_cancel(registry):
    calls = []
    o = Obj()
    f = util.Finalize(o, calls.append, args=(1,), exitpriority=5)
    f.cancel()
    f.cancel()
    assert not f.still_active()
    util._run_finalizers()
    del o
    gc.collect()
    assert calls == []


def test_finalize_argument_errors(registry):
    with pytest.raises(TypeError, match='Exitpriority'):
        util.Finalize(Obj(), print, exitpriority='high')
    with pytest.raises(TypeError):
        util.Finalize(Obj(), print, exitpriority=1.5)
    with pytest.raises(ValueError, match='exitpriority cannot be None'):
        util.Finalize(None, print)
    with pytest.raises(TypeError):
        util.Finalize(3, print, exitpriority=1)   # no weakref to an int
    assert not registry


def test_finalize_repr(registry):
    o = Obj()
    f = util.Finalize(o, print, args=(1,), kwargs={'end': ''},
                      exitpriority=3)
    text = repr(f)
    assert text.startswith('<Finalize object, callback=print')
    assert 'args=(1,)' in text and "kwargs={'end': ''}" in text
    assert 'exitpriority=3' in text
    f.cancel()
    assert repr(f) == '<Finalize object, dead>'
    g = util.Finalize(None, print, exitpriority=0)
    assert repr(g) == '<Finalize object, dead>'
    g.cancel()


def test_run_finalizers_order(registry):
    calls = []
    keep = []
    for name, prio in [('a', None), ('p1', 1), ('p0a', 0), ('p0b', 0),
                       ('m10', -10), ('p5', 5)]:
        o = Obj()
        keep.append(o)
        util.Finalize(o, calls.append, args=(name,), exitpriority=prio)
    util._run_finalizers(0)
    assert calls == ['p5', 'p1', 'p0b', 'p0a']
    util._run_finalizers()
    assert calls[4:] == ['m10']
    assert not registry                     # all cleared, even 'a'


def test_run_finalizers_survives_errors(registry, capsys):
    calls = []

    def bad():
        raise ValueError('finalizer failure marker')
    util.Finalize(None, calls.append, args=('low',), exitpriority=1)
    util.Finalize(None, bad, exitpriority=2)
    util._run_finalizers()
    assert calls == ['low']
    assert 'finalizer failure marker' in capsys.readouterr().err


def test_finalizer_ignored_in_other_process(registry):
    calls = []
    o = Obj()
    f = util.Finalize(o, calls.append, args=(1,))

    def child():
        return (f(), calls)
    code, got = _in_child(child)
    assert code == 0 and got == (None, [])
    assert f.still_active()
    f.cancel()


def _finalizers_in_child():
    out = []
    util._finalizer_registry.clear()
    for name, prio in (('d10', 1), ('d01', 0), ('d02', 0), ('e', -10)):
        util.Finalize(None, out.append, args=(name,), exitpriority=prio)
    util._exit_function()
    return out


def test_exit_function_order_in_child():
    code, got = _in_child(_finalizers_in_child)
    assert code == 0
    assert got == ['d10', 'd02', 'd01', 'e']


def test_child_starts_with_empty_finalizer_registry():
    keep = Obj()
    f = util.Finalize(keep, print, exitpriority=1)
    try:
        code, got = _in_child(lambda: len(util._finalizer_registry))
        assert code == 0 and got == 0
    finally:
        f.cancel()


# -- after-fork hooks and fork-aware types ----------------------------------

class Counter:
    def __init__(self):
        self.hits = 0


def test_register_after_fork_runs_in_child_in_order():
    a, b = Counter(), Counter()
    order = []

    def hook_b(obj):
        obj.hits += 1
        order.append('b')

    def hook_a(obj):
        obj.hits += 10
        order.append('a')

    util.register_after_fork(b, hook_b)
    util.register_after_fork(a, hook_a)
    code, got = _in_child(lambda: (a.hits, b.hits, order))
    assert code == 0
    assert got == (10, 1, ['b', 'a'])
    assert (a.hits, b.hits, order) == (0, 0, [])


def test_after_fork_hook_errors_are_swallowed():
    o = Counter()

    def bad(obj):
        raise RuntimeError('hook failure')
    util.register_after_fork(o, bad)
    code, got = _in_child(lambda: 'ran')
    assert code == 0 and got == 'ran'


def test_after_fork_registry_drops_dead_objects():
    o = Counter()
    util.register_after_fork(o, lambda obj: None)
    before = len(util._afterfork_registry)
    del o
    gc.collect()
    assert len(util._afterfork_registry) == before - 1


def test_weak_hook_table_holds_objects_weakly():
    table = util._WeakHookTable()
    a, b = Counter(), Counter()
    table['a'] = a
    table['b'] = b
    assert len(table) == 2 and table['a'] is a and 'b' in table
    assert dict(table.items()) == {'a': a, 'b': b}
    assert sorted(table) == ['a', 'b']
    del a
    gc.collect()
    assert len(table) == 1 and 'a' not in table
    with pytest.raises(KeyError):
        table['a']
    assert table.get('a', 'gone') == 'gone'
    # an entry replaced under the same key is not dropped when the object
    # it used to hold dies
    c = Counter()
    table['b'] = c
    del b
    gc.collect()
    assert table['b'] is c
    del table['b']
    assert len(table) == 0
    table['c'] = c
    table.clear()
    assert len(table) == 0 and list(table.items()) == []


def test_util_and_process_leave_threading_and_weakref_alone():
    # Neither is needed to start or run a child; a spawned child that does
    # not use threads should not pay for importing them.
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in sys.path if p)
    code = ("import sys, _cmultiprocessing\n"
            "before = set(sys.modules)\n"
            "import cmultiprocessing.util, cmultiprocessing.spawn\n"
            "print(sorted(set(sys.modules) - before & "
            "{'threading', 'weakref'}))")
    res = subprocess.run([sys.executable, '-S', '-c', code], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == '[]'


def test_thread_waits_in_a_child_without_threading_imported_first():
    # A child whose target starts a non-daemon thread still waits for it
    # before exiting (threading._shutdown runs once threading is loaded).
    def target():
        import time
        done = []

        def late():
            time.sleep(0.2)
            done.append(1)
            os.write(w, b'x')
        threading.Thread(target=late).start()
    r, w = os.pipe()
    try:
        p = ctx.Process(target=target)
        p.start()
        os.close(w)
        w = None
        p.join()
        assert p.exitcode == 0
        assert os.read(r, 1) == b'x'     # b'' if the child left first
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


def test_fork_aware_thread_lock_is_free_in_child():
    lock = util.ForkAwareThreadLock()
    with lock:
        code, got = _in_child(lambda: lock.acquire(timeout=1))
    assert code == 0 and got is True
    assert lock.acquire(False)
    lock.release()


def test_fork_aware_local_cleared_in_child():
    local = util.ForkAwareLocal()
    local.value = 42
    code, got = _in_child(lambda: hasattr(local, 'value'))
    assert code == 0 and got is False
    assert local.value == 42
    import pickle
    assert type(pickle.loads(pickle.dumps(local))) is util.ForkAwareLocal


# -- logging -------------------------------------------------------------------

def test_logger_and_log_to_stderr():
    logger = util.get_logger()
    assert logger is cmultiprocessing.get_logger()
    assert logger.name == 'multiprocessing'
    assert not logger.propagate
    old_level, old_handlers = logger.level, list(logger.handlers)
    stream = io.StringIO()
    try:
        got = util.log_to_stderr(util.SUBDEBUG)
        assert got is logger and logger.level == util.SUBDEBUG
        handler = logger.handlers[-1]
        handler.setStream(stream)
        util.sub_debug('sub %s', 1)
        util.debug('dbg %d', 2)
        util.info('inf')
        util.sub_warning('sw')
    finally:
        logger.handlers[:] = old_handlers
        logger.setLevel(old_level)
    lines = stream.getvalue().splitlines()
    # Like the stdlib, the extra levels have no registered names.
    assert lines == ['[Level 5/MainProcess] sub 1', '[DEBUG/MainProcess] dbg 2',
                     '[INFO/MainProcess] inf', '[Level 25/MainProcess] sw']
    assert util.DEFAULT_LOGGING_FORMAT == \
        '[%(levelname)s/%(processName)s] %(message)s'
    assert (util.SUBDEBUG, util.SUBWARNING) == (5, 25)
    assert (cmultiprocessing.SUBDEBUG, cmultiprocessing.SUBWARNING) == (5, 25)


# -- temp dir, exit ------------------------------------------------------------

def _fresh_temp_dir():
    # A forked child inherits the parent's temp dir (and leaves it to the
    # parent) if the parent made one, as earlier tests in a run may have.
    cmultiprocessing.current_process()._config.pop('tempdir', None)
    return util.get_temp_dir()


def test_get_temp_dir_removed_when_process_exits():
    code, path = _in_child(_fresh_temp_dir)
    assert code == 0
    assert os.path.basename(path).startswith('pymp-')
    assert not os.path.exists(path)


def _temp_dir_survives_a_child():
    mine = _fresh_temp_dir()
    code, inherited = _in_child(util.get_temp_dir)
    return code, inherited == mine, os.path.isdir(mine)


def test_inherited_temp_dir_is_left_to_its_owner():
    code, got = _in_child(_temp_dir_survives_a_child)
    assert code == 0 and got == (0, True, True)


def test_get_temp_dir_is_cached_in_process():
    def child():
        a = util.get_temp_dir()
        return a == util.get_temp_dir() and os.path.isdir(a)
    code, got = _in_child(child)
    assert code == 0 and got is True


def test_is_exiting():
    assert util.is_exiting() is False


# -- file descriptors and streams ----------------------------------------------

def _close_fds_child():
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(4)]
    keep = {fds[1], fds[3]}
    util.close_all_fds_except(list(keep) + [0, 1, 2])
    alive = []
    for fd in fds:
        try:
            os.fstat(fd)
            alive.append(fd)
        except OSError:
            pass
    os._exit(0 if alive == sorted(keep) else 9)


def test_close_all_fds_except():
    # The child reports through its exit code: every other fd is gone.
    p = ctx.Process(target=_close_fds_child)
    p.start()
    p.join()
    assert p.exitcode == 0


def test_close_all_fds_except_rejects_too_large():
    with pytest.raises(AssertionError, match='fd too large'):
        util.close_all_fds_except([util.MAXFD + 1])


def test_close_fds():
    r, w = os.pipe()
    util.close_fds(r, w)
    with pytest.raises(OSError):
        os.fstat(r)


def test_close_stdin_replaces_with_devnull(monkeypatch):
    fake = io.StringIO('data')
    monkeypatch.setattr(sys, 'stdin', fake)
    util._close_stdin()
    assert fake.closed
    assert sys.stdin is not fake and sys.stdin.read() == ''
    sys.stdin.close()
    monkeypatch.setattr(sys, 'stdin', None)
    util._close_stdin()                        # no stdin: nothing to do
    assert sys.stdin is None


def test_stdin_spare_survives_reused_fd():
    util._prepare_stdin_spare()
    spare = util._stdin_spare
    assert spare is not None
    util._prepare_stdin_spare()
    assert util._stdin_spare is spare          # cached and still valid

    def child():
        # Reuse the spare's fd for something that is not /dev/null: the
        # next child must not get it as its stdin.
        fd = spare.fileno()
        r, w = os.pipe()
        os.dup2(r, fd)
        os.write(w, b'not devnull')
        util._stdin_spare = spare
        util._prepare_stdin_spare()
        fresh = util._stdin_spare
        return fresh is not spare and fresh.read() == ''
    code, got = _in_child(child)
    assert code == 0 and got is True


def test_flush_std_streams_tolerates_missing(monkeypatch):
    monkeypatch.setattr(sys, 'stdout', None)
    util._flush_std_streams()
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, 'stderr', closed)
    util._flush_std_streams()


def test_abstract_sockets():
    assert util.abstract_sockets_supported == sys.platform.startswith('linux')
    assert util.is_abstract_socket_namespace(b'\0abc')
    assert util.is_abstract_socket_namespace('\0abc')
    assert not util.is_abstract_socket_namespace('/tmp/x')
    assert not util.is_abstract_socket_namespace('')
    assert not util.is_abstract_socket_namespace(None)
    with pytest.raises(TypeError):
        util.is_abstract_socket_namespace(123)


@pytest.mark.parametrize('opts', [
    [], ['-O'], ['-OO', '-B'], ['-bb'], ['-b', '-W', 'ignore'],
    ['-X', 'dev'], ['-s', '-E'], ['-I'], ['-X', 'utf8', '-X', 'faulthandler'],
    ['-v', '-q', '-d'] if hasattr(sys, 'gettotalrefcount') else ['-q'],
])
def test_args_from_interpreter_flags_match_subprocess(opts):
    code = ('import sys, subprocess; sys.path[:0] = %r; '
            'from cmultiprocessing import util; '
            'print(util._args_from_interpreter_flags() == '
            'subprocess._args_from_interpreter_flags())' % (sys.path,))
    out = subprocess.run([sys.executable] + opts + ['-c', code],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == 'True', out.stderr


def test_spawnv_passfds_runs_program():
    import _cmultiprocessing
    if not hasattr(_cmultiprocessing, 'spawnv_passfds'):
        pytest.skip('spawn.c not built yet')
    r, w = os.pipe()
    exe = sys.executable
    pid = util.spawnv_passfds(
        exe, [exe, '-c', 'import os; os.write(%d, b"ok")' % w], [w])
    os.close(w)
    assert os.read(r, 2) == b'ok'
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_util_all_names_exist():
    for name in util.__all__:
        assert hasattr(util, name), name
