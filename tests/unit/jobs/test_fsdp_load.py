"""FSDP without a full base per rank (jobs/fsdp_load.py), the FSDP layer preflight, and what ranks_in_sync
compares under FSDP (jobs/fsdp.py replicated_digest). The two-rank run itself is tests/integration/jobs/test_fsdp.py."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.conftest import write_config
from tests.helpers.configs import seed_config


def fsdp_cfg(model, seed_data, **sections):
    return seed_config(
        model,
        seed_data,
        task="causal_lm",
        lora={"target_modules": "all-linear", "r": 4, "dropout": 0.0},
        resources={"num_workers": 2, "strategy": "fsdp"},
        **sections,
    )


@pytest.fixture(scope="module")
def rank0_base(tiny_llama, seed_data):
    """What rank 0 loads: the whole 4-bit base (NF4 in the compute dtype, double quant) on the CPU."""
    from jobs.modeling import load_base

    cfg = fsdp_cfg(tiny_llama, seed_data)
    return cfg, load_base(cfg, quantized=True, device_map={"": "cpu"})


def test_other_ranks_build_the_4bit_base_on_meta_shaped_like_rank_0s(rank0_base):
    from bitsandbytes.nn import Params4bit
    from peft import get_peft_model

    from jobs.fsdp_load import build_skeleton, skeleton_spec
    from jobs.modeling import lora_config

    cfg, base = rank0_base
    spec = skeleton_spec(base)
    assert spec["quant"], "the 4-bit layers' quant states travel with the spec"
    meta = build_skeleton(cfg, spec)
    real = dict(base.named_parameters())
    params = dict(meta.named_parameters())
    assert sorted(params) == sorted(real)
    assert all(p.is_meta for p in params.values())  # no memory: nothing read, nothing materialized
    for name, p in params.items():
        assert (p.shape, p.dtype, type(p)) == (real[name].shape, real[name].dtype, type(real[name])), name
    q = meta.get_submodule("model.layers.0.self_attn.q_proj")
    assert isinstance(q.weight, Params4bit) and q.weight.quant_state is spec["quant"]["model.layers.0.self_attn.q_proj"]
    assert q.quant_state.absmax.equal(base.get_submodule("model.layers.0.self_attn.q_proj").weight.quant_state.absmax)
    # peft adapts the meta copy exactly as it adapts rank 0's model (same LoRA names and shapes)
    lora_meta = {n: p.shape for n, p in get_peft_model(meta, lora_config(cfg)).named_parameters() if p.requires_grad}
    assert lora_meta and all("lora_" in n for n in lora_meta)


def test_a_copy_differing_from_rank_0s_is_refused(rank0_base):
    from jobs.fsdp_load import build_skeleton, skeleton_spec

    cfg, base = rank0_base
    spec = skeleton_spec(base)
    name = "model.embed_tokens.weight"
    shape, dtype, grad = spec["params"][name]
    spec["params"][name] = ((shape[0] + 1, shape[1]), dtype, grad)
    with pytest.raises(RuntimeError, match=r"differs from rank 0's.*embed_tokens"):
        build_skeleton(cfg, spec)


def test_the_fsdp_sync_check_compares_buffers_and_quant_states_not_weights(tiny_llama, seed_data, rank0_base):
    import torch

    from jobs.fsdp import replicated_digest
    from jobs.modeling import load_base

    cfg, base = rank0_base
    other = load_base(cfg, quantized=True, device_map={"": "cpu"})
    assert replicated_digest(other) == replicated_digest(base)  # the same load: in sync
    with torch.no_grad():
        other.model.norm.weight.add_(1.0)  # a (sharded) weight: its shards differ across ranks by design
    assert replicated_digest(other) == replicated_digest(base)
    qs = other.get_submodule("model.layers.1.mlp.down_proj").weight.quant_state
    qs.state2.absmax[0] += 1.0  # one rank's 4-bit statistics went wrong: it would dequantize other weights
    assert replicated_digest(other) != replicated_digest(base)
    qs.state2.absmax[0] -= 1.0
    other.model.rotary_emb.inv_freq[0] += 1.0  # a rank left with garbage buffers
    assert replicated_digest(other) != replicated_digest(base)


@pytest.fixture(scope="module")
def tiny_openai_gpt(tmp_path_factory):
    """A model class without `_no_split_modules` (transformers' OpenAIGPTLMHeadModel): its config only."""
    out = tmp_path_factory.mktemp("model") / "tiny-openai-gpt"
    out.mkdir()
    conf = {"model_type": "openai-gpt", "vocab_size": 64, "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 32}
    (out / "config.json").write_text(json.dumps(conf))
    return out


def test_fsdp_on_a_model_without_decoder_layer_classes_is_refused(tiny_openai_gpt, tiny_llama, seed_data):
    from orchestrator.launch.preflight import check_model_against_config

    (problem,) = check_model_against_config(fsdp_cfg(tiny_openai_gpt, seed_data))
    assert "resources.strategy" in problem and "OpenAIGPTLMHeadModel" in problem
    assert "_no_split_modules" in problem and "resources.strategy: ddp" in problem
    ddp = seed_config(tiny_openai_gpt, seed_data, task="causal_lm", resources={"num_workers": 2})
    assert check_model_against_config(ddp) == []
    assert check_model_against_config(fsdp_cfg(tiny_llama, seed_data)) == []  # LlamaDecoderLayer


def test_train_with_fsdp_on_such_a_model_exits_2_before_anything_starts(tmp_path, tiny_openai_gpt, seed_data):
    from orchestrator.cli import cli

    cfg = write_config(
        tmp_path / "c.yaml",
        tiny_openai_gpt,
        tmp_path / "runs",
        model={"task": "causal_lm"},
        lora={"target_modules": "all-linear"},
        data={"prompt_template": "Summarize: {input}\nSummary: ", "test": None},
        resources={"num_workers": 2, "strategy": "fsdp"},
        tracking={"wandb": False},
    )
    result = CliRunner().invoke(cli, ["train", str(cfg)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "OpenAIGPTLMHeadModel" in result.output and "resources.strategy: ddp" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()
