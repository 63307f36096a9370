"""Tasks and data: the GLUE benchmark tasks and user-supplied CSV/TSV/JSONL files.

Every task becomes a :class:`TaskData` (a :class:`TaskSpec` plus a train and a
dev :class:`Split`). Bad input raises :class:`autopeft.errors.UserError` with a
message naming the file, the line (1-based) and the problem, and how to fix it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from autopeft.errors import SettingError, UserError
from autopeft.log import get_logger

CLASSIFICATION = "classification"
REGRESSION = "regression"
KINDS = (CLASSIFICATION, REGRESSION)

#: Primary metrics a task may declare (keys of :func:`autopeft.metrics.compute_metrics`).
CLASSIFICATION_METRICS = ("accuracy", "f1", "mcc")
REGRESSION_METRICS = ("pearson_spearman", "pearson", "spearman")

#: Environment variable naming a folder with ``<TASK>/{train,dev}.tsv`` GLUE files.
GLUE_DIR_ENV = "AUTOPEFT_GLUE_DIR"
PACKAGED_GLUE_DIR = Path(__file__).resolve().parent / "data" / "glue"

#: What a file task does with examples whose text is empty: keep them (with a warning) or drop them.
EMPTY_TEXT_CHOICES = ("keep", "drop")

logger = get_logger(__name__)  # warnings about the data: see autopeft.log


# --------------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: its name, kind, label set and the metric that ranks configurations.

    ``label_names[i]`` is the name of class id ``i``; empty for regression.
    ``text_columns`` names the one or two input text columns, ``label_column`` the target.
    """

    name: str
    kind: str
    label_names: tuple[str, ...]
    primary_metric: str
    text_columns: tuple[str, ...] = ()
    label_column: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"TaskSpec.kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == REGRESSION:
            if self.label_names:
                raise ValueError("a regression TaskSpec has no label_names")
            if self.primary_metric not in REGRESSION_METRICS:
                raise ValueError(f"regression primary_metric must be one of {REGRESSION_METRICS}")
        else:
            if len(self.label_names) < 2:
                raise ValueError("a classification TaskSpec needs at least 2 label_names")
            if self.primary_metric not in CLASSIFICATION_METRICS:
                raise ValueError(f"classification primary_metric must be one of {CLASSIFICATION_METRICS}")
            if self.primary_metric == "f1" and len(self.label_names) != 2:
                raise ValueError("primary_metric 'f1' needs exactly 2 classes (class id 1 is positive)")

    @property
    def num_labels(self) -> int:
        """Number of model outputs: the number of classes, or 1 for regression."""
        return 1 if self.kind == REGRESSION else len(self.label_names)

    @property
    def is_regression(self) -> bool:
        return self.kind == REGRESSION


@dataclass
class Split:
    """One split: input texts (``text_b`` is None for single-sentence tasks) and labels.

    ``labels`` holds int64 class ids for classification, float32 targets for regression.
    """

    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.text_a)
        if self.text_b is not None and len(self.text_b) != n:
            raise ValueError(f"text_b has {len(self.text_b)} items, text_a has {n}")
        if len(self.labels) != n:
            raise ValueError(f"labels has {len(self.labels)} items, text_a has {n}")

    def __len__(self) -> int:
        return len(self.text_a)

    def sha256(self) -> str:
        """A digest of the texts and labels, in order: two splits with the same digest hold the same data."""
        digest = hashlib.sha256()
        for part in (self.text_a, self.text_b, self.labels.tolist()):
            digest.update(json.dumps(part, ensure_ascii=False).encode())
        return digest.hexdigest()

    def take(self, indices: np.ndarray) -> Split:
        """The examples at `indices` (``n`` ints), in that order."""
        return Split([self.text_a[i] for i in indices],
                     None if self.text_b is None else [self.text_b[i] for i in indices], self.labels[indices].copy())

    def subset(self, n_or_fraction: int | float, seed: int) -> Split:
        """A deterministic random subset, in the original order.

        An ``int`` is a number of examples (more than ``len(self)`` gives the whole
        split); a ``float`` in (0, 1] is a fraction (rounded, at least 1 example).
        The same seed with a smaller size gives a subset of the larger one.
        """
        total = len(self)
        if isinstance(n_or_fraction, bool) or not isinstance(n_or_fraction, (int, float, np.integer, np.floating)):
            raise UserError(f"subset size must be an integer count or a fraction in (0, 1], got {n_or_fraction!r}")
        if isinstance(n_or_fraction, (int, np.integer)):
            if n_or_fraction < 1:
                raise UserError(f"subset size must be at least 1 example, got {n_or_fraction}")
            n = min(int(n_or_fraction), total)
        else:
            if not 0.0 < n_or_fraction <= 1.0:
                raise UserError(
                    f"subset fraction must be in (0, 1], got {n_or_fraction}; "
                    "pass an integer to ask for a number of examples"
                )
            n = min(total, max(1, round(total * float(n_or_fraction))))
        if n >= total:
            return Split(list(self.text_a), None if self.text_b is None else list(self.text_b), self.labels.copy())
        return self.take(np.sort(np.random.default_rng(seed).permutation(total)[:n]))


