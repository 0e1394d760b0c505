"""Which version of the training data a retrain learns from: fingerprints of data.train and data.eval.

A retrain whose combined fingerprint equals the last successful one's has "no new data" and stops.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict

from orchestrator.storage.sources import fingerprint_path


def fingerprint_data(cfg: Any) -> Dict[str, str]:
    """Fingerprints of the data the challenger learns from (train, and eval when set), and both combined."""
    parts = {"train": fingerprint_path(cfg.data.train, endpoint_url=cfg.data_endpoint)}
    if cfg.data.eval:
        parts["eval"] = fingerprint_path(cfg.data.eval, "data.eval", cfg.data_endpoint)
    parts["combined"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return parts
