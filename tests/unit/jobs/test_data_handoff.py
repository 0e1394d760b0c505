"""Trials get their data by value: what the driver hands them survives the loss of the driver's cache.

A `datasets.Dataset` built by `load_dataset`/`.map` is memory-mapped from Arrow files in the driver's
Hugging Face cache and pickles as their path; a worker node without that cache failed with
FileNotFoundError. Ray's object store pickles what `ray.put` gets the same way, so pickle stands in for it.
"""

from __future__ import annotations

import pickle
import shutil

import datasets

from jobs.data import prepare_datasets, trial_data
from jobs.modeling import load_tokenizer
from jobs.train_loop import resolve_data
from orchestrator.core.config import RunConfig
from tests.conftest import SEED


def _cfg(model) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {"name_or_path": str(model)},
            "data": {
                "train": str(SEED / "train.jsonl"),
                "input_column": "article",
                "target_column": "summary",
                "eval_split": 0.3,
            },
        }
    )


def test_trial_data_survives_the_loss_of_the_driver_cache(tiny_t5, tmp_path, monkeypatch):
    cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    cfg = _cfg(tiny_t5)
    data = prepare_datasets(cfg, load_tokenizer(cfg))
    assert data["train"].cache_files, "the driver's tokenized data is memory-mapped from its cache"
    expected = {k: [list(x) for x in data[k]["input_ids"]] for k in ("train", "eval")}

    payload = pickle.dumps(trial_data(data))
    assert str(cache).encode() not in payload  # no path into the driver's cache travels
    shutil.rmtree(cache)  # a worker node: the driver's cache is not there

    received = resolve_data(pickle.loads(payload))
    for k in ("train", "eval"):
        assert [list(x) for x in received[k]["input_ids"]] == expected[k]
        assert received[k].column_names == ["input_ids", "attention_mask", "labels"]
        assert received[k].cache_files == []
