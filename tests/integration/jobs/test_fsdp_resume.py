"""FSDP trial: a killed rank restarts the trial from its last checkpoint (the adapter and optimizer shards
reloaded from the gathered checkpoint), and it trains on to the end."""

from __future__ import annotations

import signal
import threading

import pytest

from tests.integration.jobs.test_ddp import registered_checkpoints, train_workers
from tests.integration.jobs.test_fault_tolerance import tune_histories, wait_for
from tests.integration.jobs.test_fsdp import fsdp_config

pytestmark = pytest.mark.integration

MAX_STEPS = 15
SAVE = 5


def test_a_killed_fsdp_rank_resumes(tmp_path, tiny_llama, ray_local_2cpu):
    from orchestrator.launch.pipeline import run

    cfg = fsdp_config(tmp_path, tiny_llama, "fsdpr", MAX_STEPS, SAVE, 1e-3, fault_tolerance={"max_failures": 2})
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
