"""The schedules' run ledger: one row per (schedule, scheduled time), in the store's SQLite file.

Claiming a slot is an INSERT on a primary key, so a slot runs at most once even across processes.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS qlora_schedule_runs (
    name TEXT NOT NULL, slot TEXT NOT NULL, status TEXT NOT NULL, rc INTEGER, pid INTEGER,
    started TEXT, finished TEXT, log TEXT, PRIMARY KEY (name, slot))
"""


def slot_key(slot: datetime) -> str:
    return slot.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


class Ledger:
    """Runs claimed and their results, in the store's SQLite file (safe across processes)."""

    def __init__(self, path: Path):
        self.path = path
        with self._conn() as c:
            c.execute(LEDGER_DDL)

    def _conn(self):
        c = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        c.row_factory = sqlite3.Row
        return _Closing(c)

    def claim(self, name: str, slot: str, status: str = "running", log_path: str = "") -> bool:
        """Insert the slot; False when it was already claimed (ran, running or skipped)."""
        now = datetime.now(timezone.utc).isoformat()
        with self._conn() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO qlora_schedule_runs (name, slot, status, started, log) VALUES (?,?,?,?,?)",
                (name, slot, status, now, log_path),
            )
            return cur.rowcount == 1

    def update(self, name: str, slot: str, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._conn() as c:
            c.execute(
                f"UPDATE qlora_schedule_runs SET {cols} WHERE name = ? AND slot = ?", (*fields.values(), name, slot)
            )

    def mark_interrupted(self, name: str, except_slot: str) -> None:
        """Runs left 'running' by a killed scheduler whose lock is free again did not finish here."""
        with self._conn() as c:
            c.execute(
                "UPDATE qlora_schedule_runs SET status = 'interrupted' "
                "WHERE name = ? AND status = 'running' AND slot != ?",
                (name, except_slot),
            )

    def runs(self, name: Optional[str] = None) -> List[Dict[str, Any]]:
        with self._conn() as c:
            if name is None:
                rows = c.execute("SELECT * FROM qlora_schedule_runs ORDER BY name, slot").fetchall()
            else:
                rows = c.execute("SELECT * FROM qlora_schedule_runs WHERE name = ? ORDER BY slot", (name,)).fetchall()
        return [dict(r) for r in rows]


class _Closing:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()
