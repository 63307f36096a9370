#!/usr/bin/env bash
# Build .venv-adapters for the `adapters` export test: AdapterHub `adapters` pins an older transformers
# than autopeft's, so it gets a venv of its own. torch and the rest come from .venv (a .pth file added
# after the install, so that this venv's own transformers wins). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv-adapters
if [ -x $V/bin/python ] && $V/bin/python -c "import adapters, torch, sys; sys.exit(adapters.__version__ != '1.3.0')" 2>/dev/null; then
  exit 0
fi
rm -rf $V
.venv/bin/python -m venv $V
$V/bin/pip install --disable-pip-version-check -q adapters==1.3.0 transformers==4.57.6 2>&1 \
  | { grep -v -e "is ignored: it is neither" -e "dependency conflicts" -e "requires" || true; }
main_site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
own_site=$($V/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$main_site" > "$own_site/zz_autopeft_venv.pth"
$V/bin/python -c "import adapters, torch, transformers; assert transformers.__version__ == '4.57.6'"
