"""The throughput benchmark's report (scripts/gpu_throughput.py): the markdown table, the verdict against the
target, the package versions, and throughput.json / throughput.md, written after every variant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from random_llama import SHAPE_8B, SHAPE_TINY

TARGET_SPEEDUP, TARGET_MEMORY = 1.3, 0.8


def write_results(a, rows: List[Dict[str, Any]], cuda: bool, echo: bool = False) -> Optional[Dict[str, Any]]:
    """throughput.json and throughput.md in --out (through temporary files); hf_peft's row, if measured."""
    import torch

    base = next((r for r in rows if r["variant"] == "hf_peft" and "skipped" not in r), None)
    res = {
        "what": "QLoRA tokens/s and peak memory, plain HF + peft vs ours (scripts/gpu_throughput.py)",
        "cpu_smoke": not cuda,
        "device": torch.cuda.get_device_name() if cuda else "CPU (smoke: tiny Llama, not the GPU result)",
        "versions": versions(),
        "shape": SHAPE_8B if cuda else SHAPE_TINY,
        "batch_documents": a.batch,
        "warmup_steps": a.warmup,
        "steps": a.steps,
        "runs": rows,
        "verdict": verdict(rows, base),
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    md = f"{res['device']}; {res['versions']}\n\n{table(rows, base)}\n\nverdict: {res['verdict']}\n"
    for name, text in (("throughput.json", json.dumps(res, indent=1)), ("throughput.md", md)):
        (out / f"{name}.tmp").write_text(text)
        (out / f"{name}.tmp").replace(out / name)
    if echo:
        print(md, flush=True)
    return base


def table(rows: List[Dict[str, Any]], base: Optional[Dict[str, Any]]) -> str:
    lines = [
        "| variant | packing | kernels | compile | ckpt | tokens/s | × hf_peft | peak GiB | × hf_peft | MFU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['variant']} | skipped: {r['skipped']} |||||||||")
            continue
        speed = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}" if base else ""
        mem = f"{r['peak_gb'] / base['peak_gb']:.2f}" if base and r.get("peak_gb") and base.get("peak_gb") else ""
        peak = f"{r['peak_gb']:.2f}" if r.get("peak_gb") is not None else "n/a (CPU)"
        mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") is not None else "n/a"
        lines.append(
            f"| {r['variant']} | {r['packing']} | {r['kernels']} | {r['torch_compile']} | "
            f"{r['gradient_checkpointing']} | {r['tokens_per_s']:.1f} | {speed} | {peak} | {mem} | {mfu} |"
        )
    return "\n".join(lines)


def verdict(rows: List[Dict[str, Any]], base: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    if not base or not base.get("peak_gb"):
        return {"target": "not judged: no GPU figures for hf_peft"}
    ours = [r for r in rows if r.get("side") == "ours" and r.get("peak_gb")]
    for r in ours:
        r["speedup"], r["memory_ratio"] = r["tokens_per_s"] / base["tokens_per_s"], r["peak_gb"] / base["peak_gb"]
    met = [r["variant"] for r in ours if r["speedup"] >= TARGET_SPEEDUP and r["memory_ratio"] <= TARGET_MEMORY]
    best = max(ours, key=lambda r: r["speedup"], default=None)
    return {"meets_target": met, "fastest": best and best["variant"], "fastest_speedup": best and best["speedup"]}


def versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "liger-kernel", "triton"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out
