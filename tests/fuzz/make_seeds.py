"""Write the seed inputs of the fuzz targets into tests/fuzz/corpus/.

    python tests/fuzz/make_seeds.py [TARGET...]     (default: every target)

The seeds follow the input layout of fuzz_targets.py: one control byte, then
the peer's bytes.  They are written once; tools/fuzz.sh --merge later
replaces each folder with a minimized set covering the same ground plus
what the fuzzer found.  Challenges in the harness are fixed (bytes 1..n), so
the right answers here are computed, for the 3.12 form and the 3.11 one.
"""
import hashlib
import hmac
import os
import pickle
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = b"fuzz-key"            # fuzz_targets.KEY


def frame(payload):
    return struct.pack("!i", len(payload)) + payload


def long_frame(payload):
    return struct.pack("!iQ", -1, len(payload)) + payload


def conn_ctl(pipe, method, param):
    return bytes([(param << 3) | (method << 1) | pipe])


def conn_seeds():
    streams = {
        "empty-frame": frame(b""),
        "small": frame(b"hello"),
        "two": frame(b"one") + frame(b"two"),
        "long-form-small": long_frame(b"abc"),
        "long-form-huge": struct.pack("!iQ", -1, 2 ** 40) + b"x",
        "long-form-max": struct.pack("!iQ", -1, 2 ** 64 - 1),
        "long-form-cut": struct.pack("!i", -1) + b"\x00\x00\x00",
        "absurd": struct.pack("!i", 0x7fffffff) + b"y" * 10,
        "negative": struct.pack("!i", -2) + b"z" * 4,
        "header-only": struct.pack("!i", 10),
        "cut-header": b"\x00\x00",
        "cut-payload": struct.pack("!i", 10) + b"12345",
        "nothing": b"",
        "64MiB-claim": struct.pack("!i", 64 * 1024 * 1024 + 1) + b"p" * 16,
    }
    values = [None, True, 7, -2 ** 70, 1.5, "text", b"raw", (1, "a"),
              [1, [2, [3]]], {"k": (None, 2.0)}, {1, 2, 3}, frozenset("ab"),
              bytearray(b"ba")]
    for i, v in enumerate(values):
        for proto in (2, 5):
            streams["pickle-%d-p%d" % (i, proto)] = frame(
                pickle.dumps(v, proto))
    streams["pickle-global"] = frame(pickle.dumps(os.getcwd, 2))
    streams["pickle-then-cut"] = frame(pickle.dumps([1, 2], 5))[:-2]
    out = {}
    for name, data in streams.items():
        method = 3 if name.startswith("pickle") else 0
        out["%s-sock" % name] = conn_ctl(0, method, 4) + data
        out["%s-pipe" % name] = conn_ctl(1, method, 4) + data
    out["max-small"] = conn_ctl(0, 1, 1) + frame(b"123456")
    out["max-fits"] = conn_ctl(1, 1, 2) + frame(b"123456")
    out["into-fits"] = conn_ctl(0, 2, 5) + frame(b"abc") + frame(b"")
    out["into-short"] = conn_ctl(1, 2, 1) + frame(b"abcdefgh")
    out["into-zero"] = conn_ctl(0, 2, 0) + frame(b"") + frame(b"q")
    # dribbled (bit 7): pieces of param+1 bytes with pauses between
    two = frame(b"first") + long_frame(b"second") + frame(b"x" * 40)
    out["dribble-sock"] = bytes([0x80 | conn_ctl(0, 0, 2)[0]]) + two
    out["dribble-pipe"] = bytes([0x80 | conn_ctl(1, 0, 0)[0]]) + two
    out["dribble-into"] = bytes([0x80 | conn_ctl(0, 2, 15)[0]]) + two
    out["dribble-cut"] = bytes([0x80 | conn_ctl(1, 0, 1)[0]]) + two[:-3]
    return out


def challenge_312():
    return b"{sha256}" + bytes(range(1, 41))


def challenge_311():
    return bytes(range(1, 21))


