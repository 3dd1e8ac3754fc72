"""Starting a child on a fresh interpreter (the spawn and forkserver methods).

The parent pickles a dict of "preparation data" (paths, names, the main
module) followed by the process object into a pipe; the child, started as

    <python> -c 'from cmultiprocessing.spawn import spawn_main; ...' --multiprocessing-fork

reads both back, makes itself look like the parent (``prepare``) and runs the
process.  The child imports as little as it can before it has the data:
everything but ``os`` and ``sys`` is imported where it is first needed.

Which interpreter the child runs on (a python program of this installation
or the package's child launcher) is chosen in ``_interpreter``; this module
keeps the stdlib's names for it (``set_executable``, ``get_executable``) and
is otherwise the stdlib's spawn module: the child's command line, its entry
point, and the preparation data that makes it look like its parent.
"""

import os
import sys

__all__ = ['_main', 'freeze_support', 'set_executable', 'get_executable',
           'get_preparation_data', 'get_command_line', 'import_main_path',
           'describe_executable']

WINDOWS = sys.platform == 'win32'
WINEXE = bool(WINDOWS and getattr(sys, 'frozen', False))
WINSERVICE = bool(WINDOWS and sys.executable and
                  sys.executable.lower().endswith('pythonservice.exe'))

FORK_FLAG = '--multiprocessing-fork'

# Main modules replaced by prepare(), kept alive so that objects created by
# their code keep working.
old_main_modules = []


# ---------------------------------------------------------------------------
# Which interpreter runs the children (chosen in _interpreter; imported only
# when a child is started, so that a child does not import it itself)
# ---------------------------------------------------------------------------

def set_executable(exe):
    """Use exe for the children from now on (None: discover it again)."""
    from . import _interpreter
    _interpreter.set_executable(exe)


def get_executable():
    """The program the children run on (see _interpreter.get_executable)."""
    from . import _interpreter
    return _interpreter.get_executable()


def describe_executable():
    """Which program the children run on, and why: one sentence."""
    from . import _interpreter
    return _interpreter.describe_executable()


# ---------------------------------------------------------------------------
# The child's command line and entry point
# ---------------------------------------------------------------------------

def is_forking(argv):
    """Whether argv is the command line of a child being spawned."""
    return len(argv) > 1 and argv[1] == FORK_FLAG


def _parse_fork_args(words):
    kwds = {}
    for word in words:
        key, _, value = word.partition('=')
        kwds[key] = None if value == 'None' else int(value)
    return kwds


def freeze_support():
    """In a frozen program, run the child's code if this is a child."""
    if not is_forking(sys.argv):
        return
    spawn_main(**_parse_fork_args(sys.argv[2:]))
    sys.exit()


def get_command_line(**kwds):
    """The command line (without passed data) that starts a child."""
    pairs = ['%s=%r' % kv for kv in kwds.items()]
    if getattr(sys, 'frozen', False):
        return [sys.executable, FORK_FLAG] + pairs
    from . import _interpreter, util
    prog = _child_code(
        'from cmultiprocessing.spawn import spawn_main; spawn_main(%s)'
        % ', '.join(pairs))
    return (_interpreter._interpreter_argv() +
            util._args_from_interpreter_flags() + ['-c', prog, FORK_FLAG])


_missing_homes = None


def _homes_a_new_interpreter_misses():
    """Folders holding this package or its extension module that a new
    interpreter would not put on sys.path by itself: in an embedding host
    (LLDB...) they are often added to sys.path at run time."""
    global _missing_homes
    if _missing_homes is not None:
        return _missing_homes
    import _cmultiprocessing
    wanted = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    native = getattr(_cmultiprocessing, '__file__', None)
    if native:
        wanted.append(os.path.dirname(os.path.abspath(native)))
    known = []
    if not sys.flags.ignore_environment:
        known += os.environ.get('PYTHONPATH', '').split(os.pathsep)
    if not sys.flags.no_site:
        import site
        known += site.getsitepackages()
        if site.ENABLE_USER_SITE:
            known.append(site.getusersitepackages())
    seen = {os.path.normcase(os.path.abspath(p)) for p in known if p}
    missing = []
    for home in wanted:
        if os.path.normcase(home) not in seen and home not in missing:
            missing.append(home)
    _missing_homes = missing
    return missing


def _child_code(code):
    """code for `python -c` in a child, made able to import this package
    even where the new interpreter would not find it by itself."""
    homes = _homes_a_new_interpreter_misses()
    if not homes:
        return code
    return 'import sys; sys.path[len(sys.path):] = %r; %s' % (homes, code)


