"""`output.dir: s3://…` against a real S3 server (moto) on loopback.

Ray Tune and Ray Train keep their state and every checkpoint on S3 (through a pyarrow S3 filesystem
with `output.endpoint_url`), the run folder is uploaded beside them, a run whose local folder is lost
resumes from S3 alone, and no credential ends up in any file, object or log line.

The CLI runs as a subprocess so that its own in-process Ray starts with this test's AWS environment
(Ray's workers inherit the environment of the process that starts Ray).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Dict

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from tests.conftest import write_config
from tests.helpers.s3_server import free_port, s3_bucket, s3_server  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
KEY_ID = "AKIAQLORATEST" + uuid.uuid4().hex[:7].upper()
SECRET = "qlora-secret-" + uuid.uuid4().hex


def _env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(
        AWS_ACCESS_KEY_ID=KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION="us-east-1",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    return env


def _qlora(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _objects(bucket) -> Dict[str, bytes]:
    c = bucket.client()
    out = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket.name):
        for o in page.get("Contents", []):
            out[o["Key"]] = c.get_object(Bucket=bucket.name, Key=o["Key"])["Body"].read()
    return out


def _config(
    tmp_path: Path, tiny_t5: Path, bucket, experiment: str = "s3run", max_steps: int = 4, eval_steps: int = 2
) -> Path:
    return write_config(
        tmp_path / f"{experiment}.yaml",
        tiny_t5,
        Path("unused"),
        output={"dir": f"s3://{bucket.name}/runs", "endpoint_url": bucket.endpoint, "experiment": experiment},
        training={"max_steps": max_steps, "eval_steps": eval_steps},
        tracking={"wandb": False},
    )


def test_train_keeps_its_state_on_s3_and_resumes_from_there(s3_bucket, tiny_t5, tmp_path):
    cfg = _config(tmp_path, tiny_t5, s3_bucket)
    work = tmp_path / "work"
    work.mkdir()
    r = _qlora("train", str(cfg), "--cpus", "2", cwd=work)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert f"On S3:   s3://{s3_bucket.name}/runs/s3run/" in r.stdout

    objs = _objects(s3_bucket)
    prefix = "runs/s3run/"
    ray_keys = [k for k in objs if k.startswith(prefix + "ray/")]
    # The Train run's state (its reports, no Tune experiment: `train` is a bare Train run) and its
    # checkpoints are on S3, not on the driver's disk.
    assert any(k.startswith(prefix + "ray/train-") and k.endswith("/reports.jsonl") for k in ray_keys), ray_keys
    assert not any(k.startswith(prefix + "ray/tune/") for k in ray_keys), ray_keys
    ckpts = sorted(k for k in ray_keys if k.endswith("/checkpoint/adapter_model.safetensors"))
    assert ckpts, ray_keys
    staged = work / "runs" / "s3run"
    assert not (staged / "ray").exists()
    states = [json.loads(objs[k.replace("adapter_model.safetensors", "trainer_state.json")]) for k in ckpts]
    assert max(s["global_step"] for s in states) == 4

    # The run folder is on S3 too, byte for byte.
    local = {p.relative_to(staged).as_posix(): p for p in staged.rglob("*") if p.is_file()}
    for rel in (
        "results.json",
        "trials.csv",
        "best/adapter/adapter_model.safetensors",
        "best/merge_check.json",
        "report/index.html",
    ):
        assert rel in local, sorted(local)
    # The merged model goes from the merge task to S3, never through the driver's staging folder.
    assert prefix + "best/merged/model.safetensors" in objs and not (staged / "best" / "merged").exists()
    for rel, p in local.items():
        assert hashlib.sha256(objs[prefix + rel]).hexdigest() == hashlib.sha256(p.read_bytes()).hexdigest(), rel
    results = json.loads(objs[prefix + "results.json"])
    assert results["paths"]["storage"] == f"s3://{s3_bucket.name}/runs/s3run/ray"
    assert results["merge_check"]["passed"] and results["best"]["step"] == 4
    assert results["paths"]["merged"] == f"s3://{s3_bucket.name}/runs/s3run/best/merged"
    assert results["best"]["checkpoint"].startswith(f"{s3_bucket.name}/runs/s3run/ray/train-")

    # No credential in any object, any file the run wrote here, or its output.
    for blob_name, blob in list(objs.items()) + [(str(p), p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()]:
        assert SECRET.encode() not in blob and KEY_ID.encode() not in blob, blob_name
    assert SECRET not in r.stdout + r.stderr and KEY_ID not in r.stdout + r.stderr

    # The same experiment again, without --resume: refused before anything starts.
    again = _qlora("train", str(cfg), "--cpus", "2", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr + again.stdout
    assert "Traceback" not in again.stderr + again.stdout

    # The driver's disk is lost: --resume rebuilds everything from S3 and trains nothing again.
    shutil.rmtree(work)
    work.mkdir()
    r2 = _qlora("train", str(cfg), "--cpus", "2", "--resume", cwd=work)
    assert r2.returncode == 0, (r2.stdout + r2.stderr)[-4000:]
    objs2 = _objects(s3_bucket)
    assert sorted(k for k in objs2 if k.startswith(prefix + "ray/train-")) == sorted(
        k for k in objs if k.startswith(prefix + "ray/train-")
    )  # no new checkpoint: not re-run
    resumed = json.loads((work / "runs" / "s3run" / "results.json").read_text())
    assert resumed["best"]["trial_id"] == results["best"]["trial_id"]
    assert resumed["best"]["metrics"] == results["best"]["metrics"]
    assert (work / "runs" / "s3run" / "trials" / results["best"]["trial_id"] / "log_history.json").exists()


# A killed worker's restart from its checkpoint read back from S3 (a spot node lost): in
# tests/integration/jobs/test_checkpoint_integrity.py, whose S3 run kills its worker (and cuts its newest
# checkpoint short first).


def _refused(tiny_t5, tmp_path, output_dir: str, endpoint: str) -> str:
    """`train` with this S3 output: exit 2, no traceback, nothing written here; returns the output."""
    cfg = write_config(
        tmp_path / "c.yaml",
        tiny_t5,
        Path("unused"),
        tracking={"wandb": False},
        output={"dir": output_dir, "endpoint_url": endpoint},
    )
    r = CliRunner().invoke(cli, ["train", str(cfg)])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert not (tmp_path / "runs").exists()
    return r.output


def test_missing_bucket_is_refused_before_anything_starts(s3_server, tiny_t5, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = _refused(tiny_t5, tmp_path, "s3://no-such-bucket-qlora/runs", s3_server)
    assert "S3 bucket 'no-such-bucket-qlora' does not exist" in out


def test_s3_output_without_credentials(tiny_t5, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    out = _refused(tiny_t5, tmp_path, "s3://some-bucket/runs", f"http://127.0.0.1:{free_port()}")
    assert "no AWS credentials were found" in out


def test_unreachable_s3_endpoint(s3_server, tiny_t5, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = _refused(tiny_t5, tmp_path, "s3://some-bucket/runs", f"http://127.0.0.1:{free_port()}")
    assert "S3 endpoint http://127.0.0.1:" in out


def _changing_run_folder(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    (run_dir / "wandb" / "logs").mkdir(parents=True)
    (run_dir / "results.json").write_text('{"ok": true}')
    (run_dir / "wandb" / "logs" / "debug-internal.log").write_text("started\n")
    return run_dir


def _storage(s3_bucket, name: str):
    from orchestrator.core.ray_storage import RunStorage

    return RunStorage(
        uri=f"s3://{s3_bucket.name}/{name}/ray",
        path=f"{s3_bucket.name}/{name}/ray",
        filesystem=object(),  # remote (upload_run_dir never touches Ray's filesystem)
        run_uri=f"s3://{s3_bucket.name}/{name}",
        endpoint_url=s3_bucket.endpoint,
    )


def test_a_run_folder_file_written_while_it_uploads_is_sent_again(s3_bucket, tmp_path, monkeypatch):
    """A log still being flushed when the run folder goes up (W&B's service after `finish`, under load): it
    reaches S3 with other bytes than were hashed, is hashed again and re-sent, and S3 ends with its last
    bytes; the other files are not sent twice."""
    from orchestrator.storage import s3 as s3mod
    from orchestrator.storage.run_upload import upload_run_dir

    run_dir = _changing_run_folder(tmp_path)
    log = run_dir / "wandb" / "logs" / "debug-internal.log"
    real_transfer = s3mod.Bucket._transfer
    sent: list = []

    def transfer_while_the_log_grows(self, todo, event):
        sent.append(sorted(i.key.rsplit("/", 1)[-1] for i in todo))
        if len(sent) == 1:  # the writer appends after the log was hashed, before its bytes are read
            with log.open("a") as f:
                f.write("flushed after finish\n")
        return real_transfer(self, todo, event)

    monkeypatch.setattr(s3mod.Bucket, "_transfer", transfer_while_the_log_grows)
    keys = upload_run_dir(run_dir, _storage(s3_bucket, "changing"), echo=lambda *a: None)
    assert sent == [["debug-internal.log", "results.json"], ["debug-internal.log"]], sent
    assert "changing/wandb/logs/debug-internal.log" in keys
    body = s3_bucket.client().get_object(Bucket=s3_bucket.name, Key="changing/wandb/logs/debug-internal.log")
    assert body["Body"].read() == b"started\nflushed after finish\n"


def test_a_stored_object_that_differs_from_an_unchanged_file_is_an_error(s3_bucket, tmp_path, monkeypatch):
    """A mismatch that is not a file changing under the upload (the bytes were altered on the way) is not
    retried: exit 2's UserError names the object."""
    from orchestrator.core.errors import UserError
    from orchestrator.storage import s3 as s3mod
    from orchestrator.storage.run_upload import upload_run_dir

    run_dir = _changing_run_folder(tmp_path)
    real_transfer = s3mod.Bucket._transfer
    calls: list = []

    def transfer_altered(self, todo, event):
        calls.append(len(todo))
        real_transfer(self, todo, event)
        for i in todo:  # what the server holds is not what was read
            self.client.put_object(Bucket=self.name, Key=i.key, Body=b"altered", ChecksumAlgorithm="SHA256")

    monkeypatch.setattr(s3mod.Bucket, "_transfer", transfer_altered)
    with pytest.raises(UserError, match="does not match the local file"):
        upload_run_dir(run_dir, _storage(s3_bucket, "altered"), echo=lambda *a: None)
    assert calls == [2]
