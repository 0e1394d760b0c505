"""Preflight of the rows themselves: null, non-string or empty inputs and targets (messages: malformed
lists, no assistant turn), counted per data file with the first row numbers (no torch, no datasets).

Local .jsonl / .csv / .parquet files are read; s3://, hub: and save_to_disk sources are checked where
the data is loaded (jobs.data.load_splits), with the same rules (orchestrator.core.rows).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

from orchestrator.core.config_sections import DataConfig
from orchestrator.core.rows import describe_bad_rows, row_problem


def numbered_rows(p: Path) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """('line N' / 'row N', row) for every example of a local data file (1-based, as an editor counts)."""
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json"):
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                if isinstance(row, dict):
                    yield f"line {n}", row
    elif suffix == ".csv":
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for row in reader:
                if any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    yield f"line {reader.line_num}", row
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for n, row in enumerate(pq.read_table(p).to_pylist(), 1):
            yield f"row {n}", row


def bad_rows(d: DataConfig, p: Path) -> List[Tuple[str, str]]:
    """[(where, why)] for every row of `p` that cannot be trained on."""
    out = []
    for where, row in numbered_rows(p):
        why = row_problem(d, row)
        if why:
            out.append((where, why))
    return out


def check_bad_rows(key: str, source: str, d: DataConfig) -> List[str]:
    """The problem line for `source` when it holds bad rows and data.on_bad_rows is error, else []."""
    p = Path(source)
    if d.on_bad_rows != "error" or "://" in source or source.startswith("hub:") or not p.is_file():
        return []
    try:
        bad = bad_rows(d, p)
    except (ValueError, OSError):  # unreadable files are reported by check_file
        return []
    return [describe_bad_rows(key, source, bad)] if bad else []
