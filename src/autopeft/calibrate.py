"""`--fidelity auto`: the cheapest fidelity at which configurations, not training seeds, decide the score.

The ladder (`AUTO_LADDER`) starts at the `low` preset and adds examples and epochs. At each
rung the same `CALIBRATION_CONFIGS` random configurations of the space are trained with two
seeds (the fidelity's seed and the next), and `noise.estimate_noise` gives the share of the
score variance that the configurations explain. The first rung whose share reaches
`noise.MIN_CONFIG_SHARE` (0.5) and whose mean calibration score is at least `MIN_MARGIN` points
above the constant predictor is chosen; if none is, the last rung. The margin rule exists because
models that all collapse to the majority class agree across seeds, so the share alone can pass at
a fidelity where nothing is learnt. Other fidelity settings (max length, batch size, lr,
precision, dropout, seed) are the same at every rung.

Calibration trainings are not trials of the study (their fidelities differ); they are kept in
a JSON file beside it, so an interrupted calibration resumes where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

import numpy as np

from autopeft.errors import write_text_atomic
from autopeft.search.noise import MIN_CONFIG_SHARE, estimate_noise, format_share
from autopeft.space import PeftConfig, SearchSpace
from autopeft.training import Fidelity

#: (train examples, epochs) of each rung; the first is the `low` preset's.
AUTO_LADDER: tuple[tuple[int, float], ...] = ((640, 2), (1280, 3), (2560, 3), (5120, 3))
# Configurations per rung, each trained with two seeds. With 6, a rung that is pure seed noise
# passes the 0.5 threshold by chance about one time in ten (an F(5, 6) ratio above 3).
CALIBRATION_CONFIGS = 6
#: Points (of the task's metric, 0-100) by which a rung's mean score must beat the constant predictor.
MIN_MARGIN = 5.0


def calibration_configs(space: SearchSpace, seed: int, n: int = CALIBRATION_CONFIGS) -> list[PeftConfig]:
    """`n` distinct random valid configurations, the same for a given seed."""
    rng = np.random.default_rng([seed, 7919])
    configs: dict[str, PeftConfig] = {}
    for _ in range(100 * n):
        config = space.sample(rng)
        configs.setdefault(config.to_json(), config)
        if len(configs) == n:
            break
    return list(configs.values())


def calibrate(
    train: Callable[[PeftConfig, Fidelity], float],
    space: SearchSpace,
    base: Fidelity,
    seed: int,
    path: Path | None = None,
    ladder: Sequence[tuple[int, float]] | None = None,
    n_configs: int | None = None,
    on_rung: Callable[[dict[str, Any]], None] | None = None,
    constant_baseline: float | None = None,
    available: int | None = None,
) -> tuple[Fidelity, list[dict[str, Any]]]:
    """Climb `ladder` from `base` until the configurations explain half of the score variance and
    their mean score is `MIN_MARGIN` above `constant_baseline` (the constant predictor's; None: no margin rule).

    `train(config, fidelity) -> score` trains one configuration. Returns the chosen fidelity and
    one record per rung tried: {"fidelity", "configs", "scores" (per configuration, one per seed),
    "noise", "mean_score", "constant_baseline", "chosen"}. `path`: a JSON file of finished trainings,
    read and extended (resume). `on_rung(record)` is called after each rung. `ladder`, `n_configs`:
    default AUTO_LADDER, CALIBRATION_CONFIGS. `available`: the task's train examples; a rung asks for at
    most these, and a rung that would train the same examples and epochs as the one before is skipped.
    """
    ladder = AUTO_LADDER if ladder is None else ladder
    n_configs = CALIBRATION_CONFIGS if n_configs is None else n_configs
    done: dict[str, float] = json.loads(path.read_text()) if path is not None and path.is_file() else {}
    configs = calibration_configs(space, seed, n_configs)
    records: list[dict[str, Any]] = []
    chosen = base
    tried: set[tuple[int, float]] = set()
    for examples, epochs in ladder:
        if available is not None:
            examples = min(examples, available)
        if (examples, epochs) in tried:
            continue
        tried.add((examples, epochs))
        rung = replace(base, train_examples=examples, epochs=epochs)
        scores = []
        for config in configs:
            pair = []
            for s in (rung.seed, rung.seed + 1):
                run = {"config": config.to_dict(), "fidelity": replace(rung, seed=s).to_dict()}
                key = json.dumps(run, sort_keys=True)
                if key not in done:
                    done[key] = float(train(config, replace(rung, seed=s)))
                    if path is not None:
                        write_text_atomic(path, json.dumps(done, indent=1))  # read back on resume
                pair.append(done[key])
            scores.append(pair)
        noise = estimate_noise(scores)
        mean_score = float(np.mean(scores))
        record = {"fidelity": rung.to_dict(), "configs": [c.to_dict() for c in configs], "scores": scores,
                  "noise": noise.to_dict(), "mean_score": mean_score, "constant_baseline": constant_baseline,
                  "chosen": False}
        records.append(record)
        chosen = rung
        if on_rung is not None:
            on_rung(record)
        if noise.config_share is not None and noise.config_share >= MIN_CONFIG_SHARE and clears_baseline(record):
            break
    records[-1]["chosen"] = True
    return chosen, records


def clears_constant(score: float, constant: float | None) -> bool:
    """Whether `score` is `MIN_MARGIN` points above the constant predictor's `constant` (True when unknown)."""
    return constant is None or not np.isfinite(constant) or score >= constant + MIN_MARGIN


def clears_baseline(record: dict[str, Any]) -> bool:
    """Whether a rung's mean calibration score is `MIN_MARGIN` above the constant predictor (True when unknown)."""
    return clears_constant(record["mean_score"], record.get("constant_baseline"))


def describe_calibration(records: Sequence[dict[str, Any]]) -> str:
    """One line per rung: its examples x epochs, the configuration share, seed SD and mean score
    against the constant predictor, and which was chosen."""
    lines = []
    for r in records:
        f, n = r["fidelity"], r["noise"]
        share = format_share(n["config_share"])
        sd = "?" if n["seed_sd"] is None else f"{n['seed_sd']:.2f}"
        mean = f", mean {np.mean(r['scores']):.1f}"
        if r.get("constant_baseline") is not None:
            mean += f" (constant predictor {r['constant_baseline']:.1f}{'' if clears_baseline(r) else ', too close'})"
        lines.append(f"  {f['train_examples']} examples x {f['epochs']:g} epochs: configuration share {share}, "
                     f"seed SD {sd}{mean} ({len(r['scores'])} configurations x 2 seeds)"
                     f"{'  <- chosen' if r['chosen'] else ''}")
    return "\n".join(lines)
