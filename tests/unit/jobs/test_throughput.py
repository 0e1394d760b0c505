"""Tokens/s and MFU per trial (jobs/throughput.py): the counting, the formula against hand-computed values,
and the meter on the real build path (load_trainable + build_trainer + the HF Trainer), on CPU, no Ray."""

from __future__ import annotations

import pytest

from jobs.throughput import flops_per_token, mfu, peak_tflops, real_tokens, resolve_compile, resolve_kernels
from tests.helpers.configs import seed_config


def cfg_for(model, seed_data, training=None, data=None, **sections):
    return seed_config(
        model,
        seed_data,
        "causal_lm",
        data=data or {},
        quantization={"compute_dtype": "float32"},
        lora={"target_modules": "all-linear", "r": 4, "alpha": 8},
        # 10 training examples, 5 a batch, 2 steps: one epoch, every example trained on exactly once
        training={"max_steps": 2, "batch_size": 5, "gradient_checkpointing": False, **(training or {})},
        **sections,
    )


def test_flops_per_token_and_mfu_by_hand():
    # frozen base: forward 2N + activation gradients 2N + LoRA weight gradients 2 N_lora
    assert flops_per_token(1_000, 10, checkpointing=False) == 4_000 + 20
    # + the recomputed forward 2N
    assert flops_per_token(1_000, 10, checkpointing=True) == 6_000 + 20
    # Llama-3.1-8B-shaped QLoRA r=16 all-linear: N = 8.03e9 - 128256 * 4096 = 7,504,924,672 matmul params,
    # 41,943,040 LoRA params; 2,413 tokens/s on one H100 SXM (989.4 TFLOP/s) with checkpointing
    f = flops_per_token(7_504_924_672, 41_943_040, checkpointing=True)
    assert f == 45_113_434_112
    assert mfu(2_413.0, f, 989.4, 1) == pytest.approx(2_413 * 45_113_434_112 / 989.4e12)
    assert round(mfu(2_413.0, f, 989.4, 1), 4) == 0.11
    assert mfu(2_413.0, f, 989.4, 2) == pytest.approx(0.055, abs=1e-4)  # two devices, twice the peak
    assert mfu(2_413.0, f, None, 1) is None  # no peak figure: no MFU, none invented


@pytest.mark.parametrize(
    "name,expected",
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.4),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 366.5),
        ("NVIDIA L4", 121.0),
        ("NVIDIA A10G", 70.0),
        ("NVIDIA GeForce RTX 4090", 165.2),
        ("Some Future GPU", None),
        (None, None),  # CPU
    ],
)
def test_peak_by_gpu_name(name, expected):
    assert peak_tflops(name) == expected
    assert peak_tflops(name, configured=100.0) == 100.0  # resources.peak_tflops wins


def test_real_tokens_of_padded_packed_and_seq2seq_batches():
    import torch

    padded = {
        "input_ids": torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]]),
        "attention_mask": torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]),
        "labels": torch.tensor([[-100, -100, 5, 6], [-100, 8, 9, 10]]),
    }
    assert real_tokens(padded) == 6
    packed = {
        "input_ids": torch.ones(1, 9, dtype=torch.long),
        "position_ids": torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]]),
    }
    assert real_tokens(packed) == 9  # one padding-free row
    seq2seq = {
        "input_ids": torch.tensor([[4, 5, 0]]),
        "attention_mask": torch.tensor([[1, 1, 0]]),
        "labels": torch.tensor([[6, 7, 8, -100]]),
        "decoder_input_ids": torch.tensor([[0, 6, 7, 8]]),
    }
    assert real_tokens(seq2seq) == 2 + 3  # encoder tokens + decoder tokens


def test_kernels_and_compile_choices():
    assert resolve_kernels("auto", cuda=False, model_type="llama")[0] == "none"
    assert "CUDA" in resolve_kernels("auto", cuda=False, model_type="llama")[1]
    assert resolve_kernels("none", cuda=True, model_type="llama") == ("none", None)
    assert resolve_kernels("liger", cuda=True, model_type="llama") == ("liger", None)
    assert resolve_compile("auto") is False and resolve_compile(True) is True and resolve_compile(False) is False


