"""Does promotion pay? Two routes to an answer at equal compute, scored at full fidelity on dev.

For one GLUE task and one search seed:
- route "promote": `autopeft search --promote K --target full` (standard modules first, selection
  split held out of train, successive halving up to `full`); its answer is the member with the
  best selection-split mean at the target.
- route "retrain": the route before promotion, at the same compute: a low-fidelity search (same
  seed, same selection split), whose budget is what the promote route spent less what this route's
  retraining costs; then K configurations spread along its front of means, retrained at full
  fidelity with 2 seeds on train minus the selection split; its answer is the one with the best
  selection-split mean.
Compute is counted in train example-epochs (examples actually trained x epochs), over every trial
that trained. Each answer is then trained on the whole train split at full fidelity with seeds 10,
11, 12 and scored on dev, which chose nothing. Results go to OUT/results.jsonl, one line per
(task, seed, route); finished searches and runs are reused, so a rerun resumes.

Usage:
    python benchmarks/promotion_pays.py --task MRPC --seed 0
    python benchmarks/promotion_pays.py --summary
    # optional, once the promote search has finished: its answer's final runs in a second process
    # (1 torch thread) while the first runs the retrain route; the first then reuses them
    python benchmarks/promotion_pays.py --task MRPC --seed 0 --promote-finals --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "promotion_pays"
FINAL_SEEDS = (10, 11, 12)
MODEL = "minilm"
VARIANT = "keep-standards"
STANDARD_METHODS = ("SA", "PA", "PT", "LoRA")  # the single-module rows of the first results table


def compute(study, ladder: list[set[str]] | None = None) -> float:
    """Train example-epochs of the study's evaluated trials (from each trial's "EXAMPLESxEPOCHS" fidelity).
    `ladder` (`next_tasks(...).ladder`): count only the promoted trials of each rung's members."""
    from optuna.trial import TrialState

    from autopeft.search.results import config_key

    meta = study.user_attrs
    total = 0.0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if "duplicate_of" in t.user_attrs:
            continue
        promotion = t.user_attrs.get("promotion")
        if ladder is not None and promotion and config_key(t.user_attrs["config"]) not in ladder[promotion["rung"] - 1]:
            continue  # run by another plan's ladder
        label = (promotion or {}).get("fidelity") or meta["fidelity_label"]
        examples, epochs = label.split("x")
        total += int(examples) * float(epochs)
    return total


def search(task_name: str, out: Path, seed: int, budget: int, promote: int, keep_standards: bool = False):
    from autopeft.tasks import TaskSource, load_task
    from autopeft.training import fidelity_from
    from autopeft.search.samplers import SamplerSettings
    from autopeft.workflow import SearchSettings
    from autopeft.workflow import search as run

    settings = SearchSettings(model=MODEL, task=load_task(task_name), fidelity=fidelity_from("low"), out_dir=out,
                              budget=budget, sampler=SamplerSettings(seed=seed), promote=promote, progress=False,
                              task_source=TaskSource(task_name), keep_standards=keep_standards)
    return run(settings).study


def retrain_route(task_name: str, study, k: int, out: Path) -> tuple[dict[str, Any], float]:
    """K front configurations at full fidelity, 2 seeds, on train minus the selection split; the best by mean."""
    from autopeft.search.results import front_rows
    from autopeft.space import PeftConfig
    from autopeft.tasks import TaskSource
    from autopeft.training import FIDELITIES, resolve_precision
    from autopeft.workflow import spread_along_front, train_seeds

    search_task, _, _ = TaskSource(task_name).splits()
    full = resolve_precision(FIDELITIES["full"])
    picked, spent = [], 0.0
    for row in spread_along_front(front_rows(study), k):
        config = PeftConfig.from_dict(row["config"])
        results = train_seeds(MODEL, search_task, config, full, 2, out / f"trial_{row['number']}", progress=False)
        spent += 2 * len(search_task.train) * full.epochs
        picked.append({"config": row["config"], "selection_score": float(np.mean([r["score"] for r in results]))})
    return max(picked, key=lambda p: p["selection_score"]), spent


