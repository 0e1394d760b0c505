"""The pipeline of `tune` and `train`, in one place.

    run():      prepare (load, override, validate, preflight) -> local | cluster
    execute():  search -> pick the best -> merge + check -> record -> track -> upload -> publish

`run` is what the CLI calls; `execute` is the part that needs a connected Ray, and it is the same in
local mode (Ray in-process, called from `run`) and on a cluster (called by the Ray Job's entry point,
orchestrator/launch/entry.py). Worker code (jobs/) is imported only when a step needs it.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import yaml

from orchestrator.core.config import RunConfig
from orchestrator.core.config_load import describe_space, load_config
from orchestrator.core.ray_storage import RAY_DIR, TRAIN_RUN_PREFIX, TUNE_DIR
from orchestrator.core.rundir import TRIALS_DIR, RunDir, run_dir_for

Echo = Callable[..., None]


def prepare(
    config: str, overrides: List[str], experiment: Optional[str] = None, check_modules: bool = True
) -> RunConfig:
    """Load, override, validate and preflight a config (no side effects). Raises UserError."""
    from orchestrator.launch.preflight import check_run

    sets = list(overrides) + ([f"output.experiment={experiment}"] if experiment else [])
    cfg = load_config(config, sets)
    check_run(cfg, check_modules=check_modules)
    return cfg


def plan_text(cfg: RunConfig, verb: str) -> str:
    """What a run would do: resolved config, search space, resources, budget (for --dry-run and validate)."""
    from orchestrator.core.budget import budget_text

    r = cfg.resources
    trials = 1 if verb == "train" else cfg.search.num_samples
    lines = ["Resolved config:", yaml.safe_dump(cfg.to_json(), sort_keys=False).rstrip(), ""]
    if verb == "tune":
        lines.append(
            f"Search: {trials} trials, {cfg.search.algorithm} sampling, {cfg.search.scheduler} scheduler, "
            f"{cfg.search.metric} ({cfg.search.resolved_mode}), at most {cfg.search.max_concurrent_trials} "
            "at once"
        )
        lines += [f"  {s}" for s in describe_space(cfg)] or ["  (empty space: every trial uses the config's values)"]
    else:
        lines.append(f"One trial with {cfg.fixed_params() or 'the config values'}")
    gpus = "a share from the trial's estimate" if r.gpus_per_worker == "auto" else f"{r.gpus_per_worker:g}"
    lines.append(
        f"Resources per trial: {r.num_workers} Ray Train worker(s) x {r.cpus_per_worker:g} CPU"
        f" + {gpus} GPU; up to {min(trials, cfg.search.max_concurrent_trials)} trials at once"
    )
    lines += [t for t in [budget_text(cfg)] if t and verb == "tune"]
    return "\n".join(lines)


def output_location(cfg: RunConfig) -> str:
    if "://" in cfg.output.dir:
        return f"{cfg.output.dir.rstrip('/')}/{cfg.experiment}"
    return str((Path(cfg.output.dir) / cfg.experiment).resolve())


def run(
    config: str,
    verb: str,
    overrides: List[str],
    *,
    dry_run: bool = False,
    address: Optional[str] = None,
    wait: bool = True,
    resume: bool = False,
    cpus: Optional[int] = None,
    gpus: Optional[float] = None,
    experiment: Optional[str] = None,
    params: Optional[Dict[str, Any]] = None,
    echo: Echo = print,
    verbose: bool = False,
) -> int:
    """`tune`/`train`: validate everything, then run locally or submit to a cluster. Returns the exit code.

    verbose: stream the workers' and libraries' output to the terminal too (it always goes to the run
    folder's logs: trials/<id>/worker.log, driver.log).
    """
    cfg = prepare(config, overrides, experiment, check_modules=address is None)
    if dry_run:
        echo(plan_text(cfg, verb))
        if address:
            from orchestrator.launch.cluster import describe_submission

            echo("\n".join(describe_submission(cfg, verb, address, resume=resume)))
        echo(f"Results would go to {output_location(cfg)}. Dry run: nothing started.")
        return 0
    if verb == "train" and address is None:  # on a cluster the trial is SKIPPED_WONT_FIT there (its nodes' memory)
        from orchestrator.estimate.wont_fit import refuse_unfit_train

        refuse_unfit_train(cfg, params)
    if address:
        from orchestrator.launch.cluster import submit_run

        return submit_run(cfg, verb, address, wait=wait, resume=resume, echo=echo, verbose=verbose)

    from orchestrator.launch.local import ray_session
    from orchestrator.launch.preflight import check_local_start, check_resume_kind
    from orchestrator.observe.driver_log import driver_logging
    from orchestrator.observe.progress import progress_callbacks
    from orchestrator.observe.summary import print_summary

    run_dir = check_local_start(cfg, resume=resume, gpus=gpus)
    if resume:
        check_resume_kind(run_dir, verb)
    made = run_dir  # the topmost folder this run creates (runs/ itself on a first run)
    while not made.parent.exists():
        made = made.parent
    try:
        with ray_session(cfg, verb, cpus=cpus, gpus=gpus, echo=echo, verbose=verbose) as fitted:
            with driver_logging(run_dir, verbose, cfg=fitted):
                callbacks = progress_callbacks(fitted, trials_dir=str(RunDir(run_dir).path.resolve() / TRIALS_DIR))
                execute(fitted, verb, resume=resume, params=params, callbacks=callbacks, echo=echo, verbose=verbose)
    except BaseException:
        _clean_failed(run_dir, resume, made)
        raise
    return print_summary(run_dir)


def _clean_failed(run_dir: Path, resume: bool, made: Path) -> None:
    """A run that failed before it reported anything leaves no half-written folder behind (nor the output
    folder it created for itself)."""
    if resume or not run_dir.exists():
        return
    ray_dir = run_dir / RAY_DIR  # Tune's state (`tune`) or the Train run's (`train`: train-<id>)
    if not (ray_dir / TUNE_DIR).exists() and not any(ray_dir.glob(f"{TRAIN_RUN_PREFIX}*")):
        shutil.rmtree(run_dir, ignore_errors=True)
        parent = run_dir
        while parent != made:  # the folders it created above it, while empty (another run may be in them)
            parent = parent.parent
            try:
                parent.rmdir()
            except OSError:
                break


def open_live_tracking(cfg: RunConfig, run: RunDir, started_at: str, echo: Echo) -> Optional[Dict[str, Any]]:
    """With `tracking.mlflow_tracking_uri` set: the search's MLflow run, opened before the first trial so
    the trials log into it as they train. None otherwise."""
    from orchestrator.observe.mlflow_live import live_enabled, open_search_run

    if not live_enabled(cfg):
        return None
    live = open_search_run(cfg, run.path, started_at)
    echo(f"MLflow: trials log live into run {live['parent_run_id']} of experiment '{cfg.tracking.project}'")
    return live


def execute(
    cfg: RunConfig,
    verb: str,
    *,
    resume: bool = False,
    params: Optional[Dict[str, Any]] = None,
    callbacks: Optional[list] = None,
    echo: Echo = print,
    verbose: bool = False,
) -> Path:
    """Search (or, for `train`, one trial), then merge, record, track, upload and publish the best.

    Needs a connected Ray. Returns the run folder (docs/run_layout.md).
    """
    from jobs.search import run_search
    from orchestrator.core.ray_storage import run_storage

    started = datetime.now(timezone.utc)
    run = RunDir(run_dir_for(cfg))
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(cfg.to_json())
    st = run_storage(cfg, run.path)
    if st.remote:
        echo(f"Checkpoints and search state go to {st.uri}")
    fixed = {**cfg.fixed_params(), **(params or {})} if verb == "train" else None
    live = open_live_tracking(cfg, run, started.isoformat(), echo)
    from orchestrator.estimate.trial_plan import trial_planner

    planner = trial_planner(
        cfg, 1 if fixed is not None else min(cfg.search.max_concurrent_trials, cfg.search.num_samples), echo
    )
    try:
        result = run_search(
            cfg,
            run,
            st,
            fixed_params=fixed,
            resume=resume,
            callbacks=callbacks,
            echo=echo,
            mlflow_live=live,
            verbose=verbose,
            planner=planner,
        )
    except BaseException:
        if live:
            from orchestrator.observe.mlflow_live import close_failed

            close_failed(live)
        raise
    summary = result.summary
    summary["started_at"] = started.isoformat()
    best = summary.get("best")
    if best and cfg.merge.enabled:
        from jobs.merge import merge_best

        echo(
            f"Merging the best adapter into the {cfg.merge.into} base weights (16/32-bit, never 4-bit), verifying "
            "and scoring it and the untuned base on the test set, as a Ray task ..."
        )
        merged = merge_best(cfg, run, st, result.eval_raw, result.test_raw)
        echo(
            f"Merge check {'passed' if merged['merge_check']['passed'] else 'FAILED'} on Ray node {merged['node']}: "
            f"max |logit diff| {merged['merge_check']['max_abs_logit_diff']:.3g} ({merged['merge_check']['dtype']})"
        )
        fid = merged["merge_check"].get("fidelity")
        if fid:
            from orchestrator.core.scores import fidelity_text

            echo(f"Fidelity: {fidelity_text(fid)}")
        summary["merge_check"] = merged["merge_check"]
        if merged["scores"]:
            summary["scores"] = merged["scores"]
        summary["paths"]["merged"] = merged["merged"]
        if st.remote and (cfg.publish is not None or cfg.retrain is not None):
            # publishing and the retrain gate read best/merged from the run folder here (files, not a model load)
            st.local_copy(merged["merged"], run.merged_dir)
    summary["data_fingerprints"] = data_fingerprints(cfg)
    summary["versions"] = library_versions()
    summary["paths"]["storage"] = st.uri
    if st.run_uri:
        summary["paths"]["remote_run_dir"] = st.run_uri
    summary["finished_at"] = datetime.now(timezone.utc).isoformat()
    run.write_results(summary)

    from orchestrator.observe.tracking import after_search
    from orchestrator.storage.run_upload import upload_run_dir

    after_search(run.path, cfg, echo=echo)  # report, W&B best-adapter artifact or MLflow; never raises
    upload_run_dir(run.path, st, echo=echo)  # S3 output.dir: results, trials, best/, report next to Ray's state
    if cfg.publish is not None and best:
        from orchestrator.publish.push import publish_from_config

        publish_from_config(run.path, cfg, echo=echo)  # verifies the merge again before any upload
    return run.path


def data_fingerprints(cfg: RunConfig) -> Dict[str, Optional[str]]:
    """Each data source's fingerprint (content, ETag or hub commit), None where it cannot be taken here."""
    from orchestrator.core.errors import UserError
    from orchestrator.storage.sources import fingerprint_path

    d = cfg.data
    out: Dict[str, Optional[str]] = {}
    for k, v in (("train", d.train), ("eval", d.eval), ("test", d.test)):
        if v:
            try:
                out[k] = fingerprint_path(v, f"data.{k}", cfg.data_endpoint)
            except UserError:
                out[k] = None
    return out


def library_versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("qlora-launch", "ray", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
