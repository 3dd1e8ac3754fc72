"""The Python half of the libFuzzer targets (tests/fuzz/fuzz_conn.c embeds
the interpreter, links the sanitized _cmultiprocessing in as a built-in
module and calls one function of this file per input).

fuzz_conn(data)       data[0] picks the set-up, data[1:] is the byte stream
                      a peer wrote before closing its end.  The C frame
                      reader reads it with recv_bytes(), recv_bytes(maxlength),
                      recv_bytes_into(buf, offset) or recv() over a socket
                      pair or a pipe, message after message, and every
                      outcome is checked against a reference decoder of
                      the wire format written here in Python: same payloads,
                      same exception types, nothing else raised.
fuzz_handshake(data)  data[0] picks which side of the handshake runs and how
                      data[1:] is cut into the peer's messages; only
                      AuthenticationError, EOFError and OSError may come out.
fuzz_queue(data)      (fuzz_queue.py) data[1:] is one queue message's pickle
                      payload, read back by a queue's get(): the native
                      decoder's objects are checked against pickle.loads.

Unpickling arbitrary bytes can run arbitrary code, so recv() here goes
through a restricted loads: the Unpickler refuses every global (no class,
no function can be reached), and any error it raises becomes
UnpicklingError.  What is fuzzed is the reader in front of it.

Anything else raised (SystemError, an assertion of the oracle, ...)
propagates to the C harness, which prints it and aborts: libFuzzer records
that input as a crash.
"""
import os
import pickle
import socket
import time

import _cmultiprocessing as native
from cmultiprocessing import connection, reduction
from fuzz_queue import fuzz_queue, restricted_loads

Connection = native.Connection
BufferTooShort = native.BufferTooShort
AuthenticationError = native.AuthenticationError

MAX_STREAM = 60000          # below a pipe's 64 KiB: the writer never blocks
PHYS = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
SSIZE_MAX = 2 ** 63 - 1


# ------------------------------------------------------------------ recv()

# restricted_loads (fuzz_queue.py, shared by both targets): the reader is
# what is under test here, so any failure of it is an UnpicklingError


def _install_restricted_loads():
    # Connection.recv() looks ForkingPickler.loads up once, on first use.
    reduction.ForkingPickler.loads = staticmethod(restricted_loads)


_install_restricted_loads()


# ---------------------------------------------- reference frame decoder

class Outcome(object):
    """What one receive call should give: a payload or an exception."""

    def __init__(self, payload=None, exc=None, bad_length=False):
        self.payload = payload
        self.exc = exc
        self.bad_length = bad_length     # the stream is out of step after


def decode_one(stream, pos, maxlength):
    """(Outcome, new position) for the frame at stream[pos:]."""
    def cut(got):
        return EOFError if got == 0 else OSError

    head = stream[pos:pos + 4]
    if len(head) < 4:
        return Outcome(exc=cut(len(head))), len(stream)
    pos += 4
    size = int.from_bytes(head, "big", signed=True)
    if size == -1:
        ext = stream[pos:pos + 8]
        if len(ext) < 8:
            return Outcome(exc=cut(len(ext))), len(stream)
        pos += 8
        size = int.from_bytes(ext, "big")
    elif size < 0:
        return Outcome(exc=OSError, bad_length=True), pos
    if maxlength is not None and size > maxlength:
        return Outcome(exc=OSError, bad_length=True), pos
    if size > SSIZE_MAX or size > PHYS:
        return Outcome(exc=OSError, bad_length=True), pos
    body = stream[pos:pos + size]
    if len(body) < size:
        return Outcome(exc=cut(len(body))), len(stream)
    return Outcome(payload=body), pos + size


def _same_object(a, b):
    try:
        return pickle.dumps(a, 5) == pickle.dumps(b, 5)
    except (RecursionError, ValueError):
        return type(a) is type(b)


# ------------------------------------------------------------- fuzz_conn

