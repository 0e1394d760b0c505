"""The report, `runs` and the offline W&B reader on small run folders built here (no Ray, no training)."""

from __future__ import annotations

import csv
import json
import re
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.core.errors import UserError

METRIC = "eval_rougeL"


def _history(steps: int, lr: float, seed: float, eval_every: int = 5):
    h = []
    for s in range(1, steps + 1):
        h.append(
            {
                "loss": 3.0 - s * 0.05 * seed,
                "learning_rate": lr * (1 - s / 41),
                "grad_norm": 4.0,
                "epoch": s / 5,
                "step": s,
            }
        )
        if s % eval_every == 0:
            h.append({"eval_loss": 9.0 - s * 0.01, METRIC: min(0.5, 0.01 * s * seed), "step": s, "epoch": s / 5})
    return h


def make_run(root: Path, name: str = "exp1", with_results: bool = True) -> Path:
    """A run folder shaped like `tune`'s (docs/run_layout.md): 3 trials, one stopped early by ASHA."""
    run = root / name
    trials = [
        {
            "trial_id": "abc12_00000",
            "training.learning_rate": 0.005,
            "lora.r": 8,
            METRIC: 0.4,
            "steps": 40,
            "planned_steps": 40,
            "status": "COMPLETED",
            "time_s": 37.7,
        },
        {
            "trial_id": "abc12_00001",
            "training.learning_rate": 0.0008,
            "lora.r": 4,
            METRIC: 0.1,
            "steps": 10,
            "planned_steps": 40,
            "status": "STOPPED_EARLY",
            "time_s": 12.3,
        },
        {
            "trial_id": "abc12_00002",
            "training.learning_rate": 0.02,
            "lora.r": 4,
            METRIC: 0.3,
            "steps": 40,
            "planned_steps": 40,
            "status": "COMPLETED",
            "time_s": 36.0,
        },
    ]
    for i, t in enumerate(trials):
        d = run / "trials" / t["trial_id"]
        d.mkdir(parents=True)
        (d / "log_history.json").write_text(json.dumps(_history(t["steps"], t["training.learning_rate"], 1 + i / 3)))
        (d / "result.json").write_text(
            json.dumps(
                {
                    "time_total_s": t["time_s"],
                    "peak_rss_mb": 600.0 + 10 * i,
                    "trainable_params": 18432,
                    "total_params": 216064,
                    "trainable_pct": 8.53,
                }
            )
        )
    with (run / "trials.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(trials[0]))
        w.writeheader()
        w.writerows(trials)
    config = {
        "model": {"name_or_path": "/models/tiny-t5", "task": "seq2seq"},
        "quantization": {"mode": "4bit", "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"},
        "lora": {"r": 6, "alpha": 16, "dropout": 0.1, "target_modules": ["q", "k", "v"]},
        "data": {"input_column": "article", "target_column": "summary"},
        "training": {"epochs": 8, "learning_rate": 0.001, "batch_size": 2},
        "search": {
            "num_samples": 3,
            "metric": METRIC,
            "mode": None,
            "scheduler": "asha",
            "algorithm": "random",
            "space": {
                "training.learning_rate": {"type": "loguniform", "low": 3e-4, "high": 3e-2},
                "lora.r": {"type": "choice", "values": [4, 8]},
            },
        },
        "tracking": {"wandb": True, "backend": "wandb", "project": "p", "entity": None, "mode": "auto"},
        "output": {"dir": str(root), "experiment": name},
    }
    (run / "config.json").write_text(json.dumps(config))
    (run / "best").mkdir()
    (run / "best" / "samples.json").write_text(
        json.dumps(
            [
                {
                    "input": "An <b>article</b> about <script>alert(1)</script> models.",
                    "reference": "Models are good.",
                    "prediction": "models are good",
                },
                {"input": "Second article.", "reference": "Short summary.", "prediction": "Something else."},
            ]
        )
    )
    if with_results:
        best = trials[0]
        (run / "results.json").write_text(
            json.dumps(
                {
                    "experiment": name,
                    "metric": METRIC,
                    "mode": "max",
                    "num_trials": 3,
                    "trials": trials,
                    "best": {
                        "trial_id": best["trial_id"],
                        "params": {"training.learning_rate": 0.005, "lora.r": 8},
                        "metrics": {METRIC: 0.4, "eval_loss": 8.6, "loss": 1.0, "peak_rss_mb": 600.0},
                        "step": 40,
                        "checkpoint": "x",
                    },
                    "params": {"trainable_params": 18432, "total_params": 216064, "trainable_pct": 8.530805687203792},
                    "paths": {"run_dir": str(run), "adapter": str(run / "best" / "adapter")},
                    "merge_check": {"passed": True, "max_abs_logit_diff": 1.5e-5, "tolerance": 1e-3},
                    "started_at": "2026-01-01T10:00:00+00:00",
                    "finished_at": "2026-01-01T10:01:30+00:00",
                    "versions": {"ray": "2.60.0"},
                    "data_fingerprints": {"train": "ab" * 32},
                }
            )
        )
    return run


def png_size(path: Path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


# ---- the report ----------------------------------------------------------------------------------


def test_report_writes_a_self_contained_page_and_pngs_of_the_expected_size(tmp_path):
    from orchestrator.observe.report.html import write_report
    from orchestrator.observe.report.pngs import PNG_NAMES, PNG_SIZE

    run = make_run(tmp_path)
    index = write_report(run)
    assert index == run / "report" / "index.html"
    page = index.read_text()
    # plotly.js inline once, no external fetches of any kind.
    assert page.count("plotly.js v") >= 1 and "<script src=" not in page and "<link " not in page
    assert len(page) > 3_000_000  # plotly.js itself is ~4.8 MB
    for div in ("plot-loss", "plot-metric", "plot-scatter", "plot-parallel", "plot-resources"):
        assert f'id="{div}"' in page
    rows = re.findall(r"<tr class=\"(best)?\">", page)
    assert len(rows) == 3 and rows.count("best") == 1
    assert 'id="trial-table" class="sortable"' in page and "STOPPED_EARLY" in page
    assert "8.53%" in page and "18,432" in page  # trainable share
    assert "Models are good." in page and "models are good" in page  # reference beside prediction
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for name in PNG_NAMES:
        png = run / "report" / name
        assert png.stat().st_size > 10_000, name
        assert png_size(png) == PNG_SIZE, name


def test_report_marks_the_early_stopped_trial_in_the_curves(tmp_path):
    from orchestrator.observe.report.data import load_report_data
    from orchestrator.observe.report.figures import curve_figure

    data = load_report_data(make_run(tmp_path))
    fig = curve_figure(data, METRIC, "", METRIC)
    stops = [t for t in fig.data if t.mode == "markers+text"]
    assert len(stops) == 1 and list(stops[0].x) == [10] and "stopped @10" in stops[0].text[0]
    stopped = [t for t in fig.data if t.name and "abc12_00001" in t.name]
    assert stopped[0].line.dash == "dot"
    assert fig.layout.xaxis.range[1] >= 40  # the axis spans the planned length, so the stop is visible


def test_report_without_results_json_uses_trials_csv(tmp_path):
    from orchestrator.observe.report.data import load_report_data
    from orchestrator.observe.report.html import write_report

    run = make_run(tmp_path, with_results=False)
    data = load_report_data(run)
    assert data["experiment"] == "exp1" and data["metric"] == METRIC and data["mode"] == "max"
    assert data["trials"][0]["lora.r"] == 8 and isinstance(data["trials"][0]["training.learning_rate"], float)
    assert data["param_keys"] == ["training.learning_rate", "lora.r"]
    page = write_report(run, pngs=False).read_text()
    assert "No trial reported" in page and 'id="plot-loss"' in page


def test_report_of_a_folder_that_is_not_a_run_is_a_user_error(tmp_path):
    from orchestrator.cli import cli
    from orchestrator.observe.report.data import load_report_data

    with pytest.raises(UserError, match="no results.json or trials.csv"):
        load_report_data(tmp_path)
    r = CliRunner().invoke(cli, ["report", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_report_command_writes_and_prints_the_path(tmp_path, monkeypatch):
    from orchestrator.cli import cli

    run = make_run(tmp_path)
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    r = CliRunner().invoke(cli, ["report", str(run), "--open", "--no-png"])
    assert r.exit_code == 0, r.output
    assert str(run / "report" / "index.html") in r.output
    assert opened == [(run / "report" / "index.html").resolve().as_uri()]
    assert not (run / "report" / "loss.png").exists()


def test_helpers():
    from orchestrator.observe.report.data import log_ticks, pick_pair, rouge_l, series, short_id, smooth

    assert pick_pair(["lora.r", "training.learning_rate", "lora.alpha"], []) == ("training.learning_rate", "lora.r")
    assert pick_pair(["lora.alpha"], []) == ("lora.alpha", None)
    assert pick_pair(["a", "b"], []) == ("a", "b")
    assert series([{"loss": 2.0, "step": 2}, {"loss": 3.0, "step": 1}, {"eval_loss": 1, "step": 3}], "loss") == (
        [1, 2],
        [3.0, 2.0],
    )
    assert short_id("abc12_00003") == "#3" and short_id("x") == "x"
    assert rouge_l("the cat sat", "the cat sat") == 1.0 and rouge_l("", "x") == 0.0
    assert rouge_l("a b c d", "a c") == pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1))
    assert smooth([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])  # debiased: no pull towards 0
    assert log_ticks(3e-4, 3e-2) == [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02]


# ---- runs ----------------------------------------------------------------------------------------


def test_runs_lists_finished_and_unfinished_runs_newest_first(tmp_path):
    from orchestrator.observe.runs import list_runs

    make_run(tmp_path, "done")
    make_run(tmp_path, "half", with_results=False)
    (tmp_path / "not-a-run").mkdir()
    runs = {r["experiment"]: r for r in list_runs(tmp_path)}
    assert set(runs) == {"done", "half"}
    assert runs["done"]["state"] == "finished" and runs["done"]["best_value"] == 0.4
    assert runs["done"]["best_trial"] == "abc12_00000"
    assert runs["done"]["counts"] == {"COMPLETED": 2, "STOPPED_EARLY": 1}
    assert runs["half"]["state"] == "unfinished" and runs["half"]["best_value"] == 0.4  # best so far
    assert list_runs(tmp_path / "nowhere") == []


def test_runs_cli_and_show(tmp_path):
    from orchestrator.cli import cli

    make_run(tmp_path, "exp1")
    r = CliRunner().invoke(cli, ["runs", "--dir", str(tmp_path)], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "exp1" in r.output and "0.4" in r.output and "1 stopped early" in r.output
    r = CliRunner().invoke(cli, ["runs", "show", "exp1", "--dir", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert [row["trial_id"] for row in info["rows"]] == ["abc12_00000", "abc12_00002", "abc12_00001"]  # best first
    assert info["rows"][0]["peak_mem_mb"] == 600.0 and info["best_trial"] == "abc12_00000"
    r = CliRunner().invoke(cli, ["runs", "--dir", str(tmp_path), "show", "exp2"])
    assert r.exit_code == 2 and "Did you mean 'exp1'" in r.output
    r = CliRunner().invoke(cli, ["runs", "show", str(tmp_path / "exp1")], terminal_width=200)  # a path works too
    assert r.exit_code == 0 and "abc12_00001" in r.output and "stopped early" in r.output
    r = CliRunner().invoke(cli, ["runs", "--dir", str(tmp_path / "empty")])
    assert r.exit_code == 0 and "No runs in" in r.output


# ---- the offline W&B transaction-log reader --------------------------------------------------------


def _leveldb_log(records, block=32 * 1024) -> bytes:
    """Records framed the way W&B writes `.wandb` files (LevelDB log, 7-byte W&B header)."""
    import zlib

    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for rec in records:
        data, first = rec.SerializeToString(), True
        while True:
            left = block - len(out) % block
            if left < 7:
                out += b"\0" * left
                continue
            chunk, data = data[: left - 7], data[left - 7 :]
            kind = (1 if first else 4) if not data else (2 if first else 3)
            crc = zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF
            out += struct.pack("<IHB", crc, len(chunk), kind) + chunk
            first = False
            if not data:
                break
    return bytes(out)


def test_wandb_reader_parses_runs_history_and_artifacts_across_blocks(tmp_path):
    pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    from orchestrator.observe.tracking import wandb_sync_command
    from tests.helpers.wandb_files import read_wandb_offline_runs

    recs = []
    r = pb.Record()
    r.run.run_id, r.run.project, r.run.run_group, r.run.job_type, r.run.display_name = "e-t1", "p", "e", "trial", "t1"
    item = r.run.config.update.add()
    item.key, item.value_json = "params", json.dumps({"value": {"lora.r": 8}})
    recs.append(r)
    for step in range(400):  # enough to cross 32 KiB blocks
        h = pb.Record()
        for k, v in (("_step", step), ("train/loss", 3.0 - step / 400), ("pad", "x" * (80 if step != 200 else 70_000))):
            it = h.history.item.add()
            it.nested_key.append(k)
            it.value_json = json.dumps(v)
        recs.append(h)
    a = pb.Record()
    a.artifact.name, a.artifact.type = "e-adapter", "model"
    a.artifact.aliases.extend(["best"])
    e = a.artifact.manifest.contents.add()
    e.path, e.size, e.local_path = "adapter_model.safetensors", 123, "/x/adapter_model.safetensors"
    recs.append(a)
    blob = _leveldb_log(recs)
    assert len(blob) > 3 * 32 * 1024
    d = tmp_path / "wandb" / "offline-run-20260101_000000-e-t1"
    d.mkdir(parents=True)
    (d / "run-e-t1.wandb").write_bytes(blob + b"\x01\x02")  # a torn tail is ignored
    empty = tmp_path / "wandb" / "offline-run-20260101_000001-e-t2"
    empty.mkdir()
    (empty / "run-e-t2.wandb").write_bytes(b":W&B" + struct.pack("<HB", 0xBEE1, 0))  # killed before a flush

    runs = read_wandb_offline_runs(tmp_path)
    assert [x["id"] for x in runs] == ["e-t1", "e-t2"]
    run, dead = runs
    assert (run["group"], run["job_type"], run["name"]) == ("e", "trial", "t1")
    assert run["config"]["params"] == {"lora.r": 8}
    assert [h["_step"] for h in run["history"]] == list(range(400))
    assert run["history"][-1]["train/loss"] == pytest.approx(3.0 - 399 / 400)
    assert len(run["history"][200]["pad"]) == 70_000
    assert run["artifacts"][0]["aliases"] == ["best"] and run["artifacts"][0]["files"][0]["size"] == 123
    assert dead["empty"] and dead["history"] == []
    assert wandb_sync_command(tmp_path).startswith("wandb sync ")
    assert wandb_sync_command(tmp_path / "none") is None


def test_report_scores_chinese_samples_with_the_runs_rouge_tokenizer():
    """The sample cards use jobs.metrics.rouge with the run's metrics.rouge_tokenizer: the number the
    search optimized (char tokens for Chinese: LCS 10 of 12 and 21 tokens, F = 20/33 = 0.61)."""
    from orchestrator.observe.report.sections import samples_section

    sample = {
        "input": "…",
        "reference": "成都大熊猫基地一只大熊猫产下双胞胎，母子平安。",
        "prediction": "成都大熊猫产下双胞胎幼崽",
    }
    auto = samples_section({"samples": [sample], "config": {}})
    spaces = samples_section({"samples": [sample], "config": {"metrics": {"rouge_tokenizer": "whitespace"}}})
    assert "ROUGE-L 0.61" in auto and "ROUGE-L 0.00" in spaces


def test_the_report_and_the_summary_show_the_test_scores_the_lift_and_the_merge_fidelity(tmp_path, capsys):
    from orchestrator.observe.report.data import load_report_data
    from orchestrator.observe.report.sections import kpi_section
    from orchestrator.observe.summary import print_summary

    run = make_run(tmp_path)
    res = json.loads((run / "results.json").read_text())
    fid = {"into": "dequantized", "kl_mean": 3e-4, "trained_eval_loss": 2.0, "merged_eval_loss": 2.01}
    fid.update({"metric_drop": 0.01, "max_metric_drop": 0.05, "trained_rougeL": 0.4, "merged_rougeL": 0.4})
    check = {**res["merge_check"], "fidelity": {**fid, "passed": True}}
    res["merge_check"] = check
    res["scores"] = {
        "test": {"eval_loss": 2.5, "eval_rougeL": 0.4, "num_examples": 3.0},
        "base_test": {"eval_loss": 4.0, "eval_rougeL": 0.1, "num_examples": 3.0},
        "lift": {"eval_loss": 1.5, "eval_rougeL": 0.3},
    }
    (run / "results.json").write_text(json.dumps(res))
    (run / "best" / "merge_check.json").write_text(json.dumps(check))
    html = kpi_section(load_report_data(run))
    assert "test eval_loss" in html and "untuned base 4, lift +1.5 on 3 held-out examples" in html
    assert "test eval_rougeL" in html and "lift +0.3" in html
    assert "merge fidelity" in html and "KL 0.0003" in html
    res["paths"]["merged"] = str(run / "best" / "merged")
    (run / "results.json").write_text(json.dumps(res))
    assert print_summary(run) == 0
    out = capsys.readouterr().out
    assert "Test set (3 examples, never seen by the search): untuned base -> merged" in out
    assert "eval_loss: 4 -> 2.5  (lift 1.5" in out and "eval_rougeL: 0.1 -> 0.4  (lift 0.3" in out
    assert "Fidelity (ok): merged (into dequantized) vs trained 4-bit + adapter: KL 0.0003/token" in out
