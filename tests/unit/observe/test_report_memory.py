"""The report's memory view (estimate vs measured) on a small run folder built here (no Ray, no training)."""

from __future__ import annotations

import json

import pytest

from orchestrator.estimate.memory import CUDA_OVERHEAD_GIB
from orchestrator.observe.report.data import load_report_data
from orchestrator.observe.report.html import render_html
from orchestrator.observe.report.memory import memory_view
from tests.unit.observe.test_report import make_run


def run_with_memory(root):
    """Trial 0 ran on a GPU share and measured its peak; trial 1 only has the plan; trial 2 was skipped."""
    run = make_run(root)
    cfg = json.loads((run / "config.json").read_text())
    cfg["resources"] = {"gpus_per_worker": "auto", "gpu_memory_gb": 24.0}
    (run / "config.json").write_text(json.dumps(cfg))
    res = json.loads((run / "results.json").read_text())
    rows = res["trials"]
    rows[0].update(estimated_peak_gb=3.0, measured_peak_gb=2.3, gradient_checkpointing=False)
    rows[1].update(estimated_peak_gb=1.5, gradient_checkpointing=False)
    rows[2].update(status="SKIPPED_WONT_FIT", needed_gb=40.0, available_gb=24.0)
    (run / "results.json").write_text(json.dumps(res))
    last = {rows[0]["trial_id"]: {"gpus_per_worker": 0.25}, rows[1]["trial_id"]: {"memory_budget_gb": 12.0}}
    for tid, extra in last.items():
        path = run / "trials" / tid / "result.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **extra}))
    return run


def test_memory_view_pairs_each_estimate_with_its_measurement(tmp_path):
    view = memory_view(load_report_data(run_with_memory(tmp_path)))
    assert view["measured"]
    first, second, skipped = view["rows"]
    # measured: torch's peak allocated + the CUDA context the estimate counts, as estimate --calibrate compares
    assert first["measured_gb"] == pytest.approx(2.3 + CUDA_OVERHEAD_GIB)
    assert first["ratio"] == pytest.approx((2.3 + CUDA_OVERHEAD_GIB) / 3.0, abs=1e-3)
    assert first["given_gb"] == pytest.approx(6.0)  # a quarter of the 24 GiB GPU
    assert first["checkpointing"] is False
    assert second["measured_gb"] is None and second["ratio"] is None and second["given_gb"] == 12.0
    assert skipped["status"] == "SKIPPED_WONT_FIT" and skipped["estimated_gb"] == 40.0 and skipped["given_gb"] == 24.0


def test_report_has_the_memory_section_only_with_estimates(tmp_path):
    page = render_html(load_report_data(run_with_memory(tmp_path / "a")))
    assert "<h2>Memory: estimate vs measured</h2>" in page and 'id="plot-memory"' in page
    assert "<td>#0</td><td>COMPLETED</td><td>off</td><td>3.000</td><td>3.300</td><td>1.10×</td><td>6.000</td>" in page
    assert "<td>#2</td><td>SKIPPED_WONT_FIT</td><td></td><td>40.000</td><td>—</td><td>—</td><td>24.000</td>" in page
    plain = render_html(load_report_data(make_run(tmp_path / "b")))
    assert "plot-memory" not in plain and "estimate vs measured" not in plain


def test_a_run_without_a_search_space_plots_no_record_column_as_a_hyperparameter(tmp_path):
    """`tune` with no space: the rows carry only what each trial recorded (mfu empty on CPU): the report,
    PNGs included, draws without taking them for hyperparameters."""
    from orchestrator.observe.report.html import write_report

    run = make_run(tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["search"]["space"] = {}
    (run / "config.json").write_text(json.dumps(cfg))
    res = json.loads((run / "results.json").read_text())
    for row in res["trials"]:
        for k in ("training.learning_rate", "lora.r"):
            row.pop(k)
        row.update(gradient_checkpointing=False, estimated_peak_gb=1.0, train_tokens=320, tokens_per_s=4400.0)
        row.update(mfu=None, kernels="none", torch_compile=False)
    (run / "results.json").write_text(json.dumps(res))
    assert load_report_data(run)["param_keys"] == []
    index = write_report(run)
    assert index.exists() and (run / "report" / "parallel.png").stat().st_size > 0
