"""The forkserver start method and its native request loop."""
import os
import signal
import socket
import sys
import time

import pytest

import _cmultiprocessing
import cmultiprocessing
from cmultiprocessing import forkserver

from support import cmdline, proc_state

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX only")


@pytest.fixture
def ctx():
    return cmultiprocessing.get_context("forkserver")


def _sleep_then_exit(delay, code):
    time.sleep(delay)
    sys.exit(code)


def _report(conn):
    conn.send((os.getpid(), sys.version, os.getppid()))
    conn.close()


def test_start_join_exit_codes(ctx):
    for code in (0, 3):
        p = ctx.Process(target=_sleep_then_exit, args=(0, code))
        p.start()
        p.join(60)
        assert p.exitcode == code
    p = ctx.Process(target=time.sleep, args=(60,))
    p.start()
    p.terminate()
    p.join(60)
    assert p.exitcode == -signal.SIGTERM


def test_child_is_forked_by_the_server(ctx):
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_report, args=(w,))
    p.start()
    w.close()
    pid, version, ppid = r.recv()
    p.join(60)
    r.close()
    assert pid == p.pid
    assert version == sys.version
    assert ppid == forkserver._forkserver._forkserver_pid


def test_wait_and_poll(ctx):
    p = ctx.Process(target=_sleep_then_exit, args=(0.3, 5))
    p.start()
    assert p._popen.poll() is None
    assert p._popen.wait(0.01) is None
    assert p._popen.wait(60) == 5
    assert p._popen.poll() == 5
    p.join()


def test_server_restarts_after_being_killed(ctx):
    forkserver.ensure_running()
    old = forkserver._forkserver._forkserver_pid
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(old, 0)
        except ProcessLookupError:
            break
        # a zombie until ensure_running() reaps it
        if proc_state(old) == "Z":
            break
        time.sleep(0.01)
    p = ctx.Process(target=_sleep_then_exit, args=(0, 0))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert forkserver._forkserver._forkserver_pid != old


def test_server_killed_under_a_running_child(ctx):
    p = ctx.Process(target=time.sleep, args=(0.5,))
    p.start()
    os.kill(forkserver._forkserver._forkserver_pid, signal.SIGKILL)
    start = time.monotonic()
    p.join(30)
    # The exit code is lost with the server: reported as 255 (stdlib).
    assert p.exitcode in (0, 255)
    assert time.monotonic() - start < 10
    forkserver.ensure_running()         # reaps and restarts


def test_server_ignores_sigint(ctx):
    # right after the start: the server may still be importing
    forkserver._forkserver._stop()
    forkserver.ensure_running()
    pid = forkserver._forkserver._forkserver_pid
    os.kill(pid, signal.SIGINT)
    time.sleep(0.2)
    p = ctx.Process(target=_sleep_then_exit, args=(0, 0))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert forkserver._forkserver._forkserver_pid == pid


def test_set_forkserver_preload_rejects_non_strings():
    with pytest.raises(TypeError):
        forkserver.set_forkserver_preload([1, 2, 3])


def test_too_many_fds():
    with pytest.raises(ValueError):
        forkserver.connect_to_new_process(list(range(300)))


def test_read_write_signed():
    r, w = os.pipe()
    try:
        forkserver.write_signed(w, -123456789012)
        assert forkserver.read_signed(r) == -123456789012
        os.write(w, b"abc")
        os.close(w)
        w = None
        with pytest.raises(EOFError):
            forkserver.read_signed(r)
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


def test_forkserver_send_bad_input(tmp_path):
    with pytest.raises(TypeError):
        _cmultiprocessing.forkserver_send(12, [])
    with pytest.raises(FileNotFoundError):
        _cmultiprocessing.forkserver_send(str(tmp_path / "nobody"), [0])
    with pytest.raises(OSError):
        _cmultiprocessing.forkserver_send("x" * 200, [0])
    with pytest.raises(ValueError):
        _cmultiprocessing.forkserver_send(str(tmp_path / "s"), [-1])
    with pytest.raises(ValueError):
        _cmultiprocessing.forkserver_send(str(tmp_path / "s"),
                                          list(range(300)))
    with pytest.raises(TypeError):
        _cmultiprocessing.forkserver_send(str(tmp_path / "s"), ["0"])


def test_forkserver_serve_bad_input():
    with pytest.raises(ValueError):
        _cmultiprocessing.forkserver_serve(-1, 0, 10)
    with pytest.raises(ValueError):
        _cmultiprocessing.forkserver_serve(0, 0, 100000)
    with pytest.raises(TypeError):
        _cmultiprocessing.forkserver_serve(0, 0)


