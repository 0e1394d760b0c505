"""Spend and budget accounting of a search, in GPU-hours (and dollars at resources.price_per_gpu_hour).

A trial's spend is the devices it holds x its wall time (config_budget.DEVICE_HOURS_NOTE). The search
stops launching trials once the spend committed so far (finished trials, and running ones at least at
the projected cost of a trial) plus the projected cost of one more trial would pass the budget; the
projection is the mean cost of the finished trials (0 until one finishes). Pure arithmetic: the Tune
side (jobs/budget_searcher.py) feeds it results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from orchestrator.core.config import RunConfig


def trial_devices(cfg: RunConfig, planned_gpus: Optional[float] = None) -> float:
    """Devices one trial holds: num_workers x GPUs per worker (`planned_gpus`: the share gpus_per_worker
    auto resolved to); a CPU-only worker counts as one device."""
    r = cfg.resources
    gpus = planned_gpus if isinstance(planned_gpus, (int, float)) else r.gpus
    return r.num_workers * (gpus if gpus > 0 else 1.0)


def result_gpu_hours(cfg: RunConfig, result: Mapping[str, Any]) -> float:
    """GPU-hours of a trial (its config `cfg`) from a Tune result: devices x time_total_s."""
    seconds = result.get("time_total_s") or 0.0
    return trial_devices(cfg, result.get("gpus_per_worker")) * float(seconds) / 3600.0


def budget_gpu_hours(cfg: RunConfig) -> Optional[float]:
    """search.budget in GPU-hours (usd / price_per_gpu_hour), or None without a budget."""
    b = cfg.search.budget
    if b is None:
        return None
    if b.gpu_hours is not None:
        return b.gpu_hours
    price = cfg.resources.price_per_gpu_hour
    assert b.usd is not None and price is not None  # RunConfig refuses usd without a price
    return b.usd / price


def counts_spend(cfg: RunConfig) -> bool:
    """Spend is recorded when a budget or a price is set."""
    return cfg.search.budget is not None or cfg.resources.price_per_gpu_hour is not None


@dataclass
class BudgetLedger:
    """What the trials cost so far, in GPU-hours, and whether one more trial fits in `limit`."""

    limit: float
    finished: Dict[str, float] = field(default_factory=dict)
    running: Dict[str, float] = field(default_factory=dict)

    def started(self, trial_id: str) -> None:
        self.running.setdefault(trial_id, 0.0)

    def update(self, trial_id: str, gpu_hours: float) -> None:
        if trial_id not in self.finished:
            self.running[trial_id] = max(gpu_hours, self.running.get(trial_id, 0.0))

    def complete(self, trial_id: str, gpu_hours: Optional[float] = None, skipped: bool = False) -> None:
        """The trial ended; `gpu_hours` None (an errored trial without a last result): its last known spend.
        A trial skipped before it started (SKIPPED_WONT_FIT) cost nothing and says nothing of what the next
        one will: it is not counted."""
        last = self.running.pop(trial_id, 0.0)
        if skipped:
            return
        self.finished[trial_id] = max(last, gpu_hours or 0.0)

    def projected(self) -> float:
        """The projected cost of the next trial: the mean of the finished trials (0 before any finished)."""
        return sum(self.finished.values()) / len(self.finished) if self.finished else 0.0

    def committed(self) -> float:
        """Finished trials' spend plus each running trial's, counted at least at the projected cost."""
        p = self.projected()
        return sum(self.finished.values()) + sum(max(v, p) for v in self.running.values())

    def allows_next(self) -> bool:
        return self.committed() + self.projected() <= self.limit

    def to_json(self) -> Dict[str, Any]:
        return {"limit": self.limit, "finished": dict(self.finished), "running": dict(self.running)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "BudgetLedger":
        return cls(float(d["limit"]), dict(d.get("finished") or {}), dict(d.get("running") or {}))


def spend_columns(cfg: RunConfig, trial_cfg: RunConfig, last: Mapping[str, Any]) -> Dict[str, float]:
    """A trial row's spend_gpu_hours (and spend_usd with a price), {} when spend is not counted."""
    if not counts_spend(cfg):
        return {}
    gh = result_gpu_hours(trial_cfg, last)
    out = {"spend_gpu_hours": round(gh, 6)}
    price = cfg.resources.price_per_gpu_hour
    if price is not None:
        out["spend_usd"] = round(gh * price, 6)
    return out


def spend_summary(cfg: RunConfig, rows: List[Mapping[str, Any]], stop: Optional[Mapping[str, Any]]) -> Optional[dict]:
    """results.json `spend`: the total, the budget and whether (and where) the budget stopped the search.

    `stop`: what the budget limiter recorded when it refused the next trial ({committed, projected,
    launched}), None when it never did. None without a budget or a price.
    """
    if not counts_spend(cfg):
        return None
    total = sum(float(r.get("spend_gpu_hours") or 0.0) for r in rows)
    price = cfg.resources.price_per_gpu_hour
    out: Dict[str, Any] = {
        "gpu_hours": round(total, 6),
        "unit_note": "CPU-only trials count each Train worker as one GPU (worker-hours)"
        if cfg.resources.gpus == 0
        else "GPU-hours: devices x wall time",
    }
    if price is not None:
        out.update(usd=round(total * price, 6), price_per_gpu_hour=price)
        if cfg.resources.price_note:
            out["price_note"] = cfg.resources.price_note
    b = cfg.search.budget
    if b is not None:
        out["budget"] = {"gpu_hours": b.gpu_hours} if b.gpu_hours is not None else {"usd": b.usd}
        out["budget_gpu_hours"] = budget_gpu_hours(cfg)
        out["stopped_by_budget"] = stop is not None
        if stop is not None:
            out["stop"] = dict(stop)
    return out


def budget_text(cfg: RunConfig) -> Optional[str]:
    """The budget as --dry-run and validate show it, or None without one."""
    limit = budget_gpu_hours(cfg)
    if limit is None:
        return None
    unit = (
        "worker-hours (CPU-only trials: a Train worker counts as one GPU)" if cfg.resources.gpus == 0 else "GPU-hours"
    )
    price = cfg.resources.price_per_gpu_hour
    usd = f"{dollars(cfg.search.budget.usd)} = " if cfg.search.budget and cfg.search.budget.usd is not None else ""
    at = f" at {dollars(price)} each" if price is not None else ""
    if cfg.resources.price_note:
        at += f" ({cfg.resources.price_note})"
    return (
        f"Budget: {usd}{limit:.4g} {unit}{at}; no trial is launched once the spend so far plus the projected "
        "cost of the next (the mean of the finished trials) would pass it"
    )


def dollars(x: float) -> str:
    """$1,234.50; small sums keep three significant digits ($0.0531)."""
    return f"${x:,.2f}" if abs(x) >= 1 or x == 0 else f"${x:.3g}"


def spend_line(spend: Mapping[str, Any], num_samples: int, num_trials: int) -> str:
    """One line for the end-of-run summary."""
    usd = f" ({dollars(spend['usd'])})" if spend.get("usd") is not None else ""
    text = f"Spend: {spend['gpu_hours']:.4g} GPU-hours{usd}"
    b = spend.get("budget")
    if b:
        limit = dollars(b["usd"]) if "usd" in b else f"{b['gpu_hours']:.4g} GPU-hours"
        text += f" of a {limit} budget"
        if spend.get("stopped_by_budget"):
            text += (
                f"; the budget stopped the search after {num_trials} of {num_samples} trials "
                "(the next trial's projected cost would have passed it)"
            )
    if "worker" in str(spend.get("unit_note", "")):
        text += " [CPU-only trials: worker-hours]"
    return text
