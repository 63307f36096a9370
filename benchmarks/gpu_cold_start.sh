#!/usr/bin/env bash
# GPU machine cold start: the GPU tests, the cold import time of the BoTorch modules the sampler uses, and the
# proposal times of two tiny searches in fresh processes, one after the other (is the first proposal slow once only?).
# Usage: OUT=DIR bash benchmarks/gpu_cold_start.sh   (run with the model reachable as `minilm`)
set -uo pipefail
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pytest -q -p no:cacheprovider tests/test_train.py -k "gpu or device" 2>&1 | tee $OUT/pytest_gpu.log | tail -15
s=$(date +%s.%N); python3 -X importtime -c "from botorch.fit import get_fitted_map_saas_model; from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement" 2> $OUT/importtime.log; e=$(date +%s.%N)
echo "botorch imports (cold): $(python3 -c "print($e-$s)") s"; sort -t'|' -k2 -n $OUT/importtime.log | tail -8
for i in 1 2; do
python3 -m autopeft.cli search --model minilm --task RTE --budget 8 --init 6 --train-examples 32 --dev-examples 32 --out /tmp/s$i --quiet > /dev/null 2>&1
python3 - /tmp/s$i/study.db <<'PY'
import sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
st = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{sys.argv[1]}")
print("proposal s:", [round(t.user_attrs.get("proposal_seconds", -1), 2) for t in st.trials])
PY
done
