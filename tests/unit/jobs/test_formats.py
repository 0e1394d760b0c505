"""data.format: messages / instruction / columns rendering, assistant-only labels, truncation that keeps the
template's cue, and the same prompts for generation (tiny models, real tokenizers, no Ray)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from jobs.data import IGNORE_INDEX, build_collator, load_splits, prepare_datasets, tokenize_counted
from jobs.formats import encode_prompts, prompts_and_targets
from orchestrator.core.config_load import validate_dict
from tests.helpers.configs import seed_config

# A minimal Jinja chat template (the tiny tokenizers have none): </s> ends every turn.
CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TOPICS = ["the model", "the summary", "the article", "the data", "the report", "the test"]


def conversation(i: int) -> list:
    t = TOPICS[i % len(TOPICS)]
    return [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": f"What is {t}?"},
        {"role": "assistant", "content": f"It is {t} of the week."},
        {"role": "user", "content": f"Say it again about {t}."},
        {"role": "assistant", "content": f"Again: {t} of the week."},
    ]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def chat_cfg(model, tmp_path, n=12, **data):
    train = write_jsonl(tmp_path / "chat.jsonl", [{"messages": conversation(i)} for i in range(n)])
    return validate_dict(
        {
            "model": {"name_or_path": str(model), "task": "causal_lm", "chat_template": CHAT},
            "data": {"train": str(train), "eval": str(train), "format": "messages", **data},
            "quantization": {"compute_dtype": "float32"},
            "lora": {"target_modules": "all-linear", "r": 8, "alpha": 32, "dropout": 0.0},
            "training": {
                "learning_rate": 3e-3,
                "batch_size": 4,
                "max_steps": 8,
                "eval_steps": 8,
                "gradient_checkpointing": False,
            },
        }
    )


def labelled_runs(tok, labels) -> list:
    """The labelled tokens as decoded text, one string per contiguous run."""
    runs, cur = [], []
    for t in labels + [IGNORE_INDEX]:
        if t != IGNORE_INDEX:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur, skip_special_tokens=True))
            cur = []
    return runs


def test_messages_train_on_assistant_turns_only(tiny_llama, tmp_path):
    """Several turns with a system prompt: exactly the assistant contents carry labels, and a 4-bit LoRA
    model trained on them with the run's TrainingArguments lowers its eval loss."""
    import torch
    from transformers import Trainer

    from jobs.modeling import load_tokenizer, load_trainable
    from jobs.train_loop import training_arguments

    cfg = chat_cfg(tiny_llama, tmp_path)
    tok = load_tokenizer(cfg)
    data = prepare_datasets(cfg, tok)
    assert data["stats"] == {"truncated": {"train": 0, "eval": 0}}
    for i in range(len(data["train"])):
        ex = data["train"][i]
        runs = labelled_runs(tok, ex["labels"])
        assert len(runs) == 2, runs
        topic = next(t for t in TOPICS if f"It is {t} of the week." == runs[0])
        assert runs == [f"It is {topic} of the week.", f"Again: {topic} of the week."]
        # every labelled token is the same token as the input (no shift here; the model shifts)
        assert all(lab in (IGNORE_INDEX, tid) for lab, tid in zip(ex["labels"], ex["input_ids"]))
        # the system prompt and user turns carry no label
        unlabelled = tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab == IGNORE_INDEX])
        assert "You answer in one short sentence." in unlabelled and f"What is {topic}?" in unlabelled

    model = load_trainable(cfg)
    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, str(tmp_path / "out"), report_to_wandb=False),
        train_dataset=data["train"],
        eval_dataset=data["eval"],
        data_collator=build_collator(tok),
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert after < before - 0.1, (before, after)
    assert torch.isfinite(torch.tensor(after))


def test_messages_prompt_for_generation_is_the_training_prefix(tiny_llama, tmp_path):
    from jobs.modeling import load_tokenizer

    cfg = chat_cfg(tiny_llama, tmp_path, n=3)
    tok = load_tokenizer(cfg)
    raw = load_splits(cfg.data)["eval"]
    prompts, targets = prompts_and_targets(cfg, tok, raw)
    assert targets[0] == "Again: the model of the week."
    assert prompts[0] == tok.apply_chat_template(
        conversation(0)[:-1], chat_template=CHAT, tokenize=False, add_generation_prompt=True
    )
    feats, _ = tokenize_counted(raw, tok, cfg)
    ids = encode_prompts(cfg, tok, prompts[:1])["input_ids"][0].tolist()
    assert feats[0]["input_ids"][: len(ids)] == ids  # training saw these very tokens before the last reply


