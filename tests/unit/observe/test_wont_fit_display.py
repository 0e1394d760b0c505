"""SKIPPED_WONT_FIT where a user reads it: the live progress (table, plain lines), the end-of-run summary and the
report's trial table and counts."""

from __future__ import annotations

import csv
import io
import json
import math
from types import SimpleNamespace

from rich.console import Console

from orchestrator.observe.progress import ProgressCallback
from orchestrator.observe.search_state import COMPLETED, SKIPPED, SearchProgress
from tests.unit.observe.test_report import METRIC, make_run

SKIP = {
    "training_iteration": 1,
    "step": 0,
    "skipped_wont_fit": True,
    "needed_gb": 42.07,
    "available_gb": 24.0,
    "fit_limit": "one 24 GiB GPU, resources.gpu_memory_gb",
}


def test_live_progress_shows_a_skipped_trial_and_never_takes_its_worst_value_as_best():
    clock = SimpleNamespace(t=0.0)
    p = SearchProgress("eval_loss", "min", 3, 2, planned=lambda params: (2, None), clock=lambda: clock.t)
    out = io.StringIO()
    cb = ProgressCallback(p, console=Console(file=out, force_terminal=False, width=200))
    big = SimpleNamespace(trial_id="t1", config={"params": {"training.batch_size": 32}}, last_result={})
    ok = SimpleNamespace(trial_id="t2", config={"params": {"training.batch_size": 1}}, last_result={})
    cb.setup(total_num_samples=3)
    cb.on_trial_start(0, [big], big)
    cb.on_trial_result(0, [big], big, {**SKIP, "eval_loss": -math.inf})  # worst for min is +inf; any value ignored
    big.last_result = {**SKIP, "eval_loss": math.inf}
    cb.on_trial_complete(0, [big], big)
    cb.on_trial_start(0, [big, ok], ok)
    clock.t = 10
    cb.on_trial_result(0, [ok], ok, {"training_iteration": 1, "step": 2, "eval_loss": 3.5, "time_total_s": 10})
    cb.on_trial_complete(0, [ok], ok)
    assert p.trials["t1"].status == SKIPPED and p.trials["t2"].status == COMPLETED
    assert p.best == 3.5 and p.best_trial == "t2" and p.trials["t1"].best is None
    assert p.counts()[SKIPPED] == 1 and p.trials["t1"].fraction() == 1.0
    text = out.getvalue()
    assert "trial t1 skipped, won't fit: needs 42.1 GiB, 24 GiB available (one 24 GiB GPU" in text
    assert "2/3 trials done · 1 skipped (won't fit)" in text
    from orchestrator.observe.progress import live_table

    table = io.StringIO()
    Console(file=table, width=200).print(live_table(p))
    assert "won't fit" in table.getvalue()


def skipped_run(tmp_path):
    run = make_run(tmp_path)
    row = {"trial_id": "abc12_00003", "training.learning_rate": 0.001, "lora.r": 64, METRIC: None, "steps": 0}
    row.update({"planned_steps": 40, "status": "SKIPPED_WONT_FIT", "time_s": 0.0})
    row.update({k: SKIP[k] for k in ("needed_gb", "available_gb", "fit_limit")})
    res = json.loads((run / "results.json").read_text())
    res["trials"].append(row)
    res["num_trials"] = 4
    (run / "results.json").write_text(json.dumps(res))
    rows = res["trials"]
    with (run / "trials.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        w.writeheader()
        w.writerows(rows)
    (run / "trials" / "abc12_00003").mkdir()
    return run


def test_report_and_summary_show_the_skipped_trial_with_its_estimate(tmp_path, capsys, monkeypatch):
    from orchestrator.observe.report.data import load_report_data
    from orchestrator.observe.report.sections import kpi_section, trial_table_section
    from orchestrator.observe.summary import print_summary

    run = skipped_run(tmp_path)
    data = load_report_data(run)
    table = trial_table_section(data)
    assert '<span class="pill skipped_wont_fit">won&#x27;t fit</span>' in table
    assert "needs 42.1 GiB, 24 GiB available (one 24 GiB GPU, resources.gpu_memory_gb)" in table
    assert "1 won&#x27;t fit" in kpi_section(data) or "1 won't fit" in kpi_section(data)
    monkeypatch.setenv("COLUMNS", "300")  # the summary's table on one line per trial
    assert print_summary(run) == 0
    out = capsys.readouterr().out
    assert "trial abc12_00003 skipped, won't fit: needs 42.1 GiB, 24 GiB available" in out
    assert "SKIPPED_WONT_FIT" in out and "42.07" in out  # its row, with the estimate, in the table
    assert "Best trial abc12_00000" in out
