"""Fakes shared by tests: the Hugging Face Hub at the `HfApi` boundary, and a TCP proxy that makes an
S3 server go away and come back (a flaky S3).

`FakeHfApi` records what a real `huggingface_hub.HfApi` would be asked and keeps commits in memory;
`TcpProxy` sits between boto3 and a loopback S3 server (tests/helpers/s3_server.py).
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
import types
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlparse

from tests.helpers.s3_server import free_port


class FakeHfApi:
    """The part of `huggingface_hub.HfApi` publishing uses, recording every call; commits are kept in
    memory so `snapshot_download` can hand them back."""

    def __init__(self, *, fail: Optional[Exception] = None):
        self.fail = fail
        self.calls: List[tuple] = []
        self.commits: List[Dict[str, Any]] = []  # {"oid", "message", "description", "revision", "ops", "files"}
        self.tags: Dict[str, str] = {}
        self.repos: Dict[str, Dict[str, Any]] = {}

    def _check(self):
        if self.fail:
            raise self.fail

    def create_repo(self, repo_id, *, private=None, exist_ok=False, repo_type=None, **kw):
        self._check()
        self.calls.append(("create_repo", repo_id, {"private": private, "exist_ok": exist_ok}))
        self.repos.setdefault(repo_id, {"private": private})
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, *, branch, exist_ok=False, **kw):
        self.calls.append(("create_branch", repo_id, {"branch": branch, "exist_ok": exist_ok}))

    def _files_at(self, revision=None) -> Dict[str, bytes]:
        if not self.commits:
            return {}
        if revision in (None, "main"):
            return dict(self.commits[-1]["files"])
        oid = self.tags.get(revision, revision)
        for c in self.commits:
            if c["oid"] == oid or c["revision"] == revision:
                return dict(c["files"])
        from huggingface_hub.errors import RevisionNotFoundError

        raise RevisionNotFoundError(f"no revision {revision}", response=None)

    def list_repo_files(self, repo_id, *, revision=None, repo_type=None, **kw):
        return sorted(self._files_at(revision))

    def create_commit(self, repo_id, operations, *, commit_message, commit_description=None, revision=None, **kw):
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        self._check()
        files = self._files_at(revision) if self.commits else {}
        ops = list(operations)
        for op in ops:
            if isinstance(op, CommitOperationAdd):
                with op.as_file() as f:
                    files[op.path_in_repo] = f.read()
            elif isinstance(op, CommitOperationDelete):
                files.pop(op.path_in_repo, None)
        oid = hashlib.sha1(
            json.dumps(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())).encode()
            + str(len(self.commits)).encode()
        ).hexdigest()
        self.commits.append(
            {
                "oid": oid,
                "message": commit_message,
                "description": commit_description,
                "revision": revision,
                "ops": ops,
                "files": files,
            }
        )
        self.calls.append(("create_commit", repo_id, {"revision": revision}))
        return types.SimpleNamespace(oid=oid, commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}")

    def create_tag(self, repo_id, *, tag, revision=None, exist_ok=False, **kw):
        self.calls.append(("create_tag", repo_id, {"tag": tag, "revision": revision}))
        self.tags[tag] = revision

    def snapshot_download(self, repo_id, *, revision=None, local_dir=None, **kw):
        self._check()
        root = Path(local_dir)
        for path, data in self._files_at(revision).items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
        (root / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)  # as the real one leaves
        (root / ".cache" / "huggingface" / "x.lock").write_text("")
        return str(root)


class TcpProxy:
    """A loopback TCP proxy in front of an S3 server.

    `stop()` resets every open connection and closes the port (what boto3 sees when the server dies);
    `start()` listens again on the same port. `drop(n)` resets the next n connections after their first
    bytes (a connection dropped mid-request); `throttle(n)` answers the first request of the next n
    connections with S3's `503 SlowDown`. botocore must retry both.
    """

    SLOW_DOWN = (
        b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
        b"Content-Length: 120\r\n\r\n"
        + b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".ljust(120)
    )

    def __init__(self, upstream: str):
        u = urlparse(upstream)
        self.upstream = (u.hostname, u.port)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._conns: List[socket.socket] = []
        self._to_drop = self._to_throttle = 0
        self.dropped = self.throttled = 0
        self._listener = None

    def start(self) -> "TcpProxy":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.settimeout(0.1)
        self._listener = s
        threading.Thread(target=self._serve, args=(s,), daemon=True).start()
        return self

    def drop(self, n: int) -> None:
        with self._lock:
            self._to_drop = n

    def throttle(self, n: int) -> None:
        with self._lock:
            self._to_throttle = n

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # stopped
            conn.settimeout(None)
            with self._lock:
                action = "drop" if self._to_drop else "throttle" if self._to_throttle else None
                if action == "drop":
                    self._to_drop -= 1
                    self.dropped += 1
                elif action == "throttle":
                    self._to_throttle -= 1
                    self.throttled += 1
            if action:
                target = self._drop_after_first_bytes if action == "drop" else self._slow_down
                threading.Thread(target=target, args=(conn,), daemon=True).start()
                continue
            try:
                up = socket.create_connection(self.upstream)
            except OSError:
                self._reset(conn)
                continue
            with self._lock:
                self._conns += [conn, up]
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _drop_after_first_bytes(self, conn: socket.socket) -> None:
        try:
            conn.recv(1024)
        finally:
            self._reset(conn)

    def _slow_down(self, conn: socket.socket) -> None:
        """Read one request (headers, and the body unless the client waits for 100-continue), answer 503."""
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, body = data.split(b"\r\n\r\n", 1)
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (ln.decode("latin-1").partition(":") for ln in head.split(b"\r\n")[1:])
            }
            if headers.get("expect", "").lower() != "100-continue":
                left = int(headers.get("content-length", 0)) - len(body)
                while left > 0:
                    chunk = conn.recv(min(left, 65536))
                    if not chunk:
                        return
                    left -= len(chunk)
            conn.sendall(self.SLOW_DOWN)
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @staticmethod
    def _reset(s: socket.socket) -> None:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        except OSError:
            pass

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            self._reset(s)
