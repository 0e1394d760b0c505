"""Merging the best adapter into the base, and checking the merge before anything ships.

The base is loaded in 16/32-bit for the merge, never 4-bit: folding LoRA deltas into quantized weights
(the seed's `merge_and_unload` on a 4-bit model) re-quantizes them and silently degrades the model.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from orchestrator.core.config import RunConfig
from orchestrator.core.rundir import RunDir

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def copy_adapter(checkpoint_dir: Path, dest: Path, tokenizer_src: Optional[str] = None) -> Path:
    """Copy just the adapter (and the tokenizer) out of an HF checkpoint folder."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        if (checkpoint_dir / name).exists():
            shutil.copy2(checkpoint_dir / name, dest / name)
    if not (dest / "adapter_config.json").exists():
        raise FileNotFoundError(f"no adapter in {checkpoint_dir}")
    if tokenizer_src:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(tokenizer_src).save_pretrained(dest)
    return dest


def merge_adapter(cfg: RunConfig, adapter_dir: Path, out_dir: Path) -> Path:
    """base (cfg.merge.dtype) + adapter -> merged weights in `out_dir` (safetensors + tokenizer)."""
    from peft import PeftModel

    from jobs.modeling import load_base, load_tokenizer

    base = load_base(cfg, quantized=False, dtype=cfg.merge.dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(cfg).save_pretrained(out_dir)
    return out_dir


def _forward_logits(model, batch: Dict[str, Any], task: str):
    import torch

    with torch.no_grad():
        if task == "seq2seq":
            return model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            ).logits.float()
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()


def verification_batch(cfg: RunConfig, tokenizer, inputs: Sequence[str], targets: Sequence[str]):
    """Inputs (and teacher-forced targets for seq2seq) tokenized as one padded batch."""
    from jobs.data import IGNORE_INDEX

    if cfg.model.task == "seq2seq":
        enc = tokenizer(
            list(inputs), return_tensors="pt", padding=True, truncation=True, max_length=cfg.data.max_input_length
        )
        lab = tokenizer(
            text_target=list(targets),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=cfg.data.max_target_length,
        )["input_ids"]
        lab[lab == tokenizer.pad_token_id] = IGNORE_INDEX
        enc["labels"] = lab
        return enc
    texts = [cfg.data.prompt_template.format(input=i) + str(t) for i, t in zip(inputs, targets)]
    return tokenizer(
        texts,
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=cfg.data.max_input_length + cfg.data.max_target_length,
    )


def verify_merge(
    cfg: RunConfig, adapter_dir: Path, merged_dir: Path, inputs: Sequence[str], targets: Sequence[str]
) -> Dict[str, Any]:
    """Compare the merged model (reloaded from disk with plain transformers) with base + adapter.

    Both run in the merge dtype on the same eval inputs; the merge passes when the largest absolute
    logit difference (on non-padding positions) is within `cfg.merge.tolerance`.
    """
    import torch
    from peft import PeftModel

    from jobs.modeling import load_base, load_tokenizer, model_class

    tokenizer = load_tokenizer(cfg)
    batch = verification_batch(cfg, tokenizer, inputs, targets)
    dtype = getattr(torch, cfg.merge.dtype)
    merged = model_class(cfg.model.task).from_pretrained(str(merged_dir), dtype=dtype).eval()
    reference = PeftModel.from_pretrained(
        load_base(cfg, quantized=False, dtype=cfg.merge.dtype), str(adapter_dir)
    ).eval()
    a = _forward_logits(merged, batch, cfg.model.task)
    b = _forward_logits(reference, batch, cfg.model.task)
    if cfg.model.task == "seq2seq":
        mask = batch["labels"] != -100
    else:
        mask = batch["attention_mask"].bool()
    diff = (a - b).abs()[mask]
    max_diff = float(diff.max()) if diff.numel() else 0.0
    return {
        "passed": bool(max_diff <= cfg.merge.tolerance),
        "max_abs_logit_diff": max_diff,
        "mean_abs_logit_diff": float(diff.mean()) if diff.numel() else 0.0,
        "tolerance": cfg.merge.tolerance,
        "dtype": cfg.merge.dtype,
        "num_inputs": len(inputs),
        "compared": "merged (reloaded with transformers) vs base + adapter (peft), same dtype",
    }


def generate_samples(
    cfg: RunConfig,
    model_dir: Path,
    inputs: Sequence[str],
    references: Sequence[str],
    max_new_tokens: Optional[int] = None,
) -> List[Dict[str, str]]:
    """The model's generations beside the references (shown in the report and the summary)."""
    import torch

    from jobs.modeling import load_tokenizer, model_class

    tokenizer = load_tokenizer(cfg)
    model = model_class(cfg.model.task).from_pretrained(str(model_dir)).eval()
    n = max_new_tokens or cfg.training.generation_max_length
    prompts = (
        list(inputs) if cfg.model.task == "seq2seq" else [cfg.data.prompt_template.format(input=i) for i in inputs]
    )
    enc = tokenizer(prompts, return_tensors="pt", padding=True, truncation=True, max_length=cfg.data.max_input_length)
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=n,
            do_sample=False,
            num_beams=cfg.training.generation_num_beams,
            pad_token_id=tokenizer.pad_token_id,
        )
    if cfg.model.task == "causal_lm":
        out = out[:, enc["input_ids"].shape[1] :]
    preds = tokenizer.batch_decode(out, skip_special_tokens=True)
    return [{"input": i, "reference": r, "prediction": p.strip()} for i, r, p in zip(inputs, references, preds)]


def merge_and_verify(cfg: RunConfig, run: RunDir, eval_raw) -> Dict[str, Any]:
    """Merge best/adapter into best/merged, verify it, write merge_check.json and samples.json."""
    merge_adapter(cfg, run.adapter_dir, run.merged_dir)
    n = min(cfg.merge.verify_samples, len(eval_raw))
    inputs = [str(x) for x in eval_raw[cfg.data.input_column][:n]]
    targets = [str(x) for x in eval_raw[cfg.data.target_column][:n]]
    check = verify_merge(cfg, run.adapter_dir, run.merged_dir, inputs, targets)
    run.write_merge_check(check)
    run.write_samples(generate_samples(cfg, run.merged_dir, inputs, targets))
    return check
