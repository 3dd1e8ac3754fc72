"""The queue target of the libFuzzer harness (tests/fuzz/fuzz_conn.c calls
fuzz_targets.TARGETS["queue"], which is fuzz_queue below).

A queue's get() reads a frame another process wrote and decodes a few
pickle encodings itself (Modules/queue_codec.c: exact None, bool, int,
float, bytes and str written with their pickle opcodes under protocol 4);
anything else goes to the queue's loads().  The input is the pickle
payload of one frame; the harness frames it truthfully (the frame layer is
fuzzed by the conn target), writes it into a pipe, closes the writing end
and reads it back through the native QueueBase, then checks:

- the decoder claimed the payload (loads() was not called): the object is
  one of the types above and is what the stdlib's pickle.loads gives for
  the same bytes (same type, same value; floats bit for bit), and pickle
  accepts those bytes;
- the decoder did not claim it: loads() got exactly the payload, byte for
  byte (the long read path reassembles it from three pieces), and get()
  gave what loads() gave or raised what loads() raised;
- get() read exactly one frame: the pipe is empty afterwards;
- a frame cut short by the writer's end (control bit 5) raises EOFError
  or OSError (or TornMessageError, where the module has it), nothing else;
- round trip: the object pickle decodes from the payload (when it does)
  is put into a fresh queue and got back equal; the documented direct
  encodings are then claimed by the decoder (queue.h).

loads() here refuses every global, so no input can run code: what is under
test is the queue's reader and codec, not pickle (restricted_loads, also
the conn target's, refuses the few inputs on which pickle itself would
allocate far more than the input holds).

data[0], the control byte:
    bits 0-1  the read call: _simple_get(), get(), get(True, 5.0),
              get(False)
    bit 2     make the length field of a bytes/str opcode at payload[2]
              agree with the payload's size (reach the exact-size paths)
    bit 3     insert 1024 filler bytes before the last byte (the long
              read path, payloads of QUEUE_DIRECT_READ bytes and more)
    bit 4     the long form of the frame header (-1, then 8 bytes)
    bit 5     cut the frame short: the last 1, 2, 4 or 8 bytes (bits 6-7)
              of header and payload are not written
data[1:] is the payload.
"""
import io
import os
import pickle
import pickletools
import struct
import threading

import _cmultiprocessing as native

DIRECT_READ = 1024          # QUEUE_DIRECT_READ in Modules/queue.h
MAX_PAYLOAD = 60000         # below a pipe's 64 KiB: the writer never blocks
READ_CALLS = ("_simple_get", "get", "get-timeout", "get-nowait")


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError("global %s.%s refused" % (module, name))


# A memo index past this is refused before pickle sees it (below).
MEMO_LIMIT = 1 << 16


# The opcodes with a 4- or 8-byte size (BINSTRING, BINBYTES, BINUNICODE,
# BINUNICODE8, BINBYTES8, BYTEARRAY8) and the memo's PUT and LONG_BINPUT.
_SIZED = tuple(bytes([op]) for op in b"TBX\x8d\x8e\x96pr")


def _too_big_for_pickle(data):
    """Whether the C unpickler would allocate far more than data holds:
    before 3.13 it allocates the declared size of a sized opcode's
    argument before reading it (and 3.11 then mishandles a failed
    allocation of a bytearray), and PUT and LONG_BINPUT grow the memo to
    twice their index.  Under libFuzzer such an allocation is an
    out-of-memory crash of the harness, not a finding in the code under
    test: pickletools reads the same opcodes and refuses an argument
    longer than what follows."""
    if not any(op in data for op in _SIZED):
        return False
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("PUT", "LONG_BINPUT") and arg > MEMO_LIMIT:
                return True
    except Exception:       # e.g. a BYTEARRAY8 longer than what follows
        return True
    return False


def restricted_loads(data):
    """pickle.loads without globals (nothing an input names can run);
    every failure an UnpicklingError."""
    data = bytes(data)
    if _too_big_for_pickle(data):
        raise pickle.UnpicklingError("refused: an allocation past the input")
    try:
        return _NoGlobals(io.BytesIO(data)).load()
    except RecursionError:
        raise pickle.UnpicklingError("too deep") from None
    except Exception as e:
        raise pickle.UnpicklingError("%s: %s" % (type(e).__name__, e)) \
            from None


class RecordingLoads:
    """The queue's loads(), remembering its arguments."""

    def __init__(self, loads=restricted_loads):
        self.calls = []
        self.loads = loads

    def __call__(self, payload):
        self.calls.append(bytes(payload))
        return self.loads(payload)


def _fix_length(p):
    """p with the length field of a bytes/str opcode at p[2] made to
    agree with p's size (the opcode's argument running to p[-2])."""
    if len(p) < 4:
        return p
    op = p[2]
    if op in (0x43, 0x8c):              # SHORT_BINBYTES, SHORT_BINUNICODE
        n = len(p) - 5
        if 0 <= n < 256:
            return p[:3] + bytes([n]) + p[4:]
    elif op in (0x42, 0x58):            # BINBYTES, BINUNICODE
        n = len(p) - 8
        if 0 <= n <= 0xffffffff:
            return p[:3] + struct.pack("<I", n) + p[7:]
    return p


