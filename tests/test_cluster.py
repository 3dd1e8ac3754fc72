"""Unit tests of cmultiprocessing.cluster: what is the cluster Pool's own
(tests/test_cluster_pool.py runs test_pool.py's Pool tests on it).

Each test that needs Dask makes its clusters on the loopback interface
(worker processes, no dashboard) and closes them before it ends, so the
leak check of conftest.py sees no process left behind; each has a time
limit.  Without dask.distributed they skip, saying so; importing the module
without Dask is checked everywhere.
"""
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import cmultiprocessing as cmp
from cmultiprocessing import cluster
from cmultiprocessing import pool as mpool

pytestmark = pytest.mark.timeout(180)

LONG = 60.0


def _have_distributed():
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


needs_dask = pytest.mark.skipif(
    not _have_distributed(), reason="cmultiprocessing[dask] is not installed "
    "(pip install 'cmultiprocessing[dask]')")


# -- task functions (module level, so that they pickle by reference) -------

def square(x):
    return x * x


def slow_square(x):
    time.sleep(0.05)
    return x * x


def slow_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def die(code):
    os._exit(code)


def bad_initializer():
    raise RuntimeError('initializer says no')


def local_cluster(workers=2, **config):
    """A LocalCluster on loopback and a Client of it; config: Dask
    settings (as dask.config.set takes them) for the scheduler."""
    import dask
    import distributed
    with dask.config.set(config):
        c = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True,
            host="127.0.0.1", dashboard_address=None)
    return c, distributed.Client(c, set_as_default=False)


@pytest.fixture(scope="module")
def dask_client():
    if not _have_distributed():
        pytest.skip("cmultiprocessing[dask] is not installed")
    c, client = local_cluster()
    try:
        yield client
    finally:
        client.close()
        c.close()


@pytest.fixture
def own_cluster(request):
    """A 2-worker cluster of the test's own (its workers may be killed)."""
    if not _have_distributed():
        pytest.skip("cmultiprocessing[dask] is not installed")
    config = getattr(request, "param", {})
    c, client = local_cluster(**config)
    try:
        yield client
    finally:
        client.close()
        c.close()


def worker_pids(client):
    return client.run(os.getpid)


# -- importing ----------------------------------------------------------------

