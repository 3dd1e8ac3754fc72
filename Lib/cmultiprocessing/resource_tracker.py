"""The resource tracker: a helper process that unlinks named semaphores and
shared-memory segments which the program forgot to unlink.

Every process of a program writes one line per message into one pipe whose
read end the tracker holds; the tracker sees EOF once every writer has
exited and then unlinks whatever is still registered, warning about each
kind it had to clean.  The tracker ignores SIGINT and SIGTERM so that Ctrl-C
or ``killall python`` leave it to do its job.

A line is ``CMD:name:rtype``, or (3.14 on) a JSON object with the name in
URL-safe base64 -- for names the simple form cannot carry, and for every
message when ``_use_simple_format`` is false (the default from 3.15).  The
tracker reads both forms on every version.

From 3.14 a child made by a bare os.fork() drops its copy of the pipe (so
the parent can stop its tracker at exit without waiting for the child);
a child forked by Process keeps it and goes on using the parent's tracker.
"""

import binascii
import os
import sys
import time
import _thread

import _cmultiprocessing

from . import spawn
from . import util

__all__ = ['ensure_running', 'register', 'unregister']

_VERSION = sys.version_info[:2]

# Behaviour that 3.14 brought: reentrant messages queued rather than lost,
# the JSON line form, the at-fork handling of the pipe, the stop with a
# time limit when the tracker object goes away.
_NEW_314 = _VERSION >= (3, 14)

# Messages are written with one write(); POSIX makes pipe writes of at most
# PIPE_BUF (>= 512) bytes atomic, so several writers never interleave.
_MAX_MESSAGE = 512

# shm_open() and sem_open() take names of at most NAME_MAX (255) bytes; in
# base64 that is 340 characters, which keeps a JSON line under _MAX_MESSAGE.
_MAX_NAME_BYTES = 255


def _unlink_semaphore(name):
    return _cmultiprocessing.sem_unlink(name)


def _unlink_shared_memory(name):
    return _cmultiprocessing.shm_unlink(name)


if _VERSION >= (3, 13):
    def _noop(name):
        raise RuntimeError('noop should never be registered or cleaned up')

    _CLEANUP_FUNCS = {
        'noop': _noop,
        'dummy': lambda name: None,     # resource type used by the tests
    }
else:
    _CLEANUP_FUNCS = {'noop': lambda: None}

if os.name == 'posix':
    _CLEANUP_FUNCS['semaphore'] = _unlink_semaphore
    _CLEANUP_FUNCS['shared_memory'] = _unlink_shared_memory


class ReentrantCallError(RuntimeError):
    pass


def _warn(message):
    import warnings
    warnings.warn(message)


class _CountingRLock:
    """An RLock that can tell how deep its owner holds it, for the Pythons
    whose RLock lacks _recursion_count() (before 3.11.6, e.g. Debian 12's
    3.11.2 -- the one LLDB embeds there)."""

    def __init__(self):
        self._rlock = _thread.RLock()
        self._depth = 0

    def acquire(self, blocking=True, timeout=-1):
        if not self._rlock.acquire(blocking, timeout):
            return False
        self._depth += 1
        return True

    def release(self):
        self._depth -= 1
        self._rlock.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()

    def _recursion_count(self):
        return self._depth if self._rlock._is_owned() else 0

    def _at_fork_reinit(self):
        self._rlock._at_fork_reinit()
        self._depth = 0


if hasattr(_thread.RLock(), '_recursion_count'):
    _TrackerLock = _thread.RLock
else:
    _TrackerLock = _CountingRLock


# -- the two line forms ------------------------------------------------------

_TO_URLSAFE = bytes.maketrans(b'+/', b'-_')
_FROM_URLSAFE = bytes.maketrans(b'-_', b'+/')


def _simple_line(cmd, name, rtype):
    """CMD:name:rtype -- what every version before 3.14 writes."""
    line = ('%s:%s:%s\n' % (cmd, name, rtype)).encode('ascii')
    if len(line) > _MAX_MESSAGE:
        raise ValueError('msg too long')
    return line


def _json_string(text):
    # The fields are short identifiers: quote them by hand unless they need
    # escaping (json's output is the same either way).
    if text.isascii() and text.isprintable() and '"' not in text \
            and '\\' not in text:
        return '"%s"' % text
    import json
    return json.dumps(text, ensure_ascii=True)


# The start of a JSON line up to the name, per (cmd, rtype): a handful.
_json_heads = {}


