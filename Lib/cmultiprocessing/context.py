"""Contexts: one object per start method ('fork', 'spawn', 'forkserver')
carrying the whole public API bound to that method, plus the default
context whose method can be chosen once per program."""

import importlib
import os
import sys
import threading

import _cmultiprocessing

from . import process
from . import reduction

__all__ = ()

# The exception hierarchy lives in the extension module so that C code
# raises the very same classes.
ProcessError = _cmultiprocessing.ProcessError
BufferTooShort = _cmultiprocessing.BufferTooShort
TimeoutError = _cmultiprocessing.TimeoutError
AuthenticationError = _cmultiprocessing.AuthenticationError

_PACKAGE = __name__.rpartition('.')[0]


def _sibling(module, attr):
    """Attribute `attr` of sibling module `module`, imported on demand."""
    return getattr(importlib.import_module('%s.%s' % (_PACKAGE, module)), attr)


class BaseContext(object):
    """The package API; the bound methods of an instance make up the
    module-level functions of ``cmultiprocessing``."""

    ProcessError = ProcessError
    BufferTooShort = BufferTooShort
    TimeoutError = TimeoutError
    AuthenticationError = AuthenticationError

    current_process = staticmethod(process.current_process)
    parent_process = staticmethod(process.parent_process)
    active_children = staticmethod(process.active_children)

    def cpu_count(self):
        """Returns the number of CPUs in the system"""
        count = os.cpu_count()
        if count is None:
            raise NotImplementedError('cannot determine number of cpus')
        return count

    # -- objects shared between processes ----------------------------------

    def Manager(self):
        """Returns a started SyncManager: a server process holding shared
        objects (dicts, lists, locks, queues...) reached through proxies."""
        manager = _sibling('managers', 'SyncManager')(ctx=self.get_context())
        manager.start()
        return manager

    def Pipe(self, duplex=True):
        """Returns two connection object connected by a pipe"""
        return _sibling('connection', 'Pipe')(duplex)

    def Lock(self):
        """Returns a non-recursive lock object"""
        return _sibling('synchronize', 'Lock')(ctx=self.get_context())

    def RLock(self):
        """Returns a recursive lock object"""
        return _sibling('synchronize', 'RLock')(ctx=self.get_context())

    def Condition(self, lock=None):
        """Returns a condition object"""
        return _sibling('synchronize', 'Condition')(
            lock, ctx=self.get_context())

    def Semaphore(self, value=1):
        """Returns a semaphore object"""
        return _sibling('synchronize', 'Semaphore')(
            value, ctx=self.get_context())

    def BoundedSemaphore(self, value=1):
        """Returns a bounded semaphore object"""
        return _sibling('synchronize', 'BoundedSemaphore')(
            value, ctx=self.get_context())

    def Event(self):
        """Returns an event object"""
        return _sibling('synchronize', 'Event')(ctx=self.get_context())

    def Barrier(self, parties, action=None, timeout=None):
        """Returns a barrier object"""
        return _sibling('synchronize', 'Barrier')(
            parties, action, timeout, ctx=self.get_context())

    def Queue(self, maxsize=0):
        """Returns a queue object"""
        return _sibling('queues', 'Queue')(maxsize, ctx=self.get_context())

    def JoinableQueue(self, maxsize=0):
        """Returns a queue object"""
        return _sibling('queues', 'JoinableQueue')(
            maxsize, ctx=self.get_context())

    def SimpleQueue(self):
        """Returns a queue object"""
        return _sibling('queues', 'SimpleQueue')(ctx=self.get_context())

    def Pool(self, processes=None, initializer=None, initargs=(),
             maxtasksperchild=None):
        """Returns a process pool object"""
        return _sibling('pool', 'Pool')(
            processes, initializer, initargs, maxtasksperchild,
            context=self.get_context())

    def RawValue(self, typecode_or_type, *args):
        """Returns a shared object"""
        return _sibling('sharedctypes', 'RawValue')(typecode_or_type, *args)

    def RawArray(self, typecode_or_type, size_or_initializer):
        """Returns a shared array"""
        return _sibling('sharedctypes', 'RawArray')(
            typecode_or_type, size_or_initializer)

    def Value(self, typecode_or_type, *args, lock=True):
        """Returns a synchronized shared object"""
        return _sibling('sharedctypes', 'Value')(
            typecode_or_type, *args, lock=lock, ctx=self.get_context())

    def Array(self, typecode_or_type, size_or_initializer, *, lock=True):
        """Returns a synchronized shared array"""
        return _sibling('sharedctypes', 'Array')(
            typecode_or_type, size_or_initializer, lock=lock,
            ctx=self.get_context())

    # -- configuration and logging -----------------------------------------

    def freeze_support(self):
        """In a frozen Windows executable started as a child process, run
        the child's code and exit; otherwise do nothing."""
        if sys.platform == 'win32' and getattr(sys, 'frozen', False):
            _sibling('spawn', 'freeze_support')()

    def get_logger(self):
        """Return package logger -- if it does not already exist then
        it is created."""
        return _sibling('util', 'get_logger')()

    def log_to_stderr(self, level=None):
        """Turn on logging and add a handler which prints to stderr"""
        return _sibling('util', 'log_to_stderr')(level)

    def allow_connection_pickling(self):
        """Make connections and sockets picklable for other processes.
        Importing the connection module is all it takes (undocumented)."""
        importlib.import_module(_PACKAGE + '.connection')

    def set_executable(self, executable):
        """Use `executable` instead of sys.executable to start spawned
        children (useful when Python is embedded)."""
        _sibling('spawn', 'set_executable')(executable)

    def set_forkserver_preload(self, module_names):
        """Modules the fork server should try to import up front (a
        hint)."""
        _sibling('forkserver', 'set_forkserver_preload')(module_names)

    # -- start methods -----------------------------------------------------

    def get_context(self, method=None):
        if method is None:
            return self
        ctx = _concrete_contexts.get(method) if isinstance(method, str) \
            else None
        if ctx is None:
            raise ValueError('cannot find context for %r' % (method,))
        ctx._check_available()
        return ctx

    def get_start_method(self, allow_none=False):
        return self._name

    def set_start_method(self, method, force=False):
        raise ValueError('cannot set start method of concrete context')

    @property
    def reducer(self):
        """Controls how objects will be reduced to a form that can be
        shared with other processes."""
        return globals().get('reduction')

    @reducer.setter
    def reducer(self, reduction):
        globals()['reduction'] = reduction

    def _check_available(self):
        pass


