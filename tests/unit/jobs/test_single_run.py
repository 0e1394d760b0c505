"""`train`'s bare Train run (jobs/single_run.py), the parts that need no Ray: its history in storage,
finding the run again on --resume, and the Tune-style hooks that feed the progress display."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.fs
import pytest
from rich.console import Console

from jobs.single_run import REPORTS, _Hooks, _Trial, existing_trial, read_rows, write_rows
from orchestrator.core.ray_storage import RunStorage
from orchestrator.observe.progress import ProgressCallback
from orchestrator.observe.search_state import SearchProgress


def storage(tmp_path: Path) -> RunStorage:
    root = tmp_path / "ray"
    return RunStorage(uri=str(root), path=str(root))


def test_history_round_trips_and_a_line_cut_short_by_a_kill_is_left_out(tmp_path):
    st = storage(tmp_path)
    path = f"{st.path}/train-abcde_00000/{REPORTS}"
    rows = [{"step": 5, "eval_loss": 2.5, "checkpoint_path": "/x/checkpoint_1"}, {"step": 10, "eval_loss": 2.1}]
    write_rows(pyarrow.fs.LocalFileSystem(), path, rows)  # makes the run's folder
    assert read_rows(st, path) == rows
    with open(path, "a") as f:
        f.write('{"step": 15, "eval_lo')  # the process was killed mid-write
    assert read_rows(st, path) == rows
    assert read_rows(st, f"{st.path}/train-other/{REPORTS}") == []


def test_resume_finds_the_run_that_has_reports(tmp_path):
    st = storage(tmp_path)
    assert existing_trial(st) is None  # no storage yet: a first run
    (Path(st.path) / "train-aaaaa_00000").mkdir(parents=True)  # started, never reported
    write_rows(pyarrow.fs.LocalFileSystem(), f"{st.path}/train-bbbbb_00000/{REPORTS}", [{"step": 5}])
    (Path(st.path) / "tune").mkdir()  # not a Train run
    (Path(st.path) / "train-ccccc_00001" / "checkpoint_1").mkdir(parents=True)  # a tune trial's Train run
    assert existing_trial(st) == "bbbbb_00000"


def test_rewriting_the_history_goes_through_a_temporary_file(tmp_path):
    """A kill while the history is rewritten leaves the previous rows, never an empty file."""
    st = storage(tmp_path)
    path = f"{st.path}/train-abcde_00000/{REPORTS}"
    write_rows(pyarrow.fs.LocalFileSystem(), path, [{"step": 5}])

    class KilledBeforeTheMove(pyarrow.fs.LocalFileSystem):
        def move(self, src, dest):
            raise KeyboardInterrupt  # the process dies after writing the new rows, before moving them into place

    with pytest.raises(KeyboardInterrupt):
        write_rows(KilledBeforeTheMove(), path, [{"step": 5}, {"step": 10}])
    assert read_rows(st, path) == [{"step": 5}]
    write_rows(pyarrow.fs.LocalFileSystem(), path, [{"step": 5}, {"step": 10}])
    assert read_rows(st, path) == [{"step": 5}, {"step": 10}]


def test_the_progress_display_gets_tunes_hooks_in_order(tmp_path):
    out = io.StringIO()
    prog = SearchProgress("eval_loss", "min", 1, 1, planned=lambda p: (20, None))
    cb = ProgressCallback(prog, console=Console(file=out, width=200, force_terminal=False))
    trial = _Trial("abcde_00000", {"lora.r": 8})
    hooks = _Hooks([cb], trial)
    hooks("setup", total_num_samples=1)
    hooks("on_trial_start", trial=trial)
    for i, (step, loss) in enumerate([(10, 2.5), (20, 2.0)], start=1):
        hooks.result({"step": step, "eval_loss": loss, "training_iteration": i, "time_total_s": 3.0 * i})
    hooks("on_trial_complete", trial=trial)
    hooks("on_experiment_end")
    text = out.getvalue()
    assert "abcde_00000" in text and "[search finished]" in text, text
    t = prog.trials["abcde_00000"]
    assert (t.step, t.value, t.best, t.iteration) == (20, 2.0, 2.0, 2)
    assert trial.last_result["step"] == 20
    assert json.dumps(trial.config) == '{"params": {"lora.r": 8}}'