def final_scores(task_name: str, config: dict[str, Any], out: Path) -> list[float]:
    """The configuration trained on the whole train split at full fidelity, seeds FINAL_SEEDS, scored on dev.

    A seed's file is reused only if it holds this configuration (files from before the configuration was
    stored hold none and are reused as they are)."""
    from autopeft.errors import write_text_atomic
    from autopeft.space import PeftConfig
    from autopeft.tasks import load_task
    from autopeft.training import FIDELITIES, resolve_precision, train_and_evaluate

    task = load_task(task_name)
    scores = []
    for seed in FINAL_SEEDS:
        done = out / f"seed_{seed}.json"
        if not done.is_file():
            result = train_and_evaluate(MODEL, task, PeftConfig.from_dict(config),
                                        replace(resolve_precision(FIDELITIES["full"]), seed=seed), progress=False)
            done.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(done, json.dumps({"config": config, "score": result.score, "wall_s": result.wall_time_s}))
        stored = json.loads(done.read_text())
        if stored.get("config", config) != config:
            raise SystemExit(f"{done} holds another configuration's run; remove it to train this one")
        scores.append(stored["score"])
    return scores


def promote_answer(study) -> dict[str, Any]:
    """The promote route's answer: the answer member with the best selection-split mean at the target."""
    from autopeft.report import answer_rows

    return max(answer_rows(study), key=lambda m: m["selection_score"])


def promote_finals(task_name: str, seed: int, out: Path) -> list[float]:
    """The final runs of a finished promote search's answer (the ones run_pair reuses). Run it beside run_pair's
    retrain route, not later: if both reach the same seed, both train it, and the last to finish is kept."""
    base = out / task_name / f"seed_{seed}"
    return final_scores(task_name, promote_answer(_finished_promote_study(base))["config"], base / "promote" / "final")


def _finished_promote_study(base: Path):
    """The promote route's study in `base` (a task's seed folder), once its promotion has finished."""
    import optuna

    from autopeft.search.promotion import PromotionPlan, next_tasks
    from autopeft.search.record import StudyRecord

    study = None
    if (base / "promote" / "study.db").is_file():
        study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{base / 'promote' / 'study.db'}")
    plan = study and StudyRecord.of(study).promotion
    if not plan or not next_tasks(study, PromotionPlan.from_dict(plan)).finished:
        raise SystemExit(f"{base / 'promote'}: the promote search has not finished; run without --promote-finals "
                         "or --variant first")
    return study


def keep_standards_route(task_name: str, seed: int, out: Path) -> None:
    """The variant planned in docs/lab-notes/2026-12-07-fourth-session.md: every standard module that enters the
    ladder goes on to the target. Worked out from a copy of the finished promote study, resumed with the variant's
    plan and the same exploring budget: only the runs its ladder adds train (the halved-away standard modules, and
    on a 3-rung ladder whatever a larger middle rung lets through). Its answer and compute count only its own
    ladder's runs; its final runs are the promote route's when the answer is the same configuration. One results
    line, route VARIANT. The copy's promoted weights stay in the promote folder (its run_dir attrs do not resolve)."""
    import sqlite3

    from autopeft.search.attrs import BUDGET_ATTR
    from autopeft.search.promotion import PromotionPlan, next_tasks
    from autopeft.search.record import StudyRecord
    from autopeft.search.results import completed_trials

    base = out / task_name / f"seed_{seed}"
    results = out / "results.jsonl"
    if results.is_file() and any((r["task"], r["seed"], r["route"]) == (task_name, seed, VARIANT)
                                 for r in map(json.loads, results.read_text().splitlines())):
        return
    promoted = _finished_promote_study(base)
    plan = PromotionPlan.from_dict(StudyRecord.of(promoted).promotion)
    keep = replace(plan, keep_standards=True)
    variant = base / VARIANT
    if not (variant / "study.db").is_file():
        variant.mkdir(parents=True, exist_ok=True)
        partial = variant / "study.db.partial"
        with sqlite3.connect(f"file:{base / 'promote' / 'study.db'}?mode=ro", uri=True) as src, \
                sqlite3.connect(partial) as dst:
            src.backup(dst)
        import optuna

        copy = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{partial}")
        copy.set_user_attr("promotion", keep.to_dict())
        del copy
        partial.rename(variant / "study.db")
    # the promote search's exploring budget, all explored, so that the resume explores nothing; the budget passed
    # on is that plus what the variant reserves for promotion
    explored, budget = len(completed_trials(promoted)), int(promoted.user_attrs[BUDGET_ATTR])
    if explored < budget:
        raise SystemExit(f"{base / 'promote'}: explored {explored} of its budget of {budget}; "
                         "resuming the copy would explore more")
    start = time.time()
    study = search(task_name, variant, seed, budget + keep.max_trials(len(StudyRecord.of(promoted).standards)),
                   plan.k, keep_standards=True)
    answer = promote_answer(study)
    same = answer["config"] == promote_answer(promoted)["config"]
    scores = final_scores(task_name, answer["config"], base / ("promote" if same else VARIANT) / "final")
    line = {"task": task_name, "seed": seed, "route": VARIANT, "config": answer["config"],
            "selection_score": answer["selection_score"],
            "example_epochs": compute(study, next_tasks(study, keep).ladder),
            "search_wall_s": time.time() - start, "final_seeds": list(FINAL_SEEDS), "final_scores": scores,
            "final_mean": float(np.mean(scores)), "same_answer_as_promote": same}
    with results.open("a") as fh:
        fh.write(json.dumps(line) + "\n")


