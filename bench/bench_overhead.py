"""Orchestration overhead: one training run as a bare HF Trainer vs as a one-trial `qlora-launch train`.

    python bench/bench_overhead.py            # t5-small shape, 4-bit, seed data x4, 40 steps; 2 rounds
    python bench/bench_overhead.py --quick    # tiny T5, 20 steps, 1 round: a smoke run (~1 min)

Both sides run the same config (written to bench/out/overhead/config.yaml): the same model, data,
tokenization, 4-bit loading, LoRA, TrainingArguments (jobs.train_loop.training_arguments), collator,
eval + adapter checkpoint every `eval_steps`; metric eval_loss (no generation), tracking and merge off.

  bare  one Python process: load_config -> load_tokenizer -> prepare_datasets -> load_trainable ->
        Seq2SeqTrainer(training_arguments(...)) -> train(). No Ray.
  ray   `orchestrator.launch.pipeline.run(config, "train", ...)`, the Python API behind `qlora-launch
        train`: validation and preflight, local Ray started in-process, tokenization on the driver,
        one Tune trial driving one Ray Train worker (RayTrainReportCallback + prepare_trainer, each
        checkpoint copied into Ray storage and reported), results collected, Ray shut down.

Each side is a fresh subprocess (imports counted: the user pays them too) and the sides alternate
(bare, ray, bare, ray, ...) so that load from other jobs hits both. Both use the same number of torch
threads: OMP_NUM_THREADS is set to `--threads` (default 1) for both processes; it is what a Ray Train
worker with cpus_per_worker=1 gets anyway (Ray sets OMP_NUM_THREADS to floor(its CPUs) when unset).

How the times are taken. HF's log_history carries no timestamps, so both sides are timed by the
wall-clock arrival of the same events, one per checkpoint (every eval_steps steps):
- bare: a TrainerCallback's on_save (the checkpoint is on disk);
- ray: a Tune callback's on_trial_result on the driver (the checkpoint is in Ray storage and the
  report has reached the driver), added beside the product's progress callback.
Step time: for consecutive events, (t_k - t_{k-1} - eval_runtime_k) / (step_k - step_{k-1}), i.e. the
time per training step with the checkpoint/report cost spread over the steps but the (identical)
evaluation taken out; the median over a run. The bare side's exact per-step median (on_step_begin ->
on_step_end) is shown beside it.
Start-up: from launching the process to training step 0, step 0 placed by extrapolating back from
the first event: t_1 - eval_runtime_1 - step_1 x median step time (for bare, the callback's first
on_step_begin is shown beside it). The orchestration's fixed start-up cost is ray's start-up minus
bare's; the end-to-end wall times and the teardown (last event -> process exit) are shown too.
"""

from __future__ import annotations

import time

T_IMPORT = time.time()  # as early as possible: start-up is measured from here (and from the launch)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List, Optional  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT_DIR, REPO, GpuSampler, cuda_available, print_table, write_json  # noqa: E402

SEED_DATA = REPO / "examples" / "data" / "seed"
WORK = OUT_DIR / "overhead"


# ---- the shared config -------------------------------------------------------------------------


