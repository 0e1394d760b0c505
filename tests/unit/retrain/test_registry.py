"""The registry (champion pointer + history) and its storage, on a local folder.

tests/integration/retrain/test_registry_s3.py runs the storage tests here against a real S3 server."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # `tests.helpers.s3_server` under plain `pytest` too

from orchestrator.core.errors import UserError  # noqa: E402
from orchestrator.core.s3_uri import parse_s3  # noqa: E402
from orchestrator.retrain.gate import compare  # noqa: E402
from orchestrator.retrain.registry import Registry  # noqa: E402
from orchestrator.storage.kv import LocalStorage, NotFound, open_storage  # noqa: E402


class Clock:
    """A clock that advances one second per call: records get distinct, ordered times."""

    def __init__(self):
        self.t = datetime(2025, 1, 6, 3, 0, tzinfo=timezone.utc)

    def __call__(self):
        self.t += timedelta(seconds=1)
        return self.t


@pytest.fixture
def root(tmp_path):
    """A registry root: a local folder (the S3 root is in tests/integration/retrain/test_registry_s3.py)."""
    return str(tmp_path / "registry"), None


def publish_fake(root, endpoint, version):
    """What a publication leaves: files under <root>/<version>/."""
    loc = f"{root.rstrip('/')}/{version}"
    open_storage(loc, endpoint).write_bytes("adapter/adapter_model.safetensors", b"weights " + version.encode())
    return loc


def promote(reg, root, endpoint, version, score, params=None):
    loc = publish_fake(root, endpoint, version)
    reg.set_champion("summarizer", version=version, location=loc, metric="eval_loss", score=score, hparams=params or {})
    return reg.record_run(
        "summarizer",
        {
            "kind": "retrain",
            "decision": "promoted",
            "version": version,
            "location": loc,
            "metric": "eval_loss",
            "data_fingerprint": f"fp-{version}",
            "challenger": {"score": score, "hparams": params or {}},
        },
    )


def test_storage_roundtrip_and_atomic_local_write(root):
    uri, endpoint = root
    st = open_storage(uri, endpoint)
    st.write_json("a/b.json", {"x": 1})
    st.write_json("a/b.json", {"x": 2})  # replace, not append
    st.write_bytes("c/d/e.bin", b"\x00\x01")
    assert st.read_json("a/b.json") == {"x": 2}
    assert st.read_bytes("c/d/e.bin") == b"\x00\x01"
    assert st.list("") == ["a/b.json", "c/d/e.bin"]
    assert st.list_dirs("") == ["a", "c"]
    assert st.exists("a/b.json") and not st.exists("a/zz.json")
    assert st.has_any("c") and not st.has_any("zz")
    with pytest.raises(NotFound):
        st.read_bytes("missing.json")
    if isinstance(st, LocalStorage):  # no temporary files left beside the object
        assert sorted(p.name for p in (Path(uri) / "a").iterdir()) == ["b.json"]


def test_champion_history_and_rollback(root):
    uri, endpoint = root
    reg = Registry.open(uri, endpoint, clock=Clock())
    assert reg.get_champion("summarizer") is None
    assert reg.history("summarizer") == []

    promote(reg, uri, endpoint, "v1", 1.20, {"training.learning_rate": 1e-4})
    reg.record_run("summarizer", {"kind": "retrain", "decision": "kept", "reason": "worse", "data_fingerprint": "fp-x"})
    promote(reg, uri, endpoint, "v2", 1.00, {"training.learning_rate": 3e-4})

    champ = reg.get_champion("summarizer")
    assert champ["version"] == "v2" and champ["score"] == 1.00 and champ["since"]
    assert [r["decision"] for r in reg.history("summarizer")] == ["promoted", "kept", "promoted"]
    assert reg.last_successful("summarizer")["version"] == "v2"
    assert reg.names() == ["summarizer"]  # version folders beside it are not names

    rec = reg.rollback("summarizer", reason="bad outputs in prod")
    assert rec["kind"] == "rollback" and rec["from_version"] == "v2" and rec["version"] == "v1"
    champ = reg.get_champion("summarizer")
    assert champ["version"] == "v1" and champ["score"] == 1.20
    assert champ["hparams"] == {"training.learning_rate": 1e-4}
    assert reg.history("summarizer")[-1]["reason"] == "bad outputs in prod"

    with pytest.raises(UserError, match="no champion of 'summarizer' before version 'v1'"):
        reg.rollback("summarizer")
    reg.rollback("summarizer", to_version="v2")
    assert reg.get_champion("summarizer")["version"] == "v2"
    with pytest.raises(UserError, match="never promoted; promoted versions: v1, v2"):
        reg.rollback("summarizer", to_version="v9")
    with pytest.raises(UserError, match="already has version 'v2'"):
        reg.rollback("summarizer", to_version="v2")


def test_pointer_at_missing_version_is_a_clear_error(root):
    uri, endpoint = root
    reg = Registry.open(uri, endpoint)
    reg.set_champion("summarizer", version="v7", location=f"{uri}/v7", metric="eval_loss", score=1.0)
    with pytest.raises(UserError) as e:
        reg.get_champion("summarizer")
    msg = str(e.value)
    assert "points at version 'v7'" in msg and "does not exist" in msg and "rollback summarizer --to" in msg
    assert reg.get_champion("summarizer", verify=False)["version"] == "v7"


def test_history_keys_sort_by_time_and_each_record_is_one_object(tmp_path):
    reg = Registry.open(str(tmp_path), clock=Clock())
    ids = [reg.record_run("m", {"kind": "retrain", "decision": "kept", "n": i})["id"] for i in range(5)]
    assert ids == sorted(ids)
    files = sorted((tmp_path / "m" / "history").iterdir())
    assert len(files) == 5 and [json.loads(f.read_text())["n"] for f in files] == list(range(5))


def test_bad_names_and_uris():
    with pytest.raises(UserError, match="use letters, digits"):
        Registry.open("/tmp/x").history("../etc")
    with pytest.raises(UserError, match="not a valid S3 URI"):
        parse_s3("s3://")
    with pytest.raises(UserError, match="cannot hold a registry"):
        open_storage("hf://org/model")


@pytest.mark.parametrize(
    "chal, champ, mode, min_imp, how, ok",
    [
        (0.90, 1.00, "min", 0.0, "absolute", True),
        (1.00, 1.00, "min", 0.0, "absolute", False),  # a tie never promotes
        (0.95, 1.00, "min", 0.1, "absolute", False),
        (0.85, 1.00, "min", 0.1, "absolute", True),
        (0.42, 0.40, "max", 0.0, "absolute", True),
        (0.38, 0.40, "max", 0.0, "absolute", False),
        (0.41, 0.40, "max", 0.05, "relative", False),  # +2.5% < 5%
        (0.43, 0.40, "max", 0.05, "relative", True),  # +7.5%
        (0.90, None, "min", 0.5, "absolute", True),  # no champion yet
        (float("nan"), 1.0, "min", 0.0, "absolute", False),
    ],
)
def test_compare(chal, champ, mode, min_imp, how, ok):
    better, reason = compare(chal, champ, mode=mode, min_improvement=min_imp, improvement=how)
    assert better is ok, reason
