"""Memory of 4-bit QLoRA against 16-bit LoRA and full fine-tuning, for the same model.

    python bench/bench_memory.py            # t5-small (real config) and TinyLlama-1.1B shape, random weights
    python bench/bench_memory.py --quick    # tiny T5 (every variant), tiny Llama (QLoRA, LoRA): one step each

Each model is built from its config with random weights (no download), saved once in bf16 under
bench/out/models/, then every variant runs in its own subprocess so its peak memory is its own:
load the model, set up the variant, run a few AdamW steps on random tokens. Per variant it reports

- weights: `model.get_memory_footprint()` right after loading (4-bit: packed weights; the quantization
  constants, which the footprint leaves out, are reported beside it), and the `estimate` figure;
- peak RSS: `resource.getrusage(RUSAGE_SELF).ru_maxrss`, read twice: after imports + loading + setup
  (the load peak), then reset through /proc/self/clear_refs and read after training (the training
  peak); the process peak is the larger. Beside them the RSS after the imports, the floor every
  variant pays (~0.4 GiB of Python, torch, transformers, peft). RSS counts resident file pages too:
  a bf16 checkpoint that transformers maps from disk counts once it is touched.

Variants (LoRA: r=8, alpha=16, all-linear; gradient checkpointing, non-reentrant, everywhere):
  qlora_4bit   NF4 + double quant, bf16 compute, prepare_model_for_kbit_training (the QLoRA recipe)
  lora_16bit   bf16 base, fp32 adapter
  full_16bit   every parameter trained in bf16, AdamW states in bf16 (8 bytes per parameter)
  full_fp32    every parameter trained in fp32 (16 bytes per parameter); by default only where it fits
               comfortably on this shared 24 GB machine (t5-small)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT_DIR, REPO, gib, mib, print_table, write_json  # noqa: E402

VARIANTS = ("qlora_4bit", "lora_16bit", "full_16bit", "full_fp32")

# name -> (config: a shipped arch name or an inline config dict, task, batch, input length, target length,
#          variants run by default)
MODELS: Dict[str, Dict[str, Any]] = {
    "t5-small": dict(config="t5-small", task="seq2seq", batch=4, src_len=128, tgt_len=32, variants=VARIANTS),
    "tinyllama-1.1b": dict(
        config="tinyllama-1.1b",
        task="causal_lm",
        batch=1,
        src_len=128,
        tgt_len=0,
        variants=("qlora_4bit", "lora_16bit", "full_16bit"),
    ),
}
QUICK_MODELS: Dict[str, Dict[str, Any]] = {
    "t5-tiny": dict(
        config=dict(
            model_type="t5",
            vocab_size=512,
            d_model=64,
            d_kv=16,
            d_ff=128,
            num_layers=2,
            num_heads=4,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        ),
        task="seq2seq",
        batch=2,
        src_len=16,
        tgt_len=8,
        variants=VARIANTS,
    ),
    "llama-tiny": dict(
        config=dict(
            model_type="llama",
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            tie_word_embeddings=False,
        ),
        task="causal_lm",
        batch=2,
        src_len=16,
        tgt_len=0,
        # the variants' code is the same for both tasks (the T5 runs every one); these two give the ratios
        variants=("qlora_4bit", "lora_16bit"),
    ),
}
LORA = dict(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---- memory probes (Linux) -----------------------------------------------------------------------


def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def reset_peak() -> bool:
    """Reset the process's peak-RSS mark (Linux >= 4.0), so the training phase gets its own peak.

    ru_maxrss of RUSAGE_SELF is the mm's high-water mark, which this resets too: read it before."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def ru_maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


# ---- subprocess roles ----------------------------------------------------------------------------


def model_config(spec: Dict[str, Any]):
    from transformers import AutoConfig

    if isinstance(spec["config"], str):
        from orchestrator.estimate.shapes import load_model_config

        return load_model_config(spec["config"])[0]
    d = dict(spec["config"])
    return AutoConfig.for_model(d.pop("model_type"), **d)


def auto_class(task: str):
    import transformers

    return transformers.AutoModelForSeq2SeqLM if task == "seq2seq" else transformers.AutoModelForCausalLM


def prepare(spec: Dict[str, Any], out: Path) -> None:
    """Build the model from its config with random weights and save it in bf16."""
    import torch

    torch.manual_seed(0)
    model = auto_class(spec["task"]).from_config(model_config(spec), dtype=torch.bfloat16)
    model.save_pretrained(out)


