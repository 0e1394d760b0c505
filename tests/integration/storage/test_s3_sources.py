"""s3:// training data and base models, checked before anything starts (real S3 server on loopback).

Bad input stops `tune` with exit 2, one clear message naming the YAML key, and nothing written.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from tests.conftest import SEED, write_config
from tests.helpers.s3_server import s3_bucket, s3_server  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_data(s3_bucket):
    c = s3_bucket.client()
    for split in ("train", "eval"):
        c.upload_file(str(SEED / f"{split}.jsonl"), s3_bucket.name, f"data/{split}.jsonl")
    c.put_object(Bucket=s3_bucket.name, Key="data/wrong_columns.jsonl", Body=b'{"text": "a", "label": "b"}\n' * 3)
    return s3_bucket


def _tune(tmp_path, tiny_t5, bucket, train: str, monkeypatch, *extra: str):
    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path / "cfg.yaml", tiny_t5, tmp_path / "runs", tracking={"wandb": False})
    args = ["tune", str(cfg), "--set", f"data.train={train}", "--set", f"data.eval=s3://{bucket.name}/data/eval.jsonl"]
    args += ["--set", f"data.endpoint_url={bucket.endpoint}", "--set", "data.test=null", *extra]
    return CliRunner().invoke(cli, args)


def _nothing_written(tmp_path):
    return not (tmp_path / "runs").exists()


def test_missing_key(s3_data, tiny_t5, tmp_path, monkeypatch):
    r = _tune(tmp_path, tiny_t5, s3_data, f"s3://{s3_data.name}/data/nope.jsonl", monkeypatch)
    assert r.exit_code == 2, r.output
    assert f"`data.train`: s3://{s3_data.name}/data/nope.jsonl does not exist" in r.output
    assert "Traceback" not in r.output and _nothing_written(tmp_path)


def test_missing_bucket(s3_data, tiny_t5, tmp_path, monkeypatch):
    r = _tune(tmp_path, tiny_t5, s3_data, "s3://no-such-bucket-here/data/train.jsonl", monkeypatch)
    assert r.exit_code == 2 and "bucket 'no-such-bucket-here' does not exist" in r.output, r.output
    assert _nothing_written(tmp_path)


def test_missing_column(s3_data, tiny_t5, tmp_path, monkeypatch):
    r = _tune(tmp_path, tiny_t5, s3_data, f"s3://{s3_data.name}/data/wrong_columns.jsonl", monkeypatch)
    assert r.exit_code == 2, r.output
    assert "column 'article' is not in s3://" in r.output and "it has label, text" in r.output
    assert "Traceback" not in r.output and _nothing_written(tmp_path)


def test_no_credentials(s3_data, tiny_t5, tmp_path, monkeypatch):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    r = _tune(tmp_path, tiny_t5, s3_data, f"s3://{s3_data.name}/data/train.jsonl", monkeypatch)
    assert r.exit_code == 2, r.output
    assert "no AWS credentials for `data.train`" in r.output and "AWS_ACCESS_KEY_ID" in r.output
    assert "Traceback" not in r.output and _nothing_written(tmp_path)


def test_s3_model_without_config(s3_data, tiny_t5, tmp_path, monkeypatch):
    r = _tune(
        tmp_path,
        tiny_t5,
        s3_data,
        f"s3://{s3_data.name}/data/train.jsonl",
        monkeypatch,
        "--set",
        f"model.name_or_path=s3://{s3_data.name}/models/missing",
        "--set",
        f"model.endpoint_url={s3_data.endpoint}",
    )
    assert r.exit_code == 2, r.output
    assert f"`model.name_or_path`: s3://{s3_data.name}/models/missing has no config.json" in r.output
    assert _nothing_written(tmp_path)


def test_good_s3_data_passes_the_checks(s3_data, tiny_t5, tmp_path, monkeypatch):
    r = _tune(tmp_path, tiny_t5, s3_data, f"s3://{s3_data.name}/data/train.jsonl", monkeypatch, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "Dry run: nothing started." in r.output


def test_bad_rows_in_s3_data_stop_the_run_before_any_trial(s3_data, tiny_t5, tmp_path, monkeypatch):
    """The preflight reads only the head of an s3:// file; the whole of it is checked where it is loaded,
    before a trial starts, with the same message as a local file's."""
    import json

    rows = [json.loads(line) for line in (SEED / "train.jsonl").read_text().splitlines() if line.strip()]
    rows[3]["summary"] = None
    rows[6]["article"] = ""
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    s3_data.client().put_object(Bucket=s3_data.name, Key="data/bad.jsonl", Body=body)
    r = _tune(tmp_path, tiny_t5, s3_data, f"s3://{s3_data.name}/data/bad.jsonl", monkeypatch)
    assert r.exit_code == 2, r.output
    assert (
        f"`data.train`: 2 bad row(s) in s3://{s3_data.name}/data/bad.jsonl: row 4 (summary is null), "
        "row 7 (article is empty)" in r.output
    ), r.output
    assert "data.on_bad_rows: skip" in r.output and "Traceback" not in r.output
    assert _nothing_written(tmp_path)
