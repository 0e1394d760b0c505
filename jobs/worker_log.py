"""Where a worker's output goes: its trial's log file, not the user's terminal.

Everything a Train worker (or the merge task) writes to stdout/stderr — transformers, peft, bitsandbytes,
W&B, Ray's own C++ logging in that process, tracebacks — lands in `trials/<id>/worker.log` of the run
folder (rank k > 0: `worker-rank<k>.log`). The redirection is at the file-descriptor level, so output from
C/C++ code and child processes is caught as well as Python's. With `--verbose` the same lines are also
streamed to the original stdout (and from there, by Ray, to the driver's terminal).

On a remote run (S3 output) the run folder is not on this node: the log is written to a node-local file
and copied to `trials/<id>/` in the run's S3 folder at every checkpoint and at the end (`sync_log`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

WORKER_LOG = "worker.log"
NOTICES: List[str] = []  # what a user should see once in the summary (sent to the driver with each report)


def notice(message: str) -> None:
    """Print `message` to this worker's log and send it to the driver with the next report."""
    print(message, flush=True)
    if message not in NOTICES:
        NOTICES.append(message)


def log_name(rank: int) -> str:
    return WORKER_LOG if rank == 0 else f"worker-rank{rank}.log"


def log_target(spec: Optional[Dict[str, Any]], trial_id: str, rank: int) -> Optional[Path]:
    """The file this worker writes: in the local run folder (`spec["dir"]`), or a node-local file for a
    remote run (`spec["sink"]`). None when no spec was given (output is left alone)."""
    if not spec:
        return None
    if spec.get("dir"):
        return Path(spec["dir"], trial_id, log_name(rank))
    return Path(tempfile.gettempdir(), "qlora-launch-logs", trial_id, log_name(rank))


def prime_log(spec: Optional[Dict[str, Any]], path: Optional[Path], trial_id: str) -> None:
    """A restarted worker on another node continues the log already in storage (remote runs only)."""
    if not spec or not spec.get("sink") or path is None or path.exists():
        return
    import pyarrow.fs

    sink = spec["sink"]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(f"{sink['path']}/{trial_id}/{path.name}", str(path), source_filesystem=sink["filesystem"])
    except (OSError, FileNotFoundError):
        pass  # the first attempt: nothing there yet


def sync_log(spec: Optional[Dict[str, Any]], path: Optional[Path], trial_id: str) -> None:
    """Copy a node-local log to the run's storage (remote runs only); never fails the caller."""
    if not spec or not spec.get("sink") or path is None or not path.exists():
        return
    import pyarrow.fs

    sink = spec["sink"]
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        pyarrow.fs.copy_files(
            str(path), f"{sink['path']}/{trial_id}/{path.name}", destination_filesystem=sink["filesystem"]
        )
    except OSError as e:
        print(f"Could not copy {path.name} to the run's storage: {e}", flush=True)


def quiet_libraries() -> None:
    """No progress bars in a log file (they are one line per redraw there)."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is always there on a worker
        pass


@contextmanager
def output_to(path: Optional[Path], *, stream: bool = False, header: str = "") -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to `path` (appended) while inside.

    stream: also copy every byte to the original stdout (`--verbose`). `header` opens this attempt's
    section of the file (a restarted worker appends to the same log).
    """
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for s in (sys.stdout, sys.stderr):
        s.flush()
    saved = [os.dup(1), os.dup(2)]
    log = open(path, "ab", buffering=0)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    log.write(f"==== {stamp} {header} (pid {os.getpid()})\n".encode())
    threads: List[threading.Thread] = []
    if stream:
        read_end, write_end = os.pipe()
        target = write_end
        threads.append(threading.Thread(target=_tee, args=(read_end, log, saved[0]), daemon=True))
        threads[0].start()
    else:
        target = log.fileno()
    os.dup2(target, 1)
    os.dup2(target, 2)
    quiet_libraries()
    try:
        yield
    finally:
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except (OSError, ValueError):
                pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        if stream:
            os.close(write_end)
            for t in threads:
                t.join(timeout=5)
        for fd in saved:
            os.close(fd)
        log.close()


def _tee(read_end: int, log, out_fd: int) -> None:
    with os.fdopen(read_end, "rb", buffering=0) as r:
        while True:
            chunk = r.read(65536)
            if not chunk:
                return
            log.write(chunk)
            try:
                os.write(out_fd, chunk)
            except OSError:
                pass


def fetch_logs(st, remote_dir: str, dest: Path) -> None:
    """A remote trial's worker logs (worker*.log) into its local trial folder; what is missing is skipped."""
    import pyarrow.fs

    fs, path = st.fs_path(remote_dir)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
        for info in infos:
            if info.type == pyarrow.fs.FileType.File and info.base_name.startswith("worker"):
                pyarrow.fs.copy_files(info.path, str(dest / info.base_name), source_filesystem=fs)
    except OSError:
        pass


def sync_callback(fn):
    """A TrainerCallback that calls `fn` after each checkpoint save."""
    from transformers import TrainerCallback

    class SyncOnSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            fn()

    return SyncOnSave()
