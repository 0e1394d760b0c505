"""Real 4-bit QLoRA searches in local Ray on CPU, on the tiny T5 (ROUGE) and the tiny Llama (eval_loss)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import merge_base_of, write_config

pytestmark = pytest.mark.integration


def eval_losses(run_dir: Path, trial_id: str):
    hist = json.loads((run_dir / "trials" / trial_id / "log_history.json").read_text())
    return [h["eval_loss"] for h in hist if "eval_loss" in h], [h["loss"] for h in hist if "loss" in h]


def reload_and_compare(run_dir: Path, task: str):
    """Merged model (plain transformers) vs base + adapter (peft) on eval inputs: max |logit diff|."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    cfg = json.loads((run_dir / "config.json").read_text())
    cls = AutoModelForSeq2SeqLM if task == "seq2seq" else AutoModelForCausalLM
    merged = cls.from_pretrained(run_dir / "best" / "merged").eval()
    base = merge_base_of(run_dir)  # merge.into: the dequantized 4-bit weights by default
    ref = PeftModel.from_pretrained(base, run_dir / "best" / "adapter").eval()
    tok = AutoTokenizer.from_pretrained(run_dir / "best" / "merged")
    rows = [json.loads(x) for x in Path(cfg["data"]["eval"]).read_text().splitlines() if x.strip()]
    enc = tok([r[cfg["data"]["input_column"]] for r in rows], return_tensors="pt", padding=True)
    kw = {}
    if task == "seq2seq":
        kw["labels"] = tok(
            text_target=[r[cfg["data"]["target_column"]] for r in rows], return_tensors="pt", padding=True
        )["input_ids"]
    with torch.no_grad():
        a, b = merged(**enc, **kw).logits, ref(**enc, **kw).logits
        # the adapter really changes the model: without it the logits differ
        with ref.disable_adapter():
            c = ref(**enc, **kw).logits
    return float((a - b).abs().max()), float((a - c).abs().max())


def test_t5_search_end_to_end(tuned_t5_run):
    run_dir = tuned_t5_run
    res = json.loads((run_dir / "results.json").read_text())
    rows = list(csv.DictReader((run_dir / "trials.csv").open()))
    metric = res["metric"]
    assert metric == "eval_rougeL" and res["mode"] == "max"
    # every trial is in the table with its hyperparameters, metric, steps and status
    assert len(rows) == res["num_trials"] == 4
    for r in rows:
        assert set(r) >= {"trial_id", "training.learning_rate", "lora.r", metric, "steps", "status"}
        assert r["status"] in ("COMPLETED", "STOPPED_EARLY") and int(r["steps"]) > 0
        assert 3e-4 <= float(r["training.learning_rate"]) <= 3e-3 and r["lora.r"] in ("4", "8")
    # the best trial is the one with the best metric
    best_row = max(rows, key=lambda r: float(r[metric]))
    assert res["best"]["trial_id"] == best_row["trial_id"]
    assert res["best"]["metrics"][metric] == pytest.approx(float(best_row[metric]))
    assert res["best"]["metrics"][metric] > 0  # ROUGE on real generations, not zero
    # results.json is complete
    for key in ("trainable_params", "total_params", "trainable_pct"):
        assert res["params"][key] > 0
    assert res["params"]["trainable_params"] < res["params"]["total_params"]
    assert set(res["data_fingerprints"]) == {"train", "eval", "test"}
    assert {"ray", "torch", "transformers", "peft", "bitsandbytes"} <= set(res["versions"])
    assert Path(res["paths"]["adapter"]).is_dir() and Path(res["paths"]["merged"]).is_dir()
    # the training loss went down in every trial that ran to the end, and the eval loss in the search
    completed = [r for r in rows if r["status"] == "COMPLETED"]
    assert completed
    for r in completed:
        _, losses = eval_losses(run_dir, r["trial_id"])
        assert min(losses[-3:]) < losses[0]
    assert any(min(e[1:]) < e[0] for e in (eval_losses(run_dir, r["trial_id"])[0] for r in rows) if len(e) > 1)
    # checkpoints hold adapters, not whole models
    adapter_files = sorted(p.name for p in (run_dir / "best" / "adapter").iterdir())
    assert "adapter_model.safetensors" in adapter_files and "model.safetensors" not in adapter_files
    # the merge was checked and recorded, and holds up when we check it ourselves
    assert res["merge_check"]["passed"] is True
    diff, adapter_effect = reload_and_compare(run_dir, "seq2seq")
    assert diff < 1e-4 and adapter_effect > 1e-3
    samples = json.loads((run_dir / "best" / "samples.json").read_text())
    assert len(samples) == 3 and all(s["prediction"] for s in samples)
    # merged into the dequantized 4-bit weights it was trained on: it gives the trained model's outputs
    fid = res["merge_check"]["fidelity"]
    assert fid["into"] == "dequantized" and fid["passed"] is True and fid["positions"] > 0
    assert 0 <= fid["kl_mean"] < 1e-2 and abs(fid["eval_loss_delta"]) < 1e-2
    # the merged model and the untuned base scored on data.test (3 rows no trial saw), and the lift
    test, base, lift = (res["scores"][k] for k in ("test", "base_test", "lift"))
    assert test["num_examples"] == base["num_examples"] == 3
    assert {"eval_loss", "eval_rougeL"} <= set(test) and set(lift) >= {"eval_loss", "eval_rougeL"}
    # The fine-tune beats the untuned base on held-out data: its loss on the 3 test summaries is lower. (ROUGE is
    # recorded, not asserted: on 3 rows a tiny T5's generations are too poor for ROUGE to rank it.)
    assert test["eval_loss"] < base["eval_loss"] - 0.1, (test, base)
    assert lift["eval_loss"] == pytest.approx(base["eval_loss"] - test["eval_loss"])
    assert lift["eval_rougeL"] == pytest.approx(test["eval_rougeL"] - base["eval_rougeL"])


