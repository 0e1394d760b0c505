"""`tune --address` on a cluster whose worker node shares nothing with the driver but Ray and S3.

The head runs the job's driver with 0 CPUs, so every trial and the merge land on the worker. The worker
node runs in its own mount namespace with empty tmpfs over the Hugging Face cache and the rest of
~/.cache, the project's runs/ and models/, the head's Ray temp dir (the job's working_dir copy and the
driver's staging run folder) and the folder of the tiny model: the base model, the data and the run's
storage are reachable only on S3 (moto on loopback). Trials and the merge are pinned to the worker by a
custom resource only it offers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.launch import cluster as submit
from tests.conftest import SEED, T5_EXAMPLE
from tests.helpers.ray_cluster import start_cluster, stop_cluster
from tests.helpers.s3_server import DUMMY_AWS_ENV, s3_bucket, s3_server  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
HOME_CACHE = Path.home() / ".cache"


def _upload_folder(client, bucket: str, folder: Path, prefix: str) -> None:
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            client.upload_file(str(f), bucket, f"{prefix}/{f.relative_to(folder).as_posix()}")


@pytest.fixture
def isolated_cluster(tiny_t5, tmp_path, s3_bucket):
    if os.geteuid() != 0:
        pytest.fail("this test starts a worker node in its own mount namespace: run it as root (CI does)")
    head_cache = tmp_path / "head-cache"
    hidden = [HOME_CACHE, ROOT / "runs", ROOT / "models", Path(tiny_t5)]
    for d in hidden:  # a fresh clone has no runs/ or models/ yet; a tmpfs needs a folder to cover
        d.mkdir(parents=True, exist_ok=True)
    cluster = start_cluster(
        head_cpus=0,
        worker_cpus=2,
        worker_resources={"trial_node": 4},
        isolate=hidden,
        head_env={"QLORA_LAUNCH_CACHE": str(head_cache), **DUMMY_AWS_ENV},
        worker_env=dict(DUMMY_AWS_ENV),
    )
    # the worker's temp dir holds its node's files; the head's is hidden from it by a tmpfs
    try:
        yield cluster, head_cache
    finally:
        stop_cluster(cluster)


def test_tune_on_a_worker_node_that_cannot_see_the_driver_files(
    isolated_cluster, s3_bucket, tiny_t5, tmp_path, monkeypatch
):
    cluster, head_cache = isolated_cluster
    c = s3_bucket.client()
    b = s3_bucket.name
    _upload_folder(c, b, Path(tiny_t5), "models/tiny-t5")
    for split in ("train", "eval", "test"):
        c.upload_file(str(SEED / f"{split}.jsonl"), b, f"data/{split}.jsonl")

    cfg = yaml.safe_load(T5_EXAMPLE.read_text())
    cfg["model"]["name_or_path"] = f"s3://{b}/models/tiny-t5"
    cfg["data"].update({k: f"s3://{b}/data/{k}.jsonl" for k in ("train", "eval", "test")})
    cfg["output"] = {"dir": f"s3://{b}/runs", "endpoint_url": s3_bucket.endpoint}
    cfg["search"].update(num_samples=2, max_concurrent_trials=1, scheduler="fifo")
    cfg["training"].update(max_steps=4, eval_steps=2)
    cfg["resources"]["custom"] = {"trial_node": 1}
    cfg["tracking"] = {"wandb": True, "project": "iso", "mode": "offline"}
    path = tmp_path / "iso.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "AWS_PROFILE", *submit.SECRET_ENV_VARS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    for k, v in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    from ray._raylet import AuthenticationTokenLoader

    AuthenticationTokenLoader.instance().reset_cache()
    r = CliRunner().invoke(
        cli, ["tune", str(path), "--address", cluster.address, "--experiment", "iso"], catch_exceptions=False
    )
    out = r.output
    assert r.exit_code == 0, out[-6000:]

    keys = {
        o["Key"] for page in c.get_paginator("list_objects_v2").paginate(Bucket=b) for o in page.get("Contents", [])
    }
    get = lambda k: c.get_object(Bucket=b, Key=k)["Body"].read()  # noqa: E731
    results = json.loads(get("runs/iso/results.json"))
    assert results["best"] is not None and len(results["trials"]) == 2
    assert "runs/iso/best/adapter/adapter_model.safetensors" in keys
    assert "runs/iso/best/merged/model.safetensors" in keys
    assert results["paths"]["merged"] == f"s3://{b}/runs/iso/best/merged"
    assert results["merge_check"]["passed"] is True
    test_scores = results["scores"]["test"]
    assert test_scores["num_examples"] > 0 and 0.0 <= test_scores["eval_rougeL"] <= 1.0
    assert test_scores["eval_loss"] > 0
    assert all(results["data_fingerprints"][k] for k in ("train", "eval", "test"))
    assert "runs/iso/report/index.html" in keys or any(k.startswith("runs/iso/report/") for k in keys)
    wandb_files = [k for k in keys if k.startswith("runs/iso/wandb/offline-run-") and k.endswith(".wandb")]
    assert len(wandb_files) >= 2, sorted(k for k in keys if "/wandb/" in k)  # one per trial, from the worker
    assert f"aws s3 cp --recursive s3://{b}/runs/iso/wandb" in out

    # Everything heavy ran on the worker: the trials and the merge are pinned there, and the driver's
    # node fetched the tokenizer of the base model and never its weights.
    worker_ids = {n["raylet"]["nodeId"] for n in cluster.alive_nodes() if not n["raylet"].get("isHeadNode")}
    merged_on = next(line for line in out.splitlines() if "on Ray node" in line).split("on Ray node ")[1].split(":")[0]
    assert merged_on in worker_ids, (merged_on, worker_ids)
    head_files = [p.name for p in head_cache.rglob("*") if p.is_file()]
    assert "tokenizer_config.json" in head_files or "spiece.model" in head_files or "tokenizer.json" in head_files
    assert not [f for f in head_files if f.endswith((".safetensors", ".bin"))], head_files
    # The trials' output stayed off the terminal; each worker's log reached S3 from the isolated node, and
    # the worker fetched the base model into its own cache.
    worker_logs = [k for k in keys if k.startswith("runs/iso/trials/") and k.endswith("/worker.log")]
    assert len(worker_logs) == 2, sorted(k for k in keys if "/trials/" in k)
    fetched = [ln for k in worker_logs for ln in get(k).decode().splitlines() if ln.startswith("Fetched s3://")]
    assert [ln for ln in fetched if "-tokenizer" not in ln], fetched  # the weights, into the worker node's cache
    assert "RayTrainWorker pid=" not in out and "Reporting training result" not in out
