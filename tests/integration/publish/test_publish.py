"""Publishing a really tuned run (the shared 4-trial tiny-T5 search) to a real S3 HTTP server (moto's
server mode on loopback, boto3 over HTTP), pulling it back, and the ways it must fail.

The merge check is the real one (jobs.merge.verify_merge on the run's eval data). The fault test puts a
TCP proxy between boto3 and a private moto server: stopping the proxy is what a client sees when the
server goes down (open connections reset, new ones refused), and starting it again on the same port
brings the "server" back with its objects, which a restarted moto (in-memory only) would have lost.
The Hub is reached through a fake `HfApi` (no hub here; see tests/unit/publish/test_publish.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from pathlib import Path
from typing import Dict, List

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.core.errors import UserError
from orchestrator.publish.pull import pull
from orchestrator.publish.push import publish_from_config, publish_run
from orchestrator.storage.s3 import make_client
from tests.conftest import copy_run, merge_base_of
from tests.helpers.fakes import FakeHfApi, TcpProxy
from tests.helpers.s3_server import s3_bucket, s3_server, start_s3_server, stop_s3_server  # noqa: F401

pytestmark = pytest.mark.integration
SECRET = "hf_SeCrEt0123456789abcdef"


def client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


def new_bucket(endpoint: str) -> str:
    name = f"pub-{uuid.uuid4().hex[:12]}"
    client(endpoint).create_bucket(Bucket=name)
    return name


def objects(endpoint: str, bucket: str, prefix: str = "") -> Dict[str, bytes]:
    c = client(endpoint)
    out = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = c.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def latest(endpoint: str, bucket: str, prefix: str):
    raw = objects(endpoint, bucket, f"{prefix}/latest.json").get(f"{prefix}/latest.json")
    return json.loads(raw)["version"] if raw else None


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_files(run: Path, what: str = "both") -> Dict[str, str]:
    out = {}
    for part in ("adapter", "merged") if what == "both" else (what,):
        base = run / "best" / part
        out.update({f"{part}/{p.relative_to(base).as_posix()}": sha(p) for p in base.rglob("*") if p.is_file()})
    return out


# ---- one publication of the tuned run, shared by the round-trip tests ----------------------------------


@pytest.fixture(scope="module")
def published(tuned_t5_run, s3_server):
    """`qlora-launch publish RUN --to s3://…` (CLI, real merge check) with credentials in the environment
    that must not leak anywhere."""
    bucket = new_bucket(s3_server)
    uri = f"s3://{bucket}/models/t5"
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_TOKEN", SECRET)
    mp.setenv("AWS_SESSION_TOKEN", SECRET + "aws")  # sent as a header, never stored
    try:
        res = CliRunner().invoke(cli, ["publish", str(tuned_t5_run), "--to", uri, "--endpoint-url", s3_server])
    finally:
        mp.undo()
    assert res.exit_code == 0, res.output
    return {"bucket": bucket, "uri": uri, "output": res.output, "endpoint": s3_server}


def test_publish_to_s3_then_pull_gives_back_the_same_verified_files(published, tuned_t5_run, tmp_path):
    ep, bucket = published["endpoint"], published["bucket"]
    stored = objects(ep, bucket)
    version = latest(ep, bucket, "models/t5")
    assert version and "passed: max |logit diff|" in published["output"]
    vp = f"models/t5/{version}/"
    expected = run_files(tuned_t5_run)
    assert sorted(stored) == sorted(
        [f"{vp}{p}" for p in expected] + [f"{vp}README.md", f"{vp}manifest.json", "models/t5/latest.json"]
    )
    manifest = json.loads(stored[f"{vp}manifest.json"])
    assert {f["path"]: f["sha256"] for f in manifest["files"] if f["path"] != "README.md"} == expected
    assert manifest["merge_check"]["passed"] and manifest["merge_check"]["inputs_from"] == "eval data"
    assert manifest["best"]["trial_id"] == json.loads((tuned_t5_run / "results.json").read_text())["best"]["trial_id"]
    pointer = json.loads(stored["models/t5/latest.json"])
    assert pointer["manifest_sha256"] == hashlib.sha256(stored[f"{vp}manifest.json"]).hexdigest()
    # What the server stored has the SHA-256 checksum of the local bytes.
    c = client(ep)
    for rel, digest in expected.items():
        head = c.head_object(Bucket=bucket, Key=vp + rel, ChecksumMode="ENABLED")
        assert base64.b64decode(head["ChecksumSHA256"].split("-")[0]).hex() == digest, rel
    # No credential in any object or in the output.
    assert not any(SECRET in blob.decode("latin-1") for blob in stored.values())
    assert SECRET not in published["output"]

    dest = tmp_path / "model"
    res = CliRunner().invoke(cli, ["pull", published["uri"], str(dest), "--endpoint-url", ep])
    assert res.exit_code == 0, res.output
    assert {
        p.relative_to(dest).as_posix(): sha(p)
        for p in dest.rglob("*")
        if p.is_file()
        if p.parent.name in ("adapter", "merged")
    } == expected
    assert (dest / "manifest.json").read_bytes() == stored[f"{vp}manifest.json"]
    # The versioned location (what publish_run returns) pulls the same version.
    got = pull(f"{published['uri']}/{version}", tmp_path / "again", endpoint_url=ep)
    assert got.version == version and sorted(got.files) == sorted(f["path"] for f in manifest["files"])


def test_the_pulled_models_give_the_same_logits_as_before_publishing(published, tuned_t5_run, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    dest = tmp_path / "model"
    pull(published["uri"], dest, endpoint_url=published["endpoint"])
    cfg = json.loads((tuned_t5_run / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(dest / "merged")
    rows = [json.loads(line) for line in Path(cfg["data"]["eval"]).read_text().splitlines()[:3]]
    enc = tok([r[cfg["data"]["input_column"]] for r in rows], return_tensors="pt", padding=True)
    labels = tok(text_target=[r[cfg["data"]["target_column"]] for r in rows], return_tensors="pt", padding=True)[
        "input_ids"
    ]

    def logits(model):
        with torch.no_grad():
            return model.eval()(**enc, labels=labels).logits

    merged_before = logits(AutoModelForSeq2SeqLM.from_pretrained(tuned_t5_run / "best" / "merged"))
    merged_after = logits(AutoModelForSeq2SeqLM.from_pretrained(dest / "merged"))  # plain transformers
    adapter_before = logits(PeftModel.from_pretrained(merge_base_of(tuned_t5_run), tuned_t5_run / "best" / "adapter"))
    adapter_after = logits(PeftModel.from_pretrained(merge_base_of(tuned_t5_run), dest / "adapter"))
    assert torch.equal(merged_before, merged_after)
    assert torch.equal(adapter_before, adapter_after)
    assert (merged_after - adapter_after).abs().max().item() <= 1e-3  # the merge is base + adapter


def test_a_tampered_file_is_refused_on_pull_and_dest_is_not_written(published, tmp_path):
    ep, bucket = published["endpoint"], published["bucket"]
    c = client(ep)
    version = latest(ep, bucket, "models/t5")
    # A copy of the publication under another prefix, with one file changed after publishing.
    for key in objects(ep, bucket, "models/t5/"):
        c.copy_object(
            Bucket=bucket, Key=key.replace("models/t5/", "tampered/", 1), CopySource={"Bucket": bucket, "Key": key}
        )
    key = f"tampered/{version}/adapter/adapter_model.safetensors"
    body = bytearray(c.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[-1] ^= 0xFF
    c.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    dest = tmp_path / "model"
    res = CliRunner().invoke(cli, ["pull", f"s3://{bucket}/tampered", str(dest), "--endpoint-url", ep])
    assert res.exit_code == 2, res.output
    assert "adapter/adapter_model.safetensors" in res.output and "refusing" in res.output
    assert "Traceback" not in res.output
    assert not dest.exists() and not list(tmp_path.glob(".model.pull-*"))


# ---- the fault test: the server goes away mid-publication -------------------------------------------------


@pytest.fixture
def flaky_s3(s3_server):
    """A private moto server (the shared one stays untouched) behind a TcpProxy; yields (proxy, real endpoint)."""
    proc, real = start_s3_server()
    proxy = TcpProxy(real).start()
    try:
        yield proxy, real
    finally:
        proxy.stop()
        stop_s3_server(proc)


def counting_client(endpoint: str, counts: Dict[str, int]):
    c = make_client(endpoint)

    def count(model, **kw):
        counts[model.name] = counts.get(model.name, 0) + 1

    for op in ("PutObject", "UploadPart", "CreateMultipartUpload"):
        c.meta.events.register(f"before-call.s3.{op}", count)
    return c


def test_server_lost_mid_upload_keeps_latest_and_a_rerun_resumes(tuned_t5_run, flaky_s3, monkeypatch):
    from orchestrator.core.config import RunConfig

    proxy, real = flaky_s3
    bucket = new_bucket(real)
    uri = f"s3://{bucket}/models/t5"
    # Version A: the adapter alone, through the tune-end hook (publish: section of the config).
    cfg = RunConfig.model_validate(
        {
            **json.loads((tuned_t5_run / "config.json").read_text()),
            "publish": {"to": uri, "what": "adapter", "endpoint_url": proxy.endpoint},
        }
    )
    a = publish_from_config(tuned_t5_run, cfg)
    assert a.location == f"{uri}/{a.version}" and latest(real, bucket, "models/t5") == a.version

    # Version B (adapter + merged): the server goes away after the 3rd file; one transfer at a time so
    # "after the 3rd" is exact. Few retries so the failure comes quickly.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    made_it: List[str] = []

    def echo(line: str = "", **kw) -> None:
        if line.strip().startswith("uploaded"):
            made_it.append(line.split()[1])
            if len(made_it) == 3:
                proxy.stop()

    with pytest.raises(UserError, match="lost the connection to the S3 endpoint"):
        publish_run(tuned_t5_run, uri, what="both", endpoint_url=proxy.endpoint, echo=echo, concurrency=1)
    assert len(made_it) == 3
    assert latest(real, bucket, "models/t5") == a.version  # still the previous version
    partial = objects(real, bucket, "models/t5/")
    b_version = {k.split("/")[2] for k in partial} - {a.version, "latest.json"}
    (b_version,) = b_version
    assert f"models/t5/{b_version}/manifest.json" not in partial  # incomplete: no manifest
    assert sorted(k.split("/", 3)[3] for k in partial if k.split("/")[2] == b_version) == sorted(made_it)

    # The server is back (same port, same objects); dropped connections and throttling on the way are
    # retried with backoff.
    monkeypatch.delenv("AWS_MAX_ATTEMPTS")
    proxy.start()
    proxy.drop(2)
    proxy.throttle(2)
    counts: Dict[str, int] = {}
    b = publish_run(
        tuned_t5_run, uri, what="both", endpoint_url=proxy.endpoint, s3_client=counting_client(proxy.endpoint, counts)
    )
    assert b.version == b_version and proxy.dropped == 2 and proxy.throttled == 2
    assert sorted(b.skipped) == sorted(made_it)  # not uploaded again
    assert len(b.uploaded) == len(run_files(tuned_t5_run)) + 2 - 3  # + README.md + manifest.json - made it
    assert counts == {"PutObject": len(b.uploaded) + 1}  # each missing file once, then latest.json
    assert latest(real, bucket, "models/t5") == b.version
    stored = objects(real, bucket, f"models/t5/{b.version}/")
    manifest = json.loads(stored[f"models/t5/{b.version}/manifest.json"])
    for f in manifest["files"]:
        assert hashlib.sha256(stored[f"models/t5/{b.version}/{f['path']}"]).hexdigest() == f["sha256"]

    # Publishing a complete version again only moves latest.json back to it; a version name that is
    # taken by different files is refused before anything is written.
    counts = {}
    again = publish_run(
        tuned_t5_run,
        uri,
        what="adapter",
        endpoint_url=proxy.endpoint,
        s3_client=counting_client(proxy.endpoint, counts),
    )
    assert again.version == a.version and again.uploaded == [] and counts == {"PutObject": 1}
    assert latest(real, bucket, "models/t5") == a.version
    with pytest.raises(UserError, match="already exists .* with different files"):
        publish_run(tuned_t5_run, uri, what="both", version=a.version, endpoint_url=proxy.endpoint)
    assert latest(real, bucket, "models/t5") == a.version


# ---- bad input: exit 2, a clear message, nothing marked latest --------------------------------------------


def publish_cli(*args: str):
    return CliRunner().invoke(cli, ["publish", *args])


def assert_refused(res, *words: str) -> None:
    assert res.exit_code == 2, res.output
    for w in words:
        assert w in res.output, res.output
    assert "Traceback" not in res.output


def test_malformed_uri_and_missing_bucket(tuned_t5_run, s3_server):
    assert_refused(publish_cli(str(tuned_t5_run), "--to", "s3:/models/t5"), "s3://bucket/prefix")
    assert_refused(publish_cli(str(tuned_t5_run), "--to", "hf://just-a-name"), "hf://org/name")
    assert_refused(
        publish_cli(str(tuned_t5_run), "--to", "s3://no-such-bucket-qlora/x", "--endpoint-url", s3_server),
        "bucket 'no-such-bucket-qlora' does not exist",
    )
    assert_refused(CliRunner().invoke(cli, ["pull", "s3://Bad_Bucket/x", "/tmp/never-written"]), "s3://bucket/prefix")


def test_missing_credentials(tuned_t5_run, s3_bucket, monkeypatch, tmp_path):
    for k in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    res = publish_cli(str(tuned_t5_run), "--to", f"s3://{s3_bucket.name}/m", "--endpoint-url", s3_bucket.endpoint)
    assert_refused(res, "no AWS credentials", "AWS_ACCESS_KEY_ID")
    monkeypatch.undo()
    assert objects(s3_bucket.endpoint, s3_bucket.name) == {}


def test_access_denied_marks_nothing_latest(tuned_t5_run, s3_bucket):
    c = s3_bucket.client()
    c.put_bucket_policy(
        Bucket=s3_bucket.name,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:PutObject",
                        "Resource": f"arn:aws:s3:::{s3_bucket.name}/*",
                    }
                ],
            }
        ),
    )
    res = publish_cli(str(tuned_t5_run), "--to", f"s3://{s3_bucket.name}/m", "--endpoint-url", s3_bucket.endpoint)
    assert_refused(res, "access denied", "bucket policy")
    assert objects(s3_bucket.endpoint, s3_bucket.name) == {}


def test_run_folder_without_a_best_adapter(tuned_t5_run, s3_bucket, tmp_path):
    import shutil

    run = copy_run(tuned_t5_run, tmp_path / "run")
    shutil.rmtree(run / "best" / "adapter")
    res = publish_cli(str(run), "--to", f"s3://{s3_bucket.name}/m", "--endpoint-url", s3_bucket.endpoint)
    assert_refused(res, "no best adapter")
    assert objects(s3_bucket.endpoint, s3_bucket.name) == {}


def test_a_merged_model_that_is_not_base_plus_adapter_is_not_published(tuned_t5_run, s3_bucket, tmp_path):
    from safetensors.torch import load_file, save_file

    run = copy_run(tuned_t5_run, tmp_path / "run")
    weights = run / "best" / "merged" / "model.safetensors"
    tensors = load_file(weights)
    name = next(k for k in tensors if k.endswith("q.weight"))  # a weight the LoRA adapter changed
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, weights, metadata={"format": "pt"})
    res = publish_cli(str(run), "--to", f"s3://{s3_bucket.name}/m", "--endpoint-url", s3_bucket.endpoint)
    assert_refused(res, "merge verification failed", "nothing was uploaded")
    assert objects(s3_bucket.endpoint, s3_bucket.name) == {}


def test_a_merge_that_loses_quality_is_refused_with_its_figures(tuned_t5_run, s3_bucket, tmp_path):
    """A merged model damaged just enough to stay within a (loosened) logit tolerance of base + adapter still
    loses quality against the trained 4-bit model: publish refuses it on merge.max_metric_drop alone."""
    import torch
    from safetensors.torch import load_file, save_file

    run = copy_run(tuned_t5_run, tmp_path / "run")
    cfg = json.loads((run / "config.json").read_text())
    cfg["merge"]["atol"] = 1e6  # the logit check lets anything through: only the fidelity gate is left
    (run / "config.json").write_text(json.dumps(cfg))
    weights = run / "best" / "merged" / "model.safetensors"
    tensors = load_file(weights)
    gen = torch.Generator().manual_seed(0)
    for k in tensors:
        if k.endswith(("q.weight", "v.weight", "o.weight")):
            tensors[k] = tensors[k] + torch.randn(tensors[k].shape, generator=gen) * 2.0
    save_file(tensors, weights, metadata={"format": "pt"})
    res = publish_cli(str(run), "--to", f"s3://{s3_bucket.name}/m", "--endpoint-url", s3_bucket.endpoint)
    assert_refused(res, "merge fidelity", "merge.max_metric_drop 0.05", "KL", "eval loss", "nothing was uploaded")
    assert "merge verification failed" not in res.output
    assert objects(s3_bucket.endpoint, s3_bucket.name) == {}


# ---- the Hub, at the HfApi boundary, with the tuned run ---------------------------------------------------


def test_hub_one_commit_of_the_tuned_run_and_the_dry_run_lists_the_same_files(tuned_t5_run, monkeypatch, tmp_path):
    import huggingface_hub

    api = FakeHfApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: api)
    dry = publish_cli(str(tuned_t5_run), "--to", "hf://my-org/t5-summarizer", "--dry-run")
    assert dry.exit_code == 0 and api.calls == []
    dry_paths = [ln.split()[0] for ln in dry.output.splitlines() if ln.startswith("  ")]
    res = publish_cli(str(tuned_t5_run), "--to", "hf://my-org/t5-summarizer")
    assert res.exit_code == 0, res.output
    (commit,) = api.commits
    expected = sorted(list(run_files(tuned_t5_run)) + ["README.md", "manifest.json"])
    assert sorted(commit["files"]) == expected and sorted(dry_paths) == expected
    results = json.loads((tuned_t5_run / "results.json").read_text())
    assert f"{results['metric']}=" in commit["message"]
    card = commit["files"]["README.md"].decode()
    assert results["data_fingerprints"]["train"] in card and 'subfolder="merged"' in card
    got = pull("hf://my-org/t5-summarizer", tmp_path / "model")
    dest = tmp_path / "model"
    assert run_files(tuned_t5_run) == {
        p.relative_to(dest).as_posix(): sha(p)
        for p in dest.rglob("*")
        if p.is_file() and p.parent.name in ("adapter", "merged")
    }
    assert got.version == json.loads(commit["files"]["manifest.json"])["version"]
