"""Reading a study's results: rows per trial and per configuration, the front, the seed noise.

Replicates: a BO sampler may propose an evaluated configuration again, to train it with
another seed (system attr REPLICATE_ATTR = {"of": first trial, "index": k}). Such a trial is
evaluated, not told as a duplicate; it carries the user attrs `replicate_of` and
`replicate_index` (k = 1, 2, ...; the first evaluation is 0), counts against the budget,
and keeps them when it is re-queued. Two trials hold the same work when they have the same
configuration and the same replicate index. The evaluation trains with seed
`fidelity.seed + replicate_index(trial)`; the front reports each configuration's mean.
"""

from __future__ import annotations

import json
from typing import Any, NotRequired, TypedDict

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from autopeft.search.attrs import (
    CONFIG_ATTR,
    DUPLICATE_OF_ATTR,
    PROMOTION_ATTR,
    REPLICATE_ATTR,
    REPLICATE_INDEX_ATTR,
    REPLICATE_OF_ATTR,
    RETRAINED_ATTR,
)
from autopeft.search.noise import NoiseEstimate, estimate_noise
from autopeft.search.pareto import pareto_mask
from autopeft.search.record import StudyRecord
from autopeft.space import PeftConfig


class TrialRecord(TypedDict):
    """One COMPLETE trial, as `completed_trials` returns it."""

    number: int  # the Optuna trial number
    config: dict[str, Any]  # the evaluated configuration (`PeftConfig.to_dict()`)
    score: float  # the objective to maximise
    percent: float  # % trainable parameters, the objective to minimise
    trainable_params: int | None  # PEFT modules + task head
    metrics: dict[str, float]  # the task's metrics on the dev set
    wall_time_s: float | None  # time the evaluation took (None for a duplicate)
    proposal_seconds: float | None  # time the sampler took to propose the configuration
    seed: int | None  # the sampler's seed
    extra: dict[str, Any]  # whatever else the evaluation returned
    duplicate_of: NotRequired[int]  # a duplicate: the trial whose values it was told with
    replicate_of: NotRequired[int]  # a replicate: the first trial of its configuration
    replicate_index: int  # 0 for a configuration's first evaluation, k for its k-th replicate
    train_seed: int | None  # the seed the evaluation trained with
    retrained_mean: NotRequired[float]  # full-fidelity retraining: mean score over its seeds
    retrained_std: NotRequired[float]  # ... their std (ddof 1; 0 for one seed)
    retrained_scores: NotRequired[list[float]]  # ... the score of each seed
    standard: str | None  # the standard module's name ("SA24") when the configuration is one
    fidelity: str | None  # "EXAMPLESxEPOCHS" it trained at (a promoted evaluation's rung, else the search's)


class ConfigRecord(TrialRecord):
    """One evaluated configuration, as `config_rows` returns it: its first trial's row, with
    `score` and `metrics` the means over its seeds."""

    score_std: float  # std of the scores over seeds (ddof 1; 0 for one seed)
    n_seeds: int  # how many trials evaluated it (first evaluation and replicates)
    scores: list[float]  # the score of each of those trials, in the order of `numbers`
    numbers: list[int]  # their trial numbers, by replicate index (then trial number)
    seeds: list[int | None]  # their training seeds


def config_key(config: PeftConfig | dict[str, Any]) -> str:
    """A string equal for equal configurations (the canonical JSON of `config`)."""
    data = config.to_dict() if isinstance(config, PeftConfig) else PeftConfig.from_dict(config).to_dict()
    return json.dumps(data, sort_keys=True)


def replicate_proposal(trial: FrozenTrial | optuna.trial.Trial) -> dict[str, int] | None:
    """{"of": first trial, "index": k} when `trial` is a replicate, else None.

    From the user attrs (set when the trial is evaluated, and carried by a re-queued trial),
    else from the sampler's proposal (system attr REPLICATE_ATTR of a FrozenTrial; a live Trial
    being evaluated has the user attrs).
    """
    attrs = trial.user_attrs
    if REPLICATE_OF_ATTR in attrs:
        return {"of": int(attrs[REPLICATE_OF_ATTR]), "index": int(attrs[REPLICATE_INDEX_ATTR])}
    proposal = (getattr(trial, "system_attrs", None) or {}).get(REPLICATE_ATTR)
    return {"of": int(proposal["of"]), "index": int(proposal["index"])} if isinstance(proposal, dict) else None


def replicate_index(trial: FrozenTrial | optuna.trial.Trial) -> int:
    """Which evaluation of its configuration `trial` is: 0 for the first, k for the k-th replicate."""
    proposal = replicate_proposal(trial)
    return 0 if proposal is None else proposal["index"]


def standard_names(study: optuna.Study) -> dict[str, str]:
    """Config key -> name of the study's standard modules (study attr "standards": name -> configuration)."""
    return {config_key(config): name for name, config in (StudyRecord.of(study).standards or {}).items()}


