#!/bin/sh
# Check cmultiprocessing inside LLDB's embedded Python (the product's key
# use): children started by fork, spawn and forkserver must run on the very
# interpreter LLDB embeds, whatever PATH holds and whatever sys.executable
# says.  Self-installing on Debian/Ubuntu: lldb and the build tools come
# from apt, cmultiprocessing is installed for LLDB's Python with pip.
#
#   tests/lldb/run_lldb_check.sh [LLDB_VERSION]     (default 16)
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
    $SUDO apt-get update
    $SUDO apt-get install -y "lldb-$ver" "python3-lldb-$ver" python3-dev \
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
mkdir "$work/src"
cp -r "$repo/Lib" "$repo/Modules" "$repo/setup.py" "$repo/pyproject.toml" \
    "$repo/README.md" "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
"$py" -m pip install --quiet --break-system-packages --no-build-isolation \
    --no-deps --force-reinstall "$work/src" 2>&1 | grep -v WARNING || true

# A PATH with lldb and nothing else, and one with another Python first.
other=""
for cand in /root/.pyenv/shims "$HOME/.pyenv/shims" /usr/local/bin; do
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
    name=$1; path=$2
    report="$work/report-$name.json"
    echo "== case $name: PATH=$path"
    (cd "$work" && env -u PYTHONPATH -u PYTHONHOME PATH="$path" \
        CMP_LLDB_REPORT="$report" \
        "$to" 300 "$lldb_bin" --batch \
        -o "command script import $here/check.py" >"$work/lldb-$name.log" 2>&1) || true
    if [ ! -s "$report" ]; then
        echo "FAIL: no report; lldb said:"; cat "$work/lldb-$name.log"
        status=1; return
    fi
    "$py" - "$report" <<'PYEOF' || status=1
import json, sys
r = json.load(open(sys.argv[1]))
print("parent:", r.get("parent"), "| sys.executable:", r.get("executable"))
print("children run:", r.get("child_executable"))
for method, entry in sorted(r.get("results", {}).items()):
    if "error" in entry:
        print(" ", method, "ERROR\n", entry["error"])
    else:
        kinds = sorted({w for w, _ in entry["seen"]})
        bad = entry.get("mismatch")
        print(" ", method, "ok" if not bad else "MISMATCH %s" % bad, kinds)
if "error" in r:
    print(r["error"])
print("PASS" if r.get("ok") else "FAIL")
sys.exit(0 if r.get("ok") else 1)
PYEOF
}

run_case no-python-on-path "$work/nopy"
run_case other-python-first "$other:/usr/bin:/bin"
exit $status
