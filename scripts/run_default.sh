#!/usr/bin/env bash
# Set up (if needed) and run the default job: a search on RTE with the embedded MiniLM.
# Resumes if runs/default already holds a study; extra arguments go to `autopeft search`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
autopeft search --model minilm --task RTE --budget 16 --init 6 --out runs/default "$@"
