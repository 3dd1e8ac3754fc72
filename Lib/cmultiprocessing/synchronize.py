"""Locks, semaphores, conditions, events and barriers shared between
processes.

Every lock and semaphore here *is* a native ``_cmultiprocessing.SemLock``
(a Python subclass of it), so ``acquire``/``release`` and the ``with``
statement go straight to C.  Condition and Event keep the stdlib's layout
(a lock plus three counting semaphores, and a flag semaphore for Event) but
run their wait/notify/set/... bodies in ``_cmultiprocessing._ConditionCore``.

Named semaphores: with the "fork" start method a semaphore's name is
removed at once (children inherit the open semaphore); with "spawn" and
"forkserver" children reopen it by name, so the name stays until the object
is finalized and is registered with the resource tracker meanwhile.  The
one exception is the RLock a fork context's Value() or Array() makes for
itself: where the OS can (Linux), its semaphore is made in a block of
shared memory from the locks' heap and never has a name
(_rlock_in_memory).  A child process forgets the parent's acquisitions of
every lock at once (util._run_after_forkers, semlock.h).

A semaphore has no owner at the OS level, so a process that dies holding
one of the stdlib's locks leaves it locked for ever, and that is what a
Lock or RLock does here too by default (libraries such as pebble detect a
dead holder by an acquire that times out, and stop, since what the lock
guarded may be half-written).  Made with ``robust=True`` (ctx.Lock(robust=
True), ctx.RLock(robust=True); not in the stdlib), a lock also records its
holder (pid and start time) in a few bytes of shared memory; a waiter that
finds the holder gone (within CMP_WAIT_SLICE, 50 ms, of waiting, or at once
when its timeout is up) takes the lock over and is told so by an
``AbandonedLockWarning`` (a RuntimeWarning).  Made an error by the warnings
filter, the warning leaves the lock abandoned, so the next acquirer is told
too.  A robust lock can serve a Condition or a Value/Array (their ``lock``
argument).  The locks the package keeps for itself are taken over quietly,
where it can repair what a dead holder left: the queues' (TornMessageError
tells of a message cut off) and Event's.  Counting semaphores (Semaphore,
BoundedSemaphore) cannot be robust: a unit has no owner.
"""

__all__ = [
    'Lock', 'RLock', 'Semaphore', 'BoundedSemaphore', 'Condition', 'Event'
    ]

import operator
import os
import sys
import threading
import time

import _cmultiprocessing
from _cmultiprocessing import AbandonedLockWarning, sem_unlink  # noqa: F401

from . import context
from . import heap
from . import process
from . import util

RECURSIVE_MUTEX = _cmultiprocessing.RECURSIVE_MUTEX
SEMAPHORE = _cmultiprocessing.SEMAPHORE
SEM_VALUE_MAX = _cmultiprocessing.SemLock.SEM_VALUE_MAX

# 3.14: Lock/RLock/Semaphore gain locked(); the reprs ask the semaphore
# whether it is taken (_is_zero) and read counts through get_value().
_PY314 = sys.version_info >= (3, 14)

_NAME_ATTEMPTS = 100
_FORK_CTX_MESSAGE = (
    'A SemLock created in a fork context is being shared with a process in '
    'a spawn context. This is not supported. Please use the same context to '
    'create multiprocessing objects and Process.')


def _fresh_name():
    """A semaphore name unlikely to be in use: the process's prefix plus
    random hex (drawn from the OS, so forked children never repeat their
    parent's sequence).  Short enough for macOS's 31-character limit."""
    prefix = process.current_process()._config.get('semprefix', '/mp')
    return '%s-%s' % (prefix, os.urandom(5).hex())


def _forget_name(name):
    """Finalizer of a named semaphore: remove the name, tell the tracker."""
    from .resource_tracker import unregister
    sem_unlink(name)
    unregister(name, 'semaphore')


# The owner records of Lock and RLock (Modules/robust.h: the record is the
# lock; 24 bytes each), and the semaphores made in memory
# (_rlock_in_memory), come from a heap of their own (sharedctypes' heap is
# BufferWrapper._heap, whose books the stdlib's tests read).
_OWNER_RECORD_SIZE = 24
_owner_heap = heap.Heap()

# Each record has a cache line of its own: the block is two lines long and
# the record sits at its first line boundary (arenas are page-aligned, so
# the offset tells).  128 bytes: Apple's arm64 cores have lines that long,
# and x86's adjacent-line prefetcher pairs 64-byte lines.  Packed at 24
# bytes, a queue's reader lock and writer lock shared a line: the
# consumer's compare-and-swap missed the cache at every get, the producer
# having written its record meanwhile (79% of cmp_semlock_take's samples
# on that one instruction, 1 producer + 1 consumer).
_CACHE_LINE = 128
_OWNER_BLOCK_SIZE = 2 * _CACHE_LINE


