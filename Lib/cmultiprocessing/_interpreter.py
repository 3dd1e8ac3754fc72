"""Which interpreter the spawned children run on.

Choosing it is the part of spawning that differs most from the standard
library: in an embedded interpreter (LLDB, editors, ...) ``sys.executable``
may be empty, the host program, or some other Python found on PATH, and
there may be no python program of this version at all.  ``get_executable``
chooses, in this order: the interpreter given to ``set_executable``; a
python program of this very version and installation; the child launcher
shipped in the package (``_cmp_launcher``), which loads the same shared
libpython this process runs on and gives it this process's prefixes and
``sys.path``; and otherwise raises a RuntimeError that says what it tried.
It never guesses: a child does not run on another interpreter.
``describe_executable()`` says which one is in use and why.

`spawn` re-exports the public functions (the stdlib's names); this module is
imported only by a process that starts children, not by every child.
"""

import os
import sys

# (every module of the package has one: the stdlib's _TestImportStar checks)
__all__ = ['set_executable', 'get_executable', 'describe_executable']

WINDOWS = sys.platform == 'win32'

class _Interpreter:
    """The interpreter chosen for children: explicit or discovered."""

    explicit = None      # set_executable()'s argument, normalised
    found = None         # the result of discovery, once made
    launch = ()          # the launcher's options, when found is the launcher
    why = None           # how found was chosen
    probed = {}          # path -> whether it answered as this interpreter


LAUNCHER = '_cmp_launcher.exe' if WINDOWS else '_cmp_launcher'


def _as_path(exe):
    # The standard library keeps bytes on POSIX and str on Windows.
    return os.fsdecode(exe) if WINDOWS else os.fsencode(exe)


def set_executable(exe):
    """Use exe for the children from now on (None: discover it again)."""
    if exe is None:
        _Interpreter.explicit = None
        return
    _Interpreter.explicit = _as_path(os.fspath(exe))


def get_executable():
    """The program the children run on.

    That is a python program of this version and installation, or else the
    child launcher of this package over the libpython this process runs
    on.  Raises RuntimeError when neither can be used; set_executable()
    then tells which interpreter to use.
    """
    if _Interpreter.explicit is not None:
        return _Interpreter.explicit
    if getattr(sys, 'frozen', False):
        return _as_path(sys.executable)
    if _Interpreter.found is None:
        _discover()
    return _Interpreter.found


def describe_executable():
    """Which program the children run on, and why: one sentence."""
    if _Interpreter.explicit is not None:
        return '%s, given to set_executable()' % (
            os.fsdecode(_Interpreter.explicit),)
    if getattr(sys, 'frozen', False):
        return '%s, the frozen program itself' % (sys.executable,)
    get_executable()
    return _Interpreter.why


def _interpreter_argv():
    """The start of a child's command line up to the interpreter's own
    arguments: the program, then the launcher's options if it is the
    launcher."""
    exe = get_executable()
    if _Interpreter.explicit is None and exe is _Interpreter.found:
        return [exe, *_Interpreter.launch]
    return [exe]


def _version_tag():
    return 'python%d.%d' % sys.version_info[:2]


def _prefixes():
    seen = []
    for attr in ('prefix', 'exec_prefix', 'base_prefix', 'base_exec_prefix'):
        value = getattr(sys, attr, None)
        if value and value not in seen:
            seen.append(value)
    return seen


def _interpreter_candidates():
    """Places where this interpreter may live, most specific first."""
    yield getattr(sys, 'executable', None)
    yield getattr(sys, '_base_executable', None)
    tag = _version_tag()
    if WINDOWS:
        names = ('python.exe',)
        subdirs = ('', 'Scripts')
    else:
        abi = getattr(sys, 'abiflags', '')
        names = (tag + abi, tag, 'python%d' % sys.version_info[0], 'python')
        subdirs = ('bin',)
    for prefix in _prefixes():
        for sub in subdirs:
            for name in names:
                yield os.path.join(prefix, sub, name)


def _name_says_this_version(path):
    """Whether path (or its real target) is named like this version."""
    if WINDOWS:
        return os.path.basename(path).lower() in ('python.exe',
                                                  'pythonw.exe')
    tag = _version_tag()
    wanted = (tag, tag + getattr(sys, 'abiflags', ''))
    for p in (path, os.path.realpath(path)):
        if os.path.basename(p) in wanted:
            return True
    return False


def _lives_in_a_prefix(path):
    """Whether path sits in the bin directory of this installation."""
    homes = set()
    for prefix in _prefixes():
        homes.add(os.path.normcase(os.path.abspath(prefix)))
        homes.add(os.path.normcase(os.path.abspath(
            os.path.join(prefix, 'Scripts' if WINDOWS else 'bin'))))
    for p in (path, os.path.realpath(path)):
        if os.path.normcase(os.path.dirname(os.path.abspath(p))) in homes:
            return True
    return False


def _identity():
    return '%s\n%s' % (sys.version, sys.prefix)


_PROBE_TIMEOUT = 30     # seconds an interpreter or the launcher may take to answer


def _run_briefly(argv, timeout=None):
    """(exit status, stdout and stderr as text) of argv, with no input;
    (None, why) when it cannot be started or does not end in time.  No
    subprocess module: it would import _posixsubprocess."""
    if timeout is None:
        timeout = _PROBE_TIMEOUT
    if WINDOWS:
        import subprocess
        try:
            done = subprocess.run(argv, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=timeout)
        except (OSError, subprocess.SubprocessError) as exc:
            return None, str(exc)
        return done.returncode, done.stdout.decode('utf-8', 'replace')
    import select
    import time
    r, w = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 0),
            (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, w, 2)])
    except OSError as exc:
        os.close(r)
        return None, str(exc)
    finally:
        os.close(w)
        os.close(devnull)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                return None, 'no answer in %d seconds' % timeout
            data = os.read(r, 65536)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(r)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return status, b''.join(chunks).decode('utf-8', 'replace')


