"""GPT-2 keeps its projections in transformers' Conv1D: `target_modules: [c_attn]` passes the preflight,
bitsandbytes quantizes them to 4-bit NF4 (as transposed Linear4bit layers) and a LoRA step trains."""

from __future__ import annotations

import pytest

from orchestrator.core.config_load import validate_dict


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory, seed_data):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from jobs.tiny_models import _texts, build_tokenizer

    tok = build_tokenizer(_texts([str(seed_data / "train.jsonl")]), add_bos=True)
    torch.manual_seed(0)
    conf = GPT2Config(
        vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=256,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("model") / "tiny-gpt2"
    GPT2LMHeadModel(conf).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def gpt2_cfg(model, seed_data, targets):
    return validate_dict(
        {
            "model": {"name_or_path": str(model), "task": "causal_lm"},
            "data": {"train": str(seed_data / "train.jsonl"), "input_column": "article", "target_column": "summary"},
            "quantization": {"compute_dtype": "float32"},
            "lora": {"target_modules": targets, "dropout": 0.0},
        }
    )


def test_conv1d_targets_pass_the_preflight(tiny_gpt2, seed_data):
    from orchestrator.launch.preflight import check_model_against_config

    assert check_model_against_config(gpt2_cfg(tiny_gpt2, seed_data, ["c_attn", "c_proj"])) == []
    (problem,) = check_model_against_config(gpt2_cfg(tiny_gpt2, seed_data, ["c_atn"]))
    assert "Did you mean 'c_attn'" in problem and "c_fc" in problem


def test_a_4bit_gpt2_trains_a_lora_step_on_c_attn(tiny_gpt2, seed_data):
    import bitsandbytes as bnb
    import torch

    from jobs.data import build_collator, load_splits, tokenize
    from jobs.modeling import linear_module_names, load_base, load_tokenizer, load_trainable

    cfg = gpt2_cfg(tiny_gpt2, seed_data, ["c_attn"])
    model = load_trainable(cfg)
    layer = model.base_model.model.transformer.h[0].attn.c_attn
    assert isinstance(layer.base_layer, bnb.nn.Linear4bit) and layer.base_layer.weight.quant_type == "nf4"
    assert "c_attn" in linear_module_names(model)
    tok = load_tokenizer(cfg)
    ds = tokenize(load_splits(cfg.data)["train"], tok, cfg)
    batch = build_collator(tok)([ds[i] for i in range(4)])
    b0 = layer.lora_B["default"].weight.detach().clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(**batch).loss
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(b0, layer.lora_B["default"].weight)
    # quantized as a transposed Linear: the 4-bit base computes what the fp32 one does, up to NF4 error
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        q = load_base(cfg, quantized=True).eval()(**inputs).logits
        full = load_base(cfg, quantized=False).eval()(**inputs).logits
    cos = torch.nn.functional.cosine_similarity(q.flatten(), full.flatten(), dim=0)
    assert cos > 0.99, cos
