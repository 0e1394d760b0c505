"""The checksums S3 reports for what we upload, computed locally with the part size the transfer uses:
the SHA-256 of the bytes for a single-part object, else the SHA-256 of the parts' SHA-256 digests."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Optional, Tuple

MiB = 1 << 20
PART_SIZE = 16 * MiB  # multipart threshold and part size: 13 parts for a 200 MB file


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def actual_part_size(size: int, part_size: int = PART_SIZE) -> int:
    """The part size s3transfer really uses for a file of `size` bytes (it grows it past 10,000 parts)."""
    from s3transfer.utils import ChunksizeAdjuster

    return ChunksizeAdjuster().adjust_chunksize(part_size, size)


def file_checksums(path: Path, size: int, part_size: int = PART_SIZE) -> Tuple[str, str]:
    """(hex SHA-256 of the file, the ChecksumSHA256 S3 reports for it), from one read of the file.

    The second is the SHA-256 of the bytes for a single-part upload, else the SHA-256 of the parts'
    SHA-256 digests (without AWS's `-N` suffix), with the part size the transfer will use.
    """
    chunk = actual_part_size(size, part_size) if size >= part_size else 0
    full, part, filled, digests = hashlib.sha256(), hashlib.sha256(), 0, []
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            full.update(block)
            while chunk and block:
                take = block[: chunk - filled]
                part.update(take)
                filled += len(take)
                block = block[len(take) :]
                if filled == chunk:
                    digests.append(part.digest())
                    part, filled = hashlib.sha256(), 0
    if not chunk:
        return full.hexdigest(), b64(full.digest())
    if filled:
        digests.append(part.digest())
    return full.hexdigest(), b64(hashlib.sha256(b"".join(digests)).digest())


def s3_checksum(path: Path, size: int, part_size: int = PART_SIZE) -> str:
    """The ChecksumSHA256 S3 reports for `path` uploaded with our transfer config (without `-N`)."""
    return file_checksums(path, size, part_size)[1]


def bytes_checksum(data: bytes) -> str:
    return b64(hashlib.sha256(data).digest())


def strip_parts(checksum: Optional[str]) -> Optional[str]:
    return checksum.split("-", 1)[0] if checksum else checksum
