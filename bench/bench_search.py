"""Search efficiency: ASHA and Optuna+ASHA against FIFO (every trial to the end), same space, same budget.

    python bench/bench_search.py            # tiny T5, 12 trials x 40 steps, 3 searches (~16 min here)
    python bench/bench_search.py --quick    # 2 trials x 10 steps, FIFO and ASHA: a smoke run

Every search is `orchestrator.launch.pipeline.run(config, "tune", ...)`, the API behind `qlora-launch
tune`, in one local Ray instance started once for all of them (config: bench/out/search/config.yaml):
the tiny T5 of the tests (d_model 64, 150 steps of copy pre-training; by default its BPE tokenizer and
pre-training see the texts of all three splits, so that eval_loss follows what the fine-tune learns),
4-bit, LoRA on q,k,v, the seed's data (10 train / 3 eval examples), batch 2, 8 epochs = 40 steps, eval
+ checkpoint + report every 5 steps (8 reports, ASHA's max_t), metric eval_loss (min), space
learning rate loguniform [1e-4, 3e-2] x LoRA rank {4, 8, 16}, 2 trials at a time, search seed 7 (--seed).

  fifo         random sampling, every trial runs to the end (the full run)
  asha         the same random samples (same seed), ASHA (grace 1 report, reduction factor 2)
  optuna_asha  Optuna TPE sampling (seed 7; its own samples), ASHA as above

A search name may carry ASHA settings of its own, so that several set-ups are compared against one FIFO
run: `asha_rf4` (reduction factor 4), `asha_rf3_g2` (factor 3, grace period 2 reports),
`optuna_asha_rf4`. Without a suffix the search uses --reduction-factor and --grace-period.

Per search: trial-steps spent (the sum of `steps` in trials.csv: the last step each trial reported),
the steps its workers actually reached (the newest HF checkpoint on disk; a worker keeps training until
Tune's stop reaches it), the best eval_loss any trial reported, and the wall time. The ratios are taken
against FIFO from the same run of this script. The target: within 2 % of FIFO's best eval_loss for at
most 40 % of its trial-steps.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT_DIR, REPO, GpuSampler, cuda_available, print_table, write_json  # noqa: E402

SEED_DATA = REPO / "examples" / "data" / "seed"
WORK = OUT_DIR / "search"
SEARCHES = {"fifo": ("fifo", "random"), "asha": ("asha", "random"), "optuna_asha": ("asha", "optuna")}


def ensure_model(quick: bool, base_texts: str) -> Path:
    """The tiny T5 of the tests; with base_texts "all" its tokenizer and copy pre-training see the texts
    of every split (the eval set's words, not the article -> summary task), so eval_loss tracks learning."""
    from jobs.tiny_models import make_tiny_model

    name = "t5-tiny-search" + ("-quick" if quick else "") + ("-all" if base_texts == "all" else "")
    out = OUT_DIR / "models" / name
    if (out / "config.json").exists():
        return out
    splits = ("train", "eval", "test") if base_texts == "all" else ("train",)
    return make_tiny_model(
        "t5", [str(SEED_DATA / f"{s}.jsonl") for s in splits], str(out), pretrain_steps=20 if quick else 150
    )


def write_config(path: Path, model_dir: Path, args) -> Path:
    import yaml

    cfg = {
        "model": {"name_or_path": str(model_dir), "task": "seq2seq"},
        "quantization": {"mode": "4bit", "compute_dtype": "bfloat16" if args.gpus else "float32"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["q", "k", "v"]},
        "data": {
            "train": str(SEED_DATA / "train.jsonl"),
            "eval": str(SEED_DATA / "eval.jsonl"),
            "input_column": "article",
            "target_column": "summary",
            "max_input_length": 128,
            "max_target_length": 32,
        },
        "training": {"epochs": args.epochs, "batch_size": 2, "eval_steps": args.eval_steps, "logging_steps": 1},
        "search": {
            "num_samples": args.samples,
            "max_concurrent_trials": args.concurrency,
            "metric": "eval_loss",
            "grace_period": args.grace_period,
            "reduction_factor": args.reduction_factor,
            "seed": args.seed,
            "space": {
                "training.learning_rate": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
                "lora.r": {"type": "choice", "values": [4, 8, 16]},
            },
        },
        "resources": {"num_workers": 1, "cpus_per_worker": 1, "gpus_per_worker": args.gpus},
        "tracking": {"wandb": False, "backend": "none"},
        "merge": {"enabled": False},  # the merge comes after the search; it is the same for every scheduler
        "output": {"dir": str(path.parent / "runs")},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def steps_reached(run_dir: Path) -> Dict[str, int]:
    """trial id -> the highest global step of any HF checkpoint its worker left in Ray storage."""
    out: Dict[str, int] = {}
    for state in (run_dir / "ray").glob("train-*/checkpoint_*/checkpoint/trainer_state.json"):
        trial = state.parents[2].name[len("train-") :]
        try:
            step = int(json.loads(state.read_text())["global_step"])
        except (ValueError, KeyError, OSError):
            continue
        out[trial] = max(out.get(trial, 0), step)
    return out


def parse_search(name: str) -> Dict[str, Any]:
    """'asha_rf4_g2' -> base search 'asha' with ASHA overrides {reduction_factor: 4, grace_period: 2}."""
    m = re.fullmatch(r"(fifo|asha|optuna_asha)((?:_(?:rf|g)\d+)*)", name)
    if not m:
        raise ValueError(f"unknown search '{name}': use {', '.join(SEARCHES)}, optionally with _rfN / _gN")
    over = {}
    for key, val in re.findall(r"_(rf|g)(\d+)", m.group(2)):
        over["reduction_factor" if key == "rf" else "grace_period"] = int(val)
    if over and m.group(1) == "fifo":
        raise ValueError("fifo takes no ASHA settings")
    return {"base": m.group(1), "asha": over}


def one_search(name: str, config: Path, args) -> Dict[str, Any]:
    from orchestrator.launch.pipeline import run

    spec = parse_search(name)
    scheduler, algorithm = SEARCHES[spec["base"]]
    asha = {"reduction_factor": args.reduction_factor, "grace_period": args.grace_period, **spec["asha"]}
    sets = [f"search.scheduler={scheduler}", f"search.algorithm={algorithm}", f"output.experiment={name}"]
    sets += [f"search.{k}={v}" for k, v in asha.items()]
    sampler = GpuSampler().start()
    t0 = time.time()
    code = run(str(config), "tune", sets, echo=lambda *a, **k: None)
    wall = time.time() - t0
    gpu = sampler.stop()
    run_dir = config.parent / "runs" / name
    res = json.loads((run_dir / "results.json").read_text())
    with (run_dir / "trials.csv").open() as f:
        trials = list(csv.DictReader(f))
    reached = steps_reached(run_dir)
    for t in trials:
        t["steps_reached"] = max(reached.get(t["trial_id"], 0), int(t["steps"] or 0))
    best = res.get("best") or {}
    return {
        "search": name,
        "scheduler": scheduler,
        "algorithm": algorithm,
        "exit_code": code,
        "wall_s": wall,
        **(
            {"reduction_factor": asha["reduction_factor"], "grace_period": asha["grace_period"]}
            if scheduler == "asha"
            else {}
        ),
        "trials": trials,
        "num_trials": len(trials),
        "trial_steps": sum(int(t["steps"] or 0) for t in trials),
        "trial_steps_reached": sum(t["steps_reached"] for t in trials),
        "planned_steps": sum(int(t["planned_steps"] or 0) for t in trials),
        "trial_time_s": sum(float(t["time_s"] or 0) for t in trials),
        "completed": sum(t["status"] == "COMPLETED" for t in trials),
        "best_eval_loss": (best.get("metrics") or {}).get("eval_loss"),
        "best_params": best.get("params"),
        "best_step": best.get("step"),
        **gpu,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 trials x 10 steps, FIFO and ASHA: a smoke run.")
    ap.add_argument(
        "--searches",
        default=None,
        help=f"Comma list from {', '.join(SEARCHES)} (default all; "
        "quick fifo,asha), each optionally with _rfN / _gN (ASHA "
        "reduction factor, grace period), e.g. asha_rf4. FIFO must "
        "be first: it is the reference.",
    )
    ap.add_argument("--samples", type=int, default=None, help="Trials per search (default 12; quick 2).")
    ap.add_argument("--epochs", type=float, default=None, help="Epochs per trial (default 8; quick 2).")
    ap.add_argument("--eval-steps", type=int, default=5, help="Report interval in steps (default 5).")
    ap.add_argument("--concurrency", type=int, default=2, help="Trials at once (default 2).")
    ap.add_argument("--grace-period", type=int, default=1, help="ASHA grace period in reports (default 1).")
    ap.add_argument("--reduction-factor", type=int, default=2, help="ASHA reduction factor (default 2).")
    ap.add_argument("--seed", type=int, default=7, help="Search seed: the samples of every search (default 7).")
    ap.add_argument(
        "--base-texts",
        choices=["train", "all"],
        default="all",
        help="Texts the tiny T5's tokenizer and copy pre-training see (default all; see ensure_model).",
    )
    ap.add_argument("--gpus", type=float, default=None, help="GPUs per trial (default 0.5 with CUDA, else 0).")
    ap.add_argument("--work-dir", type=Path, default=None, help="Config, runs and logs (default bench/out/search/).")
    ap.add_argument("--json-out", type=Path, default=None, help="JSON path (default bench/out/search.json).")
    args = ap.parse_args(argv)
    global WORK
    WORK = args.work_dir or WORK
    args.samples = args.samples or (2 if args.quick else 12)
    args.epochs = args.epochs or (2 if args.quick else 8)
    if args.gpus is None:
        args.gpus = 0.5 if cuda_available() else 0.0
    names = (args.searches or ("fifo,asha" if args.quick else ",".join(SEARCHES))).split(",")
    if names[0] != "fifo":
        ap.error("--searches must start with fifo (the reference)")
    for n in names:
        try:
            parse_search(n)
        except ValueError as e:
            ap.error(str(e))
    t0 = time.time()
    for k, v in {
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_OFFLINE": "1",
        "PYTHONWARNINGS": "ignore",
    }.items():
        os.environ.setdefault(k, v)
    model_dir = ensure_model(args.quick, args.base_texts)
    if (WORK / "runs").exists():
        shutil.rmtree(WORK / "runs")
    config = write_config(WORK / "config.yaml", model_dir, args)

    import ray

    from orchestrator.launch.local import ensure_ray

    started = ensure_ray()  # one Ray for every search, so each pays the same (warm) start
    results: List[Dict[str, Any]] = []
    try:
        for name in names:
            print(f"search {name} ...", flush=True)
            r = one_search(name, config, args)
            print(
                f"  {r['num_trials']} trials, {r['trial_steps']} trial-steps, best eval_loss "
                f"{r['best_eval_loss']}, {r['wall_s']:.0f}s",
                flush=True,
            )
            results.append(r)
    finally:
        if started:
            ray.shutdown()
    ref = results[0]
    fifo_params = sorted((t["training.learning_rate"], t["lora.r"]) for t in ref["trials"])
    for r in results:
        r["steps_ratio"] = r["trial_steps"] / ref["trial_steps"]
        r["steps_reached_ratio"] = r["trial_steps_reached"] / ref["trial_steps_reached"]
        r["wall_ratio"] = r["wall_s"] / ref["wall_s"]
        r["best_gap"] = (r["best_eval_loss"] - ref["best_eval_loss"]) / abs(ref["best_eval_loss"])
        r["same_samples_as_fifo"] = (
            sorted((t["training.learning_rate"], t["lora.r"]) for t in r["trials"]) == fifo_params
        )
        r["target_met"] = r["best_gap"] <= 0.02 and r["steps_ratio"] <= 0.40
    rows = [
        [
            r["search"],
            r["num_trials"],
            r["completed"],
            r["trial_steps"],
            f"{r['steps_ratio']:.2f}x",
            r["trial_steps_reached"],
            f"{r['steps_reached_ratio']:.2f}x",
            f"{r['best_eval_loss']:.4f}",
            f"{100 * r['best_gap']:+.2f}%",
            f"{r['wall_s']:.0f}",
            f"{r['wall_ratio']:.2f}x",
            "yes" if r["same_samples_as_fifo"] else "no",
            "yes" if r["target_met"] else "no",
        ]
        for r in results
    ]
    print_table(
        f"Search efficiency ({model_dir.name}, {args.samples} trials, {args.concurrency} at once, "
        f"search seed {args.seed}, eval_loss)",
        [
            "search",
            "trials",
            "ran to end",
            "trial-steps",
            "vs FIFO",
            "steps reached",
            "vs FIFO",
            "best eval_loss",
            "vs FIFO",
            "wall s",
            "vs FIFO",
            "FIFO's samples",
            "target met",
        ],
        rows,
    )
    for r in results:
        print(f"{r['search']}: best {r['best_params']} at step {r['best_step']}")
    path = write_json(
        "search",
        {
            "model": model_dir.name,
            "settings": {k: v for k, v in vars(args).items() if k != "json_out"},
            "searches": results,
            "bench_wall_s": time.time() - t0,
        },
        args.json_out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
