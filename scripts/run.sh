#!/usr/bin/env bash
# Set up (if needed) and analyze a music folder: scripts/run.sh [FOLDER] (default: ~/Music).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
"$here/scripts/setup.sh" run
folder="${1:-$HOME/Music}"
exec "$here/.venv/bin/cratesense" analyze --table "$folder"
