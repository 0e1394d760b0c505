"""S3 transfers for publishing and pulling: parallel multipart parts, SHA-256 checksums, retries.

Integrity: every object is uploaded with `ChecksumAlgorithm=SHA256`, so the server checks each part as
it arrives, and afterwards we ask the server (`HeadObject`, `ChecksumMode=ENABLED`) for the checksum
of what it stored and compare it with the one computed from the local bytes. A single-part object's
checksum is the plain SHA-256 of its bytes; a multipart object's is the SHA-256 of the parts' SHA-256
digests (AWS appends `-<parts>`; moto does not), which we compute locally with the same part size the
transfer used. A server that returns no checksum gets its objects read back and hashed instead.

Retries: botocore's `adaptive` mode (standard retries with exponential backoff and jitter on
throttling, 5xx and dropped connections, plus client-side rate limiting after throttling), 8 attempts
per request. `AWS_RETRY_MODE` and `AWS_MAX_ATTEMPTS` override both, as everywhere in the AWS tools.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from orchestrator.core.errors import UserError
from orchestrator.storage.checksums import PART_SIZE, MiB, bytes_checksum, s3_checksum, strip_parts

CONCURRENCY = 8  # parts (and small files) in flight at once
RETRY_MODE = "adaptive"
MAX_ATTEMPTS = 8  # per request, the first try included

Event = Callable[[str, str, int], None]  # (kind: upload|uploaded|skip|verified|download, key, size)


def make_client(endpoint_url: Optional[str] = None, *, concurrency: int = CONCURRENCY):
    """A boto3 S3 client with our retry policy and a connection pool large enough for `concurrency`.

    Credentials come from the standard chain (env, profile, SSO, instance or task role).
    """
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        config=Config(
            retries={
                "mode": os.environ.get("AWS_RETRY_MODE", RETRY_MODE),
                # Attempts in all, the first included (what AWS_MAX_ATTEMPTS means too).
                "total_max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", MAX_ATTEMPTS)),
            },
            max_pool_connections=max(10, concurrency * 2),
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def transfer_config(concurrency: int = CONCURRENCY, part_size: int = PART_SIZE):
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=part_size,
        multipart_chunksize=part_size,
        max_concurrency=concurrency,
        use_threads=True,
        preferred_transfer_client="classic",
    )


# ---- checksums ---------------------------------------------------------------------------------


# ---- errors ------------------------------------------------------------------------------------


@contextlib.contextmanager
def s3_errors(what: str, bucket: str, endpoint_url: Optional[str]) -> Iterator[None]:
    """Turn boto errors into UserError lines that say what to fix (credentials are never shown)."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionClosedError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )
    from s3transfer.exceptions import RetriesExceededError

    try:
        yield
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and what.startswith("bucket")):
            raise UserError(f"S3 bucket '{bucket}' does not exist; create it or fix the s3:// URI.") from None
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled") or status == 403:
            raise UserError(
                f"access denied to {what} ({code or status}); check the AWS credentials (env, AWS_PROFILE or "
                "role) and the bucket policy."
            ) from None
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
            raise UserError(f"the AWS credentials were refused for {what} ({code}); refresh or fix them.") from None
        raise UserError(f"S3 error on {what}: {code or status}: {e}") from None
    except (NoCredentialsError, PartialCredentialsError):
        raise UserError(
            f"no AWS credentials for {what}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
            "or run where an instance/task role is available."
        ) from None
    except (EndpointConnectionError, ConnectionClosedError, ConnectionError, RetriesExceededError) as e:
        raise UserError(
            f"lost the connection to the S3 endpoint {endpoint_url or '(AWS default)'} during {what} after "
            f"retries ({type(e).__name__}); check endpoint_url and the network, then re-run: files already "
            "uploaded are skipped."
        ) from None
    except BotoCoreError as e:
        raise UserError(f"S3 error on {what}: {e}") from None


# ---- one bucket ---------------------------------------------------------------------------------


@dataclass
class Upload:
    """One object to write: from a local file (`path`) or from memory (`data`)."""

    key: str
    size: int
    sha256: str  # hex SHA-256 of the whole object (what the manifest lists)
    path: Optional[Path] = None
    data: Optional[bytes] = None
    checksum: Optional[str] = None  # the S3 ChecksumSHA256 expected, when computed beforehand


