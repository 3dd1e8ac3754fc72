"""Process pools (`Pool`) and thread pools (`ThreadPool`).

The public surface is the stdlib's `multiprocessing.pool`.  The machinery
is organised differently:

* The `Pool` object is a thin facade over an engine (`_ProcessEngine` or
  `_ThreadEngine`) that owns the workers and two service threads.  Only the
  facade is seen by users; when it is garbage collected, a `util.Finalize`
  on it stops the engine.  The engine has the stdlib pool's three parts:
  a worker handler (`_WorkerHandler`), a task handler (`_TaskHandler`, the
  dispatcher thread) and a result handler (`_ResultHandler`, the collector
  thread).

* Every worker has a private task channel and (for processes) a private
  result pipe, so the engine always knows which tasks a worker holds: the
  batch it runs and, when tasks are short, one more batch queued behind
  it.  A worker runs its batches in order and reports every result of a
  batch before it reads the next.  Before each task, a worker notes its
  position (batch number, index) in a shared array.  When a worker dies,
  the task it was running, and any it finished without reporting, fail
  with `WorkerLostError` (which names the worker, its pid and exit code)
  instead of hanging forever; the tasks it had not begun go to the other
  workers; and a replacement is started (after a growing pause when
  workers keep failing at start-up, whose tasks then fail, not loop).

* Batches grow when tasks are short: the dispatcher keeps a running
  estimate of the time one task takes (measured from dispatch to result),
  and packs as many queued tasks into one message as fit in a few
  milliseconds of work, so tiny tasks cost one pickle and one pipe write per
  batch rather than per task.  Long tasks always travel one by one.

* A map() is shared out at once: every worker gets its share of the
  chunks, an idle one both of its batches in one message.  A chunk runs in
  a C loop (`_cmultiprocessing.map_chunk`); when its results are all ints
  that fit 64 bits, or all floats, they travel back as one bytes object and
  are unpacked straight into the result list (no pickle opcode per item).

* The *collector* thread receives results, completes the result objects,
  watches worker exits (process sentinels) and starts replacement workers.
"""

__all__ = ['Pool', 'ThreadPool']

import collections
import functools
import itertools
import os
import queue
import sys
import threading
import time
import traceback
import warnings

from _cmultiprocessing import ApplyResult
from _cmultiprocessing import deliver as _deliver
from _cmultiprocessing import job_counter as _job_counter
from _cmultiprocessing import map_chunk as _map_chunk
from _cmultiprocessing import take_tasks as _take_tasks
from _cmultiprocessing import unpack_into as _unpack_into

from . import util
from .context import ProcessError, TimeoutError

# Pool states (the stdlib's values: the suite sets `pool._state = RUN`).
INIT, RUN, CLOSE, TERMINATE = "INIT", "RUN", "CLOSE", "TERMINATE"

# A batch is sized to hold about this many seconds of work.
_BATCH_SECONDS = 0.002
# ... or, for the chunks of a map(), this many (a batch is at most a
# worker's share of the map)
_MAP_BATCH_SECONDS = 0.02
_BATCH_CAP = 4096
# A worker running a long batch sends what it has after this long.
_FLUSH_SECONDS = 0.005
# In a pool with more workers than CPUs, tasks at least this long travel
# one batch at a time, a worker holding no second batch: the parent's
# round trip (0.1-0.2 ms) is small beside them, another worker uses the
# CPU meanwhile, and work handed out early cannot move to the worker that
# gets a CPU first (measured: Pool(4) and Pool(8) on 2 CPUs, 400 tasks of
# 2 ms; see the commit that added it).
_CROWDED_LONG = 0.001
# Estimates are kept per function, for this many functions at most.
_ESTIMATES_MAX = 256

_EXITED = object()          # a thread worker's last word (thread pools)


def _cpu_count():
    counter = getattr(os, 'process_cpu_count', None) or os.cpu_count
    return counter() or 1


def mapstar(args):
    """Run one chunk of a map(): *args* is (func, items)."""
    func, items = args
    return list(map(func, items))


def starmapstar(args):
    """Run one chunk of a starmap(): *args* is (func, argument tuples)."""
    func, items = args
    return list(itertools.starmap(func, items))


def _packed_map(args):
    """Run one chunk of a map() in a worker process: the results come
    back as packed bytes when they are all ints or all floats (see
    `MapResult._set`), else as a list."""
    func, items = args
    return _map_chunk(func, items)


def _packed_starmap(args):
    """The same for a starmap() chunk."""
    func, items = args
    return _map_chunk(func, items, True)


# the functions that run a whole chunk of a map(): (func, items) is their
# argument
_CHUNK_RUNNERS = (_packed_map, _packed_starmap, mapstar, starmapstar)


def _task_key(task):
    """What the time of *task* is estimated by: its function (for a
    map() chunk, the function mapped), by identity."""
    func = task[2]
    if func in _CHUNK_RUNNERS:
        try:
            return id(task[3][0][0])
        except (IndexError, TypeError):
            pass
    return id(func)


# ---------------------------------------------------------------------------
# Exceptions and their transport
# ---------------------------------------------------------------------------

class RemoteTraceback(Exception):
    """Carries the formatted traceback of an exception raised in a worker;
    it becomes the `__cause__` of the exception re-raised in the parent."""

    def __init__(self, tb):
        self.tb = tb

    def __str__(self):
        return self.tb


def rebuild_exc(exc, tb):
    """Unpickling side of `ExceptionWithTraceback`."""
    exc.__cause__ = RemoteTraceback(tb)
    return exc


class ExceptionWithTraceback:
    """Wraps an exception so that its traceback text crosses the pipe."""

    def __init__(self, exc, tb):
        text = ''.join(traceback.format_exception(type(exc), exc, tb))
        self.exc = exc
        self.tb = '\n"""\n' + text + '"""'

    def __reduce__(self):
        return rebuild_exc, (self.exc, self.tb)


class MaybeEncodingError(Exception):
    """A task's result (or exception) could not be pickled back."""

    def __init__(self, exc, value):
        self.exc = repr(exc)
        self.value = repr(value)
        super().__init__(self.exc, self.value)

    def __str__(self):
        return f"Error sending result: '{self.value}'. Reason: '{self.exc}'"

    def __repr__(self):
        return f"<{type(self).__name__}: {self}>"


