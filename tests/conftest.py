"""Shared pytest set-up: every test is checked for leaked resources.

After each test, no new child process of the test process may remain, and no
new POSIX semaphore or shared-memory segment may remain in /dev/shm.  The
long-lived helper processes that cmultiprocessing starts on purpose (the
resource tracker and the fork server) are not counted as leaks; they end when
the test session ends.

/dev/shm is shared by everything on the machine, so its check runs only where
nothing else runs at the same time: in CI (CI=true) or with CMP_LEAK_CHECK=1.
"""
import os
import sys
import time

import pytest

SHM_DIR = "/dev/shm"
HELPER_MARKERS = (b"resource_tracker", b"forkserver")
CHECK_SHM = os.environ.get("CMP_LEAK_CHECK",
                           "1" if os.environ.get("CI") == "true" else "0") == "1"


def _shm_entries():
    try:
        return set(os.listdir(SHM_DIR))
    except OSError:
        return set()


def _children():
    """pids of live (not zombie) children of this process, by /proc."""
    me = os.getpid()
    found = set()
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces
        rest = stat[stat.rfind(b")") + 2:].split()
        if len(rest) < 2:
            continue
        state, ppid = rest[0], int(rest[1])
        if ppid == me and state != b"Z":
            found.add(int(name))
    return found


def _is_helper(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read()
    except OSError:
        return True     # gone already
    return any(m in cmdline for m in HELPER_MARKERS)


def _settle(check, timeout=5.0):
    """Poll check() until it returns a false value or timeout; return it."""
    deadline = time.monotonic() + timeout
    leftover = check()
    while leftover and time.monotonic() < deadline:
        time.sleep(0.05)
        leftover = check()
    return leftover


@pytest.fixture(autouse=True)
def no_leaks(request):
    if not sys.platform.startswith("linux") or \
            request.node.get_closest_marker("allow_leaks"):
        yield
        return
    shm_before = _shm_entries() if CHECK_SHM else set()
    children_before = _children()
    yield
    new_children = _settle(lambda: {p for p in _children() - children_before
                                    if not _is_helper(p)})
    new_shm = _settle(lambda: _shm_entries() - shm_before) if CHECK_SHM \
        else set()
    problems = []
    if new_children:
        problems.append("child processes left running: %s" % sorted(new_children))
        for pid in new_children:        # do not let them disturb later tests
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
    if new_shm:
        problems.append("/dev/shm entries left behind: %s" % sorted(new_shm))
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "allow_leaks: the test manages its own helper processes")
