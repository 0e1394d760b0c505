"""The model card (README.md) of a publication: metrics, base model, data fingerprints, how to load it.

Deterministic for a given run, version and location, and scrubbed of anything that looks like a
credential (orchestrator.publish.manifest.scrub), like the manifest beside it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from orchestrator.core.scores import fidelity_of, fidelity_text, test_rows, test_size
from orchestrator.publish.manifest import RunRecord, best_metrics, parts_of, scrub, trained_config

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "-" if v is None else str(v)


def _count(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else _fmt(v)


def model_card(
    run: RunRecord,
    *,
    what: str,
    version: str,
    location: str,
    merge_check: Optional[Dict[str, Any]],
    repo_id: Optional[str] = None,
) -> str:
    """README.md: metrics, base model, data fingerprints, and how to load the adapter and the merged model.

    Deterministic for a given run, version and location (a re-run publication skips it when unchanged).
    """
    cfg = trained_config(run)
    base = cfg.model.name_or_path
    seq2seq = cfg.model.task == "seq2seq"
    auto = "AutoModelForSeq2SeqLM" if seq2seq else "AutoModelForCausalLM"
    front = ["---", f"library_name: {'peft' if 'adapter' in parts_of(what) else 'transformers'}"]
    if _HUB_ID.match(base) and not Path(base).exists():  # the Hub rejects a local path as base_model
        front.append(f"base_model: {base}")
    front += [
        "tags:",
        "- qlora",
        "- lora",
        "- peft",
        "- qlora-launch",
        f"pipeline_tag: {'text2text-generation' if seq2seq else 'text-generation'}",
        "---",
        "",
    ]
    exp = run.results.get("experiment") or cfg.experiment
    lines = front + [
        f"# {exp}",
        "",
        f"A {'QLoRA (4-bit NF4)' if cfg.quantization.mode == '4bit' else cfg.quantization.mode + ' LoRA'} fine-tune "
        f"of `{base}`{' (revision ' + cfg.model.revision + ')' if cfg.model.revision else ''} for {cfg.model.task}, "
        f"found by a {cfg.search.num_samples}-trial Ray Tune search on `{run.metric}` ({run.mode}). "
        f"Published by qlora-launch as version `{version}`.",
        "",
        "## Results (best trial, evaluation set)",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for k, v in best_metrics(run).items():
        if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second")):
            lines.append(f"| {k}{' (selection metric)' if k == run.metric else ''} | {_fmt(v)} |")
    p = run.results.get("params") or {}
    rows = test_rows(run.results)
    if rows:
        lines += [
            "",
            f"## Test set ({test_size(run.results)} held-out examples, never seen by the search)",
            "",
            "| metric | untuned base | this model | lift (+ is better) |",
            "|---|---|---|---|",
        ]
        lines += [f"| {k} | {_fmt(b)} | {_fmt(m)} | {_fmt(lift)} |" for k, b, m, lift in rows]
    lines += [
        "",
        "## Training",
        "",
        f"- best trial: `{run.best.get('trial_id')}`, step {_fmt(run.best.get('step'))}",
        "- hyperparameters searched: "
        + (", ".join(f"`{k}={_fmt(v)}`" for k, v in (run.best.get("params") or {}).items()) or "-"),
        f"- LoRA: r={cfg.lora.r}, alpha={cfg.lora.alpha}, dropout={cfg.lora.dropout}, targets "
        f"{cfg.lora.target_modules}; learning rate {cfg.training.learning_rate:.3g}",
        f"- trainable parameters: {_count(p.get('trainable_params'))} of {_count(p.get('total_params'))}"
        + (f" ({p['trainable_pct']:.2f} %)" if isinstance(p.get("trainable_pct"), (int, float)) else ""),
        "",
        "## Data (sha256 fingerprints)",
        "",
        "| split | sha256 |",
        "|---|---|",
    ]
    for split, fp in (run.results.get("data_fingerprints") or {}).items():
        lines.append(f"| {split} | `{fp}` |")
    if merge_check and "max_abs_logit_diff" in merge_check:
        lines += [
            "",
            "## Merge check",
            "",
            f"The merged model was compared with base + adapter on {merge_check.get('num_inputs')} evaluation "
            f"inputs right before publishing: max |logit difference| {_fmt(merge_check.get('max_abs_logit_diff'))} "
            f"(tolerance {_fmt(merge_check.get('tolerance'))}, {merge_check.get('dtype')}).",
        ]
        fid = fidelity_of(merge_check)
        if fid:
            lines += ["", f"Fidelity to the trained model: {fidelity_text(fid)}."]
    lines += ["", "## How to load", ""]
    if not repo_id:
        lines += _snippet(
            "Fetch this version first (every file is checked against `manifest.json`):",
            "bash",
            [f"qlora-launch pull {location} ./model"],
        )

    def source(part: str) -> str:  # where `from_pretrained` finds a part: the Hub repo, or the pulled folder
        return f'"{repo_id}", subfolder="{part}"' if repo_id else f'"./model/{part}"'

    if "adapter" in parts_of(what):
        lines += _snippet(
            "The LoRA adapter on the base model:",
            "python",
            [
                "from peft import PeftModel",
                f"from transformers import {auto}, AutoTokenizer",
                "",
                f'base = {auto}.from_pretrained("{base}")',
                f"model = PeftModel.from_pretrained(base, {source('adapter')})",
                f"tokenizer = AutoTokenizer.from_pretrained({source('adapter')})",
            ],
        )
    if "merged" in parts_of(what):
        lines += _snippet(
            "The merged model (adapter folded into the base; plain transformers, no peft):",
            "python",
            [
                f"from transformers import {auto}, AutoTokenizer",
                "",
                f"model = {auto}.from_pretrained({source('merged')})",
                f"tokenizer = AutoTokenizer.from_pretrained({source('merged')})",
            ],
        )
    lines += [
        "## Provenance",
        "",
        "`manifest.json` beside this card lists the validated config, the best hyperparameters and metrics, "
        "library versions, the qlora-launch git commit, times (UTC), and the sha256 and size of every file.",
        "",
    ]
    return scrub("\n".join(lines))


def _snippet(title: str, language: str, code: List[str]) -> List[str]:
    """A titled code block of the card, followed by a blank line."""
    return [title, "", f"```{language}", *code, "```", ""]
