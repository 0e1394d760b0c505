"""One firing of a schedule: claim its slot, take the schedule's lock, run the retrain as a subprocess.

- A slot runs at most once: it is first claimed in the ledger (a primary key), so a daemon that died
  between starting a run and saving the next run time, or two daemons on one store, cannot repeat it.
- No overlap: a run holds an exclusive flock on `locks/<name>.lock`, passed on to the retrain process
  itself, so a firing while the previous run is still going (even one left running by a killed
  scheduler) is skipped and recorded.
- The run is `qlora-launch retrain CONFIG [--address ...]`, logged to `logs/<name>/<slot>.log`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from orchestrator.retrain.ledger import Ledger, slot_key
from orchestrator.retrain.schedule_paths import lock_path

log = logging.getLogger("qlora_launch.schedule")


def retrain_argv(spec: Dict[str, Any], slot: str) -> List[str]:
    """The command a firing runs: this interpreter's `qlora-launch retrain CONFIG [--address A]`."""
    argv = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "retrain",
        spec["config"],
        "--job-id",
        f"schedule-{spec['name']}-{slot}",
    ]
    if spec.get("address"):
        argv += ["--address", spec["address"]]
    return argv


def fire(
    spec: Dict[str, Any],
    slot: datetime,
    store: Path,
    argv_for: Optional[Callable[[Dict[str, Any], str], List[str]]] = None,
) -> str:
    """Run one scheduled retrain unless its previous run is still going or this slot already ran.

    Returns:
        "ok" or "failed" (the retrain's exit status), "busy" (previous run still going),
        or "duplicate" (this slot was already claimed).
    """
    name = spec["name"]
    key = slot_key(slot)
    ledger = Ledger(store)
    fd = os.open(str(lock_path(store, name)), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            ledger.claim(name, key, status="skipped-busy")
            log.warning("schedule %s: run for %s skipped: the previous run is still going", name, key)
            return "busy"
        logfile = store.parent / "logs" / name / f"{key}.log"
        if not ledger.claim(name, key, log_path=str(logfile)):
            log.warning("schedule %s: run for %s already claimed; not running it twice", name, key)
            return "duplicate"
        ledger.mark_interrupted(name, key)
        argv = (argv_for or retrain_argv)(spec, key)
        logfile.parent.mkdir(parents=True, exist_ok=True)
        log.info("schedule %s: running %s (slot %s, log %s)", name, shlex.join(argv), key, logfile)
        env = {**os.environ, "QLORA_LAUNCH_SCHEDULE": name}
        with open(logfile, "ab") as out:
            # The child inherits the locked descriptor: if this scheduler dies, the lock lives
            # until the retrain itself ends, so a restarted scheduler cannot overlap it.
            try:
                proc = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, pass_fds=(fd,), env=env
                )
            except OSError as e:
                ledger.update(name, key, status="failed", finished=datetime.now(timezone.utc).isoformat())
                log.error("schedule %s: could not start %s: %s", name, argv[0], e)
                return "failed"
            ledger.update(name, key, pid=proc.pid)
            rc = proc.wait()
        status = "ok" if rc == 0 else "failed"
        ledger.update(name, key, status=status, rc=rc, finished=datetime.now(timezone.utc).isoformat())
        log.info("schedule %s: slot %s %s (exit %s)", name, key, status, rc)
        return status
    finally:
        os.close(fd)
