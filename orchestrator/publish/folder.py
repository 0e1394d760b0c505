"""A local folder as a publication destination: the subset of orchestrator.storage.s3.Bucket that
publish (push.py) and pull use, over files.

The layout is the S3 one with the folder as the prefix (`<folder>/<version>/...`, `<folder>/latest.json`).
Every file is written to a temporary name beside its place and moved in with `os.replace`, so a reader
sees the old file or the new one, never half of one; `latest.json` moves by compare-and-swap under a
lock (orchestrator.storage.kv.LocalStorage.write_bytes_if), as on S3.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from orchestrator.core.errors import UserError
from orchestrator.storage.kv import LOCK_PREFIX, LocalStorage

Event = Callable[[str, str, int], None]


class FolderBucket:
    """Keys relative to `root`, '/'-separated, like a bucket's keys under a prefix."""

    endpoint_url = None
    client = None

    def __init__(self, root: str):
        self.root = Path(root)
        self.store = LocalStorage(str(self.root))

    def _p(self, key: str) -> Path:
        return self.store._path(key.strip("/"))  # refuses '.' and '..'

    def url(self, key: str) -> str:
        return str(self._p(key))

    def check(self) -> None:
        """The folder exists or can be made, and is writable."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the publish folder {self.root}: {e.strerror}.") from None
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise UserError(f"{self.root} is not a writable folder; publish to another one.")

    def get(self, key: str) -> Optional[bytes]:
        p = self._p(key)
        return p.read_bytes() if p.is_file() else None

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.store.write_bytes(key.strip("/"), data)

    def put_new(self, key: str, data: bytes, content_type: str = "application/json") -> Optional[bytes]:
        """`put` only if `key` does not exist yet: None when this call wrote it, else the bytes already there
        (as orchestrator.storage.s3.Bucket.put_new)."""
        from orchestrator.storage.kv import Conflict

        try:
            self.store.write_bytes_if(key.strip("/"), data, None)
            return None
        except Conflict:
            return self.get(key)

    def delete(self, key: str) -> None:
        self.store.delete(key.strip("/"))

    def list(self, prefix: str) -> Dict[str, int]:
        return {k: self._p(k).stat().st_size for k in self.store.list(prefix.strip("/"))}

    def upload(self, items: Sequence, on_event: Optional[Event] = None) -> Tuple[List[str], List[str]]:
        """Copy every item (orchestrator.storage.s3.Upload) not already there with the same sha256; each
        copy is checked against its sha256 before it is moved into place. Returns (copied, skipped)."""
        from orchestrator.core.fingerprint import sha256_file

        event = on_event or (lambda *a: None)
        copied, skipped = [], []
        for item in items:
            path = self._p(item.key)
            if path.is_file() and path.stat().st_size == item.size and sha256_file(path) == item.sha256:
                skipped.append(item.key)
                event("skip", item.key, item.size)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".tmp-{path.name}.{os.getpid()}"
            try:
                if item.data is not None:
                    tmp.write_bytes(item.data)
                else:
                    shutil.copyfile(item.path, tmp)
                if sha256_file(tmp) != item.sha256:
                    raise UserError(f"the copy of {item.key} in {self.root} does not match its sha256; publish again.")
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            copied.append(item.key)
            event("uploaded", item.key, item.size)
        return copied, skipped

    def download(self, keys: Sequence[Tuple[str, Path]], on_event: Optional[Event] = None) -> None:
        for key, dest in keys:
            src = self._p(key)
            if not src.is_file() or src.name.startswith((".tmp-", LOCK_PREFIX)):
                raise UserError(f"{src} is missing: the published version is incomplete; publish it again.")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
