"""Fixtures shared across tiers, named after what they start or build.

Nothing here downloads anything: models are tiny, built from configs and saved with save_pretrained.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "examples" / "data" / "seed"
T5_EXAMPLE = REPO / "examples" / "t5_tiny_summarize_local.yaml"

# No hub access here: fail fast instead of retrying a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)  # W&B stays offline in tests, whatever the shell has


@pytest.fixture(scope="session")
def seed_data() -> Path:
    return SEED


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    """A tiny T5 (random init + a short pre-training) with a BPE tokenizer trained on the seed data's train
    split only: the base has never seen the eval or test examples it is scored on, and is pre-trained on the
    articles only, so that, like a real base, it has never seen a summary."""
    from jobs.tiny_models import make_tiny_model

    return make_tiny_model(
        "t5", [str(SEED / "train.jsonl")], str(tmp_path_factory.mktemp("model") / "tiny-t5"), pretrain_on=["article"]
    )


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A tiny Llama-style causal LM, built like tiny_t5."""
    from jobs.tiny_models import make_tiny_model

    return make_tiny_model("llama", [str(SEED / "train.jsonl")], str(tmp_path_factory.mktemp("model") / "tiny-llama"))


def write_config(path: Path, model_path: Path, out: Path, **sections) -> Path:
    """A copy of the T5 example config pointing at `model` and `out`, with sections updated."""
    import yaml

    cfg = yaml.safe_load(T5_EXAMPLE.read_text())
    cfg["model"]["name_or_path"] = str(model_path)
    for key in ("train", "eval", "test"):
        cfg["data"][key] = str(SEED / Path(cfg["data"][key]).name)
    cfg["output"] = {"dir": str(out)}
    for name, values in sections.items():
        if values is None:
            cfg.pop(name, None)
        elif isinstance(values, dict) and isinstance(cfg.get(name), dict):
            cfg[name].update(values)
        else:
            cfg[name] = values
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def ray_local_2cpu():
    """Ray started in-process with 2 CPUs for the session (the way `qlora-launch tune` starts it).

    Its worker processes get the S3 test server's dummy credentials (a node has its own, from its role or
    environment); this process's environment is left as it was.
    """
    import ray

    from orchestrator.launch.local import ensure_ray
    from tests.helpers.s3_server import dummy_aws_env

    with dummy_aws_env():
        started = ensure_ray(cpus=2)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def tuned_t5_run(tmp_path_factory, tiny_t5, ray_local_2cpu) -> Path:
    """One real 4-trial ASHA search on the tiny T5 (4-bit, ROUGE-L, W&B offline), run once per session.

    Tests of results, merge, publishing, reports and tracking read this run folder; none may modify it
    (copy it first).
    """
    from orchestrator.launch.pipeline import run

    root = tmp_path_factory.mktemp("tuned")
    space = {
        "training.learning_rate": {"type": "loguniform", "low": 3e-4, "high": 3e-3},
        "lora.r": {"type": "choice", "values": [4, 8]},
    }
    cfg = write_config(root / "t5.yaml", tiny_t5, root / "runs", training={"epochs": 6}, search={"space": space})
    code = run(str(cfg), "tune", [], echo=lambda *a, **k: None)
    assert code == 0
    return root / "runs" / "t5"


def merge_base_of(run_dir: Path):
    """The base a run's adapter was merged into (merge.into of its config.json: the original weights, or the
    4-bit weights it was trained on, dequantized), in float32 on the CPU."""
    import json

    from jobs.merge_fidelity import merge_base
    from orchestrator.core.config import RunConfig

    cfg = RunConfig.model_validate(json.loads((Path(run_dir) / "config.json").read_text()))
    return merge_base(cfg, "float32", "cpu")


def copy_run(run_dir: Path, dest: Path) -> Path:
    """A private copy of a run folder for tests that change it."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("ray"))
    return dest


def pytest_collection_modifyitems(config, items):
    """The folder is the tier: everything under tests/integration/ is marked `integration`, and a test
    under tests/unit/ may not be (it would start Ray or a server where none is expected)."""
    tests = Path(__file__).resolve().parent
    misplaced = []
    for item in items:
        tier = Path(str(item.fspath)).resolve().relative_to(tests).parts[0]
        if tier == "integration":
            item.add_marker(pytest.mark.integration)
        elif tier == "unit" and item.get_closest_marker("integration"):
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError(
            "tests marked `integration` under tests/unit/ (move them to tests/integration/): " + ", ".join(misplaced)
        )
