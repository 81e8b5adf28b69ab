#!/usr/bin/env bash
# Set up (if needed) and run the test suite; extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
"$here/scripts/setup.sh" test
cd "$here"
exec .venv/bin/python -P -m pytest "$@"  # -P: the checkout root is not on sys.path (tests import the installed package)
