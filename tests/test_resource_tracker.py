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
V314 = sys.version_info >= (3, 14)
V315 = sys.version_info >= (3, 15)


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
    # 3.15 sends JSON lines, which limit the name itself
    match = "name too long" if V315 else "msg too long"
    with pytest.raises(ValueError, match=match):
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
        os.write(rt.getfd(), b'{not json\\n')
        os.write(rt.getfd(), b'{"cmd": 1, "rtype": "noop"}\\n')
        os.write(rt.getfd(),
                 b'{"cmd":"PROBE","rtype":"noop","base64_name":"A"}\\n')
        time.sleep(0.3)
        assert rt._resource_tracker._check_alive()
        rt._resource_tracker._stop()
        print('stopped', getattr(rt._resource_tracker, '_exitcode', None))
    """)
    assert res.returncode == 0, res.stderr
    assert "unknown resource type no-such-type" in res.stderr
    assert "unrecognized command 'FROB'" in res.stderr
    assert "malformed resource_tracker message: b'{not json\\n'" in res.stderr
    assert "malformed resource_tracker fields: {'cmd': 1" in res.stderr
    assert "malformed resource_tracker base64_name: 'A'" in res.stderr
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


@pytest.mark.timeout(60)
def test_a_killed_tracker_is_replaced_and_told_what_was_held():
    # The stdlib's new tracker knows nothing of what the dead one held: a
    # process that then dies leaks it.  Here the new tracker is told, so
    # what this process held is still removed when it is SIGKILLed.
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    res = _python("""
        import os, signal, sys, time, warnings
        from cmultiprocessing import resource_tracker as rt
        from cmultiprocessing import shared_memory
        warnings.simplefilter('ignore')
        held = shared_memory.SharedMemory(create=True, size=4096)
        gone = shared_memory.SharedMemory(create=True, size=4096)
        old = rt._resource_tracker._pid
        os.kill(old, signal.SIGKILL)
        os.waitpid(old, 0)
        gone.close()
        gone.unlink()             # the message that finds the tracker dead
        assert rt._resource_tracker._pid not in (None, old)
        print(held.name, gone.name, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert res.returncode == -signal.SIGKILL, res.stderr
    held, gone = res.stdout.split()
    path = "/dev/shm/" + held.lstrip("/")
    deadline = time.monotonic() + 10
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not os.path.exists(path), "the new tracker did not know it"
        assert not os.path.exists("/dev/shm/" + gone.lstrip("/"))
    finally:
        if os.path.exists(path):
            os.unlink(path)
    # and the UNREGISTER found its name: no complaint from the new tracker
    assert "KeyError" not in res.stderr and "Traceback" not in res.stderr


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
    if V315:        # JSON lines by default
        assert data == (
            b'{"cmd":"REGISTER","rtype":"shared_memory",'
            b'"base64_name":"L3BzbV94"}\n'
            b'{"cmd":"UNREGISTER","rtype":"shared_memory",'
            b'"base64_name":"L3BzbV94"}\n')
    else:
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


# ---- the two line forms -----------------------------------------------------

NAMES = ["/psm_plain", "a:b", "::double::colons::", "ends:", ":starts",
         "name\nwith\nnewlines", "colons:and\nnewlines", "caf\u00e9",
         "bad-utf8-\udcff"]


@pytest.mark.parametrize("name", NAMES)
def test_json_line_round_trip(name):
    line = resource_tracker._json_line("REGISTER", name, "shared_memory")
    assert line.startswith(b"{") and line.endswith(b"}\n")
    assert line.count(b"\n") == 1
    assert resource_tracker._parse_line(line) == (
        "REGISTER", name, "shared_memory")
    # the same object json itself would write (the tracker could be ours or
    # read by a json parser)
    import json
    assert json.loads(line)["cmd"] == "REGISTER"


@pytest.mark.parametrize("name", [n for n in NAMES
                                  if "\n" not in n and n.isascii()])
def test_simple_line_keeps_colons_in_names(name):
    line = resource_tracker._simple_line("UNREGISTER", name, "semaphore")
    assert resource_tracker._parse_line(line) == (
        "UNREGISTER", name, "semaphore")


def test_json_line_limits():
    with pytest.raises(ValueError, match=r"too long \(max 255 bytes\)"):
        resource_tracker._json_line("REGISTER", "x" * 256, "shared_memory")
    resource_tracker._json_line("REGISTER", "x" * 255, "shared_memory")
    # odd resource types are quoted as json quotes them
    line = resource_tracker._json_line("REGISTER", "n", 'a"b\\c\u00e9')
    assert resource_tracker._parse_line(line) == ("REGISTER", "n",
                                                  'a"b\\c\u00e9')


def test_format_choice_per_version():
    tracker = resource_tracker.ResourceTracker()
    if not V314:
        assert not hasattr(tracker, "_use_simple_format")
        assert tracker._encode("REGISTER", "a:b", "dummy") == \
            b"REGISTER:a:b:dummy\n"
        return
    assert tracker._use_simple_format is (not V315)
    tracker._use_simple_format = True
    assert tracker._encode("REGISTER", "a:b", "dummy") == \
        b"REGISTER:a:b:dummy\n"
    assert tracker._probe_message() == b"PROBE:0:noop\n"
    # a newline cannot go in a simple line: JSON instead
    assert tracker._encode("REGISTER", "a\nb", "dummy").startswith(b"{")
    tracker._use_simple_format = False
    assert tracker._encode("REGISTER", "a", "dummy") == \
        b'{"cmd":"REGISTER","rtype":"dummy","base64_name":"YQ=="}\n'
    assert tracker._probe_message() == b'{"cmd":"PROBE","rtype":"noop"}\n'


@pytest.mark.skipif(not V314, reason="JSON lines are 3.14's")
@pytest.mark.parametrize("simple", [True, False])
def test_names_with_colons_and_newlines_end_to_end(simple):
    # Registered and unregistered without an error in the tracker; a name it
    # is left with is unlinked at exit.
    leak = "/cmp-rt:leak\n%d-%d" % (os.getpid(), simple)
    res = _python("""
        from cmultiprocessing import resource_tracker as rt
        from cmultiprocessing import shared_memory
        rt._resource_tracker._use_simple_format = %r
        for name in ["a:b", "::c::", "d\\ne", "f:\\ng:"]:
            shm = shared_memory.SharedMemory(name, create=True, size=16)
            shm.close()
            shm.unlink()
        rt.register(%r, "shared_memory")
        rt._resource_tracker._stop()
        print("exit", rt._resource_tracker._exitcode)
    """ % (simple, leak))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    # the name left registered is reported; it was never created, so its
    # unlink fails (exit code 2)
    assert "exit 2" in res.stdout
    assert "There appear to be 1 leaked shared_memory objects" in res.stderr
    assert "resource_tracker: %r: [Errno 2]" % leak in res.stderr


# ---- signals, reentrancy ----------------------------------------------------

@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"),
                    reason="no pthread_sigmask")
