"""Reports of a study: front and trial tables, plots, and config export."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from matplotlib.figure import Figure  # not pyplot: no global backend or figure state, saved with Agg
from matplotlib.ticker import FuncFormatter, LogLocator

from autopeft.errors import UserError, disk_full_reported
from autopeft.search.pareto import hypervolume
from autopeft.search.attrs import PROMOTION_ATTR, REPORT_SCORE_ATTR
from autopeft.search.record import StudyRecord
from autopeft.search.results import (
    ConfigRecord,
    TrialRecord,
    completed_trials,
    config_key,
    config_rows,
    front_rows,
    noise_estimate,
    reference_point,
    standard_names,
)
from autopeft.space import PeftConfig, size_keys


def study_labels(study: optuna.Study) -> dict[str, str]:
    """Task, model and metric names from the study record."""
    record = StudyRecord.of(study)
    return {"task": record.task or "task", "model": record.model or "model", "metric": record.metric or "score"}


def _describe(config: dict[str, Any] | None) -> str:
    return PeftConfig.from_dict(config).describe() if config else "?"


def _flat(row: TrialRecord | ConfigRecord, rank: int | None = None) -> dict[str, Any]:
    """A CSV-friendly row: config fields spread out, metrics as metric_<name>."""
    config = row.get("config") or {}
    out: dict[str, Any] = {} if rank is None else {"rank": rank}
    out.update(trial=row["number"], configuration=_describe(config))
    out.update({k: config.get(k, 0) for k in size_keys()})
    out["layers"] = "".join(str(int(b)) for b in config.get("layers", []))
    out["score"] = row["score"]
    if "n_seeds" in row:  # a configuration row: the mean over its seeds
        out.update(score_std=row["score_std"], n_seeds=row["n_seeds"], scores=";".join(f"{v:g}" for v in row["scores"]),
                   trials=";".join(map(str, row["numbers"])))
    out.update(
        percent=row["percent"],
        trainable_params=row.get("trainable_params"),
        wall_time_s=row.get("wall_time_s"),
        proposal_seconds=row.get("proposal_seconds"),
    )
    if "retrained_mean" in row:
        out.update(retrained_mean=row["retrained_mean"], retrained_std=row["retrained_std"])
    out.update({f"metric_{k}": v for k, v in sorted((row.get("metrics") or {}).items())})
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _all_trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    standards = standard_names(study)
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        promotion = attrs.get(PROMOTION_ATTR)
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "score": t.values[0] if t.values else None,
                "percent": t.values[1] if t.values else None,
                "configuration": _describe(attrs.get("config")),
                "standard": standards.get(config_key(attrs["config"]), "") if attrs.get("config") else "",
                "fidelity": promotion["fidelity"] if promotion else StudyRecord.of(study).fidelity_label,
                "report_score": attrs.get(REPORT_SCORE_ATTR),
                "config": json.dumps(attrs.get("config")),
                "trainable_params": attrs.get("trainable_params"),
                "wall_time_s": attrs.get("wall_time_s"),
                "proposal_seconds": attrs.get("proposal_seconds"),
                "duplicate_of": attrs.get("duplicate_of"),
                "replicate_of": attrs.get("replicate_of"),
                "train_seed": attrs.get("train_seed"),
                "fail_reason": attrs.get("fail_reason"),
                **{f"metric_{k}": v for k, v in sorted((attrs.get("metrics") or {}).items())},
            }
        )
    return rows


def plot_front(
    study: optuna.Study, path: Path, baselines: list[dict] | None = None, labels: dict[str, str] | None = None
) -> Path:
    """Scatter of all completed trials (one point per seed) with the front of configuration means as a step
    line, error bars = std over seeds (log-scale x); the standard modules named; the answer at the target
    fidelity (with promotion); the constant predictor's score as a dashed line."""
    rows, front = completed_trials(study), front_rows(study)
    labels = labels or study_labels(study)
    fig = Figure(figsize=(9, 5), dpi=120)
    ax = fig.subplots()
    ax.scatter(
        [r["percent"] for r in rows], [r["score"] for r in rows],
        s=18, color="0.65", alpha=0.8, label=f"trials ({len(rows)})", zorder=2,
    )
    fx, fy = [r["percent"] for r in front], [r["score"] for r in front]
    fidelity = StudyRecord.of(study).fidelity_label
    ax.plot(fx, fy, drawstyle="steps-post", color="tab:red", lw=1.6, zorder=3)
    ax.errorbar(fx, fy, yerr=[r["score_std"] for r in front], fmt="o", ms=6, color="tab:red", mec="black", mew=0.6,
                capsize=3, zorder=4, label=f"front of means{f' at {fidelity}' if fidelity else ''} ({len(front)}; "
                "bars: std over seeds)")
    constant = StudyRecord.of(study).constant_baseline
    if constant is not None and np.isfinite(constant):
        ax.axhline(constant, color="0.3", ls="--", lw=1, label=f"constant predictor ({constant:.1f})", zorder=1)
    named: list[tuple[float, float, str, str]] = []  # (percent, score, label, colour), labels placed at the end
    named += [(x, y, str(k), "tab:red") for k, (x, y) in enumerate(zip(fx, fy), start=1)]  # '#' of the front table
    standards = [r for r in config_rows(study) if r.get("standard")]
    if standards:
        ax.scatter([r["percent"] for r in standards], [r["score"] for r in standards], marker="*", s=140,
                   color="tab:blue", edgecolor="black", lw=0.6, zorder=5, label="standard modules (trials)")
        named += [(r["percent"], r["score"], str(r["standard"]), "tab:blue") for r in standards]
    answer = answer_rows(study)
    if answer:
        ax.errorbar([m["percent"] for m in answer], [m["selection_score"] for m in answer],
                    yerr=[np.std(m["selection_scores"], ddof=1) for m in answer], fmt="D", ms=7, color="tab:green",
                    mec="black", mew=0.6, capsize=3, zorder=6,
                    label=f"answer at {answer[0]['fidelity']} (mean of {answer[0]['n_seeds']} seeds)")
        named += [(m["percent"], m["selection_score"], m["standard"] or f"A{k}", "tab:green")
                  for k, m in enumerate(answer, start=1)]
    for b in baselines or []:
        ax.scatter([b["percent"]], [b["score"]], marker="P", s=90, color="tab:purple", edgecolor="black", lw=0.6,
                   zorder=5)
        named.append((b["percent"], b["score"], str(b["name"]), "tab:purple"))
    xs = [r["percent"] for r in rows] + [p for p, *_ in named]
    if xs and min(xs) > 0:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))  # no "3 x 10^0" between the major labels
        ax.set_xlabel("% trainable parameters (log scale)")
    else:
        ax.set_xlabel("% trainable parameters")
    selection = StudyRecord.of(study).selection or {}
    split = "held-out train" if selection.get("split") == "train" else "dev"
    ax.set_ylabel(f"{labels['metric']} ({labels['task']}, {split})")
    ax.set_title(f"AutoPEFT search: {labels['task']}, {labels['model']} — {study.study_name}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    # outside the axes: no point's label ever lies under it
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    fig.tight_layout()
    _place_labels(ax, named)
    fig.savefig(path)
    return path


def _place_labels(ax: Any, named: list[tuple[float, float, str, str]]) -> None:
    """Annotate each (x, y, text, colour) beside its point, moving a label up until no other overlaps it.

    Hand-written: matplotlib has no label placement, and adjustText would be one more dependency for this.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(ax.figure)  # the figure's canvas from now on (savefig then writes with it)
    canvas.draw()  # so that the transforms hold the final limits and scales
    renderer = canvas.get_renderer()
    xmax = ax.get_window_extent().x1
    placed: list[Any] = []
    for x, y, text, colour in sorted(named, key=lambda n: (n[1], n[0])):
        px, py = ax.transData.transform((x, y))
        right = px > xmax - 60  # near the right edge: the label goes on the left
        label = ax.annotate(text, (x, y), textcoords="offset pixels", xytext=(-7 if right else 7, 4),
                            ha="right" if right else "left", fontsize=7, color=colour, zorder=7,
                            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75})
        for _ in range(40):
            box = label.get_window_extent(renderer).expanded(1.0, 1.1)
            if not any(box.overlaps(other) for other in placed):
                break
            label.set_position((label.get_position()[0], label.get_position()[1] + 6))
        placed.append(label.get_window_extent(renderer))


def answer_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """The answer at the target fidelity (`search.promotion.answer_members`); [] without promotion."""
    from autopeft.search.promotion import PromotionPlan, answer_members

    plan = StudyRecord.of(study).promotion
    return answer_members(study, PromotionPlan.from_dict(plan)) if plan else []


def answer_verdict(study: optuna.Study) -> list[str]:
    """In plain words: did the search beat the best standard module at or below its size, on the report split,
    over seeds? Or is a standard module the recommendation? Where no standard module at or below its size reached
    the target: the difference from the larger one that did (the best on the selection split). A caution follows
    when the answer's selection score is less than `calibrate.MIN_MARGIN` points above the constant predictor's. []
    without promotion."""
    from autopeft.search.promotion import PromotionPlan, answer_members

    record = StudyRecord.of(study)
    plan = record.promotion
    if not plan:
        return []
    plan = PromotionPlan.from_dict(plan)
    answer = answer_members(study, plan)
    target = plan.labels[-1]
    if not answer:
        return [f"no answer yet: no configuration has its {plan.final_seeds} seeds at the target fidelity {target}"]
    best = max(answer, key=lambda m: m["selection_score"])
    evaluated, split = answer_members(study, plan, front=False), (record.selection or {}).get("report", "dev")
    return _compare_with_standards(best, evaluated, target, split) + _constant_caution(record, best, target)


def _constant_caution(record: StudyRecord, best: dict[str, Any], target: str) -> list[str]:
    """A caution when the answer's selection score does not clear the constant predictor's by `MIN_MARGIN`
    points: the selection split then cannot rank configurations by what they learned."""
    from autopeft.calibrate import MIN_MARGIN, clears_constant

    constant = record.constant_baseline
    if clears_constant(best["selection_score"], constant):
        return []
    return [f"caution: on the selection split the answer scores {best['selection_score']:.2f} at {target}, less "
            f"than {MIN_MARGIN:g} points above the constant predictor's {constant:.2f}; there the configurations at "
            "the target are not told apart from a constant prediction, so this choice is weak evidence. Raise the "
            "target's epochs (--target EXAMPLESxEPOCHS), or compare the standard modules on more held-out data"]


def _compare_with_standards(best: dict[str, Any], evaluated: list[dict[str, Any]], target: str,
                            split: str) -> list[str]:
    """`answer_verdict`'s comparison of the best answer member with the standard modules that reached `target`
    (`evaluated`: every configuration there), on the report `split`."""
    if best["standard"]:
        return [f"the standard module {best['standard']} is the recommendation: at {target} no configuration the "
                f"search found beat it on the selection split ({split} score {best['score']:.2f} ± "
                f"{best['score_std']:.2f} over {best['n_seeds']} seeds)"]
    standards = [m for m in evaluated if m["standard"]]
    rivals = [m for m in standards if m["percent"] <= best["percent"]]
    name = f"{_describe(best['config'])} ({best['percent']:.3g} %)"

    def paired(rival: dict[str, Any]) -> tuple[float, str]:
        """The answer minus `rival` on the report split, seed by seed: the mean, and the differences as text."""
        diffs = [a - b for a, b in zip(best["scores"], rival["scores"])]
        return float(np.mean(diffs)), ", ".join(f"{d:+.2f}" for d in diffs)

    if not rivals:
        text = (f"the search's best answer {name} scores {best['score']:.2f} ± {best['score_std']:.2f} on the {split} "
                f"split at {target}; no standard module at or below its size reached {target}")
        if not standards:
            return [text + ", so it was not compared with one there"]
        larger = max(standards, key=lambda m: m["selection_score"])  # chosen on the selection split, like the answer
        mean, per_seed = paired(larger)
        return [text + f"; against {larger['standard']} ({larger['percent']:.3g} %), the best larger standard module "
                       f"that did, it scores {mean:+.2f} points (per seed: {per_seed})"]
    rival = max(rivals, key=lambda m: m["selection_score"])  # chosen on the selection split, like the answer
    mean, per_seed = paired(rival)
    against = f"{rival['standard']} ({rival['percent']:.3g} %), the best standard module at or below its size"
    if mean > 0:
        return [f"the search beat {against}: {name} scores {mean:+.2f} points on the {split} split at {target} "
                f"(per seed: {per_seed})"]
    return [f"the search did not beat {against}: {name} scores {mean:+.2f} points against it on the {split} split "
            f"at {target} (per seed: {per_seed}); {rival['standard']} is the recommendation"]


def plot_hypervolume(study: optuna.Study, path: Path, ref: tuple[float, float]) -> Path:
    """Hypervolume of the configuration means after each completed trial, against the trial number."""
    rows = completed_trials(study)
    scores: dict[str, list[float]] = {}
    percents: dict[str, float] = {}
    hv = []
    for r in rows:
        key = json.dumps(r["config"], sort_keys=True)
        scores.setdefault(key, []).append(r["score"])
        percents[key] = r["percent"]
        hv.append(hypervolume([np.mean(v) for v in scores.values()], list(percents.values()), *ref))
    fig = Figure(figsize=(6.5, 4), dpi=120)
    ax = fig.subplots()
    ax.plot([r["number"] for r in rows], hv, drawstyle="steps-post", marker=".", color="tab:green")
    ax.set_xlabel("trial number")
    ax.set_ylabel("hypervolume (score × % params)")
    ax.set_title(f"Hypervolume, reference point (score {ref[0]:g}, {ref[1]:.3g}%)", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_points(
    rows: list[dict], baselines: list[dict], path: Path, title: str = "", metric: str = "score"
) -> Path:
    """Configurations and baselines (dicts with name, score, percent, optional std) on one plot."""
    fig = Figure(figsize=(7.5, 5), dpi=120)
    ax = fig.subplots()
    xs = [p["percent"] for p in [*rows, *baselines]]
    styles = ((rows, {"marker": "o", "color": "tab:red"}), (baselines, {"marker": "*", "color": "tab:blue"}))
    for points, style in styles:
        for p in points:
            ax.errorbar(p["percent"], p["score"], yerr=p.get("std") or 0.0, ms=9 if style["marker"] == "*" else 6,
                        mec="black", mew=0.6, capsize=3, ls="none", zorder=3, **style)
            rightmost = p["percent"] >= max(xs)  # label on the left so it stays inside the axes
            ax.annotate(str(p["name"]), (p["percent"], p["score"]), textcoords="offset points",
                        xytext=(-6 if rightmost else 6, 4), ha="right" if rightmost else "left",
                        fontsize=7, color=style["color"])
    if xs and min(xs) > 0:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("% trainable parameters" + (" (log scale)" if xs and min(xs) > 0 else ""))
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_loss_curve(losses: list[float], path: Path, title: str = "") -> Path:
    """Training loss per logged window."""
    fig = Figure(figsize=(6.5, 4), dpi=120)
    ax = fig.subplots()
    ax.plot(range(1, len(losses) + 1), losses, color="tab:purple", marker="." if len(losses) < 60 else None)
    ax.set_xlabel("logged window")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def write_report(
    study: optuna.Study,
    out_dir: Path,
    ref: tuple[float, float] | None = None,
    baselines: list[dict] | None = None,
) -> dict[str, Path]:
    """Write front.csv, front.json, trials.csv, front.png and hypervolume.png into `out_dir`.

    `ref`: hypervolume reference point (score, percent), default the study's.
    `baselines`: reference points to mark, dicts with name, score and percent.
    Returns {file name: path}. A full disk raises `errors.DiskFullError` and leaves the files as they were.
    """
    rows = completed_trials(study)
    if not rows:
        raise UserError(f"study '{study.study_name}' has no completed trials yet; run a search first")
    for b in baselines or []:
        if not {"name", "score", "percent"} <= set(b):
            raise UserError(f"baseline {b!r} needs the keys name, score and percent")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = ref or reference_point(study)
    front = front_rows(study)
    labels = study_labels(study)
    final = {name: out_dir / name for name in ("front.csv", "front.json", "trials.csv", "front.png", "hypervolume.png")}
    # Written under temporary names, then renamed: workers finishing together each leave whole files.
    paths = {name: out_dir / f".{os.getpid()}-{name}" for name in final}
    try:
        with disk_full_reported(f"the report ({', '.join(final)}) in {out_dir}"):
            _write_report_files(study, paths, ref, baselines, front, labels, rows)
        for name, path in paths.items():
            os.replace(path, final[name])
    finally:
        for path in paths.values():
            path.unlink(missing_ok=True)  # what a failure left
    return final


def _write_report_files(study: optuna.Study, paths: dict[str, Path], ref: tuple[float, float],
                        baselines: list[dict] | None, front: list[ConfigRecord], labels: dict[str, str],
                        rows: list[TrialRecord]) -> None:
    _write_csv(paths["front.csv"], [_flat(r, k) for k, r in enumerate(front, start=1)])
    _write_csv(paths["trials.csv"], _all_trial_rows(study))
    configs, record = config_rows(study), StudyRecord.of(study)
    summary = {
        "study": study.study_name,
        **labels,
        "n_completed": len(rows),
        "n_configurations": len(configs),
        "reference_point": list(ref),
        "hypervolume": hypervolume([r["score"] for r in configs], [r["percent"] for r in configs], *ref),
        "noise": noise_estimate(study).to_dict(),
        "selection": record.selection,
        "fidelity": record.fidelity_label,
        "front": [{"rank": k, "configuration": _describe(r["config"]), **r} for k, r in enumerate(front, start=1)],
    }
    if record.promotion:
        summary["answer"] = [{"configuration": _describe(m["config"]), **m} for m in answer_rows(study)]
        summary["verdict"] = answer_verdict(study)
    paths["front.json"].write_text(json.dumps(summary, indent=2) + "\n")
    plot_front(study, paths["front.png"], baselines, labels)
    plot_hypervolume(study, paths["hypervolume.png"], ref)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_front_table(rows: list[ConfigRecord]) -> str:
    """Fixed-width table of front rows (as from front_rows), numbered from 1; score = mean ± std (seeds)."""
    retrained = any("retrained_mean" in r for r in rows)
    seeds = any(r.get("n_seeds", 1) > 1 for r in rows)
    header = ["#", "trial", "configuration", "score ± std (seeds)" if seeds else "score", "% params", "params"]
    if retrained:
        header.append("retrained mean ± std")
    body = []
    for k, r in enumerate(rows, start=1):
        line = [
            str(k),
            str(r["number"]),
            _describe(r.get("config")),
            f"{r['score']:.2f} ± {r['score_std']:.2f} ({r['n_seeds']})" if seeds else f"{r['score']:.2f}",
            f"{r['percent']:.4f}",
            _fmt(r.get("trainable_params"), ","),
        ]
        if retrained:
            mean, std = r.get("retrained_mean"), r.get("retrained_std")
            line.append("-" if mean is None else f"{mean:.2f} ± {std or 0.0:.2f}")
        body.append(line)
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    left = {2}  # the configuration column reads better left-aligned

    def fmt(cells: list[str]) -> str:
        padded = (c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "  ".join(padded).rstrip()

    note = ("params = PEFT modules + task head, prefix counted folded (its reparametrisation MLP is dropped "
            "after training); % params = params / backbone parameters")
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, body), note])


def format_answer_table(answer: list[dict[str, Any]]) -> str:
    """Fixed-width table of the answer (`answer_rows`): report-split and selection-split means over seeds."""
    header = ["#", "configuration", "standard", "report score ± std", "selection score", "seeds", "% params"]
    body = [[f"A{k}", _describe(m["config"]), m["standard"] or "-", f"{m['score']:.2f} ± {m['score_std']:.2f}",
             f"{m['selection_score']:.2f}", str(m["n_seeds"]), f"{m['percent']:.4f}"]
            for k, m in enumerate(answer, start=1)]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    return "\n".join("  ".join(c.ljust(w) if i in (1, 2) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
                     .rstrip() for cells in [header, ["-" * w for w in widths], *body])


def export_config(study: optuna.Study, pick: int, path: Path) -> Path:
    """Write the `pick`-th front configuration (1-based, by % params as in the table) as JSON."""
    front = front_rows(study)
    if not front:
        raise UserError(f"study '{study.study_name}' has no completed trials yet; run a search first")
    if isinstance(pick, bool) or not isinstance(pick, int) or not 1 <= pick <= len(front):
        raise UserError(
            f"pick {pick!r} is out of range: the Pareto front has {len(front)} configuration(s); "
            f"choose 1..{len(front)} (see the '#' column of the report)"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = PeftConfig.from_dict(front[pick - 1]["config"])
    path.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return path
