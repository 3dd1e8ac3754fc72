#!/usr/bin/env bash
# tools/crosscheck.sh -- compile-check every C file of _cmultiprocessing for
# the platforms that do not run here (macOS arm64, Windows x64), with
# -Wall -Wextra -Werror, then look for platform functions that no file of
# the target defines (the link problem a missing darwin_/win32_ file makes).
#
#   tools/crosscheck.sh [TARGET...]     (default: aarch64-macos x86_64-windows-gnu)
#
# The compiler is PyPI's ziglang (`python -m ziglang cc -target ...`),
# installed into .ci-venvs/zig (git-ignored) when missing.  Python.h comes
# from the headers of $PYTHON (default python3 on PATH; the folder its
# sysconfig.get_paths()["include"] names), or from CMP_PYINC when set, with
# the small per-target pyconfig.h of tools/cross/<target>/ in place of the
# host's.  The test command passes its first interpreter (3.12).
#
# Environment: PYTHON (the interpreter that makes the zig venv and whose
# headers are used), CMP_PYINC (a folder holding Python.h, instead).
# The child launcher (Modules/launcher/) is compiled the same way and
# linked as an executable of each target.  Objects go to a temporary
# directory that is removed at exit: nothing is left in the tree.  Prints one line per file and target, then the link
# check per target, then "N passed, N failed"; exits 1 on any failure.
set -u

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 2

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(aarch64-macos x86_64-windows-gnu)

# ---- the compiler -----------------------------------------------------------
venv="$here/.ci-venvs/zig"
zigpy="$venv/bin/python"
if ! "$zigpy" -m ziglang version >/dev/null 2>&1; then
    host_py=""
    for p in ${PYTHON:-} python3 python; do
        if command -v "$p" >/dev/null 2>&1; then host_py=$p; break; fi
    done
    [ -n "$host_py" ] || { echo "crosscheck: no python to make $venv"; exit 2; }
    echo "crosscheck: installing ziglang into $venv"
    "$host_py" -m venv "$venv" &&
        "$venv/bin/pip" install -q --disable-pip-version-check ziglang ||
        { echo "crosscheck: could not install ziglang"; exit 2; }
fi
zigcc() { "$zigpy" -m ziglang cc "$@"; }

# ---- the headers ------------------------------------------------------------
include_of() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null; }
pyinc=${CMP_PYINC:-}
if [ -z "$pyinc" ]; then
    pyinc=$(include_of "${PYTHON:-python3}")
fi
if [ ! -f "$pyinc/Python.h" ]; then
    pyinc=$(include_of "$zigpy")
fi
[ -f "$pyinc/Python.h" ] || { echo "crosscheck: no Python.h (set CMP_PYINC)"; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/crosscheck.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Python.h includes "pyconfig.h" from its own directory first, so each target
# gets a copy of the headers with the target's pyconfig.h in the host's place.
headers_for() {
    local t=$1 dir="$work/include-$1"
    cp -r "$pyinc" "$dir" &&
        cp "$here/tools/cross/$t/pyconfig.h" "$dir/pyconfig.h" &&
        echo "$dir"
}

# Flags as setup.py gives them on that platform, made strict.  Windows
# builds use MSVC for real, so GNU-only C is an error there too.
flags_for() {
    case $1 in
        *macos*)   echo "-std=c11 -D_GNU_SOURCE -fvisibility=hidden" ;;
        *windows*) echo "-std=c11 -Werror=vla -Werror=gnu-statement-expression" ;;
        *)         echo "-std=c11" ;;
    esac
}

