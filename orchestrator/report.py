"""`qlora-launch report RUN_DIR`: one self-contained HTML page of a search, plus PNGs of its plots.

The page needs no network: plotly.js is embedded inline once, every figure is a JSON spec rendered by
it, and the small scripts (sortable trial table, error banner) are inline too. The PNGs are drawn
with matplotlib (Agg backend) at fixed sizes, for pasting into a PR or a chat.

Reads only the run folder (docs/run_layout.md); imports plotly and matplotlib inside functions.
"""

from __future__ import annotations

import csv
import html
import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from orchestrator.errors import UserError
from orchestrator.formatting import fmt_duration as _fmt_duration
from orchestrator.formatting import fmt_number
from orchestrator.formatting import is_number as _num

REPORT_DIR = "report"
PNG_SIZE = (1200, 750)  # pixels of every PNG: 8 x 5 inches at 150 dpi
_DPI = 150
PNG_NAMES = ("loss.png", "metric.png", "lr_rank.png", "parallel.png", "time_memory.png")
# Tableau 10: distinct, colour-blind friendlier than plotly's default; one colour per trial everywhere.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac"]
STATUS_LABEL = {"COMPLETED": "completed", "STOPPED_EARLY": "stopped early", "ERROR": "error"}


# ---- reading a run folder ----------------------------------------------------------------------

def load_run(run_dir: Path) -> Dict[str, Any]:
    """Everything the report shows, read from a run folder. Raises UserError when it is not one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"RUN_DIR: '{run_dir}' is not a folder. Pass the folder `qlora-launch tune` wrote, "
                        f"e.g. runs/<experiment>.")
    results = _read_json(run_dir / "results.json") or {}
    config = _read_json(run_dir / "config.json") or {}
    trials = list(results.get("trials") or _read_csv(run_dir / "trials.csv"))
    if not trials and not results:
        raise UserError(f"RUN_DIR: '{run_dir}' has no results.json or trials.csv; is it a run folder of "
                        f"`qlora-launch tune` (see docs/run_layout.md), and has the search finished?")
    search = config.get("search") or {}
    metric = results.get("metric") or search.get("metric") or "eval_loss"
    mode = results.get("mode") or search.get("mode") or ("min" if "loss" in metric else "max")
    histories, last_results = {}, {}
    for row in trials:
        tid = str(row.get("trial_id"))
        histories[tid] = _read_json(run_dir / "trials" / tid / "log_history.json") or []
        last_results[tid] = _read_json(run_dir / "trials" / tid / "result.json") or {}
    fixed = {"trial_id", metric, "steps", "planned_steps", "status", "time_s"}
    param_keys = [k for k in (search.get("space") or {})] or [k for k in (trials[0] if trials else {})
                                                              if k not in fixed]
    param_keys = [k for k in param_keys if any(k in r for r in trials)]
    return {
        "run_dir": run_dir,
        "experiment": results.get("experiment") or run_dir.name,
        "metric": metric,
        "mode": mode,
        "trials": [_typed(r) for r in trials],
        "param_keys": param_keys,
        "space": search.get("space") or {},
        "best": results.get("best") or {},
        "params": results.get("params") or {},
        "results": results,
        "config": config,
        "histories": histories,
        "last_results": last_results,
        "samples": _read_json(run_dir / "best" / "samples.json") or [],
        "merge_check": results.get("merge_check") or _read_json(run_dir / "best" / "merge_check.json"),
    }


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_csv(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


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


# ---- the numbers behind the plots --------------------------------------------------------------

def series(history: List[Dict[str, Any]], key: str) -> Tuple[List[int], List[float]]:
    """(steps, values) of `key` in an HF log_history, in step order, finite values only."""
    pts = sorted((int(h["step"]), float(h[key])) for h in history
                 if _num(h.get(key)) and _num(h.get("step")))
    return [p[0] for p in pts], [p[1] for p in pts]


def smooth(values: Sequence[float], weight: float = 0.8) -> List[float]:
    """Exponential moving average (TensorBoard's smoothing), debiased so the start is not pulled to 0."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i))
    return out


SMOOTH_AFTER = 20  # points; noisier per-step curves get a smoothed line over the faint raw one


def trial_colors(trials: Sequence[Dict[str, Any]]) -> Dict[str, str]:
    return {str(r["trial_id"]): PALETTE[i % len(PALETTE)] for i, r in enumerate(trials)}


def short_id(trial_id: str) -> str:
    """`adab4_00003` -> `#3` (Tune's ids share the experiment prefix)."""
    m = re.search(r"_(\d+)$", trial_id)
    return f"#{int(m.group(1))}" if m else trial_id


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
    ticks = [m * 10 ** e for e in range(lo_e, hi_e + 1) for m in (1, 2, 5)]
    inside = [t for t in ticks if lo / 1.6 <= t <= hi * 1.6]
    return [float(f"{t:.3g}") for t in (inside if len(inside) >= 2 else ticks)]


def is_log_scale(key: Optional[str], space: Dict[str, Any], values: Sequence[Any]) -> bool:
    d = space.get(key or "") or {}
    if d.get("type") == "loguniform":
        return True
    nums = [v for v in values if _num(v) and v > 0]
    return bool(nums) and min(nums) > 0 and max(nums) / min(nums) > 50


def best_trial_id(data: Dict[str, Any]) -> Optional[str]:
    return (data.get("best") or {}).get("trial_id")


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 on lowercased alphanumeric tokens (rouge-score's default tokenization, no stemming)."""
    a = re.sub(r"[^a-z0-9]+", " ", str(prediction).lower()).split()
    b = re.sub(r"[^a-z0-9]+", " ", str(reference).lower()).split()
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if not lcs:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def fmt(v, digits: int = 4) -> str:
    return fmt_number(v, digits, sci_from=1e6, sci_digits=3, group_ints=True)


def fmt_duration(s: Optional[float]) -> str:
    return _fmt_duration(s, sep=" ", missing="")


def search_seconds(results: Dict[str, Any]) -> Optional[float]:
    try:
        a = datetime.fromisoformat(results["started_at"])
        b = datetime.fromisoformat(results["finished_at"])
        return (b - a).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def peak_memory(data: Dict[str, Any], trial_id: str) -> Optional[float]:
    v = (data["last_results"].get(trial_id) or {}).get("peak_rss_mb")
    return float(v) if _num(v) else None


# ---- plotly figures (the HTML page) ------------------------------------------------------------

_LAYOUT = dict(
    template="plotly_white",
    font=dict(family="Inter, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif", size=12,
              color="#1f2937"),
    margin=dict(l=60, r=20, t=40, b=50),
    legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0, font=dict(size=11)),
    hoverlabel=dict(font=dict(size=12)),
    height=380,
)


_TEXT_POS = ("top center", "bottom center", "top right", "bottom right", "top left", "bottom left")


def _curve_figure(data: Dict[str, Any], key: str, title: str, ytitle: str):
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
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="lines", showlegend=False, legendgroup=tid, opacity=0.22,
                line=dict(color=colors[tid], width=1), hoverinfo="skip"))
        fig.add_trace(go.Scatter(
            x=xs, y=smooth(ys) if smoothed else ys, mode="lines" if smoothed else "lines+markers",
            name=label, legendgroup=tid,
            line=dict(color=colors[tid], width=3.2 if is_best else 1.8, dash="dot" if stopped or failed else "solid"),
            marker=dict(size=6), opacity=1.0 if is_best or not best else 0.85,
            customdata=ys,
            hovertemplate=(f"{tid}<br>step %{{x}}<br>{ytitle} %{{customdata:.4g}}"
                           + (" (smoothed %{y:.4g})" if smoothed else "") + "<extra></extra>"),
        ))
        if smoothed:
            ys = smooth(ys)
        if stopped or failed:
            n_stops += 1
            why = "stopped early by the scheduler" if stopped else "failed"
            fig.add_trace(go.Scatter(
                x=[xs[-1]], y=[ys[-1]], mode="markers+text", showlegend=False, legendgroup=tid,
                marker=dict(symbol="x-thin", size=16, line=dict(width=3, color=colors[tid])),
                text=[f"stopped @{xs[-1]}" if stopped else "failed"],
                textposition=_TEXT_POS[n_stops % len(_TEXT_POS)],
                textfont=dict(color=colors[tid], size=11),
                hovertemplate=f"{tid} {why} at step %{{x}} (planned {row.get('planned_steps')})<extra></extra>",
            ))
    fig.update_layout(**dict(_LAYOUT, margin=dict(l=60, r=20, t=56, b=50)))
    fig.update_xaxes(title_text="step", range=[0, max_planned * 1.03 + 1] if max_planned else None)
    fig.update_yaxes(title_text=ytitle)
    return fig


