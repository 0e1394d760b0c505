"""Seed recipe vs ours: the seed article's TrainingArguments and padding against our defaults, same model.

    python bench/bench_seed_recipe.py          # t5-small shape (60.5 M params), the seed's 10 examples x 30 epochs
    python bench/bench_seed_recipe.py --quick  # tiny T5, 1 epoch: a smoke run (~30 s)

Both sides train the same 4-bit base (NF4 + double quant, the seed meant QLoRA) with the seed's LoRA
(r=6, alpha=16, dropout 0.1 on q,k,v) on the same data for the same number of epochs, with the HF
Trainer in one plain process (no Ray: this measures the recipe). They differ only in the recipe:

  seed   the seed's code: every article padded to 512 tokens and every summary to 128 (and the padded
         summary ids used as labels as they are, so the loss also counts the pad tokens); its
         TrainingArguments: batch 20, lr 2e-5, weight decay 0.01, eval every 10 steps (batch 20),
         logging every 20 steps; `get_peft_model` on the 4-bit base (no gradient checkpointing).
  ours   the product's path: `jobs.modeling.load_trainable` (prepare_model_for_kbit_training, gradient
         checkpointing on: our default), `jobs.data.tokenize` (no padding) + `build_collator` (each
         batch padded to its own longest example, label padding -100), `jobs.train_loop.
         training_arguments` with our defaults (batch 8, lr 2e-4, eval + adapter checkpoint every 10
         steps, length-grouped batches).
  ours_no_ckpt  ours with training.gradient_checkpointing=false (not in the headline ratio).

The model is the real t5-small config (orchestrator/estimate/arch_configs/t5-small.json: d_model 512, d_ff 2048,
d_kv 64, 6+6 layers, 8 heads, relu, vocab 32128, tied embeddings) with random weights, given a short
full-weight copy-task pre-training (100 steps, as jobs/tiny_models.py does) so that the fine-tune's loss
means something. The tokenizer is a byte-level BPE trained on the same texts (asked for 32128 entries, it
stops at the ~1,000 the data supports; the model keeps vocab 32128; it gives ~1.2 tokens per word, T5's
SentencePiece ~1.3). By default (--base-texts all) those texts are the articles and summaries of all
three splits, each as a string to copy: the base then knows the eval set's words, as a real base knows
the language, while the article -> summary task is only in train. By default both sides train the seed's
10 examples for the seed's 30 epochs (30 seed steps, 60 of ours); `--repeat N` repeats the examples N
times (the same for both) where more steps per epoch are wanted.

Both sides use `--threads` torch threads (default 1): on a 2-core machine shared with other jobs, two
OpenMP threads stall at every barrier whenever the other core is busy (steps 10-100x slower were seen).

Each run is its own subprocess, and the sides are interleaved (ours, seed, ours, ...) so that load from
other jobs on a shared machine hits both; the headline uses the mean of the `ours` runs. Per run:

- wall time per epoch: `trainer.train()`'s wall time / epochs, evaluations during training included
  (they are part of each recipe); beside it the CPU time per epoch (`time.process_time()` over the same
  span: all threads of the process), which load from other jobs on a shared machine inflates far less
  than wall time;
- real tokens/s: non-padding input tokens + non-padding target tokens that went through training
  forward passes, counted by a forward pre-hook on the model (train mode only), / the same wall time;
  beside it all tokens/s, padding included;
- final eval loss: the same function for both sides, mean cross-entropy over the real target tokens of
  the seed's 3 eval examples (padding excluded), before and after training; beside it the same on the 10
  train examples after training (how much each recipe fitted) and the Trainer's own last eval_loss (the
  seed's counts its 128-token padded labels, so it is not comparable).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT_DIR, REPO, print_table, write_json  # noqa: E402

SEED_DATA = REPO / "examples" / "data" / "seed"
MODELS = OUT_DIR / "models"
SEED = 42
# The seed article's TrainingArguments, verbatim except output/logging dirs and W&B.
SEED_ARGS = dict(
    do_eval=True,
    eval_strategy="steps",
    eval_steps=10,
    logging_steps=20,
    learning_rate=2e-5,
    per_device_train_batch_size=20,
    per_device_eval_batch_size=20,
    weight_decay=0.01,
)
SEED_MAX_INPUT, SEED_MAX_TARGET = 512, 128
LORA = {"r": 6, "alpha": 16, "dropout": 0.1, "target_modules": ["q", "k", "v"]}


# ---- the model ---------------------------------------------------------------------------------


def build_model(out: Path, quick: bool, pretrain_steps: int, base_texts: str = "train") -> Path:
    """t5-small config (or a tiny T5 with --quick), random weights, BPE tokenizer trained on the seed data.

    base_texts: the texts the tokenizer and the copy pre-training see: "train" (the train split) or
    "all" (the articles and summaries of every split, as strings to copy: the base then knows the eval
    set's words, as a real pre-trained base knows the language; the article -> summary task stays in
    train only).
    """
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    import torch
    from transformers import T5ForConditionalGeneration

    from jobs.tiny_models import _texts, build_t5, build_tokenizer, pretrain

    splits = ("train", "eval", "test") if base_texts == "all" else ("train",)
    texts = _texts([str(SEED_DATA / f"{s}.jsonl") for s in splits])
    if quick:
        tok = build_tokenizer(texts, vocab_size=512)
        model = build_t5(tok, d_model=64, layers=2, heads=4)
    else:
        from orchestrator.estimate.shapes import load_model_config

        tok = build_tokenizer(texts, vocab_size=32128)
        mc, _ = load_model_config("t5-small")
        assert (mc.pad_token_id, mc.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(mc)
    if pretrain_steps:
        t0 = time.perf_counter()
        pretrain(model, tok, texts, "t5", pretrain_steps)
        print(f"pre-trained {pretrain_steps} steps in {time.perf_counter() - t0:.0f}s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def repeated_train(n: int, out: Path) -> Path:
    """The seed's train split, `n` times over (same file for both sides)."""
    lines = [ln for ln in (SEED_DATA / "train.jsonl").read_text().splitlines() if ln.strip()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines * n) + "\n")
    return out


