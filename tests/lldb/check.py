"""cmultiprocessing inside an embedded Python: LLDB's, or a plain C host's.

Shared by tests/lldb/run_lldb_check.sh and tests/embed/run_embed_check.sh.

- In LLDB: loaded as ``command script import check.py``; lldb then calls
  __lldb_init_module(), which runs the checks and writes a JSON report to
  the file named by $CMP_LLDB_REPORT.
- In tests/embed/host.c: the host imports this module and calls
  write_report(path).
- ``python3 check.py table LABEL REPORT.json`` prints one line per start
  method of a report and exits 0 only if the report passed (any Python 3
  can print it: printing needs nothing of cmultiprocessing).

Importing this module does nothing else, so spawned children can import it
to find the worker functions.

Under spawn a child also starts a spawn child of its own (a grandchild).
Every child reports its sys.version, sys.prefix, pid and whether the
standard library's ``multiprocessing`` is in its sys.modules.  Version and
prefix must equal the parent's (the embedded interpreter's): a child that
ran on another Python found on PATH is a failure, as is a result computed
in the parent, an error, or ``multiprocessing`` imported anywhere.
"""

import json
import os
import sys
import traceback

# Generous: a loaded 2-core machine starts a spawn child in a second or two.
TIMEOUT = 120
METHODS = ('default', 'fork', 'forkserver', 'spawn')


def identity(_=None):
    return [sys.version, sys.prefix, os.getpid(),
            'multiprocessing' in sys.modules]


def put_identity(queue):
    queue.put(identity())


def put_grandchild_identity(queue):
    """In a spawn child (on the launcher when no python program is left):
    start a spawn child of its own, which must run on the same interpreter."""
    import cmultiprocessing as mp
    ctx = mp.get_context('spawn')
    inner = ctx.Queue()
    proc = ctx.Process(target=put_identity, args=(inner,))
    proc.start()
    try:
        got = inner.get(timeout=TIMEOUT)
    finally:
        proc.join(TIMEOUT)
        if proc.exitcode is None:
            proc.kill()
            proc.join(10)
    inner.close()
    inner.join_thread()
    queue.put(got)


def _check_method(mp, method):
    ctx = mp.get_context(None if method == 'default' else method)
    seen = []
    queue = ctx.Queue()
    proc = ctx.Process(target=put_identity, args=(queue,))
    proc.start()
    try:
        seen.append(['Process+Queue', list(queue.get(timeout=TIMEOUT))])
    finally:
        proc.join(TIMEOUT)
        if proc.exitcode is None:
            proc.kill()
            proc.join(10)
    if proc.exitcode != 0:
        raise RuntimeError('Process exit code %r' % (proc.exitcode,))
    if method == 'spawn':
        proc = ctx.Process(target=put_grandchild_identity, args=(queue,))
        proc.start()
        try:
            seen.append(['grandchild', list(queue.get(timeout=TIMEOUT))])
        finally:
            proc.join(TIMEOUT)
            if proc.exitcode is None:
                proc.kill()
                proc.join(10)
        if proc.exitcode != 0:
            raise RuntimeError('grandchild Process exit code %r'
                               % (proc.exitcode,))
    queue.close()
    queue.join_thread()
    with ctx.Pool(2) as pool:
        for got in pool.map_async(identity, range(4)).get(TIMEOUT):
            seen.append(['Pool.map', list(got)])
    return ctx.get_start_method(), seen


