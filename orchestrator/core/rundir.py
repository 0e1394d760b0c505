"""The run folder as code: where a run's files are, and the only reader and writer of them.

Layout (docs/run_layout.md): `config.json` (the validated config), `results.json` (the summary the
pipeline writes last), `trials.csv`, `trials/<id>/{result.json,log_history.json}`, `best/adapter`,
`best/merged`, `best/merge_check.json`, `best/samples.json`, `report/`, and `ray/` (Ray's own storage
when output.dir is local). Readers are tolerant: a file that is missing or unreadable reads as None (or
empty), so a run still in progress or cut short can be listed and reported on.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from orchestrator.core.s3_uri import is_s3

CONFIG = "config.json"
RESULTS = "results.json"
TRIALS_CSV = "trials.csv"
TRIALS_DIR = "trials"
DRIVER_LOG = "driver.log"  # the launching process's library/Ray logging (observe/driver_log.py)
BEST_DIR = "best"


def run_dir_for(cfg: Any) -> Path:
    """Where a run's files go: output.dir/experiment, or ./runs/experiment when output.dir is remote."""
    root = Path("runs") if is_s3(cfg.output.dir) else Path(cfg.output.dir)
    return (root / cfg.experiment).resolve()


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Any, indent: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False), encoding="utf-8")


class RunDir:
    """One run folder: its paths as attributes; readers never raise; writers create folders."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self.config_path = self.path / CONFIG
        self.results_path = self.path / RESULTS
        self.trials_csv = self.path / TRIALS_CSV
        self.report_dir = self.path / "report"
        self.wandb_dir = self.path / "wandb"  # W&B offline runs (tracking.mode offline)
        self.best_dir = self.path / BEST_DIR
        self.adapter_dir = self.best_dir / "adapter"
        self.merged_dir = self.best_dir / "merged"
        self.merge_check_path = self.best_dir / "merge_check.json"
        self.samples_path = self.best_dir / "samples.json"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def trial_dir(self, trial_id: str) -> Path:
        return self.path / TRIALS_DIR / str(trial_id)

    # ---- readers --------------------------------------------------------------------------------
    def is_run(self) -> bool:
        """True when the folder holds a run (finished or not)."""
        return self.path.is_dir() and (self.results_path.exists() or self.config_path.exists())

    def results(self) -> Optional[Dict[str, Any]]:
        return read_json(self.results_path)

    def config(self) -> Optional[Dict[str, Any]]:
        return read_json(self.config_path)

    def trials(self) -> List[Dict[str, Any]]:
        """The trial rows: results.json's when the run finished, else what trials.csv says so far."""
        rows = (self.results() or {}).get("trials")
        return list(rows) if rows else self.trials_from_csv()

    def trials_from_csv(self) -> List[Dict[str, str]]:
        try:
            with self.trials_csv.open(newline="") as f:
                return list(csv.DictReader(f))
        except OSError:
            return []

    def trial_history(self, trial_id: str) -> List[Dict[str, Any]]:
        """The trial's HF log_history (every logged step), or []."""
        return read_json(self.trial_dir(trial_id) / "log_history.json") or []

    def trial_result(self, trial_id: str) -> Dict[str, Any]:
        """The trial's last Tune result, or {}."""
        return read_json(self.trial_dir(trial_id) / "result.json") or {}

    def merge_check(self) -> Optional[Dict[str, Any]]:
        """The merge check: from results.json, else best/merge_check.json."""
        return (self.results() or {}).get("merge_check") or read_json(self.merge_check_path)

    def samples(self) -> List[Dict[str, Any]]:
        return read_json(self.samples_path) or []

    # ---- writers --------------------------------------------------------------------------------
    def write_config(self, config_json: Dict[str, Any]) -> None:
        _write_json(self.config_path, config_json)

    def write_results(self, summary: Dict[str, Any]) -> None:
        _write_json(self.results_path, summary)

    def write_trials_csv(self, rows: List[Dict[str, Any]]) -> None:
        keys: List[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        self.path.mkdir(parents=True, exist_ok=True)
        with self.trials_csv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    def write_trial_result(self, trial_id: str, result: Dict[str, Any]) -> None:
        _write_json(self.trial_dir(trial_id) / "result.json", result)

    def write_trial_history(self, trial_id: str, history: List[Dict[str, Any]]) -> None:
        _write_json(self.trial_dir(trial_id) / "log_history.json", history, indent=1)

    def write_merge_check(self, check: Dict[str, Any]) -> None:
        _write_json(self.merge_check_path, check)

    def write_samples(self, samples: List[Dict[str, Any]]) -> None:
        _write_json(self.samples_path, samples)
