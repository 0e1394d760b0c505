"""Seeing a search: the HTML report in a real headless Chromium, the W&B offline runs and best-adapter
artifact of a tuned experiment, the MLflow backend on a local file store, and `runs`.

All read a copy of the session's `tuned_t5_run` (a real 4-trial ASHA search on the tiny T5, W&B offline).

The browser is Debian's `chromium`, driven over the DevTools protocol (tests/helpers/browser.py: a
minimal stdlib websocket client, no Playwright/Selenium) so console errors, uncaught exceptions and every
network request are seen, not guessed from logs. `python -m tests.integration.observe.test_observe RUN_DIR OUT.png`
takes the full-page screenshot used for docs/report.png.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from tests.conftest import copy_run
from tests.helpers.browser import HeadlessChromium, needs_chromium

pytestmark = pytest.mark.integration


def png_size(path: Path):
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def run_copy(tuned_t5_run, tmp_path) -> Path:
    return copy_run(tuned_t5_run, tmp_path / "runs" / tuned_t5_run.name)


def _cfg(run_dir: Path, **tracking):
    from orchestrator.core.config import RunConfig

    raw = json.loads((run_dir / "config.json").read_text())
    raw["tracking"].update(tracking)
    return RunConfig.model_validate(raw)


# ---- the report in a browser --------------------------------------------------------------------


@needs_chromium
def test_report_renders_in_headless_chromium_without_errors(run_copy, tmp_path):
    from click.testing import CliRunner

    from orchestrator.cli import cli
    from orchestrator.observe.report.pngs import PNG_NAMES, PNG_SIZE

    res = CliRunner().invoke(cli, ["report", str(run_copy)])
    assert res.exit_code == 0, res.output
    index = run_copy / "report" / "index.html"
    assert index.exists() and str(index) in res.output
    page = index.read_text()
    # Self-contained: no script, stylesheet or image fetched from anywhere.
    assert "<script src=" not in page and "<link " not in page and 'src="http' not in page
    for name in PNG_NAMES:
        png = run_copy / "report" / name
        assert png.stat().st_size > 10_000, name
        assert png_size(png) == PNG_SIZE, name

    results = json.loads((run_copy / "results.json").read_text())
    n_trials = len(results["trials"])
    browser = HeadlessChromium()
    try:
        browser.open(index.resolve().as_uri())
        assert browser.problems() == []
        assert all(u.startswith(("file:", "data:", "blob:", "about:")) for u in browser.requested_urls()), (
            browser.requested_urls()
        )
        state = browser.cdp.evaluate("""({
            plots: [...document.querySelectorAll('.js-plotly-plot')].map(d => [d.id, !!d.querySelector('.main-svg')]),
            curves: document.querySelectorAll('#plot-loss .scatterlayer .trace').length,
            parcoordLines: document.querySelectorAll('#plot-parallel .gl-canvas, #plot-parallel canvas').length,
            rows: [...document.querySelectorAll('#trial-table tbody tr')].map(r => r.cells[0].dataset.v),
            bestRow: document.querySelector('#trial-table tr.best td')?.dataset.v,
            samples: document.querySelectorAll('.sample').length,
            errors: window.__reportErrors.length,
            banner: !document.getElementById('report-errors').hidden,
        })""")
        assert dict(state["plots"]) == {
            "plot-loss": True,
            "plot-metric": True,
            "plot-scatter": True,
            "plot-parallel": True,
            "plot-resources": True,
            "plot-memory": True,  # each trial's planned peak (a CPU run measures none)
        }
        assert state["curves"] >= n_trials  # one line per trial (+ the stop markers)
        assert state["parcoordLines"] > 0
        assert sorted(state["rows"]) == sorted(r["trial_id"] for r in results["trials"])
        assert state["bestRow"] == results["best"]["trial_id"]
        assert state["samples"] == min(8, len(json.loads((run_copy / "best" / "samples.json").read_text())))
        assert state["errors"] == 0 and not state["banner"]

        # The table sorts: click the metric column (twice: descending) and the best trial comes first.
        metric = results["metric"]
        order = browser.cdp.evaluate(f"""(() => {{
            const th = [...document.querySelectorAll('#trial-table th')].find(h => h.textContent.startsWith('{metric}'));
            th.click(); const asc = [...document.querySelectorAll('#trial-table tbody tr')].map(r => r.cells[th.dataset.col].dataset.v);
            th.click(); const desc = [...document.querySelectorAll('#trial-table tbody tr')].map(r => r.cells[th.dataset.col].dataset.v);
            return {{asc, desc}};
        }})()""")
        scores = [float(v) if v not in ("", None) else None for v in order["asc"]]
        present = [s for s in scores if s is not None]
        assert present == sorted(present)
        assert [float(v) for v in order["desc"] if v] == sorted(present, reverse=True)

        shot = browser.screenshot(tmp_path / "report.png")
        w, h = png_size(shot)
        assert w == 1400 and h > 2000 and shot.stat().st_size > 100_000

        # The harness itself catches errors: a page that throws and logs an error is reported.
        bad = tmp_path / "bad.html"
        bad.write_text("<script>console.error('deliberate'); undefinedFunction();</script>")
        browser.open(bad.as_uri(), settle_s=0.2)
        found = browser.problems()
        assert any("deliberate" in p for p in found) and any("undefinedFunction" in p for p in found), found
    finally:
        browser.close()


# ---- W&B -----------------------------------------------------------------------------------------


def test_wandb_offline_runs_one_per_trial_grouped_with_history_and_best_artifact(run_copy):
    from orchestrator.observe.tracking import BEST_JOB_TYPE, after_search, wandb_sync_command
    from tests.helpers.wandb_files import read_wandb_offline_runs

    results = json.loads((run_copy / "results.json").read_text())
    exp, best = results["experiment"], results["best"]
    cfg = _cfg(run_copy)
    if not any(r["job_type"] == BEST_JOB_TYPE for r in read_wandb_offline_runs(run_copy)):
        # `tune` does not call the end-of-search hook (yet): call it as it would.
        lines: List[str] = []
        out = after_search(run_copy, cfg, echo=lines.append)
        assert out["errors"] == [], out["errors"]
        assert out["report"] and Path(out["report"]).exists()
        assert out["wandb"]["aliases"] == ["best"] and out["wandb"]["mode"] == "offline"
        assert out["sync_command"] == wandb_sync_command(run_copy)
        assert any(out["sync_command"] in line for line in lines)
    sync = wandb_sync_command(run_copy)
    assert sync.startswith("wandb sync ") and str((run_copy / "wandb").resolve()) in sync

    runs = read_wandb_offline_runs(run_copy)
    trials = [r for r in runs if r["job_type"] == "trial"]
    by_trial = {r["config"].get("trial_id"): r for r in trials}
    # One run per trial, all in the experiment's group, with the W&B ids the workers chose.
    empty = [r["id"] for r in runs if r["empty"]]
    assert not empty, (
        f"W&B logs with nothing in them (a trial killed before W&B flushed; "
        f"x_transaction_log_flush_interval in start_tracking): {empty}"
    )
    assert sorted(by_trial) == sorted(t["trial_id"] for t in results["trials"]), [r["folder"] for r in runs]
    assert len(trials) == len(results["trials"])
    for t in results["trials"]:
        r = by_trial[t["trial_id"]]
        assert r["group"] == exp and r["project"] == cfg.tracking.project
        assert r["id"] == f"{exp}-{t['trial_id']}"
        params = {k: t[k] for k in results["best"]["params"]}
        assert r["config"]["params"] == pytest.approx(params)
        assert r["config"]["trainable_params"] > 0 and r["config"]["total_params"] > r["config"]["trainable_params"]
        losses = [h["train/loss"] for h in r["history"] if "train/loss" in h]
        assert len(losses) >= min(t["steps"], 5), (t["trial_id"], t["status"], len(losses))
        evals = [h for h in r["history"] if f"eval/{results['metric'][5:]}" in h]
        assert evals, t["trial_id"]
        assert "train/learning_rate" in r["history"][0] or any("train/learning_rate" in h for h in r["history"])

    # The best adapter: a `model` artifact with alias `best`, in a run of the same group.
    holders = [r for r in runs if r["job_type"] == BEST_JOB_TYPE]
    assert len(holders) == 1 and holders[0]["group"] == exp
    (art,) = holders[0]["artifacts"]
    assert art["type"] == "model" and art["name"] == f"{exp}-adapter" and "best" in art["aliases"]
    assert art["metadata"]["trial_id"] == best["trial_id"]
    files = {f["path"]: f for f in art["files"]}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files)
    local = run_copy / "best" / "adapter" / "adapter_model.safetensors"
    assert files["adapter_model.safetensors"]["size"] == local.stat().st_size
    # Referenced in place: the run folder's adapter (of the original run when `tune` logged it).
    assert files["adapter_model.safetensors"]["local_path"].endswith("best/adapter/adapter_model.safetensors")
    assert holders[0]["summary"]["best_trial"] == best["trial_id"]


def test_tracking_off_imports_no_wandb(run_copy):
    code = (
        "import json, sys; from orchestrator.core.config import RunConfig\n"
        "from orchestrator.observe.tracking import after_search\n"
        f"raw = json.loads(open({str(run_copy / 'config.json')!r}).read()); raw['tracking']['wandb'] = False\n"
        f"out = after_search({str(run_copy)!r}, RunConfig.model_validate(raw), echo=lambda *a: None)\n"
        f"assert out['report'] and out['wandb'] is None and out['sync_command'] is None, out\n"
        f"assert 'wandb' not in sys.modules and 'mlflow' not in sys.modules, 'imported a tracker'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[3])
    assert r.returncode == 0, r.stderr[-3000:]


# ---- MLflow --------------------------------------------------------------------------------------


def test_mlflow_backend_on_a_local_file_store(run_copy, tmp_path):
    from mlflow.tracking import MlflowClient

    from orchestrator.observe.tracking import log_run_to_mlflow

    uri = (tmp_path / "mlruns").as_uri()
    cfg = _cfg(run_copy, backend="mlflow", mlflow_tracking_uri=uri)
    results = json.loads((run_copy / "results.json").read_text())
    info = log_run_to_mlflow(run_copy, cfg)
    assert info["tracking_uri"] == uri and not info["reused"]

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(cfg.tracking.project)
    runs = client.search_runs([exp.experiment_id])
    parent = client.get_run(info["parent_run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 1 + len(results["trials"]) and len(children) == len(results["trials"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["best_trial"] == results["best"]["trial_id"]
    assert parent.data.params["lora.alpha"] == str(cfg.lora.alpha)
    metric = results["metric"]
    assert parent.data.metrics[f"best.{metric}"] == pytest.approx(results["best"]["metrics"][metric])

    for t in results["trials"]:
        run = client.get_run(info["trial_runs"][t["trial_id"]])
        assert run.data.tags["qlora_launch.status"] == t["status"]
        for k in results["best"]["params"]:
            assert float(run.data.params[k]) == pytest.approx(float(t[k]))
        assert int(run.data.params["trainable_params"]) > 0
        history = json.loads((run_copy / "trials" / t["trial_id"] / "log_history.json").read_text())
        losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss"))
        assert logged == pytest.approx(sorted(losses))
        evals = [(h["step"], h[metric]) for h in history if metric in h]
        assert sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric)) == pytest.approx(
            sorted(evals)
        )

    # The adapter is an artifact of the search run, byte for byte.
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "best_adapter")}
    assert "best_adapter/adapter_model.safetensors" in names
    got = Path(
        client.download_artifacts(parent.info.run_id, "best_adapter/adapter_model.safetensors", str(tmp_path / "dl"))
    )
    local = run_copy / "best" / "adapter" / "adapter_model.safetensors"
    assert hashlib.sha256(got.read_bytes()).hexdigest() == hashlib.sha256(local.read_bytes()).hexdigest()

    # Logging the same run folder again does not duplicate it.
    again = log_run_to_mlflow(run_copy, cfg)
    assert again["reused"] and again["parent_run_id"] == info["parent_run_id"]
    assert len(client.search_runs([exp.experiment_id])) == len(runs)


# ---- runs / runs show / live progress callback ----------------------------------------------------


def test_runs_lists_the_experiment_and_shows_its_trials(run_copy):
    from click.testing import CliRunner

    from orchestrator.cli import cli

    results = json.loads((run_copy / "results.json").read_text())
    root = run_copy.parent
    r = CliRunner().invoke(cli, ["runs", "--dir", str(root), "--json"])
    assert r.exit_code == 0, r.output
    (listed,) = json.loads(r.output)
    assert listed["experiment"] == results["experiment"] and listed["state"] == "finished"
    assert listed["best_value"] == pytest.approx(results["best"]["metrics"][results["metric"]])
    r = CliRunner().invoke(cli, ["runs", "show", results["experiment"], "--dir", str(root)], terminal_width=200)
    assert r.exit_code == 0, r.output
    for t in results["trials"]:
        assert t["trial_id"] in r.output
    r = CliRunner().invoke(cli, ["runs", "show", "no-such-run", "--dir", str(root)])
    assert r.exit_code == 2 and "no run 'no-such-run'" in r.output


def test_progress_callback_is_a_tune_callback(run_copy):
    from ray.tune import Callback

    from orchestrator.observe.progress import progress_callbacks

    (cb,) = progress_callbacks(_cfg(run_copy))
    assert isinstance(cb, Callback)


# ---- docs/report.png ------------------------------------------------------------------------------


def main(argv: List[str]) -> None:
    """python -m tests.integration.observe.test_observe RUN_DIR OUT.png: write the report, screenshot it."""
    from orchestrator.observe.report.html import write_report

    run_dir, out = Path(argv[0]), Path(argv[1])
    index = write_report(run_dir)
    browser = HeadlessChromium()
    try:
        browser.open(index.resolve().as_uri(), settle_s=1.5)
        assert browser.problems() == [], browser.problems()
        browser.screenshot(out)
    finally:
        browser.close()
    print(out, png_size(out))


if __name__ == "__main__":
    main(sys.argv[1:])