def run_pair(task_name: str, seed: int, out: Path, budget: int, k: int) -> None:
    from autopeft.training import FIDELITIES, fidelity_from

    results = out / "results.jsonl"
    done = {(r["task"], r["seed"], r["route"]) for r in map(json.loads, results.read_text().splitlines())} \
        if results.is_file() else set()
    base = out / task_name / f"seed_{seed}"

    start = time.time()
    promoted = search(task_name, base / "promote", seed, budget, k)
    spent = compute(promoted)
    answer = promote_answer(promoted)
    rows = [("promote", answer["config"], answer["selection_score"], spent, time.time() - start)]

    start = time.time()
    n_train = len(_search_train(task_name))
    low = fidelity_from("low")
    full_cost = 2 * k * n_train * FIDELITIES["full"].epochs
    low_budget = max(8, round((spent - full_cost) / (low.n_train(n_train) * low.epochs)))
    plain = search(task_name, base / "retrain", seed, low_budget, 0)
    chosen, retrain_cost = retrain_route(task_name, plain, k, base / "retrain" / "full")
    rows.append(("retrain", chosen["config"], chosen["selection_score"], compute(plain) + retrain_cost,
                 time.time() - start))

    for route, config, selection, example_epochs, wall in rows:
        if (task_name, seed, route) in done:
            continue
        scores = final_scores(task_name, config, base / route / "final")
        line = {"task": task_name, "seed": seed, "route": route, "config": config, "selection_score": selection,
                "example_epochs": example_epochs, "search_wall_s": wall, "final_seeds": list(FINAL_SEEDS),
                "final_scores": scores, "final_mean": float(np.mean(scores))}
        with results.open("a") as fh:
            fh.write(json.dumps(line) + "\n")


def _search_train(task_name: str):
    from autopeft.tasks import TaskSource

    return TaskSource(task_name).splits()[0].train


