"""Training and evaluation of one configuration at a given fidelity.

Batches are padded to their longest sequence and grouped by length (examples are sorted
by length inside shuffled chunks), so short tasks like RTE pay for their real lengths.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from autopeft.errors import SettingError, UserError, check_interrupt
from autopeft.frozen import StatesCache, lower_states, set_lower_layers_eval, skip_lower_layers
from autopeft.metrics import compute_metrics
from autopeft.models import load_model, load_tokenizer
from autopeft.modules import (
    ATTENTIONS,
    fold,
    full_finetune,
    inject,
    model_spec,
    save_peft,
    set_attention,
    trainable_params,
)
from autopeft.modules.inject import CONFIG_FILE
from autopeft.space import ModelSpec, PeftConfig
from autopeft.tasks import Split, TaskData

FULL_FINETUNE = "full"  # the configuration name of the full fine-tuning baseline
PRECISIONS = ("fp32", "bf16", "auto")


@dataclass(frozen=True)
class Fidelity:
    """How much training one evaluation gets.

    train_examples: None = the whole train split; an int = that many examples; a float in
    (0, 1] = that fraction. dev_examples likewise for the dev split (None = all).
    lr: None = 1e-3 for PEFT modules, 5e-5 for full fine-tuning.
    """

    train_examples: int | float | None = None
    epochs: float = 10.0
    max_length: int = 128
    batch_size: int = 32
    lr: float | None = None
    warmup_ratio: float = 0.06
    dev_examples: int | float | None = None
    seed: int = 0
    precision: str = "fp32"  # "bf16": bfloat16 autocast for the forward passes; "auto": see fast_precision
    dropout: bool = True  # False = the backbone's dropout is switched off (faster; see FIDELITIES)

    def __post_init__(self) -> None:
        def bad(name: str, problem: str) -> SettingError:  # named "fidelity.<field>"; the CLI names its flag
            return SettingError(f"fidelity.{name}", f"{problem}, got {getattr(self, name)!r}")

        for name in ("train_examples", "dev_examples"):
            value = getattr(self, name)
            if value is not None and (value <= 0 or (isinstance(value, float) and value > 1)):
                raise bad(name, "must be a positive count or a fraction in (0, 1]")
        if self.epochs <= 0:
            raise bad("epochs", "must be > 0")
        if not 8 <= self.max_length <= 4096:
            raise bad("max_length", "must be in 8..4096")
        if self.batch_size < 1:
            raise bad("batch_size", "must be >= 1")
        if self.lr is not None and not 0 < self.lr < 1:
            raise bad("lr", "must be in (0, 1)")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"must be one of {PRECISIONS}")
        if not 0 <= self.warmup_ratio < 1:
            raise bad("warmup_ratio", "must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def n_train(self, available: int) -> int:
        """How many train examples a run trains on, out of `available`."""
        if self.train_examples is None:
            return available
        if isinstance(self.train_examples, float):
            return min(available, max(1, round(available * self.train_examples)))
        return min(available, int(self.train_examples))

    def describe(self, available: int) -> str:
        """"EXAMPLESxEPOCHS" with the examples actually trained on, out of `available`, e.g. "800x3"."""
        return f"{self.n_train(available)}x{self.epochs:g}"


# Documented presets. "low" is the cheap proxy used for search trials; "full" for retraining.
FIDELITIES: dict[str, Fidelity] = {
    # 640 examples x 2 epochs = 40 steps: a trial takes well under a minute on 2 cores.
    # No dropout: on CPU, drawing dropout masks (bernoulli_) is a large share of a trial
    # (and, with SDPA attention, forced its slower path); 40 steps do not overfit.
    # bf16 where the device computes it natively, else fp32 (see fast_precision).
    "low": Fidelity(train_examples=640, epochs=2, max_length=128, precision="auto", dropout=False),
    # The whole train split. 3 epochs is what a 2-core CPU affords (a PEFT run on RTE takes
    # minutes); raise --epochs on a GPU.
    "full": Fidelity(train_examples=None, epochs=3, max_length=128),
}
FIDELITY_FIELDS = frozenset(f.name for f in fields(Fidelity))


def fidelity_from(preset: str | Fidelity = "low", device: str | torch.device = "auto", **overrides: Any) -> Fidelity:
    """A preset (or a Fidelity) with some fields replaced (None values are ignored); precision "auto" is
    resolved for `device`, so that what a study stores says what its trials ran."""
    if not isinstance(preset, Fidelity) and preset not in FIDELITIES:
        raise UserError(f"unknown fidelity '{preset}'; choose one of {sorted(FIDELITIES)}")
    unknown = sorted(set(overrides) - FIDELITY_FIELDS)
    if unknown:
        raise UserError(f"unknown setting(s) {unknown}; fidelity fields: {sorted(FIDELITY_FIELDS)}")
    base = preset if isinstance(preset, Fidelity) else FIDELITIES[preset]
    return resolve_precision(replace(base, **{k: v for k, v in overrides.items() if v is not None}), device)


def fast_precision(device: str | torch.device = "auto") -> str:
    """"bf16" where `device` computes bfloat16 natively (a CUDA GPU that supports it; a CPU
    with AVX512-BF16 or AMX), else "fp32": elsewhere bf16 autocast is emulated and much
    slower than fp32 (docs/lab-notes/benchmarks-log.md, the AVX2-only EPYC of 2026-12-04)."""
    device = resolve_device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    # torch has no public query for these CPU features; its private ones are read defensively.
    native = (getattr(torch.cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported",
                                                                     "_is_amx_tile_supported"))
    return "bf16" if any(native) else "fp32"


def resolve_precision(fidelity: Fidelity, device: str | torch.device = "auto") -> Fidelity:
    """`fidelity` with precision "auto" replaced by `fast_precision(device)`."""
    return replace(fidelity, precision=fast_precision(device)) if fidelity.precision == "auto" else fidelity


@dataclass
class TrainResult:
    metrics: dict[str, float]
    score: float
    trainable_params: int
    percent: float
    wall_time_s: float
    loss_curve: list[float] = field(default_factory=list)  # mean loss of each logged window
    steps: int = 0
    report_metrics: dict[str, float] | None = None  # on the report split, when one was given

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Encoded:
    """A tokenized split: unpadded token id lists and their labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(split: Split, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Encoded:
    """Tokenize a split once (truncated to max_length, not padded)."""
    out = tokenizer(split.text_a, split.text_b, truncation=True, max_length=max_length)
    return Encoded(out["input_ids"], out.get("token_type_ids"), split.labels)


def batches(data: Encoded, batch_size: int, pad_id: int, shuffle: bool,
            seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Padded batches: input_ids/attention_mask (batch, longest_in_batch), labels (batch,).

    With shuffle, examples are shuffled, then sorted by length inside chunks of 50 batches,
    and the batches are shuffled again; without, the order is by length (fastest to evaluate).
    """
    lengths = np.array([len(ids) for ids in data.input_ids])
    if shuffle:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(data))
        chunk = batch_size * 50
        chunks = np.split(order, range(chunk, len(order), chunk))
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
        groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        groups = [groups[i] for i in rng.permutation(len(groups))]
    else:
        order = np.argsort(lengths, kind="stable")
        groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for idx in groups:
        width = int(lengths[idx].max())
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        types = torch.zeros((len(idx), width), dtype=torch.long) if data.token_type_ids is not None else None
        for row, i in enumerate(idx):
            n = lengths[i]
            ids[row, :n] = torch.tensor(data.input_ids[i])
            mask[row, :n] = 1
            if types is not None:
                types[row, :n] = torch.tensor(data.token_type_ids[i])
        batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.as_tensor(data.labels[idx]),
                 "index": torch.as_tensor(idx)}
        if types is not None:
            batch["token_type_ids"] = types
        yield batch


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.shape[-1] == 1:
        return nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels.long())


def _model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k not in ("labels", "index")}


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """'auto' (or None): the first CUDA GPU when there is one, else the CPU; 'cpu'; 'cuda[:N]'."""
    if isinstance(name, torch.device):
        return name
    name = name or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":")[0] not in DEVICES:
        raise UserError(f"unknown device {name!r}; choose auto, cpu or cuda (cuda:N for the N-th GPU)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was asked for but PyTorch sees no CUDA GPU (torch {torch.__version__}); "
                        "use --device cpu, or install a CUDA build of torch on a machine with a GPU")
    return torch.device(name)


def default_attention(device: torch.device) -> str:
    """autopeft's matmul attention on CPU (faster there, see modules.inject); SDPA's fused kernels on GPU."""
    return "sdpa" if device.type == "cuda" else "matmul"


def linear_schedule_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int,
                               total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' `get_linear_schedule_with_warmup`, the same factors to the last bit.

    Written here because importing `transformers.optimization` imports `transformers.trainer_utils`,
    and with it all of PEFT, before a search's first trial; tests/test_train.py compares the two.
    """
    def factor(step: int) -> float:
        if step < warmup_steps:
            return float(step) / float(max(1, warmup_steps))
        return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup_steps)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _autocast(fidelity_precision: str, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=fidelity_precision == "bf16")


def _sdpa_kernels(device: torch.device, training: bool):
    """The SDPA kernels allowed (used with attention="sdpa"; the CPU's default matmul
    attention does not call SDPA).

    CPU training: the math kernel; PyTorch's fused flash-attention backward was several times
    slower than the math path (bmm + softmax, whose backward is two more bmm).
    GPU: flash, memory-efficient or math, not cuDNN's: cuDNN attention builds a plan for every
    new (query, key) length pair, and length-grouped batches and prefixes of different
    lengths make many, so first runs were slow (docs/lab-notes/benchmarks-log.md, "On a GPU").
    """
    if device.type == "cuda":
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
    return sdpa_kernel(SDPBackend.MATH) if training else nullcontext()


def _on(device: torch.device, batches: Iterator[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
    """`batches` with every tensor but `index` (kept on the CPU for indexing) moved to `device`."""
    for batch in batches:
        yield {k: v if k == "index" else v.to(device, non_blocking=True) for k, v in batch.items()}


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability of `model` to 0 (attention dropout reads `Dropout.p` too)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def _logits(model: nn.Module, batch: dict[str, torch.Tensor], feed=None) -> torch.Tensor:
    """Forward one batch; `feed` (from frozen.skip_lower_layers) supplies cached lower states."""
    if feed is not None:
        feed(batch["index"], batch["input_ids"].shape[1])
    return model(**_model_inputs(batch)).logits


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def logits(model: nn.Module, data: Encoded, pad_id: int, batch_size: int = 64, feed=None,
           precision: str = "fp32", progress: bool = False) -> np.ndarray:
    """The model's outputs in the split's order, (n, num_labels) (num_labels 1: regression)."""
    model.eval()
    device = _device_of(model)
    out: np.ndarray | None = None
    bar = tqdm(total=len(data), desc="predict", unit="example", disable=not progress, leave=False)
    for batch in _on(device, batches(data, batch_size, pad_id, shuffle=False)):
        with _autocast(precision, device), _sdpa_kernels(device, training=False):
            values = _logits(model, batch, feed).float().cpu().numpy()
        if out is None:
            out = np.zeros((len(data), values.shape[-1]), dtype=np.float64)
        out[batch["index"].numpy()] = values
        bar.update(len(values))
    bar.close()
    return out if out is not None else np.zeros((0, 1))


def predict(model: nn.Module, data: Encoded, pad_id: int, batch_size: int = 64, feed=None,
            precision: str = "fp32") -> np.ndarray:
    """Predictions in the split's order: class ids (n,) or regression values (n,)."""
    values = logits(model, data, pad_id, batch_size, feed, precision)
    return values[:, 0] if values.shape[-1] == 1 else values.argmax(-1).astype(np.float64)


def evaluate(model: nn.Module, task: TaskData, data: Encoded, pad_id: int, feed=None,
             precision: str = "fp32") -> dict[str, float]:
    preds = predict(model, data, pad_id, feed=feed, precision=precision)
    if not task.spec.is_regression:
        preds = preds.astype(np.int64)
    return compute_metrics(task.spec, preds, data.labels)


def _states(model: nn.Module, k: int, data: Encoded, pad_id: int, model_name: str, cache: StatesCache | None,
            precision: str) -> list[torch.Tensor]:
    """Hidden states entering layer k for every example of `data`, from `cache` when there.

    The key holds the device type when it is not the CPU (kernels differ slightly), so CPU
    keys are the same as before GPUs were supported.
    """
    device = _device_of(model)
    where = "" if device.type == "cpu" else f"|{device.type}"
    key = StatesCache.key(f"{model_name}|{precision}{where}", k, data.input_ids)
    states = cache.get(key) if cache is not None else None
    if states is None:
        with _autocast(precision, device), _sdpa_kernels(device, training=False):
            states = lower_states(model, k, _on(device, batches(data, 64, pad_id, shuffle=False)), len(data))
        if cache is not None:
            cache.put(key, states)
    return states


def build_model(model_name: str, task: TaskData, config: PeftConfig | str, seed: int,
                attention: str = "matmul") -> tuple[nn.Module, ModelSpec]:
    """A fresh base model with `config` injected (or made fully trainable for 'full').

    `attention`: "matmul" or "sdpa", one of autopeft's attention implementations (ATTENTIONS).
    """
    if attention not in ATTENTIONS:
        raise UserError(f"unknown attention {attention!r}; choose one of {sorted(ATTENTIONS)}")
    model = load_model(model_name, task.spec.num_labels, seed=seed)
    spec = model_spec(model)
    if config == FULL_FINETUNE:
        full_finetune(model)
    else:
        inject(model, config, seed=seed)
    set_attention(model, attention)
    return model, spec


def train_and_evaluate(
    model_name: str,
    task: TaskData,
    config: PeftConfig | str,
    fidelity: Fidelity,
    out_dir: str | Path | None = None,
    progress: bool = True,
    tokenizer: PreTrainedTokenizerBase | None = None,
    cache: StatesCache | None = None,
    reuse_lower_layers: bool = True,
    attention: str | None = None,
    device: str | torch.device = "auto",
    report: Split | None = None,
) -> TrainResult:
    """Train `config` (a PeftConfig, or 'full') on task.train at `fidelity`; score on task.dev
    (and, when `report` is given, on it too: `TrainResult.report_metrics`).

    Layers below the lowest modified one are frozen, run in eval mode, and (with
    `reuse_lower_layers`) computed once per example and reused across epochs, and across
    calls through `cache` (`frozen.open_states_cache`; None: within this call only). The
    prefix is folded before evaluation, so the dev score is that of what is kept. When
    `out_dir` is given, the trained modules and head are saved there.
    `attention`: "matmul" (autopeft's, the CPU default) or "sdpa" (torch's; math kernel on
    CPU; the GPU default), None: `default_attention(device)`; the stored benchmark tables
    were trained with "sdpa". `device`: see `resolve_device`.
    """
    device = resolve_device(device)
    attention = attention or default_attention(device)
    fidelity = resolve_precision(fidelity, device)
    start = time.perf_counter()
    torch.manual_seed(fidelity.seed)
    tokenizer = tokenizer or load_tokenizer(model_name)
    train_split = (task.train if fidelity.train_examples is None
                   else task.train.subset(fidelity.train_examples, fidelity.seed))
    dev_split = task.dev if fidelity.dev_examples is None else task.dev.subset(fidelity.dev_examples, fidelity.seed)
    train_data = encode(train_split, tokenizer, fidelity.max_length)
    dev_data = encode(dev_split, tokenizer, fidelity.max_length)
    model, spec = build_model(model_name, task, config, fidelity.seed, attention)
    model.to(device)
    if not fidelity.dropout:
        disable_dropout(model)
    is_full = config == FULL_FINETUNE
    lr = fidelity.lr or (5e-5 if is_full else 1e-3)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(train_data) / fidelity.batch_size)
    total_steps = max(1, round(steps_per_epoch * fidelity.epochs))
    scheduler = linear_schedule_with_warmup(optimizer, int(fidelity.warmup_ratio * total_steps), total_steps)
    pad_id = tokenizer.pad_token_id

    lowest = 0 if is_full else config.active_layers[0]
    reuse = reuse_lower_layers and lowest > 0
    train_states = _states(model, lowest, train_data, pad_id, model_name, cache, fidelity.precision) if reuse else None
    dev_states = _states(model, lowest, dev_data, pad_id, model_name, cache, fidelity.precision) if reuse else None

    losses: list[float] = []
    window: list[float] = []
    bar = tqdm(total=total_steps, desc="train", unit="step", disable=not progress, leave=False)
    step, epoch = 0, 0
    model.train()
    set_lower_layers_eval(model, lowest)
    lower = skip_lower_layers(model, lowest, train_states) if reuse else nullcontext()
    with lower as feed, _sdpa_kernels(device, training=True):
        while step < total_steps:
            epoch_batches = batches(train_data, fidelity.batch_size, pad_id, shuffle=True, seed=fidelity.seed + epoch)
            for batch in _on(device, epoch_batches):
                check_interrupt()
                with _autocast(fidelity.precision, device):
                    loss = _loss(_logits(model, batch, feed), batch["labels"])
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss became {loss.item()} at step {step}; try a smaller --lr")
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                window.append(loss.item())
                step += 1
                if len(window) == 10 or step == total_steps:
                    losses.append(float(np.mean(window)))
                    window = []
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")
                bar.update(1)
                if step >= total_steps:
                    break
            epoch += 1
    bar.close()

    if not is_full:
        fold(model)
    with skip_lower_layers(model, lowest, dev_states) if reuse else nullcontext() as feed:
        metrics = evaluate(model, task, dev_data, pad_id, feed=feed, precision=fidelity.precision)
    report_metrics = None
    if report is not None:
        report_data = encode(report, tokenizer, fidelity.max_length)
        report_states = (_states(model, lowest, report_data, pad_id, model_name, cache, fidelity.precision)
                         if reuse else None)
        with skip_lower_layers(model, lowest, report_states) if reuse else nullcontext() as feed:
            report_metrics = evaluate(model, task, report_data, pad_id, feed=feed, precision=fidelity.precision)
    kept = trainable_params(model)
    result = TrainResult(
        metrics=metrics,
        score=metrics["score"],
        trainable_params=kept,
        percent=100.0 * kept / spec.backbone_params,
        wall_time_s=time.perf_counter() - start,
        loss_curve=losses,
        steps=step,
        report_metrics=report_metrics,
    )
    if out_dir is not None:
        _save(model, config, out_dir, model_name, task, fidelity, result)
    return result


def _save(model: nn.Module, config: PeftConfig | str, out_dir: str | Path, model_name: str, task: TaskData,
          fidelity: Fidelity, result: TrainResult) -> None:
    info = {"model": model_name, "task": task.spec.name, "label_names": list(task.spec.label_names),
            "fidelity": fidelity.to_dict(), "result": result.to_dict()}
    if config == FULL_FINETUNE:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        model.config.id2label = dict(enumerate(task.spec.label_names)) or model.config.id2label
        model.config.label2id = {name: i for i, name in model.config.id2label.items()}
        model.save_pretrained(Path(out_dir) / "model")
        (Path(out_dir) / CONFIG_FILE).write_text(json.dumps({"config": FULL_FINETUNE, **info}, indent=2))
    else:
        save_peft(model, config, out_dir, info)
