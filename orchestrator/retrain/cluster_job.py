"""Running a whole retrain on a Ray cluster: submitted as a Ray Job, followed, and read back from the registry."""

from __future__ import annotations

import base64
import json
import shlex
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from orchestrator.core.errors import UserError
from orchestrator.retrain.outcome import SKIPPED, RetrainOutcome
from orchestrator.retrain.registry import Registry, endpoint_for, registry_uri_for


def submit_retrain(
    cfg: Any,
    address: str,
    *,
    force: bool = False,
    submit: Optional[Callable[..., int]] = None,
    echo: Callable[[str], None] = print,
) -> RetrainOutcome:
    """Run this retrain as a Ray Job on the cluster at `address` (through orchestrator.launch.cluster) and wait.

    The job runs `python -m orchestrator.launch.entry retrain --config-b64 ...`: the same flow, with Ray connected
    to the cluster. Its data paths must be readable there, and the registry must be shared (s3://).

    Raises:
        UserError: the cluster cannot be reached, or the job did not succeed.
    """
    from orchestrator.launch import cluster as sub

    name = cfg.retrain.name
    submission_id = f"qlora-retrain-{name}-{uuid.uuid4().hex[:6]}"
    aws_note = sub.check_storage_credentials(cfg)
    cluster_cfg, notes = sub.prepare_for_cluster(cfg)
    cluster_cfg, more = _eval_data_for_cluster(cluster_cfg)
    for note in ([aws_note] if aws_note else []) + notes + more:
        echo(f"Note: {note}")
    b64 = base64.b64encode(json.dumps(cluster_cfg.to_json()).encode("utf-8")).decode("ascii")
    entry = ["python", "-m", "orchestrator.launch.entry", "retrain", "--config-b64", b64, "--job-id", submission_id]
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
                name,
                rec["decision"],
                rec.get("reason", ""),
                rec.get("data_fingerprint", ""),
                rec,
                reg.get_champion(name, verify=False),
                (rec.get("challenger") or {}).get("score"),
                (rec.get("champion") or {}).get("score"),
                rec.get("metric"),
            )
    return RetrainOutcome(
        name,
        SKIPPED,
        "no new data (the job recorded no run)",
        "",
        None,
        reg.get_champion(name, verify=False),
        metric=cfg.search.metric,
    )


def _eval_data_for_cluster(cfg: Any):
    """retrain.eval_data made relative to the project when it travels in the job's working_dir."""
    from orchestrator.launch.cluster import PROJECT_ROOT, _excluded

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