def summary(out: Path, percent=None) -> str:
    """The results as markdown: one row per (task, search seed, route), then per task the plan's decision: the
    mean over search seeds of promote's dev mean minus retrain's, against its standard error (3 seeds decide).
    `percent`: PeftConfig -> % trainable parameters (default: MiniLM's)."""
    from autopeft.space import PeftConfig

    if percent is None:
        from autopeft.workflow import describe_model

        percent = describe_model(MODEL, 2)[0].percent
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    lines = ["| task | search seed | route | answer | % params | compute (example-epochs) | dev, seeds 10 / 11 / 12 "
             "| mean |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["task"], r["seed"], r["route"])):
        config = PeftConfig.from_dict(r["config"])
        lines.append(f"| {r['task']} | {r['seed']} | {r['route']} | {config.describe()} | {percent(config):.2f} | "
                     f"{r['example_epochs']:,.0f} | {' / '.join(f'{s:.2f}' for s in r['final_scores'])} | "
                     f"{r['final_mean']:.2f} |")
    by_pair = {(r["task"], r["seed"], r["route"]): r for r in rows}
    for task in sorted({r["task"] for r in rows}):
        seeds = sorted(s for t, s, route in by_pair if t == task and route == "promote"
                       and (t, s, "retrain") in by_pair)
        if not seeds:
            continue
        pairs = [(by_pair[task, s, "promote"], by_pair[task, s, "retrain"]) for s in seeds]
        diffs = [promote["final_mean"] - retrain["final_mean"] for promote, retrain in pairs]
        per_final = "; ".join(
            f"search seed {s}: " + ", ".join(f"{a - b:+.2f}" for a, b in zip(promote["final_scores"],
                                                                         retrain["final_scores"]))
            for s, (promote, retrain) in zip(seeds, pairs))
        mean = float(np.mean(diffs))
        if len(seeds) < 3:
            verdict = f"{len(seeds)} of the plan's 3 search seeds: no verdict yet"
        else:
            se = float(np.std(diffs, ddof=1) / np.sqrt(len(diffs)))
            pays = mean > 0 and mean > se
            verdict = (f"standard error {se:.2f}: " +
                       ("promotion pays" if pays else "the routes are level within the noise"))
        lines.append(f"\n{task}: promote minus retrain, dev mean {mean:+.2f} over search seeds {seeds} "
                     f"({', '.join(f'{d:+.2f}' for d in diffs)}); {verdict}. Per final seed: {per_final}.")
        if any(t == task and route == VARIANT for t, _, route in by_pair):
            lines.append(_variant_decision(task, by_pair, percent))
    return "\n".join(lines)


def standard_means(task: str) -> list[tuple[str, float, float]]:
    """(method, % params, dev mean) of the first results table's single modules on `task` (seeds 10-12)."""
    scores: dict[str, list[float]] = {}
    percents: dict[str, float] = {}
    for row in map(json.loads, (HERE / "results" / "glue_table.jsonl").read_text().splitlines()):
        if row["task"] == task and row["method"] in STANDARD_METHODS and row["seed"] in FINAL_SEEDS:
            scores.setdefault(row["method"], []).append(row["score"])
            percents[row["method"]] = row["percent"]
    return [(m, percents[m], float(np.mean(v))) for m, v in scores.items()]


def _variant_decision(task: str, by_pair: dict, percent) -> str:
    """The pre-registered rule for VARIANT: adopted if its mean over 3 search seeds is >= the promote route's
    and none of its answers is below the best single module at or below the answer's size (dev means)."""
    from autopeft.space import PeftConfig

    seeds = sorted(s for t, s, route in by_pair if t == task and route == VARIANT and (t, s, "promote") in by_pair)
    variant = [by_pair[task, s, VARIANT] for s in seeds]
    promote = [by_pair[task, s, "promote"] for s in seeds]
    v_mean, p_mean = np.mean([r["final_mean"] for r in variant]), np.mean([r["final_mean"] for r in promote])
    extra = sum(v["example_epochs"] - p["example_epochs"] for v, p in zip(variant, promote))
    below, singles = [], standard_means(task)
    for s, row in zip(seeds, variant):
        size = percent(PeftConfig.from_dict(row["config"]))
        best = max((m for m in singles if m[1] <= size + 1e-9), key=lambda m: m[2], default=None)
        if best is not None and row["final_mean"] < best[2]:
            below.append(f"seed {s}: {row['final_mean']:.2f} < {best[0]} {best[2]:.2f}")
    text = (f"{task}, variant {VARIANT}: dev mean {v_mean:.2f} against promote's {p_mean:.2f} over search seeds "
            f"{seeds}, {extra:+,.0f} example-epochs in all; "
            + (f"below the best single module at or below its size: {'; '.join(below)}" if below
               else "no answer below the best single module at or below its size"))
    if len(seeds) < 3:
        return text + f"; {len(seeds)} of the plan's 3 search seeds: no decision yet."
    adopted = v_mean >= p_mean and not below
    return text + ("; adopted by the plan's rule." if adopted else "; not adopted by the plan's rule.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="MRPC")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=30, help="the promote route's budget (trials)")
    parser.add_argument("--promote", type=int, default=2, help="K: front candidates promoted / retrained")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--promote-finals", action="store_true",
                        help="only the promote answer's final runs (the promote search must have finished)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--variant", choices=[VARIANT],
                        help="work out the pre-registered variant from the finished promote study")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summary:
        print(summary(args.out))
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.promote_finals:
        print(promote_finals(args.task, args.seed, args.out))
        return
    if args.variant:
        keep_standards_route(args.task, args.seed, args.out)
        return
    run_pair(args.task, args.seed, args.out, args.budget, args.promote)


if __name__ == "__main__":
    main()
