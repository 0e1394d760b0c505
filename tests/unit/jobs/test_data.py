"""Tokenization with dynamic padding and label masking, and 4-bit loading (tiny models, no Ray)."""

from __future__ import annotations

import pytest

from jobs.data import IGNORE_INDEX, build_collator, load_splits, tokenize
from tests.helpers.configs import seed_config


def cfg_for(model, seed_data, task="seq2seq", **data):
    return seed_config(
        model,
        seed_data,
        task,
        data=data,
        quantization={"compute_dtype": "float32"},
        lora={"target_modules": "all-linear"},
    )


def test_seq2seq_examples_are_unpadded_and_batches_pad_to_their_longest(tiny_t5, seed_data):
    from jobs.modeling import load_tokenizer

    cfg = cfg_for(tiny_t5, seed_data)
    tok = load_tokenizer(cfg)
    ds = tokenize(load_splits(cfg.data)["train"], tok, cfg)
    lengths = [len(x) for x in ds["input_ids"]]
    assert len(set(lengths)) > 1 and max(lengths) < cfg.data.max_input_length  # no pad-to-max
    assert all(tok.pad_token_id not in ids for ids in ds["input_ids"])
    batch = build_collator(tok)([ds[i] for i in range(4)])
    assert batch["input_ids"].shape[1] == max(lengths[:4])
    label_lens = [len(ds[i]["labels"]) for i in range(4)]
    assert batch["labels"].shape[1] == max(label_lens)
    for row, n in zip(batch["labels"], label_lens):
        assert (row[n:] == IGNORE_INDEX).all() and (row[:n] != IGNORE_INDEX).all()


def test_truncation_respects_max_lengths(tiny_t5, seed_data):
    from jobs.modeling import load_tokenizer

    cfg = cfg_for(tiny_t5, seed_data, max_input_length=8, max_target_length=4)
    ds = tokenize(load_splits(cfg.data)["train"], load_tokenizer(cfg), cfg)
    assert max(len(x) for x in ds["input_ids"]) == 8 and max(len(x) for x in ds["labels"]) == 4


def test_causal_labels_mask_the_prompt_and_padding(tiny_llama, seed_data):
    from jobs.modeling import load_tokenizer

    cfg = cfg_for(tiny_llama, seed_data, task="causal_lm", prompt_template="Summarize: {input}\nSummary: ")
    tok = load_tokenizer(cfg)
    raw = load_splits(cfg.data)["train"]
    ds = tokenize(raw, tok, cfg)
    for i in range(3):
        ex = ds[i]
        prompt = tok(cfg.data.prompt_template.format(input=raw[i]["article"]))["input_ids"]
        n = len(prompt)
        assert ex["input_ids"][:n] == prompt
        assert ex["labels"][:n] == [IGNORE_INDEX] * n  # no loss on the prompt
        completion = ex["labels"][n:]
        assert completion[-1] == tok.eos_token_id and IGNORE_INDEX not in completion
        assert tok.decode(completion, skip_special_tokens=True).strip() == raw[i]["summary"].strip()
    batch = build_collator(tok)([ds[i] for i in range(4)])
    pad = batch["attention_mask"] == 0
    assert pad.any() and (batch["labels"][pad] == IGNORE_INDEX).all()


def test_eval_is_split_off_train_when_absent(tiny_t5, seed_data):
    cfg = cfg_for(tiny_t5, seed_data, eval=None, eval_split=0.3, split_seed=1, test_split=0.0)
    splits = load_splits(cfg.data)
    assert len(splits["train"]) == 7 and len(splits["eval"]) == 3 and "test" not in splits
    again = load_splits(cfg.data)
    assert splits["eval"]["article"] == again["eval"]["article"]  # seeded


def test_without_data_test_a_share_of_train_is_set_aside_first_and_never_trained_or_evaluated_on(tiny_t5, seed_data):
    import json

    rows = [json.loads(line)["article"] for line in (seed_data / "train.jsonl").read_text().splitlines()]
    cfg = cfg_for(tiny_t5, seed_data, eval=None, test=None, test_split=0.2, eval_split=0.25, split_seed=3)
    splits = load_splits(cfg.data)
    train, ev, test = (set(splits[k]["article"]) for k in ("train", "eval", "test"))
    assert len(splits["test"]) == 2 and len(splits["eval"]) == 2 and len(splits["train"]) == 6
    assert not test & train and not test & ev and not train & ev
    assert train | ev | test == set(rows)  # every row in exactly one split
    again = load_splits(cfg.data)
    assert set(again["test"]["article"]) == test  # seeded: publish's re-check sees the same eval rows
    # with a separate eval file the test rows are still taken out of train
    with_eval = load_splits(cfg_for(tiny_t5, seed_data, test=None, test_split=0.2, split_seed=3).data)
    assert set(with_eval["test"]["article"]) == test and not test & set(with_eval["train"]["article"])


