"""A search on Chinese summaries ranks its trials by character-level ROUGE-L (metrics.rouge_tokenizer: auto).

With rouge-score's default tokenizer every Chinese pair scores 0 (it keeps only [a-z0-9]), so every trial
would tie at 0 and the "best" one would be arbitrary: tests/unit/jobs/test_metrics.py shows the arithmetic.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import REPO, write_config

pytestmark = pytest.mark.integration

ZH = REPO / "examples" / "data" / "zh"


@pytest.fixture(scope="module")
def tiny_zh_t5(tmp_path_factory) -> Path:
    """A tiny T5 whose tokenizer and copy-task pre-training saw the Chinese train split only.

    Byte-level BPE: a character it never saw is spelled in bytes, never <unk>. 2048 tokens let it learn
    the train split's characters and frequent words, so 50 pre-training steps give a base that writes
    Chinese (about 40 s on 2 busy cores).
    """
    from transformers import AutoTokenizer

    from jobs.tiny_models import make_tiny_model

    out = make_tiny_model(
        "t5", [str(ZH / "train.jsonl")], str(tmp_path_factory.mktemp("model") / "zh-t5"), 2048, pretrain_steps=50
    )
    tok = AutoTokenizer.from_pretrained(out)
    article = json.loads((ZH / "eval.jsonl").read_text().splitlines()[0])["article"]
    assert tok.decode(tok(article)["input_ids"], skip_special_tokens=True) == article  # byte-level: no <unk>
    return out


def test_a_search_on_chinese_summaries_ranks_trials_by_char_rouge(tmp_path, tiny_zh_t5, ray_local_2cpu):
    from orchestrator.launch.pipeline import run

    cfg = write_config(
        tmp_path / "zh.yaml",
        tiny_zh_t5,
        tmp_path / "runs",
        lora={"target_modules": "all-linear", "r": 8},
        data={
            "train": str(ZH / "train.jsonl"),
            "eval": str(ZH / "eval.jsonl"),
            "test": None,
            "max_input_length": 128,
            "max_target_length": 48,
        },
        training={"max_steps": 20, "eval_steps": 10, "batch_size": 4, "generation_max_length": 24},
        search={
            "metric": "eval_rougeL",
            "mode": "max",
            "num_samples": 2,
            "scheduler": "fifo",
            "seed": 3,
            "space": {"training.learning_rate": {"type": "loguniform", "low": 3e-3, "high": 3e-2}},
        },
        metrics={"rouge_tokenizer": "auto"},
        merge={"enabled": False},
        tracking={"wandb": False},
    )
    assert run(str(cfg), "tune", [], echo=lambda *a, **k: None) == 0
    run_dir = tmp_path / "runs" / "zh"
    res = json.loads((run_dir / "results.json").read_text())
    rows = list(csv.DictReader((run_dir / "trials.csv").open()))
    assert res["metric"] == "eval_rougeL" and res["mode"] == "max" and len(rows) == 2
    scores = {r["trial_id"]: float(r["eval_rougeL"]) for r in rows}
    assert max(scores.values()) > 0  # char tokens see the Chinese the model writes
    assert scores[res["best"]["trial_id"]] == max(scores.values())  # the argmax (either one, on a tie)
    assert res["best"]["metrics"]["eval_rougeL"] == pytest.approx(max(scores.values()))
