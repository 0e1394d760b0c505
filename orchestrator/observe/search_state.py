"""The state of a running search, as Tune reports arrive: trials, their status, the best so far, time left.

`SearchProgress` holds it and words it (the progress line, the plain log lines); `search_progress(cfg)`
makes one for a config. The live table on a terminal and the Tune callback that feeds this state are in
progress.py. Nothing here imports Ray or rich, so it is tested with fake trials and a fake clock.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from orchestrator.core.config import RunConfig
from orchestrator.core.formatting import fmt_duration, fmt_number
from orchestrator.core.formatting import is_number as _num
from orchestrator.core.trial_status import SKIPPED_FLAG, SKIPPED_WONT_FIT, wont_fit_text

# Trial states, named as in trials.csv where they overlap.
PENDING, RUNNING, COMPLETED, STOPPED, ERROR = "PENDING", "RUNNING", "COMPLETED", "STOPPED_EARLY", "ERROR"
SKIPPED = SKIPPED_WONT_FIT  # never started: its estimate does not fit (one report, no worker)
FINISHED = (COMPLETED, STOPPED, ERROR, SKIPPED)


@dataclass
class TrialState:
    trial_id: str
    params: Dict[str, Any]
    planned_steps: Optional[int] = None
    planned_epochs: Optional[float] = None
    status: str = PENDING
    iteration: int = 0
    step: Optional[int] = None
    epoch: Optional[float] = None
    value: Optional[float] = None  # the metric at the last report
    best: Optional[float] = None  # the trial's best metric so far
    time_s: Optional[float] = None  # Tune's time_total_s at the last report
    started: Optional[float] = None  # clock() when the trial started
    ended: Optional[float] = None
    error: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def fraction(self) -> Optional[float]:
        """How far through its planned training the trial is (0..1), when that is known."""
        if self.status in FINISHED:
            return 1.0
        if self.planned_steps and self.step is not None:
            return min(1.0, self.step / self.planned_steps)
        if self.planned_epochs and self.epoch is not None:
            return min(1.0, self.epoch / self.planned_epochs)
        return None


class SearchProgress:
    """State of one search, and its words: the progress line and the plain lines of a log.

    Args:
        metric, mode: the search's metric and "min"/"max".
        total_trials: trials the search will run (num_samples).
        concurrency: trials that run at once (for the time-left estimate).
        planned: `params -> (max_steps or None, epochs or None)`, how long a trial runs if not stopped.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        metric: str,
        mode: str,
        total_trials: int,
        concurrency: int = 1,
        planned: Optional[Callable[[Dict[str, Any]], tuple]] = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.metric, self.mode = metric, mode
        self.total = max(int(total_trials or 0), 1)
        self.concurrency = max(int(concurrency or 1), 1)
        self.planned = planned
        self.clock = clock
        self.t0 = clock()
        self.trials: Dict[str, TrialState] = {}
        self.best: Optional[float] = None
        self.best_trial: Optional[str] = None

    # ---- state changes ---------------------------------------------------------------------

    def _trial(self, trial_id: str, params: Optional[Dict[str, Any]] = None) -> TrialState:
        t = self.trials.get(trial_id)
        if t is None:
            steps = epochs = None
            if self.planned is not None and params is not None:
                try:
                    steps, epochs = self.planned(params)
                except Exception:  # a bad estimate must never stop the search
                    steps = epochs = None
            t = self.trials[trial_id] = TrialState(trial_id, dict(params or {}), steps, epochs)
        elif params and not t.params:
            t.params = dict(params)
        return t

    def start(self, trial_id: str, params: Optional[Dict[str, Any]] = None) -> TrialState:
        t = self._trial(trial_id, params)
        t.status = RUNNING
        if t.started is None:
            t.started = self.clock()
        return t

    def result(self, trial_id: str, result: Dict[str, Any], params: Optional[Dict[str, Any]] = None) -> TrialState:
        t = self._trial(trial_id, params)
        if t.status == PENDING:
            t.status = RUNNING
            t.started = t.started or self.clock()
        t.iteration = int(result.get("training_iteration") or t.iteration + 1)
        if _num(result.get("step")):
            t.step = int(result["step"])
        if _num(result.get("epoch")):
            t.epoch = float(result["epoch"])
        if _num(result.get("time_total_s")):
            t.time_s = float(result["time_total_s"])
        if result.get(SKIPPED_FLAG):  # its metric is the worst value, for the search algorithm only
            t.status = SKIPPED
            t.extra.update({k: result.get(k) for k in ("needed_gb", "available_gb", "fit_limit")})
            return t
        for k in ("peak_rss_mb", "done"):
            if k in result:
                t.extra[k] = result[k]
        value = result.get(self.metric)
        if _num(value):
            t.value = float(value)
            if t.best is None or self._better(t.value, t.best):
                t.best = t.value
            if self.best is None or self._better(t.value, self.best):
                self.best, self.best_trial = t.value, trial_id
        return t

    def end(self, trial_id: str, error: Optional[str] = None) -> TrialState:
        """The trial finished: ran to the end, was stopped by the scheduler, or failed (`error`)."""
        t = self._trial(trial_id)
        frac = t.fraction() if t.status not in FINISHED else None
        if t.status == SKIPPED and error is None:
            pass
        elif error is not None:
            t.status, t.error = ERROR, error
        elif frac is not None:
            t.status = COMPLETED if frac >= 0.999 else STOPPED
        else:
            t.status = COMPLETED if t.extra.get("done", True) else STOPPED
        t.ended = self.clock()
        if t.time_s is None and t.started is not None:
            t.time_s = t.ended - t.started
        return t

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    # ---- derived numbers -------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def counts(self) -> Dict[str, int]:
        out = {s: 0 for s in (PENDING, RUNNING, COMPLETED, STOPPED, ERROR, SKIPPED)}
        for t in self.trials.values():
            out[t.status] += 1
        out[PENDING] += max(0, self.total - len(self.trials))  # not yet created by the search algorithm
        return out

    def done_fraction(self) -> float:
        work = sum((t.fraction() or 0.0) for t in self.trials.values())
        return min(1.0, work / self.total)

    def eta(self) -> Optional[float]:
        """Seconds left: unfinished work (trials x fraction left) at the pace seen so far, over concurrency.

        Trials that ASHA stops early end sooner than this assumes, so the estimate errs long. None until
        some trial has made measurable progress.
        """
        now = self.clock()
        per_trial = []
        for t in self.trials.values():
            if t.status in (ERROR, SKIPPED):
                continue
            f = t.fraction() if t.status == RUNNING else (1.0 if t.status == COMPLETED else None)
            spent = t.time_s if t.time_s is not None else (now - t.started if t.started is not None else None)
            if f and f > 0.02 and spent:
                per_trial.append(spent / f)
        if not per_trial:
            return None
        full = statistics.median(per_trial)
        running = [t for t in self.trials.values() if t.status == RUNNING]
        waiting = self.counts()[PENDING]
        if not running and not waiting:
            return 0.0
        left_running = [full * (1 - (t.fraction() or 0.0)) for t in running]
        # Running trials go on in parallel; waiting ones start as slots free up.
        lanes = left_running + [0.0] * max(0, self.concurrency - len(left_running))
        for _ in range(waiting):
            lanes.sort()
            lanes[0] += full
        return max(lanes) if lanes else 0.0

    # ---- in words --------------------------------------------------------------------------

    def param_names(self) -> List[str]:
        keys: List[str] = []
        for t in self.trials.values():
            keys += [k for k in t.params if k not in keys]
        return keys

    def summary_line(self) -> str:
        return " · ".join([self.trials_text(), self.time_text()])

    def trials_text(self) -> str:
        c = self.counts()
        done = c[COMPLETED] + c[STOPPED] + c[ERROR] + c[SKIPPED]
        parts = [f"{done}/{self.total} trials done"]
        if c[RUNNING]:
            parts.append(f"{c[RUNNING]} running")
        if c[STOPPED]:
            parts.append(f"{c[STOPPED]} stopped early")
        if c[ERROR]:
            parts.append(f"{c[ERROR]} failed")
        if c[SKIPPED]:
            parts.append(f"{c[SKIPPED]} skipped (won't fit)")
        return " · ".join(parts)

    def time_text(self) -> str:
        c = self.counts()
        parts = [f"elapsed {fmt_duration(self.elapsed())}"]
        if c[COMPLETED] + c[STOPPED] + c[ERROR] + c[SKIPPED] < self.total:
            eta = self.eta()
            parts.append(f"~{fmt_duration(eta)} left" if eta is not None else "time left: estimating")
        if self.best is not None:
            parts.append(f"best {self.metric} {fmt_value(self.best)} ({self.best_trial})")
        return " · ".join(parts)

    def plain_result_line(self, t: TrialState) -> str:
        shown = f"{self.metric}={fmt_value(t.value)}" if t.value is not None else f"{self.metric}=-"
        if t.best is not None and t.best != t.value:  # the run keeps a trial's best checkpoint, not its last
            shown += f" (its best {fmt_value(t.best)})"
        step = f" at step {t.step}" if t.step is not None else ""
        if t.status == ERROR:
            what = f"trial {t.trial_id} FAILED{step}: {t.error}"
        elif t.status == SKIPPED:
            what = self.skipped_line(t)
        elif t.status == STOPPED:
            what = f"trial {t.trial_id} stopped early{step}: {shown}"
        else:
            what = f"trial {t.trial_id} done{step}: {shown}"
        return f"{what} | {self.summary_line()}"

    def skipped_line(self, t: TrialState) -> str:
        return f"trial {t.trial_id} skipped, won't fit: {wont_fit_text(t.extra)}"

    def plain_start_line(self, t: TrialState) -> str:
        params = ", ".join(f"{k}={fmt_value(v)}" for k, v in t.params.items())
        return f"trial {t.trial_id} started ({params})" if params else f"trial {t.trial_id} started"


def search_progress(cfg: RunConfig, clock: Callable[[], float] = time.monotonic) -> SearchProgress:
    """A SearchProgress for `cfg`'s search (its metric, trial count, concurrency and trial length)."""
    s = cfg.search
    return SearchProgress(
        s.metric,
        s.resolved_mode,
        s.num_samples,
        min(s.max_concurrent_trials, s.num_samples),
        planned=PlannedLength(cfg),
        clock=clock,
    )


class PlannedLength:
    """`params -> (max_steps, epochs)`: how long a trial with these hyperparameters trains (picklable)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    def __call__(self, params: Dict[str, Any]):
        t = self.cfg.with_params(params).training if params else self.cfg.training
        return (t.max_steps or None, None if t.max_steps else t.epochs)


def fmt_value(v) -> str:
    return fmt_number(v)
