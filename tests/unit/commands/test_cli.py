"""The CLI's front door: validate, --dry-run, and every bad input -> one clear paragraph, exit 2, no
traceback, nothing written. Through Click's runner; nothing here starts Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import cli
from tests.conftest import write_config


@pytest.fixture()
def runner():
    return CliRunner()


@pytest.fixture()
def cfg_path(tmp_path, tiny_t5):
    return write_config(tmp_path / "exp.yaml", tiny_t5, tmp_path / "runs")


def invoke(runner, *args):
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_user_error(result, *needles, out_dir: Path = None):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("Error:")
    for n in needles:
        assert n in result.output, result.output
    if out_dir is not None:
        assert not out_dir.exists(), "a failed run must leave nothing behind"


def edit(path: Path, **sections) -> Path:
    cfg = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        cfg[name].update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_help_names_every_verb(runner):
    out = invoke(runner, "--help").output
    for verb in ("validate", "tune", "train", "estimate", "retrain", "schedule", "jobs", "report", "runs"):
        assert verb in out


def test_validate_a_good_config(runner, cfg_path):
    result = invoke(runner, "validate", cfg_path)
    assert result.exit_code == 0, result.output
    assert "Config is well-formed!" in result.output
    assert "training.learning_rate: loguniform(0.0003, 0.03)" in result.output


def test_validate_json_is_the_resolved_config(runner, cfg_path):
    result = invoke(runner, "validate", cfg_path, "--json", "--set", "lora.r=12")
    assert json.loads(result.output)["lora"]["r"] == 12


def test_dry_run_prints_the_plan_and_starts_nothing(runner, cfg_path, tmp_path):
    result = invoke(runner, "tune", cfg_path, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Search: 4 trials, random sampling, asha scheduler, eval_rougeL (max)" in result.output
    assert "Resources per trial: 1 Ray Train worker(s) x 1 CPU + 0 GPU" in result.output
    assert "Dry run: nothing started." in result.output
    assert not (tmp_path / "runs").exists()
    result = invoke(runner, "train", cfg_path, "--dry-run")
    assert "One trial with {'training.learning_rate': 0.001, 'lora.r': 6}" in result.output


def test_misspelt_key(runner, cfg_path, tmp_path):
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["trainng"] = cfg.pop("training")
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert_user_error(
        invoke(runner, "tune", cfg_path), "`trainng`", "Did you mean 'training'?", out_dir=tmp_path / "runs"
    )


def test_wrong_type_and_ranges_all_at_once(runner, cfg_path, tmp_path):
    edit(cfg_path, training={"learning_rate": 0, "batch_size": "big"}, lora={"r": 0, "dropout": 1.2})
    r = invoke(runner, "tune", cfg_path)
    assert_user_error(
        r,
        "4 problems",
        "`training.learning_rate`",
        "`training.batch_size`",
        "`lora.r`",
        "`lora.dropout`",
        out_dir=tmp_path / "runs",
    )


def test_debug_shows_the_traceback(runner, cfg_path):
    edit(cfg_path, lora={"r": 0})
    from orchestrator.core.errors import UserError

    with pytest.raises(UserError):
        runner.invoke(cli, ["--debug", "validate", str(cfg_path)], catch_exceptions=False)


def test_missing_data_file(runner, cfg_path, tmp_path):
    edit(cfg_path, data={"train": str(tmp_path / "missing.jsonl")})
    assert_user_error(
        invoke(runner, "tune", cfg_path), "`data.train`", "missing.jsonl", "does not exist", out_dir=tmp_path / "runs"
    )


def test_missing_column_lists_the_columns_it_has(runner, cfg_path, tmp_path):
    edit(cfg_path, data={"target_column": "sumary"})
    assert_user_error(
        invoke(runner, "tune", cfg_path),
        "`data.target_column`",
        "'sumary'",
        "article, summary",
        "Did you mean 'summary'?",
        out_dir=tmp_path / "runs",
    )


def test_empty_dataset(runner, cfg_path, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    edit(cfg_path, data={"eval": str(empty)})
    assert_user_error(invoke(runner, "tune", cfg_path), "`data.eval`", "no examples", out_dir=tmp_path / "runs")


def test_undecodable_line(runner, cfg_path, tmp_path, seed_data):
    bad = tmp_path / "bad.jsonl"
    lines = (seed_data / "train.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-5]  # cut a line short
    bad.write_text("\n".join(lines))
    edit(cfg_path, data={"train": str(bad)})
    assert_user_error(
        invoke(runner, "tune", cfg_path), "`data.train`", "line 3", "not valid JSON", out_dir=tmp_path / "runs"
    )
    bad.write_bytes(b'{"article": "\xff\xfe", "summary": "x"}\n')
    assert_user_error(invoke(runner, "tune", cfg_path), "not UTF-8")


def test_model_path_that_does_not_exist(runner, cfg_path, tmp_path):
    edit(cfg_path, model={"name_or_path": str(tmp_path / "no-model")})
    assert_user_error(
        invoke(runner, "tune", cfg_path),
        "`model.name_or_path`",
        "does not exist",
        "jobs.tiny_models",
        out_dir=tmp_path / "runs",
    )


def test_target_module_the_model_does_not_have(runner, cfg_path, tmp_path):
    edit(cfg_path, lora={"target_modules": ["q", "q_proj"]})
    r = invoke(runner, "tune", cfg_path)
    assert_user_error(
        r, "`lora.target_modules`", "'q_proj'", "Its linear modules are: ", "lm_head", "wi", out_dir=tmp_path / "runs"
    )


def test_task_the_model_does_not_have(runner, cfg_path, tmp_path, tiny_llama):
    edit(cfg_path, model={"name_or_path": str(tiny_llama)})
    assert_user_error(
        invoke(runner, "tune", cfg_path),
        "`model.task` is seq2seq",
        "llama model",
        "Set model.task: causal_lm",
        out_dir=tmp_path / "runs",
    )


def test_gpus_asked_for_where_none_exist(runner, cfg_path, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    edit(cfg_path, resources={"gpus_per_worker": 1})
    assert_user_error(
        invoke(runner, "tune", cfg_path),
        "`resources.gpus_per_worker` is 1",
        "has 0 GPU(s)",
        "gpus_per_worker: 0",
        out_dir=tmp_path / "runs",
    )


def test_an_existing_run_is_not_overwritten(runner, cfg_path, tmp_path):
    (tmp_path / "runs" / "exp").mkdir(parents=True)
    (tmp_path / "runs" / "exp" / "results.json").write_text("{}")
    assert_user_error(invoke(runner, "tune", cfg_path), "already holds a run", "--resume")
    assert (tmp_path / "runs" / "exp" / "results.json").read_text() == "{}"


def test_resume_refuses_a_folder_holding_the_other_kind_of_run(runner, cfg_path, tmp_path):
    """`train --resume` in a Tune search's folder (or an older version's Tune-based `train`), `tune --resume`
    in a `train` run's folder: each would find nothing of its own and start from step 0 there."""
    run_dir = tmp_path / "runs" / yaml.safe_load(cfg_path.read_text())["output"].get("experiment", "exp")
    (run_dir / "ray" / "tune").mkdir(parents=True)
    (run_dir / "ray" / "tune" / "experiment_state.json").write_text("{}")
    before = sorted(p.relative_to(tmp_path) for p in run_dir.rglob("*"))
    assert_user_error(
        invoke(runner, "train", cfg_path, "--resume"), "holds a Ray Tune search", "qlora-launch tune CONFIG --resume"
    )
    assert sorted(p.relative_to(tmp_path) for p in run_dir.rglob("*")) == before  # nothing written or removed
    (run_dir / "ray" / "tune" / "experiment_state.json").unlink()
    (run_dir / "ray" / "tune").rmdir()
    (run_dir / "ray" / "train-ab12c_00000").mkdir()
    (run_dir / "ray" / "train-ab12c_00000" / "reports.jsonl").write_text('{"step": 10}\n')
    assert_user_error(
        invoke(runner, "tune", cfg_path, "--resume"), "holds a `train` run", "qlora-launch train CONFIG --resume"
    )
    assert (run_dir / "ray" / "train-ab12c_00000" / "reports.jsonl").read_text() == '{"step": 10}\n'  # untouched


