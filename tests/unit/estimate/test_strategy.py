"""`estimate` under resources.strategy: per-GPU memory for DDP and FSDP at 1, 2 and 4 workers, against the
formula stated in orchestrator/estimate/strategy.py (computed here by hand from the DDP figures)."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.estimate import memory as est
from orchestrator.estimate import run, shapes

GIB = 1024**3


@pytest.fixture(scope="module")
def llama_7b():
    mc, src = shapes.load_model_config("llama-2-7b")
    return shapes.inspect_model(mc, None, "llama-2-7b", src)


def _estimate(shape, strategy, n, mode="4bit", gpu_gib=24):
    cfg, _ = run.load_estimate_config(
        None,
        [
            f"resources.strategy={strategy}",
            f"resources.num_workers={n}",
            "resources.gpus_per_worker=1",
            f"quantization.mode={mode}",
            "training.gradient_checkpointing=true",
        ],
        "llama-2-7b",
    )
    return est.estimate(shape, cfg, gpu_mem_gib=gpu_gib)


@pytest.mark.parametrize("mode,key", [("4bit", "qlora"), ("none", "lora_16bit")])
@pytest.mark.parametrize("n", [1, 2, 4])
def test_fsdp_per_gpu_memory_is_the_stated_formula(llama_7b, n, mode, key):
    ddp = {v.key: v for v in _estimate(llama_7b, "ddp", n, mode).variants}
    fsdp = {v.key: v for v in _estimate(llama_7b, "fsdp", n, mode).variants}
    d, f = ddp[key], fsdp[key]
    # DDP: every worker holds a full replica, whatever N is
    assert d == {v.key: v for v in _estimate(llama_7b, "ddp", 1, mode).variants}[key]
    W, A, G, Opt, X, C = d.weights, d.adapter, d.gradients, d.optimizer, d.activations, d.overhead
    assert d.total == W + A + G + Opt + X + C and d.gathered == 0
    L = 32  # Llama-2-7B's decoder layers
    if n == 1:  # one worker shards nothing
        assert f == d
        return
    # the 4-bit constants (one 8-bit absmax per 64 weights + one fp32 per 256 absmaxes + an fp32 offset,
    # per quantized tensor) are not sharded; a 16-bit base has none
    qmods = [m for m in llama_7b.modules if m.name in set(llama_7b.quantized)]
    Q = sum(b + 4 * math.ceil(b / 256) + 4 for b in (math.ceil(m.weight_numel / 64) for m in qmods))
    Q = Q if mode == "4bit" else 0
    assert mode != "4bit" or 0.02 * W < Q < 0.04 * W
    # nor are the buffers (Llama's rotary inv_freq and original_inv_freq: 2 x 64 fp32)
    B = llama_7b.buffer_bytes
    assert B == 2 * 64 * 4
    expected = math.ceil((W - Q - B + A + G + Opt) / n) + Q + B + 2 * math.ceil(W / L) + X + C
    assert abs(f.total - expected) <= 4  # each of the four terms rounds up on its own
    assert f.activations == X and f.overhead == C  # activations are not sharded
    assert f.gathered == 2 * math.ceil(W / L)


def test_fsdp_makes_a_model_fit_that_ddp_does_not(llama_7b):
    """16-bit LoRA of Llama-2-7B (12.6 GiB of weights) with checkpointing, batch 8 x 640 tokens, on 16 GiB
    GPUs: about 17.5 GiB per GPU under DDP (does not fit), 8.6 GiB under FSDP over 4 (fits)."""
    ddp = _estimate(llama_7b, "ddp", 4, "none", gpu_gib=16)
    fsdp = _estimate(llama_7b, "fsdp", 4, "none", gpu_gib=16)
    d = next(v for v in ddp.variants if v.key == "lora_16bit")
    f = next(v for v in fsdp.variants if v.key == "lora_16bit")
    assert 17 * GIB < d.total < 18 * GIB and 8 * GIB < f.total < 9 * GIB
    assert not ddp.fits(d) and fsdp.fits(f)
    assert any("4 FSDP workers each hold 1/4" in a for a in fsdp.assumptions)
    assert not fsdp.warnings or not any("loads the whole base" in w for w in fsdp.warnings)  # 16-bit: host RAM


def test_cli_shows_the_strategy_and_that_only_rank_0_loads_the_whole_base():
    """Llama-2-70B in 4-bit (~35 GiB) over 4 x 24 GiB GPUs: only rank 0 reads the base, into host RAM, and
    each GPU receives only its shard (jobs/fsdp_load.py), so it fits; the host RAM rank 0 needs is stated."""
    args = ["estimate", "--model", "llama-2-70b", "--set", "resources.gpus_per_worker=1", "--gpu-mem-gb", "24"]
    fsdp = [*args, "--set", "resources.strategy=fsdp", "--set", "resources.num_workers=4"]
    out = CliRunner().invoke(cli, fsdp)
    assert out.exit_code == 0, out.output
    assert "FSDP over 4 worker(s)" in out.output and "FSDP gathered layers" in out.output
    assert "loads the whole base" not in out.output
    data = json.loads(CliRunner().invoke(cli, [*fsdp, "--json"]).output)
    assert data["gpu"]["strategy"] == "fsdp" and data["gpu"]["num_workers"] == 4
    (note,) = [a for a in data["assumptions"] if a.startswith("FSDP loading")]
    qlora = next(v for v in data["memory"]["variants"] if v["key"] == "qlora")
    full_gib = float(note.split("host RAM (")[1].split(" GiB")[0])
    assert 33 < full_gib < 40  # the whole 4-bit base, in rank 0's host memory
    assert qlora["weights"] < 0.3 * full_gib * GIB  # a quarter of it, plus the constants, per GPU
    assert qlora["fits"] is True, qlora
    ddp = json.loads(CliRunner().invoke(cli, [*args, "--set", "resources.num_workers=4", "--json"]).output)
    assert not any(a.startswith("FSDP loading") for a in ddp["assumptions"])
