"""Queues between processes: Queue, JoinableQueue and SimpleQueue.

All three sit on a one-way pipe from connection.Pipe(duplex=False) and keep
its framing, so ``_reader`` and ``_writer`` stay ordinary Connections.  The
work is done by the native base class ``_cmultiprocessing.QueueBase``:

* ``Queue.put`` pickles in the calling thread and writes the frame into the
  pipe at once when the pipe has room (taking the writer lock only if it is
  free).  What the pipe cannot take -- and everything after it, to keep the
  order -- waits in the queue's feed, which a daemon thread ("the feeder",
  started by the first put, as the stdlib's is, so that a thread that cannot
  start fails put()) writes out.  An object that cannot be
  pickled or sent is reported to ``_on_queue_feeder_error`` and dropped, as
  the standard library's feeder does.
* ``Queue.get`` reads one frame under the reader lock with the GIL released
  while it waits, and unpickles after the lock is released.
* ``SimpleQueue`` is the same pipe without size semaphore or feeder: put
  writes the whole frame under the writer lock, waiting if it must.
"""

__all__ = ['Queue', 'SimpleQueue', 'JoinableQueue']

import errno
import os
import sys
import threading
import time
import types
import weakref

from queue import Empty, Full  # noqa: F401  (re-exported, as the stdlib module does)

import _cmultiprocessing

from _cmultiprocessing import TornMessageError  # noqa: F401  (public)

from . import connection
from . import context
from .util import debug, info, Finalize, register_after_fork, is_exiting

_QueueBase = _cmultiprocessing.QueueBase

# connection.Pipe(duplex=False) is a byte stream with the length-prefix
# framing on every platform (a socket pair on Windows, where the stdlib uses
# message-mode pipes).  So the native part writes frames itself everywhere
# and needs the writer lock everywhere: two long writes into a stream could
# interleave.

# What Queue.__getstate__ sends to a spawned child, in this order.
_QUEUE_STATE = ('_ignore_epipe', '_maxsize', '_pipe_r', '_pipe_w',
                '_rlock', '_wlock', '_sem', '_opid', '_ring')

# The shared-memory rings of the queues (Modules/ring.h): a block of a heap
# of their own each (sharedctypes' heap is BufferWrapper._heap, whose books
# the stdlib's tests read).  None where the platform has no wait on shared
# memory across processes (then QUEUE_RING_BYTES is 0), or with
# CMP_QUEUE_RING=0 in the environment: the queues then keep to their pipes.
_ring_heap = None


def _new_ring():
    global _ring_heap
    size = _cmultiprocessing.QUEUE_RING_BYTES
    if not size or os.environ.get('CMP_QUEUE_RING', '1') == '0':
        return None
    if _ring_heap is None:
        from . import heap
        _ring_heap = heap.Heap()
    return _ring_heap.take(size)


def _ring_state(block):
    """The ring's block as it travels to a spawned child: its arena (whose
    descriptor ForkingPickler duplicates), offset and size."""
    return None if block is None else (block.arena, block.start, block.size)


def _ring_from_state(state):
    if state is None or not isinstance(state, tuple):
        return state
    arena, start, size = state
    return arena.view(start, size)


def _ring_mover(queue_ref):
    """Thread of a process that took a queue out of its ring while the ring
    held bytes the pipe could not take at once: moves them as the pipe's
    readers make room (holding the reader lock only to move)."""
    while True:
        queue = queue_ref()
        if queue is None:
            return
        rlock = queue._rlock
        if rlock.acquire(timeout=0.05):
            try:
                left = queue._ring_move()
            except (OSError, ValueError):
                return
            finally:
                rlock.release()
            if not left:
                return
        del queue, rlock
        time.sleep(0.001)


class _RingQueue(_QueueBase):
    """The queues' pipe ends, and the ring in front of them.

    ``_reader`` and ``_writer`` are the pipe's Connections, for code that
    reads or writes them directly (concurrent.futures waits on a
    SimpleQueue's ``_reader``): handing one out takes the queue out of its
    shared-memory ring for good, in every process, and moves what the ring
    holds into the pipe ahead of what comes next (Modules/ring.h, "Pipe
    mode").  The package itself uses ``_pipe_r``/``_pipe_w``."""

    @property
    def _reader(self):
        self._leave_ring()
        return self._pipe_r

    @_reader.setter
    def _reader(self, conn):
        self._pipe_r = conn

    @property
    def _writer(self):
        self._leave_ring()
        return self._pipe_w

    @_writer.setter
    def _writer(self, conn):
        self._pipe_w = conn

    def _leave_ring(self):
        if (getattr(self, '_ring', None) is None or self._pipe_r.closed
                or self._pipe_w.closed):
            return
        if not self._ring_leave():
            return
        rlock = self._rlock
        if rlock.acquire(False):
            try:
                left = self._ring_move()
            finally:
                rlock.release()
            if not left:
                return
        threading.Thread(target=_ring_mover, args=(weakref.ref(self),),
                         name='QueueRingMover', daemon=True).start()


