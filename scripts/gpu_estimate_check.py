"""Estimate vs measured peak GPU memory, three configurations of a ~1B Llama-shaped model (issue 15).

    python scripts/gpu_estimate_check.py --out DIR [--budget S | --deadline T]   # one NVIDIA GPU: the check
    python scripts/gpu_estimate_check.py --out DIR --cpu-smoke                   # a tiny Llama on CPU
    bash scripts/device_check.sh all                          # the device tool: gpu_throughput.py, then this

Offline: the model is built from a config with random weights (Llama-3.2-1B's shape: width 2048, 16
layers, MLP 8192, 32 heads / 8 KV heads, Llama 3's 128,256-row vocabulary (untied head); the tokenizer is
a BPE trained on the seed data, so only its first 2,048 ids occur, but the logits are as wide as the real
model's, which is what the loss memory, and Liger's fused cross-entropy, depend on), saved with
`save_pretrained`, and trained through the product's own path: one `qlora-launch train` per configuration
(4-bit NF4, bf16 compute). Every example is longer than the configured lengths, so each batch is exactly
as long as the estimate assumes. The 2,048-token configuration runs twice, plain and with
`training.kernels: liger` (the estimate counts Liger's fused linear cross-entropy in chunks).

Deadline: every `train` gets the time left before --deadline (epoch seconds; or --budget seconds from the
start) as its timeout, minus a margin; a configuration with less than --min-run seconds left is reported
as skipped. estimate_check.json and estimate_check.md are rewritten in --results after every row.

Each run records `estimated_peak_gb` (the plan, made before the trial starts) and `measured_peak_gb`
(torch's max_memory_allocated over the trial); like `qlora-launch estimate --calibrate`, the comparison
adds the CUDA context the estimate counts (CUDA_OVERHEAD_GIB) to the measurement. Target: within 15 %.
Writes estimate_check.json and estimate_check.md (the table for docs/benchmarks.md) into --results (default
--out). Exit 1 when a run fails or, on a GPU, a run configuration is off by more than 15 %; a configuration
skipped at the deadline is neither.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from process_group import STOP_STEPS, run_group, terminate_on_sigterm  # noqa: E402  (scripts/, beside this)

TOLERANCE = 0.15
# (name, lora.r, batch_size, max_input_length, max_target_length, gradient_checkpointing, training.kernels)
# The most informative first: a deadline cuts the last. (Until the Liger row was added there was a fourth,
# "r8 b1 512": weights and context only, the easiest case; dropped to keep three runs inside ~200 s.)
CONFIGS = [
    ("r16 b8 2048 ckpt", 16, 8, 1792, 256, "true", "none"),
    ("r16 b8 2048 ckpt liger", 16, 8, 1792, 256, "true", "liger"),
    ("r64 b4 1024", 64, 4, 896, 128, "false", "none"),
]
# vocab: the model's rows (None: the tokenizer's 2,048); the smoke's is also wider than its tokenizer.
SHAPE_1B = dict(hidden=2048, layers=16, intermediate=8192, heads=32, kv_heads=8, vocab=128256)
SHAPE_SMOKE = dict(hidden=64, layers=2, intermediate=128, heads=4, kv_heads=2, vocab=4096)
MARGIN_S = 25  # a train's timeout ends this long before the deadline: its group's stop (SIGINT 10 s, SIGTERM 5, KILL 5)


def build_model(out: Path, shape: dict, gpu: bool) -> Path:
    """A Llama of `shape` with random weights (bf16 on a GPU, built there: seconds, not a CPU init)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from jobs.tiny_models import _texts, build_tokenizer

    if (out / "config.json").exists():
        return out
    tok = build_tokenizer(_texts([str(REPO / "examples/data/seed/train.jsonl")]), vocab_size=2048, add_bos=True)
    cfg = LlamaConfig(
        vocab_size=max(len(tok), shape.get("vocab") or 0),
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=4096,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if gpu else "cpu"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16 if gpu else torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(f"model: {n / 1e9:.3f} B parameters, saved to {out}", flush=True)
    return out


def write_data(path: Path, rows: int = 48) -> Path:
    """Rows whose article and summary are longer than any configured length (the seed texts repeated)."""
    seed = [json.loads(x) for x in (REPO / "examples/data/seed/train.jsonl").read_text().splitlines() if x.strip()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            a = " ".join(seed[(i + k) % len(seed)]["article"] for k in range(40))
            s = " ".join(seed[(i + k) % len(seed)]["summary"] for k in range(40))
            f.write(json.dumps({"article": a, "summary": s}, ensure_ascii=False) + "\n")
    return path


def config_yaml(out: Path, model: Path, data: Path, gpu: bool, steps: int) -> Path:
    dtype = "bfloat16" if gpu else "float32"
    text = f"""# scripts/gpu_estimate_check.py writes this; each configuration overrides it with --set
model: {{name_or_path: {model}, task: causal_lm}}
quantization: {{mode: 4bit, quant_type: nf4, double_quant: true, compute_dtype: {dtype}}}
lora: {{r: 8, alpha: 16, dropout: 0.0, target_modules: all-linear}}
data: {{train: {data}, eval: {data}, input_column: article, target_column: summary,
       max_input_length: 448, max_target_length: 64}}
training: {{max_steps: {steps}, batch_size: 1, learning_rate: 1.0e-4, eval_steps: {steps}, logging_steps: 1,
           mixed_precision: auto, gradient_checkpointing: false}}
resources: {{num_workers: 1, cpus_per_worker: 2, gpus_per_worker: {1 if gpu else 0}}}
tracking: {{wandb: false}}
output: {{dir: {out / "runs"}}}
merge: {{enabled: false}}
"""
    path = out / "estimate_check.yaml"
    path.write_text(text)
    return path


def run_one(
    cfg: Path,
    name: str,
    r: int,
    batch: int,
    inp: int,
    tgt: int,
    ckpt: str,
    kernels: str,
    *,
    out: Path,
    gpu: bool,
    timeout: Optional[float] = None,
) -> dict:
    exp = "est-" + name.replace(" ", "-")
    row = {"config": name, "lora_r": r, "batch": batch, "seq": inp + tgt, "checkpointing": ckpt == "true"}
    row["kernels"] = kernels
    sets = {
        "lora.r": r,
        "lora.alpha": 2 * r,
        "training.batch_size": batch,
        "data.max_input_length": inp,
        "data.max_target_length": tgt,
        "training.gradient_checkpointing": ckpt,
        "training.kernels": kernels,
        "output.experiment": exp,
    }
    if kernels == "liger":
        # Liger fuses the loss in training only; evaluation at the training batch would build the whole logits
        # and set the peak, so this row evaluates one example at a time: its peak is the fused training step's.
        sets["training.eval_batch_size"] = 1
    cmd = [sys.executable, "-m", "orchestrator.cli", "train", str(cfg), "--cpus", "4" if gpu else "2"]
    cmd += ["--gpus", "1" if gpu else "0"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    t0 = time.time()
    log = out / f"{exp}.log"
    with log.open("w") as f:
        rc = call_until(cmd, f, timeout)
    row["wall_s"] = round(time.time() - t0, 1)
    if rc is None:
        row["skipped"] = f"stopped at the deadline ({timeout:.0f} s); see {log.name}"
        return row
    if rc != 0:
        row["error"] = f"train exited {rc}; see {log.name}: " + " | ".join(log.read_text().splitlines()[-5:])
        return row
    from orchestrator.estimate.memory import with_cuda_context

    trial = json.loads((out / "runs" / exp / "results.json").read_text())["trials"][0]
    est, got = trial.get("estimated_peak_gb"), trial.get("measured_peak_gb")
    row.update(estimated_gb=est, measured_allocated_gb=got)
    if isinstance(got, (int, float)) and isinstance(est, (int, float)) and est > 0:
        row["measured_gb"] = with_cuda_context(got)
        row["ratio"] = round(row["measured_gb"] / est, 3)
        row["within_15pct"] = abs(row["ratio"] - 1) <= TOLERANCE
    return row


def call_until(cmd: list, log, timeout: Optional[float]) -> Optional[int]:
    """Run `cmd` (its own process group) with its output in `log`; its exit code, or None when it ran past
    `timeout`: then the group gets SIGINT (the CLI shuts Ray down), SIGTERM after 10 s, SIGKILL after 5 more."""
    return run_group(cmd, timeout, ((signal.SIGINT, 10), *STOP_STEPS), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def table(rows) -> str:
    lines = [
        "| configuration | seq | estimated GiB | measured GiB (+ CUDA context) | measured / estimated | within 15 % |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['config']} | {r['seq']} | skipped: {r['skipped']} | | | |")
            continue
        if "error" in r:
            lines.append(f"| {r['config']} | {r['seq']} | failed: {r['error'][:80]} | | | |")
            continue
        if not isinstance(r.get("estimated_gb"), (int, float)):
            lines.append(f"| {r['config']} | {r['seq']} | no estimate recorded | | | |")
            continue
        m = r.get("measured_gb")
        got = "—" if m is None else f"{m:.3f}"
        ratio = "—" if m is None else f"{r['ratio']:.2f}"
        ok = "—" if m is None else ("yes" if r["within_15pct"] else "no")
        lines.append(f"| {r['config']} | {r['seq']} | {r['estimated_gb']:.3f} | {got} | {ratio} | {ok} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="Work folder (model, data, runs, each train's log).")
    ap.add_argument("--results", help="Where estimate_check.json and .md go, after every row (default: --out).")
    ap.add_argument("--cpu-smoke", action="store_true", help="A tiny Llama on CPU: checks the script only.")
    ap.add_argument("--steps", type=int, default=6, help="Training steps per configuration (default 6).")
    ap.add_argument("--budget", type=float, help="Seconds for everything from now (default: no limit).")
    ap.add_argument("--deadline", type=float, help="Epoch seconds by which everything has ended (wins over --budget).")
    ap.add_argument(
        "--min-run",
        type=float,
        help="Skip a configuration with less than this many seconds left (default GPU 45, CPU 20).",
    )
    args = ap.parse_args(argv)
    terminate_on_sigterm()
    deadline = args.deadline or (time.time() + args.budget if args.budget else None)
    gpu = not args.cpu_smoke
    min_run = args.min_run if args.min_run is not None else (45.0 if gpu else 20.0)
    if gpu:
        import torch

        if not torch.cuda.is_available():
            print("torch sees no CUDA device: run with --cpu-smoke to check the script on CPU", file=sys.stderr)
            return 1
    out = Path(args.out).resolve()
    results = Path(args.results).resolve() if args.results else out
    results.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = build_model(out / "model", SHAPE_1B if gpu else SHAPE_SMOKE, gpu)
    data = write_data(out / "data" / "long.jsonl")
    cfg = config_yaml(out, model, data, gpu, args.steps)
    configs = CONFIGS if gpu else [(n, r, b, i // 8, t // 8, c, k) for n, r, b, i, t, c, k in CONFIGS]
    rows: list = []
    for name, r, b, i, t, c, k in configs:
        row = {"config": name, "lora_r": r, "batch": b, "seq": i + t, "checkpointing": c == "true", "kernels": k}
        left = deadline - time.time() if deadline else None
        if k == "liger" and not gpu:
            row["skipped"] = "needs CUDA (Liger's Triton kernels; the config refuses liger on CPU trials)"
        elif left is not None and left - MARGIN_S < min_run:
            row["skipped"] = f"under {min_run + MARGIN_S:.0f} s left ({left:.0f} s before the deadline)"
        else:
            row = run_one(cfg, name, r, b, i, t, c, k, out=out, gpu=gpu, timeout=left - MARGIN_S if left else None)
        rows.append(row)
        print(json.dumps(rows[-1]), flush=True)
        write_results(results, gpu, rows)
    write_results(results, gpu, rows)
    print(table(rows))
    failed = [r for r in rows if "error" in r or (gpu and "skipped" not in r and not r.get("within_15pct"))]
    return 1 if failed else 0


def write_results(results: Path, gpu: bool, rows: list) -> None:
    """estimate_check.json and estimate_check.md, through temporary files (a kill mid-write leaves the last)."""
    for name, text in (
        ("estimate_check.json", json.dumps({"gpu": gpu, "rows": rows}, indent=2)),
        ("estimate_check.md", table(rows) + "\n"),
    ):
        tmp = results / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(results / name)


if __name__ == "__main__":
    sys.exit(main())
