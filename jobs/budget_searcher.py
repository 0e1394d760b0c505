"""`search.budget`: a Tune search algorithm that stops launching trials when the budget would be passed.

Wraps the search's own algorithm (BasicVariantGenerator, or Optuna behind its ConcurrencyLimiter) and
asks orchestrator.core.budget's ledger before each new trial. A Stopper could not do this: its
`stop_all` stops the running trials too, while a spent budget only means no new trial starts (ASHA
still stops running ones as usual). Once the ledger refuses, the algorithm reports itself finished and
Tune ends the search when the running trials end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ray.tune.search import SearchAlgorithm, Searcher
from ray.tune.search.search_generator import SearchGenerator

from orchestrator.core.budget import (
    BudgetLedger,
    budget_gpu_hours,
    counts_spend,
    result_gpu_hours,
    spend_columns,
    spend_summary,
)
from orchestrator.core.config import RunConfig
from orchestrator.core.config_resources import ResourcesConfig
from orchestrator.core.rundir import RunDir
from orchestrator.core.trial_status import SKIPPED_FLAG

STATE_FILE = "budget-state.json"


class BudgetLimiter(SearchAlgorithm):
    """`inner`, launching trials only while the ledger allows one more (see orchestrator.core.budget).

    `stop` holds what the ledger said when it refused (None while it never did).
    """

    def __init__(self, inner: SearchAlgorithm | Searcher, cfg: RunConfig, echo: Optional[Callable[[str], Any]] = None):
        self.inner: SearchAlgorithm = SearchGenerator(inner) if isinstance(inner, Searcher) else inner
        self.cfg = cfg
        limit = budget_gpu_hours(cfg)
        assert limit is not None, "BudgetLimiter needs search.budget"
        self.ledger = BudgetLedger(limit)
        self.resources: Dict[str, Dict[str, Any]] = {}  # trial id -> its resources section (sampled params applied)
        self.stop: Optional[Dict[str, Any]] = None
        self.echo = echo  # the driver's terminal; not pickled with the search state

    def __getstate__(self):
        return {**self.__dict__, "echo": None}

    # ---- what Tune reads through to the wrapped algorithm ----------------------------------------
    @property
    def searcher(self):  # Tune sizes its pending-trial queue from a ConcurrencyLimiter found here
        return getattr(self.inner, "searcher", None)

    @property
    def metric(self):
        return self.inner.metric

    @property
    def total_samples(self):
        return self.inner.total_samples

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def add_configurations(self, experiments):
        self.inner.add_configurations(experiments)

    # ---- the budget ------------------------------------------------------------------------------
    def next_trial(self):
        if self.is_finished():
            return None
        # The wrapped algorithm first: it holds back while its concurrency limit is reached, so the budget
        # is judged when a trial could really start (after the finished trial was counted), not earlier.
        trial = self.inner.next_trial()
        if trial is None:
            return None
        if not self.ledger.allows_next():
            self.stop = {
                "launched": len(self.resources),
                "committed_gpu_hours": round(self.ledger.committed(), 6),
                "projected_gpu_hours": round(self.ledger.projected(), 6),
            }
            self.set_finished()  # the trial just drawn is dropped: the search ends here
            if self.echo:
                self.echo(stop_line(self.cfg, self.stop))
            return None
        params = (trial.config or {}).get("params", {})
        self.resources[trial.trial_id] = self.cfg.with_params(params).resources.model_dump(mode="json")
        self.ledger.started(trial.trial_id)
        return trial

    def _gpu_hours(self, trial_id: str, result: Dict[str, Any]) -> float:
        res = self.resources.get(trial_id)
        if res is None:  # a trial this algorithm did not launch (restored): the config's own resources
            return result_gpu_hours(self.cfg, result)
        trial_cfg = self.cfg.model_copy(update={"resources": ResourcesConfig.model_validate(res)})
        return result_gpu_hours(trial_cfg, result)

    def on_trial_result(self, trial_id: str, result: Dict):
        self.inner.on_trial_result(trial_id, result)
        self.ledger.update(trial_id, self._gpu_hours(trial_id, result))

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False):
        self.inner.on_trial_complete(trial_id, result=result, error=error)
        skipped = bool(result and result.get(SKIPPED_FLAG))  # SKIPPED_WONT_FIT: never started, cost nothing
        self.ledger.complete(trial_id, self._gpu_hours(trial_id, result) if result else None, skipped=skipped)

    def is_finished(self) -> bool:
        return self._finished or self.inner.is_finished()

    def set_finished(self):
        self._finished = True
        self.inner.set_finished()

    # ---- resume: the wrapped algorithm's state and the ledger ------------------------------------
    def has_checkpoint(self, dirpath: str) -> bool:
        return self.inner.has_checkpoint(dirpath)

    def save_to_dir(self, dirpath: str, **kwargs):
        self.inner.save_to_dir(dirpath, **kwargs)
        state = {"ledger": self.ledger.to_json(), "resources": self.resources, "stop": self.stop}
        tmp = Path(dirpath) / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(Path(dirpath) / STATE_FILE)

    def restore_from_dir(self, dirpath: str):
        self.inner.restore_from_dir(dirpath)
        path = Path(dirpath) / STATE_FILE
        if path.exists():
            state = json.loads(path.read_text())
            self.ledger = BudgetLedger.from_json(state["ledger"])  # running trials resume and report on
            self.resources = state.get("resources") or {}
            self.stop = state.get("stop")
            if self.stop is not None:
                self.set_finished()


def stop_line(cfg: RunConfig, stop: Dict[str, Any]) -> str:
    """What the terminal says when the budget stops the search."""
    unit = "worker-hours" if cfg.resources.gpus == 0 else "GPU-hours"
    return (
        f"Budget: {stop['committed_gpu_hours']:.4g} {unit} spent or committed + ~{stop['projected_gpu_hours']:.4g} "
        f"for the next trial would pass search.budget ({budget_gpu_hours(cfg):.4g} {unit}): no new trials after "
        f"{stop['launched']}; the running ones finish"
    )


def budget_limited(tune_config, cfg: RunConfig, echo: Optional[Callable[[str], Any]] = None):
    """`tune_config` with its search algorithm behind a BudgetLimiter when search.budget is set."""
    if cfg.search.budget is not None:
        tune_config.search_alg = BudgetLimiter(tune_config.search_alg, cfg, echo)
    return tune_config


def budget_stop(tuner) -> Optional[Dict[str, Any]]:
    """What the BudgetLimiter of a finished `tuner` recorded when it refused a trial (None: it never did)."""
    tune_config = getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None)  # no public getter
    alg = getattr(tune_config, "search_alg", None)
    return alg.stop if isinstance(alg, BudgetLimiter) else None


def record_spend(cfg: RunConfig, run: RunDir, summary: Dict[str, Any], tuner) -> None:
    """Each trial's spend (from its last Tune result) into its row and trials.csv, the total, the budget
    and whether it stopped the search into `summary` (results.json `spend`). Nothing without a budget or
    a price."""
    if not counts_spend(cfg):
        return
    rows = summary["trials"]
    for row in rows:
        params = {k: row[k] for k in cfg.search.space if row.get(k) is not None}
        row.update(spend_columns(cfg, cfg.with_params(params), run.trial_result(str(row["trial_id"]))))
    run.write_trials_csv(rows)
    summary["spend"] = spend_summary(cfg, rows, budget_stop(tuner))
