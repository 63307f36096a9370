"""The jobs behind the CLI: search, retrain the front, transfer, report, export.

Everything a later command needs (model, task source, space, fidelity) is stored in the
study's metadata, so `retrain`, `report` and `export` take just the study folder.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from autopeft.errors import SettingError, UserError, disk_full_reported, interrupts_deferred, write_text_atomic
from autopeft.log import get_logger
from autopeft.search.attrs import REPORT_SCORE_ATTR
from autopeft.search.pareto import spread_along_front  # noqa: F401 - also used from here by the benchmarks
from autopeft.search.record import StudyRecord
from autopeft.search.samplers.options import BO_SAMPLERS, BOOptions, SamplerSettings
from autopeft.search.storage import check_heartbeat
from autopeft.metrics import majority_baseline
from autopeft.models import load_model, load_tokenizer, weights_fingerprint
from autopeft.modules import model_spec
from autopeft.space import ModelSpec, PeftConfig, SearchSpace, standard_modules
from autopeft.tasks import Selection, TaskData, TaskSource
from autopeft.training import (FIDELITIES, FULL_FINETUNE, Fidelity, resolve_device, resolve_precision,
                               train_and_evaluate)

OBJECTIVES = ["score:maximize", "percent:minimize"]
logger = get_logger(__name__)  # progress of long jobs: see autopeft.log


# --- tasks and models ---------------------------------------------------------------------


def describe_model(model: str, num_labels: int) -> tuple[ModelSpec, Any]:
    """The backbone's ModelSpec (from one load of the model) and its tokenizer."""
    tokenizer = load_tokenizer(model)
    return model_spec(load_model(model, num_labels)), tokenizer


def make_space(spec: ModelSpec, space_file: str | None = None, lora: bool = False) -> SearchSpace:
    if space_file:
        return SearchSpace.from_file(space_file, spec.hidden_size, spec.n_layers)
    return SearchSpace.default(spec.hidden_size, spec.n_layers, lora=lora)


# --- search -------------------------------------------------------------------------------


