"""`s3://bucket/prefix` URIs: recognised and split the same way on both sides."""

from __future__ import annotations

import re
from typing import Tuple

from orchestrator.core.errors import UserError


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def parse_s3(uri: str) -> Tuple[str, str]:
    """`s3://bucket/a/b/` -> ("bucket", "a/b").

    Raises:
        UserError: the URI has no bucket.
    """
    m = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    if not m or not re.fullmatch(r"[a-z0-9][a-z0-9.\-_]{1,62}", m.group(1)):
        raise UserError(f"'{uri}' is not a valid S3 URI; use s3://bucket/prefix (lower-case bucket name).")
    return m.group(1), m.group(2).strip("/")


def join(uri: str, *parts: str) -> str:
    """Join a folder path or s3:// URI with key parts using '/'."""
    out = uri.rstrip("/")
    for p in parts:
        p = p.strip("/")
        if p:
            out = f"{out}/{p}"
    return out


def parse_hub(source: str) -> "tuple[str, str | None, str | None]":
    """`hub:NAME[:config][@revision]` (a data source on the Hugging Face Hub) -> (NAME, config, revision)."""
    rest, _, revision = source.removeprefix("hub:").partition("@")
    name, _, config = rest.partition(":")
    return name, config or None, revision or None
