"""Which version of the training data a retrain learns from: fingerprints of data.train and data.eval.

A retrain whose combined fingerprint equals the last successful one's has "no new data" and stops.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict

from orchestrator.core.errors import UserError


def fingerprint_path(path: str, key: str = "data.train") -> str:
    """sha256 of a file's bytes; for a folder, of every file's relative path and bytes, sorted.

    Files and folders use orchestrator.core.fingerprint (the same fingerprint a publish manifest carries);
    a hub dataset is fingerprinted by its current commit on the hub.

    Raises:
        UserError: the path does not exist, or is a hub dataset that cannot be reached.
    """
    from orchestrator.core.fingerprint import fingerprint

    if path.startswith("hub:"):
        return _hub_fingerprint(path[4:])
    fp = fingerprint(path)
    if fp is None:
        raise UserError(f"`{key}`: '{path}' does not exist; fix the path.")
    return fp


def _hub_fingerprint(name: str) -> str:
    try:
        from huggingface_hub import HfApi

        sha = HfApi().dataset_info(name).sha
    except Exception as e:  # offline, unknown dataset, auth
        raise UserError(
            f"cannot fingerprint hub dataset '{name}' ({type(e).__name__}); use a local copy or pass --force."
        ) from None
    return hashlib.sha256(f"hub:{name}@{sha}".encode()).hexdigest()


def fingerprint_data(cfg: Any) -> Dict[str, str]:
    """Fingerprints of the data the challenger learns from (train, and eval when set), and both combined."""
    parts = {"train": fingerprint_path(cfg.data.train)}
    if cfg.data.eval:
        parts["eval"] = fingerprint_path(cfg.data.eval, "data.eval")
    parts["combined"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return parts
