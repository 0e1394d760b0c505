"""The worker-side Python API the orchestrator calls: run a search, run one trial, score a model.

Each function needs a connected Ray (local `ray.init()` or inside a Ray Job) except `evaluate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from orchestrator.config import RunConfig
from orchestrator.storage import is_s3


def run_dir_for(cfg: RunConfig) -> Path:
    """Where a run's files go: output.dir/experiment, or ./runs/experiment when output.dir is remote."""
    root = Path("runs") if is_s3(cfg.output.dir) else Path(cfg.output.dir)
    return (root / cfg.experiment).resolve()


def run_tune(cfg: RunConfig, *, resume: bool = False, callbacks: Optional[list] = None, echo=print) -> Path:
    """A Ray Tune search over cfg.search.space; returns the run folder (see docs/run_layout.md)."""
    from jobs.tune import run_search

    run_dir = run_dir_for(cfg)
    run_search(cfg, run_dir, resume=resume, callbacks=callbacks, echo=echo)
    return run_dir


def run_train(cfg: RunConfig, params: Optional[Dict[str, Any]] = None, *, resume: bool = False,
              callbacks: Optional[list] = None, echo=print) -> Path:
    """One trial with fixed hyperparameters (cfg's values, updated by `params`) through the same code."""
    from jobs.tune import run_search

    fixed = {**cfg.fixed_params(), **(params or {})}
    run_dir = run_dir_for(cfg)
    run_search(cfg, run_dir, fixed_params=fixed, resume=resume, callbacks=callbacks, echo=echo)
    return run_dir


def evaluate(model_dir: str, cfg: RunConfig, data_path: Optional[str] = None, max_examples: int = 256
             ) -> Dict[str, float]:
    """Score a merged model folder (or an adapter folder, on cfg's base) on a held-out set.

    Returns eval_loss (mean token cross-entropy over targets, padding excluded) and, for seq2seq,
    ROUGE of greedy generations: the same metric names the search optimizes.
    """
    import torch

    from jobs.data import build_collator, load_source, tokenize
    from jobs.metrics import rouge
    from jobs.modeling import load_base, load_tokenizer, model_class

    src = data_path or cfg.data.test or cfg.data.eval
    raw = load_source(src)
    raw = raw.select(range(min(len(raw), max_examples)))
    tokenizer = load_tokenizer(cfg)
    if (Path(model_dir) / "adapter_config.json").exists():
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
        if (Path(model_dir) / "adapter_config.json").exists():
            preds = _generate(model, tokenizer, cfg, inputs)
        else:
            preds = [s["prediction"] for s in generate_samples(cfg, Path(model_dir), inputs, refs)]
        out.update({f"eval_{k}": v for k, v in rouge(preds, refs).items()})
    return out


def _generate(model, tokenizer, cfg: RunConfig, inputs):
    import torch

    enc = tokenizer(list(inputs), return_tensors="pt", padding=True, truncation=True,
                    max_length=cfg.data.max_input_length)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=cfg.training.generation_max_length, do_sample=False)
    return tokenizer.batch_decode(out, skip_special_tokens=True)