def _scatter_figure(data: Dict[str, Any]):
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
    fig = go.Figure(go.Scatter(
        x=[r[x] for r in pts], y=[r[ykey] for r in pts], mode="markers+text",
        text=[short_id(str(r["trial_id"])) + (" ★" if r["trial_id"] == best else "") for r in pts],
        textposition="middle right", textfont=dict(size=12),
        customdata=[[r["trial_id"], fmt(r.get(metric)), STATUS_LABEL.get(r.get("status"), r.get("status"))]
                    for r in pts],
        marker=dict(
            size=[26 if r["trial_id"] == best else 20 for r in pts],
            color=[v if _num(v) else (min(finite) if finite else 0) for v in vals],
            colorscale="Viridis", reversescale=data["mode"] == "min", showscale=True,
            colorbar=dict(title=dict(text=metric, side="right"), thickness=14),
            symbol=[symbols.get(r.get("status"), "circle") for r in pts],
            line=dict(width=[3 if r["trial_id"] == best else 1 for r in pts], color="#111827"),
        ),
        hovertemplate=(f"%{{customdata[0]}}<br>{x} %{{x:.4g}}<br>{ykey} %{{y}}<br>{metric} %{{customdata[1]}}"
                       "<br>%{customdata[2]}<extra></extra>"),
    ))
    fig.update_layout(**dict(_LAYOUT, margin=dict(l=60, r=20, t=20, b=50)), showlegend=False)
    xs = [r[x] for r in pts]
    if is_log_scale(x, data["space"], xs):
        ticks = log_ticks(min(xs), max(xs))
        fig.update_xaxes(title_text=x, type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    else:
        fig.update_xaxes(title_text=x)
    yvals = sorted({r[ykey] for r in pts})
    if y and all(isinstance(v, (int, float)) for v in yvals) and len(yvals) <= 8:
        fig.update_yaxes(title_text=ykey, tickvals=yvals, range=[min(yvals) - 1.5, max(yvals) + 1.5]
                         if all(isinstance(v, int) for v in yvals) else None)
    else:
        fig.update_yaxes(title_text=ykey)
    return fig


def _axis_values(key: str, trials: Sequence[Dict[str, Any]], space: Dict[str, Any]):
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
            return logs, ticks, [f"{10 ** t:.2g}" for t in ticks], f"{_short(key)} (log)"
        uniq = sorted(set(nums))
        if len(uniq) <= 8:
            return vals, uniq, [fmt(u) for u in uniq], _short(key)
        return vals, None, None, _short(key)
    cats = sorted({str(v) for v in vals if v is not None})
    return [cats.index(str(v)) if v is not None else None for v in vals], list(range(len(cats))), cats, _short(key)


def _parallel_figure(data: Dict[str, Any]):
    import plotly.graph_objects as go

    metric, trials = data["metric"], [r for r in data["trials"] if _num(r.get(data["metric"]))]
    keys = data["param_keys"]
    if not trials or not keys:
        return None
    dims = []
    for k in keys:
        vals, tickvals, ticktext, label = _axis_values(k, trials, data["space"])
        d = dict(values=[v if v is not None else float("nan") for v in vals], label=label)
        if tickvals is not None:
            d.update(tickvals=tickvals, ticktext=ticktext)
        dims.append(d)
    mvals = [r[metric] for r in trials]
    dims.append(dict(values=mvals, label=metric))
    fig = go.Figure(go.Parcoords(
        line=dict(color=mvals, colorscale="Viridis", reversescale=data["mode"] == "min", showscale=True,
                  colorbar=dict(title=dict(text=metric, side="right"), thickness=14)),
        dimensions=dims, labelfont=dict(size=12), tickfont=dict(size=11),
    ))
    fig.update_layout(**dict(_LAYOUT, margin=dict(l=70, r=50, t=50, b=30)))
    return fig


def _resources_figure(data: Dict[str, Any]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    trials = data["trials"]
    colors = trial_colors(trials)
    ids = [str(r["trial_id"]) for r in trials]
    labels = [short_id(t) for t in ids]
    times = [r.get("time_s") if _num(r.get("time_s")) else None for r in trials]
    mem = [peak_memory(data, t) for t in ids]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("wall time per trial (s)", "peak memory per trial (MB RSS)"),
                        horizontal_spacing=0.12)
    status = [STATUS_LABEL.get(r.get("status"), r.get("status") or "") for r in trials]
    fig.add_trace(go.Bar(x=labels, y=times, marker_color=[colors[t] for t in ids], customdata=list(zip(ids, status)),
                         text=[fmt_duration(t) for t in times], textposition="outside",
                         hovertemplate="%{customdata[0]} (%{customdata[1]})<br>%{y:.1f} s<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(x=labels, y=mem, marker_color=[colors[t] for t in ids], customdata=list(zip(ids, status)),
                         text=[f"{m:.0f}" if m else "" for m in mem], textposition="outside",
                         hovertemplate="%{customdata[0]} (%{customdata[1]})<br>%{y:.0f} MB<extra></extra>"), 1, 2)
    fig.update_layout(**dict(_LAYOUT, margin=dict(l=50, r=20, t=50, b=40)), showlegend=False,
                      title=None)
    top_t = max([t for t in times if t] or [1])
    top_m = max([m for m in mem if m] or [1])
    fig.update_yaxes(range=[0, top_t * 1.18], row=1, col=1)
    fig.update_yaxes(range=[0, top_m * 1.18], row=1, col=2)
    return fig


def _figure_html(fig, div_id: str) -> str:
    import plotly.io as pio

    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True, "displayModeBar": "hover",
                               "toImageButtonOptions": {"format": "png", "scale": 2}},
                       default_height="380px")


