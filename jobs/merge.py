"""Merging the best adapter into the base, checking the merge, and scoring it on the test set.

The adapter is folded into 16/32-bit weights, never into 4-bit ones: `merge_and_unload` on a 4-bit model
(the seed's) re-quantizes the sums and silently degrades the model. With `merge.into: dequantized` (the
default) those weights are the 4-bit weights the adapter was trained on, dequantized; with `original`, the
base's own (figures for both: docs/benchmarks.md, Merge fidelity).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from jobs.data import table_of
from jobs.remote import folder_files, on_worker, write_files
from orchestrator.core.config import RunConfig
from orchestrator.core.ray_storage import RunStorage
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


def _forward_logits(model, batch: Dict[str, Any], task: str):
    import torch

    with torch.no_grad():
        if task == "seq2seq":
            return model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            ).logits.float()
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()


def verification_batch(cfg: RunConfig, tokenizer, prompts: Sequence[str], targets: Sequence[str]):
    """Prompts (jobs.formats.prompts_and_targets) and targets (teacher-forced for seq2seq) as one padded batch."""
    from jobs.data import IGNORE_INDEX
    from jobs.formats import encode_prompts, uses_chat

    if cfg.model.task == "seq2seq":
        enc = encode_prompts(cfg, tokenizer, prompts)
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
    enc = tokenizer(
        [p + str(t) for p, t in zip(prompts, targets)],
        add_special_tokens=not uses_chat(cfg, tokenizer),
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=cfg.data.max_input_length + cfg.data.max_target_length,
        return_offsets_mapping=True,
    )
    # labels on the tokens that reach into the target (by character offset: BPE may merge across the
    # boundary); the prompt, special tokens and padding are IGNORE_INDEX
    ends = enc.pop("offset_mapping")[..., 1]
    cut = enc["input_ids"].new_tensor([len(p) for p in prompts]).unsqueeze(1)
    labels = enc["input_ids"].clone()
    labels[(ends <= cut) | (enc["attention_mask"] == 0)] = IGNORE_INDEX
    enc["labels"] = labels
    return enc


def verify_merge(
    cfg: RunConfig, adapter_dir: Path, merged_dir: Path, inputs: Sequence[str], targets: Sequence[str]
) -> Dict[str, Any]:
    """Compare the merged model (reloaded from disk with plain transformers) with base + adapter, and with
    the trained model (4-bit base + adapter: `fidelity`).

    Both run in the merge dtype on the same eval inputs, the base built as `merge.into` says; the merge
    passes when the largest absolute logit difference (on non-padding positions) is within
    `cfg.merge.tolerance`. The fidelity figures carry their own `passed` (merge.max_metric_drop).
    """
    import torch
    from peft import PeftModel

    from jobs.merge_fidelity import fidelity, merge_base, score_model, score_trained
    from jobs.modeling import base_dtype, load_tokenizer, model_class

    tokenizer = load_tokenizer(cfg)
    batch = verification_batch(cfg, tokenizer, inputs, targets)
    dtype = base_dtype(cfg)
    trained = score_trained(cfg, adapter_dir, tokenizer, inputs, targets, "cpu")
    reference = PeftModel.from_pretrained(merge_base(cfg, dtype, "cpu"), str(adapter_dir)).eval()
    b = _forward_logits(reference, batch, cfg.model.task)
    del reference  # one model in memory at a time
    merged = model_class(cfg.model.task).from_pretrained(str(merged_dir), dtype=getattr(torch, dtype)).eval()
    a = _forward_logits(merged, batch, cfg.model.task)
    check = _compare(cfg, batch, a, b, dtype, len(inputs))
    check["fidelity"] = fidelity(cfg, trained, score_model(cfg, merged, tokenizer, inputs, targets))
    return check


def _compare(cfg: RunConfig, batch, a, b, dtype: str, n: int) -> Dict[str, Any]:
    mask = batch["labels"] != -100 if cfg.model.task == "seq2seq" else batch["attention_mask"].bool()
    diff = (a - b).abs()[mask.to(a.device)]
    max_diff = float(diff.max()) if diff.numel() else 0.0
    tolerance = cfg.merge.tolerance_for(dtype)
    return {
        "passed": bool(max_diff <= tolerance),
        "max_abs_logit_diff": max_diff,
        "mean_abs_logit_diff": float(diff.mean()) if diff.numel() else 0.0,
        "tolerance": tolerance,
        "dtype": dtype,
        "num_inputs": n,
        "compared": "merged (reloaded with transformers) vs base + adapter (peft), same dtype",
    }


def generate_samples(
    cfg: RunConfig,
    model_dir: Path,
    inputs: Sequence[str],
    references: Sequence[str],
    max_new_tokens: Optional[int] = None,
    model=None,
) -> List[Dict[str, str]]:
    """The model's generations beside the references (shown in the report and the summary).

    `inputs` are prompts as `jobs.formats.prompts_and_targets` renders them (what the model was trained on).

    `model`, when given, is used instead of loading `model_dir` again.
    """
    import torch

    from jobs.modeling import load_tokenizer, model_class

    tokenizer = load_tokenizer(cfg)
    if model is None:
        model = model_class(cfg.model.task).from_pretrained(str(model_dir)).eval()
    n = max_new_tokens or cfg.training.generation_max_length
    from jobs.formats import encode_prompts

    enc = encode_prompts(cfg, tokenizer, inputs)
    enc = enc.to(next(model.parameters()).device)
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


def merge_and_check(
    cfg: RunConfig, adapter_dir: Path, out_dir: Path, inputs: Sequence[str], targets: Sequence[str]
) -> Tuple[Dict[str, Any], Any]:
    """Merge, save, reload and compare, with one model in memory at a time.

    The trained model (4-bit base + adapter) is scored first (jobs.merge_fidelity); then base + adapter
    (peft, unmerged, the base as `merge.into` says) scores the verification batch; the same weights are
    merged in place and saved; the saved folder is loaded back with plain transformers and scores the
    batch again. Returns the check (with its `fidelity`) and the reloaded merged model (for samples).
    """
    import torch
    from peft import PeftModel

    from jobs.merge_fidelity import fidelity, merge_base, score_model, score_trained
    from jobs.modeling import base_dtype, load_tokenizer, model_class

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = base_dtype(cfg)
    tokenizer = load_tokenizer(cfg)
    trained = score_trained(cfg, adapter_dir, tokenizer, inputs, targets, device)
    batch = verification_batch(cfg, tokenizer, inputs, targets).to(device)
    model = PeftModel.from_pretrained(merge_base(cfg, dtype, device), str(adapter_dir)).to(device)
    reference = _forward_logits(model.eval(), batch, cfg.model.task)
    merged = model.merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    del model, merged
    reloaded = model_class(cfg.model.task).from_pretrained(str(out_dir), dtype=getattr(torch, dtype)).to(device)
    check = _compare(cfg, batch, _forward_logits(reloaded.eval(), batch, cfg.model.task), reference, dtype, len(inputs))
    check["fidelity"] = fidelity(cfg, trained, score_model(cfg, reloaded, tokenizer, inputs, targets))
    return check, reloaded


def merge_on_worker(
    run_config: Dict[str, Any],
    adapter_files: Dict[str, bytes],
    inputs: List[str],
    targets: List[str],
    test_table: Any,
    dest: str,
    dest_filesystem: Any = None,
) -> Dict[str, Any]:
    """The Ray task: merge the adapter (sent by value), check it, write samples, score the test set.

    The merged folder goes to `dest`: a path in the run's S3 storage (`dest_filesystem`, pyarrow), or a
    local folder when the run's storage is local (one machine).
    """
    import tempfile

    cfg = RunConfig.model_validate(run_config)
    with tempfile.TemporaryDirectory(prefix="qlora-merge-") as tmp:
        adapter = write_files(adapter_files, Path(tmp, "adapter"))
        merged_dir = Path(tmp, "merged") if dest_filesystem is not None else Path(dest)
        check, model = merge_and_check(cfg, adapter, merged_dir, inputs, targets)
        samples = generate_samples(cfg, merged_dir, inputs, targets, model=model)
        del model
        scores: Dict[str, Any] = {}
        if test_table is not None:
            import datasets

            scores = test_scores(cfg, str(merged_dir), datasets.Dataset(test_table))
        if dest_filesystem is not None:
            import pyarrow.fs

            pyarrow.fs.copy_files(str(merged_dir), dest, destination_filesystem=dest_filesystem)
    import ray

    return {"merge_check": check, "samples": samples, "scores": scores, "node": ray.get_runtime_context().get_node_id()}


def test_scores(cfg: RunConfig, merged_dir: str, test_raw) -> Dict[str, Any]:
    """The merged model and the untuned base (16/32-bit) scored on the test set, and the lift: the merged
    model's gain over the base on each figure, positive when better (loss: base - merged; a generation
    metric: merged - base)."""
    from jobs.evaluate import evaluate

    test = evaluate(merged_dir, cfg, raw=test_raw)
    base = evaluate(None, cfg, raw=test_raw)
    lift = {
        k: (base[k] - v if k.endswith("loss") else v - base[k])
        for k, v in test.items()
        if k != "num_examples" and k in base
    }
    return {"test": test, "base_test": base, "lift": lift}


def merge_best(cfg: RunConfig, run: RunDir, st: RunStorage, eval_raw, test_raw=None) -> Dict[str, Any]:
    """On the driver: run `merge_on_worker` as a Ray task with the trials' resources, record what it returns.

    The driver sends the adapter and the verification examples by value and never loads the model; the
    task asks for a whole GPU where the trials had one, and the trials' custom resources (the node pool).
    Writes merge_check.json and samples.json; returns {merge_check, scores, merged (where it is)}.
    """
    from jobs.formats import prompts_and_targets
    from jobs.modeling import load_tokenizer

    n = min(cfg.merge.verify_samples, len(eval_raw))
    inputs, targets = prompts_and_targets(cfg, load_tokenizer(cfg), eval_raw.select(range(n)))
    adapter_files = folder_files(run.adapter_dir)
    if st.remote and st.run_uri:
        merged = f"{st.run_uri}/best/merged"
        dest, fs = merged.removeprefix("s3://"), st.filesystem
    else:
        merged = dest = str(run.merged_dir.resolve())
        fs = None
    test_table = table_of(test_raw) if test_raw is not None else None
    out = on_worker(cfg, merge_on_worker, cfg.to_json(), adapter_files, inputs, targets, test_table, dest, fs)
    run.write_merge_check(out["merge_check"])
    run.write_samples(out["samples"])
    return {"merge_check": out["merge_check"], "scores": out["scores"], "merged": merged, "node": out["node"]}
