"""Export a trained run to Hugging Face PEFT, so serving code that loads PEFT adapters can use it.

PEFT represents autopeft's LoRA exactly: rank r on the query and value projections of the chosen
layers (`layers_to_transform`), alpha = 2r, no dropout, with the task head in `modules_to_save`.
Bottleneck adapters (SA, PA) have no PEFT counterpart, and prefix tuning is not exported yet:
both are refused with a message naming what can be exported.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from autopeft.errors import UserError
from autopeft.methods import METHODS
from autopeft.models import load_model
from autopeft.modules.arch import arch_map_for, get_submodule
from autopeft.modules.inject import WEIGHTS_FILE
from autopeft.space import PeftConfig
from autopeft.trained import run_info
from autopeft.training import FULL_FINETUNE


def export_peft(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write `run_dir`'s LoRA as a PEFT adapter folder (adapter_config.json, adapter_model.safetensors).

    Load it with ``PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base,
    num_labels=n), out_dir)``; `base` is recorded in adapter_config.json.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UserError("exporting to PEFT needs the 'peft' package: pip install peft") from None
    info = run_info(run_dir)
    if info["config"] == FULL_FINETUNE:
        raise UserError("a full fine-tuning run is a whole model, not an adapter: load it with load_trained")
    config = PeftConfig.from_dict(info["config"])
    others = [METHODS[key].name for key in config.modules_on if key != "lora_rank"]
    if others or not config.lora_rank:
        raise UserError(f"PEFT export covers LoRA-only configurations; this run has {', '.join(others) or 'no LoRA'} "
                        f"({config.describe()}). Use autopeft.trained.load_trained for it")
    names = list(info.get("label_names") or [])
    base = load_model(info["model"], max(1, len(names)))
    arch = arch_map_for(base)
    trained = load_file(str(Path(run_dir) / WEIGHTS_FILE))
    head = {k: v for k, v in trained.items() if not k.startswith("autopeft.")}
    base.load_state_dict(head, strict=False)  # the trained head goes into modules_to_save below
    head_modules = sorted({k.rsplit(".", 1)[0] for k in head})
    rank = config.lora_rank
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none",
                      target_modules=[arch.query, arch.value], layers_to_transform=list(config.active_layers),
                      modules_to_save=head_modules)
    model = get_peft_model(base, lora)
    layers = get_submodule(model.base_model.model.base_model, arch.layers)
    for i in config.active_layers:
        for kind, path in (("q", arch.query), ("v", arch.value)):
            target = get_submodule(layers[i], path)
            target.lora_A["default"].weight.data.copy_(trained[f"autopeft.lora_{kind}_{i}.A.weight"])
            target.lora_B["default"].weight.data.copy_(trained[f"autopeft.lora_{kind}_{i}.B.weight"])
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    return out_dir
