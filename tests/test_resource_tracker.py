"""The resource tracker: client side, the tracker process, its restarts."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

import _cmultiprocessing
from cmultiprocessing import resource_tracker

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX only")
V313 = sys.version_info >= (3, 13)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _python(body, timeout=60):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=timeout,
                          env=_env())


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_message_too_long():
    name = "a" * (512 - len("shared_memory"))
    with pytest.raises(ValueError, match="msg too long"):
        resource_tracker.register(name, "shared_memory")


def test_cleanup_funcs_per_version():
    funcs = resource_tracker._CLEANUP_FUNCS
    assert {"noop", "semaphore", "shared_memory"} <= set(funcs)
    assert ("dummy" in funcs) == V313


def test_probe_and_reuse():
    resource_tracker.ensure_running()
    tracker = resource_tracker._resource_tracker
    pid, fd = tracker._pid, tracker._fd
    assert tracker._check_alive()
    resource_tracker.ensure_running()
    assert (tracker._pid, tracker._fd) == (pid, fd)
    assert resource_tracker.getfd() == fd


def test_leaked_shared_memory_is_unlinked_at_exit():
    if not hasattr(_cmultiprocessing, "shm_unlink"):
        pytest.skip("shm_unlink not built yet")
    name = "/cmp-rt-test-%d" % os.getpid()
    path = "/dev/shm" + name
    res = _python("""
        import os
        from cmultiprocessing import resource_tracker
        os.close(os.open(%r, os.O_CREAT | os.O_RDWR, 0o600))
        resource_tracker.register(%r, 'shared_memory')
        resource_tracker.register('/cmp-rt-never-created', 'shared_memory')
    """ % (path, name))
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 10
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not os.path.exists(path)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def test_leak_warning_text():
    """Leaked names are reported as the stdlib does; a name that cannot be
    unlinked is reported with its error."""
    res = _python("""
        from cmultiprocessing import resource_tracker
        resource_tracker.register('/cmp-rt-nope-1', 'semaphore')
        resource_tracker.register('/cmp-rt-nope-2', 'semaphore')
    """)
    # The tracker holds the script's stderr too: run() waits for it.
    assert res.returncode == 0, res.stderr
    err = res.stderr
    assert ("resource_tracker: There appear to be 2 leaked semaphore "
            "objects to clean up at shutdown") in err
    assert "resource_tracker: '/cmp-rt-nope-" in err


def test_tracker_reports_bad_lines_and_goes_on():
    res = _python("""
        import os, time
        from cmultiprocessing import resource_tracker as rt
        rt.ensure_running()
        os.write(rt.getfd(), b'REGISTER:x:no-such-type\\n')
        os.write(rt.getfd(), b'garbage\\n')
        os.write(rt.getfd(), b'FROB:x:noop\\n')
        time.sleep(0.3)
        assert rt._resource_tracker._check_alive()
        rt._resource_tracker._stop()
        print('stopped', getattr(rt._resource_tracker, '_exitcode', None))
    """)
    assert res.returncode == 0, res.stderr
    assert "unknown resource type no-such-type" in res.stderr
    assert "unrecognized command 'FROB'" in res.stderr
    assert "stopped" in res.stdout
    if V313:
        assert "stopped 3" in res.stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_tracker_ignores_sigint_and_sigterm(signum):
    res = _python("""
        import os, signal, time, warnings
        from cmultiprocessing import resource_tracker as rt
        rt.ensure_running()
        pid = rt._resource_tracker._pid
        os.kill(pid, %d)
        time.sleep(0.5)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            rt.ensure_running()
        assert rt._resource_tracker._pid == pid, 'restarted'
        assert not w, w
        print('ok')
    """ % signum)
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout


def test_tracker_death_warns_and_restarts():
    res = _python("""
        import os, signal, time, warnings
        from cmultiprocessing import resource_tracker as rt
        rt.ensure_running()
        pid = rt._resource_tracker._pid
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            rt.ensure_running()
        assert len(w) == 1 and 'process died unexpectedly' in str(w[0].message)
        assert rt._resource_tracker._pid not in (None, pid)
        assert rt._resource_tracker._check_alive()
        print('ok')
    """)
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout


def test_reentrant_call_is_refused():
    tracker = resource_tracker.ResourceTracker()
    with tracker._lock:
        with pytest.raises(resource_tracker.ReentrantCallError):
            tracker.ensure_running()
        with pytest.raises(resource_tracker.ReentrantCallError):
            tracker._stop()
    assert tracker._pid is None


def test_stop_ends_the_tracker():
    tracker = resource_tracker.ResourceTracker()
    tracker.ensure_running()
    pid = tracker._pid
    assert _alive(pid)
    tracker._stop()
    assert tracker._fd is None and tracker._pid is None
    assert not _alive(pid)
    tracker._stop()                     # twice is fine
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker.ensure_running()        # a fresh start, no warning
    tracker._stop()


def _read_all(fd):
    data = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return data
        data += chunk


def test_one_write_per_message_no_probe():
    # register/unregister write their message and nothing else while the
    # tracker's pipe is open (a SharedMemory create+unlink: 2 writes, not 4)
    tracker = resource_tracker.ResourceTracker()
    r, w = os.pipe()
    try:
        tracker._fd = w
        tracker.register("/psm_x", "shared_memory")
        tracker.unregister("/psm_x", "shared_memory")
        assert tracker._pid is None        # nothing was started
    finally:
        os.close(w)
        data = _read_all(r)
        os.close(r)
    assert data == (b"REGISTER:/psm_x:shared_memory\n"
                    b"UNREGISTER:/psm_x:shared_memory\n")


def test_broken_pipe_restarts_tracker_and_resends(tmp_path):
    # The tracker is gone (its pipe has no reader): the message is not lost
    # but goes to a new tracker, after the usual warning.  Checked end to
    # end: the new tracker unlinks the registered segment when it stops.
    name = "/psm_rt_resend_%d" % os.getpid()
    path = "/dev/shm" + name
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    tracker = resource_tracker.ResourceTracker()
    r, w = os.pipe()
    os.close(r)                             # the "dead tracker"
    tracker._fd = w
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracker.register(name, "shared_memory")
        assert [str(c.message) for c in caught] == [
            "resource_tracker: process died unexpectedly, relaunching.  "
            "Some resources might leak."]
        assert tracker._pid is not None       # a new tracker runs
        assert os.path.exists(path)
    finally:
        tracker._stop()                     # EOF: it cleans up what is left
        if os.path.exists(path):
            os.unlink(path)
            pytest.fail("the resent registration did not reach the tracker")
