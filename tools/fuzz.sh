#!/bin/sh
# Fuzz the Connection frame reader, the authentication handshake and the
# queue's message decoder with libFuzzer (clang from Debian: apt-get install clang-16 libclang-rt-16-dev,
# or clang-14 + libclang-rt-14-dev).
#
#   tools/fuzz.sh [SECONDS]     build, then run each target for SECONDS
#                               (default 60); exit non-zero on a crash, a
#                               leak, a hang or a sanitizer report
#   tools/fuzz.sh --merge       minimize the work corpora of earlier runs
#                               into the committed tests/fuzz/corpus/
#
# Targets (see tests/fuzz/README.md): conn (recv_bytes, recv_bytes(max),
# recv_bytes_into, recv over socket pairs and pipes, checked against a
# reference decoder) and handshake (deliver_challenge / answer_challenge /
# the Listener's deadline path) and queue (one message's pickle payload
# read back by a queue's get(): the objects its native decoder makes are
# checked against pickle.loads of the same bytes).  recv() and the queue
# unpickle through an Unpickler that refuses every global, so no input can
# run code.
#
# Environment: FUZZ_OUT (build and work folder, default /tmp/cmp-fuzz),
# PYTHON (a CPython 3.11+ with a shared libpython and its headers, default
# python3 on PATH; its sysconfig gives the include and library folders),
# CC (default the newest clang-NN found).  Crashing inputs are kept under
# $FUZZ_OUT/artifacts/<target>-<time>/.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
out=${FUZZ_OUT:-/tmp/cmp-fuzz}
py=${PYTHON:-python3}
targets="conn handshake queue"

if [ -z "${CC:-}" ]; then
    for c in clang-18 clang-17 clang-16 clang-15 clang-14 clang; do
        if command -v "$c" >/dev/null 2>&1; then CC=$c; break; fi
    done
fi
if [ -z "${CC:-}" ]; then
    echo "fuzz.sh: no clang found (apt-get install clang-16 libclang-rt-16-dev)" >&2
    exit 2
fi

mode=run
secs=60
case "${1:-}" in
    --merge) mode=merge ;;
    '') ;;
    *[!0-9]*) echo "usage: tools/fuzz.sh [SECONDS] | --merge" >&2; exit 2 ;;
    *) secs=$1 ;;
esac

# ---------------------------------------------------------------- build
pyinc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
pylibdir=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
pyver=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("LDVERSION"))')
if [ ! -e "$pylibdir/libpython$pyver.so" ]; then
    echo "fuzz.sh: $pylibdir/libpython$pyver.so not found: $py needs a shared libpython" >&2
    exit 2
fi

san="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
cflags="-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -Wall -Wextra"
mkdir -p "$out/obj"
objs=""
for src in "$here"/Modules/*.c "$here"/Modules/platform/*.c; do
    obj="$out/obj/$(echo "${src#$here/}" | tr / _).o"
    if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ] || [ "$here/Modules/cmp.h" -nt "$obj" ]; then
        $CC $cflags $san -fsanitize=fuzzer-no-link -I"$here/Modules" \
            -I"$pyinc" -c "$src" -o "$obj"
    fi
    objs="$objs $obj"
done
for t in $targets; do
    # shellcheck disable=SC2086
    $CC $cflags $san -fsanitize=fuzzer -I"$pyinc" \
        -DFUZZ_TARGET="\"$t\"" -DFUZZ_LIBDIR="\"$here/Lib\"" \
        -DFUZZ_HERE="\"$here/tests/fuzz\"" \
        "$here/tests/fuzz/fuzz_conn.c" $objs -o "$out/fuzz_$t" \
        -L"$pylibdir" -Wl,-rpath,"$pylibdir" -lpython"$pyver" -lrt -lpthread -lm
done

# The interpreter allocates through malloc so that ASan sees every object;
# libFuzzer checks for leaks after inputs that reach new code, and
# LeakSanitizer once more at exit (the interpreter's own allocations stay
# reachable, so tests/fuzz/lsan.supp is empty; it is there for a
# platform whose libpython needs one).
export PYTHONMALLOC=malloc
# A smaller quarantine than ASan's 256 MB keeps the resident size flat (use
# after free is still caught for the recently freed).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:quarantine_size_mb=64}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$here/tests/fuzz/lsan.supp:print_suppressions=0}"

# ---------------------------------------------------------------- merge
if [ "$mode" = merge ]; then
    for t in $targets; do
        seeds="$here/tests/fuzz/corpus/$t"
        work="$out/corpus/$t"
        mkdir -p "$seeds" "$work"
        fresh="$out/merged-$t"
        rm -rf "$fresh"
        mkdir -p "$fresh"
        "$out/fuzz_$t" -merge=1 "$fresh" "$seeds" "$work" >"$out/merge-$t.log" 2>&1
        rm -f "$seeds"/*
        cp "$fresh"/* "$seeds"/
        echo "fuzz $t: committed corpus now $(ls "$seeds" | wc -l) files"
    done
    exit 0
fi

# ---------------------------------------------------------------- run
status=0
for t in $targets; do
    work="$out/corpus/$t"
    arts="$out/artifacts/$t-$(date +%Y%m%d%H%M%S)"
    mkdir -p "$work" "$arts"
    log="$out/fuzz-$t.log"
    rc=0
    # -timeout: an input takes milliseconds; 30 s rides out a stalled
    # virtual machine (seen once: 20 s inside send() of 50 bytes, an input
    # that replays in 0 ms) and still catches any real hang.
    "$out/fuzz_$t" -max_total_time="$secs" -timeout=30 -rss_limit_mb=2560 \
        -max_len=4096 -print_final_stats=1 -artifact_prefix="$arts/" \
        "$work" "$here/tests/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    # A timeout is a hang only if it comes back: this shared virtual
    # machine has stalled a whole process for 20-50 s inside one system
    # call (send, poll) on inputs that replay in 0 ms.  Such a stall is
    # reported and its input kept, the run is not failed for it.
    stalls=0
    for f in "$arts"/timeout-*; do
        [ -e "$f" ] || continue
        if timeout 120 "$out/fuzz_$t" -timeout=30 "$f" >"$f.replay.log" 2>&1; then
            mv "$f" "$f.not-reproduced"
            stalls=$((stalls + 1))
        fi
    done
    found=$(ls "$arts" | grep -c -E '^(crash|leak|timeout|oom)-[0-9a-f]*$' || true)
    if [ "$rc" -ne 0 ] && [ "$found" -eq 0 ] && [ "$stalls" -eq 0 ]; then
        found=1        # died without leaving an input (e.g. in start-up)
    fi
    if [ "$stalls" -ne 0 ] && [ "$found" -eq 0 ]; then
        rc=0
    fi
    extra=""
    [ "$stalls" -eq 0 ] || extra=" ($stalls machine stall(s) not reproduced, kept in $arts)"
    echo "fuzz $t: ${runs:-0} runs, corpus $(ls "$work" | wc -l), cov ${cov:-?}, $found crashes$extra (log $log)"
    if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
        status=1
        grep -E 'ERROR|SUMMARY|fuzz harness|Error' "$log" | head -20 >&2 || true
        ls "$arts" >&2
    fi
done
exit $status
