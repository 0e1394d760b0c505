"""Merge fidelity on the tiny T5 (real 4-bit NF4 on CPU, no Ray): the merged model against the trained one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.core.config_load import validate_dict
from tests.helpers.configs import tiny_t5_config


def cfg_for(model: Path, seed_data: Path, **merge):
    return tiny_t5_config(
        model,
        seed_data,
        data={"max_input_length": 64, "max_target_length": 16},
        lora={"r": 4, "target_modules": ["q", "v"]},
        training={"generation_max_length": 8},
        merge={"dtype": "float32", **merge},
    )


@pytest.fixture(scope="module")
def adapter(tiny_t5, seed_data, tmp_path_factory) -> Path:
    """A LoRA adapter on the 4-bit base with random (non-zero) B matrices: a real change to the model."""
    import torch

    from jobs.modeling import load_trainable

    model = load_trainable(cfg_for(tiny_t5, seed_data))
    gen = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=gen) * 0.3
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return out


def held_out(seed_data: Path):
    rows = [json.loads(x) for x in (seed_data / "test.jsonl").read_text().splitlines() if x.strip()]
    return [r["article"] for r in rows], [r["summary"] for r in rows]


def test_dequantized_merge_gives_the_trained_models_outputs_and_original_does_not(
    tiny_t5, seed_data, adapter, tmp_path
):
    from jobs.merge import merge_and_check

    inputs, targets = held_out(seed_data)
    figures = {}
    for into in ("original", "dequantized"):
        check, _ = merge_and_check(cfg_for(tiny_t5, seed_data, into=into), adapter, tmp_path / into, inputs, targets)
        assert check["passed"] is True  # both are base + adapter: peft's arithmetic holds either way
        figures[into] = check["fidelity"]
    deq, orig = figures["dequantized"], figures["original"]
    assert deq["into"] == "dequantized" and deq["positions"] == orig["positions"] > 0
    assert deq["trained_eval_loss"] == pytest.approx(orig["trained_eval_loss"])  # the same trained model
    print(figures)
    # not zero: the 4-bit layers' CPU kernels round differently from a float32 matmul on the same weights
    assert deq["kl_mean"] < 2e-3 and abs(deq["eval_loss_delta"]) < 0.05 and deq["passed"] is True
    assert orig["kl_mean"] > 10 * deq["kl_mean"]  # the original weights are not what was trained on
    assert deq["eval_loss_delta"] == pytest.approx(deq["merged_eval_loss"] - deq["trained_eval_loss"])
    # the dequantized merge is saved as a plain model in the merge dtype, without a quantization config
    saved = json.loads((tmp_path / "dequantized" / "config.json").read_text())
    assert "quantization_config" not in saved and saved.get("dtype", saved.get("torch_dtype")) == "float32"


def test_a_merge_that_loses_quality_fails_fidelity_with_its_figures(tiny_t5, seed_data, adapter, tmp_path):
    """verify_merge (publish's re-check) on a merged folder whose weights were damaged: the loss rises
    past merge.max_metric_drop, and the figures say by how much."""
    import torch
    from safetensors.torch import load_file, save_file

    from jobs.merge import merge_and_check, verify_merge

    inputs, targets = held_out(seed_data)
    cfg = cfg_for(tiny_t5, seed_data, max_metric_drop=0.05)
    merge_and_check(cfg, adapter, tmp_path / "merged", inputs, targets)
    ok = verify_merge(cfg, adapter, tmp_path / "merged", inputs, targets)
    assert ok["passed"] is True and ok["fidelity"]["passed"] is True
    weights = tmp_path / "merged" / "model.safetensors"
    tensors = load_file(weights)
    gen = torch.Generator().manual_seed(1)
    for k in tensors:
        if k.endswith(("q.weight", "v.weight", "o.weight")):
            tensors[k] = tensors[k] + torch.randn(tensors[k].shape, generator=gen) * 2.0
    save_file(tensors, weights, metadata={"format": "pt"})
    bad = verify_merge(cfg, adapter, tmp_path / "merged", inputs, targets)
    f = bad["fidelity"]
    assert bad["passed"] is False and f["passed"] is False
    assert f["metric_drop"] > 0.05 and f["kl_mean"] > 0.1
    assert f["trained_eval_loss"] == pytest.approx(ok["fidelity"]["trained_eval_loss"])


def test_the_causal_verification_batch_labels_the_target_tokens_only(tiny_llama, seed_data):
    """Fidelity's loss is on what the model was trained to write: the prompt (as rendered for training,
    left-padded) and the padding carry no label, and the labelled tokens decode to the target."""
    from jobs.formats import prompts_and_targets
    from jobs.merge import verification_batch
    from jobs.modeling import load_tokenizer

    cfg = validate_dict(
        {
            "model": {"name_or_path": str(tiny_llama), "task": "causal_lm"},
            "data": {
                "train": str(seed_data / "train.jsonl"),
                "input_column": "article",
                "target_column": "summary",
                "prompt_template": "Summarize: {input}\nSummary: ",
                "max_input_length": 48,
            },
        }
    )
    tok = load_tokenizer(cfg)
    rows = [{"article": "a short one", "summary": "short"}, {"article": "a much longer article " * 4, "summary": "x y"}]
    prompts, targets = prompts_and_targets(cfg, tok, rows)
    batch = verification_batch(cfg, tok, prompts, targets)
    for i, target in enumerate(targets):
        labelled = batch["labels"][i][batch["labels"][i] != -100]
        assert tok.decode(labelled, skip_special_tokens=True).strip() == target
