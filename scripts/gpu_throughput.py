#!/usr/bin/env python
"""GPU throughput: plain HF + peft vs our build path, feature by feature, on a Llama-3.1-8B-shaped QLoRA.

    python scripts/gpu_throughput.py [--out DIR] [--budget S | --deadline T]   (a CUDA GPU; no download)
    python scripts/gpu_throughput.py --cpu-smoke [--out DIR]                   (a tiny Llama on CPU, same code)
    bash scripts/device_check.sh all         (the device tool, one call: this first, gpu_estimate_check.py last)

The model: random weights in Llama-3.1-8B's shape (hidden 4096, 32 layers, intermediate 14336, 32 heads /
8 KV heads, vocab 128256), built on the meta device and quantized layer by layer on the GPU (NF4, double
quantization, bf16 compute): one bf16 matrix at a time is ever materialized, never a 16 GB init. LoRA r=16
(alpha 32, dropout 0.05) on all linear layers. The data: random token documents of uniform random length
(64 to 960 tokens, seeded), `--batch` (4) a step: about 2,048 real tokens, one 2,048-token packed sequence
when packed. Every variant trains on the same documents for `--warmup` + `--steps` optimizer steps in its
own process (Liger patches modules; peak memory is per process); tokens/s counts the real tokens of the
measured steps over their time (jobs/throughput.py: data loading, forward, backward, optimizer; the
warm-up steps, which include torch.compile's compilation, are left out and reported as first_steps_s).

Variants (each a row; `--cpu-smoke` reports the CUDA-only ones as skipped with the reason):
    hf_peft                      plain transformers Trainer + peft, the usual QLoRA recipe: padded batches,
                                 prepare_model_for_kbit_training with gradient checkpointing (non-reentrant)
    ours                         jobs.modeling.load_trainable + jobs.train_loop.build_trainer, packing off
    ours_packing                 + data.packing true (one padding-free row; varlen where the attention has it)
    ours_packing_liger           + training.kernels liger
    ours_packing_liger_no_ckpt   + gradient checkpointing off
    ours_packing_liger_compile   + training.torch_compile true, its packed rows cut or padded to one fixed
                                 length (--fixed-rows; the mean step, 2,048 tokens) so that no step
                                 recompiles; skipped, saying so, with under --compile-min (200) s left
    ours_fsdp (torchrun)         ours_packing over every GPU of the machine with resources.strategy fsdp
                                 (skipped, with the reason, on a one-GPU machine; --fsdp-ranks 2 runs it on
                                 CPU with gloo); tokens/s summed over the ranks, peak memory rank 0's
Target (issue 16): a variant of ours at >= 1.3x hf_peft's tokens/s and <= 0.8x its peak memory.
Output: throughput.json and throughput.md in --out, rewritten after every variant. Deadline: each isolated
variant gets the time left before --deadline (epoch seconds; or --budget from the start) as its timeout.
Exit 1 when hf_peft has no figures or a variant failed (not when one was skipped or stopped at the deadline).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from process_group import run_group, terminate_on_sigterm  # noqa: E402
from random_llama import SHAPE_8B, SHAPE_TINY, build_model, documents, fixed_rows  # noqa: E402  (scripts/, beside this)
from throughput_report import write_results  # noqa: E402

# name: (side, packing, kernels, torch_compile, gradient checkpointing)
VARIANTS: Dict[str, tuple] = {
    "hf_peft": ("plain", False, "none", False, True),
    "ours": ("ours", False, "none", False, True),
    "ours_packing": ("ours", True, "none", False, True),
    "ours_packing_liger": ("ours", True, "liger", False, True),
    "ours_packing_liger_no_ckpt": ("ours", True, "liger", False, False),
    "ours_packing_liger_compile": ("ours", True, "liger", True, True),
}
FSDP = "ours_fsdp"  # ours_packing sharded over --fsdp-ranks processes (torchrun), resources.strategy fsdp


def skip_reason(name: str, cuda: bool) -> Optional[str]:
    _, _, kernels, compiled, _ = VARIANTS[name]
    if kernels == "liger" and not cuda:
        return "needs CUDA: Liger's kernels are Triton GPU kernels"
    if compiled and not cuda:
        return "measured on CUDA only (the CPU smoke stays short; inductor on CPU compiles C++ for minutes)"
    if kernels == "liger":
        from jobs.throughput import resolve_kernels

        if resolve_kernels("auto", True, "llama")[0] != "liger":
            return resolve_kernels("auto", True, "llama")[1]
    return None


def run_variant(name: str, a) -> Dict[str, Any]:
    """Train one variant for warmup + steps optimizer steps; its figures."""
    import torch
    from transformers import TrainerCallback

    from jobs.throughput import peak_tflops
    from jobs.tiny_models import build_tokenizer

    side, packing, kernels, compiled, ckpt = VARIANTS["ours_packing" if name == FSDP else name]
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and not a.cpu_smoke
    dtype = torch.bfloat16 if cuda else torch.float32
    device = torch.device(f"cuda:{rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:  # a tiny model on a shared CPU: more threads only contend (torchrun sets 1 for the FSDP ranks too)
        torch.set_num_threads(1)
    if world > 1:  # torchrun's ranks: the process group jobs.fsdp_load's broadcasts (and accelerate) use
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    shape = SHAPE_8B if cuda and not a.cpu_smoke else SHAPE_TINY
    lo, hi = (64, 960) if shape is SHAPE_8B else (8, 40)
    ranks = world if name == FSDP else 1  # each FSDP rank trains on its own share of every step
    docs = documents(a.batch * (a.warmup + a.steps) * ranks, lo, hi, shape["vocab_size"])
    tok = build_tokenizer(["a b c d e f g"], vocab_size=300)
    cfg = run_config(a, packing, kernels, compiled, ckpt, cuda, ranks, shape)
    storage = dtype if name == FSDP else None  # FSDP shards floating-point tensors only
    out_dir = tempfile.mkdtemp(prefix=f"thr-{name}-")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if side == "plain":
        trainer, meter = plain_trainer(cfg, build_model(shape, device, dtype), tok, docs, out_dir, ckpt, a)
    else:
        import jobs.modeling
        from jobs.train_loop import build_trainer

        def load_base(_cfg, quantized=True, dtype_name=None, device_map=None):
            # jobs.fsdp_load asks for rank 0's copy on the CPU (device_map {"": "cpu"}); otherwise this rank's device
            where = torch.device(device_map[""]) if device_map else device
            return build_model(shape, where, dtype, quant_storage=storage)

        jobs.modeling.load_base = load_base
        tok.padding_side = "left"  # as jobs.modeling.load_tokenizer sets it for causal LMs
        model = jobs.modeling.load_trainable(cfg)
        trainer = build_trainer(cfg, model, tok, {"train": docs, "eval": docs.select(range(2))}, {}, out_dir)
        report = next(c for c in trainer.callback_handler.callbacks if hasattr(c, "meter"))
        trainer.remove_callback(report)  # it reports to Ray Train; the meter it holds stays attached
        meter = report.meter
    fixed = fixed_length(a, name, shape) if side == "ours" and packing else None
    if fixed:
        fixed_rows(trainer, meter, fixed)
    build_s = time.perf_counter() - t0
    mark: Dict[str, float] = {}

    class Mark(TrainerCallback):  # runs after the meter's clock (added later): the warm-up's end
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == a.warmup:
                mark.update(tokens=meter.tokens, seconds=meter.seconds, at=time.perf_counter())
            control.should_save = control.should_evaluate = False  # nothing but training steps
            return control

    trainer.add_callback(Mark())
    t1 = time.perf_counter()
    out = trainer.train()
    from jobs.throughput import _across_workers  # summed tokens, the slowest rank's time (one rank: as is)

    tokens, seconds, _ = _across_workers(meter.tokens - mark["tokens"], meter.seconds - mark["seconds"])
    rate = tokens / seconds
    peak_gb = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    reserved_gb = torch.cuda.max_memory_reserved() / 2**30 if cuda else None
    device_name = torch.cuda.get_device_name() if cuda else None
    peak = peak_tflops(device_name)
    flat = type(getattr(trainer.data_collator, "inner", trainer.data_collator)).__name__ == "DataCollatorWithFlattening"
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return {
        "variant": name,
        "side": side,
        "ranks": world,
        "packing": flat,
        "kernels": "liger" if trainer.args.use_liger_kernel else "none",
        "torch_compile": bool(trainer.args.torch_compile),
        "gradient_checkpointing": ckpt,
        "steps_measured": a.steps,
        "tokens_measured": tokens,
        "tokens_per_step": tokens / a.steps,
        "padded_tokens_per_step": padded_per_step(docs, a.batch),
        "tokens_per_s": rate,
        "mfu": (rate * meter.flops / (peak * 1e12 * world)) if peak and meter.flops else None,
        "peak_gb": peak_gb,  # this rank's (rank 0 under FSDP: each holds 1/N of the weights)
        "reserved_gb": reserved_gb,
        "build_s": round(build_s, 1),
        "first_steps_s": round(mark["at"] - t1, 1),
        "train_loss": out.training_loss,
        "fixed_row_tokens": fixed,  # packed rows cut or padded to this length (None: as they come)
    }


def fixed_length(a, name: str, shape) -> Optional[int]:
    """The fixed packed-row length for this variant (--fixed-rows), or None: the mean step's real tokens."""
    compiled = VARIANTS["ours_packing" if name == FSDP else name][3]
    if a.fixed_rows == "none" or (a.fixed_rows == "compile" and not compiled):
        return None
    lo, hi = (64, 960) if shape is SHAPE_8B else (8, 40)
    return a.batch * (lo + hi) // 2


