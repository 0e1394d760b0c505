"""A real Ray cluster of two nodes on loopback, for cluster-mode tests (token authentication on).

`start_cluster` starts `ray start --head` and a second `ray start --address` node, each in its own temp
dir and ports (as on separate machines: nodes sharing one temp dir would share runtime_resources/, and one
node's runtime-env agent deletes the job's working_dir copy while the other still runs in it), and
`stop_cluster` stops exactly the processes it started (by pid, never `ray stop`, which would kill other
Ray clusters on the machine).

`isolate` runs the worker node in its own mount namespace with empty tmpfs over the given folders: a
worker that cannot see the driver's files, as on a real cluster that shares nothing but Ray and S3
(../shared/DESIGN.md). Needs root (`unshare --mount`).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ports() -> List[str]:
    """Every port a node opens, picked free, so this cluster never collides with another on the machine."""
    args = []
    for flag in (
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port",
        "--metrics-export-port",
    ):
        args += [flag, str(_free_port())]
    return args + ["--min-worker-port", "0", "--max-worker-port", "0"]  # 0: workers take OS-assigned ports


@dataclass
class LoopbackCluster:
    address: str  # the dashboard / Jobs API, http://127.0.0.1:PORT
    token: str
    temp_dir: Path
    env: Dict[str, str]  # the nodes' environment
    procs: List[subprocess.Popen] = field(default_factory=list)

    def ray_cli(self, *args: str) -> subprocess.CompletedProcess:
        """The `ray` CLI against this cluster's dashboard, with the token (as a user would run it)."""
        env = {k: v for k, v in self.env.items() if k != "RAY_ADDRESS"}  # RAY_ADDRESS would beat --address
        return subprocess.run(
            [RAY, *args, "--address", self.address], env=env, capture_output=True, text=True, timeout=60
        )

    def alive_nodes(self) -> List[dict]:
        nodes = self.get("/nodes?view=summary").json()["data"]["summary"]
        return [n for n in nodes if n["raylet"]["state"] == "ALIVE"]

    def get(self, path: str, token: str = None):
        import requests

        return requests.get(self.address + path, headers={"Authorization": f"Bearer {token or self.token}"}, timeout=5)


def _wait_for(what: str, check, procs: List[subprocess.Popen], logs: List[Path], timeout: float = START_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"ray start exited ({p.returncode}) while waiting for {what}:\n" + _tail(logs))
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}:\n" + _tail(logs))


def _tail(logs: List[Path]) -> str:
    return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:] for p in logs if p.exists())


# A node that has run jobs takes longer than this to go on SIGTERM (its raylet waits on its workers and
# agents: 10 s and more); what is left is killed. The test is over by then, and the temp dir goes with it.
STOP_GRACE_S = 4


def _stop(procs: List[subprocess.Popen]) -> None:
    """SIGTERM each `ray start --block` (it tears its node down), then kill any of its processes left."""
    import psutil

    family = []
    for p in procs:
        try:
            parent = psutil.Process(p.pid)
            family += [parent] + parent.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    for p in reversed(procs):  # workers first, head last
        if p.poll() is None:
            p.terminate()
    _, alive = psutil.wait_procs(family, timeout=STOP_GRACE_S)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def start_cluster(
    head_cpus: int = 2,
    worker_cpus: int = 2,
    worker_resources: Optional[Dict[str, float]] = None,
    isolate: Sequence[Path] = (),
    head_env: Optional[Dict[str, str]] = None,
    worker_env: Optional[Dict[str, str]] = None,
) -> LoopbackCluster:
    """Start the two nodes and wait until both are alive; the caller must `stop_cluster` it."""
    token = secrets.token_hex(16)
    temp_dir = Path(tempfile.mkdtemp(prefix="rqc", dir="/tmp"))  # short: Ray's socket paths must fit 107 chars
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # a job's `python` is this venv's
    )
    gcs_port, dash_port = _free_port(), _free_port()
    # Ray processes that look the cluster up (Train's state API) would otherwise find every Ray on this
    # shared machine and give up ("Found multiple active Ray instances").
    env["RAY_ADDRESS"] = f"127.0.0.1:{gcs_port}"
    common = [
        "--block",
        "--num-gpus",
        "0",
        "--object-store-memory",
        str(150 * 1024**2),
        "--node-ip-address",
        "127.0.0.1",
        "--disable-usage-stats",
    ]
    logs = [temp_dir / "head.out", temp_dir / "worker.out"]
    cluster = LoopbackCluster(f"http://127.0.0.1:{dash_port}", token, temp_dir, env)
    try:
        head = [
            RAY,
            "start",
            "--head",
            "--port",
            str(gcs_port),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dash_port),
            "--ray-client-server-port",
            str(_free_port()),
            "--temp-dir",
            str(temp_dir / "h"),
            "--num-cpus",
            str(head_cpus),
            *common,
            *_node_ports(),
        ]
        cluster.procs.append(
            subprocess.Popen(
                head,
                env={**env, **(head_env or {})},
                stdout=open(logs[0], "w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        _wait_for("the head's dashboard", lambda: cluster.get("/api/version").ok, cluster.procs, logs)
        worker = [
            RAY,
            "start",
            "--address",
            f"127.0.0.1:{gcs_port}",
            "--temp-dir",
            str(temp_dir / "w"),
            "--num-cpus",
            str(worker_cpus),
            *common,
            *_node_ports(),
        ]
        if worker_resources:
            worker += ["--resources", json.dumps(worker_resources)]
        if isolate:
            mounts = " && ".join(f"mount -t tmpfs tmpfs {shlex.quote(str(d))}" for d in isolate)
            worker = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "bash",
                "-c",
                f"{mounts} && exec {shlex.join(worker)}",
            ]
        cluster.procs.append(
            subprocess.Popen(
                worker,
                env={**env, **(worker_env or {})},
                stdout=open(logs[1], "w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

        def two_nodes():
            return len(cluster.alive_nodes()) >= 2

        _wait_for("the second node", two_nodes, cluster.procs, logs)
        return cluster
    except BaseException:
        stop_cluster(cluster)
        raise


def stop_cluster(cluster: LoopbackCluster) -> None:
    _stop(cluster.procs)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)
