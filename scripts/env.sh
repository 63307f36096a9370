# Sourced by the run and test scripts: the venv, offline Hugging Face, per-venv kernel cache.
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export AUTOPEFT_TORCH_EXTENSIONS_DIR="$PWD/.venv/torch_extensions"  # + a torch/Python/CPU tag (search/environment.py)
