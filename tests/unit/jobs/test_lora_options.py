"""LoRA variants (DoRA, rsLoRA, init) and optimizer options on the tiny 4-bit T5, on CPU, no Ray.

Each option either trains here for a few steps through the real build path (load_trainable +
training_arguments + the HF Trainer) or is refused by the config, and the refusal's reason is shown to
be what peft really does on this hardware.
"""

from __future__ import annotations

import math

import pytest

from jobs.data import build_collator, load_splits, tokenize
from orchestrator.core.errors import UserError
from tests.helpers.configs import tiny_t5_config


def cfg_for(model, seed_data, lora=None, training=None, **sections):
    return tiny_t5_config(
        model,
        seed_data,
        lora={"target_modules": ["q", "v"], "r": 4, "alpha": 8, **(lora or {})},
        training={"max_steps": 2, "batch_size": 2, "gradient_checkpointing": False, **(training or {})},
        **sections,
    )


def q_layer(model):
    return model.base_model.model.encoder.block[0].layer[0].SelfAttention.q


def trained(cfg, tmp_path):
    """load_trainable + the HF Trainer with training_arguments, run for training.max_steps steps."""
    from transformers import Trainer

    from jobs.modeling import load_tokenizer, load_trainable
    from jobs.train_loop import training_arguments

    tok = load_tokenizer(cfg)
    splits = load_splits(cfg.data)
    data = {k: tokenize(v, tok, cfg) for k, v in splits.items()}
    model = load_trainable(cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, str(tmp_path / "out"), report_to_wandb=False),
        train_dataset=data["train"],
        eval_dataset=data["eval"],
        data_collator=build_collator(tok, model),
    )
    out = trainer.train()
    assert math.isfinite(out.training_loss)
    return model, trainer, before


def test_dora_with_paged_adamw_8bit_trains_magnitude_vectors_on_the_4bit_base(tiny_t5, seed_data, tmp_path):
    """One short trial (CPU) with both: DoRA on the NF4 base, and the QLoRA recipe's paged 8-bit AdamW,
    which bitsandbytes 0.50 runs on CPU."""
    import bitsandbytes as bnb

    training = {"optim": "paged_adamw_8bit", "learning_rate": 1e-2}
    model, trainer, before = trained(cfg_for(tiny_t5, seed_data, lora={"use_dora": True}, training=training), tmp_path)
    opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    # The Trainer maps paged_adamw_8bit to bitsandbytes' AdamW(optim_bits=8, is_paged=True). (Tensors under
    # bitsandbytes' min_8bit_size of 4096 elements, like these tiny LoRA matrices, keep 32-bit states.)
    assert isinstance(opt, bnb.optim.AdamW) and opt.is_paged and opt.args.optim_bits == 8
    assert opt.state and all(st.get("step", 0) >= 1 for st in opt.state.values())
    after = dict(model.named_parameters())
    assert all(not before[n].equal(after[n].detach()) for n in before if "lora_A" in n)

    q = q_layer(model)
    assert isinstance(q.base_layer, bnb.nn.Linear4bit)
    mags = {n for n in before if "lora_magnitude_vector" in n}
    adapted = {n for n, m in model.named_modules() if hasattr(m, "lora_magnitude_vector") and m.lora_A}
    assert len(mags) == len(adapted) == 2 * 2 + 2 * 4  # q, v: self-attention x 4 blocks, cross x 2
    assert q.lora_magnitude_vector["default"].weight.shape == (q.out_features,)
    changed = [n for n in mags if not before[n].equal(dict(model.named_parameters())[n].detach())]
    assert len(changed) == len(mags)  # every magnitude vector learned

    model.save_pretrained(tmp_path / "adapter")
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert any("lora_magnitude_vector" in k for k in saved)


