"""The report's interactive plots: plotly figures, each rendered into the page as a JSON spec.

plotly is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

from orchestrator.core.formatting import is_number as _num
from orchestrator.observe.report.data import (
    SMOOTH_AFTER,
    STATUS_LABEL,
    ReportData,
    axis_values,
    best_trial_id,
    fmt,
    fmt_duration,
    is_log_scale,
    log_ticks,
    peak_memory,
    pick_pair,
    series,
    short_id,
    smooth,
    trial_colors,
)

_LAYOUT = dict(
    template="plotly_white",
    font=dict(family="Inter, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif", size=12, color="#1f2937"),
    margin=dict(l=60, r=20, t=40, b=50),
    legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0, font=dict(size=11)),
    hoverlabel=dict(font=dict(size=12)),
    height=380,
)


_TEXT_POS = ("top center", "bottom center", "top right", "bottom right", "top left", "bottom left")


def curve_figure(data: ReportData, key: str, title: str, ytitle: str):
    import plotly.graph_objects as go

    colors = trial_colors(data["trials"])
    best = best_trial_id(data)
    fig = go.Figure()
    max_planned, n_stops = 0, 0
    for row in data["trials"]:
        tid = str(row["trial_id"])
        xs, ys = series(data["histories"].get(tid, []), key)
        max_planned = max(max_planned, int(row.get("planned_steps") or 0), *(xs or [0]))
        if not xs:
            continue
        stopped = row.get("status") == "STOPPED_EARLY"
        failed = row.get("status") == "ERROR"
        is_best = tid == best
        label = f"{short_id(tid)} {tid}" + (" ★ best" if is_best else "") + (" (stopped)" if stopped else "")
        smoothed = len(xs) > SMOOTH_AFTER
        if smoothed:
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    showlegend=False,
                    legendgroup=tid,
                    opacity=0.22,
                    line=dict(color=colors[tid], width=1),
                    hoverinfo="skip",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=smooth(ys) if smoothed else ys,
                mode="lines" if smoothed else "lines+markers",
                name=label,
                legendgroup=tid,
                line=dict(
                    color=colors[tid], width=3.2 if is_best else 1.8, dash="dot" if stopped or failed else "solid"
                ),
                marker=dict(size=6),
                opacity=1.0 if is_best or not best else 0.85,
                customdata=ys,
                hovertemplate=(
                    f"{tid}<br>step %{{x}}<br>{ytitle} %{{customdata:.4g}}"
                    + (" (smoothed %{y:.4g})" if smoothed else "")
                    + "<extra></extra>"
                ),
            )
        )
        if smoothed:
            ys = smooth(ys)
        if stopped or failed:
            n_stops += 1
            why = "stopped early by the scheduler" if stopped else "failed"
            fig.add_trace(
                go.Scatter(
                    x=[xs[-1]],
                    y=[ys[-1]],
                    mode="markers+text",
                    showlegend=False,
                    legendgroup=tid,
                    marker=dict(symbol="x-thin", size=16, line=dict(width=3, color=colors[tid])),
                    text=[f"stopped @{xs[-1]}" if stopped else "failed"],
                    textposition=_TEXT_POS[n_stops % len(_TEXT_POS)],
                    textfont=dict(color=colors[tid], size=11),
                    hovertemplate=f"{tid} {why} at step %{{x}} (planned {row.get('planned_steps')})<extra></extra>",
                )
            )
    fig.update_layout(**dict(_LAYOUT, margin=dict(l=60, r=20, t=56, b=50)))
    fig.update_xaxes(title_text="step", range=[0, max_planned * 1.03 + 1] if max_planned else None)
    fig.update_yaxes(title_text=ytitle)
    return fig


def scatter_figure(data: ReportData):
    import plotly.graph_objects as go

    x, y = pick_pair(data["param_keys"], data["trials"])
    metric, trials, best = data["metric"], data["trials"], best_trial_id(data)
    if x is None:
        return None
    ykey = y or metric
    pts = [r for r in trials if r.get(x) is not None and r.get(ykey) is not None]
    if not pts:
        return None
    vals = [r.get(metric) for r in pts]
    finite = [v for v in vals if _num(v)]
    symbols = {"COMPLETED": "circle", "STOPPED_EARLY": "x", "ERROR": "diamond-open"}
    fig = go.Figure(
        go.Scatter(
            x=[r[x] for r in pts],
            y=[r[ykey] for r in pts],
            mode="markers+text",
            text=[short_id(str(r["trial_id"])) + (" ★" if r["trial_id"] == best else "") for r in pts],
            textposition="middle right",
            textfont=dict(size=12),
            customdata=[
                [r["trial_id"], fmt(r.get(metric)), STATUS_LABEL.get(r.get("status"), r.get("status"))] for r in pts
            ],
            marker=dict(
                size=[26 if r["trial_id"] == best else 20 for r in pts],
                color=[v if _num(v) else (min(finite) if finite else 0) for v in vals],
                colorscale="Viridis",
                reversescale=data["mode"] == "min",
                showscale=True,
                colorbar=dict(title=dict(text=metric, side="right"), thickness=14),
                symbol=[symbols.get(r.get("status"), "circle") for r in pts],
                line=dict(width=[3 if r["trial_id"] == best else 1 for r in pts], color="#111827"),
            ),
            hovertemplate=(
                f"%{{customdata[0]}}<br>{x} %{{x:.4g}}<br>{ykey} %{{y}}<br>{metric} %{{customdata[1]}}"
                "<br>%{customdata[2]}<extra></extra>"
            ),
        )
    )
    fig.update_layout(**dict(_LAYOUT, margin=dict(l=60, r=20, t=20, b=50)), showlegend=False)
    xs = [r[x] for r in pts]
    if is_log_scale(x, data["space"], xs):
        ticks = log_ticks(min(xs), max(xs))
        fig.update_xaxes(title_text=x, type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    else:
        fig.update_xaxes(title_text=x)
    yvals = sorted({r[ykey] for r in pts})
    if y and all(isinstance(v, (int, float)) for v in yvals) and len(yvals) <= 8:
        fig.update_yaxes(
            title_text=ykey,
            tickvals=yvals,
            range=[min(yvals) - 1.5, max(yvals) + 1.5] if all(isinstance(v, int) for v in yvals) else None,
        )
    else:
        fig.update_yaxes(title_text=ykey)
    return fig


def parallel_figure(data: ReportData):
    import plotly.graph_objects as go

    metric, trials = data["metric"], [r for r in data["trials"] if _num(r.get(data["metric"]))]
    keys = data["param_keys"]
    if not trials or not keys:
        return None
    dims = []
    for k in keys:
        vals, tickvals, ticktext, label = axis_values(k, trials, data["space"])
        d = dict(values=[v if v is not None else float("nan") for v in vals], label=label)
        if tickvals is not None:
            d.update(tickvals=tickvals, ticktext=ticktext)
        dims.append(d)
    mvals = [r[metric] for r in trials]
    dims.append(dict(values=mvals, label=metric))
    fig = go.Figure(
        go.Parcoords(
            line=dict(
                color=mvals,
                colorscale="Viridis",
                reversescale=data["mode"] == "min",
                showscale=True,
                colorbar=dict(title=dict(text=metric, side="right"), thickness=14),
            ),
            dimensions=dims,
            labelfont=dict(size=12),
            tickfont=dict(size=11),
        )
    )
    fig.update_layout(**dict(_LAYOUT, margin=dict(l=70, r=50, t=50, b=30)))
    return fig


def resources_figure(data: ReportData):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    trials = data["trials"]
    colors = trial_colors(trials)
    ids = [str(r["trial_id"]) for r in trials]
    labels = [short_id(t) for t in ids]
    times = [r.get("time_s") if _num(r.get("time_s")) else None for r in trials]
    mem = [peak_memory(data, t) for t in ids]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("wall time per trial (s)", "peak memory per trial (MB RSS)"),
        horizontal_spacing=0.12,
    )
    status = [STATUS_LABEL.get(r.get("status"), r.get("status") or "") for r in trials]

    def bar(y, text, value_fmt):
        return go.Bar(
            x=labels,
            y=y,
            marker_color=[colors[t] for t in ids],
            customdata=list(zip(ids, status)),
            text=text,
            textposition="outside",
            hovertemplate="%{customdata[0]} (%{customdata[1]})<br>" + value_fmt + "<extra></extra>",
        )

    fig.add_trace(bar(times, [fmt_duration(t) for t in times], "%{y:.1f} s"), 1, 1)
    fig.add_trace(bar(mem, [f"{m:.0f}" if m else "" for m in mem], "%{y:.0f} MB"), 1, 2)
    fig.update_layout(**dict(_LAYOUT, margin=dict(l=50, r=20, t=50, b=40)), showlegend=False, title=None)
    top_t = max([t for t in times if t] or [1])
    top_m = max([m for m in mem if m] or [1])
    fig.update_yaxes(range=[0, top_t * 1.18], row=1, col=1)
    fig.update_yaxes(range=[0, top_m * 1.18], row=1, col=2)
    return fig


def figure_html(fig, div_id: str) -> str:
    import plotly.io as pio

    return pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={
            "displaylogo": False,
            "responsive": True,
            "displayModeBar": "hover",
            "toImageButtonOptions": {"format": "png", "scale": 2},
        },
        default_height="380px",
    )
