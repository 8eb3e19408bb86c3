#!/usr/bin/env bash
# tests/bench/run.sh: the whole benchmark from a fresh Debian checkout, in one command.
#
# Installs nginx, Caddy, wrk and curl (tests/bench/deps.sh, through sudo unless root), makes
# .venv with this checkout installed when there is none (the benchmark's clients use aiohttp,
# which TrayProxy itself needs), then runs tests/bench/run.py with the arguments given:
#
#   bash tests/bench/run.sh            # full run, about 3 minutes
#   bash tests/bench/run.sh --smoke    # every path and figure briefly
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/bench/deps.sh
if [[ ! -x .venv/bin/python ]]; then python3 -m venv .venv; fi
# An existing .venv that already runs TrayProxy is used as it is (others may be using it too).
if ! .venv/bin/trayproxy --version >/dev/null 2>&1; then .venv/bin/pip install -q -e .; fi
exec .venv/bin/python tests/bench/run.py "$@"