def _json_head(cmd, rtype):
    head = _json_heads.get((cmd, rtype))
    if head is None:
        head = ('{"cmd":%s,"rtype":%s,"base64_name":"' % (
            _json_string(cmd), _json_string(rtype))).encode('ascii')
        if len(_json_heads) < 64:
            _json_heads[cmd, rtype] = head
    return head


def _json_line(cmd, name, rtype):
    """{"cmd":..,"rtype":..,"base64_name":..}: any name, colons and
    newlines included (3.14 on)."""
    raw = name.encode('utf-8', 'surrogateescape')
    if len(raw) > _MAX_NAME_BYTES:
        raise ValueError('shared memory name too long (max 255 bytes)')
    line = b''.join((
        _json_head(cmd, rtype),
        binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE),
        b'"}\n'))
    if len(line) > _MAX_MESSAGE:
        raise ValueError('msg too long')
    return line


_SIMPLE_PROBE = b'PROBE:0:noop\n'
_JSON_PROBE = b'{"cmd":"PROBE","rtype":"noop"}\n'


def _command(cmd, doc):
    """A ResourceTracker method sending cmd about (name, rtype)."""
    def method(self, name, rtype):
        self._send(cmd, name, rtype)
    method.__name__ = method.__qualname__ = cmd.lower()
    method.__doc__ = doc
    return method