@pytest.mark.parametrize("blocked", [signal.SIGINT, signal.SIGTERM,
                                     signal.SIGUSR1])
def test_launch_restores_the_callers_signal_mask(blocked):
    before = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, {blocked})
        tracker = resource_tracker.ResourceTracker()
        tracker.ensure_running()
        try:
            assert signal.pthread_sigmask(signal.SIG_BLOCK, ()) == {blocked}
        finally:
            tracker._stop()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def test_reentrant_message_is_queued_or_refused():
    tracker = resource_tracker.ResourceTracker()
    r, w = os.pipe()
    try:
        with tracker._lock:             # as if a finalizer ran in there
            if not V314:
                with pytest.warns(UserWarning, match="reentrantly"):
                    with pytest.raises(TypeError):  # no pipe to write to
                        tracker.register("x", "dummy")
                return
            tracker.register("x", "dummy")
            assert tracker._reentrant_messages == [tracker._encode(
                "REGISTER", "x", "dummy")]
            with pytest.raises(resource_tracker.ReentrantCallError):
                tracker.ensure_running()
        # the next call that gets the lock delivers it, after its probe
        tracker._fd = w
        tracker.ensure_running()
        assert tracker._reentrant_messages == []
    finally:
        tracker._fd = None
        os.close(w)
        data = _read_all(r)
        os.close(r)
    assert data == tracker._probe_message() + tracker._encode(
        "REGISTER", "x", "dummy")


