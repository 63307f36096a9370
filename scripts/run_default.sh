#!/usr/bin/env bash
# Set up (if needed) and run the default job: a search on STS-B with the embedded MiniLM.
# STS-B, because MiniLM learns it within a CPU trial: at 800 examples x 3 epochs the configuration
# explains nearly all of the score variance (docs/lab-notes/benchmarks-log.md, "The default job"), where RTE's
# low-fidelity scores were seed noise. SA, PA, PT and LoRA alone are trained at the same fidelity
# and marked in front.png.
# Resumes if runs/default already holds a study; extra arguments go to `autopeft search`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
autopeft search --model minilm --task STS-B --train-examples 800 --epochs 3 --budget 12 --init 3 \
  --baselines peft --out runs/default "$@"
