"""A validated RunConfig for the tiny T5 on the seed data, for tests that build models without Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict


def seed_config(model: Path, seed_data: Path, task: str = "seq2seq", **sections: Dict[str, Any]):
    """`model` on the seed train/eval files (article -> summary); each keyword is a section whose keys are
    laid over the defaults here (model, data) or set as given."""
    from orchestrator.core.config_load import validate_dict

    cfg: Dict[str, Dict[str, Any]] = {
        "model": {"name_or_path": str(model), "task": task},
        "data": {
            "train": str(seed_data / "train.jsonl"),
            "eval": str(seed_data / "eval.jsonl"),
            "input_column": "article",
            "target_column": "summary",
        },
    }
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    return validate_dict(cfg)


def tiny_t5_config(model: Path, seed_data: Path, **sections: Dict[str, Any]):
    """The tiny T5 (seq2seq, float32 compute) on the seed train/eval files (seed_config)."""
    quantization = {"compute_dtype": "float32", **sections.pop("quantization", {})}
    return seed_config(model, seed_data, quantization=quantization, **sections)
