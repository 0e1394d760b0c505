"""Model work the driver hands to a Ray worker: the merge, its re-check, scoring a challenger or a champion.

The driver (often a small CPU head) never loads a model: these run as Ray tasks with the trials'
resources (a whole GPU where the trials had any, the trials' custom resources, i.e. their node pool).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, TypeVar

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


def on_worker(cfg: RunConfig, fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) as a Ray task (task_options) when Ray is connected, else in this process: a local
    `retrain` or `publish` after Ray has stopped is one machine either way."""
    import ray

    if not ray.is_initialized():
        return fn(*args)
    return ray.get(ray.remote(fn).options(**task_options(cfg)).remote(*args))