class ResourceTracker(object):
    """The client side: starts the tracker and sends it messages."""

    def __init__(self):
        self._lock = _TrackerLock()
        self._fd = None         # write end of the tracker's pipe
        self._pid = None        # set only in the process that started it
        # What this process has registered and not unregistered, to tell a
        # new tracker when the old one died (the stdlib forgets it, and the
        # resources leak if this process dies too).
        self._held = set()
        if _VERSION >= (3, 13):
            self._exitcode = None
        if _NEW_314:
            # Messages sent by a finalizer while this thread was inside the
            # tracker: written once the outer call is done with the lock.
            self._reentrant_messages = []
            # Colon-separated lines where the name allows (3.14) or JSON
            # lines always (3.15); the tracker reads both.
            self._use_simple_format = _VERSION < (3, 15)
            # Whether _stop() gave up waiting for the tracker (for tests).
            self._waitpid_timed_out = False

    def _reentrant_call_error(self):
        # A finalizer run by the garbage collector while this thread is
        # inside the tracker (gh-109629) must not re-enter it.
        raise ReentrantCallError(
            "Reentrant call into the multiprocessing resource tracker")

    def _locked_once(self):
        """Whether the lock is held only by the current call."""
        return self._lock._recursion_count() <= 1

    # -- messages --

    if _NEW_314:
        def _encode(self, cmd, name, rtype):
            if self._use_simple_format and '\n' not in name:
                return _simple_line(cmd, name, rtype)
            return _json_line(cmd, name, rtype)

        def _probe_message(self):
            return _SIMPLE_PROBE if self._use_simple_format else _JSON_PROBE
    else:
        def _encode(self, cmd, name, rtype):
            return _simple_line(cmd, name, rtype)

        def _probe_message(self):
            return _SIMPLE_PROBE

    register = _command(
        'REGISTER', 'Have the tracker unlink name (an rtype) at shutdown '
        'unless it is unregistered first.')
    unregister = _command(
        'UNREGISTER', 'Tell the tracker that name (an rtype) was unlinked.')

    def _send(self, cmd, name, rtype):
        message = self._encode(cmd, name, rtype)
        try:
            self._write_or_restart(message, name, rtype)
        finally:
            # noted once sent: a tracker started in place of a dead one is
            # told what was held before this message (so an UNREGISTER
            # finds its name there)
            self._note(cmd, (name, rtype))

    def _note(self, cmd, key):
        # a set, as the tracker keeps them
        if cmd == 'REGISTER':
            self._held.add(key)
        elif cmd == 'UNREGISTER':
            self._held.discard(key)

    def _write_or_restart(self, message, name, rtype):
        # The message itself tells whether the tracker still reads its pipe
        # (a write to a pipe nobody reads fails with EPIPE): one write per
        # message, and the probe, restart and warning only after a failure.
        fd = self._fd
        if fd is not None and _write_message(fd, message):
            return
        try:
            self._ensure_running_and_write(message)
        except ReentrantCallError:
            # Before 3.14 a reentrant message is not queued.
            _warn(f"ResourceTracker called reentrantly for resource cleanup, "
                  f"which is unsupported. "
                  f"The {rtype} object {name!r} might leak.")
            _write_message(self._fd, message, must=True)

    # -- starting --

    def getfd(self):
        self.ensure_running()
        return self._fd

    def ensure_running(self):
        '''Make sure that the resource tracker process is running.

        A child normally inherits the tracker of its parent, so this starts
        one only in the first process that needs it, or again if it died.'''
        self._ensure_running_and_write()

    def _ensure_running_and_write(self, message=None):
        """Start the tracker unless it runs (a write tells: `message`, or a
        probe without one), then see that `message` reaches it."""
        with self._lock:
            if not self._locked_once():
                if message is None or not _NEW_314:
                    self._reentrant_call_error()
                # 3.14: the outer call writes it once it is done.
                self._reentrant_messages.append(message)
                return
            if self._fd is None:
                self._start()
            elif _write_message(self._fd, message or self._probe_message()):
                message = None
            else:
                self._forget_dead_tracker()
                self._start()
                self._tell_held()
        if _NEW_314:
            queued = self._reentrant_messages
            while queued:
                _write_message(self._fd, queued.pop(0), must=True)
        if message is not None:
            _write_message(self._fd, message, must=True)

    def _start(self):
        self._fd, self._pid = self._launch()
        if _VERSION >= (3, 13):
            self._exitcode = None

    def _forget_dead_tracker(self):
        fd, self._fd = self._fd, None
        os.close(fd)
        self._reap()
        _warn('resource_tracker: process died unexpectedly, '
              'relaunching.  Some resources might leak.')

    def _tell_held(self):
        """Register again, with the tracker just started in place of one
        that died, what this process holds (the message that found the old
        one dead follows)."""
        for name, rtype in sorted(self._held):
            _write_message(self._fd, self._encode('REGISTER', name, rtype),
                           must=True)

    def _launch(self):
        """Start a tracker; returns (write end of its pipe, pid)."""
        inherited = []
        try:
            inherited.append(sys.stderr.fileno())
        except Exception:
            pass
        from ._interpreter import _interpreter_argv
        start = _interpreter_argv()
        exe = start[0]
        r, w = os.pipe()
        try:
            inherited.append(r)
            argv = start + util._args_from_interpreter_flags() + [
                '-c', spawn._child_code(
                    'from cmultiprocessing.resource_tracker import main;'
                    'main(%d)' % r)]
            pid = _spawn_with_signals_blocked(exe, argv, inherited)
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        return w, pid

    def _check_alive(self):
        '''Whether the tracker still reads its pipe (a probe message).'''
        try:
            os.write(self._fd, self._probe_message())
        except OSError:
            return False
        return True

    # -- stopping --

    def _reap(self):
        """Wait for the tracker we started; note its exit code (3.13)."""
        pid, self._pid = self._pid, None
        if pid is None:
            return
        try:
            status = os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return
        if _VERSION >= (3, 13):
            try:
                self._exitcode = os.waitstatus_to_exitcode(status)
            except ValueError:
                self._exitcode = None

    if not _NEW_314:
        def _stop(self):
            with self._lock:
                if not self._locked_once():
                    return self._reentrant_call_error()
                if self._fd is None:
                    return
                # The tracker ends when its pipe has no writer left.
                os.close(self._fd)
                self._fd = None
                self._reap()
    else:
        def __del__(self):
            # Let the tracker finish its clean-up before this process ends
            # (gh-88887), but not forever: a forked child may still hold
            # the pipe (gh-146313).
            self._stop(use_blocking_lock=False, wait_timeout=1.0)

        def _stop(self, use_blocking_lock=True, wait_timeout=None):
            """Close our end of the tracker's pipe and wait for the tracker
            we started (at most `wait_timeout` seconds).  Without
            `use_blocking_lock` the lock is taken only if it is free."""
            lock = self._lock
            if use_blocking_lock:
                with lock:
                    self._stop_locked(wait_timeout=wait_timeout)
                return
            took = lock.acquire(False)
            try:
                self._stop_locked(wait_timeout=wait_timeout)
            finally:
                if took:
                    lock.release()

        # What the stop calls is bound here: __del__ may run while the
        # interpreter is tearing modules down (and tests substitute them);
        # hence the getattr() in a default, on purpose.
        def _stop_locked(self, close=os.close, waitpid=os.waitpid,
                         waitstatus_to_exitcode=os.waitstatus_to_exitcode,
                         monotonic=time.monotonic, sleep=time.sleep,
                         WNOHANG=getattr(os, 'WNOHANG', None),  # noqa: B008
                         wait_timeout=None):
            if self._lock._recursion_count() > 1:
                self._reentrant_call_error()
            fd, pid = self._fd, self._pid
            if fd is None or pid is None:
                # Not running, or not ours to wait for (a child's copy).
                return
            self._fd = None
            close(fd)           # EOF for the tracker: it cleans up, exits
            self._pid = self._exitcode = None
            try:
                if wait_timeout is None:
                    status = waitpid(pid, 0)[1]
                else:
                    status = self._wait_exit(pid, wait_timeout, waitpid,
                                             monotonic, sleep, WNOHANG)
            except ChildProcessError:
                return
            if status is None:
                # Someone else still holds the pipe.  The tracker outlives
                # us, is re-parented, and cleans up once they are gone.
                self._waitpid_timed_out = True
                return
            try:
                self._exitcode = waitstatus_to_exitcode(status)
            except ValueError:
                pass

        @staticmethod
        def _wait_exit(pid, timeout, waitpid, monotonic, sleep, WNOHANG):
            """pid's wait status once it exits within timeout, else None."""
            give_up = monotonic() + timeout
            pause = 0.0005
            while True:
                done, status = waitpid(pid, WNOHANG)
                if done:
                    return status
                left = give_up - monotonic()
                if left <= 0:
                    return None
                pause = min(pause * 2, 0.1, left)
                sleep(pause)

    # -- fork --

    def _after_fork_in_child(self):
        # A thread of the parent may have held the lock when it forked.
        self._lock._at_fork_reinit()
        # What the parent registered is the parent's to tell again.
        self._held = set()
        if not _NEW_314:
            return
        del self._reentrant_messages[:]
        # The tracker is our parent's child: never ours to wait for.
        self._pid = self._exitcode = None
        fd = self._fd
        if fd is None or getattr(_fork_intent, 'preserve_fd', False):
            return      # Process(fork) children keep using the tracker
        # A bare os.fork(): let go of the pipe, so the parent can stop the
        # tracker without waiting for us; we start our own if we need one.
        self._fd = None
        try:
            os.close(fd)
        except OSError:
            pass


