"""Live MLflow logging, for a search whose `tracking.mlflow_tracking_uri` is set.

The driver opens the search's parent run before the first trial (`open_search_run`); each trial's rank 0
logs into a child run of it while it trains (jobs/mlflow_live.py), so a server sees the losses as they
come, from whichever node the trial runs on. At the end `log_run_to_mlflow` (orchestrator.observe.tracking)
completes those runs rather than creating them again. Without a tracking URI the default store is a
folder in the run directory, which a worker node cannot reach: then the search is logged at the end only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from orchestrator.core.config import RunConfig
from orchestrator.core.mlflow_tags import KIND_TAG, SEARCH_TAG, allow_file_store, search_uid


def live_enabled(cfg: RunConfig) -> bool:
    return cfg.tracking.effective_backend == "mlflow" and bool(cfg.tracking.mlflow_tracking_uri)


def experiment_id(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp else client.create_experiment(name)


def open_search_run(cfg: RunConfig, run_dir: Path, started_at: str) -> Dict[str, Any]:
    """Create the search's parent run (status RUNNING) on the configured tracking server.

    Returns what each trial needs to log its child run: {uri, experiment_id, parent_run_id, uid}.
    """
    uri = str(cfg.tracking.mlflow_tracking_uri)
    allow_file_store(uri)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp_id = experiment_id(client, cfg.tracking.project)
    uid = search_uid(cfg.experiment, started_at)
    parent = client.create_run(
        exp_id,
        run_name=cfg.experiment,
        tags={
            SEARCH_TAG: uid,
            KIND_TAG: "search",
            "qlora_launch.experiment": cfg.experiment,
            "qlora_launch.run_dir": str(Path(run_dir).resolve()),
        },
    )
    return {"uri": uri, "experiment_id": exp_id, "parent_run_id": parent.info.run_id, "uid": uid}


def close_failed(info: Dict[str, Any]) -> None:
    """Mark the parent run FAILED when the search itself failed (the trials' runs stay as they are)."""
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=info["uri"]).set_terminated(info["parent_run_id"], "FAILED")
    except Exception:  # noqa: BLE001 - the search's own error is the one to report
        pass
