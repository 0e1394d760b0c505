"""Schedules for `qlora-launch retrain`, and the scheduler process that runs them.

Schedules live in a SQLite file (APScheduler's SQLAlchemyJobStore), by default
`~/.qlora-launch/schedules.sqlite` (env QLORA_LAUNCH_HOME moves the folder, `--store` names the
file). Beside it: `locks/<name>.lock` and `logs/<name>/<slot>.log`.

Guarantees of `schedule run`:
- Cron expressions are read by croniter, the same reader the crontab/Kubernetes exports are checked
  with (APScheduler 3's own `from_crontab` numbers weekdays from Monday=0, unlike cron).
- Restart-safe: schedules and their next run times are in the store; the daemon keeps no state of
  its own. Each firing first claims its (schedule, scheduled time) slot in a ledger table of the same
  SQLite file (a primary key), so a slot runs at most once even if the daemon dies between starting a
  run and saving the next run time, or two daemons share the store.
- Misfire policy: runs missed while the scheduler was down are coalesced into one catch-up run,
  made only if the latest missed time is less than the schedule's misfire grace (default 1 hour,
  `schedule add --misfire-grace`) ago; older misses are skipped and logged.
- No overlap: a run holds an exclusive flock on `locks/<name>.lock`, passed on to the retrain process
  itself, so a trigger that fires while the previous run is still going (even one left running by a
  killed scheduler) is skipped and logged.
- Each run is the subprocess `qlora-launch retrain CONFIG [--address ...]`; with an address, that
  command submits the retrain to the Ray cluster as a Ray Job and follows it to the end.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from orchestrator.errors import UserError, did_you_mean

DEFAULT_MISFIRE_GRACE_S = 3600
FIRE_FUNC = "orchestrator.schedule:_fire_job"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS qlora_schedule_runs (
    name TEXT NOT NULL, slot TEXT NOT NULL, status TEXT NOT NULL, rc INTEGER, pid INTEGER,
    started TEXT, finished TEXT, log TEXT, PRIMARY KEY (name, slot))
"""
log = logging.getLogger("qlora_launch.schedule")


# ---- where things live ----------------------------------------------------------------------

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
        raise UserError(f"cannot create {p.parent} for the schedule store: {e.strerror}; pass --store FILE.")
    return p.resolve()


def lock_path(store: Path, name: str) -> Path:
    p = store.parent / "locks" / f"{name}.lock"
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def slot_key(slot: datetime) -> str:
    return slot.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


# ---- validation -----------------------------------------------------------------------------

def check_schedule_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise UserError(f"schedule name '{name}': use letters, digits, '.', '_' and '-' (at most 63 characters).")
    return name


def check_timezone(tz: str):
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"--timezone '{tz}': not a known time zone; use an IANA name like UTC or Europe/Berlin.") from None


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


# ---- the ledger: one row per (schedule, scheduled time) ---------------------------------------

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
            c.execute(f"UPDATE qlora_schedule_runs SET {cols} WHERE name = ? AND slot = ?", (*fields.values(), name, slot))

    def mark_interrupted(self, name: str, except_slot: str) -> None:
        """Runs left 'running' by a killed scheduler whose lock is free again did not finish here."""
        with self._conn() as c:
            c.execute(
                "UPDATE qlora_schedule_runs SET status = 'interrupted' WHERE name = ? AND status = 'running' AND slot != ?",
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


# ---- one firing -----------------------------------------------------------------------------

def retrain_argv(spec: Dict[str, Any], slot: str) -> List[str]:
    """The command a firing runs: this interpreter's `qlora-launch retrain CONFIG [--address A]`."""
    argv = [sys.executable, "-m", "orchestrator.cli", "retrain", spec["config"], "--job-id", f"schedule-{spec['name']}-{slot}"]
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
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        pass_fds=(fd,), env=env)
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


_ctx = threading.local()


def _fire_job(**spec: Any) -> str:
    """What the stored APScheduler jobs call; the executor supplies the scheduled time and the store."""
    slot = getattr(_ctx, "run_time", None) or datetime.now(timezone.utc)
    store = getattr(_ctx, "store", None) or store_path()
    return fire(spec, slot, store, getattr(_ctx, "argv_for", None))


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


