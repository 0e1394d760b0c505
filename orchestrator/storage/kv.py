"""A small storage layer: a local folder or `s3://bucket/prefix`, addressed by `/`-separated keys.

Writes are atomic per object: a local write goes to a temporary file in the same folder and is moved
into place with `os.replace`; an S3 PUT is atomic per object. Readers therefore see an old object or
the new one, never half of one. There is no append: callers that keep a log write one object per
record under sortable keys.

Pointers (a registry's `champion.json`, a publication's `latest.json`) are moved with a compare-and-swap
write: `read_with_token` returns an object with its version token (S3: the ETag; a local folder: the
sha256 of the bytes), and `write_bytes_if(key, data, expected)` writes only while the key still holds
that version (`expected=None`: only while it does not exist), else raises `Conflict` and writes
nothing. On S3 that is one PUT with `If-Match`/`If-None-Match: *`, decided by the server; in a local
folder an exclusive `flock` on `.lock-<name>` beside the key makes compare-then-replace one step for
every writer that uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

from orchestrator.core.errors import UserError
from orchestrator.core.s3_uri import is_s3, join, parse_s3


class NotFound(LookupError):
    """The key does not exist in the storage."""


class Conflict(Exception):
    """A conditional write was refused: the key no longer holds the version the caller read.

    Attributes:
        url: the object.
        expected: the token the caller read (None: it expected no object).
        current: the token there now (None: there is no object now, or it is unknown).
    """

    def __init__(self, url: str, expected: Optional[str], current: Optional[str] = None):
        self.url, self.expected, self.current = url, expected, current
        was = f"version {expected}" if expected else "no object"
        super().__init__(f"{url} changed: expected {was}, found {current or 'something else'}")


LOCK_PREFIX = ".lock-"  # local compare-and-swap lock files beside their keys (never listed)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Storage:
    """Interface shared by the local and S3 backends. Keys are relative, '/'-separated."""

    uri: str

    def read_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def list(self, prefix: str = "") -> List[str]:
        """Every key under `prefix` (recursive), sorted."""
        raise NotImplementedError

    def list_dirs(self, prefix: str = "") -> List[str]:
        """Names of the immediate sub-folders of `prefix`, sorted."""
        raise NotImplementedError

    def has_any(self, prefix: str) -> bool:
        """True when at least one key lies under `prefix/`."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    # ---- compare-and-swap --------------------------------------------------------------------
    def read_with_token(self, key: str) -> Tuple[bytes, str]:
        """The object's bytes and its version token, for a later `write_bytes_if`.

        Raises:
            NotFound: no such key.
        """
        raise NotImplementedError

    def write_bytes_if(self, key: str, data: bytes, expected: Optional[str]) -> str:
        """Write `data` only if `key` still holds version `expected` (None: only if the key does not
        exist); atomic like `write_bytes`. Returns the new token. A key that already holds exactly
        `data` counts as written (so a retried write that had landed is not a conflict).

        Raises:
            Conflict: the key holds another version (or exists / is gone against `expected`); nothing
                was written.
        """
        raise NotImplementedError

    # ---- helpers on top of bytes -------------------------------------------------------------
    def _decode_json(self, key: str, raw: bytes) -> Any:
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{self.url(key)} is not valid JSON ({e}); fix or remove it.") from None

    def read_json(self, key: str) -> Any:
        return self._decode_json(key, self.read_bytes(key))

    def read_json_with_token(self, key: str) -> Tuple[Any, Optional[str]]:
        """(object, token), or (None, None) when the key does not exist: pass the token to `write_json_if`."""
        try:
            raw, token = self.read_with_token(key)
        except NotFound:
            return None, None
        return self._decode_json(key, raw), token

    @staticmethod
    def json_bytes(obj: Any) -> bytes:
        return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, self.json_bytes(obj))

    def write_json_if(self, key: str, obj: Any, expected: Optional[str]) -> str:
        """`write_bytes_if` of the JSON of `obj`."""
        return self.write_bytes_if(key, self.json_bytes(obj), expected)

    def url(self, key: str = "") -> str:
        return join(self.uri, key)


class LocalStorage(Storage):
    def __init__(self, root: str):
        self.root = Path(root).expanduser()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"bad storage key {key!r}")
        return self.root.joinpath(*parts)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(self.url(key)) from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        except OSError as e:
            raise UserError(
                f"cannot write under {path.parent}: {e.strerror}; check the path and permissions."
            ) from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def read_with_token(self, key: str) -> Tuple[bytes, str]:
        data = self.read_bytes(key)
        return data, _digest(data)

    def write_bytes_if(self, key: str, data: bytes, expected: Optional[str]) -> str:
        import fcntl

        path = self._path(key)
        lock = path.parent / f"{LOCK_PREFIX}{path.name}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(
                f"cannot write under {path.parent}: {e.strerror}; check the path and permissions."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # per open file: excludes other processes and threads alike
            try:
                current: Optional[str] = _digest(path.read_bytes())
            except FileNotFoundError:
                current = None
            new = _digest(data)
            if current != expected and current != new:  # holding exactly `data` already counts as done
                raise Conflict(self.url(key), expected, current)
            if current != new:
                self.write_bytes(key, data)
            return new
        finally:
            os.close(fd)  # releases the lock

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _walk(self, base: Path) -> Iterator[Path]:
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for fn in filenames:
                if not fn.startswith((".tmp-", LOCK_PREFIX)):
                    yield Path(dirpath) / fn

    def list(self, prefix: str = "") -> List[str]:
        base = self._path(prefix)
        return sorted(p.relative_to(self.root).as_posix() for p in self._walk(base))

    def list_dirs(self, prefix: str = "") -> List[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir())

    def has_any(self, prefix: str) -> bool:
        return next(self._walk(self._path(prefix)), None) is not None

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass


