"""The report's memory view: each trial's estimated peak memory beside the peak it measured.

The estimate is the plan the search made before the trial started (`estimated_peak_gb`, from
`orchestrator.estimate`; for a trial skipped as SKIPPED_WONT_FIT, the `needed_gb` it was refused on).
The measurement is torch's `max_memory_allocated` over the trial's reports (`measured_peak_gb`, GPU
trials only) plus the CUDA context the estimate counts as a flat CUDA_OVERHEAD_GIB, the same comparison
`qlora-launch estimate --calibrate` makes. The memory a trial was given is its share of the GPU
(`gpus_per_worker` x `resources.gpu_memory_gb`) or the planner's memory budget.

The numbers (`memory_view`) are plain Python; plotly is imported inside `memory_figure`.
"""

from __future__ import annotations

import html
from typing import Any, Dict, List, Optional

from orchestrator.core.formatting import is_number as _num
from orchestrator.core.trial_status import SKIPPED_WONT_FIT
from orchestrator.estimate.memory import with_cuda_context
from orchestrator.observe.report.data import ReportData, short_id, trial_colors


def _given_gb(data: ReportData, rec: Dict[str, Any]) -> Optional[float]:
    """The trial's GPU share x resources.gpu_memory_gb, else the planner's budget or what a skipped trial had."""
    gpu_gb = (data["config"].get("resources") or {}).get("gpu_memory_gb")
    share = rec.get("gpus_per_worker")
    if _num(share) and _num(gpu_gb):
        return round(float(share) * float(gpu_gb), 3)
    return next((float(rec[k]) for k in ("memory_budget_gb", "available_gb") if _num(rec.get(k))), None)


def memory_view(data: ReportData) -> Optional[Dict[str, Any]]:
    """{rows: [{trial_id, status, estimated_gb, measured_gb, ratio, given_gb, checkpointing}], measured: bool}
    or None when no trial recorded an estimate."""
    rows: List[Dict[str, Any]] = []
    for r in data["trials"]:
        tid = str(r["trial_id"])
        rec = {**(data["last_results"].get(tid) or {}), **r}  # the trial's last report, its table row over it
        est = rec.get("needed_gb" if rec.get("status") == SKIPPED_WONT_FIT else "estimated_peak_gb")
        if not _num(est):
            continue
        got = rec.get("measured_peak_gb")
        measured = with_cuda_context(float(got)) if _num(got) else None
        rows.append(
            {
                "trial_id": tid,
                "status": rec.get("status") or "",
                "estimated_gb": float(est),
                "measured_gb": measured,
                "ratio": round(measured / float(est), 3) if measured is not None and float(est) > 0 else None,
                "given_gb": _given_gb(data, rec),
                "checkpointing": rec.get("gradient_checkpointing"),
            }
        )
    if not rows:
        return None
    return {"rows": rows, "measured": any(x["measured_gb"] is not None for x in rows)}


def memory_figure(data: ReportData):
    import plotly.graph_objects as go

    from orchestrator.observe.report.figures import _LAYOUT

    view = memory_view(data)
    if view is None:
        return None
    rows = view["rows"]
    colors = trial_colors(data["trials"])
    labels = [short_id(x["trial_id"]) for x in rows]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=labels,
            y=[x["estimated_gb"] for x in rows],
            name="estimated peak",
            marker=dict(
                color=[colors.get(x["trial_id"], "#4e79a7") for x in rows],
                pattern=dict(shape=["x" if x["status"] == SKIPPED_WONT_FIT else "" for x in rows]),
            ),
            customdata=[[x["trial_id"], x["status"]] for x in rows],
            hovertemplate="%{customdata[0]} (%{customdata[1]})<br>estimated %{y:.3f} GiB<extra></extra>",
        )
    )
    if view["measured"]:
        fig.add_trace(
            go.Bar(
                x=labels,
                y=[x["measured_gb"] for x in rows],
                name="measured peak (+ CUDA context)",
                marker=dict(color="#9ca3af"),
                customdata=[[x["trial_id"], x["ratio"]] for x in rows],
                hovertemplate="%{customdata[0]}<br>measured %{y:.3f} GiB (x%{customdata[1]} the estimate)"
                "<extra></extra>",
            )
        )
    given = [x["given_gb"] for x in rows]
    if any(_num(g) for g in given):
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=given,
                mode="markers",
                name="memory it was given",
                marker=dict(symbol="line-ew-open", size=28, line=dict(width=3, color="#e15759")),
                hovertemplate="given %{y:.3f} GiB<extra></extra>",
            )
        )
    fig.update_layout(**_LAYOUT, barmode="group")
    fig.update_yaxes(title_text="GiB", rangemode="tozero")
    fig.update_xaxes(title_text="trial")
    return fig


def memory_table(data: ReportData) -> str:
    view = memory_view(data)
    if view is None:
        return ""

    def gb(v) -> str:
        return f"{v:.3f}" if _num(v) else "—"

    head = "<tr><th>trial</th><th>status</th><th>checkpointing</th><th>estimated GiB</th><th>measured GiB</th>"
    head += "<th>measured / estimated</th><th>given GiB</th></tr>"

    def row(x: Dict[str, Any]) -> str:
        ckpt = "" if x["checkpointing"] is None else ("on" if x["checkpointing"] else "off")
        ratio = "—" if x["ratio"] is None else f"{x['ratio']:.2f}×"
        cells = [short_id(x["trial_id"]), str(x["status"]), ckpt, gb(x["estimated_gb"]), gb(x["measured_gb"])]
        cells += [ratio, gb(x["given_gb"])]
        return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"

    body = "".join(row(x) for x in view["rows"])
    return f'<table class="memory-table"><thead>{head}</thead><tbody>{body}</tbody></table>'
