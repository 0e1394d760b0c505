"""A schedule as a crontab line or a Kubernetes CronJob manifest that runs the same retrain,
with the daemon's guarantees (no overlap, the same misfire grace)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from orchestrator.core.errors import UserError
from orchestrator.retrain.daemon import DEFAULT_MISFIRE_GRACE_S
from orchestrator.retrain.schedule import get_schedule
from orchestrator.retrain.schedule_paths import lock_path, store_path


def _cli_path() -> str:
    cand = Path(sys.executable).parent / "qlora-launch"
    return str(cand) if cand.exists() else (shutil.which("qlora-launch") or "qlora-launch")


def export_schedule(name: str, fmt: str, store: Optional[str] = None, image: Optional[str] = None) -> str:
    """A crontab line or a Kubernetes CronJob manifest that runs the same retrain.

    Raises:
        UserError: unknown schedule, unknown format, or a schedule without a cron expression.
    """
    spec = get_schedule(name, store)
    if not spec.get("cron"):
        raise UserError(
            f"schedule '{name}' runs every {spec.get('every_s')}s, not on a cron; only cron schedules export."
        )
    if fmt == "crontab":
        return _crontab(spec, store_path(store))
    if fmt == "k8s":
        return _k8s(spec, image or os.environ.get("QLORA_LAUNCH_IMAGE") or "qlora-launch:latest")
    raise UserError(f"--format '{fmt}': use crontab or k8s.")


def _crontab(spec: Dict[str, Any], store: Path) -> str:
    cmd = [_cli_path(), "retrain", spec["config"]] + (["--address", spec["address"]] if spec.get("address") else [])
    logfile = store.parent / "logs" / spec["name"] / "cron.log"
    # flock -n keeps cron from starting a run while the previous one is going, like the daemon.
    line = (
        f"{spec['cron']} mkdir -p {shlex.quote(str(logfile.parent))} && flock -n "
        f"{shlex.quote(str(lock_path(store, spec['name'])))} {shlex.join(cmd)} >> {shlex.quote(str(logfile))} 2>&1"
    )
    line = line.replace("%", "\\%")  # % ends the command in crontab
    tz = spec.get("timezone") or "UTC"
    return (
        f"# qlora-launch schedule '{spec['name']}': times are {tz}; put CRON_TZ={tz} above this line "
        f"(cronie) or run cron in {tz}\n{line}\n"
    )


def _k8s(spec: Dict[str, Any], image: str) -> str:
    import yaml

    k8s_name = ("qlora-retrain-" + re.sub(r"[^a-z0-9-]", "-", spec["name"].lower())).strip("-")[:52].rstrip("-")
    cfg_name = Path(spec["config"]).name
    args = ["retrain", f"/etc/qlora-launch/{cfg_name}"] + (
        ["--address", spec["address"]] if spec.get("address") else []
    )
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": k8s_name,
            "labels": {"app.kubernetes.io/name": "qlora-launch", "qlora-launch/schedule": spec["name"]},
        },
        "spec": {
            "schedule": spec["cron"],
            "timeZone": spec.get("timezone") or "UTC",
            "concurrencyPolicy": "Forbid",
            # Same misfire policy as the daemon: a missed run starts late only within the grace.
            "startingDeadlineSeconds": int(spec.get("misfire_grace_s") or DEFAULT_MISFIRE_GRACE_S),
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "metadata": {"labels": {"app.kubernetes.io/name": "qlora-launch"}},
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [
                                {
                                    "name": "retrain",
                                    "image": image,
                                    "command": ["qlora-launch"],
                                    "args": args,
                                    "volumeMounts": [
                                        {"name": "config", "mountPath": "/etc/qlora-launch", "readOnly": True}
                                    ],
                                }
                            ],
                            "volumes": [{"name": "config", "configMap": {"name": k8s_name}}],
                        },
                    },
                }
            },
        },
    }
    header = (
        f"# qlora-launch schedule '{spec['name']}' as a Kubernetes CronJob. Create its config first:\n"
        f"#   kubectl create configmap {k8s_name} --from-file={cfg_name}={spec['config']}\n"
        "# Data paths and the registry must be reachable from the pod (s3://...); give AWS credentials\n"
        "# through a service-account role or an envFrom secretRef.\n"
    )
    return header + yaml.safe_dump(manifest, sort_keys=False)
