"""A trial's status beside COMPLETED / STOPPED_EARLY / ERROR: SKIPPED_WONT_FIT, and how it is worded.

A sampled configuration whose estimated peak memory exceeds the largest GPU (or the host's memory on
CPU workers) is not launched (orchestrator.estimate.wont_fit decides, jobs.wont_fit reports it to Tune).
Its record carries `needed_gb`, `available_gb` and `fit_limit` (what `available_gb` is).
"""

from __future__ import annotations

from typing import Any, Mapping

SKIPPED_WONT_FIT = "SKIPPED_WONT_FIT"
SKIPPED_FLAG = "skipped_wont_fit"  # in the one Tune result such a trial reports


def wont_fit_text(row: Mapping[str, Any]) -> str:
    """'needs 90.2 GiB, 80 GiB available (one GPU: resources.gpu_memory_gb)' from a trial's record."""
    need, have = row.get("needed_gb"), row.get("available_gb")
    if need is None or have is None:
        return "its estimated memory does not fit"
    where = f" ({row['fit_limit']})" if row.get("fit_limit") else ""
    return f"needs {float(need):.3g} GiB, {float(have):.3g} GiB available{where}"