class S3Storage(Storage):
    """S3 (or any S3-compatible endpoint) through boto3; credentials from the standard AWS chain."""

    def __init__(self, uri: str, endpoint_url: Optional[str] = None, client: Any = None):
        self.bucket, self.prefix = parse_s3(uri)
        self.uri = join(f"s3://{self.bucket}", self.prefix)
        self.endpoint_url = endpoint_url
        self._client = client

    @property
    def client(self):
        if self._client is None:
            from orchestrator.storage.s3 import make_client

            self._client = make_client(self.endpoint_url)
        return self._client

    def _key(self, key: str) -> str:
        return join(self.prefix, key) if self.prefix else key.strip("/")

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _call(self, what: str, fn, *args, **kwargs):
        """fn(*args, **kwargs); a missing key raises NotFound, any other S3 error a UserError (s3_errors)."""
        from botocore.exceptions import ClientError

        from orchestrator.storage.s3 import s3_errors

        with s3_errors(what, self.bucket, self.endpoint_url):
            try:
                return fn(*args, **kwargs)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "404", "NotFound"):
                    raise NotFound(what) from None
                raise

    def read_bytes(self, key: str) -> bytes:
        resp = self._call(self.url(key), self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return resp["Body"].read()

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call(self.url(key), self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)

    def read_with_token(self, key: str) -> Tuple[bytes, str]:
        resp = self._call(self.url(key), self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return resp["Body"].read(), resp["ETag"]

    def write_bytes_if(self, key: str, data: bytes, expected: Optional[str]) -> str:
        """One PUT with `If-Match: <etag>` (or `If-None-Match: *`); the server refuses it with 412
        PreconditionFailed, 409 ConditionalRequestConflict (a concurrent conditional write) or, for
        If-Match on a deleted key, 404 NoSuchKey."""
        from botocore.exceptions import ClientError

        from orchestrator.storage.checksums import bytes_checksum
        from orchestrator.storage.s3 import s3_errors

        cond = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        with s3_errors(self.url(key), self.bucket, self.endpoint_url):
            try:
                resp = self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=data,
                    ContentType="application/json" if key.endswith(".json") else "binary/octet-stream",
                    ChecksumSHA256=bytes_checksum(data),
                    **cond,
                )
                return resp["ETag"]
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code not in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey") and status != 412:
                    raise
        # Refused. A PUT retried after its first response was lost is refused by its own write: then
        # the object holds exactly our bytes, and the write did happen.
        try:
            now, token = self.read_with_token(key)
        except NotFound:
            raise Conflict(self.url(key), expected, None) from None
        if now == data:
            return token
        raise Conflict(self.url(key), expected, token)

    def exists(self, key: str) -> bool:
        try:
            self._call(self.url(key), self.client.head_object, Bucket=self.bucket, Key=self._key(key))
            return True
        except NotFound:
            return False

    def _pages(self, prefix: str, **kw):
        full = self._key(prefix)
        full = f"{full}/" if full else ""
        paginator = self.client.get_paginator("list_objects_v2")
        it = iter(paginator.paginate(Bucket=self.bucket, Prefix=full, **kw))
        while True:
            page = self._call(self.url(prefix), next, it, None)
            if page is None:
                return
            yield full, page

    def list(self, prefix: str = "") -> List[str]:
        keys = []
        for _, page in self._pages(prefix):
            keys += [self._rel(o["Key"]) for o in page.get("Contents", [])]
        return sorted(keys)

    def list_dirs(self, prefix: str = "") -> List[str]:
        names = []
        for full, page in self._pages(prefix, Delimiter="/"):
            names += [p["Prefix"][len(full) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(names)

    def has_any(self, prefix: str) -> bool:
        for _, page in self._pages(prefix, PaginationConfig={"MaxItems": 1}):
            return bool(page.get("Contents"))
        return False

    def delete(self, key: str) -> None:
        self._call(self.url(key), self.client.delete_object, Bucket=self.bucket, Key=self._key(key))


def open_storage(uri: str, endpoint_url: Optional[str] = None) -> Storage:
    """A Storage for a local folder or an s3:// URI.

    Raises:
        UserError: a scheme we cannot read or write here.
    """
    if is_s3(uri):
        return S3Storage(uri, endpoint_url=endpoint_url)
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise UserError(f"'{uri}': {scheme}:// cannot hold a registry; use a local folder or s3://bucket/prefix.")
    return LocalStorage(uri)