def _endpoints(use_pipe, stream, dribble):
    """A Connection to read from, whose peer writes `stream` and closes
    (a socket peer only shuts down its writing side): all at once, or with
    `dribble` (> 0) in a thread, its first pieces `dribble` bytes long with
    pauses between them, so that the reader waits mid-frame."""
    if use_pipe:
        r, w = os.pipe()
        reader = Connection(r, writable=False)

        def write(data):
            return os.write(w, data)

        def finish():
            os.close(w)
        peer = None
    else:
        a, peer = socket.socketpair()
        reader, write = Connection(a.detach()), peer.sendall

        def finish():
            peer.shutdown(socket.SHUT_WR)
    if not dribble:
        try:
            if stream:
                write(stream)
        finally:
            finish()
        return reader, peer, None
    import threading

    def feed():
        pos = 0
        try:
            for _ in range(6):
                if pos >= len(stream):
                    break
                write(stream[pos:pos + dribble])
                pos += dribble
                time.sleep(0.0005)
            if pos < len(stream):
                write(stream[pos:])
        except OSError:
            pass            # the reader closed its end: nothing to feed
        finally:
            finish()
    t = threading.Thread(target=feed)
    t.start()
    return reader, peer, t


def fuzz_conn(data):
    if not data:
        return
    ctl, stream = data[0], bytes(data[1:MAX_STREAM + 1])
    use_pipe = ctl & 1
    method = (ctl >> 1) & 3
    param = (ctl >> 3) & 15
    dribble = param + 1 if ctl & 0x80 else 0
    conn, peer, feeder = _endpoints(use_pipe, stream, dribble)
    try:
        _read_all(conn, stream, method, param)
    finally:
        if feeder is not None:
            _drain(conn)
            feeder.join()
        conn.close()
        if peer is not None:
            peer.close()


def _drain(conn):
    # Let a dribbling writer finish (a full pipe would block it) even when
    # the reader stopped early.
    try:
        fd = conn.fileno()
    except OSError:
        return              # closed: the writer gets EPIPE and stops
    while True:
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


def _read_all(conn, stream, method, param):
    pos = 0
    for _ in range(16):
        maxlength = param * 5 if method == 1 else None
        want, pos = decode_one(stream, pos, maxlength)
        if method == 0:
            _check(want, lambda: conn.recv_bytes())
        elif method == 1:
            _check(want, lambda maxlength=maxlength: conn.recv_bytes(maxlength))
        elif method == 2:
            _check_into(conn, want, param)
        else:
            _check_recv(conn, want)
        if want.exc is not None:
            # After a refused length the connection no longer reads; after
            # an end of file there is nothing left: one more call must
            # raise again, and nothing worse.
            try:
                conn.recv_bytes()
            except (OSError, EOFError):
                pass
            else:
                raise AssertionError("read after a failed frame worked")
            return


def _check(want, call):
    try:
        got = call()
    except (OSError, EOFError) as e:
        if want.exc is None or not isinstance(e, want.exc):
            raise AssertionError("raised %r, wanted %r" % (e, _show(want)))
        return
    if want.exc is not None or got != want.payload:
        raise AssertionError("got %d bytes, wanted %r" % (len(got),
                                                          _show(want)))


def _show(want):
    if want.exc is not None:
        return want.exc.__name__
    return "%d bytes" % len(want.payload)


def _check_into(conn, want, param):
    size = param * 3
    offset = (param * 7) % (size + 1)
    canary = bytes((i * 31 + 7) & 0xff for i in range(size))
    buf = bytearray(canary)
    try:
        n = conn.recv_bytes_into(buf, offset)
    except BufferTooShort as e:
        if want.exc is not None or len(want.payload) <= size - offset:
            raise AssertionError("BufferTooShort, wanted %r" % _show(want))
        if e.args[0] != want.payload:
            raise AssertionError("BufferTooShort carries the wrong bytes")
        if buf != canary:
            raise AssertionError("buffer written to on BufferTooShort")
        return
    except (OSError, EOFError) as e:
        if want.exc is None or not isinstance(e, want.exc):
            raise AssertionError("raised %r, wanted %r" % (e, _show(want)))
        return
    if want.exc is not None:
        raise AssertionError("read %d bytes, wanted %r" % (n, _show(want)))
    end = offset + len(want.payload)
    if (n != len(want.payload) or buf[offset:end] != want.payload or
            buf[:offset] != canary[:offset] or buf[end:] != canary[end:]):
        raise AssertionError("recv_bytes_into wrote the wrong bytes")


def _check_recv(conn, want):
    try:
        got = conn.recv()
    except pickle.UnpicklingError:
        if want.exc is not None:
            raise AssertionError("unpickled a frame that should fail")
        try:
            restricted_loads(want.payload)
        except pickle.UnpicklingError:
            return
        raise AssertionError("recv() failed where loads() does not")
    except (OSError, EOFError) as e:
        if want.exc is None or not isinstance(e, want.exc):
            raise AssertionError("raised %r, wanted %r" % (e, _show(want)))
        return
    if want.exc is not None:
        raise AssertionError("recv() worked, wanted %r" % _show(want))
    if not _same_object(got, restricted_loads(want.payload)):
        raise AssertionError("recv() gave another object")


