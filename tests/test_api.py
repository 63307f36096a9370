"""The Python API: the README's example, resume, file-task sources that reload, apply, and bad settings."""

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import autopeft
from autopeft.models import load_model
from autopeft.modules import model_spec, trainable_params

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = {"train_examples": 16, "dev_examples": 16, "epochs": 1, "max_length": 32}


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capfd):
    code = re.search(r"<!-- api-example -->\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own lines
    search, best, model = namespace["search"], namespace["best"], namespace["model"]
    assert len(search.trials()) == 3 and best in search.front()
    assert 0 < best.percent and best.n_seeds >= 1 and best.trials
    assert model.config.id2label == {0: "entailment", 1: "not_entailment"}
    out, err = capfd.readouterr()  # file descriptors 1 and 2, so a write from C code is caught too
    assert re.fullmatch(r"[^\n]* @ [^\n]* %\n", out), out  # the example's own print, and nothing else
    # stderr: Optuna's own log lines may remain ("[I 2026-12-07 ...] A new study created ..."), nothing else
    assert all(line.startswith(("[I ", "[W ")) for line in err.splitlines()), err
    assert (tmp_path / "runs" / "api" / "front.csv").is_file()


def _file_task(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [("good film", "pos"), ("bad film", "neg"), ("great plot", "pos"), ("dull plot", "neg")] * 4
    for name in ("train.csv", "dev.csv"):
        (folder / name).write_text("text,label\n" + "\n".join(f"{t},{y}" for t, y in rows) + "\n")
    return {"train_path": str(folder / "train.csv"), "dev_path": str(folder / "dev.csv"), "text_a": "text",
            "label": "label"}


def test_a_file_task_search_reloads_for_resume_and_retrain(tiny_model_dir, tmp_path, capsys):
    task = _file_task(tmp_path / "reviews")
    out = tmp_path / "s"
    search = autopeft.create_search(str(tiny_model_dir), task, out,
                                    sampler=autopeft.SamplerSettings("random", ref_point=(10.0, 50.0)),
                                    **TINY).optimize(budget=2)
    assert capsys.readouterr().out == ""  # the library prints nothing
    again = autopeft.load_search(out)
    assert again.study.user_attrs["task"] == "reviews"
    again.optimize(budget=3)
    assert again.study.user_attrs["reference_point"] == [10.0, 50.0]  # the one given at creation, kept
    assert len(again.trials()) == 3 and len(search.trials()) == 3
    rows = again.retrain(top=1, seeds=1, epochs=1, max_length=32)
    assert len(rows) == 1 and "retrained_mean" in rows[0]


def test_apply_adds_the_modules_to_a_model_you_hold(tiny_model_dir):
    config = {"serial_adapter": 4, "lora_rank": 2, "layers": [0, 1]}
    model = autopeft.apply(load_model(str(tiny_model_dir), 2), config)
    spec = model_spec(load_model(str(tiny_model_dir), 2))
    assert trainable_params(model) == spec.trainable_params(autopeft.PeftConfig.from_dict(config))
    out = model(input_ids=torch.tensor([[101, 2204, 102]])).logits
    assert out.shape == (1, 2)


@pytest.mark.parametrize("kwargs,needle", [
    ({"epoch": 2}, "unknown setting(s) ['epoch']"),
    ({"task": ["RTE"]}, "task must be a GLUE name or a dict"),
    ({"fidelity": "medium"}, "unknown fidelity 'medium'"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    # errors name the library's parameters, never the CLI's flags
    ({"batch": 0}, "batch must be >= 1, got 0"),
    ({"heartbeat": -1}, "heartbeat must be a whole number of seconds"),
    ({"sampler": "annealing"}, "sampler.name must be one of saasbo, gp"),
    ({"promote": -1}, "promote must be a number of front candidates"),
    ({"keep_standards": True}, "keep_standards keeps standard modules on promotion's ladder; give promote as well"),
])
def test_bad_settings_name_the_problem(tiny_model_dir, tmp_path, kwargs, needle):
    with pytest.raises(autopeft.UserError, match=re.escape(needle)):
        autopeft.create_search(str(tiny_model_dir), out_dir=tmp_path / "s", **{"task": "RTE", **kwargs})


def test_bad_sampler_settings_and_budget_name_the_parameter(tiny_model_dir, tmp_path):
    with pytest.raises(autopeft.UserError, match=re.escape("sampler.replicates applies to the saasbo and gp")):
        autopeft.SamplerSettings("random", replicates=0.2)
    with pytest.raises(autopeft.UserError, match=re.escape("sampler.nuts (warmup_steps, num_samples, thinning): "
                                                           "thinning must be at most num_samples")):
        autopeft.SamplerSettings(nuts=(8, 4, 16))
    search = autopeft.create_search(str(tiny_model_dir), "RTE", tmp_path / "s", **TINY)
    with pytest.raises(autopeft.UserError, match=r"^budget must be a positive number of trials, got 0$"):
        search.optimize(budget=0)
    assert not (tmp_path / "s" / "study.db").exists()  # refused before anything was written


def test_a_datasets_source_is_searched_and_named_after_its_folder(tiny_model_dir, tmp_path):
    import datasets

    rows = {"text": ["good film", "bad film", "great plot", "dull plot"] * 4, "label": [1, 0, 1, 0] * 4}
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    datasets.DatasetDict({s: datasets.Dataset.from_dict(rows, features=features) for s in ("train", "validation")}
                         ).save_to_disk(str(tmp_path / "films"))
    task = {"datasets": str(tmp_path / "films"), "text_a": "text", "label": "label"}
    search = autopeft.create_search(str(tiny_model_dir), task, tmp_path / "s", sampler="random", **TINY).optimize(1)
    assert search.study.user_attrs["task"] == "films" and len(autopeft.load_search(tmp_path / "s").trials()) == 1


def test_load_search_resumes_with_the_stored_sampler_options_and_a_new_n_init_is_refused(tiny_model_dir, tmp_path):
    """The study record keeps every option that changes proposals: a NUTS study resumes with NUTS."""
    from autopeft.errors import UserError
    from autopeft.search.record import StudyRecord

    out = tmp_path / "s"
    nuts = autopeft.SamplerSettings(nuts=(64, 32, 8), n_init=3, percent_scale="linear")
    autopeft.create_search(str(tiny_model_dir), "RTE", out, sampler=nuts, **TINY).optimize(budget=1)
    record = StudyRecord.from_study(autopeft.load_search(out).study)
    assert record.n_init == 3 and record.sampler_options == {"fit": "nuts", "warmup_steps": 64, "num_samples": 32,
                                                             "thinning": 8, "percent_scale": "linear"}
    # what a resume through the API runs with: the same settings, BOOptions' defaults filled in
    assert autopeft.load_search(out)._settings.sampler == replace(nuts, replicates=0.0, calibration_pairs=2)
    with pytest.raises(UserError, match=r"n_init: stored 3 vs new 5"):
        autopeft.create_search(str(tiny_model_dir), "RTE", out, sampler=replace(nuts, n_init=5),
                               **TINY).optimize(budget=2)
    with pytest.raises(UserError, match=r"sampler_options.fit: stored \"nuts\" vs new \"map\""):
        autopeft.create_search(str(tiny_model_dir), "RTE", out, sampler=replace(nuts, nuts=None),
                               **TINY).optimize(budget=2)
    study = autopeft.load_search(out).study
    assert study.metric_names == ["accuracy", "percent_params"]  # what optuna-dashboard shows
    assert len(study.trials) == 1  # the refused resumes trained nothing
