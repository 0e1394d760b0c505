"""Cluster mode: a run submitted as a Ray Job, and the verbs that follow it (`jobs`, `status`, `logs`, `stop`).

The launcher never runs training: it validates the config, packs this project as the job's
`working_dir`, and submits `python -m jobs.entry <verb> --config-b64 ...` through Ray's Job
Submission API (the dashboard address, http://HEAD:8265). Secrets travel by *name*: only the
variables listed in SECRET_ENV_VARS that are set in the launcher's environment are copied into the
job's `env_vars`; their values are never printed, logged or written to disk here.

Ray >= 2.59 clusters check a bearer token on every request. The token is found the way Ray's own
clients find it (RAY_AUTH_TOKEN, then the file named by RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token)
and sent explicitly, so it works whatever RAY_AUTH_MODE says on this machine.

Ray is imported inside the functions: the CLI must start fast.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import getpass
import json
import os
import secrets as _secrets
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple
from urllib.parse import urlparse

from orchestrator import __version__
from orchestrator.config import RunConfig
from orchestrator.errors import UserError

# The folder holding orchestrator/ and jobs/: what a job's working_dir carries to the cluster.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Passed to the job by name, and only when set here. RAY_AUTH_TOKEN is deliberately absent: the
# cluster has its own, and the job must not carry the launcher's.
SECRET_ENV_VARS = (
    "WANDB_API_KEY",
    "HF_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
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
TERMINAL_STATUSES = ("SUCCEEDED", "FAILED", "STOPPED")
DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")
CONNECT_TIMEOUT_S = 5.0

Echo = Callable[[str], Any]


# ---- pure parts: what gets submitted -------------------------------------------------------------

def build_entrypoint(cfg: RunConfig, verb: str, *, resume: bool = False) -> str:
    """The shell command the job runs on the cluster (from the job's working_dir).

    The config travels as base64 JSON: it holds no secrets, survives any shell quoting, and is
    validated again on the cluster by the same pydantic model.
    """
    if verb not in VERBS:
        raise ValueError(f"verb must be one of {VERBS}, got {verb!r}")
    b64 = base64.b64encode(json.dumps(cfg.to_json()).encode("utf-8")).decode("ascii")
    cmd = ["python", "-m", "jobs.entry", verb, "--config-b64", b64]
    if resume:
        cmd.append("--resume")
    return shlex.join(cmd)


def forwarded_secret_names(environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """Names of the secret variables set (non-empty) in `environ`, in SECRET_ENV_VARS order."""
    env = os.environ if environ is None else environ
    return [name for name in SECRET_ENV_VARS if env.get(name)]


def build_runtime_env(
    environ: Optional[Mapping[str, str]] = None, project_root: Path = PROJECT_ROOT
) -> Dict[str, Any]:
    """The job's runtime_env: this project as working_dir, secrets copied by name from `environ`.

    The returned dict holds secret values (it is what Ray needs); never print it. Use
    `describe_runtime_env` for anything a person reads.
    """
    env = os.environ if environ is None else environ
    env_vars = {name: env[name] for name in forwarded_secret_names(env)}
    # Job logs stream as they are written instead of in 8 KiB blocks.
    env_vars["PYTHONUNBUFFERED"] = "1"
    return {
        "working_dir": str(project_root),
        "excludes": list(WORKING_DIR_EXCLUDES),
        "env_vars": env_vars,
    }


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


# ---- credentials ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuthToken:
    value: str = ""
    source: str = ""  # where it came from, e.g. "RAY_AUTH_TOKEN" or a file path: safe to print

    def __repr__(self) -> str:  # the value must never end up in a log line
        return f"AuthToken(source={self.source!r})"


def find_auth_token(environ: Optional[Mapping[str, str]] = None, home: Optional[Path] = None) -> Optional[AuthToken]:
    """The Ray auth token, looked up in Ray's own order; None when there is none.

    1. RAY_AUTH_TOKEN, 2. the file named by RAY_AUTH_TOKEN_PATH, 3. ~/.ray/auth_token.

    Raises:
        UserError: RAY_AUTH_TOKEN_PATH names a file that is missing or empty.
    """
    env = os.environ if environ is None else environ
    value = (env.get("RAY_AUTH_TOKEN") or "").strip()
    if value:
        return AuthToken(value, "RAY_AUTH_TOKEN")
    path_var = env.get("RAY_AUTH_TOKEN_PATH")
    if path_var:
        p = Path(path_var).expanduser()
        value = _read_token(p)
        if not value:
            raise UserError(
                f"RAY_AUTH_TOKEN_PATH is {path_var}, but that file is missing or empty. Point it at the file "
                "holding the cluster's token, or unset it."
            )
        return AuthToken(value, f"RAY_AUTH_TOKEN_PATH ({p})")
    p = (Path(home) / ".ray" / "auth_token") if home is not None else DEFAULT_TOKEN_FILE.expanduser()
    value = _read_token(p)
    return AuthToken(value, str(p)) if value else None


def _read_token(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


_TOKEN_HELP = (
    "Set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH=<file>, or save the token to ~/.ray/auth_token. "
    "`ray get-auth-token` on the head node prints it; a cluster started from cluster.yaml uses your own "
    "~/.ray/auth_token (see docs/cluster.md)."
)


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


# ---- talking to the cluster ----------------------------------------------------------------------

def normalize_address(address: Optional[str]) -> str:
    """http://HOST:PORT of the dashboard, from what the user typed.

    Raises:
        UserError: no address, or a Ray Client (ray://) or GCS address instead of the dashboard's.
    """
    if not address or not address.strip():
        raise UserError(
            "no Ray cluster address: pass --address http://HEAD:8265 or set RAY_ADDRESS "
            "(the dashboard address; `ray dashboard cluster.yaml` forwards it to http://localhost:8265)."
        )
    address = address.strip().rstrip("/")
    if address == "auto" or address.startswith("ray://"):
        raise UserError(
            f"--address {address}: job submission needs the dashboard address, e.g. http://HEAD:8265 "
            "(ray:// is Ray Client and 'auto' a local cluster, neither is the Jobs API)."
        )
    if "://" not in address:
        address = "http://" + address
    parsed = urlparse(address)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UserError(f"--address {address}: expected http://HOST:PORT of the Ray dashboard (usually port 8265).")
    return address


def _probe(address: str) -> None:
    """A TCP connect with a timeout: Ray's client would wait for minutes on a dead host."""
    parsed = urlparse(address)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise UserError(_unreachable(address, getattr(e, "strerror", None) or str(e) or type(e).__name__)) from None


def _unreachable(address: str, why: str) -> str:
    return (
        f"cannot reach the Ray dashboard at {address} ({why}). Check the address (http://HEAD:8265; from a laptop "
        "`ray dashboard cluster.yaml` forwards it to http://localhost:8265) and that the cluster is up."
    )


@contextlib.contextmanager
def _ray_errors(address: str, token: Optional[AuthToken], job_id: Optional[str] = None) -> Iterator[None]:
    """Ray's client exceptions as UserErrors that say what to do."""
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as e:
        msg = getattr(e, "message", "") or ""
        if msg.startswith("Authentication failed"):  # HTTP 403: a token was sent and refused
            src = token.source if token else "this machine"
            raise UserError(
                f"the Ray cluster at {address} rejected the auth token from {src}: it is not this cluster's token. "
                + _TOKEN_HELP
            ) from None
        raise UserError(f"the Ray cluster at {address} requires an auth token and none was found here. " + _TOKEN_HELP) from None
    except ConnectionError as e:
        raise UserError(_unreachable(address, str(e) or type(e).__name__)) from None
    except RuntimeError as e:
        text = str(e)
        if job_id is not None and ("404" in text or "does not exist" in text):
            raise UserError(
                f"no job '{job_id}' on the Ray cluster at {address}. `qlora-launch jobs --address {address}` lists them."
            ) from None
        if "404" in text or "Jobs API is not supported" in text:
            raise UserError(
                f"{address} is not a Ray dashboard with the Jobs API ({text.strip()}). Pass the dashboard address, "
                "usually http://HEAD:8265."
            ) from None
        if "status code 400" in text:  # the cluster refused the request itself (e.g. a runtime_env it cannot use)
            raise UserError(f"the Ray cluster at {address} refused the request: {text.strip()}") from None
        raise
    except Exception as e:
        import requests

        if isinstance(e, requests.exceptions.RequestException):
            raise UserError(_unreachable(address, f"{type(e).__name__}: {e}")) from None
        raise


@dataclass
class Cluster:
    """A connected JobSubmissionClient plus what error messages need to know."""

    client: Any
    address: str
    token: Optional[AuthToken]

    def errors(self, job_id: Optional[str] = None):
        return _ray_errors(self.address, self.token, job_id)


def connect(address: Optional[str]) -> Cluster:
    """A Job Submission client for the cluster at `address`, authenticated when a token is found.

    Raises:
        UserError: no/unreachable address, missing or wrong token, not a Ray dashboard.
    """
    address = normalize_address(address)
    token = find_auth_token()
    _probe(address)
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token.value}"} if token else None
    with _ray_errors(address, token), _without_env("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        client = JobSubmissionClient(address, headers=headers)
    return Cluster(client, address, token)


@contextlib.contextmanager
def _without_env(*names: str) -> Iterator[None]:
    """Ray's client prefers RAY_ADDRESS over its `address` argument; the --address the user typed wins here."""
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


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
    return _exit_code(follow_job(cluster, job_id, echo=echo), job_id, cluster, echo)


def submit_run(
    cfg: RunConfig,
    verb: str,
    address: Optional[str],
    *,
    wait: bool = True,
    resume: bool = False,
    echo: Echo = print,
) -> int:
    """Run `tune` or `train` of `cfg` as a Ray Job on the cluster at `address`.

    Args:
        cfg: the validated config.
        verb: "tune" (the search) or "train" (one trial with the config's values).
        address: the dashboard address, http://HEAD:8265.
        wait: follow the logs to the end and return the job's outcome; else return once submitted.
        resume: restore an interrupted search from its storage instead of starting over.
        echo: where lines for the user go.

    Returns:
        0 when the job SUCCEEDED (or when not waiting), 1 when it FAILED or was STOPPED.

    Raises:
        UserError: bad address, missing/wrong token, S3 output without credentials.
    """
    if verb not in VERBS:
        raise ValueError(f"verb must be one of {VERBS}, got {verb!r}")
    aws_note = check_storage_credentials(cfg)
    cluster_cfg, notes = prepare_for_cluster(cfg)
    runtime_env = build_runtime_env()
    for note in ([aws_note] if aws_note else []) + notes:
        echo(f"Note: {note}")
    names = forwarded_secret_names()
    echo(f"Secrets passed to the job by name: {', '.join(names) if names else 'none'}")
    return submit_job(
        address,
        build_entrypoint(cluster_cfg, verb, resume=resume),
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


# ---- following a job -----------------------------------------------------------------------------

class _LineBuffer:
    """Chunks from the log stream printed as whole lines (echo may be click.echo, which adds a newline)."""

    def __init__(self, echo: Echo):
        self.echo, self.buf = echo, ""

    def feed(self, chunk: str) -> None:
        self.buf += chunk
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            self.echo(line)

    def flush(self) -> None:
        if self.buf:
            self.echo(self.buf)
            self.buf = ""


def _tail(cluster: Cluster, job_id: str, echo: Echo) -> None:
    out = _LineBuffer(echo)

    async def run() -> None:
        async for chunk in cluster.client.tail_job_logs(job_id):
            out.feed(chunk)

    try:
        asyncio.run(run())
    finally:
        out.flush()


def _wait_terminal(cluster: Cluster, job_id: str, timeout_s: float = 60.0, poll_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        with cluster.errors(job_id):
            info = cluster.client.get_job_info(job_id)
        if str(info.status) in TERMINAL_STATUSES or time.monotonic() > deadline:
            return info
        time.sleep(poll_s)


def follow_job(cluster: Cluster, job_id: str, *, echo: Echo = print) -> Any:
    """Stream a job's logs until it ends; returns its final JobDetails.

    A dropped log stream (head restarted, network) falls back to polling the status.
    """
    with cluster.errors(job_id):
        cluster.client.get_job_info(job_id)  # a clear error for an unknown id before the websocket
    try:
        with cluster.errors(job_id):
            _tail(cluster, job_id, echo)
    except KeyboardInterrupt:
        echo(
            f"Stopped following. Job {job_id} keeps running on the cluster: "
            f"`qlora-launch logs {job_id} --follow` resumes, `qlora-launch stop {job_id}` stops it."
        )
        raise
    except UserError:
        raise
    except Exception as e:  # the stream broke; the job may well still be running
        echo(f"Log stream interrupted ({type(e).__name__}: {e}); waiting for the job to finish.")
        return _wait_terminal(cluster, job_id, timeout_s=float("inf"), poll_s=5.0)
    return _wait_terminal(cluster, job_id)


def _exit_code(info: Any, job_id: str, cluster: Cluster, echo: Echo) -> int:
    status = str(info.status)
    if status == "SUCCEEDED":
        echo(f"Job {job_id} SUCCEEDED.")
        return 0
    msg = (info.message or "").strip().splitlines()
    echo(f"Job {job_id} {status}" + (f": {msg[0]}" if msg else "."))
    echo(f"Full logs: qlora-launch logs {job_id} --address {cluster.address}")
    return 1


def list_jobs(address: Optional[str]) -> List[Any]:
    """Every job the cluster knows (JobDetails), oldest first."""
    cluster = connect(address)
    with cluster.errors():
        jobs = cluster.client.list_jobs()
    return sorted(jobs, key=lambda j: j.start_time or 0)


def job_status(address: Optional[str], job_id: str) -> Any:
    """The JobDetails of one job.

    Raises:
        UserError: no such job (and the connection errors of `connect`).
    """
    cluster = connect(address)
    with cluster.errors(job_id):
        return cluster.client.get_job_info(job_id)


def job_logs(address: Optional[str], job_id: str, follow: bool = False, echo: Echo = print) -> int:
    """Print a job's logs; with `follow`, stream them until the job ends and return its exit code.

    Returns:
        0 without `follow`; with it, 0 when the job SUCCEEDED, 1 otherwise.
    """
    cluster = connect(address)
    if follow:
        return _exit_code(follow_job(cluster, job_id, echo=echo), job_id, cluster, echo)
    with cluster.errors(job_id):
        text = cluster.client.get_job_logs(job_id)
    buf = _LineBuffer(echo)
    buf.feed(text)
    buf.flush()
    return 0


def stop_job(address: Optional[str], job_id: str) -> bool:
    """Ask the cluster to stop a job; True when it was running, False when it had already ended."""
    cluster = connect(address)
    with cluster.errors(job_id):
        return bool(cluster.client.stop_job(job_id))


# ---- formatting for the CLI ----------------------------------------------------------------------

def _ts(ms: Optional[int]) -> str:
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def _duration(info: Any) -> str:
    if not info.start_time:
        return "-"
    end = info.end_time or time.time() * 1000
    s = int((end - info.start_time) / 1000)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def format_jobs_table(jobs: List[Any]) -> List[str]:
    """One line per job: id, status, experiment, verb, user, start, duration. No runtime_env (it holds secrets)."""
    header = ("JOB", "STATUS", "EXPERIMENT", "VERB", "USER", "STARTED", "DURATION")
    rows = [header]
    for j in jobs:
        md = j.metadata or {}
        rows.append((
            j.submission_id or j.job_id or "-",
            str(j.status),
            md.get("experiment", "-"),
            md.get("verb", "-"),
            md.get("user", "-"),
            _ts(j.start_time),
            _duration(j),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def format_job_details(info: Any) -> List[str]:
    """The status of one job, readable. No runtime_env (it holds secrets)."""
    md = info.metadata or {}
    lines = [
        f"job:         {info.submission_id or info.job_id}",
        f"status:      {info.status}",
        f"experiment:  {md.get('experiment', '-')}",
        f"verb:        {md.get('verb', '-')}",
        f"config hash: {md.get('config_hash', '-')}",
        f"user:        {md.get('user', '-')}",
        f"started:     {_ts(info.start_time)}",
        f"ended:       {_ts(info.end_time)}",
        f"duration:    {_duration(info)}",
    ]
    if info.message:
        first = info.message.strip().splitlines()
        lines.append(f"message:     {first[0] if first else ''}")
    return lines
