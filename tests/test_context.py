"""Contexts and the package's module-level API."""
import multiprocessing as stdlib_mp       # only to compare the API shape
import os
import subprocess
import sys
import textwrap

import pytest

import _cmultiprocessing
import cmultiprocessing
from cmultiprocessing import context, process


def test_all_matches_stdlib():
    assert cmultiprocessing.__all__ == stdlib_mp.__all__
    for name in cmultiprocessing.__all__:
        assert hasattr(cmultiprocessing, name), name


def test_context_methods_match_stdlib():
    ours = {n for n in dir(context.BaseContext) if not n.startswith('__')}
    theirs = {n for n in dir(stdlib_mp.context.BaseContext)
              if not n.startswith('__')}
    assert theirs <= ours, theirs - ours


def test_exceptions_come_from_native_module():
    assert context.ProcessError is _cmultiprocessing.ProcessError
    assert cmultiprocessing.ProcessError is context.ProcessError
    for name in ('BufferTooShort', 'TimeoutError', 'AuthenticationError'):
        exc = getattr(cmultiprocessing, name)
        assert exc is getattr(_cmultiprocessing, name)
        assert issubclass(exc, cmultiprocessing.ProcessError)
        assert getattr(context.BaseContext, name) is exc
    assert issubclass(cmultiprocessing.ProcessError, Exception)


def test_get_context_by_name():
    for method in ('fork', 'spawn', 'forkserver'):
        ctx = cmultiprocessing.get_context(method)
        assert ctx.get_start_method() == method
        assert ctx.get_context() is ctx
        assert ctx.Process._start_method == method
        assert issubclass(ctx.Process, process.BaseProcess)
    fork = cmultiprocessing.get_context('fork')
    assert fork.get_context('spawn') is cmultiprocessing.get_context('spawn')


@pytest.mark.parametrize('bad', ['nope', '', 'Fork', 3, None.__class__])
def test_get_context_unknown(bad):
    with pytest.raises(ValueError, match='cannot find context'):
        cmultiprocessing.get_context('fork').get_context(bad)


def test_concrete_context_refuses_set_start_method():
    ctx = cmultiprocessing.get_context('fork')
    with pytest.raises(ValueError, match='concrete context'):
        ctx.set_start_method('spawn')
    with pytest.raises(ValueError):
        ctx.set_start_method(None)


def test_default_context_rules():
    default = context.DefaultContext(context._concrete_contexts['fork'])
    assert default.get_start_method(allow_none=True) is None
    assert default.get_start_method() == 'fork'       # now fixed
    with pytest.raises(RuntimeError, match='already been set'):
        default.set_start_method('spawn')
    default.set_start_method('spawn', force=True)
    assert default.get_start_method() == 'spawn'
    assert default.get_context() is context._concrete_contexts['spawn']
    default.set_start_method(None, force=True)
    assert default.get_start_method(allow_none=True) is None
    with pytest.raises(ValueError):
        default.set_start_method('bogus')
    default.set_start_method('forkserver')
    assert default.get_start_method() == 'forkserver'


def test_default_start_method_and_all_methods():
    methods = cmultiprocessing.get_all_start_methods()
    assert methods == stdlib_mp.get_all_start_methods()
    if sys.platform.startswith('linux'):
        # 3.14 moved Linux to the forkserver (gh-84559)
        default = 'forkserver' if sys.version_info >= (3, 14) else 'fork'
        assert methods[0] == default
        assert context._default_context._default_context._name == default


def _fresh_interpreter(code, **env):
    """stdout lines of `code` run by a new interpreter of this one, with
    this sys.path (and `env` added to the environment)."""
    code = 'import sys; sys.path[:0] = %r\n' % (sys.path,) + \
        textwrap.dedent(code)
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, **env))
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_import_is_lazy_and_fixes_no_start_method():
    # Importing the package neither imports tempfile/shutil/subprocess nor
    # decides the default method (3.14's probe of the temporary folder).
    got = _fresh_interpreter('''
        import cmultiprocessing as mp
        late = {'tempfile', 'shutil', 'subprocess'} & set(sys.modules)
        print(sorted(late) or 'none', mp.get_start_method(allow_none=True))
        print(mp.get_start_method(), mp.get_all_start_methods()[0])
    ''')
    assert got[:2] == ['none', 'None']
    assert got[2] == got[3]


@pytest.mark.skipif(sys.version_info < (3, 14) or os.name != 'posix',
                    reason='3.14+ POSIX rule')
def test_unwritable_tempdir_defaults_to_spawn(tmp_path):
    # A regular file as the temporary "folder": nothing can be made in it,
    # not even by root.
    tmpdir = tmp_path / 'not-a-folder'
    tmpdir.write_bytes(b'')
    got = _fresh_interpreter('''
        import os, tempfile
        tempfile.tempdir = os.environ['TMPDIR']
        import cmultiprocessing as mp
        print(mp.get_start_method(), mp.get_all_start_methods()[0])
    ''', TMPDIR=str(tmpdir))
    assert got == ['spawn', 'spawn']


@pytest.mark.skipif(sys.version_info < (3, 14), reason='3.14+ rule')
def test_default_method_probe_reads_the_tempdir(monkeypatch):
    from cmultiprocessing import util
    monkeypatch.setattr(util, '_has_writeable_tempdir', lambda: False)
    if sys.platform.startswith('linux'):
        assert context._platform_default_method() == 'spawn'
    monkeypatch.setattr(util, '_has_writeable_tempdir', lambda: True)
    if sys.platform.startswith('linux'):
        assert context._platform_default_method() == 'forkserver'
    fresh = context.DefaultContext()
    assert fresh.get_start_method(allow_none=True) is None
    assert fresh.get_all_start_methods()[0] == fresh.get_start_method()
    patched = context.DefaultContext()       # assignable before first use
    patched._default_context = context._concrete_contexts['spawn']
    assert patched.get_all_start_methods()[0] == 'spawn'
    assert patched.get_start_method() == 'spawn'


