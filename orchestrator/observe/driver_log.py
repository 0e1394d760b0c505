"""The driver's own log: what Ray, Tune and the libraries say in this process goes to RUN_DIR/driver.log.

The terminal keeps the product's lines (click.echo), the live table and real problems. Library loggers
(Ray's included), Python warnings and progress bars go to the file instead; with `--verbose` they are
shown on the terminal as well, as before.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Tuple

from orchestrator.core.rundir import DRIVER_LOG

# Env that keeps libraries from drawing progress bars or printing on the driver's terminal.
QUIET_DRIVER_ENV = {
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    # Tune's own reporter prints an experiment header and result paths even at verbose=0; the legacy one
    # prints nothing at verbose=0 (our progress display shows the search).
    "RAY_AIR_NEW_OUTPUT": "0",
}


@contextmanager
def driver_logging(run_dir: Path, verbose: bool, cfg=None) -> Iterator[Path]:
    """Send library logging and warnings of this process to run_dir/driver.log while inside.

    Without `verbose`, the console handlers of Ray's loggers are raised to CRITICAL for the duration
    (their records still reach the file). With `cfg` of an s3:// output, the closed log is uploaded to
    the run's S3 folder at the end.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / DRIVER_LOG
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_root_level = root.level
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, logging.INFO))
    logging.captureWarnings(True)
    env_set = []
    if not verbose:
        for k, v in QUIET_DRIVER_ENV.items():
            if k not in os.environ:
                os.environ[k] = v
                env_set.append(k)
    raised: List[Tuple[logging.Handler, int]] = []
    ray_logger = logging.getLogger("ray")
    ray_logger.addHandler(handler)
    old_ray_level = ray_logger.level
    ray_logger.setLevel(logging.INFO)
    for h in ray_logger.handlers:
        if h is not handler and isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            raised.append((h, h.level))
            h.setLevel(logging.ERROR if verbose else logging.CRITICAL)
    unpatch = None if verbose else _raylet_messages_to_log()
    try:
        yield path
    finally:
        if unpatch:
            unpatch()
        for h, level in raised:
            h.setLevel(level)
        ray_logger.removeHandler(handler)
        ray_logger.setLevel(old_ray_level)
        root.removeHandler(handler)
        root.setLevel(old_root_level)
        logging.captureWarnings(False)
        handler.close()
        for k in env_set:
            os.environ.pop(k, None)
        if cfg is not None:
            from orchestrator.storage.run_upload import upload_driver_log

            upload_driver_log(cfg, run_dir)


def _raylet_messages_to_log():
    """Ray prints the raylet's messages to the driver's terminal (e.g. "N PYTHON worker processes have been
    started ... 4x the maximum expected startup concurrency", normal with fractional trial CPUs on a small
    machine). They go to driver.log instead; what they cause (a killed worker, a failed trial) reaches
    the terminal as the trial's own failure line. Returns the undo, or None when Ray's hook moved."""
    try:
        import ray._private.worker as ray_worker
    except ImportError:  # pragma: no cover
        return None
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None:
        return None
    log = logging.getLogger("ray.raylet")

    def to_log(data, ignore_prefix):
        if data.get("pid") == "raylet":
            for line in data.get("lines") or []:
                log.warning(line)
            return None
        return original(data, ignore_prefix)

    ray_worker.print_to_stdstream = to_log

    def undo():
        ray_worker.print_to_stdstream = original

    return undo
