#!/usr/bin/env bash
# Following the search's warning on the two tasks where the second table's search fidelity sat at the constant
# predictor's level: the second table's protocol with --fidelity auto, on CoLA then MRPC; resumable.
# Plan: docs/lab-notes/2026-12-08-auto-fidelity-plan.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
searches=benchmarks/results/glue_searches_v2_auto
out=benchmarks/results/glue_table_v2_auto.jsonl
mkdir -p "$searches"
studies=()
for task in CoLA MRPC; do
  autopeft search --task "$task" --budget 40 --promote 2 --target full --fidelity auto --quiet \
    --out "$searches/$task" >> "$searches/$task.log" 2>&1
  studies+=(--study "$task=$searches/$task")
  python benchmarks/glue_table.py --workers 2 --tasks "$task" --methods answer "${studies[@]}" \
    --reuse-singles benchmarks/results/glue_table.jsonl --out "$out"
done
python benchmarks/glue_table.py --compute "${studies[@]}" > "$searches/compute.jsonl"
python benchmarks/glue_report.py --rows "$out" --singles-from benchmarks/results/glue_table.jsonl "${studies[@]}" \
  --compute-from "$searches/compute.jsonl"
