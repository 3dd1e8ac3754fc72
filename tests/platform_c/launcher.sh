#!/usr/bin/env bash
# tests/platform_c/launcher.sh -- the Windows child launcher
# (Modules/launcher/) and cmp_spawn_library_of() under wine, against a fake
# python DLL (fakepy_win32.c) that records what the launcher gave it.
#
#   tests/platform_c/launcher.sh WORKDIR
#
# Run by run.sh, which has installed MinGW-w64 and wine, made the wine
# prefix and exported WINEPREFIX, WINEDEBUG and CMP_WINE (the wine program);
# builds into WORKDIR (run.sh removes it).  Python.h is that of $PYTHON
# (default python3; CMP_PYINC to override) with tools/cross/x86_64-windows-gnu/pyconfig.h in
# place of the host's, as for tools/crosscheck.sh.  Prints one line per
# check and "N passed, N failed"; exits 1 when a check failed.
set -u

here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here" || exit 2
work=${1:?usage: launcher.sh WORKDIR}
cc=${CC_MINGW:-x86_64-w64-mingw32-gcc}
wine=${CMP_WINE:-wine}
# wine turns the Unix argv and environment into UTF-16 from the locale's
# encoding: UTF-8, for the non-ASCII paths below
export LC_ALL=C.UTF-8

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok     launcher: $1"; }
fail() { failed=$((failed + 1)); echo "FAIL   launcher: $1"; }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit; }

# ---- build ------------------------------------------------------------------
# Python.h: CMP_PYINC, else the headers of $PYTHON (default python3)
pyinc=${CMP_PYINC:-}
if [ ! -f "$pyinc/Python.h" ]; then
    pyinc=$("${PYTHON:-python3}" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)
fi
if [ ! -f "$pyinc/Python.h" ]; then
    fail "no Python.h (set CMP_PYINC)"
    finish
fi
inc="$work/include-win64"
rm -rf "$inc"
cp -r "$pyinc" "$inc" && cp tools/cross/x86_64-windows-gnu/pyconfig.h "$inc/pyconfig.h"

