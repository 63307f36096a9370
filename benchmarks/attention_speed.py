"""Training-step time of autopeft's two attention implementations, side by side.

For random configurations of the default MiniLM space, one model per configuration trains
(forward + backward, the low preset's precision on this machine, no dropout, as in a low-fidelity trial) on the first
`--batches` length-grouped RTE training batches, switching between "sdpa" (torch's SDPA,
math kernel) and "matmul" (autopeft's default) on the same model, alternately, `--repeats`
times. The lower layers are not skipped, so every layer's attention runs in every step.
Prints, per configuration, the min and median time of each implementation and the ratio
sdpa/matmul of the minima.

Usage: python benchmarks/attention_speed.py [--configs 5] [--batches 6] [--repeats 5] [--seed 0] [--model minilm]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from autopeft.modules import ATTENTIONS, attention_implementation
from autopeft.tasks import load_task
from autopeft.training import (_autocast, _logits, _loss, _sdpa_kernels, batches, build_model, disable_dropout, encode,
                            fidelity_from)
from autopeft.workflow import describe_model, make_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="minilm", help="a model name or local folder (tests use a tiny one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = load_task("RTE")
    spec, tokenizer = describe_model(args.model, 2)
    space = make_space(spec)
    fidelity = fidelity_from("low", device="cpu")  # the precision of a low trial on this CPU
    data = encode(task.train.subset(fidelity.train_examples, fidelity.seed), tokenizer, fidelity.max_length)
    steps = list(batches(data, fidelity.batch_size, tokenizer.pad_token_id, shuffle=True, seed=fidelity.seed))[: args.batches]
    print(f"{len(steps)} batches of widths {[b['input_ids'].shape[1] for b in steps]}; one torch thread; "
          f"{fidelity.precision}")
    rng = np.random.default_rng(args.seed)
    cpu = torch.device("cpu")
    ratios = []
    for _ in range(args.configs):
        config = space.sample(rng)
        model, _ = build_model(args.model, task, config, fidelity.seed)
        disable_dropout(model)
        model.train()
        times: dict[str, list[float]] = {name: [] for name in ATTENTIONS}
        with _sdpa_kernels(cpu, training=True):
            for _ in range(args.repeats):
                for name in ATTENTIONS:
                    model.set_attn_implementation(attention_implementation(name))
                    start = time.perf_counter()
                    for batch in steps:
                        with _autocast(fidelity.precision, cpu):
                            loss = _loss(_logits(model, batch), batch["labels"])
                        loss.backward()
                        model.zero_grad(set_to_none=True)
                    times[name].append(time.perf_counter() - start)
        ratio = min(times["sdpa"]) / min(times["matmul"])
        ratios.append(ratio)
        cells = "  ".join(f"{n} min {min(t):.2f} s median {np.median(t):.2f} s" for n, t in times.items())
        print(f"{config.describe():<44} {cells}  sdpa/matmul {ratio:.2f}", flush=True)
    print(f"\nsdpa/matmul (ratio of minima) over {len(ratios)} configurations: min {min(ratios):.2f}, "
          f"median {np.median(ratios):.2f}, max {max(ratios):.2f}")


if __name__ == "__main__":
    main()
