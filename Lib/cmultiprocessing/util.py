"""Shared helpers of cmultiprocessing: logging, finalizers that run when an
object dies or the process exits, hooks run in a child after fork, temporary
directories, and file-descriptor hygiene for new processes."""

# Only built-in modules here (_thread, _weakref): threading and weakref
# cost a new child more than this whole module, and nothing needs them yet.
# (The interpreter joins threads before it runs atexit handlers, so the
# order of the imports does not matter for _exit_function.)
import _thread
import atexit
import itertools
import operator
import os
import sys
from _weakref import ref as _weak

from _cmultiprocessing import _semlocks_after_fork

from . import process

__all__ = ['sub_debug', 'debug', 'info', 'sub_warning', 'get_logger',
           'log_to_stderr', 'get_temp_dir', 'register_after_fork',
           'is_exiting', 'Finalize', 'ForkAwareThreadLock', 'ForkAwareLocal',
           'close_all_fds_except', 'SUBDEBUG', 'SUBWARNING']
_PY314 = sys.version_info >= (3, 14)
if _PY314:
    __all__.insert(4, 'warn')

# ---------------------------------------------------------------------------
# Logging: nothing is logged until get_logger() or log_to_stderr() is called.

NOTSET, SUBDEBUG, DEBUG, INFO, SUBWARNING = 0, 5, 10, 20, 25

LOGGER_NAME = 'multiprocessing'
DEFAULT_LOGGING_FORMAT = '[%(levelname)s/%(processName)s] %(message)s'

_logger = None
_log_to_stderr = False

if sys.version_info >= (3, 13):
    # Report the caller of debug()/info() as the origin of the record
    # (skipping this module's _emit and the level function).
    _LOG_KW = {'stacklevel': 3}
else:
    _LOG_KW = {}


def _emit(level, msg, args):
    logger = _logger
    if logger:
        logger.log(level, msg, *args, **_LOG_KW)


def sub_debug(msg, *args):
    _emit(SUBDEBUG, msg, args)


def debug(msg, *args):
    _emit(DEBUG, msg, args)


def info(msg, *args):
    _emit(INFO, msg, args)


def sub_warning(msg, *args):
    _emit(SUBWARNING, msg, args)


if _PY314:
    WARNING = 30

    def warn(msg, *args):
        _emit(WARNING, msg, args)


def _logging_module_lock(logging):
    lock = getattr(logging, '_lock', None)
    if lock is not None:
        return lock
    # 3.11/3.12 keep the module lock behind two functions.
    class _Held:
        def __enter__(self):
            logging._acquireLock()

        def __exit__(self, *exc):
            logging._releaseLock()
    return _Held()


def get_logger():
    """The 'multiprocessing' logger, created (without propagation) on first
    use."""
    global _logger
    import logging
    with _logging_module_lock(logging):
        if not _logger:
            logger = logging.getLogger(LOGGER_NAME)
            logger.propagate = 0
            _logger = logger
            # Run our exit function before logging's own (atexit runs
            # handlers last-registered first).
            atexit.unregister(_exit_function)
            atexit.register(_exit_function)
    return _logger


def log_to_stderr(level=None):
    """Send the package's log records to stderr; returns the logger."""
    global _log_to_stderr
    from logging import Formatter, StreamHandler
    to_stderr = StreamHandler()
    to_stderr.setFormatter(Formatter(DEFAULT_LOGGING_FORMAT))
    get_logger().addHandler(to_stderr)
    _log_to_stderr = True
    if level:
        _logger.setLevel(level)
    return _logger


# ---------------------------------------------------------------------------
# Abstract (Linux) unix-socket namespace

def _platform_supports_abstract_sockets():
    if sys.version_info >= (3, 13):
        return sys.platform in ('linux', 'android')
    return sys.platform == 'linux' or hasattr(sys, 'getandroidapilevel')


def is_abstract_socket_namespace(address):
    """Whether a unix-socket address names the abstract namespace (a
    leading NUL)."""
    if not address:
        return False
    if isinstance(address, bytes):
        nul = 0
    elif isinstance(address, str):
        nul = '\0'
    else:
        raise TypeError(f'address type of {address!r} unrecognized')
    return address[0] == nul


abstract_sockets_supported = _platform_supports_abstract_sockets()

