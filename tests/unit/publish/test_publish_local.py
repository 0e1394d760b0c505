"""Publishing to a local folder: the S3 layout, manifest and latest.json pointer, in a folder.

The run folder is the small fake of test_publish.make_run; the merge check is injected.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.core.errors import UserError
from orchestrator.publish.destination import parse_destination
from orchestrator.publish.pull import pull
from orchestrator.publish.push import publish_run
from tests.unit.publish.test_publish import make_run, passed


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("form", ["plain", "file"])
def test_local_destinations_parse_to_an_absolute_folder(tmp_path, monkeypatch, form):
    monkeypatch.chdir(tmp_path)
    uri = "pub/models" if form == "plain" else f"file://{tmp_path}/pub/models"
    d = parse_destination(uri)
    assert d.scheme == "local" and d.root == str(tmp_path / "pub" / "models")
    assert d.version_uri("v1") == str(tmp_path / "pub" / "models" / "v1")


def test_publish_to_a_folder_and_pull_back_every_checksum_matches(tmp_path):
    run = make_run(tmp_path)
    to = tmp_path / "published"
    pub = publish_run(run, f"file://{to}", verify=passed)
    assert pub.location == str(to / pub.version)
    # The S3 layout: <folder>/<version>/{adapter,merged}/..., README.md, manifest.json; <folder>/latest.json.
    files = sorted(p.relative_to(to).as_posix() for p in to.rglob("*") if p.is_file())
    v = pub.version
    assert f"{v}/manifest.json" in files and f"{v}/README.md" in files and "latest.json" in files
    assert f"{v}/adapter/adapter_model.safetensors" in files and f"{v}/merged/model.safetensors" in files
    assert not [f for f in files if Path(f).name.startswith(".tmp-")]
    manifest = json.loads((to / v / "manifest.json").read_text())
    for f in manifest["files"]:
        assert sha(to / v / f["path"]) == f["sha256"] and (to / v / f["path"]).stat().st_size == f["size"]
    assert sha(to / v / "adapter/adapter_model.safetensors") == sha(run / "best/adapter/adapter_model.safetensors")
    pointer = json.loads((to / "latest.json").read_text())
    assert pointer["version"] == v and pointer["manifest_sha256"] == sha(to / v / "manifest.json")

    got = pull(str(to), tmp_path / "pulled")  # the latest
    assert got.version == v
    for f in manifest["files"]:
        assert sha(tmp_path / "pulled" / f["path"]) == f["sha256"]
    again = pull(str(to / v), tmp_path / "pulled-version")  # a version folder itself
    assert again.version == v and sha(tmp_path / "pulled-version" / "manifest.json") == sha(to / v / "manifest.json")

    # Re-publishing the same run resumes: every file is already there, only the pointer is rewritten.
    second = publish_run(run, str(to), verify=passed)
    assert second.version == v and second.uploaded == []


def test_a_tampered_local_file_is_refused_on_pull_and_nothing_is_written(tmp_path):
    run = make_run(tmp_path)
    to = tmp_path / "published"
    pub = publish_run(run, str(to), verify=passed)
    (to / pub.version / "merged" / "model.safetensors").write_bytes(b"not the model")
    with pytest.raises(UserError, match="do not match their manifest"):
        pull(str(to), tmp_path / "pulled")
    assert not (tmp_path / "pulled").exists()


def test_a_moved_local_pointer_is_not_overwritten(tmp_path):
    """Two publications into one folder: the pointer moves by compare-and-swap, as on S3."""
    from orchestrator.publish.destination import LatestPointer

    to = tmp_path / "published"
    dest = parse_destination(str(to))
    mine, theirs = LatestPointer(dest), LatestPointer(dest)
    assert mine.read() is None and theirs.read() is None
    theirs.move({"version": "b", "manifest_sha256": "2"}, dest.version_uri("b"))
    with pytest.raises(UserError, match="moved by another publication"):
        mine.move({"version": "a", "manifest_sha256": "1"}, dest.version_uri("a"))
    assert json.loads((to / "latest.json").read_text())["version"] == "b"


def test_the_cli_publishes_to_the_folder_of_the_config(tmp_path, monkeypatch):
    import orchestrator.publish.push as push

    monkeypatch.setattr(push, "verify_run_merge", passed)
    run = make_run(tmp_path, publish={"to": str(tmp_path / "pub")})
    res = CliRunner().invoke(cli, ["publish", str(run)])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "pub" / "latest.json").read_text())["version"] in res.output


@pytest.mark.parametrize(
    "to, kept", [("file:///srv/models", "/srv/models"), ("models/line", "models/line"), ("s3://b/p", "s3://b/p")]
)
def test_publish_to_in_the_config_takes_a_folder(to, kept):
    from orchestrator.core.config_load import validate_dict

    cfg = validate_dict({"model": {"name_or_path": "m"}, "data": {"train": "t.jsonl"}, "publish": {"to": to}})
    assert cfg.publish.to == kept


@pytest.mark.parametrize("to", ["file://host/x", "gs://bucket/x", "s3:/bucket/x", ""])
def test_publish_to_that_is_no_folder_names_the_key(to):
    from orchestrator.core.config_load import validate_dict

    with pytest.raises(UserError) as e:
        validate_dict({"model": {"name_or_path": "m"}, "data": {"train": "t.jsonl"}, "publish": {"to": to}})
    assert "`publish.to`" in str(e.value)
