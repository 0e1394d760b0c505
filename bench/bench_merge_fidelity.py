"""Merge fidelity: how far the merged model is from the trained one (4-bit base + adapter), per `merge.into`.

    python bench/bench_merge_fidelity.py                 # tiny T5 and tiny Llama
    python bench/bench_merge_fidelity.py --steps 60 --size 128

For each architecture: a tiny model (jobs.tiny_models, built from the seed train split), a LoRA adapter
trained on the 4-bit NF4 base exactly as a trial builds it (jobs.modeling.load_trainable; a plain AdamW
loop on the seed train pairs, so the adapter is far from zero), then jobs.merge.merge_and_check with
`merge.into: original` and `merge.into: dequantized` on the seed eval + test pairs (never trained on).
Reported: the fidelity figures (jobs.merge_fidelity: mean per-token KL(trained || merged), eval loss
and ROUGE-L of the trained and the merged model) and the merge check's max |logit diff| against
base + adapter unmerged. Figures go to bench/out/merge_fidelity.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import OUT_DIR, machine, markdown_table, print_table, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "examples" / "data" / "seed"


def rows(name: str) -> List[Dict[str, str]]:
    return [json.loads(x) for x in (SEED / f"{name}.jsonl").read_text().splitlines() if x.strip()]


def config(model: Path, task: str, into: str, compute_dtype: str):
    from orchestrator.core.config_load import validate_dict

    return validate_dict(
        {
            "model": {"name_or_path": str(model), "task": task},
            "data": {
                "train": str(SEED / "train.jsonl"),
                "eval": str(SEED / "eval.jsonl"),
                "input_column": "article",
                "target_column": "summary",
                "max_input_length": 128,
                "max_target_length": 32,
                "prompt_template": "Summarize: {input}\nSummary: ",
            },
            "quantization": {"compute_dtype": compute_dtype},
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
            "training": {"generation_max_length": 24},
            "merge": {"into": into, "dtype": "float32"},
        }
    )


def train_adapter(cfg, out: Path, steps: int, lr: float, device: str) -> Path:
    """A LoRA adapter trained on the 4-bit base, the way a trial builds the model."""
    import datasets
    import torch

    from jobs.data import build_collator, tokenize
    from jobs.modeling import load_tokenizer, load_trainable

    tok = load_tokenizer(cfg)
    model = load_trainable(cfg, device_map={"": device} if device != "cpu" else None)
    train = rows("train")
    feats = tokenize(datasets.Dataset.from_list(train), tok, cfg)
    collate = build_collator(tok, model if cfg.model.task == "seq2seq" else None)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randperm(len(feats), generator=g)[:4].tolist()
        batch = collate([feats[i] for i in idx]).to(device)
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    return out


def measure(arch: str, steps: int, lr: float, size: int, work: Path, device: str, dtype: str) -> List[Dict[str, Any]]:
    from jobs.merge import merge_and_check
    from jobs.tiny_models import make_tiny_model

    task = "seq2seq" if arch == "t5" else "causal_lm"
    model = work / f"tiny-{arch}"
    if not model.exists():
        make_tiny_model(arch, [str(SEED / "train.jsonl")], str(model), size=size)
    held = rows("eval") + rows("test")
    inputs, targets = [r["article"] for r in held], [r["summary"] for r in held]
    adapter = train_adapter(config(model, task, "original", dtype), work / f"adapter-{arch}", steps, lr, device)
    out = []
    for into in ("original", "dequantized"):
        cfg = config(model, task, into, dtype)
        with tempfile.TemporaryDirectory(prefix="qlora-fid-") as tmp:
            check, _ = merge_and_check(cfg, adapter, Path(tmp) / "merged", inputs, targets)
        f = check["fidelity"]
        out.append(
            {
                "model": f"tiny {arch} (hidden {size})",
                "into": into,
                "kl_mean": f["kl_mean"],
                "trained_eval_loss": f["trained_eval_loss"],
                "eval_loss_delta": f["eval_loss_delta"],
                "trained_rougeL": f["trained_rougeL"],
                "rougeL_delta": f["rougeL_delta"],
                "max_abs_logit_diff_vs_unmerged": check["max_abs_logit_diff"],
                "tokens": f["positions"],
            }
        )
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="AdamW steps of adapter training.")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--size", type=int, default=64, help="Hidden size of the tiny models.")
    ap.add_argument("--archs", default="t5,llama")
    args = ap.parse_args(argv)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    work = OUT_DIR / "merge_fidelity"
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for arch in args.archs.split(","):
        results += measure(arch, args.steps, args.lr, args.size, work, device, dtype)
    cols = [
        "model",
        "into",
        "kl_mean",
        "trained_eval_loss",
        "eval_loss_delta",
        "trained_rougeL",
        "rougeL_delta",
        "max_abs_logit_diff_vs_unmerged",
        "tokens",
    ]
    table = [[r[c] if not isinstance(r[c], float) else f"{r[c]:.4g}" for c in cols] for r in results]
    print_table("Merge fidelity: merged vs the trained model (4-bit base + adapter)", cols, table)
    print(markdown_table(cols, table))
    write_json("merge_fidelity", {"machine": machine(), "args": vars(args), "compute_dtype": dtype, "results": results})


if __name__ == "__main__":
    main()
