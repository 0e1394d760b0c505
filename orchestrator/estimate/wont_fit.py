"""Whether a trial can fit at all: its estimated peak against the largest GPU, or the host on CPU workers.

A trial that cannot is recorded SKIPPED_WONT_FIT and never started (jobs.wont_fit). The limit is one
whole GPU (`resources.gpu_memory_gb`; unset: unknown, nothing is skipped) or, for CPU workers, the share
of this machine's memory trials may use (trial_plan.HOST_MARGIN) divided over the trial's own workers.
`space_warning` samples the search space through the same planner for `validate`.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Dict, List, Optional, Tuple

from orchestrator.estimate.memory import GIB

SAMPLES = 64  # configurations `validate` draws from the space
MOST = 0.5  # more than this share of them cannot fit: validate warns


def fit_limit(cfg, host_gib: float) -> Tuple[Optional[float], str]:
    """(GiB the largest device one worker can have holds, what it is); None when unknown."""
    from orchestrator.estimate.trial_plan import HOST_MARGIN

    r = cfg.resources
    if r.gpus > 0:
        if r.gpu_memory_gb is None:
            return None, "resources.gpu_memory_gb is not set"
        return r.gpu_memory_gb, f"one {r.gpu_memory_gb:g} GiB GPU, resources.gpu_memory_gb"
    workers = max(1, r.num_workers)
    return (
        HOST_MARGIN * host_gib / workers,
        f"{HOST_MARGIN:.0%} of {host_gib:.1f} GiB host memory over {workers} CPU worker(s)",
    )


def wont_fit(cfg, peak: int, host_gib: float) -> Optional[Dict[str, Any]]:
    """{needed_gb, available_gb, fit_limit} when `peak` bytes exceed the limit, else None."""
    limit, where = fit_limit(cfg, host_gib)
    if limit is None or peak <= limit * GIB:
        return None
    return {"needed_gb": round(peak / GIB, 3), "available_gb": round(limit, 3), "fit_limit": where}


def sample_space(cfg, n: int = SAMPLES, seed: int = 0) -> List[Dict[str, Any]]:
    """`n` configurations drawn from `search.space` (each distribution as Tune draws it)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        params: Dict[str, Any] = {}
        for key, d in cfg.search.space.items():
            b = d.bounds()
            if d.type == "choice":
                params[key] = rng.choice(list(b))
            elif d.type == "randint":
                params[key] = rng.randint(int(b[0]), int(b[1]))
            elif d.type == "loguniform":
                params[key] = float(b[0]) * (float(b[1]) / float(b[0])) ** rng.random()
            else:
                params[key] = rng.uniform(float(b[0]), float(b[1]))
        out.append(params)
    return out


def space_warning(cfg, planner: Callable[[Any], Dict[str, Any]], n: int = SAMPLES) -> Optional[str]:
    """A warning when most of `n` configurations sampled from the space cannot fit, else None."""
    if not cfg.search.space:
        return None
    skipped = []
    for params in sample_space(cfg, n, cfg.search.seed or 0):
        plan = planner(cfg.with_params(params))
        if plan.get("wont_fit"):
            skipped.append(plan["wont_fit"])
    if len(skipped) <= MOST * n:
        return None
    from orchestrator.core.trial_status import wont_fit_text

    worst = max(skipped, key=lambda w: w["needed_gb"])
    return (
        f"Warning: {len(skipped)} of {n} configurations sampled from search.space will not fit and would be "
        f"skipped (SKIPPED_WONT_FIT); the largest {wont_fit_text(worst)}. Narrow search.space (lora.r, "
        "training.batch_size, data.max_*_length) or give the trials more memory (resources)."
    )


def validate_warning(cfg) -> Optional[str]:
    """`validate`'s warning when most of the search space cannot fit (None when it can, or no estimate)."""
    from orchestrator.estimate.trial_plan import trial_planner

    planner = trial_planner(cfg, min(cfg.search.max_concurrent_trials, cfg.search.num_samples), echo=lambda *a: None)
    return space_warning(cfg, planner) if planner is not None else None


def refuse_unfit_train(cfg, params: Optional[Dict[str, Any]] = None) -> None:
    """`train` runs one configuration: when it cannot fit, say so before anything starts (UserError, exit 2)
    instead of recording one skipped trial. No estimate (an unknown model): nothing is checked."""
    from orchestrator.core.errors import UserError
    from orchestrator.core.trial_status import wont_fit_text
    from orchestrator.estimate.trial_plan import trial_planner

    planner = trial_planner(cfg, 1, echo=lambda *a: None)
    if planner is None:
        return
    w = planner(cfg.with_params({**cfg.fixed_params(), **(params or {})})).get("wont_fit")
    if w:
        raise UserError(
            f"This trial will not fit: it {wont_fit_text(w)}. Lower training.batch_size, data.max_input_length / "
            "max_target_length or lora.r, or give it more memory (resources.gpu_memory_gb, num_workers with "
            "resources.strategy: fsdp, a larger node)."
        )