def write_config(
    path: Path, model_dir: Path, train: Path, steps: int, eval_steps: int, batch: int, gpus: float
) -> Path:
    import yaml

    cfg = {
        "model": {"name_or_path": str(model_dir), "task": "seq2seq"},
        "quantization": {"mode": "4bit", "compute_dtype": "bfloat16" if gpus else "float32"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["q", "k", "v"]},
        "data": {
            "train": str(train),
            "eval": str(SEED_DATA / "eval.jsonl"),
            "input_column": "article",
            "target_column": "summary",
            "max_input_length": 128,
            "max_target_length": 32,
        },
        "training": {
            "max_steps": steps,
            "learning_rate": 5e-4,
            "batch_size": batch,
            "eval_steps": eval_steps,
            "logging_steps": 1,
        },
        "search": {"metric": "eval_loss", "num_samples": 1, "max_concurrent_trials": 1},
        "resources": {"num_workers": 1, "cpus_per_worker": 1, "gpus_per_worker": gpus},
        "tracking": {"wandb": False, "backend": "none"},
        "merge": {"enabled": False},
        "output": {"dir": str(path.parent / "runs")},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def ensure_model(quick: bool) -> Path:
    """The t5-small-shaped model of bench_seed_recipe.py (built there if missing), or a tiny T5."""
    from bench_seed_recipe import MODELS, build_model

    out = MODELS / ("t5-tiny-seedtok" if quick else "t5-small-seedtok")
    return build_model(out, quick, 0 if quick else 100)


def repeated_train(n: int) -> Path:
    from bench_seed_recipe import repeated_train as rep

    return rep(n, WORK / f"train_x{n}.jsonl")


# ---- the two sides (each in its own process) ---------------------------------------------------


def side_bare(config: Path) -> Dict[str, Any]:
    import torch
    from transformers import Seq2SeqTrainer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    from jobs.data import build_collator, prepare_datasets
    from jobs.modeling import load_tokenizer, load_trainable
    from jobs.train_loop import training_arguments
    from orchestrator.core.config_load import load_config

    marks = {"imports_done": time.time()}
    cfg = load_config(str(config))
    tok = load_tokenizer(cfg)
    data = prepare_datasets(cfg, tok)
    marks["tokenized"] = time.time()
    model = load_trainable(cfg, device_map={"": 0} if torch.cuda.is_available() else None)
    marks["model_loaded"] = time.time()
    events: List[Dict[str, Any]] = []
    steps: List[float] = []
    first_step: List[float] = []

    class Recorder(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()
            if not first_step:
                first_step.append(time.time())

        def on_step_end(self, args, state, control, **kw):
            steps.append(time.perf_counter() - self.t)

        def on_save(self, args, state, control, **kw):
            ev = [h for h in state.log_history if "eval_runtime" in h]
            events.append(
                {"t": time.time(), "step": state.global_step, "eval_runtime": ev[-1]["eval_runtime"] if ev else 0.0}
            )

    out = tempfile.mkdtemp(prefix="bench-overhead-")
    trainer = Seq2SeqTrainer(
        model=model,
        args=training_arguments(cfg, out, report_to_wandb=False),
        train_dataset=data["train"],
        eval_dataset=data["eval"],
        data_collator=build_collator(tok, model),
        processing_class=tok,
        callbacks=[Recorder()],
    )
    trainer.remove_callback(PrinterCallback)
    marks["trainer_built"] = time.time()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    marks["train_returned"] = time.time()
    shutil.rmtree(out, ignore_errors=True)
    return {
        "events": events,
        "exact_step_s": steps,
        "first_step_t": first_step[0],
        "marks": marks,
        "torch_threads": torch.get_num_threads(),
        "global_step": trainer.state.global_step,
        "peak_gpu_mem_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
    }


def side_ray(config: Path, experiment: str) -> Dict[str, Any]:
    import ray

    import orchestrator.launch.local as local
    import orchestrator.observe.progress as progress
    from orchestrator.launch.pipeline import run

    events: List[Dict[str, Any]] = []
    marks: Dict[str, float] = {}
    procs: Dict[int, Dict[str, Any]] = {}
    product_callbacks = progress.progress_callbacks

    def snapshot_processes():
        """Ray's worker processes (children of this driver and its raylet): proctitle and creation time."""
        import psutil

        for p in psutil.Process().children(recursive=True):
            try:
                title = " ".join(p.cmdline())
                if p.pid not in procs or procs[p.pid]["title"].startswith("ray::IDLE"):
                    procs[p.pid] = {"title": title[:120], "created": p.create_time()}
            except psutil.Error:
                pass

    def with_recorder(cfg, **kwargs):
        from ray.tune import Callback

        class Recorder(Callback):
            def on_trial_start(self, iteration, trials, trial, **info):
                marks.setdefault("trial_start", time.time())

            def on_trial_result(self, iteration, trials, trial, result, **info):
                events.append(
                    {
                        "t": time.time(),
                        "step": result.get("step"),
                        "eval_runtime": result.get("eval_runtime") or 0.0,
                        "time_total_s": result.get("time_total_s"),
                    }
                )
                if len(events) == 1:
                    snapshot_processes()

            def on_trial_complete(self, iteration, trials, trial, **info):
                marks.setdefault("trial_complete", time.time())

            def on_experiment_end(self, trials, **info):
                marks.setdefault("experiment_end", time.time())

        return product_callbacks(cfg, **kwargs) + [Recorder()]

    product_ensure_ray = local.ensure_ray
    product_shutdown = ray.shutdown

    def timed_ensure_ray(*a, **k):
        marks["ray_init_begin"] = time.time()
        try:
            return product_ensure_ray(*a, **k)
        finally:
            marks["ray_init_end"] = time.time()
            marks["session_dir"] = ray._private.worker._global_node.get_session_dir_path()
            snapshot_processes()

    def timed_shutdown(*a, **k):
        marks["ray_shutdown_begin"] = time.time()
        try:
            return product_shutdown(*a, **k)
        finally:
            marks["ray_shutdown_end"] = time.time()

    def echo(msg="", *a, **k):
        if str(msg).startswith("Tokenized"):
            marks.setdefault("tokenized", time.time())

    # All three are looked up at call time by the pipeline and orchestrator.launch.local: only timing is added.
    progress.progress_callbacks = with_recorder
    local.ensure_ray = timed_ensure_ray
    ray.shutdown = timed_shutdown
    code = run(str(config), "train", [f"output.experiment={experiment}"], echo=echo)
    marks["run_returned"] = time.time()
    res = json.loads((config.parent / "runs" / experiment / "results.json").read_text())
    trial = res["trials"][0] if res.get("trials") else {}
    session = marks.pop("session_dir", None)
    return {
        "events": events,
        "marks": marks,
        "exit_code": code,
        "global_step": trial.get("steps"),
        "status": trial.get("status"),
        "tune_time_total_s": trial.get("time_s"),
        "processes": sorted(procs.values(), key=lambda p: p["created"]),
        "train_log_marks": train_log_marks(session) if session else {},
    }


# The first time each of these appears in Ray Train's own logs (logs/train/ray-train-sys-*.log, JSON lines
# with a local-time `asctime`), in the controller's and the worker's process.
TRAIN_LOG_MARKS = {
    "controller_requests_resources": ("controller", "Requesting resources"),
    "controller_starts_worker_group": ("controller", "Attempting to start training worker group"),
    "worker_actors_created": ("controller", "worker actors created"),
    "worker_process_group": ("worker", "Setting up process group"),
    "worker_train_fn_launched": ("worker", "Launching training function"),
}


def train_log_marks(session_dir: str) -> Dict[str, float]:
    import glob
    from datetime import datetime

    out: Dict[str, float] = {}
    for path in sorted(glob.glob(os.path.join(session_dir, "logs", "train", "ray-train-sys-*.log"))):
        role = "controller" if "-controller-" in path else "worker"
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    t = datetime.strptime(rec["asctime"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                except (ValueError, KeyError):
                    continue
                for name, (who, text) in TRAIN_LOG_MARKS.items():
                    if who == role and text in rec.get("message", ""):
                        out[name] = min(out.get(name, t), t)
    return out


# ---- the driver --------------------------------------------------------------------------------


def step_times(events: List[Dict[str, Any]]) -> List[float]:
    out = []
    for a, b in zip(events, events[1:]):
        ds = (b["step"] or 0) - (a["step"] or 0)
        if ds > 0:
            out.append((b["t"] - a["t"] - (b["eval_runtime"] or 0.0)) / ds)
    return out


def analyse(r: Dict[str, Any]) -> Dict[str, Any]:
    ev = r["events"]
    st = step_times(ev)
    med = statistics.median(st) if st else None
    out = {
        "side": r["side"],
        "wall_s": r["t_exit"] - r["t_launch"],
        "reports": len(ev),
        "steps": ev[-1]["step"] if ev else None,
        "median_step_s": med,
        "step_s_spread": (max(st) - min(st)) / med if st and med else None,
        "startup_s": (ev[0]["t"] - ev[0]["eval_runtime"] - ev[0]["step"] * med - r["t_launch"]) if ev and med else None,
        "teardown_s": r["t_exit"] - ev[-1]["t"] if ev else None,
        "import_lag_s": r["t_import"] - r["t_launch"],
    }
    marks = r.get("marks") or {}
    if ev and med and "ray_init_begin" in marks:
        step0 = ev[0]["t"] - ev[0]["eval_runtime"] - ev[0]["step"] * med
        out["startup_parts_s"] = {
            "launch_to_ray_init": marks["ray_init_begin"] - r["t_launch"],
            "ray_init": marks["ray_init_end"] - marks["ray_init_begin"],
            "ray_init_to_trial_start": marks.get("trial_start", step0) - marks["ray_init_end"],
            "trial_start_to_step0": step0 - marks.get("trial_start", step0),
        }
        out["timeline_s"] = timeline(r, step0)
    if ev and "ray_shutdown_begin" in marks:
        out["teardown_parts_s"] = {
            "last_report_to_search_end": marks.get("experiment_end", ev[-1]["t"]) - ev[-1]["t"],
            "results_and_report_files": marks["ray_shutdown_begin"] - marks.get("experiment_end", ev[-1]["t"]),
            "ray_shutdown": marks["ray_shutdown_end"] - marks["ray_shutdown_begin"],
            "after_shutdown_to_exit": r["t_exit"] - marks["ray_shutdown_end"],
        }
    if r["side"] == "bare" and marks:
        out["timeline_s"] = dict(
            sorted(
                (
                    (k, v - r["t_launch"])
                    for k, v in {
                        **marks,
                        "import_done": r["t_import"],
                        "step0": r["first_step_t"],
                        "first_report": ev[0]["t"] if ev else None,
                        "process_exit": r["t_exit"],
                    }.items()
                    if v
                ),
                key=lambda kv: kv[1],
            )
        )
    if r["side"] == "bare":
        out["exact_median_step_s"] = statistics.median(r["exact_step_s"])
        out["exact_startup_s"] = r["first_step_t"] - r["t_launch"]
    return out


# Ray processes by proctitle (the first process whose title holds the text; created = process start).
PROCESS_MARKS = {
    "trial_actor_process": "ImplicitFunc",  # `tune`, and `train` before it ran as a bare Train run
    "controller_process": "TrainController",
    "pg_cleaner_process": "PlacementGroupCleaner",
    "train_worker_process": "RayTrainWorker",
}


def timeline(r: Dict[str, Any], step0: float) -> Dict[str, float]:
    """Every known moment of the ray side, in seconds from the launch, in time order."""
    marks = dict(r.get("marks") or {})
    marks.update(r.get("train_log_marks") or {})
    for name, text in PROCESS_MARKS.items():
        created = [p["created"] for p in r.get("processes") or [] if text in p["title"]]
        if created:
            marks[name] = min(created)
    marks["import_done"] = r["t_import"]
    marks["step0"] = step0
    marks["first_report_at_driver"] = r["events"][0]["t"]
    marks["last_report_at_driver"] = r["events"][-1]["t"]
    marks["process_exit"] = r["t_exit"]
    return dict(sorted(((k, v - r["t_launch"]) for k, v in marks.items()), key=lambda kv: kv[1]))


def launch(
    side: str, config: Path, experiment: str, threads: int, timeout: int, extra_env: Optional[Dict[str, str]] = None
) -> Dict[str, Any]:
    result = WORK / f"{experiment}.json"
    env = dict(
        os.environ,
        TOKENIZERS_PARALLELISM="false",
        TRANSFORMERS_VERBOSITY="error",
        HF_HUB_OFFLINE="1",
        PYTHONWARNINGS="ignore",
        OMP_NUM_THREADS=str(threads),
        **(extra_env or {}),
    )
    log = (WORK / f"{experiment}.log").open("w")
    t_launch = time.time()
    p = subprocess.run(
        [sys.executable, __file__, "--side", side, str(config), experiment, str(result)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        env=env,
    )
    t_exit = time.time()
    if p.returncode or not result.exists():
        raise RuntimeError(f"{side} run failed (exit {p.returncode}); see {log.name}")
    r = json.loads(result.read_text())
    r.update(side=side, t_launch=t_launch, t_exit=t_exit)
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="Tiny T5, 20 steps, 1 round: a smoke run.")
    ap.add_argument("--rounds", type=int, default=None, help="bare+ray pairs (default 2; quick 1).")
    ap.add_argument("--steps", type=int, default=None, help="Training steps per run (default 40; quick 20).")
    ap.add_argument(
        "--eval-steps",
        type=int,
        default=5,
        help="Eval + checkpoint + report interval (default 5: twice as many checkpoints as our default 10).",
    )
    ap.add_argument("--batch", type=int, default=8, help="Batch size (default 8, our default).")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for both sides (default 1).")
    ap.add_argument("--gpus", type=float, default=None, help="GPUs per worker (default: 1 if CUDA, else 0).")
    ap.add_argument(
        "--ray-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra environment for the ray side only (e.g. RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.5), "
        "to try a product setting; repeatable.",
    )
    ap.add_argument("--work-dir", type=Path, default=None, help="Config, runs and logs (default bench/out/overhead/).")
    ap.add_argument("--json-out", type=Path, default=None, help="JSON path (default bench/out/overhead.json).")
    ap.add_argument("--timeout", type=int, default=1800, help="Seconds per run.")
    ap.add_argument("--side", nargs=4, metavar=("SIDE", "CONFIG", "EXPERIMENT", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    global WORK
    WORK = args.work_dir or WORK
    if args.side:
        side, config, experiment, result = args.side
        sampler = GpuSampler().start()
        r = side_bare(Path(config)) if side == "bare" else side_ray(Path(config), experiment)
        r["gpu"] = sampler.stop()
        r["t_import"] = T_IMPORT
        Path(result).write_text(json.dumps(r))
        return 0

    rounds = args.rounds or (1 if args.quick else 2)
    steps = args.steps or (20 if args.quick else 40)
    eval_steps = args.eval_steps
    gpus = args.gpus if args.gpus is not None else (1.0 if cuda_available() else 0.0)
    t0 = time.time()
    model_dir = ensure_model(args.quick)
    if (WORK / "runs").exists():
        shutil.rmtree(WORK / "runs")
    config = write_config(WORK / "config.yaml", model_dir, repeated_train(4), steps, eval_steps, args.batch, gpus)
    ray_env = dict(kv.split("=", 1) for kv in args.ray_env)
    runs = []
    for i in range(rounds):
        for side in ("bare", "ray"):
            print(f"round {i + 1}: {side} ...", flush=True)
            r = launch(side, config, f"{side}{i + 1}", args.threads, args.timeout, ray_env if side == "ray" else None)
            a = analyse(r)
            a.update(
                round=i + 1,
                gpu=r.get("gpu"),
                peak_gpu_mem_bytes=r.get("peak_gpu_mem_bytes"),
                torch_threads=r.get("torch_threads"),
                processes_s=[(p["title"], round(p["created"] - r["t_launch"], 2)) for p in r.get("processes") or []],
            )
            print(
                f"  wall {a['wall_s']:.1f}s, start-up {a['startup_s']:.1f}s, median step {a['median_step_s']:.3f}s",
                flush=True,
            )
            runs.append(a)
    pairs = []
    for i in range(rounds):
        b, r = [x for x in runs if x["round"] == i + 1]
        pairs.append(
            {
                "round": i + 1,
                "step_ratio": r["median_step_s"] / b["median_step_s"],
                "per_report_extra_s": (r["median_step_s"] - b["median_step_s"]) * eval_steps,
                "startup_extra_s": r["startup_s"] - b["startup_s"],
                "wall_extra_s": r["wall_s"] - b["wall_s"],
            }
        )
    summary = {
        k: statistics.median(p[k] for p in pairs)
        for k in ("step_ratio", "per_report_extra_s", "startup_extra_s", "wall_extra_s")
    }
    summary.update(
        target_step_ratio=1.05,
        target_startup_s=15.0,
        step_ratio_met=summary["step_ratio"] <= 1.05,
        startup_met=summary["startup_extra_s"] <= 15.0,
    )
    rows = [
        [
            a["round"],
            a["side"],
            a["steps"],
            a["reports"],
            f"{a['median_step_s']:.3f}",
            "" if a.get("exact_median_step_s") is None else f"{a['exact_median_step_s']:.3f}",
            f"{a['startup_s']:.1f}",
            "" if a.get("exact_startup_s") is None else f"{a['exact_startup_s']:.1f}",
            f"{a['teardown_s']:.1f}",
            f"{a['wall_s']:.1f}",
        ]
        for a in runs
    ]
    print_table(
        f"Orchestration overhead ({model_dir.name}, {steps} steps, eval+checkpoint every {eval_steps}, "
        f"{args.threads} thread(s))",
        [
            "round",
            "side",
            "steps",
            "reports",
            "s/step (median)",
            "s/step exact",
            "start-up s",
            "start-up exact s",
            "teardown s",
            "wall s",
        ],
        rows,
    )
    print_table(
        "Per round (ray vs bare)",
        ["round", "step time ratio", "extra s per report", "extra start-up s", "extra wall s"],
        [
            [
                p["round"],
                f"{p['step_ratio']:.3f}x",
                f"{p['per_report_extra_s']:.2f}",
                f"{p['startup_extra_s']:.1f}",
                f"{p['wall_extra_s']:.1f}",
            ]
            for p in pairs
        ],
    )
    parts = [(a["round"], a["startup_parts_s"]) for a in runs if a.get("startup_parts_s")]
    if parts:
        keys = list(parts[0][1])
        print_table(
            "Start-up of the ray side (s)",
            ["round"] + keys,
            [[rnd] + [f"{p[k]:.1f}" for k in keys] for rnd, p in parts],
        )
    for side in ("bare", "ray"):
        lines = [(a["round"], a["timeline_s"]) for a in runs if a["side"] == side and a.get("timeline_s")]
        if lines:
            names = list(dict.fromkeys(k for _, tl in lines for k in tl))
            print_table(
                f"Timeline of the {side} side (s from launch)",
                ["moment"] + [f"round {rnd}" for rnd, _ in lines],
                [[k] + [f"{tl[k]:.1f}" if k in tl else "" for _, tl in lines] for k in names],
            )
    tear = [(a["round"], a["teardown_parts_s"]) for a in runs if a.get("teardown_parts_s")]
    if tear:
        keys = list(tear[0][1])
        print_table(
            "Teardown of the ray side (s)", ["round"] + keys, [[rnd] + [f"{p[k]:.1f}" for k in keys] for rnd, p in tear]
        )
    for k, v in summary.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    path = write_json(
        "overhead",
        {
            "model": model_dir.name,
            "steps": steps,
            "eval_steps": eval_steps,
            "batch": args.batch,
            "threads": args.threads,
            "gpus_per_worker": gpus,
            "ray_env": ray_env,
            "runs": runs,
            "pairs": pairs,
            "summary": summary,
            "bench_wall_s": time.time() - t0,
        },
        args.json_out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
