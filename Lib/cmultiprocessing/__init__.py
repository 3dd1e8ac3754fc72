"""cmultiprocessing: the standard library's multiprocessing API (processes
with the interface of threading) over a native core, _cmultiprocessing.

The module-level functions and classes are those of the default context
(see context.py); cmultiprocessing.dummy offers the same API over threads.
"""

import sys

from . import context

# Every public attribute of the default context becomes a module attribute.
__all__ = sorted(name for name in dir(context._default_context)
                 if name[:1] != '_')
globals().update({name: getattr(context._default_context, name)
                  for name in __all__})

# Extra log levels between the standard ones (kept for compatibility).
SUBDEBUG = 5
SUBWARNING = 25



def install():
    """From now on `import multiprocessing` (and each `multiprocessing.X`,
    and `_multiprocessing`) gives this package's modules, in this process
    and in the children it starts under every start method.  RuntimeError,
    with nothing changed, where the standard library's multiprocessing is
    already imported.  `python -m cmultiprocessing SCRIPT` runs a program
    with it installed."""
    import _cmultiprocessing_alias
    _cmultiprocessing_alias.install()


def uninstall():
    """Undo install(): `import multiprocessing` finds the standard
    library's package again (in children started from now on too)."""
    import _cmultiprocessing_alias
    _cmultiprocessing_alias.uninstall()


# Children bootstrapped by spawn replace this alias with their own main.
if '__main__' in sys.modules:
    sys.modules['__mp_main__'] = sys.modules['__main__']