def test_messages_truncation_drops_the_oldest_exchange_first(tiny_llama, tmp_path):
    from jobs.modeling import load_tokenizer

    long_q = "Tell me everything about the article and the summary. " * 20
    msgs = conversation(0)
    msgs[1]["content"] = long_q  # the oldest exchange is the long one
    cfg = chat_cfg(tiny_llama, tmp_path, n=1, max_input_length=48, max_target_length=32)
    write_jsonl(Path(cfg.data.train), [{"messages": msgs}])
    tok = load_tokenizer(cfg)
    feats, n_cut = tokenize_counted(load_splits(cfg.data)["train"], tok, cfg)
    ex = feats[0]
    assert n_cut == 1 and len(ex["input_ids"]) <= 80
    assert labelled_runs(tok, ex["labels"]) == ["Again: the model of the week."]
    text = tok.decode(ex["input_ids"])
    assert text.startswith("<s><|system|>\nYou answer in one short sentence.") or "You answer in one" in text
    assert "Tell me everything" not in text and "Say it again about the model." in text


def cue_cfg(model, seed_data, task, **data):
    return seed_config(model, seed_data, task, data=data)


def test_a_long_input_keeps_the_cue_after_truncation(tiny_llama, seed_data):
    from jobs.modeling import load_tokenizer

    cfg = cue_cfg(
        tiny_llama, seed_data, "causal_lm", prompt_template="Summarize: {input}\nSummary: ", max_input_length=24
    )
    tok = load_tokenizer(cfg)
    raw = load_splits(cfg.data)["train"]
    feats, n_cut = tokenize_counted(raw, tok, cfg)
    longer = sum(len(tok(f"Summarize: {a}\nSummary: ")["input_ids"]) > 24 for a in raw["article"])
    assert n_cut == longer > 0
    for i in range(len(feats)):
        ex = feats[i]
        n = ex["labels"].index(next(t for t in ex["labels"] if t != IGNORE_INDEX))
        prompt = tok.decode(ex["input_ids"][:n], skip_special_tokens=True)
        assert n <= 24 and prompt.startswith("Summarize: ") and prompt.endswith("\nSummary: "), prompt
        assert tok.decode(ex["labels"][n:], skip_special_tokens=True).strip() == raw[i]["summary"].strip()
    prompts, targets = prompts_and_targets(cfg, tok, raw)
    enc = encode_prompts(cfg, tok, prompts)
    assert enc["input_ids"].shape[1] <= 24 and all(p.endswith("\nSummary: ") for p in prompts)
    assert targets == [str(s) for s in raw["summary"]]


def test_seq2seq_takes_a_task_prefix_and_keeps_it(tiny_t5, seed_data):
    from jobs.modeling import load_tokenizer

    cfg = cue_cfg(tiny_t5, seed_data, "seq2seq", prompt_template="summarize: {input}", max_input_length=16)
    tok = load_tokenizer(cfg)
    raw = load_splits(cfg.data)["train"]
    feats, n_cut = tokenize_counted(raw, tok, cfg)
    assert n_cut > 0
    for i in range(len(feats)):
        ids = feats[i]["input_ids"]
        assert len(ids) <= 16 and ids[-1] == tok.eos_token_id
        assert tok.decode(ids, skip_special_tokens=True).startswith("summarize: ")
    # the seq2seq default is the identity: exactly what the seed tokenized
    plain = cue_cfg(tiny_t5, seed_data, "seq2seq")
    assert tokenize_counted(raw, tok, plain)[0][0]["input_ids"] == tok(raw[0]["article"])["input_ids"]


def test_instruction_rows_without_a_chat_template_use_the_alpaca_layout(tiny_llama, tmp_path):
    from jobs.modeling import load_tokenizer

    rows = [
        {"instruction": "Summarize.", "input": "The data changed.", "output": "Changed.", "system": "Be brief."},
        {"instruction": "Say hello.", "input": "", "output": "Hello."},
    ]
    path = write_jsonl(tmp_path / "inst.jsonl", rows)
    cfg = validate_dict(
        {
            "model": {"name_or_path": str(tiny_llama), "task": "causal_lm"},
            "data": {"train": str(path), "eval": str(path), "format": "instruction"},
        }
    )
    tok = load_tokenizer(cfg)
    feats, _ = tokenize_counted(load_splits(cfg.data)["train"], tok, cfg)
    prompts, targets = prompts_and_targets(cfg, tok, rows)
    assert prompts == [
        "Be brief.\n\n### Instruction:\nSummarize.\n\n### Input:\nThe data changed.\n\n### Response:\n",
        "### Instruction:\nSay hello.\n\n### Response:\n",
    ]
    assert targets == ["Changed.", "Hello."]
    for ex, want in zip(feats, targets):
        assert labelled_runs(tok, ex["labels"]) == [want]
    # with a chat template the same rows become system/user/assistant turns, loss on the output only
    chat = cfg.with_params({"model.chat_template": CHAT})
    feats, _ = tokenize_counted(load_splits(chat.data)["train"], tok, chat)
    assert [labelled_runs(tok, ex["labels"]) for ex in feats] == [["Changed."], ["Hello."]]
    assert prompts_and_targets(chat, tok, rows[:1])[0] == [
        "<|system|>\nBe brief.</s><|user|>\nSummarize.\n\nThe data changed.</s><|assistant|>\n"
    ]
