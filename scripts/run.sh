#!/usr/bin/env bash
# Set up (if needed) and run the agent on a music folder, syncing to the embedded catalog:
#   scripts/run.sh [FOLDER ...]   (default: ~/Music; Ctrl-C stops it)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
"$here/scripts/setup.sh" run
folders=("$@")
[ ${#folders[@]} -gt 0 ] || folders=("$HOME/Music")
args=()
for folder in "${folders[@]}"; do args+=(--folder "$folder"); done
exec "$here/.venv/bin/cratesense" run "${args[@]}"
