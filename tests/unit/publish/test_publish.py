"""Publishing without a network or models: URIs, manifest, model card, secrets, checksums, and the Hub
path at the `huggingface_hub.HfApi` boundary (a fake that records what a real one would be asked).

The run folders here are small fakes with the layout of docs/run_layout.md; the merge check is injected.
The real tuned run, the real merge check and a real S3 server are in tests/integration/publish/test_publish.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.core.config import RunConfig
from orchestrator.core.errors import UserError
from orchestrator.publish.destination import parse_destination
from orchestrator.publish.manifest import FORMAT, RunRecord, check_manifest, collect_files, content_version, scrub
from orchestrator.publish.pull import pull
from orchestrator.publish.push import publish_from_config, publish_run
from tests.helpers.fakes import FakeHfApi

SECRET = "hf_SeCrEt0123456789abcdef"
PASSED = {"passed": True, "max_abs_logit_diff": 1e-6, "tolerance": 1e-3, "dtype": "float32", "num_inputs": 2}


def passed(run):
    return dict(PASSED)


# ---- a fake run folder and a fake Hub --------------------------------------------------------------


def make_run(root: Path, publish: Optional[Dict[str, Any]] = None, **cfg_extra: Any) -> Path:
    """A finished run folder with small random 'weights' (same bytes for the same root name)."""
    rng = random.Random(root.name)
    run = root / "runs" / "exp"
    files = {
        "best/adapter/adapter_config.json": json.dumps({"r": 8, "peft_type": "LORA"}).encode(),
        "best/adapter/adapter_model.safetensors": rng.randbytes(3000),
        "best/adapter/tokenizer.json": b'{"model": {}}',
        "best/merged/config.json": b'{"model_type": "t5"}',
        "best/merged/model.safetensors": rng.randbytes(9000),
        "best/merged/tokenizer.json": b'{"model": {}}',
        "trials.csv": b"trial_id,eval_loss\nt0,0.5\n",
    }
    for rel, data in files.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(data)
    cfg = {
        "model": {"name_or_path": "google-t5/t5-small"},
        "data": {"train": str(root / "train.jsonl"), "eval": str(root / "eval.jsonl")},
        "search": {
            "metric": "eval_loss",
            "num_samples": 2,
            "space": {"training.learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-3}},
        },
        "output": {"dir": str(root / "runs"), "experiment": "exp"},
        **cfg_extra,
    }
    if publish:
        cfg["publish"] = publish
    (run / "config.json").write_text(json.dumps(RunConfig.model_validate(cfg).to_json()))
    (run / "results.json").write_text(
        json.dumps(
            {
                "experiment": "exp",
                "metric": "eval_loss",
                "mode": "min",
                "best": {
                    "trial_id": "t0",
                    "params": {"training.learning_rate": 1e-4},
                    "step": 20,
                    "checkpoint": "/x",
                    "metrics": {"eval_loss": 0.5, "loss": 0.6, "hostname": "box", "node_ip": "10.0.0.1", "pid": 7},
                },
                "params": {"trainable_params": 18432, "total_params": 216064, "trainable_pct": 8.53},
                "data_fingerprints": {"train": "a" * 64, "eval": "b" * 64},
                "versions": {"transformers": "5.23.0"},
                "merge_check": dict(PASSED),
                "started_at": "2026-01-02T03:04:05+00:00",
                "finished_at": "2026-01-02T03:14:05+00:00",
            }
        )
    )
    return run


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHfApi:
    """huggingface_hub.HfApi replaced by one FakeHfApi for the test (every HfApi() returns it)."""
    import huggingface_hub

    api = FakeHfApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: api)
    return api


@pytest.fixture(autouse=True)
def _stub_merge_check(monkeypatch):
    """Unit tests have no models: the merge check passes unless a test says otherwise."""
    import orchestrator.publish.push as pub

    monkeypatch.setattr(pub, "verify_run_merge", passed)


# ---- URIs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri, scheme, where",
    [
        ("s3://models/summarizer", "s3", ("models", "summarizer")),
        ("s3://models", "s3", ("models", "")),
        ("s3://my.bucket-1/a/b/", "s3", ("my.bucket-1", "a/b")),
        ("hf://my-org/t5-sum", "hf", ("my-org/t5-sum", None)),
        ("hf://my-org/t5-sum@dev", "hf", ("my-org/t5-sum", "dev")),
    ],
)
def test_destinations_that_parse(uri, scheme, where):
    d = parse_destination(uri)
    assert d.scheme == scheme
    assert ((d.bucket, d.prefix) if scheme == "s3" else (d.repo_id, d.revision)) == where


@pytest.mark.parametrize(
    "uri",
    [
        "s3:/bucket/x",
        "s3://",
        "s3://Bad_Bucket/x",
        "s3://b",
        "hf://onlyorg",
        "hf://org/name/extra",
        "ftp://host/x",
        "file://host/x",
        "",
        "s3://bkt/a/../b",
    ],
)
def test_malformed_destinations_are_user_errors(uri):
    with pytest.raises(UserError) as e:
        parse_destination(uri)
    assert "s3://" in str(e.value) or "hf://" in str(e.value) or "'..'" in str(e.value)


# ---- the run folder, manifest, card, secrets ----------------------------------------------------------


def test_run_folder_without_a_best_adapter_is_refused_with_every_problem(tmp_path):
    run = make_run(tmp_path)
    shutil.rmtree(run / "best" / "adapter")
    (run / "best" / "merged" / "model.safetensors").unlink()
    with pytest.raises(UserError) as e:
        RunRecord.load(run, "both")
    msg = str(e.value)
    assert "no adapter" in msg and "no merged model" in msg and "2 problems" in msg
    assert RunRecord.load(make_run(tmp_path / "b"), "adapter").best["trial_id"] == "t0"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a finished tune run folder"):
        RunRecord.load(tmp_path / "empty")


def test_the_manifest_lists_every_file_and_the_provenance(tmp_path, fake_hub):
    run = make_run(tmp_path)
    pub = publish_run(run, "hf://org/exp", dry_run=True)
    m = pub.manifest
    assert m["format"] == FORMAT and m["version"] == pub.version and m["what"] == "both"
    assert m["base_model"] == {"name_or_path": "google-t5/t5-small", "revision": None}
    assert m["task"] == "seq2seq" and m["config"]["model"]["name_or_path"] == "google-t5/t5-small"
    assert m["trained_config"]["training"]["learning_rate"] == 1e-4  # best hyperparameters applied
    assert m["best"]["trial_id"] == "t0" and m["best"]["params"] == {"training.learning_rate": 1e-4}
    assert m["best"]["metrics"] == {"eval_loss": 0.5, "loss": 0.6}  # no host names, pids, local paths
    assert m["metric"] == {"name": "eval_loss", "mode": "min", "value": 0.5}
    assert m["parameters"]["trainable_params"] == 18432
    assert m["data_fingerprints"] == {"train": "a" * 64, "eval": "b" * 64}
    assert m["versions"]["tune"]["transformers"] == "5.23.0" and "huggingface_hub" in m["versions"]["publish"]
    in_git = (Path(__file__).resolve().parents[3] / ".git").exists()
    assert set(m["git"]) == {"commit", "dirty"} and bool(m["git"]["commit"]) == in_git  # None outside a checkout
    assert m["tuned"]["finished_at"].startswith("2026-01-02") and m["published_at"].endswith("Z")
    # Every file published but the manifest itself, with its real size and sha256.
    listed = {f["path"]: f for f in m["files"]}
    assert sorted(listed) == sorted(f["path"] for f in pub.files if f["path"] != "manifest.json")
    for rel in ("adapter/adapter_model.safetensors", "merged/model.safetensors"):
        data = (run / "best" / rel).read_bytes()
        assert listed[rel] == {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert "trials.csv" not in listed and m["total_size"] == sum(f["size"] for f in m["files"])


def test_what_selects_the_parts(tmp_path):
    run = RunRecord.load(make_run(tmp_path), "both")
    assert {f.path.split("/")[0] for f in collect_files(run, "adapter")} == {"adapter"}
    assert {f.path.split("/")[0] for f in collect_files(run, "merged")} == {"merged"}
    both = collect_files(run, "both")
    v = content_version(run, both, "both")
    assert v.startswith("20260102T031405Z-") and v == content_version(run, list(reversed(both)), "both")
    assert v != content_version(run, collect_files(run, "adapter"), "adapter")


def test_no_secret_reaches_the_manifest_the_card_or_the_output(tmp_path, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET + "aws")
    run = make_run(
        tmp_path,
        output={
            "dir": str(tmp_path / "runs"),
            "experiment": "exp",
            "endpoint_url": f"http://AKIDEXAMPLE:{SECRET}aws@minio:9000",
        },
    )
    lines: List[str] = []
    publish_run(run, "hf://org/exp", echo=lines.append)
    published = b"".join(fake_hub.commits[0]["files"].values()).decode("latin-1")
    assert SECRET not in published and SECRET not in "\n".join(lines)
    manifest = json.loads(fake_hub.commits[0]["files"]["manifest.json"])
    assert manifest["config"]["output"]["endpoint_url"] == "http://minio:9000"  # user-info dropped


def test_scrub_removes_secret_keys_user_info_and_env_values():
    out = scrub(
        {
            "hf_token": "abc",
            "aws_secret_access_key": "x",
            "max_new_tokens": 5,
            "n": [f"use {SECRET}"],
            "url": "https://u:p@host/x",
            "api_key": None,
        },
        secrets=[SECRET],
    )
    assert out == {
        "hf_token": "<redacted>",
        "aws_secret_access_key": "<redacted>",
        "max_new_tokens": 5,
        "n": ["use <redacted>"],
        "url": "https://host/x",
        "api_key": None,
    }


def test_model_card_has_metrics_base_model_fingerprints_and_how_to_load(tmp_path, fake_hub):
    publish_run(make_run(tmp_path), "hf://org/exp")
    card = fake_hub.commits[0]["files"]["README.md"].decode()
    assert card.startswith("---\nlibrary_name: peft\nbase_model: google-t5/t5-small\n")
    assert "| eval_loss (selection metric) | 0.5 |" in card
    assert "a" * 64 in card and "b" * 64 in card
    assert 'PeftModel.from_pretrained(base, "org/exp", subfolder="adapter")' in card
    assert 'AutoModelForSeq2SeqLM.from_pretrained("org/exp", subfolder="merged")' in card
    assert "max |logit difference| 1e-06" in card


# ---- the Hub at the HfApi boundary --------------------------------------------------------------------


def test_hub_publish_is_one_commit_with_exactly_the_expected_files_and_the_dry_run_lists_them(tmp_path, fake_hub):
    run = make_run(tmp_path)
    dry = CliRunner().invoke(cli, ["publish", str(run), "--to", "hf://org/exp", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert fake_hub.calls == []  # a dry run talks to nobody
    dry_paths = [ln.split()[0] for ln in dry.output.splitlines() if ln.startswith("  ")]

    res = CliRunner().invoke(cli, ["publish", str(run), "--to", "hf://org/exp"])
    assert res.exit_code == 0, res.output
    assert [c[0] for c in fake_hub.calls] == ["create_repo", "create_commit", "create_tag"]
    assert fake_hub.calls[0][2] == {"private": True, "exist_ok": True}
    (commit,) = fake_hub.commits
    expected = [
        "README.md",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/tokenizer.json",
        "manifest.json",
        "merged/config.json",
        "merged/model.safetensors",
        "merged/tokenizer.json",
    ]
    assert sorted(commit["files"]) == expected
    assert sorted(dry_paths) == expected
    assert [op.path_in_repo for op in commit["ops"]] == dry_paths  # same order, too
    assert "eval_loss=0.5" in commit["message"] and "t0" in commit["message"]
    for f in json.loads(commit["files"]["manifest.json"])["files"]:
        assert hashlib.sha256(commit["files"][f["path"]]).hexdigest() == f["sha256"]
    version = json.loads(commit["files"]["manifest.json"])["version"]
    assert fake_hub.tags == {version: commit["oid"]}
    assert f"as commit {commit['oid']}" in res.output


def test_hub_revision_public_and_stale_files_are_removed_in_the_same_commit(tmp_path, fake_hub):
    run = make_run(tmp_path, publish={"to": "hf://org/exp", "private": False, "revision": "dev"})
    publish_run(run, "hf://org/exp", what="both")
    pub = publish_from_config(run, RunConfig.model_validate(json.loads((run / "config.json").read_text())))
    assert ("create_branch", "org/exp", {"branch": "dev", "exist_ok": True}) in fake_hub.calls
    assert fake_hub.repos["org/exp"]["private"] is False
    publish_run(run, "hf://org/exp", what="adapter", revision="dev")
    last = fake_hub.commits[-1]
    assert not any(p.startswith("merged/") for p in last["files"])  # deleted, not left behind
    assert pub.location == f"hf://org/exp@{fake_hub.commits[1]['oid']}"


def test_hub_pull_round_trip_and_a_tampered_file_is_refused(tmp_path, fake_hub):
    run = make_run(tmp_path)
    pub = publish_run(run, "hf://org/exp")
    got = pull("hf://org/exp", tmp_path / "dl")
    assert got.version == pub.version
    assert sorted(
        p.relative_to(tmp_path / "dl").as_posix() for p in (tmp_path / "dl").rglob("*") if p.is_file()
    ) == sorted(f["path"] for f in pub.files)  # exactly the publication: no .cache left behind
    assert (tmp_path / "dl" / "merged" / "model.safetensors").read_bytes() == (
        run / "best" / "merged" / "model.safetensors"
    ).read_bytes()
    # By version (the tag) too.
    assert pull("hf://org/exp", tmp_path / "dl2", version=pub.version).version == pub.version

    fake_hub.commits[-1]["files"]["adapter/adapter_model.safetensors"] += b"\0"
    res = CliRunner().invoke(cli, ["pull", "hf://org/exp", str(tmp_path / "dl3")])
    assert res.exit_code == 2 and "adapter/adapter_model.safetensors" in res.output and "refusing" in res.output
    assert not (tmp_path / "dl3").exists() and not list(tmp_path.glob(".dl3*"))


def test_hub_errors_are_user_errors_without_a_traceback(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalTokenNotFoundError

    api = FakeHfApi(fail=LocalTokenNotFoundError("Token is required"))
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: api)
    res = CliRunner().invoke(cli, ["publish", str(make_run(tmp_path)), "--to", "hf://org/exp"])
    assert res.exit_code == 2 and "HF_TOKEN" in res.output and "Traceback" not in res.output


def test_a_failed_merge_check_uploads_nothing(tmp_path, fake_hub, monkeypatch):
    import orchestrator.publish.push as pub

    monkeypatch.setattr(
        pub,
        "verify_run_merge",
        lambda run: (_ for _ in ()).throw(
            UserError("merge verification failed: the merged model differs from base + adapter by 0.7")
        ),
    )
    res = CliRunner().invoke(cli, ["publish", str(make_run(tmp_path)), "--to", "hf://org/exp"])
    assert res.exit_code == 2 and "merge verification failed" in res.output
    assert fake_hub.calls == []


def test_publish_from_config_does_nothing_without_a_publish_section(tmp_path):
    run = make_run(tmp_path)
    assert publish_from_config(run, RunConfig.model_validate(json.loads((run / "config.json").read_text()))) is None


def test_the_cli_takes_to_from_the_runs_publish_section(tmp_path, fake_hub):
    run = make_run(tmp_path, publish={"to": "hf://org/from-config", "what": "adapter"})
    res = CliRunner().invoke(cli, ["publish", str(run)])
    assert res.exit_code == 0, res.output
    assert not any(p.startswith("merged/") for p in fake_hub.commits[0]["files"])
    res = CliRunner().invoke(cli, ["publish", str(make_run(tmp_path / "other"))])
    assert res.exit_code == 2 and "--to" in res.output


# ---- checksums and manifests read back ---------------------------------------------------------------


def test_the_s3_checksum_we_expect_is_sha256_or_the_composite_of_the_parts(tmp_path):
    from orchestrator.storage.checksums import s3_checksum

    data = random.Random(1).randbytes(5 * 1024 * 1024 + 17)
    p = tmp_path / "f"
    p.write_bytes(data)
    b64 = lambda d: base64.b64encode(d).decode()  # noqa: E731
    assert s3_checksum(p, len(data), part_size=len(data) + 1) == b64(hashlib.sha256(data).digest())
    part = 1024 * 1024 * 5
    parts = [hashlib.sha256(data[i : i + part]).digest() for i in range(0, len(data), part)]
    assert len(parts) == 2
    assert s3_checksum(p, len(data), part_size=part) == b64(hashlib.sha256(b"".join(parts)).digest())


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", "manifest.json", "a//b", ""])
def test_a_manifest_with_an_unsafe_path_is_refused(path):
    with pytest.raises(UserError, match="unsafe path"):
        check_manifest({"format": FORMAT, "files": [{"path": path, "sha256": "0" * 64, "size": 1}]}, "m")
    with pytest.raises(UserError, match="not a qlora-launch manifest"):
        check_manifest({"files": []}, "m")


def test_pull_refuses_a_non_empty_destination(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("keep me")
    with pytest.raises(UserError, match="not an empty folder"):
        pull("hf://org/exp", tmp_path / "d")
    assert (tmp_path / "d" / "x").read_text() == "keep me"


# ---- the CLI and the import boundary ---------------------------------------------------------------


def test_publish_and_pull_are_commands():
    res = CliRunner().invoke(cli, ["--help"])
    assert "publish" in res.output and "pull" in res.output
    res = CliRunner().invoke(cli, ["publish", "--help"])
    for opt in ("--to", "--what", "--dry-run", "--endpoint-url", "--version", "publish.to"):
        assert opt in res.output


def test_the_s3_client_retries_adaptively_with_backoff(monkeypatch):
    from orchestrator.storage.s3 import MAX_ATTEMPTS, make_client, transfer_config

    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    c = make_client("http://127.0.0.1:9")
    assert c.meta.config.retries == {"mode": "adaptive", "total_max_attempts": MAX_ATTEMPTS}  # first try included
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    assert make_client("http://127.0.0.1:9").meta.config.retries["total_max_attempts"] == 3
    tc = transfer_config()
    assert tc.multipart_chunksize == tc.multipart_threshold == 16 << 20 and tc.max_request_concurrency == 8


def test_the_card_and_the_manifest_carry_the_test_scores_the_lift_and_the_merge_fidelity(
    tmp_path, fake_hub, monkeypatch
):
    import orchestrator.publish.push as pub

    run = make_run(tmp_path)
    res = json.loads((run / "results.json").read_text())
    res["scores"] = {
        "test": {"eval_loss": 2.5, "eval_rougeL": 0.4, "num_examples": 3.0},
        "base_test": {"eval_loss": 4.0, "eval_rougeL": 0.1, "num_examples": 3.0},
        "lift": {"eval_loss": 1.5, "eval_rougeL": 0.3},
    }
    (run / "results.json").write_text(json.dumps(res))
    fid = {"into": "dequantized", "kl_mean": 2e-4, "trained_eval_loss": 2.0, "merged_eval_loss": 2.01}
    fid.update({"metric_drop": 0.01, "max_metric_drop": 0.05, "trained_rougeL": 0.4, "merged_rougeL": 0.4})
    monkeypatch.setattr(pub, "verify_run_merge", lambda run: {**PASSED, "fidelity": {**fid, "passed": True}})
    publish_run(run, "hf://org/exp")
    files = fake_hub.commits[0]["files"]
    card = files["README.md"].decode()
    assert "## Test set (3 held-out examples, never seen by the search)" in card
    assert "| eval_loss | 4 | 2.5 | 1.5 |" in card and "| eval_rougeL | 0.1 | 0.4 | 0.3 |" in card
    assert "KL 0.0002/token" in card and "eval loss 2 -> 2.01 (drop 0.01, max 0.05)" in card
    manifest = json.loads(files["manifest.json"])
    assert manifest["test"] == {
        "merged": res["scores"]["test"],
        "base": res["scores"]["base_test"],
        "lift": res["scores"]["lift"],
    }
    assert manifest["merge_check"]["fidelity"]["kl_mean"] == 2e-4
