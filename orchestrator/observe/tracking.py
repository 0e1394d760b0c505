"""Driver-side tracking after a search: the best adapter as a W&B Artifact, the `wandb sync` hint, MLflow.

The per-trial W&B runs are written by the Train workers (jobs/wandb_trial.py `start_tracking`: one run
per trial, group = experiment, job_type = trial, offline unless WANDB_API_KEY). What is left for the
driver once the search is over:

- `log_best_adapter_to_wandb`: one more run in the experiment's group (job_type `best-adapter`) that
  logs `best/adapter/` as a `model` Artifact with the alias `best` (retrain passes `production`).
- `wandb_sync_command`: the command that uploads the offline runs, printed at the end of `tune`.
- `log_run_to_mlflow`: the whole search as MLflow runs (a parent per search, a child per trial with
  params and per-step metrics from log_history.json, the adapter as an artifact).
- `after_search`: the one hook `tune` calls: report, the backend's logging, the sync hint.

The run folder is read through RunDir. (Tests read the offline `.wandb` transaction logs with
tests/helpers/wandb_files.py.)

wandb and mlflow are imported inside the functions that need them: `tracking.wandb: false` imports
nothing of W&B.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from orchestrator.core.config import RunConfig
from orchestrator.core.formatting import is_number
from orchestrator.core.mlflow_tags import KIND_TAG, SEARCH_TAG, TRIAL_TAG, allow_file_store, search_uid
from orchestrator.core.rundir import RunDir

ADAPTER_ARTIFACT_TYPE = "model"
BEST_JOB_TYPE = "best-adapter"


# ---- W&B --------------------------------------------------------------------------------------


def wandb_mode(cfg: RunConfig) -> str:
    """online/offline, as the workers resolve it: auto is online only when WANDB_API_KEY is set."""
    mode = cfg.tracking.mode
    if mode == "auto":
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


def adapter_artifact_name(experiment: str) -> str:
    return f"{experiment}-adapter"


def log_best_adapter_to_wandb(
    run_dir, cfg: RunConfig, aliases: Sequence[str] = ("best",), adapter_dir=None
) -> Optional[Dict[str, Any]]:
    """Log the best trial's adapter as a W&B Artifact (type `model`) with `aliases`.

    A run of its own in the experiment's group (job_type `best-adapter`) holds the artifact, the best
    trial's id, hyperparameters and metrics; offline (files under RUN_DIR/wandb) unless WANDB_API_KEY
    is set. The files are referenced in place (`policy="immutable"`), not copied to W&B's staging
    folder: the artifact stays inside the run folder until `wandb sync` uploads it. Logging the same
    adapter again with another alias (retrain's `production`) adds the alias to the same version.

    Returns {run_id, artifact, aliases, mode, run_path} or None when W&B is off or there is no adapter.
    """
    if cfg.tracking.effective_backend != "wandb":
        return None
    folder = RunDir(run_dir)
    results = folder.results() or {}
    best = results.get("best") or {}
    adapter = Path(adapter_dir) if adapter_dir else folder.adapter_dir
    if not (adapter / "adapter_config.json").exists():
        return None
    mode = wandb_mode(cfg)
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    experiment = results.get("experiment") or cfg.experiment
    metric = results.get("metric") or cfg.search.metric
    kind = "promote" if "production" in aliases else "best"
    run = wandb.init(
        project=cfg.tracking.project,
        entity=cfg.tracking.entity,
        group=experiment,
        job_type=BEST_JOB_TYPE,
        name=f"{experiment}-{kind}",
        id=f"{experiment}-{kind}-{int(time.time())}",
        dir=str(folder.path),
        mode=mode,
        reinit="create_new",
        config={
            "trial_id": best.get("trial_id"),
            "params": best.get("params") or {},
            "metric": metric,
            "mode": results.get("mode"),
            **(results.get("params") or {}),
        },
        settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_machine_info=True),
    )
    try:
        metrics = best.get("metrics") or {}
        art = wandb.Artifact(
            adapter_artifact_name(experiment),
            type=ADAPTER_ARTIFACT_TYPE,
            description=f"LoRA adapter of trial {best.get('trial_id')} ({metric} = {metrics.get(metric)})",
            metadata={
                "experiment": experiment,
                "trial_id": best.get("trial_id"),
                "step": best.get("step"),
                "params": best.get("params") or {},
                "metric": metric,
                "value": metrics.get(metric),
                "base_model": (folder.config() or {}).get("model", {}).get("name_or_path"),
                **(results.get("params") or {}),
            },
        )
        art.add_dir(str(adapter), policy="immutable")
        run.log_artifact(art, aliases=list(aliases))
        run.summary.update({k: v for k, v in metrics.items() if is_number(v)})
        run.summary.update({"best_trial": best.get("trial_id"), "best_step": best.get("step")})
        info = {
            "run_id": run.id,
            "artifact": adapter_artifact_name(experiment),
            "aliases": list(aliases),
            "mode": mode,
            "run_path": str(Path(run.dir).parent) if run.dir else None,
        }
    finally:
        run.finish()
        # W&B's service process may still be flushing this run's logs after finish() returns; ended here, the
        # run folder is complete before it is uploaded (an S3 output.dir) or published.
        wandb.teardown()
    return info


def offline_run_dirs(run_dir) -> List[Path]:
    """The offline W&B run folders of a run (RUN_DIR/wandb/offline-run-*), oldest first."""
    root = RunDir(run_dir).wandb_dir
    return sorted(p for p in root.glob("offline-run-*") if p.is_dir()) if root.is_dir() else []


def wandb_sync_command(run_dir) -> Optional[str]:
    """`wandb sync ...` for the run's offline W&B runs, or None when there are none."""
    dirs = offline_run_dirs(run_dir)
    if not dirs:
        return None
    return f"wandb sync {shlex.quote(str(RunDir(run_dir).wandb_dir.resolve()))}/offline-run-*"


# ---- MLflow -------------------------------------------------------------------------------------


def mlflow_tracking_uri(run_dir, cfg: RunConfig) -> str:
    """cfg.tracking.mlflow_tracking_uri, else a file store in RUN_DIR/mlruns."""
    uri = cfg.tracking.mlflow_tracking_uri
    if uri:
        return uri
    return (Path(run_dir) / "mlruns").resolve().as_uri()


def log_run_to_mlflow(run_dir, cfg: RunConfig) -> Dict[str, Any]:
    """Log a finished search to MLflow: a parent run for the search, a nested run per trial.

    Trial runs carry the searched hyperparameters and parameter counts as params, every per-step
    value of log_history.json (loss, learning_rate, grad_norm, eval_*) as metric histories, and the
    trial's status, time and peak memory. The parent carries the resolved config (flattened), the best
    trial's metrics, and as artifacts `best_adapter/` (the adapter), results.json, trials.csv and the
    report when it exists. Logging the same run folder twice does not duplicate it.

    With a tracking URI set, the parent and trial runs were opened live (orchestrator.observe.mlflow_live):
    they are completed (summary, artifacts, status), their step histories not logged twice.

    Returns {tracking_uri, experiment_id, parent_run_id, trial_runs: {trial_id: run_id}, reused}.
    """
    folder = RunDir(run_dir)
    uri = mlflow_tracking_uri(folder.path, cfg)
    allow_file_store(uri)
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from orchestrator.observe.mlflow_live import experiment_id

    results = folder.results() or {}
    config = folder.config() or cfg.to_json()
    experiment = results.get("experiment") or cfg.experiment
    metric = results.get("metric") or cfg.search.metric
    uid = search_uid(experiment, results.get("started_at", ""))
    client = MlflowClient(tracking_uri=uri)
    exp_id = experiment_id(client, cfg.tracking.project)

    existing = client.search_runs([exp_id], filter_string=f"tags.`{SEARCH_TAG}` = '{uid}'")
    parents = [r for r in existing if r.data.tags.get(KIND_TAG) == "search"]
    kids = {r.data.tags.get(TRIAL_TAG): r.info.run_id for r in existing if r.data.tags.get(KIND_TAG) == "trial"}
    if parents and parents[0].info.status != "RUNNING":
        return {
            "tracking_uri": uri,
            "experiment_id": exp_id,
            "parent_run_id": parents[0].info.run_id,
            "trial_runs": kids,
            "reused": True,
        }

    now = int(time.time() * 1000)
    best = results.get("best") or {}
    tags = {
        "best_trial": str(best.get("trial_id")),
        "mlflow.note.content": f"qlora-launch search {experiment}: {results.get('num_trials', '?')} trials, "
        f"{metric} ({results.get('mode')}); best trial {best.get('trial_id')}.",
    }
    if parents:  # opened live by the driver before the first trial (orchestrator.observe.mlflow_live)
        pid = parents[0].info.run_id
        for k, v in tags.items():
            client.set_tag(pid, k, v)
    else:
        tags.update(
            {
                SEARCH_TAG: uid,
                KIND_TAG: "search",
                "qlora_launch.experiment": experiment,
                "qlora_launch.run_dir": str(folder.path.resolve()),
            }
        )
        pid = client.create_run(exp_id, run_name=experiment, tags=tags).info.run_id
    params = [Param(k, _param_str(v)) for k, v in _flatten(config).items()]
    params += [Param(f"search.best.{k}", _param_str(v)) for k, v in (best.get("params") or {}).items()]
    bm = {
        k: v
        for k, v in (best.get("metrics") or {}).items()
        if is_number(v) and (k.startswith("eval_") or k in ("loss", "epoch", "step"))
    }
    metrics = [Metric(f"best.{k}", float(v), now, 0) for k, v in bm.items()]
    metrics += [Metric(k, float(v), now, 0) for k, v in (results.get("params") or {}).items() if is_number(v)]
    _log_batch(client, pid, metrics, params, [])

    trial_runs: Dict[str, str] = {}
    for row in results.get("trials") or []:
        tid = str(row["trial_id"])
        last = folder.trial_result(tid)
        history = folder.trial_history(tid)
        status = row.get("status") or "COMPLETED"
        live = kids.get(tid)  # logged step by step by the trial itself: add only its summary
        if live:
            cid = live
            client.set_tag(cid, "qlora_launch.status", status)
            client.set_tag(cid, "best", str(tid == best.get("trial_id")).lower())
        else:
            cid = client.create_run(
                exp_id,
                run_name=tid,
                tags={
                    "mlflow.parentRunId": pid,
                    SEARCH_TAG: uid,
                    KIND_TAG: "trial",
                    TRIAL_TAG: tid,
                    "qlora_launch.status": status,
                    "group": experiment,
                    "job_type": "trial",
                    "best": str(tid == best.get("trial_id")).lower(),
                },
            ).info.run_id
        tparams = {
            k: row[k] for k in row if k not in ("trial_id", metric, "steps", "planned_steps", "status", "time_s")
        }
        tparams.update({k: last[k] for k in ("trainable_params", "total_params", "trainable_pct") if k in last})
        if live:  # MLflow params are write-once: keep what the trial logged
            logged = client.get_run(cid).data.params
            tparams = {k: v for k, v in tparams.items() if k not in logged}
        tmetrics = []
        for h in history if not live else []:  # a live run has its step history already
            step = int(h.get("step") or 0)
            for k, v in h.items():
                if k not in ("step", "epoch") and is_number(v):
                    tmetrics.append(Metric(k, float(v), now, step))
                elif k == "epoch" and is_number(v) and "loss" in h:
                    tmetrics.append(Metric("epoch", float(v), now, step))
        for k, v in (
            ("time_s", row.get("time_s")),
            ("steps", row.get("steps")),
            ("peak_rss_mb", last.get("peak_rss_mb")),
            (f"best_{metric}", row.get(metric)),
        ):
            if is_number(v):
                tmetrics.append(Metric(k, float(v), now, 0))
        _log_batch(client, cid, tmetrics, [Param(k, _param_str(v)) for k, v in tparams.items()], [])
        client.set_terminated(cid, "FAILED" if status == "ERROR" else "FINISHED")
        trial_runs[tid] = cid

    if folder.adapter_dir.is_dir():
        client.log_artifacts(pid, str(folder.adapter_dir), "best_adapter")
    for path in (folder.results_path, folder.trials_csv):
        if path.exists():
            client.log_artifact(pid, str(path))
    if folder.report_dir.is_dir():
        client.log_artifacts(pid, str(folder.report_dir), "report")
    client.set_terminated(pid, "FINISHED")
    return {
        "tracking_uri": uri,
        "experiment_id": exp_id,
        "parent_run_id": pid,
        "trial_runs": trial_runs,
        "reused": False,
    }


def _log_batch(client, run_id: str, metrics: list, params: list, tags: list) -> None:
    # MLflow caps a batch at 1000 metrics and 100 params.
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    if tags:
        client.log_batch(run_id, tags=tags)


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        elif v is not None and v != {}:
            out[key] = v
    return out


def _param_str(v) -> str:
    s = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return s[:6000]


# ---- the end-of-search hook ---------------------------------------------------------------------


def after_search(run_dir, cfg: RunConfig, echo: Callable[[str], Any] = print) -> Dict[str, Any]:
    """What `tune` does once results.json is written: the HTML report, the tracking backend's logging,
    and (W&B offline) the `wandb sync` command. A failure here is reported, never raised: the search
    itself has succeeded.

    Returns {report, wandb, mlflow, sync_command, errors}.
    """
    run_dir = Path(run_dir)
    out: Dict[str, Any] = {"report": None, "wandb": None, "mlflow": None, "sync_command": None, "errors": []}
    try:
        from orchestrator.observe.report.html import write_report

        out["report"] = str(write_report(run_dir))
        echo(f"Report: {out['report']}")
    except Exception as e:  # noqa: BLE001 - a broken report must not fail a finished search
        out["errors"].append(f"report: {e}")
        echo(f"Warning: could not write the report ({e}); retry with `qlora-launch report {run_dir}`.")
    backend = cfg.tracking.effective_backend
    if backend == "wandb":
        try:
            out["wandb"] = log_best_adapter_to_wandb(run_dir, cfg)
        except Exception as e:  # noqa: BLE001
            out["errors"].append(f"wandb: {e}")
            echo(f"Warning: could not log the best adapter to W&B ({e}).")
        if wandb_mode(cfg) == "offline" and cfg.output.dir.startswith("s3://"):
            # the trials' offline runs were copied from the worker nodes to the run's storage
            remote = f"{cfg.output.dir.rstrip('/')}/{cfg.experiment}/wandb"
            out["sync_command"] = f"aws s3 cp --recursive {remote} ./wandb && wandb sync ./wandb/offline-run-*"
            echo(f"W&B runs are offline files in {remote}/; to upload them (after `wandb login`):")
            echo(f"  {out['sync_command']}")
        elif wandb_mode(cfg) == "offline":
            out["sync_command"] = wandb_sync_command(run_dir)
            if out["sync_command"]:
                echo(f"W&B runs are offline files; to upload them (after `wandb login`):\n  {out['sync_command']}")
    elif backend == "mlflow":
        try:
            out["mlflow"] = log_run_to_mlflow(run_dir, cfg)
            echo(
                f"MLflow: experiment '{cfg.tracking.project}' at {out['mlflow']['tracking_uri']} "
                f"(run {out['mlflow']['parent_run_id']}); view with `mlflow ui --backend-store-uri "
                f"{out['mlflow']['tracking_uri']}`"
            )
        except Exception as e:  # noqa: BLE001
            out["errors"].append(f"mlflow: {e}")
            echo(f"Warning: could not log the search to MLflow ({e}).")
    return out
