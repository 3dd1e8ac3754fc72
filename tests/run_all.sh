#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs the test
# dependencies in private virtual environments and runs every test.
# Options are passed on to tests/ci.py (see python3 tests/ci.py --help).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 tests/ci.py "$@"
