"""Where Ray keeps a run's checkpoints and Tune state: a local folder, or S3 through pyarrow.

Both sides use it: the search hands `path` and `filesystem` to Ray's RunConfigs, and reads checkpoints
back through it. Credentials come from the default AWS chain on every node and are never put in the
filesystem object: pyarrow pickles an `S3FileSystem` built this way without keys, and Tune pickles its
run config into the experiment state it writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from orchestrator.core.s3_uri import is_s3, parse_s3

RAY_DIR = "ray"  # Ray's storage inside a run: ray/tune (Tune state), ray/train-<trial> (checkpoints)
TUNE_DIR = "tune"  # under RAY_DIR: a `tune` search's Tuner experiment
TRAIN_RUN_PREFIX = "train-"  # under RAY_DIR: train-<trial id>, each trial's Ray Train run
TRAIN_REPORTS = "reports.jsonl"  # in a `train` run's Train folder only: its results, one a line


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

    def fs_path(self, path: str):
        """(pyarrow filesystem, path in it) for a path or s3:// URI of this storage."""
        import pyarrow.fs

        if self.filesystem is not None:
            return self.filesystem, path.removeprefix("s3://")
        return pyarrow.fs.LocalFileSystem(), path

    def exists(self, path: str) -> bool:
        import pyarrow.fs

        fs, p = self.fs_path(path)
        return fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound

    def read_text(self, path: str) -> Optional[str]:
        """A small file's text, or None when it is not there."""
        if not self.exists(path):
            return None
        fs, p = self.fs_path(path)
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
        uri=f"s3://{bucket}/{key}/{RAY_DIR}",
        path=f"{bucket}/{key}/{RAY_DIR}",
        filesystem=s3_filesystem(bucket, endpoint),
        run_uri=f"s3://{bucket}/{key}",
        endpoint_url=endpoint,
    )
