"""Cron expressions and time zones of schedules, and the APScheduler trigger that reads them with croniter.

croniter is the same reader the crontab/Kubernetes exports are checked with (APScheduler 3's own
`from_crontab` numbers weekdays from Monday=0, unlike cron).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from orchestrator.core.errors import UserError

CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def check_timezone(tz: str):
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(
            f"--timezone '{tz}': not a known time zone; use an IANA name like UTC or Europe/Berlin."
        ) from None


def check_cron(expr: str) -> str:
    """The expression, normalized, if cron (and so crontab and Kubernetes) can run it.

    Raises:
        UserError: not 5 fields or a macro, or a field out of range.
    """
    from croniter import croniter

    expr = " ".join((expr or "").split())
    fmt = (
        "use 5 fields 'minute hour day-of-month month day-of-week' (e.g. '0 3 * * 1' is Mondays at 03:00) "
        f"or one of {', '.join(CRON_MACROS)}"
    )
    if expr.startswith("@"):
        if expr not in CRON_MACROS:
            raise UserError(f"--cron '{expr}': unknown macro; {fmt}.")
        return expr
    if len(expr.split()) != 5:
        raise UserError(f"--cron '{expr}': has {len(expr.split())} fields; {fmt}.")
    try:
        croniter(expr).get_next(datetime)
    except Exception as e:  # croniter raises several error types for bad fields
        raise UserError(f"--cron '{expr}': not a valid cron expression ({e}); {fmt}.") from None
    return expr


# ---- the trigger: cron semantics by croniter ------------------------------------------------

try:
    from apscheduler.triggers.base import BaseTrigger as _BaseTrigger
except ImportError:  # pragma: no cover - apscheduler is a dependency
    _BaseTrigger = object


class CrontabTrigger(_BaseTrigger):
    """An APScheduler trigger that fires when croniter says a crontab expression does.

    Args:
        expr: a checked cron expression (see check_cron).
        tz: IANA time zone the expression is read in.
    """

    def __init__(self, expr: str, tz: str = "UTC"):
        self.expr = expr
        self.tz = tz

    def get_next_fire_time(self, previous_fire_time, now):
        from zoneinfo import ZoneInfo

        from croniter import croniter

        # Same contract as APScheduler's CronTrigger: the first matching time at or after
        # min(now, previous + 1 us), which lets the scheduler enumerate missed run times.
        start = now if previous_fire_time is None else min(now, previous_fire_time + timedelta(microseconds=1))
        base = start.astimezone(ZoneInfo(self.tz)) - timedelta(microseconds=1)
        return croniter(self.expr, base).get_next(datetime)

    def __getstate__(self):
        return {"version": 1, "expr": self.expr, "tz": self.tz}

    def __setstate__(self, state):
        self.expr, self.tz = state["expr"], state["tz"]

    def __str__(self):
        return f"cron[{self.expr} {self.tz}]"

    def __repr__(self):
        return f"<CrontabTrigger ({self.expr!r}, tz={self.tz!r})>"
