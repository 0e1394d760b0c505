"""A sampled configuration whose estimate exceeds the largest GPU (or the host on CPU workers) is skipped
(orchestrator.estimate.wont_fit through the trial planner), and `validate` warns when most of the space is such."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from orchestrator.estimate.memory import GIB
from orchestrator.estimate.trial_plan import HOST_MARGIN, TrialPlanner, model_shape, peak_bytes
from orchestrator.estimate.wont_fit import SAMPLES, fit_limit, sample_space, space_warning
from tests.conftest import write_config
from tests.helpers.configs import tiny_t5_config

SPACE = {
    "lora.r": {"type": "choice", "values": [4, 64]},
    "training.batch_size": {"type": "choice", "values": [1, 16, 32]},
    "training.learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
    "training.gradient_accumulation_steps": {"type": "randint", "low": 1, "high": 4},
}


def gpu_cfg(model, seed_data, gpu_gb=24.0, **resources):
    return tiny_t5_config(
        model,
        seed_data,
        data={"max_input_length": 4096, "max_target_length": 16},
        lora={"target_modules": ["q", "v"], "r": 4, "alpha": 8},
        training={"max_steps": 2, "gradient_checkpointing": False},
        resources={"gpus_per_worker": "auto", "gpu_memory_gb": gpu_gb, **resources},
        search={"space": SPACE, "seed": 3},
    )


def test_a_trial_over_one_gpu_is_skipped_with_its_estimate(tiny_t5, seed_data):
    cfg = gpu_cfg(tiny_t5, seed_data)
    shape = model_shape(cfg)
    planner = TrialPlanner(shape, host_gib=64, concurrent=4)
    small, large, huge = (cfg.with_params({"training.batch_size": b}) for b in (1, 16, 32))
    for c in (small, large):
        assert peak_bytes(shape, c, False) <= 24 * GIB and planner(c)["wont_fit"] is None
    plan = planner(huge)
    peak = peak_bytes(shape, huge, False)
    assert peak > 24 * GIB  # ~42 GiB of attention activations at 4096 tokens x 32
    assert plan["wont_fit"] == {
        "needed_gb": round(peak / GIB, 3),
        "available_gb": 24.0,
        "fit_limit": "one 24 GiB GPU, resources.gpu_memory_gb",
    }
    assert plan["wont_fit"]["needed_gb"] == plan["record"]["estimated_peak_gb"]
    # gradient checkpointing auto turns on first: only what does not fit even with it is skipped
    auto = huge.with_params({"training.gradient_checkpointing": "auto"})
    with_ckpt = peak_bytes(shape, auto, True)
    assert with_ckpt < peak
    assert (planner(auto)["wont_fit"] is None) == (with_ckpt <= 24 * GIB)
    # a fixed share of a GPU is judged against the whole GPU (the largest device a worker can get)
    half = huge.with_params({"resources.gpus_per_worker": 0.5})
    assert planner(half)["wont_fit"]["available_gb"] == 24.0
    # no gpu_memory_gb: nothing to judge against, nothing skipped
    unknown = cfg.with_params({"resources.gpus_per_worker": 1, "resources.gpu_memory_gb": None})
    assert fit_limit(unknown, 64)[0] is None
    assert planner(unknown.with_params({"training.batch_size": 32}))["wont_fit"] is None


def test_cpu_workers_are_judged_against_host_memory(tiny_t5, seed_data):
    cfg = gpu_cfg(tiny_t5, seed_data).with_params({"resources.gpus_per_worker": 0, "training.batch_size": 1})
    shape = model_shape(cfg)
    peak = peak_bytes(shape, cfg, False)
    host = peak / GIB / HOST_MARGIN  # exactly fits one worker on this host
    assert TrialPlanner(shape, host * 1.01, 1)(cfg)["wont_fit"] is None
    skipped = TrialPlanner(shape, host * 0.99, 1)(cfg)["wont_fit"]
    assert skipped["available_gb"] == pytest.approx(HOST_MARGIN * host * 0.99, abs=1e-3)
    assert "host memory over 1 CPU worker(s)" in skipped["fit_limit"]
    two = cfg.with_params({"resources.num_workers": 2})  # two workers of one trial share the host
    assert fit_limit(two, 10)[0] == pytest.approx(HOST_MARGIN * 10 / 2)


def test_sample_space_draws_each_distribution_within_its_bounds_reproducibly(tiny_t5, seed_data):
    cfg = gpu_cfg(tiny_t5, seed_data)
    draws = sample_space(cfg, 200, seed=1)
    assert draws == sample_space(cfg, 200, seed=1) and draws != sample_space(cfg, 200, seed=2)
    assert {d["lora.r"] for d in draws} == {4, 64} and {d["training.batch_size"] for d in draws} == {1, 16, 32}
    assert {d["training.gradient_accumulation_steps"] for d in draws} == {1, 2, 3, 4}  # randint: inclusive high
    lrs = [d["training.learning_rate"] for d in draws]
    assert 1e-4 <= min(lrs) < 3e-4 and 3e-3 < max(lrs) <= 1e-2


def test_space_warning_only_when_most_samples_cannot_fit(tiny_t5, seed_data):
    cfg = gpu_cfg(tiny_t5, seed_data)
    planner = TrialPlanner(model_shape(cfg), 64, 1)
    # batch 32 (a third of the samples) cannot fit 24 GiB: not most of the space
    assert space_warning(cfg, planner) is None
    # on a 12 GiB GPU batch 16 cannot fit either: two thirds of the space
    small_gpu = cfg.with_params({"resources.gpu_memory_gb": 12})
    warning = space_warning(small_gpu, planner)
    n = sum(1 for p in sample_space(small_gpu, SAMPLES, 3) if p["training.batch_size"] > 1)
    assert n > SAMPLES / 2
    assert warning.startswith(f"Warning: {n} of {SAMPLES} configurations sampled from search.space will not fit")
    assert "needs 42.1 GiB, 12 GiB available (one 12 GiB GPU, resources.gpu_memory_gb)" in warning


def test_validate_warns_and_exits_0_when_most_of_the_space_cannot_fit(tmp_path, tiny_t5):
    from orchestrator.cli import cli

    def validate(gpu_gb):
        cfg = write_config(
            tmp_path / f"v{gpu_gb}.yaml",
            tiny_t5,
            tmp_path / "runs",
            data={"max_input_length": 4096, "max_target_length": 16},
            training={"gradient_checkpointing": False},
            resources={"gpus_per_worker": "auto", "gpu_memory_gb": gpu_gb},
            search={"space": {"training.batch_size": {"type": "choice", "values": [1, 16, 32]}}},
        )
        return CliRunner().invoke(cli, ["validate", str(cfg)], catch_exceptions=False)

    warned = validate(12)
    assert warned.exit_code == 0 and "Config is well-formed!" in warned.output
    assert "configurations sampled from search.space will not fit and would be skipped" in warned.output
    fine = validate(48)
    assert fine.exit_code == 0 and "will not fit" not in fine.output
    assert not (tmp_path / "runs").exists()


def test_train_of_a_configuration_that_cannot_fit_exits_2_before_anything_starts(tmp_path, tiny_t5):
    from orchestrator.cli import cli

    cfg = write_config(
        tmp_path / "big.yaml",
        tiny_t5,
        tmp_path / "runs",
        data={"max_input_length": 4096, "max_target_length": 16},
        training={"gradient_checkpointing": False, "batch_size": 32},
        resources={"gpus_per_worker": 1, "gpu_memory_gb": 24},
    )
    res = CliRunner().invoke(cli, ["train", str(cfg)])
    assert res.exit_code == 2, res.output
    assert "This trial will not fit: it needs " in res.output and "24 GiB available" in res.output
    assert "Lower training.batch_size" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "runs").exists()
    # the same configuration at batch 1 fits, and gets past the check (to the GPU check of this CPU machine)
    ok = CliRunner().invoke(cli, ["train", str(cfg), "--set", "training.batch_size=1"])
    assert "will not fit" not in ok.output
