"""Cluster mode against a real two-node Ray cluster on loopback, token authentication on.

The fixture starts `ray start --head` and a second `ray start --address` node (2 CPUs each, in one
filesystem: this proves the Ray wiring; tests/integration/launch/test_cluster_isolated.py runs a worker
that cannot see the driver's files) with tests/helpers/ray_cluster.py.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.launch import cluster as submit
from orchestrator.launch import ray_jobs
from tests.helpers.ray_cluster import _free_port, start_cluster, stop_cluster
from tests.helpers.s3_server import s3_bucket, s3_server  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def ray_cluster_2nodes_token():
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture
def launcher_env(monkeypatch, tmp_path, ray_cluster_2nodes_token):
    """The launcher's side: the cluster's token in RAY_AUTH_TOKEN, nothing else from this machine."""
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "AWS_PROFILE", *submit.SECRET_ENV_VARS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_cluster_2nodes_token.token)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token, no ~/.aws
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # Ray's client caches the token it read first in this process (e.g. the in-process cluster of an earlier
    # test, from the real ~/.ray/auth_token): forget it, so this launcher sees only the environment above.
    from ray._raylet import AuthenticationTokenLoader

    AuthenticationTokenLoader.instance().reset_cache()
    yield ray_cluster_2nodes_token
    AuthenticationTokenLoader.instance().reset_cache()


def qlora(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


PROBE = """
import ray
ray.init(address="auto")
alive = [n for n in ray.nodes() if n["Alive"]]
print(f"alive_nodes={len(alive)} cpus={ray.cluster_resources().get('CPU')}", flush=True)
"""


def _wait_status(cluster, job_id: str, wanted: set, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = str(ray_jobs.job_status(cluster.address, job_id).status)
        if status in wanted:
            return status
        time.sleep(0.5)
    return status


# ---- a trivial job: submission, following, listing -------------------------------------------------


def test_job_runs_on_the_two_node_cluster_and_is_listed(launcher_env, tmp_path):
    cluster = launcher_env
    (tmp_path / "wd").mkdir()
    (tmp_path / "wd" / "probe.py").write_text(PROBE)
    lines = []
    job_id = f"qlora-probe-{secrets.token_hex(3)}"
    rc = submit.submit_job(
        cluster.address,
        "python probe.py",
        runtime_env={"working_dir": str(tmp_path / "wd")},
        metadata={"experiment": "probe", "verb": "tune", "user": "test"},
        submission_id=job_id,
        echo=lines.append,
    )
    out = "\n".join(lines)
    assert rc == 0, out
    assert f"Submitted job {job_id}" in out and "alive_nodes=2 cpus=4.0" in out
    assert out.rstrip().endswith(f"Job {job_id} SUCCEEDED.")

    r = qlora("jobs", "--address", cluster.address)
    assert r.exit_code == 0
    row = next(line for line in r.output.splitlines() if line.startswith(job_id))
    assert "SUCCEEDED" in row and "probe" in row

    ray_list = cluster.ray_cli("job", "list")
    assert ray_list.returncode == 0 and job_id in ray_list.stdout, ray_list.stderr

    r = qlora("status", job_id, "--address", cluster.address)
    assert r.exit_code == 0 and "SUCCEEDED" in r.output and "probe" in r.output
    r = qlora("logs", job_id, "--address", cluster.address)
    assert r.exit_code == 0 and "alive_nodes=2" in r.output


def test_stop_a_running_job(launcher_env):
    cluster = launcher_env
    job_id = f"qlora-sleep-{secrets.token_hex(3)}"
    assert (
        submit.submit_job(
            cluster.address,
            "python -c 'import time; time.sleep(300)'",
            submission_id=job_id,
            wait=False,
            echo=lambda s: None,
        )
        == 0
    )
    assert _wait_status(cluster, job_id, {"RUNNING"}) == "RUNNING"
    r = qlora("stop", job_id, "--address", cluster.address)
    assert r.exit_code == 0 and "Stop requested" in r.output
    assert _wait_status(cluster, job_id, {"STOPPED"}) == "STOPPED"
    r = qlora("logs", job_id, "--follow", "--address", cluster.address)
    assert r.exit_code == 1 and "STOPPED" in r.output  # following a job that did not succeed exits 1
    r = qlora("stop", job_id, "--address", cluster.address)
    assert r.exit_code == 0 and "was not running" in r.output


def test_token_from_the_token_file(launcher_env, monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    (tmp_path / ".ray").mkdir(exist_ok=True)
    (tmp_path / ".ray" / "auth_token").write_text(launcher_env.token + "\n")  # HOME is tmp_path
    assert qlora("jobs", "--address", launcher_env.address).exit_code == 0


# ---- bad input: a clear message and exit 2 each ----------------------------------------------------


def test_wrong_token(launcher_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-cluster-token")
    r = qlora("jobs", "--address", launcher_env.address)
    assert r.exit_code == 2
    assert "rejected the auth token from RAY_AUTH_TOKEN" in r.output
    assert "not-the-cluster-token" not in r.output and "Traceback" not in r.output


def test_missing_token(launcher_env, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    r = qlora("jobs", "--address", launcher_env.address)
    assert r.exit_code == 2
    assert "requires an auth token and none was found" in r.output and "RAY_AUTH_TOKEN" in r.output


@pytest.mark.parametrize("verb", [["status"], ["logs"], ["logs", "--follow"], ["stop"]])
def test_unknown_job_id(launcher_env, verb):
    r = qlora(*verb, "raysubmit_doesnotexist", "--address", launcher_env.address)
    assert r.exit_code == 2
    assert "no job 'raysubmit_doesnotexist'" in r.output and "Traceback" not in r.output


def test_unreachable_address(launcher_env):
    dead = f"http://127.0.0.1:{_free_port()}"
    for args in (["jobs"], ["status", "x"], ["logs", "x"], ["stop", "x"]):
        r = qlora(*args, "--address", dead)
        assert r.exit_code == 2 and "cannot reach the Ray dashboard" in r.output, args


# ---- the real thing: `qlora-launch tune --address` ------------------------------------------------


def test_tune_submitted_through_the_cli_lands_results_in_storage(
    s3_bucket, launcher_env, tiny_t5, tmp_path, monkeypatch
):
    """Shared storage is S3 (moto on loopback): both nodes' workers write checkpoints there."""
    cluster = launcher_env  # (after s3_bucket: it clears the AWS variables that made the bucket)
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-must-not-show")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAQLORACLUSTERTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-must-not-show")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.chdir(tmp_path)  # the launcher runs from anywhere; the project travels as working_dir
    r = qlora(
        "tune",
        str(ROOT / "examples/t5_tiny_summarize_local.yaml"),
        "--address",
        cluster.address,
        "--experiment",
        "e2e",
        "--set",
        f"model.name_or_path={tiny_t5}",
        "--set",
        f"output.dir=s3://{s3_bucket.name}/runs",
        "--set",
        f"output.endpoint_url={s3_bucket.endpoint}",
        "--set",
        "search.num_samples=2",
        "--set",
        "search.max_concurrent_trials=2",
        "--set",
        "search.scheduler=fifo",
        "--set",
        "training.max_steps=4",
        "--set",
        "training.eval_steps=2",
        "--set",
        "tracking.wandb=false",
    )
    out = r.output
    if os.environ.get("QLORA_DEBUG_OUT"):
        Path(os.environ["QLORA_DEBUG_OUT"]).write_text(out)
    assert r.exit_code == 0, out[-4000:]
    assert "wandb-secret-must-not-show" not in out and "aws-secret-must-not-show" not in out
    assert "Secrets passed to the job by name: WANDB_API_KEY, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in out
    job_id = next(line.split()[2] for line in out.splitlines() if line.startswith("Submitted job"))
    assert job_id.startswith("qlora-tune-e2e-") and f"Job {job_id} SUCCEEDED." in out

    c = s3_bucket.client()
    keys = {
        o["Key"]
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket.name)
        for o in page.get("Contents", [])
    }
    get = lambda k: c.get_object(Bucket=s3_bucket.name, Key=k)["Body"].read()  # noqa: E731
    results = json.loads(get("runs/e2e/results.json"))
    assert results["experiment"] == "e2e" and results["best"] is not None
    assert results["paths"]["storage"] == f"s3://{s3_bucket.name}/runs/e2e/ray"
    trials = get("runs/e2e/trials.csv").decode().strip().splitlines()
    assert len(trials) == 1 + 2, trials  # header + one row per trial
    assert any(k.startswith("runs/e2e/ray/tune/experiment_state-") for k in keys)
    trained = {k.split("/")[3] for k in keys if k.endswith("/checkpoint/adapter_model.safetensors")}
    assert len(trained) == 2, trained  # both trials' checkpoints are on S3
    assert "runs/e2e/best/merged/model.safetensors" in keys
    assert not any(b"aws-secret-must-not-show" in get(k) for k in keys)

    info = ray_jobs.job_status(cluster.address, job_id)
    assert info.metadata["experiment"] == "e2e" and len(info.metadata["config_hash"]) == 12
    ray_list = cluster.ray_cli("job", "list")
    assert ray_list.returncode == 0 and job_id in ray_list.stdout, ray_list.stderr

    # The same experiment again, without --resume: the job refuses to touch the run already on S3.
    again = qlora(
        "train",
        str(ROOT / "examples/t5_tiny_summarize_local.yaml"),
        "--address",
        cluster.address,
        "--experiment",
        "e2e",
        "--set",
        f"model.name_or_path={tiny_t5}",
        "--set",
        f"output.dir=s3://{s3_bucket.name}/runs",
        "--set",
        f"output.endpoint_url={s3_bucket.endpoint}",
        "--set",
        "tracking.wandb=false",
    )
    assert again.exit_code == 1 and "already holds a run" in again.output, again.output[-3000:]
    assert {
        o["Key"]
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket.name)
        for o in page.get("Contents", [])
    } == keys  # nothing written


def test_tune_with_s3_output_and_no_credentials(launcher_env, tiny_t5):
    r = qlora(
        "tune",
        str(ROOT / "examples/t5_tiny_summarize_local.yaml"),
        "--address",
        launcher_env.address,
        "--set",
        f"model.name_or_path={tiny_t5}",
        "--set",
        "output.dir=s3://qlora-test-bucket/runs",
    )
    assert r.exit_code == 2, r.output
    assert "AWS credentials" in r.output and "Traceback" not in r.output
    assert "Submitted job" not in r.output


def test_tune_with_unreachable_address(launcher_env, tiny_t5):
    r = qlora(
        "tune",
        str(ROOT / "examples/t5_tiny_summarize_local.yaml"),
        "--address",
        f"http://127.0.0.1:{_free_port()}",
        "--set",
        f"model.name_or_path={tiny_t5}",
    )
    assert r.exit_code == 2 and "cannot reach the Ray dashboard" in r.output, r.output
