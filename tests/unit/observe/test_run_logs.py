"""Where output goes and how a user gets it back: a worker's file-descriptor-level redirection into its
trial's log (and the tee of --verbose), `qlora-launch logs RUN_DIR [--trial] [--follow]`, and the summary's
failure lines and notices."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.core.rundir import RunDir
from orchestrator.observe.summary import print_summary

ROOT = Path(__file__).resolve().parents[3]

CHILD = textwrap.dedent(
    """
    import os, subprocess, sys
    from pathlib import Path
    from jobs.worker_log import output_to
    print("before", flush=True)
    with output_to(Path(sys.argv[1]), stream=sys.argv[2] == "1", header="trial t rank 0"):
        print("from python", flush=True)
        os.write(2, b"from fd 2\\n")
        subprocess.run(["sh", "-c", "echo from a child process"], check=True)
        sys.stderr.write("warning from a library\\n")
    print("after", flush=True)
    """
)


def run_child(tmp_path: Path, stream: bool):
    log = tmp_path / "trials" / "t" / "worker.log"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(log), "1" if stream else "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out, log.read_text()


def test_worker_output_goes_to_the_trial_log_at_fd_level(tmp_path):
    out, log = run_child(tmp_path, stream=False)
    assert out.stdout.split() == ["before", "after"] and out.stderr == ""
    for line in ("from python", "from fd 2", "from a child process", "warning from a library"):
        assert line in log
    assert log.startswith("==== ") and "trial t rank 0" in log.splitlines()[0]


def test_verbose_streams_the_same_lines_and_still_writes_the_log(tmp_path):
    out, log = run_child(tmp_path, stream=True)
    for line in ("from python", "from fd 2", "from a child process", "warning from a library"):
        assert line in log and line in out.stdout
    assert out.stdout.splitlines()[0] == "before" and out.stdout.splitlines()[-1] == "after"


def fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "exp"
    for tid, text in {
        "ab12c_00000": "==== start\nstep 5 loss 3.1\n",
        "ab12c_00001": '==== start\nTraceback (most recent call last):\n  File "x.py", line 1\nValueError: bad row 7\n',
    }.items():
        (run / "trials" / tid).mkdir(parents=True)
        (run / "trials" / tid / "worker.log").write_text(text)
    (run / "driver.log").write_text("2026-12-01 INFO ray.tune: started\n")
    return run


def test_logs_of_a_trial_by_its_ending(tmp_path):
    run = fake_run(tmp_path)
    res = CliRunner().invoke(cli, ["logs", str(run), "--trial", "00001"])
    assert res.exit_code == 0, res.output
    assert "ValueError: bad row 7" in res.output and "step 5" not in res.output


def test_logs_without_trial_lists_the_trial_logs_and_prints_the_driver_log(tmp_path):
    run = fake_run(tmp_path)
    res = CliRunner().invoke(cli, ["logs", str(run)])
    assert res.exit_code == 0, res.output
    assert "ab12c_00000: " in res.output and "ab12c_00001: " in res.output
    assert "INFO ray.tune: started" in res.output


def test_logs_of_an_unknown_trial_names_the_trials_there(tmp_path):
    run = fake_run(tmp_path)
    res = CliRunner().invoke(cli, ["logs", str(run), "--trial", "zz"])
    assert res.exit_code == 2
    assert "'zz' is not a trial of this run" in res.output and "ab12c_00000, ab12c_00001" in res.output
    assert "Traceback" not in res.output


def test_logs_follow_prints_what_is_appended_until_the_run_ends(tmp_path):
    run = fake_run(tmp_path)
    log = run / "trials" / "ab12c_00000" / "worker.log"

    def later():
        time.sleep(0.6)
        with log.open("a") as f:
            f.write("step 10 loss 2.9\n")
        time.sleep(0.6)
        RunDir(run).write_results({"experiment": "exp"})  # the run ended

    t = threading.Thread(target=later)
    t.start()
    res = CliRunner().invoke(cli, ["logs", str(run), "--trial", "ab12c_00000", "--follow"])
    t.join()
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-2:] == ["step 5 loss 3.1", "step 10 loss 2.9"]


def test_summary_lists_failures_with_their_log_and_each_notice_once(tmp_path, capsys):
    run = fake_run(tmp_path)
    rows = [
        {"trial_id": "ab12c_00000", "eval_loss": 2.5, "steps": 10, "status": "COMPLETED"},
        {"trial_id": "ab12c_00001", "eval_loss": None, "steps": 5, "status": "ERROR", "error": "ValueError: bad row 7"},
    ]
    notices = ["trial ab12c_00000: Skipping checkpoint /x/checkpoint_3: no manifest.sha256.json"]
    res = {"experiment": "exp", "metric": "eval_loss", "mode": "min", "num_trials": 2, "trials": rows, "best": None}
    (run / "results.json").write_text(json.dumps({**res, "notices": notices, "paths": {}}))
    assert print_summary(run) == 1
    text = capsys.readouterr().out
    log = run / "trials" / "ab12c_00001" / "worker.log"
    assert f"trial ab12c_00001 failed at step 5: ValueError: bad row 7 (log: {log})" in text.replace("\n", "")
    assert text.count("Skipping checkpoint") == 1 and "Notices:" in text
