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

How the Pool's work becomes Dask tasks:

* A map() is cut into chunks, one per worker thread of the cluster by
  default (the stdlib cuts 4 per process; a Dask task costs more, see
  _CHUNKS_PER_THREAD), and each chunk is ONE Dask task, submitted together
  in one graph: 100,000 tiny items on two workers make 2 scheduler tasks,
  not 100,000.  A chunk runs in the C loop of the local pool
  (`_cmultiprocessing.map_chunk`), and its results travel back pickled as
  one bytes object (all-int or all-float chunks packed, as locally).
* The task's function and arguments are pickled here (cloudpickle: a
  function of `__main__` travels by value) before submission, so a task
  that cannot be pickled fails alone, with the pickling error, and the
  result is pickled by the worker, so a result that cannot be pickled
  fails as `MaybeEncodingError`, as in a local pool.  An exception raised
  by a task comes back with the worker's traceback text as its
  `__cause__` (`RemoteTraceback`).
* Results are collected by one thread of the pool: Dask's done callbacks
  queue the finished futures, and the thread fetches each batch of them
  with one `gather`.  imap() reads its input in a thread of its own,
  submitting chunks as it reads them; its iterator hands results out in
  input order as they arrive (`IMapIterator`), imap_unordered() as they
  come.
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

* A worker process that dies while running a task: the scheduler runs the
  task again on another worker; after `distributed.scheduler.allowed-
  failures` deaths (3 by default) the task fails with `WorkerLostError`
  (a `ClusterWorkerLostError`, which says so).  Never a hang.
* The scheduler going away (or the client closing): every pending result
  fails with `ClusterLostError`, and the pool refuses new work.
* `terminate()` cancels the pool's pending tasks and, for a cluster the
  pool started, stops its workers.  On a cluster it did not start, a task
  already running keeps running to its end (Dask cannot stop a running
  task); its result is dropped.
