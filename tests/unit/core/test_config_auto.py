"""`training.gradient_checkpointing` and `resources.gpus_per_worker`: a value or auto; bad values refused with the
key and the fix (exit 2 from the CLI, nothing written)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.core.config_load import validate_dict
from orchestrator.core.errors import UserError
from tests.conftest import write_config

BASE = {"model": {"name_or_path": "t5-small"}, "data": {"train": "x.jsonl"}}


def test_defaults_and_accepted_values():
    cfg = validate_dict(BASE)
    assert cfg.training.gradient_checkpointing == "auto" and cfg.resources.gpus_per_worker == 0.0
    assert cfg.resources.gpu_memory_gb is None and cfg.resources.gpus == 0.0
    cfg = validate_dict({**BASE, "resources": {"gpus_per_worker": "auto", "gpu_memory_gb": 24}})
    assert cfg.resources.gpus_per_worker == "auto" and cfg.resources.gpus == 1.0
    assert validate_dict({**BASE, "resources": {"gpus_per_worker": "0.5"}}).resources.gpus == 0.5  # from --set
    assert validate_dict({**BASE, "training": {"gradient_checkpointing": False}}).training.checkpointing_on is False


@pytest.mark.parametrize(
    "section,message",
    [
        ({"training": {"gradient_checkpointing": "sometimes"}}, "`training.gradient_checkpointing`: must be true, "),
        ({"resources": {"gpus_per_worker": -1}}, "`resources.gpus_per_worker`: must be a number of GPUs >= 0"),
        ({"resources": {"gpus_per_worker": "many"}}, "or auto (got 'many')"),
        ({"resources": {"gpus_per_worker": "auto"}}, "set resources.gpu_memory_gb (the memory of one GPU in GiB"),
        ({"resources": {"gpu_memory_gb": 0}}, "`resources.gpu_memory_gb`"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(section, message):
    with pytest.raises(UserError) as e:
        validate_dict({**BASE, **section})
    assert message in str(e.value)
    assert ".bool" not in str(e.value) and "literal[" not in str(e.value)  # one line, not one per union member


def test_cli_validate_exits_2_on_auto_gpus_without_gpu_memory(tmp_path, tiny_t5):
    out = tmp_path / "runs"
    cfg = write_config(tmp_path / "c.yaml", tiny_t5, out, resources={"gpus_per_worker": "auto"})
    r = CliRunner().invoke(cli, ["validate", str(cfg)])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "resources.gpu_memory_gb" in r.output and not out.exists()
