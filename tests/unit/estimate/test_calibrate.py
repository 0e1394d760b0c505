"""`estimate --calibrate RUN_DIR`: the estimate against a past GPU run's measured peaks, and the margin
`gpus_per_worker: auto` then asks with (resources.memory_margin)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from jobs.wont_fit import measured_fields
from orchestrator.cli import cli
from orchestrator.estimate.calibrate import suggest_margin
from orchestrator.estimate.trial_plan import TrialPlanner, model_shape
from tests.helpers.configs import tiny_t5_config


def gpu_run(tmp_path, trials):
    """A run folder as collect_results writes it for GPU trials (this machine has no GPU to make one)."""
    run = tmp_path / "runs" / "gpu"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"experiment": "gpu", "trials": trials}))
    (run / "config.json").write_text(json.dumps({"resources": {"memory_margin": 1.2}}))
    return run


def test_the_measured_peak_is_the_largest_gpu_peak_of_the_trials_reports():
    history = [{"step": 5, "peak_gpu_mem_mb": 1536.0}, {"step": 10, "peak_gpu_mem_mb": 2048.0}, {"step": 15}]
    assert measured_fields(history) == {"measured_peak_gb": 2.0}
    assert measured_fields([{"step": 5, "peak_rss_mb": 900.0}]) == {}  # CPU: RSS is not what is estimated


def test_calibrate_lists_each_trial_and_suggests_the_margin_that_covers_the_worst(tmp_path):
    run = gpu_run(
        tmp_path,
        [
            {"trial_id": "a_00000", "estimated_peak_gb": 2.0, "measured_peak_gb": 1.2, "status": "COMPLETED"},
            {"trial_id": "a_00001", "estimated_peak_gb": 10.0, "measured_peak_gb": 8.0, "status": "COMPLETED"},
            {"trial_id": "a_00002", "estimated_peak_gb": 40.0, "status": "SKIPPED_WONT_FIT"},  # never ran
        ],
    )
    res = CliRunner().invoke(cli, ["estimate", "--calibrate", str(run)])
    assert res.exit_code == 0, res.output
    assert "a_00000" in res.output and "a_00001" in res.output and "a_00002" not in res.output
    # torch's allocated peak + the 1 GiB CUDA context the estimate counts: 2.2 / 2 = 1.1 and 9 / 10 = 0.9;
    # 1.1 x 1.10 headroom = 1.21, rounded up to 0.05: 1.25
    assert "Measured/estimated: 0.900 to 1.100 over 2 trial(s)" in res.output
    assert "Suggested resources.memory_margin: 1.25 (this run used 1.20)" in res.output
    data = json.loads(CliRunner().invoke(cli, ["estimate", "--calibrate", str(run), "--json"]).output)
    assert data["suggested_memory_margin"] == 1.25 and [t["ratio"] for t in data["trials"]] == [1.1, 0.9]
    assert suggest_margin([0.5]) == 1.05  # an estimate that overshoots still keeps a little headroom


def test_calibrate_refuses_a_run_without_gpu_measurements_or_a_folder_that_is_no_run(tmp_path):
    cpu = gpu_run(tmp_path, [{"trial_id": "c_00000", "estimated_peak_gb": 0.5, "status": "COMPLETED"}])
    res = CliRunner().invoke(cli, ["estimate", "--calibrate", str(cpu)])
    assert res.exit_code == 2 and "no trial with both an estimated and a measured GPU peak" in res.output
    assert "Calibrate from a run on GPUs" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["estimate", "--calibrate", str(tmp_path)])
    assert res.exit_code == 2 and "is not a finished run folder (no results.json)" in res.output


def test_gpus_per_worker_auto_asks_for_the_estimate_times_the_margin(tiny_t5, seed_data):
    def share(margin):
        cfg = tiny_t5_config(
            tiny_t5,
            seed_data,
            data={"max_input_length": 4096, "max_target_length": 16},
            training={"gradient_checkpointing": False, "batch_size": 4},
            resources={"gpus_per_worker": "auto", "gpu_memory_gb": 24, "memory_margin": margin},
        )
        plan = TrialPlanner(model_shape(cfg), host_gib=64, concurrent=1)(cfg)
        return plan["params"]["resources.gpus_per_worker"], plan["record"]["estimated_peak_gb"]

    (low, peak), (high, _) = share(1.0), share(3.0)
    # the share is peak x margin / 24 GiB, rounded up to an eighth
    import math

    assert low == max(1, math.ceil(peak / 24 * 8 - 1e-9)) / 8
    assert high == min(1.0, max(1, math.ceil(peak * 3.0 / 24 * 8 - 1e-9)) / 8) and high > low
