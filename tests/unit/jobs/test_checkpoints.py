"""Checkpoint manifests: written last, verified on resume; a checkpoint that is not whole is skipped for the
newest whole previous one (local storage here; S3 in tests/integration/jobs/test_checkpoint_integrity.py)."""

from __future__ import annotations

import json
from pathlib import Path

from jobs.checkpoints import MANIFEST, pick_resumable, previous_checkpoints, verify, write_manifest


def hf_checkpoint(d: Path, step: int) -> Path:
    """A small HF-like checkpoint folder (with a nested file) and its manifest."""
    d.mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 40 + step.to_bytes(4, "little"))
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (d / "sub").mkdir()
    (d / "sub" / "optimizer.pt").write_bytes(b"o" * 1000)
    write_manifest(d)
    return d


def test_manifest_lists_every_file_with_its_sum_and_size(tmp_path):
    d = hf_checkpoint(tmp_path / "c", 5)
    m = json.loads((d / MANIFEST).read_text())
    assert sorted(m) == ["adapter_model.safetensors", "sub/optimizer.pt", "trainer_state.json"]
    assert m["sub/optimizer.pt"]["bytes"] == 1000 and len(m["sub/optimizer.pt"]["sha256"]) == 64
    assert not list(d.glob(".manifest-*"))  # no temp file left behind
    assert verify(d) is None
    write_manifest(d)  # idempotent: the manifest does not list itself
    assert MANIFEST not in json.loads((d / MANIFEST).read_text()) and verify(d) is None


def test_verify_names_what_is_wrong(tmp_path):
    d = hf_checkpoint(tmp_path / "c", 5)
    f = d / "adapter_model.safetensors"
    good = f.read_bytes()

    f.write_bytes(good[:100])  # cut short
    assert verify(d) == f"adapter_model.safetensors has 100 bytes, the manifest says {len(good)}"
    f.write_bytes(good[:-1] + b"\xff")  # same size, other bytes
    assert verify(d) == "adapter_model.safetensors has the wrong sha256"
    f.unlink()
    assert verify(d) == "adapter_model.safetensors is missing"
    f.write_bytes(good)
    assert verify(d) is None
    (d / MANIFEST).write_text('{"adapter_model.safetens')  # the manifest itself cut short
    assert verify(d).startswith(f"unreadable {MANIFEST}")
    (d / MANIFEST).unlink()
    assert verify(d) == f"no {MANIFEST}"


def ray_run(root: Path, steps) -> list:
    """A Train run folder with Ray-named checkpoint_* folders (each holding checkpoint/), oldest first."""
    out = []
    for i, step in enumerate(steps):
        c = root / f"checkpoint_2025-01-01_00-00-{i:02d}.000000"
        hf_checkpoint(c / "checkpoint", step)
        out.append(c)
    (root / "checkpoint_manager_snapshot.json").write_text("{}")
    return out


def test_a_whole_checkpoint_is_taken_as_is(tmp_path):
    c5, c10 = ray_run(tmp_path / "run", [5, 10])
    lines = []
    got = pick_resumable(str(c10), None, tmp_path / "out", log=lines.append)
    assert got is not None and got.step == 10 and got.source == str(c10)
    assert got.dir == tmp_path / "out" / "checkpoint-10" and verify(got.dir) is None
    assert lines == [] and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["checkpoint-10"]


def test_a_cut_short_checkpoint_falls_back_to_the_newest_whole_previous_one(tmp_path):
    c5, c10, c15, c20 = ray_run(tmp_path / "run", [5, 10, 15, 20])
    f = c20 / "checkpoint" / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:50])
    (c15 / "checkpoint" / MANIFEST).unlink()  # e.g. written before the node went away
    lines = []
    got = pick_resumable(str(c20), None, tmp_path / "out", log=lines.append)
    assert got is not None and got.step == 10 and got.source == str(c10)
    assert lines == [
        f"Skipping checkpoint {c20}: adapter_model.safetensors has 50 bytes, the manifest says 10244",
        f"Skipping checkpoint {c15}: no {MANIFEST}",
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["checkpoint-10"]  # no staging left


def test_siblings_are_ordered_by_step_not_name_and_newer_ones_are_ignored(tmp_path):
    run = tmp_path / "run"
    # Named out of step order (a fallback re-ran steps), plus one newer than the given checkpoint.
    a, b, c, d = ray_run(run, [10, 5, 20, 15])
    (run / "not_a_checkpoint").mkdir()
    assert previous_checkpoints(str(d), None) == [(str(a), 10), (str(b), 5)]
    no_state = run / "checkpoint_2024-12-31_00-00-00.000000"
    (no_state / "checkpoint").mkdir(parents=True)  # cut short before trainer_state.json: last, by name
    assert previous_checkpoints(str(d), None)[-1] == (str(no_state), None)


def test_nothing_whole_means_a_fresh_start(tmp_path):
    (c5,) = ray_run(tmp_path / "run", [5])
    (c5 / "checkpoint" / "trainer_state.json").unlink()
    lines = []
    assert pick_resumable(str(c5), None, tmp_path / "out", log=lines.append) is None
    assert lines == [
        f"Skipping checkpoint {c5}: trainer_state.json is missing",
        "No whole checkpoint left to resume from: starting from scratch",
    ]


def test_a_checkpoint_folder_that_is_gone_is_skipped(tmp_path):
    c5, c10 = ray_run(tmp_path / "run", [5, 10])
    import shutil

    shutil.rmtree(c10)
    lines = []
    got = pick_resumable(str(c10), None, tmp_path / "out", log=lines.append)
    assert got is not None and got.step == 5
    assert len(lines) == 1 and lines[0].startswith(f"Skipping checkpoint {c10}: unreadable (FileNotFoundError")
