"""One trial's Ray Train run, shared by a `tune` trial (jobs/search.py: trial_driver, inside Tune) and
`train` (jobs/single_run.py: a bare Train run from the driver)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from orchestrator.core.config import RunConfig
from orchestrator.core.ray_storage import TRAIN_RUN_PREFIX


def plan_trial(
    run_config: Dict[str, Any], params: Dict[str, Any], planner: Optional[Callable[[RunConfig], Dict[str, Any]]]
):
    """(cfg, plan): `planner` (from the driver: orchestrator.estimate.trial_plan) resolves the trial's `auto`
    settings from the estimate and records them; `plan["wont_fit"]` when it cannot fit anywhere."""
    cfg = RunConfig.model_validate(run_config)
    plan = planner(cfg.with_params(params)) if planner else {"params": {}, "record": {}}
    return cfg, plan


def trial_trainer(
    cfg: RunConfig,
    params: Dict[str, Any],
    plan: Dict[str, Any],
    trial_id: str,
    callbacks: list,
    *,
    data: list,
    storage: str,
    wandb_dir: Optional[str],
    storage_filesystem: Any = None,
    tracking_sink: Optional[Dict[str, Any]] = None,
    mlflow_live: Optional[Dict[str, Any]] = None,
    log: Optional[Dict[str, Any]] = None,
):
    """The trial's Ray Train `TorchTrainer` (run `train-<trial_id>` in `storage`); `callbacks` (Train
    UserCallbacks, run on its controller) carry its reports to Tune or, for `train`, to the driver.

    `log` says where the workers' output goes (jobs/worker_log.py): the run folder's trials/<id>/ or,
    for a remote run, a node-local file copied to storage; `stream` also sends it on to the driver.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from jobs.train_backend import DeviceTorchConfig
    from jobs.train_loop import train_fn_per_worker

    r = cfg.with_params(plan["params"]).resources  # gpus_per_worker auto: this trial's share (no plan: 1)
    per_worker = {"CPU": r.cpus_per_worker, **r.custom}
    if r.gpus:
        per_worker["GPU"] = r.gpus
    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config={
            "run_config": cfg.to_json(),
            "params": params,  # what was sampled (W&B/MLflow record these)
            "plan_params": plan["params"],  # what the plan resolved (auto settings)
            "plan": plan["record"],
            "data": data,
            "trial_id": trial_id,
            "wandb_dir": wandb_dir,
            "tracking_sink": tracking_sink,
            "mlflow_live": mlflow_live,
            "log": log,
            "wandb_run_id": f"{cfg.experiment}-{trial_id}",
        },
        torch_config=DeviceTorchConfig(),  # gloo where a worker's GPU share has no CUDA behind it
        scaling_config=ray.train.ScalingConfig(
            num_workers=r.num_workers, use_gpu=r.gpus > 0, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name=f"{TRAIN_RUN_PREFIX}{trial_id}",
            storage_path=storage,
            storage_filesystem=storage_filesystem,  # S3 (pyarrow, keys from the node's env) or None
            failure_config=ray.train.FailureConfig(max_failures=cfg.fault_tolerance.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.training.save_total_limit,
                checkpoint_score_attribute=cfg.search.metric,
                checkpoint_score_order=cfg.search.resolved_mode,
            ),
            callbacks=callbacks,
        ),
    )
