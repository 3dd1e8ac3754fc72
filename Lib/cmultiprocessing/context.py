"""Contexts: one object per start method ('fork', 'spawn', 'forkserver')
carrying the whole public API bound to that method, plus the default
context whose method can be chosen once per program."""

import importlib
import os
import sys
from _thread import _local as _ThreadLocal     # threading.local itself

# The exception hierarchy lives in the extension module so that C code
# raises the very same classes.
from _cmultiprocessing import (AuthenticationError, BufferTooShort,
                               ProcessError, TimeoutError)

from . import process, reduction

__all__ = ()

_PACKAGE = __name__.rpartition('.')[0]
_PY314 = sys.version_info >= (3, 14)


def _sibling(module, attr):
    """Attribute `attr` of sibling module `module`, imported on demand.

    Looked up on every call, as the stdlib's `from .x import y` in each
    method does (a patched attribute is seen); a module already imported
    is taken from where the last call found it while sys.modules still
    holds it there, which costs a fifth of import_module() on paths as
    short as RawArray('b', 100)."""
    try:
        name, mod = _siblings[module]
        if sys.modules.get(name) is mod:
            return getattr(mod, attr)
    except KeyError:
        name = _PACKAGE + '.' + module
    mod = importlib.import_module(name)     # waits for one being imported
    _siblings[module] = name, mod
    return getattr(mod, attr)


_siblings = {}      # module -> (its full name, the module once imported)


def _get_reducer(ctx):
    return globals().get('reduction')


def _set_reducer(ctx, value):
    globals()['reduction'] = value


class BaseContext(object):
    """The package API; the bound methods of an instance make up the
    module-level functions of ``cmultiprocessing``."""

    (ProcessError, BufferTooShort, TimeoutError, AuthenticationError) = (
        ProcessError, BufferTooShort, TimeoutError, AuthenticationError)

    current_process, parent_process, active_children = map(
        staticmethod, (process.current_process, process.parent_process,
                       process.active_children))

    reducer = property(
        _get_reducer, _set_reducer,
        doc="Controls how objects will be reduced to a form that can be "
            "shared with other processes.")

    def cpu_count(self):
        """Returns the number of CPUs in the system"""
        count = os.cpu_count()
        if count is not None:
            return count
        raise NotImplementedError('cannot determine number of cpus')

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

    def Lock(self, *, robust=False):
        """Returns a non-recursive lock object (robust=True: taken over by
        the next acquirer when its holder dies; not in the stdlib)"""
        return _sibling('synchronize', 'Lock')(ctx=self.get_context(),
                                               robust=robust)

    def RLock(self, *, robust=False):
        """Returns a recursive lock object (robust=True: taken over by the
        next acquirer when its holder dies; not in the stdlib)"""
        return _sibling('synchronize', 'RLock')(ctx=self.get_context(),
                                                robust=robust)

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
        """In a frozen executable started as a child process, run the
        child's code and exit; otherwise do nothing."""
        if not getattr(sys, 'frozen', False):
            return
        if _PY314:
            # Any platform whose method is (or will default to) spawn; the
            # question must not fix the default method (gh-140814).
            if self.get_start_method(allow_none=True) not in ('spawn', None):
                return
        elif sys.platform != 'win32':
            return
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

    if sys.version_info >= (3, 15):
        def set_forkserver_preload(self, module_names, *, on_error='ignore'):
            """Modules the fork server should try to import up front.

            on_error: what a failed import does in the server -- "ignore"
            (the default), "warn" (an ImportWarning) or "fail" (the server
            stops, so starting a process fails)."""
            _sibling('forkserver', 'set_forkserver_preload')(
                module_names, on_error=on_error)
    else:
        def set_forkserver_preload(self, module_names):
            """Modules the fork server should try to import up front (a
            hint)."""
            _sibling('forkserver', 'set_forkserver_preload')(module_names)

    # -- start methods -----------------------------------------------------

    def _check_available(self):
        """Raise ValueError if this start method cannot work here."""

    def get_start_method(self, allow_none=False):
        return self._name

    def set_start_method(self, method, force=False):
        raise ValueError('cannot set start method of concrete context')

    def get_context(self, method=None):
        if method is None:
            return self
        found = _concrete_contexts.get(method) if isinstance(method, str) \
            else None
        if found is None:
            raise ValueError('cannot find context for %r' % (method,))
        found._check_available()
        return found


def _have_send_handle():
    return bool(getattr(reduction, 'HAVE_SEND_HANDLE', False))


# ---------------------------------------------------------------------------
# The default context: its start method is fixed on first use, or by one
# set_start_method() call.


def _chosen_process_class():
    return _default_context.get_context().Process


class Process(process.BaseProcess):
    """Process class of the default context: starts children with whatever
    start method the default context resolves to."""

    _start_method = None
    _Popen = staticmethod(lambda process_obj:
                          _chosen_process_class()._Popen(process_obj))
    _after_fork = staticmethod(lambda: _chosen_process_class()._after_fork())


