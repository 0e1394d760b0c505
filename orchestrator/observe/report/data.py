"""The report's view of a run (`ReportData`, read through RunDir) and the numbers behind its plots.

`runs` / `runs show` use the same view (`load_report_data`, `peak_memory`): this module imports
neither plotly nor matplotlib.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypedDict, Union

from orchestrator.core.errors import UserError
from orchestrator.core.formatting import fmt_duration as _fmt_duration
from orchestrator.core.formatting import fmt_number
from orchestrator.core.formatting import is_number as _num
from orchestrator.core.rundir import RunDir

# Tableau 10: distinct, colour-blind friendlier than plotly's default; one colour per trial everywhere.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]
STATUS_LABEL = {
    "COMPLETED": "completed",
    "STOPPED_EARLY": "stopped early",
    "ERROR": "error",
    "SKIPPED_WONT_FIT": "won't fit",  # never started: its estimate exceeds the largest GPU (or the host)
}
SMOOTH_AFTER = 20  # points; noisier per-step curves get a smoothed line over the faint raw one


class ReportData(TypedDict):
    """Everything the report shows of one run folder."""

    run_dir: Path
    experiment: str
    metric: str
    mode: str  # "min" | "max"
    trials: List[Dict[str, Any]]  # typed rows of results.json, else trials.csv
    param_keys: List[str]  # the searched hyperparameters present in the rows
    space: Dict[str, Any]
    best: Dict[str, Any]
    params: Dict[str, Any]  # parameter counts (trainable_params, total_params, trainable_pct)
    results: Dict[str, Any]
    config: Dict[str, Any]
    histories: Dict[str, List[Dict[str, Any]]]  # trial id -> HF log_history
    last_results: Dict[str, Dict[str, Any]]  # trial id -> last Tune result
    samples: List[Dict[str, Any]]
    merge_check: Optional[Dict[str, Any]]


def load_report_data(run_dir: Union[str, Path, RunDir]) -> ReportData:
    """Everything the report shows, read from a run folder. Raises UserError when it is not one."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not run.path.is_dir():
        raise UserError(
            f"RUN_DIR: '{run.path}' is not a folder. Pass the folder `qlora-launch tune` wrote, e.g. runs/<experiment>."
        )
    results = run.results() or {}
    config = run.config() or {}
    trials = run.trials()
    if not trials and not results:
        raise UserError(
            f"RUN_DIR: '{run.path}' has no results.json or trials.csv; is it a run folder of "
            f"`qlora-launch tune` (see docs/run_layout.md), and has the search finished?"
        )
    search = config.get("search") or {}
    metric = results.get("metric") or search.get("metric") or "eval_loss"
    mode = results.get("mode") or search.get("mode") or ("min" if "loss" in metric else "max")
    ids = [str(row.get("trial_id")) for row in trials]
    fixed = {"trial_id", metric, "steps", "planned_steps", "status", "time_s", *RECORD_COLUMNS}
    param_keys = [k for k in (search.get("space") or {})] or [
        k for k in (trials[0] if trials else {}) if k not in fixed
    ]
    param_keys = [k for k in param_keys if any(k in r for r in trials)]
    return ReportData(
        run_dir=run.path,
        experiment=results.get("experiment") or run.path.name,
        metric=metric,
        mode=mode,
        trials=[_typed(r) for r in trials],
        param_keys=param_keys,
        space=search.get("space") or {},
        best=results.get("best") or {},
        params=results.get("params") or {},
        results=results,
        config=config,
        histories={tid: run.trial_history(tid) for tid in ids},
        last_results={tid: run.trial_result(tid) for tid in ids},
        samples=run.samples(),
        merge_check=run.merge_check(),
    )


# Columns of trials.csv that record what a trial was given, measured or cost, not a hyperparameter: a run
# without a search space must not plot them as one.
RECORD_COLUMNS = (
    "spend_gpu_hours",
    "spend_usd",
    "error",
    "gradient_checkpointing",
    "estimated_peak_gb",
    "measured_peak_gb",
    "needed_gb",
    "available_gb",
    "fit_limit",
    "train_tokens",
    "train_time_s",
    "tokens_per_s",
    "mfu",
    "kernels",
    "torch_compile",
)


def _typed(row: Dict[str, Any]) -> Dict[str, Any]:
    """trials.csv gives strings: numbers back to numbers, '' to None."""
    out = {}
    for k, v in row.items():
        if isinstance(v, str):
            if v == "":
                v = None
            elif k not in ("trial_id", "status"):
                try:
                    v = int(v) if re.fullmatch(r"-?\d+", v) else float(v)
                except ValueError:
                    pass
        out[k] = v
    return out


def peak_memory(data: ReportData, trial_id: str) -> Optional[float]:
    """The trial's peak RSS (MB) from its last Tune result, or None."""
    v = (data["last_results"].get(trial_id) or {}).get("peak_rss_mb")
    return float(v) if _num(v) else None


