#!/usr/bin/env bash
# The second results table (issue 36), resumable: run it again after any interruption.
# 1. one search per task with the verified pipeline (the standard modules inside, the selection split
#    held out of train, promotion to `full`), in two lanes side by side with one torch thread each
#    (about 1.1-1.25x the throughput of one 2-thread process on 2 cores): SST-2 then STS-B, MRPC then
#    CoLA. SST-2 is the transfer source, fixed before any result
#    (docs/lab-notes/2026-12-07-glue-table-v2-plan.md);
# 2. the answer's runs and the transferred runs, seeds 10-12 on the whole train split, scored on dev
#    (benchmarks/results/glue_table_v2.jsonl); full fine-tuning and the single modules are the first
#    table's rows (glue_table.jsonl), not run again;
# 3. each search's compute; the report, written into BENCHMARKS.md between the GLUE-TABLE-V2 markers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
searches=benchmarks/results/glue_searches_v2
out=benchmarks/results/glue_table_v2.jsonl
mkdir -p "$searches"

search() {  # search TASK: the verified search of one task (resumes a finished or interrupted one)
  local target=full
  if [ "$1" = SST-2 ]; then target=10000x3; fi  # the first table's 10,000-example subset, as the plan says
  OMP_NUM_THREADS=1 autopeft search --task "$1" --budget 40 --promote 2 --target "$target" --quiet \
    --out "$searches/$1" >> "$searches/$1.log" 2>&1
}
lane() { for task in "$@"; do search "$task"; done; }
trap 'trap - INT TERM; kill 0' INT TERM  # stopping this script stops both lanes' searches too
lane SST-2 STS-B & first=$!
lane MRPC CoLA & second=$!
rc=0  # wait for both lanes even if one fails, so that a rerun never finds a search still running
wait "$first" || rc=$?
wait "$second" || rc=$?
if [ "$rc" != 0 ]; then exit "$rc"; fi

studies=()
for task in SST-2 MRPC STS-B CoLA; do studies+=(--study "$task=$searches/$task"); done
# a member that is a standard module takes the first table's rows of that module (same runs) instead of a rerun
python benchmarks/glue_table.py --workers 2 --methods answer,transferred "${studies[@]}" --transfer-from SST-2 \
  --reuse-singles benchmarks/results/glue_table.jsonl --out "$out"
python benchmarks/glue_table.py --compute "${studies[@]}" > "$searches/compute.jsonl"
python benchmarks/glue_report.py --rows "$out" --singles-from benchmarks/results/glue_table.jsonl "${studies[@]}" \
  --compute-from "$searches/compute.jsonl" --page BENCHMARKS.md --figure docs/figures/glue_table_v2.png
