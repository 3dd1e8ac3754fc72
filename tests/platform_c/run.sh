#!/usr/bin/env bash
# tests/platform_c/run.sh -- build the plain-C tests of the Windows platform
# layer with MinGW-w64 and run them under wine.
#
#   tests/platform_c/run.sh
#
# Installs mingw-w64 and wine with apt-get when they are missing (as root).
# Builds every file of Modules/platform/ (the non-Windows ones compile to
# nothing, as in the real build) with the test program, into a temporary
# directory removed at exit, with -Wall -Wextra -Werror.  Wine gets a prefix
# of its own under ${XDG_CACHE_HOME:-~/.cache} unless WINEPREFIX is set.
# The test program prints "N passed, N failed"; then launcher.sh tests the
# child launcher (Modules/launcher/) and cmp_spawn_library_of against a
# fake python DLL, with its own "N passed, N failed".  The script exits
# non-zero when a test failed or nothing could be run.
set -u

here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here" || exit 2

cc=x86_64-w64-mingw32-gcc
have_wine() { command -v wine64 >/dev/null 2>&1 || command -v wine >/dev/null 2>&1; }

if ! command -v "$cc" >/dev/null 2>&1 || ! have_wine; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "platform_c: need $cc and wine (apt-get install mingw-w64 wine)"
        exit 2
    fi
    echo "platform_c: installing mingw-w64 and wine"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q mingw-w64 wine wine64 >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 &&
          apt-get install -y -q mingw-w64 wine wine64 >/dev/null 2>&1; } ||
        { echo "platform_c: apt-get install failed"; exit 2; }
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/platform_c.XXXXXX")
trap 'rm -rf "$work"' EXIT

exe="$work/test_win32.exe"
# (the spawn tests start child_win32.exe from the test program's folder)
if ! "$cc" -std=c11 -O1 -g -Wall -Wextra -Werror -IModules \
        -o "$exe" tests/platform_c/test_win32.c Modules/platform/*.c \
        -lws2_32 -static >"$work/build.log" 2>&1 ||
   ! "$cc" -std=c11 -O1 -Wall -Wextra -Werror \
        -o "$work/child_win32.exe" tests/platform_c/child_win32.c \
        -static >>"$work/build.log" 2>&1; then
    cat "$work/build.log"
    echo "0 passed, 1 failed"
    exit 1
fi

# wine64 where the package puts it apart, else the wine launcher
runner=""
for w in wine64 wine /usr/lib/wine/wine64; do
    if command -v "$w" >/dev/null 2>&1; then runner=$w; break; fi
done
export WINEPREFIX=${WINEPREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/cmp-wine}
export WINEDEBUG=${WINEDEBUG:--all}
export WINEDLLOVERRIDES=${WINEDLLOVERRIDES:-"mscoree,mshtml="}
mkdir -p "$WINEPREFIX"
if [ ! -f "$WINEPREFIX/system.reg" ]; then
    echo "platform_c: creating the wine prefix $WINEPREFIX"
    timeout 300 "$runner" wineboot --init >/dev/null 2>&1
fi

# (Windows programs end their lines with CR LF)
timeout 300 "$runner" "$exe" 2>"$work/wine.err" | tr -d '\r' | tee "$work/out.txt"
status=${PIPESTATUS[0]}
finished=1
if ! grep -qE '^[0-9]+ passed, [0-9]+ failed$' "$work/out.txt"; then
    echo "platform_c: the test program did not finish (status $status):"
    tail -n 20 "$work/wine.err"
    echo "0 passed, 1 failed"
    finished=0
fi

# The child launcher and cmp_spawn_library_of, against a fake python DLL.
mkdir -p "$work/launcher"
CMP_WINE=$runner bash tests/platform_c/launcher.sh "$work/launcher"
launcher_status=$?

# stop the wine server of this prefix, so no process is left behind
command -v wineserver >/dev/null 2>&1 && wineserver -k 2>/dev/null
[ "$finished" -eq 1 ] && [ "$status" -eq 0 ] && [ "$launcher_status" -eq 0 ]
