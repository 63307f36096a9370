#!/usr/bin/env bash
# Issue 4, section 4: on a machine with a CUDA GPU, time low-fidelity trials (autopeft's and the
# plain loop's, side by side, benchmarks/trial_speed.py) and a whole default search.
# Usage: bash benchmarks/gpu_check.sh [MODEL (default minilm)] [OUT_DIR (default benchmarks/results/gpu)]
# Writes gpu.txt, pytest_gpu.log, first_trial_gpu.log, trial_speed_gpu.{log,json}, default_search_gpu.log into OUT_DIR.
set -uo pipefail
model=${1:-minilm}
out=${2:-benchmarks/results/gpu}
work=$(mktemp -d)
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0)); \
import os; print('cpu cores', os.cpu_count())" | tee "$out/gpu.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_train.py -k "gpu or device" 2>&1 | tee "$out/pytest_gpu.log"
python3 benchmarks/gpu_first_trial.py --model "$model" 2>&1 | tee "$out/first_trial_gpu.log"
python3 benchmarks/gpu_first_trial.py --model "$model" --allow-cudnn 2>&1 | tee -a "$out/first_trial_gpu.log"
python3 benchmarks/trial_speed.py --model "$model" --configs 10 --device cuda --out "$out/trial_speed_gpu.json" 2>&1 \
    | tee "$out/trial_speed_gpu.log"
start=$(date +%s.%N)
python3 -m autopeft.cli search --model "$model" --task RTE --budget 16 --init 6 --out "$work/default" \
    --quiet 2>&1 | tee "$out/default_search_gpu.log"
end=$(date +%s.%N)
python3 - "$work/default/study.db" "$start" "$end" <<'PY' 2>&1 | tee -a "$out/default_search_gpu.log"
import sys, numpy as np, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{sys.argv[1]}")
done = [t for t in study.trials if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
trial_s = np.array([t.user_attrs["wall_time_s"] for t in done])
proposal_s = np.array([t.user_attrs["proposal_seconds"] for t in done[6:]])  # after the 6 random ones
print(f"whole default search (command wall time): {float(sys.argv[3]) - float(sys.argv[2]):.1f} s, {len(done)} trials")
print(f"trial wall time: min {trial_s.min():.2f} s, median {np.median(trial_s):.2f} s, max {trial_s.max():.2f} s")
print(f"SAAS proposal time (trials 7-16): median {np.median(proposal_s):.2f} s, max {proposal_s.max():.2f} s")
print("proposal times, s:", " ".join(f"{v:.2f}" for v in proposal_s))
print("trial times, s:", " ".join(f"{v:.2f}" for v in trial_s))
PY
rm -rf "$work"
