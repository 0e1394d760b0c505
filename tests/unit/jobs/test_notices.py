"""The warnings a user should read once in the summary: fp16 on a T5, truncated examples and dropped
rows, a checkpoint that could not be written."""

from __future__ import annotations

import json
import os

import pytest

from jobs.checkpoints import MANIFEST, stage_checkpoint, verify
from jobs.data import data_notices
from jobs.precision import choose_precision
from tests.helpers.configs import tiny_t5_config


@pytest.mark.parametrize(
    "setting, model_type, cuda, bf16_ok, want, says",
    [
        ("auto", "t5", False, False, (False, False), None),  # CPU: fp32, nothing to say
        ("auto", "llama", True, True, (True, False), None),
        ("auto", "llama", True, False, (False, True), None),  # fp16 where there is no bf16
        ("auto", "mt5", True, False, (False, False), "trained this mt5 model in fp32"),  # not fp16 on a T5
        ("auto", "t5", True, True, (True, False), None),  # bf16 is safe for T5
        ("fp16", "t5", True, False, (False, True), "fp16 on a t5 model"),  # kept as asked, but said
        ("fp16", "llama", True, False, (False, True), None),
        ("bf16", "t5", True, True, (True, False), None),
        ("no", "t5", True, False, (False, False), None),
    ],
)
def test_precision_never_silently_runs_a_t5_in_fp16(setting, model_type, cuda, bf16_ok, want, says):
    bf16, fp16, notice = choose_precision(setting, model_type, cuda, bf16_ok)
    assert (bf16, fp16) == want
    if says is None:
        assert notice is None
    else:
        assert notice is not None and says in notice and ("bf16" in notice or "'no'" in notice)


def test_truncated_examples_and_dropped_rows_become_notices(tmp_path):
    cfg = tiny_t5_config(tmp_path, tmp_path, data={"max_input_length": 32, "max_target_length": 8})
    assert data_notices({"truncated": {"train": 0, "eval": 0}}, cfg) == []
    (cut, dropped) = data_notices({"truncated": {"train": 3, "eval": 0}, "dropped_bad_rows": {"train": 2}}, cfg)
    assert cut.startswith("Truncated 3 train examples to data.max_input_length 32 / max_target_length 8")
    assert dropped.startswith("Dropped bad rows (data.on_bad_rows: skip): 2 train;")


def test_a_checkpoint_that_cannot_be_written_is_said_once_and_training_goes_on(tmp_path, monkeypatch):
    import jobs.checkpoints

    monkeypatch.setattr(jobs.checkpoints, "_UNWRITABLE", [])
    src = tmp_path / "checkpoint-4"
    src.mkdir()
    (src / "adapter_model.safetensors").write_bytes(os.urandom(64))
    said = []
    staged = stage_checkpoint(str(src), tmp_path / "ok", 4, said.append)
    assert staged is not None and said == []
    assert verify(staged) is None  # whole: its manifest lists the file with its checksum
    assert "adapter_model.safetensors" in json.loads((staged / MANIFEST).read_text())

    (src / "optimizer.pt").symlink_to(tmp_path / "gone")  # a file that cannot be read when it is copied
    assert stage_checkpoint(str(src), tmp_path / "broken", 8, said.append) is None
    (line,) = said
    assert line.startswith("The checkpoint at step 8 could not be written (") and "training went on" in line
    assert not (tmp_path / "broken" / "checkpoint").exists()  # nothing half-copied is reported
    assert stage_checkpoint(str(src), tmp_path / "broken2", 12, said.append) is None and len(said) == 1  # once
    assert stage_checkpoint(None, tmp_path / "none", 9, said.append) is None and len(said) == 1
