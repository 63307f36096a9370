"""LoRA r=8 trained two ways, side by side: Hugging Face peft + transformers.Trainer, and `autopeft train`.

The same data (the task's whole train split, scored on its whole dev split), epochs, learning
rate, batch size, max length, warmup and linear schedule, and seed for both; each run is a fresh
process, timed from launch to exit (imports, tokenizing and scoring included), and the two
alternate run by run so that load on the machine falls on both alike.

The peft side is what a user would write: `LoraConfig(r=8, lora_alpha=16, target_modules=
["query", "value"], lora_dropout=0.0)` (autopeft's LoRA scaling, alpha / r = 2, and no LoRA
dropout), the classifier and the pooler trained with it (`modules_to_save`, as autopeft trains
the head), the backbone's dropout on (as in autopeft's `full` preset), `DataCollatorWithPadding`
(dynamic padding), AdamW with weight decay 0, and Trainer's defaults otherwise.

Usage:
    python benchmarks/peft_side_by_side.py --task CoLA --repeats 3 --out benchmarks/results/peft_side_by_side.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EPOCHS, LR, BATCH, MAX_LENGTH, WARMUP = 3, 1e-3, 32, 128, 0.06  # autopeft's `full` preset, its PEFT lr


def trainer_run(task_name: str, seed: int, threads: int) -> dict:
    """Train and score with peft + Trainer in this process; returns the dev metrics and trainable parameters."""
    import numpy as np
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from autopeft.metrics import compute_metrics
    from autopeft.models import resolve_model
    from autopeft.tasks import load_task

    torch.set_num_threads(threads)
    task = load_task(task_name)
    path = resolve_model("minilm")
    tokenizer = AutoTokenizer.from_pretrained(path)
    regression = task.spec.kind == "regression"
    num_labels = 1 if regression else len(task.spec.label_names)

    def dataset(split) -> Dataset:
        texts = (split.text_a,) if split.text_b is None else (split.text_a, split.text_b)
        enc = tokenizer(*texts, truncation=True, max_length=MAX_LENGTH)
        labels = split.labels.astype(np.float32 if regression else np.int64).tolist()
        return Dataset.from_dict({**enc, "labels": labels})

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], lora_dropout=0.0,
                      modules_to_save=["classifier", "pooler"])
    model = get_peft_model(model, lora)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, num_train_epochs=EPOCHS, learning_rate=LR,
                                 per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
                                 warmup_steps=WARMUP, weight_decay=0.0, seed=seed, use_cpu=True,
                                 save_strategy="no", report_to="none", logging_strategy="no",
                                 disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=dataset(task.train),
                          data_collator=DataCollatorWithPadding(tokenizer))
        trainer.train()
        logits = trainer.predict(dataset(task.dev)).predictions
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"metrics": compute_metrics(task.spec, np.asarray(logits), task.dev.labels), "trainable_params": trainable}


def _timed(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="CoLA")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=10, help="seed of the first repeat (then +1, +2, ...)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/peft_side_by_side.json"))
    parser.add_argument("--trainer-run", action="store_true", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.trainer_run:
        print(json.dumps(trainer_run(args.task, args.seed, args.threads)))
        return

    from autopeft.models import load_model
    from autopeft.modules import model_spec

    n_layers = model_spec(load_model("minilm", 2)).n_layers
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "lora8.json"
        config.write_text(json.dumps({"lora_rank": 8, "layers": [1] * n_layers}))
        for i in range(args.repeats):
            seed = args.seed + i
            order = ("autopeft", "peft_trainer") if i % 2 == 0 else ("peft_trainer", "autopeft")
            for way in order:
                if way == "autopeft":
                    out = Path(tmp) / f"autopeft-{seed}"
                    wall, _ = _timed(["autopeft", "train", "--task", args.task, "--config", str(config), "--fidelity",
                                      "full", "--lr", str(LR), "--seed", str(seed), "--out", str(out)], env)
                    result = json.loads((out / "result.json").read_text())
                else:
                    wall, stdout = _timed([sys.executable, __file__, "--trainer-run", "--task", args.task,
                                           "--seed", str(seed), "--threads", str(args.threads)], env)
                    result = json.loads(stdout.strip().splitlines()[-1])
                metrics = result["metrics"]
                runs.append({"way": way, "seed": seed, "wall_s": wall, "score": metrics["score"], "metrics": metrics,
                             "trainable_params": result["trainable_params"]})
                print(f"{way:12s} seed {seed}: {metrics['score']:.2f} in {wall:.0f} s", flush=True)

    def stats(way: str) -> dict:
        mine = [r for r in runs if r["way"] == way]
        walls, scores = [r["wall_s"] for r in mine], [r["score"] for r in mine]
        return {"wall_min_s": min(walls), "wall_median_s": statistics.median(walls),
                "score_mean": statistics.mean(scores), "score_std": statistics.stdev(scores) if len(scores) > 1 else 0.0}

    summary = {"autopeft": stats("autopeft"), "peft_trainer": stats("peft_trainer")}
    pairs = [(a["wall_s"], b["wall_s"]) for a in runs if a["way"] == "peft_trainer"
             for b in runs if b["way"] == "autopeft" and b["seed"] == a["seed"]]
    ratios = [p / a for p, a in pairs]
    summary["speedup"] = {"min": min(ratios), "median": statistics.median(ratios)}  # peft+Trainer wall / autopeft wall
    result = {"task": args.task, "epochs": EPOCHS, "lr": LR, "batch_size": BATCH, "max_length": MAX_LENGTH,
              "threads": args.threads, "runs": runs, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
