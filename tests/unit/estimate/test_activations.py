"""The logits in the estimate: whole (b*s*V*8 bytes) or in Liger's chunks (`training.kernels: liger`), against
the chunk size Liger's fused linear cross-entropy picks (ops/fused_linear_cross_entropy.py: inc_factor =
ceil(V/H), chunk = next_power_of_2(ceil(BT/inc_factor))), and evaluation's whole logits (Liger fuses only in
training mode), computed here by hand."""

from __future__ import annotations

import pytest

from orchestrator.estimate import memory as est
from orchestrator.estimate import run, shapes
from orchestrator.estimate.activations import loss_bytes


@pytest.fixture(scope="module")
def llama3_8b():
    mc, src = shapes.load_model_config("llama-3.1-8b")
    return shapes.inspect_model(mc, None, "llama-3.1-8b", src)


@pytest.fixture(scope="module")
def t5_small():
    mc, src = shapes.load_model_config("t5-small")
    return shapes.inspect_model(mc, None, "t5-small", src)


def test_llama3_8b_logits_whole_and_in_liger_chunks(llama3_8b):
    assert (llama3_8b.vocab_size, llama3_8b.hidden_size) == (128256, 4096)
    tokens = 2048  # one packed 2,048-token row
    assert loss_bytes(llama3_8b, tokens, fused=False) == 2048 * 128256 * 8  # 2.1 GB
    # inc_factor = ceil(128256/4096) = 32; chunk = next_pow2(ceil(2048/32)) = 64 rows of logits at a time;
    # plus the input's gradient (2048 x 4096, fp32 hidden states under QLoRA) and an fp32 loss per position
    assert loss_bytes(llama3_8b, tokens, fused=True) == 2048 * 4096 * 4 + 64 * 128256 * 4 + 4 * 2048
    # 3000 tokens: ceil(3000/32) = 94 -> 128 rows
    assert loss_bytes(llama3_8b, 3000, fused=True) == 3000 * 4096 * 4 + 128 * 128256 * 4 + 4 * 3000


def test_a_small_batch_is_one_chunk_of_its_own_rows(t5_small):
    # V/H = 32128/512 -> inc_factor 63; 10 tokens -> next_pow2(1) = 1 row at a time
    assert loss_bytes(t5_small, 10, fused=True) == 10 * 512 * 4 + 1 * 32128 * 4 + 40
    # V <= H would give inc_factor 1 and a chunk of next_pow2(BT) > BT rows: the chunk is BT rows
    wide = shapes.ModelShape(**{**t5_small.__dict__, "hidden_size": 65536})
    assert loss_bytes(wide, 100, fused=True) == 100 * 65536 * 4 + 100 * 32128 * 4 + 400


def _qlora(shape, name, kernels, *sets):
    sets = ["resources.gpus_per_worker=1", "training.gradient_checkpointing=true", f"training.kernels={kernels}", *sets]
    if shape.task == "causal_lm":
        sets += ["model.task=causal_lm", "data.max_input_length=1536", "data.max_target_length=512"]
    cfg, _ = run.load_estimate_config(None, sets, name)
    return next(v for v in est.estimate(shape, cfg).variants if v.key == "qlora")


def test_liger_saves_only_what_evaluation_does_not_build_again(llama3_8b):
    """Training under Liger never holds the whole logits; evaluation, at training.eval_batch_size, does."""
    T, V = 2048, 128256  # tokens per row, vocabulary
    for b, b_eval in ((1, None), (8, None), (8, 1)):
        extra = [f"training.batch_size={b}"] + ([f"training.eval_batch_size={b_eval}"] if b_eval else [])
        plain = _qlora(llama3_8b, "llama-3.1-8b", "none", *extra)
        liger = _qlora(llama3_8b, "llama-3.1-8b", "liger", *extra)
        auto = _qlora(llama3_8b, "llama-3.1-8b", "auto", *extra)
        assert auto == plain  # auto: Liger only where a CUDA worker has it, so counted unfused (the safe side)
        layers = plain.activations - b * T * V * 8  # what the decoder layers keep (checkpointed)
        train = layers + loss_bytes(llama3_8b, b * T, fused=True)
        evaluation = (b_eval or b) * T * V * 8
        assert liger.activations == max(train, evaluation), (b, b_eval)
        assert plain.total - liger.total == plain.activations - liger.activations  # nothing else moves
    # batch 1: the fused step holds less than the logits evaluation builds, which set the peak (~1.96 GiB of
    # activations against 3.35 unfused); batch 8 with eval_batch_size 1: training sets it and the whole
    # logits are gone from it
    assert liger.activations == train < plain.activations - 0.9 * 8 * T * V * 8


def test_an_eval_batch_larger_than_training_s_can_set_the_peak(llama3_8b):
    small = _qlora(llama3_8b, "llama-3.1-8b", "none", "training.batch_size=1")
    big_eval = _qlora(llama3_8b, "llama-3.1-8b", "none", "training.batch_size=1", "training.eval_batch_size=16")
    assert big_eval.activations == 16 * 2048 * 128256 * 8 > small.activations


def test_liger_changes_nothing_for_a_model_it_does_not_patch(t5_small):
    assert _qlora(t5_small, "t5-small", "liger") == _qlora(t5_small, "t5-small", "none")


def test_estimate_says_what_a_smaller_eval_batch_would_take_off(llama3_8b):
    def run_estimate(*sets):
        base = ["resources.gpus_per_worker=1", "training.gradient_checkpointing=true", "model.task=causal_lm"]
        base += ["data.max_input_length=1536", "data.max_target_length=512", "training.batch_size=8", *sets]
        cfg, _ = run.load_estimate_config(None, base, "llama-3.1-8b")
        return est.estimate(llama3_8b, cfg)

    liger = run_estimate("training.kernels=liger")
    one = run_estimate("training.kernels=liger", "training.eval_batch_size=1")
    qlora = {e: next(v for v in x.variants if v.key == "qlora") for e, x in (("b8", liger), ("b1", one))}
    (line,) = [w for w in liger.warnings if w.startswith("Evaluation builds the whole logits")]
    gib = (qlora["b8"].activations - qlora["b1"].activations) / 1024**3
    assert f"training.eval_batch_size: 1 takes {gib:.2f} GiB off it" in line and gib > 3
    for quiet in (one, run_estimate("training.kernels=none")):
        assert not [w for w in quiet.warnings if w.startswith("Evaluation builds")]
