"""training.gradient_checkpointing: auto, decided per trial from the estimate (orchestrator.estimate.trial_plan),
and what the worker then builds (jobs.modeling.load_trainable + jobs.train_loop.build_trainer), on CPU, no Ray."""

from __future__ import annotations

import pytest

from orchestrator.estimate.memory import GIB
from orchestrator.estimate.trial_plan import (
    HOST_MARGIN,
    TrialPlanner,
    memory_budget,
    model_shape,
    peak_bytes,
    plan_trial,
    trial_planner,
)
from tests.helpers.configs import tiny_t5_config


def cfg_for(model, seed_data, training=None, resources=None, **sections):
    return tiny_t5_config(
        model,
        seed_data,
        data={"max_input_length": 64, "max_target_length": 16},
        lora={"target_modules": ["q", "v"], "r": 4, "alpha": 8},
        training={"max_steps": 2, "batch_size": 2, **(training or {})},
        resources=resources or {},
        **sections,
    )


def test_auto_is_the_default_and_true_false_are_still_accepted(tiny_t5, seed_data):
    assert cfg_for(tiny_t5, seed_data).training.gradient_checkpointing == "auto"
    for v in (True, False):
        assert cfg_for(tiny_t5, seed_data, training={"gradient_checkpointing": v}).training.gradient_checkpointing is v
    with pytest.raises(Exception, match="gradient_checkpointing"):
        cfg_for(tiny_t5, seed_data, training={"gradient_checkpointing": "sometimes"})


def test_memory_budget_per_worker_by_hand(tiny_t5, seed_data):
    gpu = cfg_for(tiny_t5, seed_data, resources={"gpus_per_worker": 0.5, "gpu_memory_gb": 80})
    assert memory_budget(gpu, host_gib=512, concurrent=4) == (40.0, "0.5 x 80 GiB GPU")
    unknown, why = memory_budget(cfg_for(tiny_t5, seed_data, resources={"gpus_per_worker": 1}), 512, 1)
    assert unknown is None and "resources.gpu_memory_gb" in why
    cpu = cfg_for(tiny_t5, seed_data, resources={"num_workers": 2})
    budget, _ = memory_budget(cpu, host_gib=16, concurrent=2)  # 4 workers share 80 % of 16 GiB
    assert budget == pytest.approx(HOST_MARGIN * 16 / 4) == pytest.approx(3.2)


def test_auto_decides_from_each_trials_own_estimate(tiny_t5, seed_data):
    """The same search config: a small trial fits without checkpointing, a large sampled batch does not."""
    cfg = cfg_for(tiny_t5, seed_data)
    shape = model_shape(cfg)
    small, large = cfg.with_params({"training.batch_size": 1}), cfg.with_params({"training.batch_size": 512})
    # checkpointing only ever lowers the estimate, and a larger batch raises it
    assert peak_bytes(shape, large, True) < peak_bytes(shape, large, False)
    assert peak_bytes(shape, small, False) < peak_bytes(shape, large, False)
    # a host whose budget lies between the two trials' peaks without checkpointing
    host_gib = (peak_bytes(shape, small, False) + peak_bytes(shape, large, False)) / 2 / GIB / HOST_MARGIN
    planner = TrialPlanner(shape, host_gib, concurrent=1)
    off, on = planner(small), planner(large)
    assert off["params"] == {"training.gradient_checkpointing": False}
    assert on["params"] == {"training.gradient_checkpointing": True}
    assert off["record"]["gradient_checkpointing"] is False and on["record"]["gradient_checkpointing"] is True
    assert off["record"]["estimated_peak_gb"] == round(peak_bytes(shape, small, False) / GIB, 3)
    assert on["record"]["estimated_peak_gb"] == round(peak_bytes(shape, large, True) / GIB, 3)
    assert "exceeds" in on["record"]["gradient_checkpointing_reason"]
    assert "fits" in off["record"]["gradient_checkpointing_reason"]
    # an explicit true/false is kept whatever the estimate says
    forced = plan_trial(shape, cfg.with_params({"training.gradient_checkpointing": True}), 1e6, 1)
    assert forced["params"] == {"training.gradient_checkpointing": True}
    # a GPU without gpu_memory_gb: nothing to judge against, checkpointing stays on
    gpu = plan_trial(shape, small.with_params({"resources.gpus_per_worker": 1}), 1e6, 1)
    assert gpu["record"]["gradient_checkpointing"] is True and "memory_budget_gb" not in gpu["record"]