def padded_per_step(docs, batch: int) -> float:
    """Mean tokens a padded batch of `batch` documents computes (what packing saves), in document order."""
    lens = [len(x) for x in docs["input_ids"]]
    steps = [lens[i : i + batch] for i in range(0, len(lens), batch)]
    return sum(max(s) * len(s) for s in steps) / len(steps)


def run_config(a, packing: bool, kernels: str, compiled: bool, ckpt: bool, cuda: bool, ranks: int, shape):
    from transformers import LlamaConfig

    from orchestrator.core.config_load import validate_dict

    data_file = Path(tempfile.mkdtemp(prefix="thr-data-")) / "train.jsonl"
    data_file.write_text('{"input": "a", "output": "b"}\n' * 4)
    # The model's config, no weights: FSDP ranks > 0 build their meta skeleton from it (jobs/fsdp_load.py)
    model_dir = Path(tempfile.mkdtemp(prefix="thr-model-")) / ("llama-3.1-8b-shaped" if shape is SHAPE_8B else "tiny")
    LlamaConfig(**shape).save_pretrained(model_dir)
    return validate_dict(
        {
            "model": {"name_or_path": str(model_dir), "task": "causal_lm"},
            "data": {"train": str(data_file), "eval": str(data_file), "packing": packing},
            "quantization": {"compute_dtype": "bfloat16" if cuda else "float32"},
            "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
            "training": {
                "max_steps": a.warmup + a.steps,
                "batch_size": a.batch,
                "learning_rate": 2e-4,
                "gradient_checkpointing": ckpt,
                "kernels": kernels,
                "torch_compile": compiled,
                "eval_steps": 10_000,
                "logging_steps": 10_000,
                "group_by_length": False,
            },
            "resources": {"gpus_per_worker": 1 if cuda else 0, "num_workers": ranks}
            | ({"strategy": "fsdp"} if ranks > 1 else {}),
            "tracking": {"wandb": False, "backend": "none"},
        }
    )


