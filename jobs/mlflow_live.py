"""A trial's live MLflow run: rank 0 logs every Trainer log (loss, learning rate, eval metrics) at its step
into a child run of the search's parent run (opened by the driver: orchestrator.observe.mlflow_live).

A restarted trial (lost worker, resume) finds its run again by tags and goes on logging into it.
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict

from orchestrator.core.mlflow_tags import KIND_TAG, LIVE_TAG, SEARCH_TAG, TRIAL_TAG, allow_file_store


def open_trial_run(info: Dict[str, Any], trial_id: str, params: Dict[str, Any]):
    """(client, run id) of this trial's child run, created with the trial's hyperparameters if new."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    allow_file_store(info["uri"])
    client = MlflowClient(tracking_uri=info["uri"])
    found = client.search_runs(
        [info["experiment_id"]],
        filter_string=f"tags.`{SEARCH_TAG}` = '{info['uid']}' AND tags.`{TRIAL_TAG}` = '{trial_id}'",
    )
    if found:
        return client, found[0].info.run_id
    run = client.create_run(
        info["experiment_id"],
        run_name=trial_id,
        tags={
            "mlflow.parentRunId": info["parent_run_id"],
            SEARCH_TAG: info["uid"],
            KIND_TAG: "trial",
            TRIAL_TAG: trial_id,
            LIVE_TAG: "true",
        },
    )
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()][:100])
    return client, run.info.run_id


def mlflow_live_callback(info: Dict[str, Any], trial_id: str, params: Dict[str, Any]):
    """A TrainerCallback logging to MLflow from the world's process zero only. A tracking server that is
    down costs a warning, never the trial."""
    from transformers import TrainerCallback

    class MlflowLive(TrainerCallback):
        client: Any = None
        run_id: str = ""
        warned = False

        def _warn(self, e: Exception) -> None:
            if not self.warned:
                print(f"MLflow logging failed ({type(e).__name__}: {e}); the trial goes on without it.", flush=True)
                self.warned = True

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            try:
                self.client, self.run_id = open_trial_run(info, trial_id, params)
            except Exception as e:  # noqa: BLE001
                self._warn(e)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not self.run_id or not logs:
                return
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            metrics = [
                Metric(k, float(v), now, state.global_step)
                for k, v in logs.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            ]
            try:
                self.client.log_batch(self.run_id, metrics=metrics)
            except Exception as e:  # noqa: BLE001
                self._warn(e)

    return MlflowLive()
