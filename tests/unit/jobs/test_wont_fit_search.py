"""What the search does with a skipped (won't fit) trial's one report: Optuna is told the worst value (it takes
+-inf, never NaN), ASHA never ranks it, trials.csv gets its status and estimate; and the Train backend of a GPU
share without CUDA behind it is gloo. No Ray cluster is started."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from jobs.wont_fit import FeasibleASHA, skipped_fields, worst

SKIP = {"skipped_wont_fit": True, "needed_gb": 42.1, "available_gb": 24.0, "fit_limit": "one 24 GiB GPU"}


def test_worst_value_per_mode_and_the_csv_fields():
    assert worst("min") == math.inf and worst("max") == -math.inf
    assert skipped_fields({"training_iteration": 1, **SKIP, "eval_loss": math.inf}) == {
        "status": "SKIPPED_WONT_FIT",
        "needed_gb": 42.1,
        "available_gb": 24.0,
        "fit_limit": "one 24 GiB GPU",
    }
    assert skipped_fields({"eval_loss": 1.0, "step": 4}) == {}


@pytest.mark.parametrize("mode", ["min", "max"])
def test_optuna_records_the_skipped_region_as_the_worst_completed_value(mode):
    from optuna.trial import TrialState
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    search = OptunaSearch({"lora.r": tune.choice([4, 64])}, metric="eval_loss", mode=mode, seed=0)
    for tid, result in (("a", {"eval_loss": worst(mode), **SKIP}), ("b", {"eval_loss": 2.0})):
        search.suggest(tid)
        search.on_trial_complete(tid, result)
    trials = search._ot_study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].value == worst(mode) and trials[1].value == 2.0
    assert search._ot_study.best_trial.number == 1  # the feasible one


def test_asha_never_ranks_a_skipped_trial():
    from ray.tune.schedulers import TrialScheduler

    asha = FeasibleASHA(time_attr="training_iteration", metric="eval_loss", mode="min", max_t=4, grace_period=1)
    trials = [SimpleNamespace(trial_id=t, config={}) for t in ("skip", "good", "bad")]
    for t in trials:
        asha.on_trial_add(None, t)
    assert asha.on_trial_result(None, trials[0], {"training_iteration": 1, "eval_loss": math.inf, **SKIP}) == (
        TrialScheduler.CONTINUE
    )
    asha.on_trial_complete(None, trials[0], {"training_iteration": 1, "eval_loss": math.inf, **SKIP})
    rungs = [recorded for b in asha._brackets for _, recorded in b._rungs]
    assert all("skip" not in r for r in rungs)
    # the feasible trials are ranked among themselves as before: the worse of two stops at the first rung
    assert asha.on_trial_result(None, trials[1], {"training_iteration": 1, "eval_loss": 1.0}) == "CONTINUE"
    assert asha.on_trial_result(None, trials[2], {"training_iteration": 1, "eval_loss": 5.0}) == "STOP"
    assert {tid for r in rungs for tid in r} == {"good", "bad"}


def test_train_backend_is_chosen_on_the_worker():
    from jobs.train_backend import DEVICE, DeviceTorchConfig, _DeviceBackend

    config = DeviceTorchConfig()
    assert config.backend == DEVICE and config.backend_cls is _DeviceBackend  # TorchTrainer leaves it alone
    seen = []

    class Group:
        def __init__(self, gpu, cuda):
            self.gpu, self.cuda = gpu, cuda

        def get_resources_per_worker(self):
            return {"CPU": 1, **({"GPU": self.gpu} if self.gpu else {})}

        def execute_single(self, rank, fn):
            return self.cuda

        def execute(self, fn):
            seen.append(fn.__name__)

    from ray.train.torch.config import _TorchBackend

    original = _TorchBackend.on_start
    _TorchBackend.on_start = lambda self, group, cfg: seen.append(cfg.backend)
    try:
        for gpu, cuda in ((0, False), (0.125, False), (0.125, True)):
            _DeviceBackend().on_start(Group(gpu, cuda), config)
    finally:
        _TorchBackend.on_start = original
    assert seen == ["gloo", "gloo", "_use_cpu", "nccl"]  # a GPU share without CUDA: Accelerate on the CPU
