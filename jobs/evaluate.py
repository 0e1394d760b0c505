"""Scoring a model on held-out examples: the same loss and metric names the search optimizes."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from orchestrator.core.config import RunConfig


def evaluate(
    model_dir: Optional[str], cfg: RunConfig, data_path: Optional[str] = None, max_examples: int = 256, raw=None
) -> Dict[str, float]:
    """Score a merged model folder (or an adapter folder, on cfg's base; or, with model_dir None, the untuned
    base itself in 32-bit) on a held-out set.

    The set is `raw` (a Dataset, e.g. received by value), else read from `data_path`, data.test or data.eval.

    Returns eval_loss (mean token cross-entropy over targets, padding excluded), and ROUGE (with
    metrics.rouge_tokenizer) and exact match of greedy generations (a causal LM's from the prompt alone):
    the same metric names the search optimizes.
    """
    import torch

    from jobs.data import build_collator, load_source, tokenize
    from jobs.merge import generate_samples
    from jobs.metrics import generation_metrics
    from jobs.modeling import load_base, load_tokenizer, model_class

    if raw is None:
        src = data_path or cfg.data.test or cfg.data.eval
        if not src:
            raise ValueError("nothing to score on: pass data_path or set data.test or data.eval")
        raw = load_source(src, cfg.data_endpoint)
    if cfg.data.on_bad_rows == "skip":
        from orchestrator.core.rows import row_problem

        raw = raw.filter(lambda row: row_problem(cfg.data, row) is None)
    raw = raw.select(range(min(len(raw), max_examples)))
    tokenizer = load_tokenizer(cfg)
    on_base = model_dir is None or (Path(model_dir) / "adapter_config.json").exists()
    if model_dir is None:
        model = load_base(cfg, quantized=False)
    elif on_base:
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_base(cfg, quantized=False), model_dir)
    else:
        model = model_class(cfg.model.task).from_pretrained(model_dir)
    model.eval()
    feats = tokenize(raw, tokenizer, cfg)
    collate = build_collator(tokenizer, model if cfg.model.task == "seq2seq" else None)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(feats), 8):
            batch = collate([feats[j] for j in range(i, min(i + 8, len(feats)))])
            n = int((batch["labels"] != -100).sum())
            total += float(model(**batch).loss) * n
            count += n
    out = {"eval_loss": total / max(count, 1), "num_examples": float(len(raw))}
    from jobs.formats import prompts_and_targets

    inputs, refs = prompts_and_targets(cfg, tokenizer, raw)
    preds = [s["prediction"] for s in generate_samples(cfg, Path(str(model_dir)), inputs, refs, model=model)]
    scores = generation_metrics(preds, refs, cfg.metrics.rouge_tokenizer)
    out.update({f"eval_{k}": v for k, v in scores.items()})
    return out
