"""`pull`: download a publication (S3 or the Hub) and check every file against its manifest.

Files are staged beside the destination and moved in only when every sha256 and size matches the
manifest; a mismatch (a tampered or corrupted file) leaves the destination as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from orchestrator.core.errors import UserError
from orchestrator.publish import hub
from orchestrator.publish.destination import LATEST, Destination, parse_destination
from orchestrator.publish.manifest import MANIFEST, check_manifest, check_version

Echo = Callable[..., None]


@dataclass
class Pulled:
    """What `pull` fetched and checked."""

    version: str
    location: str
    dest: Path
    files: List[str]
    manifest: Dict[str, Any]


def pull(
    location: str,
    dest: Any,
    *,
    s3_client: Any = None,
    hf_api: Any = None,
    endpoint_url: Optional[str] = None,
    version: Optional[str] = None,
    echo: Optional[Echo] = None,
) -> Pulled:
    """Download a publication into `dest` and check every file's sha256 and size against its manifest.

    Args:
        location: s3://bucket/prefix (its latest.json), s3://bucket/prefix/<version>, the same as a local
            folder (a path or file:///path), or hf://org/name[@revision].
        dest: a folder that does not exist yet, or an empty one.
        version: a version under the prefix (S3) or a revision/tag (Hub) instead of the latest.

    Raises:
        UserError: bad URI, nothing published there, a checksum that does not match (DEST is then left
            as it was: files are staged beside it and moved in only when all of them check out).
    """
    echo = echo or (lambda *a, **k: None)
    src = parse_destination(location)
    dest = Path(dest)
    if version and src.scheme in ("s3", "local"):
        check_version(version)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"{dest} exists and is not an empty folder; pull into a new folder.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.pull-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        if src.scheme in ("s3", "local"):
            got_version, got_location, manifest, files = _pull_s3(src, staging, endpoint_url, version, s3_client, echo)
        else:
            got_version, got_location, manifest, files = _pull_hub(src, staging, version, hf_api, echo)
        if dest.exists():
            dest.rmdir()
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    echo(f"Pulled version {got_version} from {got_location} into {dest} ({len(files)} files, every sha256 checked).")
    return Pulled(got_version, got_location, dest, files, manifest)


def _verify_files(root: Path, files: List[Dict[str, Any]], where: str) -> None:
    from orchestrator.core.fingerprint import sha256_file

    bad = []
    for f in files:
        p = root / f["path"]
        if not p.is_file():
            bad.append(f"{f['path']}: missing")
            continue
        size, digest = p.stat().st_size, sha256_file(p)
        if size != f["size"] or digest != f["sha256"]:
            bad.append(
                f"{f['path']}: sha256 {digest[:16]}… ({size} B) but the manifest says {f['sha256'][:16]}… "
                f"({f['size']} B)"
            )
    if bad:
        raise UserError(
            *[f"{where}: {b}" for b in bad],
            "refusing the pull: the published files do not match their manifest (tampered or corrupted); "
            "nothing was written to the destination.",
        )


def _pull_s3(
    src: Destination, staging: Path, endpoint_url: Optional[str], version: Optional[str], client: Any, echo: Echo
):
    bucket: Any
    if src.scheme == "local":
        from orchestrator.publish.folder import FolderBucket

        bucket = FolderBucket(src.root)
        if not Path(src.root).is_dir():
            raise UserError(f"nothing is published at {src.root}: no such folder.")
    else:
        from orchestrator.storage.s3 import Bucket

        bucket = Bucket(src.bucket, endpoint_url, client=client)
        bucket.check()
    expected_manifest_sha = None
    if version:
        vprefix = src.key(version)
        raw = bucket.get(f"{vprefix}/{MANIFEST}")
    else:
        raw = bucket.get(src.key(MANIFEST)) if src.prefix or src.scheme == "local" else None  # a version itself
        vprefix = src.prefix
        if raw is None:
            pointer_raw = bucket.get(src.key(LATEST))
            if pointer_raw is None:
                raise UserError(
                    f"nothing is published at {src.uri}: no {LATEST} there (and no {MANIFEST}); "
                    "publish first, or name a version with --version."
                )
            try:
                pointer = json.loads(pointer_raw)
                version = str(pointer["version"])
                expected_manifest_sha = pointer.get("manifest_sha256")
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{bucket.url(src.key(LATEST))} is not a valid pointer; re-publish.") from None
            check_version(version)
            vprefix = src.key(version)
            raw = bucket.get(f"{vprefix}/{MANIFEST}")
    where = src.url(vprefix)
    if raw is None:
        raise UserError(f"{where} has no {MANIFEST}: the version does not exist or its publication did not finish.")
    if expected_manifest_sha and hashlib.sha256(raw).hexdigest() != expected_manifest_sha:
        raise UserError(f"{where}/{MANIFEST} does not match the sha256 that {LATEST} recorded; refusing the pull.")
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise UserError(f"{where}/{MANIFEST} is not valid JSON; refusing the pull.") from None
    files = check_manifest(manifest, f"{where}/{MANIFEST}")
    echo(f"Pulling {len(files)} files of version {manifest.get('version') or version} from {where} ...")
    bucket.download([(f"{vprefix}/{f['path']}", staging / f["path"]) for f in files])
    _verify_files(staging, files, where)
    (staging / MANIFEST).write_bytes(raw)
    return (
        str(manifest.get("version") or version or vprefix.rsplit("/", 1)[-1]),
        where,
        manifest,
        [f["path"] for f in files],
    )


def _pull_hub(src: Destination, staging: Path, version: Optional[str], api: Any, echo: Echo):
    revision = version or src.revision
    where = f"hf://{src.repo_id}" + (f"@{revision}" if revision else "")
    echo(f"Downloading {where} ...")
    hub.download(src.repo_id, revision, staging, api=api)
    mpath = staging / MANIFEST
    if not mpath.is_file():
        raise UserError(f"{where} has no {MANIFEST}: it was not published by qlora-launch; refusing the pull.")
    raw = mpath.read_bytes()
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise UserError(f"{where}/{MANIFEST} is not valid JSON; refusing the pull.") from None
    files = check_manifest(manifest, f"{where}/{MANIFEST}")
    _verify_files(staging, files, where)
    listed = {f["path"] for f in files} | {MANIFEST}
    for p in sorted(staging.rglob("*"), reverse=True):  # keep exactly the published files
        rel = p.relative_to(staging).as_posix()
        if p.is_file() and rel not in listed:
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()
    return str(manifest.get("version") or revision), where, manifest, [f["path"] for f in files]
