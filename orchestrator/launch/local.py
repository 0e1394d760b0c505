"""Local mode: Ray started in-process, the search run right here, results under output.dir."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional

from orchestrator.core.config import RunConfig

QUIET_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_SILENT": "true",
    "RAY_DEDUP_LOGS": "1",
    "PYTHONWARNINGS": "ignore",
    # Worker start-up on a busy laptop can take longer than Ray Train's 60 s default.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",
}

# Train's controller collects worker reports when it polls (every 2 s by default): short steps waited on it
# (bench/bench_overhead.py: 4.4x -> 1.05x step time at 0.2 s). Only for one-trial runs (`train`): when Tune
# stops a trial (ASHA, or ASHA's max_t), it kills the trial's actor and with it the Train controller and
# worker; a controller that polls every 0.2 s often sees its dying worker first, retries (max_failures),
# and creates a new placement group that nothing removes. In a 12-trial ASHA search (bench/bench_search.py)
# two such groups held both CPUs and the next trials waited out the 600 s worker-group start timeout.
FAST_POLL_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


def ensure_ray(
    cpus: Optional[int] = None, gpus: Optional[float] = None, fast_poll: bool = False, log_to_driver: bool = True
) -> bool:
    """Start Ray in-process unless it is already up. Returns True when this call started it.

    fast_poll: Train's controller polls its workers every 0.2 s instead of 2 s (see FAST_POLL_ENV); for
    runs in which Tune stops no trial.
    log_to_driver: stream every Ray worker's output to this terminal (`--verbose`). Off, the trials' output
    is in their log files (jobs/worker_log.py) and Ray's own in its session logs.
    """
    import ray

    if ray.is_initialized():
        return False
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    # Pin the GCS port so Ray's own actors can be told which cluster is theirs: with several Ray
    # instances on one machine, Train's state queries otherwise fail with "Found multiple active Ray
    # instances".
    port = _free_port()
    env = {k: os.environ[k] for k in QUIET_ENV}
    # A value the user set wins; the fast poll goes to Ray's workers only (not into this process's env,
    # where a later `tune` in the same process would inherit it).
    env.update({k: os.environ.get(k, v) for k, v in FAST_POLL_ENV.items() if fast_poll or k in os.environ})
    env["RAY_ADDRESS"] = f"{ray.util.get_node_ip_address()}:{port}"
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    try:
        ray.init(
            address="local",
            num_cpus=cpus,
            num_gpus=gpus,
            # Ray Train's placement-group cleaner asks the state API (the dashboard) whether the controller
            # is alive. Without our dashboard that query goes to 127.0.0.1:8265, which on a shared machine
            # can be another Ray's dashboard: it answers "no such actor" and the cleaner removes the
            # placement group of a live run. So `train` keeps it too.
            include_dashboard=True,
            logging_level="ERROR",
            log_to_driver=log_to_driver,
            runtime_env={"env_vars": env},
        )
    finally:
        os.environ.pop("RAY_GCS_SERVER_PORT", None)
    return True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def fit_to_machine(cfg: RunConfig, total_cpus: float, echo=print) -> RunConfig:
    """Shrink each worker's CPU share a little so `max_concurrent_trials` trials fit beside their drivers.

    Each Tune trial holds a sliver of CPU (it only drives its Train workers); on a 2-core laptop two
    1-CPU trials would otherwise not fit, and the second trial's workers would wait for the first. When
    that many cannot fit by shaving, one trial at a time is fitted the same way (a trial asking for every
    CPU would otherwise never fit beside its driver's sliver); what shaving cannot fit is left as it is
    (orchestrator.launch.capacity refuses a trial that can never fit).
    """
    from jobs.search import TRIAL_CPU

    r = cfg.resources
    conc = min(cfg.search.max_concurrent_trials, cfg.search.num_samples)
    need = conc * (r.num_workers * r.cpus_per_worker + TRIAL_CPU)
    if need <= total_cpus:
        return cfg
    for n in (conc, 1) if conc > 1 else (1,):
        per_worker = int((total_cpus - n * TRIAL_CPU) / (n * r.num_workers) * 100) / 100
        if n == 1 and r.num_workers * r.cpus_per_worker + TRIAL_CPU <= total_cpus:
            return cfg  # one trial fits as asked; Ray queues the others
        if per_worker >= 0.5 * r.cpus_per_worker:
            at_once = f"so {n} trials run at once" if n > 1 else "so one trial fits at a time"
            echo(f"Local mode: {total_cpus:g} CPUs; giving each Train worker {per_worker:g} CPU {at_once}.")
            return cfg.with_params({"resources.cpus_per_worker": per_worker})
    return cfg  # too far off to fit by shaving


@contextmanager
def ray_session(
    cfg: RunConfig,
    verb: str,
    *,
    cpus: Optional[int] = None,
    gpus: Optional[float] = None,
    echo=print,
    verbose: bool = False,
) -> Iterator[RunConfig]:
    """Ray in-process for one `tune` or `train` (unless Ray is already up); yields cfg fitted to the machine."""
    import ray

    # `train`: one trial, never stopped by Tune
    started = ensure_ray(cpus, gpus, fast_poll=(verb == "train"), log_to_driver=verbose)
    try:
        fitted = fit_to_machine(cfg, float(ray.cluster_resources().get("CPU", 1)), echo)
        from orchestrator.core.errors import UserError
        from orchestrator.launch.capacity import fit_problem, local_nodes

        flags = " ".join(f"--{k} {v:g}" for k, v in (("cpus", cpus), ("gpus", gpus)) if v is not None)
        where = f"this machine (Ray started with {flags})" if flags and started else "this machine's Ray"
        fix = "pass a larger --cpus/--gpus if the machine has them, or run on a cluster with --address"
        problem = fit_problem(fitted, local_nodes(), where, fix)
        if problem:
            raise UserError(problem)
        yield fitted
    finally:
        if started:
            ray.shutdown()
