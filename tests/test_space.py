"""Configuration space: default sizes, PeftConfig I/O and validity, SearchSpace files,
encoding for the optimiser, Optuna parameters, analytic parameter counts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autopeft.errors import UserError
from autopeft.space import ModelSpec, PeftConfig, SearchSpace, default_sizes, size_keys

H, N = 384, 6


def cfg(sa=0, pa=0, pt=0, lora=0, layers=(1,) * N) -> PeftConfig:
    return PeftConfig(serial_adapter=sa, parallel_adapter=pa, prefix_length=pt, lora_rank=lora, layers=tuple(layers))


# --- default sizes -----------------------------------------------------------------------
def test_default_sizes_768():
    assert default_sizes(768) == (0, 1, 3, 6, 12, 24, 48, 96, 192, 384, 768)


def test_default_sizes_relative_to_hidden_size():
    sizes = default_sizes(384)
    for s in (0, 1, 3, 6, 12, 24, 48, 96, 192, 384):
        assert s in sizes
    assert max(sizes) == 384
    assert 768 not in sizes
    assert list(sizes) == sorted(set(sizes))


def test_default_space_has_lora_and_the_papers_space_has_not():
    space = SearchSpace.default(H, N)
    assert space.lora_rank == (0, 1, 2, 4, 8, 16, 32, 64)  # rank 8, the standard module, included
    assert space.serial_adapter == default_sizes(H)
    assert space.n_layers == N and space.fixed_layers == (None,) * N
    assert "lora_rank" in space.dim_names
    paper = SearchSpace.default(H, N, lora=False)
    assert paper.lora_rank == (0,) and "lora_rank" not in paper.dim_names
    assert paper.serial_adapter == space.serial_adapter and paper.prefix_length == space.prefix_length


def test_standard_modules_of_the_space():
    named = SearchSpace.default(H, N).standard_modules(H)
    assert named == {"SA24": cfg(sa=24), "PA24": cfg(pa=24), "PT24": cfg(pt=24), "LoRA8": cfg(lora=8)}
    assert list(SearchSpace.default(H, N, lora=False).standard_modules(H)) == ["SA24", "PA24", "PT24"]
    # a space that cannot hold a module in all layers, or at its standard size, has no such standard module
    assert SearchSpace(N, (0, 24), fixed_layers=(False,) + (None,) * (N - 1)).standard_modules(H) == {}
    assert list(SearchSpace(N, (0, 12, 24), (0, 8)).standard_modules(H)) == ["SA24"]


# --- PeftConfig I/O -------------------------------------------------------------------------
def test_config_dict_and_json_roundtrip(tmp_path):
    c = cfg(sa=48, pt=12, lora=8, layers=(0, 1, 1, 0, 1, 0))
    d = c.to_dict()
    assert d == {"serial_adapter": 48, "parallel_adapter": 0, "prefix_length": 12, "lora_rank": 8,
                 "layers": [0, 1, 1, 0, 1, 0]}
    assert PeftConfig.from_dict(d) == c
    assert PeftConfig.from_dict(json.loads(c.to_json())) == c
    path = tmp_path / "c.json"
    path.write_text(c.to_json())
    back = PeftConfig.from_json_file(path)
    assert back == c and back.active_layers == (1, 2, 4)


def test_config_missing_sizes_default_to_zero():
    c = PeftConfig.from_dict({"parallel_adapter": 6, "layers": [1, 0, True]})
    assert c.serial_adapter == 0 and c.lora_rank == 0 and c.layers == (True, False, True)
    assert c.modules_on == ("parallel_adapter",)


def test_config_unknown_key_named():
    with pytest.raises(UserError, match="adapter_size"):
        PeftConfig.from_dict({"adapter_size": 8, "layers": [1]})


def test_config_missing_layers():
    with pytest.raises(UserError, match="layers"):
        PeftConfig.from_dict({"serial_adapter": 8})


@pytest.mark.parametrize("layers", [[0, 2, 1], ["1", "0"], "1101", 5, [None]])
def test_config_bad_layers(layers):
    with pytest.raises(UserError, match="layers"):
        PeftConfig.from_dict({"serial_adapter": 8, "layers": layers})


@pytest.mark.parametrize("value", [-1, 2.5, "8", True, None])
def test_config_bad_size(value):
    with pytest.raises(UserError, match="serial_adapter"):
        PeftConfig.from_dict({"serial_adapter": value, "layers": [1]})
    with pytest.raises(UserError, match="serial_adapter"):
        PeftConfig(serial_adapter=value, layers=(True,))


def test_config_non_mapping_and_bad_files(tmp_path):
    with pytest.raises(UserError):
        PeftConfig.from_dict([1, 2])
    with pytest.raises(UserError, match="does not exist"):
        PeftConfig.from_json_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        PeftConfig.from_json_file(bad)


def test_describe():
    assert cfg(sa=48, pt=8, layers=(0, 0, 1, 1, 0, 0)).describe() == "SA48+PT8 @ layers 2,3"


# --- validity ---------------------------------------------------------------------------------
def test_no_module_on_is_invalid():
    c = cfg(layers=(1,) * N)
    assert not c.is_valid
    with pytest.raises(UserError, match="no module on"):
        c.check_valid()


def test_no_layer_on_is_invalid():
    c = cfg(sa=8, layers=(0,) * N)
    assert not c.is_valid
    with pytest.raises(UserError, match="no layer"):
        c.check_valid()
    assert cfg(sa=8, layers=(0,) * (N - 1) + (1,)).is_valid


def test_check_wrong_layer_count():
    space = SearchSpace.default(H, N)
    with pytest.raises(UserError, match=rf"has 4 layer bits but the model has {N} layers"):
        space.check(cfg(sa=6, layers=(1, 1, 1, 1)))
    assert not space.contains(cfg(sa=6, layers=(1,) * (N + 1)))


def test_check_size_not_in_space_lists_allowed():
    space = SearchSpace(N, (0, 8, 16), (0,), (0, 4))
    with pytest.raises(UserError, match=r"'serial_adapter'=10 .*allowed: \[0, 8, 16\]"):
        space.check(cfg(sa=10))
    with pytest.raises(UserError, match="lora_rank"):
        space.check(cfg(sa=8, lora=4))
    assert space.contains(cfg(sa=8, pt=4))


def test_check_contradicting_fixed_layers():
    fixed = (False, None, None, None, None, True)
    space = SearchSpace(N, (0, 8), (0,), (0,), fixed_layers=fixed)
    with pytest.raises(UserError, match="layer 0 .*fixes it to 0"):
        space.check(cfg(sa=8, layers=(1, 1, 0, 0, 0, 1)))
    with pytest.raises(UserError, match="layer 5 .*fixes it to 1"):
        space.check(cfg(sa=8, layers=(0, 1, 0, 0, 0, 0)))
    assert space.contains(cfg(sa=8, layers=(0, 0, 0, 0, 0, 1)))


def test_check_rejects_invalid_config_in_space():
    space = SearchSpace.default(H, N)
    with pytest.raises(UserError, match="no module on"):
        space.check(cfg())


def test_space_constructor_errors():
    with pytest.raises(UserError, match="n_layers"):
        SearchSpace(0, (0, 8), (0,), (0,))
    with pytest.raises(UserError, match="serial_adapter"):
        SearchSpace(N, (), (0,), (0,))
    with pytest.raises(UserError, match="prefix_length"):
        SearchSpace(N, (0, 8), (0,), (-1, 4))
    with pytest.raises(UserError, match="fixed_layers has 2 entries"):
        SearchSpace(N, (0, 8), (0,), (0,), fixed_layers=(None, True))
    # sizes are deduplicated and sorted
    assert SearchSpace(N, (16, 0, 8, 8), (0,), (0,)).serial_adapter == (0, 8, 16)


# --- encoding ---------------------------------------------------------------------------------
SPACES = {
    "default": SearchSpace.default(H, N),
    "paper": SearchSpace.default(H, N, lora=False),
    "fixed": SearchSpace(N, (0, 8, 64), (16,), (0, 2, 4, 8), fixed_layers=(False, None, True, None, None, False)),
}


@pytest.mark.parametrize("name", sorted(SPACES))
def test_encode_decode_roundtrip(name):
    space = SPACES[name]
    rng = np.random.default_rng(0)
    assert space.dim == len(space.dim_names)
    for _ in range(200):
        c = space.sample(rng)
        x = space.encode(c)
        assert x.shape == (space.dim,)
        assert np.all((x >= 0.0) & (x <= 1.0))
        assert space.decode(x) == c


def test_encode_endpoints():
    space = SPACES["paper"]
    lo = space.encode(cfg(sa=0, pa=0, pt=1, layers=(0, 1, 0, 0, 0, 0)))
    hi = space.encode(cfg(sa=H, pa=H, pt=H, layers=(1,) * N))
    assert lo[:3].tolist() == [0.0, 0.0, 1 / (len(default_sizes(H)) - 1)]
    assert lo[3:].tolist() == [0, 1, 0, 0, 0, 0]
    assert hi.tolist() == [1.0] * space.dim


@pytest.mark.parametrize("name", sorted(SPACES))
def test_decode_arbitrary_vectors_in_range(name):
    space = SPACES[name]
    rng = np.random.default_rng(1)
    for _ in range(200):
        x = rng.uniform(-3.0, 4.0, size=space.dim)
        c = space.decode(x)
        assert len(c.layers) == N
        for key in size_keys():
            assert getattr(c, key) in getattr(space, key)
        for i, f in enumerate(space.fixed_layers):
            if f is not None:
                assert c.layers[i] == f
        if c.is_valid:
            assert space.contains(c)
    with pytest.raises(ValueError, match=f"length {space.dim}"):
        space.decode(np.zeros(space.dim + 1))


def test_fixed_layers_and_single_choice_sizes_are_not_dimensions():
    space = SPACES["fixed"]
    assert space.searched_sizes == ("serial_adapter", "prefix_length")
    assert space.searched_layers == (1, 3, 4)
    assert space.dim_names == ["serial_adapter", "prefix_length", "layer_1", "layer_3", "layer_4"]
    assert space.dim == 5
    c = space.decode([1.0, 0.0, 1.0, 0.0, 1.0])
    assert c == PeftConfig(serial_adapter=64, parallel_adapter=16, prefix_length=0, lora_rank=0,
                           layers=(False, True, True, False, True, False))


# --- Optuna parameters ------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SPACES))
def test_params_roundtrip_and_distributions(name):
    space = SPACES[name]
    rng = np.random.default_rng(2)
    dists = space.optuna_distributions()
    assert list(dists) == space.dim_names
    for _ in range(50):
        c = space.sample(rng)
        params = space.to_params(c)
        assert set(params) == set(dists)
        for k, v in params.items():
            assert v in dists[k].choices
        assert space.from_params(params) == c


def test_params_only_searched_dimensions():
    space = SPACES["fixed"]
    c = cfg(sa=8, pa=16, pt=4, layers=(0, 1, 1, 0, 1, 0))
    assert space.to_params(c) == {"serial_adapter": 8, "prefix_length": 4, "layer_1": 1, "layer_3": 0, "layer_4": 1}


# --- space files ------------------------------------------------------------------------------
def test_space_from_yaml_restricts_sizes(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "serial_adapter: [0, 48, 96]\n"
        "parallel_adapter: [0]\n"
        "prefix_length: false\n"
        "lora_rank: default\n"
        "fixed_layers: {0: 0, 5: 1}\n"
        "n_layers: 6\n"
    )
    space = SearchSpace.from_file(path, H, N)
    assert space.serial_adapter == (0, 48, 96)
    assert space.parallel_adapter == (0,)
    assert space.prefix_length == (0,)
    assert space.lora_rank == SearchSpace.default(H, N).lora_rank
    assert any(r > 0 for r in space.lora_rank)
    assert space.fixed_layers == (False, None, None, None, None, True)
    assert space.searched_sizes == ("serial_adapter", "lora_rank")


def test_space_from_json_and_defaults(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"prefix_length": [0, 4, 8], "serial_adapter": "default",
                                "fixed_layers": {"2": 1}}))
    space = SearchSpace.from_file(path, H, N)
    assert space.prefix_length == (0, 4, 8)
    assert space.serial_adapter == default_sizes(H)
    assert space.parallel_adapter == default_sizes(H)
    assert space.lora_rank == SearchSpace.default(H, N).lora_rank  # missing: the default space's sizes
    assert space.fixed_layers[2] is True and space.fixed_layers.count(None) == N - 1


def test_space_empty_yaml_is_default(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert SearchSpace.from_file(path, H, N) == SearchSpace.default(H, N)


def test_space_to_dict_roundtrip():
    space = SearchSpace(N, (0, 8), (0,), (0, 4), (0, 2), fixed_layers=(None, True, None, None, False, None))
    d = space.to_dict()
    assert d["fixed_layers"] == {"1": 1, "4": 0}
    assert SearchSpace.from_dict(d, H, N) == space


@pytest.mark.parametrize(
    "text, match",
    [
        ("serial_adapter: [0, 8]\nadapter: [4]\n", "unknown key.*adapter"),
        ("a: [1, 2", "malformed"),
        ("n_layers: 12\n", "12-layer model.*6 layers"),
        ("fixed_layers: {6: 1}\n", "index 6 is outside 0..5"),
        ("fixed_layers: {-1: 1}\n", "outside"),
        ("fixed_layers: {x: 1}\n", "not a layer index"),
        ("fixed_layers: {1: 2}\n", "must be 0 or 1"),
        ("fixed_layers: [1, 0]\n", "fixed_layers"),
        ("serial_adapter: [0]\nparallel_adapter: false\nprefix_length: [0]\nlora_rank: [0]\n", "every module is off"),
        ("fixed_layers: {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0}\n", "every layer is fixed off"),
        ("serial_adapter: 8\n", "must be a list"),
        ("serial_adapter: [0, -4]\n", "serial_adapter"),
        ("- 1\n- 2\n", "mapping"),
    ],
)
def test_space_file_errors(tmp_path, text, match):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=match):
        SearchSpace.from_file(path, H, N)


def test_space_file_missing_and_bad_json(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        SearchSpace.from_file(tmp_path / "nope.yaml", H, N)
    bad = tmp_path / "bad.json"
    bad.write_text('{"serial_adapter": [0, 8]')
    with pytest.raises(UserError, match="malformed"):
        SearchSpace.from_file(bad, H, N)


# --- parameter counts -------------------------------------------------------------------------
SPEC = ModelSpec("toy", n_layers=1, hidden_size=4, q_dim=4, kv_dim=2, backbone_params=1000, head_params=10)


def test_params_serial_adapter_hand_computed():
    c = PeftConfig(serial_adapter=2, layers=(True,))
    assert SPEC.module_params(c) == 22  # 2*4*2 + 2 + 4
    assert SPEC.trainable_params(c) == 32
    assert SPEC.percent(c) == pytest.approx(3.2)


def test_params_each_module_hand_computed():
    assert SPEC.module_params(PeftConfig(parallel_adapter=1, layers=(True,))) == 2 * 4 * 1 + 1 + 4
    assert SPEC.module_params(PeftConfig(prefix_length=3, layers=(True,))) == 2 * 3 * 2  # 2*L*kv_dim
    assert SPEC.module_params(PeftConfig(lora_rank=2, layers=(True,))) == 2 * (4 + 4) + 2 * (4 + 2)
    both = PeftConfig(serial_adapter=2, parallel_adapter=1, prefix_length=3, lora_rank=2, layers=(True,))
    assert SPEC.module_params(both) == 22 + 13 + 12 + 28


def test_params_scale_with_active_layers():
    spec = ModelSpec("toy", n_layers=4, hidden_size=4, q_dim=4, kv_dim=2, backbone_params=500, head_params=0)
    c = PeftConfig(serial_adapter=2, layers=(True, False, True, True))
    assert spec.module_params(c) == 3 * 22
    assert spec.percent(c) == pytest.approx(100 * 66 / 500)
    assert spec.to_dict()["kv_dim"] == 2


# --- sampling ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SPACES))
def test_sample_valid_and_contained(name):
    space = SPACES[name]
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(300):
        c = space.sample(rng)
        assert c.is_valid
        assert space.contains(c)
        seen.add(c.serial_adapter)
    assert len(seen) > 1  # actually random


def test_sample_tight_space():
    # only one layer may be on and only PT is allowed: every sample must have layer 3 on and PT 4
    space = SearchSpace(4, (0,), (0,), (0, 4), fixed_layers=(False, False, False, None))
    rng = np.random.default_rng(4)
    for _ in range(50):
        c = space.sample(rng)
        assert c.layers == (False, False, False, True) and c.prefix_length == 4