# ---- stopping ---------------------------------------------------------------

@pytest.mark.skipif(not V314, reason="3.14's _stop(wait_timeout=)")
def test_stop_gives_up_while_someone_holds_the_pipe():
    tracker = resource_tracker.ResourceTracker()
    tracker.ensure_running()
    pid = tracker._pid
    holder = os.dup(tracker._fd)        # like a forked child's copy
    try:
        started = time.monotonic()
        tracker._stop(wait_timeout=0.2)
        assert 0.2 <= time.monotonic() - started < 5
        assert tracker._waitpid_timed_out
        assert tracker._fd is None and tracker._pid is None
        assert tracker._exitcode is None
        assert _alive(pid)
    finally:
        os.close(holder)                # now it sees EOF and leaves
        os.waitpid(pid, 0)


@pytest.mark.skipif(not V314, reason="3.14's _stop(wait_timeout=)")
def test_stop_with_time_limit_reaps_promptly():
    tracker = resource_tracker.ResourceTracker()
    tracker.ensure_running()
    pid = tracker._pid
    tracker.register("left", "dummy")
    started = time.monotonic()
    tracker._stop(wait_timeout=5.0)
    assert time.monotonic() - started < 2
    assert not tracker._waitpid_timed_out
    assert tracker._exitcode == 1       # the dummy was left
    assert not _alive(pid)


@pytest.mark.skipif(not V314, reason="3.14's _stop_locked")
def test_stop_locked_polls_with_the_given_calls():
    tracker = resource_tracker.ResourceTracker()
    tracker._fd, tracker._pid = 1000, 4242
    closed, slept = [], []
    answers = iter([(0, 0), (0, 0), (4242, 0)])
    clock = iter([0.0, 0.1, 0.2, 0.3])
    tracker._stop_locked(
        close=closed.append, waitpid=lambda pid, flags: next(answers),
        waitstatus_to_exitcode=lambda status: 7,
        monotonic=lambda: next(clock), sleep=slept.append, WNOHANG=1,
        wait_timeout=10)
    assert closed == [1000] and len(slept) == 2
    assert (tracker._fd, tracker._pid, tracker._exitcode) == (None, None, 7)
    assert not tracker._waitpid_timed_out
    # a child's copy of the pipe (no pid of ours) is left alone
    tracker._fd = 1000
    tracker._stop_locked(close=closed.append)
    assert closed == [1000] and tracker._fd == 1000
    tracker._fd = None


def test_stop_signature_per_version():
    import inspect
    params = inspect.signature(resource_tracker.ResourceTracker._stop) \
        .parameters
    if V314:
        assert list(params) == ["self", "use_blocking_lock", "wait_timeout"]
        assert hasattr(resource_tracker.ResourceTracker, "__del__")
    else:
        assert list(params) == ["self"]
        assert not hasattr(resource_tracker.ResourceTracker, "__del__")


@pytest.mark.skipif(not V314, reason="3.14 stops the tracker in __del__")
def test_dropping_the_tracker_object_stops_its_process():
    import gc
    tracker = resource_tracker.ResourceTracker()
    tracker.ensure_running()
    pid = tracker._pid
    del tracker
    gc.collect()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)     # reaped already


def test_exit_is_not_held_up_by_a_child_holding_the_pipe(tmp_path):
    # gh-146313: a forked child keeps a copy of the pipe and runs on; the
    # parent still exits (were the tracker object collected, 3.14's __del__
    # would wait at most a second for the tracker).
    script = textwrap.dedent("""
        import os, signal, sys
        from cmultiprocessing import resource_tracker as rt
        rt.ensure_running()
        copy = os.dup(rt._resource_tracker._fd)
        pid = os.fork()
        if pid == 0:
            os.close(1)
            os.close(2)
            signal.pause()
            os._exit(0)
        os.close(copy)
        print(pid)
        sys.stdout.flush()
    """)
    # Output to a file, not a pipe: the tracker holds the script's stdout
    # and stderr until it ends, after the child.
    with open(tmp_path / "out", "w+") as out:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=out,
                                stderr=subprocess.STDOUT, env=_env())
        try:
            returncode = proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.wait()
            out.seek(0)
            output = out.read()
            if output.split() and output.split()[0].isdigit():
                os.kill(int(output.split()[0]), signal.SIGKILL)
    assert returncode == 0, output


