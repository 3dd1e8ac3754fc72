"""The spin before a blocking wait (Modules/spin.c): the CMP_SPIN knob and
the oversubscription check that turns the spin off on a crowded machine.

_cmultiprocessing.spin_info() says how waits spin in the calling process;
the knob is read at import, so each setting is tried in a fresh interpreter.
"""
import json
import os
import subprocess
import sys
import time

import pytest

import _cmultiprocessing
import cmultiprocessing as cmp

INFO = ("import json, _cmultiprocessing; "
        "print(json.dumps(_cmultiprocessing.spin_info()))")


def _info_with(value):
    env = dict(os.environ)
    if value is None:
        env.pop("CMP_SPIN", None)
    else:
        env["CMP_SPIN"] = value
    proc = subprocess.run([sys.executable, "-W", "always", "-c", INFO],
                          env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(proc.stdout), proc.stderr


def _burn(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _echo(conn):
    while True:
        msg = conn.recv_bytes()
        if not msg:
            return
        conn.send_bytes(msg)


@pytest.mark.timeout(30)
def test_spin_info_is_sane():
    info = _cmultiprocessing.spin_info()
    assert set(info) == {"max", "cpus", "runnable", "crowded", "spinning"}
    assert info["cpus"] >= 1
    assert 0.0 <= info["max"] <= 1.0
    assert isinstance(info["crowded"], bool)
    assert info["spinning"] == (info["max"] > 0.0 and not info["crowded"])
    if sys.platform.startswith("linux"):
        # the reading thread itself is running
        assert isinstance(info["runnable"], int) and info["runnable"] >= 1
        assert info["crowded"] == (info["runnable"] > info["cpus"])
    else:
        assert info["runnable"] is None and not info["crowded"]


@pytest.mark.timeout(60)
def test_default_budget():
    info, _ = _info_with(None)
    assert info["max"] == (100e-6 if info["cpus"] > 1 else 0.0)


@pytest.mark.timeout(60)
def test_knob_turns_spinning_off():
    info, _ = _info_with("0")
    assert info["max"] == 0.0
    assert info["spinning"] is False


@pytest.mark.timeout(60)
def test_knob_sets_the_budget():
    info, _ = _info_with("250")
    assert info["max"] == (250e-6 if info["cpus"] > 1 else 0.0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", ["abc", "-5", "2000000", "1.5"])
def test_bad_knob_warns_and_keeps_the_default(value):
    info, err = _info_with(value)
    assert "RuntimeWarning" in err and "CMP_SPIN" in err
    assert info["max"] == (100e-6 if info["cpus"] > 1 else 0.0)


@pytest.mark.timeout(60)
def test_waits_work_without_spinning():
    code = ("import cmultiprocessing as cmp, _cmultiprocessing as c\n"
            "import test_spin\n"
            "assert c.spin_info()['max'] == 0.0\n"
            "a, b = cmp.Pipe()\n"
            "p = cmp.Process(target=test_spin._echo, args=(b,)); p.start()\n"
            "for i in range(200):\n"
            "    a.send_bytes(b'%d' % i)\n"
            "    assert a.recv_bytes() == b'%d' % i\n"
            "a.send_bytes(b''); p.join(30); assert p.exitcode == 0\n"
            "q = cmp.Queue(); q.put(1); assert q.get(timeout=30) == 1\n"
            "s = cmp.Semaphore(0); assert not s.acquire(timeout=0.01)\n"
            "print('ok')\n")
    env = dict(os.environ, CMP_SPIN="0",
               PYTHONPATH=os.pathsep.join(
                   [os.path.dirname(__file__)] +
                   [p for p in os.environ.get("PYTHONPATH", "").split(
                       os.pathsep) if p]))
    proc = subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.timeout(60)
@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the runnable count comes from /proc/loadavg")
def test_crowded_machine_is_seen():
    cpus = _cmultiprocessing.spin_info()["cpus"]
    ctx = cmp.get_context("fork")
    burners = [ctx.Process(target=_burn, args=(20.0,))
               for _ in range(2 * cpus + 1)]
    for proc in burners:
        proc.start()
    try:
        seen = None
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            info = _cmultiprocessing.spin_info()
            if info["crowded"]:
                seen = info
                break
            time.sleep(0.02)
        assert seen is not None, "never crowded with %d busy processes on " \
            "%d CPUs" % (len(burners), cpus)
        assert seen["runnable"] > seen["cpus"]
        assert seen["spinning"] is False
    finally:
        for proc in burners:
            proc.terminate()
        for proc in burners:
            proc.join(30)