def _largest_size():
    # Imported here: the import fails where the platform has no working
    # semaphores, and that is what Queue() should raise there.
    from .synchronize import SEM_VALUE_MAX
    return SEM_VALUE_MAX


def _native_lock(lock):
    """The object whose acquire/release the native part calls."""
    if lock is None:
        return None
    return getattr(lock, '_semlock', lock)


def _connect(queue, sem, counted=False):
    """Bind queue's native part to its pipe ends, locks and pickler
    (the native part keeps one ForkingPickler between puts).  counted: no
    size semaphore; messages are counted in the ring (ring.h)."""
    pickler = context.reduction.ForkingPickler
    queue._bind(queue._pipe_r, queue._pipe_w,
                rlock=_native_lock(queue._rlock),
                wlock=_native_lock(queue._wlock),
                sem=None if counted else _native_lock(sem),
                dumps=pickler.dumps, loads=pickler.loads, pickler=pickler,
                ring=queue._ring, counted=counted)


def _join_feeder(thread_ref):
    thread = thread_ref()
    if thread is None:
        debug('queue feeder thread already gone')
        return
    debug('joining queue feeder thread')
    thread.join()
    debug('... queue feeder thread joined')


def _feeder_gives_up(exc, ignore_epipe):
    """True when a failure of the feeder ends it instead of being reported."""
    if ignore_epipe and getattr(exc, 'errno', None) == errno.EPIPE:
        return True
    if is_exiting():
        # Interpreter shutdown may already have torn down what we use.
        info('error in queue feeder thread: %s', exc)
        return True
    return False


def _call_feeder_error_hook(hook, exc, obj):
    """hook(exc, obj) with exc the exception being handled (the default
    hook prints it with print_exc()), leaving no reference cycle behind.

    Raising exc here puts this frame, which holds exc, on exc's traceback:
    a cycle that would keep whatever the hook stores exc in -- the future
    of a concurrent.futures work item, and through the caller's frames the
    queue and its semaphores -- alive until the cyclic collector runs.  So
    the traceback and context are put back as they came (the pickling
    frames below put(), which the hook reports) and the locals are dropped
    before returning."""
    tb, context = exc.__traceback__, exc.__context__
    try:
        raise exc
    except BaseException:
        hook(exc, obj)
    finally:
        exc.__traceback__, exc.__context__ = tb, context
        del exc, obj, hook, tb, context


def _report_pickling_error(hook, exc, obj):
    """Report that obj could not be pickled, from another thread.

    The frames of a failed pickle are on the exception's traceback, and
    each links (f_back) to the frame that called put(), which is still
    running: whatever that frame holds -- concurrent.futures' work item,
    whose future the hook gives the exception to -- would then make a
    cycle with the exception, and the queue and its semaphores would wait
    for the cyclic collector ("leaked semaphore" warnings at exit).  The
    stdlib pickles in its feeder thread, where no such frame is.  So obj is
    pickled once more in a thread of its own, and that failure, with its
    pickling frames, goes to the hook there; put() waits for it, so the
    hook has run when put() returns, as before.  Where no thread can start
    (interpreter shutdown), or the second try pickles, the first failure is
    reported here without its frames."""
    dumps = context.reduction.ForkingPickler.dumps
    reported = []

    def report():
        try:
            dumps(obj)
        except Exception as again:
            reported.append(True)
            _call_feeder_error_hook(hook, again, obj)

    try:
        thread = threading.Thread(target=report, daemon=True,
                                  name='QueueFeederErrorReport')
        thread.start()
    except RuntimeError:
        thread = None
    if thread is not None:
        thread.join()
    if not reported:
        exc.__traceback__ = None
        _call_feeder_error_hook(hook, exc, obj)