def best_trial_id(data: ReportData) -> Optional[str]:
    return (data.get("best") or {}).get("trial_id")


# ---- the numbers behind the plots --------------------------------------------------------------


def series(history: List[Dict[str, Any]], key: str) -> Tuple[List[int], List[float]]:
    """(steps, values) of `key` in an HF log_history, in step order, finite values only."""
    pts = sorted((int(h["step"]), float(h[key])) for h in history if _num(h.get(key)) and _num(h.get("step")))
    return [p[0] for p in pts], [p[1] for p in pts]


def smooth(values: Sequence[float], weight: float = 0.8) -> List[float]:
    """Exponential moving average (TensorBoard's smoothing), debiased so the start is not pulled to 0."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def trial_colors(trials: Sequence[Dict[str, Any]]) -> Dict[str, str]:
    return {str(r["trial_id"]): PALETTE[i % len(PALETTE)] for i, r in enumerate(trials)}


def short_id(trial_id: str) -> str:
    """`adab4_00003` -> `#3` (Tune's ids share the experiment prefix)."""
    m = re.search(r"_(\d+)$", trial_id)
    return f"#{int(m.group(1))}" if m else trial_id


def short_key(key: str) -> str:
    """`training.learning_rate` -> `learning_rate`."""
    return key.rsplit(".", 1)[-1] if key else key


def pick_pair(param_keys: Sequence[str], trials: Sequence[Dict[str, Any]]) -> Tuple[Optional[str], Optional[str]]:
    """The two hyperparameters for the scatter: learning rate and LoRA rank when searched, else the first two."""
    keys = list(param_keys)

    def find(pred):
        return next((k for k in keys if pred(k)), None)

    x = find(lambda k: k.endswith("learning_rate")) or (keys[0] if keys else None)
    y = find(lambda k: k in ("lora.r", "lora.rank")) or next((k for k in keys if k != x), None)
    return x, y


def log_ticks(lo: float, hi: float) -> List[float]:
    """1-2-5 ticks spanning [lo, hi] on a log axis (at least the two ends' decades)."""
    lo_e, hi_e = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    ticks = [m * 10**e for e in range(lo_e, hi_e + 1) for m in (1, 2, 5)]
    inside = [t for t in ticks if lo / 1.6 <= t <= hi * 1.6]
    return [float(f"{t:.3g}") for t in (inside if len(inside) >= 2 else ticks)]


def is_log_scale(key: Optional[str], space: Dict[str, Any], values: Sequence[Any]) -> bool:
    d = space.get(key or "") or {}
    if d.get("type") == "loguniform":
        return True
    nums = [v for v in values if _num(v) and v > 0]
    return bool(nums) and min(nums) > 0 and max(nums) / min(nums) > 50


def axis_values(key: str, trials: Sequence[Dict[str, Any]], space: Dict[str, Any]):
    """One parallel-coordinates axis: (values, tickvals, ticktext, label)."""
    vals = [r.get(key) for r in trials]
    if all(_num(v) for v in vals if v is not None) and any(v is not None for v in vals):
        nums = [v for v in vals if v is not None]
        if is_log_scale(key, space, nums):
            logs = [math.log10(v) if v is not None and v > 0 else None for v in vals]
            lo, hi = min(v for v in logs if v is not None), max(v for v in logs if v is not None)
            gap = max(hi - lo, 1e-9) * 0.12  # decade ticks that would crowd an end tick are dropped
            inner = [float(t) for t in range(math.ceil(lo), math.floor(hi) + 1) if lo + gap < t < hi - gap]
            ticks = sorted({round(lo, 3), round(hi, 3), *inner})
            return logs, ticks, [f"{10**t:.2g}" for t in ticks], f"{short_key(key)} (log)"
        uniq = sorted(set(nums))
        if len(uniq) <= 8:
            return vals, uniq, [fmt(u) for u in uniq], short_key(key)
        return vals, None, None, short_key(key)
    cats = sorted({str(v) for v in vals if v is not None})
    return [cats.index(str(v)) if v is not None else None for v in vals], list(range(len(cats))), cats, short_key(key)


def rouge_l(prediction: str, reference: str, tokenizer: str = "auto") -> float:
    """ROUGE-L F1 of one prediction against its reference: the project's ROUGE (jobs.metrics.rouge) with
    the run's metrics.rouge_tokenizer, so the report shows the number the search optimized."""
    from jobs.metrics import rouge

    return rouge([str(prediction)], [str(reference)], tokenizer)["rougeL"]


def search_seconds(results: Dict[str, Any]) -> Optional[float]:
    try:
        a = datetime.fromisoformat(results["started_at"])
        b = datetime.fromisoformat(results["finished_at"])
        return (b - a).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def fmt(v, digits: int = 4) -> str:
    return fmt_number(v, digits, sci_from=1e6, sci_digits=3, group_ints=True)


def fmt_duration(s: Optional[float]) -> str:
    return _fmt_duration(s, sep=" ", missing="")
