"""BudgetLimiter over Tune's real search algorithms, fed results by hand: the trial it refuses, what it
records, its saved state. No Ray cluster (Tune's generators run without one)."""

from __future__ import annotations

import pickle

import pytest
from ray import tune
from ray.tune.experiment import Experiment
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.basic_variant import BasicVariantGenerator

from jobs.budget_searcher import BudgetLimiter, budget_limited
from orchestrator.core.config_load import validate_dict


def cfg(budget, **resources):
    return validate_dict(
        {
            "model": {"name_or_path": "m", "task": "seq2seq"},
            "data": {"train": "t.jsonl"},
            "search": {"budget": budget, "num_samples": 5, "space": {"lora.r": {"type": "choice", "values": [4, 8]}}},
            "resources": resources,
        }
    )


def limiter(c, tmp_path, inner=None):
    alg = BudgetLimiter(inner or BasicVariantGenerator(max_concurrent=1, random_state=1), c)
    space = {"params": {"lora.r": tune.choice([4, 8])}}
    alg.add_configurations(
        [Experiment("x", run=lambda _: None, config=space, num_samples=5, storage_path=str(tmp_path))]
    )
    return alg


def run_one(alg, seconds, **extra):
    """Launch the next trial, report half-way and at the end; its id."""
    trial = alg.next_trial()
    assert trial is not None
    alg.on_trial_result(trial.trial_id, {"time_total_s": seconds / 2, **extra})
    alg.on_trial_complete(trial.trial_id, {"time_total_s": seconds, **extra})
    return trial.trial_id


def test_stops_launching_when_the_next_trial_would_pass_the_budget(tmp_path):
    # 2 CPU workers x 15 min = 0.5 worker-hours a trial ($1 at $2); budget $3.2 = 1.6 worker-hours
    alg = limiter(cfg({"usd": 3.2}, num_workers=2, price_per_gpu_hour=2.0), tmp_path)
    said = []
    alg.echo = said.append
    for _ in range(3):  # spent + projected: 0+0, 0.5+0.5, 1.0+0.5 <= 1.6
        run_one(alg, 900)
    assert alg.ledger.finished and sum(alg.ledger.finished.values()) == pytest.approx(1.5)
    assert alg.next_trial() is None  # 1.5 + 0.5 > 1.6
    assert alg.is_finished() and alg.inner.is_finished()
    assert alg.stop == {"launched": 3, "committed_gpu_hours": 1.5, "projected_gpu_hours": 0.5}
    assert alg.total_samples == 5  # the search asked for 5
    assert said == [
        "Budget: 1.5 worker-hours spent or committed + ~0.5 for the next trial would pass search.budget "
        "(1.6 worker-hours): no new trials after 3; the running ones finish"
    ]
    # Tune pickles the search algorithm (tuner.pkl) before the search: the terminal is not part of it
    fresh = BudgetLimiter(BasicVariantGenerator(), alg.cfg, echo=said.append)
    assert pickle.loads(pickle.dumps(fresh)).echo is None and fresh.echo is not None


def test_a_running_trial_counts_at_least_at_the_projection(tmp_path):
    c = cfg({"gpu_hours": 1.4}, num_workers=1)
    alg = limiter(c, tmp_path, BasicVariantGenerator(max_concurrent=2, random_state=1))
    run_one(alg, 1800)  # 0.5
    t2 = alg.next_trial()  # 0.5 + 0.5 <= 1.4
    alg.on_trial_result(t2.trial_id, {"time_total_s": 60})
    # committed 0.5 + max(1/60, 0.5) = 1.0, + 0.5 projected > 1.4: no third trial while the second runs
    assert alg.next_trial() is None and alg.stop["committed_gpu_hours"] == pytest.approx(1.0)


def test_gpu_share_planned_by_auto_is_what_is_counted(tmp_path):
    c = cfg({"gpu_hours": 10}, num_workers=2, gpus_per_worker="auto", gpu_memory_gb=80)
    alg = limiter(c, tmp_path)
    tid = run_one(alg, 3600, gpus_per_worker=0.25)
    assert alg.ledger.finished[tid] == pytest.approx(0.5)  # 2 workers x 1/4 GPU x 1 h


def test_saved_state_restores_the_ledger_and_the_stop(tmp_path):
    c = cfg({"gpu_hours": 0.6}, num_workers=1)
    alg = limiter(c, tmp_path / "a")
    run_one(alg, 1800)
    assert alg.next_trial() is None  # 0.5 + 0.5 > 0.6
    alg.save_to_dir(str(tmp_path), session_str="s")
    again = limiter(c, tmp_path / "b")
    assert again.has_checkpoint(str(tmp_path))
    again.restore_from_dir(str(tmp_path))
    assert again.ledger == alg.ledger and again.stop == alg.stop and again.is_finished()


def test_wraps_a_searcher_and_exposes_its_concurrency_limit(tmp_path):
    from ray.tune.execution.tune_controller import _get_max_pending_trials
    from ray.tune.search.optuna import OptunaSearch

    c = cfg({"gpu_hours": 1}, num_workers=1)
    alg = BudgetLimiter(ConcurrencyLimiter(OptunaSearch(seed=1), max_concurrent=3), c)
    assert _get_max_pending_trials(alg) == 3  # Tune queues as many trials as may run at once


def test_without_a_budget_the_tune_config_is_left_alone():
    tc = tune.TuneConfig(search_alg=BasicVariantGenerator())
    c = validate_dict({"model": {"name_or_path": "m", "task": "seq2seq"}, "data": {"train": "t.jsonl"}})
    assert isinstance(budget_limited(tc, c).search_alg, BasicVariantGenerator)
    assert isinstance(budget_limited(tc, cfg({"gpu_hours": 1})).search_alg, BudgetLimiter)