def answer(message, digest):
    mac = hmac.new(KEY, message, digest).digest()
    return mac if digest == "md5" else b"{%s}" % digest.encode() + mac


def pieces(*messages):
    """The framed mode: a length byte before each message."""
    return b"".join(bytes([len(m)]) + m for m in messages)


def handshake_seeds():
    ours = challenge_312()           # what the harness challenges with
    theirs = b"{sha256}" + b"\x55" * 40
    legacy = b"\x66" * 20
    msgs = {
        # side 0: we deliver the challenge; the peer answers
        0: {"sha256": [answer(ours, "sha256")],
            "sha3_384": [answer(ours, "sha3_384")],
            "md5-legacy": [answer(ours, "md5")],
            "wrong": [answer(ours, "sha256")[:-1] + b"\x00"],
            "no-prefix": [b"x" * 32],
            "bad-digest": [b"{sha1}" + b"0" * 20],
            "too-long": [b"{sha256}" + b"0" * 300]},
        # side 1: we answer; the peer challenges, then welcomes or not
        1: {"3.12": [b"#CHALLENGE#" + theirs, b"#WELCOME#"],
            "3.11": [b"#CHALLENGE#" + legacy, b"#WELCOME#"],
            "failure": [b"#CHALLENGE#" + theirs, b"#FAILURE#"],
            "short": [b"#CHALLENGE#" + b"abc"],
            "not-challenge": [b"#HELLO#" + theirs]},
        # side 2: the Listener (deliver, then answer) under the deadline
        2: {"full": [answer(ours, "sha256"), b"#CHALLENGE#" + theirs,
                     b"#WELCOME#"],
            "full-legacy": [answer(ours, "md5"), b"#CHALLENGE#" + legacy,
                            b"#WELCOME#"],
            "refused": [answer(ours, "sha256"), b"#CHALLENGE#" + theirs,
                        b"#FAILURE#"]},
        # side 3: the Client (answer, then deliver)
        3: {"full": [b"#CHALLENGE#" + theirs, b"#WELCOME#",
                     answer(ours, "sha256")],
            "full-legacy": [b"#CHALLENGE#" + legacy, b"#WELCOME#",
                            answer(ours, "md5")],
            "wrong": [b"#CHALLENGE#" + theirs, b"#WELCOME#", b"{md5}" + b"1" * 16]},
    }
    out = {}
    for side, cases in msgs.items():
        for name, ms in cases.items():
            raw = b"".join(frame(m) for m in ms)
            out["s%d-%s-raw" % (side, name)] = bytes([side]) + raw
            if all(len(m) < 256 for m in ms):
                out["s%d-%s-pieces" % (side, name)] = (
                    bytes([side | 4]) + pieces(*ms))
    out["s2-long-header"] = bytes([2]) + struct.pack("!iQ", -1, 2 ** 62)
    out["s0-cut"] = bytes([0]) + frame(answer(ours, "sha256"))[:-5]
    return out


def queue_ctl(how=0, fix=False, pad=False, long_header=False, cut=None):
    """fuzz_queue's control byte (see tests/fuzz/fuzz_queue.py)."""
    ctl = how | (4 if fix else 0) | (8 if pad else 0) | \
        (16 if long_header else 0)
    if cut is not None:
        ctl |= 32 | ({1: 0, 2: 1, 4: 2, 8: 3}[cut] << 6)
    return bytes([ctl])


def direct(op, arg=b""):
    """A payload in the queue's direct encoding: PROTO 4, op, STOP."""
    return b"\x80\x04" + bytes([op]) + arg + b"."


