"""LoRA: a low-rank update `2 * B(A(x))` added to the query and value projections (Hu et al. 2022)."""

from __future__ import annotations

from typing import Any

from autopeft.methods.base import Export, Injection, PeftMethod


class LoRA(PeftMethod):
    key = "lora_rank"
    label = "LoRA"
    name = "LoRA"
    in_paper_space = False
    # In the default space, beside the paper's three methods: it is the module users most often pick
    # by hand, and the search's answer is compared with it (`--no-lora`: the paper's exact space).

    def default_sizes(self, hidden_size: int) -> tuple[int, ...]:
        """0 and the powers of two from 1 to min(64, hidden/4): the ranks LoRA is used with (8 included)."""
        return (0, *(2**k for k in range(7) if 2**k <= max(1, hidden_size // 4)))

    def baseline_size(self, hidden_size: int) -> int:
        return 8

    def params_per_layer(self, spec, size: int) -> int:
        h = spec.hidden_size
        return size * (h + spec.q_dim) + size * (h + spec.kv_dim)  # A and B on query and value

    def attach(self, injection: Injection, index: int, slot: int, size: int) -> None:
        from autopeft.modules.arch import get_submodule
        from autopeft.modules.layers import LoRA as LoRALayer

        for kind, path in (("q", injection.arch.query), ("v", injection.arch.value)):
            projection = get_submodule(injection.layers[index], path)
            lora = LoRALayer(projection.in_features, projection.out_features, size)
            injection.modules[f"lora_{kind}_{index}"] = lora
            projection.register_forward_hook(lambda _m, args, out, lora=lora: out + lora(args[0]))

    in_peft = True

    def to_peft(self, export: Export, size: int, modules_to_save: list[str]) -> tuple[Any, Any]:
        from peft import LoraConfig

        from autopeft.modules.arch import get_submodule

        paths = {"q": export.arch.query, "v": export.arch.value}
        config = LoraConfig(r=size, lora_alpha=2 * size, lora_dropout=0.0, bias="none",
                            target_modules=list(paths.values()), layers_to_transform=list(export.active_layers),
                            modules_to_save=modules_to_save)

        def copy_weights(layers) -> None:
            for i in export.active_layers:
                for kind, path in paths.items():
                    target, trained = get_submodule(layers[i], path), export.modules[f"lora_{kind}_{i}"]
                    target.lora_A["default"].weight.data.copy_(trained.A.weight)
                    target.lora_B["default"].weight.data.copy_(trained.B.weight)

        return config, copy_weights

    adapters_location = "attention_lora"

    def to_adapters(self, export: Export, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
        config = {"architecture": "lora", "selfattn_lora": True, "intermediate_lora": False, "output_lora": False,
                  "r": size, "alpha": 2 * size, "dropout": 0.0, "attn_matrices": ["q", "v"], "composition_mode": "add",
                  "use_gating": False, "leave_out": export.leave_out}
        weights = {}
        for i in export.active_layers:
            for kind, path in (("q", export.arch.query), ("v", export.arch.value)):
                lora, key = export.modules[f"lora_{kind}_{i}"], f"{export.key(i, path)}.loras.{export.name}"
                weights |= {f"{key}.lora_A": lora.A.weight, f"{key}.lora_B": lora.B.weight}
        return config, weights
