"""The run folder on S3: the checks before a run with `output.dir: s3://…`, and the upload after it.

The run folder (results.json, trials.csv, trials/, best/adapter, best/merged, report/) is staged on the
driver under `./runs/<experiment>` and uploaded to `s3://bucket/prefix/<experiment>/` at the end, each
object checked against its SHA-256 (orchestrator/storage/s3.py). Ray's own storage beside it is
described in orchestrator/core/ray_storage.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, List

from orchestrator.core.errors import UserError
from orchestrator.core.ray_storage import RAY_DIR, RunStorage, run_storage
from orchestrator.core.rundir import DRIVER_LOG
from orchestrator.core.s3_uri import is_s3, parse_s3


def check_s3_output(cfg, resume: bool) -> None:
    """Before anything starts: credentials, a reachable bucket, and no earlier run at the same place.

    Raises:
        UserError: no credentials, the bucket is missing or refuses us, the endpoint is unreachable, or
            s3://…/<experiment>/ already holds a run and `resume` is off.
    """
    if not is_s3(cfg.output.dir):
        return
    from orchestrator.launch.cluster import check_storage_credentials
    from orchestrator.storage.s3 import Bucket

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
    files = [
        f
        for f in sorted(run_dir.rglob("*"))
        if f.is_file()
        and (rel := f.relative_to(run_dir)).parts[0] != RAY_DIR
        and not rel.parts[-1].startswith(".")
        and rel.parts != (DRIVER_LOG,)  # still being written: upload_driver_log sends it once closed
    ]
    uploaded, skipped = _upload(run_dir, storage, files)
    echo(f"Run folder uploaded to {storage.run_uri}/ ({len(uploaded)} files, {len(skipped)} already there)")
    return uploaded


CHANGED_FILE_TRIES = 3  # uploads of a run-folder file that changed while it was sent (a log still flushing)


def _upload(run_dir: Path, storage: RunStorage, files: List[Path]):
    """Upload run-folder files under storage.run_uri, skipping those already there, checksum-checked.

    A file that changed between its hashing and its upload (a library's log still being flushed, e.g. W&B's
    service after `finish`) arrives with other bytes than were hashed: it is hashed and sent again, up to
    CHANGED_FILE_TRIES times in all. A mismatch for a file that did not change is an error at once.
    """
    from orchestrator.storage.s3 import Bucket, ChecksumMismatch

    bucket_name, key = parse_s3(str(storage.run_uri))
    bucket = Bucket(bucket_name, endpoint_url=storage.endpoint_url)
    items = [_item(run_dir, key, f) for f in files]
    for attempt in range(1, CHANGED_FILE_TRIES + 1):
        try:
            return bucket.upload(items)  # what an earlier attempt stored is skipped (same checksum)
        except ChecksumMismatch as e:
            by_key = {i.key: i for i in items}
            again = {k: _item(run_dir, key, by_key[k].path) for k in e.keys}
            if attempt == CHANGED_FILE_TRIES or any(again[k].sha256 == by_key[k].sha256 for k in again):
                raise  # a file that did not change, or one that keeps changing
            items = [again.get(i.key, i) for i in items]
            time.sleep(1)
    raise AssertionError("unreachable")


def _item(run_dir: Path, key: str, f: Path):
    from orchestrator.storage.checksums import file_checksums
    from orchestrator.storage.s3 import Upload

    size = f.stat().st_size
    sha, checksum = file_checksums(f, size)
    return Upload(f"{key}/{f.relative_to(run_dir).as_posix()}", size, sha, path=f, checksum=checksum)


def upload_driver_log(cfg, run_dir: Path) -> None:
    """The closed driver.log to the run's S3 folder (an s3:// output.dir); a failure only costs the log."""
    if not is_s3(cfg.output.dir) or not (run_dir / DRIVER_LOG).is_file():
        return
    storage = run_storage(cfg, run_dir)
    try:
        _upload(run_dir, storage, [run_dir / DRIVER_LOG])
    except (OSError, UserError) as e:
        print(f"Could not upload {DRIVER_LOG} to {storage.run_uri}: {e}")
