"""search.budget: the config, the spend of a trial and the ledger's stop rule, computed by hand. No Ray."""

from __future__ import annotations

import pytest

from orchestrator.core.budget import (
    BudgetLedger,
    budget_gpu_hours,
    result_gpu_hours,
    spend_columns,
    spend_line,
    spend_summary,
    trial_devices,
)
from orchestrator.core.config_load import validate_dict
from orchestrator.core.errors import UserError


def cfg(**sections):
    data = {"model": {"name_or_path": "m", "task": "seq2seq"}, "data": {"train": "t.jsonl"}}
    data.update(sections)
    return validate_dict(data)


def problems(**sections) -> list:
    with pytest.raises(UserError) as e:
        cfg(**sections)
    return e.value.problems


def test_budget_in_dollars_needs_a_price_and_names_the_key():
    (p,) = problems(search={"budget": {"usd": 20}})
    assert "resources.price_per_gpu_hour" in p and "search.budget.gpu_hours" in p


@pytest.mark.parametrize("budget", [{}, {"usd": 5, "gpu_hours": 2}])
def test_budget_takes_exactly_one_unit(budget):
    (p,) = problems(search={"budget": budget}, resources={"price_per_gpu_hour": 2.0})
    assert "`search.budget`" in p and "exactly one of gpu_hours or usd" in p


def test_bad_budget_values_name_their_keys():
    ps = problems(search={"budget": {"gpu_hour": 1}}, resources={"price_per_gpu_hour": 0})
    text = "\n".join(ps)
    assert "`search.budget.gpu_hour`" in text and "Did you mean 'gpu_hours'?" in text
    assert "`resources.price_per_gpu_hour`" in text and "above 0" in text


def test_cli_refuses_a_dollar_budget_without_a_price_exit_2_nothing_written(tmp_path, tiny_t5):
    from click.testing import CliRunner

    from orchestrator.cli import cli
    from tests.conftest import write_config

    path = write_config(tmp_path / "exp.yaml", tiny_t5, tmp_path / "runs", search={"budget": {"usd": 20}})
    for verb in ("validate", "tune"):
        result = CliRunner().invoke(cli, [verb, str(path)], catch_exceptions=False)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "resources.price_per_gpu_hour" in result.output
    assert not (tmp_path / "runs").exists()


def test_dollars_become_gpu_hours_at_the_price():
    c = cfg(search={"budget": {"usd": 10}}, resources={"price_per_gpu_hour": 2.5})
    assert budget_gpu_hours(c) == 4.0
    assert budget_gpu_hours(cfg(search={"budget": {"gpu_hours": 3}})) == 3.0
    assert budget_gpu_hours(cfg()) is None


def test_plan_text_shows_the_budget_in_both_units():
    from orchestrator.launch.pipeline import plan_text

    c = cfg(search={"budget": {"usd": 10}}, resources={"price_per_gpu_hour": 2.5})
    assert "Budget: $10.00 = 4 worker-hours (CPU-only trials: a Train worker counts as one GPU) at $2.50 each" in (
        plan_text(c, "tune")
    )
    assert "Budget:" not in plan_text(cfg(), "tune")


def test_devices_of_a_trial():
    # GPU workers: their shares; CPU-only workers: one device each (worker-hours)
    assert trial_devices(cfg(resources={"num_workers": 2, "gpus_per_worker": 0.5})) == 1.0
    assert trial_devices(cfg(resources={"num_workers": 3, "gpus_per_worker": 0})) == 3.0
    auto = cfg(resources={"num_workers": 2, "gpus_per_worker": "auto", "gpu_memory_gb": 80})
    assert trial_devices(auto) == 2.0  # unplanned: a whole GPU each
    assert trial_devices(auto, planned_gpus=0.25) == 0.5  # the share the plan resolved


def test_spend_of_a_trial_is_devices_times_wall_time():
    c = cfg(resources={"num_workers": 2, "gpus_per_worker": 0.5, "price_per_gpu_hour": 3.0})
    assert result_gpu_hours(c, {"time_total_s": 1800}) == pytest.approx(0.5)  # 1 GPU x half an hour
    assert result_gpu_hours(c, {"time_total_s": 1800, "gpus_per_worker": 0.25}) == pytest.approx(0.25)
    assert spend_columns(c, c, {"time_total_s": 1800}) == {"spend_gpu_hours": 0.5, "spend_usd": 1.5}
    assert spend_columns(cfg(), cfg(), {"time_total_s": 1800}) == {}  # no budget, no price: not counted


def test_ledger_stops_when_spend_plus_the_next_projected_trial_would_pass():
    led = BudgetLedger(limit=1.0)
    assert led.allows_next()  # nothing spent, nothing projected
    led.started("a")
    led.update("a", 0.1)
    assert led.projected() == 0 and led.committed() == pytest.approx(0.1) and led.allows_next()
    led.complete("a", 0.3)
    assert led.projected() == pytest.approx(0.3) and led.allows_next()  # 0.3 + 0.3 <= 1
    led.started("b")
    led.update("b", 0.1)  # running: counted at least at the projection, 0.3
    assert led.committed() == pytest.approx(0.6) and led.allows_next()  # 0.6 + 0.3 <= 1
    led.started("c")
    assert led.committed() == pytest.approx(0.9) and not led.allows_next()  # 0.9 + 0.3 > 1
    led.complete("b", 0.1)
    led.complete("c", None)  # errored without a last result: its last known spend (0)
    assert led.finished == {"a": 0.3, "b": 0.1, "c": 0.0}
    assert led.projected() == pytest.approx(0.4 / 3)
    assert BudgetLedger.from_json(led.to_json()) == led


def test_a_late_result_of_a_finished_trial_does_not_reopen_it():
    led = BudgetLedger(limit=1.0)
    led.complete("a", 0.5)
    led.update("a", 0.7)
    assert led.running == {} and led.finished == {"a": 0.5}


def test_spend_summary_and_line():
    c = cfg(search={"budget": {"usd": 1.0}, "num_samples": 8}, resources={"price_per_gpu_hour": 2.0})
    rows = [{"spend_gpu_hours": 0.1}, {"spend_gpu_hours": 0.2}, {"spend_gpu_hours": 0.15}]
    stop = {"launched": 3, "committed_gpu_hours": 0.45, "projected_gpu_hours": 0.15}
    s = spend_summary(c, rows, stop)
    assert s["gpu_hours"] == pytest.approx(0.45) and s["usd"] == pytest.approx(0.9)
    assert s["budget"] == {"usd": 1.0} and s["budget_gpu_hours"] == 0.5 and s["stopped_by_budget"] is True
    assert "worker" in s["unit_note"]  # CPU-only trials
    line = spend_line(s, 8, 3)
    assert line.startswith("Spend: 0.45 GPU-hours ($0.9) of a $1.00 budget;")  # small sums: 3 digits
    assert "stopped the search after 3 of 8 trials" in line
    assert spend_summary(cfg(), rows, None) is None
    assert spend_summary(c, rows, None)["stopped_by_budget"] is False


def test_a_trial_skipped_as_wont_fit_is_no_evidence_of_what_the_next_one_costs():
    led = BudgetLedger(limit=1.0)
    led.started("a")
    led.complete("a", 0.4)
    led.started("big")
    led.complete("big", 0.0, skipped=True)  # SKIPPED_WONT_FIT: it never started
    assert led.finished == {"a": 0.4} and led.running == {}
    assert led.projected() == pytest.approx(0.4)  # not (0.4 + 0) / 2, which would overrun the budget
