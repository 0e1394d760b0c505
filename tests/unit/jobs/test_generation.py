"""Causal LM generation metrics: generations from the prompt alone, scored like seq2seq's (real tiny Llama)."""

from __future__ import annotations

import pytest

from orchestrator.core.config import RunConfig

TEMPLATE = "Summarize: {input}\nSummary: "


def _cfg(model, seed_data, **data) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {"name_or_path": str(model), "task": "causal_lm"},
            "data": {
                "train": str(seed_data / "train.jsonl"),
                "input_column": "article",
                "target_column": "summary",
                "prompt_template": TEMPLATE,
                "max_target_length": 64,
                **data,
            },
            "training": {"generation_max_length": 8},
            "search": {"metric": "eval_exact_match"},
        }
    )


@pytest.fixture(scope="module")
def llama(tiny_llama):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval()


def test_left_padded_batches_generate_what_each_prompt_generates_alone(tiny_llama, seed_data, llama):
    from jobs.data import row_features
    from jobs.generation import generate_continuations, split_prompt
    from jobs.modeling import load_tokenizer

    cfg = _cfg(tiny_llama, seed_data)
    tok = load_tokenizer(cfg)
    inputs, targets = ["short", "a much longer article about fine-tuning language models"], ["x", "y z"]
    col_in, col_out = cfg.data.input_column, cfg.data.target_column
    rows = [row_features(cfg, tok, {col_in: i, col_out: t})[0] for i, t in zip(inputs, targets)]
    prompts = [split_prompt(r)[0] for r in rows]
    assert prompts[0] == tok(TEMPLATE.format(input="short"))["input_ids"]  # the prompt only, no completion
    assert tok.decode(split_prompt(rows[1])[1], skip_special_tokens=True) == "y z"
    batched = generate_continuations(llama, tok, prompts, max_new_tokens=8)
    alone = [generate_continuations(llama, tok, [p], max_new_tokens=8)[0] for p in prompts]
    assert batched == alone and any(batched)
    assert not any(t.startswith("Summarize") for t in batched)  # new tokens only


def test_evaluate_and_the_search_score_causal_generations_alike_exact_match_by_hand(
    tiny_llama, seed_data, llama, tmp_path
):
    """One row's target is what the model generates for it, the other's is not: exact match is 1/2.

    evaluate() (the test score) and the search's Trainer evaluation (what ASHA ranks trials by) must
    give the same generation metrics on the same rows.
    """
    import datasets
    from transformers import TrainingArguments

    from jobs.data import build_collator, tokenize
    from jobs.evaluate import evaluate
    from jobs.formats import prompts_and_targets
    from jobs.generation import causal_generation_trainer_class
    from jobs.merge import generate_samples
    from jobs.modeling import load_tokenizer

    cfg = _cfg(tiny_llama, seed_data)
    articles = [r for r in datasets.load_dataset("json", data_files=str(seed_data / "eval.jsonl"), split="train")]
    inputs = [articles[0]["article"], articles[1]["article"]]
    prompts, _ = prompts_and_targets(cfg, load_tokenizer(cfg), [{"article": inputs[0], "summary": "x"}])
    first = generate_samples(cfg, tiny_llama, prompts, [""], model=llama)[0]["prediction"]
    assert first  # the model writes something for the first prompt
    raw = datasets.Dataset.from_dict({"article": inputs, "summary": [first, "a summary it does not write"]})

    scores = evaluate(str(tiny_llama), cfg, raw=raw)
    assert scores["eval_exact_match"] == 0.5  # row 1 matches, row 2 does not
    assert 0.5 <= scores["eval_rougeL"] < 1.0  # row 1 scores 1, row 2 less
    assert scores["eval_loss"] > 0

    tok = load_tokenizer(cfg)
    trainer = causal_generation_trainer_class()(
        model=llama,
        args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_eval_batch_size=2),
        eval_dataset=tokenize(raw, tok, cfg),
        data_collator=build_collator(tok),
        processing_class=tok,
        run_config=cfg,
    )
    searched = trainer.evaluate()
    assert searched["eval_exact_match"] == 0.5
    for key in ("eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_rougeLsum"):
        assert searched[key] == pytest.approx(scores[key])
    assert "eval_loss" in searched