def _open_parent_pipe_windows(pipe_handle, parent_pid):
    import msvcrt
    from .context import reduction
    source = None
    if parent_pid is not None:
        import _winapi
        source = _winapi.OpenProcess(
            _winapi.SYNCHRONIZE | _winapi.PROCESS_DUP_HANDLE, False,
            parent_pid)
    handle = reduction.duplicate(pipe_handle, source_process=source)
    return msvcrt.open_osfhandle(handle, os.O_RDONLY), source


def spawn_main(pipe_handle, parent_pid=None, tracker_fd=None):
    """Entry point of a spawned child: run the process sent on pipe_handle."""
    assert is_forking(sys.argv), 'Not forking'
    if WINDOWS:
        fd, parent_sentinel = _open_parent_pipe_windows(pipe_handle,
                                                        parent_pid)
    else:
        from . import resource_tracker
        resource_tracker._resource_tracker._fd = tracker_fd
        fd = pipe_handle
        # The parent holds the write end: EOF here means it has gone.
        parent_sentinel = os.dup(pipe_handle)
    sys.exit(_main(fd, parent_sentinel))


def _main(fd, parent_sentinel):
    # What exists now -- the interpreter's start-up objects and the modules
    # that start a child -- lives until the process ends: the collections to
    # come, and the last one at exit, need not walk it all again.  (The
    # user's main module and process object come after this and are
    # collected as usual.)
    import gc
    gc.freeze()
    try:
        # The C unpickler itself: pickle.py would bring re and enum along.
        from _pickle import load
    except ImportError:
        from pickle import load
    from . import process
    me = process.current_process()
    with open(fd, 'rb', closefd=True) as source:
        me._inheriting = True
        try:
            prepare(load(source))
            process_obj = load(source)
        finally:
            del me._inheriting
    return process_obj._bootstrap(parent_sentinel)


# The standard library's wording, which users search for.
_MAIN_GUARD_MESSAGE = '\n'.join([
    '',
    '        An attempt has been made to start a new process before the',
    '        current process has finished its bootstrapping phase.',
    '',
    '        This probably means that you are not using fork to start your',
    '        child processes and you have forgotten to use the proper idiom',
    '        in the main module:',
    '',
    "            if __name__ == '__main__':",
    '                freeze_support()',
    '                ...',
    '',
    '        The "freeze_support()" line can be omitted if the program',
    '        is not going to be frozen to produce an executable.',
    '',
    '        To fix this issue, refer to the "Safe importing of main module"',
    '        section in https://docs.python.org/3/library/multiprocessing.html',
    '        ',
])


def _check_not_importing_main():
    from . import process
    if getattr(process.current_process(), '_inheriting', False):
        raise RuntimeError(_MAIN_GUARD_MESSAGE)


# ---------------------------------------------------------------------------
# Preparation data: what the child needs to look like its parent
# ---------------------------------------------------------------------------

def _main_module_source():
    """('init_main_from_name', name), ('init_main_from_path', path) or None."""
    main = sys.modules.get('__main__')
    spec_name = getattr(getattr(main, '__spec__', None), 'name', None)
    if spec_name is not None:
        return 'init_main_from_name', spec_name
    if WINDOWS and (WINEXE or WINSERVICE):
        return None
    path = getattr(main, '__file__', None)
    if path is None:
        return None
    from . import process
    if process.ORIGINAL_DIR is not None and not os.path.isabs(path):
        path = os.path.join(process.ORIGINAL_DIR, path)
    return 'init_main_from_path', os.path.normpath(path)


def get_preparation_data(name):
    """What a child started by spawn or forkserver needs from its parent."""
    _check_not_importing_main()
    from . import process, util
    from . import get_start_method
    origin = process.ORIGINAL_DIR
    # '' on sys.path means "the current directory at startup": pin it.
    path = [origin if entry == '' else entry for entry in sys.path]
    if '' in sys.path and origin is None:
        path = list(sys.path)
    data = {
        'log_to_stderr': getattr(util, '_log_to_stderr', False),
        'authkey': process.current_process().authkey,
        'name': name,
        'sys_path': path,
        'sys_argv': list(getattr(sys, 'argv', [])),
        'orig_dir': origin,
        'dir': os.getcwd(),
        # 3.14+: a child of a program that never chose a method does not
        # choose one either (gh-109263).
        'start_method': get_start_method(
            allow_none=sys.version_info >= (3, 14)),
    }
    logger = getattr(util, '_logger', None)
    if logger is not None:
        data['log_level'] = logger.getEffectiveLevel()
    data['alias'] = _alias_installed()
    main_source = _main_module_source()
    if main_source is not None:
        data[main_source[0]] = main_source[1]
    return data