@dataclass
class TaskData:
    """A task with its train and dev splits. ``source`` says where the data was read from."""

    spec: TaskSpec
    train: Split
    dev: Split
    source: str = ""

    def identity(self) -> dict[str, Any]:
        """What the task is, by content: digests of the loaded splits, columns, labels and metric.

        A study stores it, and a resume with a different identity is refused.
        """
        return {"train_sha256": self.train.sha256(), "dev_sha256": self.dev.sha256(), "kind": self.spec.kind,
                "columns": {"text": list(self.spec.text_columns), "label": self.spec.label_column},
                "labels": list(self.spec.label_names), "metric": self.spec.primary_metric}


# --------------------------------------------------------------------------- selection split

#: The selection split carved from train (GLUE and `datasets` tasks): this fraction of train, at most
#: SELECTION_MAX examples, for train splits of at least SELECTION_MIN_TRAIN; always drawn with SELECTION_SEED.
SELECTION_FRACTION = 0.1
SELECTION_MAX = 1000
SELECTION_MIN_TRAIN = 2000
SELECTION_SEED = 0


@dataclass(frozen=True)
class Selection:
    """Which data chose a search's configurations, and which data reports the answer's score.

    split: "train" (held out of train: trials train on the rest) or "dev".
    report: the split the answer is scored on: "dev" or "test".
    optimistic: the report split also selected (it is dev), so its scores of chosen configurations lean high.
    """

    split: str
    examples: int
    report: str
    optimistic: bool

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "examples": self.examples, "report": self.report,
                "optimistic": self.optimistic, "seed": SELECTION_SEED if self.split == "train" else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Selection:
        """The stored selection (`to_dict`; its seed is SELECTION_SEED's)."""
        return cls(data["split"], data["examples"], data["report"], data["optimistic"])

    def describe(self) -> str:
        held = (f"{self.examples} examples held out of train" if self.split == "train"
                else f"the dev split ({self.examples} examples)")
        text = f"configurations chosen on {held}; the answer scored on the {self.report} split"
        return text + (" (which also chose them, so its scores lean high)" if self.optimistic else "")


def selection_split(task: TaskData, test: Split | None = None, carve: bool = True) -> tuple[TaskData, Split, Selection]:
    """Split `task` into what a search chooses on and what it reports on.

    Returns (the task the search's trials train on, with the selection split as its dev; the
    report split; the `Selection`). `carve`: hold the selection split out of train (GLUE and
    `datasets` tasks, train of at least SELECTION_MIN_TRAIN examples); else dev selects and
    `test` (a file task's --test) reports, or dev itself, flagged optimistic.
    """
    if carve and test is None and len(task.train) >= SELECTION_MIN_TRAIN:
        n = min(SELECTION_MAX, round(SELECTION_FRACTION * len(task.train)))
        order = np.random.default_rng(SELECTION_SEED).permutation(len(task.train))
        held, rest = np.sort(order[:n]), np.sort(order[n:])
        search_task = TaskData(task.spec, task.train.take(rest), task.train.take(held), source=task.source)
        return search_task, task.dev, Selection("train", n, "dev", optimistic=False)
    if test is not None:
        return task, test, Selection("dev", len(task.dev), "test", optimistic=False)
    return task, task.dev, Selection("dev", len(task.dev), "dev", optimistic=True)


# --------------------------------------------------------------------------- GLUE registry


