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
        with open("/proc/%d/stat" % old) as f:
            if f.read().split(")")[-1].split()[0] == "Z":
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