sources=()
for f in Modules/*.c Modules/platform/*.c; do
    [ -f "$f" ] && sources+=("$f")
done

passed=0
failed=0
pass() { passed=$((passed + 1)); printf 'ok    %-20s %s\n' "$1" "$2"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %-20s %s\n' "$1" "$2"; }

# ---- symbol tables for the link check ---------------------------------------
nm_tool=""
for n in llvm-nm $(compgen -c llvm-nm- | grep -E '^llvm-nm-[0-9]+$' | sort -t- -k3 -rn); do
    if command -v "$n" >/dev/null 2>&1; then nm_tool=$n; break; fi
done
if [ -z "$nm_tool" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "crosscheck: installing llvm (llvm-nm reads Mach-O and COFF objects)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q llvm >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q llvm >/dev/null 2>&1; }
    command -v llvm-nm >/dev/null 2>&1 && nm_tool=llvm-nm
fi

# An object's source file, for messages.
pretty() { basename "$1" .o | sed 's/^Modules_//; s/_c$/.c/; s/^platform_/platform\//'; }

# Symbol names without Mach-O's leading underscore.
symbols() { # $1 = -u or --defined-only, then objects
    local mode=$1; shift
    "$nm_tool" -g "$mode" -j "$@" 2>/dev/null | sed -e 's/^_//' | sort -u
}

# The Python C API symbols the objects use (Py*, _Py*), without the
# platform's decorations (Mach-O's leading underscore, Windows' __imp_).
python_symbols() { # $1 target, then objects
    local t=$1; shift
    "$nm_tool" -u -j "$@" 2>/dev/null | sed -e 's/^__imp_//' |
        if [[ $t == *macos* ]]; then sed -e 's/^_//'; else cat; fi |
        grep -E '^_?Py' | sort -u
}

# Link the objects into the extension as the target's linker would, with a
# stand-in for libpython that exports exactly the C API symbols used: what
# remains undefined is a system function the target does not have (or a
# library setup.py does not link).
real_link() { # $1 target, then objects
    local t=$1; shift
    local dir="$work/link-$t"
    mkdir -p "$dir"
    python_symbols "$t" "$@" >"$dir/py.syms"
    case $t in
        *windows*)
            { echo "LIBRARY python312.dll"; echo "EXPORTS"
              sed -e 's/^/    /' "$dir/py.syms"; } >"$dir/python312.def"
            "$zigpy" -m ziglang dlltool -m i386:x86-64 -D python312.dll \
                -d "$dir/python312.def" -l "$dir/libpython312.a" &&
            zigcc -target "$t" -shared -o "$dir/_cmultiprocessing.pyd" "$@" \
                "$dir/libpython312.a" -lws2_32 -ladvapi32
            ;;
        *macos*)
            sed -e 's/.*/char &;/' "$dir/py.syms" >"$dir/pystub.c" &&
            zigcc -target "$t" -shared -o "$dir/libpython3.12.dylib" \
                "$dir/pystub.c" &&
            zigcc -target "$t" -shared -o "$dir/_cmultiprocessing.so" "$@" \
                -L"$dir" -lpython3.12
            ;;
        *)
            zigcc -target "$t" -shared -o "$dir/_cmultiprocessing.so" "$@" \
                -Wl,--unresolved-symbols=ignore-in-object-files
            ;;
    esac
}

