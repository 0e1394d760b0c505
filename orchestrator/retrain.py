"""`qlora-launch retrain`: retrain on fresh data and promote only a model that is better.

One run:
  1. fingerprint the training data; unchanged since the last successful retrain -> "no new data";
  2. train a challenger (strategy retune: a search as `tune` does; reuse: one trial with the
     champion's hyperparameters);
  3. score challenger and champion on the same held-out set with the same metric;
  4. promote (publish, then move the champion pointer) only if the challenger is better by at least
     retrain.min_improvement and its merge check passed;
  5. record the run in the registry.

Training, evaluation and publishing are injected callables, so the gate logic is tested without Ray;
the defaults import the real ones (jobs.api, orchestrator.publish) only when called.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import shlex
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from orchestrator.errors import UserError
from orchestrator.registry import FAILED, KEPT, PROMOTED, Registry, check_name, endpoint_for, registry_uri_for, utcnow

SKIPPED = "skipped"


# ---- what the injected parts return ---------------------------------------------------------

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


Trainer = Callable[[Any, Optional[Dict[str, Any]]], TrainResult]  # (cfg, params or None for a search)
Evaluator = Callable[[str, Any, str], Dict[str, float]]  # (model dir or published location, cfg, data)
Publisher = Callable[[str, Any], Published]  # (run_dir, cfg)


@dataclass
class RetrainOutcome:
    name: str
    decision: str  # skipped | promoted | kept
    reason: str
    fingerprint: str
    record: Optional[Dict[str, Any]] = None
    champion: Optional[Dict[str, Any]] = None  # the pointer after this run
    challenger_score: Optional[float] = None
    champion_score: Optional[float] = None
    metric: Optional[str] = None

    def summary(self) -> str:
        lines = [f"{self.name}: {self.decision} - {self.reason}"]
        if self.champion:
            lines.append(
                f"champion: version {self.champion.get('version')} at {self.champion.get('location')} "
                f"(since {self.champion.get('since')})"
            )
        return "\n".join(lines)


# ---- static checks --------------------------------------------------------------------------

def eval_data_of(cfg: Any) -> Optional[str]:
    rt = cfg.retrain
    return (rt.eval_data if rt and rt.eval_data else None) or cfg.data.test


def check_retrain_config(cfg: Any, need_publish: bool = True) -> None:
    """Everything that can be checked before training, all problems at once.

    Raises:
        UserError: no retrain section, no held-out set, no metric, no registry, nowhere to publish.
    """
    if cfg.retrain is None:
        raise UserError(
            "`retrain`: the config has no retrain: section; add one with at least `name:` "
            "(and a held-out set in retrain.eval_data or data.test)."
        )
    problems: List[str] = []
    try:
        check_name(cfg.retrain.name)
    except UserError as e:
        problems += e.problems
    data = eval_data_of(cfg)
    if not data:
        problems.append(
            "`retrain.eval_data`: no held-out set to score challenger and champion on; set retrain.eval_data "
            "or data.test to a file the training never sees."
        )
    elif "://" not in data and not data.startswith("hub:") and not Path(data).exists():
        problems.append(f"`retrain.eval_data`: '{data}' does not exist (defaults to data.test); fix the path.")
    if not getattr(cfg.search, "metric", None):
        problems.append("`search.metric`: the promotion gate needs a metric (eval_loss or eval_rouge*).")
    try:
        registry_uri_for(cfg)
    except UserError as e:
        problems += e.problems
    if need_publish and cfg.publish is None:
        problems.append("`publish`: promotion publishes the challenger; add a publish: section with `to:`.")
    if problems:
        raise UserError(*problems)


# ---- data fingerprint -----------------------------------------------------------------------

def fingerprint_path(path: str, key: str = "data.train") -> str:
    """sha256 of a file's bytes; for a folder, of every file's relative path and bytes, sorted.

    Files and folders use orchestrator.fingerprint (the same fingerprint a publish manifest carries);
    a hub dataset is fingerprinted by its current commit on the hub.

    Raises:
        UserError: the path does not exist, or is a hub dataset that cannot be reached.
    """
    from orchestrator.fingerprint import fingerprint

    if path.startswith("hub:"):
        return _hub_fingerprint(path[4:])
    fp = fingerprint(path)
    if fp is None:
        raise UserError(f"`{key}`: '{path}' does not exist; fix the path.")
    return fp


def _hub_fingerprint(name: str) -> str:
    try:
        from huggingface_hub import HfApi

        sha = HfApi().dataset_info(name).sha
    except Exception as e:  # offline, unknown dataset, auth
        raise UserError(
            f"cannot fingerprint hub dataset '{name}' ({type(e).__name__}); use a local copy or pass --force."
        ) from None
    return hashlib.sha256(f"hub:{name}@{sha}".encode()).hexdigest()


def fingerprint_data(cfg: Any) -> Dict[str, str]:
    """Fingerprints of the data the challenger learns from (train, and eval when set), and both combined."""
    parts = {"train": fingerprint_path(cfg.data.train)}
    if cfg.data.eval:
        parts["eval"] = fingerprint_path(cfg.data.eval, "data.eval")
    parts["combined"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return parts


# ---- the gate -------------------------------------------------------------------------------

def metric_value(metrics: Dict[str, Any], metric: str, who: str) -> float:
    """The configured metric from an evaluator's result (with or without the eval_ prefix).

    Raises:
        UserError: the metric is missing or not a number.
    """
    for key in (metric, metric[5:] if metric.startswith("eval_") else f"eval_{metric}"):
        if key in metrics:
            try:
                return float(metrics[key])
            except (TypeError, ValueError):
                break
    raise UserError(
        f"`search.metric`: the evaluation of the {who} has no numeric '{metric}' "
        f"(it returned {', '.join(sorted(metrics)) or 'nothing'}); set search.metric to one of those."
    )


def compare(
    challenger: float, champion: Optional[float], *, mode: str, min_improvement: float, improvement: str
) -> tuple:
    """(better_enough, reason): whether the challenger beats the champion by at least min_improvement.

    The improvement is champion - challenger for mode min and challenger - champion for mode max;
    `relative` divides it by |champion|. A tie never promotes, even with min_improvement 0.
    """
    if math.isnan(challenger):
        return False, "challenger score is NaN"
    if champion is None:
        return True, f"no champion yet; challenger scores {challenger:.6g}"
    if math.isnan(champion):
        return True, f"champion score is NaN; challenger scores {challenger:.6g}"
    gain = (champion - challenger) if mode == "min" else (challenger - champion)
    if improvement == "relative":
        rel = gain / abs(champion) if champion != 0 else (math.inf if gain > 0 else 0.0)
        shown, need = f"{rel:+.2%}", f"{min_improvement:.2%}"
        ok = gain > 0 and rel >= min_improvement
    else:
        shown, need = f"{gain:+.6g}", f"{min_improvement:g}"
        ok = gain > 0 and gain >= min_improvement
    verdict = "better" if ok else "not better enough"
    return ok, (
        f"challenger {challenger:.6g} vs champion {champion:.6g} ({mode} is better): "
        f"improvement {shown}, required > 0 and >= {need} ({improvement}) - {verdict}"
    )


# ---- the flow -------------------------------------------------------------------------------

def retrain(
    cfg: Any,
    *,
    force: bool = False,
    address: Optional[str] = None,
    job_id: Optional[str] = None,
    trainer: Optional[Trainer] = None,
    evaluator: Optional[Evaluator] = None,
    publisher: Optional[Publisher] = None,
    registry: Optional[Registry] = None,
    clock: Callable = utcnow,
    echo: Callable[[str], None] = lambda s: print(s, flush=True),
) -> RetrainOutcome:
    """Run one retrain of `cfg` (see the module docstring).

    Args:
        cfg: a validated RunConfig with a retrain: section.
        force: retrain even when the data has not changed.
        address: a Ray cluster address; the whole retrain is then submitted there as a Ray Job.
        job_id: id recorded with the run (the Ray Job's submission id when submitted).
        trainer/evaluator/publisher: injected parts (defaults: jobs.api and orchestrator.publish).
        registry: the registry to use (default: retrain.registry or publish.to).

    Raises:
        UserError: bad config, unreachable registry, a champion pointer at a missing version, ...
    """
    check_retrain_config(cfg, need_publish=publisher is None)
    if address:
        return submit_retrain(cfg, address, force=force, echo=echo)
    rt = cfg.retrain
    name = rt.name
    metric, mode = cfg.search.metric, cfg.search.resolved_mode
    reg = registry or Registry.open(registry_uri_for(cfg), endpoint_for(cfg), clock=clock)
    trainer = trainer or default_trainer
    evaluator = evaluator or default_evaluator
    publisher = publisher or default_publisher
    job_id = job_id or f"local-{uuid.uuid4().hex[:12]}"

    champion = reg.get_champion(name)  # fails early on a pointer at a missing version
    fp = fingerprint_data(cfg)
    last = reg.last_successful(name)
    if last and last.get("data_fingerprint") == fp["combined"] and not force:
        reason = f"no new data (fingerprint {fp['combined'][:12]} unchanged since run {last['id']}); use --force to retrain"
        return RetrainOutcome(name, SKIPPED, reason, fp["combined"], champion=champion, metric=metric)

    base = {
        "kind": "retrain",
        "strategy": rt.strategy,
        "forced": bool(force),
        "data_fingerprint": fp["combined"],
        "data_fingerprints": fp,
        "config_hash": cfg.config_hash(),
        "metric": metric,
        "mode": mode,
        "eval_data": eval_data_of(cfg),
        "job_id": job_id,
        "champion": {"version": champion["version"], "location": champion["location"]} if champion else None,
    }
    try:
        if rt.strategy == "reuse":
            params = dict(champion.get("hparams") or {}) if champion else cfg.fixed_params()
            echo(f"{name}: training a challenger with {'the champion' if champion else 'the config'}'s hyperparameters {params}")
        else:
            params = None
            echo(f"{name}: re-tuning: running a search for the challenger")
        # Each challenger trains into its own run folder, kept and recorded for audit.
        stamp = clock().strftime("%Y%m%dT%H%M%SZ")
        chal_cfg = cfg.with_params({"output.experiment": f"{cfg.experiment}-retrain-{stamp}-{uuid.uuid4().hex[:4]}"})
        result = trainer(chal_cfg, params)
        base["challenger"] = {
            "run_dir": result.run_dir,
            "hparams": result.hparams or params or {},
            "merge_ok": result.merge_ok,
            "merge_detail": result.merge_detail,
            "train_job_id": result.job_id,
        }
        data = eval_data_of(cfg)
        echo(f"{name}: scoring challenger{' and champion' if champion else ''} on {data} ({metric}, {mode})")
        chal_score = metric_value(evaluator(result.evaluable(), cfg, data), metric, "challenger")
        base["challenger"]["score"] = chal_score
        champ_score = None
        if champion:
            champ_score = metric_value(evaluator(champion["location"], cfg, data), metric, "champion")
            base["champion"]["score"] = champ_score
        better, reason = compare(
            chal_score, champ_score, mode=mode, min_improvement=rt.min_improvement, improvement=rt.improvement
        )
        merge_needed = bool(getattr(cfg.merge, "enabled", True))
        if better and merge_needed and result.merge_ok is not True:
            better = False
            detail = result.merge_detail or ("no merge check was recorded" if result.merge_ok is None else "")
            reason += f"; but the merge check did not pass ({detail})"
        if not better:
            record = reg.record_run(name, {**base, "decision": KEPT, "reason": reason})
            return RetrainOutcome(name, KEPT, reason, fp["combined"], record, champion, chal_score, champ_score, metric)
        published = Published.from_any(publisher(result.run_dir, cfg))
        # The pointer moves only after the version is completely published.
        pointer = reg.set_champion(
            name,
            version=published.version,
            location=published.location,
            metric=metric,
            score=chal_score,
            hparams=base["challenger"]["hparams"],
            mode=mode,
            data_fingerprint=fp["combined"],
            config_hash=base["config_hash"],
            job_id=job_id,
        )
        record = reg.record_run(
            name,
            {**base, "decision": PROMOTED, "reason": reason, "version": published.version, "location": published.location},
        )
        echo(f"{name}: published version {published.version} to {published.location}; champion pointer moved")
        if cfg.tracking.effective_backend == "wandb":
            from orchestrator.tracking import log_best_adapter_to_wandb

            try:  # tracking must never undo a promotion
                log_best_adapter_to_wandb(result.run_dir, cfg, aliases=("best", "production"))
            except Exception as e:  # noqa: BLE001
                echo(f"{name}: could not tag the W&B artifact 'production': {e}")
        return RetrainOutcome(name, PROMOTED, reason, fp["combined"], record, pointer, chal_score, champ_score, metric)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            why = "interrupted"
        else:
            why = f"{type(e).__name__}: {e}"
        try:
            reg.record_run(name, {**base, "decision": FAILED, "reason": why})
        except Exception:  # the original error matters more than a failed record of it
            pass
        raise


def plan_retrain(cfg: Any, *, force: bool = False, registry: Optional[Registry] = None) -> List[str]:
    """What `retrain` would do, for --dry-run: reads the registry and the data, trains and writes nothing.

    Raises:
        UserError: the same config and registry problems `retrain` would stop on.
    """
    check_retrain_config(cfg)
    rt = cfg.retrain
    reg = registry or Registry.open(registry_uri_for(cfg), endpoint_for(cfg))
    champion = reg.get_champion(rt.name)
    fp = fingerprint_data(cfg)["combined"]
    last = reg.last_successful(rt.name)
    new_data = not (last and last.get("data_fingerprint") == fp)
    lines = [
        f"model line: {rt.name}; registry: {reg.uri}",
        f"champion: {champion['version']} at {champion['location']} ({champion.get('metric')} {champion.get('score')})"
        if champion else "champion: none yet (the first challenger that passes the merge check is promoted)",
        f"data fingerprint: {fp[:12]} - " + ("new data" if new_data else f"unchanged since run {last['id']}"),
    ]
    if not new_data and not force:
        return lines + ["would stop: no new data (pass --force to retrain anyway)"]
    if rt.strategy == "reuse":
        params = dict(champion.get("hparams") or {}) if champion else cfg.fixed_params()
        lines.append(f"would train one trial with {params or 'the config values'} (strategy reuse)")
    else:
        lines.append(f"would run a search of {cfg.search.num_samples} trials (strategy retune)")
    lines.append(
        f"would score challenger{' and champion' if champion else ''} on {eval_data_of(cfg)} by {cfg.search.metric} "
        f"({cfg.search.resolved_mode}); promote if better by >= {rt.min_improvement:g} ({rt.improvement}) and the "
        f"merge check passes, publishing to {cfg.publish.to if cfg.publish else '-'}"
    )
    return lines


# ---- running the whole retrain on a Ray cluster ---------------------------------------------

def submit_retrain(
    cfg: Any,
    address: str,
    *,
    force: bool = False,
    submit: Optional[Callable[..., int]] = None,
    echo: Callable[[str], None] = print,
) -> RetrainOutcome:
    """Run this retrain as a Ray Job on the cluster at `address` (through orchestrator.submit) and wait.

    The job runs `python -m orchestrator.retrain --config-b64 ...`: the same flow, with Ray connected
    to the cluster. Its data paths must be readable there, and the registry must be shared (s3://).

    Raises:
        UserError: the cluster cannot be reached, or the job did not succeed.
    """
    from orchestrator import submit as sub

    name = cfg.retrain.name
    submission_id = f"qlora-retrain-{name}-{uuid.uuid4().hex[:6]}"
    aws_note = sub.check_storage_credentials(cfg)
    cluster_cfg, notes = sub.prepare_for_cluster(cfg)
    cluster_cfg, more = _eval_data_for_cluster(cluster_cfg)
    for note in ([aws_note] if aws_note else []) + notes + more:
        echo(f"Note: {note}")
    b64 = base64.b64encode(json.dumps(cluster_cfg.to_json()).encode("utf-8")).decode("ascii")
    entry = ["python", "-m", "orchestrator.retrain", "--config-b64", b64, "--job-id", submission_id]
    rc = (submit or sub.submit_job)(
        address,
        shlex.join(entry + (["--force"] if force else [])),
        runtime_env=sub.build_runtime_env(),
        metadata={**sub.build_metadata(cfg, "retrain"), "retrain_name": name},
        submission_id=submission_id,
        wait=True,
        echo=echo,
    )
    if rc != 0:
        raise UserError(f"the retrain job {submission_id} did not succeed; see `qlora-launch logs {submission_id}`.")
    reg = Registry.open(registry_uri_for(cfg), endpoint_for(cfg))
    for rec in reversed(reg.history(name)):
        if rec.get("job_id") == submission_id:
            return RetrainOutcome(
                name, rec["decision"], rec.get("reason", ""), rec.get("data_fingerprint", ""), rec,
                reg.get_champion(name, verify=False),
                (rec.get("challenger") or {}).get("score"), (rec.get("champion") or {}).get("score"),
                rec.get("metric"),
            )
    return RetrainOutcome(name, SKIPPED, "no new data (the job recorded no run)", "", None,
                          reg.get_champion(name, verify=False), metric=cfg.search.metric)


def _eval_data_for_cluster(cfg: Any):
    """retrain.eval_data made relative to the project when it travels in the job's working_dir."""
    from orchestrator.submit import PROJECT_ROOT, _excluded

    p = cfg.retrain.eval_data
    if not p or "://" in p or p.startswith("hub:"):
        return cfg, []
    try:
        rel = Path(p).resolve().relative_to(PROJECT_ROOT.resolve())
    except ValueError:
        return cfg, [f"retrain.eval_data ({p}) is outside the project: it must exist at that path on the cluster."]
    if _excluded(rel):
        return cfg, [f"retrain.eval_data ({p}) is in an excluded folder ({rel.parts[0]}/), so it is not uploaded."]
    return cfg.with_params({"retrain.eval_data": rel.as_posix()}), []


def job_main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the retrain Ray Job: `python -m orchestrator.retrain --config-b64 B64 [--force]`."""
    import argparse

    from orchestrator.config import RunConfig

    ap = argparse.ArgumentParser(prog="python -m orchestrator.retrain")
    ap.add_argument("--config-b64", required=True)
    ap.add_argument("--job-id", default=None)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    cfg = RunConfig.model_validate(json.loads(base64.b64decode(args.config_b64)))
    import ray

    ray.init()  # inside a Ray Job this joins the job's cluster; training then runs on it
    try:
        outcome = retrain(cfg, force=args.force, job_id=args.job_id)
    except UserError as e:
        print(f"Error: {e}", file=sys.stderr, flush=True)
        return 2
    print(outcome.summary(), flush=True)
    return 0


# ---- default parts: the real training, evaluation and publishing ------------------------------

def default_trainer(cfg: Any, params: Optional[Dict[str, Any]]) -> TrainResult:
    """Train with the same code as `tune`/`train`: a search (params None) or one trial with `params`.

    Ray starts in-process unless it is already connected (inside a Ray Job it is).
    """
    from orchestrator.local import run_local  # imports Ray only when called

    run_dir = run_local(cfg, "tune" if params is None else "train", params=params)
    return train_result_from_run_dir(str(run_dir), params)


def train_result_from_run_dir(run_dir: str, params: Optional[Dict[str, Any]] = None) -> TrainResult:
    """The best hyperparameters and the merge check of a run, from RUN_DIR/results.json (docs/run_layout.md)."""
    path = Path(run_dir) / "results.json"
    results: Dict[str, Any] = {}
    if path.is_file():
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError:
            results = {}
    best = results.get("best") or {}
    hparams = best.get("params") or params or {}
    check = results.get("merge_check")
    if check is None and (Path(run_dir) / "best" / "merge_check.json").is_file():
        check = json.loads((Path(run_dir) / "best" / "merge_check.json").read_text())
    merge_ok, detail = None, ""
    if isinstance(check, dict):
        merge_ok = bool(check.get("passed")) if "passed" in check else None
        if "max_abs_logit_diff" in check:
            detail = f"max |logit diff| {check['max_abs_logit_diff']:.3g} vs tolerance {check.get('tolerance')}"
    if not best:
        detail = "the run has no best trial"
    return TrainResult(run_dir=run_dir, hparams=dict(hparams), merge_ok=merge_ok, merge_detail=detail)


def default_evaluator(model: str, cfg: Any, data: str) -> Dict[str, float]:
    """Score a model folder (or a published location, fetched first) with jobs.api.evaluate."""
    from jobs import api

    if "://" in model:
        with tempfile.TemporaryDirectory(prefix="qlora-champion-") as tmp:
            local = _fetch_published(model, cfg, tmp)
            return api.evaluate(local, cfg, data)
    local = Path(model)
    for sub in ("merged", "adapter"):
        if (local / sub).is_dir():  # a published version folder holds both
            return api.evaluate(str(local / sub), cfg, data)
    return api.evaluate(model, cfg, data)


def _fetch_published(location: str, cfg: Any, dest: str) -> str:
    """Download a published version into `dest` (every sha256 checked against its manifest); returns
    its merged/ (else adapter/) folder."""
    from orchestrator.publish import pull

    pull(location, dest, endpoint_url=endpoint_for(cfg))
    for sub in ("merged", "adapter"):
        if (Path(dest) / sub).is_dir():
            return str(Path(dest) / sub)
    return dest


def default_publisher(run_dir: str, cfg: Any) -> Published:
    """Publish the challenger through orchestrator.publish (atomic versioned path)."""
    try:
        from orchestrator import publish as pub
    except ImportError:
        raise UserError("promotion publishes through orchestrator.publish, which is not available.") from None
    fn = getattr(pub, "publish_run", None)
    if fn is None:
        raise UserError("orchestrator.publish has no publish_run(); cannot promote.")
    return Published.from_any(
        fn(run_dir, cfg.publish.to, what=cfg.publish.what, endpoint_url=cfg.publish.endpoint_url)
    )


if __name__ == "__main__":
    sys.exit(job_main())