class WorkerLostError(ProcessError):
    """The worker given a task exited before it reported the result.

    `running` is True for the task the worker was running when it died;
    False for a task it had finished but not yet reported (short tasks
    travel in batches whose results are sent together), or when which task
    it was running is unknown.  Tasks it had not begun go to other workers.
    """

    def __init__(self, name, pid, exitcode, running=True):
        self.name, self.pid, self.exitcode = name, pid, exitcode
        self.running = running
        super().__init__(name, pid, exitcode, running)

    def __str__(self):
        if self.exitcode is not None and self.exitcode < 0:
            how = f'was killed by signal {-self.exitcode}'
        else:
            how = f'exited with code {self.exitcode}'
        what = ('while running this task' if self.running
                else 'before reporting the result of this task')
        return f'pool worker {self.name} (pid {self.pid}) {how} {what}'


def _helper_reraises_exception(ex):
    """Task that re-raises an error met while iterating the user's input."""
    raise ex


# ---------------------------------------------------------------------------
# The worker side
# ---------------------------------------------------------------------------

def _ship(send, results):
    """Send a list of (job, index, ok, value); values that cannot be
    pickled are replaced, one by one, by a MaybeEncodingError."""
    try:
        send(results)
        return
    except Exception:
        pass
    for job, index, ok, value in results:
        try:
            send([(job, index, ok, value)])
        except Exception as exc:
            wrapped = MaybeEncodingError(exc, value)
            util.debug('cannot send result of task %s/%s: %s',
                       job, index, wrapped)
            send([(job, index, False, wrapped)])


def _report_init_failure(send, exc, wrap):
    note = ExceptionWithTraceback(exc, exc.__traceback__) if wrap else exc
    for message in (note, RemoteTraceback(repr(exc))):
        try:
            send(('init-failed', message))
            return
        except Exception:
            continue


def _orphan_watch(tasks):
    """A function that returns True once *tasks* has something to read,
    or False if the process that started this worker has died meanwhile
    (a worker process must not outlive a killed pool; siblings holding
    copies of its pipe would keep it waiting forever)."""
    poll = getattr(tasks, 'poll', None)
    if poll is None:
        return lambda: True             # a thread: it cannot be orphaned
    from . import process as _process
    parent = _process.parent_process()
    first_ppid = os.getppid()

    def parent_alive():
        if os.getppid() != first_ppid:
            return False
        try:
            return parent is None or parent.is_alive()
        except Exception:
            return True

    def ready():
        if poll(0):
            return True
        while not poll(1.0):
            if not parent_alive():
                util.debug('pool worker: parent process gone -- exiting')
                return False
        return True
    return ready


def worker(tasks, results, initializer=None, initargs=(), maxtasks=None,
           wrap_exception=False, progress=None):
    """Body of a pool worker: run batches from *tasks* until told to stop
    (None), the channel closes, or *maxtasks* tasks have run.

    *progress*, if given, is (shared int64 array, slot): before each task
    the worker stores there (batch number << 32 | position in batch), so
    that if it dies the pool knows which task it was running."""
    if maxtasks is not None and not (isinstance(maxtasks, int)
                                     and maxtasks >= 1):
        raise AssertionError(f"Maxtasks {maxtasks!r} is not valid")
    recv, send = tasks.recv, results.send
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:
            _report_init_failure(send, exc, wrap_exception)
            raise
    marks, mark = progress if progress is not None else (None, 0)
    idle_until_orphaned = _orphan_watch(tasks)
    clock = time.monotonic
    completed = batch_number = 0
    while maxtasks is None or completed < maxtasks:
        try:
            message = recv() if idle_until_orphaned() else None
        except (EOFError, OSError):
            message = None      # the pool is gone
        if message is None:
            util.debug('pool worker: no more tasks -- exiting')
            break
        # a message is one batch, or a tuple of batches run in turn
        for batch in (message if type(message) is tuple else (message,)):
            out = []
            flushed = clock()
            batch_number += 1
            stamp = batch_number << 32
            # in a long batch of short tasks, look at the clock after every
            # 8th task only (a clock read is ~10% of such a task's cost)
            every = 7 if len(batch) >= 64 else 0
            for position, (job, index, func, args, kwds) in enumerate(batch):
                if marks is not None:
                    marks[mark] = stamp | position
                try:
                    out.append((job, index, True, func(*args, **kwds)))
                except Exception as exc:
                    if wrap_exception and \
                            func is not _helper_reraises_exception:
                        exc = ExceptionWithTraceback(exc, exc.__traceback__)
                    out.append((job, index, False, exc))
                func = args = kwds = None
                completed += 1
                if not position & every and clock() - flushed > _FLUSH_SECONDS:
                    _ship(send, out)
                    out = []
                    flushed = clock()
            if out:
                _ship(send, out)
        message = batch = out = None
    util.debug('pool worker exiting after %d tasks', completed)


# ---------------------------------------------------------------------------
# Result objects
# ---------------------------------------------------------------------------

# Jobs are numbered across all pools of the process (ApplyResult, in C,
# draws from the same counter).
job_counter = _job_counter

# ApplyResult is the C type of pool_result.c: ready(), successful(),
# wait(), get(), and the protocol the engine drives it by, _set(i, (ok,
# value)) -> _finish() (the callback, then the waiters woken, the cache
# left).  A waiter's lock is only made when someone waits for a result not
# yet in; the collector completes a whole batch of results in one call
# (`_deliver`).
AsyncResult = ApplyResult


