"""Per-trial GPU shares from the estimate, asserted from Ray's own placement, on a CPU machine whose Ray is started
with two logical GPUs (`tune --gpus 2`; training runs on the CPU) and `resources.gpu_memory_gb: 24`.

With data.max_input_length 4096 the tiny T5's estimate is ~2.3 GiB at batch 1 (1/8 of a GPU), ~21.5 GiB at
batch 16 (a whole GPU) and ~42 GiB at batch 32: more than the GPU, SKIPPED_WONT_FIT without a worker. The
seed data is short, so the trials themselves are quick."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time

import pytest

from tests.conftest import write_config

pytestmark = pytest.mark.integration


def test_small_trials_share_a_gpu_large_ones_get_one_and_too_large_ones_never_start(tmp_path, tiny_t5):
    out = tmp_path / "runs"
    space = {
        "lora.r": {"type": "choice", "values": [4, 64]},
        "training.batch_size": {"type": "choice", "values": [1, 16, 32]},
    }
    cfg = write_config(
        tmp_path / "place.yaml",
        tiny_t5,
        out,
        data={"max_input_length": 4096, "max_target_length": 16, "test": None},
        training={"max_steps": 2, "eval_steps": 2, "gradient_checkpointing": False},
        search={
            "num_samples": 5,
            "max_concurrent_trials": 4,
            "scheduler": "fifo",
            "metric": "eval_loss",
            "seed": 3,
            "space": space,
        },
        resources={"gpus_per_worker": "auto", "gpu_memory_gb": 24, "cpus_per_worker": 1},
        merge={"enabled": False},
        tracking=None,
    )
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "tune", str(cfg), "--cpus", "8", "--gpus", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    took = time.monotonic() - t0
    assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-3000:]
    run_dir = out / "place"
    rows = {row["trial_id"]: row for row in csv.DictReader((run_dir / "trials.csv").open())}
    assert len(rows) == 5
    results = {t: json.loads((run_dir / "trials" / t / "result.json").read_text()) for t in rows}
    by_batch = {b: [t for t, row in rows.items() if row["training.batch_size"] == b] for b in ("1", "16", "32")}
    assert len(by_batch["1"]) >= 2 and by_batch["16"] and by_batch["32"], rows  # the seed samples each kind

    # too large: SKIPPED_WONT_FIT with its estimate; no worker ever started, no Train run, no metric
    for t in by_batch["32"]:
        row, res = rows[t], results[t]
        assert row["status"] == "SKIPPED_WONT_FIT" and row["eval_loss"] == "" and row["steps"] == "0"
        assert float(row["needed_gb"]) > float(row["available_gb"]) == 24.0
        assert float(row["needed_gb"]) == pytest.approx(42.07, abs=0.5)
        assert res["skipped_wont_fit"] is True and "ray_gpu_ids" not in res
        assert not (run_dir / "trials" / t / "worker.log").exists()
        assert not list(run_dir.rglob(f"train-{t}*")), "a Train run was created for a skipped trial"
        assert f"trial {t} skipped, won't fit: needs 42" in r.stdout
    # the others ran, each on the share Ray assigned its worker
    placed = {}
    for t in by_batch["1"] + by_batch["16"]:
        assert rows[t]["status"] == "COMPLETED" and float(rows[t]["eval_loss"]) > 0, rows[t]
        res = results[t]
        want = 0.125 if rows[t]["training.batch_size"] == "1" else 1.0
        assert res["gpus_per_worker"] == want and res["ray_gpu_share"] == pytest.approx(want)
        assert (run_dir / "trials" / t / "worker.log").exists()
        placed[t] = (res["ray_gpu_ids"], res["placed_at"], res["timestamp"])

    def overlap(a, b):
        return placed[a][1] < placed[b][2] and placed[b][1] < placed[a][2]

    # small trials ran at the same time on the same GPU; no trial ran beside a large one on its GPU
    small = by_batch["1"]
    assert any(placed[a][0] == placed[b][0] and overlap(a, b) for a in small for b in small if a < b), placed
    for big in by_batch["16"]:
        assert "," not in placed[big][0]
        assert not any(placed[o][0] == placed[big][0] and overlap(o, big) for o in placed if o != big), placed
    best = json.loads((run_dir / "results.json").read_text())["best"]
    assert best["trial_id"] not in by_batch["32"]
    report = (run_dir / "report" / "index.html").read_text()
    assert report.count('class="pill skipped_wont_fit"') == len(by_batch["32"]) and "needs 42.1 GiB" in report
    assert took < 240, took