@dataclass
class SearchSettings:
    """A search's settings, grouped by concern: the sampler (`SamplerSettings`), the fidelity (`Fidelity`),
    promotion, the storage. Checked on construction, before anything trains; a bad value raises
    `SettingError` naming the parameter."""

    model: str
    task: TaskData
    fidelity: Fidelity
    out_dir: Path
    budget: int = 20
    batch: int = 1
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    storage: str | None = None
    study_name: str = "autopeft"
    heartbeat: int | None = None  # seconds between trial heartbeats (database storages); None: the default, 0: off
    space_file: str | None = None
    lora: bool = True  # False: the paper's space (SA, PA, PT), without LoRA
    space: dict[str, Any] | None = None  # a stored SearchSpace.to_dict() (load_search); else space_file / lora
    retrain_top: int = 0
    retrain_seeds: int = 3
    progress: bool = True
    task_source: TaskSource | None = None  # where `task` comes from (None: its GLUE name)
    baselines: str | None = None  # "all": also train full fine-tuning at the search fidelity ("peft": nothing more)
    states_cache: str | Path | None = None  # folder for a disk copy of the lower-layer states (frozen.StatesCache)
    fidelity_auto: bool = False  # choose examples x epochs by calibration (autopeft.calibrate); `fidelity` is the base
    device: str = "auto"  # where trials train (training.resolve_device)
    promote: int = 0  # > 0: this many front candidates (+ the standard modules near it) go up to `target`
    target: Fidelity | None = None  # the fidelity the answer is earned at (None: the "full" preset)
    keep_standards: bool = False  # every standard module in the ladder goes to the target (PromotionPlan)

    def __post_init__(self) -> None:
        if isinstance(self.sampler, str):
            self.sampler = SamplerSettings(self.sampler)
        if not isinstance(self.sampler, SamplerSettings):
            raise SettingError("sampler", f"must be a sampler name or SamplerSettings, got {self.sampler!r}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget <= 0:
            raise SettingError("budget", f"must be a positive number of trials, got {self.budget!r}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch <= 0:
            raise SettingError("batch", f"must be >= 1, got {self.batch!r}")
        check_heartbeat(self.heartbeat, self.storage)
        resolve_device(self.device)  # a device that is not there fails here, not as failed trials
        self.fidelity = resolve_precision(self.fidelity, self.device)  # what the study stores is what runs
        if isinstance(self.promote, bool) or not isinstance(self.promote, int) or self.promote < 0:
            raise SettingError("promote", f"must be a number of front candidates >= 0 (0: off), got {self.promote!r}")
        if self.target is not None and not self.promote:
            raise SettingError("target", "is the fidelity promotion goes up to; give promote as well")
        if self.keep_standards and not self.promote:
            raise SettingError("keep_standards", "keeps standard modules on promotion's ladder; give promote as well")
        if self.baselines not in (None, "peft", "all"):
            raise SettingError("baselines", f"must be 'peft' or 'all', got {self.baselines!r}")
        if isinstance(self.retrain_seeds, bool) or not isinstance(self.retrain_seeds, int) or self.retrain_seeds < 1:
            raise SettingError("retrain_seeds", f"must be >= 1, got {self.retrain_seeds!r}")


class StudyReport(NamedTuple):
    """A study and the report files written for it (name -> path)."""

    study: Any  # optuna.Study
    paths: dict[str, Path]


def search(settings: SearchSettings) -> StudyReport:
    """Run (or resume) a search, write its report, optionally retrain part of the front.

    The standard modules of the space are its first trials; trials train on the search task
    and are scored on the selection split (`TaskSource.splits`). With `promote`, the front then goes
    up a ladder of fidelities to `target` (`search.promotion`), and the answer there is scored on
    the report split. A full disk raises `errors.DiskFullError`; a trial it cut short runs again
    on resume.
    """
    from autopeft.search.storage import describe_storage

    s = settings
    with disk_full_reported(f"the study folder {s.out_dir}", storage=describe_storage(s.storage, s.out_dir)):
        return _search(s)


def _search(settings: SearchSettings) -> StudyReport:
    from autopeft.frozen import open_states_cache
    from autopeft.search.pareto import default_reference_point, space_max_percent
    from autopeft.search.promotion import PromotionPlan, check_plan_fits, fidelity_ladder, run_promotion
    from autopeft.search.samplers import make_sampler
    from autopeft.search.results import replicate_index
    from autopeft.search.runner import TrialResult, run_search
    from autopeft.search.storage import open_study

    s = settings  # every setting is checked by SearchSettings and SamplerSettings, before the model loads
    options = s.sampler.options()
    # what the BO samplers run with (their defaults filled in); the others neither replicate nor calibrate
    bo = BOOptions.from_options(s.sampler.name, options) if s.sampler.name in BO_SAMPLERS else None
    source = s.task_source or TaskSource(s.task.spec.name)
    search_task, report_split, selection = source.splits(s.task)
    spec, tokenizer = describe_model(s.model, s.task.spec.num_labels)
    space = (SearchSpace.from_dict(s.space, spec.hidden_size, spec.n_layers) if s.space is not None
             else make_space(spec, s.space_file, s.lora))
    standards = space.standard_modules(spec.hidden_size)
    cache = open_states_cache(s.states_cache)
    fidelity, calibration = s.fidelity, None
    if s.fidelity_auto:
        fidelity, calibration = _auto_fidelity(s, search_task, space, tokenizer, cache)
    n_train = len(search_task.train)
    plan, explore_budget = None, s.budget
    if s.promote:
        rungs = fidelity_ladder(fidelity, resolve_precision(s.target or FIDELITIES["full"], s.device), n_train)
        plan = PromotionPlan(s.promote, tuple(rungs), tuple(f.describe(n_train) for f in rungs),
                             keep_standards=s.keep_standards)
        explore_budget = check_plan_fits(plan, s.budget, len(standards), s.sampler.n_init)
    # Default: score 0 (chance level / lower bound of the metrics), percent = the space's maximum.
    user_ref = s.sampler.ref_point
    ref = user_ref or default_reference_point(space_max_percent(space, spec))
    record = StudyRecord(
        model=s.model, model_weights=weights_fingerprint(s.model), model_spec=spec.to_dict(),
        task=s.task.spec.name, task_identity=s.task.identity(), task_source=source.to_dict(),
        metric=s.task.spec.primary_metric,
        space=space.to_dict(), standards={name: config.to_dict() for name, config in standards.items()},
        fidelity=fidelity.to_dict(), fidelity_label=fidelity.describe(n_train), selection=selection.to_dict(),
        objectives=OBJECTIVES, sampler=s.sampler.name, seed=s.sampler.seed, n_init=s.sampler.n_init,
        sampler_options={k: v for k, v in options.items() if k not in ("replicates", "calibration_pairs")},
        reference_point=list(ref), user_reference_point=list(user_ref) if user_ref else None,
        constant_baseline=majority_baseline(s.task.spec, search_task.train.labels, search_task.dev.labels)["score"],
        replicates=bo.replicates if bo else 0.0, calibration_pairs=bo.calibration_pairs if bo else 0,
        promotion=plan.to_dict() if plan else None, calibration=calibration,
    )
    sampler = make_sampler(s.sampler.name, space, seed=s.sampler.seed, n_init=s.sampler.n_init,
                           percent_fn=spec.percent, standards=list(standards.values()), **options)
    study = open_study(s.storage, s.study_name, s.out_dir, record.to_dict(), sampler, heartbeat=s.heartbeat)
    with warnings.catch_warnings():  # set_metric_names is experimental in Optuna 5
        warnings.simplefilter("ignore")
        study.set_metric_names([s.task.spec.primary_metric, "percent_params"])  # what optuna-dashboard shows

    def train(config: PeftConfig, trial, at: Fidelity, seed: int, **kwargs: Any) -> TrialResult:
        with interrupts_deferred():  # run_search lets a Ctrl-C raise at once in here, but not mid-write
            trial.set_user_attr("train_seed", seed)
        result = train_and_evaluate(s.model, search_task, config, replace(at, seed=seed), progress=False,
                                    tokenizer=tokenizer, cache=cache, device=s.device, **kwargs)
        extra = {"loss_curve": result.loss_curve, "steps": result.steps}
        if result.report_metrics is not None:
            extra["report_metrics"] = result.report_metrics
        return TrialResult(score=result.score, percent=result.percent, metrics=result.metrics,
                           wall_time_s=result.wall_time_s, trainable_params=result.trainable_params, extra=extra)

    def evaluate(config: PeftConfig, trial) -> TrialResult:
        return train(config, trial, fidelity, fidelity.seed + replicate_index(trial))  # a replicate: a new seed

    def promote(config: PeftConfig, trial, task) -> TrialResult:
        at = plan.rungs[task.rung - 1]
        if task.rung < len(plan.rungs):
            return train(config, trial, at, at.seed + task.seed_index)
        run_dir = Path(s.out_dir) / "promoted" / f"trial_{trial.number}"  # the answer's weights, kept
        result = train(config, trial, at, at.seed + task.seed_index, report=report_split, out_dir=run_dir)
        with interrupts_deferred():
            trial.set_user_attr(REPORT_SCORE_ATTR, result.extra["report_metrics"]["score"])
            trial.set_user_attr("run_dir", str(run_dir.relative_to(s.out_dir)))  # relative: the folder may move
        return result

    def warn_early(study, _trial) -> None:
        """Once the standard modules are in: the warning the report would end with, while a restart costs little."""
        nonlocal checked
        if checked or calibration:
            return
        from autopeft.search.results import completed_trials

        if len({r["standard"] for r in completed_trials(study) if r["standard"]}) == len(standards):
            checked = True
            if warning := _standards_near_constant(study, StudyRecord.of(study)):
                logger.warning(warning + " (to change it now: Ctrl-C, then rerun with a new --out)")

    checked = False
    run_search(study, space, evaluate, explore_budget, s.batch, progress=s.progress, ref=ref, on_trial_end=warn_early)
    if plan is not None:
        run_promotion(study, space, plan, promote, progress=s.progress)
    if s.baselines == "all":
        run_baselines(s.model, search_task, fidelity, 1, s.out_dir, spec, tokenizer, progress=s.progress,
                      device=s.device, configs={"full fine-tuning": FULL_FINETUNE})
    if s.retrain_top:
        retrain_front(s.out_dir, s.storage, s.study_name, top=s.retrain_top, seeds=s.retrain_seeds,
                      progress=s.progress, device=s.device)
    from autopeft.report import write_report  # matplotlib: imported once trials are done, not at start-up

    paths = write_report(study, s.out_dir, ref=ref, baselines=_stored_baselines(s.out_dir))
    return StudyReport(study, paths)


def _auto_fidelity(s: SearchSettings, task: TaskData, space: SearchSpace, tokenizer,
                   cache) -> tuple[Fidelity, list[dict[str, Any]]]:
    """`--fidelity auto`: the stored choice when the study exists, else a calibration (`autopeft.calibrate`)."""
    from autopeft.calibrate import calibrate, describe_calibration
    from autopeft.search.storage import stored_study_attrs

    stored = stored_study_attrs(s.storage, s.study_name, s.out_dir)
    if stored is not None:
        if not stored.get("calibration"):
            raise UserError(
                f"study '{s.study_name}' in {s.out_dir} was created with the fidelity "
                f"{json.dumps(stored.get('fidelity'))}, not --fidelity auto; "
                "resume it with its own fidelity options, or use a new --out dir")
        return Fidelity(**stored["fidelity"]), stored["calibration"]

    def train(config: PeftConfig, fidelity: Fidelity) -> float:
        result = train_and_evaluate(s.model, task, config, fidelity, progress=False, tokenizer=tokenizer, cache=cache,
                                    device=s.device)
        return result.score

    logger.info("calibrating the fidelity (--fidelity auto): the same configurations, two seeds each, rung by rung")
    constant = majority_baseline(task.spec, task.train.labels, task.dev.labels)["score"]
    fidelity, records = calibrate(train, space, s.fidelity, s.sampler.seed, Path(s.out_dir) / "calibration.json",
                                  on_rung=lambda r: logger.info(describe_calibration([r])), constant_baseline=constant,
                                  available=len(task.train))
    return fidelity, records


def report_text(study) -> str:
    """The front table, the seed-noise line and, when the noise swamps the configurations, a warning."""
    from autopeft.report import format_front_table
    from autopeft.search.results import front_rows, noise_estimate

    from autopeft.calibrate import MIN_MARGIN, clears_baseline, describe_calibration

    from autopeft.report import answer_rows, answer_verdict, format_answer_table

    noise = noise_estimate(study)
    record = StudyRecord.of(study)
    fidelity = record.fidelity_label
    lines = [f"front of means at the search fidelity{f' ({fidelity})' if fidelity else ''}:",
             format_front_table(front_rows(study)), f"noise: {noise.describe()}"]
    if selection := record.selection:
        lines.append("selection: " + Selection.from_dict(selection).describe())
    if answer := answer_rows(study):
        lines += [f"answer at the target fidelity ({answer[0]['fidelity']}):", format_answer_table(answer)]
    elif not record.promotion:
        lines.append(f"note: this front is at the search fidelity{f' ({fidelity})' if fidelity else ''}, one seed per "
                     "trial unless replicated; --promote K takes it up to the fidelity you will train at, over seeds, "
                     "and compares it there with the standard modules")
    lines += answer_verdict(study)
    if record.calibration:
        calibration = describe_calibration(record.calibration)
        lines.insert(0, "fidelity chosen by calibration (--fidelity auto):\n" + calibration)
        if not clears_baseline(record.calibration[-1]):
            lines.append(f"warning: even at the chosen fidelity the calibration models score less than {MIN_MARGIN:g} "
                         "points above the constant predictor, so the front may only rank how far configurations "
                         f"stray from predicting one class; {_more_fidelity_advice(record)}")
    elif warning := _standards_near_constant(study, record):
        lines.append(warning)
    if noise.too_noisy:
        lines.append(
            f"warning: at this fidelity seed noise explains more than half of the score differences (configuration "
            f"share {100 * noise.config_share:.0f}% < 50%), so single scores cannot rank configurations; "
            f"{_more_fidelity_advice(record, auto=True)}")
    return "\n".join(lines)


def _standards_near_constant(study, record: StudyRecord) -> str | None:
    """Without calibration, the standard modules' search-fidelity trials tell whether that fidelity rises above
    the constant predictor: a warning when none scored `MIN_MARGIN` points above it (None otherwise)."""
    from autopeft.calibrate import MIN_MARGIN, clears_constant
    from autopeft.search.results import completed_trials

    constant = record.constant_baseline
    standards = [r["score"] for r in completed_trials(study) if r["standard"]]
    if not standards or clears_constant(max(standards), constant):
        return None
    return (f"warning: at the search fidelity no standard module scored {MIN_MARGIN:g} points above the constant "
            f"predictor (best {max(standards):.2f} against {constant:.2f}), so the search's scores may only rank how "
            f"far configurations stray from a constant prediction; use --fidelity auto, or "
            f"{_more_fidelity_advice(record)}")


def _more_fidelity_advice(record: StudyRecord, auto: bool = False) -> str:
    """What would make the scores rank configurations, for this task's size: more examples only where the train
    split has more, and a word on the selection split when it is small."""
    label, asked = record.fidelity_label, (record.fidelity or {}).get("train_examples")
    used = int(label.split("x")[0]) if label else None
    whole = used is not None and (asked is None or (isinstance(asked, int) and used < asked))
    if whole:
        advice = f"every one of the {used} train examples is used already, so only --epochs can raise the fidelity"
    else:
        advice = "raise --train-examples and/or --epochs" + (", or use --fidelity auto" if auto else "")
    selection = record.selection or {}
    if selection.get("examples") is not None and selection["examples"] < SMALL_SELECTION:
        advice += (f"; with only {selection['examples']} examples to choose on, the selection split itself limits how "
                   "finely configurations can be ranked")
    return advice


#: Below this many selection examples, the advice on noisy scores says that the split limits the ranking.
SMALL_SELECTION = 200


def open_existing(out_dir: str | Path, storage: str | None, study_name: str):
    import optuna

    from autopeft.search.storage import make_storage

    out_dir = Path(out_dir)
    if storage is None and not (out_dir / "study.db").is_file():
        raise UserError(f"no study found in {out_dir} (no study.db); pass the --out folder of a search, or --storage")
    try:
        return optuna.load_study(study_name=study_name, storage=make_storage(storage, out_dir))
    except KeyError:
        raise UserError(f"storage has no study named '{study_name}'; check --study") from None


def report(out_dir: str | Path, storage: str | None = None, study_name: str = "autopeft") -> StudyReport:
    """(Re)write a study's tables and plots in out_dir."""
    from autopeft.report import write_report

    study = open_existing(out_dir, storage, study_name)
    return StudyReport(study, write_report(study, Path(out_dir), baselines=_stored_baselines(out_dir)))


def export(out_dir: str | Path, pick: int, path: str | Path, storage: str | None = None,
           study_name: str = "autopeft") -> Path:
    from autopeft.report import export_config

    study = open_existing(out_dir, storage, study_name)
    return export_config(study, pick, Path(path))


# --- retraining -----------------------------------------------------------------------------


def train_seeds(model: str, task: TaskData, config: PeftConfig | str, fidelity: Fidelity, seeds: int,
                out_dir: Path, tokenizer=None, progress: bool = True, device: str = "auto") -> list[dict[str, Any]]:
    """Train `config` with seeds 0..seeds-1 on `device`; results already in out_dir/seed_S are reused.

    The seeds share the lower layers' states (the process's in-memory `frozen.open_states_cache`).
    """
    from autopeft.frozen import open_states_cache

    results = []
    for seed in range(seeds):
        run_dir = out_dir / f"seed_{seed}"
        done = run_dir / "result.json"
        if done.is_file():
            results.append(json.loads(done.read_text()))
            continue
        result = train_and_evaluate(model, task, config, replace(fidelity, seed=seed), out_dir=run_dir,
                                    tokenizer=tokenizer, progress=progress, cache=open_states_cache(None),
                                    device=device)
        row = {"seed": seed, **result.to_dict()}
        write_text_atomic(done, json.dumps(row))  # a full disk leaves no half file to trip the next run
        results.append(row)
    return results


def _summary(scores: list[float]) -> tuple[float, float]:
    return float(np.mean(scores)), float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0


def retrain_front(out_dir: str | Path, storage: str | None = None, study_name: str = "autopeft", top: int = 0,
                  seeds: int = 3, fidelity_overrides: dict[str, Any] | None = None,
                  progress: bool = True, device: str = "auto") -> list[dict[str, Any]]:
    """Retrain K front configurations (spread along the front) at full fidelity over `seeds` seeds.

    Weights go to out_dir/retrained/trial_N/seed_S/ (reload with autopeft.modules.load_peft);
    mean and std are recorded in the study and shown in its report.
    """
    from autopeft.search.storage import describe_storage

    if seeds < 1:
        raise SettingError("seeds", f"must be >= 1, got {seeds}")
    out_dir = Path(out_dir)
    with disk_full_reported(f"the study folder {out_dir}", storage=describe_storage(storage, out_dir)):
        return _retrain_front(out_dir, open_existing(out_dir, storage, study_name), top, seeds, fidelity_overrides,
                              progress, device)


def _retrain_front(out_dir: Path, study, top: int, seeds: int, fidelity_overrides: dict[str, Any] | None,
                   progress: bool, device: str) -> list[dict[str, Any]]:
    from autopeft.search.results import front_rows, record_retrained

    record = StudyRecord.of(study)
    task = TaskSource.from_dict(record.task_source).load()
    fidelity = resolve_precision(replace(FIDELITIES["full"], **(fidelity_overrides or {})), device)
    tokenizer = load_tokenizer(record.model)
    picked = spread_along_front(front_rows(study), top)
    logger.info(f"retraining {len(picked)} front configuration(s) x {seeds} seed(s) at full fidelity")
    rows = []
    for row in picked:
        config = PeftConfig.from_dict(row["config"])
        run_dir = out_dir / "retrained" / f"trial_{row['number']}"
        results = train_seeds(record.model, task, config, fidelity, seeds, run_dir, tokenizer, progress, device)
        scores = [r["score"] for r in results]
        record_retrained(study, row["number"], scores)
        mean, std = _summary(scores)
        logger.info(f"  trial {row['number']:>3} {config.describe():<40} search {row['score']:.2f} "
                    f"-> retrained {mean:.2f} ± {std:.2f}")
        rows.append({**row, "retrained_mean": mean, "retrained_std": std, "retrained_scores": scores})
    return rows


# --- baselines and transfer --------------------------------------------------------------------


def baseline_configs(spec: ModelSpec, full_finetuning: bool = True) -> dict[str, PeftConfig | str]:
    """The standard modules (`space.standard_modules`), plus (optionally) full fine-tuning."""
    configs: dict[str, PeftConfig | str] = dict(standard_modules(spec.hidden_size, spec.n_layers))
    if full_finetuning:
        configs["full fine-tuning"] = FULL_FINETUNE
    return configs


def _stored_baselines(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / "baselines.json"
    return list(json.loads(path.read_text()).values()) if path.is_file() else []


def run_baselines(model: str, task: TaskData, fidelity: Fidelity, seeds: int, out_dir: Path, spec: ModelSpec,
                  tokenizer, progress: bool = True, full_finetuning: bool = True, device: str = "auto",
                  configs: dict[str, PeftConfig | str] | None = None) -> list[dict[str, Any]]:
    """Train the baselines (default: `baseline_configs`; reusing finished seeds) and store them in
    out_dir/baselines.json."""
    path = out_dir / "baselines.json"
    stored: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    for name, config in (configs or baseline_configs(spec, full_finetuning)).items():
        slug = name.replace(" ", "_")
        results = train_seeds(model, task, config, fidelity, seeds, out_dir / "baselines" / slug, tokenizer, progress,
                              device)
        scores = [r["score"] for r in results]
        mean, std = _summary(scores)
        stored[name] = {"name": name, "score": mean, "std": std, "scores": scores, "percent": results[0]["percent"],
                        "config": config if isinstance(config, str) else config.to_dict()}
        write_text_atomic(path, json.dumps(stored, indent=2))
    return list(stored.values())


def transfer(source_dir: str | Path, task: TaskData, out_dir: Path, model: str | None = None,
             storage: str | None = None, study_name: str = "autopeft", top: int = 0, seeds: int = 3,
             fidelity: Fidelity | None = None, progress: bool = True, device: str = "auto") -> list[dict[str, Any]]:
    """Retrain the source study's front on `task`, beside the single-module baselines there."""
    from autopeft.report import plot_points
    from autopeft.search.results import front_rows

    study = open_existing(source_dir, storage, study_name)
    record = StudyRecord.of(study)
    model = model or record.model
    if model != record.model:
        logger.warning(f"note: the front was found with {record.model}; retraining with {model}")
    fidelity = fidelity or FIDELITIES["full"]
    spec, tokenizer = describe_model(model, task.spec.num_labels)
    picked = spread_along_front(front_rows(study), top)
    rows = []
    for row in picked:
        config = PeftConfig.from_dict(row["config"])
        run_dir = out_dir / "transferred" / f"trial_{row['number']}"
        results = train_seeds(model, task, config, fidelity, seeds, run_dir, tokenizer, progress, device)
        scores = [r["score"] for r in results]
        mean, std = _summary(scores)
        rows.append({"name": f"front #{row['number']}: {config.describe()}", "score": mean, "std": std,
                     "scores": scores, "percent": results[0]["percent"], "source_score": row["score"],
                     "config": config.to_dict()})
    baselines = run_baselines(model, task, fidelity, seeds, out_dir, spec, tokenizer, progress=progress, device=device)
    all_rows = rows + [{**b, "name": f"baseline: {b['name']}"} for b in baselines]
    summary = {"source": str(source_dir), "task": task.spec.name, "model": model, "fidelity": fidelity.to_dict(),
               "rows": all_rows}
    (out_dir / "transfer.json").write_text(json.dumps(summary, indent=2))
    plot_points(rows, baselines, out_dir / "transfer.png", metric=task.spec.primary_metric,
                title=f"{record.task} front transferred to {task.spec.name}")
    return all_rows