"""

__all__ = ['Pool', 'ClusterLostError', 'ClusterWorkerLostError']

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

# How often the collector looks at the client when no result arrives.
_WATCH_SECONDS = 0.5
# imap() submits the chunks it has read when it has this many, or when its
# input makes it wait: fewer round trips to the scheduler for long inputs.
_IMAP_GROUP = 64
# A map() without a chunksize is cut into this many chunks per worker
# thread of the cluster (the stdlib cuts 4 per process): a Dask task costs
# 2-5 ms of scheduling and a worker thread gets its next task only after a
# round trip to the scheduler.  Map of 100k tiny items on 2 workers, here:
# 4 chunks a thread 40 ms, 2 a thread 34 ms, 1 a thread 24-27 ms (a local
# Pool(2): 9.5 ms).  Uneven tasks want smaller chunks: pass chunksize.
_CHUNKS_PER_THREAD = 1
# How long the number of the cluster's worker threads is taken as known.
_NTHREADS_SECONDS = 2.0


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
    """A Dask task: one apply() call or one map() chunk.  Returns the
    pickled (ok, value), value being the result, the chunk's results
    (a list, or packed bytes) or the exception."""
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
    except Exception as exc:
        outcome = (False, ExceptionWithTraceback(exc, exc.__traceback__))
    func = args = payload = None
    try:
        blob = pickle.dumps(outcome, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        blob = pickle.dumps((False, MaybeEncodingError(exc, outcome[1])),
                            pickle.HIGHEST_PROTOCOL)
    return blob


# ---------------------------------------------------------------------------
# The engine: submission and collection (runs in the user's process)
# ---------------------------------------------------------------------------

_STOP = object()


class _Engine(object):
    """Owns the Dask client (and the cluster the pool started), the futures
    in flight and the collector thread; the Pool facade delegates to it, so
    that nothing here keeps the facade alive."""

    def __init__(self, client, own_client, cluster, token, init_blob,
                 cache):
        (self.client, self.own_client, self.cluster, self.token,
         self.init_blob, self.cache) = (client, own_client, cluster, token,
                                        init_blob, cache)
        self.address = getattr(client.scheduler, 'address', None) \
            or str(client)
        self.lock = threading.Lock()
        self.pending = {}           # future key -> (future, result, index)
        self.done = queue.SimpleQueue()
        self.halted = False
        self.lost = None            # the ClusterLostError, once lost
        self.counter = itertools.count()
        self.known_nthreads, self.nthreads_at = 1, -_NTHREADS_SECONDS
        self.collector = threading.Thread(
            target=self._collect, name='cmultiprocessing-cluster-collector',
            daemon=True)
        self.collector.start()

    # -- submitting --------------------------------------------------------

    def nthreads(self):
        """The cluster's worker threads, asked of the scheduler at most
        every _NTHREADS_SECONDS (a round trip: 2 ms a map() here)."""
        now = time.monotonic()
        if now - self.nthreads_at > _NTHREADS_SECONDS:
            try:
                self.known_nthreads = max(
                    1, sum(self.client.nthreads().values()))
            except Exception:
                pass
            self.nthreads_at = now
        return self.known_nthreads

    def _key(self, kind, job):
        return 'cmp-%s-%s-%d-%d' % (kind, self.token, job,
                                    next(self.counter))

    def payload(self, kind, func, args):
        """(bytes, None) or (None, the pickling error)."""
        from cloudpickle import dumps
        try:
            return dumps((kind, func, args), pickle.HIGHEST_PROTOCOL), None
        except Exception as exc:
            return None, exc

    def submit(self, result, tasks):
        """Submit [(index, payload)] as tasks whose outcomes go to
        result._set(index, ...); one graph update for all of them."""
        if not tasks:
            return
        job = result._job
        keys = [self._key('map' if len(tasks) > 1 else 'task', job)
                for _ in tasks]
        futures = self.client.map(_run, [p for _, p in tasks],
                                  init_blob=self.init_blob, key=keys,
                                  pure=False)
        with self.lock:
            for (index, _), future in zip(tasks, futures):
                self.pending[future.key] = (future, result, index)
            lost = self.lost
        if lost is not None:
            self.fail_all(lost)
            return
        self.client.loop.add_callback(self._follow, futures)

    async def _follow(self, futures):
        """On the client's event loop: wait for the futures, fetch those
        that finish together with one gather, and hand them to the
        collector thread (which unpickles and runs the callbacks, so that a
        slow callback never stalls Dask's loop).  Waiting here rather than
        in done callbacks saves two thread switches a batch (no faster
        here, where Dask's own round trips dominate, 35-40 ms both ways
        for 8 chunks; but one thread less)."""
        import asyncio
        waits = {asyncio.ensure_future(f._state.wait()): f for f in futures}
        while waits:
            done, _ = await asyncio.wait(
                list(waits), return_when=asyncio.FIRST_COMPLETED)
            batch = [waits.pop(d) for d in done]
            finished = [f for f in batch if f.status == 'finished']
            blobs = None
            if finished:
                try:
                    blobs = await self.client.gather(finished,
                                                     asynchronous=True)
                except Exception:
                    blobs = None        # one was lost meanwhile
            self.done.put((batch, finished, blobs))

    # -- collecting ---------------------------------------------------------

    def _collect(self):
        done = self.done
        while True:
            try:
                first = done.get(timeout=_WATCH_SECONDS)
            except queue.Empty:
                self._watch()
                continue
            if first is _STOP:
                return
            try:
                self._absorb(*first)
            except Exception:
                traceback.print_exc()

    def _absorb(self, futures, finished, blobs):
        others = [f for f in futures if f not in finished]
        if finished:
            if blobs is None:
                for future in finished:
                    try:
                        blob = future.result(timeout=5)
                    except Exception as exc:
                        self._deliver(future, self._failure(future, exc))
                    else:
                        self._deliver(future, pickle.loads(blob))
            else:
                for future, blob in zip(finished, blobs):
                    self._deliver(future, pickle.loads(blob))
        for future in others:
            try:
                exc = future.exception(timeout=10)
            except Exception as error:
                exc = error
            self._deliver(future, self._failure(future, exc))

    def _failure(self, future, exc):
        """(False, the error a user sees) for a future Dask failed."""
        name = type(exc).__name__
        if name == 'KilledWorker':
            return False, ClusterWorkerLostError(
                'Dask workers kept dying while running this task (%s): '
                'the scheduler gave up on it' % exc)
        if future.status == 'cancelled' or name in (
                'CancelledError', 'FutureCancelledError'):
            if self.halted:
                return None
            error = self._lost_error(str(exc))
            self.fail_all(error)
            return False, error
        return False, exc

    def _lost_error(self, why):
        return ClusterLostError(
            'the Dask cluster at %s went away before this task\'s result '
            'came back (%s)' % (self.address, why or 'client closed'))

    def _deliver(self, future, outcome):
        with self.lock:
            entry = self.pending.pop(future.key, None)
        if entry is None or outcome is None:
            return
        _, result, index = entry
        ok, value = outcome
        if not ok and isinstance(value, ExceptionWithTraceback):
            value = rebuild_exc(value.exc, value.tb)   # not pickled (threads)
        try:
            result._set(index, (ok, value))
        except Exception:
            traceback.print_exc()           # a failing callback

    def _watch(self):
        """Fail the pending results when the client can no longer get
        them (its futures are cancelled when the scheduler is lost, but a
        client closed under us says nothing)."""
        if self.halted or self.lost is not None:
            return
        status = self.client.status
        if status in ('closing', 'closed', 'failed'):
            self.fail_all(self._lost_error('client %s' % status))

    def fail_all(self, error):
        with self.lock:
            self.lost = error
            entries = list(self.pending.values())
            self.pending.clear()
        for _, result, index in entries:
            try:
                result._set(index, (False, error))
            except Exception:
                traceback.print_exc()

    # -- ending -------------------------------------------------------------

    def halt(self):
        """terminate(): cancel what is pending, stop collecting, and close
        the client and cluster the pool made."""
        if self.halted:
            return
        self.halted = True
        with self.lock:
            futures = [entry[0] for entry in self.pending.values()]
            self.pending.clear()
        if futures and self.client.status == 'running':
            try:
                self.client.cancel(futures, force=True)
            except Exception:
                pass
        del futures
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
