"""The report's cost plot and spend card on a small run folder built here (no Ray, no training)."""

from __future__ import annotations

import json

import pytest

from orchestrator.observe.report.cost import cost_view
from orchestrator.observe.report.data import load_report_data
from orchestrator.observe.report.html import render_html
from tests.unit.observe.test_report import make_run

SPEND = [0.2, 0.1, 0.3]  # GPU-hours of the three trials; the price is $2


def run_with_spend(root, stopped=True):
    run = make_run(root)
    res = json.loads((run / "results.json").read_text())
    for row, gh in zip(res["trials"], SPEND):
        row.update(spend_gpu_hours=gh, spend_usd=gh * 2)
    res["spend"] = {
        "gpu_hours": 0.6,
        "usd": 1.2,
        "price_per_gpu_hour": 2.0,
        "unit_note": "CPU-only trials count each Train worker as one GPU (worker-hours)",
        "budget": {"usd": 1.5},
        "budget_gpu_hours": 0.75,
        "stopped_by_budget": stopped,
    }
    (run / "results.json").write_text(json.dumps(res))
    return run


def test_cost_view_in_dollars_with_the_best_so_far_curve(tmp_path):
    view = cost_view(load_report_data(run_with_spend(tmp_path)))
    assert view["unit"] == "spend_usd" and view["label"] == "USD" and view["budget"] == 1.5
    assert [p[1:] for p in view["points"]] == [(0.4, 0.4), (0.2, 0.1), (0.6, 0.3)]  # (cost $, eval_rougeL)
    cum, best = view["curve"]
    assert cum == pytest.approx([0.4, 0.6, 1.2])
    assert best == [0.4, 0.4, 0.4]  # max mode: the first trial stays the best


def test_report_has_the_cost_plot_and_spend_card_only_when_spend_was_recorded(tmp_path):
    page = render_html(load_report_data(run_with_spend(tmp_path / "a")))
    assert 'id="plot-cost"' in page and "<h2>Cost</h2>" in page
    assert "$1.20" in page and "budget $1.50" in page and "0.6 worker-h" in page
    assert "the budget stopped the search" in page
    assert "spend ($)" in page  # a column of the trial table
    plain = render_html(load_report_data(make_run(tmp_path / "b")))
    assert "plot-cost" not in plain and "<h2>Cost</h2>" not in plain


def test_no_cost_view_without_spend(tmp_path):
    assert cost_view(load_report_data(make_run(tmp_path))) is None
