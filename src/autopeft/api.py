"""The Python API: search, train, load and apply, in the style of `optuna.create_study` and `peft.get_peft_model`.

    search = autopeft.create_search("minilm", "MRPC", "runs/mrpc")
    search.optimize(budget=30)
    best = search.front()[-1]

Nothing here prints; progress bars only with ``progress=True``. The CLI is built on the same jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from autopeft.errors import UserError
from autopeft.search.samplers.options import SamplerSettings
from autopeft.space import PeftConfig
from autopeft.tasks import TaskSource
from autopeft.training import FIDELITIES, FIDELITY_FIELDS, FULL_FINETUNE, Fidelity, TrainResult, fidelity_from
from autopeft.trained import load_trained

if TYPE_CHECKING:
    from autopeft.search.results import TrialRecord

# a GLUE name, or the arguments of load_file_task (train_path, dev_path, text_a, ...) or of
# load_datasets_task (datasets: a save_to_disk folder or hf:NAME[:CONFIG], text_a, ...): `tasks.TaskSource.of`
TaskArg = str | dict[str, Any]


@dataclass(frozen=True)
class FrontMember:
    """One configuration on a search's front of configuration means."""

    config: PeftConfig
    score: float  # mean over its training seeds
    score_std: float  # ddof 1; 0 for one seed
    n_seeds: int
    scores: tuple[float, ...]
    percent: float  # trainable parameters, % of the backbone
    trainable_params: int
    trials: tuple[int, ...]  # its trial numbers (first evaluation, then replicates)


class Search:
    """A search stored in `out_dir` (its study.db, reports and weights); see `create_search`."""

    def __init__(self, settings: Any) -> None:
        self._settings = settings

    @property
    def out_dir(self) -> Path:
        return Path(self._settings.out_dir)

    @property
    def study(self) -> Any:
        """The Optuna study (an optuna.Study; trial attribute names: autopeft.search.attrs)."""
        from autopeft.workflow import open_existing

        return open_existing(self.out_dir, self._settings.storage, self._settings.study_name)

    def optimize(self, budget: int) -> Search:
        """Run (or resume) until the study holds `budget` evaluated trials; rewrite its report."""
        from autopeft.workflow import search

        search(replace(self._settings, budget=budget))
        return self

    def front(self) -> list[FrontMember]:
        """The front of configuration means, fewest parameters first."""
        from autopeft.search.results import front_rows

        return [FrontMember(PeftConfig.from_dict(r["config"]), r["score"], r["score_std"], r["n_seeds"],
                            tuple(r["scores"]), r["percent"], r["trainable_params"], tuple(r["numbers"]))
                for r in front_rows(self.study)]

    def answer(self) -> list[dict[str, Any]]:
        """The answer at the target fidelity (with `promote`), fewest parameters first: per member its config
        (a dict), standard (name or None), fidelity, score (mean on the report split), score_std, n_seeds, percent,
        selection_score and runs (its trained weights, for `load_trained`); [] without promotion."""
        from autopeft.report import answer_rows

        return answer_rows(self.study)

    def trials(self) -> list[TrialRecord]:
        """Every evaluated trial (replicates included), as `search.results.completed_trials` rows."""
        from autopeft.search.results import completed_trials

        return completed_trials(self.study)

    def plot(self, path: str | Path) -> Path:
        """The front plot (score against % parameters) at `path`."""
        from autopeft.report import plot_front

        return plot_front(self.study, Path(path))

    def retrain(self, top: int = 0, seeds: int = 3, **fidelity: Any) -> list[dict[str, Any]]:
        """Retrain `top` front configurations (0: all) at full fidelity with `seeds` seeds; see `retrain_front`."""
        from autopeft.workflow import retrain_front

        fidelity_from("full", **fidelity)  # checks the names
        return retrain_front(self.out_dir, self._settings.storage, self._settings.study_name, top=top, seeds=seeds,
                             fidelity_overrides=fidelity, progress=self._settings.progress,
                             device=self._settings.device)

    def transfer(self, task: TaskArg, out_dir: str | Path, top: int = 0, seeds: int = 3,
                 **fidelity: Any) -> list[dict[str, Any]]:
        """Retrain the front on another task beside the single-module baselines; see `workflow.transfer`."""
        from autopeft.workflow import transfer

        return transfer(self.out_dir, TaskSource.of(task).load(), Path(out_dir), storage=self._settings.storage,
                        study_name=self._settings.study_name, top=top, seeds=seeds,
                        fidelity=fidelity_from("full", self._settings.device, **fidelity),
                        progress=self._settings.progress,
                        device=self._settings.device)


