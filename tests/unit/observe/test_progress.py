"""Live progress of a search, fed with fake Tune trials and results (no Ray): the refreshing table on a
terminal, plain lines in logs, the time-left estimate and the early-stop detection."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
from rich.console import Console

from orchestrator.core.formatting import fmt_duration
from orchestrator.observe.progress import ProgressCallback
from orchestrator.observe.search_state import COMPLETED, ERROR, RUNNING, STOPPED, SearchProgress, search_progress

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def trial(tid, lr, r):
    return SimpleNamespace(
        trial_id=tid,
        config={"params": {"training.learning_rate": lr, "lora.r": r}},
        last_result={},
        local_path=f"/runs/x/ray/tune/{tid}",
    )


def result(step, metric, t, epoch=None):
    return {
        "training_iteration": step // 5,
        "step": step,
        "epoch": epoch if epoch is not None else step / 5,
        "eval_rougeL": metric,
        "time_total_s": t,
    }


def progress(clock, total=4, conc=2):
    # 8 epochs planned per trial (the tiny T5 example)
    return SearchProgress("eval_rougeL", "max", total, conc, planned=lambda p: (None, 8.0), clock=clock)


def drive(cb, clock):
    """Two concurrent trials, ASHA stops one at a rung, one runs to the end, a third fails."""
    a, b, c = trial("t_00000", 0.005, 8), trial("t_00001", 0.0008, 4), trial("t_00002", 0.02, 4)
    cb.setup(total_num_samples=4)
    cb.on_trial_start(0, [a, b], a)
    cb.on_trial_start(0, [a, b], b)
    for step in (5, 10):
        clock.t += 10
        cb.on_trial_result(1, [a, b], a, result(step, 0.05 * step / 5, clock.t - 1000))
        cb.on_trial_result(1, [a, b], b, result(step, 0.0, clock.t - 1000))
        cb.on_step_end(1, [a, b])
    b.last_result = result(10, 0.0, 20.0)
    cb.on_trial_complete(2, [a, b], b)  # stopped by ASHA after 2 of 8 epochs
    cb.on_trial_start(2, [a, b, c], c)
    for step in range(15, 45, 5):
        clock.t += 10
        cb.on_trial_result(3, [a, b, c], a, result(step, 0.05 * step / 5, clock.t - 1000))
        cb.on_step_end(3, [a, b, c])
    cb.on_trial_complete(4, [a, b, c], a)
    clock.t += 5
    cb.on_trial_error(5, [a, b, c], c)
    return a, b, c


TRACEBACK = """==== 2026-12-01 10:00:00 UTC trial t_00002 rank 0 (pid 1)
Loading weights ...
Traceback (most recent call last):
  File "jobs/train_loop.py", line 30, in train_fn_per_worker
    _train(config, rank, sync)
  File "site-packages/safetensors/torch.py", line 1, in load
    raise SafetensorError(msg)
    ^^^^^^^^^^^^^^^^^^^^^^^^^^
