"""Reading the honest scores of a run's results.json: the test set (merged model vs the untuned base) and the
merge's fidelity to the trained model. One reader for the summary, the report, the manifest and the card.

results.json `scores` (written by jobs.merge.test_scores): {"test": {...}, "base_test": {...}, "lift": {...}},
each {"eval_loss": ..., "eval_rougeL": ..., ...}; lift is positive where the merged model is better.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

Row = Tuple[str, Optional[float], Optional[float], Optional[float]]


def test_rows(results: Optional[Dict[str, Any]]) -> List[Row]:
    """(metric, untuned base, merged, lift) for each metric scored on the test set; [] when none was."""
    scores = (results or {}).get("scores") or {}
    test, base, lift = scores.get("test") or {}, scores.get("base_test") or {}, scores.get("lift") or {}
    keys = [k for k in test if k != "num_examples" and not k.endswith(("_runtime", "_per_second"))]
    return [(k, _num(base.get(k)), _num(test.get(k)), _num(lift.get(k))) for k in keys]


def test_size(results: Optional[Dict[str, Any]]) -> Optional[int]:
    n = (((results or {}).get("scores") or {}).get("test") or {}).get("num_examples")
    return int(n) if isinstance(n, (int, float)) else None


def fidelity_of(check: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The fidelity figures of a merge check (jobs.merge_fidelity.fidelity), None when it has none."""
    f = (check or {}).get("fidelity")
    return f if isinstance(f, dict) else None


def fidelity_text(f: Dict[str, Any]) -> str:
    """One line: KL and the metric deltas of the merged model against the trained one."""
    return (
        f"merged (into {f.get('into')}) vs trained 4-bit + adapter: KL {_g(f.get('kl_mean'))}/token, "
        f"eval loss {_g(f.get('trained_eval_loss'))} -> {_g(f.get('merged_eval_loss'))} "
        f"(drop {_g(f.get('metric_drop'))}, max {_g(f.get('max_metric_drop'))}), "
        f"ROUGE-L {_g(f.get('trained_rougeL'))} -> {_g(f.get('merged_rougeL'))}"
    )


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _g(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "?"
