"""Whole checkpoints only: a sha256 manifest written into every checkpoint, checked before resuming.

A node preempted while a checkpoint is written (spot instances) can leave one cut short in storage. Each
checkpoint carries `manifest.sha256.json` ({relative path: {sha256, bytes}}), written last; on a resume
the checkpoint Ray hands back is verified, and when it is not whole the newest whole sibling
`checkpoint_*` of the same Train run (local or S3, through its pyarrow filesystem) is taken instead.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from orchestrator.core.fingerprint import sha256_file

if TYPE_CHECKING:
    from orchestrator.core.ray_storage import RunStorage
    from orchestrator.core.rundir import RunDir

MANIFEST = "manifest.sha256.json"
HF_SUBDIR = "checkpoint"  # where the report callback puts the HF checkpoint inside a Ray checkpoint


def write_manifest(directory: Path | str) -> Path:
    """Hash every file under `directory` into `directory/manifest.sha256.json`, written last (atomically)."""
    root = Path(directory)
    entries: Dict[str, Dict[str, Any]] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != MANIFEST:
            entries[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=root)
    with os.fdopen(fd, "w") as f:
        json.dump(entries, f, indent=1, sort_keys=True)
    out = root / MANIFEST
    os.replace(tmp, out)
    return out


def verify(directory: Path | str) -> Optional[str]:
    """Why the checkpoint in `directory` is not whole, or None when every file matches its manifest."""
    root = Path(directory)
    try:
        entries = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no {MANIFEST}"
    except (OSError, ValueError) as e:
        return f"unreadable {MANIFEST} ({e.__class__.__name__})"
    if not isinstance(entries, dict) or not entries:
        return f"empty {MANIFEST}"
    for rel, want in sorted(entries.items()):
        p = root / rel
        if not p.is_file():
            return f"{rel} is missing"
        size = p.stat().st_size
        if size != want.get("bytes"):
            return f"{rel} has {size} bytes, the manifest says {want.get('bytes')}"
        if sha256_file(p) != want.get("sha256"):
            return f"{rel} has the wrong sha256"
    return None


# ---- choosing the checkpoint to resume from ------------------------------------------------------


@dataclass
class Resumable:
    """A verified HF checkpoint, copied to a local folder."""

    dir: Path  # the local HF checkpoint folder (output_dir/checkpoint-<step>)
    step: int
    source: str  # the Ray checkpoint's path in its storage


def _fs(filesystem):
    import pyarrow.fs

    return filesystem if filesystem is not None else pyarrow.fs.LocalFileSystem()


def _read_step(fs, ray_ckpt: str, subdir: str) -> Optional[int]:
    """global_step from the checkpoint's trainer_state.json in storage, or None when unreadable."""
    try:
        with fs.open_input_stream(f"{ray_ckpt}/{subdir}/trainer_state.json") as f:
            return int(json.loads(f.read().decode("utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def previous_checkpoints(path: str, filesystem=None, subdir: str = HF_SUBDIR) -> List[Tuple[str, Optional[int]]]:
    """The other `checkpoint_*` folders beside `path` that are not newer than it: [(path, step)], newest
    first by the step in their trainer_state.json, then by name (Ray names them by time)."""
    import pyarrow.fs

    fs = _fs(filesystem)
    path = path.rstrip("/")
    parent, _, name = path.rpartition("/")
    own = _read_step(fs, path, subdir)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(parent, allow_not_found=True))
    out: List[Tuple[str, Optional[int]]] = []
    for info in infos:
        if info.type != pyarrow.fs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        if info.base_name == name:
            continue
        step = _read_step(fs, info.path, subdir)
        if own is not None and step is not None and step > own:
            continue  # not a previous one (never registered, or from before a fallback)
        out.append((info.path, step))
    out.sort(key=lambda c: (c[1] if c[1] is not None else -1, c[0].rpartition("/")[2]), reverse=True)
    return out


def _download(fs, src: str, dst: Path) -> Path:
    import pyarrow.fs

    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        dst.mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(src, str(dst), source_filesystem=fs)
    return dst


def pick_resumable(
    path: str, filesystem, output_dir: Path | str, subdir: str = HF_SUBDIR, log: Callable[[str], None] = print
) -> Optional[Resumable]:
    """The checkpoint to resume from: the Ray checkpoint at `path` (in `filesystem`: pyarrow local or S3,
    None for local) when whole, else the newest whole previous one of the same run, else None.

    The chosen HF checkpoint is copied to `output_dir/checkpoint-<step>`. Prints one line per checkpoint
    skipped, saying why, and one when none is left.
    """
    fs = _fs(filesystem)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)

    def candidates():
        yield path.rstrip("/")
        for p, _ in previous_checkpoints(path, filesystem, subdir):  # listed only if the given one is not whole
            yield p

    for src in candidates():
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=out))
        try:
            local = _download(fs, f"{src}/{subdir}", staging / subdir)
            reason = verify(local)
            if reason is None:
                step = int(json.loads((local / "trainer_state.json").read_text())["global_step"])
                dst = out / f"checkpoint-{step}"
                shutil.rmtree(dst, ignore_errors=True)
                os.replace(local, dst)
                return Resumable(dir=dst, step=step, source=src)
        except (OSError, ValueError, KeyError) as e:
            reason = f"unreadable ({e.__class__.__name__}: {e})"
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log(f"Skipping checkpoint {src}: {reason}")
    log("No whole checkpoint left to resume from: starting from scratch")
    return None


_UNWRITABLE: List[int] = []  # steps whose checkpoint could not be written (the first is told)


def stage_checkpoint(src: Optional[str], tmp: Path | str, step: int, log: Callable[[str], None]) -> Optional[Path]:
    """Copy the HF checkpoint `src` into `tmp/checkpoint` with its manifest, for `ray.train.report`.

    Returns the staged folder, or None when there is nothing to stage or it could not be written (a full
    disk, a permission error): then `log` is told once why, and the trial goes on reporting without a
    checkpoint (a restart resumes from the previous one).
    """
    if src is None:
        return None
    out = Path(tmp, HF_SUBDIR)
    try:
        shutil.copytree(src, out)
        write_manifest(out)  # last: a checkpoint cut short fails it on resume
    except OSError as e:
        shutil.rmtree(out, ignore_errors=True)
        if _UNWRITABLE:  # said once: a full disk fails every save alike
            return None
        _UNWRITABLE.append(step)
        log(
            f"The checkpoint at step {step} could not be written ({type(e).__name__}: {e}); training went on "
            "without it, so a restart would resume from an earlier checkpoint. Check free disk space."
        )
        return None
    return out


def save_log_history(checkpoints: List[Optional[str]], run: "RunDir", trial_id: str, st: "RunStorage") -> None:
    """The trial's HF log_history from its newest checkpoint still in storage (older ones get pruned)."""
    for ckpt in checkpoints:
        if not ckpt:
            continue
        text = st.read_text(f"{ckpt}/checkpoint/trainer_state.json")
        if text is not None:
            run.write_trial_history(trial_id, json.loads(text)["log_history"])
            return
