"""The cluster Pool across hosts: a Dask scheduler, two workers and the
client, each in a network namespace of its own, joined by a bridge in a
fifth namespace (a switch), so that they talk over a network (10.231.N.0/24)
and not over loopback.  The namespaces are made by the test and deleted at
its end, with every process it started; the machine's own network is not
touched.  Skipped unless root, `ip netns` works and dask.distributed is
installed.
"""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("distributed", reason="cmultiprocessing[dask] is not "
                    "installed (pip install 'cmultiprocessing[dask]')")

pytestmark = pytest.mark.timeout(150)

IP = shutil.which("ip") or "/usr/sbin/ip"
TAG = "cmp%d" % os.getpid()
SUBNET = "10.231.%d" % (20 + os.getpid() % 200)
SWITCH = TAG + "sw"
# namespace -> its address on the subnet
HOSTS = {TAG + "s": SUBNET + ".1", TAG + "w1": SUBNET + ".2",
         TAG + "w2": SUBNET + ".3", TAG + "c": SUBNET + ".4"}
SCHEDULER = "tcp://%s:8786" % HOSTS[TAG + "s"]

CLIENT = textwrap.dedent("""
    import json, sys
    from distributed import get_worker
    from cmultiprocessing.cluster import Pool

    def where(x):
        return x * x, get_worker().address

    if __name__ == "__main__":
        with Pool(client=sys.argv[1]) as pool:
            pool.wait_for_workers(2, timeout=60)
            out = pool.map(where, range(2000), 50)
            lazy = list(pool.imap(where, range(40), 4))
        print(json.dumps({"squares": [v for v, _ in out + lazy],
                          "workers": sorted({w for _, w in out + lazy})}))
""")


def ip(*args, check=True):
    return subprocess.run([IP] + list(args), capture_output=True, text=True,
                          timeout=30, check=check)


def in_ns(ns, argv):
    return [IP, "netns", "exec", ns] + argv


def make_network():
    ip("netns", "add", SWITCH)
    ip("-n", SWITCH, "link", "add", "br0", "type", "bridge")
    ip("-n", SWITCH, "link", "set", "br0", "up")
    for i, (ns, address) in enumerate(sorted(HOSTS.items())):
        ip("netns", "add", ns)
        port = "p%d" % i
        ip("link", "add", port, "netns", SWITCH, "type", "veth", "peer",
           "name", "eth0", "netns", ns)
        ip("-n", SWITCH, "link", "set", port, "master", "br0")
        ip("-n", SWITCH, "link", "set", port, "up")
        ip("-n", ns, "addr", "add", address + "/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")


def delete_network():
    for ns in list(HOSTS) + [SWITCH]:
        ip("netns", "del", ns, check=False)


@pytest.fixture
def network():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if not os.path.exists(IP):
        pytest.skip("no ip(8) here")
    try:
        ip("netns", "add", TAG + "probe")
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip("ip netns does not work here: %s" % (
            getattr(exc, "stderr", "") or exc))
    ip("netns", "del", TAG + "probe", check=False)
    try:
        make_network()
        yield HOSTS
    finally:
        delete_network()
        assert not [ns for ns in ip("netns", "list").stdout.split()
                    if ns.startswith(TAG)]


def start(ns, argv):
    return subprocess.Popen(in_ns(ns, argv), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True,
                            env=dict(os.environ,
                                     PYTHONPATH=os.pathsep.join(sys.path)))


def stop(proc):
    # SIGTERM first: Dask's nanny and worker end cleanly on it, and the
    # stdlib resource tracker of their group (which ignores SIGTERM) then
    # sees its pipe close and removes their named semaphores; SIGKILL to
    # the whole group left a dozen sem.mp-* behind in /dev/shm (CI's leak
    # check).  SIGKILL only for what has not ended in 20 s.
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except OSError:
        pass
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except OSError:
            break               # the whole group is gone
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()


def test_a_pool_map_over_a_network_of_namespaces(network, tmp_path):
    py = sys.executable
    # the client's namespace reaches the others across the bridge only
    ping = subprocess.run(in_ns(TAG + "c", [py, "-c", textwrap.dedent("""
        import socket, sys
        s = socket.socket(); s.settimeout(2)
        try:
            s.connect((sys.argv[1], 9))
        except ConnectionRefusedError:
            print("reached")
        except OSError as e:
            print("unreachable", e)
    """), network[TAG + "w1"]]), capture_output=True, text=True, timeout=30)
    assert ping.stdout.strip() == "reached", ping.stdout + ping.stderr
    procs = []
    try:
        procs.append(start(TAG + "s", [
            py, "-m", "distributed.cli.dask_scheduler", "--host",
            network[TAG + "s"], "--port", "8786", "--no-dashboard"]))
        for name in ("w1", "w2"):
            procs.append(start(TAG + name, [
                py, "-m", "distributed.cli.dask_worker", SCHEDULER,
                "--host", network[TAG + name], "--nthreads", "1",
                "--nworkers", "1", "--no-dashboard", "--death-timeout",
                "60"]))
        script = tmp_path / "client.py"
        script.write_text(CLIENT)
        run = subprocess.run(in_ns(TAG + "c", [py, str(script), SCHEDULER]),
                             capture_output=True, text=True, timeout=120,
                             env=dict(os.environ,
                                      PYTHONPATH=os.pathsep.join(sys.path)))
        assert run.returncode == 0, run.stderr[-3000:]
        import json
        got = json.loads(run.stdout.strip().splitlines()[-1])
        assert got["squares"] == [x * x for x in range(2000)] + \
            [x * x for x in range(40)]
        # both workers, each at its own address on the bridge
        hosts = sorted(w.split("//")[1].rsplit(":", 1)[0]
                       for w in got["workers"])
        assert hosts == [network[TAG + "w1"], network[TAG + "w2"]]
    finally:
        for proc in procs:
            stop(proc)
    deadline = time.monotonic() + 30
    while any(proc.poll() is None for proc in procs):
        assert time.monotonic() < deadline
        time.sleep(0.1)