class MapResult(ApplyResult):
    """The pending result of a map(): a list filled chunk by chunk.  It is
    ready when every chunk has reported; the first failure wins."""

    def __init__(self, pool, chunksize, length, callback, error_callback):
        super().__init__(pool, callback, error_callback)
        self._success = True
        self._value = [None] * length
        self._chunksize = chunksize
        if chunksize > 0:
            self._number_left = -(-length // chunksize)
        else:
            self._number_left = 0
            self._open()
            self._cache.pop(self._job, None)

    def _set(self, i, success_result):
        ok, value = success_result
        if ok and self._success:
            start = i * self._chunksize
            if type(value) is bytes:
                # a packed chunk (_packed_map)
                try:
                    _unpack_into(value, self._value, start)
                except Exception as exc:
                    ok, value = False, exc      # fail the map, not hang
            else:
                self._value[start:start + self._chunksize] = value
        if not ok and self._success:
            self._success, self._value = False, value
        self._number_left -= 1
        if self._number_left == 0:
            self._finish()


class IMapIterator(object):
    """Iterator over the results of imap(), in input order."""

    def __init__(self, pool, chunked=False):
        self._pool = pool
        self._cond = threading.Condition(threading.Lock())
        self._cache = pool._cache
        self._job = next(job_counter)
        self._items = collections.deque()   # (ok, value), ready to hand out
        self._early = {}                    # index -> outcome, out of order
        self._index = 0                     # outcomes received in order
        self._length = None                 # number of tasks, once known
        self._chunked = chunked
        self._cache[self._job] = self

    def __iter__(self):
        return self

    def _exhausted(self):
        return self._index == self._length

    def next(self, timeout=None):
        with self._cond:
            if not self._items and not self._exhausted():
                self._cond.wait(timeout)
            if not self._items:
                if self._exhausted():
                    self._pool = None
                    raise StopIteration from None
                raise TimeoutError from None
            ok, value = self._items.popleft()
        if ok:
            return value
        raise value

    __next__ = next

    def _queue(self, outcome):
        # called with the lock held
        ok, value = outcome
        if ok and self._chunked:
            self._items.extend((True, item) for item in value)
        else:
            self._items.append(outcome)
        self._index += 1

    def _settle(self):
        # called with the lock held, after outcomes were queued
        self._cond.notify()
        if self._exhausted():
            self._cache.pop(self._job, None)
            self._pool = None

    def _set(self, i, obj):
        with self._cond:
            if i != self._index:
                self._early[i] = obj
                return
            self._queue(obj)
            early = self._early
            while self._index in early:
                self._queue(early.pop(self._index))
            self._settle()

    def _set_length(self, length):
        with self._cond:
            self._length = length
            if self._exhausted():
                self._settle()


class IMapUnorderedIterator(IMapIterator):
    """Iterator over the results of imap_unordered(), as they come."""

    def _set(self, i, obj):
        with self._cond:
            self._queue(obj)
            self._settle()


# ---------------------------------------------------------------------------
# Task sources: what the dispatcher pulls tasks from
# ---------------------------------------------------------------------------

def _guarded(job, func, inputs, on_end=None):
    """Yield the tasks (job, i, func, (x,), {}) for the items of *inputs*.
    An error raised by the iteration itself becomes a last task that
    re-raises it in the worker, so the caller sees it in order."""
    count = 0
    try:
        for item in inputs:
            yield (job, count, func, (item,), {})
            count += 1
    except Exception as exc:
        yield (job, count, _helper_reraises_exception, (exc,), {})
        count += 1
    if on_end is not None:
        on_end(count)


def _chunks(func, items, size):
    """(func, piece) pairs, each piece holding *size* items of *items*.
    Lists, tuples and ranges are sliced (a range slice pickles to a few
    bytes); anything else is read into tuples."""
    if type(items) in (list, tuple, range):
        for start in range(0, len(items), size):
            yield (func, items[start:start + size])
        return
    source = iter(items)
    take = itertools.islice
    while True:
        piece = tuple(take(source, size))
        if not piece:
            return
        yield (func, piece)


class _Counted(object):
    """Iterator over the tasks of a map(), knowing how many are left, so
    that the dispatcher can share them out evenly among the workers."""
    __slots__ = ('_tasks', 'left', 'share')

    def __init__(self, tasks, count):
        self._tasks = tasks
        self.left = count
        self.share = None       # tasks a batch, fixed by the first batch

    def __iter__(self):
        return self

    def __next__(self):
        task = next(self._tasks)
        self.left -= 1
        return task


_CLOSE = object()   # pending-queue marker: no more submissions
_STOP = object()    # pending-queue marker: terminate now
_NUDGE = object()   # pending-queue marker: look at the retry queue

# A submitter lets the dispatcher run after this many queued tasks (+1).
_YIELD_EVERY = 255
_yield_gil = time.sleep

# A worker may hold a second batch behind the one it runs when tasks are
# shorter than this (so it never waits for the parent between batches).
_PREFETCH_BELOW = 0.05


class _Batch(object):
    """One message of tasks sent to a worker, until all its results are in.
    A worker reports the results of a batch in order, so the first
    `len(tasks) - left` tasks are the reported ones."""
    __slots__ = ('tasks', 'left', 'since', 'number', 'key')

    def __init__(self, tasks, since, number, key):
        self.tasks = tasks
        self.left = len(tasks)
        self.since = since
        self.number = number        # the worker counts batches from 1
        self.key = key              # _task_key() of its first task


class _Slot(object):
    """What the engine knows about one worker."""
    __slots__ = ('proc', 'tasks', 'results', 'batches', 'sent', 'done',
                 'dead', 'init_error', 'key', 'mark', 'numbered')

    def __init__(self, proc, tasks, results, key):
        self.proc = proc
        self.tasks = tasks          # channel the engine sends batches on
        self.results = results      # channel results come back on
        self.batches = collections.deque()  # sent, not finished; in order
        self.sent = 0               # tasks sent so far (maxtasksperchild)
        self.done = 0               # results received
        self.numbered = 0           # batches sent so far
        self.mark = None            # its cell in the engine's progress marks
        self.dead = False
        self.init_error = None
        self.key = key


# ---------------------------------------------------------------------------
# The engine and its three parts
#
# As in the stdlib's pool, three parts do the work: one handles the
# workers (`_WorkerHandler`: start, replace, stop), one feeds them tasks
# (`_TaskHandler`, the *dispatcher* thread) and one collects the results
# (`_ResultHandler`, the *collector* thread, which also sees workers exit).
# The engine holds what they share, under one lock, and the life cycle.
# Where workers are processes and where they are threads, the worker and
# result parts differ (how a worker is reached); the task part does not.
# ---------------------------------------------------------------------------

class _Engine(object):
    """The pool's machinery: the state its three parts share and the pool's
    life cycle (start, close, halt, join).  It holds no reference to the
    Pool facade, so the facade can be collected."""

    _workers_class = None           # a _WorkerHandler subclass
    _results_class = None           # a _ResultHandler subclass

    def __init__(self, ctx, make_process, processes, worker_args, cache,
                 procs):
        self.cache = cache              # the facade's job -> result object
        self.procs = procs              # the facade's `_pool` list
        self.slots = {}                 # key -> _Slot
        self.slots_version = 0          # bumped when `slots` changes
        self.lock = threading.RLock()
        self.cv = threading.Condition(self.lock)   # the dispatcher waits
        self.halted = False
        self.dispatch_done = False
        self.estimates = {}             # _task_key -> seconds a task
        # more workers than CPUs: long tasks go one batch at a time
        self.crowded = processes > _cpu_count()
        self.results = self._results_class(self)
        self.workers = self._workers_class(self, ctx, make_process,
                                           processes, worker_args)
        self.tasks = _TaskHandler(self, worker_args[2])
        self.dispatcher = self.collector = None

    def start(self):
        try:
            self.workers.repopulate()
        except BaseException:
            self.workers.abandon()
            self.results.retire_wake()
            raise
        self.dispatcher = threading.Thread(target=self.tasks.dispatch_loop,
                                           name='PoolDispatcher', daemon=True)
        self.collector = threading.Thread(target=self.results.collect_loop,
                                          name='PoolCollector', daemon=True)
        self.dispatcher.start()
        self.collector.start()

    def repopulate(self):
        self.workers.repopulate()

    def submit(self, tasks):
        self.tasks.submit(tasks)

    def close(self):
        self.tasks.close()

    def halt(self):
        """Terminate: stop dispatching, stop the workers, join everything.
        Results still outstanding are left unfinished (as in the stdlib)."""
        util.debug('terminating pool engine')
        with self.lock:
            self.halted = True
            self.cv.notify_all()
        self.tasks.stop()
        self.results.wake()
        self.workers.stop()
        me = threading.current_thread()
        for thread in (self.dispatcher, self.collector):
            if thread is not None and thread is not me and thread.ident:
                thread.join()
        self.workers.join_after_halt()
        self.results.retire_wake()

    def join(self):
        me = threading.current_thread()
        for thread in (self.dispatcher, self.collector):
            if thread is not None and thread is not me:
                thread.join()
        for proc in list(self.procs):
            proc.join()


class _WorkerHandler(object):
    """Starts the workers, replaces those that exit (after a growing pause
    when they keep failing at start-up) and stops them; the subclasses say
    how a worker is started and reached."""

    def __init__(self, engine, ctx, make_process, processes, worker_args):
        self.engine = engine
        self.lock, self.cv = engine.lock, engine.cv
        self.slots, self.procs = engine.slots, engine.procs
        self.ctx, self.make_process = ctx, make_process
        self.processes = processes
        # (initializer, initargs, maxtasksperchild, wrap_exception)
        self.worker_args = worker_args
        self.keys = itertools.count()
        self.init_failures = 0          # reset by each finished batch
        self.respawn_at = None

    def repopulate(self):
        """Start workers until there are `processes` of them."""
        with self.lock:
            if self.engine.halted:
                return
            missing = self.processes - len(self.procs)
            for _ in range(missing):
                self._launch()
            if missing > 0:
                self.cv.notify()
                self.engine.results.wake()

    def _launch(self):
        # called with the lock held
        key = next(self.keys)
        here, there = self._open_channels(key)
        mark, tail = self._progress_cell()
        try:
            target, lead = self._worker_entry(key)
            proc = self.make_process(
                self.ctx, target=target,
                args=lead + tuple(there) + self.worker_args + tail)
            proc.name = proc.name.replace('Process', 'PoolWorker')
            proc.daemon = True
            slot = _Slot(proc, here[0], here[1], key)
            slot.mark = mark
            self._start_worker(slot, there)
        except BaseException:
            self._discard_channels(key, here, there)
            self._free_progress_cell(mark)
            raise
        self.procs.append(proc)
        self.slots[key] = slot
        self.engine.slots_version += 1
        util.debug('added worker')

    def abandon(self):
        """Stop and join the workers started so far (start-up failed)."""
        for proc in self.procs:
            if proc.exitcode is None:
                self._stop_process(proc)
        for proc in self.procs:
            proc.join()
        for slot in self.slots.values():
            self._close_slot(slot)

    def bury(self, slot):
        """A worker has exited: fail what it was running, give its other
        batches to the other workers, start a replacement."""
        engine = self.engine
        proc = slot.proc
        engine.results.drain_final(slot)
        proc.join(1.0)
        exitcode = proc.exitcode
        lost = []
        # a worker that failed to start would fail again with the same
        # tasks: they fail instead of moving on
        failed_start = slot.init_error is not None or (
            exitcode is not None and exitcode > 0 and not slot.done)
        with self.lock:
            slot.dead = True
            batches = list(slot.batches)
            slot.batches.clear()
            if batches:
                lost, unstarted = self._split_at_death(slot, batches[0],
                                                       failed_start)
                unstarted += [task for record in batches[1:]
                              for task in record.tasks]
                if unstarted:
                    engine.tasks.requeue(unstarted)
                unstarted = None
            batches = None
            self._free_progress_cell(slot.mark)
            self.slots.pop(slot.key, None)
            engine.slots_version += 1
            try:
                self.procs.remove(proc)
            except ValueError:
                pass
            if failed_start:
                # start the next one after a pause
                self.init_failures += 1
            self.cv.notify()
        self._close_slot(slot)
        util.debug('pool worker %s exited with %r (%d tasks lost)',
                   proc.name, exitcode, len(lost))
        for job, index, running in lost:
            error = WorkerLostError(proc.name, proc.pid, exitcode, running)
            if slot.init_error is not None:
                error.__cause__ = slot.init_error
            engine.results.deliver(job, index, (False, error))
            error = None
        self._schedule_respawn()

    def _split_at_death(self, slot, record, failed_start):
        """Sort the unreported tasks of the batch a dead worker held into
        lost ones, [(job, index, was_running)], and tasks it never began."""
        left = record.left
        reported = len(record.tasks) - left
        position = None if failed_start else self._progress_of(slot, record)
        lost, unstarted = [], []
        for at, task in enumerate(record.tasks):
            key = (task[0], task[1])
            if at < reported:
                continue
            if position is None:
                # which one ran is unknown: all fail
                lost.append((*key, left == 1))
            elif at > position:
                unstarted.append(task)
            else:
                lost.append((*key, at == position))
        return lost, unstarted

    def _schedule_respawn(self):
        with self.lock:
            if self.engine.halted or self.engine.dispatch_done:
                return
            if self.init_failures:
                delay = min(0.02 * (2 ** min(self.init_failures, 6)), 1.0)
                self.respawn_at = time.monotonic() + delay
            else:
                self.respawn_at = None
                self._respawn()

    def _respawn(self):
        # called with the lock held
        try:
            self.repopulate()
        except Exception:
            # cannot start a worker now (out of processes?): say so, keep
            # the collector alive, try again a little later
            sys.excepthook(*sys.exc_info())
            self.init_failures += 1
            delay = min(0.02 * (2 ** min(self.init_failures, 6)), 1.0)
            self.respawn_at = time.monotonic() + delay

    def respawn_due(self):
        """Start the replacements whose pause is over."""
        if self.respawn_at is not None and time.monotonic() >= self.respawn_at:
            self.respawn_at = None
            with self.lock:
                if not (self.engine.halted or self.engine.dispatch_done):
                    self._respawn()

    def respawn_timeout(self):
        """Seconds until a replacement is due, or None."""
        if self.respawn_at is None:
            return None
        return max(0.0, self.respawn_at - time.monotonic())

    # -- what the kinds of worker say ----------------------------------------

    def _progress_of(self, slot, record):
        """Position in *record* of the task the worker last began; -1 if
        it never began that batch; None if unknown."""
        return None

    def _progress_cell(self):
        return None, ()

    def _free_progress_cell(self, mark):
        pass


class _TaskHandler(object):
    """Feeds the workers: the dispatcher thread pulls submitted tasks,
    packs short ones into batches sized by the running estimate of a
    task's time, and sends each batch to a worker that can take it."""

    def __init__(self, engine, maxtasks):
        self.engine = engine
        self.lock, self.cv, self.slots = engine.lock, engine.cv, engine.slots
        self.maxtasks = maxtasks
        # what is submitted, in order: tasks (tuples), task sources and
        # markers; only this thread takes from it
        self.pending = collections.deque()
        self.bell = queue.SimpleQueue()     # rung while this thread sleeps
        self.asleep = False
        self.retry = collections.deque()  # tasks a dead worker never began
        self.source = None
        self.saw_close = False

    def submit(self, tasks):
        """Queue one task (a tuple), a source of tasks, or a marker."""
        pending = self.pending
        pending.append(tasks)
        # the dispatcher says it sleeps before it looks at the queue a last
        # time, so either it sees this item or it is told here
        if self.asleep:
            self.bell.put(None)
        elif not len(pending) & _YIELD_EVERY:
            # A thread submitting in a loop keeps the GIL for a whole
            # switch interval (5 ms), while the dispatcher waits for it and
            # the workers for work: let it in now and then.
            _yield_gil(0)

    def close(self):
        self.submit(_CLOSE)

    def stop(self):
        self.submit(_STOP)

    def requeue(self, tasks):
        """Tasks a dead worker never began go first (lock held)."""
        self.retry.extendleft(reversed(tasks))
        self.submit(_NUDGE)

    def _outstanding(self):
        # called with the lock held
        return any(slot.batches for slot in self.slots.values())

    def _after_close(self):
        """Closed and every submission read: wait until all work is done
        (None) or a dead worker's unstarted tasks need a new home."""
        engine = self.engine
        with self.lock:
            while True:
                if engine.halted:
                    return None
                if self.retry:
                    return self.retry.popleft()
                if not self._outstanding():
                    return None
                self.cv.wait()

    def _pull(self, block):
        """Next task, or None when there is none now (block=False) or no
        more at all (block=True: closed and drained, or halted)."""
        engine = self.engine
        while not engine.halted:
            if self.retry:
                try:
                    return self.retry.popleft()
                except IndexError:
                    pass
            source = self.source
            if source is not None:
                for task in source:
                    return task
                self.source = None
            if self.saw_close:
                return self._after_close() if block else None
            item = self._next(block)
            if item is None or item is _STOP:
                return None
            if type(item) is tuple:
                return item         # one task (apply_async)
            if item is _CLOSE:
                self.saw_close = True
            elif item is not _NUDGE:
                self.source = item
        return None

    def _next(self, block):
        """The next submission; None when there is none (block=False)."""
        pending = self.pending
        if pending or not block:
            return pending.popleft() if pending else None
        while True:
            self.asleep = True
            if pending:
                self.asleep = False
                return pending.popleft()
            self.bell.get()
            self.asleep = False
            if pending:
                return pending.popleft()

    def _depth(self, estimate):
        """How many batches a worker may hold, for tasks this long."""
        if estimate is None or estimate >= _PREFETCH_BELOW or (
                self.engine.crowded and estimate >= _CROWDED_LONG):
            return 1
        return 2

    def _batch_limit(self, slot, estimate):
        if estimate is None:
            return 1
        source = self.source
        share = 0 if source is None else getattr(source, 'share', 0)
        if share is None:
            # every worker gets its part of a map() at once, in as many
            # batches as it may hold (the results of the first travel back
            # while the next one runs)
            room = max(1, len(self.slots)) * self._depth(estimate)
            share = source.share = -(-(max(source.left, 0) + 1) // room)
        # a map()'s tasks are its chunks: its batches may hold more work
        # (not where long tasks are better handed out one at a time)
        budget = _MAP_BATCH_SECONDS if share else _BATCH_SECONDS
        if self.engine.crowded and estimate >= _CROWDED_LONG:
            budget = _BATCH_SECONDS
        limit = int(budget / estimate) if estimate > 0 else _BATCH_CAP
        if share:
            limit = min(limit, share)
        elif source is None:
            # leave queued work for the other workers
            share = -(-(len(self.pending) + 1) // max(1, len(self.slots)))
            limit = min(limit, share)
        if self.maxtasks is not None:
            limit = min(limit, self.maxtasks - slot.sent)
        return max(1, min(limit, _BATCH_CAP))

    def _claim(self, estimate):
        """A live worker that can take a batch now (an idle one first, a
        busy one when tasks are short), waiting for one; None once halted."""
        engine = self.engine
        depth = self._depth(estimate)
        cap = self.maxtasks
        with self.lock:
            while not engine.halted:
                best = None
                for slot in self.slots.values():
                    load = len(slot.batches)
                    if slot.dead or load >= depth or (
                            cap is not None and slot.sent >= cap):
                        continue
                    if best is None or load < len(best.batches):
                        best = slot
                        if not load:
                            break
                if best is not None:
                    return best
                self.cv.wait()
        return None

    def dispatch_loop(self):
        try:
            while True:
                task = self._pull(block=True)
                if task is None:
                    break
                batch = [task]
                task = None
                if not self._place(batch):
                    break
                batch = None
        except BaseException:
            util.debug('pool dispatcher failed: %r', sys.exc_info()[1])
            raise
        finally:
            self._dispatch_finished()

    def _place(self, batch):
        """Hand *batch* (growing it with queued tasks) to a worker.
        Returns False when the engine was halted."""
        engine = self.engine
        key = _task_key(batch[0])
        while True:
            estimate = engine.estimates.get(key)
            slot = self._claim(estimate)
            if slot is None:
                return False
            limit = self._batch_limit(slot, estimate)
            self._fill(batch, limit)
            # An idle worker given a map()'s share takes its second batch
            # in the same message, so that it never waits for this thread
            # (which the worker it wakes may well preempt) to send it.
            extra = []
            if (len(batch) == limit and not slot.batches
                    and self.maxtasks is None and self._map_source()
                    and self._depth(estimate) == 2):
                self._fill(extra, limit)
            with self.lock:
                if engine.halted:
                    return False
                if slot.dead:
                    batch += extra
                    continue
                records = []
                for tasks in (batch, extra):
                    if tasks:
                        slot.numbered += 1
                        records.append(_Batch(tasks, time.monotonic(),
                                              slot.numbered, key))
                        slot.sent += len(tasks)
                slot.batches.extend(records)
            if len(records) == 1 or not self._send_pair(slot, *records):
                self._send(slot, records[0])
            return True

    def _fill(self, batch, limit):
        pending = self.pending
        while len(batch) < limit:
            if self.source is None and pending and not self.retry:
                # apply_async()'s tasks, straight off the queue in C, up to
                # the first submission that is no task
                _take_tasks(pending, batch, limit)
                if len(batch) >= limit or not pending:
                    break
            task = self._pull(block=False)
            if task is None:
                break
            batch.append(task)

    def _map_source(self):
        source = self.source
        return source is not None and bool(getattr(source, 'share', 0))

    def _send_pair(self, slot, first, second):
        """Send two batches as one message.  False when some task would
        not pickle: *second* is then merged into *first*, for `_send`."""
        try:
            slot.tasks.send((first.tasks, second.tasks))
            return True
        except OSError:
            return True     # the worker is gone: the collector sees to it
        except Exception:
            pass
        with self.lock:
            # nothing was sent: one batch again, numbered as such
            if second in slot.batches:
                slot.batches.remove(second)
                slot.numbered -= 1
            first.tasks = first.tasks + second.tasks
            first.left += second.left
        return False

    def _send(self, slot, record):
        try:
            slot.tasks.send(record.tasks)
            return
        except OSError:
            # The worker is gone: the collector deals with its batches.
            return
        except Exception:
            pass
        # Some task could not be pickled (only a process's channel
        # pickles): fail those, send the rest.
        good, bad = _sort_picklable(record.tasks)
        with self.lock:
            record.tasks = good
            record.left = len(good)
            if not good and record in slot.batches:
                # nothing is sent: the worker will not count this batch
                slot.batches.remove(record)
                slot.numbered -= 1
                self.cv.notify()
        for job, index, exc in bad:
            self.engine.results.deliver(job, index, (False, exc))
        if good:
            try:
                slot.tasks.send(good)
            except OSError:
                pass

    def _dispatch_finished(self):
        engine = self.engine
        with self.lock:
            engine.dispatch_done = True
            self.cv.notify_all()
            slots = list(self.slots.values())
        if not engine.halted:
            util.debug('pool dispatcher: all work done, stopping workers')
            for slot in slots:
                try:
                    slot.tasks.send(None)
                except Exception:
                    pass
        engine.results.wake()


def _sort_picklable(batch):
    """Split *batch* into the tasks that pickle and (job, index, error)
    for those that do not."""
    from .reduction import ForkingPickler
    good, bad = [], []
    for task in batch:
        try:
            ForkingPickler.dumps(task)
        except Exception as exc:
            bad.append((task[0], task[1], exc))
        else:
            good.append(task)
    return good, bad


class _ResultHandler(object):
    """Collects the results: the collector thread completes the result
    objects, updates the estimate of a task's time, and hands the workers
    that exit to the worker handler; the subclasses say how it waits."""

    def __init__(self, engine):
        self.engine = engine
        self.lock, self.cv, self.slots = engine.lock, engine.cv, engine.slots
        self.cache = engine.cache

    def deliver(self, job, index, outcome):
        """cache[job]._set(index, outcome) if the job is still there; a
        user callback that fails is reported (sys.excepthook), and the
        pool goes on."""
        ok, value = outcome
        _deliver(self.cache, ((job, index, ok, value),))

    def absorb(self, slot, message):
        if type(message) is tuple:
            if message and message[0] == 'init-failed':
                slot.init_error = message[1]
            return
        # every result of the message, its callback run, in one C call
        _deliver(self.cache, message)
        slot.done += len(message)
        now = time.monotonic()
        engine = self.engine
        with self.lock:
            batches = slot.batches
            if not batches:
                return
            record = batches[0]
            record.left -= len(message)
            if record.left > 0:
                return
            batches.popleft()
            size = len(record.tasks)
            record.tasks = None
            if size:
                per_task = (now - record.since) / size
                estimates = engine.estimates
                old = estimates.get(record.key)
                if old is None and len(estimates) >= _ESTIMATES_MAX:
                    estimates.clear()
                estimates[record.key] = (per_task if old is None
                                         else 0.5 * old + 0.5 * per_task)
            if batches:
                # the next batch starts running now
                batches[0].since = max(batches[0].since, now)
            engine.workers.init_failures = 0
            self.cv.notify()

    def done(self):
        engine = self.engine
        with self.lock:
            return engine.halted or (engine.dispatch_done and not self.slots)


def _make_pipe():
    from .connection import Pipe
    return Pipe(duplex=False)


def _close_channels(ends):
    for end in ends:
        try:
            end.close()
        except Exception:
            pass


class _ProcessWorkers(_WorkerHandler):
    """Workers are processes; each has its own pair of pipes and a cell in
    a shared array where it notes which task it is running."""

    def __init__(self, *args):
        super().__init__(*args)
        try:
            from .sharedctypes import RawArray
            self.marks = RawArray('q', self.processes)
        except Exception:
            # no shared memory here: lost batches fail as a whole
            self.marks = None
        self.free_marks = ([] if self.marks is None
                           else list(range(self.processes)))

    def _progress_cell(self):
        # called with the lock held
        if not self.free_marks:
            return None, (None,)
        mark = self.free_marks.pop()
        self.marks[mark] = 0
        return mark, ((self.marks, mark),)

    def _free_progress_cell(self, mark):
        if mark is not None:
            self.free_marks.append(mark)

    def _progress_of(self, slot, record):
        if slot.mark is None:
            return None
        stamp = self.marks[slot.mark]
        number, position = stamp >> 32, stamp & 0xFFFFFFFF
        if number == record.number:
            return position
        return -1 if number < record.number else None

    def _open_channels(self, key):
        task_r, task_w = _make_pipe()
        try:
            result_r, result_w = _make_pipe()
        except BaseException:
            task_r.close()
            task_w.close()
            raise
        return (task_w, result_r), (task_r, result_w)

    def _discard_channels(self, key, here, there):
        _close_channels((*here, *there))

    def _worker_entry(self, key):
        return worker, ()

    def _start_worker(self, slot, there):
        slot.proc.start()
        # the child has its own copies now
        _close_channels(there)

    def _close_slot(self, slot):
        _close_channels((slot.tasks, slot.results))

    @staticmethod
    def _stop_process(proc):
        proc.terminate()

    def stop(self):
        with self.lock:
            procs = list(self.procs)
        for proc in procs:
            if proc.exitcode is None:
                proc.terminate()

    def join_after_halt(self):
        with self.lock:
            procs = list(self.procs)
            slots = list(self.slots.values())
        for proc in procs:
            proc.join()
        for slot in slots:
            self._close_slot(slot)


class _ProcessResults(_ResultHandler):
    """Waits on every worker's result pipe and exit sentinel, and on a
    pipe that wakes it when the workers change."""

    def __init__(self, engine):
        super().__init__(engine)
        self.wake_r, self.wake_w = _make_pipe()

    def wake(self):
        wake_w = self.wake_w
        if wake_w is not None:
            try:
                wake_w.send_bytes(b'')
            except Exception:
                pass        # closed: the collector is gone anyway

    def retire_wake(self):
        with self.lock:
            ends = (self.wake_r, self.wake_w)
            self.wake_r = self.wake_w = None
        _close_channels([end for end in ends if end is not None])

    def drain_final(self, slot):
        """Read whatever complete results a dead worker left behind."""
        conn = slot.results
        try:
            while conn.poll():
                self.absorb(slot, conn.recv())
        except (EOFError, OSError):
            pass

    def collect_loop(self):
        from .connection import wait
        engine = self.engine
        workers = engine.workers
        wake_r = self.wake_r
        version = None
        try:
            while not self.done():
                with self.lock:
                    # what to wait on changes only with the workers (with
                    # 2 x 16 workers, rebuilding it took as long as the
                    # rest of a loop)
                    if version != engine.slots_version:
                        version = engine.slots_version
                        slots = self.slots.values()
                        by_reader = {s.results: s for s in slots}
                        by_sentinel = {s.proc.sentinel: s for s in slots}
                        objects = [wake_r, *by_reader, *by_sentinel]
                        slots = None
                ready = wait(objects, workers.respawn_timeout())
                exited = []
                for obj in ready:
                    if obj is wake_r:
                        try:
                            while wake_r.poll():
                                wake_r.recv_bytes()
                        except (EOFError, OSError):
                            return
                    elif obj in by_reader:
                        slot = by_reader[obj]
                        try:
                            self.absorb(slot, obj.recv())
                            while obj.poll():
                                self.absorb(slot, obj.recv())
                        except (EOFError, OSError):
                            pass
                    else:
                        exited.append(by_sentinel[obj])
                for slot in exited:
                    if not engine.halted:
                        workers.bury(slot)
                slot = exited = ready = None
                workers.respawn_due()
        except BaseException:
            util.debug('pool collector failed: %r', sys.exc_info()[1])
            raise
        finally:
            if self.done():
                self.retire_wake()


class _ProcessEngine(_Engine):
    """An engine whose workers are processes."""
    _workers_class = _ProcessWorkers
    _results_class = _ProcessResults


class _Inbox(object):
    """The receiving end of a thread worker's task queue."""
    __slots__ = ('recv',)

    def __init__(self, q):
        self.recv = q.get


class _Outbox(object):
    """A thread worker's sending end of the shared result queue."""
    __slots__ = ('send',)

    def __init__(self, q, key):
        self.send = functools.partial(_tagged_put, q.put, key)


def _tagged_put(put, key, message):
    put((key, message))


class _QueueSender(object):
    __slots__ = ('send',)

    def __init__(self, q):
        self.send = q.put


def _thread_worker(results_q, key, *args):
    try:
        worker(*args)
    finally:
        results_q.put((key, _EXITED))


class _ThreadWorkers(_WorkerHandler):
    """Workers are threads: queues instead of pipes, nothing to pickle."""

    def __init__(self, *args):
        super().__init__(*args)
        self.results_q = self.engine.results.results_q
        self.task_queues = {}

    def _open_channels(self, key):
        task_q = queue.SimpleQueue()
        self.task_queues[key] = task_q
        return ((_QueueSender(task_q), None),
                (_Inbox(task_q), _Outbox(self.results_q, key)))

    def _discard_channels(self, key, here, there):
        self.task_queues.pop(key, None)

    def _worker_entry(self, key):
        # the wrapper tells the collector when the thread ends
        return _thread_worker, (self.results_q, key)

    def _start_worker(self, slot, there):
        slot.proc.start()

    def _close_slot(self, slot):
        self.task_queues.pop(slot.key, None)

    @staticmethod
    def _stop_process(proc):
        pass

    def stop(self):
        with self.lock:
            queues = list(self.task_queues.values())
        for task_q in queues:
            # drop what is queued, then ask the thread to stop
            try:
                while True:
                    task_q.get_nowait()
            except queue.Empty:
                pass
            task_q.put(None)

    def join_after_halt(self):
        pass


class _ThreadResults(_ResultHandler):
    """Reads the one queue that all thread workers put their results, and
    their last word, on."""

    def __init__(self, engine):
        super().__init__(engine)
        self.results_q = queue.SimpleQueue()

    def wake(self):
        self.results_q.put((None, None))

    def retire_wake(self):
        pass

    def drain_final(self, slot):
        pass

    def collect_loop(self):
        workers = self.engine.workers
        get = self.results_q.get
        while not self.done():
            timeout = workers.respawn_timeout()
            try:
                key, message = get(timeout=timeout)
            except queue.Empty:
                workers.respawn_due()
                continue
            if key is None:
                workers.respawn_due()
                continue
            slot = self.slots.get(key)
            if slot is not None:
                if message is _EXITED:
                    workers.bury(slot)
                else:
                    self.absorb(slot, message)
            slot = message = None
            workers.respawn_due()


class _ThreadEngine(_Engine):
    """An engine whose workers are threads."""
    _workers_class = _ThreadWorkers
    _results_class = _ThreadResults


# ---------------------------------------------------------------------------
# The facade
# ---------------------------------------------------------------------------

def _check_pool_args(processes, maxtasksperchild, initializer):
    """The stdlib's argument checks of Pool() (processes None: not given,
    the caller's default applies)."""
    if processes is not None and processes < 1:
        raise ValueError("Number of processes must be at least 1")
    if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int)
            or maxtasksperchild <= 0):
        raise ValueError("maxtasksperchild must be a positive int or None")
    if initializer is not None and not callable(initializer):
        raise TypeError('initializer must be a callable')


class _PoolFacade(object):
    """What every Pool front end shares (this module's, and cluster.py's
    on Dask): the running state, the ResourceWarning of an unclosed pool,
    no pickling, and the context manager."""

    def __del__(self, _warn=warnings.warn, RUN=RUN):
        if self._state == RUN:
            _warn(f"unclosed running cmultiprocessing pool {self!r}",
                  ResourceWarning, source=self)

    def __reduce__(self):
        raise NotImplementedError(
            'pool objects cannot be passed between processes or pickled')

    def _check_running(self):
        if self._state != RUN:
            raise ValueError("Pool not running")

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.terminate()

    def __enter__(self):
        self._check_running()
        return self


class Pool(_PoolFacade):
    """A pool of worker processes to which tasks can be submitted."""

    _wrap_exception = True
    _engine_class = _ProcessEngine

    def __init__(self, processes=None, initializer=None, initargs=(),
                 maxtasksperchild=None, context=None):
        # set first: __del__ looks at them even if __init__ fails
        self._engine = None
        self._state = INIT
        self._pool = []
        if context is None:
            from . import get_context
            context = get_context()
        self._ctx = context
        if processes is None:
            processes = _cpu_count()
        _check_pool_args(processes, maxtasksperchild, initializer)
        self._processes = processes
        self._initializer = initializer
        self._initargs = initargs
        self._maxtasksperchild = maxtasksperchild
        self._cache = {}
        engine = self._engine_class(
            self._ctx, self.Process, processes,
            (initializer, initargs, maxtasksperchild, self._wrap_exception),
            self._cache, self._pool)
        engine.start()
        self._engine = engine
        self._submit = engine.tasks.submit
        self._terminate = util.Finalize(self, engine.halt, exitpriority=15)
        self._state = RUN

    def __repr__(self):
        kind = type(self)
        return (f'<{kind.__module__}.{kind.__qualname__} '
                f'state={self._state} pool_size={len(self._pool)}>')

    @staticmethod
    def Process(ctx, *args, **kwds):
        """Make a worker process (subclasses may make other kinds)."""
        return ctx.Process(*args, **kwds)

    def _repopulate_pool(self):
        return self._engine.repopulate()

    # -- submitting work -------------------------------------------------------

    # kwds={}: the stdlib's signatures (inspect shows them); never mutated
    def apply(self, func, args=(), kwds={}):  # noqa: B006
        """Call func(*args, **kwds) in a worker and return the result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func, args=(), kwds={}, callback=None,  # noqa: B006
                    error_callback=None):
        """Like apply(), returning an AsyncResult."""
        if self._state != RUN:
            raise ValueError("Pool not running")
        result = ApplyResult(self, callback, error_callback)
        self._submit((result._job, 0, func, args, kwds))
        return result

    # how a map() / starmap() chunk runs in a worker
    _mappers = (_packed_map, _packed_starmap)

    def map(self, func, iterable, chunksize=None):
        """list(map(func, iterable)), computed by the workers in chunks."""
        return self._map_async(func, iterable, self._mappers[0],
                               chunksize).get()

    def map_async(self, func, iterable, chunksize=None, callback=None,
                  error_callback=None):
        """Like map(), returning a MapResult."""
        return self._map_async(func, iterable, self._mappers[0], chunksize,
                               callback, error_callback)

    def starmap(self, func, iterable, chunksize=None):
        """Like map(), but each item is a tuple of arguments."""
        return self._map_async(func, iterable, self._mappers[1],
                               chunksize).get()

    def starmap_async(self, func, iterable, chunksize=None, callback=None,
                      error_callback=None):
        """Like starmap(), returning a MapResult."""
        return self._map_async(func, iterable, self._mappers[1], chunksize,
                               callback, error_callback)

    def _map_async(self, func, iterable, mapper, chunksize=None,
                   callback=None, error_callback=None):
        self._check_running()
        if not hasattr(iterable, '__len__'):
            iterable = list(iterable)
        total = len(iterable)
        if total == 0:
            chunksize = 0
        elif chunksize is None:
            chunksize = -(-total // (len(self._pool) * 4 or 1))
        result = MapResult(self, chunksize, total, callback, error_callback)
        if chunksize:
            self._engine.submit(_Counted(
                _guarded(result._job, mapper,
                         _chunks(func, iterable, chunksize)),
                -(-total // chunksize)))
        return result

    def imap(self, func, iterable, chunksize=1):
        """Lazy map(): an iterator over the results, in order."""
        return self._imap(IMapIterator, func, iterable, chunksize)

    def imap_unordered(self, func, iterable, chunksize=1):
        """Like imap(), yielding results as they are ready."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize)

    def _imap(self, kind, func, iterable, chunksize):
        self._check_running()
        if chunksize == 1:
            result = kind(self)
            tasks = _guarded(result._job, func, iterable, result._set_length)
        else:
            if chunksize < 1:
                raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")
            result = kind(self, chunked=True)
            tasks = _guarded(result._job, mapstar,
                             _chunks(func, iterable, chunksize),
                             result._set_length)
        self._engine.submit(tasks)
        return result

    # -- shutting down -----------------------------------------------------------

    def close(self):
        """Accept no more tasks; workers exit once all are done."""
        util.debug('closing pool')
        if self._state != RUN:
            return
        self._state = CLOSE
        self._engine.close()

    def join(self):
        """Wait for the workers to exit (after close() or terminate())."""
        util.debug('joining pool')
        state = self._state
        if state not in (CLOSE, TERMINATE):
            raise ValueError("Pool is still running" if state == RUN
                             else "In unknown state")
        self._engine.join()

    def terminate(self):
        """Stop the workers now, without finishing outstanding work."""
        util.debug('terminating pool')
        self._state = TERMINATE
        self._terminate()


class ThreadPool(Pool):
    """A pool of worker threads with the Pool API."""

    _wrap_exception = False
    _engine_class = _ThreadEngine
    # results are not pickled in a thread pool: nothing to gain by packing
    _mappers = (mapstar, starmapstar)

    @staticmethod
    def Process(ctx, *args, **kwds):
        from .dummy import Process
        return Process(*args, **kwds)

    def __init__(self, processes=None, initializer=None, initargs=()):
        super().__init__(processes, initializer, initargs)
