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

    Returns eval_loss (mean token cross-entropy over targets, padding excluded) and, for seq2seq,
    ROUGE of greedy generations: the same metric names the search optimizes.
    """
    import torch

    from jobs.data import build_collator, load_source, tokenize
    from jobs.metrics import rouge
    from jobs.modeling import load_base, load_tokenizer, model_class

    if raw is None:
        src = data_path or cfg.data.test or cfg.data.eval
        if not src:
            raise ValueError("nothing to score on: pass data_path or set data.test or data.eval")
        raw = load_source(src, cfg.data_endpoint)
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
    if cfg.model.task == "seq2seq":
        from jobs.merge import generate_samples

        inputs = [str(x) for x in raw[cfg.data.input_column]]
        refs = [str(x) for x in raw[cfg.data.target_column]]
        if on_base:
            preds = _generate(model, tokenizer, cfg, inputs)
        else:
            preds = [s["prediction"] for s in generate_samples(cfg, Path(str(model_dir)), inputs, refs, model=model)]
        out.update({f"eval_{k}": v for k, v in rouge(preds, refs).items()})
    return out


def _generate(model, tokenizer, cfg: RunConfig, inputs):
    import torch

    enc = tokenizer(
        list(inputs), return_tensors="pt", padding=True, truncation=True, max_length=cfg.data.max_input_length
    )
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=cfg.training.generation_max_length, do_sample=False)
    return tokenizer.batch_decode(out, skip_special_tokens=True)
