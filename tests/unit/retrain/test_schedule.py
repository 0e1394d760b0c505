"""Schedules: cron validation and semantics, the store, exports, the lock, the ledger, the misfire policy.

Time is compressed: triggers are asked for fire times at chosen instants, and the misfire test
rewrites a stored next-run time into the past instead of waiting for it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from croniter import croniter

from orchestrator.cli import cli
from orchestrator.core.errors import UserError
from orchestrator.retrain.cron import CrontabTrigger, check_cron
from orchestrator.retrain.schedule import get_schedule, list_schedules
from orchestrator.retrain.schedule_paths import store_path

UTC = timezone.utc


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config `schedule add` accepts: retrain section, held-out set, publish target."""
    (tmp_path / "train.jsonl").write_text('{"input": "a b", "output": "a"}\n')
    (tmp_path / "test.jsonl").write_text('{"input": "c d", "output": "c"}\n')
    p = tmp_path / "summarize.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": "t5-small"},
                "data": {"train": "train.jsonl", "test": "test.jsonl"},
                "publish": {"to": "s3://models-bucket/summarizer"},
                "retrain": {"name": "summarizer", "registry": str(tmp_path / "registry")},
            }
        )
    )
    return p


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "home" / "schedules.sqlite")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# ---- cron ---------------------------------------------------------------------------------------


def test_cron_reads_weekdays_like_cron_not_like_apscheduler3():
    # 2025-01-05 is a Sunday. Cron's 1 is Monday; APScheduler 3's from_crontab would read Tuesday.
    sunday = datetime(2025, 1, 5, 12, 0, tzinfo=UTC)
    nxt = CrontabTrigger("0 3 * * 1").get_next_fire_time(None, sunday)
    assert nxt == datetime(2025, 1, 6, 3, 0, tzinfo=UTC) and nxt.weekday() == 0
    # in another zone, 03:00 local
    berlin = CrontabTrigger("0 3 * * *", "Europe/Berlin").get_next_fire_time(None, sunday)
    assert berlin.astimezone(UTC) == datetime(2025, 1, 6, 2, 0, tzinfo=UTC)


def test_trigger_enumerates_missed_times_like_apschedulers_cron_trigger():
    t = CrontabTrigger("0 3 * * *")
    prev = datetime(2025, 1, 6, 3, 0, tzinfo=UTC)
    now = datetime(2025, 1, 8, 12, 0, tzinfo=UTC)
    times, nxt = [], prev
    while nxt <= now:
        times.append(nxt)
        nxt = t.get_next_fire_time(nxt, now)
    assert times == [prev, prev + timedelta(days=1), prev + timedelta(days=2)]
    assert nxt == datetime(2025, 1, 9, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize("expr", ["61 3 * * *", "0 3 * *", "0 0 3 * * 1", "@reboot", "every day", ""])
def test_invalid_cron_is_a_clear_error(expr):
    with pytest.raises(UserError, match="use 5 fields 'minute hour day-of-month month day-of-week'"):
        check_cron(expr)


@pytest.mark.parametrize("expr", ["0 3 * * 1", "*/15 * * * *", "0 3 1-7 * mon", "@daily"])
def test_valid_cron(expr):
    assert check_cron(expr) == expr


# ---- the store through the CLI ----------------------------------------------------------------------


def test_add_list_remove_persist_in_the_sqlite_store(config, store):
    r = invoke("schedule", "add", "nightly", "--cron", "0 3 * * 1", str(config), "--store", store)
    assert r.exit_code == 0, r.output
    assert "next run" in r.output
    # a fresh scheduler object on the same file sees it (nothing lives in memory)
    spec = get_schedule("nightly", store)
    assert spec["cron"] == "0 3 * * 1" and spec["config"] == str(config.resolve())
    nxt = datetime.fromisoformat(spec["next_run"])
    assert nxt.weekday() == 0 and (nxt.hour, nxt.minute) == (3, 0)
    r = invoke("schedule", "list", "--store", store)
    assert "nightly: 0 3 * * 1 UTC" in r.output and f"qlora-launch retrain {config.resolve()}" in r.output

    r = invoke("schedule", "add", "nightly", "--cron", "0 4 * * *", str(config), "--store", store)
    assert r.exit_code == 2 and "exists; remove it first" in r.output

    assert invoke("schedule", "remove", "nightly", "--store", store).exit_code == 0
    assert list_schedules(store) == []


def test_env_home_sets_the_default_store(config, tmp_path, monkeypatch):
    monkeypatch.setenv("QLORA_LAUNCH_HOME", str(tmp_path / "qhome"))
    assert store_path() == (tmp_path / "qhome" / "schedules.sqlite").resolve()
    assert invoke("schedule", "add", "w", "--cron", "@weekly", str(config)).exit_code == 0
    assert [s["name"] for s in list_schedules()] == ["w"]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["schedule", "add", "n", "--cron", "61 3 * * *", "{config}"],
            "--cron '61 3 * * *': not a valid cron expression",
        ),
        (
            ["schedule", "add", "n", "--cron", "0 3 * * 1", "{config}", "--timezone", "Mars/Base"],
            "not a known time zone",
        ),
        (["schedule", "add", "bad name", "--cron", "0 3 * * 1", "{config}"], "schedule name 'bad name'"),
        (["schedule", "remove", "nightlee"], "no schedule named 'nightlee'"),
        (["schedule", "export", "nightlee", "--format", "k8s"], "no schedule named 'nightlee'"),
    ],
)
def test_bad_schedule_input_exits_2(args, message, config, store):
    invoke("schedule", "add", "nightly", "--cron", "0 3 * * 1", str(config), "--store", store)
    r = invoke(*[a.format(config=config) for a in args], "--store", store)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    if "nightlee" in args:
        assert "Did you mean 'nightly'?" in r.output


