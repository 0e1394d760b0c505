"""`qlora-launch train` in a child process, for tests that kill or freeze its Ray Train worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import psutil


def start_train(cfg: Path, cwd: Path, env: Dict[str, str], *args: str) -> subprocess.Popen:
    """`python -m orchestrator.cli train CFG --cpus 2 ARGS...` in its own session, output piped as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "train", str(cfg), "--cpus", "2", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def train_workers(proc: subprocess.Popen) -> List[psutil.Process]:
    """The Ray Train worker processes under `proc`."""
    return [
        p for p in psutil.Process(proc.pid).children(recursive=True) if "RayTrainWorker" in " ".join(p.cmdline()[:1])
    ]


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill `proc` and everything under it, if it is still running."""
    if proc.poll() is None:
        try:
            family = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for p in family:
            try:
                p.kill()
            except psutil.NoSuchProcess:  # it exited on its own meanwhile
                pass