safetensors.SafetensorError: Error while deserializing header: incomplete metadata
"""


def test_state_detects_early_stop_completion_and_failure(tmp_path):
    clock = Clock()
    (tmp_path / "t_00002").mkdir()
    (tmp_path / "t_00002" / "worker.log").write_text(TRACEBACK)
    out = io.StringIO()
    cb = ProgressCallback(progress(clock), console=Console(file=out, force_terminal=False), trials_dir=str(tmp_path))
    drive(cb, clock)
    p = cb.progress
    assert p.trials["t_00000"].status == COMPLETED and p.trials["t_00000"].step == 40
    assert p.trials["t_00001"].status == STOPPED and p.trials["t_00001"].step == 10
    # the failure is the exception's line from the trial's own log, with the path to that log
    error = "safetensors.SafetensorError: Error while deserializing header: incomplete metadata"
    assert p.trials["t_00002"].status == ERROR and p.trials["t_00002"].error == error
    failed = [ln for ln in out.getvalue().splitlines() if "t_00002 FAILED" in ln]
    assert len(failed) == 1 and error in failed[0] and str(tmp_path / "t_00002" / "worker.log") in failed[0]
    assert p.best == pytest.approx(0.4) and p.best_trial == "t_00000"
    assert p.trials["t_00000"].best == pytest.approx(0.4) and p.trials["t_00001"].best == 0.0
    c = p.counts()
    assert (c[COMPLETED], c[STOPPED], c[ERROR], c[RUNNING], c["PENDING"]) == (1, 1, 1, 0, 1)


def test_a_trial_that_ends_below_its_best_says_both():
    """The summary table and the pick use each trial's best checkpoint: the end-of-trial line says its last
    value and, where they differ, its best."""
    clock = Clock()
    out = io.StringIO()
    cb = ProgressCallback(progress(clock), console=Console(file=out, force_terminal=False, width=200))
    a = trial("t_00000", 0.005, 8)
    cb.setup(total_num_samples=1)
    cb.on_trial_start(0, [a], a)
    for step, value in ((5, 0.1296), (10, 0.05), (15, 0.0)):
        clock.t += 10
        cb.on_trial_result(1, [a], a, result(step, value, clock.t - 1000))
    cb.on_trial_complete(2, [a], a)
    # (the progress plans 40 steps: ended at 15, the trial was stopped early, as ASHA does)
    line = next(ln for ln in out.getvalue().splitlines() if ln.startswith("trial t_00000 stopped early"))
    assert line.startswith("trial t_00000 stopped early at step 15: eval_rougeL=0 (its best 0.1296) |"), line


def test_non_tty_prints_plain_lines_only_at_start_end_and_heartbeat():
    clock = Clock()
    out = io.StringIO()
    cb = ProgressCallback(progress(clock), console=Console(file=out, force_terminal=False, width=200), heartbeat_s=60)
    drive(cb, clock)
    cb.on_experiment_end([])
    text = out.getvalue()
    assert not ANSI.search(text), "escape codes in a log"
    lines = text.splitlines()
    assert lines[0] == "trial t_00000 started (training.learning_rate=0.005, lora.r=8)"
    assert any(line.startswith("trial t_00001 stopped early at step 10: eval_rougeL=0 |") for line in lines)
    done = next(line for line in lines if line.startswith("trial t_00000 done at step 40"))
    assert "eval_rougeL=0.4" in done and "best eval_rougeL 0.4 (t_00000)" in done
    assert any(line.startswith("trial t_00002 FAILED") for line in lines)
    # 80 s of reports: one heartbeat line after 60 s, not one line per report.
    beats = [line for line in lines if line.startswith("[progress]")]
    assert len(beats) == 1 and "elapsed" in beats[0] and "left" in beats[0]
    assert lines[-1].startswith("[search finished] 3/4 trials done")
    assert len(lines) <= 9


def test_tty_draws_a_refreshing_table_with_progress_line():
    clock = Clock()
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system="standard")
    cb = ProgressCallback(progress(clock), console=console, refresh_s=0.0)
    a, b = trial("t_00000", 0.005, 8), trial("t_00001", 0.0008, 4)
    cb.setup(total_num_samples=4)
    cb.on_trial_start(0, [a, b], a)
    cb.on_trial_start(0, [a, b], b)
    clock.t += 20
    cb.on_trial_result(1, [a, b], a, result(10, 0.1, 20.0))
    cb.on_trial_result(1, [a, b], b, result(10, 0.0, 20.0))
    assert cb._live is not None  # a rich Live display, redrawn in place
    frames_before = out.getvalue().count("\x1b[2K")
    clock.t += 5
    cb.on_step_end(1, [a, b])  # the clock moves: elapsed/left are redrawn without a new report
    assert out.getvalue().count("\x1b[2K") > frames_before  # erase-line: the previous frame was overwritten
    b.last_result = result(10, 0.0, 20.0)
    cb.on_trial_complete(2, [a, b], b)
    print("Loading weights: 50%", end="")  # a progress bar's partial line while the table is up
    cb.on_experiment_end([a, b])
    assert cb._live is None
    plain = ANSI.sub("", out.getvalue())
    assert plain.endswith("\n") and plain.rindex("Loading weights: 50%") < plain.rindex("status")
    head = plain.rindex("status")
    last = plain[plain.rindex("\n", 0, head) + 1 :]  # the final frame stays on screen
    for col in ("trial", "status", "learning_rate", "r", "iter", "step", "eval_rougeL", "trial best", "time"):
        assert col in last
    assert re.search(r"t_00000\s+running\s+0\.005\s+8\s+2\s+10\s+0\.1\s+0\.1\s+20s", last), last
    assert re.search(r"t_00001\s+stopped\s+8\.00e-04\s+4", last), last
    assert "1/4 trials done · 1 running · 1 stopped early" in last and "elapsed 25s" in last
    assert "best eval_rougeL 0.1 (t_00000)" in last and "left" in last


def test_time_left_estimate():
    clock = Clock()
    p = progress(clock, total=3, conc=2)
    assert p.eta() is None  # nothing measured yet
    p.start("a", {})
    p.start("b", {})
    clock.t += 50
    p.result("a", result(20, 0.1, 50.0, epoch=4.0))  # half of 8 epochs in 50 s -> 100 s a trial
    p.result("b", result(20, 0.1, 50.0, epoch=4.0))
    # a and b need 50 s more each; the trial not started yet then takes 100 s on a freed slot.
    assert p.eta() == pytest.approx(150.0)
    p.end("b")  # ASHA stops b at half-way: its slot frees now, the waiting trial starts there
    assert p.trials["b"].status == STOPPED
    assert p.eta() == pytest.approx(100.0)
    assert "~1m40s left" in p.summary_line()


def test_search_progress_reads_the_config():
    from orchestrator.core.config import RunConfig

    cfg = RunConfig.model_validate(
        {
            "model": {"name_or_path": "x", "task": "seq2seq"},
            "data": {"train": "t.jsonl"},
            "training": {"max_steps": 20},
            "search": {
                "num_samples": 6,
                "max_concurrent_trials": 2,
                "metric": "eval_loss",
                "space": {"training.learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
            },
        }
    )
    p = search_progress(cfg)
    assert (p.metric, p.mode, p.total, p.concurrency) == ("eval_loss", "min", 6, 2)
    t = p.start("a", {"training.learning_rate": 1e-3})
    assert (t.planned_steps, t.planned_epochs) == (20, None)
    p.result("a", {"step": 5, "eval_loss": 2.0})
    p.result("a", {"step": 10, "eval_loss": 3.0})
    assert t.fraction() == 0.5 and p.best == 2.0  # min mode keeps the lower loss


def test_callback_pickles_for_tune_state(tmp_path):
    """Tune pickles callbacks with the experiment state (RunConfig.callbacks): no Console or Live inside."""
    import pickle

    from orchestrator.core.config import RunConfig

    cfg = RunConfig.model_validate(
        {"model": {"name_or_path": "x", "task": "seq2seq"}, "data": {"train": "t.jsonl"}, "training": {"epochs": 2}}
    )
    cb = ProgressCallback(search_progress(cfg), console=Console(file=io.StringIO(), force_terminal=True))
    cb.on_trial_start(0, [], trial("a", 0.001, 4))  # a live display is running
    again = pickle.loads(pickle.dumps(cb))
    assert again.progress.trials["a"].status == RUNNING and again._live is None
    assert again.progress.planned({"lora.r": 4}) == (None, 2.0)
    cb.close()


def test_fmt_duration():
    assert [fmt_duration(s) for s in (None, 4.4, 65, 3725)] == ["?", "4s", "1m05s", "1h02m"]


def test_tty_failure_and_restart_are_one_line_each_above_the_table(tmp_path):
    """A failed trial: one line (id, step, the exception's line, the log's path) above the live table,
    whose own markup still renders; a restarted worker: one line with the step it resumed from."""
    clock = Clock()
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system="standard")
    (tmp_path / "t_00001").mkdir()
    (tmp_path / "t_00001" / "worker.log").write_text(TRACEBACK)
    cb = ProgressCallback(progress(clock), console=console, refresh_s=0.0, trials_dir=str(tmp_path))
    a, b = trial("t_00000", 0.005, 8), trial("t_00001", 0.0008, 4)
    cb.setup(total_num_samples=2)
    cb.on_trial_start(0, [a, b], a)
    cb.on_trial_start(0, [a, b], b)
    cb.on_trial_result(1, [a, b], b, result(5, 0.1, 5.0))
    cb.on_trial_result(1, [a, b], a, {**result(10, 0.1, 20.0), "resumed_from_step": 0})
    cb.on_trial_result(1, [a, b], a, {**result(15, 0.1, 30.0), "resumed_from_step": 10})
    cb.on_trial_result(1, [a, b], a, {**result(20, 0.1, 40.0), "resumed_from_step": 10})
    cb.on_trial_error(2, [a, b], b)
    cb.on_experiment_end([a, b])
    plain = ANSI.sub("", out.getvalue())
    lines = plain.splitlines()
    restarted = [ln for ln in lines if "resumed from its checkpoint" in ln]
    assert restarted == ["trial t_00000: a worker was restarted; it resumed from its checkpoint at step 10"]
    failed = [ln for ln in lines if ln.startswith("trial t_00001 failed")]
    log = tmp_path / "t_00001" / "worker.log"
    assert failed == [
        "trial t_00001 failed at step 5: safetensors.SafetensorError: Error while deserializing header: "
        f"incomplete metadata (log: {log})"
    ]
    assert "[bold red]" not in plain and "[/]" not in plain  # the table's markup was rendered, not printed
    assert re.search(r"t_00001\s+error", plain)
