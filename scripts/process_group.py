"""A child process in its own process group, waited for until a timeout, then stopped with its whole group
(torchrun's ranks, a `qlora-launch train`'s Ray processes): the device checks' sub-runs (scripts/gpu_*.py)."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Optional, Sequence, Tuple

# Each signal, then this many seconds for the group to end before the next one.
STOP_STEPS: Tuple[Tuple[int, float], ...] = ((signal.SIGTERM, 5), (signal.SIGKILL, 5))


def run_group(cmd: Sequence[str], timeout: Optional[float], steps=STOP_STEPS, **popen) -> Optional[int]:
    """Run `cmd` in a new session; its exit code, or None when it ran past `timeout` (then its group is sent
    each signal of `steps` in turn until it ends). If this process is interrupted or terminated meanwhile
    (SIGTERM: `terminate_on_sigterm`), the group is stopped the same way before the exception goes on."""
    proc = subprocess.Popen(list(cmd), start_new_session=True, **popen)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc, steps)
        return None
    except BaseException:
        stop(proc, steps)
        raise


def stop(proc: subprocess.Popen, steps=STOP_STEPS) -> None:
    for sig, grace in steps:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def terminate_on_sigterm() -> None:
    """SIGTERM (the shell's `timeout`) raises SystemExit here, so `run_group` stops the running child's group."""

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