def worker(spec: Dict[str, Any], model_dir: Path, variant: str, steps: int) -> Dict[str, Any]:
    """Load, set up `variant`, train `steps` steps; every figure of one row of the table."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    rss_import = rss_now()
    t0 = time.perf_counter()
    kw: Dict[str, Any] = {"dtype": torch.float32 if variant == "full_fp32" else torch.bfloat16}
    if variant == "qlora_4bit":
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = auto_class(spec["task"]).from_pretrained(model_dir, **kw)
    load_s = time.perf_counter() - t0
    gc.collect()
    weights = model.get_memory_footprint()
    quant_state = _quant_state_bytes(model) if variant == "qlora_4bit" else 0
    quantized, quantized_as_16bit = _quantized_bytes(model) if variant == "qlora_4bit" else (0, 0)
    rss_loaded = rss_now()

    ckpt = {"use_reentrant": False}
    if variant == "qlora_4bit":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs=ckpt
        )
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt)
    if variant in ("qlora_4bit", "lora_16bit"):
        model = get_peft_model(model, LoraConfig(**LORA))
    model.config.use_cache = False
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    gc.collect()
    load_peak = ru_maxrss()  # imports + loading + setup
    peak_reset = reset_peak()

    vocab = model.config.vocab_size
    losses, step_s = [], []
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        ids = torch.randint(2, vocab, (spec["batch"], spec["src_len"]), generator=g)
        if spec["task"] == "seq2seq":
            labels = torch.randint(2, vocab, (spec["batch"], spec["tgt_len"]), generator=g)
        else:
            labels = ids
        t = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_s.append(time.perf_counter() - t)
        losses.append(float(loss))
    return {
        "variant": variant,
        "ok": True,
        "weights_bytes": weights,
        "quant_state_bytes": quant_state,
        "param_bytes_training": param_bytes,
        "trainable_params": trainable,
        "quantized_modules_bytes": quantized,
        "quantized_modules_as_16bit_bytes": quantized_as_16bit,
        "rss_after_import_bytes": rss_import,
        "rss_after_load_bytes": rss_loaded,
        "load_peak_rss_bytes": load_peak,
        "train_peak_rss_bytes": ru_maxrss() if peak_reset else None,
        "peak_rss_bytes": max(load_peak, ru_maxrss()),
        "load_s": load_s,
        "step_s": step_s,
        "losses": losses,
        "torch_threads": torch.get_num_threads(),
    }


def _quantized_bytes(model):
    """(bytes of the packed 4-bit weights, bytes the same weights take in 16-bit)."""
    import bitsandbytes as bnb

    mods = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    return (
        sum(m.weight.numel() * m.weight.element_size() for m in mods),
        sum(2 * m.in_features * m.out_features for m in mods),
    )


def _quant_state_bytes(model) -> int:
    import bitsandbytes as bnb

    seen, total = set(), 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            s = m.weight.quant_state
            for t in [s.absmax, s.code] + ([s.offset, s.state2.absmax, s.state2.code] if s.nested else []):
                if t.data_ptr() not in seen:
                    seen.add(t.data_ptr())
                    total += t.numel() * t.element_size()
    return total


# ---- the driver ----------------------------------------------------------------------------------


def _sub(args: List[str], timeout: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, __file__, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )


def estimates(model_dir: Path, spec: Dict[str, Any]) -> Dict[str, int]:
    from orchestrator.estimate import memory as est
    from orchestrator.estimate.shapes import inspect_model, load_model_config

    mc, src = load_model_config(str(model_dir))
    shape = inspect_model(mc, spec["task"], model_dir.name, src)
    return {
        "qlora_4bit": est.weight_bytes(shape, "nf4", 2, True),
        "lora_16bit": est.weight_bytes(shape, "16bit"),
        "full_16bit": est.weight_bytes(shape, "16bit"),
        "full_fp32": est.weight_bytes(shape, "fp32"),
        "total_params": shape.total_params,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="Tiny models, one step: a smoke run.")
    ap.add_argument("--models", default=None, help="Comma list of models to run (default: all of the mode).")
    ap.add_argument(
        "--variants", default=None, help=f"Comma list from {', '.join(VARIANTS)} (default: each model's own list)."
    )
    ap.add_argument("--steps", type=int, default=None, help="Training steps per variant (default 3; quick 1).")
    ap.add_argument("--cache", type=Path, default=OUT_DIR / "models", help="Where the random-weight models go.")
    ap.add_argument("--json-out", type=Path, default=None, help="JSON path (default bench/out/memory.json).")
    ap.add_argument("--timeout", type=int, default=900, help="Seconds per subprocess.")
    ap.add_argument("--worker", nargs=3, metavar=("MODEL", "DIR", "VARIANT"), help=argparse.SUPPRESS)
    ap.add_argument("--prepare", nargs="+", metavar="MODEL DIR", help=argparse.SUPPRESS)  # pairs
    args = ap.parse_args(argv)
    table = QUICK_MODELS if args.quick else MODELS
    steps = args.steps or (1 if args.quick else 3)

    if args.prepare:
        for name, d in zip(args.prepare[::2], args.prepare[1::2]):
            prepare({**MODELS, **QUICK_MODELS}[name], Path(d))
        return 0
    if args.worker:
        name, d, variant = args.worker
        print("RESULT " + json.dumps(worker({**MODELS, **QUICK_MODELS}[name], Path(d), variant, steps)))
        return 0

    names = args.models.split(",") if args.models else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {', '.join(table)}")
    # every missing model built in one subprocess (one set of imports)
    missing = [n for n in names if not (args.cache / n / "config.json").is_file()]
    if missing:
        t = time.perf_counter()
        print(f"[{', '.join(missing)}] building with random weights -> {args.cache}", flush=True)
        proc = _sub(["--prepare", *[a for n in missing for a in (n, str(args.cache / n))]], args.timeout)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        print(f"[{', '.join(missing)}] built in {time.perf_counter() - t:.0f} s", flush=True)
    results: List[Dict[str, Any]] = []
    for name in names:
        spec = table[name]
        model_dir = args.cache / name
        est = estimates(model_dir, spec)
        variants = args.variants.split(",") if args.variants else spec["variants"]
        for variant in variants:
            t = time.perf_counter()
            cmd = ["--worker", name, str(model_dir), variant, "--steps", str(steps)] + (
                ["--quick"] if args.quick else []
            )
            try:
                proc = _sub(cmd, args.timeout)
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                row = (
                    json.loads(line[7:])
                    if line
                    else {"variant": variant, "ok": False, "error": (proc.stderr or proc.stdout)[-2000:]}
                )
            except subprocess.TimeoutExpired:
                row = {"variant": variant, "ok": False, "error": f"timed out after {args.timeout} s"}
            row.update(
                model=name,
                total_params=est["total_params"],
                estimate_weights_bytes=est[variant],
                wall_s=time.perf_counter() - t,
                batch=spec["batch"],
                src_len=spec["src_len"],
                tgt_len=spec["tgt_len"],
            )
            results.append(row)
            status = "ok" if row["ok"] else "FAILED: " + row["error"].strip().splitlines()[-1][:200]
            print(f"[{name}] {variant}: {status} ({row['wall_s']:.0f} s)", flush=True)

    rows = []
    for r in results:
        if not r["ok"]:
            rows.append([r["model"], r["variant"]] + ["failed"] + [""] * 8)
            continue
        rows.append(
            [
                r["model"],
                r["variant"],
                mib(r["weights_bytes"]),
                mib(r["estimate_weights_bytes"]),
                f"{r['trainable_params']:,}",
                gib(r["rss_after_import_bytes"]),
                gib(r["load_peak_rss_bytes"]),
                gib(r["train_peak_rss_bytes"]),
                gib(r["peak_rss_bytes"]),
                f"{sorted(r['step_s'])[len(r['step_s']) // 2]:.2f}",
                f"{r['losses'][-1]:.3f}",
            ]
        )
    print_table(
        f"Memory per variant ({steps} steps each)",
        [
            "model",
            "variant",
            "weights MiB",
            "estimate MiB",
            "trainable",
            "RSS after import GiB",
            "load peak GiB",
            "training peak GiB",
            "process peak GiB",
            "median s/step",
            "last loss",
        ],
        rows,
    )

    ratios = {}
    for name in names:
        by = {r["variant"]: r for r in results if r["model"] == name and r["ok"]}
        q, l16 = by.get("qlora_4bit"), by.get("lora_16bit")
        if not (q and l16):
            continue
        floor = q["rss_after_import_bytes"]
        d = ratios[name] = {
            "weights_qlora_over_16bit": q["weights_bytes"] / l16["weights_bytes"],
            "weights_with_quant_state_qlora_over_16bit": (q["weights_bytes"] + q["quant_state_bytes"])
            / l16["weights_bytes"],
            "quantized_layers_4bit_with_quant_state_over_16bit": (q["quantized_modules_bytes"] + q["quant_state_bytes"])
            / q["quantized_modules_as_16bit_bytes"],
        }
        for other in ("lora_16bit", "full_16bit", "full_fp32"):
            o = by.get(other)
            if o:
                d[f"process_peak_qlora_over_{other}"] = q["peak_rss_bytes"] / o["peak_rss_bytes"]
                if q["train_peak_rss_bytes"] and o["train_peak_rss_bytes"]:
                    d[f"training_peak_above_import_qlora_over_{other}"] = (q["train_peak_rss_bytes"] - floor) / (
                        o["train_peak_rss_bytes"] - o["rss_after_import_bytes"]
                    )
    if ratios:
        print_table(
            "Ratios",
            ["model", "measure", "ratio"],
            [[m, k, f"{v:.3f}x"] for m, d in ratios.items() for k, v in d.items()],
        )
    path = write_json(
        "memory",
        {"steps": steps, "quick": args.quick, "lora": LORA, "results": results, "ratios": ratios},
        args.json_out,
    )
    print(f"\nwrote {path}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
