"""`qlora-launch retrain`: retrain on fresh data and promote only a model that is better.

One run:
  1. fingerprint the training data; unchanged since the last successful retrain -> "no new data";
  2. train a challenger (strategy retune: a search as `tune` does; reuse: one trial with the
     champion's hyperparameters);
  3. score challenger and champion on the same held-out set with the same metric (as Ray tasks on a
     worker when Ray is connected: the driver never loads a model);
  4. promote (publish, then move the champion pointer) only if the challenger is better by at least
     retrain.min_improvement and its merge check passed;
  5. record the run in the registry.

Training, evaluation and publishing are injected callables (orchestrator.retrain.parts), so the gate
logic is tested without Ray; the defaults import the real ones only when called.
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Callable, Dict, List, Optional

from orchestrator.core.errors import UserError
from orchestrator.retrain.cluster_job import submit_retrain
from orchestrator.retrain.config_check import check_retrain_config, eval_data_of
from orchestrator.retrain.data_fingerprint import fingerprint_data
from orchestrator.retrain.outcome import SKIPPED, RetrainOutcome
from orchestrator.retrain.parts import (
    Evaluator,
    Published,
    Publisher,
    TrainFn,
    default_evaluator,
    default_publisher,
    default_trainer,
)
from orchestrator.retrain.registry import FAILED, KEPT, PROMOTED, Registry, endpoint_for, registry_uri_for, utcnow

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


def _where_scored(evaluation: Dict[str, Any]) -> Dict[str, Any]:
    """{"scored_on": {node_id, pid}} when the evaluator says where it ran (a Ray task does), else nothing."""
    return {"scored_on": evaluation["scored_on"]} if evaluation.get("scored_on") else {}


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
    trainer: Optional[TrainFn] = None,
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
        trainer/evaluator/publisher: injected parts (defaults: orchestrator.retrain.parts).
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
        reason = (
            f"no new data (fingerprint {fp['combined'][:12]} unchanged since run {last['id']}); use --force to retrain"
        )
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
            echo(
                f"{name}: training a challenger with {'the champion' if champion else 'the config'}'s "
                f"hyperparameters {params}"
            )
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
        chal_eval = evaluator(result.evaluable(), cfg, data)
        chal_score = metric_value(chal_eval, metric, "challenger")
        base["challenger"].update(score=chal_score, **_where_scored(chal_eval))
        champ_score = None
        if champion:
            champ_eval = evaluator(champion["location"], cfg, data)
            champ_score = metric_value(champ_eval, metric, "champion")
            base["champion"].update(score=champ_score, **_where_scored(champ_eval))
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
            {
                **base,
                "decision": PROMOTED,
                "reason": reason,
                "version": published.version,
                "location": published.location,
            },
        )
        echo(f"{name}: published version {published.version} to {published.location}; champion pointer moved")
        if cfg.tracking.effective_backend == "wandb":
            from orchestrator.observe.tracking import log_best_adapter_to_wandb

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
        if champion
        else "champion: none yet (the first challenger that passes the merge check is promoted)",
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