# ---- fork -------------------------------------------------------------------

def test_bare_fork_child_lets_go_of_the_pipe_from_314():
    res = _python("""
        import os, signal
        from cmultiprocessing import resource_tracker as rt
        tracker = rt._resource_tracker
        rt.ensure_running()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            state = (tracker._fd is None, tracker._pid is None)
            os.write(w, repr(state).encode())
            os._exit(0)
        os.close(w)
        child_state = os.read(r, 100).decode()
        os.waitpid(pid, 0)
        print(child_state)
    """)
    assert res.returncode == 0, res.stderr
    # 3.14: no pipe and no pid; before, both are kept as they were
    assert res.stdout.strip() == ("(True, True)" if V314 else
                                  "(False, False)")


def test_bare_fork_lets_the_parent_stop_its_tracker_at_once():
    if not V314:
        pytest.skip("3.14's _stop(wait_timeout=)")
    res = _python("""
        import os, signal, time
        from cmultiprocessing import resource_tracker as rt
        tracker = rt._resource_tracker
        rt.ensure_running()
        pid = os.fork()
        if pid == 0:
            signal.pause()
            os._exit(0)
        try:
            started = time.monotonic()
            tracker._stop(wait_timeout=5.0)
            took = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        print(tracker._waitpid_timed_out, tracker._exitcode, took < 2)
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "0", "True"]


def test_fork_process_child_keeps_using_the_parents_tracker():
    res = _python("""
        import cmultiprocessing as mp
        from cmultiprocessing import resource_tracker as rt
        tracker = rt._resource_tracker

        def child(conn, parent_fd):
            tracker.register("k", "dummy")
            tracker.unregister("k", "dummy")
            conn.send((tracker._fd == parent_fd, tracker._pid,
                       tracker._check_alive(),
               getattr(rt._fork_intent, 'preserve_fd', False)))

        if __name__ == "__main__":
            ctx = mp.get_context("fork")
            rt.ensure_running()
            pid = tracker._pid
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=child, args=(w, tracker._fd))
            p.start()
            same_fd, child_pid, alive, intent = r.recv()
            p.join()
            # The flag is per fork, not left set in the parent.
            print(same_fd, child_pid in (None, pid), alive, intent,
                  getattr(rt._fork_intent, 'preserve_fd', False))
            if hasattr(tracker, '_waitpid_timed_out'):
                tracker._stop(wait_timeout=5.0)
                print(tracker._waitpid_timed_out, tracker._exitcode)
    """)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["True", "True", "True", "False", "False"]
    if V314:
        # the child has exited: its copy is gone, the stop is prompt
        assert lines[1].split() == ["False", "0"]


def test_lock_is_usable_in_a_child_forked_while_a_thread_held_it():
    res = _python("""
        import os, threading
        from cmultiprocessing import resource_tracker as rt
        lock = rt._resource_tracker._lock
        held, done = threading.Event(), threading.Event()

        def hold():
            with lock:
                held.set()
                done.wait()

        t = threading.Thread(target=hold)
        t.start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            os._exit(0 if lock.acquire(timeout=5) else 1)
        done.set()
        t.join()
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "0"


def test_counting_lock_for_old_pythons():
    lock = resource_tracker._CountingRLock()
    assert lock._recursion_count() == 0
    with lock:
        with lock:
            assert lock._recursion_count() == 2
        assert lock.acquire(False)
        lock.release()
    lock.acquire()
    lock._at_fork_reinit()
    assert lock._recursion_count() == 0
    assert lock.acquire(timeout=1)
    lock.release()
