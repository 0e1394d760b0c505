"""`train`: its one trial as a bare Ray Train run started from the driver, without Tune.

The same trial code as a `tune` trial (jobs/trial_trainer.py) minus the Tune trial
actor between the driver and Train's controller, a whole Python process on the start-up path
(docs/benchmarks.md, Orchestration overhead). What Tune did for that trial is done here:
- its id (Tune's format) and, with `--resume`, the one already in storage (`train-<id>`); Train restores
  its latest checkpoint by itself, and a run that finished is not run again (`finished.json`);
- its history: every report (rank 0's metrics, the checkpoint path, `training_iteration` and
  `time_total_s` as in a Tune result), which `ReportRelay` on Train's controller writes to
  `train-<id>/reports.jsonl` in the run's storage and `--resume` reads back;
- the live progress: the driver's Tune-style callbacks (orchestrator/observe/progress.py) get the same
  hooks, fed from the reports the controller (an actor) also puts in Ray's GCS key-value store;
- its result: `SingleResult`, what collect_results reads from a Tune result, plus the history.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ray.train import UserCallback

from orchestrator.core.config import RunConfig
from orchestrator.core.ray_storage import TRAIN_REPORTS as REPORTS
from orchestrator.core.ray_storage import TRAIN_RUN_PREFIX, RunStorage

FINISHED = "finished.json"  # the run ended without error: --resume does not run it again
KV_NAMESPACE = "qlora_launch"
POLL_S = 0.25


@dataclass
class SingleResult:
    """The one trial's result, shaped like the Tune results collect_results reads."""

    config: Dict[str, Any]
    metrics: Dict[str, Any]
    path: str
    error: Optional[BaseException] = None
    history: List[Dict[str, Any]] = field(default_factory=list)


class ReportRelay(UserCallback):
    """On Train's controller: each report as a Tune-style result row, into storage and Ray's KV store."""

    def __init__(self, trial_id: str, key: str, fs, path: str, prior: List[Dict[str, Any]]):
        self.trial_id, self.key, self.fs, self.path = trial_id, key, fs, path
        self.rows = list(prior)
        self.base_s = float(prior[-1].get("time_total_s", 0) or 0) if prior else 0.0
        self.t0 = time.time()  # on the driver, before fit(): the trial's clock starts with its run

    def after_report(self, run_context, metrics, checkpoint):
        from ray.experimental.internal_kv import _internal_kv_put

        row = {**metrics[0], "trial_id": metrics[0].get("trial_id") or self.trial_id}
        if checkpoint:
            row["checkpoint_path"] = checkpoint.path
        row["training_iteration"] = len(self.rows) + 1
        row["time_total_s"] = self.base_s + time.time() - self.t0
        self.rows.append(row)
        write_rows(self.fs, self.path, self.rows)
        i = len(self.rows) - 1
        _internal_kv_put(f"{self.key}/{i}", json.dumps(row, default=str), namespace=KV_NAMESPACE)
        _internal_kv_put(self.key, str(i + 1), namespace=KV_NAMESPACE)


def write_rows(fs, path: str, rows: List[Dict[str, Any]]) -> None:
    """The whole file at once: on local storage through a temporary file moved into place, so a kill mid-write
    leaves the previous rows, not an empty file (an S3 put is atomic already)."""
    import pyarrow.fs

    _make_parent(fs, path)
    data = "".join(json.dumps(r, default=str) + "\n" for r in rows).encode()
    local = isinstance(fs, pyarrow.fs.LocalFileSystem)
    target = f"{path}.tmp" if local else path
    with fs.open_output_stream(target) as f:
        f.write(data)
    if local:
        fs.move(target, path)


def _make_parent(fs, path: str) -> None:
    """A local folder must exist before a file is written into it (S3 has no folders to make)."""
    import pyarrow.fs

    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)


def read_rows(st: RunStorage, path: str) -> List[Dict[str, Any]]:
    """The rows in `path` (a line cut short by a kill is left out)."""
    out = []
    for line in (st.read_text(path) or "").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def existing_trial(st: RunStorage) -> Optional[str]:
    """The trial id of the `train-<id>` run already in the storage (the newest if several), else None."""
    import pyarrow.fs

    fs, root = st.fs_path(st.path)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    # Only a `train` run writes reports.jsonl: a tune trial's Train run (also `train-<id>`) is never resumed here.
    runs = [
        i
        for i in infos
        if i.type == pyarrow.fs.FileType.Directory
        and i.base_name.startswith(TRAIN_RUN_PREFIX)
        and st.exists(f"{i.path}/{REPORTS}")
    ]
    if not runs:
        return None
    newest = max(runs, key=lambda i: i.mtime_ns or 0)
    return newest.base_name.removeprefix(TRAIN_RUN_PREFIX)


class _Trial:
    """What the progress callbacks read of a Tune trial."""

    def __init__(self, trial_id: str, params: Dict[str, Any]):
        self.trial_id, self.config = trial_id, {"params": params}
        self.last_result: Dict[str, Any] = {}
        self.error: Optional[BaseException] = None

    def get_error(self):
        return self.error


