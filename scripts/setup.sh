#!/usr/bin/env bash
# Set up CrateSense from this checkout: system libraries (only those missing), a virtualenv in
# .venv, and the package installed into it. Safe to run again; it only does what is missing.
#   scripts/setup.sh          the agent
#   scripts/setup.sh test     the agent plus what the test suite needs
#   scripts/setup.sh bench    the agent plus bench/accuracy.py's renderers and peers
set -euo pipefail
cd "$(dirname "$0")/.."
purpose="${1:-run}"

system_packages_debian=(libchromaprint1 ffmpeg)
if [ "$purpose" = test ]; then
  # fpcalc is the reference the tests compare fingerprints to; ffmpeg (libvorbis) makes real .ogg.
  system_packages_debian+=(libchromaprint-tools)
  # the service files are checked with systemd-analyze
  command -v systemd-analyze >/dev/null || system_packages_debian+=(systemd)
  # the real tray under Xvfb: a tray host, clicks, screenshots, a D-Bus session, and GTK for
  # pystray's gtk backend (PyGObject is built against these headers)
  system_packages_debian+=(xvfb trayer xdotool imagemagick dbus gir1.2-gtk-3.0 gir1.2-ayatanaappindicator3-0.1
                           libgirepository1.0-dev libcairo2-dev pkg-config gcc python3-dev)
  # Debian's Mixxx reads the Serato tags we write (cues, colours, grid) in its own library scan
  system_packages_debian+=(mixxx)
  # the clock jumping backwards, for one process (libfaketime), and permissions checked as root
  # can be made to check them (setpriv, util-linux)
  system_packages_debian+=(libfaketime util-linux)
  # a disk that fails for real under the journal and the catalog: ext4 on a loop device (mount, e2fsck)
  system_packages_debian+=(mount e2fsprogs)
  # the local web page in a real headless browser (selenium drives Debian's Chromium)
  system_packages_debian+=(chromium chromium-driver)
  # the catalog's tests start a throwaway PostgreSQL server of their own (the packaged service stays off)
  system_packages_debian+=(postgresql)
fi
if [ "$purpose" = bench ]; then
  # bench/accuracy.py renders its development set from scores: FluidSynth with the FluidR3 General
  # MIDI soundfont, and MMA for the arranged charts (the peers and music21 come from the bench extra);
  # TimGM6mb renders a held-out fold of the electronic productions (a soundfont nothing is tuned on);
  # MuseScore General Lite the band-with-a-drummer tuning fold (a soundfont nothing else uses)
  system_packages_debian+=(fluidsynth fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont-small mma)
fi

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup: need root to run: $*" >&2; exit 1; fi
}

case "$(uname -s)" in
  Linux)
    if command -v dpkg-query >/dev/null; then
      missing=()
      for package in "${system_packages_debian[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
      done
      python3 -c "import ensurepip" 2>/dev/null || missing+=(python3-venv)
      if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing ${missing[*]}" >&2
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
      fi
    else
      echo "setup: not a Debian-like system; install chromaprint and ffmpeg with your package manager" >&2
    fi
    ;;
  Darwin)
    command -v brew >/dev/null || { echo "setup: install Homebrew first (https://brew.sh)" >&2; exit 1; }
    brew list chromaprint >/dev/null 2>&1 || brew install chromaprint
    brew list ffmpeg >/dev/null 2>&1 || brew install ffmpeg
    ;;
esac

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: Python 3.11 or newer is needed (found $(python3 --version 2>&1))" >&2; exit 1; }

extras=""
[ "$purpose" = test ] && extras="[test]"
[ "$purpose" = bench ] && extras="[bench]"
gtk=""  # PyGObject < 3.51: newer needs girepository-2.0, which Debian 12 does not have
[ "$purpose" = test ] && [ "$(uname -s)" = Linux ] && gtk="PyGObject<3.51"
stamp=".venv/.cratesense-setup"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)$extras$gtk"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".$extras"
  [ -z "$gtk" ] || .venv/bin/python -m pip install -q "$gtk"
  echo "$want" > "$stamp"
fi