def _have_send_handle():
    return bool(getattr(reduction, 'HAVE_SEND_HANDLE', False))


# ---------------------------------------------------------------------------
# The default context: its start method is fixed on first use, or by one
# set_start_method() call.


class Process(process.BaseProcess):
    """Process class of the default context: starts children with whatever
    start method the default context resolves to."""

    _start_method = None

    @staticmethod
    def _Popen(process_obj):
        return _default_context.get_context().Process._Popen(process_obj)

    @staticmethod
    def _after_fork():
        return _default_context.get_context().Process._after_fork()


class DefaultContext(BaseContext):
    Process = Process

    def __init__(self, context):
        self._default_context = context
        self._actual_context = None

    def _resolve(self):
        if self._actual_context is None:
            self._actual_context = self._default_context
        return self._actual_context

    def get_context(self, method=None):
        if method is None:
            return self._resolve()
        return super().get_context(method)

    def set_start_method(self, method, force=False):
        if self._actual_context is not None and not force:
            raise RuntimeError('context has already been set')
        if method is None and force:
            self._actual_context = None
        else:
            self._actual_context = self.get_context(method)

    def get_start_method(self, allow_none=False):
        if self._actual_context is None and allow_none:
            return None
        return self._resolve()._name

    def get_all_start_methods(self):
        """Returns a list of the supported start methods, default first."""
        if sys.platform == 'win32':
            return ['spawn']
        found = ['fork', 'spawn']
        if sys.platform == 'darwin':
            found.reverse()
        if _have_send_handle():
            found.append('forkserver')
        return found


# ---------------------------------------------------------------------------
# One context per start method


def _popen_class(module):
    return _sibling(module, 'Popen')


def _no_after_fork():
    """A spawned child starts afresh: nothing to redo after fork."""


if sys.platform != 'win32':

    class ForkProcess(process.BaseProcess):
        _start_method = 'fork'

        @staticmethod
        def _Popen(process_obj):
            return _popen_class('popen_fork')(process_obj)

    class SpawnProcess(process.BaseProcess):
        _start_method = 'spawn'
        _after_fork = staticmethod(_no_after_fork)

        @staticmethod
        def _Popen(process_obj):
            return _popen_class('popen_spawn_posix')(process_obj)

    class ForkServerProcess(process.BaseProcess):
        _start_method = 'forkserver'

        @staticmethod
        def _Popen(process_obj):
            return _popen_class('popen_forkserver')(process_obj)

    class ForkContext(BaseContext):
        _name = 'fork'
        Process = ForkProcess

    class SpawnContext(BaseContext):
        _name = 'spawn'
        Process = SpawnProcess

    class ForkServerContext(BaseContext):
        _name = 'forkserver'
        Process = ForkServerProcess

        def _check_available(self):
            if not _have_send_handle():
                raise ValueError('forkserver start method not available')

    _concrete_contexts = {
        'fork': ForkContext(),
        'spawn': SpawnContext(),
        'forkserver': ForkServerContext(),
    }
    # macOS: code run after fork() is unreliable since 10.14 (bpo-33725).
    _DEFAULT_METHOD = 'spawn' if sys.platform == 'darwin' else 'fork'

else:

    class SpawnProcess(process.BaseProcess):
        _start_method = 'spawn'
        _after_fork = staticmethod(_no_after_fork)

        @staticmethod
        def _Popen(process_obj):
            return _popen_class('popen_spawn_win32')(process_obj)

    class SpawnContext(BaseContext):
        _name = 'spawn'
        Process = SpawnProcess

    _concrete_contexts = {'spawn': SpawnContext()}
    _DEFAULT_METHOD = 'spawn'

_default_context = DefaultContext(_concrete_contexts[_DEFAULT_METHOD])


def _force_start_method(method):
    """Make `method` the default context's method (used in children)."""
    _default_context._actual_context = _concrete_contexts[method]


# ---------------------------------------------------------------------------
# Which Popen (if any) is pickling a process object for a new child, per
# thread.  Objects that may only travel by inheritance check it.

_tls = threading.local()


def get_spawning_popen():
    return getattr(_tls, 'spawning_popen', None)


def set_spawning_popen(popen):
    _tls.spawning_popen = popen


def assert_spawning(obj):
    if get_spawning_popen() is None:
        raise RuntimeError(
            '%s objects should only be shared between processes'
            ' through inheritance' % type(obj).__name__)
