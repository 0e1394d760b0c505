"""Before a publication uploads anything: the merge is checked again on the files about to ship (merged
model vs base + adapter on eval inputs), so a merged model changed or broken since `tune` never ships."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from orchestrator.core.errors import UserError
from orchestrator.core.scores import fidelity_of, fidelity_text
from orchestrator.publish.manifest import RunRecord, utc_now


def eval_examples(run: RunRecord) -> Tuple[List[str], List[str], str]:
    """(prompts, targets, where from): the first merge.verify_samples eval examples of the run's data,
    rendered as in training (jobs.formats.prompts_and_targets).

    Falls back to best/samples.json (the eval inputs the merge was checked on) when the data is gone.
    """
    cfg = run.cfg
    n = cfg.merge.verify_samples
    try:
        from jobs.data import load_splits
        from jobs.formats import prompts_and_targets
        from jobs.modeling import load_tokenizer

        ev = load_splits(cfg.data)["eval"]
        prompts, targets = prompts_and_targets(cfg, load_tokenizer(cfg), ev.select(range(min(n, len(ev)))))
        return prompts, targets, "eval data"
    except Exception as e:  # missing files, unreadable data: use what the run recorded
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    samples = run.dir.samples_path
    try:
        rows = run.dir.samples()[:n]
        if rows:
            return [str(r["input"]) for r in rows], [str(r["reference"]) for r in rows], "best/samples.json"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    raise UserError(
        f"cannot re-verify the merge: the eval data is not readable ({reason}) and {samples} has no samples; "
        "make data.eval (or data.train) of the run's config.json readable here."
    )


def verify_run_merge(run: RunRecord) -> Dict[str, Any]:
    """jobs.merge.verify_merge on the run's best adapter and merged model: as a Ray task on a worker when Ray
    is connected (the publish step of `tune`), else in this process (jobs.remote.on_worker).

    Raises:
        UserError: the base model cannot be loaded here, or the merged model is not base + adapter.
    """
    try:
        from jobs.remote import folder_files, on_worker, recheck_merge
    except ImportError as e:
        raise UserError(f"re-verifying the merge needs torch, transformers and peft here ({e}).") from None
    inputs, targets, source = eval_examples(run)
    cfg = run.cfg
    files = folder_files(run.part_dir("adapter"))
    remote = ((run.results or {}).get("paths") or {}).get("merged")
    # A worker node sees S3, not this machine's staging copy.
    merged = remote if isinstance(remote, str) and remote.startswith("s3://") else str(run.part_dir("merged"))
    try:
        check = on_worker(cfg, recheck_merge, cfg.to_json(), files, merged, inputs, targets)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise UserError(
            f"cannot re-verify the merge of {run.run_dir}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}. "
            f"The base model ({cfg.model.name_or_path}) must be loadable where the check runs."
        ) from None
    check = {**check, "inputs_from": source, "checked_at": utc_now()}
    fid = fidelity_of(check)
    problems = []
    if not check.get("passed"):
        problems.append(
            f"merge verification failed: the merged model differs from base + adapter by "
            f"{check.get('max_abs_logit_diff'):.4g} (tolerance {check.get('tolerance')}) on {check.get('num_inputs')} "
            "eval inputs. Re-merge (re-run tune, or set merge.dtype: float32) or publish --what adapter from a run "
            "folder without best/merged."
        )
    if fid and not fid.get("passed"):
        problems.append(
            f"merge fidelity: the eval loss rises by {fid.get('metric_drop'):.4g} from the trained model (4-bit "
            f"base + adapter) to the merged model, more than merge.max_metric_drop {fid.get('max_metric_drop')}. "
            "Re-merge with merge.into: dequantized, or raise merge.max_metric_drop in the run's config."
        )
    if problems:
        figures = fidelity_text(fid) if fid else "no fidelity figures"
        raise UserError(
            *problems,
            f"Figures: {figures}; max |logit diff| vs base + adapter {check.get('max_abs_logit_diff'):.4g}. "
            "Refused: nothing was uploaded.",
        )
    return check
