"""Where a run lives: its Ray storage (checkpoints, Tune state) and its run folder.

`output.dir` is a local folder or `s3://bucket/prefix` (with `output.endpoint_url` for S3-compatible
stores such as MinIO). For a local folder everything is under `output.dir/<experiment>/`. For S3:

- Ray Tune and Ray Train get `storage_path="bucket/prefix/<experiment>/ray"` and a pyarrow
  `S3FileSystem` as `storage_filesystem`, so every checkpoint and the Tune experiment state are on S3
  and survive the loss of any node (a restarted worker or `tune --resume` reads them back from there);
- the run folder (results.json, trials.csv, trials/, best/adapter, best/merged, report/) is staged on
  the driver under `./runs/<experiment>` and uploaded to `s3://bucket/prefix/<experiment>/` at the end,
  each object checked against its SHA-256 (orchestrator/s3.py).

Credentials come from the default AWS chain (environment, profile, instance role) on every node and are
never put in the filesystem object: pyarrow pickles an `S3FileSystem` built this way without keys, and
Tune pickles its run config into the experiment state it writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from orchestrator.errors import UserError
from orchestrator.storage import is_s3, parse_s3

RAY_DIR = "ray"  # Ray's storage inside a run: ray/tune (Tune state), ray/train-<trial> (checkpoints)


def s3_region(bucket: str, endpoint_url: Optional[str]) -> str:
    """The region to sign for: AWS_REGION / AWS_DEFAULT_REGION, else the bucket's own (AWS), else us-east-1."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    if endpoint_url:
        return "us-east-1"  # S3-compatible stores ignore it
    import pyarrow.fs

    try:
        return pyarrow.fs.resolve_s3_region(bucket)
    except OSError:
        return "us-east-1"


def s3_filesystem(bucket: str, endpoint_url: Optional[str]):
    """A pyarrow S3 filesystem on the default credential chain (no keys inside the object)."""
    import pyarrow.fs

    kwargs: Dict[str, Any] = {"region": s3_region(bucket, endpoint_url)}
    if endpoint_url:
        kwargs["endpoint_override"] = endpoint_url
        if endpoint_url.startswith("http://"):
            kwargs["scheme"] = "http"
    return pyarrow.fs.S3FileSystem(**kwargs)


@dataclass
class RunStorage:
    """A run's Ray storage: `path` and `filesystem` are what Ray's RunConfigs take."""

    uri: str  # for people: /abs/runs/exp/ray or s3://bucket/prefix/exp/ray
    path: str  # storage_path for Ray: an absolute local path, or bucket/prefix/exp/ray
    filesystem: Any = None  # a pyarrow S3FileSystem, or None (local)
    run_uri: Optional[str] = None  # s3://bucket/prefix/exp: where the run folder is uploaded (S3 only)
    endpoint_url: Optional[str] = None

    @property
    def remote(self) -> bool:
        return self.filesystem is not None

    def _fs_path(self, path: str):
        import pyarrow.fs

        if self.filesystem is not None:
            return self.filesystem, path.removeprefix("s3://")
        return pyarrow.fs.LocalFileSystem(), path

    def exists(self, path: str) -> bool:
        import pyarrow.fs

        fs, p = self._fs_path(path)
        return fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound

    def read_text(self, path: str) -> Optional[str]:
        """A small file's text, or None when it is not there."""
        if not self.exists(path):
            return None
        fs, p = self._fs_path(path)
        with fs.open_input_stream(p) as f:
            return f.read().decode("utf-8")

    def local_copy(self, path: str, dst: Path) -> Path:
        """The folder at `path` as a local folder: itself when local, else downloaded to `dst`."""
        if self.filesystem is None:
            return Path(path)
        import pyarrow.fs

        dst.mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(path.removeprefix("s3://"), str(dst), source_filesystem=self.filesystem)
        return dst


def run_storage(cfg, run_dir: Path) -> RunStorage:
    """The RunStorage of a run whose local (or staging) folder is `run_dir`."""
    if not is_s3(cfg.output.dir):
        p = str((run_dir / RAY_DIR).resolve())
        return RunStorage(uri=p, path=p)
    bucket, prefix = parse_s3(cfg.output.dir)
    key = "/".join(x for x in (prefix.strip("/"), cfg.experiment) if x)
    endpoint = cfg.output.endpoint_url
    return RunStorage(
        uri=f"s3://{bucket}/{key}/{RAY_DIR}", path=f"{bucket}/{key}/{RAY_DIR}",
        filesystem=s3_filesystem(bucket, endpoint), run_uri=f"s3://{bucket}/{key}", endpoint_url=endpoint,
    )


def check_s3_output(cfg, resume: bool) -> None:
    """Before anything starts: credentials, a reachable bucket, and no earlier run at the same place.

    Raises:
        UserError: no credentials, the bucket is missing or refuses us, the endpoint is unreachable, or
            s3://…/<experiment>/ already holds a run and `resume` is off.
    """
    if not is_s3(cfg.output.dir):
        return
    from orchestrator.s3 import Bucket
    from orchestrator.submit import check_storage_credentials

    check_storage_credentials(cfg)
    bucket, prefix = parse_s3(cfg.output.dir)
    b = Bucket(bucket, endpoint_url=cfg.output.endpoint_url)
    b.check()
    key = "/".join(x for x in (prefix.strip("/"), cfg.experiment) if x)
    if not resume and b.list(key):
        raise UserError(
            f"`output.experiment`: s3://{bucket}/{key}/ already holds a run. Pass --resume to continue it, "
            f"--experiment NAME (or --set output.experiment=NAME) for a new one, or delete that prefix."
        )


def upload_run_dir(run_dir: Path, storage: RunStorage, echo: Callable[[str], None] = print) -> List[str]:
    """Upload the run folder (all but Ray's own storage) to storage.run_uri; returns the keys written.

    Objects already there with the same SHA-256 are skipped, so a re-run (or `--resume`) uploads only
    what changed; each uploaded object is checked against the server's checksum.
    """
    if not storage.remote or not storage.run_uri:
        return []
    from orchestrator.s3 import Bucket, Upload, file_checksums

    bucket, key = parse_s3(storage.run_uri)
    items = []
    for f in sorted(run_dir.rglob("*")):
        rel = f.relative_to(run_dir)
        if not f.is_file() or rel.parts[0] in (RAY_DIR, "wandb") or rel.parts[-1].startswith("."):
            continue
        size = f.stat().st_size
        sha, checksum = file_checksums(f, size)
        items.append(Upload(f"{key}/{rel.as_posix()}", size, sha, path=f, checksum=checksum))
    uploaded, skipped = Bucket(bucket, endpoint_url=storage.endpoint_url).upload(items)
    echo(f"Run folder uploaded to {storage.run_uri}/ ({len(uploaded)} files, {len(skipped)} already there)")
    return uploaded
