#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/adapters_venv.sh  # the venv the `adapters` export test loads exports with
. scripts/env.sh
python -m pytest -q --durations=15 "$@"  # the slowest tests, for keeping the suite short
