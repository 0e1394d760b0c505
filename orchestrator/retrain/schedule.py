"""Schedules for `qlora-launch retrain`: add, list, show and remove them in the schedule store.

Schedules live in a SQLite file (APScheduler's SQLAlchemyJobStore), by default
`~/.qlora-launch/schedules.sqlite` (env QLORA_LAUNCH_HOME moves the folder, `--store` names the
file); see orchestrator.retrain.schedule_paths. Each one is a stored job that calls the daemon's
firing function (orchestrator.retrain.daemon runs them); editing the store here never runs anything.
"""

from __future__ import annotations

import re
from datetime import timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

from orchestrator.core.errors import UserError, did_you_mean
from orchestrator.retrain.cron import CrontabTrigger, check_cron, check_timezone
from orchestrator.retrain.daemon import DEFAULT_MISFIRE_GRACE_S, FIRE_FUNC
from orchestrator.retrain.ledger import Ledger
from orchestrator.retrain.schedule_paths import store_path

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def check_schedule_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise UserError(f"schedule name '{name}': use letters, digits, '.', '_' and '-' (at most 63 characters).")
    return name


def _store_only_scheduler_class():
    from apscheduler.schedulers.base import BaseScheduler

    class StoreOnlyScheduler(BaseScheduler):
        """Reads and writes the job store; has no loop, so it can never run a job."""

        def wakeup(self):
            pass

        def shutdown(self, wait=True):
            super().shutdown(wait)

    return StoreOnlyScheduler


class _Admin:
    """A scheduler on the store that edits jobs and runs nothing (used by add/list/remove/export)."""

    def __init__(self, store: Optional[str]):
        self.path = store_path(store)

    def __enter__(self):
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

        self.sched = _store_only_scheduler_class()(
            jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{self.path}")}, timezone=timezone.utc
        )
        try:
            self.sched.start(paused=True)
        except Exception as e:
            raise UserError(f"cannot open the schedule store {self.path}: {e}") from None
        return self.sched

    def __exit__(self, *exc):
        self.sched.shutdown(wait=False)


def add_schedule(
    name: str,
    config: str,
    *,
    cron: Optional[str] = None,
    every_s: Optional[float] = None,
    address: Optional[str] = None,
    tz: str = "UTC",
    misfire_grace_s: int = DEFAULT_MISFIRE_GRACE_S,
    store: Optional[str] = None,
) -> Dict[str, Any]:
    """Add a schedule that runs `qlora-launch retrain CONFIG` on a cron (or, for tests, every N seconds).

    Raises:
        UserError: bad name, cron, time zone or config, or the name is taken.
    """
    from apscheduler.jobstores.base import ConflictingIdError
    from apscheduler.triggers.interval import IntervalTrigger

    from orchestrator.core.config_load import load_config
    from orchestrator.retrain.config_check import check_retrain_config

    check_schedule_name(name)
    if (cron is None) == (every_s is None):
        raise UserError("give the schedule as --cron 'EXPR' (e.g. '0 3 * * 1').")
    check_timezone(tz)
    if misfire_grace_s < 1:
        raise UserError(f"--misfire-grace {misfire_grace_s}: use at least 1 second.")
    problems = []
    cfg_path = str(Path(config).expanduser().resolve())
    try:
        check_retrain_config(load_config(cfg_path))
    except UserError as e:
        problems += [f"{config}: {p}" for p in e.problems]
    if cron is not None:
        try:
            cron = check_cron(cron)
        except UserError as e:
            problems += e.problems
    if problems:
        raise UserError(*problems)
    if cron is not None:
        trigger = CrontabTrigger(cron, tz)
    else:
        trigger = IntervalTrigger(seconds=float(every_s), timezone=timezone.utc)
    spec = {
        "name": name,
        "config": cfg_path,
        "address": address,
        "cron": cron,
        "every_s": every_s,
        "timezone": tz,
        "misfire_grace_s": misfire_grace_s,
    }
    with _Admin(store) as sched:
        try:
            sched.add_job(
                FIRE_FUNC,
                trigger=trigger,
                id=name,
                name=name,
                kwargs=spec,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=misfire_grace_s,
            )
        except ConflictingIdError:
            raise UserError(
                f"a schedule named '{name}' exists; remove it first (`qlora-launch schedule remove {name}`)."
            ) from None
        return _describe(sched.get_job(name), None)


def _describe(job, ledger: Optional[Ledger]) -> Dict[str, Any]:
    spec = dict(job.kwargs)
    spec["next_run"] = job.next_run_time.isoformat() if job.next_run_time else None
    runs = ledger.runs(job.id) if ledger else []
    spec["last_run"] = runs[-1] if runs else None
    spec["runs"] = len(runs)
    return spec


def list_schedules(store: Optional[str] = None) -> List[Dict[str, Any]]:
    with _Admin(store) as sched:
        ledger = Ledger(store_path(store))
        return [_describe(j, ledger) for j in sorted(sched.get_jobs(), key=lambda j: j.id)]


def get_schedule(name: str, store: Optional[str] = None) -> Dict[str, Any]:
    """The schedule `name`.

    Raises:
        UserError: no such schedule (with the known names).
    """
    with _Admin(store) as sched:
        job = sched.get_job(name)
        if job is None:
            raise _unknown(name, [j.id for j in sched.get_jobs()], store)
        return _describe(job, Ledger(store_path(store)))


def remove_schedule(name: str, store: Optional[str] = None) -> None:
    from apscheduler.jobstores.base import JobLookupError

    with _Admin(store) as sched:
        try:
            sched.remove_job(name)
        except JobLookupError:
            raise _unknown(name, [j.id for j in sched.get_jobs()], store) from None


def _unknown(name: str, known: List[str], store: Optional[str]) -> UserError:
    return UserError(
        f"no schedule named '{name}' in {store_path(store)}.{did_you_mean(name, known)} "
        f"Known schedules: {', '.join(known) or 'none'} (see `qlora-launch schedule list`)."
    )