# ---- matplotlib PNGs ---------------------------------------------------------------------------

def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "figure.figsize": (PNG_SIZE[0] / _DPI, PNG_SIZE[1] / _DPI), "figure.dpi": _DPI, "savefig.dpi": _DPI,
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
        "font.size": 10, "axes.titlesize": 12, "axes.titleweight": "bold", "axes.titlelocation": "left",
    })
    return plt


def _save(fig, path: Path) -> Path:
    # No bbox_inches="tight": every PNG keeps its exact PNG_SIZE.
    fig.savefig(path, dpi=_DPI, facecolor="white")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _png_curves(data: Dict[str, Any], key: str, ylabel: str, title: str, path: Path) -> Path:
    plt = _mpl()
    fig, ax = plt.subplots(layout="constrained")
    colors, best = trial_colors(data["trials"]), best_trial_id(data)
    drawn, n_stops = False, 0
    for row in data["trials"]:
        tid = str(row["trial_id"])
        xs, ys = series(data["histories"].get(tid, []), key)
        if not xs:
            continue
        drawn = True
        stopped = row.get("status") in ("STOPPED_EARLY", "ERROR")
        if len(xs) > SMOOTH_AFTER:
            ax.plot(xs, ys, color=colors[tid], lw=0.8, alpha=0.25)
            ys = smooth(ys)
        ax.plot(xs, ys, color=colors[tid], lw=2.6 if tid == best else 1.4, ls=":" if stopped else "-",
                marker="o" if len(xs) <= SMOOTH_AFTER else None, ms=4,
                label=f"{short_id(tid)} {tid}" + (" (best)" if tid == best else "") + (" (stopped)" if stopped else ""))
        if stopped:
            ax.plot([xs[-1]], [ys[-1]], marker="x", ms=12, mew=3, color=colors[tid])
            n_stops += 1
            ax.annotate(f"stopped @{xs[-1]}", (xs[-1], ys[-1]), textcoords="offset points",
                        xytext=(0, 9 if n_stops % 2 else -14),
                        ha="center", fontsize=8, color=colors[tid])
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if drawn:
        ax.legend(fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no history recorded", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def _png_scatter(data: Dict[str, Any], path: Path) -> Path:
    plt = _mpl()
    fig, ax = plt.subplots(layout="constrained")
    x, y = pick_pair(data["param_keys"], data["trials"])
    metric, best = data["metric"], best_trial_id(data)
    ykey = y or metric
    pts = [r for r in data["trials"] if x and r.get(x) is not None and r.get(ykey) is not None]
    if pts:
        vals = [r.get(metric) if _num(r.get(metric)) else float("nan") for r in pts]
        cmap = "viridis_r" if data["mode"] == "min" else "viridis"
        finite = [v for v in vals if v == v]
        vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 1.0)
        sc = None
        for marker, statuses in (("o", ("COMPLETED", None)), ("X", ("STOPPED_EARLY",)), ("D", ("ERROR",))):
            idx = [i for i, r in enumerate(pts) if r.get("status") in statuses]
            if not idx:
                continue
            sc = ax.scatter([pts[i][x] for i in idx], [pts[i][ykey] for i in idx], c=[vals[i] for i in idx],
                            cmap=cmap, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-9, s=220, marker=marker,
                            edgecolors=["black" if pts[i]["trial_id"] == best else "white" for i in idx],
                            linewidths=[2.5 if pts[i]["trial_id"] == best else 1 for i in idx], zorder=3)
        for r in pts:
            ax.annotate(short_id(str(r["trial_id"])) + (" (best)" if r["trial_id"] == best else "")
                        + (" stopped" if r.get("status") == "STOPPED_EARLY" else ""),
                        (r[x], r[ykey]), textcoords="offset points", xytext=(11, -3), fontsize=9)
        if sc is not None:
            fig.colorbar(sc, ax=ax, label=metric)
        if is_log_scale(x, data["space"], [r[x] for r in pts]):
            ax.set_xscale("log")
            ticks = log_ticks(min(r[x] for r in pts), max(r[x] for r in pts))
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        yv = sorted({r[ykey] for r in pts})
        if y and all(isinstance(v, int) for v in yv) and len(yv) <= 8:
            ax.set_yticks(yv)
            ax.set_ylim(min(yv) - 1.5, max(yv) + 1.5)
        ax.set_xlabel(x)
        ax.set_ylabel(ykey)
    else:
        ax.text(0.5, 0.5, "no searched hyperparameters", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"{_short(x or '')} × {_short(ykey)}, coloured by {metric}")
    return _save(fig, path)


