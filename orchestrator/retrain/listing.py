"""The text `history`, `champion` and `schedule list` print: registry records, the champion pointer and
schedules as lines."""

from __future__ import annotations

import json
from typing import Any, Dict, List


def fmt_score(v) -> str:
    return "-" if v is None else f"{v:.6g}"


def history_table(rows: List[Dict[str, Any]]) -> List[str]:
    """History records as an aligned table (header first); the reason column is last and not padded."""
    header = ("time", "name", "decision", "version", "challenger", "champion", "data", "job", "reason")
    table = [header]
    for r in rows:
        ch, cp = r.get("challenger") or {}, r.get("champion") or {}
        table.append(
            (
                r.get("time", "")[:19],
                r.get("name", ""),
                r.get("decision", ""),
                r.get("version") or "-",
                fmt_score(ch.get("score")),
                fmt_score(cp.get("score")),
                (r.get("data_fingerprint") or "-")[:12],
                r.get("job_id") or "-",
                r.get("reason", ""),
            )
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + str(row[-1]) for row in table]


def champion_lines(name: str, champ: Dict[str, Any]) -> List[str]:
    """The champion pointer of `name`: version, since when, where, its score and hyperparameters."""
    lines = [
        f"{name}: version {champ['version']} since {champ.get('since')}",
        f"  location: {champ['location']}",
        f"  {champ.get('metric')}: {fmt_score(champ.get('score'))}",
    ]
    if champ.get("hparams"):
        lines.append(f"  hparams: {json.dumps(champ['hparams'], sort_keys=True)}")
    return lines


def schedule_lines(s: Dict[str, Any]) -> List[str]:
    """A schedule (as list_schedules describes it): when, next and last run, and the command it runs."""
    when = s["cron"] or f"every {s['every_s']:g}s"
    last = s["last_run"]
    if last:
        last_s = f"{last['slot']} {last['status']}" + (f" (exit {last['rc']})" if last.get("rc") is not None else "")
    else:
        last_s = "never"
    return [
        f"{s['name']}: {when} {s['timezone']}  next {s['next_run'] or '-'}  last {last_s}",
        f"  qlora-launch retrain {s['config']}" + (f" --address {s['address']}" if s.get("address") else ""),
    ]
