#!/usr/bin/env bash
# tests/system-deps.sh: apt-install the Debian/Ubuntu packages the tray tests and the
# browser attack test (tests/browser/, a headless Chromium) need.
#
# The tray tests (tests/tray/) start a private desktop: a virtual X display, a
# session bus, a system-tray panel and a notification daemon, and drive a real
# pystray icon through python-xlib (window tree, XTEST clicks and keys). `pip install "PyGObject<3.51"`
# (pystray's AppIndicator backend, the one with a menu) builds from source and
# needs a compiler and the GObject/cairo headers.
#
# Idempotent: asks dpkg what is missing and returns at once when nothing is.
# `apt-get update` runs only when apt knows no candidate for a missing package,
# or when an install fails on stale lists. Prints what it installed.
#
#   tests/system-deps.sh            runtime and build packages
#   tests/system-deps.sh --runtime  only what the tests run with (no compiler)
set -euo pipefail

RUNTIME=(
  xvfb                            # the virtual X display (Xvfb)
  trayer                          # XEmbed system-tray panel the icons dock into
  dbus-daemon                     # the private session bus
  dunst                           # org.freedesktop.Notifications; pystray's GTK backends call it
  gir1.2-gtk-3.0                  # GTK 3 typelib (pulls in the GLib/DBus typelibs)
  gir1.2-ayatanaappindicator3-0.1 # AyatanaAppIndicator3 typelib: pystray's appindicator backend
  fonts-dejavu-core               # menu text that is not boxes in screenshots
  xclip xsel                      # the X11 clipboard tools platforms.copy_text drives
  desktop-file-utils              # desktop-file-validate checks the launcher and autostart entries
  gnome-keyring                   # a Secret Service: the bundle's keychain test stores and reads a key
  chromium                        # headless browser for the hostile-page test (tests/browser/)
  chromium-driver                 # chromedriver: Selenium drives the inspector page in it (tests/inspector/)
)
BUILD=(
  gcc pkg-config                  # build PyGObject and pycairo from source
  binutils                        # ldd/objdump/strip: PyInstaller needs them for build.spec
  libgirepository1.0-dev          # girepository-1.0 headers (PyGObject < 3.51)
  libcairo2-dev                   # pycairo headers
)

PKGS=("${RUNTIME[@]}")
case "${1:-}" in
  "") PKGS+=("${BUILD[@]}") ;;
  --runtime) ;;
  *) echo "usage: $0 [--runtime]" >&2; exit 2 ;;
esac

is_installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }
installed_names() { dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" {print $2}' | sort; }

missing=()
for pkg in "${PKGS[@]}"; do is_installed "$pkg" || missing+=("$pkg"); done
if ((${#missing[@]} == 0)); then
  echo "system-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "system-deps: missing ${missing[*]}, and this system has no apt-get; install them (or their equivalents) by hand" >&2
  exit 1
fi
SUDO=()
if ((EUID != 0)); then SUDO=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
echo "system-deps: missing ${missing[*]}"

# Package lists are refreshed only when they do not know a package we need.
needs_update=0
for pkg in "${missing[@]}"; do
  policy="$(apt-cache policy "$pkg" 2>/dev/null || true)"
  if [[ "$policy" != *"Candidate: "[0-9]* ]]; then needs_update=1; break; fi
done
if ((needs_update)); then
  echo "system-deps: apt knows no candidate for $pkg, running apt-get update"
  "${SUDO[@]}" apt-get update -qq
fi

before="$(installed_names)"
apt_install() { "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
if ! apt_install; then
  echo "system-deps: install failed; running apt-get update and trying once more"
  "${SUDO[@]}" apt-get update -qq
  apt_install
fi

added="$(comm -13 <(echo "$before") <(installed_names))"
echo "system-deps: installed $(grep -c . <<<"$added" || true) package(s):"
for pkg in "${missing[@]}"; do printf '  %-33s %s\n' "$pkg" "$(dpkg-query -W -f='${Version}' "$pkg")"; done
others="$(grep -vxF -f <(printf '%s\n' "${missing[@]}") <<<"$added" | tr '\n' ' ' || true)"
echo "  and as dependencies: ${others:-none}"
