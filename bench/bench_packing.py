"""Sequence packing for causal LM: padded batches against packed (padding-free) rows, same model and data.

    python bench/bench_packing.py            # Llama-shaped (hidden 256), seed data x4, 3 rounds per side
    python bench/bench_packing.py --vary-lengths   # the same with each article cut to a random length
    python bench/bench_packing.py --article-copies 4 --steps 10   # long examples (~4x the tokens)
    python bench/bench_packing.py --quick    # a smoke run: hidden 64, 1 round, a few steps

Both sides are the HF Trainer on the same 4-bit NF4 base with the same LoRA (all linear layers, r 8),
the same seed, batch 4, the same number of optimizer steps, in one process, alternating
padded/packed so that drift in the machine's load hits both alike:

  padded_random   DataCollatorForSeq2Seq, random order (what most recipes do)
  padded_grouped  the same, length-grouped batches (qlora-launch's default without packing)
  packed          jobs.data.build_collator(packing=True): one row per batch, positions restart per
                  example (qlora-launch's default for causal LM when the start-up check passes)

Per side: wall and process CPU time of trainer.train() (model load excluded; on a shared machine the CPU
time is the steadier figure), real tokens/s (non-padding tokens through
the forward pass), the share of padding in the tokens computed, and the final training loss (mean of
the last 5 logged steps). The data is the seed's article -> summary pairs with the prompt template, so
lengths vary as in the seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT_DIR, REPO, args_json, machine, print_table, write_json  # noqa: E402

SEED = REPO / "examples" / "data" / "seed"
VARIANTS = ("padded_random", "padded_grouped", "packed")


def build_model(size: int, pretrain_steps: int) -> Path:
    from jobs.tiny_models import make_tiny_model

    out = OUT_DIR / "models" / f"llama-packing-{size}-{pretrain_steps}"
    if (out / "config.json").exists():
        return out
    return make_tiny_model(
        "llama",
        [str(SEED / f"{s}.jsonl") for s in ("train", "eval", "test")],
        str(out),
        size=size,
        pretrain_steps=pretrain_steps,
    )


def repeated_train(n: int, vary: bool, copies: int = 1) -> Path:
    """The seed's train set n times; with `vary`, each copy's article cut to a random 5-100 % of its
    characters (seeded), for the wide spread of lengths that instruction data has; `copies` > 1 makes
    each article that many articles long (long examples)."""
    import random

    out = OUT_DIR / "packing" / f"train_x{n}{'_varied' if vary else ''}_c{copies}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(x) for x in (SEED / "train.jsonl").read_text().splitlines() if x.strip()] * n
    rows = [{**r, "article": " ".join([r["article"]] * copies)} for r in rows]
    rng = random.Random(0)
    if vary:
        rows = [
            {**r, "article": r["article"][: max(20, int(len(r["article"]) * rng.uniform(0.05, 1.0)))]} for r in rows
        ]
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return out


def run_side(
    variant: str,
    model_dir: Path,
    train: Path,
    steps: int,
    batch: int,
    dtype: str,
    max_input: int = 512,
    training: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """One training run; `training`: keys laid over the config's training section (e.g. gradient_checkpointing;
    by default `auto`, which without a plan keeps checkpointing on)."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from jobs.data import build_collator, load_splits, packing_keeps_examples_apart, tokenize
    from jobs.modeling import load_tokenizer, load_trainable
    from orchestrator.core.config_load import validate_dict

    cfg = validate_dict(
        {
            "model": {"name_or_path": str(model_dir), "task": "causal_lm"},
            "data": {
                "train": str(train),
                "eval": str(SEED / "eval.jsonl"),
                "input_column": "article",
                "target_column": "summary",
                "max_input_length": max_input,
                "max_target_length": 128,
                "prompt_template": "Article: {input}\nSummary: ",
            },
            "quantization": {"compute_dtype": dtype},
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
            "search": {"metric": "eval_loss"},
            "training": {"seed": 0, **(training or {})},
        }
    )
    tok = load_tokenizer(cfg)
    ds = tokenize(load_splits(cfg.data)["train"], tok, cfg)
    model = load_trainable(cfg)
    model.config.use_cache = False
    packed = variant == "packed"
    check = packing_keeps_examples_apart(model, ds) if packed else None
    if packed and not check[0]:
        raise SystemExit(f"packing check failed: {check}")
    collator = build_collator(tok, packing=packed)
    counted = {"real": 0, "computed": 0}

    def counting(features):
        out = collator(features)
        counted["real"] += sum(len(f["input_ids"]) for f in features)
        counted["computed"] += int(out["input_ids"].numel())
        return out

    losses: List[float] = []

    class Losses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    cuda = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(OUT_DIR / "packing" / "trainer"),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=2e-4,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=0,
        data_seed=0,
        use_cpu=not cuda,
        bf16=cuda and dtype == "bfloat16",
        disable_tqdm=True,
        train_sampling_strategy="group_by_length" if variant == "padded_grouped" else "random",
        remove_unused_columns=False,
        label_names=["labels"],
        gradient_checkpointing=False,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=ds, data_collator=counting, processing_class=tok, callbacks=[Losses()]
    )
    trainer.remove_callback(PrinterCallback)
    if cuda:
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "variant": variant,
        "wall_s": wall,
        "cpu_s": cpu,
        "steps": steps,
        "real_tokens": counted["real"],
        "computed_tokens": counted["computed"],
        "real_tokens_per_s": counted["real"] / wall,
        "padding_share": 1 - counted["real"] / counted["computed"],
        "final_loss": statistics.mean(losses[-5:]) if losses else None,
        "losses": losses,
        "packing_check": {"packed_dlogit": check[1], "leak_dlogit": check[2]} if check else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="hidden 64, 1 round, 4 steps: a smoke run")
    ap.add_argument("--size", type=int, default=256, help="hidden size of the Llama-shaped model")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of all variants (alternating)")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=4, help="copies of the 10 seed examples")
    ap.add_argument(
        "--vary-lengths",
        action="store_true",
        help="cut each copy's article to a random 5-100 %% of its length (seeded)",
    )
    ap.add_argument(
        "--article-copies",
        type=int,
        default=1,
        help="make each article N articles long (long examples; max input length N x 512)",
    )
    ap.add_argument(
        "--compute-dtype",
        default=None,
        choices=["float32", "bfloat16"],
        help="default: bfloat16 on a GPU, float32 on CPU",
    )
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.rounds, args.steps, args.repeat = 64, 1, 4, 1
    import torch

    torch.manual_seed(0)
    dtype = args.compute_dtype or ("bfloat16" if torch.cuda.is_available() else "float32")
    model_dir = build_model(args.size, 20 if args.quick else 100)
    train = repeated_train(args.repeat, args.vary_lengths, args.article_copies)
    runs = []
    for r in range(args.rounds):
        for v in VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS)):
            res = run_side(v, model_dir, train, args.steps, args.batch, dtype, 512 * args.article_copies)
            res["round"] = r
            runs.append(res)
            print(
                f"round {r} {v}: {res['wall_s']:.2f} s ({res['cpu_s']:.2f} CPU s), "
                f"{res['real_tokens_per_s']:.0f} real tok/s, "
                f"padding {res['padding_share']:.1%}, loss {res['final_loss']:.4f}",
                flush=True,
            )
    summary: Dict[str, Any] = {}
    for v in VARIANTS:
        mine = [x for x in runs if x["variant"] == v]
        summary[v] = {
            "median_wall_s": statistics.median(x["wall_s"] for x in mine),
            "median_cpu_s": statistics.median(x["cpu_s"] for x in mine),
            "median_real_tokens_per_s": statistics.median(x["real_tokens_per_s"] for x in mine),
            "padding_share": mine[0]["padding_share"],
            "final_loss": mine[0]["final_loss"],
        }
    base = summary["padded_random"]
    for v in VARIANTS:
        summary[v]["wall_vs_padded_random"] = summary[v]["median_wall_s"] / base["median_wall_s"]
        summary[v]["cpu_vs_padded_random"] = summary[v]["median_cpu_s"] / base["median_cpu_s"]
    rows = [
        [
            v,
            f"{s['median_wall_s']:.2f}",
            f"{s['wall_vs_padded_random']:.2f}x",
            f"{s['median_cpu_s']:.2f}",
            f"{s['cpu_vs_padded_random']:.2f}x",
            f"{s['median_real_tokens_per_s']:.0f}",
            f"{s['padding_share']:.1%}",
            f"{s['final_loss']:.4f}",
        ]
        for v, s in summary.items()
    ]
    print_table(
        f"Packing: {args.steps} steps x batch {args.batch}, hidden {args.size}, {dtype}, "
        f"seed data x{args.repeat}{' (varied lengths)' if args.vary_lengths else ''}"
        f"{f', articles x{args.article_copies}' if args.article_copies > 1 else ''}, "
        f"median of {args.rounds}",
        ["variant", "wall s", "vs padded_random", "CPU s", "vs padded_random", "real tok/s", "padding", "final loss"],
        rows,
    )
    write_json(
        "packing", {"machine": machine(), "args": args_json(args), "runs": runs, "summary": summary}, args.json_out
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
