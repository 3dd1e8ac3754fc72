#!/bin/sh
# cmultiprocessing in a plain C program that embeds Python (host.c), on a
# host where no python program of that version can be found: children must
# run on the interpreter the host embeds (through the package's child
# launcher over the host's libpython), never on another Python.
#
#   tests/embed/run_embed_check.sh [PYTHON]       (default python3)
#   tools/sid-pythons.sh run sh tests/embed/run_embed_check.sh python3.14
#
# PYTHON names the installation to embed; it must be built with
# --enable-shared (pyenv's here, Debian's) and have its pythonX.Y-config.
# The package is built with PYTHON's pip (CMP_WERROR=1) into a temporary
# folder, host.c is compiled against PYTHON's libpython, then host runs
# tests/lldb/check.py (the LLDB check's cases, start methods and table) with
# every python3* program replaced by /dev/null in a private mount namespace
# (tests/lldb/hide_pythons.sh; needs root):
#   hidden-no-python            none left at all
#   hidden-other-python-first   only another version's, first on PATH
# Every step has a time limit.  Exit status 0 when both cases passed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
checks="$repo/tests/lldb"
hide="$checks/hide_pythons.sh"
py=$(command -v "${1:-python3}") || { echo "no ${1:-python3}" >&2; exit 2; }
to="timeout -k 10"

pyver=$($to 60 "$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
real=$(readlink -f "$py")
config="$(dirname "$real")/python$pyver-config"
[ -x "$config" ] || config=$(command -v "python$pyver-config") || {
    echo "no python$pyver-config for $py" >&2; exit 2; }
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null; then
    echo "SKIP: hiding python programs needs root and unshare(1)"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
label="embed $pyver"

# The package, built for this Python into a folder of its own.
mkdir "$work/src"
cp -r "$repo/Lib" "$repo/Modules" "$repo/setup.py" "$repo/pyproject.toml" \
    "$repo/README.md" "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
find "$work/src/Lib" \( -name '*.so' -o -name '_cmp_launcher*' \) -exec rm -f {} +
isolation=""
if $to 60 "$py" -c 'import setuptools' >/dev/null 2>&1; then
    isolation=--no-build-isolation
fi
# Debian's system Pythons (the sid chroot's) come without pip unless
# python3-pip is installed: then a venv of the same Python lends its own
# (ensurepip), which builds for the same version into --target as well.
pip_py=$py
if ! $to 60 "$py" -m pip --version >/dev/null 2>&1; then
    if ! $to 300 "$py" -m venv "$work/pip-venv" >"$work/pip.log" 2>&1; then
        cat "$work/pip.log"; echo "$label: FAIL: no pip, and no venv to lend one"
        exit 1
    fi
    pip_py=$work/pip-venv/bin/python
    isolation=""
fi
if ! CMP_WERROR=1 $to 900 "$pip_py" -m pip install -q --disable-pip-version-check \
        --break-system-packages --no-deps $isolation --target "$work/site" \
        "$work/src" >"$work/pip.log" 2>&1; then
    cat "$work/pip.log"; echo "$label: FAIL: cannot install the package"
    exit 1
fi

# The host, linked against this Python's shared libpython.
libdir=$($to 60 "$py" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
# shellcheck disable=SC2046
if ! $to 300 gcc -o "$work/host" "$here/host.c" $("$config" --cflags) \
        $("$config" --ldflags --embed) -Wl,-rpath,"$libdir" \
        >"$work/gcc.log" 2>&1; then
    cat "$work/gcc.log"; echo "$label: FAIL: cannot build the host"
    exit 1
fi
lib=$(ldd "$work/host" | awk '/libpython/ {print $3; exit}')
[ -n "$lib" ] || { echo "$label: FAIL: host is not linked to a shared libpython"; exit 1; }
echo "$label: host over $lib ($($to 60 "$py" -c 'import sys; print(sys.version.split()[0], sys.prefix)'))"

mkdir "$work/other-version"
other_py=$(sh "$hide" --other "$pyver" || true)
if [ -n "$other_py" ]; then
    ln -s "$other_py" "$work/other-version/python3"
    ln -s "$other_py" "$work/other-version/python"
else
    # No other Python here: a "python3" that is not Python at all.
    printf '#!/bin/sh\necho "not the embedded python" >&2\nexit 3\n' \
        > "$work/other-version/python3"
    chmod +x "$work/other-version/python3"
fi
echo "$label: another Python first on PATH: ${other_py:-a fake python3}"

status=0
run_case() {
    name=$1; path=$2; what=$3
    report="$work/report-$name.json"
    (cd "$work" && $to 300 sh "$hide" "$what" env -u PYTHONPATH -u PYTHONHOME \
        PATH="$path" "$work/host" "$checks" "$work/site" "$report" \
        >"$work/host-$name.log" 2>&1) || true
    if [ ! -s "$report" ]; then
        echo "$label $name: FAIL: no report; the host said:"
        cat "$work/host-$name.log"
        status=1; return
    fi
    "$py" "$checks/check.py" table "$label $name" "$report" || status=1
}
run_case hidden-no-python "$PATH" all
run_case hidden-other-python-first "$work/other-version:$PATH" "$pyver"
exit $status
