"""The parts a retrain injects: train a challenger, score a model, publish a promoted one.

`TrainFn`, `Evaluator` and `Publisher` are the shapes of the injected callables (tests pass fakes);
the defaults here run the real ones (the pipeline, jobs.evaluate, orchestrator.publish.push) and
import them only when called, so the driver side stays free of torch.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from orchestrator.core.errors import UserError
from orchestrator.core.rundir import RunDir
from orchestrator.retrain.registry import endpoint_for

RUN_PARTS = ("/best/merged", "/best/adapter")  # a run folder's model parts on S3 (docs/run_layout.md)


@dataclass
class TrainResult:
    """What training the challenger produced.

    Attributes:
        run_dir: the run folder (results.json, best/adapter, best/merged).
        hparams: the hyperparameters the challenger was trained with (dotted keys).
        merge_ok: result of the merge check; None when no merge was done or it was not recorded.
        model_path: what to evaluate (default: best/merged, else best/adapter, else run_dir).
        job_id: id of the training job, when one was submitted.
    """

    run_dir: str
    hparams: Dict[str, Any] = field(default_factory=dict)
    merge_ok: Optional[bool] = None
    merge_detail: str = ""
    model_path: Optional[str] = None
    job_id: Optional[str] = None

    def evaluable(self) -> str:
        if self.model_path:
            return self.model_path
        for sub in ("best/merged", "best/adapter"):
            p = Path(self.run_dir) / sub
            if p.exists():
                return str(p)
        return self.run_dir


@dataclass
class Published:
    """Where a promotion published the challenger."""

    version: str
    location: str

    @classmethod
    def from_any(cls, obj: Any) -> "Published":
        if isinstance(obj, Published):
            return obj
        get = obj.get if isinstance(obj, dict) else (lambda k, d=None: getattr(obj, k, d))
        version = get("version")
        location = get("location") or get("uri") or get("url") or get("prefix")
        if not version or not location:
            raise TypeError(f"a publisher must return a version and a location, got {obj!r}")
        return cls(str(version), str(location))


TrainFn = Callable[[Any, Optional[Dict[str, Any]]], TrainResult]  # (cfg, params or None for a search)
Evaluator = Callable[[str, Any, str], Dict[str, Any]]  # (model, cfg, data) -> metrics (+ "scored_on")
Publisher = Callable[[str, Any], Published]  # (run_dir, cfg)


# ---- training -------------------------------------------------------------------------------


def default_trainer(cfg: Any, params: Optional[Dict[str, Any]]) -> TrainResult:
    """Train with the same pipeline as `tune`/`train`: a search (params None) or one trial with `params`.

    Ray starts in-process unless it is already connected (inside a Ray Job it is).
    """
    from orchestrator.launch.local import ray_session  # imports Ray only when called
    from orchestrator.launch.pipeline import execute
    from orchestrator.observe.progress import progress_callbacks

    verb = "tune" if params is None else "train"
    with ray_session(cfg, verb) as fitted:
        run_dir = execute(fitted, verb, params=params, callbacks=progress_callbacks(fitted))
    return train_result_from_run_dir(str(run_dir), params)


def train_result_from_run_dir(run_dir: str, params: Optional[Dict[str, Any]] = None) -> TrainResult:
    """The best hyperparameters and the merge check of a run, from RUN_DIR/results.json (docs/run_layout.md)."""
    run = RunDir(run_dir)
    best = (run.results() or {}).get("best") or {}
    hparams = best.get("params") or params or {}
    check = run.merge_check()
    merge_ok, detail = None, ""
    if isinstance(check, dict):
        merge_ok = bool(check.get("passed")) if "passed" in check else None
        if "max_abs_logit_diff" in check:
            detail = f"max |logit diff| {check['max_abs_logit_diff']:.3g} vs tolerance {check.get('tolerance')}"
    if not best:
        detail = "the run has no best trial"
    merged = ((run.results() or {}).get("paths") or {}).get("merged")
    remote = merged if isinstance(merged, str) and merged.startswith("s3://") else None  # what a worker can read
    return TrainResult(
        run_dir=run_dir, hparams=dict(hparams), merge_ok=merge_ok, merge_detail=detail, model_path=remote
    )


# ---- scoring --------------------------------------------------------------------------------


def default_evaluator(model: str, cfg: Any, data: str) -> Dict[str, Any]:
    """Score a model with jobs.evaluate, as a Ray task on a worker when Ray is connected (jobs.remote).

    `model` is a folder here, a published location (s3://…/<version>, hf://…: pulled and checked on the
    node) or the run's `…/best/merged` on S3 (fetched into the node's model cache). The held-out set is
    read here and sent by value: a worker node cannot see this machine's files.
    """
    from jobs.data import load_source, table_of
    from jobs.remote import on_worker

    table = table_of(load_source(data, cfg.data_endpoint))
    return on_worker(cfg, score_on_node, cfg.to_json(), model, table)


def score_on_node(cfg_json: Dict[str, Any], model: str, table: Any) -> Dict[str, Any]:
    """The Ray task of default_evaluator: get the model onto this node, then score it."""
    from jobs.data import dataset_of
    from jobs.evaluate import evaluate
    from orchestrator.core.config import RunConfig

    cfg = RunConfig.model_validate(cfg_json)
    raw = dataset_of(table)
    with tempfile.TemporaryDirectory(prefix="qlora-score-") as tmp:
        scores: Dict[str, Any] = dict(evaluate(_model_here(model, cfg, tmp), cfg, raw=raw))
    return {**scores, "scored_on": _where()}


def _where() -> Dict[str, Any]:
    """The Ray node and process that did the work (recorded with the retrain run)."""
    import os

    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    return {"node_id": node, "pid": os.getpid()}


def _model_here(model: str, cfg: Any, tmp: str) -> str:
    """A local folder holding `model` (see default_evaluator); a published version's merged/ (else adapter/)."""
    if model.startswith("s3://") and model.rstrip("/").endswith(RUN_PARTS):
        from jobs.remote import model_here

        return model_here(model, cfg.output.endpoint_url)
    local = Path(_fetch_published(model, cfg, tmp) if "://" in model else model)
    for sub in ("merged", "adapter"):
        if (local / sub).is_dir():  # a published version folder holds both
            return str(local / sub)
    return str(local)


def _fetch_published(location: str, cfg: Any, dest: str) -> str:
    """Download a published version into `dest` (every sha256 checked against its manifest)."""
    from orchestrator.publish.pull import pull

    pull(location, dest, endpoint_url=endpoint_for(cfg))
    return dest


# ---- publishing -----------------------------------------------------------------------------


def default_publisher(run_dir: str, cfg: Any) -> Published:
    """Publish the challenger through orchestrator.publish.push (atomic versioned path)."""
    try:
        from orchestrator.publish import push as pub
    except ImportError:
        raise UserError("promotion publishes through orchestrator.publish.push, which is not available.") from None
    fn = getattr(pub, "publish_run", None)
    if fn is None:
        raise UserError("orchestrator.publish.push has no publish_run(); cannot promote.")
    return Published.from_any(fn(run_dir, cfg.publish.to, what=cfg.publish.what, endpoint_url=cfg.publish.endpoint_url))