def run_config(model_dir: Path, train: Path, epochs: float, compute_dtype: str, overrides: Dict[str, Any]):
    """Our config: defaults everywhere except the shared model, data, epochs, LoRA and quantization."""
    from orchestrator.core.config import RunConfig

    cfg = RunConfig.model_validate(
        {
            "model": {"name_or_path": str(model_dir), "task": "seq2seq"},
            "quantization": {"mode": "4bit", "compute_dtype": compute_dtype},
            "lora": LORA,
            "data": {
                "train": str(train),
                "eval": str(SEED_DATA / "eval.jsonl"),
                "input_column": "article",
                "target_column": "summary",
                "max_input_length": SEED_MAX_INPUT,
                "max_target_length": SEED_MAX_TARGET,
            },
            "training": {"epochs": epochs},
            "search": {"metric": "eval_loss"},
            "tracking": {"wandb": False, "backend": "none"},
        }
    )
    return cfg.with_params(overrides) if overrides else cfg


# ---- one side, in its own process --------------------------------------------------------------


class TokenCounter:
    """Counts the tokens of every training forward pass (all, and real = non-padding)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id
        self.all = self.real = self.batches = 0

    def __call__(self, module, args, kwargs):
        if not module.training:
            return
        ids, mask, labels = kwargs.get("input_ids"), kwargs.get("attention_mask"), kwargs.get("labels")
        self.batches += 1
        self.all += ids.numel() + labels.numel()
        self.real += int(mask.sum()) + int(((labels != -100) & (labels != self.pad_id)).sum())


def real_loss(model, tokenizer, cfg, raw_eval) -> float:
    """Mean cross-entropy over the real target tokens (padding excluded), the same for both sides."""
    import torch

    from jobs.data import build_collator, tokenize

    feats = tokenize(raw_eval, tokenizer, cfg)
    collate = build_collator(tokenizer, model)
    device = next(p.device for p in model.parameters())
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(feats), 8):
            batch = collate([feats[j] for j in range(i, min(i + 8, len(feats)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"] != -100).sum())
            total += float(model(**batch).loss) * n
            count += n
    return total / max(count, 1)


def worker(
    variant: str, model_dir: Path, train: Path, epochs: float, compute_dtype: str, threads: int
) -> Dict[str, Any]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from transformers import Seq2SeqTrainer, Trainer, TrainerCallback, TrainingArguments

    from jobs.data import build_collator, load_source, tokenize
    from jobs.modeling import load_base, load_tokenizer, load_trainable, lora_config, param_counts
    from jobs.train_loop import training_arguments  # imports no Ray

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import GpuSampler

    overrides = {"training.gradient_checkpointing": False} if variant == "ours_no_ckpt" else {}
    cfg = run_config(model_dir, train, epochs, compute_dtype, overrides)
    cuda = torch.cuda.is_available()
    device_map = {"": 0} if cuda else None
    t_setup = time.perf_counter()
    tok = load_tokenizer(cfg)
    torch.manual_seed(SEED)  # the same LoRA init on both sides
    if variant == "seed":
        from peft import get_peft_model

        model = get_peft_model(load_base(cfg, quantized=True, device_map=device_map), lora_config(cfg))
    else:
        model = load_trainable(cfg, device_map=device_map)
    raw_train, raw_eval = load_source(str(train)), load_source(cfg.data.eval)
    out = tempfile.mkdtemp(prefix=f"bench-seed-{variant}-")
    if variant == "seed":

        def preprocess(batch):  # the seed's preprocess_function
            inputs = tok(batch["article"], padding="max_length", truncation=True, max_length=SEED_MAX_INPUT)
            targets = tok(batch["summary"], padding="max_length", truncation=True, max_length=SEED_MAX_TARGET)
            inputs["labels"] = targets["input_ids"]
            return inputs

        args = TrainingArguments(
            output_dir=out, num_train_epochs=epochs, report_to="none", disable_tqdm=True, seed=SEED, **SEED_ARGS
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=raw_train.map(preprocess, batched=True),
            eval_dataset=raw_eval.map(preprocess, batched=True),
            processing_class=tok,
        )
    else:
        args = training_arguments(cfg, out, report_to_wandb=False)
        trainer = Seq2SeqTrainer(
            model=model,
            args=args,
            train_dataset=tokenize(raw_train, tok, cfg),
            eval_dataset=tokenize(raw_eval, tok, cfg),
            data_collator=build_collator(tok, model),
            processing_class=tok,
        )
    steps: List[float] = []

    class StepTimes(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            steps.append(time.perf_counter() - self.t)

    trainer.add_callback(StepTimes())
    counter = TokenCounter(tok.pad_token_id)
    hook = model.get_base_model().register_forward_pre_hook(counter, with_kwargs=True)
    setup_s = time.perf_counter() - t_setup
    eval_loss_before = real_loss(model, tok, cfg, raw_eval)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sampler = GpuSampler().start()
    t0, c0 = time.perf_counter(), time.process_time()
    result = trainer.train()
    train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    gpu = sampler.stop()
    hook.remove()
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    eval_loss = real_loss(model, tok, cfg, raw_eval)
    train_loss_real = real_loss(model, tok, cfg, load_source(str(SEED_DATA / "train.jsonl")))
    return {
        "variant": variant,
        "epochs": epochs,
        "train_examples": len(raw_train),
        "global_steps": trainer.state.global_step,
        "batch_size": args.per_device_train_batch_size,
        "learning_rate": args.learning_rate,
        "gradient_checkpointing": bool(getattr(model.get_base_model(), "is_gradient_checkpointing", False)),
        "setup_s": setup_s,
        "train_s": train_s,
        "train_runtime": result.metrics.get("train_runtime"),
        "s_per_epoch": train_s / epochs,
        "cpu_s": cpu_s,
        "cpu_s_per_epoch": cpu_s / epochs,
        "step_s": steps,
        "median_step_s": statistics.median(steps),
        "train_batches": counter.batches,
        "tokens_all": counter.all,
        "tokens_real": counter.real,
        "real_tokens_per_s": counter.real / train_s,
        "all_tokens_per_s": counter.all / train_s,
        "real_tokens_per_cpu_s": counter.real / cpu_s,
        "padding_share": 1 - counter.real / max(counter.all, 1),
        "eval_loss_real": eval_loss,
        "eval_loss_before": eval_loss_before,
        "train_loss_real": train_loss_real,
        "trainer_eval_loss": evals[-1] if evals else None,
        "num_evals": len(evals),
        "train_loss": result.metrics.get("train_loss"),
        "torch_threads": torch.get_num_threads(),
        **param_counts(model),
        "peak_gpu_mem_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        **gpu,
    }


# ---- the driver --------------------------------------------------------------------------------


def _sub(args: List[str], timeout: int) -> Dict[str, Any]:
    env = dict(
        os.environ,
        TOKENIZERS_PARALLELISM="false",
        TRANSFORMERS_VERBOSITY="error",
        HF_HUB_OFFLINE="1",
        PYTHONWARNINGS="ignore",
    )
    p = subprocess.run(
        [sys.executable, __file__, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        raise RuntimeError(f"{' '.join(args[:2])} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(lines[-1])


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    by: Dict[str, List[Dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["variant"], []).append(r)

    def mean(v, k):
        return statistics.fmean(r[k] for r in by[v])

    out: Dict[str, Any] = {}
    if "seed" in by and "ours" in by:
        out["wall_ratio_ours_over_seed"] = mean("ours", "s_per_epoch") / mean("seed", "s_per_epoch")
        out["cpu_ratio_ours_over_seed"] = mean("ours", "cpu_s_per_epoch") / mean("seed", "cpu_s_per_epoch")
        out["real_tokens_per_s_ratio"] = mean("ours", "real_tokens_per_s") / mean("seed", "real_tokens_per_s")
        out["eval_loss_ours"] = mean("ours", "eval_loss_real")
        out["eval_loss_seed"] = mean("seed", "eval_loss_real")
        out["eval_loss_before"] = mean("seed", "eval_loss_before")
        out["train_loss_ours"] = mean("ours", "train_loss_real")
        out["train_loss_seed"] = mean("seed", "train_loss_real")
        out["target_wall_ratio"] = 0.2
        out["target_met"] = out["wall_ratio_ours_over_seed"] <= 0.2 and out["eval_loss_ours"] <= out["eval_loss_seed"]
        if "ours_no_ckpt" in by:
            out["wall_ratio_ours_no_ckpt_over_seed"] = mean("ours_no_ckpt", "s_per_epoch") / mean("seed", "s_per_epoch")
            out["cpu_ratio_ours_no_ckpt_over_seed"] = mean("ours_no_ckpt", "cpu_s_per_epoch") / mean(
                "seed", "cpu_s_per_epoch"
            )
    for key in ("s_per_epoch", "cpu_s_per_epoch"):
        xs = [r[key] for r in by.get("ours", [])]
        if len(xs) > 1:  # how far the repeated `ours` runs of this one run disagree
            out[f"ours_spread_{key}"] = (max(xs) - min(xs)) / statistics.fmean(xs)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="Tiny T5, 1 epoch, data x2: a smoke run.")
    ap.add_argument(
        "--epochs", type=float, default=None, help="Epochs for both sides (default 30, the seed's; quick 1)."
    )
    ap.add_argument("--repeat", type=int, default=None, help="Copies of the 10 seed examples (default 1; quick 2).")
    ap.add_argument(
        "--order", default=None, help="Runs in this order (default ours,seed,ours,ours_no_ckpt; quick ours,seed)."
    )
    ap.add_argument(
        "--compute-dtype",
        default=None,
        choices=["float32", "bfloat16"],
        help="4-bit compute dtype for both sides (default float32 on CPU, bfloat16 on a GPU).",
    )
    ap.add_argument(
        "--pretrain-steps", type=int, default=None, help="Copy-task pre-training of the base (default 100; quick 0)."
    )
    ap.add_argument(
        "--base-texts",
        choices=["train", "all"],
        default="all",
        help="Texts the tokenizer and the base's copy pre-training see (default all; see build_model).",
    )
    ap.add_argument("--model-dir", type=Path, default=None, help="Where the random-weight model is cached.")
    ap.add_argument("--json-out", type=Path, default=None, help="JSON path (default bench/out/seed_recipe.json).")
    ap.add_argument("--timeout", type=int, default=3600, help="Seconds per run.")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads on both sides (default 1; 0: torch's default). See the module doc.",
    )
    ap.add_argument(
        "--worker", nargs=6, metavar=("VARIANT", "MODEL", "TRAIN", "EPOCHS", "DTYPE", "THREADS"), help=argparse.SUPPRESS
    )
    args = ap.parse_args(argv)
    if args.worker:
        v, m, t, e, d, n = args.worker
        print(json.dumps(worker(v, Path(m), Path(t), float(e), d, int(n))), flush=True)
        return 0

    epochs = args.epochs or (1 if args.quick else 30)
    repeat = args.repeat or (2 if args.quick else 1)
    order = (args.order or ("ours,seed" if args.quick else "ours,seed,ours,ours_no_ckpt")).split(",")
    dtype = args.compute_dtype or _default_dtype()
    model_dir = args.model_dir or MODELS / (
        "t5-tiny-seedtok" if args.quick else f"t5-small-seedtok{'-all' if args.base_texts == 'all' else ''}"
    )
    t0 = time.perf_counter()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    build_model(
        model_dir,
        args.quick,
        0 if args.quick else (100 if args.pretrain_steps is None else args.pretrain_steps),
        args.base_texts,
    )
    train = repeated_train(repeat, OUT_DIR / "seed_recipe" / f"train_x{repeat}.jsonl")
    runs = []
    for variant in order:
        print(f"running {variant} ...", flush=True)
        r = _sub(["--worker", variant, str(model_dir), str(train), str(epochs), dtype, str(args.threads)], args.timeout)
        print(
            f"  {variant}: {r['s_per_epoch']:.1f} s/epoch ({r['cpu_s_per_epoch']:.1f} CPU s), "
            f"{r['real_tokens_per_s']:.0f} real tok/s, "
            f"eval loss {r['eval_loss_real']:.3f}",
            flush=True,
        )
        runs.append(r)
    summary = summarize(runs)
    rows = [
        [
            r["variant"],
            r["global_steps"],
            r["batch_size"],
            f"{r['learning_rate']:g}",
            f"{r['s_per_epoch']:.1f}",
            f"{r['cpu_s_per_epoch']:.1f}",
            f"{r['median_step_s']:.2f}",
            f"{r['real_tokens_per_s']:.0f}",
            f"{r['all_tokens_per_s']:.0f}",
            f"{100 * r['padding_share']:.1f}%",
            f"{r['eval_loss_before']:.3f}",
            f"{r['eval_loss_real']:.3f}",
            f"{r['train_loss_real']:.3f}",
            "" if r["trainer_eval_loss"] is None else f"{r['trainer_eval_loss']:.3f}",
            _gib(r.get("peak_gpu_mem_bytes")),
            _pct(r.get("gpu_util_mean")),
        ]
        for r in runs
    ]
    print_table(
        f"Seed recipe vs ours ({model_dir.name}, 4-bit {dtype} compute, {10 * repeat} examples, {epochs:g} epochs)",
        [
            "run",
            "steps",
            "batch",
            "lr",
            "s/epoch",
            "CPU s/epoch",
            "s/step (median)",
            "real tok/s",
            "all tok/s",
            "padding",
            "eval loss before",
            "eval loss after",
            "train loss after",
            "Trainer eval_loss",
            "peak GPU GiB",
            "GPU util",
        ],
        rows,
    )
    for k, v in summary.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    path = write_json(
        "seed_recipe",
        {
            "model": model_dir.name,
            "epochs": epochs,
            "repeat": repeat,
            "compute_dtype": dtype,
            "lora": LORA,
            "seed_args": SEED_ARGS,
            "runs": runs,
            "summary": summary,
            "wall_s": time.perf_counter() - t0,
        },
        args.json_out,
    )
    print(f"wrote {path}")
    return 0


def _default_dtype() -> str:
    import torch

    return "bfloat16" if torch.cuda.is_available() else "float32"


def _gib(n: Optional[float]) -> str:
    return "" if n is None else f"{n / 1024**3:.2f}"


def _pct(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.0f}%"


if __name__ == "__main__":
    raise SystemExit(main())
