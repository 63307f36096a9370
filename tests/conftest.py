"""Shared fixtures: tiny randomly initialised models of each supported family (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import optuna  # noqa: F401 - imported now, so that its log handler holds the session's stderr, not a test's capsys
import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    MPNetConfig,
    MPNetForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from autopeft.space import ModelSpec, SearchSpace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# With pytest-xdist (scripts/test.sh runs one per core) each worker takes one thread, so that the workers do not
# oversubscribe the cores; the tests' subprocesses keep torch's default.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]

SHARED_GLUE = REPO.parent / "shared" / "data" / "glue"

# A small space and a ModelSpec for study/report tests that need no model.
SMALL_SPACE = SearchSpace(n_layers=4, serial_adapter=(0, 8, 16), parallel_adapter=(0, 8), prefix_length=(0, 4))
SMALL_SPEC = ModelSpec("bert", n_layers=4, hidden_size=32, q_dim=32, kv_dim=32, backbone_params=100_000, head_params=66)


def study_metadata(**changes) -> dict:
    """A study record for SMALL_SPACE in the shape a search stores (`StudyRecord.to_dict()`); `changes` override
    fields."""
    from autopeft.search.pareto import default_reference_point, space_max_percent
    from autopeft.search.record import StudyRecord
    from autopeft.workflow import OBJECTIVES

    record = StudyRecord(
        model="tiny", model_weights=None, model_spec=SMALL_SPEC.to_dict(), task="RTE", task_identity={},
        task_source={"name": "RTE"}, metric="accuracy", space=SMALL_SPACE.to_dict(), standards={},
        fidelity={"train_examples": 32, "epochs": 1}, fidelity_label="32x1",
        selection={"split": "dev", "examples": 32, "report": "dev", "optimistic": True, "seed": None},
        objectives=OBJECTIVES, sampler="random", seed=0, n_init=8, sampler_options={},
        reference_point=list(default_reference_point(space_max_percent(SMALL_SPACE, SMALL_SPEC))),
        user_reference_point=None, constant_baseline=50.0,
    )
    return {**record.to_dict(), **changes}


TINY_CONFIGS = {
    "bert": lambda n: BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=n, attn_implementation="sdpa",
    ),
    "roberta": lambda n: RobertaConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=80, num_labels=n, pad_token_id=0, attn_implementation="sdpa",
    ),
    "llama": lambda n: LlamaConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=n, pad_token_id=0, attn_implementation="sdpa",
    ),
    # MPNet computes attention itself (no SDPA): eager, as autopeft loads it
    "mpnet": lambda n: MPNetConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=80, num_labels=n, attn_implementation="eager",
    ),
}
TINY_CLASSES = {
    "bert": BertForSequenceClassification,
    "roberta": RobertaForSequenceClassification,
    "llama": LlamaForSequenceClassification,
    "mpnet": MPNetForSequenceClassification,
}


def make_tiny(family: str, num_labels: int = 3, seed: int = 0) -> torch.nn.Module:
    """The same tiny random model for the same (family, num_labels, seed), in eval mode."""
    torch.manual_seed(seed)
    return TINY_CLASSES[family](TINY_CONFIGS[family](num_labels)).eval()


def tiny_batch(seed: int = 1, batch: int = 3, length: int = 12) -> dict[str, torch.Tensor]:
    """Token ids with right padding on the first example."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 120, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    ids[0, length - 4 :] = 0
    mask[0, length - 4 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(params=["bert", "roberta", "llama", "mpnet"])
def family(request) -> str:
    return request.param


def _save_tiny(path: Path, family: str) -> Path:
    """A local model folder: a tiny random 2-layer model with the embedded MiniLM's tokenizer."""
    from autopeft.models import load_tokenizer

    tokenizer = load_tokenizer("minilm")
    torch.manual_seed(0)
    config = TINY_CONFIGS[family](2)
    config.vocab_size, config.num_hidden_layers = tokenizer.vocab_size, 2
    # 128 tokens; RoBERTa and MPNet count positions from padding_idx + 1
    config.max_position_embeddings = 130 if family in ("roberta", "mpnet") else 128
    TINY_CLASSES[family](config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_mpnet_dir(tmp_path_factory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("tiny-mpnet"), "mpnet")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("tiny-llama"), "llama")


# --- a PostgreSQL server on loopback (Debian's postgresql package), for the worker tests --------


def _postgres_bin() -> Path | None:
    """The folder with initdb and pg_ctl: Debian's /usr/lib/postgresql/<version>/bin, else PATH."""
    import shutil

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


@pytest.fixture(scope="session")
def postgres_server():
    """(host, port, user) of a throw-away PostgreSQL server, stopped after the session.

    Skipped, with the reason, where the server binaries or the Python driver are missing.
    As root the server runs as the `postgres` system user (initdb refuses root).
    """
    import pwd
    import shutil
    import socket
    import subprocess
    import tempfile

    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on PATH; "
                    "install Debian's postgresql package (.ci/run does when apt-get is available)")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg is not installed (pip install -e '.[test]')")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' system user to run initdb as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser (util-linux) is missing: cannot run initdb as 'postgres'")
        prefix = ["runuser", "-u", "postgres", "--"]
    home = Path(tempfile.mkdtemp(prefix="autopeft-pg-"))  # not under pytest's root-only tmp dirs
    if owner is not None:
        os.chown(home, owner.pw_uid, owner.pw_gid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    user = "autopeft"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120, check=False)

    made = run(str(bindir / "initdb"), "-D", str(home / "data"), "-U", user, "-A", "trust", "-E", "UTF8", "--no-sync")
    if made.returncode == 0:
        made = run(str(bindir / "pg_ctl"), "-D", str(home / "data"), "-l", str(home / "log"), "-w", "-t", "60",
                   "-o", f"-h 127.0.0.1 -p {port} -k {home} -F", "start")
    if made.returncode != 0:
        log = (home / "log").read_text() if (home / "log").exists() else ""
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"{Path(made.args[len(prefix)]).name} failed: {made.stderr[-1000:]}\n{log[-2000:]}")
    try:
        yield "127.0.0.1", port, user
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(home / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a new, empty database on the test server."""
    import uuid

    import psycopg

    host, port, user = postgres_server
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=host, port=port, user=user, dbname="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql://{user}@{host}:{port}/{name}"
