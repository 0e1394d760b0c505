"""Data sources and base models on S3, seen from the driver: checked before anything starts, and
fingerprinted (ETag and size, no download) for the run's record and the retrain gate.

The checks read only what they need: the object's head, then the first MiB of a JSONL/CSV file (its
columns and that it parses) or a Parquet file's footer. Problems come back as lines naming the YAML key.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Callable, List, Optional

from orchestrator.core.errors import UserError
from orchestrator.core.s3_uri import parse_s3

SAMPLE_BYTES = 1 << 20  # enough lines of a JSONL/CSV file to see its columns

CheckFile = Callable[[str, str, Path, List[str], int, bool], List[str]]


def head(uri: str, endpoint_url: Optional[str], key: str) -> dict:
    """HeadObject of an s3:// file.

    Raises:
        UserError: the object does not exist, or S3 refused (credentials, access, endpoint).
    """
    from botocore.exceptions import ClientError

    from orchestrator.storage.s3 import make_client, s3_errors

    bucket, obj = parse_s3(uri)
    client = make_client(endpoint_url)
    try:
        with s3_errors(f"`{key}` ({uri})", bucket, endpoint_url):
            try:
                return client.head_object(Bucket=bucket, Key=obj)
            except ClientError as e:
                if str(e.response.get("Error", {}).get("Code")) not in ("404", "NoSuchKey", "NotFound"):
                    raise
        with s3_errors(f"bucket of `{key}` ({uri})", bucket, endpoint_url):  # a 404 here: no such bucket
            client.head_bucket(Bucket=bucket)
    except UserError as e:
        raise UserError(f"`{key}`: {e}") from None
    raise UserError(f"`{key}`: {uri} does not exist (no such key in bucket '{bucket}'); fix the URI or upload it.")


def check_s3_source(
    key: str, uri: str, columns: List[str], min_rows: int, endpoint_url: Optional[str], check_file: CheckFile
) -> List[str]:
    """Problems with an s3:// data file: missing, unreadable, unknown format, missing columns, empty.

    `check_file(key, shown_name, local_path, columns, min_rows, partial)` is the local-file check run on
    what was read (partial: only the first MiB, so a short count is not a problem).
    """
    from orchestrator.storage.s3 import make_client, s3_errors

    suffix = Path(parse_s3(uri)[1]).suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv", ".parquet"):
        return [f"`{key}`: cannot read '{uri}': an s3:// source must be a .jsonl, .csv or .parquet file."]
    try:
        info = head(uri, endpoint_url, key)
    except UserError as e:
        return e.problems
    bucket, obj = parse_s3(uri)
    size = int(info.get("ContentLength", 0))
    partial = suffix != ".parquet" and size > SAMPLE_BYTES
    with tempfile.TemporaryDirectory(prefix="qlora-check-") as tmp:
        local = Path(tmp) / Path(obj).name
        client = make_client(endpoint_url)
        try:
            with s3_errors(f"`{key}` ({uri})", bucket, endpoint_url):
                if partial:
                    body = client.get_object(Bucket=bucket, Key=obj, Range=f"bytes=0-{SAMPLE_BYTES - 1}")["Body"].read()
                    local.write_bytes(body[: body.rfind(b"\n") + 1])  # whole lines only
                else:
                    client.download_file(bucket, obj, str(local))
        except UserError as e:
            return [f"`{key}`: {e}"]
        return check_file(key, uri, local, columns, min_rows, partial)


def fingerprint_s3(uri: str, endpoint_url: Optional[str], key: str = "data.train") -> str:
    """A fingerprint of an s3:// object from its ETag and size (changes when the object is rewritten).

    Raises:
        UserError: the object is not there or not readable.
    """
    info = head(uri, endpoint_url, key)
    tag = f"s3:{uri}@{info.get('ETag', '').strip(chr(34))}:{info.get('ContentLength')}"
    return hashlib.sha256(tag.encode()).hexdigest()


def check_s3_model(uri: str, endpoint_url: Optional[str]) -> List[str]:
    """Problems with an s3:// base model folder: unreadable, or no config.json in it."""
    try:
        head(uri.rstrip("/") + "/config.json", endpoint_url, "model.name_or_path")
    except UserError as e:
        text = str(e)
        if "does not exist" in text:
            return [
                f"`model.name_or_path`: {uri} has no config.json; point it at a folder written by save_pretrained "
                "(e.g. `aws s3 sync ./my-model s3://bucket/models/my-model`)."
            ]
        return [text]
    return []


def fingerprint_path(path: str, key: str = "data.train", endpoint_url: Optional[str] = None) -> str:
    """sha256 of a file's bytes; for a folder, of every file's relative path and bytes, sorted.

    Files and folders use orchestrator.core.fingerprint (the same fingerprint a publish manifest carries);
    an s3:// object is fingerprinted by its ETag and size; a hub dataset by its current commit on the hub
    (or the pinned @revision).

    Raises:
        UserError: the path does not exist, or is an S3 object or a hub dataset that cannot be reached.
    """
    from orchestrator.core.fingerprint import fingerprint

    if path.startswith("hub:"):
        return _hub_fingerprint(path)
    if path.startswith("s3://"):
        return fingerprint_s3(path, endpoint_url, key)
    fp = fingerprint(path)
    if fp is None:
        raise UserError(f"`{key}`: '{path}' does not exist; fix the path.")
    return fp


def _hub_fingerprint(source: str) -> str:
    from orchestrator.core.s3_uri import parse_hub

    name, config, revision = parse_hub(source)
    try:
        from huggingface_hub import HfApi

        sha = HfApi().dataset_info(name, revision=revision).sha
    except Exception as e:  # offline, unknown dataset, auth
        raise UserError(
            f"cannot fingerprint hub dataset '{name}' ({type(e).__name__}); use a local copy or pass --force."
        ) from None
    return hashlib.sha256(f"hub:{name}:{config or ''}@{sha}".encode()).hexdigest()
