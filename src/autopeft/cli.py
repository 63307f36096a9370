"""The `autopeft` command: train | search | worker | retrain | transfer | report | export | predict | evaluate."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from autopeft import log
from autopeft.errors import SettingError, UserError, disk_full_error, disk_full_reported, interrupts_recorded

#: The flag of each library parameter a SettingError may name.
FLAGS = {"budget": "--budget", "batch": "--batch", "heartbeat": "--heartbeat", "out_dir": "--out", "seeds": "--seeds",
         "retrain_seeds": "--seeds", "promote": "--promote", "target": "--target", "baselines": "--baselines",
         "empty_text": "--empty-text", "sampler.name": "--sampler", "sampler.n_init": "--init",
         "sampler.seed": "--search-seed", "sampler.nuts": "--nuts 'warmup,samples,thinning'",
         "sampler.percent_scale": "--percent-scale", "sampler.replicates": "--replicates",
         "sampler.calibration_pairs": "--calibration-pairs", "sampler.ref_point": "--ref-point",
         # the Fidelity fields it checks that have a flag (--precision's choices are argparse's)
         **{f"fidelity.{name}": f"--{name.replace('_', '-')}" for name in (
             "train_examples", "dev_examples", "epochs", "max_length", "batch_size", "lr")}}
PRECISION_CHOICES = ("fp32", "bf16", "auto")  # training.PRECISIONS, without importing torch at start-up


def _add_task_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("task")
    g.add_argument("--task", default="RTE",
                   help="GLUE task (RTE, MRPC, STS-B, CoLA, SST-2, WNLI), a train CSV/TSV/JSONL/parquet file, a "
                   "folder written by datasets' save_to_disk, or hf:NAME[:CONFIG] (the hub; online only)")
    g.add_argument("--train-split", default="train", help="datasets tasks: the training split")
    g.add_argument("--dev-split", default="validation", help="datasets tasks: the split scored as dev")
    g.add_argument("--dev", help="dev file for a file task (a search chooses configurations on it)")
    g.add_argument("--test", help="file tasks: a test file, the split a search reports its answer on (without it "
                   "the answer is scored on --dev, which also chose it)")
    g.add_argument("--text-a", default="text", help="column of the first text (file tasks)")
    g.add_argument("--text-b", help="column of the optional second text (file tasks)")
    g.add_argument("--label", default="label", help="label column (file tasks)")
    g.add_argument("--regression", action="store_true", help="file task with a numeric target")
    g.add_argument("--metric", choices=["accuracy", "f1", "mcc", "pearson", "spearman", "pearson_spearman"],
                   help="file tasks: the score the search ranks by (default: accuracy; regression: pearson_spearman)")
    g.add_argument("--name", help="file tasks: the name in titles and tables (default: the folder's name for "
                   "train.*, else the file's stem)")
    g.add_argument("--empty-text", choices=["keep", "drop"],
                   help="file tasks: keep (default) or drop the examples whose text is empty; either way a "
                   "warning gives their count and first line")
    g.add_argument("--data-dir", help="folder with <TASK>/{train,dev}.tsv GLUE files "
                   "(default: packaged copies, then ../shared/data/glue)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="minilm",
                   help="'minilm' (embedded all-MiniLM-L6-v2), a local model folder, or a hub id")


def _add_fidelity_args(p: argparse.ArgumentParser, default: str, auto: bool = False) -> None:
    g = p.add_argument_group("fidelity (defaults: the preset; see `autopeft.training.FIDELITIES`)")
    g.add_argument("--fidelity", default=default, choices=["low", "full", *(["auto"] if auto else [])],
                   help=f"preset (default {default})" + ("; auto: from low, more examples and epochs until the "
                   "configurations explain half of the score variance and beat the constant predictor by 5 points "
                   "(autopeft.calibrate)" if auto else ""))
    g.add_argument("--train-examples", type=_count_or_fraction, help="train examples: a count, or a fraction in (0,1]")
    g.add_argument("--dev-examples", type=_count_or_fraction, help="dev examples: a count, or a fraction in (0,1]")
    g.add_argument("--epochs", type=float)
    g.add_argument("--max-length", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--precision", choices=PRECISION_CHOICES,
                   help="bf16 = bfloat16 autocast; auto (preset low) = bf16 where the device computes it natively")
    g.add_argument("--dropout", action=argparse.BooleanOptionalAction, default=None,
                   help="the backbone's dropout during training (preset: off for low, on for full)")


def _add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="where trials train: auto (default: the GPU when PyTorch sees one, else the CPU), "
                   "cpu, cuda, cuda:N")


def _add_states_cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--states-cache", metavar="DIR",
                   help="also keep the frozen lower layers' outputs in DIR, shared by workers and later runs "
                   "(default: in memory only; see autopeft.frozen.StatesCache)")


def _count_or_fraction(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}") from None
    return int(value) if value.is_integer() and value > 1 else value


def _fidelity(args: argparse.Namespace):
    """The fidelity the options ask for; with --fidelity auto, the base the calibration climbs from."""
    from autopeft.training import fidelity_from

    if args.fidelity == "auto" and (args.train_examples is not None or args.epochs is not None):
        raise UserError("--fidelity auto chooses the train examples and epochs itself; drop --train-examples/--epochs, "
                        "or give a preset (low, full) with them")
    return fidelity_from("low" if args.fidelity == "auto" else args.fidelity, getattr(args, "device", "auto"),
                         **_fidelity_overrides(args))


def _task_source(args: argparse.Namespace):
    """The `TaskSource` the task flags name: a GLUE name (+ data dir), a file task or a `datasets` task."""
    from autopeft.tasks import TaskSource, resolve_glue_name

    columns = {"text_a": args.text_a, "text_b": args.text_b, "label": args.label,
               "kind": "regression" if args.regression else "classification",
               **({"primary_metric": args.metric} if args.metric else {}),
               **({"empty_text": args.empty_text} if args.empty_text else {})}
    saved = (Path(args.task) / "dataset_dict.json").is_file()  # a folder written by DatasetDict.save_to_disk
    if getattr(args, "test", None) and (args.task.startswith("hf:") or saved or not Path(args.task).suffix):
        raise UserError("--test is for file tasks; GLUE and datasets tasks report on their dev split and choose on "
                        "a split held out of train")
    if args.task.startswith("hf:") or saved:
        return TaskSource.of({"name": args.name, "datasets": args.task, "train_split": args.train_split,
                              "dev_split": args.dev_split, **columns})
    if resolve_glue_name(args.task) is not None or not Path(args.task).suffix:
        for flag, value in (("--metric", args.metric), ("--name", args.name), ("--empty-text", args.empty_text)):
            if value is not None:
                raise UserError(f"{flag} is for file tasks; GLUE task {args.task} keeps its standard data, metric "
                                "and name")
        return TaskSource(args.task, {"data_dir": args.data_dir})  # an unknown name fails with the known list
    if not args.dev:
        raise UserError(f"file task {args.task} needs --dev with the dev file")
    test = {"test_path": args.test} if getattr(args, "test", None) else {}
    return TaskSource.of({"name": args.name, "train_path": args.task, "dev_path": args.dev, **columns, **test})


def _task(args: argparse.Namespace):
    return _task_source(args).load()


def _writable_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".autopeft-write-test-{os.getpid()}"  # several workers may start at once
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        if (full := disk_full_error(exc, f"the output folder {out}")) is not None:
            raise full from exc
        raise UserError(f"output folder {out} cannot be written ({exc.strerror}); choose another --out") from None
    return out


def cmd_train(args: argparse.Namespace) -> None:
    from autopeft.frozen import open_states_cache
    from autopeft.report import plot_loss_curve
    from autopeft.space import PeftConfig
    from autopeft.training import FULL_FINETUNE, train_and_evaluate

    out = _writable_dir(args.out)
    config = FULL_FINETUNE if args.config == FULL_FINETUNE else PeftConfig.from_json_file(args.config)
    task, fidelity = _task(args), _fidelity(args)
    name = config if isinstance(config, str) else config.describe()
    print(f"training {name} on {task.spec.name} ({len(task.train)} train / {len(task.dev)} dev) with {args.model}")
    cache = open_states_cache(args.states_cache)
    with disk_full_reported(f"the trained run in {out}", rerun="run the same command again"):
        result = train_and_evaluate(args.model, task, config, fidelity, out_dir=out, cache=cache, device=args.device,
                                    progress=not args.quiet)
        (out / "result.json").write_text(json.dumps(
            {"config": config if isinstance(config, str) else config.to_dict(), "task": task.spec.name,
             "model": args.model, "fidelity": fidelity.to_dict(), **result.to_dict()}, indent=2))
        plot_loss_curve(result.loss_curve, out / "loss.png", title=f"{name} on {task.spec.name}")
    metrics = ", ".join(f"{k} {v:.2f}" for k, v in result.metrics.items() if k != "score")
    print(f"dev {task.spec.primary_metric}: {result.score:.2f} ({metrics})")
    print(f"trainable parameters: {result.trainable_params:,} "
          f"({result.percent:.3f}% of the backbone; prefix counted folded)")
    print(f"wall time: {result.wall_time_s:.1f} s, {result.steps} steps, final loss {result.loss_curve[-1]:.4f}")
    print(f"saved: {out}/result.json, {out}/loss.png and the trained weights")


def cmd_search(args: argparse.Namespace) -> None:
    from autopeft.search.samplers import SamplerSettings
    from autopeft.workflow import SearchSettings, search

    sampler = SamplerSettings(**_given(name=args.sampler, n_init=args.init, seed=args.search_seed,
                                       nuts=_nuts(args.nuts), percent_scale=args.percent_scale,
                                       replicates=args.replicates, calibration_pairs=args.calibration_pairs,
                                       ref_point=_ref_point(args.ref_point)))
    settings = SearchSettings(
        model=args.model, task=_task(args), fidelity=_fidelity(args), out_dir=_writable_dir(args.out),
        sampler=sampler, storage=args.storage, study_name=args.study, heartbeat=args.heartbeat, space_file=args.space,
        lora=args.lora, progress=not args.quiet, task_source=_task_source(args), baselines=args.baselines,
        states_cache=args.states_cache, fidelity_auto=args.fidelity == "auto", device=args.device,
        promote=args.promote, target=_target(args),
        **_given(budget=args.budget, batch=args.batch, retrain_top=args.retrain, retrain_seeds=args.seeds),
    )
    _print_report(search(settings))


def _given(**values: Any) -> dict[str, Any]:
    """The flags the user gave (not None): the others keep the library's defaults."""
    return {k: v for k, v in values.items() if v is not None}


