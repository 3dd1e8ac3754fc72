"""The alias inside LLDB's embedded Python (run_alias_check.sh loads it with
`command script import`): with CMULTIPROCESSING_ALIAS=1 in LLDB's
environment (the start-up hook installs it) or else by calling
cmultiprocessing.install(), ProcessPoolExecutor under fork, spawn and
forkserver must run children on LLDB's interpreter that see the alias and
load nothing of the stdlib's multiprocessing.  Prints one line,
"CMP-LLDB <json>"; the runner judges it."""
import json
import os
import sys

def child_report(_=None):
    import multiprocessing
    bad = [k for k, m in list(sys.modules.items())
           if k.startswith(('multiprocessing', '_multiprocessing'))
           and not m.__name__.startswith(('cmultiprocessing', '_cmultiprocessing'))]
    return (multiprocessing.__name__, sys.version, bad)

def __lldb_init_module(debugger, internal_dict):
    out = {}
    try:
        if not os.environ.get('CMULTIPROCESSING_ALIAS'):
            import cmultiprocessing
            cmultiprocessing.install()
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        out['parent'] = multiprocessing.__name__
        for m in ('fork', 'spawn', 'forkserver'):
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(m)) as ex:
                out[m] = ex.submit(child_report).result(timeout=60)
    except BaseException:
        import traceback
        out['error'] = traceback.format_exc()
    print('CMP-LLDB ' + json.dumps(out))
