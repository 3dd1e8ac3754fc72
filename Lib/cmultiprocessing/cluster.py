"""The Pool API on a Dask cluster (`pip install cmultiprocessing[dask]`).

    from cmultiprocessing.cluster import Pool
    with Pool(client="tcp://scheduler:8786") as pool:
        results = pool.map(func, data)

`Pool` has the stdlib `multiprocessing.Pool`'s methods, arguments and
result objects (the very `ApplyResult`, `MapResult` and `IMapIterator` of
`cmultiprocessing.pool`), but its tasks run on the workers of a
`dask.distributed` cluster: a `Client` given as `client=`, a scheduler
address given as `client=`, or, given neither, a `LocalCluster` of
`processes` worker processes (the machine's cores by default) that the pool
starts and stops, so that the same code runs on a laptop and on a cluster.
The workers need cmultiprocessing installed, and the module of the
functions they run (as `dask worker` always does).

Importing this module imports nothing of Dask; the pool imports it when it
is made (Dask imports the stdlib's multiprocessing and concurrent.futures,
which the rest of the package never does).

How the Pool's work reaches the workers:

* When the pool starts, it makes one Dask actor of its own (a `_Runner`)
  on each worker, pinned there: the only work that goes through the
  scheduler.  After that the pool calls the runners directly, client to
  worker, as Dask's actors are called: a task costs no scheduler round
  trip, no graph update and no gather (the scheduler's path costs 10-25 ms
  a map here: its stream to a worker flushes every 5 ms, the worker's to
  it and its own to the client every 2 ms, and a gather asks the
  scheduler where the data is before fetching it).  The pool asks the
  scheduler for its workers (and starts runners on the new ones) every
  _REFRESH_SECONDS while it has work, before its first work, and before
  work that follows an idle second; `pool.wait_for_workers(n)` waits
  until n workers have the pool's runner started.
* Tasks wait in the pool's queue, and each free worker thread gets one
  call: a batch of the queued tasks, the queue shared evenly among the
  free threads.  A batch returns after the task that ends _BATCH_SECONDS
  after it began (the rest go back to the queue), so tiny apply_async()
  calls travel by the hundred and slow ones one at a time, their results
  coming back as they finish.  The runner runs the batch on one of the
  worker's own task threads (so get_worker() works in a task; the worker's
  scheduler does not see these tasks, nor the dashboard).
* A map() is cut into chunks, one per worker thread of the cluster by
  default (the stdlib cuts 4 per process; see _CHUNKS_PER_THREAD): 100,000
  tiny items on two workers make 2 chunks, each sent to a worker in one
  call.  A chunk runs in the C loop of the local pool
  (`_cmultiprocessing.map_chunk`), and its results travel back pickled as
  one bytes object (all-int or all-float chunks packed, as locally).
* The task's function and arguments are pickled here (cloudpickle: a
  function of `__main__` travels by value) when it is submitted, so a
  task that cannot be pickled fails alone, with the pickling error, and
  the result is pickled by the worker, so a result that cannot be pickled
  fails as `MaybeEncodingError`, as in a local pool.  An exception raised
  by a task comes back with the worker's traceback text as its
  `__cause__` (`RemoteTraceback`).
* Results are unpickled, and the callbacks run, in one thread of the pool
  (the collector), never on Dask's event loop.  imap() reads its input in
  a thread of its own, submitting chunks as it reads them; its iterator
  hands results out in input order as they arrive (`IMapIterator`),
  imap_unordered() as they come.
* `initializer(*initargs)` runs once per pool in every worker process
  before its first task of the pool (on workers that join later, or are
  restarted, too).  When it raises, that worker's tasks of the pool fail
  with its exception (and traceback), rather than loop.
* `maxtasksperchild` is refused (NotImplementedError): Dask's workers are
  shared by every client of the cluster, and restarting one under the
  scheduler's feet (tried: a graceful restart after N tasks) made Dask lose
  track of tasks in flight.  Dask's own form of it is the worker lifetime:
  `dask worker --lifetime 1h --lifetime-restart`.

What fails how:

* A worker that dies (or that the scheduler loses) while a batch is on it:
  the batch's tasks go back to the queue, each counting the death, and
  run again on other workers (one at a time, so that a task that kills
  its worker is told from those batched with it); a task that has seen
  more deaths than the scheduler's `distributed.scheduler.allowed-
  failures` (3 by default) fails with `ClusterWorkerLostError` (a
  `WorkerLostError`).  Never a hang.
* The scheduler going away (the client cancels its futures, the pool's
  runners among them), or the client closing: every pending result fails
  with `ClusterLostError`, and the pool refuses new work.
* `terminate()` drops the pool's pending tasks, releases its runners and,
  for a cluster the pool started, stops its workers.  On a cluster it did
  not start, a batch already running keeps running to its end (Dask
  cannot stop a running task, nor can the pool); its results are dropped.
"""

