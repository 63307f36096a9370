"""BoTorch's fused kernel: a lock left by a killed compile does not stall a search; no compiler still works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from autopeft.search.environment import cpu_tag, extensions_dir
from autopeft.search.kernel import EXTENSION

# A 5-trial BO search (2 random, 3 MAP-SAAS + qLogNEHVI proposals) on a synthetic objective.
SEARCH = """
import warnings, optuna
import autopeft.log
from autopeft.search import kernel
from autopeft.search.samplers import make_sampler
from autopeft.space import ModelSpec, SearchSpace
optuna.logging.set_verbosity(optuna.logging.WARNING)
autopeft.log.enable_default_handler()  # the library's warnings on stderr, as the CLI shows them
space = SearchSpace(3, (0, 4, 8), (0, 4), (0, 2))
spec = ModelSpec("bert", 3, 32, 32, 32, 100_000, 66)
sampler = make_sampler("saasbo", space, seed=0, n_init=2, percent_fn=spec.percent, fit="map",
                       n_random_candidates=64, max_local_candidates=64, calibration_pairs=0)
study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
for _ in range(5):
    trial = study.ask()
    for name, dist in space.optuna_distributions().items():
        trial.suggest_categorical(name, dist.choices)
    config = space.from_params(trial.params)
    study.tell(trial, [50 + config.serial_adapter + sum(config.layers), spec.percent(config)])
print("kernel:", kernel._state, "trials:", len(study.trials))
"""


def run_search(ext_dir: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "TORCH_EXTENSIONS_DIR": str(ext_dir), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-c", SEARCH], env=environ, capture_output=True, text=True, timeout=400)


def _compiled_objects(folder: Path) -> None:
    """Copy the venv's compiled object and ninja's records of it (scripts/setup.sh built them), but not the
    library: the search's compile then runs, through the same code, and ninja only links (a second, not the
    compile's 40). Without them (no build in the venv) the compile is a full one."""
    import shutil

    built = extensions_dir() / EXTENSION
    for path in [*built.glob("*.o"), *(built / n for n in (".ninja_deps", ".ninja_log", "build.ninja"))]:
        if path.is_file():
            shutil.copy2(path, folder / path.name)


def test_a_lock_left_by_a_killed_compile_does_not_stall_a_search(tmp_path):
    folder = tmp_path / EXTENSION
    folder.mkdir()
    _compiled_objects(folder)
    (folder / "lock").write_text("")  # what a SIGKILL during torch's compile leaves behind
    done = run_search(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kernel: loaded trials: 5" in done.stdout
    assert not (folder / "lock").exists() and list(folder.glob(f"{EXTENSION}*.so"))
    # A second search loads the built kernel; a lock left by a kill during that load does not stall it either.
    (folder / "lock").write_text("")
    again = run_search(tmp_path)
    assert again.returncode == 0 and "kernel: loaded trials: 5" in again.stdout, again.stderr[-3000:]


def test_a_search_without_a_compiler_still_completes(tmp_path):
    done = run_search(tmp_path, CXX=str(tmp_path / "no-such-compiler"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kernel: fallback trials: 5" in done.stdout
    assert "pure-PyTorch path" in done.stderr and "compile failed" in done.stderr


def test_the_default_folder_is_keyed_by_torch_python_and_cpu(tmp_path):
    code = "from autopeft.search.environment import extensions_dir; print(extensions_dir())"
    env = {k: v for k, v in os.environ.items() if k != "TORCH_EXTENSIONS_DIR"}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "AUTOPEFT_TORCH_EXTENSIONS_DIR": str(tmp_path)},
                         capture_output=True, text=True, check=True).stdout.strip()
    import torch

    assert Path(out).parent == tmp_path
    assert Path(out).name == f"torch-{torch.__version__}-py{sys.version_info.major}{sys.version_info.minor}-cpu-{cpu_tag()}"
