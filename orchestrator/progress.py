"""Progress of a running search, shown on the driver as Tune reports arrive.

On a terminal: a compact table of trials (status, iteration, step, metric, the trial's best) under a
progress line (trials done, elapsed, estimated time left, best so far), redrawn in place with rich.
Elsewhere (CI logs, a pipe): plain lines, one when a trial starts or ends plus a heartbeat now and
then, never a redraw.

`SearchProgress` holds the state and renders it; `ProgressCallback` feeds it from Tune's callback hooks.
Neither imports Ray, so both are tested with fake trials; `progress_callbacks` mixes in
`ray.tune.Callback` when a search actually runs.
"""

from __future__ import annotations

import atexit
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from orchestrator.config import RunConfig
from orchestrator.formatting import fmt_duration, fmt_number
from orchestrator.formatting import is_number as _num

# Trial states, named as in trials.csv where they overlap.
PENDING, RUNNING, COMPLETED, STOPPED, ERROR = "PENDING", "RUNNING", "COMPLETED", "STOPPED_EARLY", "ERROR"
FINISHED = (COMPLETED, STOPPED, ERROR)
_STYLE = {PENDING: "dim", RUNNING: "cyan", COMPLETED: "green", STOPPED: "yellow", ERROR: "bold red"}
_LABEL = {PENDING: "pending", RUNNING: "running", COMPLETED: "done", STOPPED: "stopped", ERROR: "error"}


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
        if self.status in (COMPLETED, STOPPED, ERROR):
            return 1.0
        if self.planned_steps and self.step is not None:
            return min(1.0, self.step / self.planned_steps)
        if self.planned_epochs and self.epoch is not None:
            return min(1.0, self.epoch / self.planned_epochs)
        return None


