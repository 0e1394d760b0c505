"""FSDP trial: a killed rank restarts the trial from its last checkpoint (the adapter and optimizer shards
reloaded from the gathered checkpoint), and it trains on to the end."""

from __future__ import annotations

import signal
import threading

import pytest

from tests.conftest import write_config
from tests.integration.jobs.test_ddp import registered_checkpoints, train_workers
from tests.integration.jobs.test_fault_tolerance import tune_histories, wait_for

pytestmark = pytest.mark.integration

MAX_STEPS = 30
SAVE = 5


def test_a_killed_fsdp_rank_resumes(tmp_path, tiny_llama, ray_local_2cpu):
    from orchestrator.launch.pipeline import run

    cfg = write_config(
        tmp_path / "fsdpr.yaml",
        tiny_llama,
        tmp_path / "runs",
        model={"task": "causal_lm"},
        lora={"target_modules": "all-linear", "r": 8, "dropout": 0.0},
        data={"prompt_template": "Summarize: {input}\nSummary: ", "test": None},
        training={"max_steps": MAX_STEPS, "eval_steps": SAVE, "batch_size": 5, "learning_rate": 1e-3},
        resources={"num_workers": 2, "cpus_per_worker": 0.9, "strategy": "fsdp"},
        tracking={"wandb": False},
        search={"metric": "eval_loss"},
        fault_tolerance={"max_failures": 2},
    )
    run_dir = tmp_path / "runs" / "fsdpr"
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("code", run(str(cfg), "train", [], echo=lambda *a: None)))
    t.start()
    try:
        wait_for(lambda: registered_checkpoints(run_dir), 240, "the first registered checkpoint")
        workers = train_workers()
        assert len(workers) == 2, workers
        max(workers, key=lambda p: p.pid).send_signal(signal.SIGKILL)
    finally:
        t.join(600)
    assert result.get("code") == 0
    (history,) = tune_histories(run_dir).values()
    steps = [r["step"] for r in history]
    assert steps[-1] == MAX_STEPS, steps
    resumed = [r["resumed_from_step"] for r in history if r.get("resumed_from_step")]
    assert resumed and resumed[0] % SAVE == 0, steps
    losses = [r["loss"] for r in history]
    assert losses[-1] < losses[0], losses