def _nuts(text: str | None) -> tuple[int, int, int] | None:
    """--nuts: 'map' (None, the default), or the NUTS settings 'warmup,samples,thinning'."""
    if text is None or text == "map":
        return None
    try:
        warmup, samples, thinning = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--nuts must be 'warmup,samples,thinning' (e.g. 256,128,16) or 'map', got {text!r}") from None
    return warmup, samples, thinning


def _target(args: argparse.Namespace):
    """--target: a preset name, or EXAMPLESxEPOCHS (the search fidelity with those examples and epochs); None when
    not given."""
    from dataclasses import replace

    from autopeft.training import FIDELITIES, fidelity_from

    text = args.target
    if text is None:
        return None
    if text in FIDELITIES:
        return fidelity_from(text, device=args.device)
    try:
        examples, epochs = text.lower().split("x")
        return replace(_fidelity(args), train_examples=int(examples), epochs=float(epochs))
    except (ValueError, SettingError):  # a SettingError here would name --train-examples or --epochs
        raise UserError(f"--target must be a preset ({', '.join(FIDELITIES)}) or EXAMPLESxEPOCHS such as 2400x3, "
                        f"both positive, got {text!r}") from None


def _print_report(result) -> None:
    from autopeft.workflow import report_text

    print(report_text(result.study))
    print(f"report: {', '.join(str(p) for p in result.paths.values())}")