class SearchProgress:
    """State of one search and its two renderings: a rich table (TTY) and plain lines (logs).

    Args:
        metric, mode: the search's metric and "min"/"max".
        total_trials: trials the search will run (num_samples).
        concurrency: trials that run at once (for the time-left estimate).
        planned: `params -> (max_steps or None, epochs or None)`, how long a trial runs if not stopped.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, metric: str, mode: str, total_trials: int, concurrency: int = 1,
                 planned: Optional[Callable[[Dict[str, Any]], tuple]] = None,
                 clock: Callable[[], float] = time.monotonic):
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
        if error is not None:
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
        out = {s: 0 for s in (PENDING, RUNNING, COMPLETED, STOPPED, ERROR)}
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
            if t.status == ERROR:
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

    # ---- rendering -------------------------------------------------------------------------

    def param_names(self) -> List[str]:
        keys: List[str] = []
        for t in self.trials.values():
            keys += [k for k in t.params if k not in keys]
        return keys

    def summary_line(self) -> str:
        return " · ".join([self.trials_text(), self.time_text()])

    def trials_text(self) -> str:
        c = self.counts()
        done = c[COMPLETED] + c[STOPPED] + c[ERROR]
        parts = [f"{done}/{self.total} trials done"]
        if c[RUNNING]:
            parts.append(f"{c[RUNNING]} running")
        if c[STOPPED]:
            parts.append(f"{c[STOPPED]} stopped early")
        if c[ERROR]:
            parts.append(f"{c[ERROR]} failed")
        return " · ".join(parts)

    def time_text(self) -> str:
        c = self.counts()
        parts = [f"elapsed {fmt_duration(self.elapsed())}"]
        if c[COMPLETED] + c[STOPPED] + c[ERROR] < self.total:
            eta = self.eta()
            parts.append(f"~{fmt_duration(eta)} left" if eta is not None else "time left: estimating")
        if self.best is not None:
            parts.append(f"best {self.metric} {fmt_value(self.best)} ({self.best_trial})")
        return " · ".join(parts)

    def table(self):
        from rich.table import Table

        names = self.param_names()
        short = _short_names(names)
        table = Table(box=None, pad_edge=False, header_style="bold", expand=False, show_edge=False)
        table.add_column("trial", no_wrap=True)
        table.add_column("status", no_wrap=True)
        for k in names:
            table.add_column(short[k], justify="right", no_wrap=True)
        for col in ("iter", "step"):
            table.add_column(col, justify="right", no_wrap=True)
        table.add_column(self.metric, justify="right", no_wrap=True)
        table.add_column("trial best", justify="right", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        for t in self.trials.values():
            best_style = "bold green" if t.trial_id == self.best_trial else ""
            table.add_row(
                t.trial_id,
                f"[{_STYLE[t.status]}]{_LABEL[t.status]}[/]",
                *[fmt_value(t.params.get(k)) for k in names],
                str(t.iteration) if t.iteration else "",
                "" if t.step is None else str(t.step),
                fmt_value(t.value),
                f"[{best_style}]{fmt_value(t.best)}[/]" if best_style else fmt_value(t.best),
                fmt_duration(t.time_s) if t.time_s is not None else "",
            )
        return table

    def renderable(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        bar = Table.grid(padding=(0, 1))
        bar.add_column(width=30)
        bar.add_column()
        pct = self.done_fraction()
        bar.add_row(ProgressBar(total=100, completed=100 * pct, width=30),
                    Text(f"{100 * pct:3.0f}%  {self.trials_text()}", style="bold"))
        bar.add_row(Text(""), Text(self.time_text()))
        return Group(self.table(), Text(""), bar)

    def plain_result_line(self, t: TrialState) -> str:
        shown = f"{self.metric}={fmt_value(t.value)}" if t.value is not None else f"{self.metric}=-"
        step = f" at step {t.step}" if t.step is not None else ""
        if t.status == ERROR:
            what = f"trial {t.trial_id} FAILED{step}: {t.error}"
        elif t.status == STOPPED:
            what = f"trial {t.trial_id} stopped early{step}: {shown}"
        else:
            what = f"trial {t.trial_id} done{step}: {shown}"
        return f"{what} | {self.summary_line()}"

    def plain_start_line(self, t: TrialState) -> str:
        params = ", ".join(f"{k}={fmt_value(v)}" for k, v in t.params.items())
        return f"trial {t.trial_id} started ({params})" if params else f"trial {t.trial_id} started"


class ProgressCallback:
    """Feeds Tune's callback hooks into a SearchProgress and shows it.

    Args:
        progress: the state to update.
        console: a rich Console; live table when it is a terminal, plain lines otherwise.
        refresh_s: at most one redraw per this many seconds (TTY).
        heartbeat_s: a plain progress line at least this often while trials run (non-TTY).
    """

    def __init__(self, progress: SearchProgress, console=None, refresh_s: float = 0.5, heartbeat_s: float = 60.0):
        self.progress = progress
        self._console = console
        self.refresh_s, self.heartbeat_s = refresh_s, heartbeat_s
        self._live = None
        self._last_draw = -math.inf
        self._last_line = progress.clock()
        self._closed = False

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console()
        return self._console

    @property
    def live_mode(self) -> bool:
        return bool(self.console.is_terminal and not self.console.is_dumb_terminal)

    def __getstate__(self):
        # Tune pickles its callbacks with the experiment state; a Console (locks, a file) does not
        # pickle and a restored search gets the terminal of the process that restores it.
        state = dict(self.__dict__)
        state.update(_console=None, _live=None)
        return state

    # Tune hooks (same names and arguments as ray.tune.Callback) --------------------------------

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        if total_num_samples:
            self.progress.total = int(total_num_samples)

    def on_trial_start(self, iteration, trials, trial, **info):
        t = self.progress.start(trial.trial_id, _params(trial))
        if self.live_mode:
            self._draw(force=True)
        else:
            self._print(self.progress.plain_start_line(t))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.progress.result(trial.trial_id, result, _params(trial))
        if self.live_mode:
            self._draw()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial, None)

    def on_trial_error(self, iteration, trials, trial, **info):
        path = getattr(trial, "local_path", None) or getattr(trial, "path", None)
        self._ended(trial, f"see {path}" if path else "see the Ray logs")

    def on_step_end(self, iteration, trials, **info):
        if self.live_mode:
            self._draw()
        elif self.progress.clock() - self._last_line >= self.heartbeat_s and self.progress.counts()[RUNNING]:
            self._print(f"[progress] {self.progress.summary_line()}")

    def on_experiment_end(self, trials, **info):
        self.close()

    # ---------------------------------------------------------------------------------------

    def _ended(self, trial, error):
        last = getattr(trial, "last_result", None) or {}
        t = self.progress.trials.get(trial.trial_id)
        if last and (t is None or last.get("training_iteration", 0) > t.iteration):
            self.progress.result(trial.trial_id, last, _params(trial))
        t = self.progress.end(trial.trial_id, error)
        if self.live_mode:
            self._draw(force=True)
            if error:
                self.console.print(f"[red]trial {t.trial_id} failed:[/red] {error}")
        else:
            self._print(self.progress.plain_result_line(t))

    def _print(self, line: str) -> None:
        # No markup or highlighting: CI logs get the text as written.
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self._last_line = self.progress.clock()

    def _draw(self, force: bool = False) -> None:
        now = self.progress.clock()
        if not force and now - self._last_draw < self.refresh_s:
            return
        self._last_draw = now
        if self._live is None:
            from rich.live import Live

            # Manual refresh from Tune's loop (no thread); worker logs that Ray prints on the driver
            # go through the redirected stdout/stderr and scroll above the table.
            self._live = Live(self.progress.renderable(), console=self.console, auto_refresh=False,
                              redirect_stdout=True, redirect_stderr=True, transient=False)
            self._live.start()
            atexit.register(self.close)
        self._live.update(self.progress.renderable(), refresh=True)

    def close(self) -> None:
        """Stop the live display (leaving the final table on screen); print the final line when plain."""
        if self._live is not None:
            # A partial line (a progress bar's "\r...") still buffered by the redirected stdout/stderr
            # goes above the table now, not glued to the end of its last line when the display stops.
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            self._live.update(self.progress.renderable(), refresh=True)
            self._live.stop()
            self._live = None
        elif not self.live_mode and self.progress.trials and not self._closed:
            self._print(f"[search finished] {self.progress.summary_line()}")
        self._closed = True


def progress_callbacks(cfg: RunConfig) -> List[object]:
    """Tune callbacks that show the search's progress (live table on a terminal, plain lines otherwise)."""
    from ray.tune import Callback

    cls = type("LiveProgressCallback", (ProgressCallback, Callback), {})
    return [cls(search_progress(cfg))]