def test_server_survives_malformed_requests(ctx, tmp_path):
    """A client that connects and sends nothing, or sends too few fds, does
    not take the server down."""
    forkserver.ensure_running()
    address = forkserver._forkserver._forkserver_address
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(address)
    r, w = os.pipe()
    try:
        _cmultiprocessing.forkserver_send(address, [r])   # one fd only
    finally:
        os.close(r)
        os.close(w)
    p = ctx.Process(target=_sleep_then_exit, args=(0, 4))
    p.start()
    p.join(60)
    assert p.exitcode == 4


def test_stop_leaves_nothing():
    forkserver.ensure_running()
    fs = forkserver._forkserver
    address = fs._forkserver_address
    pid = fs._forkserver_pid
    fs._stop()
    assert fs._forkserver_pid is None
    assert not os.path.exists(address)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# -- authentication ----------------------------------------------------------

authenticated = pytest.mark.skipif(
    sys.version_info < (3, 14),
    reason="the stdlib authenticates forkserver requests from 3.14 on")


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="before 3.14 only")
def test_no_authkey_before_3_14(ctx):
    forkserver.ensure_running()
    fs = forkserver._forkserver
    assert fs._forkserver_authkey is None
    if sys.platform.startswith("linux"):
        assert b"authkey_r" not in cmdline(fs._forkserver_pid)


@authenticated
def test_authkey_is_fresh_per_server_and_not_in_argv():
    fs = forkserver._forkserver
    fs._stop()
    assert fs._forkserver_authkey is None
    forkserver.ensure_running()
    key = fs._forkserver_authkey
    assert isinstance(key, bytes) and len(key) == 32
    if sys.platform.startswith("linux"):
        argv = cmdline(fs._forkserver_pid)
        assert key not in argv
        assert repr(key).encode() not in argv
        assert key.hex().encode() not in argv
    fs._stop()
    assert fs._forkserver_authkey is None
    forkserver.ensure_running()
    assert fs._forkserver_authkey not in (None, key)


@authenticated
def test_wrong_authkey_makes_start_fail(ctx):
    fs = forkserver._forkserver
    forkserver.ensure_running()
    good = fs._forkserver_authkey
    fs._forkserver_authkey = b"T" * len(good)
    try:
        p = ctx.Process(target=_sleep_then_exit, args=(0, 0))
        with pytest.raises(cmultiprocessing.AuthenticationError):
            p.start()
    finally:
        fs._forkserver_authkey = good
    p = ctx.Process(target=_sleep_then_exit, args=(0, 6))
    p.start()
    p.join(60)
    assert p.exitcode == 6


def test_client_handshake_alone_does_not_disturb_the_server(ctx):
    from cmultiprocessing import connection
    forkserver.ensure_running()
    fs = forkserver._forkserver
    pid = fs._forkserver_pid
    client = connection.Client(fs._forkserver_address,
                               authkey=fs._forkserver_authkey)
    client.close()
    p = ctx.Process(target=_sleep_then_exit, args=(0, 2))
    p.start()
    p.join(60)
    assert p.exitcode == 2
    assert fs._forkserver_pid == pid


@authenticated
def test_request_without_handshake_is_refused():
    forkserver.ensure_running()
    fs = forkserver._forkserver
    status_r, status_w = os.pipe()
    data_r, data_w = os.pipe()
    try:
        _cmultiprocessing.forkserver_send(
            fs._forkserver_address,
            [data_r, status_w, fs._forkserver_alive_fd])
        os.close(status_w)
        status_w = None
        # no child: the server dropped its copy of status_w unused
        with pytest.raises(EOFError):
            forkserver.read_signed(status_r)
    finally:
        for fd in (status_r, status_w, data_r, data_w):
            if fd is not None:
                os.close(fd)


