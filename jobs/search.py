"""The search: a Ray Tune `Tuner` over a driver function; each trial is a Ray Train `TorchTrainer`.

Ray Train V2 pattern (Ray 2.60 rejects a Trainer passed into a Tuner): the trial function builds its
own TorchTrainer (jobs/trial_trainer.py) and forwards the workers' reports to Tune with
`TuneReportCallback`. `train` runs its one trial without Tune (jobs/single_run.py); its result goes
through the same collect_results.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from orchestrator.core.config import RunConfig
from orchestrator.core.ray_storage import TUNE_DIR, RunStorage
from orchestrator.core.rundir import TRIALS_DIR, RunDir

TRIAL_CPU = 0.01  # a Tune trial only drives its Train workers, which hold the real resources


# ---- inside Ray: one trial ---------------------------------------------------------------------


def trial_driver(
    config: Dict[str, Any],
    run_config: Dict[str, Any],
    data: list,
    storage: str,
    wandb_dir: Optional[str],
    storage_filesystem: Any = None,
    tracking_sink: Optional[Dict[str, Any]] = None,
    mlflow_live: Optional[Dict[str, Any]] = None,
    log: Optional[Dict[str, Any]] = None,
    planner: Optional[Callable[[RunConfig], Dict[str, Any]]] = None,
) -> None:
    """Tune trainable: one Ray Train run with this trial's hyperparameters, its reports forwarded to Tune."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from jobs.trial_trainer import plan_trial, trial_trainer
    from jobs.wont_fit import report_wont_fit

    trial_id = ray.tune.get_context().get_trial_id()
    cfg, plan = plan_trial(run_config, config["params"], planner)
    if plan.get("wont_fit"):  # its estimate exceeds the largest GPU (or the host): no Train run, one report
        return report_wont_fit(cfg, trial_id, plan)
    trial_trainer(
        cfg,
        config["params"],
        plan,
        trial_id,
        [TuneReportCallback()],
        data=data,
        storage=storage,
        wandb_dir=wandb_dir,
        storage_filesystem=storage_filesystem,
        tracking_sink=tracking_sink,
        mlflow_live=mlflow_live,
        log=log,
    ).fit()


# ---- on the driver: the search -----------------------------------------------------------------


