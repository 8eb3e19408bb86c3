#!/usr/bin/env bash
# tests/bench/deps.sh: apt-install the programs the benchmark starts and drives.
#
# nginx is both the upstream (static responses, upload sink) and one of the proxies compared;
# Caddy is the other; wrk generates the small-request load; curl times the 64 MiB transfers;
# taskset (util-linux) pins the proxy to its own core; python3-venv makes the virtualenv.
#
# Idempotent, like tests/system-deps.sh: asks dpkg what is missing and returns at once when
# nothing is; `apt-get update` runs only when apt knows no candidate for a missing package, or
# when an install fails on stale lists. Prints the versions it installed.
set -euo pipefail

PKGS=(
  nginx-light   # upstream and reference proxy: one worker, buffering off
  caddy         # reference proxy: reverse_proxy with GOMAXPROCS=1
  wrk           # small-request load with latency percentiles
  curl          # 64 MiB download and upload timings (a C client: never the slow part)
  util-linux    # taskset
  python3-venv  # run.sh makes .venv when there is none
)

is_installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }

missing=()
for pkg in "${PKGS[@]}"; do is_installed "$pkg" || missing+=("$pkg"); done
if ((${#missing[@]} == 0)); then
  echo "bench-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "bench-deps: missing ${missing[*]}, and this system has no apt-get; install them by hand" >&2
  exit 1
fi
SUDO=()
if ((EUID != 0)); then SUDO=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
echo "bench-deps: missing ${missing[*]}"

for pkg in "${missing[@]}"; do
  if [[ "$(apt-cache policy "$pkg" 2>/dev/null || true)" != *"Candidate: "[0-9]* ]]; then
    echo "bench-deps: apt knows no candidate for $pkg, running apt-get update"
    "${SUDO[@]}" apt-get update -qq
    break
  fi
done
apt_install() { "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
if ! apt_install; then
  echo "bench-deps: install failed; running apt-get update and trying once more"
  "${SUDO[@]}" apt-get update -qq
  apt_install
fi
# The packages start system-wide services; the benchmark runs its own instances on free ports.
for service in nginx caddy; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
    "${SUDO[@]}" systemctl disable --now "$service" >/dev/null 2>&1 || true
  fi
done
for pkg in "${missing[@]}"; do printf '  %-12s %s\n' "$pkg" "$(dpkg-query -W -f='${Version}' "$pkg")"; done