def _ref_point(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        score, percent = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--ref-point must be 'SCORE,PERCENT' (e.g. 50,10), got {text!r}") from None
    return score, percent  # its values are checked by SamplerSettings


def cmd_worker(args: argparse.Namespace) -> None:
    cmd_search(args)


def cmd_retrain(args: argparse.Namespace) -> None:
    from autopeft.workflow import retrain_front

    retrain_front(args.out, storage=args.storage, study_name=args.study, top=args.top, seeds=args.seeds,
                  fidelity_overrides=_fidelity_overrides(args), device=args.device, progress=not args.quiet)


def cmd_transfer(args: argparse.Namespace) -> None:
    from autopeft.workflow import transfer

    start, task, out_dir = time.perf_counter(), _task(args), _writable_dir(args.out)
    with disk_full_reported(f"the transfer folder {out_dir}"):
        rows = transfer(source_dir=args.from_dir, storage=args.storage, study_name=args.study, task=task,
                        out_dir=out_dir, top=args.top, seeds=args.seeds, fidelity=_fidelity(args), model=args.model,
                        device=args.device, progress=not args.quiet)
    metric = task.spec.primary_metric
    print(f"{'configuration':<58} {'%params':>8} {metric:>10}  (mean ± std over {args.seeds} seed(s))")
    for r in rows:
        print(f"{r['name'][:58]:<58} {r['percent']:>8.3f} {r['score']:>6.2f} ± {r['std']:.2f}")
    print(f"transfer took {time.perf_counter() - start:.0f} s; "
          f"results: {out_dir}/transfer.json, {out_dir}/transfer.png")


def cmd_report(args: argparse.Namespace) -> None:
    from autopeft.workflow import report

    _print_report(report(args.out, storage=args.storage, study_name=args.study))


def cmd_export(args: argparse.Namespace) -> None:
    if args.format in ("peft", "adapters"):
        from autopeft.export import export_adapters, export_peft

        if args.pick is not None:
            raise UserError(f"--format {args.format} exports a trained run (the --out of `autopeft train`), not a "
                            "study row; drop --pick")
        if args.format == "peft":
            written = export_peft(args.out, _writable_dir(args.to))
            print(f"wrote a PEFT adapter to {written}; load it with peft.PeftModel.from_pretrained("
                  f"AutoModelForSequenceClassification.from_pretrained(base, num_labels=N), '{written}')")
        else:
            written = export_adapters(args.out, _writable_dir(args.to))
            print(f"wrote an AdapterHub adapter with its head to {written}; load it with model = adapters."
                  f"AutoAdapterModel.from_pretrained(base); model.set_active_adapters(model.load_adapter('{written}'))")
        return
    from autopeft.workflow import export

    if args.pick is None:
        raise UserError("--pick K is needed: the row of the front table to write as a configuration file")
    written = export(args.out, pick=args.pick, path=args.to, storage=args.storage, study_name=args.study)
    print(f"wrote {written}; train it with: autopeft train --config {written} --out DIR")


def cmd_predict(args: argparse.Namespace) -> None:
    import csv

    from autopeft.tasks import read_texts
    from autopeft.trained import predict

    text_a, text_b = read_texts(args.input, args.text_a, args.text_b)
    result = predict(args.run, text_a, text_b, progress=not args.quiet)
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as f:
            writer = csv.writer(f)
            if "value" in result:
                writer.writerow(["value"])
                writer.writerows([f"{v:.6g}"] for v in result["value"])
            else:
                writer.writerow(["label", *(f"p_{name}" for name in result["label_names"])])
                for label, probs in zip(result["label"], result["probabilities"]):
                    writer.writerow([label, *(f"{p:.6f}" for p in probs)])
    except OSError as exc:
        raise UserError(f"cannot write {out} ({exc.strerror}); choose another --out") from None
    print(f"wrote {len(text_a)} prediction(s) to {out}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from autopeft.trained import evaluate_trained

    task = _task(args)
    metrics = evaluate_trained(args.run, task)
    print(f"{task.spec.name} dev ({len(task.dev)} examples): "
          + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))


def _fidelity_overrides(args: argparse.Namespace) -> dict:
    keys = ("train_examples", "dev_examples", "epochs", "max_length", "batch_size", "lr", "seed", "precision",
            "dropout")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _add_study_args(p: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        p.add_argument("out", metavar="STUDY_DIR",
                       help="the --out folder of a search (holds study.db, reports, weights)")
    else:
        p.add_argument("--out", required=True, help="study folder (holds study.db by default, reports, weights)")
    p.add_argument("--storage",
                   help="Optuna storage: sqlite:///file.db, postgresql://..., mysql://..., or a journal file *.log")
    p.add_argument("--study", default="autopeft", help="study name inside the storage (default autopeft)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autopeft", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train and evaluate one configuration")
    _add_model_args(p)
    _add_task_args(p)
    p.add_argument("--config", required=True, help="configuration JSON file, or 'full' for full fine-tuning")
    p.add_argument("--out", required=True, help="folder for result.json, loss.png and the trained weights")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_fidelity_args(p, default="full")
    _add_states_cache_arg(p)
    _add_device_arg(p)
    p.set_defaults(func=cmd_train)

    for name, helptext in (("search", "multi-objective search for the Pareto front"),
                           ("worker", "one more worker on an existing study (same options as search)")):
        p = sub.add_parser(name, help=helptext)
        _add_model_args(p)
        _add_task_args(p)
        _add_study_args(p)
        # Defaults left to None here are the library's (SearchSettings, SamplerSettings), one place for each; the
        # help names them (tests/test_cli.py checks that it names them right)
        p.add_argument("--budget", type=int, help="number of evaluated trials (default 20)")
        p.add_argument("--sampler", help="saasbo (default) | gp | random | nsga2 | motpe")
        p.add_argument("--batch", type=int, help="configurations proposed per round (q; default 1)")
        p.add_argument("--init", type=int,
                       help="random initial configurations (n0; default 8), after the standard "
                       "modules, which every search trains first (SA, PA, PT at hidden/16 and LoRA r=8, in all layers)")
        p.add_argument("--space", help="YAML/JSON file restricting or extending the search space")
        p.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True,
                       help="LoRA in the default space (default); --no-lora: the paper's space (SA, PA, PT)")
        p.add_argument("--promote", type=int, default=0, metavar="K",
                       help="take K configurations spread along the front, and the standard modules near it, up a "
                       "ladder of fidelities to --target by successive halving; the answer is the front there, "
                       "with 2 seeds each, scored on the report split (0: off, the default)")
        p.add_argument("--target", metavar="PRESET|EXAMPLESxEPOCHS",
                       help="with --promote: the fidelity the answer is earned at: a preset (full, the default) or "
                       "EXAMPLESxEPOCHS, e.g. 2400x3: the search's fidelity (precision, dropout, ...) with that many "
                       "train examples and epochs")
        p.add_argument("--search-seed", type=int, help="seed of the sampler (default 0)")
        p.add_argument("--ref-point", help="hypervolume reference point 'SCORE,PERCENT' "
                       "(default: score 0, percent = the largest configuration of the space)")
        p.add_argument("--nuts",
                       help="how the SAAS GP is fitted: 'map' (default, under 1 s per proposal) or NUTS "
                            "'warmup,samples,thinning' for the fully Bayesian model, e.g. 256,128,16 (~20 s)")
        p.add_argument("--percent-scale",
                       help="saasbo/gp: the %% objective the acquisition improves: 'log' (default; spreads the trials "
                            "over the whole front) or 'linear' (the scale of the reported hypervolume)")
        p.add_argument("--calibration-pairs", type=int, metavar="N",
                       help="saasbo/gp: right after the initial design, re-train its N smallest configurations with a "
                       "second seed to measure the seed noise (default 2; 0: none)")
        p.add_argument("--replicates", type=float, metavar="FRACTION",
                       help="saasbo/gp: up to this fraction of the trials also re-train the front member with the "
                       "fewest seeds (default 0: only the calibration pairs)")
        p.add_argument("--baselines", nargs="?", const="all", choices=["peft", "all"],
                       help="'all' (the default when the flag has no value): also train full fine-tuning at the "
                       "search fidelity, marked in the plot. The standard modules are trials of every search; "
                       "'peft' adds nothing more")
        p.add_argument("--retrain", type=int,
                       help="retrain K configurations spread along the front at full fidelity")
        p.add_argument("--seeds", type=int, help="seeds per retrained configuration (default 3)")
        p.add_argument("--resume", action="store_true", help="accepted for clarity: a search always resumes its study")
        p.add_argument("--heartbeat", type=int, metavar="SECONDS",
                       help="database storages: seconds between heartbeats of running trials; a trial without one for "
                       "3 intervals (its worker died) is run again by another worker (default 60; 0: off; journal "
                       "files have none)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        _add_fidelity_args(p, default="low", auto=True)
        _add_states_cache_arg(p)
        _add_device_arg(p)
        p.set_defaults(func=cmd_worker if name == "worker" else cmd_search)

    p = sub.add_parser("retrain", help="retrain configurations of a study's front at full fidelity over several seeds")
    _add_study_args(p, positional=True)
    p.add_argument("--top", type=int, default=0, help="K configurations spread along the front (0 = all)")
    p.add_argument("--seeds", type=int, default=3)
    for flag, kind in (("--train-examples", _count_or_fraction), ("--dev-examples", _count_or_fraction),
                       ("--epochs", float), ("--max-length", int), ("--batch-size", int), ("--lr", float)):
        p.add_argument(flag, type=kind)
    p.add_argument("--precision", choices=PRECISION_CHOICES)
    p.add_argument("--dropout", action=argparse.BooleanOptionalAction, default=None)
    _add_device_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars; warnings only")
    p.set_defaults(func=cmd_retrain, seed=None)

    p = sub.add_parser("transfer", help="retrain a study's front on another task, beside single-module baselines")
    p.add_argument("--from", dest="from_dir", required=True, help="folder of the source study")
    p.add_argument("--storage", help="storage of the source study, if not its folder's study.db")
    p.add_argument("--study", default="autopeft")
    p.add_argument("--out", required=True, help="folder for the transfer results")
    p.add_argument("--top", type=int, default=0, help="K configurations spread along the front (0 = all)")
    p.add_argument("--seeds", type=int, default=3)
    _add_model_args(p)
    _add_task_args(p)
    _add_fidelity_args(p, default="full")
    _add_device_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars; warnings only")
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("report", help="regenerate the tables and plots of a study")
    _add_study_args(p, positional=True)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="write the K-th front configuration as a file for `autopeft train`, or a "
                       "trained run as a PEFT adapter (--format peft)")
    _add_study_args(p, positional=True)
    p.add_argument("--pick", type=int, help="K: row of the front table (1 = fewest parameters)")
    p.add_argument("--to", required=True, help="configuration JSON to write (peft, adapters: the adapter folder)")
    p.add_argument("--format", choices=["config", "peft", "adapters"], default="config",
                   help="config (default): STUDY_DIR's K-th front configuration; peft: STUDY_DIR is instead a "
                   "trained run (LoRA-only configurations), written as a Hugging Face PEFT adapter; adapters: a "
                   "trained run written as an AdapterHub `adapters` adapter with its head (SA, PA, PT, LoRA and "
                   "their unions, except SA with PA)")
    p.set_defaults(func=cmd_export)
    run_help = "folder of a trained run (the --out of `autopeft train`, or retrained/trial_N/seed_S of a study)"

    p = sub.add_parser("predict", help="label (or score) new texts with a trained run")
    p.add_argument("run", metavar="RUN_DIR", help=run_help)
    p.add_argument("--input", required=True, help="CSV/TSV/JSONL/parquet file with the texts (no labels needed)")
    p.add_argument("--text-a", default="text", help="column of the first text")
    p.add_argument("--text-b", help="column of the optional second text")
    p.add_argument("--out", required=True, help="CSV to write: label and one probability per label (or value)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="score a trained run on a task's dev split")
    p.add_argument("run", metavar="RUN_DIR", help=run_help)
    _add_task_args(p)
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The library's status lines (logger "autopeft") on stderr; --quiet keeps only its warnings.
    level = logging.getLogger(log.ROOT).level  # restored after, for callers of main() in-process
    log.enable_default_handler(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    with interrupts_recorded():  # a Ctrl-C Python swallows still stops at the next check_interrupt
        try:
            if getattr(args, "device", None):
                from autopeft.training import resolve_device

                device = resolve_device(args.device)  # checked before any work
                if device.type == "cuda":
                    import torch

                    print(f"autopeft: training on {device} ({torch.cuda.get_device_name(device)})", file=sys.stderr)
            args.func(args)
        except SettingError as exc:  # named by its flag
            print(f"autopeft: error: {FLAGS.get(exc.parameter, exc.parameter)} {exc.problem}", file=sys.stderr)
            return 2
        except UserError as exc:
            print(f"autopeft: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("autopeft: interrupted", file=sys.stderr)
            return 130
        finally:
            log.disable_default_handler()
            logging.getLogger(log.ROOT).setLevel(level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