def test_resolved_choice_reaches_the_model_the_trainer_trains(tiny_t5, seed_data, tmp_path):
    """What a trial's workers build from the resolved config (the params the trial driver passes on)."""
    from jobs.data import load_splits, tokenize
    from jobs.modeling import load_tokenizer, load_trainable
    from jobs.train_loop import build_trainer

    cfg = cfg_for(tiny_t5, seed_data)
    planner = trial_planner(cfg, concurrent=1, echo=lambda *a: None)
    assert planner is not None
    import cloudpickle  # how Tune's with_parameters ships it to the trial's driver

    assert cloudpickle.loads(cloudpickle.dumps(planner))(cfg) == planner(cfg)
    tok = load_tokenizer(cfg)
    data = {k: tokenize(v, tok, cfg) for k, v in load_splits(cfg.data).items()}
    # a real host: the tiny model fits, so auto turns it off; a 1 MiB host cannot hold it, so auto turns it on
    for host_gib, expected in ((planner.host_gib, False), (1 / 1024, True)):
        plan = TrialPlanner(planner.shape, host_gib, 1)(cfg)
        trial_cfg = cfg.with_params(plan["params"])
        assert trial_cfg.training.gradient_checkpointing is expected
        model = load_trainable(trial_cfg)
        trainer = build_trainer(trial_cfg, model, tok, data, plan["record"], str(tmp_path / str(expected)))
        base = trainer.model.get_base_model()
        assert base.is_gradient_checkpointing is expected
        cb = next(c for c in trainer.callback_handler.callbacks if hasattr(c, "extra"))
        assert cb.extra["gradient_checkpointing"] is expected and cb.extra["estimated_peak_gb"] > 0


def test_unresolved_auto_keeps_checkpointing_on(tiny_t5, seed_data, tmp_path):
    """No planner (the model's shape could not be read on the driver): the worker falls back to on."""
    from jobs.modeling import load_trainable

    cfg = cfg_for(tiny_t5, seed_data)
    assert cfg.training.checkpointing_on is True
    assert load_trainable(cfg).get_base_model().is_gradient_checkpointing is True
    said = []
    assert trial_planner(cfg.with_params({"model.name_or_path": str(tmp_path)}), 1, echo=said.append) is None
    assert "auto stays on" in said[0]


def test_gpu_share_rounds_up_to_eighths_between_one_eighth_and_one_gpu():
    from orchestrator.estimate.trial_plan import GPU_SAFETY, gpu_share

    assert GPU_SAFETY == 1.2
    assert gpu_share(10 * GIB, 80) == 0.25  # 12 / 80 = 0.15 -> 2/8
    assert gpu_share(50 * GIB, 80) == 0.75  # 60 / 80 = 6/8 exactly: not rounded further up
    assert gpu_share(50 * GIB + 2**20, 80) == 0.875  # one MiB more: the next eighth
    assert gpu_share(1 * GIB, 80) == 0.125 and gpu_share(0, 80) == 0.125  # never below 1/8
    assert gpu_share(70 * GIB, 80) == 1.0  # 84 / 80: one whole GPU at most
    assert gpu_share(10 * GIB, 80, safety=1.0) == 0.125  # 10 / 80 = 1/8


def test_gpus_per_worker_auto_needs_gpu_memory_and_is_resolved_per_trial(tiny_t5, seed_data):
    from orchestrator.core.errors import UserError
    from orchestrator.estimate.trial_plan import gpu_share
    from orchestrator.launch.capacity import worker_request
    from orchestrator.launch.preflight import check_local_gpus

    with pytest.raises(Exception, match="resources.gpu_memory_gb"):
        cfg_for(tiny_t5, seed_data, resources={"gpus_per_worker": "auto"})
    cfg = cfg_for(tiny_t5, seed_data, resources={"gpus_per_worker": "auto", "gpu_memory_gb": 2})
    assert cfg.resources.gpus == 1.0 and worker_request(cfg) == {"CPU": 1.0, "GPU": 0.125}  # the least a trial asks
    with pytest.raises(UserError, match=r"gpus_per_worker` is auto \(at least 0.125\) but this machine has 0 GPU"):
        check_local_gpus(cfg, gpus=0)
    shape = model_shape(cfg)
    planner = trial_planner(cfg, concurrent=1, echo=lambda *a: None)
    assert planner is not None
    small = cfg.with_params({"training.batch_size": 1})
    large = cfg.with_params({"training.batch_size": 256, "lora.r": 64})
    for trial, expected_ckpt in ((small, False), (large, None)):
        plan = planner(trial)
        ckpt = plan["params"]["training.gradient_checkpointing"]
        assert expected_ckpt is None or ckpt is expected_ckpt
        share = gpu_share(peak_bytes(shape, trial, ckpt), 2)
        assert plan["params"]["resources.gpus_per_worker"] == plan["record"]["gpus_per_worker"] == share
        # what the trial's driver asks Ray for per worker (jobs.search.trial_driver: the resolved resources)
        assert trial.with_params(plan["params"]).resources.gpus == share
    small_share = planner(small)["record"]["gpus_per_worker"]
    large_share = planner(large)["record"]["gpus_per_worker"]
    # the tiny model's 1 GiB assumed CUDA context alone is 1.2/2 of this GPU: 5/8; the large trial needs more
    assert small_share == 0.625 and small_share < large_share <= 1.0