def test_data_test_is_the_test_set_and_train_is_left_whole(tiny_t5, seed_data):
    cfg = cfg_for(tiny_t5, seed_data, test=str(seed_data / "test.jsonl"), test_split=0.5)
    splits = load_splits(cfg.data)
    assert len(splits["train"]) == 10 and len(splits["test"]) == 3
    assert "test" not in load_splits(cfg_for(tiny_t5, seed_data, test_split=0.0).data)


def test_packed_causal_batches_have_no_padding_and_the_same_loss(tiny_llama, seed_data):
    """Packing: one row per batch, positions restart per example, boundaries unlearned; the 4-bit LoRA
    model gives every example the logits it has alone, and the batch the loss of the padded batch."""
    import torch

    from jobs.data import packing_keeps_examples_apart
    from jobs.modeling import load_tokenizer, load_trainable

    cfg = cfg_for(tiny_llama, seed_data, task="causal_lm")
    tok = load_tokenizer(cfg)
    ds = tokenize(load_splits(cfg.data)["train"], tok, cfg)
    feats = [ds[i] for i in range(4)]
    lengths = [len(f["input_ids"]) for f in feats]
    packed = build_collator(tok, packing=True)(feats)
    assert set(packed) == {"input_ids", "labels", "position_ids"}
    assert packed["input_ids"].shape == (1, sum(lengths))  # not one padding token
    starts = [sum(lengths[:i]) for i in range(4)]
    assert [int(packed["position_ids"][0, s]) for s in starts] == [0, 0, 0, 0]
    assert all(int(packed["labels"][0, s]) == IGNORE_INDEX for s in starts)  # no loss across a boundary

    model = load_trainable(cfg)
    model.config.use_cache = False
    ok, diff, leak = packing_keeps_examples_apart(model, ds)
    assert ok and diff <= 1e-4 and leak > 1e-2, (diff, leak)
    padded = build_collator(tok)(feats)
    model.eval()
    with torch.no_grad():
        loss_packed = model(**packed).loss
        loss_padded = model(**{k: padded[k] for k in ("input_ids", "attention_mask", "labels")}).loss
    assert torch.isclose(loss_packed, loss_padded, rtol=1e-4), (loss_packed, loss_padded)

    # A model that ignores the position restarts lets examples see each other: the check refuses it.
    forward = model.forward
    model.forward = lambda *a, position_ids=None, **k: forward(*a, **k)
    ok, diff, leak = packing_keeps_examples_apart(model, ds)
    assert not ok and diff == leak > 1e-2


def test_trainable_model_is_really_4bit_nf4_with_lora_on_the_targets(tiny_t5, seed_data):
    import bitsandbytes as bnb
    import torch

    from jobs.modeling import load_trainable, param_counts

    cfg = cfg_for(tiny_t5, seed_data).with_params({"lora.target_modules": ["q", "v"], "lora.r": 4})
    model = load_trainable(cfg)
    q = model.base_model.model.encoder.block[0].layer[0].SelfAttention.q
    assert isinstance(q.base_layer, bnb.nn.Linear4bit)
    assert q.base_layer.weight.dtype == torch.uint8 and q.base_layer.weight.quant_type == "nf4"
    assert q.base_layer.weight.quant_state.nested  # double quantization
    assert "lora_A" in dict(q.named_children())
    k = model.base_model.model.encoder.block[0].layer[0].SelfAttention.k
    assert not hasattr(k, "lora_A")
    counts = param_counts(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["trainable_params"] == trainable > 0
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)


def test_rouge_scores_generations():
    from jobs.metrics import rouge

    same = rouge(["the model improves"], ["the model improves"])
    assert same["rouge1"] == pytest.approx(1.0) and same["rougeL"] == pytest.approx(1.0)
    none = rouge(["alpha beta"], ["gamma delta"])
    assert none["rouge1"] == 0.0


@pytest.mark.parametrize(
    "task,packing,attn,expected",
    [
        ("causal_lm", "auto", "sdpa", False),  # sdpa computes attention over the whole packed row
        ("causal_lm", "auto", "flash_attention_2", True),
        ("causal_lm", True, "sdpa", True),
        ("causal_lm", False, "flash_attention_2", False),
        ("seq2seq", True, "sdpa", False),  # encoder-decoder batches are always padded
    ],
)
def test_when_packing_is_wanted(tiny_t5, seed_data, task, packing, attn, expected):
    from types import SimpleNamespace

    from jobs.train_loop import wants_packing

    cfg = cfg_for(tiny_t5, seed_data, task=task, packing=packing)
    assert wants_packing(cfg, SimpleNamespace(config=SimpleNamespace(_attn_implementation=attn))) is expected