def search_progress(cfg: RunConfig, clock: Callable[[], float] = time.monotonic) -> SearchProgress:
    """A SearchProgress for `cfg`'s search (its metric, trial count, concurrency and trial length)."""
    s = cfg.search
    return SearchProgress(s.metric, s.resolved_mode, s.num_samples,
                          min(s.max_concurrent_trials, s.num_samples), planned=PlannedLength(cfg), clock=clock)


class PlannedLength:
    """`params -> (max_steps, epochs)`: how long a trial with these hyperparameters trains (picklable)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    def __call__(self, params: Dict[str, Any]):
        t = self.cfg.with_params(params).training if params else self.cfg.training
        return (t.max_steps or None, None if t.max_steps else t.epochs)


# ---- formatting helpers --------------------------------------------------------------------

def _params(trial) -> Dict[str, Any]:
    config = getattr(trial, "config", None) or {}
    params = config.get("params", config) if isinstance(config, dict) else {}
    return params if isinstance(params, dict) else {}


def fmt_value(v) -> str:
    return fmt_number(v)


def _short_names(keys: List[str]) -> Dict[str, str]:
    """`training.learning_rate` -> `learning_rate` unless two keys would look the same."""
    tails = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (t if tails.count(t) == 1 else k) for k, t in zip(keys, tails)}
