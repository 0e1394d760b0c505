"""What a user sees in a terminal: `qlora-launch tune` on the tiny T5 in a pseudo-terminal (util-linux
`script`), the screen captured and checked line by line.

- Quiet by default: every line on screen is one of the product's own (the plan lines, the live table and
  its progress bar, the merge lines, the summary); nothing from a Ray worker, Ray itself or a library.
- A trial that fails in the worker (its base model's weights are cut short; the driver only reads the
  config and tokenizer, so only the worker finds out): one line on screen with the trial id and the error,
  the full traceback in trials/<id>/worker.log, and `qlora-launch logs RUN_DIR --trial ID` prints it.
- With --verbose the workers' lines are back on screen.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from tests.conftest import write_config

pytestmark = pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux `script` for a pty")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]")
TRIAL_ID = re.compile(r"^[0-9a-f]{5}_\d{5}\b")
# The product's own lines: anything else on screen is noise that leaked through.
OWN = (
    re.compile(r"^Local mode: "),
    re.compile(r"^Tokenized \d+ train / \d+ eval examples"),
    re.compile(r"^trial\s+status\b"),  # the live table's header
    TRIAL_ID,  # its rows
    re.compile(r"^[━╺╸\s]+\s+\d+%\s+\d+/\d+ trials done"),  # the progress bar
    re.compile(r"^\s*elapsed \d"),  # the progress line
    re.compile(r"^trial \S+ failed( at step \d+)?: .+ \(log: .+worker\.log\)$"),
    re.compile(r"^Merging the best adapter"),
    re.compile(r"^Merge check passed on Ray node "),
    re.compile(r"^Report: "),
    re.compile(r"^\S+: \d+ trials \(eval_\w+, (min|max)\)$"),  # the summary table's title
    re.compile(r"^[┏┃┡│└]"),  # its box
    re.compile(r"^Every trial: "),  # the settings every trial shares, under it
    re.compile(r"^(Best trial|Trainable params:|Adapter:|Merged:|Results:|Notices:|  - )"),
    re.compile(r"^No trial reported the metric; nothing was merged\."),
    re.compile(r"^Truncated \d+ train / \d+ eval examples"),  # the data's stats
    re.compile(r"^Fidelity( \(\w+\))?: merged "),  # the merge's fidelity to the trained model
    re.compile(r"^Test set \(\d+ examples"),  # the test scores: merged vs untuned base
    re.compile(r"^  eval_\w+: \S+ -> \S+"),
    re.compile(r"^W&B runs are offline files; to upload them|^  wandb sync "),  # with tracking.wandb
)


def screen_of(cmd, cwd: Path, out: Path, timeout: int = 400):
    """Run `cmd` in a 140x50 pseudo-terminal; its exit code and the screen's lines (escape codes and
    redraws resolved to the distinct lines that were shown)."""
    env = {**os.environ, "COLUMNS": "140", "LINES": "50", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    line = " ".join(str(c) for c in cmd)
    proc = subprocess.run(
        ["script", "-qfec", line, str(out)], cwd=cwd, env=env, capture_output=True, timeout=timeout, text=True
    )
    raw = out.read_text(errors="replace")
    seen, lines = set(), []
    for chunk in ANSI.sub("", raw).replace("\r\n", "\n").split("\n"):
        for part in chunk.split("\r"):
            text = part.rstrip()
            if text.strip() and not text.startswith("Script ") and text not in seen:
                seen.add(text)
                lines.append(text)
    return proc.returncode, lines


def leaked(lines):
    return [ln for ln in lines if not any(p.search(ln) for p in OWN)]


@pytest.fixture(scope="module")
def broken_t5(tiny_t5, tmp_path_factory) -> Path:
    """The tiny T5 with its weights file cut in half: config and tokenizer read fine, loading fails."""
    dest = tmp_path_factory.mktemp("broken") / "tiny-t5"
    shutil.copytree(tiny_t5, dest)
    weights = dest / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return dest


def config(tmp_path: Path, model: Path, name: str, **sections) -> Path:
    return write_config(
        tmp_path / f"{name}.yaml",
        model,
        tmp_path / "runs",
        **sections,
        training={"max_steps": 4, "eval_steps": 2, "epochs": 1},
        search={"num_samples": 1, "max_concurrent_trials": 1, "metric": "eval_loss", "space": {}},
        tracking={"backend": "none"},
        fault_tolerance={"max_failures": 0},
    )


QLORA = [sys.executable, "-m", "orchestrator.cli"]


def test_tune_in_a_terminal_shows_only_its_own_lines(tmp_path, tiny_t5):
    cfg = config(tmp_path, tiny_t5, "quiet", data={"max_input_length": 24})  # the seed's articles are longer
    code, lines = screen_of([*QLORA, "tune", cfg], tmp_path, tmp_path / "screen")
    assert code == 0, "\n".join(lines[-40:])
    assert leaked(lines) == [], "lines that are not the product's own:\n" + "\n".join(leaked(lines))
    assert any(re.match(r"^trial\s+status\s+.*eval_loss\s+trial best", ln) for ln in lines)  # the live table
    assert any("1/1 trials done" in ln for ln in lines)
    assert any(ln.startswith("Best trial ") for ln in lines) and any(ln.startswith("Merged: ") for ln in lines)
    run = tmp_path / "runs" / "quiet"
    (log,) = run.glob("trials/*/worker.log")  # what was kept off the screen is in the trial's log
    assert "trainable params" in log.read_text() and (run / "driver.log").exists()
    # A warning that matters (examples truncated) is in the summary's notices, once.
    cut = json.loads((run / "results.json").read_text())["data_stats"]["truncated"]
    assert cut["train"] > 0, cut
    (notice,) = [ln for ln in lines if ln.startswith(f"  - Truncated {cut['train']} train ")]
    assert "data.max_input_length 24" in notice and lines.index("Notices:") < lines.index(notice), lines
    raw = ANSI.sub("", (tmp_path / "screen").read_text(errors="replace"))
    assert raw.count(notice.strip()) == 1


def test_a_failing_trial_is_one_line_and_its_log_has_the_traceback(tmp_path, broken_t5):
    code, lines = screen_of([*QLORA, "tune", config(tmp_path, broken_t5, "broken")], tmp_path, tmp_path / "screen")
    assert code == 1, "\n".join(lines[-40:])
    assert leaked(lines) == [], "lines that are not the product's own:\n" + "\n".join(leaked(lines))
    failed = [ln for ln in lines if re.match(r"^trial \S+ failed", ln)]
    assert failed, "\n".join(lines)
    trial_id = failed[0].split()[1]
    assert "SafetensorError" in failed[0] and len({ln.split(": ", 1)[1] for ln in failed}) == 1
    log = tmp_path / "runs" / "broken" / "trials" / trial_id / "worker.log"
    assert f"(log: {log})" in failed[0]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "SafetensorError" in text
    res = CliRunner().invoke(cli, ["logs", str(tmp_path / "runs" / "broken"), "--trial", trial_id])
    assert res.exit_code == 0 and "Traceback (most recent call last)" in res.output and "SafetensorError" in res.output


def test_verbose_brings_the_worker_lines_back(tmp_path, broken_t5):
    cmd = [*QLORA, "tune", config(tmp_path, broken_t5, "loud"), "--verbose"]
    code, lines = screen_of(cmd, tmp_path, tmp_path / "screen")
    assert code == 1
    workers = [ln for ln in lines if re.search(r"\((RayTrainWorker|TrainController)\s+pid=\d+", ln)]
    assert workers, "\n".join(lines)
    assert any("SafetensorError" in ln for ln in workers)  # the worker's traceback, streamed


def test_piped_output_follows_the_same_rules_in_plain_lines(tmp_path, broken_t5):
    """Not a terminal (CI, `| tee`): plain lines, no live redraws, and still nothing from a worker or library."""
    cmd = [*QLORA, "tune", str(config(tmp_path, broken_t5, "piped"))]
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert not any("\x1b[" in ln or "\r" in ln for ln in lines)  # no escape codes, no redraws
    plain = re.compile(r"^trial \S+ (started|done|FAILED|restarted)\b|^\[search (started|finished)\]|^\[progress\]")
    leaked_lines = [ln for ln in lines if not (plain.search(ln) or any(p.search(ln) for p in OWN))]
    assert leaked_lines == [], "lines that are not the product's own:\n" + "\n".join(leaked_lines)
    failed = [ln for ln in lines if re.match(r"^trial \S+ FAILED: ", ln)]
    assert len(failed) == 1 and "SafetensorError" in failed[0], "\n".join(lines)
    assert re.search(r"\(log: \S+/runs/piped/trials/\S+/worker\.log\)$", failed[0])
