"""Per-trial decisions from the estimate: `training.gradient_checkpointing: auto` and
`resources.gpus_per_worker: auto` (the GPU share each trial asks Ray for).

The model's shape is read once on the driver (meta device, orchestrator.estimate.shapes); each trial's
decision is then arithmetic on that shape and the trial's own config (`cfg.with_params(params)`, its
sampled rank and batch size), so it runs in the Tune trial's driver function without torch. jobs/ may
not import this package: the search receives a `TrialPlanner` (a picklable callable) from the pipeline.

The fit is judged per Train worker against:
- GPU workers: `resources.gpus_per_worker` x `resources.gpu_memory_gb` (unset: unknown, checkpointing
  stays on);
- CPU workers (gpus_per_worker 0): HOST_MARGIN of this machine's memory, shared by every worker of the
  trials that may run at once.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from orchestrator.estimate.memory import GIB, estimate
from orchestrator.estimate.shapes import ModelShape

HOST_MARGIN = 0.8  # share of host memory the trials' workers may plan to use (the rest: OS, Ray, the driver)
GPU_SAFETY = 1.2  # gpus_per_worker auto: the estimate (+-50 % on activations) times this
GPU_STEP = 8  # ... rounded up to 1/8 of a GPU


def gpu_share(peak: int, gpu_memory_gb: float, safety: float = GPU_SAFETY) -> float:
    """The GPU share one worker asks for: peak x safety / GPU memory, rounded up to 1/8, in [1/8, 1]."""
    need = peak * safety / (gpu_memory_gb * GIB)
    return min(1.0, max(1, math.ceil(need * GPU_STEP - 1e-9)) / GPU_STEP)


def peak_bytes(shape: ModelShape, cfg, checkpointing: bool) -> int:
    """Estimated peak memory of one worker of this trial (the configured quantization), at its rank."""
    c = cfg.with_params({"training.gradient_checkpointing": checkpointing})
    est = estimate(shape, c, ranks=[c.lora.r])
    return next(v.total for v in est.variants if v.key == est.configured_variant)


def memory_budget(cfg, host_gib: float, concurrent: int) -> Tuple[Optional[float], str]:
    """(GiB one worker may use, where that figure comes from); None when it is not known."""
    r = cfg.resources
    if r.gpus > 0:  # gpus_per_worker auto: checkpointing is judged against a whole GPU (speed before sharing)
        if r.gpu_memory_gb is None:
            return None, "resources.gpu_memory_gb is not set"
        return r.gpus * r.gpu_memory_gb, f"{r.gpus:g} x {r.gpu_memory_gb:g} GiB GPU"
    workers = max(1, r.num_workers * concurrent)
    return (
        HOST_MARGIN * host_gib / workers,
        f"{HOST_MARGIN:.0%} of {host_gib:.1f} GiB host memory over {workers} worker(s) at once",
    )


def plan_trial(shape: ModelShape, cfg, host_gib: float, concurrent: int) -> Dict[str, Any]:
    """The trial's gradient checkpointing (and, with gpus_per_worker auto, its GPU share) from the estimate.

    Returns:
        {"params": {"training.gradient_checkpointing": bool, ["resources.gpus_per_worker": share]},
        "record": {...}, "wont_fit": None or {needed_gb, available_gb, fit_limit}}: `params` resolves the
        trial's config, `record` goes into every report of the trial (its metrics and record); `wont_fit`:
        the trial cannot fit the largest GPU (or the host) and is skipped (orchestrator.estimate.wont_fit).
    """
    from orchestrator.estimate.wont_fit import wont_fit

    want = cfg.training.gradient_checkpointing
    without = peak_bytes(shape, cfg, False)
    budget, source = memory_budget(cfg, host_gib, concurrent)
    fits = budget is not None and without <= budget * GIB
    ckpt = (not fits) if want == "auto" else bool(want)
    peak = peak_bytes(shape, cfg, True) if ckpt else without
    if want != "auto":
        why = f"set to {str(want).lower()}"
    elif budget is None:
        why = f"auto: on, {source}"
    else:
        why = f"auto: {without / GIB:.2f} GiB without it {'fits' if fits else 'exceeds'} {budget:.2f} GiB ({source})"
    params: Dict[str, Any] = {"training.gradient_checkpointing": ckpt}
    extra: Dict[str, Any] = {}
    if cfg.resources.gpus_per_worker == "auto":
        share = gpu_share(peak, cfg.resources.gpu_memory_gb, cfg.resources.memory_margin)
        params["resources.gpus_per_worker"] = extra["gpus_per_worker"] = share
    return {
        "params": params,
        "wont_fit": wont_fit(cfg, peak, host_gib),
        "record": {
            **extra,
            "gradient_checkpointing": ckpt,
            "estimated_peak_gb": round(peak / GIB, 3),
            "estimated_peak_gb_without_checkpointing": round(without / GIB, 3),
            **({} if budget is None else {"memory_budget_gb": round(budget, 3)}),  # no None in Tune's metrics
            "gradient_checkpointing_reason": why,
        },
    }


@dataclass(frozen=True)
class TrialPlanner:
    """`planner(trial_cfg) -> plan_trial(...)`, with the model's shape and this machine's memory bound."""

    shape: ModelShape
    host_gib: float
    concurrent: int

    def __call__(self, cfg) -> Dict[str, Any]:
        return plan_trial(self.shape, cfg, self.host_gib, self.concurrent)


def host_memory_gib() -> float:
    """This machine's memory (a cgroup limit when lower), in GiB."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total / GIB


def model_shape(cfg) -> ModelShape:
    """The configured model's shape (meta device, nothing downloaded). Raises UserError."""
    return _shape_of(cfg.model.name_or_path, cfg.model.task, cfg.model.trust_remote_code)


@functools.lru_cache(maxsize=8)
def _shape_of(name_or_path: str, task: str, trust_remote_code: bool) -> ModelShape:
    """One build on the meta device per model and process (`train` plans before Ray starts and again in
    the search: about a second each time)."""
    from orchestrator.estimate.shapes import inspect_model, load_model_config, shipped_arch

    mc, source = load_model_config(name_or_path, trust_remote_code)
    name = shipped_arch(name_or_path) or name_or_path
    return inspect_model(mc, task, name, source, trust_remote_code)


def trial_planner(cfg, concurrent: int, echo: Callable[..., None] = print) -> Optional[TrialPlanner]:
    """The planner for a search (the `auto` settings and the trials that cannot fit), or None when the
    model's shape cannot be read here (then an `auto` keeps gradient checkpointing on, as before, and says so)."""
    try:
        shape = model_shape(cfg)
    except Exception as e:  # noqa: BLE001  (a model the meta device cannot build: no estimate, as before)
        echo(
            f"No memory estimate for the trials ({str(e).splitlines()[0][:200]}): no trial is skipped for its "
            "size; training.gradient_checkpointing auto stays on; resources.gpus_per_worker auto asks for a whole "
            "GPU per worker."
        )
        return None
    return TrialPlanner(shape, host_memory_gib(), max(1, concurrent))
