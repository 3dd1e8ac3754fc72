"""cmultiprocessing: the standard library's multiprocessing API (processes
with the interface of threading) over a native core, _cmultiprocessing.

The module-level functions and classes are those of the default context
(see context.py); cmultiprocessing.dummy offers the same API over threads.
"""

import sys

from . import context

# Every public attribute of the default context becomes a module attribute.
__all__ = [name for name in sorted(dir(context._default_context))
           if name[:1] != '_']
globals().update({name: getattr(context._default_context, name)
                  for name in __all__})

# Extra log levels between the standard ones (kept for compatibility).
SUBDEBUG = 5
SUBWARNING = 25


def __getattr__(name):
    # install() and uninstall() (see _cmultiprocessing_alias) are the
    # package's own, not the stdlib's API: they stay out of __all__ and
    # dir(), and their module loads only when one is asked for.
    if name in ('install', 'uninstall'):
        import _cmultiprocessing_alias
        return getattr(_cmultiprocessing_alias, name)
    raise AttributeError('module %r has no attribute %r' % (__name__, name))


# Children bootstrapped by spawn replace this alias with their own main.
if '__main__' in sys.modules:
    sys.modules['__mp_main__'] = sys.modules['__main__']