def _feeder_main(feed, close_reader, close_writer, ignore_epipe, onerror,
                 give_room):
    """Body of the feeder thread: write the feed until it is stopped."""
    debug('queue feeder thread starts')
    while True:
        try:
            feed._run()
        except Exception as exc:
            dropped = feed._take_failed()
            if _feeder_gives_up(exc, ignore_epipe):
                return
            # The message will never arrive: give its room back, as if it
            # had been taken off the queue, then tell the owner.
            give_room()
            onerror(exc, dropped)
        else:
            break
    debug('queue feeder thread drained its feed; closing the pipe ends')
    close_reader()
    close_writer()


def _pipe_lock(ctx):
    """A queue's read or write lock: robust and quiet (see
    synchronize's docstring).  A process that dies holding one is taken
    over by the next; what it may have left in the pipe is the native
    queue's to settle (queue_robust.c): the rest of a message a dead reader
    was reading is dropped, a message a dead writer cut off raises
    TornMessageError once in the get() that meets it."""
    from .synchronize import Lock
    return Lock(ctx=ctx.get_context(), robust='quiet')


class Queue(_RingQueue):
    """A FIFO shared between processes, with an optional maximum size."""

    def __init__(self, maxsize=0, *, ctx):
        limit = maxsize if maxsize > 0 else _largest_size()
        reader, writer = connection.Pipe(duplex=False)
        rlock, wlock = _pipe_lock(ctx), _pipe_lock(ctx)
        Queue.__setstate__(self, (False, limit, reader, writer, rlock,
                                  wlock, ctx.BoundedSemaphore(limit),
                                  os.getpid(), _new_ring()))
        register_after_fork(self, Queue._after_fork)

    # -- pickling for spawned children ------------------------------------

    def __getstate__(self):
        context.assert_spawning(self)
        state = tuple(getattr(self, name) for name in _QUEUE_STATE)
        return state[:-1] + (_ring_state(state[-1]),)

    def __setstate__(self, state):
        for name, value in zip(_QUEUE_STATE, state, strict=True):
            setattr(self, name, value)
        self._ring = _ring_from_state(self._ring)
        self._wire()

    def _after_fork(self):
        debug('Queue._after_fork()')
        self._wire()

    def _wire(self):
        # A fresh feed: frames buffered by another process (our parent,
        # after a fork) are that process's to send, and no feeder runs here.
        self._closed = False
        self._thread = None
        self._jointhread = None
        self._close = None
        self._joincancelled = False
        # Without a maximum size, a Queue with a ring counts its messages
        # there instead of in its semaphore (which stays, untouched, for
        # the state's sake): the semaphore's word went back and forth
        # between producer and consumer on every message.  Every process
        # decides the same from the same state.
        _connect(self, self._sem, counted=self._ring is not None and
                 self._maxsize >= _largest_size())

    # -- the queue API (put and get are native) ----------------------------

    def put_nowait(self, obj):
        return self.put(obj, False)

    def get_nowait(self):
        return self.get(False)

    def full(self):
        return self._sem._semlock._is_zero()

    def empty(self):
        return not self._poll()

    def qsize(self):
        counted = self._count()
        if counted is not None:
            return counted
        # NotImplementedError where sem_getvalue() does not work (macOS).
        taken = self._maxsize - self._sem._semlock._get_value()
        return taken

    def cancel_join_thread(self):
        debug('Queue.cancel_join_thread()')
        self._joincancelled = True
        joiner, self._jointhread = self._jointhread, None
        if joiner is not None:
            joiner.cancel()

    def close(self):
        self._closed = True
        stop_feeder, self._close = self._close, None
        if stop_feeder is not None:
            # the feeder closes both pipe ends once it has written the rest
            stop_feeder()
        elif self._feed.used:
            # everything went straight into the pipe: nothing to wait for
            self._pipe_r.close()
            self._pipe_w.close()

    def join_thread(self):
        debug('Queue.join_thread()')
        assert self._closed, f"Queue {self!r} not closed"
        joiner = self._jointhread
        if joiner:
            joiner()

    if sys.version_info >= (3, 12):
        def _terminate_broken(self):
            # Close a queue whose readers are gone for good: drop the
            # reading end first so the feeder cannot block on a full pipe
            # (gh-94777), then close and wait for the feeder.  (Through
            # _reader: the ring is left and moved into the pipe first, so
            # that a feeder waiting for room in the ring meets the closed
            # pipe as the stdlib's does.)
            self._reader.close()
            if sys.version_info >= (3, 13) and sys.platform == 'win32':
                self._pipe_w.close()   # gh-107219
            self.close()
            self.join_thread()

    # -- feeder thread -----------------------------------------------------

    def _start_thread(self):
        # Called by the native put() the first time something has to wait
        # for the pipe.
        debug('Queue._start_thread()')
        feed = self._feed
        thread = threading.Thread(
            target=_feeder_main, name='QueueFeederThread', daemon=True,
            args=(feed, self._pipe_r.close, self._pipe_w.close,
                  self._ignore_epipe, self._on_queue_feeder_error,
                  self._feed._count_out if self._count() is not None
                  else self._sem.release))
        # gh-109047: starting a thread can fail while Python shuts down;
        # the exception propagates to put() and no thread is recorded.
        thread.start()
        self._thread = thread
        if not self._joincancelled:
            self._jointhread = Finalize(thread, _join_feeder,
                                        [weakref.ref(thread)],
                                        exitpriority=-5)
        # When the queue is collected, or at exit, let the feeder finish.
        self._close = Finalize(self, feed._stop, exitpriority=10)

    def _report_send_error(self, exc, obj):
        # Called by the native put() when obj cannot be pickled or written:
        # the stdlib's feeder thread reports such failures through the hook
        # and drops the message; the same happens here, in put's thread.
        if _feeder_gives_up(exc, self._ignore_epipe):
            return
        self._give_room()
        hook = self._on_queue_feeder_error
        if exc.__traceback__ is None:
            # raised by native code alone (a write, the pickler itself)
            _call_feeder_error_hook(hook, exc, obj)
        else:
            _report_pickling_error(hook, exc, obj)

    @staticmethod
    def _on_queue_feeder_error(e, obj):
        # Hook (private API, overridden by concurrent.futures): obj could
        # not be pickled or sent and was dropped; e is the exception, also
        # the one being handled when this runs.  Default: print it.
        import traceback
        traceback.print_exc()

    __class_getitem__ = classmethod(types.GenericAlias)