@dataclass(frozen=True)
class GlueFormat:
    """How a GLUE task's TSV files are laid out.

    ``columns`` gives column names for a file without a header line (CoLA); None means
    the first line is the header. ``raw_labels[i]`` is the string in the file for class
    id ``i`` (empty for regression).
    """

    dirname: str
    text_a: str
    text_b: str | None
    label: str
    raw_labels: tuple[str, ...] = ()
    columns: tuple[str, ...] | None = None


def _glue(name: str, kind: str, labels: Sequence[str], metric: str, text_a: str, text_b: str | None,
          label: str, description: str) -> TaskSpec:
    return TaskSpec(name, kind, tuple(labels), metric,
                    (text_a,) if text_b is None else (text_a, text_b), label, description)


#: The GLUE tasks this package knows, keyed by their canonical name.
GLUE_TASKS: dict[str, TaskSpec] = {
    "RTE": _glue("RTE", CLASSIFICATION, ("entailment", "not_entailment"), "accuracy",
                 "sentence1", "sentence2", "label", "Recognizing Textual Entailment (2-way)"),
    "MRPC": _glue("MRPC", CLASSIFICATION, ("not_equivalent", "equivalent"), "f1",
                  "#1 String", "#2 String", "Quality", "Microsoft Research Paraphrase Corpus"),
    "STS-B": _glue("STS-B", REGRESSION, (), "pearson_spearman",
                   "sentence1", "sentence2", "score", "Semantic Textual Similarity, score 0-5"),
    "CoLA": _glue("CoLA", CLASSIFICATION, ("unacceptable", "acceptable"), "mcc",
                  "sentence", None, "label", "Corpus of Linguistic Acceptability"),
    "SST-2": _glue("SST-2", CLASSIFICATION, ("negative", "positive"), "accuracy",
                   "sentence", None, "label", "Stanford Sentiment Treebank, binary"),
    "WNLI": _glue("WNLI", CLASSIFICATION, ("not_entailment", "entailment"), "accuracy",
                  "sentence1", "sentence2", "label", "Winograd NLI"),
}

#: File layout of each GLUE task (same keys as GLUE_TASKS).
GLUE_FORMATS: dict[str, GlueFormat] = {
    "RTE": GlueFormat("RTE", "sentence1", "sentence2", "label", ("entailment", "not_entailment")),
    "MRPC": GlueFormat("MRPC", "#1 String", "#2 String", "Quality", ("0", "1")),
    "STS-B": GlueFormat("STS-B", "sentence1", "sentence2", "score"),
    "CoLA": GlueFormat("CoLA", "sentence", None, "label", ("0", "1"),
                       columns=("source", "label", "annotation", "sentence")),
    "SST-2": GlueFormat("SST-2", "sentence", None, "label", ("0", "1")),
    "WNLI": GlueFormat("WNLI", "sentence1", "sentence2", "label", ("0", "1")),
}

_GLUE_ALIASES = {k.upper().replace("-", "").replace("_", ""): k for k in GLUE_TASKS}


def resolve_glue_name(name: str) -> str | None:
    """The canonical GLUE name for ``name`` (case-insensitive; "sts-b", "stsb", "sst2" ok), or None."""
    key = name.strip().upper().replace("-", "").replace("_", "")
    if key.startswith("GLUE/") or key.startswith("GLUE:"):
        key = key[5:]
    return _GLUE_ALIASES.get(key)


