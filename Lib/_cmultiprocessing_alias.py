"""The alias: ``multiprocessing`` (and ``_multiprocessing``) as cmultiprocessing.

``cmultiprocessing.install()`` puts a finder first on ``sys.meta_path`` that
answers for ``multiprocessing``, every ``multiprocessing.<name>`` and
``_multiprocessing`` with the modules ``cmultiprocessing``,
``cmultiprocessing.<name>`` and ``_cmultiprocessing`` -- the very objects,
registered under both names, so that ``multiprocessing.pool is
cmultiprocessing.pool``.  A module keeps its own ``__name__`` and
``__spec__`` (``cmultiprocessing.pool``): what is pickled by reference names
the real module, which every child can import.  Names ours lacks are not
found (``importlib.util.find_spec`` gives None) and ``import`` raises
ModuleNotFoundError under the name asked for.

This module is top-level and imports nothing of the package: the start-up
hook (``cmultiprocessing-alias.pth``, written into site-packages by the
build) imports it in every interpreter whose environment has
``CMULTIPROCESSING_ALIAS=1`` -- children and sub-interpreters of a program
run with ``python -m cmultiprocessing`` -- and installs only the finder
there, so that nothing is loaded until the program imports
``multiprocessing``.

Where the standard library's package (or ``_multiprocessing``) is already
imported, install() refuses and changes nothing: code that imported it holds
its objects, and two implementations side by side would not work together.
"""
import _thread
import importlib
import importlib.util
import os
import sys
from importlib.machinery import ModuleSpec

ENV_VAR = 'CMULTIPROCESSING_ALIAS'

# (the name asked for, the module that answers), for a name and its
# submodules.
_ALIASES = (('multiprocessing', 'cmultiprocessing'),
            ('_multiprocessing', '_cmultiprocessing'))

_lock = _thread.RLock()


def real_name(name):
    """The cmultiprocessing module that answers for name, or None."""
    for alias, real in _ALIASES:
        if name == alias or name.startswith(alias + '.'):
            return real + name[len(alias):]
    return None


def alias_name(name):
    """The alias under which module name is also known, or None."""
    for alias, real in _ALIASES:
        if name == real or name.startswith(real + '.'):
            return alias + name[len(real):]
    return None


def _is_ours(name, module):
    return getattr(module, '__name__', None) == real_name(name)


def foreign_modules():
    """Names of the standard library's multiprocessing modules already
    imported (those the alias would have to replace)."""
    return sorted(name for name, module in list(sys.modules.items())
                  if real_name(name) is not None and
                  not _is_ours(name, module))


class _AliasLoader:
    """Loads an alias by importing the real module and giving it back."""

    def __init__(self, real):
        self.real = real

    def create_module(self, spec):
        module = importlib.import_module(self.real)
        # importlib now writes the alias spec on the module; exec_module
        # gives the module its own back.
        spec.loader_state = getattr(module, '__spec__', None)
        return module

    def exec_module(self, module):
        spec = getattr(module, '__spec__', None)
        if spec is not None and spec.loader is self:
            module.__spec__ = spec.loader_state

    def __repr__(self):
        return '<cmultiprocessing alias loader for %r>' % (self.real,)


class AliasFinder:
    """The meta path finder of the alias (one instance, _finder)."""

    def find_spec(self, name, path=None, target=None):
        real = real_name(name)
        if real is None:
            return None
        if real not in sys.modules:
            # The parent of a submodule is imported already (importlib
            # imports `multiprocessing` first): nothing is imported here.
            try:
                if importlib.util.find_spec(real) is None:
                    return None
            except (ImportError, ValueError):
                return None
        return ModuleSpec(name, _AliasLoader(real))

    def invalidate_caches(self):
        pass

    def __repr__(self):
        return '<cmultiprocessing alias finder>'


_finder = AliasFinder()


def installed():
    """True while the alias is installed in this interpreter."""
    return _finder in sys.meta_path


def already_imported_message(names):
    shown = ', '.join(names[:6]) + (', ...' if len(names) > 6 else '')
    return (
        "cmultiprocessing.install(): the standard library's multiprocessing "
        "is already imported in this interpreter (%s), and code that "
        "imported it holds its objects: swapping it now would leave two "
        "implementations side by side, so nothing was changed.  Install the "
        "alias before anything imports multiprocessing: call "
        "cmultiprocessing.install() first thing in the main script (before "
        "importing the libraries that use multiprocessing or "
        "concurrent.futures.process), or run the program with "
        "`python -m cmultiprocessing SCRIPT` (or `-m MODULE`), or with %s=1 "
        "in its environment." % (shown, ENV_VAR))


def install():
    """cmultiprocessing.install(): from now on `import multiprocessing`
    (and each `multiprocessing.X`, and `_multiprocessing`) gives
    cmultiprocessing's modules, in this process and in the children it
    starts under every start method.  Installing twice is harmless.
    RuntimeError, with nothing changed, where the standard library's
    multiprocessing is already imported.  `python -m cmultiprocessing
    SCRIPT` runs a program with it installed."""
    with _lock:
        foreign = foreign_modules()
        if foreign:
            raise RuntimeError(already_imported_message(foreign))
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
        # What is loaded already gets its second name now.
        for name, module in list(sys.modules.items()):
            alias = alias_name(name)
            if alias is not None and module is not None:
                sys.modules.setdefault(alias, module)


def uninstall():
    """cmultiprocessing.uninstall(): remove the alias -- the finder, the
    second names of our modules, and the environment variable (so that
    children started from now on do not get it).  `import multiprocessing`
    finds the standard library's package again."""
    with _lock:
        while _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        for name, module in list(sys.modules.items()):
            if real_name(name) is not None and _is_ours(name, module):
                del sys.modules[name]
        os.environ.pop(ENV_VAR, None)


def wanted_by_environment():
    return os.environ.get(ENV_VAR, '') not in ('', '0')


def install_from_environment():
    """The start-up hook's call: install when the environment asks for it.
    A refusal is reported on stderr; the interpreter goes on."""
    if not wanted_by_environment():
        return
    try:
        install()
    except RuntimeError as exc:
        sys.stderr.write('%s\n' % exc)
