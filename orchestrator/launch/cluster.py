"""Cluster mode: a run submitted as a Ray Job.

The launcher never runs training: it validates the config, packs this project as the job's
`working_dir`, and submits `python -m orchestrator.launch.entry <verb> --config-b64 ...` through Ray's Job
Submission API (the dashboard address, http://HEAD:8265). Secrets travel by *name*: only the
variables listed in SECRET_ENV_VARS that are set in the launcher's environment are copied into the
job's `env_vars`; their values are never printed, logged or written to disk here.

Connecting (address, auth token) and following jobs (`jobs`, `status`, `logs`, `stop`) live in
orchestrator.launch.ray_jobs.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import secrets as _secrets
import shlex
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from orchestrator import __version__
from orchestrator.core.config import RunConfig
from orchestrator.core.errors import UserError
from orchestrator.launch.ray_jobs import Echo, connect, follow_to_exit_code, normalize_address

# The folder holding orchestrator/ and jobs/: what a job's working_dir carries to the cluster.
PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Passed to the job by name, and only when set here. RAY_AUTH_TOKEN is deliberately absent: the
# cluster has its own, and the job must not carry the launcher's.
SECRET_ENV_VARS = (
    "WANDB_API_KEY",
    "HF_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)

# gitignore syntax, relative to the project root (Ray also honours .gitignore and .rayignore).
# Anchored with "/" so that e.g. a data folder named `models` deeper down still travels.
WORKING_DIR_EXCLUDES = [
    "/.venv",
    "/runs",
    "/models",
    "/wandb",
    "/mlruns",
    "/.git",
    "/bench/out",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    "*.egg-info",
]

VERBS = ("tune", "train")


# ---- pure parts: what gets submitted -------------------------------------------------------------


def build_entrypoint(cfg: RunConfig, verb: str, *, resume: bool = False, verbose: bool = False) -> str:
    """The shell command the job runs on the cluster (from the job's working_dir).

    The config travels as base64 JSON: it holds no secrets, survives any shell quoting, and is
    validated again on the cluster by the same pydantic model.
    """
    if verb not in VERBS:
        raise ValueError(f"verb must be one of {VERBS}, got {verb!r}")
    b64 = base64.b64encode(json.dumps(cfg.to_json()).encode("utf-8")).decode("ascii")
    cmd = ["python", "-m", "orchestrator.launch.entry", verb, "--config-b64", b64]
    if resume:
        cmd.append("--resume")
    if verbose:
        cmd.append("--verbose")
    return shlex.join(cmd)


def forwarded_secret_names(environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """Names of the secret variables set (non-empty) in `environ`, in SECRET_ENV_VARS order."""
    env = os.environ if environ is None else environ
    return [name for name in SECRET_ENV_VARS if env.get(name)]


def build_runtime_env(environ: Optional[Mapping[str, str]] = None, project_root: Path = PROJECT_ROOT) -> Dict[str, Any]:
    """The job's runtime_env: this project as working_dir, secrets copied by name from `environ`.

    The returned dict holds secret values (it is what Ray needs); never print it. Use
    `describe_runtime_env` for anything a person reads.
    """
    env = os.environ if environ is None else environ
    env_vars = {name: env[name] for name in forwarded_secret_names(env)}
    # Job logs stream as they are written instead of in 8 KiB blocks.
    env_vars["PYTHONUNBUFFERED"] = "1"
    return {"working_dir": str(project_root), "excludes": list(WORKING_DIR_EXCLUDES), "env_vars": env_vars}


def describe_runtime_env(runtime_env: Mapping[str, Any]) -> Dict[str, Any]:
    """A printable copy of a runtime_env: every env var value replaced by '***'."""
    out = {k: v for k, v in runtime_env.items() if k != "env_vars"}
    out["env_vars"] = {k: "***" for k in (runtime_env.get("env_vars") or {})}
    return out


def build_metadata(cfg: RunConfig, verb: str) -> Dict[str, str]:
    """Job metadata (strings only, as Ray requires): what ran, from which config, by whom."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (some containers)
        user = "unknown"
    return {
        "experiment": cfg.experiment,
        "config_hash": cfg.config_hash(),
        "verb": verb,
        "user": user,
        "qlora_launch_version": __version__,
    }


def new_submission_id(cfg: RunConfig, verb: str) -> str:
    """A readable, unique job id, e.g. `qlora-tune-my_exp-1f3a9c`."""
    return f"qlora-{verb}-{cfg.experiment}-{_secrets.token_hex(3)}"


def _is_uri(path: str) -> bool:
    return "://" in path or path.startswith("hub:")


def _excluded(rel: Path) -> bool:
    top = rel.parts[0] if rel.parts else ""
    return top in {p.strip("/").split("/")[0] for p in WORKING_DIR_EXCLUDES if p.startswith("/")}


def prepare_for_cluster(
    cfg: RunConfig, project_root: Path = PROJECT_ROOT, cwd: Optional[Path] = None
) -> Tuple[RunConfig, List[str]]:
    """The config as the cluster should see it, and notes for the user about paths.

    - data files inside the project travel with the working_dir: they become relative to it (the
      job's driver, which reads the data, runs from there);
    - a relative local output.dir becomes absolute: the job's own cwd is a temporary copy;
    - local paths that do not travel (outside the project, or under models/ and other excluded
      folders) are kept, with a note that they must exist on the cluster's nodes.
    """
    cwd = Path.cwd() if cwd is None else cwd
    root = project_root.resolve()
    data = cfg.to_json()
    notes: List[str] = []

    for key in ("train", "eval", "test"):
        p = data["data"].get(key)
        if not p or _is_uri(p):
            continue
        path = Path(p) if os.path.isabs(p) else (cwd / p)
        try:
            rel = path.resolve().relative_to(root)
        except ValueError:
            notes.append(
                f"data.{key} ({p}) is outside the project, so it is not uploaded: it must exist at that "
                "path on the cluster's head node (or use s3://… / hub:NAME)."
            )
            continue
        if _excluded(rel):
            notes.append(f"data.{key} ({p}) is in an excluded folder ({rel.parts[0]}/), so it is not uploaded.")
            continue
        data["data"][key] = rel.as_posix()

    model = data["model"]["name_or_path"]
    if os.path.isabs(model) or model.startswith("."):
        notes.append(
            f"model.name_or_path ({model}) is a local folder: it must exist at that path on every cluster node "
            "(or use a Hugging Face Hub id)."
        )

    out = data["output"]["dir"]
    if not _is_uri(out):
        if not os.path.isabs(out):
            data["output"]["dir"] = str((cwd / out).resolve())
        notes.append(
            f"output.dir ({data['output']['dir']}) is a local path: on a multi-node cluster every node must see "
            "the same folder (a shared filesystem); otherwise use output.dir: s3://bucket/prefix."
        )
    return RunConfig.model_validate(data), notes


# ---- storage credentials --------------------------------------------------------------------------


def check_storage_credentials(cfg: RunConfig) -> Optional[str]:
    """Fail early when the run writes to S3 and boto3's credential chain finds nothing.

    Returns a note for the user when credentials exist but do not travel with the job (they come
    from a profile or an instance role here, not from environment variables); None otherwise.

    Raises:
        UserError: an s3:// output.dir (or publish.to) and no AWS credentials.
    """
    keys = []
    if cfg.output.dir.startswith("s3://"):
        keys.append(f"output.dir ({cfg.output.dir})")
    if cfg.publish is not None and cfg.publish.to.startswith("s3://"):
        keys.append(f"publish.to ({cfg.publish.to})")
    if not keys:
        return None
    import boto3
    import botocore.exceptions

    try:
        creds = boto3.session.Session().get_credentials()
    except botocore.exceptions.BotoCoreError as e:  # e.g. AWS_PROFILE names a missing profile
        raise UserError(f"{' and '.join(keys)} is on S3, but AWS credentials could not be loaded: {e}.") from None
    if creds is None:
        raise UserError(
            f"{' and '.join(keys)} is on S3, but no AWS credentials were found. Export AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (passed to the job by name, never written anywhere), or configure a profile "
            "(`aws configure`), or use a local output.dir."
        )
    if getattr(creds, "method", "env") != "env":
        return (
            f"AWS credentials here come from '{creds.method}', which is not forwarded to the job: the cluster's "
            "nodes need their own (the IAM instance profile in cluster.yaml), or export AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY."
        )
    return None


# ---- submitting ---------------------------------------------------------------------------------


def submit_job(
    address: Optional[str],
    entrypoint: str,
    *,
    runtime_env: Optional[Dict[str, Any]] = None,
    metadata: Optional[Dict[str, str]] = None,
    submission_id: Optional[str] = None,
    wait: bool = True,
    echo: Echo = print,
) -> int:
    """Submit any entrypoint as a Ray Job, print its id and (when `wait`) follow it to the end.

    Returns:
        0 when the job SUCCEEDED (or when not waiting), 1 when it FAILED or was STOPPED.
    """
    cluster = connect(address)
    with cluster.errors():
        job_id = cluster.client.submit_job(
            entrypoint=entrypoint, runtime_env=runtime_env, metadata=metadata, submission_id=submission_id
        )
    echo(f"Submitted job {job_id} to {cluster.address}")
    if not wait:
        echo(f"Follow it with: qlora-launch logs {job_id} --follow --address {cluster.address}")
        return 0
    return follow_to_exit_code(cluster, job_id, echo=echo)


def submit_run(
    cfg: RunConfig,
    verb: str,
    address: Optional[str],
    *,
    wait: bool = True,
    resume: bool = False,
    echo: Echo = print,
    verbose: bool = False,
) -> int:
    """Run `tune` or `train` of `cfg` as a Ray Job on the cluster at `address`.

    Args:
        cfg: the validated config.
        verb: "tune" (the search) or "train" (one trial with the config's values).
        address: the dashboard address, http://HEAD:8265.
        wait: follow the logs to the end and return the job's outcome; else return once submitted.
        resume: restore an interrupted search from its storage instead of starting over.
        echo: where lines for the user go.
        verbose: the job streams its workers' output too (it always goes to trials/<id>/worker.log).

    Returns:
        0 when the job SUCCEEDED (or when not waiting), 1 when it FAILED or was STOPPED.

    Raises:
        UserError: bad address, missing/wrong token, S3 output without credentials, a trial that no node of
            the (fixed-size) cluster can host.
    """
    if verb not in VERBS:
        raise ValueError(f"verb must be one of {VERBS}, got {verb!r}")
    aws_note = check_storage_credentials(cfg)
    from orchestrator.launch.capacity import check_cluster_fits

    check_cluster_fits(cfg, connect(address), echo)  # a trial no node can host: exit 2 now, not a silent wait
    cluster_cfg, notes = prepare_for_cluster(cfg)
    runtime_env = build_runtime_env()
    for note in ([aws_note] if aws_note else []) + notes:
        echo(f"Note: {note}")
    names = forwarded_secret_names()
    echo(f"Secrets passed to the job by name: {', '.join(names) if names else 'none'}")
    return submit_job(
        address,
        build_entrypoint(cluster_cfg, verb, resume=resume, verbose=verbose),
        runtime_env=runtime_env,
        metadata=build_metadata(cfg, verb),
        submission_id=new_submission_id(cfg, verb),
        wait=wait,
        echo=echo,
    )


def describe_submission(cfg: RunConfig, verb: str, address: Optional[str], *, resume: bool = False) -> List[str]:
    """What `submit_run` would send, for --dry-run: no connection is made, no secret value shown."""
    cluster_cfg, notes = prepare_for_cluster(cfg)
    env = describe_runtime_env(build_runtime_env())
    entry = build_entrypoint(cluster_cfg, verb, resume=resume)
    head, _, _ = entry.partition("--config-b64")
    lines = [
        f"cluster: {normalize_address(address)}",
        f"entrypoint: {head}--config-b64 <{len(entry) - len(head)} chars of base64 config>"
        + (" --resume" if resume else ""),
        f"working_dir: {env['working_dir']} (excluding {', '.join(env['excludes'])})",
        f"env_vars: {', '.join(env['env_vars'])}",
        f"metadata: {json.dumps(build_metadata(cfg, verb), sort_keys=True)}",
    ]
    return lines + [f"note: {n}" for n in notes]