def build(data):
    """(control byte, payload, frame bytes to write, complete?)."""
    ctl, p = data[0], bytes(data[1:MAX_PAYLOAD + 1])
    if ctl & 8 and p:
        p = p[:-1] + b"a" * DIRECT_READ + p[-1:]
    if ctl & 4:
        p = _fix_length(p)
    if ctl & 16:
        frame = struct.pack("!iQ", -1, len(p)) + p
    else:
        frame = struct.pack("!i", len(p)) + p
    if ctl & 32:
        return ctl, p, frame[:-(1 << (ctl >> 6))], False
    return ctl, p, frame, True


def _queue_over_pipe(loads):
    r, w = os.pipe()
    reader = native.Connection(r, writable=False)
    writer = native.Connection(w, readable=False)
    q = native.QueueBase()
    q._bind(reader, writer, threading.Lock(), None, None, pickle.dumps, loads)
    return q, reader, writer


def _read(q, how):
    if how == 0:
        return q._simple_get()
    if how == 1:
        return q.get()
    if how == 2:
        return q.get(True, 5.0)
    return q.get(False)


DIRECT_TYPES = (type(None), bool, int, float, bytes, str)
# what get() may raise on a frame its writer cut off
CUT_ERRORS = (EOFError, OSError) + tuple(
    getattr(native, name) for name in ("TornMessageError",)
    if hasattr(native, name))


def _same_direct(a, b):
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return struct.pack("<d", a) == struct.pack("<d", b)
    return a == b


def _same(a, b):
    """The same object for the round trip: equal pickles (NaN, recursive
    and shared structures), else ==."""
    try:
        if pickle.dumps(a, 5) == pickle.dumps(b, 5):
            return True
    except (RecursionError, ValueError):
        pass
    try:
        return type(a) is type(b) and a == b
    except RecursionError:
        return type(a) is type(b)


def _expect_direct(obj):
    """Whether queue.h says put() writes obj with the direct encoding."""
    t = type(obj)
    if t is int:
        return -2 ** 31 <= obj < 2 ** 31
    if t is str:
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:       # lone surrogates
            return False
        return True
    return t in DIRECT_TYPES


def fuzz_queue(data):
    if not data:
        return
    ctl, payload, frame, complete = build(data)
    loads = RecordingLoads()
    q, reader, writer = _queue_over_pipe(loads)
    try:
        os.write(writer.fileno(), frame)
        writer.close()
        try:
            got, exc = _read(q, ctl & 3), None
        except BaseException as e:      # judged below
            got, exc = None, e
        if not complete:
            if not isinstance(exc, CUT_ERRORS):
                raise AssertionError("a cut frame gave %r" % (
                    exc if exc is not None else type(got)))
            return
        _judge(payload, loads.calls, got, exc)
        rest = os.read(reader.fileno(), 1)
        if rest:
            raise AssertionError("get() left bytes of the frame in the pipe")
    finally:
        reader.close()
        writer.close()
    _round_trip(payload)


def _judge(payload, calls, got, exc):
    try:
        ref, ref_exc = restricted_loads(payload), None
    except pickle.UnpicklingError as e:
        ref, ref_exc = None, e
    if not calls:
        # the decoder claimed the payload
        if exc is not None:
            raise AssertionError("the decoder raised %r" % exc) from exc
        if type(got) not in DIRECT_TYPES:
            raise AssertionError("the decoder made a %s" % type(got).__name__)
        if ref_exc is not None:
            raise AssertionError("the decoder accepted a payload pickle "
                                 "refuses (%s)" % ref_exc)
        if not _same_direct(got, ref):
            raise AssertionError("the decoder gave %r, pickle %r"
                                 % (got, ref))
        return
    if calls != [payload]:
        raise AssertionError("loads() got other bytes than the payload")
    if exc is not None:
        if ref_exc is None or not isinstance(exc, pickle.UnpicklingError):
            raise AssertionError("get() raised %r, loads() gives %r"
                                 % (exc, ref_exc)) from exc
    elif ref_exc is not None or not _same(got, ref):
        raise AssertionError("get() gave another object than loads()")


def _round_trip(payload):
    try:
        obj = restricted_loads(payload)
        size = len(pickle.dumps(obj))
    except (pickle.UnpicklingError, RecursionError, ValueError):
        return
    if size > MAX_PAYLOAD:
        return
    # What put() writes here is pickle's own output for builtin objects
    # (no fuzzer bytes): the globals it names are builtins (bytearray,
    # set under protocol 2...), so the plain loads is safe.
    loads = RecordingLoads(pickle.loads)
    q, reader, writer = _queue_over_pipe(loads)
    try:
        q._simple_put(obj)
        back = q._simple_get()
    finally:
        reader.close()
        writer.close()
    if not _same(back, obj):
        raise AssertionError("the round trip gave another object")
    if _expect_direct(obj) and loads.calls:
        raise AssertionError("put() of a %s was not decoded directly"
                             % type(obj).__name__)
