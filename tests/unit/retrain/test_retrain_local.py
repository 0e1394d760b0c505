"""A retrain that promotes into a local registry through the real publisher (orchestrator.publish.push
into a local folder). Training and scoring are fakes here (the fake run folder of test_publish); the
real training of examples/retrain_tiny_local.yaml is in tests/integration/retrain/test_retrain_example.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from orchestrator.core.config_load import validate_dict
from orchestrator.publish.pull import pull
from orchestrator.retrain.gate import retrain
from orchestrator.retrain.outcome import SKIPPED
from orchestrator.retrain.parts import TrainResult
from orchestrator.retrain.registry import PROMOTED, Registry
from tests.unit.publish.test_publish import make_run, passed


@pytest.fixture(autouse=True)
def _stub_merge_check(monkeypatch):
    import orchestrator.publish.push as pub

    monkeypatch.setattr(pub, "verify_run_merge", passed)


def test_the_gate_promotes_into_a_local_registry_then_finds_no_new_data(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"input": "a b", "output": "a"}\n{"input": "c d", "output": "c"}\n')
    (tmp_path / "test.jsonl").write_text('{"input": "e f", "output": "e"}\n')
    folder = tmp_path / "published"
    cfg = validate_dict(
        {
            "model": {"name_or_path": "t5-small"},
            "data": {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl")},
            "output": {"dir": str(tmp_path / "runs"), "experiment": "line"},
            "tracking": {"backend": "none"},
            "publish": {"to": f"file://{folder}"},
            "retrain": {"name": "line"},
        }
    )
    trained, scored = [], []

    def trainer(chal_cfg, params):
        trained.append(params)
        return TrainResult(str(make_run(tmp_path / f"chal{len(trained)}")), hparams=params or {}, merge_ok=True)

    def evaluator(model, cfg, data):
        scored.append(model)
        return {"eval_loss": 0.5}

    out = retrain(cfg, trainer=trainer, evaluator=evaluator, echo=lambda s: None)
    assert out.decision == PROMOTED
    champion = json.loads((folder / "line" / "champion.json").read_text())
    latest = json.loads((folder / "latest.json").read_text())
    assert champion["version"] == latest["version"] and champion["location"] == str(folder / latest["version"])
    assert Registry.open(str(folder)).get_champion("line")["version"] == latest["version"]
    got = pull(champion["location"], tmp_path / "pulled")
    for f in got.manifest["files"]:
        assert hashlib.sha256((tmp_path / "pulled" / f["path"]).read_bytes()).hexdigest() == f["sha256"]

    again = retrain(cfg, trainer=trainer, evaluator=evaluator, echo=lambda s: None)
    assert again.decision == SKIPPED and again.reason.startswith("no new data")
    assert len(trained) == 1 and len(scored) == 1
    assert not Path(tmp_path / "pulled" / "latest.json").exists()
