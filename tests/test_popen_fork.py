"""popen_fork.Popen itself: interrupt() (3.14), and what it tells the
resource tracker around its fork."""
import os
import signal
import sys
import time

import pytest

import cmultiprocessing
from cmultiprocessing import popen_fork

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")

V314 = sys.version_info >= (3, 14)
ctx = cmultiprocessing.get_context("fork")


def _wait_for_sigint_then_exit(ready_w, handled):
    if not handled:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.write(ready_w, b"x")
    time.sleep(30)


def test_interrupt_exists_from_314():
    assert hasattr(popen_fork.Popen, "interrupt") == V314


@pytest.mark.skipif(not V314, reason="Popen.interrupt() is 3.14's")
@pytest.mark.parametrize("handled, exitcode", [
    (True, 1),                      # KeyboardInterrupt in the child
    (False, -signal.SIGINT),        # default action: killed by SIGINT
])
def test_interrupt_sends_sigint(handled, exitcode, capfd):
    r, w = os.pipe()
    p = ctx.Process(target=_wait_for_sigint_then_exit, args=(w, handled))
    p.start()
    try:
        os.close(w)
        assert os.read(r, 1) == b"x"
        p._popen.interrupt()
        p.join(10)
        assert p.exitcode == exitcode
    finally:
        os.close(r)
        if p.exitcode is None:
            p.kill()
            p.join()
    if handled:
        assert "KeyboardInterrupt" in capfd.readouterr().err


@pytest.mark.skipif(not V314, reason="Popen.interrupt() is 3.14's")
def test_interrupt_after_exit_does_nothing():
    p = ctx.Process(target=int)
    p.start()
    p.join()
    p._popen.interrupt()            # no error, no signal to a stranger
    assert p.exitcode == 0