# -------------------------------------------------------- fuzz_handshake

KEY = b"fuzz-key"
HANDSHAKE_ERRORS = (AuthenticationError, EOFError, OSError)
if not hasattr(connection, "_CHALLENGE"):
    # 3.11's stdlib answer_challenge asserts that it got a challenge (the
    # AssertionError is that version's behaviour, kept by cmultiprocessing).
    HANDSHAKE_ERRORS += (AssertionError,)


def _fixed_urandom(n):
    # Challenges are fixed so that the seed corpus can hold right answers
    # (and the fuzzer reach the paths after a right one).
    return bytes(range(1, n + 1))


connection.os = type(os)("os_for_fuzzing")
connection.os.__dict__.update(os.__dict__)
connection.os.urandom = _fixed_urandom
connection.HANDSHAKE_TIMEOUT = 5.0


def split_messages(body):
    """The peer's messages, framed: each is a length byte then that many
    bytes (a last one cut short keeps what there is)."""
    out, pos = bytearray(), 0
    while pos < len(body):
        n = body[pos]
        piece = body[pos + 1:pos + 1 + n]
        out += len(piece).to_bytes(4, "big") + piece
        pos += 1 + n
    return bytes(out)


def fuzz_handshake(data):
    if not data:
        return
    ctl, body = data[0], bytes(data[1:MAX_STREAM + 1])
    stream = split_messages(body) if ctl & 4 else body
    side = ctl & 3
    a, b = socket.socketpair()
    try:
        b.sendall(stream)
        b.shutdown(socket.SHUT_WR)
        try:
            _run_side(side, a)
        except HANDSHAKE_ERRORS:
            pass
    finally:
        a.close()
        b.close()


def _run_side(side, sock):
    if side == 2:
        # The Listener's path: both halves under the deadline channel.
        connection._authenticate_accepted(sock, KEY)
        return
    with Connection(sock.detach()) as conn:
        if side == 0:
            connection.deliver_challenge(conn, KEY)
        elif side == 1:
            connection.answer_challenge(conn, KEY)
        else:
            # The Client's order.
            connection.answer_challenge(conn, KEY)
            connection.deliver_challenge(conn, KEY)


def _code_objects(namespace, seen):
    """Every function's code in a module or class namespace, with the code
    objects nested in them (local events are set per code object)."""
    for value in list(vars(namespace).values()):
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        code = getattr(value, "__code__", None)
        if code is not None and code not in seen:
            stack = [code]
            while stack:
                c = stack.pop()
                if c in seen:
                    continue
                seen.add(c)
                stack.extend(k for k in c.co_consts
                             if isinstance(k, type(c)))
        elif isinstance(value, type) and value.__module__ == \
                namespace.__name__:
            _code_objects(value, seen)
    return seen


def python_coverage():
    """Feed the lines run in cmultiprocessing.connection to libFuzzer as
    extra counters (3.12+: sys.monitoring; on 3.11 C coverage only).
    Returns how many code objects are watched."""
    import sys
    mon = getattr(sys, "monitoring", None)
    try:
        import _fuzzcov
    except ImportError:
        return 0
    if mon is None:
        return 0
    tool = mon.COVERAGE_ID
    mon.use_tool_id(tool, "cmp-fuzz")
    mon.register_callback(tool, mon.events.LINE, _fuzzcov.line)
    codes = _code_objects(connection, set())
    for code in codes:
        mon.set_local_events(tool, code, mon.events.LINE)
    return len(codes)


WATCHED = python_coverage()

TARGETS = {"conn": fuzz_conn, "handshake": fuzz_handshake,
           "queue": fuzz_queue}


def replay(corpus_root):
    """Run every committed input through its target with an ordinary build
    (what the fuzzer found stays a regression test).  Returns
    {target: inputs run}; an input that fails raises."""
    done = {}
    for name, fn in sorted(TARGETS.items()):
        folder = os.path.join(corpus_root, name)
        count = 0
        for entry in sorted(os.listdir(folder)):
            with open(os.path.join(folder, entry), "rb") as f:
                data = f.read()
            try:
                fn(data)
            except BaseException:
                print("input %s/%s failed" % (name, entry))
                raise
            count += 1
        done[name] = count
    return done


if __name__ == "__main__":
    import sys
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus")
    for target, count in replay(root).items():
        print("replayed %s: %d inputs" % (target, count))
