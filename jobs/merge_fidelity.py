"""How far the merged model is from the model that was trained: the 4-bit base + adapter.

The merge check (jobs.merge) compares the merged model with base + adapter in the merge dtype: peft's
arithmetic. What was trained and evaluated during the search is the adapter on the *4-bit* base, and folding
it into the original 16/32-bit weights changes outputs by the quantization error. This module measures that
on the verification examples: mean per-token KL(trained || merged), the eval loss of each (teacher-forced,
target tokens only) and ROUGE-L of greedy generations; and builds the base the adapter is folded into
(`merge.into`: original weights, or the NF4 weights dequantized).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from orchestrator.core.config import RunConfig


def _scored(logits, labels, task: str):
    """(logits, labels) at the positions that predict a target token (causal LM: shifted by one)."""
    if task == "causal_lm":
        logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != -100
    return logits[mask].float(), labels[mask]


def score_model(cfg: RunConfig, model, tokenizer, inputs: Sequence[str], targets: Sequence[str]) -> Dict[str, Any]:
    """What fidelity compares: the scored positions' logits, the eval loss and ROUGE-L of greedy generations."""
    import torch.nn.functional as F

    from jobs.merge import _forward_logits, generate_samples, verification_batch
    from jobs.metrics import rouge

    device = next(model.parameters()).device
    # `inputs` are prompts as rendered for training (jobs.formats): the merge check's own batch, with labels
    batch = verification_batch(cfg, tokenizer, inputs, targets).to(device)
    logits, labels = _scored(_forward_logits(model.eval(), batch, cfg.model.task), batch["labels"], cfg.model.task)
    preds = [s["prediction"] for s in generate_samples(cfg, Path("."), inputs, targets, model=model)]
    return {
        "logits": logits.cpu(),
        "eval_loss": float(F.cross_entropy(logits, labels)),
        "rougeL": float(rouge(preds, [str(t) for t in targets], cfg.metrics.rouge_tokenizer)["rougeL"]),
    }


def fidelity(cfg: RunConfig, trained: Dict[str, Any], merged: Dict[str, Any]) -> Dict[str, Any]:
    """The merged model against the trained one (both from score_model on the same examples).

    metric_drop is the eval loss rise (merged - trained); `passed` when it is at most merge.max_metric_drop.
    """
    import torch.nn.functional as F

    p, q = trained["logits"], merged["logits"]
    kl = F.kl_div(F.log_softmax(q, -1), F.log_softmax(p, -1), log_target=True, reduction="none").sum(-1)
    drop = merged["eval_loss"] - trained["eval_loss"]
    return {
        "into": cfg.merge.into,
        "kl_mean": float(kl.mean()) if kl.numel() else 0.0,
        "positions": int(kl.numel()),
        "trained_eval_loss": trained["eval_loss"],
        "merged_eval_loss": merged["eval_loss"],
        "eval_loss_delta": drop,
        "trained_rougeL": trained["rougeL"],
        "merged_rougeL": merged["rougeL"],
        "rougeL_delta": merged["rougeL"] - trained["rougeL"],
        "metric_drop": drop,
        "max_metric_drop": cfg.merge.max_metric_drop,
        "passed": bool(drop <= cfg.merge.max_metric_drop),
        "compared": "merged model vs the trained model (4-bit base + adapter) on the verification examples",
    }


def _device_map(device: str) -> Optional[Dict[str, Any]]:
    return {"": device} if device != "cpu" else None


def score_trained(
    cfg: RunConfig, adapter_dir: Path, tokenizer, inputs: Sequence[str], targets: Sequence[str], device: str
) -> Dict[str, Any]:
    """score_model on the 4-bit base + adapter, loaded exactly as the trials trained it (then freed)."""
    from peft import PeftModel

    from jobs.modeling import load_base

    base = load_base(cfg, quantized=True, device_map=_device_map(device))
    model = PeftModel.from_pretrained(base if _device_map(device) else base.to(device), str(adapter_dir))
    out = score_model(cfg, model, tokenizer, inputs, targets)
    del model, base
    return out


def merge_base(cfg: RunConfig, dtype: str, device: str):
    """The base the adapter is folded into, in `dtype`: its original weights (merge.into: original) or the
    quantized weights the adapter was trained on, dequantized (merge.into: dequantized)."""
    import torch

    from jobs.modeling import load_base

    if cfg.merge.into == "original" or cfg.quantization.mode == "none":
        return load_base(cfg, quantized=False, dtype=dtype).to(device)
    base = load_base(cfg, quantized=True, device_map=_device_map(device))
    base = base.dequantize(dtype=getattr(torch, dtype))  # drops the quantization config too
    return base.to(device=device, dtype=getattr(torch, dtype))