__all__ = ['Pool', 'ClusterLostError', 'ClusterWorkerLostError']

import collections
import itertools
import os
import pickle
import queue
import threading
import time
import traceback
import uuid
import weakref

from .context import ProcessError
from .pool import (CLOSE, INIT, RUN, TERMINATE, ApplyResult, IMapIterator,
                   IMapUnorderedIterator, MapResult, MaybeEncodingError,
                   WorkerLostError, ExceptionWithTraceback, _PoolFacade,
                   _check_pool_args, rebuild_exc)

# How often the collector looks at the client (is the cluster lost?).
_WATCH_SECONDS = 0.5
# How often the pool asks the scheduler for new (and lost) workers: every
# half of this while it has work, a tenth while it has no worker to run it
# on, and before the first work that comes after this long (a round trip
# to the scheduler, 2-5 ms here, for a map after an idle second).
_REFRESH_SECONDS = 1.0
# How often Pool.wait_for_workers() asks the scheduler.
_WAIT_SECONDS = 0.1
# How long that first work waits for the runners of new workers to start.
_FIRST_SECONDS = 1.0
# How long a runner may take to start on a worker before the pool gives up
# on that worker.
_START_SECONDS = 30.0
# How long terminate() waits for the event loop to drop the calls.
_ON_LOOP_SECONDS = 5.0
# imap() submits the chunks it has read when it has this many, or when its
# input makes it wait: fewer wake-ups of the dispatcher for long inputs.
_IMAP_GROUP = 64
# A map() without a chunksize is cut into this many chunks per worker
# thread of the cluster (the stdlib cuts 4 per process): a worker thread
# gets its next batch only after a round trip to the client.  Map of 100k
# tiny items on 2 workers, here (median of 9, two rounds): 1 a thread
# 15-17 ms, 2 a thread 20 ms, 4 a thread 21-22 ms (a local Pool(2): 14 ms
# in that run).  Uneven tasks want smaller chunks: pass chunksize.
_CHUNKS_PER_THREAD = 1
# A batch (one call to a worker's runner) holds at most this many tasks and
# about this many bytes of them, and returns after the task that ends this
# many seconds after the batch began (the rest go back to the queue): tiny
# tasks travel by the hundred, slow ones one at a time, so that results of
# slow tasks come back as they finish.
_BATCH_TASKS = 1000
_BATCH_BYTES = 4 << 20
_BATCH_SECONDS = 0.05


class ClusterLostError(ProcessError):
    """The Dask cluster (its scheduler) went away, or the client closed,
    before the task's result came back."""


class ClusterWorkerLostError(WorkerLostError):
    """The Dask workers given a task kept dying while running it: the
    scheduler gave up after `distributed.scheduler.allowed-failures`
    tries (Dask's `KilledWorker`)."""

    def __init__(self, message):
        self.message = message
        super().__init__(None, None, None, True)
        self.args = (message,)

    def __reduce__(self):
        return type(self), (self.message,)

    def __str__(self):
        return self.message


# ---------------------------------------------------------------------------
# The worker side (runs in the Dask worker processes)
# ---------------------------------------------------------------------------

_APPLY, _MAP, _STARMAP = 0, 1, 2

# pool token -> None (initialized) or the initializer's exception
_initialized = {}
_init_lock = threading.Lock()


def _initialize(init_blob):
    """Run the pool's initializer here, once; raise what it raised."""
    if init_blob is None:
        return
    token, blob = init_blob
    with _init_lock:
        if token not in _initialized:
            try:
                initializer, initargs = pickle.loads(blob)
                initializer(*initargs)
                _initialized[token] = None
            except Exception as exc:
                _initialized[token] = ExceptionWithTraceback(
                    exc, exc.__traceback__)
        failed = _initialized[token]
    if failed is not None:
        raise _InitFailed(failed)


class _InitFailed(Exception):
    pass