# The main script as this process compiled it for its children, by path:
# (mtime_ns, size, marshalled code).  Compiling the script again in every
# spawned child is the biggest part of its start for a script of some size.
_compiled_mains = {}
_MAX_MAIN_CODE = 8 << 20


def _source_stamp(path):
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def _main_code_for_children(path):
    """(mtime_ns, size, marshal of the code) of the source file path, or
    None where children should compile it themselves."""
    if not path.endswith('.py'):
        return None
    try:
        stamp = _source_stamp(path)
        known = _compiled_mains.get(path)
        if known is not None and known[:2] == stamp:
            return known
        import io
        import marshal
        with io.open_code(path) as source:
            text = source.read()
        if _source_stamp(path) != stamp:
            return None         # being written to: leave it to the child
        blob = marshal.dumps(_compile_main_source(text, path))
    except (OSError, SyntaxError, ValueError):
        return None             # the child reports it as the stdlib's does
    if len(blob) > _MAX_MAIN_CODE:
        return None
    _compiled_mains[path] = found = stamp + (blob,)
    return found


def _alias_installed():
    """True where cmultiprocessing.install() holds in this process."""
    alias = sys.modules.get('_cmultiprocessing_alias')
    return alias is not None and alias.installed()


def _set_alias(value):
    # After sys.path is the parent's (the alias's module is found where the
    # parent found it), before the main module: it, and everything
    # unpickled after, may import multiprocessing.
    if value:
        try:
            import _cmultiprocessing_alias
        except ImportError as exc:
            raise ImportError(
                'the parent runs with cmultiprocessing.install(), but this '
                'child cannot import its module, _cmultiprocessing_alias '
                '(sys.path: %r)' % (sys.path,)) from exc
        _cmultiprocessing_alias.install()
    elif _alias_installed():
        # a fork server's child, after the parent's uninstall()
        sys.modules['_cmultiprocessing_alias'].uninstall()


def _set_name(value):
    from . import process
    process.current_process().name = value


def _set_authkey(value):
    from . import process
    process.current_process().authkey = value


def _set_stderr_logging(value):
    if value:
        from . import util
        util.log_to_stderr()


def _set_log_level(value):
    from . import util
    util.get_logger().setLevel(value)


def _set_sys_path(value):
    sys.path = value


def _set_sys_argv(value):
    sys.argv = value


def _set_orig_dir(value):
    from . import process
    process.ORIGINAL_DIR = value


def _set_start_method(value):
    from . import set_start_method
    set_start_method(value, force=True)


# Applied in this order; the main module comes last, once paths are right.
_PREPARE_STEPS = (
    ('name', _set_name),
    ('authkey', _set_authkey),
    ('log_to_stderr', _set_stderr_logging),
    ('log_level', _set_log_level),
    ('sys_path', _set_sys_path),
    ('sys_argv', _set_sys_argv),
    ('dir', os.chdir),
    ('orig_dir', _set_orig_dir),
    ('start_method', _set_start_method),
    ('alias', _set_alias),
)


def prepare(data):
    """Make this (child) process ready to unpickle its process object."""
    for key, apply in _PREPARE_STEPS:
        if key in data:
            apply(data[key])
    by_name = data.get('init_main_from_name')
    if by_name is not None:
        _fixup_main_from_name(by_name)
        return
    by_path = data.get('init_main_from_path')
    if by_path is not None:
        _fixup_main_from_path(by_path, data.get('main_code'))


def _install_mp_main(namespace):
    """Make a module of namespace the new __main__ (alias __mp_main__)."""
    import types
    old_main_modules.append(sys.modules['__main__'])
    module = types.ModuleType('__mp_main__')
    module.__dict__.update(namespace)
    sys.modules['__main__'] = sys.modules['__mp_main__'] = module


def _fixup_main_from_name(mod_name):
    # A package's __main__ runs its "main only" code unconditionally, so
    # it is never re-run; a main that is already there (forked) neither.
    if mod_name == '__main__' or mod_name.endswith('.__main__'):
        return
    current = sys.modules['__main__']
    if getattr(getattr(current, '__spec__', None), 'name', None) == mod_name:
        return
    import runpy
    _install_mp_main(runpy.run_module(mod_name, run_name='__mp_main__',
                                      alter_sys=True))


