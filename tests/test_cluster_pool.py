"""The Pool section of the unit tests (tests/test_pool.py), run on the
cluster Pool (cmultiprocessing.cluster) over a 2-worker Dask LocalCluster.

The test bodies are test_pool.py's own, imported here: pytest runs them a
second time with this module's fixtures, whose `pool` and `ctx.Pool` make
cluster pools on one LocalCluster shared by the module (loopback only,
worker processes, no dashboard; closed at the end of the module).  The
tests of test_pool.py that are about the local pool's own machinery are
listed in NOT_FOR_THE_CLUSTER with the reason; tests/test_cluster.py checks
the cluster's version of those behaviours (lost workers, initializer
failures, maxtasksperchild, terminate).

Skipped where dask.distributed is not installed (suite/ci.py's cluster
stage installs cmultiprocessing[dask] and runs this file).
"""
import pytest

pytest.importorskip("distributed", reason="cmultiprocessing[dask] is not "
                    "installed (pip install 'cmultiprocessing[dask]')")

import test_pool  # noqa: E402
from test_pool import (  # noqa: E402,F401  (collected again, here)
    test_a_chunk_that_cannot_be_unpacked_fails_the_map,
    test_async_result_api,
    test_bad_chunksize_and_states,
    test_callbacks,
    test_context_manager_terminates,
    test_errors_carry_the_remote_traceback,
    test_every_way_of_mapping_matches_builtins,
    test_failing_callback_does_not_break_the_pool,
    test_imap_next_with_timeout,
    test_initializer_runs_in_every_worker,
    test_inputs_without_len_and_ranges,
    test_iterable_errors_arrive_in_order,
    test_many_tiny_tasks,
    test_map_results_keep_their_types,
    test_unpicklable_result_and_exception,
    test_unpicklable_task_fails_alone,
    test_results_are_released_after_get,
    test_a_map_of_no_items_is_ready_at_once,
)

from cmultiprocessing import cluster  # noqa: E402

pytestmark = pytest.mark.timeout(120)

REUSED = {name for name in globals() if name.startswith("test_") and
          getattr(globals()[name], "__module__", None) == "test_pool"}

NOT_FOR_THE_CLUSTER = {
    "test_thread_pool_does_not_wrap_exceptions": "ThreadPool",
    "test_invalid_arguments": "makes local pools; test_cluster.py checks "
    "the same arguments on the cluster Pool",
    "test_killed_worker_fails_its_task_and_pool_goes_on": "local worker "
    "slots and pids; on Dask the scheduler re-runs the task "
    "(test_cluster.py)",
    "test_worker_exiting_by_itself": "local exit codes; on Dask the task is "
    "re-run, then fails with ClusterWorkerLostError (test_cluster.py)",
    "test_worker_dying_by_other_signals": "local exit codes (as above)",
    "test_failing_initializer_fails_tasks_instead_of_hanging": "on Dask the "
    "worker does not die: its tasks fail with the initializer's own error "
    "(test_cluster.py)",
    "test_maxtasksperchild_replaces_workers": "the local pool's _pool and "
    "_repopulate_pool (test_cluster.py checks restarts by pid)",
    "test_close_finishes_queued_work_with_short_lived_workers": "the local "
    "pool's _pool (test_cluster.py: close() and join() with restarts)",
    "test_terminate_with_work_outstanding": "the local pool's _pool; "
    "test_cluster.py terminates a pool with work outstanding",
    "test_resource_warning_for_a_running_pool": "ThreadPool",
    "test_creation_failure_leaks_no_worker": "a mocked local context",
    "test_results_do_not_keep_tasks_alive": "ThreadPool (results are "
    "pickled on a cluster)",
    "test_tasks_queued_behind_a_killed_task_still_run": "local batches",
    "test_pool_survives_a_failed_replacement": "local worker starts",
    "test_no_descriptor_leaks": "a mocked local context",
    "test_tasks_batched_behind_a_killed_task_still_run": "local batches",
    "test_workers_of_a_killed_pool_exit": "local worker processes",
    "test_map_chunk_packs_only_exact_ints_or_floats": "the C function, "
    "not a pool",
    "test_map_chunk_and_unpack_into_reject_bad_input": "the C function, "
    "not a pool",
    "test_a_map_is_shared_among_the_workers": "asserts 3 local workers; "
    "test_cluster.py checks both workers of the cluster take part",
    "test_a_map_in_paired_batches_survives_bad_tasks_and_lost_workers":
    "local batch pairs",
    "test_callbacks_run_in_the_collector_thread_in_order": "the local "
    "collector thread's name; the cluster Pool's callbacks run in its "
    "collector thread (test_cluster.py)",
    "test_apply_result_protocol_without_a_pool": "the C result type, "
    "not a pool",
    "test_apply_result_and_deliver_reject_bad_input": "the C result type, "
    "not a pool",
    "test_take_tasks_moves_tuples_up_to_a_limit": "the C function, not a "
    "pool",
    "test_a_failing_callback_in_a_batch_spares_the_others": "the C "
    "deliver(), not a pool",
    "test_a_pending_result_is_collected_with_its_cycle": "the C result "
    "type, not a pool",
    "test_get_waits_in_another_thread_and_wakes_every_waiter": "the C "
    "result type, not a pool",
}


@pytest.fixture(scope="module")
def dask_client():
    import distributed
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None)
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


class _ClusterContext:
    """What test_pool's `ctx` fixture gives, making cluster pools."""

    def __init__(self, client):
        self.client = client

    def Pool(self, processes=None, *args, **kwds):
        return cluster.Pool(processes, *args, client=self.client, **kwds)


@pytest.fixture
def ctx(dask_client):
    return _ClusterContext(dask_client)


@pytest.fixture
def pool(dask_client):
    p = cluster.Pool(client=dask_client)
    try:
        yield p
    finally:
        p.terminate()
        p.join()


def test_every_pool_test_is_run_or_says_why_not():
    local = {name for name in dir(test_pool) if name.startswith("test_")}
    assert REUSED and REUSED.isdisjoint(NOT_FOR_THE_CLUSTER)
    assert local == REUSED | set(NOT_FOR_THE_CLUSTER)
    assert all(why.strip() for why in NOT_FOR_THE_CLUSTER.values())