# ---------------------------------------------------------------------------
# A per-process temporary directory, removed at exit


def _remove_temp_dir(rmtree, tempdir):
    rmtree(tempdir)
    # Late in interpreter shutdown current_process() may return None.
    config = getattr(process.current_process(), '_config', None)
    if config is not None:
        config['tempdir'] = None


# From 3.14 on, the folder must leave room for the listener sockets made in
# it: "<base>/pymp-XXXXXXXX/sock-<12 hex>" has to fit a sockaddr_un path
# (with its NUL).  A base too long for that is replaced by a system-wide
# one.  (AF_UNIX sockets are not made on Windows.)
_TEMPDIR_PREFIX = 'pymp-'
_SOCKET_PREFIX = 'sock-'
_SOCKET_SUFFIX_HEX = 12
_SUN_PATH_MAX = (108 if sys.platform == 'linux' else
                 104 if sys.platform.startswith(('openbsd', 'freebsd')) else
                 None if os.name == 'nt' else 92)
# separator + prefix + mkdtemp's 8 random characters + separator + the name
_SOCKET_PATH_TAIL = (len(os.sep) + len(_TEMPDIR_PREFIX) + 8 + len(os.sep) +
                     len(_SOCKET_PREFIX) + _SOCKET_SUFFIX_HEX)


def _socket_base_dir(tempfile):
    """The folder to make the private temporary directory in (3.14+):
    tempfile's, unless socket paths under it would be too long; then the
    first usable of /tmp, /var/tmp, /usr/tmp (with a logged warning)."""
    if _SUN_PATH_MAX is None:
        return None
    base = tempfile.gettempdir()
    if len(base) + _SOCKET_PATH_TAIL < _SUN_PATH_MAX:
        return base
    fallbacks = ['/tmp', '/var/tmp', '/usr/tmp']
    try:
        system = tempfile._get_default_tempdir(fallbacks)
    except FileNotFoundError:
        warn("Process-wide temporary directory %s will not be usable for "
             "creating socket files and no usable system-wide temporary "
             "directory was found in %s", base, fallbacks)
        return base
    warn("Ignoring user-defined temporary directory: %s", base)
    return system


def _has_writeable_tempdir():
    """Whether a file can really be made where get_temp_dir() would go (the
    forkserver needs one; 3.14+ picks spawn as the default otherwise)."""
    import tempfile
    try:
        base = _socket_base_dir(tempfile)
        if base is None:
            return False
        # Try it: permission bits do not tell about read-only mounts.
        with tempfile.NamedTemporaryFile(dir=base):
            return True
    except OSError:
        return False


def get_temp_dir():
    """Path of a private temporary directory, created on first use and
    removed when the process exits."""
    config = process.current_process()._config
    path = config.get('tempdir')
    if path is not None:
        return path
    import shutil
    import tempfile
    where = _socket_base_dir(tempfile) if _PY314 else None
    path = tempfile.mkdtemp(prefix=_TEMPDIR_PREFIX, dir=where)
    info('created temp directory %s', path)
    # shutil.rmtree is bound now: at shutdown the module may be gone.
    Finalize(None, _remove_temp_dir, args=(shutil.rmtree, path),
             exitpriority=-100)
    config['tempdir'] = path
    return path


# ---------------------------------------------------------------------------
# Hooks run in a child process right after it was forked

class _WeakHookTable(object):
    """{key: object} holding each object weakly: an entry goes away with
    its object (what weakref.WeakValueDictionary offers, minus the module).
    The entries are in `data`, as weak references."""

    def __init__(self):
        self.data = {}

    def __len__(self):
        return len(self.data)

    def __iter__(self):
        return iter(self.data.copy())

    def __contains__(self, key):
        return self.get(key) is not None

    def __setitem__(self, key, obj):
        data = self.data

        def forget(_ref, key=key):
            # Only the reference made here: a newer entry stays.
            if data.get(key) is _ref:
                del data[key]
        data[key] = _weak(obj, forget)

    def get(self, key, default=None):
        found = self.data.get(key)
        obj = found() if found is not None else None
        return default if obj is None else obj

    def __getitem__(self, key):
        obj = self.get(key)
        if obj is None:
            raise KeyError(key)
        return obj

    def __delitem__(self, key):
        del self.data[key]

    def items(self):
        # A copy first: a collection while we look may drop entries.
        for key, found in list(self.data.copy().items()):
            obj = found()
            if obj is not None:
                yield key, obj

    def clear(self):
        self.data.clear()


