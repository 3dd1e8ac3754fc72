#!/usr/bin/env bash
# Python 3.14 and 3.15 (python3.14-dbg, LLDB 21) for CI and development: a Debian sid chroot.
#
#   tools/sid-pythons.sh setup                 make the chroot, or reuse the one there
#   tools/sid-pythons.sh run CMD [ARG...]      run CMD inside it, in the current folder
#   tools/sid-pythons.sh path                  print the chroot's folder
#   tools/sid-pythons.sh --lldb setup          also install lldb-21 (embeds Python 3.14)
#
# The chroot lives in $CMP_SID_DIR (default /var/tmp/cmultiprocessing-sid), outside the
# clone, so CI runs and later sessions on the same machine reuse it; `setup` only adds
# packages that are missing.  `run` enters a private mount namespace (unshare -m), binds
# /proc, /sys, /dev, /dev/pts, /dev/shm and this repository (at the same path, so paths printed
# inside mean the same outside) and chroots; the mounts vanish with the namespace, so
# nothing stays mounted after the command.  Needs root, debootstrap (installed with apt
# when missing) and the Debian mirror this machine's apt already uses.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${CMP_SID_DIR:-/var/tmp/cmultiprocessing-sid}
# python3.14-dbg: the debug interpreter of suite/ci.py's reference-leak run
PACKAGES="python3.14 python3.14-dev python3.14-venv libpython3.14-testsuite
python3.14-dbg
python3.15 python3.15-dev python3.15-venv libpython3.15-testsuite
gcc libc6-dev ca-certificates"
LLDB_PACKAGES="lldb-21 python3-lldb-21"
APT_OPTS=(-o Acquire::Check-Valid-Until=false -o APT::Install-Recommends=false -q -y)

want_lldb=0
while [ $# -gt 0 ]; do
    case "$1" in
        --lldb) want_lldb=1; shift ;;
        --dir) DIR=$2; shift 2 ;;
        *) break ;;
    esac
done
cmd=${1:-}
[ $# -gt 0 ] && shift

log() { printf '[sid-pythons] %s\n' "$*" >&2; }

# The Debian mirror the host's apt uses (deb822 or one-line sources).
host_mirror() {
    local uri=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' \
              /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++)
              if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || { log "cannot find the host's Debian mirror in /etc/apt"; exit 1; }
    echo "$uri"
}

# Inside the chroot: the host's CA bundle, and a pip configuration that keeps only
# what applies there (the certificate; no local indexes or constraints of the host).
copy_host_config() {
    mkdir -p "$DIR/etc/ssl/certs"
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$DIR/etc/ssl/certs/host-ca-certificates.crt"
    fi
    {
        echo "[global]"
        echo "cert = /etc/ssl/certs/host-ca-certificates.crt"
        [ -n "${PIP_DEFAULT_TIMEOUT:-}" ] && echo "timeout = $PIP_DEFAULT_TIMEOUT"
        if [ -f /etc/pip.conf ]; then
            grep -E '^\s*(index-url|trusted-host)\s*=' /etc/pip.conf || true
        fi
    } > "$DIR/etc/pip.conf"
    cp /etc/resolv.conf "$DIR/etc/resolv.conf" 2>/dev/null || true
}

in_chroot() {
    # Run "$@" inside the chroot in a private mount namespace (mounts die with it).
    local cwd=$PWD
    unshare -m --propagation private -- /bin/sh -ec '
        dir=$1; root=$2; cwd=$3; shift 3
        for d in proc sys dev dev/pts dev/shm; do
            mkdir -p "$dir/$d"; mount --bind "/$d" "$dir/$d"
        done
        mkdir -p "$dir$root"; mount --bind "$root" "$dir$root"
        case "$cwd" in "$root"|"$root"/*) ;; *) cwd=$root ;; esac
        exec chroot "$dir" /usr/bin/env -u PIP_FIND_LINKS -u PIP_CONFIG_FILE \
            -u PYENV_ROOT -u PYENV_VERSION -u VIRTUAL_ENV \
            PIP_CERT=/etc/ssl/certs/host-ca-certificates.crt \
            SSL_CERT_FILE=/etc/ssl/certs/host-ca-certificates.crt \
            REQUESTS_CA_BUNDLE=/etc/ssl/certs/host-ca-certificates.crt \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            /bin/sh -c "cd \"\$0\" && exec \"\$@\"" "$cwd" "$@"
    ' sh "$DIR" "$ROOT" "$cwd" "$@"
}

missing_packages() {
    local want=$PACKAGES p
    [ "$want_lldb" = 1 ] && want="$want $LLDB_PACKAGES"
    for p in $want; do
        chroot "$DIR" dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null \
            | grep -q 'install ok installed' || printf '%s ' "$p"
    done
}

setup() {
    [ "$(id -u)" = 0 ] || { log "needs root (debootstrap, chroot, mounts)"; exit 1; }
    local mirror
    mirror=$(host_mirror)
    if [ ! -x "$DIR/usr/bin/python3.14" ] || [ ! -f "$DIR/.cmp-sid-ready" ]; then
        if ! command -v debootstrap >/dev/null; then
            log "installing debootstrap"
            apt-get install -y -q debootstrap >/dev/null \
                || { apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null; }
        fi
        rm -rf "$DIR"
        mkdir -p "$(dirname "$DIR")"
        local include
        include=$(echo $PACKAGES | tr ' ' ',')
        log "debootstrap sid into $DIR (about a minute or two)"
        local t0=$SECONDS
        debootstrap --variant=minbase --include="$include" sid "$DIR" "$mirror" \
            > "$DIR.debootstrap.log" 2>&1 \
            || { tail -20 "$DIR.debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
        echo "deb $mirror sid main" > "$DIR/etc/apt/sources.list"
        touch "$DIR/.cmp-sid-ready"
        log "debootstrap done in $((SECONDS - t0)) s"
    fi
    copy_host_config
    local missing
    missing=$(missing_packages)
    if [ -n "$missing" ]; then
        log "installing into the chroot: $missing"
        in_chroot apt-get "${APT_OPTS[@]}" update >/dev/null
        # shellcheck disable=SC2086
        in_chroot env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install $missing >/dev/null
    fi
    in_chroot sh -c 'for p in python3.14 python3.15; do printf "%s: " $p; $p -c "import sys; print(sys.version.split()[0])"; done' >&2
}

case "$cmd" in
    setup) setup ;;
    run)
        [ $# -gt 0 ] || { log "usage: $0 run CMD [ARG...]"; exit 2; }
        [ -f "$DIR/.cmp-sid-ready" ] || { log "no chroot in $DIR: run '$0 setup' first"; exit 1; }
        in_chroot "$@" ;;
    path) echo "$DIR" ;;
    *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
