"""Every example config validates offline, its local data has the columns it names, and `estimate`
runs on it against a config-only model (a shipped arch config on the meta device; nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.core.config_load import load_config
from orchestrator.estimate.shapes import shipped_arch
from orchestrator.launch.preflight import check_source

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
# The tiny models are built on demand (jobs.tiny_models); the estimate reads the real T5 architecture.
STAND_IN = {
    "t5_tiny_summarize_local.yaml": "t5-small",
    "t5_tiny_summarize_zh_local.yaml": "t5-small",
    "retrain_tiny_local.yaml": "t5-small",
}
COLUMNS = {"messages": lambda d: ["messages"], "instruction": lambda d: ["instruction", d.target_column]}


def test_the_examples_people_ask_for_are_shipped():
    names = {p.name for p in EXAMPLES}
    assert {"t5_small_summarize.yaml", "llama3.1_8b_instruct_cluster.yaml", "retrain_tiny_local.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_its_local_data_has_the_columns(path):
    cfg = load_config(path)
    d = cfg.data
    for key in ("train", "eval", "test"):
        src = getattr(d, key)
        if src and "://" not in src:
            columns = COLUMNS.get(d.format, lambda d: [d.input_column, d.target_column])(d)
            assert check_source(f"data.{key}", src, columns) == [], src
    if path.name not in STAND_IN:
        assert shipped_arch(cfg.model.name_or_path), f"{cfg.model.name_or_path}: ship its config.json to estimate it"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_estimate_runs_on_the_example(path):
    args = ["estimate", str(path), "--json"]
    if path.name in STAND_IN:
        args += ["--model", STAND_IN[path.name]]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert '"trainable' in res.output


def test_the_cluster_example_is_the_qlora_recipe_on_s3():
    cfg = load_config(REPO / "examples" / "llama3.1_8b_instruct_cluster.yaml")
    assert (cfg.quantization.mode, cfg.quantization.quant_type, cfg.quantization.double_quant) == ("4bit", "nf4", True)
    assert (cfg.training.optim, cfg.training.max_grad_norm) == ("paged_adamw_8bit", 0.3)
    assert (
        cfg.output.dir.startswith("s3://") and cfg.publish.to.startswith("s3://") and cfg.data.train.startswith("s3://")
    )
    assert cfg.resources.gpus_per_worker == 1 and cfg.resources.num_workers == 2


def test_the_retrain_example_publishes_to_a_local_folder():
    cfg = load_config(REPO / "examples" / "retrain_tiny_local.yaml")
    assert "://" not in cfg.publish.to and cfg.retrain.registry is None  # the registry sits in the same folder
    assert cfg.tracking.effective_backend == "none" and cfg.data.test