def _owner_view(block):
    at = -block.start % _CACHE_LINE
    return memoryview(block)[at:at + _OWNER_RECORD_SIZE]


# Bytes a semaphore made in shared memory takes; 0 where the OS cannot make
# one there (macOS, Windows).
_SEM_IN_MEMORY_SIZE = _cmultiprocessing._SEM_IN_MEMORY_SIZE
_native_new = _cmultiprocessing.SemLock.__new__


def _rlock_in_memory():
    """A fork context's RLock whose semaphore lives in a block of
    _owner_heap (sem_init, process-shared) instead of a named semaphore: no
    file is made and removed in /dev/shm, which is most of what a named one
    costs.  Only forked children reach it (a fork context's lock refuses to
    be pickled); the block is the lock's for as long as the lock object
    lives in this process.  Used only for the lock Value() and Array() make
    for themselves, whose memory lives exactly as long as the value's own
    (see sharedctypes._guard_for)."""
    self = _native_new(RLock, RECURSIVE_MUTEX, 1, 1, None, True,
                       _owner_heap.take(_SEM_IN_MEMORY_SIZE))
    self._fork_only = True
    util.debug('created semlock with handle %s' % self.handle)
    return self


def _record_owner(lock, block, quiet):
    lock._set_owner_record(_owner_view(block), quiet)
    lock._owner_block = block
    lock._owner_quiet = quiet


def _rebuild_semlock(cls, state, owner):
    """A lock or semaphore in a child process (see SemLock.__reduce__)."""
    self = cls._rebuild(*state)
    if owner is not None:
        arena, start, size, quiet = owner
        _record_owner(self, arena.view(start, size), quiet)
    return self


def _caller_label():
    """'ProcessName' or 'ProcessName|ThreadName' for reprs."""
    label = process.current_process().name
    thread_name = threading.current_thread().name
    if thread_name != 'MainThread':
        label = '%s|%s' % (label, thread_name)
    return label


class SemLock(_cmultiprocessing.SemLock):
    """Base of the lock and semaphore classes: a native SemLock that knows
    its start method, survives fork and pickles for spawned children.

    Subclasses say which semaphore they need through ``_shape()``."""

    # No instance dict: attribute lookups on a slotted subclass of the native
    # type stay on the fast path (acquire/release cost about half as much).
    __slots__ = ('_fork_only', '_owner_block', '_owner_quiet', '__weakref__')

    # Whether the holder can be recorded, so that a lock whose holder dies
    # can be taken over (Lock, RLock with robust=True, or 'quiet': without
    # AbandonedLockWarning, for the queues' and Event's own locks; see the
    # module's docstring).
    _can_be_robust = False

    @property
    def _is_fork_ctx(self):
        # Objects unpickled in a child (built by _rebuild) are never
        # fork-only.
        return getattr(self, '_fork_only', False)

    @classmethod
    def _shape(cls, kind, value, maxvalue):
        return kind, value, maxvalue

    def __new__(cls, *args, ctx=None, robust=False, **kwargs):
        kind, value, maxvalue = cls._shape(*args, **kwargs)
        if ctx is None:
            ctx = context._default_context.get_context()
        fork_only = ctx.get_start_method() == 'fork'
        # Windows duplicates handles instead of reopening names.
        unlink_now = fork_only or sys.platform == 'win32'
        native_new = _cmultiprocessing.SemLock.__new__
        for _ in range(_NAME_ATTEMPTS):
            try:
                self = native_new(cls, kind, value, maxvalue, _fresh_name(),
                                  unlink_now)
            except FileExistsError:
                continue
            break
        else:
            raise FileExistsError('cannot find name for semaphore')
        if fork_only:
            self._fork_only = True
        if robust and not cls._can_be_robust:
            raise ValueError('a counting semaphore has no owner: it cannot '
                             'be robust')
        if robust:
            _record_owner(self, _owner_heap.take(_OWNER_BLOCK_SIZE),
                          robust == 'quiet')
        return self

    def __init__(self, *args, ctx=None, robust=False, **kwargs):
        util.debug('created semlock with handle %s' % self.handle)
        # (a child process starts owning nothing: util._run_after_forkers
        # resets every SemLock at once, see semlock.h)
        name = self.name
        if name is not None:
            # Named until finalized (spawn/forkserver): the tracker removes
            # the name if this process dies first.
            from .resource_tracker import register
            register(name, 'semaphore')
            util.Finalize(self, _forget_name, (name,), exitpriority=0)

    @property
    def _semlock(self):
        """The native lock (the object itself; kept for the stdlib's
        ``obj._semlock`` spelling)."""
        return self

    def __getstate__(self):
        context.assert_spawning(self)
        if sys.platform == 'win32':
            popen = context.get_spawning_popen()
            handle = popen.duplicate_for_child(self.handle)
        elif self._is_fork_ctx:
            raise RuntimeError(_FORK_CTX_MESSAGE)
        else:
            handle = self.handle
        return (handle, self.kind, self.maxvalue, self.name)

    def __reduce__(self):
        # Rebuilt in the child by the native classmethod, which reopens the
        # semaphore by name (or takes the duplicated handle on Windows);
        # the owner record's arena travels as Value's memory does.
        state = self.__getstate__()
        block = getattr(self, '_owner_block', None)
        owner = None if block is None else (block.arena, block.start,
                                            block.size, self._owner_quiet)
        return (_rebuild_semlock, (type(self), state, owner))

    if _PY314:
        # The native method itself (no Python frame): True while the count
        # is zero, that is while a lock is held by anyone, anywhere.
        locked = _cmultiprocessing.SemLock._is_zero


