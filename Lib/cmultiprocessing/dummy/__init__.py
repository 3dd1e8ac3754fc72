"""Thread-backed stand-in for the cmultiprocessing API.

Every name here mirrors the one of the same name at the top of the package,
but the "processes" are threads of the current interpreter, the queues are
`queue.Queue` objects and the "shared" objects are plain Python objects.
"""

import array as _array
import sys as _sys
import threading as _threading
import weakref as _weakref
from queue import Queue
from threading import (Barrier, BoundedSemaphore, Condition, Event, Lock,
                       RLock, Semaphore)

from .connection import Pipe
from .. import process as _process

__all__ = [
    'Process', 'current_process', 'active_children', 'freeze_support',
    'Lock', 'RLock', 'Semaphore', 'BoundedSemaphore', 'Condition',
    'Event', 'Barrier', 'Queue', 'Manager', 'Pipe', 'Pool', 'JoinableQueue',
]

JoinableQueue = Queue
# The "manager" of this module is the module itself, so these are the
# builtin containers.
dict = dict
list = list

current_process = _threading.current_thread


def _own_children(thread):
    """The weak table of threads started by *thread* (created on demand)."""
    try:
        return thread._children
    except AttributeError:
        table = thread._children = _weakref.WeakKeyDictionary()
        return table


class DummyProcess(_threading.Thread):
    """A thread that looks like a Process: it has a parent, children and
    an exit code (0 once it has run, None before or while it runs)."""

    def __init__(self, group=None, target=None, name=None, args=(),
                 kwargs=_process._NO_KWARGS):
        super().__init__(group, target, name, args, kwargs)
        self._parent = current_process()
        self._start_called = False
        self._children = _weakref.WeakKeyDictionary()
        self._pid = None

    def start(self):
        me = current_process()
        if me is not self._parent:
            raise RuntimeError(
                f"Parent is {self._parent!r} but current_process is {me!r}")
        self._start_called = True
        registry = getattr(self._parent, '_children', None)
        if registry is not None:
            registry[self] = None
        super().start()

    @property
    def exitcode(self):
        finished = self._start_called and not self.is_alive()
        return 0 if finished else None


Process = DummyProcess
_own_children(current_process())


def active_children():
    """Threads started by the calling thread that are still running."""
    registry = current_process()._children
    running = []
    for child in tuple(registry):
        if child.is_alive():
            running.append(child)
        else:
            registry.pop(child, None)
    return running


def freeze_support():
    """Nothing to do for threads."""


class Namespace(object):
    """A bag of attributes whose repr lists the public ones, sorted."""

    def __init__(self, /, **kwds):
        vars(self).update(kwds)

    def __repr__(self):
        shown = sorted(f'{key}={val!r}' for key, val in vars(self).items()
                       if not key.startswith('_'))
        return f"{type(self).__name__}({', '.join(shown)})"


class Value(object):
    """A boxed value; *lock* is accepted for signature compatibility."""

    def __init__(self, typecode, value, lock=True):
        self._typecode, self._value = typecode, value

    def _get(self):
        return self._value

    def _set(self, value):
        self._value = value

    value = property(_get, _set)
    del _get, _set

    def __repr__(self):
        return f'<{type(self).__name__}({self._typecode!r}, {self._value!r})>'


def Array(typecode, sequence, lock=True):
    """An `array.array`; *lock* is accepted for signature compatibility."""
    return _array.array(typecode, sequence)


def Manager():
    """This module plays the part of a started manager."""
    return _sys.modules[__name__]


def shutdown():
    """Nothing to shut down: there is no manager process."""


def Pool(processes=None, initializer=None, initargs=()):
    """A pool of worker threads (`cmultiprocessing.pool.ThreadPool`)."""
    from ..pool import ThreadPool
    return ThreadPool(processes, initializer, initargs)
