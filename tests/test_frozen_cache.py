"""The disk copy of the lower-layer states cache (frozen.StatesCache with a directory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from autopeft import PeftConfig
from autopeft.cli import build_parser, main
from autopeft.frozen import StatesCache
from autopeft.tasks import load_task
from autopeft.training import Fidelity, train_and_evaluate

FIDELITY = Fidelity(train_examples=48, dev_examples=40, epochs=1, max_length=64, batch_size=16)
CONFIG = PeftConfig(serial_adapter=8, prefix_length=2, layers=(0, 1))  # lowest modified layer 1: states reused


@pytest.fixture(scope="module")
def rte():
    return load_task("RTE")


@pytest.fixture
def computations(monkeypatch):
    """Counts the calls that compute lower-layer states (one per split not found in a cache)."""
    import autopeft.training

    calls = []
    real = autopeft.training.lower_states

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(autopeft.training, "lower_states", counting)
    return calls


def _files(directory):
    return sorted(p for p in directory.iterdir() if p.suffix == ".safetensors")


def _states(seed: int, n: int = 5, hidden: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(int(length), hidden, generator=g) for length in torch.randint(2, 12, (n,), generator=g)]


def test_disk_cache_gives_bit_identical_results_and_a_fresh_instance_reads_it(tiny_model_dir, rte, tmp_path, computations):
    model = str(tiny_model_dir)
    memory_only = train_and_evaluate(model, rte, CONFIG, FIDELITY, progress=False, cache=StatesCache())
    assert len(computations) == 2  # train and dev states

    writer = StatesCache(directory=tmp_path)
    written = train_and_evaluate(model, rte, CONFIG, FIDELITY, progress=False, cache=writer)
    assert len(computations) == 4 and writer.disk_writes == 2 and len(_files(tmp_path)) == 2

    reader = StatesCache(directory=tmp_path)  # another process / a later run: empty memory
    read = train_and_evaluate(model, rte, CONFIG, FIDELITY, progress=False, cache=reader)
    assert len(computations) == 4  # nothing recomputed
    assert reader.disk_hits == 2 and reader.misses == 0 and reader.disk_writes == 0

    for result in (written, read):
        assert result.loss_curve == memory_only.loss_curve  # bit for bit
        assert result.metrics == memory_only.metrics and result.score == memory_only.score


def test_key_parts_select_the_file(tmp_path):
    cache = StatesCache(directory=tmp_path)
    ids = [[101, 7, 102], [101, 8, 9, 102]]
    keys = [StatesCache.key("m|fp32", 1, ids), StatesCache.key("m|bf16", 1, ids), StatesCache.key("m|fp32", 2, ids),
            StatesCache.key("other|fp32", 1, ids), StatesCache.key("m|fp32", 1, [[101, 7, 102], [101, 8, 10, 102]])]
    assert len({cache.path(k) for k in keys}) == len(keys)
    assert StatesCache.key("m|fp32", 1, ids) == keys[0]  # stable
    for i, key in enumerate(keys):
        cache.put(key, _states(i))
    fresh = StatesCache(directory=tmp_path)
    for i, key in enumerate(keys):
        assert all(torch.equal(a, b) for a, b in zip(fresh.get(key), _states(i)))
    bf16 = [s.bfloat16() for s in _states(9)]
    cache.put(keys[1], bf16)
    got = StatesCache(directory=tmp_path).get(keys[1])
    assert got[0].dtype == torch.bfloat16 and all(torch.equal(a, b) for a, b in zip(got, bf16))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-17])


def _flip_a_value(path):
    blob = bytearray(path.read_bytes())
    blob[-40] ^= 0x01  # inside the tensor data: only the checksum notices
    path.write_bytes(bytes(blob))


def _garbage(path):
    path.write_bytes(b"\x00" * 3)


def _empty(path):
    path.write_bytes(b"")


def _other_key(path):
    """A well-formed file of another key under this key's name (e.g. copied by hand)."""
    other = StatesCache(directory=path.parent / "other")
    key = StatesCache.key("x|fp32", 1, [[1, 2]])
    other.put(key, _states(3))
    path.write_bytes(other.path(key).read_bytes())


@pytest.mark.parametrize("damage", [_truncate, _flip_a_value, _garbage, _empty, _other_key])
def test_a_damaged_file_is_a_miss_and_is_rewritten(tmp_path, damage, caplog):
    key = StatesCache.key("m|fp32", 1, [[1, 2, 3]])
    StatesCache(directory=tmp_path).put(key, _states(0))
    damage(StatesCache(directory=tmp_path).path(key))
    cache = StatesCache(directory=tmp_path)
    assert cache.get(key) is None
    assert "recomputing" in caplog.text
    assert cache.misses == 1
    cache.put(key, _states(0))  # what training.py does after a miss
    got = StatesCache(directory=tmp_path).get(key)
    assert all(torch.equal(a, b) for a, b in zip(got, _states(0)))


