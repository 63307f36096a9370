"""Export a trained run to the libraries users serve adapters with: Hugging Face PEFT and AdapterHub `adapters`.

PEFT represents autopeft's LoRA exactly: rank r on the query and value projections of the chosen
layers (`layers_to_transform`), alpha = 2r, no dropout, with the task head in `modules_to_save`.
Bottleneck adapters (SA, PA) have no PEFT counterpart. PEFT's prefix tuning is not exported either:
on BERT-style models it hands the prefix to the model as past keys and values, which shifts the
position embeddings of the input by the prefix length, so its logits differ from autopeft's
(the test `test_peft_prefix_tuning_shifts_positions` checks that this still holds).

`adapters` computes exactly what autopeft's SA, PA, PT and LoRA compute (each method's
`to_adapters`); a configuration with several becomes a `ConfigUnion`, except SA with PA, which
`adapters` refuses (one bottleneck per location). The export writes its save format directly,
because `adapters` pins an older transformers than autopeft's and cannot be installed beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from autopeft.errors import UserError
from autopeft.methods import METHODS
from autopeft.methods.base import Export
from autopeft.models import load_model, resolve_model
from autopeft.modules.arch import arch_map_for, get_submodule
from autopeft.modules.inject import WEIGHTS_FILE
from autopeft.space import PeftConfig
from autopeft.trained import load_trained, run_info
from autopeft.training import FULL_FINETUNE


def export_peft(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write `run_dir`'s module as a PEFT adapter folder (adapter_config.json, adapter_model.safetensors).

    Load it with ``PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base,
    num_labels=n), out_dir)``; `base` is recorded in adapter_config.json. A configuration of one
    method that PEFT represents exactly (`in_peft`; LoRA) is exported by that method's `to_peft`.
    """
    try:
        from peft import get_peft_model
    except ImportError:
        raise UserError("exporting to PEFT needs the 'peft' package: pip install peft") from None
    info = run_info(run_dir)
    if info["config"] == FULL_FINETUNE:
        raise UserError("a full fine-tuning run is a whole model, not an adapter: load it with load_trained")
    config = PeftConfig.from_dict(info["config"])
    methods = [METHODS[key] for key in config.modules_on]
    exportable = ", ".join(m.name for m in METHODS.values() if m.in_peft)
    if len(methods) != 1 or not methods[0].in_peft:
        raise UserError(f"PEFT export covers configurations of one method PEFT represents exactly ({exportable}); "
                        f"this run has {', '.join(m.name for m in methods) or 'no modules'} ({config.describe()}). "
                        "Export it with --format adapters, or load it with autopeft.load_trained")
    [method] = methods
    trained, _ = load_trained(run_dir)
    names = list(info.get("label_names") or [])
    base = load_model(info["model"], max(1, len(names)))
    head = {k: v for k, v in load_file(str(Path(run_dir) / WEIGHTS_FILE)).items() if not k.startswith("autopeft.")}
    base.load_state_dict(head, strict=False)  # the trained head goes into modules_to_save below
    export = _export(trained, config)
    peft_config, copy_weights = method.to_peft(export, config.size(method.key),
                                               modules_to_save=sorted({k.rsplit(".", 1)[0] for k in head}))
    model = get_peft_model(base, peft_config)
    copy_weights(get_submodule(model.base_model.model.base_model, export.arch.layers))
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    return out_dir


def _export(model, config: PeftConfig, name: str = "autopeft") -> Export:
    """What a method's `to_peft`/`to_adapters` read from a trained model (`load_trained`'s)."""
    return Export(modules=model.autopeft, arch=arch_map_for(model), active_layers=config.active_layers,
                  n_layers=len(config.layers), hidden_size=model.config.hidden_size, name=name,
                  base_prefix=model.base_model_prefix)


#: The `adapters` release whose save format `export_adapters` writes (and the export test loads with).
ADAPTERS_VERSION = "1.3.0"
#: Model families whose export is tested against `adapters` (module paths and the two-layer tanh head).
ADAPTERS_FAMILIES = ("bert",)


def export_adapters(run_dir: str | Path, out_dir: str | Path, name: str = "autopeft") -> Path:
    """Write `run_dir`'s modules and task head as an AdapterHub `adapters` adapter named `name`.

    Load it with ``model = adapters.AutoAdapterModel.from_pretrained(base); model.load_adapter(out_dir);
    model.set_active_adapters(name)``; `base` is recorded as `model_name` in adapter_config.json.
    """
    info = run_info(run_dir)
    if info["config"] == FULL_FINETUNE:
        raise UserError("a full fine-tuning run is a whole model, not an adapter: load it with load_trained")
    config = PeftConfig.from_dict(info["config"])
    methods = [METHODS[key] for key in config.modules_on]
    if not methods:
        raise UserError(f"this run has no PEFT modules ({config.describe()}); there is nothing to export")
    exportable = ", ".join(m.label for m in METHODS.values() if m.adapters_location is not None)
    missing = [m.name for m in methods if m.adapters_location is None]
    if missing:
        raise UserError(f"{', '.join(missing)} has no exact `adapters` counterpart; exportable: {exportable}")
    locations = [m.adapters_location for m in methods]
    clash = [m.label for m in methods if locations.count(m.adapters_location) > 1]
    if clash:
        raise UserError(f"{' and '.join(clash)} sit at the same place in a layer, and `adapters` allows one module "
                        f"there; export a configuration with at most one of them ({config.describe()} has both)")
    model, _ = load_trained(run_dir)
    family = model.config.model_type
    if family not in ADAPTERS_FAMILIES:
        raise UserError(f"export to `adapters` covers the {', '.join(ADAPTERS_FAMILIES)} families, not {family!r}; "
                        "export a LoRA-only run with --format peft, or load the run with autopeft.load_trained")
    export = _export(model, config, name)
    parts = [method.to_adapters(export, config.size(method.key)) for method in methods]
    adapter_config = parts[0][0] if len(parts) == 1 else {"architecture": "union", "configs": [c for c, _ in parts]}
    weights = {key: value.detach().clone() for _, part in parts for key, value in part.items()}
    first, second = _head_linears(model)
    names = list(info.get("label_names") or [])
    head_config = {"head_type": "classification", "num_labels": model.config.num_labels, "layers": 2,
                   "activation_function": "tanh", "use_pooler": False, "bias": True, "dropout_prob": None,
                   "label2id": {label: i for i, label in enumerate(names)} if names else None}
    # `adapters`' head is (dropout, linear, tanh, dropout, linear): the linears are layers 1 and 4
    head = {f"heads.{name}.{i}.{p}": getattr(layer, p).detach().clone()
            for i, layer in ((1, first), (4, second)) for p in ("weight", "bias")}
    model_class = f"{type(model).__name__.split('For')[0]}AdapterModel"
    meta = {"hidden_size": model.config.hidden_size, "model_class": model_class,
            "model_name": resolve_model(info["model"]), "model_type": family, "name": name,
            "version": f"adapters.{ADAPTERS_VERSION}"}
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "adapter_config.json").write_text(json.dumps({"config": adapter_config, **meta}, indent=2))
    (out_dir / "head_config.json").write_text(json.dumps({"config": head_config, **meta}, indent=2))
    torch.save(weights, out_dir / "pytorch_adapter.bin")
    torch.save(head, out_dir / "pytorch_model_head.bin")
    return out_dir


def _head_linears(model):
    """The two linear layers of the classification head of ADAPTERS_FAMILIES, tanh between them: the pooler's
    (trained with the head, ArchMap.trained_with_head) and the classifier."""
    return get_submodule(model.base_model, "pooler.dense"), model.classifier