def test_two_gpus_on_one_worker_says_use_num_workers(runner, cfg_path, tmp_path):
    edit(cfg_path, resources={"gpus_per_worker": 2})
    r = invoke(runner, "tune", cfg_path)
    assert_user_error(r, "resources.gpus_per_worker", "num_workers: 2", out_dir=tmp_path / "runs")


def test_tune_with_an_unpriced_instance_type_exits_2_before_anything_is_written(runner, cfg_path, tmp_path):
    (tmp_path / "cluster.yaml").write_text((Path(__file__).resolve().parents[3] / "cluster.yaml").read_text())
    edit(cfg_path, resources={"instance_prices": {"g5.2xlarge": {"on_demand": 1.212}}})
    result = invoke(runner, "tune", cfg_path)
    assert_user_error(result, "node type gpu_spot", "instance_prices.g5.2xlarge.spot", out_dir=tmp_path / "runs")


def test_dry_run_shows_where_the_price_came_from(runner, cfg_path, tmp_path):
    (tmp_path / "cluster.yaml").write_text((Path(__file__).resolve().parents[3] / "cluster.yaml").read_text())
    edit(cfg_path, resources={"instance_prices": {"g5.2xlarge": {"on_demand": 1.212, "spot": 0.4848}}})
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["search"]["budget"] = {"usd": 0.9696}
    cfg_path.write_text(yaml.safe_dump(cfg))
    result = invoke(runner, "tune", cfg_path, "--dry-run")
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "Budget: $0.97 = 2 worker-hours" in out and "gpu_spot: g5.2xlarge spot $0.4848/h / 1 GPU" in out


def test_liger_kernels_on_cpu_workers_exit_2(runner, cfg_path, tmp_path):
    edit(cfg_path, training={"kernels": "liger"})  # resources.gpus_per_worker is 0 in this config
    assert_user_error(
        invoke(runner, "tune", cfg_path),
        "training.kernels liger",
        "need a CUDA GPU",
        "set training.kernels to auto or none",
        out_dir=tmp_path / "runs",
    )