class ChecksumMismatch(UserError):
    """Stored objects whose checksum is not the one computed from the local bytes (`keys`)."""

    def __init__(self, keys: Sequence[str], message: str):
        super().__init__(message)
        self.keys = list(keys)


@dataclass
class RemoteObject:
    size: int
    checksum: Optional[str]  # ChecksumSHA256 without the -N suffix, None when the server has none
    sha256_meta: Optional[str]  # our x-amz-meta-sha256


class Bucket:
    """Uploads, downloads and small reads/writes in one bucket through one client."""

    def __init__(
        self,
        bucket: str,
        endpoint_url: Optional[str] = None,
        client: Any = None,
        concurrency: int = CONCURRENCY,
        part_size: int = PART_SIZE,
    ):
        self.name = bucket
        self.endpoint_url = endpoint_url
        self.concurrency = concurrency
        self.part_size = part_size
        self.client = client or make_client(endpoint_url, concurrency=concurrency)

    def errors(self, what: str):
        return s3_errors(what, self.name, self.endpoint_url)

    def url(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def check(self) -> None:
        """The bucket exists and these credentials may use it (one HeadBucket).

        Raises:
            UserError: no such bucket, no credentials, access denied, endpoint unreachable.
        """
        with self.errors(f"bucket s3://{self.name}"):
            self.client.head_bucket(Bucket=self.name)

    # -- small objects --------------------------------------------------------------------------
    def get(self, key: str) -> Optional[bytes]:
        """The object's bytes, or None when it does not exist."""
        from botocore.exceptions import ClientError

        with self.errors(self.url(key)):
            try:
                return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        """One PUT whose SHA-256 the server checks on receipt (atomic: readers see old or new)."""
        with self.errors(self.url(key)):
            self._put_object(key, data, content_type)

    def _put_object(self, key: str, data: bytes, content_type: str, **condition: str) -> None:
        self.client.put_object(
            Bucket=self.name,
            Key=key,
            Body=data,
            ContentType=content_type,
            ChecksumSHA256=bytes_checksum(data),
            Metadata={"sha256": hashlib.sha256(data).hexdigest()},
            **condition,
        )

    def put_new(
        self, key: str, data: bytes, content_type: str = "application/json", attempt: int = 1
    ) -> Optional[bytes]:
        """`put` only if `key` does not exist yet (`If-None-Match: *`). Returns None when this call wrote it,
        else the bytes already there (a concurrent writer got there first; ours were not written)."""
        from botocore.exceptions import ClientError

        with self.errors(self.url(key)):
            try:
                self._put_object(key, data, content_type, IfNoneMatch="*")
                return None
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code not in ("PreconditionFailed", "ConditionalRequestConflict") and status not in (409, 412):
                    raise
        now = self.get(key)
        if now is None:  # the other writer's 409 conflict did not land after all: try once more
            if attempt >= 2:
                raise UserError(
                    f"{self.url(key)}: the store refused to create it and holds nothing there; try again, and "
                    "check that nothing else writes to this prefix."
                )
            return self.put_new(key, data, content_type, attempt + 1)
        return now

    def delete(self, key: str) -> None:
        with self.errors(self.url(key)):
            self.client.delete_object(Bucket=self.name, Key=key)

    def list(self, prefix: str) -> Dict[str, int]:
        """{key: size} of every object under `prefix/`."""
        out: Dict[str, int] = {}
        with self.errors(self.url(prefix)):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.name, Prefix=prefix.rstrip("/") + "/"
            ):
                for o in page.get("Contents", []):
                    out[o["Key"]] = o["Size"]
        return out

    def head(self, key: str) -> Optional[RemoteObject]:
        from botocore.exceptions import ClientError

        with self.errors(self.url(key)):
            try:
                h = self.client.head_object(Bucket=self.name, Key=key, ChecksumMode="ENABLED")
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
        return RemoteObject(
            size=h["ContentLength"],
            checksum=strip_parts(h.get("ChecksumSHA256")),
            sha256_meta=(h.get("Metadata") or {}).get("sha256"),
        )

    # -- checks ---------------------------------------------------------------------------------
    def expected_checksum(self, item: Upload) -> str:
        if item.checksum is None:
            item.checksum = (
                bytes_checksum(item.data)
                if item.data is not None
                else s3_checksum(item.path, item.size, self.part_size)
            )
        return item.checksum

    def matches(self, item: Upload, remote: Optional[RemoteObject]) -> bool:
        """Whether the stored object is exactly `item` (by the server's checksum, else by re-reading it)."""
        if remote is None or remote.size != item.size:
            return False
        if remote.checksum:
            return remote.checksum == self.expected_checksum(item)
        return self.reread_sha256(item.key) == item.sha256

    def reread_sha256(self, key: str) -> str:
        h = hashlib.sha256()
        with self.errors(self.url(key)):
            body = self.client.get_object(Bucket=self.name, Key=key)["Body"]
            for block in iter(lambda: body.read(MiB), b""):
                h.update(block)
        return h.hexdigest()

    def _parallel(self, fn, items: Sequence[Any]) -> List[Any]:
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    # -- many files -----------------------------------------------------------------------------
    def upload(self, items: Sequence[Upload], on_event: Optional[Event] = None) -> Tuple[List[str], List[str]]:
        """Upload every item not already stored with the right checksum; verify each one uploaded.

        Files go through one s3transfer TransferManager: small files in parallel, large ones in
        parallel multipart parts. Returns (uploaded keys, skipped keys).

        Raises:
            UserError: a transfer failed after retries, or a stored object's checksum does not match.
        """
        event = on_event or (lambda *a: None)
        present = {}
        if items:
            common = os.path.commonprefix([i.key for i in items]).rsplit("/", 1)[0]
            present = self.list(common) if common else {}
        candidates = [i for i in items if present.get(i.key) == i.size]
        heads = dict(zip([i.key for i in candidates], self._parallel(lambda i: self.head(i.key), candidates)))
        skipped, todo = [], []
        for item in items:
            if item.key in heads and self.matches(item, heads[item.key]):
                skipped.append(item.key)
                event("skip", item.key, item.size)
            else:
                todo.append(item)
        self._transfer(todo, event)
        # Verify what the server stored against what we computed from the local bytes.
        remote = dict(zip([i.key for i in todo], self._parallel(lambda i: self.head(i.key), todo)))
        bad = [i.key for i in todo if not self.matches(i, remote.get(i.key))]
        if bad:
            raise ChecksumMismatch(
                bad,
                f"the checksum of {len(bad)} uploaded object(s) does not match the local file: "
                + ", ".join(self.url(k) for k in bad)
                + "; re-run the publish (they are uploaded again).",
            )
        for item in todo:
            event("verified", item.key, item.size)
        return [i.key for i in todo], skipped

    def _transfer(self, todo: Sequence[Upload], event: Event) -> None:
        from s3transfer.manager import TransferManager
        from s3transfer.subscribers import BaseSubscriber

        class Done(BaseSubscriber):
            def __init__(self, item: Upload):
                self.item = item

            def on_done(self, future, **kwargs):
                try:
                    future.result()
                except BaseException:
                    return
                event("uploaded", self.item.key, self.item.size)

        # The context manager waits for every transfer on success and cancels the queued ones when the
        # block raises (TransferManager.shutdown(cancel=True) itself is broken in s3transfer 0.19).
        with TransferManager(self.client, transfer_config(self.concurrency, self.part_size)) as manager:
            futures = []
            for item in todo:
                event("upload", item.key, item.size)
                extra = {"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": item.sha256}}
                if item.size < self.part_size:
                    # Single PUT: send the full-object SHA-256 so the server rejects a corrupt body.
                    extra["ChecksumSHA256"] = self.expected_checksum(item)
                src = str(item.path) if item.data is None else io.BytesIO(item.data)
                futures.append(
                    (item, manager.upload(src, self.name, item.key, extra_args=extra, subscribers=[Done(item)]))
                )
            for item, fut in futures:
                # The first failure (after botocore's retries) ends the publication; what made it is
                # skipped by a re-run.
                with self.errors(f"the upload of {self.url(item.key)}"):
                    fut.result()

    def download(self, keys: Sequence[Tuple[str, Path]], on_event: Optional[Event] = None) -> None:
        """Download (key, local path) pairs in parallel (ranged parts for large objects)."""
        from s3transfer.manager import TransferManager

        event = on_event or (lambda *a: None)
        with TransferManager(self.client, transfer_config(self.concurrency, self.part_size)) as manager:
            futures = []
            for key, path in keys:
                path.parent.mkdir(parents=True, exist_ok=True)
                futures.append((key, manager.download(self.name, key, str(path))))
            for key, fut in futures:
                with self.errors(f"the download of {self.url(key)}"):
                    fut.result()
                event("download", key, 0)
