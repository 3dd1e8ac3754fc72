"""Process objects and the fork backend: lifecycle, exit codes, signals,
daemon rules, the parent's view from a child, and the bad paths."""
import os
import pickle
import signal
import sys
import time

import pytest

import _cmultiprocessing as native
import cmultiprocessing
from cmultiprocessing import process

from support import is_gone

ctx = cmultiprocessing.get_context('fork')


def _report(fd, value):
    os.write(fd, repr(value).encode())
    os.close(fd)


def _read_report(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return eval(b''.join(chunks).decode())


def run_in_child(func, *args, daemon=None):
    """Run func(*args) in a forked child; return (exitcode, its result)."""
    r, w = os.pipe()

    def target():
        os.close(r)
        _report(w, func(*args))

    p = ctx.Process(target=target, daemon=daemon)
    p.start()
    os.close(w)
    result = _read_report(r)
    p.join()
    return p.exitcode, result


# -- lifecycle ---------------------------------------------------------------

def test_start_join_exitcode_zero():
    p = ctx.Process(target=int)
    assert p.exitcode is None and p.pid is None and not p.is_alive()
    p.start()
    assert isinstance(p.pid, int) and p.pid == p.ident != os.getpid()
    p.join()
    assert p.exitcode == 0
    assert not p.is_alive()
    assert p not in cmultiprocessing.active_children()
    p.close()


@pytest.mark.parametrize('arg, code', [(None, 0), (0, 0), (3, 3), (True, 1),
                                       (255, 255)])
def test_sys_exit_codes(arg, code):
    p = ctx.Process(target=sys.exit, args=(arg,))
    p.start()
    p.join()
    assert p.exitcode == code


def test_sys_exit_with_message_gives_1_and_prints(capfd):
    p = ctx.Process(target=sys.exit, args=('goodbye, parent',))
    p.start()
    p.join()
    assert p.exitcode == 1
    assert 'goodbye, parent' in capfd.readouterr().err


def _boom():
    raise RuntimeError('child failure marker')


def test_exception_in_child_gives_1_and_traceback(capfd):
    p = ctx.Process(target=_boom, name='Crasher')
    p.start()
    p.join()
    assert p.exitcode == 1
    err = capfd.readouterr().err
    assert 'Process Crasher:' in err
    assert 'RuntimeError: child failure marker' in err


def test_os_exit_code():
    p = ctx.Process(target=os._exit, args=(42,))
    p.start()
    p.join()
    assert p.exitcode == 42


def test_run_receives_args_and_kwargs():
    code, got = run_in_child(lambda *a, **k: (a, k), 1, 'two')
    assert code == 0
    assert got == ((1, 'two'), {})

    def target(a, b=None):
        return a, b
    r, w = os.pipe()
    p = ctx.Process(target=lambda **kw: _report(w, target(**kw)),
                    kwargs={'a': 5, 'b': 6})
    p.start()
    os.close(w)
    assert _read_report(r) == (5, 6)
    p.join()


def test_subclass_run_is_used():
    class Child(ctx.Process):
        def __init__(self, fd):
            super().__init__()
            self.fd = fd

        def run(self):
            _report(self.fd, ('subclass', self.name))

    r, w = os.pipe()
    p = Child(w)
    p.start()
    os.close(w)
    assert _read_report(r) == ('subclass', p.name)
    p.join()
    assert p.exitcode == 0


def test_target_reference_dropped_after_start():
    p = ctx.Process(target=int, args=(1,), kwargs={})
    p.start()
    assert not hasattr(p, '_target')
    assert not hasattr(p, '_args') and not hasattr(p, '_kwargs')
    p.join()


def test_join_timeout_returns_while_running():
    p = ctx.Process(target=time.sleep, args=(30,))
    p.start()
    try:
        p.join(0.05)
        assert p.exitcode is None and p.is_alive()
        p.join(0)
        assert p.is_alive()
        p.join(-1)          # negative: like 0
        assert p.is_alive()
    finally:
        p.kill()
        p.join()
    assert p.exitcode == -signal.SIGKILL


def test_terminate_and_kill():
    p = ctx.Process(target=time.sleep, args=(30,))
    p.start()
    p.terminate()
    p.join()
    assert p.exitcode == -signal.SIGTERM
    assert 'exitcode=-SIGTERM' in repr(p)
    # Signalling a finished process is harmless.
    p.terminate()
    p.kill()

    q = ctx.Process(target=time.sleep, args=(30,))
    q.start()
    q.kill()
    q.join()
    assert q.exitcode == -signal.SIGKILL


def test_sentinel_becomes_ready_at_exit():
    p = ctx.Process(target=time.sleep, args=(0.2,))
    with pytest.raises(ValueError, match='process not started'):
        p.sentinel  # noqa: B018 -- the look-up is what raises
    p.start()
    fd = p.sentinel
    assert isinstance(fd, int)
    assert native.wait_readable(fd, 0) is False
    assert native.wait_readable(fd, 10) is True
    p.join()
    assert p.exitcode == 0


def test_name_identity_and_repr():
    p = ctx.Process(target=int)
    assert p.name.startswith('ForkProcess-')
    assert p._identity[-1] == int(p.name.rsplit('-', 1)[1])
    assert repr(p).endswith(' initial>')
    p.name = 'renamed'
    assert p.name == 'renamed'
    with pytest.raises(AssertionError):
        p.name = 3
    p.start()
    p.join()
    text = repr(p)
    assert "name='renamed'" in text and 'pid=%d' % p.pid in text
    assert 'stopped exitcode=0' in text
    p.close()
    assert 'closed' in repr(p)
    named = ctx.Process(target=int, name='given')
    assert named.name == 'given'


def test_default_context_process_name():
    p = cmultiprocessing.Process(target=int)
    assert p.name.startswith('Process-')


def test_group_must_be_none():
    with pytest.raises(AssertionError):
        ctx.Process(group=object())


def test_process_in_dangling():
    p = ctx.Process(target=int)
    assert p in process._dangling


# -- bad paths ---------------------------------------------------------------

def test_join_before_start():
    p = ctx.Process(target=int)
    with pytest.raises(AssertionError, match='can only join a started'):
        p.join()


def test_start_twice():
    p = ctx.Process(target=int)
    p.start()
    try:
        with pytest.raises(AssertionError, match='cannot start a process twice'):
            p.start()
    finally:
        p.join()


def test_close_running_process_refused_then_closed_object():
    p = ctx.Process(target=time.sleep, args=(30,))
    p.start()
    with pytest.raises(ValueError, match='still running'):
        p.close()
    p.kill()
    p.join()
    p.close()
    p.close()                       # closing twice is fine
    for action in (p.is_alive, p.join, p.start, p.terminate, p.kill):
        with pytest.raises(ValueError, match='process object is closed'):
            action()
    for attr in ('exitcode', 'pid', 'ident', 'sentinel'):
        with pytest.raises(ValueError, match='process object is closed'):
            getattr(p, attr)


def test_close_unstarted():
    p = ctx.Process(target=int)
    p.close()
    with pytest.raises(ValueError):
        p.start()


def test_daemon_cannot_change_after_start():
    p = ctx.Process(target=int)
    p.daemon = True
    assert p.daemon is True
    p.start()
    with pytest.raises(AssertionError, match='already started'):
        p.daemon = False
    p.join()


def _try_grandchild():
    p = ctx.Process(target=int)
    try:
        p.start()
    except AssertionError as exc:
        return str(exc)
    p.join()
    return 'started'


def test_daemon_cannot_have_children():
    code, msg = run_in_child(_try_grandchild, daemon=True)
    assert code == 0
    assert msg == 'daemonic processes are not allowed to have children'
    code, msg = run_in_child(_try_grandchild)
    assert msg == 'started'


def _join_foreign(p):
    try:
        p.join()
    except AssertionError as exc:
        return str(exc)
    return 'joined'


def test_only_parent_may_join_or_start():
    p = ctx.Process(target=int)
    code, msg = run_in_child(_join_foreign, p)
    assert msg == 'can only join a child process'

    def start_foreign():
        try:
            p.start()
        except AssertionError as exc:
            return str(exc)
    code, msg = run_in_child(start_foreign)
    assert 'created by current process' in msg


def test_daemon_children_terminated_at_exit():
    # A child starts a daemon grandchild that would sleep for a long time
    # and reports its pid; when the child exits, the grandchild must be
    # gone too.
    def child():
        g = ctx.Process(target=time.sleep, args=(60,), daemon=True)
        g.start()
        return g.pid

    code, pid = run_in_child(child)
    assert code == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        # Zombie of the (exited) child: reparented and reaped by init.
        if is_gone(pid):
            break
        time.sleep(0.02)
    else:
        pytest.fail('daemon grandchild still running')


def test_non_daemon_children_joined_at_exit():
    r, w = os.pipe()

    def child():
        def grandchild():
            time.sleep(0.2)
            os.write(w, b'g')
        g = ctx.Process(target=grandchild)
        g.start()
        return 'child done'

    code, msg = run_in_child(child)
    os.close(w)
    # The child waited for its grandchild before exiting.
    assert os.read(r, 1) == b'g'
    os.close(r)
    assert msg == 'child done' and code == 0


# -- current and parent process ----------------------------------------------

def test_main_process_view():
    me = cmultiprocessing.current_process()
    assert me.name == 'MainProcess'
    assert me.ident == me.pid == os.getpid()
    assert me.is_alive()
    assert me._identity == ()
    assert me._parent_pid is None
    assert cmultiprocessing.parent_process() is None
    assert isinstance(me.authkey, bytes) and len(me.authkey) == 32
    assert 'MainProcess' in repr(me) and 'started' in repr(me)
    me.close()                      # a no-op for the main process
    assert me.is_alive()


def _child_view():
    me = cmultiprocessing.current_process()
    parent = cmultiprocessing.parent_process()
    return (me.name, me.pid == os.getpid(), me.is_alive(), me._identity,
            parent.name, parent.pid, parent.is_alive(), me.authkey,
            cmultiprocessing.active_children(),
            cmultiprocessing.get_start_method(allow_none=True))


def test_child_view_of_itself_and_parent():
    p = ctx.Process(target=lambda: None, name='viewer')
    code, got = run_in_child(_child_view)
    assert code == 0
    name, own_pid, alive, ident, pname, ppid, palive, key, kids, sm = got
    assert name.startswith('ForkProcess-') and own_pid and alive
    assert len(ident) == 1
    assert pname == 'MainProcess' and ppid == os.getpid() and palive
    assert key == cmultiprocessing.current_process().authkey
    assert kids == []
    assert sm == 'fork'
    del p


def _watch_parent(fd):
    """Grandchild: wait until its parent (the child) is gone."""
    parent = cmultiprocessing.parent_process()
    alive_before = parent.is_alive()
    parent.join(timeout=20)
    os.write(fd, repr((alive_before, parent.is_alive())).encode())


def test_parent_process_join_sees_parent_exit():
    r, w = os.pipe()

    def child():
        g = ctx.Process(target=_watch_parent, args=(w,))
        g.start()
        time.sleep(0.2)
        os._exit(0)            # leave without joining the grandchild

    p = ctx.Process(target=child)
    p.start()
    os.close(w)
    p.join()
    assert _read_report(r) == (True, False)


def test_active_children_tracks_running_children():
    p = ctx.Process(target=time.sleep, args=(30,))
    assert p not in cmultiprocessing.active_children()
    p.start()
    try:
        assert p in cmultiprocessing.active_children()
        assert type(cmultiprocessing.active_children()) is list
    finally:
        p.terminate()
        p.join()
    assert p not in cmultiprocessing.active_children()


def test_authkey_setter_and_pickling_refused():
    p = ctx.Process(target=int)
    p.authkey = b'secret'
    assert p.authkey == b'secret'
    assert isinstance(p.authkey, process.AuthenticationString)
    with pytest.raises(TypeError, match='disallowed for security'):
        pickle.dumps(p.authkey)


def test_authkey_pickles_while_spawning():
    from cmultiprocessing import context
    key = process.AuthenticationString(b'k' * 8)
    context.set_spawning_popen(object())
    try:
        back = pickle.loads(pickle.dumps(key))
    finally:
        context.set_spawning_popen(None)
    assert back == key and type(back) is process.AuthenticationString


def test_exitcode_names():
    assert process._exitcode_to_name[-signal.SIGTERM] == '-SIGTERM'
    assert process._exitcode_to_name[-signal.SIGKILL] == '-SIGKILL'
    assert process.ORIGINAL_DIR == os.path.abspath(os.getcwd()) or \
        process.ORIGINAL_DIR is not None


def test_stdin_replaced_in_child(monkeypatch):
    import io
    original = io.StringIO('parent input')
    monkeypatch.setattr(sys, 'stdin', original)

    def child():
        return (sys.stdin.read(), sys.stdin.closed, original.closed,
                sys.stdin is original)
    code, got = run_in_child(child)
    assert code == 0
    assert got == ('', False, True, False)
    assert not original.closed


def _stdin_in_grandchild():
    def inner():
        return sys.stdin.read()
    return run_in_child(inner)


def test_stdin_replaced_in_grandchild():
    code, got = run_in_child(_stdin_in_grandchild)
    assert code == 0 and got == (0, '')


def test_many_processes_and_cleanup():
    procs = [ctx.Process(target=time.sleep, args=(0.01 * (i % 3),))
             for i in range(20)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0] * 20
    process._cleanup()
    assert not set(procs) & set(process._children)


# -- the native layer --------------------------------------------------------

def test_native_fork_and_wait():
    pid, sentinel, keepalive = native.fork_with_sentinels()
    if pid == 0:
        os._exit(7)
    try:
        assert native.wait_child(pid, sentinel, 10) == 7
        assert native.reap(pid) is None        # already collected
    finally:
        os.close(sentinel)
        os.close(keepalive)


def test_native_wait_child_timeout_then_signal():
    pid, sentinel, keepalive = native.fork_with_sentinels()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    try:
        assert native.wait_child(pid, sentinel, 0.05) is None
        assert native.reap(pid, False) is None
        os.kill(pid, signal.SIGKILL)
        assert native.wait_child(pid, sentinel) == -signal.SIGKILL
    finally:
        os.close(sentinel)
        os.close(keepalive)


def test_native_child_sees_parent_keepalive_close():
    r, w = os.pipe()
    pid, sentinel, keepalive = native.fork_with_sentinels()
    if pid == 0:
        try:
            os.close(r)
            assert keepalive == -1
            ready = native.wait_readable(sentinel, 20)
            os.write(w, b'1' if ready else b'0')
        finally:
            os._exit(0)
    os.close(w)
    os.close(keepalive)
    assert os.read(r, 1) == b'1'
    os.close(r)
    assert native.wait_child(pid, sentinel, 10) == 0
    os.close(sentinel)


def test_native_blocking_reap():
    pid, sentinel, keepalive = native.fork_with_sentinels()
    if pid == 0:
        os._exit(3)
    os.close(keepalive)
    os.close(sentinel)
    assert native.reap(pid, True) == 3


def test_native_sentinels_not_inheritable():
    pid, sentinel, keepalive = native.fork_with_sentinels()
    if pid == 0:
        os._exit(0)
    try:
        assert not os.get_inheritable(sentinel)
        assert not os.get_inheritable(keepalive)
    finally:
        native.wait_child(pid, sentinel)
        os.close(sentinel)
        os.close(keepalive)


@pytest.mark.parametrize('call, exc', [
    (lambda: native.reap('1'), TypeError),
    (lambda: native.reap(0), ValueError),
    (lambda: native.reap(-5), ValueError),
    (lambda: native.reap(2 ** 80), OverflowError),
    (lambda: native.reap(), TypeError),
    (lambda: native.reap(1, 2, 3), TypeError),
    (lambda: native.wait_child(1), TypeError),
    (lambda: native.wait_child(1, 'x'), TypeError),
    (lambda: native.wait_child(1, -1), ValueError),
    (lambda: native.wait_child(1, 0, float('nan')), ValueError),
    (lambda: native.wait_child(1, 0, 'soon'), TypeError),
    (lambda: native.wait_readable(2 ** 40), ValueError),
    (lambda: native.wait_readable(None), TypeError),
    (lambda: native.fork_with_sentinels(1), TypeError),
    (lambda: native.send_signal(1), TypeError),
    (lambda: native.send_signal('1', 0), TypeError),
    (lambda: native.send_signal(0, 0), ValueError),
    (lambda: native.send_signal(os.getpid(), -1), ValueError),
    (lambda: native.send_signal(os.getpid(), 2 ** 70), ValueError),
    (lambda: native.send_signal(os.getpid(), 'TERM'), TypeError),
])
def test_native_bad_arguments(call, exc):
    with pytest.raises(exc):
        call()


def test_native_wait_readable_bad_fd():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError):
        native.wait_readable(r, 0)


