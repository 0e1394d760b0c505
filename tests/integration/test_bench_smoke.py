"""Smoke runs of the speed and search benchmarks (bench/bench_seed_recipe.py, bench_overhead.py,
bench_search.py) with --quick: tiny models, a few steps. They check that each script runs end to end on
the product's real path and that its figures hang together, not the figures themselves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _quick(script: str, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "figures.json"
    p = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--quick", "--json-out", str(out), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, f"{script} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return json.loads(out.read_text())


def test_seed_recipe_quick(tmp_path):
    data = _quick("bench_seed_recipe.py", tmp_path)
    runs = {r["variant"]: r for r in data["runs"]}
    ours, seed = runs["ours"], runs["seed"]
    # Both recipes trained on the same real tokens; only the padding differs.
    assert ours["tokens_real"] == seed["tokens_real"] > 0
    assert seed["tokens_all"] == seed["train_examples"] * data["epochs"] * (512 + 128)
    assert ours["padding_share"] < 0.5 < seed["padding_share"]
    assert (seed["batch_size"], seed["learning_rate"], ours["batch_size"]) == (20, 2e-5, 8)
    assert ours["gradient_checkpointing"] and not seed["gradient_checkpointing"]
    assert data["summary"]["wall_ratio_ours_over_seed"] > 0


def test_overhead_quick(tmp_path):
    data = _quick("bench_overhead.py", tmp_path, "--work-dir", str(tmp_path / "work"))
    bare, ray = data["runs"]
    assert (bare["side"], ray["side"]) == ("bare", "ray")
    # The same run on both sides: every checkpoint reported, up to the last step.
    assert bare["steps"] == ray["steps"] == data["steps"]
    assert bare["reports"] == ray["reports"] == data["steps"] // data["eval_steps"]
    # The start-up estimate (extrapolated from the checkpoints) agrees with the bare side's exact one.
    assert abs(bare["startup_s"] - bare["exact_startup_s"]) < max(3.0, 0.3 * bare["exact_startup_s"])
    assert ray["startup_parts_s"]["ray_init"] > 0
    assert data["summary"]["step_ratio"] > 0


def test_search_quick(tmp_path):
    data = _quick("bench_search.py", tmp_path, "--work-dir", str(tmp_path / "work"))
    fifo, asha = data["searches"]
    assert (fifo["search"], asha["search"]) == ("fifo", "asha")
    assert fifo["exit_code"] == asha["exit_code"] == 0
    assert asha["same_samples_as_fifo"]
    # FIFO runs every trial to the end; ASHA never spends more.
    assert fifo["trial_steps"] == fifo["planned_steps"] == fifo["completed"] * 10
    assert asha["trial_steps"] <= fifo["trial_steps"]
    assert fifo["best_eval_loss"] is not None and asha["best_eval_loss"] is not None


def test_gpu_throughput_cpu_smoke(tmp_path):
    """scripts/gpu_throughput.py --cpu-smoke: the same code as the GPU run, on a tiny Llama."""
    p = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "gpu_throughput.py"),
            "--cpu-smoke",
            "--out",
            str(tmp_path),
            "--variants",
            "hf_peft,ours_packing,ours_packing_liger,ours_fsdp",
            "--fsdp-ranks",
            "2",
        ],  # fmt: skip
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    data = json.loads((tmp_path / "throughput.json").read_text())
    runs = {r["variant"]: r for r in data["runs"]}
    plain, packed = runs["hf_peft"], runs["ours_packing"]
    # the same documents, the same real tokens; packing computes no padding, the padded batches do
    assert plain["tokens_measured"] == packed["tokens_measured"] > 0
    assert plain["padded_tokens_per_step"] > plain["tokens_per_step"]
    assert packed["packing"] is True and plain["packing"] is False
    assert plain["tokens_per_s"] > 0 and packed["tokens_per_s"] > 0 and plain["mfu"] is None  # CPU: no MFU
    assert "needs CUDA" in runs["ours_packing_liger"]["skipped"]
    # FSDP over two gloo ranks (torchrun): each rank trains its own documents, the tokens are summed
    fsdp = runs["ours_fsdp"]
    assert "skipped" not in fsdp, fsdp
    assert fsdp["ranks"] == 2 and fsdp["packing"] is True and fsdp["tokens_measured"] > plain["tokens_measured"]
    assert data["cpu_smoke"] is True and "not judged" in data["verdict"]["target"]
    assert "| hf_peft |" in (tmp_path / "throughput.md").read_text()
