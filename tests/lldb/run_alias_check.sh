#!/bin/sh
# The alias inside LLDB's embedded Python, both ways (install() and the
# environment variable), in the sid chroot's LLDB 21 (embeds 3.14):
#
#   sh tests/lldb/run_alias_check.sh        (after tools/sid-pythons.sh --lldb setup)
#
# The package is built for that Python into a user site folder inside this
# repository (so that site runs its .pth hook; the chroot's system Python is
# left alone).  Exit status 0 when both ways pass.
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
sid="$repo/tools/sid-pythons.sh"
user="$repo/.ci-venvs/lldb-user"
venv="$repo/.ci-venvs/py3.14"
site="$user/lib/python3.14/site-packages"
[ -x "$venv/bin/python" ] || bash "$sid" run python3.14 -m venv "$venv"
rm -rf "$site" && mkdir -p "$site"
bash "$sid" run env CMP_WERROR=1 "$venv/bin/pip" install -q --no-deps \
    --target "$site" "$repo"
status=0
for mode in install env; do
    if [ $mode = env ]; then flag=CMULTIPROCESSING_ALIAS=1; else flag=CMP_UNUSED=1; fi
    line=$(timeout 300 bash "$sid" run env $flag PYTHONUSERBASE="$user" \
        PYTHONPATH="$repo/tests/lldb" sh -c "cd '$repo/tests/lldb' && \
        lldb-21 --batch -o 'command script import alias_check.py'" 2>&1 \
        | grep '^CMP-LLDB ' | tail -1)
    if printf '%s' "$line" | python3 -c '
import json, sys
got = json.loads(sys.stdin.read()[len("CMP-LLDB "):])
ok = "error" not in got and got["parent"] == "cmultiprocessing" and all(
    got[m][0] == "cmultiprocessing" and got[m][2] == []
    for m in ("fork", "spawn", "forkserver"))
print(json.dumps(got)[:600])
sys.exit(0 if ok else 1)'; then
        echo "LLDB alias check ($mode): ok"
    else
        echo "LLDB alias check ($mode): FAILED"; status=1
    fi
done
exit $status