def _write_message(fd, message, must=False):
    """Write message to the tracker's pipe in one piece.  False if the
    pipe is broken or closed (unless `must`: then that raises)."""
    try:
        written = os.write(fd, message)
    except OSError:
        if must:
            raise
        return False
    # At most PIPE_BUF bytes: a pipe takes them whole or not at all.
    assert written == len(message), (
        "nbytes {0:n} but len(msg) {1:n}".format(written, len(message)))
    return True


def _ignored_signals():
    # signal is imported here: children that never start a tracker should
    # not pay for it (it builds enums).
    import signal
    return signal, (signal.SIGINT, signal.SIGTERM)


def _spawn_with_signals_blocked(exe, argv, fds):
    # The new tracker inherits the mask, so SIGINT/SIGTERM cannot kill it
    # before main() has set them to be ignored (bpo-33613).  The caller's
    # mask is put back exactly as it was (gh-127586).
    signal, ignored = _ignored_signals()
    if not hasattr(signal, 'pthread_sigmask'):
        return util.spawnv_passfds(exe, argv, fds)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, ignored)
    try:
        return util.spawnv_passfds(exe, argv, fds)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


# Set (per thread) by popen_fork around its fork: the child is a Process
# and keeps the tracker's pipe (3.14).
_fork_intent = _thread._local()

_resource_tracker = ResourceTracker()
ensure_running = _resource_tracker.ensure_running
register = _resource_tracker.register
unregister = _resource_tracker.unregister
getfd = _resource_tracker.getfd

if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_resource_tracker._after_fork_in_child)


# ---------------------------------------------------------------------------
# The tracker process
# ---------------------------------------------------------------------------

def _parse_line(line):
    """(cmd, name, rtype) from a line in either form."""
    if line[:1] == b'{':
        return _parse_json_line(line)
    # The name may hold colons: the command ends at the first, the
    # resource type starts after the last.
    cmd, rest = line.strip().decode('ascii').split(':', 1)
    name, rtype = rest.rsplit(':', 1)
    return cmd, name, rtype


