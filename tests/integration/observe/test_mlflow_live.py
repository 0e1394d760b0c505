"""Live MLflow logging: with a tracking URI set, a trial's rank 0 logs its losses into a child run of the
search's run while it trains, and the end-of-search logging completes those runs instead of duplicating them."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from tests.conftest import write_config


def test_trial_logs_to_mlflow_while_it_trains(tmp_path, tiny_t5, ray_local_2cpu):
    from mlflow.tracking import MlflowClient

    from orchestrator.core.mlflow_tags import LIVE_TAG, TRIAL_TAG
    from orchestrator.launch.pipeline import run

    uri = (tmp_path / "mlruns").as_uri()
    cfg = write_config(
        tmp_path / "live.yaml",
        tiny_t5,
        tmp_path / "runs",
        training={"epochs": 2, "eval_steps": 5, "logging_steps": 1},
        search={"metric": "eval_loss", "space": {}},
        tracking={"wandb": False, "backend": "mlflow", "mlflow_tracking_uri": uri, "project": "live-test"},
        merge={"enabled": False},
    )
    lines = []
    assert run(str(cfg), "train", [], echo=lambda *a, **k: lines.append(" ".join(map(str, a)))) == 0
    assert any("log live into run" in line for line in lines)
    run_dir = tmp_path / "runs" / "live"
    results = json.loads((run_dir / "results.json").read_text())
    (trial,) = results["trials"]
    history = json.loads((run_dir / "trials" / trial["trial_id"] / "log_history.json").read_text())

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("live-test")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("qlora_launch.kind") == "search"]
    (child,) = [r for r in runs if r.data.tags.get("qlora_launch.kind") == "trial"]
    assert len(runs) == 2  # the end-of-search logging reused both runs
    assert parent.info.status == "FINISHED" and parent.data.tags["best_trial"] == trial["trial_id"]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.tags[LIVE_TAG] == "true" and child.data.tags[TRIAL_TAG] == trial["trial_id"]
    assert child.info.status == "FINISHED" and child.data.tags["qlora_launch.status"] == trial["status"]

    losses = client.get_metric_history(child.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in losses) == pytest.approx(
        sorted((h["step"], h["loss"]) for h in history if "loss" in h)
    )
    evals = client.get_metric_history(child.info.run_id, "eval_loss")
    assert sorted(m.step for m in evals) == sorted(h["step"] for h in history if "eval_loss" in h)
    # Logged while training: every point is older than the end of the search (a post-hoc log stamps "now").
    finished_ms = datetime.fromisoformat(results["finished_at"]).timestamp() * 1000
    assert max(m.timestamp for m in losses + evals) < finished_ms
