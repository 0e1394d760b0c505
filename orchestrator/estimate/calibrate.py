"""`qlora-launch estimate --calibrate RUN_DIR`: the estimate against the measured peaks of a past run.

Each trial of a GPU run records `estimated_peak_gb` (the plan) and `measured_peak_gb` (torch's
`max_memory_allocated` over its reports). The ratio measured / estimated per trial says how far the
estimate is off for this model and data; the suggested `resources.memory_margin` is the largest ratio
plus 10 % headroom (never under 1.05), rounded up to 0.05, which `gpus_per_worker: auto` multiplies the
estimate by. A CPU run has no such measurement (its RSS holds the whole process, not what the estimate
models), so there is nothing to calibrate from.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

from orchestrator.core.errors import UserError
from orchestrator.estimate.memory import with_cuda_context

HEADROOM = 1.10
FLOOR = 1.05


@dataclass
class Calibration:
    run_dir: str
    trials: List[Dict[str, Any]]  # trial_id, estimated_peak_gb, measured_peak_gb, ratio
    margin: float  # the suggested resources.memory_margin
    current: float  # the run's own resources.memory_margin

    def to_json(self) -> Dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "trials": self.trials,
            "suggested_memory_margin": self.margin,
            "memory_margin": self.current,
        }


def suggest_margin(ratios: List[float]) -> float:
    """The margin covering the worst measured/estimated ratio with 10 % headroom, in steps of 0.05."""
    return max(FLOOR, math.ceil(max(ratios) * HEADROOM * 20 - 1e-9) / 20)


def calibrate(run_dir: str) -> Calibration:
    """Raises UserError when RUN_DIR is not a finished run or holds no GPU measurement."""
    path = Path(run_dir)
    results = path / "results.json"
    if not results.is_file():
        raise UserError(f"{run_dir} is not a finished run folder (no results.json). Give the folder of a past run.")
    res = json.loads(results.read_text())
    pairs = []
    for row in res.get("trials", []):
        est, got = row.get("estimated_peak_gb"), row.get("measured_peak_gb")
        if isinstance(est, (int, float)) and isinstance(got, (int, float)) and est > 0:
            # torch's max_memory_allocated leaves out the CUDA context and allocator slack that the
            # estimate adds as a flat CUDA_OVERHEAD_GIB: add it back before comparing
            got = with_cuda_context(got)
            pairs.append(
                {
                    "trial_id": row.get("trial_id"),
                    "estimated_peak_gb": est,
                    "measured_peak_gb": got,
                    "ratio": round(got / est, 3),
                }
            )
    if not pairs:
        raise UserError(
            f"{run_dir} has no trial with both an estimated and a measured GPU peak: its trials ran on CPU, "
            "or before this version recorded them. Calibrate from a run on GPUs."
        )
    cfg = {}
    if (path / "config.json").is_file():
        cfg = json.loads((path / "config.json").read_text())
    current = float(cfg.get("resources", {}).get("memory_margin", 1.2))
    return Calibration(str(path), pairs, suggest_margin([p["ratio"] for p in pairs]), current)


def calibration_text(c: Calibration) -> List[str]:
    lines = [f"Estimate vs measured peak GPU memory in {c.run_dir}:"]
    lines.append(f"  {'trial':<14} {'estimated GiB':>13} {'measured GiB':>13} {'measured/est.':>13}")
    for t in c.trials:
        lines.append(
            f"  {str(t['trial_id']):<14} {t['estimated_peak_gb']:>13.3f} {t['measured_peak_gb']:>13.3f} "
            f"{t['ratio']:>13.3f}"
        )
    ratios = [t["ratio"] for t in c.trials]
    lines.append(
        f"Measured/estimated: {min(ratios):.3f} to {max(ratios):.3f} over {len(ratios)} trial(s). Suggested "
        f"resources.memory_margin: {c.margin:.2f} (this run used {c.current:.2f}); gpus_per_worker auto asks "
        "for the estimate times it."
    )
    return lines
