"""The report's static images: matplotlib (Agg) PNGs of its plots at a fixed size, for a PR or a chat.

matplotlib is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

from orchestrator.core.formatting import is_number as _num
from orchestrator.observe.report import data as rd

PNG_SIZE = (1200, 750)  # pixels of every PNG: 8 x 5 inches at 150 dpi
_DPI = 150
PNG_NAMES = ("loss.png", "metric.png", "lr_rank.png", "parallel.png", "time_memory.png")


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.figsize": (PNG_SIZE[0] / _DPI, PNG_SIZE[1] / _DPI),
            "figure.dpi": _DPI,
            "savefig.dpi": _DPI,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "font.size": 10,
            "axes.titlesize": 12,
            "axes.titleweight": "bold",
            "axes.titlelocation": "left",
        }
    )
    return plt


def _save(fig, path: Path) -> Path:
    # No bbox_inches="tight": every PNG keeps its exact PNG_SIZE.
    fig.savefig(path, dpi=_DPI, facecolor="white")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _png_curves(data: rd.ReportData, key: str, ylabel: str, title: str, path: Path) -> Path:
    plt = _mpl()
    fig, ax = plt.subplots(layout="constrained")
    colors, best = rd.trial_colors(data["trials"]), rd.best_trial_id(data)
    drawn, n_stops = False, 0
    for row in data["trials"]:
        tid = str(row["trial_id"])
        xs, ys = rd.series(data["histories"].get(tid, []), key)
        if not xs:
            continue
        drawn = True
        stopped = row.get("status") in ("STOPPED_EARLY", "ERROR")
        if len(xs) > rd.SMOOTH_AFTER:
            ax.plot(xs, ys, color=colors[tid], lw=0.8, alpha=0.25)
            ys = rd.smooth(ys)
        ax.plot(
            xs,
            ys,
            color=colors[tid],
            lw=2.6 if tid == best else 1.4,
            ls=":" if stopped else "-",
            marker="o" if len(xs) <= rd.SMOOTH_AFTER else None,
            ms=4,
            label=f"{rd.short_id(tid)} {tid}" + (" (best)" if tid == best else "") + (" (stopped)" if stopped else ""),
        )
        if stopped:
            ax.plot([xs[-1]], [ys[-1]], marker="x", ms=12, mew=3, color=colors[tid])
            n_stops += 1
            ax.annotate(
                f"stopped @{xs[-1]}",
                (xs[-1], ys[-1]),
                textcoords="offset points",
                xytext=(0, 9 if n_stops % 2 else -14),
                ha="center",
                fontsize=8,
                color=colors[tid],
            )
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if drawn:
        ax.legend(fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no history recorded", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def _png_scatter(data: rd.ReportData, path: Path) -> Path:
    plt = _mpl()
    fig, ax = plt.subplots(layout="constrained")
    x, y = rd.pick_pair(data["param_keys"], data["trials"])
    metric, best = data["metric"], rd.best_trial_id(data)
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
            sc = ax.scatter(
                [pts[i][x] for i in idx],
                [pts[i][ykey] for i in idx],
                c=[vals[i] for i in idx],
                cmap=cmap,
                vmin=vmin,
                vmax=vmax if vmax > vmin else vmin + 1e-9,
                s=220,
                marker=marker,
                edgecolors=["black" if pts[i]["trial_id"] == best else "white" for i in idx],
                linewidths=[2.5 if pts[i]["trial_id"] == best else 1 for i in idx],
                zorder=3,
            )
        for r in pts:
            ax.annotate(
                rd.short_id(str(r["trial_id"]))
                + (" (best)" if r["trial_id"] == best else "")
                + (" stopped" if r.get("status") == "STOPPED_EARLY" else ""),
                (r[x], r[ykey]),
                textcoords="offset points",
                xytext=(11, -3),
                fontsize=9,
            )
        if sc is not None:
            fig.colorbar(sc, ax=ax, label=metric)
        if rd.is_log_scale(x, data["space"], [r[x] for r in pts]):
            ax.set_xscale("log")
            ticks = rd.log_ticks(min(r[x] for r in pts), max(r[x] for r in pts))
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
    ax.set_title(f"{rd.short_key(x or '')} × {rd.short_key(ykey)}, coloured by {metric}")
    return _save(fig, path)


def _png_parallel(data: rd.ReportData, path: Path) -> Path:
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
        vals, tickvals, ticktext, label = rd.axis_values(k, trials, data["space"])
        if any(v is not None for v in vals) or tickvals:  # an axis no trial has a value on is left out
            axes.append((vals, tickvals, ticktext, label))
    mvals = [r[metric] for r in trials]
    axes.append((mvals, None, None, metric))
    norm_cols = []
    for vals, tickvals, _ticktext, _ in axes:
        present = [v for v in vals if v is not None]
        lo, hi = min(present + (tickvals or [])), max(present + (tickvals or []))
        span = (hi - lo) or 1.0
        norm_cols.append(([(v - lo) / span if v is not None else float("nan") for v in vals], lo, span))
    cmap = plt.get_cmap("viridis_r" if data["mode"] == "min" else "viridis")
    norm = mcolors.Normalize(min(mvals), max(mvals) if max(mvals) > min(mvals) else min(mvals) + 1e-9)
    xs = list(range(len(axes)))
    for i in range(len(trials)):
        ax.plot(xs, [col[0][i] for col in norm_cols], color=cmap(norm(mvals[i])), lw=2.2, alpha=0.9, marker="o", ms=5)
    for j, (_vals, tickvals, ticktext, _label) in enumerate(axes):
        ax.axvline(j, color="#374151", lw=1)
        lo, span = norm_cols[j][1], norm_cols[j][2]
        ticks = tickvals if tickvals is not None else [lo, lo + span / 2, lo + span]
        texts = ticktext if ticktext is not None else [rd.fmt(float(t), 3) for t in ticks]
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


def _png_resources(data: rd.ReportData, path: Path) -> Path:
    plt = _mpl()
    fig, (a1, a2) = plt.subplots(1, 2, layout="constrained")
    ids = [str(r["trial_id"]) for r in data["trials"]]
    colors = rd.trial_colors(data["trials"])
    labels = [rd.short_id(t) for t in ids]
    times = [float(r["time_s"]) if _num(r.get("time_s")) else 0.0 for r in data["trials"]]
    mem = [rd.peak_memory(data, t) or 0.0 for t in ids]
    for ax, vals, title, unit in (
        (a1, times, "Wall time per trial", "s"),
        (a2, mem, "Peak memory per trial", "MB RSS"),
    ):
        bars = ax.bar(labels, vals, color=[colors[t] for t in ids])
        ax.bar_label(bars, [f"{v:.0f}" if v else "" for v in vals], fontsize=8, padding=2)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.set_ylim(0, (max(vals) or 1) * 1.15)
    return _save(fig, path)


def write_pngs(data: rd.ReportData, out: Path) -> Dict[str, Path]:
    metric = data["metric"]
    return {
        "loss.png": _png_curves(data, "loss", "training loss", "Training loss per trial", out / "loss.png"),
        "metric.png": _png_curves(data, metric, metric, f"{metric} per trial (eval set)", out / "metric.png"),
        "lr_rank.png": _png_scatter(data, out / "lr_rank.png"),
        "parallel.png": _png_parallel(data, out / "parallel.png"),
        "time_memory.png": _png_resources(data, out / "time_memory.png"),
    }
