"""The report's cost plot (search.budget / resources.price_per_gpu_hour): the metric against each
trial's spend, and the best metric so far against the cumulative spend, with the budget marked.

The numbers (`cost_view`) are plain Python; plotly is imported inside `cost_figure`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from orchestrator.core.formatting import is_number as _num
from orchestrator.observe.report.data import ReportData, best_trial_id, short_id, trial_colors


def cost_view(data: ReportData) -> Optional[Dict[str, Any]]:
    """{unit, label, points: [(trial id, spend, metric)], curve: ([cumulative spend], [best so far]), budget}
    in dollars when the run has a price, else GPU-hours; None when the run recorded no spend.

    The curve takes the trials in launch order (the order of the trial table).
    """
    trials = data["trials"]
    key = "spend_usd" if any(_num(r.get("spend_usd")) for r in trials) else "spend_gpu_hours"
    if not any(_num(r.get(key)) for r in trials):
        return None
    metric, sign = data["metric"], (1 if data["mode"] == "max" else -1)
    points: List[tuple] = []
    cum: List[float] = []
    best: List[Optional[float]] = []
    total, so_far = 0.0, None
    for r in trials:
        cost = float(r[key]) if _num(r.get(key)) else 0.0
        m = r.get(metric)
        total += cost
        if _num(m):
            points.append((str(r["trial_id"]), cost, float(m)))
            if so_far is None or sign * float(m) > sign * so_far:
                so_far = float(m)
        cum.append(total)
        best.append(so_far)
    spend = (data.get("results") or {}).get("spend") or {}
    b = spend.get("budget") or {}
    if key == "spend_usd":
        budget = b.get("usd") or (
            spend["budget_gpu_hours"] * spend["price_per_gpu_hour"]
            if _num(spend.get("budget_gpu_hours")) and _num(spend.get("price_per_gpu_hour"))
            else None
        )
    else:
        budget = spend.get("budget_gpu_hours")
    worker = "worker" in str(spend.get("unit_note", ""))
    label = "USD" if key == "spend_usd" else ("worker-hours" if worker else "GPU-hours")
    return {"unit": key, "label": label, "points": points, "curve": (cum, best), "budget": budget}


def cost_figure(data: ReportData):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from orchestrator.observe.report.figures import _LAYOUT

    view = cost_view(data)
    if view is None:
        return None
    metric, label, best_id = data["metric"], view["label"], best_trial_id(data)
    colors = trial_colors(data["trials"])
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(f"{metric} vs cost per trial", f"best {metric} so far vs spend"),
        horizontal_spacing=0.12,
    )
    pts = view["points"]
    fig.add_trace(
        go.Scatter(
            x=[p[1] for p in pts],
            y=[p[2] for p in pts],
            mode="markers+text",
            text=[short_id(p[0]) + (" ★" if p[0] == best_id else "") for p in pts],
            textposition="middle right",
            marker=dict(size=14, color=[colors.get(p[0], "#4e79a7") for p in pts], line=dict(width=1, color="#111")),
            customdata=[p[0] for p in pts],
            hovertemplate=f"%{{customdata}}<br>cost %{{x:.4g}} {label}<br>{metric} %{{y:.4g}}<extra></extra>",
            name="trials",
        ),
        1,
        1,
    )
    cum, best = view["curve"]
    fig.add_trace(
        go.Scatter(
            x=[0.0] + cum,
            y=[None] + best,
            mode="lines+markers",
            line=dict(shape="hv", color="#4e79a7", width=2.5),
            hovertemplate=f"spent %{{x:.4g}} {label}<br>best {metric} %{{y:.4g}}<extra></extra>",
            name="best so far",
        ),
        1,
        2,
    )
    if _num(view["budget"]):
        fig.add_vline(x=view["budget"], line=dict(color="#e15759", dash="dash"), row=1, col=2)
        fig.add_annotation(
            x=view["budget"], y=1, yref="y2 domain", text="budget", showarrow=False, font=dict(color="#e15759"),
            xanchor="right", row=1, col=2,
        )  # fmt: skip
    fig.update_layout(**dict(_LAYOUT, margin=dict(l=60, r=20, t=50, b=50)), showlegend=False)
    fig.update_xaxes(title_text=f"cost ({label})", rangemode="tozero", row=1, col=1)
    fig.update_xaxes(title_text=f"cumulative spend ({label})", rangemode="tozero", row=1, col=2)
    fig.update_yaxes(title_text=metric, row=1, col=1)
    fig.update_yaxes(title_text=f"best {metric}", row=1, col=2)
    return fig
