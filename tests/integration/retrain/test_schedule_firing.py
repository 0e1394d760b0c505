"""Schedules firing for real: subprocess runs under the lock and the ledger, and the daemon's misfire
policy (the quick checks of cron, the store and the exports are in tests/unit/retrain/test_schedule.py)."""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from orchestrator.retrain.daemon import run_scheduler
from orchestrator.retrain.firing import fire
from orchestrator.retrain.ledger import Ledger, slot_key
from orchestrator.retrain.schedule import _Admin, add_schedule, list_schedules
from orchestrator.retrain.schedule_paths import store_path
from tests.unit.retrain.test_schedule import config  # noqa: F401  (pytest fixture)

UTC = timezone.utc


# ---- one firing: lock and ledger -------------------------------------------------------------------


def _recorder(marker: Path, sleep_s: float):
    """argv_for: a run that appends its slot to `marker` after sleeping (stands in for a retrain)."""

    def argv_for(spec, slot):
        code = f"import time; time.sleep({sleep_s}); open({str(marker)!r}, 'a').write({slot!r} + '\\n')"
        return [sys.executable, "-c", code]

    return argv_for


def test_two_overlapping_triggers_give_one_run(tmp_path):
    store = store_path(str(tmp_path / "schedules.sqlite"))
    marker = tmp_path / "runs.txt"
    spec = {"name": "nightly", "config": "unused.yaml"}
    t0 = datetime(2025, 1, 6, 3, 0, tzinfo=UTC)
    results = {}
    barrier = threading.Barrier(2)

    def trigger(i):
        barrier.wait()
        results[i] = fire(spec, t0 + timedelta(seconds=i), store, _recorder(marker, 1.5))

    threads = [threading.Thread(target=trigger, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == ["busy", "ok"]
    assert len(marker.read_text().splitlines()) == 1
    statuses = sorted(r["status"] for r in Ledger(store).runs("nightly"))
    assert statuses == ["ok", "skipped-busy"]


def test_a_slot_runs_at_most_once(tmp_path):
    store = store_path(str(tmp_path / "schedules.sqlite"))
    marker = tmp_path / "runs.txt"
    spec = {"name": "nightly", "config": "unused.yaml"}
    slot = datetime(2025, 1, 6, 3, 0, tzinfo=UTC)
    assert fire(spec, slot, store, _recorder(marker, 0)) == "ok"
    # e.g. a scheduler killed after starting the run but before saving the next run time
    assert fire(spec, slot, store, _recorder(marker, 0)) == "duplicate"
    assert marker.read_text().splitlines() == [slot_key(slot)]
    assert (tmp_path / "logs" / "nightly" / f"{slot_key(slot)}.log").exists()


def test_misfire_policy_coalesces_recent_misses_and_skips_stale_ones(config, tmp_path):
    """While the scheduler was down, 'recent' missed 3 hourly runs (the last 10 min ago, grace 1 h)
    and 'stale' missed 3 (the last 30 min ago, grace 10 min): one catch-up run of 'recent', none of 'stale'."""
    store = str(tmp_path / "schedules.sqlite")
    add_schedule("recent", str(config), every_s=3600, misfire_grace_s=3600, store=store)
    add_schedule("stale", str(config), every_s=3600, misfire_grace_s=600, store=store)
    now = datetime.now(UTC)
    recent_first = now - timedelta(hours=2, minutes=10)
    with _Admin(store) as sched:  # time compression: pretend the daemon has been down for hours
        sched.modify_job("recent", next_run_time=recent_first)
        sched.modify_job("stale", next_run_time=now - timedelta(hours=2, minutes=30))
    # (coalescing: 'recent' is due at -2h10m, -1h10m and -10m; only the last is run)

    marker = tmp_path / "runs.txt"
    stop = threading.Event()
    t = threading.Thread(
        target=run_scheduler,
        args=(store,),
        kwargs=dict(poll_s=0.2, stop=stop, argv_for=_recorder(marker, 0), echo=lambda s: None),
    )
    t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (marker.exists() and marker.read_text()):
        time.sleep(0.1)
    time.sleep(1.0)  # room for a wrong second run to show up
    stop.set()
    t.join(timeout=20)
    runs = Ledger(store_path(store)).runs()
    stale_last = now - timedelta(minutes=30)
    assert [(r["name"], r["slot"], r["status"]) for r in runs] == [
        ("recent", slot_key(recent_first + timedelta(hours=2)), "ok"),
        ("stale", slot_key(stale_last), "missed"),  # recorded, not run
    ]
    assert marker.read_text().splitlines() == [slot_key(recent_first + timedelta(hours=2))]
    # both moved on to their next time in the future
    for s in list_schedules(store):
        assert datetime.fromisoformat(s["next_run"]) > now
