"""The study record: what a search stores about itself, written once, read back through one class.

A `StudyRecord` is stored as the Optuna study's user attributes (one attribute per field, so that
optuna-dashboard shows them), with `record_version`. `to_dict`/`from_dict` convert, in the style
of PEFT's and AdapterHub's configs. A resume compares the fields in `storage.COMPARED_KEYS` and
refuses a difference, naming it; `api.load_search` resumes with the stored sampler options.

Versions: 2 (this one) added the selection split, the standard modules, promotion and the sampler
options. A study without `record_version` was written before: `autopeft report` still reads it,
a resume is refused (it chose configurations on the split it reported).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from autopeft.errors import UserError

if TYPE_CHECKING:
    from autopeft.search.samplers.options import SamplerSettings

RECORD_VERSION = 2


@dataclass(frozen=True)
class StudyRecord:
    """Everything a later command needs to reopen, resume, report or retrain a search."""

    model: str  # name or folder, as given
    model_weights: str | None  # fingerprint of the weights (models.weights_fingerprint)
    model_spec: dict[str, Any]  # space.ModelSpec.to_dict()
    task: str  # the task's name
    task_identity: dict[str, Any]  # tasks.TaskData.identity(): digests, columns, labels, metric
    task_source: dict[str, Any]  # how to load the task again (tasks.TaskSource.to_dict())
    metric: str  # the task's primary metric
    space: dict[str, Any]  # SearchSpace.to_dict()
    standards: dict[str, dict[str, Any]]  # name -> configuration of the standard modules, the first trials
    fidelity: dict[str, Any]  # training.Fidelity.to_dict() of the search's own trials
    fidelity_label: str  # "EXAMPLESxEPOCHS", the examples actually trained on
    selection: dict[str, Any]  # tasks.Selection.to_dict(): which split chose, which reports
    objectives: list[str]  # the study's two objectives
    sampler: str  # make_sampler's name
    seed: int  # the sampler's seed (each worker may have its own)
    n_init: int  # the initial random trials after the standard modules
    sampler_options: dict[str, Any]  # make_sampler's options that change proposals (fit, NUTS, percent_scale, ...)
    reference_point: list[float]  # the hypervolume reference point (score, percent)
    user_reference_point: list[float] | None  # the user's --ref-point, which also steers the acquisition
    constant_baseline: float  # the constant predictor's score on the selection split
    replicates: float = 0.0  # BO samplers: the fraction of the budget that may retrain front members
    calibration_pairs: int = 0  # BO samplers: configurations retrained after the initial design
    promotion: dict[str, Any] | None = None  # search.promotion.PromotionPlan.to_dict(), or None
    calibration: list[dict[str, Any]] | None = None  # --fidelity auto: the rungs it tried
    record_version: int = field(default=RECORD_VERSION)

    def to_dict(self) -> dict[str, Any]:
        """The study's user attributes."""
        return asdict(self)

    @classmethod
    def from_dict(cls, attrs: dict[str, Any]) -> StudyRecord:
        """The record in a study's user attributes; UserError for a study an earlier autopeft wrote."""
        if "record_version" not in attrs:
            raise UserError("this study was made by an earlier autopeft, which chose configurations on the split it "
                            "reported; `autopeft report` reads it, but it cannot be resumed: use a new --out dir")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in attrs.items() if k in names})

    @classmethod
    def from_study(cls, study: Any) -> StudyRecord:
        return cls.from_dict(study.user_attrs)

    @classmethod
    def of(cls, study: Any) -> StudyRecord:
        """The study's record, for reading and reporting: a study an earlier autopeft wrote (record_version 1,
        which `from_dict` refuses for a resume) gets None for each field it lacks."""
        attrs = study.user_attrs
        return cls(**{**{f.name: attrs.get(f.name) for f in fields(cls)},
                      "record_version": attrs.get("record_version", 1)})

    def sampler_settings(self) -> SamplerSettings:
        """The sampler this study was made with, as a search resumes it."""
        from autopeft.search.samplers.options import BO_SAMPLERS, SamplerSettings

        options, bo = self.sampler_options, self.sampler in BO_SAMPLERS
        nuts = (options["warmup_steps"], options["num_samples"], options["thinning"]) if options.get("fit") == "nuts" \
            else None
        return SamplerSettings(self.sampler, n_init=self.n_init, seed=self.seed, nuts=nuts,
                               percent_scale=options.get("percent_scale"),
                               replicates=self.replicates if bo else None,
                               calibration_pairs=self.calibration_pairs if bo else None,
                               ref_point=tuple(self.user_reference_point) if self.user_reference_point else None)
