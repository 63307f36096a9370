"""Shared fixtures: tiny randomly initialised models of each supported family (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from autopeft.space import ModelSpec, SearchSpace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]

# A small space and a ModelSpec for study/report tests that need no model.
SMALL_SPACE = SearchSpace(n_layers=4, serial_adapter=(0, 8, 16), parallel_adapter=(0, 8), prefix_length=(0, 4))
SMALL_SPEC = ModelSpec("bert", n_layers=4, hidden_size=32, q_dim=32, kv_dim=32, backbone_params=100_000, head_params=66)


def study_metadata(**changes) -> dict:
    """Study metadata for SMALL_SPACE, as the search command stores it; `changes` override keys."""
    from autopeft.search.pareto import default_reference_point, space_max_percent

    meta = {
        "model": {"name": "tiny", **SMALL_SPEC.to_dict()},
        "task": "RTE",
        "space": SMALL_SPACE.to_dict(),
        "fidelity": {"train_fraction": 0.1, "epochs": 1},
        "objectives": ["accuracy", "percent_params"],
        "sampler": "random",
        "seed": 0,
        "reference_point": list(default_reference_point(space_max_percent(SMALL_SPACE, SMALL_SPEC))),
    }
    meta.update(changes)
    return meta
SHARED_GLUE = REPO.parent / "shared" / "data" / "glue"

TINY_CONFIGS = {
    "bert": lambda n: BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=n, attn_implementation="sdpa",
    ),
    "roberta": lambda n: RobertaConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=80, num_labels=n, pad_token_id=0, attn_implementation="sdpa",
    ),
    "llama": lambda n: LlamaConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=n, pad_token_id=0, attn_implementation="sdpa",
    ),
}
TINY_CLASSES = {
    "bert": BertForSequenceClassification,
    "roberta": RobertaForSequenceClassification,
    "llama": LlamaForSequenceClassification,
}


def make_tiny(family: str, num_labels: int = 3, seed: int = 0) -> torch.nn.Module:
    """The same tiny random model for the same (family, num_labels, seed), in eval mode."""
    torch.manual_seed(seed)
    return TINY_CLASSES[family](TINY_CONFIGS[family](num_labels)).eval()


def tiny_batch(seed: int = 1, batch: int = 3, length: int = 12) -> dict[str, torch.Tensor]:
    """Token ids with right padding on the first example."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 120, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    ids[0, length - 4 :] = 0
    mask[0, length - 4 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(params=["bert", "roberta", "llama"])
def family(request) -> str:
    return request.param


def _save_tiny(path: Path, family: str) -> Path:
    """A local model folder: a tiny random 2-layer model with the embedded MiniLM's tokenizer."""
    from autopeft.models import load_tokenizer

    tokenizer = load_tokenizer("minilm")
    torch.manual_seed(0)
    config = TINY_CONFIGS[family](2)
    config.vocab_size, config.num_hidden_layers = tokenizer.vocab_size, 2
    config.max_position_embeddings = 128
    TINY_CLASSES[family](config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("tiny-llama"), "llama")
