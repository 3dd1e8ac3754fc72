"""Write the seed inputs of the fuzz targets into tests/fuzz/corpus/.

    python tests/fuzz/make_seeds.py

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


def write(target, seeds):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(folder, "seed-" + name), "wb") as f:
            f.write(data)
    print("%s: %d seeds" % (target, len(seeds)))


if __name__ == "__main__":
    hashlib.sha256()        # (fails early on a Python without hashlib)
    write("conn", conn_seeds())
    write("handshake", handshake_seeds())
