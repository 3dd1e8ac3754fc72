#!/bin/sh
# Run a command on a host with no Python program to be found: every python3*
# program is replaced by /dev/null, in a private mount namespace, so the
# bind mounts vanish with the command and nothing else on the machine sees
# them.  For the embedded-interpreter checks (tests/lldb, tests/embed).
#
#   tests/lldb/hide_pythons.sh all  CMD [ARG...]   hide every python3* program
#   tests/lldb/hide_pythons.sh X.Y  CMD [ARG...]   hide those of Python X.Y,
#                                                  and unversioned python3s
#   tests/lldb/hide_pythons.sh --other X.Y         print the path of a python
#                                                  program of another version
#
# Looked at: /usr/bin, /usr/local/bin, /bin, pyenv's versions and shims, and
# every folder on PATH; a symbolic link hides with its target.  Prints what it
# hid to stderr.  Needs root and unshare(1); inside a chroot made by
# tools/sid-pythons.sh (itself a private mount namespace) it nests one more.
# Exit status: CMD's, or 70 when it cannot hide (no unshare, mount failed).
set -eu
# pyenv's folder: PYENV_ROOT, else what `pyenv root` says, else ~/.pyenv
pyenv_root=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}
if [ "${1:-}" = --other ] && [ $# = 2 ]; then
    for minor in 12 13 11 15 14 10; do
        [ "3.$minor" != "$2" ] || continue
        for f in "$pyenv_root"/versions/3.$minor.*/bin/python3.$minor \
                 /usr/local/bin/python3.$minor /usr/bin/python3.$minor; do
            [ -x "$f" ] && [ -f "$f" ] && { echo "$f"; exit 0; }
        done
    done
    exit 1
fi
[ $# -ge 2 ] || { echo "usage: $0 all|X.Y CMD [ARG...]" >&2; exit 2; }

if [ "${CMP_PYTHONS_HIDDEN:-}" != "$$" ]; then
    command -v unshare >/dev/null || { echo "hide_pythons: no unshare" >&2; exit 70; }
    # In a chroot "/" is no mount point, so --propagation private fails
    # there; a namespace whose mounts are all private already (that of
    # tools/sid-pythons.sh run) is as good.  Never hide in a shared one:
    # the mounts would reach the rest of the machine.
    if unshare -m --propagation private true 2>/dev/null; then
        propagation=private
    elif ! grep -q ' shared:' /proc/self/mountinfo; then
        propagation=unchanged
    else
        echo "hide_pythons: cannot make a private mount namespace" >&2
        exit 70
    fi
    # The inner shell's pid is ours after exec: it knows it is the inner one.
    exec unshare -m --propagation $propagation -- \
        sh -c 'CMP_PYTHONS_HIDDEN=$$ exec sh "$0" "$@"' "$0" "$@"
fi
unset CMP_PYTHONS_HIDDEN
what=$1
shift

dirs="/usr/bin /usr/local/bin /bin"
for d in "$pyenv_root"/versions/*/bin "$pyenv_root"/shims; do
    dirs="$dirs $d"
done
old_ifs=$IFS
IFS=:
for d in $PATH; do
    IFS=$old_ifs
    dirs="$dirs $d"
done
IFS=$old_ifs

hidden=" "
count=0
for d in $dirs; do
    [ -d "$d" ] || continue
    for f in "$d"/python3*; do
        [ -e "$f" ] || continue
        real=$(readlink -f "$f")
        [ -f "$real" ] && [ -x "$real" ] || continue
        case "$hidden" in *" $real "*) continue ;; esac
        if [ "$what" != all ]; then
            # Keep the programs of other versions; hide this version's and
            # those that do not say which version they are.
            # The program's own name decides (python3 -> python3.12 is a
            # Python 3.12).
            case "$(basename "$real")" in
                "python$what"|"python$what"[!0-9]*) ;;
                python3.[0-9]*) continue ;;
            esac
        fi
        mount --bind /dev/null "$real" || {
            echo "hide_pythons: cannot hide $real" >&2; exit 70; }
        hidden="$hidden$real "
        count=$((count + 1))
    done
done
echo "hide_pythons: hid $count python3* programs ($what)" >&2
[ -z "${CMP_HIDE_VERBOSE:-}" ] || echo "hide_pythons: hid$hidden" >&2
exec "$@"
