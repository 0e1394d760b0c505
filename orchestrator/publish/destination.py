"""Where a publication goes (`publish --to`) or comes from (`pull LOCATION`): an S3 prefix, a local
folder (a plain path or file://) or a Hub repo.

S3 layout under `s3://bucket/prefix`: `<prefix>/<version>/...` (the files of one version, its
`manifest.json` last) and `<prefix>/latest.json`, the pointer to the newest complete version.

`latest.json` is moved by compare-and-swap (`LatestPointer`): a publication reads it, with its ETag,
before uploading anything, and replaces it with one conditional PUT (`If-Match`, or `If-None-Match: *`
when there was none). When two publications to one prefix overlap, the first to move the pointer wins;
the other stops with a UserError naming the version now in latest.json and leaves the pointer as the
winner set it (its own version files stay complete under `<prefix>/<version>/`; re-running it moves
the pointer). There is no last-writer-wins: an update is applied or refused, never lost silently.

A local folder has the same layout, manifest and pointer (`<folder>/<version>/...`, `<folder>/latest.json`);
its pointer moves by compare-and-swap under a lock file (orchestrator.storage.kv.LocalStorage).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from orchestrator.core.errors import UserError

LATEST = "latest.json"


@dataclass
class Destination:
    """A parsed --to: an S3 prefix, a local folder or a Hub repo."""

    uri: str
    scheme: str  # s3 | local | hf
    root: str = ""  # local: the absolute folder
    bucket: str = ""
    prefix: str = ""
    repo_id: str = ""
    revision: Optional[str] = None

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))

    def url(self, key: str) -> str:
        """Where `key` (under the prefix or folder) is: s3://bucket/key or a local path."""
        if self.scheme == "local":
            return os.path.join(self.root, key) if key else self.root
        return f"s3://{self.bucket}/{key}"

    def version_uri(self, version: str) -> str:
        if self.scheme in ("s3", "local"):
            return self.url(self.key(version))
        return f"hf://{self.repo_id}@{version}"


def parse_destination(uri: str) -> Destination:
    """`s3://bucket/prefix`, a local folder (`path` or `file:///path`), or `hf://org/name[@revision]`.

    Raises:
        UserError: any other shape, with the forms that work.
    """
    from orchestrator.core.s3_uri import parse_s3
    from orchestrator.publish.hub import parse_hf

    uri = (uri or "").strip()
    if uri.startswith("s3://"):
        bucket, prefix = parse_s3(uri)
        if any(p in (".", "..") for p in prefix.split("/")):
            raise UserError(f"'{uri}': '.' and '..' are not allowed in the S3 prefix.")
        return Destination(uri, "s3", bucket=bucket, prefix=prefix)
    if uri.startswith("hf://"):
        repo_id, rev = parse_hf(uri)
        return Destination(uri, "hf", repo_id=repo_id, revision=rev)
    path = local_folder(uri)
    if path is not None:
        return Destination(uri, "local", root=path)
    raise UserError(f"'{uri}' is not a place to publish to; use s3://bucket/prefix, a local folder or hf://org/name.")


def local_folder(uri: str) -> Optional[str]:
    """The absolute folder of a plain path or a file:// URI (None: another scheme, or empty)."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
        if not uri.startswith("/"):
            return None  # file://host/... names another machine
    if not uri or "://" in uri or re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", uri):  # s3:/x: a mistyped scheme
        return None
    return str(Path(uri).expanduser().absolute())


class LatestPointer:
    """`<prefix>/latest.json` of an S3 or local destination, moved only if nobody moved it since `read()`.

    Args:
        dest: an s3:// or local Destination.
        endpoint_url, client: the S3 endpoint and the boto3 client to use.
    """

    def __init__(self, dest: Destination, endpoint_url: Optional[str] = None, client: Any = None):
        from orchestrator.storage.kv import LocalStorage, S3Storage, Storage

        self.store: Storage
        if dest.scheme == "local":
            self.store = LocalStorage(dest.root)
        else:
            self.store = S3Storage(f"s3://{dest.bucket}/{dest.prefix}", endpoint_url, client=client)
        self.url = dest.url(dest.key(LATEST))
        self.token: Optional[str] = None

    def _get(self) -> "tuple[Optional[bytes], Optional[str]]":
        from orchestrator.storage.kv import NotFound

        try:
            return self.store.read_with_token(LATEST)
        except NotFound:
            return None, None

    def read(self) -> Optional[Dict[str, Any]]:
        """The pointer now (None: none yet, or not a pointer); `move` is conditional on this version of it."""
        raw, self.token = self._get()
        return _parse_pointer(raw)

    def move(self, pointer: Dict[str, Any], version_uri: str) -> bool:
        """Point latest.json at `pointer` if it still holds what `read()` saw (one conditional PUT).

        Returns:
            True when this call moved it; False when a concurrent publication of the same version
            already had (nothing to do).

        Raises:
            UserError: someone else moved it in between; it was not changed by this call.
        """
        from orchestrator.storage.kv import Conflict

        data = (json.dumps(pointer, indent=2) + "\n").encode("utf-8")
        try:
            self.token = self.store.write_bytes_if(LATEST, data, self.token)
            return True
        except Conflict:
            raw, self.token = self._get()
        now = _parse_pointer(raw) or {}
        if raw is not None and now.get("version") == pointer["version"]:
            if now.get("manifest_sha256") == pointer.get("manifest_sha256"):
                return False
        ours = f"Version '{pointer['version']}' is complete at {version_uri}/ (manifest.json included), but"
        if raw is None:
            moved = f"{self.url} was deleted by someone else while this publication ran."
        elif not now:
            moved = f"{self.url} was replaced while this publication ran, by something that is not a pointer."
        else:
            labels = {"experiment": "experiment ", "what": "", "published_at": "published "}
            who = ", ".join(f"{label}{now[k]}" for k, label in labels.items() if now.get(k))
            moved = (
                f"{self.url} was moved by another publication while this one ran: it now points at version "
                f"'{now.get('version')}'{f' ({who})' if who else ''}."
            )
        raise UserError(
            f"{moved} {ours} {LATEST} was not changed. To make '{pointer['version']}' the latest, run the same "
            "`qlora-launch publish` again (its files are skipped; only the pointer moves); otherwise nothing "
            "needs doing."
        )


def _parse_pointer(raw: Optional[bytes]) -> Optional[Dict[str, Any]]:
    if raw is None:
        return None
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None
