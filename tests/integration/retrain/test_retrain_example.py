"""examples/retrain_tiny_local.yaml runs offline, twice, through the real CLI: the first retrain trains a
challenger (one real trial on the tiny 4-bit T5, merged and verified), scores it, publishes it to a local
folder and promotes it; the second finds the data unchanged and stops with "no new data"."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from orchestrator.cli import cli

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "retrain_tiny_local.yaml"


def test_the_retrain_example_promotes_then_finds_no_new_data(tmp_path, tiny_t5, ray_local_2cpu):
    sets = [
        f"model.name_or_path={tiny_t5}",
        f"output.dir={tmp_path / 'runs'}",
        f"publish.to={tmp_path / 'published'}",
        "training.epochs=1",  # 5 steps: enough to show the path, short on 2 CPUs
    ]
    args = ["retrain", str(EXAMPLE)] + [a for s in sets for a in ("--set", s)]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "tiny-summarizer: promoted - no champion yet" in first.output

    folder = tmp_path / "published"
    champion = json.loads((folder / "tiny-summarizer" / "champion.json").read_text())
    latest = json.loads((folder / "latest.json").read_text())
    assert champion["version"] == latest["version"] and champion["metric"] == "eval_loss"
    version = folder / champion["version"]
    assert champion["location"] == str(version)
    assert (version / "manifest.json").is_file() and (version / "merged" / "model.safetensors").is_file()
    assert (version / "adapter" / "adapter_model.safetensors").is_file()

    second = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert "tiny-summarizer: skipped - no new data" in second.output
    assert json.loads((folder / "tiny-summarizer" / "champion.json").read_text()) == champion
    assert len(list((tmp_path / "runs").iterdir())) == 1  # nothing was trained the second time
