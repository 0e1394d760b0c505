"""Model work the driver hands to a Ray worker: the merge, its re-check, scoring a challenger or a champion.

The driver (often a small CPU head) never loads a model: these run as Ray tasks with the trials'
resources (a whole GPU where the trials had any, the trials' custom resources, i.e. their node pool).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar

from orchestrator.core.config import RunConfig

T = TypeVar("T")


def task_options(cfg: RunConfig) -> Dict[str, Any]:
    """ray.remote options for one model task: where the trials ran, with what they had."""
    r = cfg.resources
    return {
        "num_cpus": r.cpus_per_worker,
        "num_gpus": 1 if r.gpus_per_worker else 0,
        "resources": dict(r.custom) or None,
        "max_retries": cfg.fault_tolerance.max_failures,  # a lost node re-runs the task elsewhere
    }


def folder_files(folder: Path) -> Dict[str, bytes]:
    """The files of a small flat folder (an adapter), to hand to a task by value."""
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def write_files(files: Dict[str, bytes], folder: Path) -> Path:
    """`folder_files` written back out on the task's node."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    return folder


def model_here(location: str, endpoint_url: Optional[str]) -> str:
    """A folder on this node with the model at `location`: a local path as it is, an s3:// folder fetched
    into the node's model cache (jobs.model_cache)."""
    if not location.startswith("s3://"):
        return location
    from jobs.model_cache import fetch_s3_folder

    return str(fetch_s3_folder(location.rstrip("/"), endpoint_url))


def on_worker(cfg: RunConfig, fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) as a Ray task (task_options) when Ray is connected, else in this process: a local
    `retrain` or `publish` after Ray has stopped is one machine either way."""
    import ray

    if not ray.is_initialized():
        return fn(*args)
    return ray.get(ray.remote(fn).options(**task_options(cfg)).remote(*args))


def recheck_merge(
    cfg_json: Dict[str, Any], adapter_files: Dict[str, bytes], merged: str, inputs: List[str], targets: List[str]
) -> Dict[str, Any]:
    """The model half of `publish`'s merge re-check, run by on_worker: merged vs base + adapter on the eval
    inputs (jobs.merge.verify_merge). The adapter comes by value; `merged` is a folder here or the run's
    best/merged on S3, fetched into this node's model cache."""
    from jobs.merge import verify_merge

    cfg = RunConfig.model_validate(cfg_json)
    merged = model_here(merged, cfg.output.endpoint_url)
    with tempfile.TemporaryDirectory(prefix="qlora-adapter-") as tmp:
        adapter = write_files(adapter_files, Path(tmp))
        return verify_merge(cfg, adapter, Path(merged), inputs, targets)