def plain_trainer(cfg, model, tok, docs, out_dir: str, ckpt: bool, a):
    """The usual QLoRA script: transformers + peft, nothing of ours but the meter that times it."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from jobs.throughput import ThroughputMeter

    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=ckpt, gradient_checkpointing_kwargs={"use_reentrant": False}
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    cuda = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=out_dir,
        max_steps=a.warmup + a.steps,
        per_device_train_batch_size=a.batch,
        learning_rate=2e-4,
        bf16=cuda,
        use_cpu=not cuda,
        logging_steps=10_000,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        optim="adamw_torch_fused",
        remove_unused_columns=False,
        seed=42,
    )
    collator = DataCollatorForSeq2Seq(tok, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=args, train_dataset=docs, data_collator=collator, processing_class=tok)
    meter = ThroughputMeter(cfg, model, "none", False)
    meter.attach(trainer)
    return trainer, meter


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="a tiny Llama on CPU, same code")
    p.add_argument("--out", default=str(REPO / "bench" / "out" / "throughput"))
    p.add_argument("--budget", type=float, default=500.0, help="seconds for every variant together")
    p.add_argument("--deadline", type=float, help="epoch seconds by which every variant has ended (wins over --budget)")
    p.add_argument(
        "--compile-min",
        type=float,
        default=200.0,
        help="skip the torch.compile variant with fewer seconds than this left (its compilation alone takes minutes)",
    )
    p.add_argument(
        "--fixed-rows",
        choices=("compile", "all", "none"),
        default="compile",
        help="cut or pad packed rows to one fixed length: for the torch.compile variant only (default), every "
        "packed variant, or none",
    )
    p.add_argument("--batch", type=int, default=4, help="documents per step (~2,048 tokens on the 8B shape)")
    p.add_argument("--warmup", type=int, default=None, help="steps not measured (default 3; CPU smoke 1)")
    p.add_argument("--steps", type=int, default=None, help="steps measured (default 10; CPU smoke 3)")
    p.add_argument("--variants", default=",".join([*VARIANTS, FSDP]))
    p.add_argument("--fsdp-ranks", type=int, default=None, help="processes of the FSDP run (default: the GPUs)")
    p.add_argument(
        "--isolate",
        choices=("auto", "yes", "no"),
        default="auto",
        help="each variant in its own process (auto: on CUDA)",
    )
    p.add_argument("--variant", help=argparse.SUPPRESS)  # one variant, in this process (the isolated child)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.warmup = max(1, a.warmup if a.warmup is not None else (1 if a.cpu_smoke else 3))
    a.steps = max(1, a.steps if a.steps is not None else (3 if a.cpu_smoke else 10))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if a.variant:
        row = run_variant(a.variant, a)
        if os.environ.get("RANK", "0") == "0":
            Path(a.result).write_text(json.dumps(row))
        return 0
    import torch

    terminate_on_sigterm()
    cuda = torch.cuda.is_available() and not a.cpu_smoke
    if not cuda and not a.cpu_smoke:
        print("no CUDA device: use --cpu-smoke", file=sys.stderr)
        return 2
    isolate = a.isolate == "yes" or (a.isolate == "auto" and cuda)
    deadline = a.deadline or time.time() + a.budget
    rows: List[Dict[str, Any]] = []
    ranks = a.fsdp_ranks if a.fsdp_ranks is not None else (torch.cuda.device_count() if cuda else 0)
    for name in [v for v in a.variants.split(",") if v]:
        why = skip_reason(name, cuda) if name != FSDP else None
        if name == FSDP and ranks < 2:
            why = f"{ranks} {'GPU' if cuda else 'rank'} on this machine: FSDP needs 2 or more" + (
                "" if cuda else " (--fsdp-ranks 2 runs it on CPU, gloo)"
            )
        left = deadline - time.time()
        if why is None and name in VARIANTS and VARIANTS[name][3] and left < a.compile_min:
            why = f"under {a.compile_min:.0f} s left ({left:.0f} s): torch.compile's compilation would not fit"
        if why is None and left < 30:
            why = f"budget: {left:.0f} s left"
        if why:
            rows.append({"variant": name, "skipped": why})
            print(f"== {name}: skipped ({why})", flush=True)
        else:
            print(f"== {name} ({left:.0f} s of the budget left)", flush=True)
            if name == FSDP:
                rows.append(run_isolated(name, a, left, ranks))
            else:
                rows.append(run_isolated(name, a, left) if isolate else run_variant(name, a))
            print(json.dumps(rows[-1]), flush=True)
        base = write_results(a, rows, cuda)
    base = write_results(a, rows, cuda, echo=True)
    failed = [r["variant"] for r in rows if r.get("failed")]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 0 if base and not failed else 1


def run_isolated(name: str, a, left: float, ranks: int = 1) -> Dict[str, Any]:
    """One variant in a fresh process (or `ranks` processes under torchrun); its row."""
    result = Path(tempfile.mkdtemp(prefix="thr-res-")) / "result.json"
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] if ranks > 1 else []
    cmd = [
        sys.executable,
        *launch,
        __file__,
        "--variant",
        name,
        "--result",
        str(result),
        "--batch",
        str(a.batch),
        "--warmup",
        str(a.warmup),
        "--steps",
        str(a.steps),
        "--fixed-rows",
        a.fixed_rows,
    ] + (["--cpu-smoke"] if a.cpu_smoke else [])
    limit = max(left - 15, 20)  # its group's stop (SIGTERM 5 s, KILL 5) ends before the deadline
    rc = run_group(cmd, limit)  # its own group: torchrun's ranks go with it
    if rc is None:
        return {"variant": name, "skipped": f"stopped at the budget ({limit:.0f} s)"}
    if rc or not result.exists():
        return {"variant": name, "skipped": f"failed (exit {rc}; its output is in the log above)", "failed": True}
    return json.loads(result.read_text())


if __name__ == "__main__":
    sys.exit(main())
