"""Promotion (search.promotion): the ladder, successive halving, the answer, resume and two workers,
on the synthetic problem of tests/promotion_worker.py (no training)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState, create_trial

import promotion_worker as synthetic
from autopeft.errors import UserError
from autopeft.report import answer_verdict, write_report
from autopeft.search.attrs import CONFIG_ATTR, PROMOTION_ATTR, REPORT_SCORE_ATTR, STANDARD_ATTR
from autopeft.search.promotion import PromotionPlan, answer_members, check_plan_fits, fidelity_ladder, next_tasks
from autopeft.search.results import completed_trials, config_key, front_rows
from autopeft.training import FIDELITIES, Fidelity


def promoted_work(study) -> Counter:
    """(configuration, rung, seed) -> how many COMPLETE trials evaluated it."""
    return Counter((config_key(t.user_attrs["config"]), t.user_attrs[PROMOTION_ATTR]["rung"],
                    t.user_attrs[PROMOTION_ATTR]["seed_index"])
                   for t in study.get_trials(states=(TrialState.COMPLETE,)) if PROMOTION_ATTR in t.user_attrs)


def describe(members) -> list[str]:
    return [synthetic.name(synthetic.PeftConfig.from_dict(m["config"])) for m in members]


def check_finished(study) -> None:
    """Each promoted evaluation ran once; the answer is at the target with 2 seeds, and is the high-fidelity best."""
    work = promoted_work(study)
    assert work and set(work.values()) == {1}, work
    assert next_tasks(study, synthetic.PLAN).finished
    # rung 1: the 3 front members spread along it, and the standard modules of rank <= 1 (PT2 and SA2)
    rung1 = {synthetic.name(synthetic.PeftConfig.from_dict(json.loads(k))) for k, r, _ in work if r == 1}
    assert rung1 == {"PT2", "SA2+PT2", "SA8+PT2", "SA2"}
    answer = answer_members(study, synthetic.PLAN)
    assert all(m["fidelity"] == "400x3" and m["n_seeds"] == 2 for m in answer)
    best = max(answer, key=lambda m: m["selection_score"])
    assert describe([best]) == ["SA2+PT2"]  # the high-fidelity best, though SA8+PT2 beat it at the search fidelity
    low_best = max(front_rows(study), key=lambda r: r["score"])
    assert synthetic.name(synthetic.PeftConfig.from_dict(low_best["config"])) == "SA8+PT2"
    assert "SA8+PT2" not in describe(answer)
    assert best["scores"] == pytest.approx([84.7 - 1, 85.3 - 1])  # the report split's scores, by seed
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def test_promotion_returns_the_high_fidelity_best_and_stores_each_fidelity(tmp_path):
    synthetic.search(tmp_path)
    study = synthetic.open_synthetic(tmp_path)
    check_finished(study)
    # the search's own trials: the standard modules first, at the search fidelity, named
    explored = completed_trials(study)
    assert [r["standard"] for r in explored[:2]] == ["SA2", "PT2"] and not any(r["standard"] for r in explored[2:])
    assert {r["fidelity"] for r in explored} == {"32x1"}
    promoted = completed_trials(study, promoted=True)
    assert {r["fidelity"] for r in promoted} == {"200x2", "400x3"}
    assert {r["standard"] for r in promoted if r["fidelity"] == "400x3"} == {"SA2", None}
    # the answer beside the front: front.json, trials.csv, and the verdict against the best standard module
    paths = write_report(study, tmp_path)
    summary = json.loads(paths["front.json"].read_text())
    assert [a["configuration"].split(" @")[0] for a in summary["answer"]] == ["SA2", "SA2+PT2"]
    assert {"config", "standard", "fidelity", "score", "score_std", "n_seeds", "percent"} <= set(summary["answer"][0])
    verdict = answer_verdict(study)
    assert len(verdict) == 1 and verdict[0].startswith("the search beat SA2") and "+5.00 points" in verdict[0]
    header = paths["trials.csv"].read_text().splitlines()[0].split(",")
    assert {"standard", "fidelity", "report_score"} <= set(header)


def add_target_runs(study, serial_adapter: int, standard: str | None, percent: float, selection: list[float],
                    report: list[float]) -> None:
    """One configuration's trials at the synthetic plan's target rung, one per seed: selection and report scores."""
    config = {**synthetic.STANDARDS["SA2"].to_dict(), "serial_adapter": serial_adapter}
    for seed_index, (chosen_on, reported) in enumerate(zip(selection, report)):
        study.add_trial(create_trial(values=[chosen_on, percent], user_attrs={
            CONFIG_ATTR: config, STANDARD_ATTR: standard, REPORT_SCORE_ATTR: reported,
            PROMOTION_ATTR: {"rung": len(synthetic.PLAN.rungs), "seed_index": seed_index, "fidelity": "400x3"}}))


@pytest.mark.parametrize("larger_report, expected", [
    ([82.0, 84.0], "; against SA4 (2 %), the best larger standard module that did, it scores +1.50 points "
                   "(per seed: +2.00, +1.00)"),
    ([85.0, 86.0], "; against SA4 (2 %), the best larger standard module that did, it scores -1.00 points "
                   "(per seed: -1.00, -1.00)"),
    (None, ", so it was not compared with one there"),
])
def test_with_no_standard_module_at_or_below_its_size_the_verdict_compares_with_a_larger_one(tmp_path, larger_report,
                                                                                              expected):
    study = synthetic.open_synthetic(tmp_path)
    add_target_runs(study, 1, None, 0.5, [80.0, 81.0], [84.0, 85.0])  # the answer: SA1, below any standard module
    if larger_report is not None:
        # two larger standard modules, both dominated on the selection split: the one compared is the better there
        # (SA4), not the smaller one, which also reports more (SA2)
        add_target_runs(study, 2, "SA2", 1.0, [78.0, 79.0], [88.0, 88.0])
        add_target_runs(study, 4, "SA4", 2.0, [79.0, 80.0], larger_report)
    verdict = answer_verdict(study)
    assert len(verdict) == 1 and verdict[0] == ("the search's best answer SA1 @ layers 0,1 (0.5 %) scores 84.50 ± 0.71 "
                                                "on the dev split at 400x3; no standard module at or below its size "
                                                f"reached 400x3{expected}"), verdict


@pytest.mark.parametrize("constant, cautioned", [(50.0, False), (76.0, False), (77.0, True), (90.0, True),
                                                  (float("nan"), False), (None, False)])
@pytest.mark.parametrize("standard", [None, "SA2"])
def test_the_verdict_cautions_when_the_answer_is_near_the_constant_predictor(tmp_path, constant, cautioned, standard):
    """MRPC's case: at the target the answer's selection score (81.0 here) is less than 5 points above what a
    constant prediction scores there, so the selection split did not rank by what the configurations learned. The
    comparison before the caution is the same either way (a searched answer, or a standard module's); a study
    without the constant predictor's score (None: an older one) gets no caution."""
    study = synthetic.open_synthetic(tmp_path)
    study.set_user_attr("constant_baseline", constant)
    add_target_runs(study, 1, standard, 0.5, [80.0, 82.0], [84.0, 85.0])
    verdict = answer_verdict(study)
    first = "the standard module SA2 is the recommendation" if standard else "the search's best answer SA1"
    assert verdict[0].startswith(first)
    assert len(verdict) == 1 + cautioned
    if cautioned:
        assert verdict[1] == (f"caution: on the selection split the answer scores 81.00 at 400x3, less than 5 points "
                              f"above the constant predictor's {constant:.2f}; there the configurations at the target "
                              "are not told apart from a constant prediction, so this choice is weak evidence. Raise "
                              "the target's epochs (--target EXAMPLESxEPOCHS), or compare the standard modules on "
                              "more held-out data")


def test_an_interrupted_promotion_resumes_without_repeating_work(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        synthetic.search(tmp_path, fail_at=3)
    study = synthetic.open_synthetic(tmp_path)
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.user_attrs["fail_reason"] for t in interrupted] == ["interrupted"]
    assert sum(promoted_work(study).values()) == 2
    synthetic.search(tmp_path)  # the same command again
    check_finished(synthetic.open_synthetic(tmp_path))


def test_two_workers_share_the_promotion(tmp_path):
    script = str(Path(__file__).with_name("promotion_worker.py"))
    procs = [subprocess.Popen([sys.executable, script, str(tmp_path), "0.5", "2"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    study = synthetic.open_synthetic(tmp_path)
    check_finished(study)
    workers = {t.user_attrs["worker"]["pid"] for t in study.get_trials(states=(TrialState.COMPLETE,))
               if PROMOTION_ATTR in t.user_attrs}
    who = [(t.number, t.state.name, t.user_attrs.get("worker")) for t in study.trials]
    assert len(workers) == 2, f"one worker did all the promotion: {who}"


def test_trials_left_queued_are_not_left_behind(tmp_path):
    """What a second worker can leave queued when promotion starts: a search trial given back over budget, and one
    promoted evaluation queued twice (two workers at once, or one killed between queueing and asking)."""
    def queue_pt2(study, rung: int = 1):
        pt2 = synthetic.STANDARDS["PT2"]
        study.enqueue_trial(synthetic.SPACE.to_params(pt2), user_attrs={
            PROMOTION_ATTR: {"rung": rung, "seed_index": 0, "fidelity": synthetic.PLAN.labels[rung - 1]},
            CONFIG_ATTR: pt2.to_dict(), STANDARD_ATTR: "PT2"})

    def queue_strays(study):
        study.enqueue_trial(synthetic.SPACE.to_params(synthetic.STANDARDS["SA2"]))
        queue_pt2(study)
        queue_pt2(study)

    synthetic.search(tmp_path, before_promotion=queue_strays)
    check_finished(synthetic.open_synthetic(tmp_path))
    # one queued after promotion finished (a worker that lost the race for the last evaluation): the next run fails it
    queue_pt2(synthetic.open_synthetic(tmp_path))
    synthetic.search(tmp_path)
    study = synthetic.open_synthetic(tmp_path)
    check_finished(study)
    assert study.trials[-1].user_attrs["fail_reason"] == "not run: promotion finished before it was asked for"


def test_the_answer_holds_only_the_plans_members_at_the_target(tmp_path):
    """Runs at the target of a configuration the plan never took there (a study resumed with another plan holds
    them) are not part of the answer, however well they scored."""
    synthetic.search(tmp_path)
    study = synthetic.open_synthetic(tmp_path)
    add_target_runs(study, 8, None, synthetic.SPEC.percent(synthetic.PeftConfig.from_dict(
        {**synthetic.STANDARDS["SA2"].to_dict(), "serial_adapter": 8})), [95.0, 96.0], [95.0, 96.0])
    assert describe(answer_members(study, synthetic.PLAN)) == ["SA2", "SA2+PT2"]
    assert "SA8" not in describe(answer_members(study, synthetic.PLAN, front=False))


def test_a_fresh_trial_asked_while_promoting_is_failed_as_a_lost_race(tmp_path):
    """When another worker took the queued evaluation first, ask creates a new trial: it is failed, and says why."""
    from autopeft.search.promotion import _claim

    synthetic.search(tmp_path)
    study = synthetic.open_synthetic(tmp_path)
    trial = study.ask()
    assert _claim(study, trial) is None
    assert study.trials[-1].user_attrs["fail_reason"] == "not run: another worker took the queued evaluation first"


def test_the_ladder_climbs_to_the_target_and_skips_rungs_that_change_nothing():
    low = Fidelity(train_examples=800, epochs=3)
    rungs = fidelity_ladder(low, FIDELITIES["full"], available=5174)
    assert rungs[-1] == FIDELITIES["full"] and len(rungs) == 2
    costs = [800 * 3] + [r.n_train(5174) * r.epochs for r in rungs]
    assert all(b > a for a, b in zip(costs, costs[1:]))
    # a task smaller than the search fidelity's examples: every rung trains the same 250 examples
    small = fidelity_ladder(Fidelity(train_examples=640, epochs=2), FIDELITIES["full"], available=250)
    assert [(r.n_train(250), r.epochs) for r in small] == [(250, 3)]
    assert fidelity_ladder(low, Fidelity(train_examples=2400, epochs=3), 5174) == [Fidelity(train_examples=2400, epochs=3)]


def test_the_budget_holds_promotion_and_too_small_a_budget_is_refused():
    plan = PromotionPlan(2, (Fidelity(), Fidelity()), ("a", "b"))
    reserved = plan.max_trials(n_standards=4)
    assert reserved == 6 + (3 + 1) * 2  # 6 candidates at rung 1; then 3 and the best standard, 2 seeds each
    assert check_plan_fits(plan, 30, n_standards=4, n_init=3) == 30 - reserved
    with pytest.raises(UserError, match=r"raise budget to at least 21 or lower promote"):
        check_plan_fits(plan, 20, n_standards=4, n_init=3)
    with pytest.raises(UserError, match="final_seeds must be >= 2"):
        PromotionPlan(2, (Fidelity(),), ("a",), final_seeds=1)
    keep = PromotionPlan(2, (Fidelity(), Fidelity()), ("a", "b"), keep_standards=True)
    assert keep.max_trials(n_standards=4) == 6 + 6 * 2  # all 4 standard modules may stay, besides the best 3
    assert PromotionPlan.from_dict(keep.to_dict()) == keep and "keep_standards" not in plan.to_dict()


def test_keep_standards_takes_every_standard_module_in_the_ladder_to_the_target(tmp_path):
    """The variant, as promotion_pays.py --variant works it out: a finished search resumed with keep_standards adds
    only the standard module halved away at rung 1 (PT2, 55 there), with the target's 2 seeds."""
    synthetic.search(tmp_path)
    before = promoted_work(synthetic.open_synthetic(tmp_path))
    keep = dataclasses.replace(synthetic.PLAN, keep_standards=True)
    synthetic.search(tmp_path, plan=keep)
    study = synthetic.open_synthetic(tmp_path)
    added = promoted_work(study) - before
    pt2 = config_key(synthetic.STANDARDS["PT2"].to_dict())
    assert added == Counter({(pt2, 2, 0): 1, (pt2, 2, 1): 1}), added
    assert next_tasks(study, keep).finished
    everyone = answer_members(study, keep, front=False)
    assert {m["standard"] for m in everyone} == {"SA2", "PT2", None}
    assert describe(answer_members(study, keep)) == ["PT2", "SA2", "SA2+PT2"]  # PT2: the smallest, so on the front


def test_a_killed_promotion_resumes_and_each_evaluation_runs_once(tmp_path):
    """SIGKILL while a promoted trial runs: the next run fails it (its worker is dead), schedules it again, and
    finishes with every evaluation done once."""
    import signal
    import time

    script = str(Path(__file__).with_name("promotion_worker.py"))
    proc = subprocess.Popen([sys.executable, script, str(tmp_path), "0.5"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a promoted evaluation is running
        if (tmp_path / "study.db").is_file():
            study = synthetic.open_synthetic(tmp_path)
            if any(PROMOTION_ATTR in t.user_attrs for t in study.get_trials(states=(TrialState.RUNNING,))):
                break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("no promoted trial started: " + proc.communicate()[1][-2000:])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    synthetic.search(tmp_path)  # the same command again
    study = synthetic.open_synthetic(tmp_path)
    check_finished(study)
    stale = [t for t in study.trials if t.state == TrialState.FAIL]
    assert stale and all(t.user_attrs["fail_reason"].startswith("stale") for t in stale)


def test_standard_modules_far_below_the_front_are_not_promoted(tmp_path):
    """With the seed noise measured, a standard module is a candidate only within 2 seed SDs of the best front
    score at or below its size; the best standard module always goes up."""
    import optuna

    from autopeft.search.promotion import _candidates

    study = synthetic.open_synthetic(tmp_path)
    low = {"SA2": 60, "PT2": 70, "SA2+PT2": 75, "SA8": 65, "SA8+PT2": 80}
    configs = {synthetic.name(c): c for c in map(synthetic.SPACE.grid().config, synthetic.SPACE.grid().enumerate_valid())}
    for name, config in configs.items():  # every configuration with two seeds, +-0.5: a seed SD of about 0.7
        for index, noise in enumerate((-0.5, 0.5)):
            study.add_trial(optuna.trial.create_trial(
                params=synthetic.SPACE.to_params(config), distributions=synthetic.SPACE.optuna_distributions(),
                values=[low[name] + noise, synthetic.SPEC.percent(config)],
                user_attrs={"config": config.to_dict(), "replicate_index": index}))
    names = {synthetic.name(synthetic.PeftConfig.from_dict(m.config)) for m in _candidates(study, synthetic.PLAN)}
    # the 3 front members spread along it (PT2, SA2+PT2, SA8+PT2); SA2 (60) is 10 points below PT2 (70, fewer
    # parameters), far outside 2 seed SDs, so it stays; before the noise was known it went up (rank 1)
    assert names == {"PT2", "SA2+PT2", "SA8+PT2"}
