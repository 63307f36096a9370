"""A synthetic search with promotion, no training: the problem of tests/test_promotion.py.

Run as a script (`python tests/promotion_worker.py OUT_DIR [SECONDS [WORKERS]]`), it is one worker of
the study in OUT_DIR: several started together share it. SECONDS: how long each evaluation sleeps;
WORKERS: wait until that many workers have started (files OUT_DIR/ready-PID) before searching.

Five configurations of a 2-layer space (SA 0/2/8 x PT 0/2, layers fixed on). At the search
fidelity the order of some is the reverse of their order at higher fidelities: SA8+PT2 beats
SA2+PT2 there (80 against 75), while above it SA2+PT2 wins (85 against 70) at fewer parameters.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import SMALL_SPEC, study_metadata  # noqa: E402

from autopeft.search.attrs import REPORT_SCORE_ATTR  # noqa: E402
from autopeft.search.promotion import PromotionPlan, run_promotion  # noqa: E402
from autopeft.search.runner import TrialResult, run_search  # noqa: E402
from autopeft.search.samplers import make_sampler  # noqa: E402
from autopeft.search.storage import open_study  # noqa: E402
from autopeft.space import PeftConfig, SearchSpace  # noqa: E402
from autopeft.training import Fidelity  # noqa: E402

SPACE = SearchSpace(2, serial_adapter=(0, 2, 8), prefix_length=(0, 2), fixed_layers=(True, True))
SPEC = SMALL_SPEC.__class__(**{**SMALL_SPEC.to_dict(), "n_layers": 2})
STANDARDS = SPACE.standard_modules(SPEC.hidden_size)  # SA2 and PT2, in both layers
LOW = {"SA2": 60, "PT2": 70, "SA2+PT2": 75, "SA8": 65, "SA8+PT2": 80}
HIGH = {"SA2": 80, "PT2": 55, "SA2+PT2": 85, "SA8": 66, "SA8+PT2": 70}
PLAN = PromotionPlan(k=3, rungs=(Fidelity(train_examples=200, epochs=2), Fidelity(train_examples=400, epochs=3)),
                     labels=("200x2", "400x3"))
EXPLORE = SPACE.n_valid()  # every configuration, so that the low-fidelity front is known exactly


def name(config: PeftConfig) -> str:
    return config.describe().split(" @")[0]


def score(config: PeftConfig, rung: int, seed: int) -> float:
    """The synthetic score: the low table at the search fidelity, the high one above; seed noise of +-0.3."""
    table = LOW if rung == 0 else HIGH
    return table[name(config)] + 0.3 * (1 if seed % 2 else -1)


def open_synthetic(out: Path, seed: int = 0):
    metadata = study_metadata(space=SPACE.to_dict(), model_spec=SPEC.to_dict(), promotion=PLAN.to_dict(),
                              standards={k: c.to_dict() for k, c in STANDARDS.items()}, fidelity_label="32x1")
    sampler = make_sampler("random", SPACE, seed=seed, standards=list(STANDARDS.values()))
    return open_study(None, "autopeft", out, metadata, sampler)


def search(out: Path, sleep: float = 0.0, fail_at: int | None = None,
           before_promotion: Callable[[optuna.Study], None] | None = None, plan: PromotionPlan = PLAN) -> None:
    """Explore every configuration, then promote by `plan`; `fail_at`: raise KeyboardInterrupt at that promoted
    evaluation; `before_promotion(study)`: called between the two."""
    study = open_synthetic(out)
    calls = []

    def explore(config: PeftConfig, trial) -> TrialResult:
        time.sleep(sleep)
        return TrialResult(score(config, 0, 0), SPEC.percent(config))

    def promote(config: PeftConfig, trial, task) -> TrialResult:
        calls.append(task)
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        time.sleep(sleep)
        result = score(config, task.rung, task.seed_index)
        if task.rung == len(PLAN.rungs):
            trial.set_user_attr(REPORT_SCORE_ATTR, result - 1.0)  # the report split: a little lower
        return TrialResult(result, SPEC.percent(config))

    run_search(study, SPACE, explore, EXPLORE, progress=False)
    if before_promotion is not None:
        before_promotion(study)
    run_promotion(study, SPACE, plan, promote, progress=False)


def wait_for_workers(out: Path, n: int, timeout: float = 180.0) -> None:
    """Start together: a loaded machine can take seconds to start a Python process."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"ready-{os.getpid()}").touch()
    deadline = time.time() + timeout
    while len(list(out.glob("ready-*"))) < n and time.time() < deadline:
        time.sleep(0.1)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    if len(sys.argv) > 3:
        wait_for_workers(out, int(sys.argv[3]))
    search(out, sleep=float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
