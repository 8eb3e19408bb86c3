#!/usr/bin/env bash
# tests/bench/run.sh: the whole benchmark from a fresh Debian checkout, in one command.
#
# Installs nginx, Caddy, wrk and curl (tests/bench/deps.sh, through sudo unless root), makes
# .venv with this checkout and its uvloop extra when they are missing (the benchmark's
# clients use aiohttp, which TrayProxy itself needs), then runs tests/bench/run.py with the arguments given:
#
#   bash tests/bench/run.sh            # full run, about 3 minutes
#   bash tests/bench/run.sh --smoke    # every path and figure briefly
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/bench/deps.sh
if [[ ! -x .venv/bin/python ]]; then python3 -m venv .venv; fi
# TrayProxy as a Linux user gets it at its fastest: with the uvloop extra. An existing .venv
# that already has both is used as it is (others may be using it too).
if ! .venv/bin/python -c "import desktop, uvloop" 2>/dev/null; then .venv/bin/pip install -q -e '.[uvloop]'; fi
exec .venv/bin/python tests/bench/run.py "$@"
