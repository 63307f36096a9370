#!/usr/bin/env bash
# Set up (if needed) and run the default job: a search on STS-B with the embedded MiniLM.
# STS-B, because MiniLM learns it within a CPU trial: at 800 examples x 3 epochs the configuration
# explains nearly all of the score variance (docs/lab-notes/benchmarks-log.md, "The default job"), where RTE's
# low-fidelity scores were seed noise. Its first trials are the standard modules (SA, PA, PT, LoRA alone);
# trials are scored on 575 examples held out of train; then the front's best and the standard modules near it
# go up to 1,600 examples x 3 epochs (below `full`, to fit in minutes), 2 seeds each, scored on dev.
# Resumes if runs/default already holds a study; extra arguments go to `autopeft search`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
autopeft search --model minilm --task STS-B --train-examples 800 --epochs 3 --budget 20 --init 2 \
  --promote 1 --target 1600x3 --out runs/default "$@"
