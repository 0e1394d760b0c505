"""A real S3 HTTP server on loopback for tests: moto's server mode, talked to by boto3 over HTTP.

Use it from a test module:

    from tests.helpers.s3_server import s3_server, s3_bucket  # noqa: F401  (pytest fixtures)

    def test_x(s3_bucket):            # a fresh, empty bucket per test
        uri = f"s3://{s3_bucket.name}/prefix"
        ... boto3.client("s3", endpoint_url=s3_bucket.endpoint) ...

`s3_server` (session scope) starts `moto_server -H 127.0.0.1 -p <free port>` once, waits until it
answers, sets dummy AWS credentials in the environment for the session, yields the endpoint URL, and
terminates exactly the process it started. `stop_s3_server`/`start_s3_server` let fault tests take a
server down and bring one back on the same port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

DUMMY_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_server_bin() -> str:
    cand = Path(sys.executable).parent / "moto_server"
    if cand.exists():
        return str(cand)
    found = shutil.which("moto_server")
    if not found:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    return found


def start_s3_server(port: Optional[int] = None, timeout_s: float = 30.0) -> "tuple[subprocess.Popen, str]":
    """Start moto_server on 127.0.0.1 and wait until it answers; returns (process, endpoint URL)."""
    port = port or free_port()
    proc = subprocess.Popen(
        [moto_server_bin(), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode} before answering on {endpoint}")
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).read()
            return proc, endpoint
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                stop_s3_server(proc)
                raise RuntimeError(f"moto_server did not answer on {endpoint} within {timeout_s:.0f}s") from None
            time.sleep(0.1)


def stop_s3_server(proc: subprocess.Popen) -> None:
    """Terminate exactly this server process (kill it if it does not stop within 5 s)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def dummy_aws_env() -> Iterator[None]:
    """DUMMY_AWS_ENV in os.environ for the block; what was there before is put back after."""
    saved = {k: os.environ.get(k) for k in DUMMY_AWS_ENV}
    os.environ.update(DUMMY_AWS_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server on loopback, with dummy AWS credentials in os.environ."""
    with dummy_aws_env():
        proc, endpoint = start_s3_server()
        try:
            yield endpoint
        finally:
            stop_s3_server(proc)


@dataclass
class Bucket:
    name: str
    endpoint: str

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint)


@pytest.fixture
def s3_bucket(s3_server: str) -> Bucket:
    """A new empty bucket on the session's S3 server."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return Bucket(name, s3_server)