def test_importing_the_module_imports_no_dask():
    code = textwrap.dedent("""
        import sys
        import cmultiprocessing, cmultiprocessing.cluster
        from cmultiprocessing.cluster import Pool, ClusterLostError
        bad = sorted(m for m in sys.modules if m.split('.')[0] in (
            'dask', 'distributed', 'tornado', 'cloudpickle',
            'multiprocessing', 'concurrent'))
        print(bad)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_without_dask_the_pool_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"cmultiprocessing\[dask\]"):
        cluster.Pool(1)


def test_errors_are_the_package_s():
    assert issubclass(cluster.ClusterWorkerLostError, mpool.WorkerLostError)
    assert issubclass(cluster.ClusterLostError, cmp.ProcessError)
    err = cluster.ClusterWorkerLostError("workers kept dying")
    assert str(err) == "workers kept dying"
    import pickle
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


def test_invalid_arguments():
    # refused before any cluster is started or contacted
    with pytest.raises(ValueError):
        cluster.Pool(0)
    for bad in (0, -1, 0.5, '3'):
        with pytest.raises(ValueError):
            cluster.Pool(1, maxtasksperchild=bad)
    with pytest.raises(TypeError):
        cluster.Pool(1, initializer=3)


@needs_dask
def test_a_client_of_another_kind_is_refused():
    with pytest.raises(TypeError, match="distributed.Client"):
        cluster.Pool(client=5)


# -- where the pool runs ------------------------------------------------------

@needs_dask
def test_without_a_client_the_pool_starts_and_stops_a_local_cluster():
    with cluster.Pool(2) as p:
        workers = p.client.scheduler_info()["workers"]
        assert len(workers) == 2
        assert all(w.startswith("tcp://127.0.0.1:") for w in workers)
        assert p.map(square, range(100)) == [x * x for x in range(100)]
        pids = set(p.map(slow_pid, [0.05] * 8, 1))
        assert len(pids) == 2 and os.getpid() not in pids
    p.join()
    assert p.client.status == "closed"
    # conftest's leak check: no worker process is left


@needs_dask
def test_given_a_scheduler_address(dask_client):
    address = dask_client.scheduler.address
    p = cluster.Pool(client=address)
    assert p.map(square, range(10), 3) == [x * x for x in range(10)]
    p.close()
    p.join()
    assert p.client.status == "closed"          # its own client, closed
    assert dask_client.status == "running"      # the cluster, not touched
    with cluster.Pool(client=dask_client) as q:
        assert q.apply(square, (5,)) == 25
    assert dask_client.status == "running"      # a client given: left open


@needs_dask
def test_both_workers_take_part(dask_client):
    with cluster.Pool(client=dask_client) as p:
        assert p._processes == 2
        assert len(set(p.map(slow_pid, [0.05] * 8, 1))) == 2


@needs_dask
def test_callbacks_run_in_the_collector_thread(dask_client):
    import threading
    threads, values = [], []

    def note(value):
        threads.append(threading.current_thread().name)
        values.append(value)

    with cluster.Pool(client=dask_client) as p:
        results = [p.apply_async(square, (i,), callback=note)
                   for i in range(200)]
        assert [r.get(timeout=60) for r in results] == \
            [i * i for i in range(200)]
    assert sorted(values) == [i * i for i in range(200)]
    assert set(threads) == {'cmultiprocessing-cluster-collector'}


@needs_dask
def test_a_map_is_chunked_not_one_task_an_item(dask_client):
    with cluster.Pool(client=dask_client) as p:
        engine = p._engine
        chunks, batches = [], []
        real_submit, real_call = engine.submit, engine._call

        def submit(result, tasks):
            chunks.extend(tasks)
            return real_submit(result, tasks)

        async def call(slot, batch):
            batches.append(len(batch))
            return await real_call(slot, batch)
        engine.submit, engine._call = submit, call
        data = range(100000)
        assert p.map(square, data) == [x * x for x in data]
    # one chunk per worker thread (cluster._CHUNKS_PER_THREAD), each sent
    # to a worker's runner in one call of its own: 2 calls, not 100,000
    assert len(chunks) == 2 * cluster._CHUNKS_PER_THREAD
    assert len(batches) == 2 and sum(batches) == len(chunks)


@needs_dask
def test_close_then_join_waits_for_the_work(dask_client):
    p = cluster.Pool(client=dask_client)
    results = [p.apply_async(slow_pid, (0.05,)) for _ in range(6)]
    it = p.imap(slow_square, range(6))
    p.close()
    with pytest.raises(ValueError):
        p.apply_async(square, (1,))
    p.join()
    assert all(r.ready() and r.successful() for r in results)
    assert list(it) == [x * x for x in range(6)]


@needs_dask
def test_imap_streams_results_in_order(dask_client):
    def numbers():
        for i in range(6):
            yield i
        time.sleep(1.0)             # the input stalls...
        yield 6
    with cluster.Pool(client=dask_client) as p:
        it = p.imap(square, numbers())
        t0 = time.monotonic()
        # ...but what was read is already computed and handed out
        assert [it.next(timeout=LONG) for _ in range(6)] == \
            [x * x for x in range(6)]
        assert time.monotonic() - t0 < 1.0
        assert list(it) == [36]


# -- failures -----------------------------------------------------------------

@needs_dask
def test_failing_initializer_fails_the_tasks_not_loops(dask_client):
    p = cluster.Pool(client=dask_client, initializer=bad_initializer)
    try:
        results = [p.apply_async(square, (i,)) for i in range(4)]
        for res in results:
            with pytest.raises(RuntimeError, match='initializer says no') \
                    as info:
                res.get(LONG)
            assert 'bad_initializer' in info.value.__cause__.tb
        with pytest.raises(RuntimeError):
            p.map(square, range(10))
    finally:
        p.terminate()
        p.join()
    # another pool on the same workers is not affected
    with cluster.Pool(client=dask_client) as q:
        assert q.map(square, range(4), 1) == [0, 1, 4, 9]


@needs_dask
@pytest.mark.parametrize("own_cluster", [
    {"distributed.scheduler.allowed-failures": 1}], indirect=True)
def test_a_task_that_kills_its_workers_fails_with_worker_lost(own_cluster):
    with cluster.Pool(client=own_cluster) as p:
        t0 = time.monotonic()
        with pytest.raises(mpool.WorkerLostError) as info:
            p.apply(die, (7,))
        assert isinstance(info.value, cluster.ClusterWorkerLostError)
        assert 'kept dying' in str(info.value)
        assert time.monotonic() - t0 < LONG
        # the nannies restarted the workers: the pool goes on
        assert p.map(square, range(20), 1) == [x * x for x in range(20)]


@needs_dask
@pytest.mark.parametrize("own_cluster", [
    {"distributed.scheduler.allowed-failures": 1}], indirect=True)
def test_a_killer_batched_with_other_tasks_fails_alone(own_cluster):
    # apply_async() calls that come together travel to a worker in one
    # batch; when the worker dies, each of the batch's tasks runs again
    # alone, so that only the task that kills its worker is given up on
    with cluster.Pool(client=own_cluster) as p:
        engine = p._engine
        batches = []
        real_call = engine._call

        async def call(slot, batch):
            batches.append([(task.result, task.deaths) for task in batch])
            return await real_call(slot, batch)
        engine._call = call
        # both workers busy a while, so that what follows is queued
        busy = [p.apply_async(time.sleep, (0.3,)) for _ in range(2)]
        before = [p.apply_async(square, (i,)) for i in range(20)]
        killer = p.apply_async(die, (7,))
        after = [p.apply_async(square, (i,)) for i in range(20, 40)]
        t0 = time.monotonic()
        with pytest.raises(cluster.ClusterWorkerLostError):
            killer.get(LONG)
        assert [r.get(LONG) for r in before + after] == \
            [i * i for i in range(40)]
        assert time.monotonic() - t0 < LONG
        assert all(r.get(LONG) is None for r in busy)
        # the killer travelled with others until its worker died (a batch
        # may come back before reaching it: _BATCH_SECONDS), then alone
        sent = [(len(b), deaths) for b in batches
                for result, deaths in b if result is killer]
        assert all(n > 1 for n, deaths in sent if deaths == 0), sent
        assert [(n, deaths) for n, deaths in sent if deaths] == [(1, 1)]
        # and each task of the batch it killed went alone after it
        killed = [b for b in batches if (killer, 0) in b][-1]
        for result, _ in killed:
            assert sum(len(b) == 1 for b in batches
                       if (result, 1) in b) == 1
        assert p.map(square, range(20), 1) == [x * x for x in range(20)]


@needs_dask
def test_work_waits_for_workers_that_join_later(tmp_path):
    # a pool on a scheduler without workers: its tasks wait in its queue,
    # and run when a worker joins (Dask's own tasks wait the same way)
    with _pool_on_own_scheduler(tmp_path, worker=False) as (
            p, sched_file, procs):
        assert not p.client.nthreads()
        res = p.map_async(square, range(10), 3)
        single = p.apply_async(square, (7,))
        time.sleep(0.5)
        assert not res.ready() and not single.ready()
        procs.append(_start_worker(sched_file))
        assert res.get(LONG) == [x * x for x in range(10)]
        assert single.get(LONG) == 49


@needs_dask
def test_wait_for_workers_waits_for_the_pool_s_runners(tmp_path):
    # a pool made while the scheduler knew one worker: wait_for_workers(2)
    # returns once the second has the pool's runner, and the next map is
    # shared by both at once (client.wait_for_workers() only says that
    # the scheduler knows the worker: the pool may not have asked yet)
    with _pool_on_own_scheduler(tmp_path) as (p, sched_file, procs):
        p.wait_for_workers(1, timeout=LONG)
        with pytest.raises(TimeoutError, match="only 1 of the 2"):
            p.wait_for_workers(2, timeout=0.3)
        with pytest.raises(ValueError):
            p.wait_for_workers(0)
        with pytest.raises(ValueError):
            p.wait_for_workers(1, timeout=-1)
        procs.append(_start_worker(sched_file))
        p.wait_for_workers(2, timeout=LONG)
        assert sum(s.ready for s in p._engine.slots.values()) == 2
        # two slow tasks, one a worker: both at once, on both
        pids = p.map(slow_pid, [1.0, 1.0], 1)
        assert len(set(pids)) == 2
    with pytest.raises(ValueError):
        p.wait_for_workers(1)


@needs_dask
def test_the_first_work_goes_to_the_workers_the_client_waited_for(
        tmp_path, monkeypatch):
    # a pool made on one worker, a second worker, client.wait_for_workers(2)
    # and at once a map: the pool asks the scheduler before its first work
    # (with the once-a-second asking turned off here, so that only that
    # rule can find the second worker before the map goes out)
    monkeypatch.setattr(cluster, "_REFRESH_SECONDS", 1e9)
    with _pool_on_own_scheduler(tmp_path) as (p, sched_file, procs):
        p.client.wait_for_workers(1, timeout=LONG)
        assert len(p._engine.slots) <= 1
        procs.append(_start_worker(sched_file))
        p.client.wait_for_workers(2, timeout=LONG)
        pids = p.map_async(slow_pid, [1.0, 1.0], 1).get(LONG)
        assert len(set(pids)) == 2


@needs_dask
def test_the_pool_leaves_no_runner_behind(dask_client):
    # the pool's actors (one a worker) are released when it ends, on a
    # cluster it did not start: the scheduler and the workers forget them
    def runners(dask_scheduler):
        return [str(k) for k in dask_scheduler.tasks
                if str(k).startswith("cmp-runner-")]

    def actors(dask_worker):
        return [str(k) for k in dask_worker.state.actors]
    for end in ("terminate", "join"):
        p = cluster.Pool(client=dask_client)
        assert len(dask_client.run_on_scheduler(runners)) == 2
        assert p.map(square, range(10)) == [x * x for x in range(10)]
        if end == "join":
            p.close()
        else:
            p.terminate()
        p.join()
        deadline = time.monotonic() + LONG
        while dask_client.run_on_scheduler(runners) or any(
                dask_client.run(actors).values()):
            assert time.monotonic() < deadline, "runners left behind"
            time.sleep(0.05)


@needs_dask
def test_a_worker_killed_mid_map_gives_the_result(own_cluster):
    with cluster.Pool(client=own_cluster) as p:
        data = list(range(60))
        res = p.map_async(slow_square, data, 2)
        time.sleep(0.3)                 # the map is running on both
        victim = sorted(worker_pids(own_cluster).values())[0]
        os.kill(victim, signal.SIGKILL)
        # the scheduler ran the lost chunks again elsewhere
        assert res.get(LONG) == [x * x for x in data]
        assert victim not in worker_pids(own_cluster).values()


def test_maxtasksperchild_is_refused_with_dask_s_alternative():
    # Dask's workers are not the pool's to restart (see the module's notes)
    with pytest.raises(NotImplementedError, match="--lifetime-restart"):
        cluster.Pool(1, maxtasksperchild=3)


@needs_dask
def test_terminate_with_work_outstanding():
    p = cluster.Pool(2)
    res = p.map_async(time.sleep, [LONG] * 10, 1)
    time.sleep(0.5)
    t0 = time.monotonic()
    p.terminate()
    p.join()
    assert time.monotonic() - t0 < 30
    assert not res.ready()              # left unfinished, as the stdlib's
    assert p.client.status == "closed"
    with pytest.raises(ValueError):
        p.apply_async(square, (1,))


def _start_scheduler(tmp_path, worker=True):
    """A scheduler process of its own (so that it can be killed) and one
    worker, on loopback; returns (scheduler file, [processes])."""
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler",
         "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(sched_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    if worker:
        procs.append(_start_worker(sched_file))
    return sched_file, procs


@contextlib.contextmanager
def _pool_on_own_scheduler(tmp_path, worker=True):
    """A cluster Pool on a scheduler of its own (_start_scheduler): yields
    (pool, scheduler file, [processes]); at the end the pool is terminated
    and joined, then the processes are killed."""
    sched_file, procs = _start_scheduler(tmp_path, worker)
    try:
        p = cluster.Pool(client=_address(sched_file))
        try:
            yield p, sched_file, procs
        finally:
            p.terminate()
            p.join()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _start_worker(sched_file):
    return subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker",
         "--scheduler-file", str(sched_file), "--nthreads", "1",
         "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1",
         "--no-nanny", "--death-timeout", "5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))


def _address(sched_file):
    import json
    deadline = time.monotonic() + LONG
    while not sched_file.exists():
        assert time.monotonic() < deadline, "no scheduler"
        time.sleep(0.1)
    return json.loads(sched_file.read_text())["address"]


@needs_dask
def test_a_cluster_that_goes_away_fails_the_pending_results(tmp_path):
    with _pool_on_own_scheduler(tmp_path) as (p, sched_file, procs):
        p.client.wait_for_workers(1, timeout=LONG)
        assert p.apply(square, (6,)) == 36
        pending = [p.apply_async(time.sleep, (LONG,)) for _ in range(3)]
        mapped = p.map_async(time.sleep, [LONG] * 4, 1)
        time.sleep(0.3)
        procs[0].kill()                         # the scheduler
        t0 = time.monotonic()
        for res in pending + [mapped]:
            with pytest.raises(cluster.ClusterLostError,
                               match='went away'):
                res.get(LONG)
        assert time.monotonic() - t0 < 30
        with pytest.raises(cluster.ClusterLostError):
            p.apply_async(square, (1,))


@needs_dask
def test_a_map_of_100k_tiny_tasks_close_to_a_local_pool():
    # The acceptance line: a map of 100k tiny tasks on a 2-worker
    # LocalCluster within 3x of a local Pool(2) (one scheduler task an item
    # would take minutes).  The bound is about a map, not about starting a
    # cluster: each pool is made first (the cluster Pool starts its
    # runners then) and does one untimed map (imports, first connections),
    # the same for both; then the median of 7 maps is compared.  Here (2
    # cores shared with other jobs) the cluster's map is 1.0-1.5x the local
    # pool's (bench_cluster.py reports the ratio).
    def median(pool):
        data = range(100000)
        assert pool.map(square, data) == [x * x for x in data]
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            pool.map(square, data)
            times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2]
    with cmp.get_context("fork").Pool(2) as local:
        local_time = median(local)
    local.join()
    with cluster.Pool(2) as remote:
        cluster_time = median(remote)
    remote.join()
    assert cluster_time < 3 * local_time, (cluster_time, local_time)
