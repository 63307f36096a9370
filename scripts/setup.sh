#!/usr/bin/env bash
# Create .venv (Python 3.11) and install autopeft with pinned dependencies. Idempotent.
# `bash scripts/setup.sh test` also installs the test extras (pytest, JAX/NumPyro for --nuts, peft, ...);
# the default job needs none of them.
# torch==2.13.0 is installed first, alone: it is a CPU build on this machine's disk, and
# installing it first keeps pip from ever resolving another (multi-GB CUDA) torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  pip install --disable-pip-version-check -q torch==2.13.0 2>&1 | { grep -v "is ignored: it is neither" || true; }
fi
EXTRAS=${1:-}
pip install --disable-pip-version-check -q -e ".${EXTRAS:+[$EXTRAS]}" 2>&1 | { grep -v "is ignored: it is neither" || true; }
python -c "import autopeft, torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
# Build BoTorch's fused qLogNEHVI kernel now, so that no search compiles it (src/autopeft/search/kernel.py).
AUTOPEFT_TORCH_EXTENSIONS_DIR="$PWD/.venv/torch_extensions" python -c "from autopeft.search.kernel import main; main()"
