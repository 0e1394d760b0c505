"""`estimate`'s weight memory against models really loaded with bitsandbytes (CPU), and a smoke run of
bench/bench_memory.py --quick."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.estimate import memory as est
from orchestrator.estimate import shapes

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def _save_llama(path: Path) -> Path:
    """A Llama-shaped model big enough that the quantized layers dominate (75 % of 33.5 M parameters)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=8000,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def _save_t5_small(path: Path) -> Path:
    """The real t5-small config (shipped), random weights: tied embeddings, `wo` kept out of 4-bit."""
    import torch
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(0)
    mc, _ = shapes.load_model_config("t5-small")
    T5ForConditionalGeneration(mc).save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=["llama", "t5-small"])
def saved_model(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    return (_save_llama if request.param == "llama" else _save_t5_small)(path)


def _load(path: Path, mode: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, BitsAndBytesConfig

    auto = AutoModelForSeq2SeqLM if AutoConfig.from_pretrained(path).is_encoder_decoder else AutoModelForCausalLM
    q = None
    if mode == "4bit":
        q = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    elif mode == "8bit":
        q = BitsAndBytesConfig(load_in_8bit=True)
    return auto.from_pretrained(path, quantization_config=q, dtype=torch.bfloat16)


def _quant_state_bytes(model) -> int:
    """What get_memory_footprint leaves out: absmax, nested absmax, offsets and lookup tables."""
    import bitsandbytes as bnb

    seen, total = set(), 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            s = m.weight.quant_state
            parts = [s.absmax, s.code] + ([s.offset, s.state2.absmax, s.state2.code] if s.nested else [])
            for t in parts:
                if t.data_ptr() not in seen:
                    seen.add(t.data_ptr())
                    total += t.numel() * t.element_size()
    return total


def test_4bit_weight_estimate_matches_measured_memory(saved_model):
    mc, src = shapes.load_model_config(str(saved_model))
    shape = shapes.inspect_model(mc, None, saved_model.name, src)
    model = _load(saved_model, "4bit")
    import bitsandbytes as bnb

    quantized = sorted(n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit))
    assert quantized == sorted(shape.quantized)  # the same modules as transformers converts
    measured = model.get_memory_footprint()
    estimate = est.weight_bytes(shape, "nf4", other_dtype_bytes=2, double_quant=True)
    print(
        f"{saved_model.name}: 4-bit estimate {estimate:,} B, footprint {measured:,} B "
        f"({estimate / measured - 1:+.2%}); with quant state {measured + _quant_state_bytes(model):,} B"
    )
    assert abs(estimate / measured - 1) <= 0.15
    # the footprint does not count the quantization constants; with them the estimate is within 1 %
    assert abs(estimate / (measured + _quant_state_bytes(model)) - 1) <= 0.01


def test_8bit_and_16bit_weight_estimates_match(saved_model):
    import bitsandbytes as bnb

    mc, src = shapes.load_model_config(str(saved_model))
    shape = shapes.inspect_model(mc, None, saved_model.name, src)
    m16 = _load(saved_model, "16bit")
    assert est.weight_bytes(shape, "16bit") == m16.get_memory_footprint()
    m8 = _load(saved_model, "8bit")
    scales = sum(
        m.weight.SCB.numel() * m.weight.SCB.element_size()
        for m in m8.modules()
        if isinstance(m, bnb.nn.Linear8bitLt) and getattr(m.weight, "SCB", None) is not None
    )
    measured = m8.get_memory_footprint() + scales
    assert abs(est.weight_bytes(shape, "int8") / measured - 1) <= 0.01


def test_bench_memory_quick_smoke(tmp_path):
    out = tmp_path / "memory.json"
    cmd = [sys.executable, "bench/bench_memory.py", "--quick", "--json-out", str(out), "--cache", str(tmp_path / "m")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = {(r["model"], r["variant"]): r for r in data["results"]}
    assert {v for _, v in rows} >= {"qlora_4bit", "lora_16bit", "full_16bit"}
    assert set(data["ratios"]) == {m for m, _ in rows} == {"t5-tiny", "llama-tiny"}  # both tasks, both ratios
    for r in rows.values():
        assert r["ok"], r
        assert r["weights_bytes"] > 0 and r["peak_rss_bytes"] > 0 and r["losses"]
