#!/bin/sh
# Check cmultiprocessing inside LLDB's embedded Python (the product's key
# use): children started by fork, spawn and forkserver must run on the very
# interpreter LLDB embeds, whatever PATH holds and whatever sys.executable
# says, and also when no python program can be found at all.
# Self-installing on Debian/Ubuntu: lldb and the build tools come from apt,
# cmultiprocessing is installed for LLDB's Python with pip.
#
#   tests/lldb/run_lldb_check.sh [LLDB_VERSION]     (default 16)
#   tools/sid-pythons.sh --lldb setup && \
#       tools/sid-pythons.sh run sh tests/lldb/run_lldb_check.sh 21
#
# Cases: PATH with no python (no-python-on-path), another Python first on
# PATH (other-python-first); then, with every python3* program replaced by
# /dev/null in a private mount namespace (hide_pythons.sh, needs root):
# none left at all (hidden-no-python), and only another version's program,
# first on PATH (hidden-other-python-first).  check.py prints one line per
# start method (the default one, fork, forkserver, spawn).
#
# Exit status 0 when every child of every case ran on LLDB's interpreter.
set -eu
ver=${1:-16}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

lldb_bin=$(command -v "lldb-$ver" || command -v lldb || true)
if [ -z "$lldb_bin" ] || ! dpkg -s "python3-lldb-$ver" >/dev/null 2>&1; then
    $SUDO apt-get -o Acquire::Check-Valid-Until=false update
    $SUDO apt-get -o Acquire::Check-Valid-Until=false install -y "lldb-$ver" "python3-lldb-$ver" python3-dev \
        python3-pip python3-setuptools python3-wheel
    lldb_bin=$(command -v "lldb-$ver")
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/nopy"
ln -s "$lldb_bin" "$work/nopy/lldb"

# The Python LLDB embeds: ask it, with no python on PATH.  (An embedded
# interpreter may derive its prefix from the first python3 on PATH: asked
# under the caller's PATH, LLDB can report some other installation.)
embedded=$(cd "$work" && env -u PYTHONPATH -u PYTHONHOME PATH="$work/nopy" \
    "$lldb_bin" --batch -o 'script import sys; print("CMP-PY", sys.version_info[0], sys.version_info[1], sys.base_prefix)' 2>/dev/null | grep '^CMP-PY' | tail -1)
set -- $embedded
py="$4/bin/python$2.$3"
echo "LLDB $lldb_bin embeds Python $2.$3 ($py)"
[ -x "$py" ] || { echo "cannot find $py" >&2; exit 2; }
pyver=$2.$3
if ! "$py" -c 'import pip, setuptools' >/dev/null 2>&1; then
    # Debian's own pip and setuptools serve every Python version it has.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get \
        -o Acquire::Check-Valid-Until=false -o APT::Install-Recommends=false \
        install -y -q python3-pip python3-setuptools python3-wheel >/dev/null
fi
mkdir "$work/src"
cp -r "$repo/Lib" "$repo/Modules" "$repo/setup.py" "$repo/pyproject.toml" \
    "$repo/README.md" "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
"$py" -m pip install --quiet --break-system-packages --no-build-isolation \
    --no-deps --force-reinstall "$work/src" 2>&1 | grep -v WARNING || true

# A PATH with lldb and nothing else, and one with another Python first.
other=""
pyenv_root=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}
for cand in "$pyenv_root/shims" /usr/local/bin; do
    if [ -x "$cand/python3" ] && [ "$(readlink -f "$cand/python3")" != "$(readlink -f "$py")" ]; then
        other=$cand; break
    fi
done
if [ -z "$other" ]; then
    # No other Python installed: put a fake "python3" first (a Python that
    # is not LLDB's one -- here a script that is not Python at all).
    mkdir "$work/other"
    printf '#!/bin/sh\necho "not the embedded python" >&2\nexit 3\n' > "$work/other/python3"
    chmod +x "$work/other/python3"
    other="$work/other"
fi

status=0
to=$(command -v timeout)
run_case() {
    name=$1; path=$2; shift 2      # then: a command prefix (hide_pythons.sh)
    report="$work/report-$name.json"
    echo "== case $name: PATH=$path"
    (cd "$work" && "$to" -k 10 300 "$@" env -u PYTHONPATH -u PYTHONHOME \
        PATH="$path" CMP_LLDB_REPORT="$report" \
        "$lldb_bin" --batch \
        -o "command script import $here/check.py" >"$work/lldb-$name.log" 2>&1) || true
    if [ ! -s "$report" ]; then
        echo "FAIL: no report; lldb said:"; cat "$work/lldb-$name.log"
        status=1; return
    fi
    "$py" "$here/check.py" table "lldb-$ver $name" "$report" || status=1
}

hide="$here/hide_pythons.sh"
run_case no-python-on-path "$work/nopy"
run_case other-python-first "$other:/usr/bin:/bin"
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
    mkdir "$work/other-version"
    other_py=$(sh "$hide" --other "$pyver" || true)
    if [ -n "$other_py" ]; then
        ln -s "$other_py" "$work/other-version/python3"
        ln -s "$other_py" "$work/other-version/python"
    else
        cp "$work/other/python3" "$work/other-version/python3" 2>/dev/null || \
            printf '#!/bin/sh\nexit 3\n' > "$work/other-version/python3"
        chmod +x "$work/other-version/python3"
    fi
    echo "(another Python first on PATH: ${other_py:-a fake python3})"
    run_case hidden-no-python "$(dirname "$lldb_bin"):$PATH" sh "$hide" all
    run_case hidden-other-python-first \
        "$work/other-version:$(dirname "$lldb_bin"):$PATH" sh "$hide" "$pyver"
else
    echo "SKIP hidden-* cases: hiding python programs needs root and unshare"
fi
exit $status
