"""A base model kept on S3 (`model.name_or_path: s3://bucket/prefix`), fetched once per node.

Many teams' clusters cannot reach the Hugging Face Hub; their base models sit in a bucket as a
`save_pretrained` folder. Each node copies the folder into a local cache whose name is a digest of the
objects' keys, sizes and ETags, so a re-uploaded model gets a fresh copy and an unchanged one is never
fetched twice. Concurrent trials on one node wait on a file lock instead of downloading in parallel.
Each object is checked after the download (size, and MD5 against a single-part ETag); the folder
becomes visible to loaders only when all of it is there (`.complete`, written last).

The driver needs only the tokenizer: `weights=False` fetches the folder without weight files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import List, Optional, Tuple

from orchestrator.core.s3_uri import parse_s3

CACHE_ENV = "QLORA_LAUNCH_CACHE"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx")
COMPLETE = ".complete"


def cache_root() -> Path:
    """This node's cache: $QLORA_LAUNCH_CACHE, else ~/.cache/qlora-launch."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "qlora-launch")


def model_path(cfg, weights: bool = True) -> str:
    """What `from_pretrained` should load: the configured name, or the local copy of an s3:// model."""
    src = cfg.model.name_or_path
    if not src.startswith("s3://"):
        return src
    return str(fetch_s3_folder(src, cfg.model_endpoint, weights=weights))


def _client(endpoint_url: Optional[str]):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, config=Config(retries={"mode": "standard", "total_max_attempts": 8})
    )


def list_folder(client, uri: str) -> List[Tuple[str, str, int, str]]:
    """(relative path, key, size, ETag) of every object under the s3:// folder."""
    bucket, prefix = parse_s3(uri)
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix) :]
            if rel and not rel.endswith("/"):
                out.append((rel, obj["Key"], int(obj["Size"]), obj["ETag"].strip('"')))
    return sorted(out)


def fetch_s3_folder(uri: str, endpoint_url: Optional[str] = None, weights: bool = True) -> Path:
    """The local copy of the s3:// folder (fetched now unless this node has it already).

    Raises:
        FileNotFoundError: nothing under `uri`, or no config.json there.
        OSError: an object arrived with the wrong size or checksum.
    """
    client = _client(endpoint_url)
    bucket, _ = parse_s3(uri)
    objects = list_folder(client, uri)
    if not weights:
        objects = [o for o in objects if not o[0].endswith(WEIGHT_SUFFIXES)]
    if not any(rel == "config.json" for rel, *_ in objects):
        raise FileNotFoundError(f"{uri} holds no config.json: it must be a folder written by save_pretrained.")
    digest = hashlib.sha256(json.dumps([uri, [(r, s, e) for r, _, s, e in objects]]).encode()).hexdigest()[:16]
    name = uri.rstrip("/").rsplit("/", 1)[-1] or bucket
    dest = cache_root() / "models" / f"{name}-{digest}{'' if weights else '-tokenizer'}"
    if (dest / COMPLETE).exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another trial on this node may be fetching the same model
        if (dest / COMPLETE).exists():
            return dest
        t0 = time.monotonic()
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        for rel, key, size, etag in objects:
            target = partial / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))
            _check(client, bucket, key, target, size, etag)
        shutil.rmtree(dest, ignore_errors=True)
        partial.rename(dest)
        (dest / COMPLETE).write_text(json.dumps({"uri": uri, "files": len(objects)}))
    total = sum(o[2] for o in objects)
    print(
        f"Fetched {uri} ({len(objects)} files, {total / 2**20:.1f} MiB) into {dest} in {time.monotonic() - t0:.1f}s",
        flush=True,
    )
    return dest


def _check(client, bucket: str, key: str, path: Path, size: int, etag: str) -> None:
    what = f"s3://{bucket}/{key}"
    got = path.stat().st_size
    if got != size:
        raise OSError(f"{what} arrived with {got} bytes, expected {size}; fetch it again.")
    if "-" in etag:  # a multipart upload's ETag is not the MD5 of the object
        return
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != etag:
        if client.head_object(Bucket=bucket, Key=key).get("ServerSideEncryption") == "aws:kms":
            return  # an SSE-KMS object's ETag is not its MD5 either
        raise OSError(f"{what} arrived with MD5 {h.hexdigest()}, its ETag says {etag}; fetch it again.")