def test_t5_search_logged_each_trial_to_wandb_offline_once(tuned_t5_run):
    runs = sorted(r for r in (tuned_t5_run / "wandb").glob("offline-run-*") if "-best-" not in r.name)
    assert len(runs) == 4  # one per trial (the extra "-best-" run holds the best-adapter artifact)
    for r in runs:
        assert list(r.glob("*.wandb"))


def test_causal_lm_search_through_the_cli(tmp_path, tiny_llama, ray_local_2cpu):
    """Causal LM with packed batches (data.packing: true): the search still picks and ships a better model."""
    cfg_path = write_config(
        tmp_path / "llama.yaml",
        tiny_llama,
        tmp_path / "runs",
        model={"task": "causal_lm"},
        lora={"target_modules": "all-linear", "r": 8},
        data={"prompt_template": "Summarize: {input}\nSummary: ", "test": None, "packing": True},
        training={"epochs": 4, "learning_rate": 3e-3},
        search={
            "metric": "eval_loss",
            "num_samples": 2,
            "scheduler": "fifo",
            "grace_period": 1,
            "space": {
                "lora.r": {"type": "choice", "values": [4, 8]},
                "training.learning_rate": {"type": "loguniform", "low": 3e-4, "high": 3e-3},
            },
        },
        tracking={"wandb": False},
    )
    result = CliRunner().invoke(
        __import__("orchestrator.cli", fromlist=["cli"]).cli, ["tune", str(cfg_path)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output[-3000:]
    run_dir = tmp_path / "runs" / "llama"
    res = json.loads((run_dir / "results.json").read_text())
    assert res["mode"] == "min" and res["num_trials"] == 2
    assert set(res["data_stats"]["truncated"]) == {"train", "eval"}  # counted and recorded (jobs.formats)
    assert "Truncated " in result.output and "template cues kept" in result.output
    rows = list(csv.DictReader((run_dir / "trials.csv").open()))
    assert res["best"]["trial_id"] == min(rows, key=lambda r: float(r["eval_loss"]))["trial_id"]
    for row, rec in zip(rows, res["trials"]):  # throughput per trial (jobs/throughput.py), in both records
        assert float(row["tokens_per_s"]) > 0 and rec["tokens_per_s"] == pytest.approx(float(row["tokens_per_s"]))
        assert float(row["tokens_per_s"]) == pytest.approx(
            int(row["train_tokens"]) / float(row["train_time_s"]), rel=1e-2
        )
        assert row["mfu"] == "" and rec["mfu"] is None  # CPU, no resources.peak_tflops: no MFU invented
        assert row["kernels"] == "none" and row["torch_compile"] == "False"  # auto on CPU
    evals, losses = eval_losses(run_dir, res["best"]["trial_id"])
    assert min(losses[-3:]) < losses[0]
    # the shipped model is better than the base it started from, on the eval set
    from jobs.evaluate import evaluate
    from orchestrator.core.config_load import load_config

    cfg = load_config(cfg_path)
    base = evaluate(str(tiny_llama), cfg, cfg.data.eval)["eval_loss"]
    tuned = evaluate(str(run_dir / "best" / "merged"), cfg, cfg.data.eval)["eval_loss"]
    assert tuned < base
    assert res["merge_check"]["passed"]
    diff, adapter_effect = reload_and_compare(run_dir, "causal_lm")
    assert diff < 1e-4 and adapter_effect > 1e-4
    assert "merge check passed" in result.output


def test_calibrating_from_a_cpu_run_says_there_is_nothing_to_calibrate_from(tuned_t5_run):
    """The CPU search's trials record their estimate but no GPU peak, and `estimate --calibrate` says so."""
    rows = json.loads((tuned_t5_run / "results.json").read_text())["trials"]
    assert all(isinstance(r.get("estimated_peak_gb"), float) for r in rows)  # the plan of every trial
    assert not any("measured_peak_gb" in r for r in rows)
    from orchestrator.cli import cli

    res = CliRunner().invoke(cli, ["estimate", "--calibrate", str(tuned_t5_run)])
    assert res.exit_code == 2 and "its trials ran on CPU" in res.output
