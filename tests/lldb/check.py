"""cmultiprocessing inside LLDB's embedded Python.

Loaded by run_lldb_check.sh as ``command script import check.py``; lldb then
calls __lldb_init_module(), which runs the checks and writes a JSON report
to the file named by $CMP_LLDB_REPORT.  Importing this module does nothing
else, so spawned children can import it to find the worker functions.

Every child reports its sys.version and sys.prefix, which must equal the
parent's (the embedded interpreter's): a child that ran on another Python
found on PATH is a failure, as is an error.
"""

import json
import os
import sys
import traceback


def identity(_=None):
    return (sys.version, sys.prefix)


def put_identity(queue):
    queue.put(identity())


def _check_method(mp, method):
    ctx = mp.get_context(method)
    seen = []
    queue = ctx.Queue()
    proc = ctx.Process(target=put_identity, args=(queue,))
    proc.start()
    seen.append(('Process+Queue', tuple(queue.get(timeout=60))))
    proc.join(60)
    if proc.exitcode != 0:
        raise RuntimeError('Process exit code %r' % (proc.exitcode,))
    queue.close()
    if hasattr(ctx, 'Pool'):
        try:
            with ctx.Pool(2) as pool:
                for got in pool.map(identity, range(4)):
                    seen.append(('Pool.map', tuple(got)))
        except NotImplementedError:
            seen.append(('Pool.map', 'not implemented'))
    return seen


def run_checks():
    import cmultiprocessing as mp
    parent = identity()
    report = {'parent': parent, 'executable': sys.executable,
              'child_executable': None, 'results': {}, 'ok': True}
    try:
        from cmultiprocessing import spawn
        report['child_executable'] = os.fsdecode(spawn.get_executable())
    except Exception:
        report['ok'] = False
        report['child_executable'] = traceback.format_exc()
    for method in ('fork', 'spawn', 'forkserver'):
        entry = report['results'][method] = {}
        try:
            seen = _check_method(mp, method)
        except Exception:
            entry['error'] = traceback.format_exc()
            report['ok'] = False
            continue
        entry['seen'] = seen
        for what, got in seen:
            if got == 'not implemented':
                continue
            if list(got) != list(parent):
                entry.setdefault('mismatch', []).append([what, got])
                report['ok'] = False
    return report


def __lldb_init_module(debugger, internal_dict):
    try:
        report = run_checks()
    except Exception:
        report = {'ok': False, 'error': traceback.format_exc()}
    path = os.environ.get('CMP_LLDB_REPORT')
    text = json.dumps(report, indent=1)
    if path:
        with open(path, 'w') as f:
            f.write(text)
    else:
        print(text)