# The child launcher (Modules/launcher/): a program of its own, built with
# the same headers.  Its files compile for the target; it uses nothing of
# Python's C API but types and macros (every function comes from the
# library named by --libpython=, through dlsym/GetProcAddress), so no Py*
# symbol may be left undefined; and it links as the target's executable
# (wmain: -municode on Windows).
check_launcher() { # $1 target, $2 include dir, then the extra flags
    local t=$1 inc=$2; shift 2
    local dir="$work/launcher-$t" src obj lobjs=() used exe
    mkdir -p "$dir"
    for src in Modules/launcher/*.c; do
        obj="$dir/$(basename "$src" .c).o"
        if zigcc -target "$t" -c -o "$obj" -O2 -fno-sanitize=undefined \
                -Wall -Wextra -Werror "$@" \
                -IModules -I"$inc" "$src" >"$dir/log" 2>&1; then
            pass "$t" "$src"
            lobjs+=("$obj")
        else
            fail "$t" "$src"
            grep -E 'error:' "$dir/log" | head -n 8 | sed 's/^/        /'
        fi
    done
    if [ ${#lobjs[@]} -eq 0 ] ||
       [ ${#lobjs[@]} -ne "$(ls Modules/launcher/*.c | wc -l)" ]; then
        fail "$t" "launcher: link skipped, some files did not compile"
        return
    fi
    if [ -n "$nm_tool" ]; then
        used=$(python_symbols "$t" "${lobjs[@]}")
        if [ -z "$used" ]; then
            pass "$t" "launcher: no Python C API function linked"
        else
            fail "$t" "launcher: uses Python's C API directly: $(echo $used)"
        fi
    fi
    case $t in
        *windows*) exe="$dir/_cmp_launcher.exe"
                   set -- -municode ;;
        *)         exe="$dir/_cmp_launcher"
                   set -- ;;
    esac
    if zigcc -target "$t" "$@" -o "$exe" "${lobjs[@]}" >"$dir/link.log" 2>&1; then
        pass "$t" "launcher: link of the executable"
    else
        fail "$t" "launcher: link of the executable"
        grep -iE 'error|undefined' "$dir/link.log" | head -n 15 | sed 's/^/        /'
    fi
}

for t in "${targets[@]}"; do
    if [ ! -f "tools/cross/$t/pyconfig.h" ]; then
        fail "$t" "no tools/cross/$t/pyconfig.h"
        continue
    fi
    inc=$(headers_for "$t") || { fail "$t" "cannot prepare headers"; continue; }
    objdir="$work/obj-$t"
    mkdir -p "$objdir"
    objs=()
    read -r -a extra <<<"$(flags_for "$t")"
    for src in "${sources[@]}"; do
        obj="$objdir/$(echo "$src" | tr '/' '_').o"
        log="$objdir/log"
        if zigcc -target "$t" -c -o "$obj" -O2 -fno-sanitize=undefined \
                -Wall -Wextra -Werror "${extra[@]}" \
                -IModules -I"$inc" "$src" >"$log" 2>&1; then
            pass "$t" "$src"
            objs+=("$obj")
        else
            fail "$t" "$src"
            grep -E 'error:' "$log" | head -n 8 | sed 's/^/        /'
        fi
    done

    check_launcher "$t" "$inc" "${extra[@]}"

    # Link check: every cmp_* function a file of this target calls must be
    # defined by some file of this target, and the init function must exist.
    if [ -z "$nm_tool" ]; then
        fail "$t" "link check: no llvm-nm available"
        continue
    fi
    if [ ${#objs[@]} -ne ${#sources[@]} ]; then
        fail "$t" "link check: skipped, some files did not compile"
        continue
    fi
    undefined=$(comm -23 <(symbols -u "${objs[@]}" | grep -E '^cmp_') \
                         <(symbols --defined-only "${objs[@]}"))
    if ! symbols --defined-only "${objs[@]}" | grep -qx 'PyInit__cmultiprocessing'; then
        undefined="$undefined PyInit__cmultiprocessing(missing)"
    fi
    undefined=$(echo $undefined)
    # ... and defined only once (a darwin_/win32_ file next to a posix_ file
    # that does not step aside defines the same function twice).
    twice=$(for o in "${objs[@]}"; do symbols --defined-only "$o"; done |
            grep -E '^(cmp_|PyInit_)' | sort | uniq -d)
    twice=$(echo $twice)
    if [ -n "$twice" ]; then
        fail "$t" "link check: defined more than once: $twice"
        for sym in $twice; do
            owners=""
            for o in "${objs[@]}"; do
                if symbols --defined-only "$o" | grep -qx "$sym"; then
                    owners="$owners $(pretty "$o")"
                fi
            done
            echo "        $sym defined by:$owners"
        done
    fi
    if [ -z "$undefined" ]; then
        pass "$t" "link check (all cmp_* symbols defined)"
        if real_link "$t" "${objs[@]}" >"$work/link-$t.log" 2>&1; then
            pass "$t" "link of the extension against the target's system libraries"
        else
            fail "$t" "link of the extension against the target's system libraries"
            grep -iE 'error|undefined' "$work/link-$t.log" | head -n 15 | sed 's/^/        /'
        fi
    else
        fail "$t" "link check: undefined: $undefined"
        for sym in $undefined; do
            users=""
            for o in "${objs[@]}"; do
                if "$nm_tool" -u -j "$o" 2>/dev/null | sed 's/^_//' | grep -qx "$sym"; then
                    users="$users $(pretty "$o")"
                fi
            done
            echo "        $sym used by:$users"
        done
    fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
