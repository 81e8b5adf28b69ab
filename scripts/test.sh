#!/usr/bin/env bash
# Set up (if needed) and run the test suite; extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
"$here/scripts/setup.sh" test
cd "$here"
.venv/bin/ruff check --quiet .   # the linter, over every module (pyproject.toml: [tool.ruff])
.venv/bin/mypy                   # the type checker, over the cratesense package (pyproject.toml: [tool.mypy])
exec .venv/bin/python -P -m pytest "$@"  # -P: the checkout root is not on sys.path (tests import the installed package)