def _png_parallel(data: Dict[str, Any], path: Path) -> Path:
    plt = _mpl()
    import matplotlib.cm as cm
    import matplotlib.colors as mcolors

    fig, ax = plt.subplots(layout="constrained")
    metric = data["metric"]
    trials = [r for r in data["trials"] if _num(r.get(metric))]
    keys = data["param_keys"]
    ax.set_title(f"All hyperparameters → {metric}")
    if not trials or not keys:
        ax.text(0.5, 0.5, "nothing to show", ha="center", va="center", transform=ax.transAxes)
        return _save(fig, path)
    axes = []
    for k in keys:
        vals, tickvals, ticktext, label = _axis_values(k, trials, data["space"])
        axes.append((vals, tickvals, ticktext, label))
    mvals = [r[metric] for r in trials]
    axes.append((mvals, None, None, metric))
    norm_cols = []
    for vals, tickvals, ticktext, _ in axes:
        present = [v for v in vals if v is not None]
        lo, hi = min(present + (tickvals or [])), max(present + (tickvals or []))
        span = (hi - lo) or 1.0
        norm_cols.append(([(v - lo) / span if v is not None else float("nan") for v in vals], lo, span))
    cmap = plt.get_cmap("viridis_r" if data["mode"] == "min" else "viridis")
    norm = mcolors.Normalize(min(mvals), max(mvals) if max(mvals) > min(mvals) else min(mvals) + 1e-9)
    xs = list(range(len(axes)))
    for i, r in enumerate(trials):
        ax.plot(xs, [col[0][i] for col in norm_cols], color=cmap(norm(mvals[i])), lw=2.2, alpha=0.9,
                marker="o", ms=5)
    for j, (vals, tickvals, ticktext, label) in enumerate(axes):
        ax.axvline(j, color="#374151", lw=1)
        lo, span = norm_cols[j][1], norm_cols[j][2]
        ticks = tickvals if tickvals is not None else [lo, lo + span / 2, lo + span]
        texts = ticktext if ticktext is not None else [fmt(float(t), 3) for t in ticks]
        for t, s in zip(ticks, texts):
            ax.text(j + 0.03, (t - lo) / span, s, fontsize=8, va="center", color="#374151")
    ax.set_xticks(xs, [a[3] for a in axes])
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes) - 0.6)
    ax.set_ylim(-0.08, 1.08)
    ax.grid(False)
    ax.spines["left"].set_visible(False)
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metric)
    return _save(fig, path)


def _png_resources(data: Dict[str, Any], path: Path) -> Path:
    plt = _mpl()
    fig, (a1, a2) = plt.subplots(1, 2, layout="constrained")
    ids = [str(r["trial_id"]) for r in data["trials"]]
    colors = trial_colors(data["trials"])
    labels = [short_id(t) for t in ids]
    times = [float(r["time_s"]) if _num(r.get("time_s")) else 0.0 for r in data["trials"]]
    mem = [peak_memory(data, t) or 0.0 for t in ids]
    for ax, vals, title, unit in ((a1, times, "Wall time per trial", "s"), (a2, mem, "Peak memory per trial", "MB RSS")):
        bars = ax.bar(labels, vals, color=[colors[t] for t in ids])
        ax.bar_label(bars, [f"{v:.0f}" if v else "" for v in vals], fontsize=8, padding=2)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.set_ylim(0, (max(vals) or 1) * 1.15)
    return _save(fig, path)


def write_pngs(data: Dict[str, Any], out: Path) -> Dict[str, Path]:
    metric = data["metric"]
    return {
        "loss.png": _png_curves(data, "loss", "training loss", "Training loss per trial", out / "loss.png"),
        "metric.png": _png_curves(data, metric, metric, f"{metric} per trial (eval set)", out / "metric.png"),
        "lr_rank.png": _png_scatter(data, out / "lr_rank.png"),
        "parallel.png": _png_parallel(data, out / "parallel.png"),
        "time_memory.png": _png_resources(data, out / "time_memory.png"),
    }


