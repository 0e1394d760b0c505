"""Surviving faults in the Ray layer: a killed training worker resumes from its checkpoint; a killed
driver's search is finished by `tune --resume` without re-running finished trials; a killed `train`
driver's run by `train --resume`, at its step."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, write_config
from tests.helpers.train_process import kill_tree, start_train, train_workers

pytestmark = pytest.mark.integration


def tune_histories(run_dir: Path):
    """Every result of every trial from Ray's storage: {trial dir name: [result, ...]}. `tune`: Tune's
    results; `train` (a bare Train run, no Tune): the reports its run folder keeps (jobs/single_run.py)."""
    out = {}
    files = sorted((run_dir / "ray" / "tune").glob("*/result.json")) + sorted(
        (run_dir / "ray").glob("train-*/reports.jsonl")
    )
    for f in files:
        out[f.parent.name] = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    return out


def wait_for(cond, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_driver_is_resumed_without_rerunning_finished_trials(tmp_path, tiny_t5):
    cfg = write_config(
        tmp_path / "rs.yaml",
        tiny_t5,
        tmp_path / "runs",
        training={"epochs": 2, "eval_steps": 5},
        tracking={"wandb": False},
        search={"metric": "eval_loss", "num_samples": 2, "max_concurrent_trials": 1, "scheduler": "fifo"},
    )
    run_dir = tmp_path / "runs" / "rs"
    cli = [sys.executable, "-m", "orchestrator.cli", "tune", str(cfg)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        cli, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:

        def one_done_and_next_started():
            hist = tune_histories(run_dir)
            return sum(1 for h in hist.values() if h and h[-1]["step"] == 10) >= 1 and len(hist) >= 2

        wait_for(one_done_and_next_started, 400, "a finished trial and a running one")
        before = {k: len(v) for k, v in tune_histories(run_dir).items() if v and v[-1]["step"] == 10}
    finally:
        family = [proc] + psutil.Process(proc.pid).children(recursive=True)
        for p in family:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        proc.wait(30)
    assert not (run_dir / "results.json").exists()

    out = subprocess.run(cli + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "Resuming the search" in out.stdout
    after = tune_histories(run_dir)
    for trial, n in before.items():
        assert len(after[trial]) == n, f"finished trial {trial} was run again"
    rows = list(csv.DictReader((run_dir / "trials.csv").open()))
    assert len(rows) == 2 and all(r["status"] == "COMPLETED" for r in rows)
    assert json.loads((run_dir / "results.json").read_text())["merge_check"]["passed"]


def test_killed_train_driver_resumes_at_its_step_and_a_killed_worker_from_its_checkpoint(tmp_path, tiny_t5):
    """One `train` run, two faults (two tests in one run: each needs a run killed after a checkpoint).

    The driver killed: `train` has no Tune state to restore, so --resume finds its Train run in storage,
    which restarts from its newest checkpoint, and the history (reports.jsonl) goes on where it stopped.
    Then, in the resumed run, the training worker killed: Ray Train restarts it from the newest checkpoint
    (fault_tolerance.max_failures) and the run finishes on its own, one continuous history."""
    cfg = write_config(
        tmp_path / "tr.yaml",
        tiny_t5,
        tmp_path / "runs",
        training={"epochs": 30, "eval_steps": 10},
        tracking={"wandb": False},
        search={"metric": "eval_loss"},
        fault_tolerance={"max_failures": 2},
        merge={"enabled": False},
    )
    run_dir = tmp_path / "runs" / "tr"
    cli = [sys.executable, "-m", "orchestrator.cli", "train", str(cfg)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        cli, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_for(
            lambda: any(h and h[-1].get("checkpoint_path") for h in tune_histories(run_dir).values()),
            300,
            "the first reported checkpoint",
        )
        (before,) = tune_histories(run_dir).values()
    finally:
        kill_tree(proc)
        proc.wait(30)
    assert not (run_dir / "results.json").exists() and before[-1]["step"] < 150

    # --resume, and in the resumed run, once it has reported a checkpoint of its own, its worker killed
    proc = start_train(cfg, tmp_path, env, "--resume")
    try:

        def resumed_checkpoint():
            (h,) = tune_histories(run_dir).values() or [[]]
            return len(h) > len(before) + 1 and h[-1].get("checkpoint_path")

        wait_for(resumed_checkpoint, 300, "a checkpoint reported by the resumed run")
        workers = train_workers(proc)  # our own Ray's training worker: a descendant of the resumed driver
        assert len(workers) == 1, workers
        workers[0].send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
    finally:
        kill_tree(proc)
    assert proc.returncode == 0, out[-4000:]
    assert "Resuming the run" in out
    assert not (run_dir / "ray" / "tune").exists(), "`train` ran a Tune experiment"  # a bare Train run
    assert list((run_dir / "ray").glob("train-*/finished.json"))
    (history,) = tune_histories(run_dir).values()  # the same Train run, one history
    steps = [r["step"] for r in history]
    assert history[: len(before)] == before and steps == sorted(set(steps)), f"the step counter went back: {steps}"
    assert [r["training_iteration"] for r in history] == list(range(1, len(history) + 1))
    resumed = list(dict.fromkeys(r["resumed_from_step"] for r in history if r.get("resumed_from_step")))
    # the driver's resume: its checkpoint, not 0
    assert resumed and resumed[0] >= before[-1]["step"] and resumed[0] % 10 == 0, (resumed, steps)
    # the worker's restart: a later checkpoint, one the resumed run saved
    assert len(resumed) == 2 and resumed[1] > resumed[0] and resumed[1] % 10 == 0, (resumed, steps)
    assert steps[-1] == 150  # 10 examples / batch 2 x 30 epochs: it finished the whole run
    rows = list(csv.DictReader((run_dir / "trials.csv").open()))
    assert rows[0]["status"] == "COMPLETED" and int(rows[0]["steps"]) == 150
    log = json.loads(next((run_dir / "trials").glob("*/log_history.json")).read_text())
    train_steps = [h["step"] for h in log if "loss" in h]
    assert train_steps == sorted(set(train_steps)) and train_steps[0] == 1  # one continuous history