_afterfork_registry = _WeakHookTable()
_first = operator.itemgetter(0)
_afterfork_counter = itertools.count()


def register_after_fork(obj, func):
    """Call func(obj) in each child started after this call (for as long
    as obj lives)."""
    _afterfork_registry[(next(_afterfork_counter), id(obj), func)] = obj


def _run_after_forkers():
    # Every SemLock forgets the parent's acquisitions at once (one counter
    # in C, where the stdlib registers a hook per lock).
    _semlocks_after_fork()
    # Straight from the underlying dict of weak references: the child has
    # no other thread iterating it, and this touches far fewer objects
    # (pages to copy) than the mapping's guarded iterator.
    refs = _afterfork_registry.data
    if not refs:
        return
    live = []
    for key, ref in list(refs.copy().items()):
        obj = ref()
        if obj is not None:
            live.append((key, obj))
    live.sort(key=_first)
    for key, obj in live:
        hook = key[2]
        try:
            hook(obj)
        except Exception as exc:
            info('after forker raised exception %s', exc)


# ---------------------------------------------------------------------------
# Finalizers: callbacks run when an object is collected, when called, or at
# exit (those with an exit priority, highest first, newest first within one
# priority).  Keys of the registry are (exitpriority, creation number).

_finalizer_registry = {}
_finalizer_counter = itertools.count()


class Finalize(object):
    """Run callback(*args, **kwargs) once: when `obj` is garbage collected,
    when the finalizer is called, or at exit if exitpriority is not None."""

    def __init__(self, obj, callback, args=(), kwargs=None, exitpriority=None):
        if exitpriority is not None and not isinstance(exitpriority, int):
            raise TypeError(
                "Exitpriority ({0!r}) must be None or int, not {1!s}".format(
                    exitpriority, type(exitpriority)))
        if obj is None:
            if exitpriority is None:
                raise ValueError(
                    "Without object, exitpriority cannot be None")
        else:
            self._weakref = _weak(obj, self)
        self._callback = callback
        self._args = args
        self._kwargs = kwargs or {}
        self._pid = os.getpid()
        self._key = key = (exitpriority, next(_finalizer_counter))
        _finalizer_registry[key] = self

    def _forget(self):
        for attr in ('_weakref', '_callback', '_args', '_kwargs', '_key'):
            setattr(self, attr, None)

    # The defaults keep what __call__ needs reachable even after the module
    # globals were cleared during interpreter shutdown.
    def __call__(self, wr=None, _registry=_finalizer_registry,
                 _sub_debug=sub_debug, _getpid=os.getpid):
        """Run the callback unless it already ran or was cancelled."""
        if _registry.pop(self._key, None) is None:
            _sub_debug('finalizer no longer registered')
            return None
        result = None
        if self._pid == _getpid():
            _sub_debug('finalizer calling %s with args %s and kwargs %s',
                       self._callback, self._args, self._kwargs)
            result = self._callback(*self._args, **self._kwargs)
        else:
            _sub_debug('finalizer ignored because different process')
        self._forget()
        return result

    def cancel(self):
        """Drop the finalizer without running its callback."""
        if _finalizer_registry.pop(self._key, None) is not None:
            self._forget()

    def still_active(self):
        """Whether the callback has neither run nor been cancelled."""
        return self._key in _finalizer_registry

    def __repr__(self):
        ref = getattr(self, '_weakref', None)
        obj = ref() if ref is not None else None
        cls = self.__class__.__name__
        if obj is None:
            return '<%s object, dead>' % cls
        text = ['<%s object, callback=%s' % (
            cls, getattr(self._callback, '__name__', self._callback))]
        if self._args:
            text.append(', args=%s' % (self._args,))
        if self._kwargs:
            text.append(', kwargs=%s' % (self._kwargs,))
        if self._key[0] is not None:
            text.append(', exitpriority=%s' % (self._key[0],))
        text.append('>')
        return ''.join(text)


def _call_finalizer(finalizer):
    sub_debug('calling %s', finalizer)
    try:
        finalizer()
    except Exception:
        from traceback import print_exc
        print_exc()


