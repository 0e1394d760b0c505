"""A trial's W&B run: started on rank 0 of the Train workers, its offline files copied to the run's storage."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict

from orchestrator.core.config import RunConfig


def start_tracking(cfg: RunConfig, config: Dict[str, Any]):
    """One W&B run per trial on rank 0 (grouped by experiment); HF's WandbCallback then logs into it.

    Offline files unless WANDB_API_KEY is set, never a prompt. Returns None when W&B is off.
    """
    import ray.train

    if cfg.tracking.effective_backend != "wandb" or ray.train.get_context().get_world_rank() != 0:
        return None
    mode = cfg.tracking.mode
    if mode == "auto":
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ["WANDB_LOG_MODEL"] = "false"  # adapters are logged once, for the best trial, by the driver
    import wandb

    wandb_dir = config.get("wandb_dir")
    if config.get("tracking_sink"):
        wandb_dir = tempfile.mkdtemp(prefix="qlora-wandb-")  # node-local; sync_tracking copies it to storage
    if wandb_dir:
        Path(wandb_dir).mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=cfg.tracking.project,
        entity=cfg.tracking.entity,
        group=cfg.experiment,
        job_type="trial",
        name=config.get("trial_id"),
        id=config.get("wandb_run_id"),
        resume="allow",
        dir=wandb_dir,
        mode=mode,
        config={"params": config.get("params", {}), "config": cfg.to_json(), "trial_id": config.get("trial_id")},
        # Flush every second: ASHA may stop a trial before the 15 s default writes anything.
        settings=wandb.Settings(silent=True, console="off", x_transaction_log_flush_interval=1.0),
    )


def sync_tracking(tracker, sink: Dict[str, Any]) -> None:
    """Copy this trial's offline W&B run folder to the run's storage (it would die with the node).

    `sink` is {"path", "filesystem"} in the run's storage (pyarrow). Runs at every save, so a trial that
    ASHA stops or a node that goes away leaves its files up to its last report.
    """
    import pyarrow.fs

    folder = Path(tracker.dir).parent  # .../wandb/offline-run-<time>-<id>
    try:
        pyarrow.fs.copy_files(str(folder), f"{sink['path']}/{folder.name}", destination_filesystem=sink["filesystem"])
    except OSError as e:  # tracking must never fail a trial
        from jobs.worker_log import notice

        notice(f"Could not copy the W&B files to {sink['path']}: {e}")