# ---- the store: add / list / remove ---------------------------------------------------------

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

    from orchestrator.config import load_config
    from orchestrator.retrain import check_retrain_config

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
    spec = {"name": name, "config": cfg_path, "address": address, "cron": cron, "every_s": every_s,
            "timezone": tz, "misfire_grace_s": misfire_grace_s}
    with _Admin(store) as sched:
        try:
            sched.add_job(
                FIRE_FUNC, trigger=trigger, id=name, name=name, kwargs=spec,
                coalesce=True, max_instances=1, misfire_grace_time=misfire_grace_s,
            )
        except ConflictingIdError:
            raise UserError(f"a schedule named '{name}' exists; remove it first (`qlora-launch schedule remove {name}`).") from None
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


# ---- the daemon -----------------------------------------------------------------------------

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


# ---- export ---------------------------------------------------------------------------------

def _cli_path() -> str:
    cand = Path(sys.executable).parent / "qlora-launch"
    return str(cand) if cand.exists() else (shutil.which("qlora-launch") or "qlora-launch")


def export_schedule(name: str, fmt: str, store: Optional[str] = None, image: Optional[str] = None) -> str:
    """A crontab line or a Kubernetes CronJob manifest that runs the same retrain.

    Raises:
        UserError: unknown schedule, unknown format, or a schedule without a cron expression.
    """
    spec = get_schedule(name, store)
    if not spec.get("cron"):
        raise UserError(f"schedule '{name}' runs every {spec.get('every_s')}s, not on a cron; only cron schedules export.")
    if fmt == "crontab":
        return _crontab(spec, store_path(store))
    if fmt == "k8s":
        return _k8s(spec, image or os.environ.get("QLORA_LAUNCH_IMAGE") or "qlora-launch:latest")
    raise UserError(f"--format '{fmt}': use crontab or k8s.")


def _crontab(spec: Dict[str, Any], store: Path) -> str:
    cmd = [_cli_path(), "retrain", spec["config"]] + (["--address", spec["address"]] if spec.get("address") else [])
    logfile = store.parent / "logs" / spec["name"] / "cron.log"
    # flock -n keeps cron from starting a run while the previous one is going, like the daemon.
    line = (
        f"{spec['cron']} mkdir -p {shlex.quote(str(logfile.parent))} && flock -n "
        f"{shlex.quote(str(lock_path(store, spec['name'])))} {shlex.join(cmd)} >> {shlex.quote(str(logfile))} 2>&1"
    )
    line = line.replace("%", "\\%")  # % ends the command in crontab
    tz = spec.get("timezone") or "UTC"
    return (
        f"# qlora-launch schedule '{spec['name']}': times are {tz}; put CRON_TZ={tz} above this line "
        f"(cronie) or run cron in {tz}\n{line}\n"
    )


def _k8s(spec: Dict[str, Any], image: str) -> str:
    import yaml

    k8s_name = ("qlora-retrain-" + re.sub(r"[^a-z0-9-]", "-", spec["name"].lower())).strip("-")[:52].rstrip("-")
    cfg_name = Path(spec["config"]).name
    args = ["retrain", f"/etc/qlora-launch/{cfg_name}"] + (["--address", spec["address"]] if spec.get("address") else [])
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": k8s_name, "labels": {"app.kubernetes.io/name": "qlora-launch", "qlora-launch/schedule": spec["name"]}},
        "spec": {
            "schedule": spec["cron"],
            "timeZone": spec.get("timezone") or "UTC",
            "concurrencyPolicy": "Forbid",
            # Same misfire policy as the daemon: a missed run starts late only within the grace.
            "startingDeadlineSeconds": int(spec.get("misfire_grace_s") or DEFAULT_MISFIRE_GRACE_S),
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "metadata": {"labels": {"app.kubernetes.io/name": "qlora-launch"}},
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{
                                "name": "retrain",
                                "image": image,
                                "command": ["qlora-launch"],
                                "args": args,
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/qlora-launch", "readOnly": True}],
                            }],
                            "volumes": [{"name": "config", "configMap": {"name": k8s_name}}],
                        },
                    },
                }
            },
        },
    }
    header = (
        f"# qlora-launch schedule '{spec['name']}' as a Kubernetes CronJob. Create its config first:\n"
        f"#   kubectl create configmap {k8s_name} --from-file={cfg_name}={spec['config']}\n"
        "# Data paths and the registry must be reachable from the pod (s3://...); give AWS credentials\n"
        "# through a service-account role or an envFrom secretRef.\n"
    )
    return header + yaml.safe_dump(manifest, sort_keys=False)
