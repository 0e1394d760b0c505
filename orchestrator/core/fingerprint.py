"""Content fingerprints of data sources (what the manifest and the retrain gate compare)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(source: str) -> Optional[str]:
    """sha256 of a file's bytes, or of a folder's files (relative path + content, sorted).

    Hub datasets (`hub:NAME`) have no local bytes: their fingerprint is their name, and None for a
    source that does not exist.
    """
    if source.startswith("hub:"):
        return "hub:" + hashlib.sha256(source.encode()).hexdigest()
    p = Path(source)
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(str(f.relative_to(p)).encode() + b"\0" + sha256_file(f).encode())
        return h.hexdigest()
    return None
