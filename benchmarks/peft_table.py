"""Issue-2 table: full fine-tuning and single/combined PEFT modules on a GLUE task.

Usage: python benchmarks/peft_table.py --task RTE [--epochs 3] [--precision bf16] [--threads 1] [--attention sdpa]

Each run's result is written to benchmarks/results/peft_table/<task>/<method>.json as it
finishes, and a finished run is not repeated, so the script can be stopped and resumed.
Prints a markdown table (method, trainable %, dev metrics, wall time) at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from autopeft import PeftConfig
from autopeft.frozen import open_states_cache
from autopeft.metrics import majority_baseline
from autopeft.modules import ATTENTIONS
from autopeft.tasks import load_task
from autopeft.training import fidelity_from, train_and_evaluate
from autopeft.workflow import baseline_configs, describe_model

OUT = Path(__file__).resolve().parent / "results" / "peft_table"


def methods(spec) -> dict[str, PeftConfig | str]:
    """The issue's rows: the standard baselines of `baseline_configs` (bottleneck and prefix
    hidden/16, LoRA rank 8, all layers), and SA+PA+PT at the same size."""
    d, base = max(1, spec.hidden_size // 16), baseline_configs(spec)
    return {
        "full fine-tuning": base["full fine-tuning"],
        f"SA (D={d})": base[f"SA{d}"],
        f"PA (D={d})": base[f"PA{d}"],
        f"PT (L={d})": base[f"PT{d}"],
        "LoRA (r=8)": base["LoRA8"],
        f"SA+PA+PT ({d},{d},{d})": PeftConfig(serial_adapter=d, parallel_adapter=d, prefix_length=d,
                                               layers=(1,) * spec.n_layers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="RTE")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--epochs", type=float, default=None, help="default: the 'full' preset")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 lets two tasks run side by side)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attention", default="matmul", choices=sorted(ATTENTIONS),
                        help="training attention (the stored results were trained with sdpa)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = load_task(args.task)
    fidelity = fidelity_from("full", epochs=args.epochs, precision=args.precision, seed=args.seed)
    spec, tokenizer = describe_model(args.model, task.spec.num_labels)
    out = OUT / task.spec.name
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, config in methods(spec).items():
        path = out / (name.split(" (")[0].replace(" ", "_").replace("+", "_") + ".json")
        if path.is_file():
            rows.append(json.loads(path.read_text()))
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {task.spec.name}: {name} ...", flush=True)
        result = train_and_evaluate(args.model, task, config, fidelity, progress=False, tokenizer=tokenizer,
                                    attention=args.attention, cache=open_states_cache(None))
        row = {"method": name, "task": task.spec.name, **result.to_dict(), "fidelity": fidelity.to_dict(),
               "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
        path.write_text(json.dumps(row, indent=2))
        print(f"    {result.metrics} {result.percent:.3f}% {result.wall_time_s:.0f}s", flush=True)
        rows.append(row)
    base = majority_baseline(task.spec, task.train.labels, task.dev.labels)
    keys = [k for k in rows[0]["metrics"] if k != "score"]
    print(f"\n{task.spec.name} (dev, {len(task.dev)} examples); majority baseline: "
          + ", ".join(f"{k} {base[k]:.1f}" for k in keys))
    print("| method | trainable % | " + " | ".join(keys) + " | wall time (s) |")
    print("|---|---:|" + "---:|" * len(keys) + "---:|")
    for r in rows:
        print(f"| {r['method']} | {r['percent']:.3f} | " + " | ".join(f"{r['metrics'][k]:.1f}" for k in keys)
              + f" | {r['wall_time_s']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