def run_checks(methods=METHODS):
    import cmultiprocessing as mp
    parent = identity()
    report = {'parent': parent, 'python': sys.version.split()[0],
              'executable': sys.executable, 'child_executable': None,
              'describe_executable': None, 'default_method': None,
              'results': {}, 'ok': True, 'problems': []}

    def problem(text):
        report['ok'] = False
        report['problems'].append(text)

    if parent[3]:
        problem('the parent has multiprocessing in sys.modules before the '
                'checks')
    try:
        from cmultiprocessing import spawn
        report['child_executable'] = os.fsdecode(spawn.get_executable())
        report['describe_executable'] = spawn.describe_executable()
    except Exception:
        problem('spawn.get_executable() failed')
        report['child_executable'] = traceback.format_exc()
    try:
        report['default_method'] = mp.get_start_method()
    except Exception:
        problem('get_start_method() failed: %s' % traceback.format_exc())
    for method in methods:
        entry = report['results'][method] = {'problems': []}
        try:
            entry['method'], seen = _check_method(mp, method)
        except Exception:
            entry['error'] = traceback.format_exc()
            problem('%s: %s' % (method, entry['error'].splitlines()[-1]))
            continue
        entry['seen'] = seen
        for what, got in seen:
            version, prefix, pid, has_mp = got
            if [version, prefix] != parent[:2]:
                entry['problems'].append('%s ran on %r, prefix %r' % (
                    what, version, prefix))
            if pid == parent[2]:
                entry['problems'].append('%s computed in the parent' % what)
            if has_mp:
                entry['problems'].append(
                    '%s: the child has multiprocessing in sys.modules' % what)
        if not any(what == 'Pool.map' for what, _ in seen):
            entry['problems'].append('Pool.map returned nothing')
        for text in entry['problems']:
            problem('%s: %s' % (method, text))
    if 'multiprocessing' in sys.modules:
        problem('the parent has multiprocessing in sys.modules after the '
                'checks')
    return report


def write_report(path=None):
    """Run the checks and write the report (JSON) to path, or print it."""
    try:
        report = run_checks()
    except Exception:
        report = {'ok': False, 'error': traceback.format_exc()}
    text = json.dumps(report, indent=1)
    if path:
        with open(path, 'w') as f:
            f.write(text)
    else:
        print(text)
    return report.get('ok', False)


def __lldb_init_module(debugger, internal_dict):
    write_report(os.environ.get('CMP_LLDB_REPORT'))


# ---------------------------------------------------------------------------
# Printing a report: one line per start method
# ---------------------------------------------------------------------------

def _launcher_or_program(report):
    exe = report.get('child_executable') or ''
    if os.path.basename(exe).startswith('_cmp_launcher'):
        return 'launcher'
    return exe or '?'


def table(label, path):
    """Print report path as lines 'label method verdict ...'; True if ok."""
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as exc:
        print('%-40s %-10s FAIL  no report (%s)' % (label, '-', exc))
        return False
    if 'error' in report and 'results' not in report:
        print('%-40s %-10s FAIL  %s' % (label, '-', report['error']))
        return False
    parent = report.get('parent') or ['?', '?']
    print('%s: parent Python %s, prefix %s, sys.executable %r' % (
        label, report.get('python'), parent[1], report.get('executable')))
    print('%s: children run on %s' % (
        label, report.get('describe_executable') or
        report.get('child_executable')))
    for method in METHODS:
        entry = report.get('results', {}).get(method)
        if entry is None:
            print('%-40s %-10s FAIL  not run' % (label, method))
            continue
        name = method if method != 'default' else \
            'default(%s)' % entry.get('method', '?')
        if 'error' in entry:
            print('%-40s %-19s FAIL  %s' % (
                label, name, entry['error'].strip().splitlines()[-1]))
            continue
        seen = entry.get('seen', [])
        pids = {got[2] for _, got in seen}
        print('%-40s %-19s %-4s  %d results from %d children (%s), '
              'run on %s' % (
                  label, name, 'FAIL' if entry['problems'] else 'ok',
                  len(seen), len(pids),
                  'forked' if entry.get('method') == 'fork' else
                  _launcher_or_program(report),
                  ', '.join(sorted({got[0].split()[0] for _, got in seen}))))
        for text in entry['problems']:
            print('%-40s %-19s       %s' % (label, '', text))
    for text in report.get('problems', []):
        if not any(text.startswith(m + ':') for m in METHODS):
            print('%-40s %-19s FAIL  %s' % (label, '-', text))
    print('%-40s %s' % (label, 'PASS' if report.get('ok') else 'FAIL'))
    return bool(report.get('ok'))


if __name__ == '__main__':
    if len(sys.argv) == 4 and sys.argv[1] == 'table':
        sys.exit(0 if table(sys.argv[2], sys.argv[3]) else 1)
    sys.exit('usage: %s table LABEL REPORT.json' % sys.argv[0])