def _fixup_main_from_path(main_path, compiled=None):
    # IPython's launcher has no main guard: treat it as a __main__.py.
    stem = os.path.splitext(os.path.basename(main_path))[0]
    if stem == 'ipython':
        return
    if getattr(sys.modules['__main__'], '__file__', None) == main_path:
        return
    if main_path.endswith('.py') and os.path.isfile(main_path):
        _install_mp_main(_run_script(main_path, '__mp_main__', compiled))
        return
    import runpy     # directories, zip files, compiled files
    _install_mp_main(runpy.run_path(main_path, run_name='__mp_main__'))


def _compile_main_source(text, path):
    """compile(text, path, 'exec', dont_inherit=True) for the bytes of a
    source file; natively where it can be (the builtin first builds the
    interpreter's AST classes, a tenth of a child's start-up work)."""
    import _cmultiprocessing
    native = getattr(_cmultiprocessing, 'compile_main', None)
    if native is None or not isinstance(path, str):
        return compile(text, path, 'exec', dont_inherit=True)
    return native(text, path)


def _code_of_script(path, compiled):
    """The code of the source file path: the parent's compiled copy while
    the file is unchanged since (same mtime and size, as for a .pyc),
    otherwise compiled here from the file."""
    if compiled is not None:
        try:
            if tuple(compiled[:2]) == _source_stamp(path):
                import marshal
                return marshal.loads(compiled[2])
        except (OSError, TypeError, ValueError, EOFError, IndexError):
            pass
    import io
    with io.open_code(path) as source:
        text = source.read()
    return _compile_main_source(text, path)


def _run_script(path, run_name, compiled=None):
    """runpy.run_path() for a plain source file, without importing runpy
    (and the pkgutil and typing it pulls in) into every child."""
    import types
    code = _code_of_script(path, compiled)
    module = types.ModuleType(run_name)
    namespace = module.__dict__
    namespace.update(__name__=run_name, __file__=path, __cached__=None,
                     __doc__=None, __loader__=None, __package__='',
                     __spec__=None)
    # While it runs, the script is sys.modules[run_name] and argv[0].
    missing = object()
    saved_module = sys.modules.get(run_name, missing)
    argv = getattr(sys, 'argv', None)
    saved_arg0 = argv[0] if argv else missing
    sys.modules[run_name] = module
    if argv:
        argv[0] = path
    try:
        exec(code, namespace)
    finally:
        if saved_module is missing:
            sys.modules.pop(run_name, None)
        else:
            sys.modules[run_name] = saved_module
        if saved_arg0 is not missing:
            argv[0] = saved_arg0
    return dict(namespace)


def import_main_path(main_path):
    """Import the script main_path as __mp_main__ and make it __main__."""
    _fixup_main_from_path(main_path)


class _SpawningAs:
    """While active, what this thread pickles sees popen as the Popen that
    spawns it (for DupFd and assert_spawning)."""

    def __init__(self, popen):
        from . import context
        self.context = context
        self.popen = popen

    def __enter__(self):
        self.context.set_spawning_popen(self.popen)
        stdlib = self.context._stdlib_module('context')
        if stdlib is not None:
            stdlib.set_spawning_popen(self.popen)

    def __exit__(self, *exc_info):
        self.context.set_spawning_popen(None)
        stdlib = self.context._stdlib_module('context')
        if stdlib is not None:
            stdlib.set_spawning_popen(None)


def _pickle_for_child(popen, process_obj):
    """The bytes a spawned or forkserver child reads: preparation data, then
    the process object, pickled while popen is the spawning Popen."""
    import io
    from .context import reduction
    sink = io.BytesIO()
    prepared = get_preparation_data(process_obj._name)
    main_path = prepared.get('init_main_from_path')
    # A forkserver child has its main script from the server already.
    if main_path is not None and getattr(popen, 'method', None) == 'spawn':
        compiled = _main_code_for_children(main_path)
        if compiled is not None:
            prepared['main_code'] = compiled
    with _SpawningAs(popen):
        for obj in (prepared, process_obj):
            reduction.dump(obj, sink)
    return sink.getbuffer()


def _open_pipes(count):
    """count new pipes as one flat list [r0, w0, r1, w1, ...]; on failure
    none of them stays open."""
    fds = []
    try:
        while len(fds) < 2 * count:
            fds += os.pipe()
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _write_all(fd, data):
    """Write every byte of data to the blocking descriptor fd."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