# The DLL lives in a folder whose name is not ASCII (nor in any ANSI code
# page), so that a lossy conversion anywhere shows.
dlldir="$work/dïr 日本"
mkdir -p "$dlldir"
flags=(-std=c11 -O1 -Wall -Wextra -Werror)
build() { # output, then compiler arguments
    local out=$1; shift
    if ! "$cc" "${flags[@]}" -o "$out" "$@" >"$work/build.log" 2>&1; then
        fail "build of $(basename "$out")"
        cat "$work/build.log"
        return 1
    fi
}
build "$work/_cmp_launcher.exe" -municode -IModules -I"$inc" Modules/launcher/*.c &&
build "$dlldir/fakepython.dll" -shared -I"$inc" tests/platform_c/fakepy_win32.c &&
build "$work/fakepy_norun.dll" -shared -I"$inc" -DFAKEPY_OMIT_RUN_MAIN \
    tests/platform_c/fakepy_win32.c &&
build "$work/fakepy_39.dll" -shared -I"$inc" -DFAKEPY_VERSION=0x030912f0 \
    tests/platform_c/fakepy_win32.c &&
build "$work/test_libraryof_win32.exe" -municode -IModules \
    tests/platform_c/test_libraryof_win32.c Modules/platform/*.c -lws2_32 -static ||
    finish
if x86_64-w64-mingw32-objdump -p "$work/_cmp_launcher.exe" 2>/dev/null |
        grep -qi 'DLL Name: python'; then
    fail "the launcher imports a python DLL (it must link nothing of Python)"
else
    pass "the launcher imports no python DLL"
fi

# A Unix path as wine's Z: drive sees it.
winpath() { printf 'Z:%s' "$1" | tr '/' '\\'; }

# run NAME EXPECTED-STATUS STDERR-PATTERN [ENV=VALUE...] -- LAUNCHER-ARGS...
# Runs the launcher; checks the exit status and that stderr matches the
# pattern (grep -E; empty: stderr must be empty).
run() {
    local name=$1 want=$2 pattern=$3 status
    shift 3
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    rm -f "$work/out.txt"
    env "${envs[@]}" FAKEPY_OUT="$(winpath "$work/out.txt")" \
        timeout 120 "$wine" "$work/_cmp_launcher.exe" "$@" \
        >"$work/stdout.txt" 2>"$work/stderr.txt"
    status=$?
    tr -d '\r' <"$work/stderr.txt" >"$work/stderr.clean"
    if [ "$status" -ne "$want" ]; then
        fail "$name: exit status $status, expected $want"
        sed 's/^/        /' "$work/stderr.clean" | head -n 5
        return 1
    fi
    if [ -z "$pattern" ]; then
        if [ -s "$work/stderr.clean" ]; then
            fail "$name: unexpected output on stderr"
            sed 's/^/        /' "$work/stderr.clean" | head -n 5
            return 1
        fi
    elif ! grep -qE "$pattern" "$work/stderr.clean"; then
        fail "$name: stderr does not match /$pattern/"
        sed 's/^/        /' "$work/stderr.clean" | head -n 5
        return 1
    fi
    pass "$name (exit $want)"
}

# recorded NAME EXPECTED-FILE: the fake runtime's record (out.txt) is the
# expected text, apart from argv[0] (the launcher's own path, as the C
# runtime spells it), which must name the launcher.
recorded() {
    local name=$1 expected=$2
    if [ ! -f "$work/out.txt" ]; then
        fail "$name: the fake runtime wrote no record"
        return 1
    fi
    tr -d '\r' <"$work/out.txt" >"$work/out.clean"
    if ! head -n 1 "$work/out.clean" | grep -qiE '^argv=.*_cmp_launcher(\.exe)?$'; then
        fail "$name: argv[0] is not the launcher: $(head -n 1 "$work/out.clean")"
        return 1
    fi
    if ! diff <(tail -n +2 "$work/out.clean") "$expected" >"$work/diff.txt"; then
        fail "$name: the runtime got another configuration"
        sed 's/^/        /' "$work/diff.txt" | head -n 30
        return 1
    fi
    pass "$name: options and arguments passed through exactly"
}

dll=$(winpath "$dlldir/fakepython.dll")

# ---- the happy path, every option, non-ASCII everywhere -----------------------
cat >"$work/expected-all.txt" <<'EOF'
argv=-I
argv=-X
argv=utf8
argv=-c
argv=import sys; print("ünï", sys.argv)
argv=an argument with spaces
argv=with "quotes" and \back\slashes\
argv=日本語 ελληνικά 😀
argv=--executable=not-an-option-here
argv=--
executable=C:\Pythön 3\python.exe
base_executable=C:\Base 日本\python.exe
prefix=C:\Prëfix
exec_prefix=C:\Exec Prëfix
base_prefix=C:\Base 日本
base_exec_prefix=C:\Base Exec 日本
stdlib_dir=C:\Base 日本\Lib
platlibdir=DLLs
module_search_paths_set=1
path=C:\Base 日本\Lib
path=C:\Prëfix\site-packages 😀
path=
EOF
run "every option" 7 "" FAKEPY_RC=7 -- \
    "--libpython=$dll" \
    '--executable=C:\Pythön 3\python.exe' \
    '--base-executable=C:\Base 日本\python.exe' \
    '--prefix=C:\Prëfix' '--exec-prefix=C:\Exec Prëfix' \
    '--base-prefix=C:\Base 日本' '--base-exec-prefix=C:\Base Exec 日本' \
    '--stdlib-dir=C:\Base 日本\Lib' '--platlibdir=DLLs' \
    '--path=C:\Base 日本\Lib' '--path=C:\Prëfix\site-packages 😀' '--path=' \
    -- -I -X utf8 -c 'import sys; print("ünï", sys.argv)' \
    'an argument with spaces' 'with "quotes" and \back\slashes\' \
    '日本語 ελληνικά 😀' --executable=not-an-option-here -- &&
    recorded "every option" "$work/expected-all.txt"

# ---- nothing but the library: the runtime's own defaults stay -----------------
cat >"$work/expected-none.txt" <<'EOF'
executable=<unset>
base_executable=<unset>
prefix=<unset>
exec_prefix=<unset>
base_prefix=<unset>
base_exec_prefix=<unset>
stdlib_dir=<unset>
platlibdir=<unset>
module_search_paths_set=0
EOF
run "no options" 0 "" -- "--libpython=$dll" -- &&
    recorded "no options" "$work/expected-none.txt"

# ---- the launcher's own failures ----------------------------------------------
# (the message names the path intact: UTF-8 to a pipe, not the C runtime's
# conversion from its "C" locale)
run "a library that does not exist" 71 '^cmultiprocessing launcher: cannot load libpython: Z:.*\\dïr 日本\\nö-such-日本\.dll: .+$' \
    -- "--libpython=$(winpath "$dlldir/nö-such-日本.dll")" -- -c pass
run "a library without Py_RunMain" 71 '^cmultiprocessing launcher: this library has no Py_RunMain \(not a Python 3\.8\+ runtime\?\): Z:.*\\fakepy_norun\.dll$' \
    -- "--libpython=$(winpath "$work/fakepy_norun.dll")" -- -c pass
run "a library of another Python (3.9)" 64 '^cmultiprocessing launcher: the library is Python 3\.9, this launcher is for Python 3\.[0-9]+' \
    -- "--libpython=$(winpath "$work/fakepy_39.dll")" -- -c pass
run "no '--'" 64 "^cmultiprocessing launcher: missing '--' before the interpreter's arguments$" \
    -- "--libpython=$dll"
run "python arguments without '--'" 64 '^cmultiprocessing launcher: unknown option \(started by cmultiprocessing only\): -c$' \
    -- "--libpython=$dll" -c pass
run "no --libpython" 64 '^cmultiprocessing launcher: missing --libpython=PATH' \
    -- -- -c pass
run "an unknown option" 64 '^cmultiprocessing launcher: unknown option \(started by cmultiprocessing only\): --bogus=ü 日本$' \
    -- "--libpython=$dll" '--bogus=ü 日本' -- -c pass

# ---- the interpreter's failure: Py_ExitStatusException's exit -----------------
run "Py_InitializeFromConfig fails" 1 '^Fatal Python error: Py_InitializeFromConfig: fakepy: initialisation refused$' \
    FAKEPY_FAIL_INIT=1 -- "--libpython=$dll" -- -c pass &&
    if [ -f "$work/out.txt" ]; then
        fail "Py_InitializeFromConfig fails: Py_RunMain ran all the same"
    fi

# ---- cmp_spawn_library_of (win32_spawn.c) ------------------------------------
timeout 120 "$wine" "$work/test_libraryof_win32.exe" "$dll" \
    >"$work/libof.txt" 2>"$work/libof.err"
status=$?
tr -d '\r' <"$work/libof.txt" | grep -vE '^[0-9]+ passed' | sed 's/^/       /'
if [ "$status" -eq 0 ] && tr -d '\r' <"$work/libof.txt" | grep -qE '^[0-9]+ passed, 0 failed$'; then
    pass "cmp_spawn_library_of"
else
    fail "cmp_spawn_library_of (status $status)"
    tail -n 5 "$work/libof.err"
fi

finish