def test_the_library_prints_nothing_of_its_own_outside_pytest(tmp_path):
    # pytest's log capture hides Python's last-resort handler, so this runs in a fresh interpreter
    code = ("import sys; from autopeft.frozen import StatesCache; key = StatesCache.key('m', 1, [[1]]); "
            "c = StatesCache(directory=sys.argv[1]); c.path(key).parent.mkdir(parents=True, exist_ok=True); "
            "c.path(key).write_bytes(b'not a tensor file'); assert c.get(key) is None and c.misses == 1")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")  # the "recomputing" warning went to the silent logger


def test_a_corrupt_file_does_not_break_a_trial(tiny_model_dir, rte, tmp_path, computations, caplog):
    model = str(tiny_model_dir)
    first = train_and_evaluate(model, rte, CONFIG, FIDELITY, progress=False, cache=StatesCache(directory=tmp_path))
    for path in _files(tmp_path):
        _truncate(path)
    again = train_and_evaluate(model, rte, CONFIG, FIDELITY, progress=False, cache=StatesCache(directory=tmp_path))
    assert caplog.text.count("recomputing") == 2
    assert len(computations) == 4  # both splits recomputed
    assert again.loss_curve == first.loss_curve and again.metrics == first.metrics
    reader = StatesCache(directory=tmp_path)  # the files were rewritten whole
    train_and_evaluate(model, rte, CONFIG, FIDELITY, progress=False, cache=reader)
    assert reader.disk_hits == 2 and len(computations) == 4


def test_the_disk_bound_evicts_the_least_recently_used_files(tmp_path):
    keys = [StatesCache.key("m|fp32", k, [[1, 2, 3]]) for k in range(4)]
    StatesCache(directory=tmp_path).put(keys[0], _states(0))
    size = _files(tmp_path)[0].stat().st_size
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("not the cache's")
    stale = tmp_path / f".{'0' * 64}.abc.tmp"  # left by a killed writer
    stale.write_bytes(b"partial")
    os.utime(stale, (0, 0))

    cache = StatesCache(directory=tmp_path, max_disk_bytes=int(2.5 * size))  # room for two files
    cache.put(keys[1], _states(0))
    os.utime(cache.path(keys[0]), (1000, 1000))
    os.utime(cache.path(keys[1]), (2000, 2000))
    assert StatesCache(directory=tmp_path).get(keys[0]) is not None  # a disk hit makes keys[0] the newest
    cache.put(keys[2], _states(0))
    assert not cache.path(keys[1]).exists()  # least recently used
    assert cache.path(keys[0]).exists() and cache.path(keys[2]).exists()
    assert sum(p.stat().st_size for p in _files(tmp_path)) <= cache.max_disk_bytes
    assert unrelated.exists() and not stale.exists()

    tiny = StatesCache(directory=tmp_path / "tiny", max_disk_bytes=size // 2)
    tiny.put(keys[3], _states(0))  # larger than the whole bound: kept in memory only
    assert _files(tmp_path / "tiny") == [] and tiny.get(keys[3]) is not None


def test_an_unusable_cache_folder_is_a_user_error(tmp_path, tiny_model_dir, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG.to_dict()))
    assert main(["train", "--model", str(tiny_model_dir), "--config", str(config), "--out", str(tmp_path / "run"),
                 "--states-cache", str(blocker / "cache")]) == 2
    assert "states cache folder" in capsys.readouterr().err


def test_cli_states_cache_on_train_search_and_worker(tiny_model_dir, tmp_path, computations):
    cache_dir = tmp_path / "states"
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG.to_dict()))
    small = ["--train-examples", "32", "--dev-examples", "32", "--epochs", "1", "--max-length", "48"]
    train = ["train", "--model", str(tiny_model_dir), "--task", "RTE", "--config", str(config), *small]

    assert main([*train, "--out", str(tmp_path / "plain")]) == 0
    plain = json.loads((tmp_path / "plain" / "result.json").read_text())
    calls = len(computations)
    assert main([*train, "--out", str(tmp_path / "a"), "--states-cache", str(cache_dir)]) == 0
    assert len(_files(cache_dir)) == 2 and len(computations) == calls + 2
    import autopeft.frozen

    autopeft.frozen.SHARED_CACHE._entries.clear()  # a later run: only the disk remembers
    assert main([*train, "--out", str(tmp_path / "b"), "--states-cache", str(cache_dir)]) == 0
    assert len(computations) == calls + 2  # read from disk
    for run in ("a", "b"):
        result = json.loads((tmp_path / run / "result.json").read_text())
        assert result["loss_curve"] == plain["loss_curve"] and result["metrics"] == plain["metrics"]

    space = tmp_path / "space.json"
    space.write_text(json.dumps({"serial_adapter": [8], "parallel_adapter": False, "prefix_length": False,
                                 "fixed_layers": {"0": 0, "1": 1}}))
    search_dir = tmp_path / "search_states"
    argv = ["search", "--model", str(tiny_model_dir), "--task", "RTE", "--sampler", "random", "--budget", "1",
            "--space", str(space), "--out", str(tmp_path / "study"), "--quiet", *small, "--states-cache", str(search_dir)]
    assert main(argv) == 0
    assert len(_files(search_dir)) == 2  # the trial (lowest layer 1) wrote its train and dev states
    worker = build_parser().parse_args(["worker", *argv[1:]])
    assert worker.states_cache == str(search_dir)