# ---- the page ----------------------------------------------------------------------------------

def write_report(run_dir, out_dir=None, pngs: bool = True) -> Path:
    """Write `RUN_DIR/report/index.html` (self-contained) and the PNGs; return the HTML's path.

    Args:
        run_dir: a run folder written by `qlora-launch tune`.
        out_dir: where to write (default RUN_DIR/report).
        pngs: also draw the matplotlib PNGs.
    Raises:
        UserError: RUN_DIR is not a run folder.
    """
    data = load_run(Path(run_dir))
    out = Path(out_dir) if out_dir else Path(run_dir) / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    files = write_pngs(data, out) if pngs else {}
    page = render_html(data, png_names=list(files))
    index = out / "index.html"
    tmp = index.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(index)
    return index


def render_html(data: Dict[str, Any], png_names: Sequence[str] = ()) -> str:
    from plotly.offline import get_plotlyjs

    metric = data["metric"]
    figs = {
        "plot-loss": _curve_figure(data, "loss", "Training loss per trial", "training loss"),
        "plot-metric": _curve_figure(data, metric, f"{metric} on the eval set", metric),
        "plot-scatter": _scatter_figure(data),
        "plot-parallel": _parallel_figure(data),
        "plot-resources": _resources_figure(data),
    }
    png_for = {"plot-loss": "loss.png", "plot-metric": "metric.png", "plot-scatter": "lr_rank.png",
               "plot-parallel": "parallel.png", "plot-resources": "time_memory.png"}
    x, y = pick_pair(data["param_keys"], data["trials"])
    m = html.escape(metric)

    def plot(div_id: str, title: str, caption: str = "") -> str:
        png = png_for.get(div_id)
        link = f' <a class="png" href="{png}" title="static PNG of this plot">PNG</a>' if png in png_names else ""
        head = f"<h3 class=\"plot-title\">{title}{link}</h3>"
        fig = figs.get(div_id)
        if fig is None:
            return f'<div class="card plot empty">{head}<p>Nothing to plot: this run has no data for it.</p></div>'
        cap = f'<p class="caption">{caption}</p>' if caption else ""
        return f'<div class="card plot">{head}{_figure_html(fig, div_id)}{cap}</div>'

    title = f"{data['experiment']} · qlora-launch report"
    body = "\n".join([
        _header(data),
        _kpis(data),
        '<section><h2>Training curves</h2><div class="grid2">',
        plot("plot-loss", "Training loss per trial",
             f"Per-step training loss (smoothed when over {SMOOTH_AFTER} points; raw values faint). "
             "Dotted lines ending in ✕ are trials the scheduler (ASHA) stopped early "
             "at a rung; the thick line is the best trial."),
        plot("plot-metric", f"{m} per trial (eval set)",
             f"{m} at each evaluation; {'higher' if data['mode'] == 'max' else 'lower'} is better."),
        '</div></section>',
        '<section><h2>Hyperparameters</h2><div class="grid2">',
        plot("plot-scatter", f"{html.escape(_short(x or ''))} × {html.escape(_short(y or metric))}, coloured by {m}",
             f"Each point is a trial, coloured by its best {m}; ✕ = stopped early; outlined = best trial."),
        plot("plot-parallel", f"All hyperparameters → {m}",
             "One line per trial across every searched hyperparameter; drag along an axis to filter."),
        '</div></section>',
        _trial_table(data),
        _best_section(data),
        '<section><h2>Time and memory</h2>',
        plot("plot-resources", "Wall time and peak memory per trial",
             "Wall time is Tune's time_total_s of the trial; memory is the peak RSS of its rank-0 Train worker."),
        '</section>',
        _samples_section(data),
        _footer(data, png_names),
    ])
    return _PAGE.format(title=html.escape(title), css=_CSS, plotlyjs=get_plotlyjs(), body=body, js=_JS)


def _header(data: Dict[str, Any]) -> str:
    cfg = data["config"]
    model = (cfg.get("model") or {}).get("name_or_path", "")
    q = cfg.get("quantization") or {}
    lora = cfg.get("lora") or {}
    s = cfg.get("search") or {}
    bits = []
    if model:
        bits.append(f"model <b>{html.escape(Path(str(model)).name or str(model))}</b>"
                    f" ({html.escape(str((cfg.get('model') or {}).get('task', '')))})")
    if q:
        quant = "4-bit NF4" if q.get("mode") == "4bit" and q.get("quant_type") == "nf4" else q.get("mode")
        bits.append(f"{html.escape(str(quant))}{' + double quant' if q.get('double_quant') else ''} → QLoRA")
    if lora:
        bits.append(f"LoRA α={lora.get('alpha')} on {html.escape(', '.join(map(str, lora.get('target_modules') or [])))}")
    if s:
        bits.append(f"{s.get('num_samples')} trials · {html.escape(str(s.get('algorithm')))} search · "
                    f"{html.escape(str(s.get('scheduler')))} scheduler")
    finished = data["results"].get("finished_at", "")
    when = f'<span class="muted">finished {html.escape(finished[:19].replace("T", " "))} UTC</span>' if finished else ""
    return (f'<header><div><div class="eyebrow">qlora-launch · search report</div>'
            f'<h1>{html.escape(data["experiment"])}</h1>'
            f'<p class="sub">{" · ".join(bits)}</p></div>{when}</header>'
            '<div id="report-errors" class="errors" hidden></div>')


