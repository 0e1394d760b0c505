"""Publications that overlap on one S3 prefix (moto's server mode): latest.json moves by compare-and-swap,
so exactly one of them moves it, and the other stops with exit code 2, says which version is latest now
and leaves its own complete version files in place. The run folders are small fakes without a merged
model (tests/unit/publish/test_publish.py's make_run), so there is no merge check to run.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.core.errors import UserError
from orchestrator.publish.destination import LatestPointer
from orchestrator.publish.push import publish_run
from tests.helpers.s3_server import s3_bucket, s3_server  # noqa: F401  (pytest fixtures)
from tests.unit.publish.test_publish import make_run

REPO = Path(__file__).resolve().parents[3]
RACE_CLI = Path(__file__).with_name("race_cli.py")
PREFIX = "models/t5"


def fake_run(tmp_path: Path, name: str) -> Path:
    """A finished run folder with a best adapter only (its content, hence its version, differs per name)."""
    run = make_run(tmp_path / name)
    shutil.rmtree(run / "best" / "merged")
    return run


def version_of(run: Path, uri: str) -> str:
    return publish_run(run, uri, what="adapter", dry_run=True).version


def stored(bucket, key: str):
    import boto3

    c = boto3.client("s3", endpoint_url=bucket.endpoint)
    try:
        return c.get_object(Bucket=bucket.name, Key=key)["Body"].read()
    except c.exceptions.NoSuchKey:
        return None


def latest_version(bucket) -> str:
    return json.loads(stored(bucket, f"{PREFIX}/latest.json"))["version"]


def test_two_cli_publishes_started_together_one_moves_latest_the_other_exits_2(s3_bucket, tmp_path):  # noqa: F811
    uri, ep = f"s3://{s3_bucket.name}/{PREFIX}", s3_bucket.endpoint
    base = publish_run(fake_run(tmp_path, "base"), uri, what="adapter", endpoint_url=ep)  # the race is on If-Match
    runs = {name: fake_run(tmp_path, name) for name in ("one", "two")}
    versions = {name: version_of(run, uri) for name, run in runs.items()}
    assert len({base.version, *versions.values()}) == 3
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(RACE_CLI), str(gate), "2", "publish", str(run), "--to", uri]
            + ["--endpoint-url", ep, "--what", "adapter"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, run in runs.items()
    }
    res: Dict[str, tuple] = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=240)
        res[name] = (p.returncode, out, err)
    codes = sorted(r[0] for r in res.values())
    assert codes == [0, 2], res
    (winner,) = [n for n, r in res.items() if r[0] == 0]
    (loser,) = [n for n, r in res.items() if r[0] == 2]
    assert latest_version(s3_bucket) == versions[winner]
    assert f"{uri}/latest.json -> {versions[winner]}" in res[winner][1]
    err = res[loser][2]
    assert "Traceback" not in err and err.startswith("Error: ")
    assert re.search(
        rf"was moved by another publication while this one ran: it now points at version "
        rf"'{versions[winner]}' \(experiment exp, adapter, published [0-9T:+.Z-]+\)",
        err,
    ), err
    assert f"Version '{versions[loser]}' is complete at {uri}/{versions[loser]}/" in err
    assert "latest.json was not changed" in err and "run the same `qlora-launch publish` again" in err
    # The loser's version is complete (manifest written last) though not latest.
    assert json.loads(stored(s3_bucket, f"{PREFIX}/{versions[loser]}/manifest.json"))["version"] == versions[loser]


def race_in_threads(runs, uri, ep, monkeypatch):
    """publish_run of each run in its own thread, all reaching the pointer together: {name: Publication|UserError}."""
    barrier = threading.Barrier(len(runs))
    real_move = LatestPointer.move

    def move(self, *a, **kw):
        barrier.wait(timeout=60)
        return real_move(self, *a, **kw)

    monkeypatch.setattr(LatestPointer, "move", move)
    out, errors = {}, []

    def publish(name, run):
        try:
            out[name] = publish_run(run, uri, what="adapter", endpoint_url=ep)
        except UserError as e:
            out[name] = e
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=publish, args=item) for item in runs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return out


def test_racing_for_the_first_latest_json_one_wins(s3_bucket, tmp_path, monkeypatch):  # noqa: F811
    uri, ep = f"s3://{s3_bucket.name}/{PREFIX}", s3_bucket.endpoint
    runs = {name: fake_run(tmp_path, name) for name in ("one", "two")}  # no latest.json yet: If-None-Match: *
    out = race_in_threads(runs, uri, ep, monkeypatch)
    won = [o for o in out.values() if not isinstance(o, UserError)]
    lost = [o for o in out.values() if isinstance(o, UserError)]
    assert len(won) == 1 and len(lost) == 1, out
    assert latest_version(s3_bucket) == won[0].version
    assert f"now points at version '{won[0].version}'" in str(lost[0])


def test_concurrent_publications_of_the_same_version_both_succeed(s3_bucket, tmp_path, monkeypatch):  # noqa: F811
    uri, ep = f"s3://{s3_bucket.name}/{PREFIX}", s3_bucket.endpoint
    run = fake_run(tmp_path, "same")
    out = race_in_threads({"a": run, "b": run}, uri, ep, monkeypatch)
    assert not any(isinstance(o, UserError) for o in out.values()), out
    assert out["a"].version == out["b"].version == latest_version(s3_bucket)
    # The pointer names the manifest that is stored (one of the two wrote it, the other adopted it).
    pointer = json.loads(stored(s3_bucket, f"{PREFIX}/latest.json"))
    manifest = stored(s3_bucket, f"{PREFIX}/{out['a'].version}/manifest.json")
    assert pointer["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()


def test_a_cli_publish_that_loses_exits_2_and_a_rerun_moves_the_pointer(s3_bucket, tmp_path, monkeypatch):  # noqa: F811
    uri, ep = f"s3://{s3_bucket.name}/{PREFIX}", s3_bucket.endpoint
    mine, theirs = fake_run(tmp_path, "mine"), fake_run(tmp_path, "theirs")
    real_move = LatestPointer.move
    other = []

    def move(self, *a, **kw):
        if not other:  # between this publication's read of latest.json and its move, another one lands
            other.append(None)  # (whose own move comes through here too)
            other[0] = publish_run(theirs, uri, what="adapter", endpoint_url=ep)
        return real_move(self, *a, **kw)

    monkeypatch.setattr(LatestPointer, "move", move)
    args = ["publish", str(mine), "--to", uri, "--endpoint-url", ep, "--what", "adapter"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert f"now points at version '{other[0].version}'" in res.output and "Traceback" not in res.output
    assert latest_version(s3_bucket) == other[0].version
    res = CliRunner().invoke(cli, args)  # as the message says: run it again
    assert res.exit_code == 0, res.output
    assert latest_version(s3_bucket) == version_of(mine, uri)
    assert "already complete there (same files): nothing to upload" in res.output


@pytest.mark.parametrize("gone", [True, False], ids=["deleted", "not-a-pointer"])
def test_a_pointer_deleted_or_garbled_meanwhile_is_not_overwritten(s3_bucket, tmp_path, monkeypatch, gone):  # noqa: F811
    import boto3

    uri, ep = f"s3://{s3_bucket.name}/{PREFIX}", s3_bucket.endpoint
    publish_run(fake_run(tmp_path, "base"), uri, what="adapter", endpoint_url=ep)
    c = boto3.client("s3", endpoint_url=ep)
    real_move = LatestPointer.move

    def move(self, *a, **kw):
        if gone:
            c.delete_object(Bucket=s3_bucket.name, Key=f"{PREFIX}/latest.json")
        else:
            c.put_object(Bucket=s3_bucket.name, Key=f"{PREFIX}/latest.json", Body=b"not json")
        return real_move(self, *a, **kw)

    monkeypatch.setattr(LatestPointer, "move", move)
    with pytest.raises(UserError, match="deleted by someone else" if gone else "something that is not a pointer"):
        publish_run(fake_run(tmp_path, "next"), uri, what="adapter", endpoint_url=ep)
    assert stored(s3_bucket, f"{PREFIX}/latest.json") == (None if gone else b"not json")
