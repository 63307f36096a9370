#!/usr/bin/env bash
# The whole GLUE results table (issue 21), resumable: run it again after any interruption.
# 1. one search per task (--fidelity auto, budget 50; each resumes its study), SST-2 first: the
#    transfer source, chosen in advance (docs/lab-notes/2026-12-03-glue-table-plan.md);
# 2. the table's runs (2 workers), skipping those already in benchmarks/results/glue_table.jsonl;
# 3. once more, for the transferred runs, which need SST-2's found runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
searches=benchmarks/results/glue_searches
studies=()
for task in SST-2 MRPC STS-B CoLA; do
  autopeft search --task "$task" --budget 50 --fidelity auto --quiet --out "$searches/$task"
  studies+=(--study "$task=$searches/$task")
done
for pass in 1 2; do
  python benchmarks/glue_table.py --workers 2 "${studies[@]}" --transfer-from SST-2
done
python benchmarks/glue_table.py --summary