def _kpis(data: Dict[str, Any]) -> str:
    metric, best, p = data["metric"], data["best"], data["params"]
    trials = data["trials"]
    counts = {k: sum(1 for r in trials if r.get("status") == k) for k in STATUS_LABEL}
    cards = []
    bm = (best.get("metrics") or {}).get(metric)
    cards.append(_card(f"best {metric}", fmt(bm) if bm is not None else "—",
                       f"trial {html.escape(str(best.get('trial_id', '—')))} · step {best.get('step', '—')}"))
    cards.append(_card("trials", str(len(trials)),
                       f"{counts['COMPLETED']} completed · {counts['STOPPED_EARLY']} stopped early · "
                       f"{counts['ERROR']} failed"))
    if p.get("trainable_params"):
        pct = float(p.get("trainable_pct") or 0)
        cards.append(_card("trainable parameters", f"{pct:.2f}%",
                           f"{p['trainable_params']:,} of {p['total_params']:,}",
                           bar=pct))
    dur = search_seconds(data["results"])
    if dur is not None:
        cards.append(_card("search wall time", fmt_duration(dur),
                           f"sum over trials {fmt_duration(sum(r.get('time_s') or 0 for r in trials))}"))
    mc = data.get("merge_check")
    if mc:
        ok = mc.get("passed")
        cards.append(_card("merge check", "passed" if ok else "FAILED",
                           f"max |Δlogit| {mc.get('max_abs_logit_diff', 0):.1e} ≤ {mc.get('tolerance', 0):.0e}",
                           cls="ok" if ok else "bad"))
    return f'<section class="kpis">{"".join(cards)}</section>'


def _card(label: str, value: str, sub: str = "", bar: Optional[float] = None, cls: str = "") -> str:
    meter = ""
    if bar is not None:
        meter = (f'<div class="meter" title="{bar:.2f}% trainable"><span style="width:{max(min(bar, 100), 0.8):.2f}%">'
                 f'</span></div>')
    return (f'<div class="kpi {cls}"><div class="label">{html.escape(label)}</div>'
            f'<div class="value">{html.escape(value)}</div>{meter}<div class="sub">{sub}</div></div>')


def _trial_table(data: Dict[str, Any]) -> str:
    metric, best = data["metric"], best_trial_id(data)
    cols = ["trial_id", *data["param_keys"], metric, "steps", "status", "time_s", "peak_mem_mb"]
    heads = {"trial_id": "trial", "time_s": "time (s)", "peak_mem_mb": "peak mem (MB)", "steps": "steps"}
    scores = [r.get(metric) for r in data["trials"] if _num(r.get(metric))]
    lo, hi = (min(scores), max(scores)) if scores else (0, 0)
    rows = []
    for r in data["trials"]:
        tid = str(r["trial_id"])
        cells = []
        for c in cols:
            if c == "peak_mem_mb":
                v = peak_memory(data, tid)
            elif c == "steps":
                v = r.get("steps")
                planned = r.get("planned_steps")
                cells.append(f'<td class="num" data-v="{v if v is not None else ""}">{fmt(v)}'
                             f'{f"<span class=muted> / {planned}</span>" if planned else ""}</td>')
                continue
            else:
                v = r.get(c)
            if c == "status":
                cells.append(f'<td data-v="{html.escape(str(v))}"><span class="pill {str(v).lower()}">'
                             f'{html.escape(STATUS_LABEL.get(v, str(v)))}</span></td>')
            elif c == "trial_id":
                star = ' <span class="star" title="best trial">★</span>' if tid == best else ""
                cells.append(f'<td data-v="{html.escape(tid)}"><span class="sid">{short_id(tid)}</span> '
                             f'{html.escape(tid)}{star}</td>')
            elif c == metric and _num(v):
                share = (v - lo) / (hi - lo) if hi > lo else 1.0
                share = 1 - share if data["mode"] == "min" else share
                cells.append(f'<td class="num metric" data-v="{v}" style="--s:{share:.3f}">{fmt(v)}</td>')
            else:
                dv = v if _num(v) else html.escape(str(v if v is not None else ""))
                cells.append(f'<td class="{"num" if _num(v) else ""}" data-v="{dv}">{html.escape(fmt(v))}</td>')
        rows.append(f'<tr class="{"best" if tid == best else ""}">{"".join(cells)}</tr>')
    th = "".join(f'<th data-col="{i}" title="sort by {html.escape(c)}">{html.escape(heads.get(c, c))}</th>'
                 for i, c in enumerate(cols))
    return ('<section><h2>Trials <span class="hint">click a column to sort</span></h2>'
            f'<div class="card tablewrap"><table id="trial-table" class="sortable"><thead><tr>{th}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></section>')


