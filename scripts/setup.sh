#!/usr/bin/env bash
# Create .venv (Python 3.11) and install autopeft with pinned dependencies. Idempotent.
# `bash scripts/setup.sh test` also installs the test extras (pytest, JAX/NumPyro for --nuts, peft, ...);
# the default job needs none of them.
# torch==2.13.0 is installed first, alone: it is a CPU build on this machine's disk, and
# installing it first keeps pip from ever resolving another (multi-GB CUDA) torch.
# pip byte-compiles what it installs one file at a time, about half of its time here; so pip installs
# with --no-compile, and compileall then does the same work on every core while BoTorch's kernel builds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  pip install --disable-pip-version-check -q --no-compile torch==2.13.0 2>&1 | { grep -v "is ignored: it is neither" || true; }
fi
EXTRAS=${1:-}
pip install --disable-pip-version-check -q --no-compile -e ".${EXTRAS:+[$EXTRAS]}" 2>&1 | { grep -v "is ignored: it is neither" || true; }
# Build BoTorch's fused qLogNEHVI kernel now, so that no search compiles it (src/autopeft/search/kernel.py),
# beside the byte-compilation.
AUTOPEFT_TORCH_EXTENSIONS_DIR="$PWD/.venv/torch_extensions" python -c "from autopeft.search.kernel import main; main()" &
kernel=$!
# Only after pip installed something new (a stamp file records the last compile that ran through); as
# with pip's own compile, a file that does not compile, such as a template, is skipped.
site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
stamp=.venv/.bytecode-compiled
if [ ! -e "$stamp" ] || [ -n "$(find "$site" -maxdepth 1 -name '*.dist-info' ! -name 'autopeft-*' -newer "$stamp")" ]; then
  touch "$stamp.new"  # the stamp's time is the compile's start, and it is kept only if the compile ran through
  compiled=0
  python -m compileall -q -j 0 "$site" >/dev/null 2>&1 || compiled=$?
  if [ "$compiled" -le 1 ]; then mv "$stamp.new" "$stamp"; fi  # 1: some file did not compile; >1: stopped
fi
wait "$kernel"
python -c "import autopeft, torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
