"""Checkpoints on S3 that were cut short (a node preempted mid-write) are never resumed from: the newest
whole previous checkpoint of the same Train run is taken instead. Against a real S3 server (moto)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pyarrow.fs
import pytest

from jobs.checkpoints import MANIFEST, pick_resumable
from orchestrator.core.ray_storage import s3_filesystem
from tests.conftest import REPO, write_config
from tests.helpers.s3_server import s3_bucket, s3_server  # noqa: F401  (pytest fixtures)
from tests.helpers.train_process import kill_tree, start_train, train_workers
from tests.unit.jobs.test_checkpoints import ray_run

pytestmark = pytest.mark.integration


def objects(bucket, prefix: str = "") -> dict:
    c = bucket.client()
    out = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = o
    return out


def get(bucket, key: str) -> bytes:
    return bucket.client().get_object(Bucket=bucket.name, Key=key)["Body"].read()


def cut_short(bucket, key: str) -> int:
    """Rewrite one object with its first half only, as a writer that died mid-upload leaves it."""
    body = get(bucket, key)
    bucket.client().put_object(Bucket=bucket.name, Key=key, Body=body[: len(body) // 2])
    return len(body)


def test_pick_resumable_skips_a_cut_short_checkpoint_on_s3(s3_bucket, tmp_path):
    local = ray_run(tmp_path / "train-x", [5, 10, 15])
    fs = s3_filesystem(s3_bucket.name, s3_bucket.endpoint)
    run = f"{s3_bucket.name}/runs/exp/ray/train-x"
    pyarrow.fs.copy_files(str(tmp_path / "train-x"), run, destination_filesystem=fs)
    newest = f"{run}/{local[-1].name}"
    size = cut_short(s3_bucket, f"runs/exp/ray/train-x/{local[-1].name}/checkpoint/adapter_model.safetensors")

    lines = []
    got = pick_resumable(newest, fs, tmp_path / "out", log=lines.append)
    assert got is not None and got.step == 10 and got.source == f"{run}/{local[1].name}"
    assert (got.dir / MANIFEST).is_file() and got.dir == tmp_path / "out" / "checkpoint-10"
    assert lines == [
        f"Skipping checkpoint {newest}: adapter_model.safetensors has {size // 2} bytes, the manifest says {size}"
    ]

    # The manifest of the previous one is lost too: back to the one before it.
    s3_bucket.client().delete_object(
        Bucket=s3_bucket.name, Key=f"runs/exp/ray/train-x/{local[1].name}/checkpoint/{MANIFEST}"
    )
    lines = []
    got = pick_resumable(newest, fs, tmp_path / "out2", log=lines.append)
    assert got is not None and got.step == 5 and len(lines) == 2 and lines[1].endswith(f": no {MANIFEST}")


def test_a_restarted_worker_skips_the_cut_short_newest_checkpoint_on_s3(s3_bucket, tiny_t5, tmp_path):
    """A real trial on S3 storage: once two checkpoints are registered the worker is frozen, the newest
    checkpoint's adapter is cut short on S3, and the worker is killed (a lost spot node). The restart
    resumes from the checkpoint before it, read back from S3, and trains on to the end, one continuous
    history."""
    cfg = write_config(
        tmp_path / "ci.yaml",
        tiny_t5,
        Path("unused"),
        output={"dir": f"s3://{s3_bucket.name}/runs", "endpoint_url": s3_bucket.endpoint, "experiment": "ci"},
        training={"max_steps": 20, "eval_steps": 5, "save_total_limit": 10},
        tracking={"wandb": False},
        search={"metric": "eval_loss"},
        fault_tolerance={"max_failures": 2},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")  # AWS_* from the s3_server fixture
    proc = start_train(cfg, tmp_path, env)
    cut = None
    try:
        deadline = time.time() + 300
        while cut is None and time.time() < deadline and proc.poll() is None:
            snaps = [k for k in objects(s3_bucket, "runs/ci/ray/") if k.endswith("/checkpoint_manager_snapshot.json")]
            if snaps and len(json.loads(get(s3_bucket, snaps[0]))["checkpoint_results"]) >= 2:
                (worker,) = train_workers(proc)
                worker.send_signal(signal.SIGSTOP)  # no report in flight changes what is registered now
                time.sleep(3)
                snap = json.loads(get(s3_bucket, snaps[0]))
                latest = snap["latest_checkpoint_result"]
                run = snaps[0].rpartition("/")[0]
                cut = latest["metrics"]["step"]
                previous = max(r["metrics"]["step"] for r in snap["checkpoint_results"] if r["metrics"]["step"] < cut)
                size = cut_short(
                    s3_bucket, f"{run}/{latest['checkpoint_dir_name']}/checkpoint/adapter_model.safetensors"
                )
                worker.send_signal(signal.SIGKILL)
            time.sleep(0.3)
        out, _ = proc.communicate(timeout=600)
    finally:
        kill_tree(proc)
    assert cut is not None, "two checkpoints never reached S3 before the run ended"
    assert proc.returncode == 0, out[-4000:]
    assert (
        f"{latest['checkpoint_dir_name']}: adapter_model.safetensors has {size // 2} bytes, the manifest says {size}"
        in out
    ), out[-4000:]
    assert f"Resuming from checkpoint at step {previous}" in out, out[-4000:]
    objs = objects(s3_bucket, "runs/ci/trials/")
    worker_log = get(s3_bucket, next(k for k in objs if k.endswith("/worker.log"))).decode()
    assert worker_log.count("==== ") == 2, worker_log[-4000:]  # the first attempt and the restarted one
    assert f"Resuming from checkpoint at step {previous}" in worker_log
    result = json.loads(get(s3_bucket, next(k for k in objs if k.endswith("/result.json"))))
    assert result["step"] == 20 and result["resumed_from_step"] == previous, (cut, previous, result)
    log = json.loads(get(s3_bucket, next(k for k in objs if k.endswith("/log_history.json"))))
    train_steps = [h["step"] for h in log if "loss" in h]
    assert train_steps == sorted(set(train_steps)) and train_steps[0] == 1 and train_steps[-1] == 20, train_steps