def _run_finalizers(minpriority=None):
    """Run the finalizers that have an exit priority (>= minpriority when
    given), highest priority first and, within one priority, newest first.
    With no minpriority the registry is emptied afterwards."""
    registry = _finalizer_registry
    if not registry:
        # Nothing registered, or called after the module globals were torn
        # down (the registry is None then).
        return
    # list(dict) is atomic under the GIL; the registry can change under us
    # (garbage collection, other threads) while callbacks run.
    keys = [key for key in list(registry)
            if key[0] is not None
            and (minpriority is None or key[0] >= minpriority)]
    keys.sort(reverse=True)
    for finalizer in map(registry.get, keys):
        # A key may have gone meanwhile.
        if finalizer is not None:
            _call_finalizer(finalizer)
    if minpriority is None:
        registry.clear()


# ---------------------------------------------------------------------------
# Fork-aware primitives


class ForkAwareThreadLock(object):
    """A threading.Lock that a forked child gets back unlocked."""

    def __init__(self):
        self._lock = _thread.allocate_lock()
        self.acquire, self.release = self._lock.acquire, self._lock.release
        register_after_fork(self, ForkAwareThreadLock._at_fork_reinit)

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *exc_info):
        return self._lock.__exit__(*exc_info)

    def _at_fork_reinit(self):
        # Same lock object, so the bound acquire/release stay valid.
        self._lock._at_fork_reinit()


def _clear_local(obj):
    obj.__dict__.clear()


class ForkAwareLocal(_thread._local):        # threading.local itself
    """Thread-local storage that starts out empty in a forked child."""

    def __init__(self):
        register_after_fork(self, _clear_local)

    def __reduce__(self):
        return type(self), ()


# ---------------------------------------------------------------------------
# Exit

_exiting = False


def is_exiting():
    """Whether the process is shutting down."""
    return _exiting or _exiting is None


def _stop_children(active_children, current_process, info):
    if current_process() is None:
        # sys.modules was tampered with and process.py's globals are gone.
        return
    daemons = [child for child in active_children() if child.daemon]
    for child in daemons:
        info('calling terminate() for daemon %s', child.name)
        child._popen.terminate()
    # Then wait for every child still running, daemon or not.
    for child in active_children():
        info('calling join() for process %s', child.name)
        child.join()


# Everything is bound as a default argument: this may run after the module's
# globals have been cleared.
def _exit_function(info=info, debug=debug, _run_finalizers=_run_finalizers,
                   active_children=process.active_children,
                   current_process=process.current_process,
                   _stop_children=_stop_children):
    global _exiting
    if _exiting:
        return
    _exiting = True
    info('process shutting down')
    debug('running all "atexit" finalizers with priority >= 0')
    _run_finalizers(0)
    _stop_children(active_children, current_process, info)
    debug('running the remaining "atexit" finalizers')
    _run_finalizers()


# ---------------------------------------------------------------------------
# File descriptors and standard streams

def _open_max():
    try:
        return os.sysconf('SC_OPEN_MAX')
    except Exception:
        return 256


MAXFD = _open_max()


def close_all_fds_except(fds):
    """Close every file descriptor below MAXFD except those in `fds`."""
    keep = sorted(set(fds))
    assert not keep or keep[-1] <= MAXFD, 'fd too large'
    low = 0
    for fd in keep + [MAXFD]:
        # Never pass an empty range: os.closerange(n, n) may close
        # everything from n up on some versions.
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)


def close_fds(*fds):
    """Close each file descriptor given as an argument."""
    for fd in fds:
        os.close(fd)


# A forked child replaces sys.stdin with a reader of os.devnull.  Building
# that text stream in the child is costly (every page it writes is a
# copy-on-write fault), so the parent builds one ahead of time and the child
# only swaps it in.  The parent keeps its (close-on-exec) fd for later
# children; a child forgets the inherited spare so that its own children get
# a fresh one.
_stdin_spare = None
_stdin_spare_id = None


def _open_devnull_reader():
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        return open(fd, encoding='utf-8', closefd=False)
    except BaseException:
        os.close(fd)
        raise