def create_search(model: str = "minilm", task: TaskArg = "RTE", out_dir: str | Path = "runs/search",
                  fidelity: str | Fidelity = "low", sampler: str | SamplerSettings = "saasbo", progress: bool = False,
                  **settings: Any) -> Search:
    """A search for `model` on `task`, kept in `out_dir` (resumed if it is there with the same settings).

    `sampler`: a name, or `SamplerSettings` (n_init, seed, nuts, replicates, ...). `settings`: fidelity
    fields (train_examples, epochs, ...) and `workflow.SearchSettings` fields (lora, promote, target,
    storage, ...). Every value is checked here; a bad one raises `SettingError` naming it.
    """
    from autopeft.workflow import SearchSettings

    known = {f.name for f in fields(SearchSettings)} - {"model", "task", "fidelity", "out_dir", "budget", "task_source",
                                                         "sampler"}
    fidelity_overrides = {k: settings.pop(k) for k in list(settings) if k in FIDELITY_FIELDS}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UserError(f"unknown setting(s) {unknown}; search settings: {sorted(known)}, "
                        f"fidelity fields: {sorted(FIDELITY_FIELDS)}")
    source = TaskSource.of(task)
    return Search(SearchSettings(model=model, task=source.load(), fidelity=fidelity_from(fidelity,
                                 **fidelity_overrides), out_dir=Path(out_dir), task_source=source, progress=progress,
                                 sampler=sampler, **settings))


def load_search(out_dir: str | Path, storage: str | None = None, study_name: str = "autopeft",
                progress: bool = False, device: str = "auto") -> Search:
    """The search stored in `out_dir` (or `storage`), with the model, task, space, fidelity, sampler and
    reference point it was made with."""
    from autopeft.search.record import StudyRecord
    from autopeft.workflow import SearchSettings, open_existing

    record = StudyRecord.from_study(open_existing(out_dir, storage, study_name))
    promotion = record.promotion or {}
    source = TaskSource.from_dict(record.task_source)
    settings = SearchSettings(model=record.model, task=source.load(), fidelity=Fidelity(**record.fidelity),
                              out_dir=Path(out_dir), sampler=record.sampler_settings(), storage=storage,
                              study_name=study_name, task_source=source, space=record.space,
                              fidelity_auto=record.calibration is not None, progress=progress, device=device,
                              promote=promotion.get("k", 0),
                              target=Fidelity(**promotion["rungs"][-1]) if promotion else None)
    return Search(settings)


def train(model: str, task: TaskArg, config: PeftConfig | dict[str, Any] | str, out_dir: str | Path | None = None,
          fidelity: str | Fidelity = "full", progress: bool = False, device: str = "auto",
          **overrides: Any) -> TrainResult:
    """Train one configuration (a PeftConfig, its dict, a JSON file, or "full") on `device`; score it on dev.

    With `out_dir`, the trained run is saved there (load it with `load_trained`).
    """
    from autopeft.training import train_and_evaluate
    if isinstance(config, dict):
        config = PeftConfig.from_dict(config)
    elif isinstance(config, str) and config != FULL_FINETUNE:
        config = PeftConfig.from_json_file(config)
    return train_and_evaluate(model, TaskSource.of(task).load(), config, fidelity_from(fidelity, device, **overrides),
                              out_dir=out_dir, progress=progress, device=device)


def apply(model: nn.Module, config: PeftConfig | dict[str, Any], seed: int | None = None) -> nn.Module:
    """Add `config`'s modules to a transformers model you hold, in place, and freeze all but modules and head."""
    from autopeft.modules import inject

    if isinstance(config, dict):
        config = PeftConfig.from_dict(config)
    return inject(model, config, seed=seed)  # with the prefix-aware attention


__all__ = ["FIDELITIES", "FrontMember", "SamplerSettings", "Search", "apply", "create_search", "load_search",
           "load_trained", "train"]