def param_space(cfg: RunConfig, fixed: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Tune's param space: {'params': {dotted key: distribution}} (or fixed values for `train`)."""
    from ray import tune

    if fixed is not None:
        return {"params": dict(fixed)}
    space: Dict[str, Any] = {}
    for key, d in cfg.search.space.items():
        bounds = d.bounds()  # [low, high], or the choices
        if d.type == "loguniform":
            space[key] = tune.loguniform(*bounds)
        elif d.type == "uniform":
            space[key] = tune.uniform(*bounds)
        elif d.type == "randint":
            space[key] = tune.randint(int(bounds[0]), int(bounds[1]) + 1)  # inclusive high, as users write it
        else:
            space[key] = tune.choice(bounds)
    return {"params": space}


def planned_reports(cfg: RunConfig, n_train: int, params: Dict[str, Any]) -> Dict[str, int]:
    """Optimizer steps and Tune reports a trial makes if it runs to the end."""
    c = cfg.with_params(params)
    t = c.training
    if t.max_steps:
        steps = t.max_steps
    else:
        per_epoch = max(
            1, math.ceil(math.ceil(n_train / (t.batch_size * c.resources.num_workers)) / t.gradient_accumulation_steps)
        )
        steps = math.ceil(per_epoch * t.epochs)
    save = t.save_steps or t.eval_steps
    return {"steps": steps, "reports": steps // save + (1 if steps % save else 0)}


def _max_reports(cfg: RunConfig, n_train: int) -> int:
    """The longest trial in the space (smallest batch) bounds ASHA's max_t."""
    sizes = {}
    for key in ("training.batch_size", "training.gradient_accumulation_steps"):
        d = cfg.search.space.get(key)
        if d is not None:
            sizes[key] = min(d.bounds()) if d.type == "choice" else int(d.bounds()[0])
    return planned_reports(cfg, n_train, sizes)["reports"]


def build_tune_config(cfg: RunConfig, n_train: int, single: bool):
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler
    from ray.tune.search import SearchAlgorithm, Searcher

    scheduler: TrialScheduler
    search_alg: Union[Searcher, SearchAlgorithm]
    s = cfg.search
    if s.scheduler == "asha" and not single:
        from jobs.wont_fit import FeasibleASHA  # ASHA that never ranks a skipped (won't fit) trial

        scheduler = FeasibleASHA(
            time_attr="training_iteration",
            max_t=max(_max_reports(cfg, n_train), s.grace_period),
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    # The search algorithm enforces the concurrency limit (Tune ignores max_concurrent_trials when a
    # search algorithm is given).
    conc = s.max_concurrent_trials
    if s.algorithm == "optuna" and not single:
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        search_alg = ConcurrencyLimiter(OptunaSearch(seed=s.seed), max_concurrent=conc)
    else:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        search_alg = BasicVariantGenerator(random_state=s.seed, max_concurrent=conc)
    return tune.TuneConfig(
        metric=s.metric,
        mode=s.resolved_mode,
        num_samples=1 if single else s.num_samples,
        scheduler=scheduler,
        search_alg=search_alg,
        # A finished trial's driver must give its CPU sliver back at once: a reused, idle driver
        # actor would keep the next trial's workers from fitting on a small machine.
        reuse_actors=False,
    )


@dataclass
class SearchResult:
    """What a search leaves: the summary for results.json (trials, best, params, paths) and the raw
    eval examples (the merge check runs on them)."""

    summary: Dict[str, Any]
    eval_raw: Any
    test_raw: Any = None


def run_search(
    cfg: RunConfig,
    run: RunDir,
    st: RunStorage,
    *,
    fixed_params: Optional[Dict[str, Any]] = None,
    resume: bool = False,
    callbacks: Optional[list] = None,
    echo=print,
    mlflow_live: Optional[Dict[str, Any]] = None,
    verbose: bool = False,
    planner: Optional[Callable[[RunConfig], Dict[str, Any]]] = None,
) -> SearchResult:
    """Run the search (or, with `fixed_params`, one trial); record the trials and copy the best adapter out."""
    import ray

    from jobs.budget_searcher import record_spend
    from jobs.data import data_notices, data_stats_line, prepare_datasets, trial_data
    from jobs.modeling import load_tokenizer

    tokenizer = load_tokenizer(cfg)
    t0 = time.time()
    data = prepare_datasets(cfg, tokenizer)  # tokenized once per search, shared by every trial
    n_train = len(data["train"])
    echo(f"Tokenized {n_train} train / {len(data['eval'])} eval examples in {time.time() - t0:.1f}s")
    echo(data_stats_line(data["stats"]))
    # By value: the driver's datasets are memory-mapped from its own cache, which no worker node has.
    data_ref = ray.put(trial_data(data))
    wandb_dir = str(run.path.resolve()) if cfg.tracking.effective_backend == "wandb" else None
    sink = None
    if wandb_dir and st.remote and st.run_uri:
        # a worker node's disk goes away with the node: trials copy their offline runs to storage
        sink = {"path": st.run_uri.removeprefix("s3://") + "/wandb", "filesystem": st.filesystem}
    log: Dict[str, Any] = {"stream": verbose}
    if st.remote and st.run_uri:
        log["sink"] = {"path": st.run_uri.removeprefix("s3://") + f"/{TRIALS_DIR}", "filesystem": st.filesystem}
    else:
        log["dir"] = str((run.path / TRIALS_DIR).resolve())
    trial_args = dict(
        run_config=cfg.to_json(),
        data=[data_ref],
        storage=st.path,
        wandb_dir=wandb_dir,
        storage_filesystem=st.filesystem,
        tracking_sink=sink,
        mlflow_live=mlflow_live,
        log=log,
        planner=planner,
    )
    tuner = None
    if fixed_params is not None:  # `train`: one bare Ray Train run, no Tune (jobs/single_run.py)
        from jobs.single_run import run_single

        grid: Any = run_single(cfg, st, fixed_params, trial_args, resume=resume, callbacks=callbacks, echo=echo)
    else:
        tuner = run_tune(cfg, st, n_train, trial_args, resume=resume, callbacks=callbacks, echo=echo)
        grid = tuner.fit()
    summary = collect_results(cfg, grid, run, n_train, st)
    record_spend(cfg, run, summary, tuner)  # search.budget or resources.price_per_gpu_hour: trials.csv, results
    summary["data_stats"] = data["stats"]  # results.json: truncated examples and dropped bad rows per split
    summary["notices"] = data_notices(data["stats"], cfg) + summary["notices"]
    return SearchResult(summary, data["eval_raw"], data.get("test_raw"))


def run_tune(cfg: RunConfig, st: RunStorage, n_train: int, trial_args: Dict[str, Any], *, resume, callbacks, echo):
    """The search's Tuner (restored from `st` with `resume` when it can be), not yet fitted."""
    from ray import tune

    from jobs.budget_searcher import budget_limited
    from jobs.driver_callbacks import driver_local

    trainable = tune.with_resources(tune.with_parameters(trial_driver, **trial_args), {"cpu": TRIAL_CPU})
    tune_path = f"{st.path}/{TUNE_DIR}"
    if resume and tune.Tuner.can_restore(tune_path, storage_filesystem=st.filesystem):
        echo(f"Resuming the search in {st.uri}/{TUNE_DIR}")
        tuner = tune.Tuner.restore(
            tune_path,
            trainable=trainable,
            resume_errored=True,
            param_space=param_space(cfg),
            storage_filesystem=st.filesystem,
        )
        # a fresh display, not the pickled one (Tuner has no public setter)
        tuner._local_tuner._run_config.callbacks = driver_local(callbacks)  # type: ignore[union-attr]
        return tuner
    return tune.Tuner(
        trainable,
        param_space=param_space(cfg),
        tune_config=budget_limited(build_tune_config(cfg, n_train, single=False), cfg, echo),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=st.path,
            storage_filesystem=st.filesystem,
            verbose=0,
            callbacks=driver_local(callbacks),
        ),
    )


def collect_results(cfg: RunConfig, grid, run: RunDir, n_train: int, st: RunStorage) -> Dict[str, Any]:
    """trials.csv, per-trial histories, the best trial's adapter copied to best/adapter."""
    from jobs.checkpoints import save_log_history
    from jobs.merge import copy_adapter
    from jobs.model_cache import model_path
    from jobs.throughput import throughput_fields
    from jobs.wont_fit import measured_fields, skipped_fields

    metric, mode = cfg.search.metric, cfg.search.resolved_mode
    better = (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)
    rows: List[Dict[str, Any]] = []
    notices: Dict[str, None] = {}  # worker notices, each once, in order
    best: Optional[Dict[str, Any]] = None
    for result in grid:
        params = (result.config or {}).get("params", {})
        history = _history(result)
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        scored = [h for h in history if _finite(h.get(metric))]
        plan = planned_reports(cfg, n_train, params)
        last = history[-1] if history else {}
        steps = int(last.get("step", 0) or 0)
        status = "ERROR" if result.error else ("COMPLETED" if steps >= plan["steps"] else "STOPPED_EARLY")
        row = {
            "trial_id": trial_id,
            **params,
            metric: None,
            "steps": steps,
            "planned_steps": plan["steps"],
            "status": status,
            "time_s": round(float(last.get("time_total_s", 0) or 0), 1),
            **{k: last[k] for k in ("gradient_checkpointing", "estimated_peak_gb") if k in last},  # the plan
            **skipped_fields(last),  # SKIPPED_WONT_FIT: the estimate, needed vs available GiB
            **measured_fields(history),  # beside estimated_peak_gb (GPU runs)
            **throughput_fields(last),  # tokens/s, MFU, kernels (jobs/throughput.py)
        }
        run.trial_dir(trial_id).mkdir(parents=True, exist_ok=True)
        if st.remote and st.run_uri:  # the workers' logs were copied to the run's S3 folder: bring them here
            from jobs.worker_log import fetch_logs

            fetch_logs(st, f"{st.run_uri}/{TRIALS_DIR}/{trial_id}", run.trial_dir(trial_id))
        if result.error:
            from orchestrator.core.formatting import error_in_log, last_error_line

            log = run.trial_dir(trial_id) / "worker.log"  # what the live line showed, else Tune's error
            row["error"] = error_in_log(log) or last_error_line(str(result.error))
        said = [n for h in history if isinstance(h.get("notices"), str) for n in h["notices"].split("\n") if n]
        notices.update((f"trial {trial_id}: {n}", None) for n in said)
        if last:
            run.write_trial_result(trial_id, _jsonable(last))
        if scored:
            row[metric] = _best_of(scored, metric, mode)[metric]
            save_log_history([h.get("checkpoint_path") for h in reversed(history)], run, trial_id, st)
            # Ray keeps only the best few checkpoints: pick among those still in storage, latest on ties.
            kept = [h for h in scored if h.get("checkpoint_path") and st.exists(h["checkpoint_path"])]
            if kept:
                top = _best_of(kept, metric, mode)
                if best is None or better(top[metric], best["metrics"][metric]):
                    best = {
                        "trial_id": trial_id,
                        "params": params,
                        "metrics": _jsonable(top),
                        "checkpoint": top["checkpoint_path"],
                        "step": int(top.get("step", 0) or 0),
                    }
        rows.append(row)
    run.write_trials_csv(rows)
    summary: Dict[str, Any] = {
        "experiment": cfg.experiment,
        "metric": metric,
        "mode": mode,
        "num_trials": len(rows),
        "trials": rows,
        "best": None,
        "params": {},
        "paths": {"run_dir": str(run.path.resolve())},
        "notices": list(notices),
    }
    if best is None:
        return summary
    ckpt = st.local_copy(best["checkpoint"], run.best_dir / "_checkpoint")
    adapter = copy_adapter(ckpt / "checkpoint", run.adapter_dir, tokenizer_src=model_path(cfg, weights=False))
    if st.remote:
        shutil.rmtree(ckpt, ignore_errors=True)  # the download; the checkpoint itself stays on S3
    summary["best"] = best
    summary["params"] = {k: best["metrics"].get(k) for k in ("trainable_params", "total_params", "trainable_pct")}
    summary["paths"]["adapter"] = str(adapter.resolve())
    return summary


def _best_of(rows: List[Dict[str, Any]], metric: str, mode: str) -> Dict[str, Any]:
    """The best row by metric; among equals the latest step (the newest checkpoint survives pruning)."""
    sign = 1 if mode == "max" else -1
    return max(rows, key=lambda h: (sign * h[metric], h.get("step") or 0))


def _history(result) -> List[Dict[str, Any]]:
    if getattr(result, "history", None) is not None:  # `train`'s bare Train run (jobs/single_run.py)
        return result.history
    df = result.metrics_dataframe
    if df is None or df.empty:
        return [result.metrics] if result.metrics else []
    return df.to_dict("records")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _jsonable(d: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = None if isinstance(v, float) and not math.isfinite(v) else v
        elif hasattr(v, "item"):
            out[k] = v.item()
    return out
