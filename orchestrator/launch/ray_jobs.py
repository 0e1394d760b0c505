"""Talking to a Ray cluster's Job Submission API: address, auth token, connection, and following jobs.

Everything here works on jobs already submitted (or about to be, by orchestrator.launch.cluster):
connecting to the dashboard (http://HEAD:8265) with the cluster's token, turning Ray's client
exceptions into UserErrors that say what to do, following a job's logs to its end, and the
`jobs`, `status`, `logs`, `stop` verbs with their printable tables.

Ray >= 2.59 clusters check a bearer token on every request. The token is found the way Ray's own
clients find it (RAY_AUTH_TOKEN, then the file named by RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token)
and sent explicitly, so it works whatever RAY_AUTH_MODE says on this machine.

Ray is imported inside the functions: the CLI must start fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Mapping, Optional
from urllib.parse import urlparse

from orchestrator.core.errors import UserError

TERMINAL_STATUSES = ("SUCCEEDED", "FAILED", "STOPPED")
DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")
CONNECT_TIMEOUT_S = 5.0

Echo = Callable[[str], Any]


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
        raise UserError(
            f"the Ray cluster at {address} requires an auth token and none was found here. " + _TOKEN_HELP
        ) from None
    except ConnectionError as e:
        raise UserError(_unreachable(address, str(e) or type(e).__name__)) from None
    except RuntimeError as e:
        text = str(e)
        if job_id is not None and ("404" in text or "does not exist" in text):
            raise UserError(
                f"no job '{job_id}' on the Ray cluster at {address}. "
                f"`qlora-launch jobs --address {address}` lists them."
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


def follow_to_exit_code(cluster: Cluster, job_id: str, *, echo: Echo = print) -> int:
    """Follow a job to its end (see `follow_job`), print how it ended, and return 0 if it SUCCEEDED, 1 if not."""
    return _exit_code(follow_job(cluster, job_id, echo=echo), job_id, cluster, echo)


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
        return follow_to_exit_code(cluster, job_id, echo=echo)
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
        rows.append(
            (
                j.submission_id or j.job_id or "-",
                str(j.status),
                md.get("experiment", "-"),
                md.get("verb", "-"),
                md.get("user", "-"),
                _ts(j.start_time),
                _duration(j),
            )
        )
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
