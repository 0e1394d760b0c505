"""Progress of a running search, shown on the driver as Tune reports arrive.

On a terminal: a compact table of trials (status, iteration, step, metric, the trial's best) under a
progress line (trials done, elapsed, estimated time left, best so far), redrawn in place with rich.
Elsewhere (CI logs, a pipe): plain lines, one when a trial starts or ends plus a heartbeat now and
then, never a redraw.

`ProgressCallback` feeds a `SearchProgress` (search_state.py: the state and its plain lines) from Tune's
callback hooks and shows it. It does not import Ray, so it is tested with fake trials;
`progress_callbacks` mixes in `ray.tune.Callback` when a search actually runs.
"""

from __future__ import annotations

import atexit
import math
import sys
from typing import Any, Dict, List, Optional

from orchestrator.core.config import RunConfig
from orchestrator.core.formatting import error_in_log, fmt_duration, last_error_line
from orchestrator.observe.search_state import (
    COMPLETED,
    ERROR,
    PENDING,
    RUNNING,
    SKIPPED,
    STOPPED,
    SearchProgress,
    fmt_value,
    search_progress,
)

_STYLE = {PENDING: "dim", RUNNING: "cyan", COMPLETED: "green", STOPPED: "yellow", ERROR: "bold red", SKIPPED: "magenta"}
_LABEL = {
    PENDING: "pending",
    RUNNING: "running",
    COMPLETED: "done",
    STOPPED: "stopped",
    ERROR: "error",
    SKIPPED: "won't fit",
}


def live_table(progress: SearchProgress):
    """The trial table (rich) of the live display."""
    from rich.table import Table

    names = progress.param_names()
    short = _short_names(names)
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False, show_edge=False)
    table.add_column("trial", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for k in names:
        table.add_column(short[k], justify="right", no_wrap=True)
    for col in ("iter", "step"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column(progress.metric, justify="right", no_wrap=True)
    table.add_column("trial best", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    for t in progress.trials.values():
        best_style = "bold green" if t.trial_id == progress.best_trial else ""
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


def live_view(progress: SearchProgress):
    """The live display: the trial table over a progress bar and the progress line."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    bar = Table.grid(padding=(0, 1))
    bar.add_column(width=30)
    bar.add_column()
    pct = progress.done_fraction()
    bar.add_row(
        ProgressBar(total=100, completed=100 * pct, width=30),
        Text(f"{100 * pct:3.0f}%  {progress.trials_text()}", style="bold"),
    )
    bar.add_row(Text(""), Text(progress.time_text()))
    return Group(live_table(progress), Text(""), bar)


class ProgressCallback:
    """Feeds Tune's callback hooks into a SearchProgress and shows it.

    Args:
        progress: the state to update.
        console: a rich Console; live table when it is a terminal, plain lines otherwise.
        refresh_s: at most one redraw per this many seconds (TTY).
        heartbeat_s: a plain progress line at least this often while trials run (non-TTY).
    """

    def __init__(
        self,
        progress: SearchProgress,
        console=None,
        refresh_s: float = 0.5,
        heartbeat_s: float = 60.0,
        trials_dir: Optional[str] = None,
    ):
        self.progress = progress
        self.trials_dir = trials_dir  # where each trial's worker.log is (the run folder's trials/)
        self._resumed: Dict[str, int] = {}
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
        t = self.progress.result(trial.trial_id, result, _params(trial))
        step = result.get("resumed_from_step")
        if isinstance(step, (int, float)) and step > self._resumed.get(t.trial_id, 0):
            self._resumed[t.trial_id] = int(step)
            self._say(f"trial {t.trial_id}: a worker was restarted; it resumed from its checkpoint at step {int(step)}")
        if self.live_mode:
            self._draw()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial, None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial, error_line(trial, self.log_path(trial.trial_id) if self.trials_dir else None))

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
                self._say(self.failure_line(t.trial_id, t.step, error), style="red")
            elif t.status == SKIPPED:
                self._say(self.progress.skipped_line(t), style="magenta")
        else:
            self._print(self.progress.plain_result_line(t) + (f" (log: {self.log_path(t.trial_id)})" if error else ""))

    def log_path(self, trial_id: str) -> str:
        return f"{self.trials_dir}/{trial_id}/worker.log" if self.trials_dir else "the Ray logs"

    def failure_line(self, trial_id: str, step: Optional[int], error: str) -> str:
        at = f" at step {step}" if step is not None else ""
        return f"trial {trial_id} failed{at}: {error} (log: {self.log_path(trial_id)})"

    def _say(self, line: str, style: str = "yellow") -> None:
        """One line above the live table (or a plain line)."""
        if self.live_mode:
            from rich.text import Text

            # a Text, not markup=False: the live table is rendered in the same call and needs its markup
            self.console.print(Text(line, style=style), soft_wrap=True)
        else:
            self._print(line)

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
            self._live = Live(
                live_view(self.progress),
                console=self.console,
                auto_refresh=False,
                redirect_stdout=True,
                redirect_stderr=True,
                transient=False,
            )
            self._live.start()
            atexit.register(self.close)
        self._live.update(live_view(self.progress), refresh=True)

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
            self._live.update(live_view(self.progress), refresh=True)
            self._live.stop()
            self._live = None
        elif not self.live_mode and self.progress.trials and not self._closed:
            self._print(f"[search finished] {self.progress.summary_line()}")
        self._closed = True


def progress_callbacks(cfg: RunConfig, trials_dir: Optional[str] = None) -> List[object]:
    """Tune callbacks that show the search's progress (live table on a terminal, plain lines otherwise)."""
    from ray.tune import Callback

    cls = type("LiveProgressCallback", (ProgressCallback, Callback), {})
    return [cls(search_progress(cfg), trials_dir=trials_dir)]


def error_line(trial, log: Optional[str] = None) -> str:
    """The last line of a failed trial's error (the exception and its message): from the end of its
    worker log when that is on this machine (Tune writes its own error file only after this hook),
    else from Tune's error file."""
    line = error_in_log(log)
    if line:
        return line
    err = None
    try:
        err = trial.get_error()
    except Exception:  # noqa: BLE001 - no readable error file: say what we can
        pass
    return last_error_line(str(err)) if err is not None else "unknown error (see its log)"


# ---- formatting helpers --------------------------------------------------------------------


def _params(trial) -> Dict[str, Any]:
    config = getattr(trial, "config", None) or {}
    params = config.get("params", config) if isinstance(config, dict) else {}
    return params if isinstance(params, dict) else {}


def _short_names(keys: List[str]) -> Dict[str, str]:
    """`training.learning_rate` -> `learning_rate` unless two keys would look the same."""
    tails = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (t if tails.count(t) == 1 else k) for k, t in zip(keys, tails)}