class DefaultContext(BaseContext):
    Process = Process

    def __init__(self, context=None):
        if context is not None:
            self._default_context = context
        self._actual_context = None

    def __getattr__(self, name):
        # _default_context is found on first use, not at import: from 3.14
        # on that probes the temporary directory (importing tempfile), and
        # importing the package must stay cheap.  Once found it is a plain
        # attribute (assign, delete or patch it as one).
        if name != '_default_context':
            raise AttributeError(name)
        found = _concrete_contexts[_platform_default_method()]
        self._default_context = found
        return found

    def _resolve(self):
        if self._actual_context is None:
            self._actual_context = self._default_context
        return self._actual_context

    def get_context(self, method=None):
        if method is not None:
            return super().get_context(method)
        return self._resolve()

    def set_start_method(self, method, force=False):
        if not force and self._actual_context is not None:
            raise RuntimeError('context has already been set')
        unset = method is None and force
        self._actual_context = None if unset else self.get_context(method)

    def get_start_method(self, allow_none=False):
        if allow_none and self._actual_context is None:
            return None
        return self._resolve()._name

    def get_all_start_methods(self):
        """Returns a list of the supported start methods, default first."""
        if _PY314:
            first = self._default_context._name
            return [first] + [m for m in _concrete_contexts if m != first]
        if sys.platform == 'win32':
            return ['spawn']
        found = ['fork', 'spawn']
        if sys.platform == 'darwin':
            found.reverse()
        if _have_send_handle():
            found.append('forkserver')
        return found


# ---------------------------------------------------------------------------
# One context per start method, each with its own Process class.  The
# classes are made by the two factories below and published as module
# attributes (ForkProcess, SpawnContext, ...) so that they pickle by name.


def _no_after_fork():
    """A spawned child starts afresh: nothing to redo after fork."""


def _make_process_class(name, method, popen_module, spawned):
    found = []

    def _Popen(process_obj):
        if not found:
            found.append(_sibling(popen_module, 'Popen'))
        return found[0](process_obj)
    body = {'__module__': __name__, '__qualname__': name,
            '_start_method': method, '_Popen': staticmethod(_Popen)}
    if spawned:
        body['_after_fork'] = staticmethod(_no_after_fork)
    return type(name, (process.BaseProcess,), body)


def _forkserver_check(ctx):
    if not _have_send_handle():
        raise ValueError('forkserver start method not available')


def _make_context_class(name, method, process_class, check=None):
    body = {'__module__': __name__, '__qualname__': name,
            '_name': method, 'Process': process_class}
    if check is not None:
        body['_check_available'] = check
    return type(name, (BaseContext,), body)


if sys.platform == 'win32':
    _METHODS = (('spawn', 'Spawn', 'popen_spawn_win32', True, None),)
else:
    _METHODS = (
        ('fork', 'Fork', 'popen_fork', False, None),
        ('spawn', 'Spawn', 'popen_spawn_posix', True, None),
        ('forkserver', 'ForkServer', 'popen_forkserver', False,
         _forkserver_check),
    )


def _platform_default_method():
    """The start method a program gets unless it chooses one."""
    if sys.platform in ('win32', 'darwin'):
        # macOS: code run after fork() is unreliable since 10.14 (bpo-33725).
        return 'spawn'
    if not _PY314:
        return 'fork'
    # 3.14 moved every platform off fork (gh-84559): to the forkserver where
    # it can pass fds and make its socket in a writable temporary directory
    # (gh-155717), else to spawn.
    if _have_send_handle() and _sibling('util', '_has_writeable_tempdir')():
        return 'forkserver'
    return 'spawn'

_concrete_contexts = {}
for _method, _stem, _module, _spawned, _check in _METHODS:
    _proc_cls = _make_process_class(_stem + 'Process', _method, _module,
                                    _spawned)
    _ctx_cls = _make_context_class(_stem + 'Context', _method, _proc_cls,
                                   _check)
    globals()[_proc_cls.__name__] = _proc_cls
    globals()[_ctx_cls.__name__] = _ctx_cls
    _concrete_contexts[_method] = _ctx_cls()
del _method, _stem, _module, _spawned, _check, _proc_cls, _ctx_cls

_default_context = DefaultContext(
    None if _PY314 else _concrete_contexts[_platform_default_method()])


def _force_start_method(method):
    """Make `method` the default context's method (used in children)."""
    _default_context._actual_context = _concrete_contexts[method]


# ---------------------------------------------------------------------------
# Which Popen (if any) is pickling a process object for a new child, per
# thread.  Objects that may only travel by inheritance check it.


class _SpawningState(_ThreadLocal):
    popen = None


_spawning = _SpawningState()


def _stdlib_module(name):
    """The standard library's multiprocessing.<name> where this process
    has loaded it itself (never imported here), else None.

    Without the alias a program may use both: concurrent.futures given
    mp_context=cmultiprocessing.get_context(...) builds its call queue on
    the stdlib's Queue class with our locks, and our spawn and forkserver
    children must receive it.  For that the stdlib's pickling hooks have to
    see our Popen as the spawning one (its assert_spawning and DupFd), and
    our pickler has to know the reducers the stdlib registered (its
    Connection)."""
    full = 'multiprocessing.' + name
    module = sys.modules.get(full)
    if module is None or getattr(module, '__name__', None) != full:
        return None     # not loaded, or it is ours through the alias
    return module


def get_spawning_popen():
    return _spawning.popen


def set_spawning_popen(popen):
    _spawning.popen = popen


def assert_spawning(obj):
    if _spawning.popen is not None:
        return
    raise RuntimeError('%s objects should only be shared between processes'
                       ' through inheritance' % type(obj).__name__)