class JoinableQueue(Queue):
    """A Queue whose consumers report each item done (task_done), so that
    join() can wait until every item put has been processed."""

    def __init__(self, maxsize=0, *, ctx):
        super().__init__(maxsize, ctx=ctx)
        self._unfinished_tasks = ctx.Semaphore(0)
        self._cond = ctx.Condition()

    def __getstate__(self):
        extra = (self._cond, self._unfinished_tasks)
        return super().__getstate__() + extra

    def __setstate__(self, state):
        *base, self._cond, self._unfinished_tasks = state
        super().__setstate__(tuple(base))

    def put(self, obj, block=True, timeout=None):
        # closed -> ValueError, no room in time -> queue.Full, as Queue.put
        self._reserve(block, timeout)
        # Count the task before the item can be seen: a consumer may call
        # task_done() as soon as it is in the pipe.
        with self._cond:
            self._unfinished_tasks.release()
            self._put_acquired(obj)

    def _no_task_left(self):
        return self._unfinished_tasks._semlock._is_zero()

    def task_done(self):
        cond = self._cond
        with cond:
            counted = self._unfinished_tasks.acquire(False)
            if counted and self._no_task_left():
                cond.notify_all()
        if not counted:
            raise ValueError('task_done() called too many times')

    def join(self):
        cond = self._cond
        with cond:
            while not self._no_task_left():
                cond.wait()


class SimpleQueue(_RingQueue):
    """A locked pipe (and ring): put() and get() block until done; no size
    limit and no feeder thread."""

    def __init__(self, *, ctx):
        reader, writer = connection.Pipe(duplex=False)
        self.__setstate__((reader, writer, _pipe_lock(ctx), _pipe_lock(ctx),
                           _new_ring()))

    def __getstate__(self):
        context.assert_spawning(self)
        return (self._pipe_r, self._pipe_w, self._rlock, self._wlock,
                _ring_state(self._ring))

    def __setstate__(self, state):
        self._pipe_r, self._pipe_w, self._rlock, self._wlock, ring = state
        self._ring = _ring_from_state(ring)
        _connect(self, None)

    put = _QueueBase._simple_put
    get = _QueueBase._simple_get

    def empty(self):
        return not self._poll()

    def close(self):
        self._pipe_r.close()
        self._pipe_w.close()

    if sys.version_info >= (3, 12):
        __class_getitem__ = classmethod(types.GenericAlias)
