"""search.budget in a real search: local Ray on CPU, the tiny T5, one trial at a time.

One search, because only a real Tune run shows that the BudgetLimiter stops launching while the trials
it launched finish, that the spend Tune measured reaches trials.csv, results.json and the summary, and
that the report's cost plot draws in a browser. The budget is about three trials' worth on this machine;
what is asserted holds at any speed: the stop rule replayed on the measured spend of each trial.
"""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import write_config
from tests.helpers.browser import HeadlessChromium, needs_chromium

pytestmark = pytest.mark.integration

PRICE = 3.6  # $ per worker-hour: $0.001 per worker-second
BUDGET_USD = 0.042  # 42 worker-seconds: 3 trials of ~12 s here (2 of ~17 s under load; max_steps 2, one worker)
NUM_SAMPLES = 8


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory, tiny_t5, ray_local_2cpu):
    from orchestrator.launch.pipeline import run

    root = tmp_path_factory.mktemp("budget")
    cfg = write_config(
        root / "t5.yaml",
        tiny_t5,
        root / "runs",
        training={"max_steps": 2, "eval_steps": 2, "logging_steps": 1},
        search={
            "num_samples": NUM_SAMPLES,
            "max_concurrent_trials": 1,  # the ledger sees each trial finish before the next is asked for
            "scheduler": "fifo",
            "metric": "eval_loss",
            "budget": {"usd": BUDGET_USD},
        },
        resources={"price_per_gpu_hour": PRICE},
        tracking={"backend": "none"},
        merge={"enabled": False},
    )
    said: list = []
    code = run(str(cfg), "tune", [], echo=lambda *a, **k: said.append(" ".join(map(str, a))))
    return code, root / "runs" / "t5", said


def test_budget_stops_launching_and_the_spend_is_reported(budget_run, capsys):
    code, run_dir, said = budget_run
    assert code == 0
    res = json.loads((run_dir / "results.json").read_text())
    rows = list(csv.DictReader((run_dir / "trials.csv").open()))
    spend = res["spend"]
    n = res["num_trials"]
    assert 1 <= n < NUM_SAMPLES and len(rows) == n
    assert spend["stopped_by_budget"] is True and spend["budget"] == {"usd": BUDGET_USD}
    assert spend["budget_gpu_hours"] == pytest.approx(BUDGET_USD / PRICE)
    # every launched trial ran to the end: the budget stops launching, not running
    assert all(r["status"] == "COMPLETED" for r in rows)
    # each trial's spend is one CPU worker x Tune's wall time, in trials.csv and results.json
    costs = []
    for r, t in zip(rows, res["trials"]):
        gh = float(r["spend_gpu_hours"])
        assert gh == pytest.approx(float(r["time_s"]) / 3600, abs=1e-4)  # time_s is rounded to 0.1 s
        assert float(r["spend_usd"]) == pytest.approx(gh * PRICE, abs=1e-5)  # each rounded to 1e-6
        assert t["spend_gpu_hours"] == pytest.approx(gh)
        costs.append(gh)
    assert spend["gpu_hours"] == pytest.approx(sum(costs), abs=1e-5)
    assert spend["usd"] == pytest.approx(sum(costs) * PRICE, abs=1e-5)
    # the stop rule replayed: each launched trial fit (spent + mean of the finished <= budget), the next did not
    limit, eps = spend["budget_gpu_hours"], 1e-5
    for i in range(1, n):
        assert sum(costs[:i]) + sum(costs[:i]) / i <= limit + eps
    assert sum(costs) + sum(costs) / n > limit - eps
    assert spend["stop"]["launched"] == n
    assert spend["stop"]["committed_gpu_hours"] == pytest.approx(sum(costs), abs=1e-5)
    assert spend["stop"]["projected_gpu_hours"] == pytest.approx(sum(costs) / n, abs=1e-5)

    # the terminal said so when it happened, and the summary says it at the end
    assert any(line.startswith("Budget: ") and f"no new trials after {n};" in line for line in said), said
    from orchestrator.observe.summary import print_summary

    capsys.readouterr()
    print_summary(run_dir)
    out = " ".join(capsys.readouterr().out.split())
    assert "of a $0.042 budget" in out and f"the budget stopped the search after {n} of 8 trials" in out


@needs_chromium
def test_cost_plot_renders_in_headless_chromium(budget_run):
    _, run_dir, _ = budget_run
    index = run_dir / "report" / "index.html"  # written by `tune` itself
    res = json.loads((run_dir / "results.json").read_text())
    browser = HeadlessChromium()
    try:
        browser.open(index.resolve().as_uri())
        assert browser.problems() == []
        state = browser.cdp.evaluate("""(() => {
            const p = document.getElementById('plot-cost');
            return {
                drawn: !!(p && p.querySelector('.main-svg')),
                points: p ? p.data[0].x.length : 0,
                curve: p ? p.data[1].x : [],
                budgetLine: p ? (p.layout.shapes || []).map(s => s.x0) : [],
                card: [...document.querySelectorAll('.kpi')].map(k => k.textContent).find(t => t.startsWith('spend')),
                memDrawn: !!document.querySelector('#plot-memory .main-svg'),
                estimates: (document.getElementById('plot-memory') || {data: [{y: []}]}).data[0].y,
            };
        })()""")
        assert state["drawn"] and state["points"] == res["num_trials"]
        assert state["curve"][-1] == pytest.approx(res["spend"]["usd"], abs=1e-4)  # cumulative spend in $
        assert state["budgetLine"] == [pytest.approx(BUDGET_USD)]
        assert "the budget stopped the search" in state["card"]
        # the memory view: each trial's planned peak (CPU trials: no measured bars)
        assert state["memDrawn"]
        assert state["estimates"] == [pytest.approx(r["estimated_peak_gb"]) for r in res["trials"]]
    finally:
        browser.close()
