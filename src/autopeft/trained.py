"""Use a trained run (`autopeft train --out DIR`, or a retrained front member): load, predict, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from autopeft.errors import UserError
from autopeft.models import load_model, load_tokenizer
from autopeft.modules import load_peft, set_attention
from autopeft.modules.inject import CONFIG_FILE
from autopeft.tasks import Split, TaskData
from autopeft.training import FULL_FINETUNE, encode, evaluate, logits


def run_info(run_dir: str | Path) -> dict[str, Any]:
    """What the run saved about itself: config, model, task, label_names, fidelity, result."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} holds no trained run ({CONFIG_FILE} missing); "
                        "pass the --out folder of `autopeft train` (or a retrained trial's seed folder)")
    return json.loads(path.read_text())


def _max_length(info: dict[str, Any]) -> int:
    """The max length the run was trained with: inputs are truncated the same way."""
    return info.get("fidelity", {}).get("max_length", 128)


def load_trained(run_dir: str | Path) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """The trained model (modules injected, weights loaded, eval mode) and its tokenizer.

    `model.config.id2label` holds the task's label names, so
    ``transformers.pipeline("text-classification", model=model, tokenizer=tokenizer)`` reports them.
    """
    return _load(run_dir, run_info(run_dir))


def _load(run_dir: str | Path, info: dict[str, Any]) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    names = list(info.get("label_names") or [])
    if info["config"] == FULL_FINETUNE:
        model = AutoModelForSequenceClassification.from_pretrained(Path(run_dir) / "model")
    else:
        model = load_peft(load_model(info["model"], max(1, len(names))), run_dir)
        set_attention(model)  # the prefix-aware attention
    if names:
        model.config.id2label = dict(enumerate(names))
        model.config.label2id = {name: i for i, name in enumerate(names)}
    return model.eval(), load_tokenizer(info["model"])


def predict(run_dir: str | Path, text_a: list[str], text_b: list[str] | None = None, batch_size: int = 64,
            progress: bool = False) -> dict[str, Any]:
    """Predictions of a trained run for the given texts.

    Classification: {"label": [name per text], "probabilities": (n, num_labels), "label_names": [...]};
    regression: {"value": (n,)}.
    """
    info = run_info(run_dir)
    model, tokenizer = _load(run_dir, info)
    data = encode(Split(list(text_a), None if text_b is None else list(text_b), np.zeros(len(text_a))), tokenizer,
                  _max_length(info))
    out = logits(model, data, tokenizer.pad_token_id, batch_size=batch_size, progress=progress)
    names = list(info.get("label_names") or [])
    if not names:
        return {"value": out[:, 0]}
    probabilities = softmax(out, axis=1)
    return {"label": [names[i] for i in probabilities.argmax(axis=1)], "probabilities": probabilities,
            "label_names": names}


def evaluate_trained(run_dir: str | Path, task: TaskData) -> dict[str, float]:
    """The run's metrics on `task`'s dev split (its labels must be the run's)."""
    info = run_info(run_dir)
    names = list(info.get("label_names") or [])
    if names != list(task.spec.label_names):
        raise UserError(f"the run in {run_dir} predicts labels {names}, but task {task.spec.name} has "
                        f"{list(task.spec.label_names)}; evaluate it on a task with the same labels")
    model, tokenizer = _load(run_dir, info)
    data = encode(task.dev, tokenizer, _max_length(info))
    return evaluate(model, task, data, tokenizer.pad_token_id)