def queue_seeds():
    le = struct.pack
    payloads = {
        "none": direct(0x4e), "true": direct(0x88), "false": direct(0x89),
        "int1": direct(0x4b, b"\x07"), "int2": direct(0x4d, le("<H", 513)),
        "int4-neg": direct(0x4a, le("<i", -5)),
        "int4-min": direct(0x4a, le("<i", -2 ** 31)),
        "float": direct(0x47, le(">d", 1.5)),
        "float-nan": direct(0x47, b"\x7f\xf8\x00\x00\x00\x00\x00\x01"),
        "float-inf": direct(0x47, le(">d", float("-inf"))),
        "sbytes": direct(0x43, b"\x03abc"),
        "sbytes-empty": direct(0x43, b"\x00"),
        "sstr": direct(0x8c, b"\x02\xc3\xa9"),
        "sstr-bad-utf8": direct(0x8c, b"\x02\xc3\x28"),
        "sstr-surrogate": direct(0x8c, b"\x03\xed\xa0\x80"),
        "sbytes-255": direct(0x43, b"\xff" + b"x" * 255),
        "bytes-256": direct(0x42, le("<I", 256) + b"y" * 256),
        "str-300": direct(0x58, le("<I", 300) + "\u00e9".encode() * 150),
        "bytes-1016": direct(0x42, le("<I", 1016) + b"z" * 1016),
        "bytes-1017": direct(0x42, le("<I", 1017) + b"z" * 1017),
        "str-2000": direct(0x58, le("<I", 2000) + b"s" * 2000),
        "str-2000-bad": direct(0x58, le("<I", 2000) + b"s" * 1999 + b"\xff"),
        "bytes-long-lies": direct(0x42, le("<I", 5000) + b"w" * 1500),
        "no-stop": b"\x80\x04N",
        "proto5-none": b"\x80\x05N.",
        "proto2-int": b"\x80\x02K\x07.",
        "int1-extra": b"\x80\x04K\x07\x07.",
        "trailing": b"\x80\x04N.N",
        "empty": b"",
        "stop": b".",
        "garbage": b"\x80\x04\xff\xff\xff.",
    }
    values = [None, True, 7, 70000, -2 ** 70, 2 ** 40, 1.5, "text",
              "\ud800", b"raw", (1, "a"), [1, [2, [3]]], {"k": (None, 2.0)},
              {1, 2, 3}, frozenset("ab"), bytearray(b"ba"), b"L" * 3000,
              "M" * 3000, [b"x" * 600, "y" * 600]]
    for i, v in enumerate(values):
        for proto in (2, 4, 5):
            payloads["pickle-%d-p%d" % (i, proto)] = pickle.dumps(v, proto)
    payloads["pickle-global"] = pickle.dumps(os.getcwd, 2)
    out = {}
    for name, p in payloads.items():
        for how in range(4):
            out["%s-r%d" % (name, how)] = queue_ctl(how) + p
    out["fix-sbytes"] = queue_ctl(fix=True) + direct(0x43, b"\x00abcdef")
    out["fix-str"] = queue_ctl(fix=True) + direct(0x58, b"\x00" * 4 + b"abc")
    out["pad-bytes"] = queue_ctl(pad=True, fix=True) + direct(
        0x42, b"\x00" * 4 + b"q")
    out["pad-str"] = queue_ctl(1, pad=True, fix=True) + direct(
        0x58, b"\x00" * 4 + b"q")
    out["pad-none"] = queue_ctl(2, pad=True) + direct(0x4e)
    out["long-header"] = queue_ctl(long_header=True) + direct(0x4b, b"\x01")
    out["long-header-str"] = queue_ctl(3, long_header=True) + \
        payloads["str-2000"]
    for cut in (1, 2, 4, 8):
        out["cut-%d" % cut] = queue_ctl(cut=cut) + payloads["str-300"]
        out["cut-%d-long" % cut] = queue_ctl(1, cut=cut) + \
            payloads["bytes-1017"]
        out["cut-%d-small" % cut] = queue_ctl(2, cut=cut) + payloads["int1"]
    return out


def write(target, seeds):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(folder, "seed-" + name), "wb") as f:
            f.write(data)
    print("%s: %d seeds" % (target, len(seeds)))


SEEDS = {"conn": conn_seeds, "handshake": handshake_seeds,
         "queue": queue_seeds}


if __name__ == "__main__":
    import sys
    hashlib.sha256()        # (fails early on a Python without hashlib)
    for target in sys.argv[1:] or sorted(SEEDS):
        write(target, SEEDS[target]())
