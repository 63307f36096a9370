"""A trial's first and second run in one fresh process on a CUDA GPU, with and without cuDNN attention.

PyTorch may pick cuDNN's SDPA kernel on Hopper GPUs; cuDNN builds a plan per new (query, key)
length pair, which a trial's length-grouped batches and its prefix length make many of.
autopeft excludes that kernel on GPUs (train._sdpa_kernels); --allow-cudnn puts it back for
the comparison. Run each variant in its own process (the plans are cached per process):

    python benchmarks/gpu_first_trial.py              # autopeft's kernels
    python benchmarks/gpu_first_trial.py --allow-cudnn
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext

import numpy as np

import autopeft.training as train
from autopeft.tasks import load_task
from autopeft.workflow import describe_model, make_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random configuration (0: trial_speed.py's first)")
    parser.add_argument("--allow-cudnn", action="store_true", help="let SDPA choose any kernel, cuDNN's included")
    args = parser.parse_args()
    device = train.resolve_device("cuda")
    if args.allow_cudnn:
        train._sdpa_kernels = lambda device, training: nullcontext()
    task = load_task("RTE")
    spec, tokenizer = describe_model(args.model, 2)
    config = make_space(spec).sample(np.random.default_rng(args.seed))
    low = train.fidelity_from("low")
    runs = [train.train_and_evaluate(args.model, task, config, low, progress=False, tokenizer=tokenizer, device=device)
            for _ in range(2)]
    print(f"{'cuDNN allowed' if args.allow_cudnn else 'autopeft kernels'}: {config.describe()}: "
          f"first run {runs[0].wall_time_s:.2f} s, second {runs[1].wall_time_s:.2f} s, "
          f"dev accuracy {runs[0].score:.2f} / {runs[1].score:.2f}")


if __name__ == "__main__":
    main()