class Semaphore(SemLock):
    """A counting semaphore: ``Semaphore(value=1)``."""

    __slots__ = ()

    @classmethod
    def _shape(cls, value=1):
        return SEMAPHORE, value, SEM_VALUE_MAX

    def get_value(self):
        return self._get_value()

    if _PY314:
        get_value.__doc__ = (
            """The semaphore's current count.

            NotImplementedError where the OS cannot read a semaphore's
            count (macOS has no working sem_getvalue()).""")

        def _value_for_repr(self):
            try:
                return self.get_value()
            except Exception:
                return 'unknown'
    else:
        def _value_for_repr(self):
            try:
                return self._get_value()
            except Exception:
                return 'unknown'

    def __repr__(self):
        return '<%s(value=%s)>' % (type(self).__name__,
                                   self._value_for_repr())


class BoundedSemaphore(Semaphore):
    """A semaphore that refuses (ValueError) to go above its initial value."""

    __slots__ = ()

    @classmethod
    def _shape(cls, value=1):
        return SEMAPHORE, value, value

    def __repr__(self):
        return '<%s(value=%s, maxvalue=%s)>' % (
            type(self).__name__, self._value_for_repr(), self.maxvalue)


def _describe_holder(lock):
    """(owner, count) as the Lock/RLock reprs show them."""
    if lock._is_mine():
        return _caller_label(), lock._count()
    if (not lock._is_zero()) if _PY314 else lock._get_value() == 1:
        return 'None', 0
    if lock._count() > 0:
        return 'SomeOtherThread', 'nonzero'
    return 'SomeOtherProcess', 'nonzero'


class Lock(SemLock):
    """A non-recursive lock; releasing it unlocked raises ValueError."""

    __slots__ = ()
    _can_be_robust = True

    @classmethod
    def _shape(cls):
        return SEMAPHORE, 1, 1

    def __repr__(self):
        try:
            owner = _describe_holder(self)[0]
        except Exception:
            owner = 'unknown'
        return '<%s(owner=%s)>' % (type(self).__name__, owner)


class RLock(SemLock):
    """A recursive lock: the holding thread may acquire it again; only that
    thread may release it."""

    __slots__ = ()
    _can_be_robust = True

    @classmethod
    def _shape(cls):
        return RECURSIVE_MUTEX, 1, 1

    def __repr__(self):
        try:
            owner, depth = _describe_holder(self)
        except Exception:
            owner = depth = 'unknown'
        return '<%s(%s, %s)>' % (type(self).__name__, owner, depth)


class _LockMethod(property):
    """``cond.__enter__`` / ``cond.__exit__``: the method of the same name
    of the condition's lock, fetched in C (a property over an attrgetter);
    callable on the class too, as ``Condition.__enter__(cond)`` (which
    contextlib.ExitStack does)."""

    def __init__(self, name):
        super().__init__(operator.attrgetter('_lock.' + name))

    def __call__(self, cond, *args):
        return self.fget(cond)(*args)


