"""A reader of W&B's offline `.wandb` transaction logs, so tests can check the runs the workers and
`after_search` wrote (config, history, summary, artifacts) without syncing them anywhere.

`iter_wandb_records` yields the protobuf `Record`s of one log; `read_wandb_offline_run(s)` turn a run
folder (RUN_DIR/wandb/offline-run-*) into plain dicts. Needs the `wandb` package (its protobufs).
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, List

from orchestrator.observe.tracking import offline_run_dirs

_BLOCK = 32 * 1024
_HEADER = 7  # ":W&B" + magic 0xBEE1 (little endian) + version byte
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_wandb_records(path) -> Iterator[Any]:
    """The protobuf `Record`s of one `.wandb` transaction log (LevelDB log format, CRC-checked).

    A torn record at the end (a run still writing, or killed) ends the iteration quietly.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, pending = _HEADER, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        body = data[pos + 7 : pos + 7 + length]
        if kind == 0 and length == 0:
            pos += left
            continue
        if len(body) < length or zlib.crc32(body, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            return
        pos += 7 + length
        if kind == _FULL:
            chunk = body
        elif kind == _FIRST:
            pending = body
            continue
        elif kind == _MIDDLE:
            pending += body
            continue
        elif kind == _LAST:
            chunk, pending = pending + body, b""
        else:
            return
        rec = pb.Record()
        rec.ParseFromString(chunk)
        yield rec


def read_wandb_offline_run(folder) -> Dict[str, Any]:
    """One offline run folder as a dict: id, project, group, job_type, name, config, history, summary, artifacts."""
    folder = Path(folder)
    logs = sorted(folder.glob("*.wandb"))
    if not logs:
        raise FileNotFoundError(f"no .wandb file in {folder}")
    out: Dict[str, Any] = {
        "folder": str(folder),
        "id": None,
        "project": None,
        "entity": None,
        "group": None,
        "job_type": None,
        "name": None,
        "config": {},
        "history": [],
        "summary": {},
        "artifacts": [],
        "exit_code": None,
        "empty": False,
    }
    for rec in iter_wandb_records(logs[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out.update(
                id=r.run_id,
                project=r.project,
                entity=r.entity or None,
                group=r.run_group or None,
                job_type=r.job_type or None,
                name=r.display_name or None,
            )
            _apply_items(out["config"], r.config.update)
        elif kind == "config":
            _apply_items(out["config"], rec.config.update)
        elif kind == "history":
            row: Dict[str, Any] = {}
            _apply_items(row, rec.history.item)
            out["history"].append(row)
        elif kind == "summary":
            _apply_items(out["summary"], rec.summary.update)
        elif kind == "artifact":
            a = rec.artifact
            entries = [
                {"path": e.path, "digest": e.digest, "size": e.size, "local_path": e.local_path or None}
                for e in a.manifest.contents
            ]
            if not entries and a.manifest.manifest_file_path:
                entries = _manifest_file_entries(a.manifest.manifest_file_path)
            out["artifacts"].append(
                {
                    "name": a.name,
                    "type": a.type,
                    "aliases": list(a.aliases),
                    "digest": a.digest,
                    "metadata": _loads(a.metadata) if a.metadata else {},
                    "files": entries,
                }
            )
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    if out["id"] is None:  # header only: the process died before W&B flushed anything
        out["id"] = folder.name.split("-", 3)[-1] if folder.name.startswith("offline-run-") else folder.name
        out["empty"] = True
    # Config values are stored as {"value": ...} in the transaction log.
    out["config"] = {
        k: (v.get("value") if isinstance(v, dict) and set(v) <= {"value", "desc"} else v)
        for k, v in out["config"].items()
    }
    return out


def read_wandb_offline_runs(run_dir) -> List[Dict[str, Any]]:
    """Every offline W&B run under RUN_DIR/wandb (see read_wandb_offline_run), oldest first."""
    return [read_wandb_offline_run(d) for d in offline_run_dirs(run_dir) if any(d.glob("*.wandb"))]


def _apply_items(target: Dict[str, Any], items) -> None:
    for it in items:
        keys = list(it.nested_key) if it.nested_key else [it.key]
        value = _loads(it.value_json)
        d = target
        for k in keys[:-1]:
            d = d.setdefault(k, {}) if isinstance(d.get(k, {}), dict) else d
        d[keys[-1]] = value


def _loads(s: str):
    try:
        return json.loads(s)
    except ValueError:
        return s


def _manifest_file_entries(path: str) -> List[Dict[str, Any]]:
    import gzip

    try:
        raw = Path(path).read_bytes()
        doc = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    except (OSError, ValueError):
        return []
    contents = doc.get("contents") or {}
    return [
        {"path": p, "digest": e.get("digest"), "size": e.get("size"), "local_path": e.get("local_path")}
        for p, e in contents.items()
    ]
