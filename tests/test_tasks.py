"""Tests for the task/data layer: GLUE files, user CSV/TSV/JSONL tasks, bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from autopeft.errors import UserError
from autopeft.tasks import (
    GLUE_DIR_ENV,
    GLUE_TASKS,
    PACKAGED_GLUE_DIR,
    Split,
    TaskData,
    TaskSpec,
    load_file_task,
    load_datasets_task,
    load_task,
    resolve_glue_name,
)

SHARED_GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
PACKAGED = ["RTE", "MRPC", "STS-B", "CoLA", "WNLI"]

# Official row counts and the label counts from the shared data README (class id order).
COUNTS = {
    "RTE": (2490, 277, [1249, 1241], [146, 131]),  # entailment, not_entailment
    "MRPC": (3668, 408, [1194, 2474], [129, 279]),  # 0, 1
    "STS-B": (5749, 1500, None, None),
    "CoLA": (8551, 1043, [2528, 6023], [322, 721]),
    "WNLI": (635, 71, [323, 312], [40, 31]),
    "SST-2": (67349, 872, [29780, 37569], [428, 444]),
}


@pytest.fixture(autouse=True)
def _no_env_dir(monkeypatch):
    monkeypatch.delenv(GLUE_DIR_ENV, raising=False)


def _check_counts(name: str, data) -> None:
    n_train, n_dev, c_train, c_dev = COUNTS[name]
    assert (len(data.train), len(data.dev)) == (n_train, n_dev)
    assert len(data.train.text_a) == len(data.train.labels) == n_train
    if c_train is None:
        assert data.train.labels.dtype == np.float32
        assert data.train.labels.min() == 0.0 and data.train.labels.max() == 5.0
        assert data.dev.labels.min() >= 0.0 and data.dev.labels.max() <= 5.0
    else:
        assert data.train.labels.dtype == np.int64
        assert np.bincount(data.train.labels).tolist() == c_train
        assert np.bincount(data.dev.labels).tolist() == c_dev


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_glue_counts(name):
    data = load_task(name)
    assert data.spec is GLUE_TASKS[name]
    assert Path(data.source) == PACKAGED_GLUE_DIR / name
    _check_counts(name, data)
    assert (data.train.text_b is None) == (name == "CoLA")


@pytest.mark.skipif(not (SHARED_GLUE / "SST-2" / "train.tsv").is_file(),
                    reason=f"SST-2 is not packaged and {SHARED_GLUE / 'SST-2'} is absent")
def test_sst2_from_shared_dir():
    data = load_task("sst2", data_dir=SHARED_GLUE)
    _check_counts("SST-2", data)
    assert data.train.text_b is None
    assert data.train.text_a[0] == "hide new secretions from the parental units "


@pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason=f"{SHARED_GLUE} is absent")
@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_copies_are_byte_identical(name):
    files = ["train.tsv", "dev.tsv"] + (["LICENSE.txt"] if name == "STS-B" else [])
    for f in files:
        assert (PACKAGED_GLUE_DIR / name / f).read_bytes() == (SHARED_GLUE / name / f).read_bytes()


def test_details_of_the_glue_files():
    mrpc = load_task("mrpc")
    assert mrpc.spec.text_columns == ("#1 String", "#2 String")  # no BOM on the first column
    assert mrpc.spec.label_column == "Quality"
    assert mrpc.train.text_a[0].startswith("Amrozi accused his brother, whom he called \"the witness\"")

    rte = load_task("RTE")
    # index 2164 is on line 2166 and begins with a quote; it must not swallow the next row.
    assert rte.train.text_a[2164].startswith('"That film wasn\'t too successful')
    assert rte.train.text_b[2164] == 'The film "WarGames" was shot in 1983.'
    assert rte.spec.label_names[rte.train.labels[2164]] == "not_entailment"

    cola = load_task("cola")
    assert len(cola.dev) == 1043
    assert cola.dev.text_a[0] == "The sailors rode the breeze clear of the rocks."

    stsb = load_task("sts-b")
    assert stsb.spec.kind == "regression" and stsb.spec.num_labels == 1
    assert stsb.train.text_a[0] == "A plane is taking off." and stsb.train.labels[0] == 5.0
    assert load_task("STSB").spec.name == "STS-B"


def test_task_names():
    assert resolve_glue_name("sts-b") == resolve_glue_name("stsb") == "STS-B"
    assert resolve_glue_name("Sst-2") == "SST-2"
    assert resolve_glue_name("mnli") is None
    with pytest.raises(UserError) as e:
        load_task("mnli")
    msg = str(e.value)
    assert "RTE" in msg and "SST-2" in msg and ".jsonl" in msg and "load_file_task" in msg


def test_glue_not_found_names_the_places(tmp_path, monkeypatch):
    monkeypatch.setattr("autopeft.tasks.glue_search_dirs",
                        lambda data_dir=None: [("nowhere", tmp_path / "a"), ("elsewhere", tmp_path / "b")])
    with pytest.raises(UserError) as e:
        load_task("SST-2")
    msg = str(e.value)
    assert str(tmp_path / "a" / "SST-2") in msg and str(tmp_path / "b" / "SST-2") in msg
    assert GLUE_DIR_ENV in msg and "data_dir" in msg


def test_explicit_data_dir_must_exist(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_task("RTE", data_dir=tmp_path / "missing")


def test_env_dir_is_used(tmp_path, monkeypatch):
    (tmp_path / "WNLI").mkdir()
    (tmp_path / "WNLI" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\t1\n1\tc\td\t0\n")
    (tmp_path / "WNLI" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\te\tf\t0\n")
    monkeypatch.setenv(GLUE_DIR_ENV, str(tmp_path))
    data = load_task("wnli")
    assert data.train.labels.tolist() == [1, 0] and data.dev.text_b == ["f"]


# --------------------------------------------------------------------------- bad GLUE files


def _glue_dir(tmp_path: Path, task: str, train: str, dev: str | None = None) -> Path:
    (tmp_path / task).mkdir()
    (tmp_path / task / "train.tsv").write_text(train)
    (tmp_path / task / "dev.tsv").write_text(dev if dev is not None else train)
    return tmp_path


def _raises(fn, *needles: str) -> str:
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


def test_glue_wrong_field_count(tmp_path):
    d = _glue_dir(tmp_path, "RTE", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta b\tentailment\n")
    _raises(lambda: load_task("RTE", d), "train.tsv", "line 3", "expected 4", "found 3")


def test_glue_label_outside_set(tmp_path):
    d = _glue_dir(tmp_path, "RTE", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tmaybe\n")
    _raises(lambda: load_task("RTE", d), "train.tsv", "line 3", "'maybe'", "not_entailment")


def test_glue_cola_without_header(tmp_path):
    d = _glue_dir(tmp_path, "CoLA", "s\t1\t\tGood.\ns\t0\t*\tBad good.\ns\t2\t\tHuh.\n")
    _raises(lambda: load_task("CoLA", d), "train.tsv", "line 3", "'2'")


def test_glue_missing_column(tmp_path):
    d = _glue_dir(tmp_path, "SST-2", "text\tlabel\nfine\t1\n")
    _raises(lambda: load_task("SST-2", d), "train.tsv", "line 1", "'sentence'", "'text', 'label'")


def test_glue_stsb_non_numeric(tmp_path):
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    good = "0\tg\tf\ty\to\ts\ts\ta\tb\t4.0\n"
    d = _glue_dir(tmp_path, "STS-B", head + good, head + good + good.replace("4.0", "high"))
    _raises(lambda: load_task("STS-B", d), "dev.tsv", "line 3", "'high'")


def test_glue_empty_split(tmp_path):
    d = _glue_dir(tmp_path, "WNLI", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\t1\n",
                  "index\tsentence1\tsentence2\tlabel\n")
    _raises(lambda: load_task("WNLI", d), "dev.tsv", "no data rows", "line 1")


# --------------------------------------------------------------------------- user files


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


def test_csv_task_with_mapping(tmp_path):
    train = _write(tmp_path / "train.csv", 'id,review,stars\n1,"Great, really",pos\n2,meh,neg\n3,ok,neu\n')
    dev = _write(tmp_path / "dev.csv", "id,review,stars\n4,bad,neg\n")
    data = load_file_task(train, dev, text_a="review", label="stars")
    assert data.spec.label_names == ("neg", "neu", "pos")
    assert data.spec.kind == "classification" and data.spec.num_labels == 3
    assert data.spec.name == tmp_path.name
    assert data.train.text_a == ["Great, really", "meh", "ok"] and data.train.text_b is None
    assert data.train.labels.tolist() == [2, 0, 1] and data.dev.labels.tolist() == [0]


def test_jsonl_pair_task_and_label_names(tmp_path):
    train = _jsonl(tmp_path / "nli_train.jsonl", [{"p": "a", "h": "b", "y": 1}, {"p": "c", "h": "d", "y": 0}])
    dev = _jsonl(tmp_path / "nli_dev.jsonl", [{"p": "e", "h": "f", "y": 1.0}])
    data = load_file_task(train, dev, text_a="p", text_b="h", label="y", label_names=["0", "1"], name="nli")
    assert data.spec.name == "nli" and data.spec.text_columns == ("p", "h")
    assert data.train.text_b == ["b", "d"] and data.train.labels.tolist() == [1, 0]
    assert data.dev.labels.tolist() == [1]


def test_numeric_labels_sort_numerically(tmp_path):
    rows = [{"t": str(i), "y": y} for i, y in enumerate([10, 2, 1])]
    f = _jsonl(tmp_path / "x.jsonl", rows)
    assert load_file_task(f, f, "t", "y").spec.label_names == ("1", "2", "10")


def test_regression_tsv_task(tmp_path):
    train = _write(tmp_path / "train.tsv", 'a\tb\tscore\n"quoted\tx\t1.5\nc\td\t3\n')
    dev = _write(tmp_path / "dev.tsv", "a\tb\tscore\ne\tf\t0.25\n")
    data = load_file_task(train, dev, text_a="a", text_b="b", label="score", kind="regression")
    assert data.spec.is_regression and data.spec.label_names == () and data.spec.primary_metric == "pearson_spearman"
    assert data.train.text_a == ['"quoted', "c"]
    assert data.train.labels.dtype == np.float32 and data.train.labels.tolist() == [1.5, 3.0]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("autopeft") and r.levelname == "WARNING"]


def test_empty_texts_are_kept_with_a_warning_or_dropped(tmp_path, caplog):
    train = _write(tmp_path / "train.csv", 'text,label\ngood,pos\n"",neg\nbad,neg\n  ,pos\nfine,pos\n')
    dev = _write(tmp_path / "dev.csv", "text,label\nok,pos\nmeh,neg\n")
    caplog.set_level("WARNING", logger="autopeft")
    kept = load_file_task(train, dev, "text", "label")
    assert kept.train.text_a == ["good", "", "bad", "  ", "fine"] and len(kept.dev) == 2
    [warning] = _warnings(caplog)  # the dev file has none
    assert f"{train}: 2 example(s) with an empty 'text' text, the first on line 3; kept" in warning
    assert "--empty-text drop" in warning
    caplog.clear()
    dropped = load_file_task(train, dev, "text", "label", empty_text="drop")
    assert dropped.train.text_a == ["good", "bad", "fine"] and dropped.train.labels.tolist() == [1, 0, 1]
    assert dropped.dev.sha256() == kept.dev.sha256() and dropped.train.sha256() != kept.train.sha256()
    [warning] = _warnings(caplog)
    assert f"{train}: left out 2 example(s) with an empty 'text' text, the first on line 3" in warning


def test_an_empty_second_text_counts_and_a_label_only_there_is_dropped_too(tmp_path, caplog):
    train = _jsonl(tmp_path / "train.jsonl", [{"p": "a", "h": "b", "y": "yes"}, {"p": "c", "h": "", "y": "maybe"},
                                              {"p": "e", "h": "f", "y": "no"}])
    dev = _jsonl(tmp_path / "dev.jsonl", [{"p": "", "h": "", "y": "no"}, {"p": "g", "h": "h", "y": "yes"}])
    caplog.set_level("WARNING", logger="autopeft")
    data = load_file_task(train, dev, "p", "y", text_b="h", empty_text="drop")
    assert data.spec.label_names == ("no", "yes") and data.train.text_b == ["b", "f"] and data.dev.text_a == ["g"]
    assert [w.split(": left out ")[1] for w in _warnings(caplog)] == [
        "1 example(s) with an empty 'p' or 'h' text, the first on line 2 (--empty-text drop)",
        "1 example(s) with an empty 'p' or 'h' text, the first on line 1 (--empty-text drop)"]


def test_empty_text_bad_value_or_nothing_left(tmp_path):
    train = _write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\n")
    empty = _write(tmp_path / "dev.csv", 'text,label\n"",pos\n" ",neg\n')
    _raises(lambda: load_file_task(train, train, "text", "label", empty_text="skip"),
            "empty_text must be 'keep' or 'drop', got 'skip'")
    _raises(lambda: load_file_task(train, empty, "text", "label", empty_text="drop"),
            f"{empty}: every example has an empty 'text' text")


def test_user_missing_file(tmp_path):
    dev = _write(tmp_path / "dev.csv", "t,y\na,0\n")
    _raises(lambda: load_file_task(tmp_path / "nope.csv", dev, "t", "y"), "nope.csv", "not found")


def test_user_missing_column_csv(tmp_path):
    f = _write(tmp_path / "data.csv", "text,label\na,0\nb,1\n")
    _raises(lambda: load_file_task(f, f, "sentence", "label"), "data.csv", "line 1", "'sentence'", "'text', 'label'")


def test_user_missing_key_jsonl(tmp_path):
    f = _jsonl(tmp_path / "data.jsonl", [{"text": "a", "label": 0}, {"txt": "b", "label": 1}])
    _raises(lambda: load_file_task(f, f, "text", "label"), "data.jsonl", "line 2", "'text'", "'txt'")


def test_user_wrong_field_count_csv(tmp_path):
    f = _write(tmp_path / "data.csv", "text,label\na,0\nb, c,1\n")
    _raises(lambda: load_file_task(f, f, "text", "label"), "data.csv", "line 3", "found 3")


def test_user_dev_label_not_in_train(tmp_path):
    train = _write(tmp_path / "train.csv", "text,label\na,x\nb,y\n")
    dev = _write(tmp_path / "dev.csv", "text,label\nc,x\nd,z\n")
    _raises(lambda: load_file_task(train, dev, "text", "label"), "dev.csv", "line 3", "'z'", "'x', 'y'")


def test_user_label_outside_label_names(tmp_path):
    f = _jsonl(tmp_path / "d.jsonl", [{"t": "a", "y": "pos"}, {"t": "b", "y": "neg"}, {"t": "c", "y": "meh"}])
    _raises(lambda: load_file_task(f, f, "t", "y", label_names=["neg", "pos"]), "d.jsonl", "line 3", "'meh'")


def test_user_non_numeric_regression_target(tmp_path):
    train = _write(tmp_path / "train.csv", "t,y\na,1.0\nb,n/a\n")
    _raises(lambda: load_file_task(train, train, "t", "y", kind="regression"), "train.csv", "line 3", "'n/a'")


def test_user_malformed_jsonl(tmp_path):
    f = _write(tmp_path / "bad.jsonl", '{"t": "a", "y": 0}\n\n{"t": "b", "y": 1\n')
    _raises(lambda: load_file_task(f, f, "t", "y"), "bad.jsonl", "line 3", "not valid JSON")
    g = _write(tmp_path / "list.jsonl", '{"t": "a", "y": 0}\n["b", 1]\n')
    _raises(lambda: load_file_task(g, g, "t", "y"), "list.jsonl", "line 2", "JSON object")


def test_user_empty_split(tmp_path):
    train = _write(tmp_path / "train.csv", "t,y\na,0\nb,1\n")
    dev = _write(tmp_path / "dev.csv", "t,y\n")
    _raises(lambda: load_file_task(train, dev, "t", "y"), "dev.csv", "no data rows", "line 1")
    empty = _write(tmp_path / "dev.jsonl", "\n")
    _raises(lambda: load_file_task(train, empty, "t", "y"), "dev.jsonl", "no examples")


def test_user_bad_options(tmp_path):
    f = _write(tmp_path / "d.csv", "t,y\na,0\nb,0\n")
    _raises(lambda: load_file_task(f, f, "t", "y"), "d.csv", "only one distinct label")
    _raises(lambda: load_file_task(tmp_path / "d.txt", f, "t", "y"), "d.txt", ".jsonl")
    _raises(lambda: load_file_task(f, f, "t", "y", kind="ranking"), "'ranking'")


def test_datasets_input_without_the_package_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    _raises(lambda: load_datasets_task("hf:glue:rte", "sentence1", "label", "sentence2"), "pip install datasets")
    _raises(lambda: load_file_task(tmp_path / "a.parquet", tmp_path / "b.parquet", "t", "y"), "autopeft[datasets]")


# --------------------------------------------------------------------------- Split / TaskSpec


def test_split_subset():
    s = Split([f"t{i}" for i in range(100)], None, np.arange(100, dtype=np.int64))
    a, b = s.subset(10, seed=3), s.subset(10, seed=3)
    assert a.text_a == b.text_a and len(a) == 10
    assert a.labels.tolist() == sorted(a.labels.tolist())  # original order kept
    assert [int(t[1:]) for t in a.text_a] == a.labels.tolist()
    assert set(a.labels.tolist()) <= set(s.subset(30, seed=3).labels.tolist())
    assert s.subset(10, seed=4).text_a != a.text_a
    assert len(s.subset(0.25, seed=0)) == 25 and len(s.subset(1.0, seed=0)) == 100
    assert len(s.subset(1000, seed=0)) == 100
    for bad in (0, -1, 0.0, 1.5, True):
        with pytest.raises(UserError):
            s.subset(bad, seed=0)


def test_split_pairs_subset_keep_alignment():
    s = Split(["a", "b", "c"], ["A", "B", "C"], np.array([0.5, 1.5, 2.5], dtype=np.float32))
    sub = s.subset(2, seed=1)
    for x, y, z in zip(sub.text_a, sub.text_b, sub.labels):
        assert y == x.upper() and z == {"a": 0.5, "b": 1.5, "c": 2.5}[x]


def test_taskspec():
    assert GLUE_TASKS["RTE"].num_labels == 2 and GLUE_TASKS["STS-B"].num_labels == 1
    assert GLUE_TASKS["MRPC"].primary_metric == "f1" and GLUE_TASKS["CoLA"].primary_metric == "mcc"
    with pytest.raises(ValueError):
        TaskSpec("x", "ranking", (), "accuracy")
    with pytest.raises(ValueError):
        TaskSpec("x", "regression", ("a", "b"), "pearson")


# --------------------------------------------------------------------------- Hugging Face datasets input


def _reviews_dataset():
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    rows = {"text": ["good film", "bad film", "great plot", "dull plot"] * 3, "label": [1, 0, 1, 0] * 3}
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features),
                                 "validation": datasets.Dataset.from_dict(rows, features=features)})


def test_a_saved_dataset_folder_and_parquet_files_are_tasks(tmp_path):
    saved = _reviews_dataset()
    saved.save_to_disk(str(tmp_path / "reviews"))
    task = load_datasets_task(str(tmp_path / "reviews"), "text", "label")
    assert task.spec.name == "reviews" and task.spec.label_names == ("negative", "positive")  # ClassLabel names
    assert task.train.text_a[:2] == ["good film", "bad film"] and list(task.train.labels[:2]) == [1, 0]
    saved["train"].to_parquet(str(tmp_path / "train.parquet"))
    saved["validation"].to_parquet(str(tmp_path / "dev.parquet"))
    from_parquet = load_file_task(tmp_path / "train.parquet", tmp_path / "dev.parquet", "text", "label")
    assert from_parquet.train.text_a == task.train.text_a and from_parquet.spec.num_labels == 2
    _raises(lambda: load_datasets_task(str(tmp_path / "reviews"), "text", "label", dev_split="test"),
            "has splits ['train', 'validation'], not ['test']")
    _raises(lambda: load_datasets_task(str(tmp_path / "nothing"), "text", "label"), "save_to_disk")


def test_an_hf_name_offline_gets_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    _raises(lambda: load_datasets_task("hf:glue:rte", "sentence1", "label", "sentence2"), "hf:glue:rte",
            "offline", "save_to_disk")


# --- the selection split ------------------------------------------------------------------------------------------
def test_selection_split_is_held_out_of_train_fixed_and_disjoint_from_what_trains_and_reports():
    from autopeft.tasks import SELECTION_MAX, selection_split

    task = load_task("RTE")  # 2,490 train examples: 10 % (249) are held out
    search_task, report, selection = selection_split(task)
    assert (selection.split, selection.examples, selection.report, selection.optimistic) == ("train", 249, "dev", False)
    assert len(search_task.dev) == 249 and len(search_task.train) == len(task.train) - 249
    assert report is task.dev
    pair = lambda split, i: (split.text_a[i], split.text_b[i])  # noqa: E731
    held = {pair(search_task.dev, i) for i in range(len(search_task.dev))}
    trained = {pair(search_task.train, i) for i in range(len(search_task.train))}
    dev = {pair(task.dev, i) for i in range(len(task.dev))}
    assert not held & trained and not held & dev
    # every trial's training examples are drawn from search_task.train, at any fidelity and seed
    for seed in range(3):
        sub = search_task.train.subset(640, seed)
        assert not {pair(sub, i) for i in range(len(sub))} & held
    again, _, _ = selection_split(load_task("RTE"))  # fixed: the same held-out examples every time
    assert again.dev.sha256() == search_task.dev.sha256()
    big = TaskData(task.spec, Split(["x"] * 20_000, ["y"] * 20_000, np.zeros(20_000, dtype=np.int64)), task.dev)
    assert selection_split(big)[2].examples == SELECTION_MAX


def test_small_tasks_and_file_tasks_select_on_dev_and_say_so():
    from autopeft.tasks import selection_split

    task = load_task("MRPC")  # 3,668 train examples, but a file task: dev selects
    same, report, selection = selection_split(task, carve=False)
    assert same is task and report is task.dev and selection.optimistic
    assert "which also chose them" in selection.describe()
    test = task.dev.subset(50, 0)
    _, report, selection = selection_split(task, test=test, carve=False)
    assert report is test and (selection.split, selection.report, selection.optimistic) == ("dev", "test", False)
    small = load_task("WNLI")  # 635 train examples: too few to hold 10 % out
    assert selection_split(small)[2].split == "dev"


def test_a_registered_toy_task_source_is_searched_stored_and_reloaded(tiny_model_dir, tmp_path, monkeypatch):
    """README, "Adding a task source": tests/toy_task_source.py and one registry line are the whole addition."""
    import autopeft
    from autopeft.tasks import TASK_KINDS, TaskSource
    from toy_task_source import INLINE

    monkeypatch.setitem(TASK_KINDS, "inline", INLINE)  # the one registry line (undone after the test)
    rows = [["good film", "pos"], ["bad film", "neg"], ["great plot", "pos"], ["dull plot", "neg"]] * 4
    task = {"examples": {"train": rows, "dev": rows[:8]}, "name": "films"}
    assert TaskSource.of(task).kind == "inline"
    out = tmp_path / "s"
    search = autopeft.create_search(str(tiny_model_dir), task, out, sampler="random", train_examples=16,
                                    dev_examples=8, epochs=1, max_length=32).optimize(budget=2)
    attrs = search.study.user_attrs
    assert attrs["task"] == "films" and attrs["task_identity"]["labels"] == ["neg", "pos"]
    assert attrs["selection"]["split"] == "dev"  # carve=False: chosen on its dev split
    again = autopeft.load_search(out)  # the record's task_source loads through the registry again
    again.optimize(budget=3)
    assert len(again.trials()) == 3
    with pytest.raises(UserError, match=r"examples \(inline\)"):  # an unmarked dict names the kinds it knows
        TaskSource.of({"rows": rows})