def _best_section(data: Dict[str, Any]) -> str:
    best, metric, p = data["best"], data["metric"], data["params"]
    if not best:
        return '<section><h2>Best configuration</h2><div class="card empty">No trial reported ' \
               f'{html.escape(metric)}; nothing was selected.</div></section>'
    m = best.get("metrics") or {}
    params = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(fmt(v))}</td></tr>"
                     for k, v in (best.get("params") or {}).items())
    shown = [metric] + [k for k in ("eval_loss", "loss", "eval_rouge1", "eval_rouge2", "eval_rougeL", "epoch")
                        if k != metric and k in m]
    metrics = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(fmt(m.get(k)))}</td></tr>" for k in shown)
    cfg = data["config"]
    fixed = []
    for section, keys in (("lora", ("r", "alpha", "dropout", "target_modules")),
                          ("training", ("epochs", "max_steps", "learning_rate", "batch_size",
                                        "gradient_accumulation_steps", "lr_scheduler", "warmup_ratio")),
                          ("quantization", ("mode", "quant_type", "double_quant", "compute_dtype"))):
        for k in keys:
            full = f"{section}.{k}"
            v = (best.get("params") or {}).get(full, (cfg.get(section) or {}).get(k))
            if v is not None:
                shown = ", ".join(map(str, v)) if isinstance(v, list) else fmt(v)
                fixed.append(f"<tr><th>{html.escape(full)}</th><td>{html.escape(shown)}</td></tr>")
    share = ""
    if p.get("trainable_params"):
        pct = float(p["trainable_pct"])
        share = (f'<div class="share"><div class="label">trainable share (LoRA adapter vs. whole model)</div>'
                 f'<div class="meter big"><span style="width:{max(min(pct, 100), 0.8):.2f}%"></span></div>'
                 f'<div class="sub"><b>{p["trainable_params"]:,}</b> trainable of <b>{p["total_params"]:,}</b> '
                 f'parameters ({pct:.3f}%)</div></div>')
    paths = data["results"].get("paths") or {}
    where = "".join(f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(str(v))}</code></td></tr>"
                    for k, v in paths.items() if k in ("adapter", "merged"))
    full = html.escape(json.dumps(cfg, indent=2))
    return (f'<section><h2>Best configuration <span class="hint">trial {html.escape(str(best.get("trial_id")))}'
            f' at step {best.get("step")}</span></h2><div class="grid3">'
            f'<div class="card"><h3>searched hyperparameters</h3><table class="kv">{params}</table>'
            f'<h3>metrics at the chosen checkpoint</h3><table class="kv">{metrics}</table></div>'
            f'<div class="card"><h3>resolved training config</h3><table class="kv">{"".join(fixed)}</table></div>'
            f'<div class="card">{share}<h3>outputs</h3><table class="kv paths">{where}</table>'
            f'<details><summary>full config.json</summary><pre>{full}</pre></details></div>'
            '</div></section>')


def _samples_section(data: Dict[str, Any]) -> str:
    samples = data["samples"][:8]
    if not samples:
        return ""
    cfg = data["config"].get("data") or {}
    in_name = html.escape(str(cfg.get("input_column") or "input"))
    ref_name = html.escape(str(cfg.get("target_column") or "reference"))
    cards = []
    for i, s in enumerate(samples, 1):
        score = rouge_l(s.get("prediction", ""), s.get("reference", ""))
        cards.append(
            f'<div class="sample card"><div class="sample-head"><span class="sid">example {i}</span>'
            f'<span class="badge" title="ROUGE-L F1 of this prediction vs. its reference">ROUGE-L {score:.2f}</span></div>'
            f'<div class="in"><div class="label">{in_name}</div><p>{html.escape(str(s.get("input", "")))}</p></div>'
            f'<div class="pair"><div class="ref"><div class="label">reference {ref_name}</div>'
            f'<p>{html.escape(str(s.get("reference", "")))}</p></div>'
            f'<div class="pred"><div class="label">generated by the merged best model</div>'
            f'<p>{html.escape(str(s.get("prediction", "")))}</p></div></div></div>')
    return ('<section><h2>Sample predictions <span class="hint">eval inputs, reference beside the best model\'s '
            f'generation</span></h2><div class="samples">{"".join(cards)}</div></section>')


def _footer(data: Dict[str, Any], png_names: Sequence[str]) -> str:
    res = data["results"]
    versions = " · ".join(f"{html.escape(k)} {html.escape(str(v))}" for k, v in (res.get("versions") or {}).items())
    fps = " · ".join(f"{html.escape(k)} <code>{html.escape(str(v)[:12])}</code>"
                     for k, v in (res.get("data_fingerprints") or {}).items())
    pngs = " · ".join(f'<a href="{n}">{n}</a>' for n in png_names)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"generated {now} from <code>{html.escape(str(Path(data['run_dir']).resolve()))}</code>"]
    if versions:
        lines.append(versions)
    if fps:
        lines.append("data sha256: " + fps)
    if pngs:
        lines.append("static images: " + pngs)
    return "<footer>" + "<br>".join(lines) + "</footer>"


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1] if key else key


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<script>
// Any script error shows as a banner (and in #report-errors, which tests read).
window.__reportErrors = [];
window.addEventListener("error", function (e) {{
  window.__reportErrors.push(String(e.message || e));
  var box = document.getElementById("report-errors");
  if (box) {{ box.hidden = false; box.textContent = "Some parts of this report failed to render: "
      + window.__reportErrors.join("; "); }}
}});
</script>
<script type="text/javascript">{plotlyjs}</script>
<style>{css}</style>
</head><body><main>
{body}
</main>
<script>{js}</script>
</body></html>
"""

_CSS = """
:root { --ink:#111827; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7f9; --card:#fff; --accent:#4e79a7;
        --ok:#15803d; --bad:#b91c1c; --warn:#b45309; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); overflow-wrap:break-word;
       font: 14px/1.5 Inter, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 28px 28px 40px; }
header { display:flex; justify-content:space-between; align-items:flex-end; gap:16px; margin-bottom:18px; }
.eyebrow { text-transform:uppercase; letter-spacing:.08em; font-size:11px; color:var(--accent); font-weight:700; }
h1 { margin:2px 0 4px; font-size:28px; letter-spacing:-.01em; }
h2 { font-size:17px; margin:28px 0 10px; }
h3 { font-size:12px; text-transform:uppercase; letter-spacing:.06em; color:var(--muted); margin:4px 0 8px; }
.sub, .muted, .hint { color:var(--muted); }
.hint { font-weight:400; font-size:12px; margin-left:8px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px;
        box-shadow: 0 1px 2px rgba(0,0,0,.03); position:relative; }