def test_socket_paths_fit_sockaddr():
    from cmultiprocessing import connection, util
    path = connection.arbitrary_address('AF_UNIX')
    assert path.startswith(util.get_temp_dir() + os.sep)
    if util._SUN_PATH_MAX is not None and sys.version_info >= (3, 14):
        assert os.path.basename(path).startswith('sock-')
        assert len(path) < util._SUN_PATH_MAX


@pytest.mark.skipif(sys.version_info < (3, 14) or
                    not sys.platform.startswith('linux'), reason='3.14+')
def test_long_tmpdir_falls_back_to_system_tmp(tmp_path):
    deep = tmp_path / ('d' * 100)
    deep.mkdir()
    got = _fresh_interpreter('''
        import tempfile
        from cmultiprocessing import util
        print(util.get_temp_dir().startswith(tempfile.gettempdir()))
        print(util._socket_base_dir(tempfile))
    ''', TMPDIR=str(deep))
    assert got[0] == 'False'
    assert got[1] in ('/tmp', '/var/tmp', '/usr/tmp')


def test_process_of_default_context_follows_start_method():
    code = textwrap.dedent('''
        import sys
        sys.path[:0] = %r
        import cmultiprocessing as mp
        def report(q):
            pass
        if __name__ == '__main__':
            mp.set_start_method('spawn')
            p = mp.Process(target=report, args=(None,))
            from cmultiprocessing import context
            print(mp.get_start_method(), type(p).__name__,
                  context._default_context.get_context().Process.__name__)
    ''' % (sys.path,))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split() == ['spawn', 'Process', 'SpawnProcess'], \
        out.stderr


def test_force_start_method():
    default = context._default_context
    saved = default._actual_context
    try:
        context._force_start_method('spawn')
        assert default.get_start_method() == 'spawn'
    finally:
        default._actual_context = saved


def test_cpu_count():
    assert cmultiprocessing.cpu_count() == os.cpu_count()


def test_cpu_count_unknown(monkeypatch):
    monkeypatch.setattr(os, 'cpu_count', lambda: None)
    with pytest.raises(NotImplementedError):
        cmultiprocessing.cpu_count()


def test_reducer_property():
    ctx = context.BaseContext()
    original = ctx.reducer
    assert original is context.reduction
    sentinel = object()
    try:
        ctx.reducer = sentinel
        assert ctx.reducer is sentinel
        assert cmultiprocessing.get_context('spawn').reducer is sentinel
    finally:
        ctx.reducer = original
    assert context.reduction is original


def test_spawning_popen_and_assert_spawning():
    assert context.get_spawning_popen() is None

    class Thing:
        pass
    with pytest.raises(RuntimeError,
                       match='Thing objects should only be shared'):
        context.assert_spawning(Thing())
    marker = object()
    context.set_spawning_popen(marker)
    try:
        assert context.get_spawning_popen() is marker
        context.assert_spawning(Thing())
    finally:
        context.set_spawning_popen(None)


def test_spawning_popen_is_per_thread():
    import threading
    seen = []
    context.set_spawning_popen('main')
    try:
        t = threading.Thread(target=lambda: seen.append(
            context.get_spawning_popen()))
        t.start()
        t.join()
    finally:
        context.set_spawning_popen(None)
    assert seen == [None]


def test_freeze_support_is_noop_here():
    assert cmultiprocessing.freeze_support() is None


def test_freeze_support_fixes_no_start_method(monkeypatch):
    # gh-140814 (3.14): asking whether to run a frozen child must not fix
    # the default start method.
    default = context._default_context
    monkeypatch.setattr(default, '_actual_context', None)
    monkeypatch.setattr(sys, 'frozen', True, raising=False)
    ran = []
    from cmultiprocessing import spawn
    monkeypatch.setattr(spawn, 'freeze_support', lambda: ran.append(1))
    cmultiprocessing.freeze_support()
    assert default.get_start_method(allow_none=True) is None
    expect = sys.version_info >= (3, 14) or sys.platform == 'win32'
    assert ran == ([1] if expect else [])


def test_logger_functions():
    assert cmultiprocessing.get_logger().name == 'multiprocessing'


def test_static_process_functions():
    assert cmultiprocessing.current_process() is process.current_process()
    assert cmultiprocessing.parent_process() is None
    assert cmultiprocessing.active_children() == []


def test_mp_main_alias():
    assert sys.modules['__mp_main__'] is sys.modules['__main__']


def test_import_star_is_complete():
    ns = {}
    exec('from cmultiprocessing import *', ns)
    for name in stdlib_mp.__all__:
        assert name in ns, name


def test_module_does_not_import_stdlib_multiprocessing():
    code = ('import sys; sys.path[:0] = %r; import cmultiprocessing, '
            'cmultiprocessing.popen_fork, cmultiprocessing.util; '
            'bad = [m for m in ("multiprocessing", "_multiprocessing", '
            '"_posixsubprocess", "concurrent.futures", "_posixshmem") '
            'if m in sys.modules]; print(bad)' % (sys.path,))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == '[]', out.stderr