class _FakeServer:
    """forkserver_serve with the package's handshake in a forked process,
    on a listener of our own, with a short I/O timeout.  Each child it
    forks exits at once with code 7."""

    def __init__(self, tmp_path, key, timeout):
        from cmultiprocessing import connection
        self.address = str(tmp_path / "fs.sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(self.address)
        listener.listen()
        self.alive_r, self.alive_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 0
            try:
                os.close(self.alive_w)
                connection.HANDSHAKE_TIMEOUT = timeout
                got = _cmultiprocessing.forkserver_serve(
                    listener.fileno(), self.alive_r, 10,
                    forkserver._server_handshake(key), timeout)
                code = 0 if got is None else 7
            except BaseException:
                code = 3
            finally:
                os._exit(code)
        listener.close()
        os.close(self.alive_r)

    def request(self, key):
        """Ask for a child; return (its pid, its exit code)."""
        status_r, status_w = os.pipe()
        data_r, data_w = os.pipe()
        try:
            _cmultiprocessing.forkserver_send(
                self.address, [data_r, status_w],
                forkserver._client_handshake(key))
            os.close(status_w)
            status_w = None
            return forkserver.read_signed(status_r), \
                forkserver.read_signed(status_r)
        finally:
            for fd in (status_r, status_w, data_r, data_w):
                if fd is not None:
                    os.close(fd)

    def stop(self):
        os.close(self.alive_w)
        return _reap(self.pid)


def _reap(pid, timeout=30):
    """The exit code of child pid, which must end within timeout seconds
    (else it is killed and the test fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("process %d did not end" % pid)


def test_silent_or_stalling_clients_do_not_block_the_server(tmp_path):
    key = os.urandom(32)
    server = _FakeServer(tmp_path, key, timeout=0.3)
    try:
        silent = socket.socket(socket.AF_UNIX)
        silent.connect(server.address)          # connects, never speaks
        stalling = socket.socket(socket.AF_UNIX)
        stalling.connect(server.address)
        stalling.sendall(b"\x00\x00")           # half a frame header
        start = time.monotonic()
        pid, code = server.request(key)
        assert pid > 0 and code == 7
        assert time.monotonic() - start < 10
        silent.close()
        stalling.close()
    finally:
        assert server.stop() == 0


def test_fake_server_refuses_a_wrong_key(tmp_path):
    server = _FakeServer(tmp_path, os.urandom(32), timeout=5)
    try:
        with pytest.raises(cmultiprocessing.AuthenticationError):
            server.request(os.urandom(32))
        with pytest.raises(cmultiprocessing.AuthenticationError):
            server.request(b"")
    finally:
        assert server.stop() == 0


def test_handshake_errors_reach_the_caller(tmp_path):
    server = _FakeServer(tmp_path, os.urandom(32), timeout=5)
    r, w = os.pipe()
    try:
        def refuse(fd):
            raise KeyError(fd)
        with pytest.raises(KeyError):
            _cmultiprocessing.forkserver_send(server.address, [r, w], refuse)
        with pytest.raises(TypeError):
            _cmultiprocessing.forkserver_send(server.address, [r, w], 5)
    finally:
        os.close(r)
        os.close(w)
        assert server.stop() == 0


def test_forkserver_serve_ends_when_the_handshake_raises(tmp_path):
    address = str(tmp_path / "fs.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(address)
    listener.listen()
    alive_r, alive_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(alive_w)

            def broken(fd):
                raise ZeroDivisionError
            _cmultiprocessing.forkserver_serve(listener.fileno(), alive_r, 10,
                                               broken, 5)
        except ZeroDivisionError:
            code = 42
        finally:
            os._exit(code)
    listener.close()
    os.close(alive_r)
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(address)
            s.settimeout(30)
            assert s.recv(1) == b""            # closed, unserved
        assert _reap(pid) == 42
    finally:
        os.close(alive_w)


def test_forkserver_serve_rejects_a_non_callable_handshake():
    with pytest.raises(TypeError):
        _cmultiprocessing.forkserver_serve(0, 0, 10, 5)
    with pytest.raises(TypeError):
        _cmultiprocessing.forkserver_serve(0, 0, 10, None, "x")


# -- preloading --------------------------------------------------------------

def _run_script(tmp_path, source, *args):
    import subprocess
    import textwrap
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    proc = subprocess.run([sys.executable, str(script), *args],
                          cwd=str(tmp_path), capture_output=True,
                          timeout=120)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def test_preloaded_main_sees_argv_and_runs_once(tmp_path):
    code, out, err = _run_script(tmp_path, """
        import sys
        import cmultiprocessing
        print("import", __name__, sys.argv[1:])

        def f():
            print("f", sys.argv[1:])

        if __name__ == "__main__":
            ctx = cmultiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["__main__"])
            for _ in range(2):
                p = ctx.Process(target=f)
                p.start()
                p.join()
        """, "a", "b c")
    assert (code, err) == (0, "")
    args = "['a', 'b c']"
    assert out.splitlines() == ["import __main__ " + args,
                                "import __mp_main__ " + args,
                                "f " + args, "f " + args]


def test_huge_sys_argv_reaches_the_server(tmp_path):
    code, out, err = _run_script(tmp_path, """
        import sys
        import cmultiprocessing

        def f():
            print("child", len(sys.argv), sys.argv[-1])

        if __name__ == "__main__":
            # far beyond what one argument may hold (128 KiB on Linux)
            sys.argv[1:] = ["y" * 100] * 4000 + ["last"]
            ctx = cmultiprocessing.get_context("forkserver")
            p = ctx.Process(target=f)
            p.start()
            p.join()
            sys.exit(p.exitcode)
        else:
            print("server", len(sys.argv), sys.argv[-1])
        """)
    assert (code, err) == (0, "")
    assert out.splitlines() == ["server 4002 last", "child 4002 last"]


def test_output_of_preloading_is_flushed_once(tmp_path):
    code, out, err = _run_script(tmp_path, """
        import sys
        import cmultiprocessing
        print(__name__, end="|")
        print(__name__, end="|", file=sys.stderr)
        if __name__ == "__main__":
            ctx = cmultiprocessing.get_context("forkserver")
            for _ in range(3):
                p = ctx.Process()
                p.start()
                p.join()
        """)
    assert code == 0
    assert out == "__main__|__mp_main__|"
    assert err == "__main__|__mp_main__|"


def test_handle_preload_policies(recwarn):
    missing = "cmp_no_such_module_for_preload"
    forkserver._handle_preload([missing])
    forkserver._handle_preload([missing], on_error="ignore")
    assert not [w for w in recwarn if issubclass(w.category, ImportWarning)]
    with pytest.warns(ImportWarning, match="Failed to preload module"):
        forkserver._handle_preload([missing], on_error="warn")
    with pytest.raises(ModuleNotFoundError):
        forkserver._handle_preload([missing], on_error="fail")
    forkserver._handle_preload([])        # nothing to do: no error


def test_handle_preload_main_policies(tmp_path):
    from cmultiprocessing import spawn
    bad = tmp_path / "bad_main.py"
    bad.write_text("raise RuntimeError('broken main')\n")
    saved = sys.modules["__main__"]
    try:
        forkserver._handle_preload(["__main__"], main_path=str(bad))
        with pytest.warns(ImportWarning, match="Failed to preload __main__"):
            forkserver._handle_preload(["__main__"], main_path=str(bad),
                                       on_error="warn")
        with pytest.raises(RuntimeError, match="broken main"):
            forkserver._handle_preload(["__main__"], main_path=str(bad),
                                       on_error="fail")
    finally:
        sys.modules["__main__"] = saved
        spawn.old_main_modules.clear()


on_error_api = pytest.mark.skipif(sys.version_info < (3, 15),
                                  reason="on_error is new in 3.15")


@on_error_api
def test_set_forkserver_preload_on_error_is_checked(ctx):
    fs = forkserver._forkserver
    saved = fs._preload_modules, fs._preload_on_error
    try:
        with pytest.raises(ValueError, match="on_error must be 'ignore', "
                                             "'warn', or 'fail', not 'x'"):
            ctx.set_forkserver_preload(["os"], on_error="x")
        with pytest.raises(TypeError):
            ctx.set_forkserver_preload(["os"], "warn")      # keyword only
        ctx.set_forkserver_preload(["os"], on_error="warn")
        assert fs._preload_on_error == "warn"
    finally:
        fs._preload_modules, fs._preload_on_error = saved


@pytest.mark.skipif(sys.version_info >= (3, 15),
                    reason="on_error exists from 3.15 on")
def test_no_on_error_before_3_15(ctx):
    with pytest.raises(TypeError):
        ctx.set_forkserver_preload(["os"], on_error="warn")
    with pytest.raises(TypeError):
        forkserver.set_forkserver_preload(["os"], on_error="warn")


@on_error_api
def test_failing_preload_stops_the_server_with_a_note(ctx, tmp_path):
    fs = forkserver._forkserver
    saved = fs._preload_modules, fs._preload_on_error
    fs._stop()
    try:
        ctx.set_forkserver_preload(["cmp_no_such_module_xyz"],
                                   on_error="fail")
        p = ctx.Process(target=_sleep_then_exit, args=(0, 0))
        with pytest.raises((EOFError, ConnectionError)) as info:
            p.start()
        assert any("Forkserver process may have crashed" in note
                   for note in getattr(info.value, "__notes__", ()))
    finally:
        fs._preload_modules, fs._preload_on_error = saved
        fs._stop()
    forkserver.ensure_running()     # and a good one starts again