class Condition(object):
    """A condition variable over a Lock or RLock of this package (an RLock
    of its own by default)."""

    def __init__(self, lock=None, *, ctx):
        if lock is None:
            lock = ctx.RLock()
        self._lock = lock
        self._sleeping_count = ctx.Semaphore(0)
        self._woken_count = ctx.Semaphore(0)
        self._wait_semaphore = ctx.Semaphore(0)
        self._attach()

    def _attach(self):
        lock = self._lock
        native = getattr(lock, '_semlock', None)
        if not isinstance(native, _cmultiprocessing.SemLock):
            raise TypeError('Condition needs a Lock or RLock from '
                            'cmultiprocessing, not %r' % type(lock).__name__)
        self._core = _cmultiprocessing._ConditionCore(
            native, self._sleeping_count, self._woken_count,
            self._wait_semaphore)
        # bound native methods: no Python frame on the hot paths
        self.acquire = lock.acquire
        self.release = lock.release
        self.wait = self._core.wait
        self.notify = self._core.notify
        self.notify_all = self._core.notify_all

    # The class-level methods document the API; instances use the native
    # bound methods set by _attach().
    def acquire(self, block=True, timeout=None):
        return self._lock.acquire(block, timeout)

    def release(self):
        return self._lock.release()

    def wait(self, timeout=None):
        return self._core.wait(timeout)

    def notify(self, n=1):
        return self._core.notify(n)

    def notify_all(self):
        return self._core.notify_all()

    def __getstate__(self):
        context.assert_spawning(self)
        return {'lock': self._lock, 'sleeping': self._sleeping_count,
                'woken': self._woken_count, 'waiting': self._wait_semaphore}

    def __setstate__(self, state):
        self._lock = state['lock']
        self._sleeping_count = state['sleeping']
        self._woken_count = state['woken']
        self._wait_semaphore = state['waiting']
        self._attach()

    def __repr__(self):
        try:
            if _PY314:
                waiters = (self._sleeping_count.get_value() -
                           self._woken_count.get_value())
            else:
                waiters = (self._sleeping_count._get_value() -
                           self._woken_count._get_value())
        except Exception:
            waiters = 'unknown'
        return '<%s(%s, %s)>' % (type(self).__name__, self._lock, waiters)

    # `with cond:` is `with` on the underlying lock: the lookup hands out
    # the lock's own native __enter__/__exit__, so no Python frame runs.
    __enter__ = _LockMethod('__enter__')
    __exit__ = _LockMethod('__exit__')

    def wait_for(self, predicate, timeout=None):
        """Wait until predicate() is true (or the timeout passes); returns
        the last value of predicate()."""
        deadline = None if timeout is None else time.monotonic() + timeout
        wait = self.wait
        while True:
            outcome = predicate()
            if outcome:
                return outcome
            if deadline is None:
                wait(None)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return outcome
            wait(remaining)


class Event(object):
    """A flag that processes can set, clear and wait for."""

    def __init__(self, *, ctx):
        # (its lock guards only the Event's own state: taken over quietly)
        self._cond = ctx.Condition(Lock(ctx=ctx.get_context(),
                                        robust='quiet'))
        self._flag = ctx.Semaphore(0)
        self._attach()

    def _attach(self):
        cond = self._cond
        core = _cmultiprocessing._ConditionCore(
            cond._lock._semlock, cond._sleeping_count, cond._woken_count,
            cond._wait_semaphore, self._flag)
        self._core = core
        self.is_set = core.is_set
        self.set = core.set
        self.clear = core.clear
        self.wait = core.event_wait

    def is_set(self):
        return self._core.is_set()

    def set(self):
        return self._core.set()

    def clear(self):
        return self._core.clear()

    def wait(self, timeout=None):
        return self._core.event_wait(timeout)

    def __getstate__(self):
        return {'cond': self._cond, 'flag': self._flag}

    def __setstate__(self, state):
        self._cond = state['cond']
        self._flag = state['flag']
        self._attach()

    def __repr__(self):
        state = 'set' if self.is_set() else 'unset'
        return '<%s at %#x %s>' % (type(self).__qualname__, id(self), state)


class _SharedInt(object):
    """An int slot of a barrier's shared block, so that every process reads
    and writes the same value where threading.Barrier keeps a plain
    attribute."""

    def __init__(self, index):
        self._index = index

    def __get__(self, barrier, owner=None):
        if barrier is None:
            return self
        return barrier._array[self._index]

    def __set__(self, barrier, value):
        barrier._array[self._index] = value


class Barrier(threading.Barrier):
    """threading.Barrier whose state lives in shared memory and whose
    condition is a process-shared Condition."""

    _state = _SharedInt(0)
    _count = _SharedInt(1)

    def __init__(self, parties, action=None, timeout=None, *, ctx):
        if parties < 1:
            raise ValueError('parties must be > 0')
        from .heap import BufferWrapper
        block = BufferWrapper(2 * _SLOT_SIZE)
        self._adopt(parties, action, timeout, ctx.Condition(), block)
        self._state = 0
        self._count = 0

    def _adopt(self, parties, action, timeout, cond, block):
        self._parties = parties
        self._action = action
        self._timeout = timeout
        self._cond = cond
        self._wrapper = block
        self._array = block.create_memoryview().cast('i')

    def __getstate__(self):
        return {'parties': self._parties, 'action': self._action,
                'timeout': self._timeout, 'cond': self._cond,
                'block': self._wrapper}

    def __setstate__(self, state):
        self._adopt(state['parties'], state['action'], state['timeout'],
                    state['cond'], state['block'])


_SLOT_SIZE = memoryview(b'\0\0\0\0').cast('i').itemsize
