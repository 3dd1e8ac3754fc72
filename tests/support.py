"""Helpers the unit tests share: what this process holds, read from /proc
and /dev/shm (Linux), so that a test can check that nothing leaked.

Each was written once per test file before; they live here so that every
test reads /proc the same way.  tests/conftest.py puts this folder on
sys.path, so a test file says ``from support import open_fds``.  Nothing
here imports cmultiprocessing.
"""
import os
import time

import pytest

SHM_DIR = "/dev/shm"

# The long-lived helper processes cmultiprocessing starts on purpose: not
# leaks (they end with the test session).
HELPER_MARKERS = (b"resource_tracker", b"forkserver")


# ---------------------------------------------------------------- descriptors

def open_fds():
    """The set of file descriptors open in this process."""
    return set(int(n) for n in os.listdir("/proc/self/fd"))


def open_fd_count():
    """How many file descriptors this process has open (the test is
    skipped where there is no /proc/self/fd)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        pytest.skip("no /proc/self/fd here")


# ------------------------------------------------------------------ processes

def _stat_fields(stat):
    """The fields of a /proc/PID/stat line after the command name (which is
    in parentheses and may hold spaces and parentheses)."""
    return stat[stat.rfind(b")") + 2:].split()


def proc_state(pid):
    """The state letter of process pid ("R", "S", "Z"...), or None when
    there is no such process (or no /proc)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            fields = _stat_fields(f.read())
    except OSError:
        return None
    return fields[0].decode() if fields else None


def is_gone(pid):
    """True when pid no longer runs: no such process, or a zombie."""
    return proc_state(pid) in (None, "Z")


def child_states(ppid=None):
    """{pid: state letter} of the children of ppid (default: this process),
    zombies included, from /proc."""
    parent = os.getpid() if ppid is None else ppid
    found = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                fields = _stat_fields(f.read())
        except OSError:
            continue
        if len(fields) < 2:
            continue
        if int(fields[1]) == parent:
            found[int(name)] = fields[0].decode()
    return found


def live_children():
    """pids of this process's children that are not zombies."""
    return {pid for pid, state in child_states().items() if state != "Z"}


def cmdline(pid):
    """The raw /proc/PID/cmdline of pid (arguments separated by NULs)."""
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read()


def is_helper(pid):
    """True for cmultiprocessing's long-lived helpers (resource tracker,
    fork server), and for a process already gone."""
    try:
        line = cmdline(pid)
    except OSError:
        return True     # gone already
    return any(m in line for m in HELPER_MARKERS)


def thread_count(pid):
    """How many threads process pid runs."""
    return len(os.listdir("/proc/%d/task" % pid))


# ------------------------------------------------------ shared memory, sems

def shm_entries():
    """The names in /dev/shm (empty where there is none)."""
    try:
        return set(os.listdir(SHM_DIR))
    except OSError:
        return set()


def shm_exists(name):
    """True when POSIX shared-memory segment name ("/x" or "x") exists."""
    return os.path.exists(SHM_DIR + "/" + name.lstrip("/"))


def sem_file(name):
    """The /dev/shm file behind named POSIX semaphore name (glibc)."""
    return SHM_DIR + "/sem." + name.lstrip("/")


# ----------------------------------------------------------------- waiting

def settle(check, timeout=5.0):
    """Poll check() until it returns a false value or timeout; return it."""
    deadline = time.monotonic() + timeout
    leftover = check()
    while leftover and time.monotonic() < deadline:
        time.sleep(0.05)
        leftover = check()
    return leftover
