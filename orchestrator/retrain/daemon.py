"""The scheduler process (`qlora-launch schedule run`): runs every stored schedule's retrain on time.

Guarantees:
- Restart-safe: schedules and their next run times are in the store; the daemon keeps no state of
  its own. Each firing claims its (schedule, scheduled time) slot in the ledger first
  (orchestrator.retrain.firing), so a slot runs at most once.
- Misfire policy: runs missed while the scheduler was down are coalesced into one catch-up run,
  made only if the latest missed time is less than the schedule's misfire grace (default 1 hour,
  `schedule add --misfire-grace`) ago; older misses are skipped and recorded in the ledger.
- No overlap: a schedule runs one retrain at a time (the firing's lock), and skipped slots are recorded.
- Each run is the subprocess `qlora-launch retrain CONFIG [--address ...]`; with an address, that
  command submits the retrain to the Ray cluster as a Ray Job and follows it to the end.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from orchestrator.core.errors import UserError
from orchestrator.retrain.firing import fire
from orchestrator.retrain.ledger import Ledger, slot_key
from orchestrator.retrain.schedule_paths import store_path

DEFAULT_MISFIRE_GRACE_S = 3600
log = logging.getLogger("qlora_launch.schedule")

_ctx = threading.local()


def _fire_job(**spec: Any) -> str:
    """What the stored APScheduler jobs call; the executor supplies the scheduled time and the store."""
    slot = getattr(_ctx, "run_time", None) or datetime.now(timezone.utc)
    store = getattr(_ctx, "store", None) or store_path()
    return fire(spec, slot, store, getattr(_ctx, "argv_for", None))


# What the stored APScheduler jobs name as their function (kept in the SQLite store).
FIRE_FUNC = f"{__name__}:{_fire_job.__name__}"


def _executor_class():
    from apscheduler.executors.base import run_job
    from apscheduler.executors.pool import ThreadPoolExecutor

    class SlotExecutor(ThreadPoolExecutor):
        """A thread pool that tells each run its scheduled time (the ledger's slot)."""

        def __init__(self, store: Path, argv_for=None, max_workers: int = 4):
            super().__init__(max_workers)
            self.store = store
            self.argv_for = argv_for

        def _run(self, job, alias, run_times, logger_name):
            events = []
            for rt in run_times:
                _ctx.run_time, _ctx.store, _ctx.argv_for = rt, self.store, self.argv_for
                try:
                    events += run_job(job, alias, [rt], logger_name)
                finally:
                    _ctx.run_time = _ctx.store = _ctx.argv_for = None
            return events

        def _do_submit_job(self, job, run_times):
            def callback(f):
                exc = f.exception()
                if exc:
                    self._run_job_error(job.id, exc, getattr(exc, "__traceback__", None))
                else:
                    self._run_job_success(job.id, f.result())

            f = self._pool.submit(self._run, job, job._jobstore_alias, run_times, self._logger.name)
            f.add_done_callback(callback)

    return SlotExecutor


def _ledger_listener(ledger: Ledger):
    """Slots APScheduler skipped (missed beyond the grace, or previous run still going) go into the ledger too."""
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED

    def on_event(event):
        try:
            if event.code == EVENT_JOB_MISSED:
                ledger.claim(event.job_id, slot_key(event.scheduled_run_time), status="missed")
            elif event.code == EVENT_JOB_MAX_INSTANCES:
                for rt in event.scheduled_run_times:
                    ledger.claim(event.job_id, slot_key(rt), status="skipped-busy")
        except Exception:  # bookkeeping must never stop the scheduler
            log.exception("could not record a skipped run of %s", event.job_id)

    return on_event


def _scheduler(store: Path, executor=None):
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    executors = {"default": executor} if executor is not None else None
    return BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{store}")},
        executors=executors or {},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": DEFAULT_MISFIRE_GRACE_S},
        timezone=timezone.utc,
    )


def run_scheduler(
    store: Optional[str] = None,
    *,
    poll_s: float = 10.0,
    max_workers: int = 4,
    stop: Optional[threading.Event] = None,
    argv_for: Optional[Callable[[Dict[str, Any], str], List[str]]] = None,
    echo: Callable[[str], None] = lambda s: print(s, flush=True),
) -> None:
    """Run the scheduler until `stop` is set (or SIGTERM/SIGINT in the main thread).

    The store is re-read every `poll_s` seconds, so schedules added or removed by other processes
    take effect without a restart. On stop, running retrains are waited for.

    Raises:
        UserError: another scheduler holds this store.
    """
    path = store_path(store)
    daemon_fd = os.open(str(path.parent / "scheduler.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(daemon_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(daemon_fd)
        raise UserError(f"another `qlora-launch schedule run` already serves {path}; run only one per store.") from None
    Ledger(path)
    sched = _scheduler(path, _executor_class()(path, argv_for, max_workers))
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED

    sched.add_listener(_ledger_listener(Ledger(path)), EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum, frame):
            if stop.is_set():  # second signal: leave now; running retrains keep their locks
                os._exit(128 + signum)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    sched.start()
    jobs = sched.get_jobs()
    echo(
        f"scheduler: store {path}, {len(jobs)} schedule(s); missed runs are coalesced into one catch-up run "
        f"within each schedule's misfire grace; polling every {poll_s:g}s. Stop with Ctrl-C."
    )
    for j in jobs:
        echo(f"  {j.id}: next run {j.next_run_time.isoformat() if j.next_run_time else '-'}")
    try:
        while not stop.wait(poll_s):
            sched.wakeup()  # picks up schedules added or removed by other processes
    finally:
        echo("scheduler: stopping; waiting for running retrains (Ctrl-C again to leave them running)")
        sched.shutdown(wait=True)
        os.close(daemon_fd)