.card.empty { color:var(--muted); }
.grid2 { display:grid; grid-template-columns: repeat(2, minmax(0,1fr)); gap:16px; }
.grid3 { display:grid; grid-template-columns: repeat(3, minmax(0,1fr)); gap:16px; }
@media (max-width: 1000px) { .grid2, .grid3 { grid-template-columns: 1fr; } }
.kpis { display:grid; grid-template-columns: repeat(auto-fit, minmax(200px,1fr)); gap:12px; }
.kpi { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px 16px; }
.kpi .label { font-size:12px; color:var(--muted); font-weight:600; }
.label { font-size:11px; text-transform:uppercase; letter-spacing:.06em; color:var(--muted); }
.kpi .value { font-size:26px; font-weight:700; margin:2px 0; font-variant-numeric: tabular-nums; }
.kpi .sub, .sub { font-size:12px; color:var(--muted); }
.kpi.ok .value { color:var(--ok); } .kpi.bad .value { color:var(--bad); }
.meter { height:8px; background:#e8edf3; border-radius:99px; overflow:hidden; margin:6px 0 4px; }
.meter.big { height:14px; }
.meter span { display:block; height:100%; background:linear-gradient(90deg,#4e79a7,#59a14f); border-radius:99px; }
.share { margin-bottom:14px; }
.plot { padding:8px 10px 6px; min-height: 420px; }
.plot .caption { margin:2px 6px 4px; font-size:12px; color:var(--muted); }
.js-plotly-plot .plotly .modebar { opacity:0; transition:opacity .2s; }
.card.plot:hover .js-plotly-plot .plotly .modebar { opacity:1; }
h3.plot-title { margin:4px 6px 0; font-size:13px; text-transform:none; letter-spacing:0; color:var(--ink); }
a.png { font-size:10px; font-weight:500; color:var(--muted); text-decoration:none; vertical-align:middle;
        border:1px solid var(--line); border-radius:6px; padding:0 5px; margin-left:6px; }
a.png:hover { color:var(--accent); border-color:var(--accent); }
.tablewrap { padding:0; overflow-x:auto; }
table { border-collapse:collapse; width:100%; }
#trial-table th, #trial-table td { padding:8px 12px; border-bottom:1px solid var(--line); text-align:left;
        white-space:nowrap; }
#trial-table th { font-size:12px; color:var(--muted); font-weight:600; cursor:pointer; user-select:none;
        background:#fafafa; position:sticky; top:0; }
#trial-table th:hover { color:var(--ink); }
#trial-table th.asc::after { content:" ▲"; } #trial-table th.desc::after { content:" ▼"; }
#trial-table td.num { text-align:right; font-variant-numeric: tabular-nums; }
#trial-table tr.best td { background:#f0f7ee; font-weight:600; }
#trial-table td.metric { background: linear-gradient(90deg, rgba(89,161,79,.22) calc(var(--s)*100%), transparent 0); }
.sid { display:inline-block; min-width:26px; color:var(--muted); font-variant-numeric: tabular-nums; }
.star { color:#e0a800; }
.pill { font-size:11px; padding:2px 8px; border-radius:99px; font-weight:600; }
.pill.completed { background:#dcfce7; color:var(--ok); }
.pill.stopped_early { background:#fef3c7; color:var(--warn); }
.pill.error { background:#fee2e2; color:var(--bad); }
table.kv th { text-align:left; font-weight:500; color:var(--muted); padding:3px 12px 3px 0; font-size:13px;
        white-space:nowrap; vertical-align:top; }
table.kv td { padding:3px 0; font-variant-numeric: tabular-nums; font-size:13px; word-break:break-all; }
table.kv + h3 { margin-top:14px; }
details { margin-top:10px; } summary { cursor:pointer; color:var(--accent); }
pre { background:#f8fafc; border:1px solid var(--line); padding:10px; border-radius:8px; max-height:360px;
      overflow:auto; font-size:12px; }
code { font-size:12px; }
.samples { display:grid; grid-template-columns: repeat(auto-fit, minmax(380px,1fr)); gap:14px; }
.sample p { margin:2px 0 10px; overflow-wrap:anywhere; }
.sample-head { display:flex; justify-content:space-between; align-items:center; margin-bottom:6px; }
.badge { font-size:11px; background:#eef2ff; color:#3730a3; border-radius:99px; padding:2px 8px; font-weight:600; }
.sample .in p { color:#374151; font-size:13px; }
.pair { display:grid; grid-template-columns:minmax(0,1fr) minmax(0,1fr); gap:10px; }
.pair > div { border-radius:8px; padding:8px 10px; }
.ref { background:#f0f7ee; border-left:3px solid #59a14f; }
.pred { background:#eef4fb; border-left:3px solid #4e79a7; }
.errors { background:#fee2e2; color:var(--bad); border:1px solid #fecaca; padding:10px 14px; border-radius:8px;
          margin:12px 0; }
footer { margin-top:32px; color:var(--muted); font-size:12px; line-height:1.8; }
"""

_JS = """
(function () {
  // Sortable trial table: click a header; numbers sort as numbers, blanks last.
  var table = document.getElementById("trial-table");
  if (table) {
    var heads = table.querySelectorAll("th");
    heads.forEach(function (th) {
      th.addEventListener("click", function () {
        var col = +th.dataset.col, asc = !th.classList.contains("asc");
        heads.forEach(function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(asc ? "asc" : "desc");
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
          if (x === "" || x === undefined) return 1;
          if (y === "" || y === undefined) return -1;
          var nx = parseFloat(x), ny = parseFloat(y);
          var r = (!isNaN(nx) && !isNaN(ny) && isFinite(x) && isFinite(y)) ? nx - ny : String(x).localeCompare(String(y));
          return asc ? r : -r;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }
  // Tell a reader (or a test) how many plots rendered.
  document.body.dataset.plots = document.querySelectorAll(".js-plotly-plot").length;
  document.body.dataset.errors = window.__reportErrors.length;
})();
"""
