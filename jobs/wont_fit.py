"""A trial whose estimate cannot fit is not launched: its Tune driver reports one result and returns.

The result carries `skipped_wont_fit`, the estimate (needed vs available GiB) and the search metric at
its worst value (+inf when minimizing, -inf when maximizing; Optuna takes infinities, never NaN), so the
search algorithm learns that region is infeasible. ASHA must not rank it (`FeasibleASHA`); the trial
table and the best-trial choice skip it (no finite metric, no checkpoint).
"""

from __future__ import annotations

import math
from typing import Any, Dict

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from orchestrator.core.config import RunConfig
from orchestrator.core.trial_status import SKIPPED_FLAG, SKIPPED_WONT_FIT

RECORD_KEYS = ("needed_gb", "available_gb", "fit_limit")


def worst(mode: str) -> float:
    """The worst value of a metric the search `mode`s ("min"/"max")."""
    return math.inf if mode == "min" else -math.inf


def report_wont_fit(cfg: RunConfig, trial_id: str, plan: Dict[str, Any]) -> None:
    """Inside the trial's Tune driver: the one report of a trial that is not launched (no Train run)."""
    import ray.tune

    ray.tune.report(wont_fit_record(cfg, trial_id, plan))


def wont_fit_record(cfg: RunConfig, trial_id: str, plan: Dict[str, Any]) -> Dict[str, Any]:
    """The one report of a trial that is not launched: the metric at its worst, the flag, the estimate."""
    s = cfg.search
    return {
        s.metric: worst(s.resolved_mode),
        SKIPPED_FLAG: True,
        "trial_id": trial_id,
        "step": 0,
        **plan["record"],
        **plan["wont_fit"],
    }


def skipped_fields(last: Dict[str, Any]) -> Dict[str, Any]:
    """The trials.csv fields of a skipped trial from its one report ({} for a trial that ran)."""
    if not last.get(SKIPPED_FLAG):
        return {}
    return {"status": SKIPPED_WONT_FIT, **{k: last.get(k) for k in RECORD_KEYS}}


class FeasibleASHA(ASHAScheduler):
    """ASHA that never ranks a skipped trial's worst-value report in its rungs."""

    def on_trial_result(self, tune_controller, trial, result):
        if result.get(SKIPPED_FLAG):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        if result and result.get(SKIPPED_FLAG):
            self._trial_info.pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, result)


def measured_fields(history) -> Dict[str, Any]:
    """The trial's measured peak GPU memory over its reports (torch's max_memory_allocated), in GiB, for
    `estimate --calibrate` beside `estimated_peak_gb` ({} on CPU: RSS is not what the estimate models)."""
    peaks = [h["peak_gpu_mem_mb"] for h in history if isinstance(h.get("peak_gpu_mem_mb"), (int, float))]
    return {"measured_peak_gb": round(max(peaks) / 1024, 3)} if peaks else {}