class _Hooks:
    """Calls the driver's Tune-style callbacks as Tune would for one trial."""

    def __init__(self, callbacks: Optional[list], trial: _Trial):
        self.callbacks, self.trial, self.iteration = list(callbacks or []), trial, 0
        self.lock = threading.Lock()

    def __call__(self, hook: str, **kw) -> None:
        with self.lock:
            self.iteration += 1
            for cb in self.callbacks:
                fn = getattr(cb, hook, None)
                if fn is not None:
                    if hook == "setup":
                        fn(**kw)
                    elif hook == "on_experiment_end":
                        fn(trials=[self.trial], **kw)
                    else:
                        fn(iteration=self.iteration, trials=[self.trial], **kw)

    def result(self, row: Dict[str, Any]) -> None:
        self.trial.last_result = row
        self("on_trial_result", trial=self.trial, result=row)


class _Poller:
    """While fit() runs: the reports the controller put in the KV store, to the progress hooks."""

    def __init__(self, key: str, hooks: _Hooks, start_at: int):
        self.key, self.hooks, self.seen = key, hooks, start_at

    def poll(self) -> None:
        from ray.experimental.internal_kv import _internal_kv_get

        try:
            n = int(_internal_kv_get(self.key, namespace=KV_NAMESPACE) or 0)
            for i in range(self.seen, n):
                raw = _internal_kv_get(f"{self.key}/{i}", namespace=KV_NAMESPACE)
                if raw is None:
                    break
                self.hooks.result(json.loads(raw))
                self.seen = i + 1
            self.hooks("on_step_end")
        except Exception:  # noqa: BLE001 - the display only; the history in storage is what counts
            pass


def run_single(
    cfg: RunConfig,
    st: RunStorage,
    params: Dict[str, Any],
    trial_args: Dict[str, Any],
    *,
    resume: bool = False,
    callbacks: Optional[list] = None,
    echo=print,
) -> List[SingleResult]:
    """Run `train`'s one trial (trial_args: what a Tune trial driver gets) as a bare Train run."""
    from ray.train import TrainingFailedError

    from jobs.trial_trainer import plan_trial, trial_trainer
    from jobs.wont_fit import wont_fit_record

    trial_id = existing_trial(st) if resume else None
    if trial_id:
        echo(f"Resuming the run in {st.uri}/{TRAIN_RUN_PREFIX}{trial_id}")
    trial_id = trial_id or f"{uuid.uuid4().hex[:5]}_00000"
    run_path = f"{st.path}/{TRAIN_RUN_PREFIX}{trial_id}"
    fs, reports = st.fs_path(f"{run_path}/{REPORTS}")
    prior = read_rows(st, reports) if resume else []
    trial = _Trial(trial_id, params)
    hooks = _Hooks(callbacks, trial)
    hooks("setup", total_num_samples=1)
    hooks("on_trial_start", trial=trial)
    args = {k: v for k, v in trial_args.items() if k not in ("run_config", "planner")}
    rcfg, plan = plan_trial(trial_args["run_config"], params, trial_args.get("planner"))
    history = prior
    if resume and st.exists(f"{run_path}/{FINISHED}"):
        echo(f"The run {TRAIN_RUN_PREFIX}{trial_id} had finished: nothing to train again")
    elif plan.get("wont_fit"):  # its estimate exceeds the largest GPU (or the host): no Train run
        history = [{**wont_fit_record(rcfg, trial_id, plan), "training_iteration": 1, "time_total_s": 0.0}]
        write_rows(fs, reports, history)
        hooks.result(history[0])
    else:
        key = f"reports/{uuid.uuid4().hex}"
        relay = ReportRelay(trial_id, key, fs, reports, prior)
        trainer = trial_trainer(rcfg, params, plan, trial_id, [relay], **args)
        poller = _Poller(key, hooks, len(prior))
        # fit() in a thread, as inside a Tune trial: Train then registers no SIGINT handler of its own
        # (which would turn Ctrl-C into a graceful abort that returns as if the run had finished); Ctrl-C
        # stays a KeyboardInterrupt here, and ray.shutdown ends the run as it did a Tune search.
        outcome: Dict[str, BaseException] = {}
        fit = threading.Thread(target=_fit, args=(trainer, outcome), name="train-fit", daemon=True)
        fit.start()
        while fit.is_alive():
            fit.join(POLL_S)
            poller.poll()
        error = outcome.get("error")
        if isinstance(error, TrainingFailedError):  # as a Tune trial's error: recorded, the run goes on
            trial.error = error
        elif error is not None:
            raise error
        history = read_rows(st, reports)
        for row in history[poller.seen :]:  # what the last poll did not see
            hooks.result(row)
        _forget(key)
    if trial.error is None:
        done = st.fs_path(f"{run_path}/{FINISHED}")[1]
        _make_parent(fs, done)
        with fs.open_output_stream(done) as f:
            f.write(json.dumps({"trial_id": trial_id}).encode())
        hooks("on_trial_complete", trial=trial)
    else:
        hooks("on_trial_error", trial=trial)
    hooks("on_experiment_end")
    # A run that failed before its first report still carries its trial id (its logs are under trials/<id>/).
    last = history[-1] if history else {"trial_id": trial_id}
    return [SingleResult({"params": params}, last, run_path, trial.error, history)]


def _fit(trainer, outcome: Dict[str, BaseException]) -> None:
    try:
        trainer.fit()
    except BaseException as e:  # noqa: BLE001 - handed to the driver's thread
        outcome["error"] = e


def _forget(key: str) -> None:
    from ray.experimental.internal_kv import _internal_kv_del

    try:
        _internal_kv_del(key, del_by_prefix=True, namespace=KV_NAMESPACE)
    except Exception:  # noqa: BLE001 - Ray is shut down with the run anyway
        pass