def _run(payload, init_blob):
    """One apply() call or one map() chunk.  Returns the pickled
    (ok, value), value being the result, the chunk's results (a list, or
    packed bytes) or the exception."""
    from _cmultiprocessing import map_chunk
    kind = func = args = None
    try:
        _initialize(init_blob)
        kind, func, args = pickle.loads(payload)
        if kind == _APPLY:
            args, kwds = args
            outcome = (True, func(*args, **kwds))
        else:
            outcome = (True, map_chunk(func, args, kind == _STARMAP))
    except _InitFailed as failed:
        outcome = (False, failed.args[0])
    except BaseException as exc:        # SystemExit too: the task's failure
        outcome = (False, ExceptionWithTraceback(exc, exc.__traceback__))
    func = args = payload = None
    try:
        blob = pickle.dumps(outcome, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        blob = pickle.dumps((False, MaybeEncodingError(exc, outcome[1])),
                            pickle.HIGHEST_PROTOCOL)
    return blob


def _run_batch(payloads, init_blob, budget):
    """Run the tasks of a batch in order, until they are done or budget
    seconds have gone by: [result blob] for the first len() of them."""
    blobs = []
    start = time.monotonic()
    for payload in payloads:
        blobs.append(_run(payload, init_blob))
        if time.monotonic() - start >= budget:
            break
    return blobs


class _Runner(object):
    """The pool's agent on one Dask worker: a Dask actor, made by the pool
    on each worker (pinned there), that the pool calls directly, without
    the scheduler.  A call runs a batch of tasks on one of the worker's
    own task threads (its executor), so the tasks see get_worker()."""

    def __init__(self, init_blob):
        self.init_blob = init_blob

    async def run(self, payloads, budget):
        import asyncio
        import contextvars
        from distributed import get_worker
        executor = get_worker().executor
        return await asyncio.get_running_loop().run_in_executor(
            executor, contextvars.copy_context().run, _run_batch, payloads,
            self.init_blob, budget)


# ---------------------------------------------------------------------------
# The engine: dispatch and collection (runs in the user's process)
# ---------------------------------------------------------------------------

_STOP = object()


class _Task(object):
    """One apply() call or map() chunk: where its outcome goes, its pickled
    (kind, func, args), and how many workers died running it."""
    __slots__ = ('result', 'index', 'payload', 'deaths')

    def __init__(self, result, index, payload):
        self.result, self.index, self.payload = result, index, payload
        self.deaths = 0


class _Slot(object):
    """A worker as the pool sees it: its address and threads, the future of
    the pool's runner there, and the batches in flight to it."""
    __slots__ = ('address', 'nthreads', 'future', 'key', 'starter',
                 'ready', 'calls')

    def __init__(self, address, nthreads, future):
        self.address, self.nthreads, self.future = address, nthreads, future
        self.key = future.key
        self.starter = None         # the asyncio task awaiting the runner
        self.ready = False
        self.calls = {}             # asyncio task -> [_Task]


class _Engine(object):
    """Owns the Dask client (and the cluster the pool started), the
    pool's runners on the workers, the tasks queued and in flight, and the
    collector thread; the Pool facade delegates to it, so that nothing here
    keeps the facade alive.

    Threads: the user's threads queue tasks (submit) and wake the client's
    event loop, which owns the slots and the calls (_pump, _call, _watch);
    the collector thread unpickles the results and runs the callbacks, so
    that a slow callback never stalls Dask's loop.  self.lock guards the
    queue, the pending set and the slots dict."""

    def __init__(self, client, own_client, cluster, token, init_blob,
                 cache):
        (self.client, self.own_client, self.cluster, self.token,
         self.init_blob, self.cache) = (client, own_client, cluster, token,
                                        init_blob, cache)
        self.address = getattr(client.scheduler, 'address', None) \
            or str(client)
        self.lock = threading.Lock()
        self.queue = collections.deque()    # _Task waiting for a worker
        self.pending = set()                # _Task not yet delivered
        self.woken = False                  # a _pump is on its way
        self.slots = {}                     # worker address -> _Slot
        self.loop_thread = None             # the event loop's thread id
        self.refused = {}                   # address -> why no runner
        self.watcher = None                 # the _watch task, while busy
        self.refreshing = None              # a _refresh_first task
        self.refreshed = -_REFRESH_SECONDS  # when workers were last asked
        self.worked = False                 # work has come (see _pump)
        self.done = queue.SimpleQueue()     # ([_Task], [blob or outcome])
        self.halted = False
        self.lost = None                    # the ClusterLostError, once
        self.counter = itertools.count()
        self.known_nthreads = 1
        self.allowed_failures = _allowed_failures(client)
        self.collector = threading.Thread(
            target=self._collect, name='cmultiprocessing-cluster-collector',
            daemon=True)
        self.collector.start()
        try:
            client.sync(self._start)
        except BaseException:
            self.halt()
            raise

    # -- the workers --------------------------------------------------------

    async def _start(self):
        """Start a runner on every worker there is, and wait for them (a
        pool made before its workers finds them when work arrives)."""
        self.loop_thread = threading.get_ident()
        await self._refresh_and_start(None)
        if not self.slots and self.refused:
            raise next(iter(self.refused.values()))

    async def _refresh_and_start(self, timeout):
        """_refresh(), then wait for the runners starting on new workers
        (at most timeout seconds; None: until they have)."""
        import asyncio
        await self._refresh()
        starters = [s.starter for s in list(self.slots.values())
                    if s.starter is not None]
        if starters and timeout != 0.0:
            await asyncio.wait(starters, timeout=timeout)

    async def _refresh(self):
        """Ask the scheduler for its workers: runners for the new ones,
        and the batches of those gone (a worker the scheduler lost
        without closing our connection) go to the others."""
        self.refreshed = time.monotonic()
        try:
            nthreads = await self.client.nthreads(asynchronous=True)
        except Exception:
            return          # the collector's _watch judges the client
        if self.halted or self.lost is not None:
            return
        for address in [a for a in self.slots if a not in nthreads]:
            self._drop(self.slots[address], 'the scheduler lost it')
        for address, n in nthreads.items():
            if address not in self.slots and address not in self.refused:
                self._start_runner(address, n)
        self.known_nthreads = max(1, sum(nthreads.values()))

    async def _wait_for_workers(self, n_workers, timeout):
        """Until n_workers workers have the pool's runner started (asking
        the scheduler every _WAIT_SECONDS), or TimeoutError after timeout
        seconds; then the queued work is shared among them."""
        import asyncio
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.lost is not None:
                raise self.lost
            if self.halted:
                raise ValueError("Pool not running")
            await self._refresh_and_start(
                None if deadline is None else
                max(0.0, deadline - time.monotonic()))
            ready = sum(1 for s in self.slots.values() if s.ready)
            if ready >= n_workers:
                break
            if deadline is not None and time.monotonic() >= deadline:
                refused = ''
                if self.refused:
                    address, why = next(iter(self.refused.items()))
                    refused = '; %d refused the runner (%s: %s: %s)' % (
                        len(self.refused), address, type(why).__name__, why)
                raise TimeoutError(
                    'only %d of the %d workers asked for were running the '
                    'pool\'s runner after %s s%s' % (ready, n_workers,
                                                     timeout, refused))
            await asyncio.sleep(_WAIT_SECONDS)
        self._pump()

    def _start_runner(self, address, nthreads):
        import asyncio
        key = 'cmp-runner-%s-%d' % (self.token, next(self.counter))
        future = self.client.submit(
            _Runner, self.init_blob, key=key, workers=[address],
            allow_other_workers=False, actor=True, pure=False)
        slot = _Slot(address, max(1, nthreads), future)
        with self.lock:
            self.slots[address] = slot
        slot.starter = asyncio.ensure_future(self._await_runner(slot))

    async def _await_runner(self, slot):
        import asyncio
        try:
            await asyncio.wait_for(
                self.client.gather([slot.future], asynchronous=True),
                _START_SECONDS)
        except Exception as exc:
            slot.starter = None
            if self.slots.get(slot.address) is slot:
                if not isinstance(exc, asyncio.TimeoutError):
                    self.refused[slot.address] = exc    # not tried again
                self._drop(slot, None)  # (a busy worker: the next refresh)
            return
        slot.starter = None
        slot.ready = True
        self._pump()

    def _drop(self, slot, why):
        """Forget a worker; its batches go back to the queue, each task
        counting a death when why says the worker died (not None)."""
        with self.lock:
            if self.slots.get(slot.address) is slot:
                del self.slots[slot.address]
        if slot.starter is not None:
            slot.starter.cancel()
        calls, slot.calls = slot.calls, {}
        slot.future = None          # releases the runner on the scheduler
        import asyncio
        current = asyncio.current_task()
        for call, batch in calls.items():
            if call is not current:
                call.cancel()
            self._requeue(batch, why)
        self._pump()

    def _requeue(self, batch, why):
        """Back to the queue, first in line; a task that was running when
        a worker died counts it, and after allowed-failures + 1 deaths (as
        the scheduler counts) fails with ClusterWorkerLostError."""
        back, failed = [], []
        with self.lock:
            for task in batch:
                if task not in self.pending:
                    continue
                if why is not None:
                    task.deaths += 1
                if task.deaths > self.allowed_failures:
                    failed.append(task)
                else:
                    back.append(task)
            self.queue.extendleft(reversed(back))
        for task in failed:
            self.done.put(([task], [(False, ClusterWorkerLostError(
                'Dask workers kept dying while running this task (%d '
                'died; the last: %s): the pool gave up on it'
                % (task.deaths, why)))]))

    # -- dispatching ----------------------------------------------------------

    def payload(self, kind, func, args):
        """(bytes, None) or (None, the pickling error)."""
        from cloudpickle import dumps
        try:
            return dumps((kind, func, args), pickle.HIGHEST_PROTOCOL), None
        except Exception as exc:
            return None, exc

    def submit(self, result, tasks):
        """Queue [(index, payload)] as tasks whose outcomes go to
        result._set(index, ...), and wake the dispatcher."""
        if not tasks:
            return
        items = [_Task(result, index, payload) for index, payload in tasks]
        with self.lock:
            lost = self.lost
            if lost is None and not self.halted:
                self.pending.update(items)
                self.queue.extend(items)
                wake, self.woken = not self.woken, True
            else:
                wake = False
        if lost is not None:
            for task in items:
                self.done.put(([task], [(False, lost)]))
        elif wake:
            try:
                self.client.loop.add_callback(self._pump)
            except Exception as exc:
                self.fail_all(self._lost_error(str(exc)))

    def _pump(self):
        """On the event loop: hand the queued tasks to the free worker
        threads, one batch each, the queue shared evenly among them (a task
        that has seen a worker die goes alone, so that only it is blamed if
        it kills the next one too).  Work that comes to a pool that has not
        asked for its workers for _REFRESH_SECONDS (an idle pool: a busy
        one asks every half of that), and the pool's first work, wait for
        the answer first, so that it is shared among the workers that
        joined meanwhile (a pool made, then client.wait_for_workers(n),
        then a map: the map goes to the n)."""
        import asyncio
        with self.lock:
            self.woken = False
            if self.halted or self.lost is not None or \
                    self.refreshing is not None:
                return
            if self.queue and (
                    not self.worked or
                    time.monotonic() - self.refreshed > _REFRESH_SECONDS):
                self.worked = True
                self.refreshing = asyncio.ensure_future(
                    self._refresh_first())
                return
            free = [slot for slot in self.slots.values() if slot.ready
                    for _ in range(slot.nthreads - len(slot.calls))]
            queued = self.queue
            while free and queued:
                share = min(-(-len(queued) // len(free)), _BATCH_TASKS)
                batch, size = [], 0
                while queued and len(batch) < share and size < _BATCH_BYTES:
                    if queued[0].deaths and batch:
                        break
                    task = queued.popleft()
                    batch.append(task)
                    size += len(task.payload)
                    if task.deaths:
                        break
                slot = free.pop()
                slot.calls[asyncio.ensure_future(self._call(slot, batch))] \
                    = batch
            stranded = []
            if queued and self.refused and not any(
                    s.ready or s.starter for s in self.slots.values()):
                stranded = list(queued)     # no worker can run them
                queued.clear()
            watch = bool(self.pending) and self.watcher is None
        if stranded:
            why = next(iter(self.refused.values()))
            self.done.put((stranded, [(False, why)] * len(stranded)))
        if watch:
            self.watcher = asyncio.ensure_future(self._watch())

    async def _refresh_first(self):
        """_pump() once the scheduler has said which workers there are,
        and the new workers' runners have started (or _FIRST_SECONDS have
        gone by: a slow one joins the work when it is ready)."""
        try:
            await self._refresh_and_start(_FIRST_SECONDS)
        finally:
            self.refreshing = None
        self._pump()

    async def _call(self, slot, batch):
        """One batch to one worker's runner, directly (no scheduler)."""
        import asyncio
        from distributed.protocol import to_serialize
        try:
            reply = await self.client.rpc(slot.address).actor_execute(
                actor=slot.key, function='run',
                args=[to_serialize([task.payload for task in batch]),
                      _BATCH_SECONDS], kwargs={})
            if reply.get('status') != 'OK':
                raise reply.get('exception') or RuntimeError(str(reply))
        except asyncio.CancelledError:
            raise                       # dropped or halted: handled there
        except Exception as exc:
            # the connection broke (the worker died), or the runner is
            # gone (the worker is closing): the batch goes elsewhere
            self._drop(slot, '%s: %s' % (type(exc).__name__, exc))
            return
        if slot.calls.pop(asyncio.current_task(), None) is None:
            return                      # dropped meanwhile: requeued
        blobs = reply['result']
        if len(blobs) < len(batch):     # the runner's time was up
            self._requeue(batch[len(blobs):], None)
            del batch[len(blobs):]
        self.done.put((batch, blobs))
        self._pump()

    async def _watch(self):
        """While the pool has work: look for new workers (and workers the
        scheduler lost) every _REFRESH_SECONDS, more often while there is
        none to run on."""
        import asyncio
        try:
            while not self.halted and self.lost is None:
                ready = any(s.ready for s in self.slots.values())
                await asyncio.sleep(_REFRESH_SECONDS / (2 if ready else 10))
                with self.lock:
                    if not self.pending:
                        break
                await self._refresh()
                self._pump()
        finally:
            self.watcher = None

    # -- collecting -----------------------------------------------------------

    def _collect(self):
        done = self.done
        watched = time.monotonic()
        while True:
            try:
                item = done.get(timeout=_WATCH_SECONDS)
            except queue.Empty:
                item = None
            now = time.monotonic()
            if item is None or now - watched > _WATCH_SECONDS:
                watched = now
                self._watch_client()
            if item is None:
                continue
            if item is _STOP:
                return
            for task, blob in zip(*item):
                if type(blob) is bytes:
                    try:
                        blob = pickle.loads(blob)
                    except Exception as exc:
                        blob = (False, exc)
                self._deliver(task, blob)
            # (not kept alive while waiting for the next: a result and its
            # value go once the caller drops them, as with a local pool)
            item = task = blob = None

    def _deliver(self, task, outcome):
        with self.lock:
            if task not in self.pending:
                return                  # failed or halted meanwhile
            self.pending.discard(task)
        ok, value = outcome
        if not ok and isinstance(value, ExceptionWithTraceback):
            value = rebuild_exc(value.exc, value.tb)   # not pickled (threads)
        try:
            task.result._set(task.index, (ok, value))
        except Exception:
            traceback.print_exc()           # a failing callback

    def _watch_client(self):
        """Fail the pending results when the cluster is lost: the client
        cancels its futures (our runners') when it loses the scheduler, and
        a client closed under us says nothing else."""
        if self.halted or self.lost is not None:
            return
        status = self.client.status
        if status in ('closing', 'closed', 'failed'):
            self.fail_all(self._lost_error('client %s' % status))
            return
        with self.lock:
            futures = [s.future for s in self.slots.values()
                       if s.future is not None]
        if any(f.status == 'cancelled' for f in futures):
            self.fail_all(self._lost_error('scheduler connection lost'))

    def _lost_error(self, why):
        return ClusterLostError(
            'the Dask cluster at %s went away before this task\'s result '
            'came back (%s)' % (self.address, why or 'client closed'))

    def fail_all(self, error):
        with self.lock:
            self.lost = error
            tasks = list(self.pending)
            self.pending.clear()
            self.queue.clear()
        self._on_loop(self._forget, 0)
        for task in tasks:
            try:
                task.result._set(task.index, (False, error))
            except Exception:
                traceback.print_exc()

    def nthreads(self):
        """The cluster's worker threads, as the pool last saw them."""
        with self.lock:
            n = sum(s.nthreads for s in self.slots.values())
        return max(1, n or self.known_nthreads)

    # -- ending -------------------------------------------------------------

    def _forget(self):
        """On the event loop: cancel the calls in flight and release the
        runners (a task already running on a worker runs to its end)."""
        with self.lock:
            slots = list(self.slots.values())
            self.slots.clear()
        for slot in slots:
            if slot.starter is not None:
                slot.starter.cancel()
            for call in slot.calls:
                call.cancel()
            slot.calls.clear()
            slot.future = None
        for task in (self.watcher, self.refreshing):
            if task is not None:
                task.cancel()

    def _on_loop(self, func, wait=_ON_LOOP_SECONDS):
        """Run func on the client's event loop, and wait for it a while
        (not at all from the loop itself or when the loop is gone)."""
        loop = self.client.loop
        done = threading.Event()

        def call():
            try:
                func()
            finally:
                done.set()
        try:
            loop.add_callback(call)
        except Exception:
            return
        if threading.get_ident() != self.loop_thread:
            done.wait(wait)

    def halt(self):
        """terminate(): drop what is pending, stop collecting, and close
        the client and cluster the pool made."""
        if self.halted:
            return
        self.halted = True
        with self.lock:
            self.pending.clear()
            self.queue.clear()
        if self.client.status == 'running':
            self._on_loop(self._forget)
        self.done.put(_STOP)
        if self.collector is not threading.current_thread():
            self.collector.join()
        self.shut_down()

    def wait_idle(self):
        """join() after close(): wait until every result is delivered."""
        while True:
            with self.lock:
                if not self.pending or self.halted:
                    return
            self.collector.join(0.05)
            if not self.collector.is_alive():
                return

    def shut_down(self):
        if self.own_client:
            try:
                self.client.close()
            except Exception:
                pass
        if self.cluster is not None:
            try:
                self.cluster.close()
            except Exception:
                pass


def _allowed_failures(client):
    """The scheduler's distributed.scheduler.allowed-failures: how many
    workers may die running a task before it fails (its own setting, which
    may not be this process's)."""
    try:
        return int(client.run_on_scheduler(_scheduler_allowed_failures))
    except Exception:
        import dask
        return int(dask.config.get('distributed.scheduler.allowed-failures',
                                   3))


def _scheduler_allowed_failures(dask_scheduler):
    return dask_scheduler.allowed_failures


def _connect(client, processes):
    """(client, whether the pool owns it, the cluster it started or None)."""
    try:
        import distributed
    except ImportError:
        raise ImportError("cmultiprocessing.cluster needs dask.distributed: "
                          "pip install 'cmultiprocessing[dask]'") from None
    if isinstance(client, distributed.Client):
        return client, False, None
    if isinstance(client, str):
        return distributed.Client(client, set_as_default=False), True, None
    if client is not None:
        raise TypeError('client must be a distributed.Client, a scheduler '
                        'address or None, not %s' % type(client).__name__)
    cluster = distributed.LocalCluster(
        n_workers=processes, threads_per_worker=1, processes=True,
        host='127.0.0.1', dashboard_address=None)
    try:
        return distributed.Client(cluster, set_as_default=False), True, \
            cluster
    except BaseException:
        cluster.close()
        raise


# ---------------------------------------------------------------------------
# The facade
# ---------------------------------------------------------------------------

class Pool(_PoolFacade):
    """A pool whose workers are those of a Dask cluster: `client` is a
    `distributed.Client`, a scheduler address, or None for a LocalCluster
    of `processes` worker processes (default: the machine's cores) that
    the pool starts and stops.  `context` is accepted, and unused."""

    def __init__(self, processes=None, initializer=None, initargs=(),
                 maxtasksperchild=None, context=None, *, client=None):
        self._engine = None
        self._state = INIT
        _check_pool_args(processes, maxtasksperchild, initializer)
        if maxtasksperchild is not None:
            raise NotImplementedError(
                'maxtasksperchild: the workers of a Dask cluster are not the '
                'pool\'s to restart; Dask restarts its workers itself with '
                '`dask worker --lifetime T --lifetime-restart` (or the '
                'distributed.worker.lifetime settings)')
        token = uuid.uuid4().hex[:12]
        init_blob = None
        if initializer is not None:
            from cloudpickle import dumps
            init_blob = (token, dumps((initializer, tuple(initargs))))
        dask_client, own, cluster = _connect(
            client, processes if processes is not None else
            (os.cpu_count() or 1))
        self._cache = {}
        self._engine = _Engine(dask_client, own, cluster, token, init_blob,
                               self._cache)
        self._processes = processes or self._engine.nthreads()
        self._finalizer = weakref.finalize(self, self._engine.halt)
        self._state = RUN

    @property
    def client(self):
        """The `distributed.Client` the pool submits through."""
        return self._engine.client

    def __repr__(self):
        kind = type(self)
        address = self._engine.address if self._engine else None
        return (f'<{kind.__module__}.{kind.__qualname__} '
                f'state={self._state} scheduler={address}>')

    def wait_for_workers(self, n_workers, timeout=None):
        """Wait until n_workers of the cluster's workers are ready to run
        the pool's tasks (each has the pool's runner started), or raise
        TimeoutError after timeout seconds.  `client.wait_for_workers()`
        says the scheduler knows them; the pool learns of a worker when it
        next asks the scheduler (before its first work, before work that
        comes after an idle second, and every half second while it has
        work), so work that comes sooner after a worker joined may all go
        to the workers the pool knew."""
        self._check_running()
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) \
                or n_workers < 1:
            raise ValueError('n_workers must be a positive integer, not %r'
                             % (n_workers,))
        if timeout is not None and not timeout >= 0:
            raise ValueError('timeout must be None or >= 0, not %r'
                             % (timeout,))
        self._engine.client.sync(self._engine._wait_for_workers, n_workers,
                                 timeout)

    def _check_running(self):
        super()._check_running()
        lost = self._engine.lost
        if lost is not None:
            raise ClusterLostError(str(lost))

    # -- submitting work ---------------------------------------------------

    def apply(self, func, args=(), kwds={}):  # noqa: B006
        """Call func(*args, **kwds) on a worker and return the result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func, args=(), kwds={}, callback=None,  # noqa: B006
                    error_callback=None):
        """Like apply(), returning an AsyncResult."""
        self._check_running()
        result = ApplyResult(self, callback, error_callback)
        payload, error = self._engine.payload(_APPLY, func,
                                              (tuple(args), dict(kwds)))
        if error is not None:
            result._set(0, (False, error))
        else:
            self._engine.submit(result, [(0, payload)])
        return result

    def map(self, func, iterable, chunksize=None):
        """list(map(func, iterable)), the calls run on the cluster."""
        return self._map_async(func, iterable, _MAP, chunksize).get()

    def map_async(self, func, iterable, chunksize=None, callback=None,
                  error_callback=None):
        return self._map_async(func, iterable, _MAP, chunksize, callback,
                               error_callback)

    def starmap(self, func, iterable, chunksize=None):
        """Like map(), each item unpacked as the arguments of func."""
        return self._map_async(func, iterable, _STARMAP, chunksize).get()

    def starmap_async(self, func, iterable, chunksize=None, callback=None,
                      error_callback=None):
        return self._map_async(func, iterable, _STARMAP, chunksize, callback,
                               error_callback)

    def _map_async(self, func, iterable, kind, chunksize=None, callback=None,
                   error_callback=None):
        self._check_running()
        if not hasattr(iterable, '__len__'):
            iterable = list(iterable)
        if chunksize is None:
            chunksize, extra = divmod(
                len(iterable), self._engine.nthreads() * _CHUNKS_PER_THREAD)
            if extra:
                chunksize += 1
        if len(iterable) == 0:
            chunksize = 0
        result = MapResult(self, chunksize, len(iterable), callback,
                           error_callback)
        if chunksize == 0:
            return result
        engine = self._engine
        tasks = []
        for index, piece in enumerate(_pieces(iterable, chunksize)):
            payload, error = engine.payload(kind, func, piece)
            if error is not None:
                result._set(index, (False, error))
            else:
                tasks.append((index, payload))
        engine.submit(result, tasks)
        return result

    def imap(self, func, iterable, chunksize=1):
        """An iterator over func's results in input order, each handed out
        as soon as it and those before it have arrived."""
        return self._imap(IMapIterator, func, iterable, chunksize)

    def imap_unordered(self, func, iterable, chunksize=1):
        """Like imap(), the results in the order they arrive."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize)

    def _imap(self, kind, func, iterable, chunksize):
        self._check_running()
        if chunksize < 1:
            raise ValueError("Chunksize must be 1+, not {0:n}".format(
                chunksize))
        result = kind(self, chunked=True)
        feeder = threading.Thread(
            target=_feed, args=(self._engine, result, func, iterable,
                                chunksize),
            name='cmultiprocessing-cluster-imap', daemon=True)
        feeder.start()
        return result

    # -- ending ---------------------------------------------------------------

    def close(self):
        """No more work: the workers finish what was submitted."""
        if self._state == RUN:
            self._state = CLOSE

    def terminate(self):
        """Stop at once: pending work is cancelled (see the module's
        notes); a cluster the pool started is stopped."""
        self._state = TERMINATE
        if self._engine is not None:
            self._finalizer()

    def join(self):
        """Wait for the submitted work (after close()) and end the pool."""
        if self._state not in (CLOSE, TERMINATE):
            raise ValueError("Pool is still running")
        if self._state == CLOSE:
            self._engine.wait_idle()
        self._finalizer()


def _pieces(items, size):
    """The chunks of items: slices of a list, tuple or range (a range
    slice pickles to a few bytes), tuples read from anything else."""
    if type(items) in (list, tuple, range):
        for start in range(0, len(items), size):
            yield items[start:start + size]
        return
    source = iter(items)
    while True:
        piece = tuple(itertools.islice(source, size))
        if not piece:
            return
        yield piece


class _Unpacking(object):
    """Stands between the engine and an IMapIterator: a chunk of packed
    results (bytes) becomes the list the iterator hands out item by
    item."""
    __slots__ = ('result', 'sizes')

    def __init__(self, result):
        self.result = result
        self.sizes = {}

    @property
    def _job(self):
        return self.result._job

    def _set(self, index, outcome):
        ok, value = outcome
        if ok and type(value) is bytes:
            from _cmultiprocessing import unpack_into
            out = [None] * self.sizes[index]
            try:
                unpack_into(value, out, 0)
                value = out
            except Exception as exc:
                ok, value = False, exc
        self.sizes.pop(index, None)
        self.result._set(index, (ok, value))


def _read(engine, func, iterable, chunksize, out):
    """imap()'s reader thread: the input, read chunk by chunk, pickled, put
    on out as (index, size, payload or error); an error of the input itself
    becomes the last item, (index, None, the error)."""
    index = 0
    try:
        source = iter(iterable)
        while True:
            piece = tuple(itertools.islice(source, chunksize))
            if not piece:
                break
            payload, error = engine.payload(_MAP, func, piece)
            out.put((index, len(piece), payload if error is None else error))
            index += 1
    except Exception as exc:
        out.put((index, None, exc))
        index += 1
    out.put(_STOP)


def _feed(engine, result, func, iterable, chunksize):
    """imap()'s feeder thread: submits the chunks the reader has read, all
    those waiting at once (one graph update), so a slow input streams and a
    fast one travels in groups; then tells the iterator how many chunks
    there were."""
    target = _Unpacking(result)
    read = queue.SimpleQueue()
    reader = threading.Thread(
        target=_read, args=(engine, func, iterable, chunksize, read),
        name='cmultiprocessing-cluster-imap-reader', daemon=True)
    reader.start()
    count = 0
    ended = False
    while not ended:
        items = [read.get()]
        while len(items) < _IMAP_GROUP:
            try:
                items.append(read.get_nowait())
            except queue.Empty:
                break
        tasks = []
        for item in items:
            if item is _STOP:
                ended = True
                break
            index, size, what = item
            count = index + 1
            if size is not None and type(what) is bytes:
                target.sizes[index] = size
                tasks.append((index, what))
                continue
            try:
                engine.submit(target, tasks)
            except Exception as exc:
                for i, _ in tasks:
                    target._set(i, (False, exc))
            tasks = []
            target._set(index, (False, what))
        try:
            engine.submit(target, tasks)
        except Exception as exc:
            for i, _ in tasks:
                target._set(i, (False, exc))
    result._set_length(count)
