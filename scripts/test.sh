#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/adapters_venv.sh  # the venv the `adapters` export test loads exports with
. scripts/env.sh
# One pytest-xdist worker per core, at most 4 (each holds its own models); the tests of one module share a
# worker (--dist loadscope), so module fixtures are built once. `bash scripts/test.sh -n 0 ...` runs in one process.
workers=$(nproc)
if [ "$workers" -gt 4 ]; then workers=4; fi
python -m pytest -q -n "$workers" --dist loadscope --durations=15 "$@"  # the slowest tests, for keeping the suite short
