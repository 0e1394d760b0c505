"""The tags that tie MLflow runs to a qlora-launch search, shared by the driver (orchestrator.observe) and
the trials (jobs/mlflow_live.py), which find each other's runs by them."""

from __future__ import annotations

import os

SEARCH_TAG = "qlora_launch.search"  # names one search: "<experiment>@<started_at>"
KIND_TAG = "qlora_launch.kind"  # "search" (the parent) or "trial"
TRIAL_TAG = "qlora_launch.trial_id"
LIVE_TAG = "qlora_launch.live"  # "true" on a trial run logged while it trained


def search_uid(experiment: str, started_at: str) -> str:
    """The SEARCH_TAG value of one search (one run folder may hold several searches over time)."""
    return f"{experiment}@{started_at}"


def allow_file_store(uri: str) -> None:
    """Opt in to MLflow's file store ("maintenance mode") for a plain folder or file:// URI: a folder next
    to the run is what such users want."""
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