def glue_search_dirs(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Where GLUE files are looked for, in order, as (description, folder) pairs."""
    dirs: list[tuple[str, Path]] = []
    if data_dir is not None:
        dirs.append(("the data_dir argument", Path(data_dir)))
    env = os.environ.get(GLUE_DIR_ENV)
    if env:
        dirs.append((f"${GLUE_DIR_ENV}", Path(env)))
    dirs.append(("the copy packaged with autopeft", PACKAGED_GLUE_DIR))
    dirs.append(("../shared/data/glue from the current directory", Path.cwd().parent / "shared" / "data" / "glue"))
    repo = Path(__file__).resolve().parents[2]
    dirs.append(("../shared/data/glue from the autopeft repository", repo.parent / "shared" / "data" / "glue"))
    return dirs


def _find_glue_dir(canonical: str, data_dir: str | os.PathLike | None) -> Path:
    dirname = GLUE_FORMATS[canonical].dirname
    looked: list[str] = []
    for what, base in glue_search_dirs(data_dir):
        if what in ("the data_dir argument", f"${GLUE_DIR_ENV}") and not base.is_dir():
            raise UserError(
                f"GLUE data folder {base} (from {what}) does not exist or is not a folder; "
                f"point it at a folder that contains {dirname}/train.tsv and {dirname}/dev.tsv"
            )
        folder = base / dirname
        if (folder / "train.tsv").is_file() and (folder / "dev.tsv").is_file():
            return folder
        looked.append(f"{folder} ({what})")
    raise UserError(
        f"GLUE task {canonical}: train.tsv and dev.tsv not found. Looked in: " + "; ".join(looked) + ". "
        f"Get the GLUE files (e.g. with GLUE's download_glue_data.py) and pass --data-dir / data_dir= "
        f"or set {GLUE_DIR_ENV} to the folder that contains {dirname}/train.tsv and {dirname}/dev.tsv."
    )


def load_task(name: str, data_dir: str | os.PathLike | None = None) -> TaskData:
    """Load a GLUE task by name (RTE, MRPC, STS-B, CoLA, SST-2, WNLI; case-insensitive).

    Files are looked for in ``data_dir``, then ``$AUTOPEFT_GLUE_DIR``, the packaged copy
    (all but SST-2), then ``../shared/data/glue`` (see :func:`glue_search_dirs`).
    """
    canonical = resolve_glue_name(name)
    if canonical is None:
        raise UserError(
            f"unknown task {name!r}. Known GLUE tasks: {', '.join(GLUE_TASKS)}. "
            "For your own data use a CSV (.csv), TSV (.tsv) or JSONL (.jsonl) train and dev file "
            "with a column mapping (text_a, optional text_b, label), see autopeft.tasks.load_file_task."
        )
    spec, fmt = GLUE_TASKS[canonical], GLUE_FORMATS[canonical]
    folder = _find_glue_dir(canonical, data_dir)
    splits = []
    for split_name in ("train", "dev"):
        table = _read_delimited(folder / f"{split_name}.tsv", "\t", quoting=False, columns=fmt.columns)
        if spec.is_regression:
            convert = _regression_converter(table)
        else:
            convert = _class_converter(
                table, dict(zip(fmt.raw_labels, range(len(fmt.raw_labels)))),
                f"the GLUE {canonical} file must use exactly these labels",
            )
        splits.append(_make_split(table, fmt.text_a, fmt.text_b, fmt.label, convert, spec.is_regression))
    return TaskData(spec, splits[0], splits[1], source=str(folder))


# --------------------------------------------------------------------------- reading files


@dataclass
class _Table:
    """Records read from one file: (line number, record) pairs."""

    path: str
    columns: list[str] | None  # None: each record has its own keys (JSONL)
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    unit: str = "line"

    def error(self, line: int | None, problem: str) -> UserError:
        where = self.path if line is None else f"{self.path}, {self.unit} {line}"
        return UserError(f"{where}: {problem}")


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"{path}: file not found" + ("" if not path.exists() else " (it is a folder)")
                        + "; check the path")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{path}, line {line}: not valid UTF-8 ({e.reason}); save the file as UTF-8") from None


def _read_delimited(path: Path, delimiter: str, quoting: bool, columns: Sequence[str] | None = None) -> _Table:
    """Read a CSV/TSV. ``columns`` given: the file has no header. ``quoting`` False: QUOTE_NONE."""
    text = _read_text(path)
    kind = "comma-separated" if delimiter == "," else "tab-separated"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter,
                        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    table = _Table(str(path), list(columns) if columns is not None else None)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise table.error(reader.line_num, f"cannot parse the {kind} line ({e}); check its quotes") from None
        if not row:  # blank line
            continue
        if table.columns is None:
            table.columns = [c.strip() for c in row]
            continue
        if len(row) != len(table.columns):
            hint = ("fields must be separated by single tabs and no field may contain a tab"
                    if delimiter == "\t" else "quote fields that contain commas")
            raise table.error(start, f"expected {len(table.columns)} {kind} fields "
                                     f"({', '.join(table.columns)}), found {len(row)}; {hint}")
        table.records.append((start, dict(zip(table.columns, row))))
    if table.columns is None:
        raise table.error(1, "the file is empty; expected a header line naming the columns")
    if not table.records:
        where = "after the header on line 1" if columns is None else "(line 1 is missing)"
        raise table.error(None, f"no data rows {where}; add at least one example")
    return table


def _read_jsonl(path: Path) -> _Table:
    table = _Table(str(path), None)
    for i, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise table.error(i, f"not valid JSON ({e.msg} at column {e.colno}); "
                                 "a .jsonl file needs one complete JSON object per line") from None
        if not isinstance(obj, dict):
            raise table.error(i, f"expected a JSON object {{...}}, found {type(obj).__name__}; "
                                 "a .jsonl file needs one JSON object per line")
        table.records.append((i, obj))
    if not table.records:
        raise table.error(None, "no examples (no JSON objects; line 1 is empty or missing); "
                                "add at least one example, one JSON object per line")
    return table


def _read_user_file(path: str | os.PathLike) -> _Table:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return _read_delimited(p, ",", quoting=True)
    if suffix in (".tsv", ".tab"):
        return _read_delimited(p, "\t", quoting=False)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(p)
    if suffix == ".parquet":
        datasets = _datasets()
        if not p.is_file():
            raise UserError(f"{p}: file not found; check the path")
        try:
            table = datasets.Dataset.from_parquet(str(p), keep_in_memory=True)
        except Exception as e:  # not parquet, truncated: name the file, don't trace back
            raise UserError(f"{p}: cannot read it as parquet ({str(e).splitlines()[0][:200]})") from None
        return _Table(str(p), list(table.column_names), [(i, ex) for i, ex in enumerate(table, start=1)], unit="row")
    raise UserError(f"{p}: unsupported file type {suffix or '(no extension)'!r}; "
                    "use .csv (comma-separated, header line), .tsv (tab-separated, header line, no quoting), "
                    ".jsonl (one JSON object per line) or .parquet")


# --------------------------------------------------------------------------- records -> Split


def _value_str(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if v is None or isinstance(v, (dict, list)):
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _check_columns(table: _Table, wanted: Iterable[str]) -> None:
    if table.columns is None:
        return
    for col in wanted:
        if col not in table.columns:
            raise table.error(1, f"no column {col!r}; the header has: {', '.join(map(repr, table.columns))}. "
                                 "Fix the column mapping or the header")


def _get(table: _Table, line: int, rec: dict[str, Any], key: str) -> str:
    if key not in rec:
        keys = ", ".join(map(repr, rec)) or "none"
        raise table.error(line, f"no key {key!r}; keys present: {keys}. Fix the column mapping or the file")
    value = _value_str(rec[key])
    if value is None:
        raise table.error(line, f"{key!r} is {json.dumps(rec[key])}, expected a string or number")
    return value


Converter = Callable[[int, str], Any]


def _class_converter(table: _Table, ids: dict[str, int], hint: str) -> Converter:
    def convert(line: int, raw: str) -> int:
        key = raw.strip()
        if key not in ids:
            raise table.error(line, f"label {raw!r} is not one of {', '.join(map(repr, ids))}; {hint}")
        return ids[key]

    return convert


def _regression_converter(table: _Table) -> Converter:
    def convert(line: int, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise table.error(line, f"regression target {raw!r} is not a finite number; "
                                    "every target must be a number such as 3.5")
        return value

    return convert


def _make_split(table: _Table, text_a: str, text_b: str | None, label: str,
                convert: Converter, regression: bool) -> Split:
    cols = [text_a, label] if text_b is None else [text_a, text_b, label]
    _check_columns(table, cols)
    a: list[str] = []
    b: list[str] | None = None if text_b is None else []
    ys = []
    for line, rec in table.records:
        a.append(_get(table, line, rec, text_a))
        if b is not None:
            b.append(_get(table, line, rec, text_b))  # type: ignore[arg-type]
        ys.append(convert(line, _get(table, line, rec, label)))
    labels = np.asarray(ys, dtype=np.float32 if regression else np.int64)
    return Split(a, b, labels)


def read_texts(path: str | os.PathLike, text_a: str, text_b: str | None = None) -> tuple[list[str], list[str] | None]:
    """The input texts of a .csv/.tsv/.jsonl/.parquet file (no labels needed): column text_a, and text_b if given."""
    table = _read_user_file(path)
    _check_columns(table, [text_a] if text_b is None else [text_a, text_b])
    a = [_get(table, line, rec, text_a) for line, rec in table.records]
    b = None if text_b is None else [_get(table, line, rec, text_b) for line, rec in table.records]
    return a, b


def _empty_texts(table: _Table, columns: Sequence[str], empty_text: str) -> _Table:
    """`table`, less the examples with an empty (or blank) text when `empty_text` is 'drop'; a warning
    gives their count and first line either way."""
    _check_columns(table, columns)
    empty = [line for line, rec in table.records if any(not _get(table, line, rec, c).strip() for c in columns)]
    if not empty:
        return table
    what = (f"{len(empty)} example(s) with an empty {' or '.join(map(repr, columns))} text, "
            f"the first on {table.unit} {empty[0]}")
    if empty_text == "keep":
        logger.warning(f"warning: {table.path}: {what}; kept. Fill them in, or leave them out with --empty-text drop "
                       "(empty_text='drop')")
        return table
    dropped = set(empty)
    kept = [(line, rec) for line, rec in table.records if line not in dropped]
    if not kept:
        raise table.error(None, f"every example has an empty {' or '.join(map(repr, columns))} text; "
                                "fill them in or check the text column names")
    logger.warning(f"warning: {table.path}: left out {what} (--empty-text drop)")
    return replace(table, records=kept)


def _sorted_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """Sort label strings; numerically when they are all integers ("2" before "10")."""
    uniq = set(labels)
    try:
        return tuple(sorted(uniq, key=int))
    except ValueError:
        return tuple(sorted(uniq))


def _build_task(train: _Table, dev: _Table, text_a: str, label: str, text_b: str | None, kind: str,
                label_names: Sequence[str] | None, name: str, primary_metric: str | None,
                source: str, empty_text: str = "keep") -> TaskData:
    if kind not in KINDS:
        raise UserError(f"task kind must be 'classification' or 'regression', got {kind!r}")
    if empty_text not in EMPTY_TEXT_CHOICES:
        raise SettingError("empty_text", f"must be 'keep' or 'drop', got {empty_text!r}")
    texts = [text_a] if text_b is None else [text_a, text_b]
    train, dev = _empty_texts(train, texts, empty_text), _empty_texts(dev, texts, empty_text)
    regression = kind == REGRESSION
    allowed = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
    metric = primary_metric or ("pearson_spearman" if regression else "accuracy")
    if metric not in allowed:
        raise UserError(f"primary metric {metric!r} is not available for {kind}; use one of {', '.join(allowed)}")
    if regression:
        if label_names:
            raise UserError("label_names only apply to classification; drop them for a regression task")
        names: tuple[str, ...] = ()
        conv_train = _regression_converter(train)
        conv_dev = _regression_converter(dev)
    else:
        if label_names:
            names = tuple(str(x).strip() for x in label_names)
            if len(set(names)) != len(names):
                raise UserError(f"label_names has duplicates: {list(label_names)}")
            hint_train = "add it to label_names or fix the row"
        else:
            _check_columns(train, [label])
            names = _sorted_labels(_get(train, ln, rec, label).strip() for ln, rec in train.records)
            hint_train = ""
        if len(names) < 2:
            raise UserError(f"{train.path}: column {label!r} has only one distinct label {names}; "
                            "a classification task needs at least 2 classes (or use kind='regression')")
        if metric == "f1" and len(names) != 2:
            raise UserError(f"primary metric 'f1' needs exactly 2 classes, found {len(names)}; use accuracy or mcc")
        ids = {n: i for i, n in enumerate(names)}
        conv_train = _class_converter(train, ids, hint_train)
        conv_dev = _class_converter(dev, ids, hint_train or "dev labels must also occur in train "
                                              "(or list every label in label_names)")
    spec = TaskSpec(name, kind, names, metric, (text_a,) if text_b is None else (text_a, text_b), label)
    return TaskData(
        spec,
        _make_split(train, text_a, text_b, label, conv_train, regression),
        _make_split(dev, text_a, text_b, label, conv_dev, regression),
        source=source,
    )


def load_file_task(
    train_path: str | os.PathLike,
    dev_path: str | os.PathLike,
    text_a: str,
    label: str,
    text_b: str | None = None,
    kind: str = CLASSIFICATION,
    label_names: Sequence[str] | None = None,
    name: str | None = None,
    primary_metric: str | None = None,
    empty_text: str = "keep",
) -> TaskData:
    """Load a task from user files: .csv (comma, header, standard quoting), .tsv (tab,
    header, no quoting) or .jsonl (one object per line), with a column mapping.

    Classification: the label set is ``label_names`` (class id = position) or else the
    sorted union of the train labels as strings. Regression: targets must be numbers.
    ``primary_metric`` defaults to accuracy (classification) / pearson_spearman (regression).
    Examples with an empty text are kept (``empty_text="keep"``) or left out (``"drop"``), with a
    warning on the ``autopeft`` logger either way.
    """
    train, dev = _read_user_file(train_path), _read_user_file(dev_path)
    return _build_task(train, dev, text_a, label, text_b, kind, label_names, name or file_task_name(train_path),
                       primary_metric, source=f"{train_path}, {dev_path}", empty_text=empty_text)


def file_task_name(train_path: str | os.PathLike) -> str:
    """A file task's default name: its folder's name for train.* (data/reviews/train.csv: reviews), else the stem."""
    path = Path(train_path)
    return path.resolve().parent.name if path.stem.lower() == "train" else path.stem


def datasets_task_name(source: str) -> str:
    """A datasets task's default name: NAME/CONFIG for hf:NAME:CONFIG, else the saved folder's name."""
    if source.startswith("hf:"):
        return source[3:].replace(":", "/")
    return Path(source).resolve().name


def _datasets():
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise UserError("Hugging Face datasets input needs the 'datasets' package: "
                        "pip install datasets (or pip install 'autopeft[datasets]')") from None
    return datasets


def _dataset_table(ds, where: str, label: str, kind: str, label_names: list[str] | None) -> tuple[_Table, list | None]:
    """A `datasets.Dataset` as records; a ClassLabel column becomes its names (which also give the label set)."""
    feature = ds.features.get(label)
    names = getattr(feature, "names", None)
    if names and label_names is None and kind == CLASSIFICATION:
        label_names = list(names)
    table = _Table(where, list(ds.column_names), unit="row")
    for i, ex in enumerate(ds, start=1):
        if names and isinstance(ex.get(label), int) and ex[label] >= 0:
            ex = {**ex, label: names[ex[label]]}
        table.records.append((i, ex))
    if not table.records:
        raise table.error(None, "no examples in this split; choose another split")
    return table, label_names


def load_datasets_task(
    source: str,
    text_a: str,
    label: str,
    text_b: str | None = None,
    kind: str = CLASSIFICATION,
    label_names: Sequence[str] | None = None,
    train_split: str = "train",
    dev_split: str = "validation",
    name: str | None = None,
    primary_metric: str | None = None,
    empty_text: str = "keep",
) -> TaskData:
    """A task from Hugging Face `datasets` (the optional ``datasets`` package).

    ``source``: a folder written by ``DatasetDict.save_to_disk``, or ``hf:NAME[:CONFIG]`` from the
    hub (online only). Class-label columns use the dataset's own label names. ``empty_text``: as
    for :func:`load_file_task`.
    """
    datasets = _datasets()
    names = None if label_names is None else list(label_names)
    if source.startswith("hf:"):
        dataset_name, _, subset = source[3:].partition(":")
        loaded = {}
        for split in (train_split, dev_split):
            try:
                loaded[split] = datasets.load_dataset(dataset_name, subset or None, split=split)
            except Exception as e:  # network, offline mode, unknown name/split: report, don't trace back
                offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
                hint = ("; this machine is offline (HF_HUB_OFFLINE=1): save the dataset with save_to_disk where "
                        "there is a network and pass that folder" if offline else "")
                raise UserError(f"cannot load {source} split {split!r}: {str(e).splitlines()[0][:300]}{hint}") from None
    else:
        try:
            saved = datasets.load_from_disk(source)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(f"{source} is not a folder written by datasets' save_to_disk ({e})") from None
        if not isinstance(saved, datasets.DatasetDict):
            raise UserError(f"{source} holds one Dataset; save a DatasetDict with {train_split!r} and {dev_split!r} "
                            "splits, or pass train and dev parquet files")
        missing = [s for s in (train_split, dev_split) if s not in saved]
        if missing:
            raise UserError(f"{source} has splits {sorted(saved)}, not {missing}; "
                            "rename them or choose --train-split/--dev-split")
        loaded = {s: saved[s] for s in (train_split, dev_split)}
    tables = []
    for split in (train_split, dev_split):
        table, names = _dataset_table(loaded[split], f"{source}:{split}", label, kind, names)
        tables.append(table)
    return _build_task(tables[0], tables[1], text_a, label, text_b, kind, names, name or datasets_task_name(source),
                       primary_metric, source=source, empty_text=empty_text)


# --------------------------------------------------------------------------- task sources


@dataclass(frozen=True)
class TaskKind:
    """One kind of task source, besides a GLUE name (README, "Adding a task source").

    `marker`: the argument that makes a dict a source of this kind; `load(name, args)` reads its train
    and dev splits (`args`: the dict without "name"); `default_name(args)`: its name when the dict gives
    none; `carve`: the selection split is held out of train (False: configurations are chosen on dev).
    """

    marker: str
    load: Callable[[str, dict[str, Any]], TaskData]
    default_name: Callable[[dict[str, Any]], str]
    carve: bool = True


#: name -> TaskKind of every dict task source: "file" and "datasets", then those `register_task_kind` adds.
TASK_KINDS: dict[str, TaskKind] = {}


def register_task_kind(name: str, kind: TaskKind) -> None:
    """Make dicts holding `kind.marker` task sources of `kind`, for the API, a study's record and resume."""
    if name == "glue" or any(k.marker == kind.marker for n, k in TASK_KINDS.items() if n != name):
        raise UserError(f"task kind {name!r}: its name or its marker {kind.marker!r} is taken already")
    TASK_KINDS[name] = kind


def _without(args: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in args.items() if k not in keys}


# A file task's test file (test_path) is its report split, read by TaskSource.splits.
register_task_kind("file", TaskKind("train_path", lambda name, args: load_file_task(**_without(args, "test_path"),
                                                                                    name=name),
                                    lambda args: file_task_name(args["train_path"]), carve=False))
register_task_kind("datasets", TaskKind("datasets", lambda name, args: load_datasets_task(
    args["datasets"], **_without(args, "datasets"), name=name), lambda args: datasets_task_name(args["datasets"])))


@dataclass(frozen=True)
class TaskSource:
    """Where a task's data comes from: the one form the CLI, the API, a study and the benchmarks use.

    One of: a GLUE task (`args`: optional data_dir); a file task (`args` of `load_file_task`:
    train_path, dev_path, text_a, label, ..., and optionally test_path, its report split); a
    `datasets` task (`args` of `load_datasets_task`: datasets, a save_to_disk folder or
    hf:NAME[:CONFIG], then text_a, label, ...); a kind of `TASK_KINDS` added with `register_task_kind`.
    A study stores `to_dict()`; `from_dict` reads it.
    """

    name: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The name of its `TASK_KINDS` entry ("file", "datasets", ...), or "glue"."""
        return next((name for name, kind in TASK_KINDS.items() if kind.marker in self.args), "glue")

    @classmethod
    def of(cls, task: str | Mapping[str, Any]) -> TaskSource:
        """A GLUE name, or a dict of a task kind's arguments (`TASK_KINDS`; "name": the default)."""
        if isinstance(task, str):
            return cls(task)
        kind = next((k for k in TASK_KINDS.values() if isinstance(task, Mapping) and k.marker in task), None)
        if kind is None:
            markers = ", ".join(f"{k.marker} ({name})" for name, k in TASK_KINDS.items())
            raise UserError("task must be a GLUE name or a dict of a task source's arguments, marked by one of: "
                            f"{markers}; e.g. load_file_task's (train_path, dev_path, text_a, label, ...) or "
                            f"load_datasets_task's (datasets, text_a, label, ...); got {task!r}")
        args = _without(task, "name")
        return cls(task.get("name") or kind.default_name(args), args)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSource:
        return cls(data["name"], _without(data, "name"))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.args}

    def load(self) -> TaskData:
        """The task's train and dev splits (a file task's test file is read by `splits`)."""
        if self.kind == "glue":
            return load_task(self.name, self.args.get("data_dir"))
        return TASK_KINDS[self.kind].load(self.name, dict(self.args))

    def splits(self, task: TaskData | None = None) -> tuple[TaskData, Split, Selection]:
        """What a search trains and chooses on, and what it reports on (`selection_split`): GLUE and `datasets`
        tasks hold the selection split out of train; a file task selects on its dev file and reports on its
        test file, when it has one. `task`: this source's task, if loaded already."""
        task = task or self.load()
        test = None
        if self.args.get("test_path"):
            args = _without(self.args, "test_path", "dev_path")
            test = load_file_task(**args, dev_path=self.args["test_path"], name=self.name).dev
        return selection_split(task, test=test, carve=self.kind == "glue" or TASK_KINDS[self.kind].carve)
