"""Issue-4 trial speed: the plain per-trial loop against autopeft's trial, side by side.

plain  = `plain_trial`, a standard fine-tuning loop written here: the tokenizer pads every
         example to 128 tokens, a shuffled DataLoader, full forward every step, fp32, the
         model's dropout on, torch's SDPA attention with its math kernel (SDPA's default CPU
         kernel would be slower still, see training.py), the same optimiser and schedule;
fast   = the default low-fidelity trial: padding to the longest in the batch, length grouping,
         lower-layer states computed once and reused (cache shared across trials), the low preset's
         precision (bf16 where the CPU computes it natively, else fp32), no backbone dropout,
         autopeft's matmul attention (see modules/inject.py).
Both train the same random configurations of the default space on the same RTE subset
(the 'low' preset: 640 examples, 2 epochs). For each configuration the two runs follow each
other, so they see the same machine load; with --repeats N the pair runs N times, alternately,
and each path's time is its minimum over the repeats (the load of a shared machine only ever
adds time). Prints per-config times, the ratio plain/fast (min / median over configurations)
and both dev scores (the same in every repeat: training is seeded).

On a GPU (--device cuda) both paths use SDPA's fused kernels (autopeft's default there).

Usage: python benchmarks/trial_speed.py [--configs 10] [--seed 0] [--threads N] [--repeats 1] [--fp32-check]
       [--device auto|cpu|cuda] [--out results/trial_speed.json]
(--fp32-check also trains each configuration on the fast path in fp32, to compare scores.)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from autopeft.frozen import StatesCache
from autopeft.modules import fold
from autopeft.tasks import load_task
from autopeft.training import (_loss, _sdpa_kernels, build_model, encode, evaluate, fidelity_from,
                               linear_schedule_with_warmup, resolve_device, train_and_evaluate)
from autopeft.workflow import describe_model, make_space


def plain_trial(model_name: str, task, config, fidelity, tokenizer, device: torch.device) -> SimpleNamespace:
    """Train and score `config` as a plain loop would: wall_time_s and score, as `train_and_evaluate` gives."""
    start = time.perf_counter()
    torch.manual_seed(fidelity.seed)
    train = task.train.subset(fidelity.train_examples, fidelity.seed)
    dev = task.dev.subset(fidelity.dev_examples, fidelity.seed) if fidelity.dev_examples else task.dev
    model, _ = build_model(model_name, task, config, fidelity.seed, "sdpa")
    model.to(device).train()
    enc = tokenizer(train.text_a, train.text_b, truncation=True, max_length=fidelity.max_length,
                    padding="max_length", return_tensors="pt")
    labels = torch.as_tensor(train.labels)  # _loss casts them for the task's kind
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    loader = DataLoader(TensorDataset(*(enc[k] for k in names), labels), batch_size=fidelity.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(fidelity.seed))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=fidelity.lr or 1e-3, weight_decay=0.0)
    total = max(1, round(len(loader) * fidelity.epochs))
    schedule = linear_schedule_with_warmup(optimizer, int(fidelity.warmup_ratio * total), total)
    step = 0
    with _sdpa_kernels(device, training=True):
        while step < total:
            for *inputs, y in loader:
                out = model(**{k: v.to(device) for k, v in zip(names, inputs)}).logits
                _loss(out, y.to(device)).backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step >= total:
                    break
    fold(model)
    metrics = evaluate(model, task, encode(dev, tokenizer, fidelity.max_length), tokenizer.pad_token_id)
    return SimpleNamespace(wall_time_s=time.perf_counter() - start, score=metrics["score"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1, help="plain/fast pairs per configuration (min time kept)")
    parser.add_argument("--fp32-check", action="store_true")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (see autopeft.training.resolve_device)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "trial_speed.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    task = load_task("RTE")
    spec, tokenizer = describe_model(args.model, 2)
    space = make_space(spec)
    rng = np.random.default_rng(args.seed)
    fast_fidelity = fidelity_from("low")
    plain_fidelity = replace(fast_fidelity, precision="fp32", dropout=True)
    cache = StatesCache()
    rows = []
    print(f"{'configuration':<44} {'plain s':>8} {'fast s':>8} {'ratio':>6} {'plain acc':>9} {'fast acc':>9} {'fp32-fast acc':>13}")
    for _ in range(args.configs):
        config = space.sample(rng)
        plains, fasts = [], []
        for _ in range(args.repeats):
            plains.append(plain_trial(args.model, task, config, plain_fidelity, tokenizer, device))
            fasts.append(train_and_evaluate(args.model, task, config, fast_fidelity, progress=False, tokenizer=tokenizer,
                                            cache=cache, device=device))
        plain, fast = (min(runs, key=lambda r: r.wall_time_s) for runs in (plains, fasts))
        # The same fast path in fp32: isolates the effect of bf16 (where the preset uses it) on the score.
        fast32 = (train_and_evaluate(args.model, task, config, replace(fast_fidelity, precision="fp32"), progress=False,
                                     tokenizer=tokenizer, cache=cache, device=device) if args.fp32_check else None)
        row = {"config": config.to_dict(), "describe": config.describe(), "plain_s": plain.wall_time_s,
               "fast_s": fast.wall_time_s, "fast_fp32_s": fast32 and fast32.wall_time_s, "plain_score": plain.score,
               "fast_score": fast.score, "fast_fp32_score": fast32 and fast32.score,
               "plain_all_s": [r.wall_time_s for r in plains], "fast_all_s": [r.wall_time_s for r in fasts],
               "same_scores_in_repeats": all(r.score == runs[0].score for runs in (plains, fasts) for r in runs)}
        rows.append(row)
        print(f"{config.describe()[:44]:<44} {plain.wall_time_s:>8.1f} {fast.wall_time_s:>8.1f} "
              f"{plain.wall_time_s / fast.wall_time_s:>6.2f} {plain.score:>9.2f} {fast.score:>9.2f} {fast32.score if fast32 else float('nan'):>13.2f}",
              flush=True)
    ratios = np.array([r["plain_s"] / r["fast_s"] for r in rows])
    print(f"\nspeed-up plain/fast over {len(rows)} configurations: min {ratios.min():.2f}x, median {np.median(ratios):.2f}x")
    for key in ("plain_score", "fast_score", *(["fast_fp32_score"] if args.fp32_check else [])):
        print(f"mean dev accuracy {key}: {np.mean([r[key] for r in rows]):.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
