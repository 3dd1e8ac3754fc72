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

import pytest

# The test files import their shared helpers as `support` (tests/support.py),
# whatever pytest's import mode (the default, prepend, has put this folder on
# sys.path already: no second entry, which children would inherit).
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from support import is_helper, live_children, settle, shm_entries  # noqa: E402

CHECK_SHM = os.environ.get("CMP_LEAK_CHECK",
                           "1" if os.environ.get("CI") == "true" else "0") == "1"


@pytest.fixture(autouse=True)
def no_leaks(request):
    if not sys.platform.startswith("linux") or \
            request.node.get_closest_marker("allow_leaks"):
        yield
        return
    shm_before = shm_entries() if CHECK_SHM else set()
    children_before = live_children()
    yield
    new_children = settle(lambda: {p for p in live_children() - children_before
                                   if not is_helper(p)})
    new_shm = settle(lambda: shm_entries() - shm_before) if CHECK_SHM \
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