def test_adding_a_config_without_eval_set_exits_2(config, store, tmp_path):
    bad = tmp_path / "no_eval.yaml"
    bad.write_text(config.read_text().replace("test: test.jsonl", "eval: null"))
    r = invoke("schedule", "add", "n", "--cron", "0 3 * * 1", str(bad), "--store", store)
    assert r.exit_code == 2 and "`retrain.eval_data`: no held-out set" in r.output


# ---- exports ----------------------------------------------------------------------------------------


def test_export_crontab_line_parses(config, store):
    invoke(
        "schedule",
        "add",
        "nightly",
        "--cron",
        "0 3 * * 1",
        str(config),
        "--store",
        store,
        "--address",
        "http://head:8265",
    )
    out = invoke("schedule", "export", "nightly", "--format", "crontab", "--store", store).output
    lines = [ln for ln in out.splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split()
    expr = " ".join(fields[:5])
    assert expr == "0 3 * * 1" and croniter.is_valid(expr)
    assert croniter(expr, datetime(2025, 1, 5, tzinfo=UTC)).get_next(datetime).weekday() == 0
    cmd = " ".join(fields[5:])
    assert "flock -n" in cmd and f"retrain {config.resolve()} --address http://head:8265" in cmd


def test_export_k8s_is_a_cronjob_with_the_same_command(config, store):
    invoke(
        "schedule",
        "add",
        "nightly",
        "--cron",
        "0 3 * * 1",
        str(config),
        "--store",
        store,
        "--address",
        "http://head:8265",
        "--misfire-grace",
        "600",
    )
    out = invoke("schedule", "export", "nightly", "--format", "k8s", "--image", "reg/qlora:1", "--store", store).output
    doc = yaml.safe_load(out)
    assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "CronJob"
    spec = doc["spec"]
    assert spec["schedule"] == "0 3 * * 1" and spec["concurrencyPolicy"] == "Forbid"
    assert spec["timeZone"] == "UTC" and spec["startingDeadlineSeconds"] == 600
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "reg/qlora:1"
    assert c["command"] + c["args"] == [
        "qlora-launch",
        "retrain",
        "/etc/qlora-launch/summarize.yaml",
        "--address",
        "http://head:8265",
    ]
    assert pod["restartPolicy"] == "Never"
    assert pod["volumes"][0]["configMap"]["name"] == doc["metadata"]["name"]
