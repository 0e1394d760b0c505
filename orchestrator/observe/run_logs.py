"""`qlora-launch logs RUN_DIR [--trial ID] [--follow]`: the logs of a local run folder.

A run folder holds driver.log (what Ray, Tune and the libraries said in the launching process) and, per
trial, trials/<id>/worker.log (rank 0's stdout/stderr: the library output and, when it failed, the
traceback) and worker-rank<k>.log for other ranks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, List, Optional

from orchestrator.core.errors import UserError
from orchestrator.core.rundir import DRIVER_LOG, TRIALS_DIR, RunDir


def trial_logs(run: RunDir, trial: str) -> List[Path]:
    """The log files of `trial` (a full trial id, or its unique ending such as 00001), rank 0 first."""
    trials = sorted(p.name for p in (run.path / TRIALS_DIR).glob("*") if p.is_dir())
    match = [t for t in trials if t == trial] or [t for t in trials if t.endswith(trial)]
    if len(match) != 1:
        known = ", ".join(trials) if trials else "none yet"
        what = "matches several trials" if match else "is not a trial of this run"
        raise UserError(f"--trial: '{trial}' {what}. Trials in {run.path}: {known}.")
    folder = run.trial_dir(match[0])
    files = sorted(folder.glob("worker*.log"), key=lambda p: (p.name != "worker.log", p.name))
    if not files:
        raise UserError(
            f"Trial {match[0]} has no log in {folder} (runs from before logs were kept per trial, or a trial "
            "that never started). Its Ray output is in Ray's session logs (/tmp/ray/session_latest/logs)."
        )
    return files


def show_logs(
    run_dir: Path,
    trial: Optional[str] = None,
    follow: bool = False,
    echo: Callable[[str], None] = print,
    poll_s: float = 0.5,
) -> int:
    """Print the run's driver log (or one trial's logs); with `follow`, keep printing until the run ends."""
    run = RunDir(run_dir)
    if trial:
        files = trial_logs(run, trial)
    else:
        files = [run.path / DRIVER_LOG]
        if not files[0].exists():
            raise UserError(f"{run.path} has no {DRIVER_LOG}: it is not a run folder written by `qlora-launch tune`.")
        logs = sorted((run.path / TRIALS_DIR).glob("*/worker.log"))
        if logs and not follow:
            echo("Trial logs (qlora-launch logs RUN_DIR --trial ID):")
            for p in logs:
                echo(f"  {p.parent.name}: {p}")
            echo(f"---- {files[0]}")
    offsets = {p: 0 for p in files}
    while True:
        for p in files:
            offsets[p] = _print_new(p, offsets[p], echo, header=len(files) > 1 and offsets[p] == 0)
        if not follow or run.results_path.exists():
            break
        time.sleep(poll_s)
    if follow:  # what was written between the last read and the end
        for p in files:
            offsets[p] = _print_new(p, offsets[p], echo, header=False)
    return 0


def _print_new(path: Path, offset: int, echo, header: bool) -> int:
    if not path.exists():
        return offset
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    if not data:
        return offset
    if header:
        echo(f"---- {path}")
    text = data.decode("utf-8", errors="replace")
    complete, _, partial = text.rpartition("\n")
    if complete:
        for line in complete.split("\n"):
            echo(line)
    return offset + len(data) - len(partial.encode("utf-8", errors="replace"))
