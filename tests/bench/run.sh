#!/usr/bin/env bash
# tests/bench/run.sh: the whole benchmark from a fresh Debian checkout, in one command.
#
# Installs nginx, Caddy, wrk and curl (tests/bench/deps.sh, through sudo unless root), makes
# .venv when it is missing and installs this checkout into it (the benchmark's clients use
# aiohttp, which TrayProxy itself needs), then runs tests/bench/run.py with the arguments given:
#
#   bash tests/bench/run.sh            # full run, about 3 minutes
#   bash tests/bench/run.sh --smoke    # every path and figure briefly
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/bench/deps.sh
if [[ ! -x .venv/bin/python ]]; then python3 -m venv .venv; fi
.venv/bin/pip install -q -e .
exec .venv/bin/python tests/bench/run.py "$@"
