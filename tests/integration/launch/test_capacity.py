"""A trial no node can host is refused in seconds, exit 2, nothing written: locally (`tune --cpus 1`) and through
the Job API of a fixed-size cluster (the in-process Ray's own dashboard, one 1-CPU node)."""

from __future__ import annotations

import time

from click.testing import CliRunner

from orchestrator.cli import cli
from tests.conftest import write_config


def test_a_trial_no_node_can_host_exits_2_within_seconds(tmp_path, tiny_t5):
    import ray

    from orchestrator.launch.local import ensure_ray

    # A Ray already in this process (another test's) ignores --cpus: then ask for more than it can ever give.
    cpus_per_worker = 8 if ray.is_initialized() else 2
    out = tmp_path / "runs"
    cfg = write_config(tmp_path / "c.yaml", tiny_t5, out, resources={"cpus_per_worker": cpus_per_worker})
    t0 = time.monotonic()
    r = CliRunner().invoke(cli, ["tune", str(cfg), "--cpus", "1"])
    assert r.exit_code == 2, r.output
    assert f"one trial needs 1 worker(s) x {{CPU: {cpus_per_worker}}} plus 0.01 CPU for its driver" in r.output
    assert "Lower resources.cpus_per_worker, or pass a larger --cpus" in r.output and "Traceback" not in r.output
    assert time.monotonic() - t0 < 60
    assert not out.exists() or not any(out.iterdir()), list(out.rglob("*"))

    started = ensure_ray(cpus=1)
    try:
        url = "http://" + ray._private.worker._global_node.webui_url
        cpus = ray.cluster_resources()["CPU"]
        _wait_for_autoscaler_status(url)  # until Ray's monitor reports, the cluster might still grow: not refused
        t0 = time.monotonic()
        r = CliRunner().invoke(cli, ["tune", str(cfg), "--address", url, "--set", "resources.cpus_per_worker=8"])
        assert r.exit_code == 2, r.output
        assert "one trial needs 1 worker(s) x {CPU: 8}" in r.output
        assert f"the largest node of the cluster at {url} has {{CPU: {cpus:g}, GPU: 0}}" in r.output
        assert "add a node that large to the cluster" in r.output and "Submitted job" not in r.output
        assert time.monotonic() - t0 < 30
    finally:
        if started:
            ray.shutdown()


def _wait_for_autoscaler_status(url: str, timeout: float = 30) -> None:
    import json

    from orchestrator.launch.ray_jobs import connect

    cluster, deadline = connect(url), time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = cluster.client._do_request("GET", "/api/cluster_status")
        if "Worker node types:" in (json.loads(resp.text)["data"].get("autoscalingStatus") or ""):
            return
        time.sleep(0.5)
    raise AssertionError(f"no autoscaler status from {url} in {timeout:g} s")