def _prepare_stdin_spare():
    """Parent side, just before fork: make sure a /dev/null reader is ready
    for the child (checking that its fd still is /dev/null)."""
    global _stdin_spare, _stdin_spare_id
    spare = _stdin_spare
    if spare is not None:
        try:
            st = os.fstat(spare.fileno())
            if not spare.closed and (st.st_dev, st.st_ino) == _stdin_spare_id:
                return
        except (OSError, ValueError):
            pass
        # Someone closed or reused the fd: it is no longer ours to close.
        _stdin_spare = _stdin_spare_id = None
    try:
        spare = _open_devnull_reader()
        st = os.fstat(spare.fileno())
    except (OSError, ValueError):
        return
    _stdin_spare, _stdin_spare_id = spare, (st.st_dev, st.st_ino)


def _quietly(func):
    """func(), ignoring the errors of a closed or broken stream."""
    try:
        func()
    except (OSError, ValueError):
        pass


def _close_stdin():
    """Close sys.stdin and replace it with a reader of os.devnull."""
    global _stdin_spare, _stdin_spare_id
    old = sys.stdin
    if old is None:
        return
    _quietly(old.close)
    spare = _stdin_spare
    _stdin_spare = _stdin_spare_id = None
    if spare is None or spare.closed:
        try:
            spare = _open_devnull_reader()
        except (OSError, ValueError):
            return
    sys.stdin = spare


def _flush_std_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError):
            pass


def spawnv_passfds(path, args, passfds):
    """Start program `path` with argv `args`, keeping open only `passfds`;
    returns the child's pid."""
    import _cmultiprocessing
    keep = tuple(sorted({int(fd) for fd in passfds}))
    return _cmultiprocessing.spawnv_passfds(path, args, keep)


# ---------------------------------------------------------------------------
# Command-line flags a child interpreter needs to behave like this one

_FLAG_LETTERS = (('debug', 'd'), ('dont_write_bytecode', 'B'),
                 ('no_site', 'S'), ('verbose', 'v'),
                 ('bytes_warning', 'b'), ('quiet', 'q'))
_PASSED_XOPTIONS = ('faulthandler', 'tracemalloc', 'importtime',
                    'frozen_modules', 'showrefcount', 'utf8')


def _args_from_interpreter_flags():
    """Options that reproduce sys.flags, sys.warnoptions and sys._xoptions
    in a new interpreter."""
    flags = sys.flags
    out = []
    if flags.optimize > 0:
        out.append('-' + 'O' * flags.optimize)
    out.extend('-' + letter * getattr(flags, name)
               for name, letter in _FLAG_LETTERS if getattr(flags, name) > 0)
    if flags.isolated:
        out.append('-I')
    else:
        out.extend(opt for opt, on in (('-E', flags.ignore_environment),
                                       ('-s', flags.no_user_site),
                                       ('-P', getattr(flags, 'safe_path', 0)))
                   if on)
    # -b/-bb and -X dev add warning filters of their own: do not pass those
    # twice.
    implied = []
    if flags.bytes_warning:
        implied.append('error::BytesWarning' if flags.bytes_warning > 1
                       else 'default::BytesWarning')
    if flags.dev_mode:
        implied.append('default')
    warnopts = list(sys.warnoptions)
    for opt in implied:
        if opt in warnopts:
            warnopts.remove(opt)
    out.extend('-W' + opt for opt in warnopts)
    if flags.dev_mode:
        out += ['-X', 'dev']
    xoptions = getattr(sys, '_xoptions', {})
    for name in _PASSED_XOPTIONS:
        if name in xoptions:
            value = xoptions[name]
            out += ['-X', name if value is True else '%s=%s' % (name, value)]
    return out


# ---------------------------------------------------------------------------
# Test-suite support

def _cleanup_tests():
    """Release what the package holds once its tests finished: finished
    children, the fork server and resource tracker processes, and (now
    rather than at exit, bpo-37421) the get_temp_dir() directories."""
    from test.support import gc_collect, reap_children
    from . import forkserver, resource_tracker
    process._cleanup()
    for helper in (forkserver._forkserver,
                   resource_tracker._resource_tracker):
        helper._stop()
    _run_finalizers()
    gc_collect()
    reap_children()


# Registered at import: atexit runs it before the handlers of modules that
# were imported earlier (and get_logger() moves it ahead of logging's).
atexit.register(_exit_function)