def test_rslora_scales_by_alpha_over_sqrt_r(tiny_t5, seed_data):
    from jobs.modeling import load_trainable

    plain = load_trainable(cfg_for(tiny_t5, seed_data, lora={"r": 16, "alpha": 8}))
    rs = load_trainable(cfg_for(tiny_t5, seed_data, lora={"r": 16, "alpha": 8, "use_rslora": True}))
    assert q_layer(plain).scaling["default"] == 8 / 16
    assert q_layer(rs).scaling["default"] == 8 / math.sqrt(16) == 2.0


def test_gaussian_init_differs_from_the_default_and_still_starts_at_the_base(tiny_t5, seed_data):
    import torch

    from jobs.modeling import load_trainable

    default = q_layer(load_trainable(cfg_for(tiny_t5, seed_data)))
    gauss = q_layer(load_trainable(cfg_for(tiny_t5, seed_data, lora={"init": "gaussian"})))
    a_def, a_gauss = default.lora_A["default"].weight, gauss.lora_A["default"].weight
    assert not torch.allclose(a_def, a_gauss)
    r = 4
    assert abs(a_gauss.std().item() - 1 / r) < 0.05  # peft: normal(0, 1/r)
    bound = 1 / math.sqrt(a_def.shape[1])  # kaiming_uniform(a=sqrt(5)) on fan_in
    assert a_def.abs().max().item() <= bound + 1e-6 < a_gauss.abs().max().item()
    assert gauss.lora_B["default"].weight.abs().max().item() == 0.0  # the adapter starts as a no-op


def test_max_grad_norm_clips_the_update(tiny_t5, seed_data, tmp_path):
    """SGD with lr 1 for one step: the update is the clipped gradient, so its norm is <= max_grad_norm."""
    import torch

    cfg = cfg_for(
        tiny_t5,
        seed_data,
        training={
            "optim": "sgd",
            "learning_rate": 1.0,
            "max_grad_norm": 1e-3,
            "max_steps": 1,
            "lr_scheduler": "constant",
        },
    )
    model, trainer, before = trained(cfg, tmp_path)
    assert trainer.args.max_grad_norm == 1e-3
    after = dict(model.named_parameters())
    update = torch.sqrt(sum(((after[n].detach() - before[n]) ** 2).sum() for n in before))
    assert 1e-4 < update.item() <= 1e-3 * 1.001
    grad_norm = trainer.state.log_history[0]["grad_norm"]
    assert grad_norm > 1e-2  # the raw gradient was far larger: the clip did the work


def test_pissa_and_loftq_are_refused_with_the_reason(tiny_t5, seed_data):
    with pytest.raises(UserError) as e:
        cfg_for(tiny_t5, seed_data, lora={"init": "pissa"})
    assert "`lora.init`" in str(e.value) and "SVD of unquantized weights" in str(e.value)
    with pytest.raises(UserError) as e:
        cfg_for(tiny_t5, seed_data, lora={"init": "loftq"})
    assert "CUDA" in str(e.value) and "resources.gpus_per_worker" in str(e.value)
    with pytest.raises(UserError) as e:
        cfg_for(
            tiny_t5, seed_data, lora={"init": "loftq"}, quantization={"mode": "8bit"}, resources={"gpus_per_worker": 1}
        )
    assert "set it to 4bit" in str(e.value)
    ok = cfg_for(tiny_t5, seed_data, lora={"init": "loftq"}, resources={"gpus_per_worker": 1})
    assert ok.lora.init == "loftq"


def test_the_refusals_are_what_peft_does_here(tiny_t5, seed_data):
    """The reasons above, checked against peft itself: PiSSA rejects the 4-bit base; LoftQ needs CUDA."""
    import torch
    from peft import LoraConfig, get_peft_model

    from jobs.modeling import apply_loftq, load_base, load_trainable

    cfg = cfg_for(tiny_t5, seed_data)
    with pytest.raises(TypeError, match="PiSSA under float32"):
        get_peft_model(load_base(cfg, quantized=True), LoraConfig(r=4, target_modules=["q"], init_lora_weights="pissa"))
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: LoftQ would run")
    with pytest.raises((AssertionError, RuntimeError), match="CUDA"):
        apply_loftq(load_trainable(cfg), cfg)