def test_native_send_signal():
    pid, sentinel, keepalive = native.fork_with_sentinels()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    try:
        assert native.send_signal(pid, 0) is True
        assert native.send_signal(pid, signal.SIGTERM) is True
        assert native.wait_child(pid, sentinel) == -signal.SIGTERM
        # Reaped: the pid is gone (or, rarely, reused by someone else's
        # process we may not signal).
        try:
            assert native.send_signal(pid, 0) in (False, True)
        except PermissionError:
            pass
    finally:
        os.close(sentinel)
        os.close(keepalive)


def test_terminate_signal_permission_error_propagates(monkeypatch):
    # A signal we may not send to a still-running child is an error.
    p = ctx.Process(target=time.sleep, args=(30,))
    p.start()
    try:
        def refuse(pid, sig):
            raise PermissionError(1, 'Operation not permitted')
        monkeypatch.setattr(native, 'send_signal', refuse)
        with pytest.raises(PermissionError):
            p.terminate()
    finally:
        monkeypatch.undo()
        p.kill()
        p.join()


def test_native_reap_not_a_child():
    # pid 1 is never our child: "no status" rather than an exception.
    assert native.reap(1) is None


def test_wait_child_interrupted_by_signal_handler():
    pid, sentinel, keepalive = native.fork_with_sentinels()
    if pid == 0:
        time.sleep(30)
        os._exit(0)

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Interrupted):
            native.wait_child(pid, sentinel)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.kill(pid, signal.SIGKILL)
        assert native.wait_child(pid, sentinel) == -signal.SIGKILL
        os.close(sentinel)
        os.close(keepalive)