def test_liger_on_cpu_workers_is_refused_and_the_fields_reach_training_arguments(tiny_llama, seed_data, tmp_path):
    from orchestrator.core.errors import UserError

    with pytest.raises(UserError, match=r"training.kernels liger .*gpus_per_worker is 0"):
        cfg_for(tiny_llama, seed_data, training={"kernels": "liger"})
    with pytest.raises(UserError, match="torch_compile"):
        cfg_for(tiny_llama, seed_data, training={"torch_compile": "sometimes"})
    assert cfg_for(tiny_llama, seed_data, training={"kernels": "liger"}, resources={"gpus_per_worker": 1})
    from jobs.train_loop import training_arguments

    args = training_arguments(cfg_for(tiny_llama, seed_data, training={"torch_compile": True}), str(tmp_path), False)
    assert args.torch_compile is True and args.use_liger_kernel is False  # auto on CPU: none
    args = training_arguments(cfg_for(tiny_llama, seed_data), str(tmp_path), False)
    assert args.torch_compile is False  # auto: off


def _expected_matmul_params(cfg, peft_model) -> int:
    """N by hand: the 16/32-bit base's parameters, minus the untied input embedding, plus the adapter's."""
    from jobs.modeling import load_base

    base = load_base(cfg, quantized=False)
    total = sum(p.numel() for p in base.parameters())
    emb, head = base.get_input_embeddings().weight, base.get_output_embeddings().weight
    tied = emb.data_ptr() == head.data_ptr()
    trainable, _ = peft_model.get_nb_trainable_parameters()
    return total - (0 if tied else emb.numel()) + trainable


@pytest.mark.parametrize("packing", [False, True])
def test_a_trial_counts_every_real_token_once_and_divides_by_its_step_time(tiny_llama, seed_data, tmp_path, packing):
    from jobs.data import load_splits, tokenize
    from jobs.modeling import load_tokenizer, load_trainable
    from jobs.throughput import matmul_params
    from jobs.train_loop import build_trainer

    cfg = cfg_for(tiny_llama, seed_data, data={"packing": packing}, resources={"peak_tflops": 2.5})
    tok = load_tokenizer(cfg)
    data = {k: tokenize(v, tok, cfg) for k, v in load_splits(cfg.data).items()}
    expected_tokens = sum(len(ids) for ids in data["train"]["input_ids"])  # one epoch, no padding
    model = load_trainable(cfg)
    assert matmul_params(model) == _expected_matmul_params(cfg, model)
    trainer = build_trainer(cfg, model, tok, data, {}, str(tmp_path / "out"))
    report = next(c for c in trainer.callback_handler.callbacks if hasattr(c, "extra"))
    trainer.remove_callback(report)  # it reports to Ray Train, which is not running here
    meter = report.meter
    trainer.train()
    assert meter.tokens == expected_tokens
    assert meter.seconds > 0
    fields = meter.fields()
    assert fields["train_tokens"] == expected_tokens
    assert fields["tokens_per_s"] == pytest.approx(expected_tokens / meter.seconds)
    assert fields["kernels"] == "none" and fields["torch_compile"] is False
    trainable, _ = model.get_nb_trainable_parameters()
    flops = 4 * matmul_params(model) + 2 * trainable  # checkpointing off
    assert fields["mfu"] == pytest.approx(fields["tokens_per_s"] * flops / 2.5e12)
    no_peak = cfg_for(tiny_llama, seed_data, data={"packing": packing})
    from jobs.throughput import ThroughputMeter

    assert ThroughputMeter(no_peak, model, "none", False).peak is None  # CPU without resources.peak_tflops


def test_the_summary_table_shows_tokens_per_s_and_mfu(tmp_path, capsys, monkeypatch):
    import json

    from orchestrator.observe.summary import print_summary
    from tests.unit.observe.test_report import make_run

    run = make_run(tmp_path)
    res = json.loads((run / "results.json").read_text())
    for i, row in enumerate(res["trials"]):
        row.update(train_tokens=1000 * (i + 1), train_time_s=2.0, tokens_per_s=500.0 * (i + 1), mfu=0.0123)
        row.update(kernels="liger", torch_compile=False)
    (run / "results.json").write_text(json.dumps(res))
    monkeypatch.setenv("COLUMNS", "300")
    print_summary(run)
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "trial " in line and "status" in line)
    assert "tok/s" in header and "mfu" in header and "learning_rate" in header
    assert "train_tokens" not in header and "train_time_s" not in header  # in trials.csv, not the table
    assert "kernels" not in header and "Every trial: kernels liger, torch_compile False" in out  # the same for all
    assert "0.0123" in out
