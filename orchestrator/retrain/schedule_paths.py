"""Where the schedules live: the SQLite store, and beside it locks/<name>.lock and logs/<name>/."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from orchestrator.core.errors import UserError


def store_path(store: Optional[str] = None) -> Path:
    """The SQLite file: --store, else $QLORA_LAUNCH_HOME/schedules.sqlite, else ~/.qlora-launch/."""
    if store:
        p = Path(store).expanduser()
        if p.is_dir():
            p = p / "schedules.sqlite"
    else:
        home = os.environ.get("QLORA_LAUNCH_HOME") or "~/.qlora-launch"
        p = Path(home).expanduser() / "schedules.sqlite"
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {p.parent} for the schedule store: {e.strerror}; pass --store FILE.") from None
    return p.resolve()


def lock_path(store: Path, name: str) -> Path:
    p = store.parent / "locks" / f"{name}.lock"
    p.parent.mkdir(parents=True, exist_ok=True)
    return p