_IDENTITY_PROBE = 'import sys; sys.stdout.write(sys.version + "\\n" + sys.prefix)'


def _answers_as_us(path):
    """Ask path itself (once per process) whether it is this interpreter."""
    known = _Interpreter.probed.get(path)
    if known is not None:
        return known
    status, out = _run_briefly([path, '-I', '-c', _IDENTITY_PROBE])
    ok = status == 0 and out == _identity()
    _Interpreter.probed[path] = ok
    return ok


def _usable(path):
    if not path or not os.path.isfile(path) or not os.access(path, os.X_OK):
        return False
    if _name_says_this_version(path) and _lives_in_a_prefix(path):
        return True
    # Only ask programs that call themselves Python: running the host of
    # an embedded interpreter (lldb, an editor) with -c could do anything.
    if not os.path.basename(path).lower().startswith('python'):
        return False
    return _answers_as_us(path)


class _LauncherUnusable(Exception):
    """Why the child launcher cannot start this interpreter."""


def _launcher_file():
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), LAUNCHER)


def _launcher_options(library):
    """The launcher's options that make its interpreter this one."""
    options = ['--libpython=' + library]
    for name, value in (
            ('executable', sys.executable),
            ('base-executable', getattr(sys, '_base_executable', None)),
            ('prefix', sys.prefix), ('exec-prefix', sys.exec_prefix),
            ('base-prefix', sys.base_prefix),
            ('base-exec-prefix', sys.base_exec_prefix),
            ('stdlib-dir', getattr(sys, '_stdlib_dir', None)),
            ('platlibdir', getattr(sys, 'platlibdir', None))):
        if value:
            options.append('--%s=%s' % (name, value))
    # The main script's folder, which Python put first, is not on a new
    # interpreter's path either (prepare() gives the child the parent's
    # whole sys.path); searched first by every import of the start-up, it
    # cost the launched child 2-5% of a spawn start+join.
    script = getattr(sys.modules.get('__main__'), '__file__', None)
    script_dir = os.path.dirname(os.path.abspath(script)) if script else None
    for index, entry in enumerate(sys.path):
        if not entry or not isinstance(entry, str):
            continue
        if index == 0 and script_dir is not None and \
                os.path.abspath(entry) == script_dir:
            continue
        options.append('--path=' + entry)
    options.append('--')
    return options


def _launcher():
    """(launcher, its options) for this interpreter, checked by running it
    once; raises _LauncherUnusable saying why it cannot be used."""
    import _cmultiprocessing
    library = _cmultiprocessing.runtime_library()
    if library is None:
        raise _LauncherUnusable(
            'Python is linked statically into this program, so there is no '
            'shared libpython for the launcher to load')
    launcher = _launcher_file()
    if not os.path.isfile(launcher):
        raise _LauncherUnusable('the launcher %s is missing' % launcher)
    if not os.access(launcher, os.X_OK):
        raise _LauncherUnusable('the launcher %s is not executable'
                                % launcher)
    options = _launcher_options(library)
    status, out = _run_briefly([launcher, *options, '-I', '-c',
                                _IDENTITY_PROBE])
    if status != 0 or out != _identity():
        detail = out.strip()
        if len(detail) > 2000:
            detail = '...' + detail[-2000:]
        raise _LauncherUnusable(
            'the launcher %s over %s %s%s' % (
                launcher, library,
                'failed' if status is None else
                'did not start this interpreter' if status == 0 else
                'exited with status %d' % status,
                ': ' + detail if detail else ''))
    return launcher, options, library


def _discover():
    tried = []
    for path in _interpreter_candidates():
        if not path or path in tried:
            continue
        tried.append(path)
        if _usable(path):
            _Interpreter.found = _as_path(path)
            _Interpreter.launch = ()
            _Interpreter.why = (
                '%s, a Python %s program of this installation' % (
                    path, sys.version.split()[0]))
            return
    # sys.executable is named on its own in the messages below.
    executable = getattr(sys, 'executable', None)
    looked = ', '.join(repr(p) for p in tried if p != executable) or \
        'the usual places'
    try:
        launcher, options, library = _launcher()
    except _LauncherUnusable as exc:
        raise RuntimeError(
            'cmultiprocessing cannot find a Python %s interpreter for child '
            'processes: sys.executable is %r and none of %s is this '
            'interpreter, and the child launcher cannot be used: %s.  Call '
            'cmultiprocessing.set_executable(path) with the path of the '
            'python%d.%d program of this installation (prefix %r).'
            % (sys.version.split()[0], getattr(sys, 'executable', None),
               looked, exc, sys.version_info[0], sys.version_info[1],
               sys.prefix)) from None
    _Interpreter.found = _as_path(launcher)
    _Interpreter.launch = tuple(options)
    _Interpreter.why = (
        '%s, the child launcher over %s (no Python %s program of this '
        'installation: sys.executable is %r, and none of %s is one)' % (
            launcher, library, sys.version.split()[0],
            getattr(sys, 'executable', None), looked))
    from . import util
    util.info('children run on %s', _Interpreter.why)