def _row(trial: FrozenTrial, retrained: dict[str, Any], standards: dict[str, str], fidelity: str | None) -> TrialRecord:
    attrs = trial.user_attrs
    row: TrialRecord = {
        "number": trial.number,
        "config": attrs.get(CONFIG_ATTR),
        "score": float(trial.values[0]),
        "percent": float(trial.values[1]),
        "trainable_params": attrs.get("trainable_params"),
        "metrics": attrs.get("metrics", {}),
        "wall_time_s": attrs.get("wall_time_s"),
        "proposal_seconds": attrs.get("proposal_seconds"),
        "seed": attrs.get("seed"),
        "extra": attrs.get("extra", {}),
    }
    if DUPLICATE_OF_ATTR in attrs:
        row[DUPLICATE_OF_ATTR] = attrs[DUPLICATE_OF_ATTR]
    if REPLICATE_OF_ATTR in attrs:
        row[REPLICATE_OF_ATTR] = attrs[REPLICATE_OF_ATTR]
    row[REPLICATE_INDEX_ATTR] = int(attrs.get(REPLICATE_INDEX_ATTR, 0))
    row["train_seed"] = attrs.get("train_seed")
    row["standard"] = standards.get(config_key(row["config"])) if row["config"] else None
    promotion = attrs.get(PROMOTION_ATTR)
    row["fidelity"] = promotion["fidelity"] if isinstance(promotion, dict) else fidelity
    info = retrained.get(str(trial.number))
    if info:
        row["retrained_mean"] = info.get("mean")
        row["retrained_std"] = info.get("std")
        row["retrained_scores"] = info.get("scores")
    return row


def completed_trials(study: optuna.Study, include_duplicates: bool = False,
                     promoted: bool = False) -> list[TrialRecord]:
    """One row per COMPLETE trial (see TrialRecord) in trial order (duplicates left out unless asked): the
    search's own trials, at its fidelity, or with `promoted` only the promoted evaluations (search.promotion)."""
    retrained = study.user_attrs.get(RETRAINED_ATTR, {})
    standards, fidelity = standard_names(study), StudyRecord.of(study).fidelity_label
    rows = [
        _row(t, retrained, standards, fidelity)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if (include_duplicates or DUPLICATE_OF_ATTR not in t.user_attrs)
        and (PROMOTION_ATTR in t.user_attrs) == promoted
    ]
    return sorted(rows, key=lambda r: r["number"])


def config_rows(study: optuna.Study) -> list[ConfigRecord]:
    """One row per evaluated configuration (see ConfigRecord), in trial order: its trials (first evaluation and
    replicates) merged."""
    groups: dict[str, list[TrialRecord]] = {}
    for row in completed_trials(study):
        groups.setdefault(config_key(row["config"]), []).append(row)
    out = []
    for trials in groups.values():
        trials.sort(key=lambda r: (r[REPLICATE_INDEX_ATTR], r["number"]))
        scores = [r["score"] for r in trials]
        names = {k for r in trials for k in r["metrics"]}
        metrics = {k: float(np.mean([r["metrics"][k] for r in trials if k in r["metrics"]])) for k in sorted(names)}
        out.append({**trials[0], "score": float(np.mean(scores)),
                    "score_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
                    "n_seeds": len(scores), "scores": scores, "numbers": [r["number"] for r in trials],
                    "seeds": [r["train_seed"] for r in trials], "metrics": metrics})
    return sorted(out, key=lambda r: r["number"])


def front_rows(study: optuna.Study) -> list[ConfigRecord]:
    """The Pareto front of configuration means (`config_rows`), sorted by percent ascending (then score descending)."""
    rows = config_rows(study)
    if not rows:
        return []
    mask = pareto_mask([r["score"] for r in rows], [r["percent"] for r in rows])
    return sorted((r for r, m in zip(rows, mask) if m), key=lambda r: (r["percent"], -r["score"], r["number"]))


def noise_estimate(study: optuna.Study) -> NoiseEstimate:
    """Seed noise of the study's scores, from its configurations with several seeds (`noise.estimate_noise`)."""
    return estimate_noise([r["scores"] for r in config_rows(study)])


def record_retrained(study: optuna.Study, number: int, scores: list[float]) -> None:
    """Store full-fidelity retraining scores of trial `number` (study attr `retrained`)."""
    scores = [float(s) for s in scores]
    retrained = dict(study.user_attrs.get(RETRAINED_ATTR, {}))
    retrained[str(number)] = {
        "scores": scores,
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
    }
    study.set_user_attr(RETRAINED_ATTR, retrained)


def reference_point(study: optuna.Study) -> tuple[float, float]:
    """The study's hypervolume reference point.

    The stored `reference_point` metadata (see pareto.default_reference_point);
    without it, (0, largest observed percent) — a display-only fallback.
    """
    ref = StudyRecord.of(study).reference_point
    if ref is not None:
        return float(ref[0]), float(ref[1])
    percents = [r["percent"] for r in completed_trials(study)]
    return 0.0, max(percents, default=100.0)