def _parse_json_line(line):
    import json
    try:
        fields = json.loads(line)
    except ValueError as exc:
        raise ValueError(
            'malformed resource_tracker message: %r' % (line,)) from exc
    if not isinstance(fields, dict):
        raise ValueError('malformed resource_tracker message: %r' % (line,))
    cmd = fields.get('cmd')
    rtype = fields.get('rtype')
    encoded = fields.get('base64_name', '')
    if not (isinstance(cmd, str) and isinstance(rtype, str)
            and isinstance(encoded, str)):
        raise ValueError('malformed resource_tracker fields: %r' % (fields,))
    try:
        raw = binascii.a2b_base64(
            encoded.encode('ascii').translate(_FROM_URLSAFE))
    except ValueError as exc:       # binascii.Error, UnicodeEncodeError
        raise ValueError('malformed resource_tracker base64_name: %r'
                         % (encoded,)) from exc
    return cmd, raw.decode('utf-8', 'surrogateescape'), rtype


class _Registry:
    """Names registered per resource type, and the exit status (3.13)."""

    def __init__(self):
        self.names = {rtype: set() for rtype in _CLEANUP_FUNCS}
        self.exit_code = 0

    def handle(self, line):
        cmd, name, rtype = _parse_line(line)
        if rtype not in _CLEANUP_FUNCS:
            raise ValueError(
                f'Cannot register {name} for automatic cleanup: '
                f'unknown resource type {rtype}')
        if cmd == 'PROBE':
            return
        if cmd == 'REGISTER':
            self.names[rtype].add(name)
        elif cmd == 'UNREGISTER':
            self.names[rtype].remove(name)
        else:
            raise RuntimeError('unrecognized command %r' % cmd)

    def report_leaks(self, rtype, names):
        if _VERSION < (3, 13):
            _warn('resource_tracker: There appear to be %d '
                  'leaked %s objects to clean up at shutdown'
                  % (len(names), rtype))
            return
        self.exit_code = 1
        if rtype != 'dummy':        # the tests leak 'dummy' on purpose
            _warn(f'resource_tracker: There appear to be {len(names)} '
                  f'leaked {rtype} objects to clean up at shutdown: {names}')

    def clean_up(self):
        for rtype, names in self.names.items():
            if not names:
                continue
            try:
                self.report_leaks(rtype, names)
            except Exception:
                pass
            unlink = _CLEANUP_FUNCS[rtype]
            for name in names:
                # Whoever registered name died without unregistering it.
                try:
                    unlink(name)
                except Exception as exc:
                    if _VERSION >= (3, 13):
                        self.exit_code = 2
                    _warn('resource_tracker: %r: %s' % (name, exc))


def _shield_from_signals():
    # Outlive ^C and "killall python": ignore SIGINT and SIGTERM, then lift
    # the mask our parent started us with.
    signal, ignored = _ignored_signals()
    for signum in ignored:
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, 'pthread_sigmask'):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, ignored)


def _close_quietly(stream):
    try:
        stream.close()
    except Exception:
        pass


def _report_bad_line():
    try:
        sys.excepthook(*sys.exc_info())
    except BaseException:
        pass


# After handling what had arrived, the tracker pauses before it reads again.
# A writer wakes the tracker only when the tracker sleeps in read(): while it
# pauses, messages just collect in the pipe.  Without the pause each register
# and unregister would pay for waking another process (on an idle CPU, tens
# of microseconds: more than creating a shared-memory segment).  The cost is
# that clean-up at exit may start this much later.
_BATCH_PAUSE = 0.005


def _lines_in_batches(fd):
    '''The lines written into the pipe `fd` until every writer has closed
    it, read a batch at a time (see _BATCH_PAUSE).'''
    import time
    partial = b''
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            *lines, partial = (partial + chunk).split(b'\n')
            for line in lines:
                yield line + b'\n'
            time.sleep(_BATCH_PAUSE)
        if partial:
            yield partial
    finally:
        os.close(fd)


def main(fd):
    '''Run the resource tracker on the read end fd of its pipe.'''
    _shield_from_signals()
    _close_quietly(sys.stdin)
    _close_quietly(sys.stdout)
    registry = _Registry()
    try:
        for line in _lines_in_batches(fd):
            try:
                registry.handle(line)
            except Exception:
                if _VERSION >= (3, 13):
                    registry.exit_code = 3
                _report_bad_line()
    finally:
        # Every process of the program has exited: clean what is left.
        registry.clean_up()
    if _VERSION >= (3, 13):
        sys.exit(registry.exit_code)
