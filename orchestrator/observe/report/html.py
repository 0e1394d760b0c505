"""`qlora-launch report RUN_DIR`: one self-contained HTML page of a search, plus PNGs of its plots.

The page needs no network: plotly.js is embedded inline once, every figure is a JSON spec rendered by
it, and the small scripts (sortable trial table, error banner) are inline too (page.py). The PNGs are
drawn with matplotlib (pngs.py) at fixed sizes, for pasting into a PR or a chat.

Reads only the run folder, through RunDir (data.py); plotly and matplotlib are imported inside functions.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

from orchestrator.core.rundir import RunDir
from orchestrator.estimate.memory import CUDA_OVERHEAD_GIB
from orchestrator.observe.report.cost import cost_figure
from orchestrator.observe.report.data import SMOOTH_AFTER, ReportData, load_report_data, pick_pair, short_key
from orchestrator.observe.report.figures import (
    curve_figure,
    figure_html,
    parallel_figure,
    resources_figure,
    scatter_figure,
)
from orchestrator.observe.report.memory import memory_figure, memory_table
from orchestrator.observe.report.page import CSS, JS, PAGE
from orchestrator.observe.report.pngs import write_pngs
from orchestrator.observe.report.sections import (
    best_section,
    footer_section,
    header_section,
    kpi_section,
    samples_section,
    trial_table_section,
)


def write_report(run_dir, out_dir=None, pngs: bool = True) -> Path:
    """Write `RUN_DIR/report/index.html` (self-contained) and the PNGs; return the HTML's path.

    Args:
        run_dir: a run folder written by `qlora-launch tune`.
        out_dir: where to write (default RUN_DIR/report).
        pngs: also draw the matplotlib PNGs.
    Raises:
        UserError: RUN_DIR is not a run folder.
    """
    run = RunDir(run_dir)
    data = load_report_data(run)
    out = Path(out_dir) if out_dir else run.report_dir
    out.mkdir(parents=True, exist_ok=True)
    files = write_pngs(data, out) if pngs else {}
    page = render_html(data, png_names=list(files))
    index = out / "index.html"
    tmp = index.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(index)
    return index


def cost_section(data: ReportData, plot) -> str:
    """The cost plot, on runs that recorded spend (search.budget or resources.price_per_gpu_hour)."""
    if data["results"].get("spend") is None and not any("spend_gpu_hours" in r for r in data["trials"]):
        return ""
    return "\n".join(
        [
            "<section><h2>Cost</h2>",
            plot(
                "plot-cost",
                "Metric vs cost",
                "Cost of a trial = the devices it held × its wall time (GPU-hours; CPU-only trials count each "
                "Train worker as one device), in dollars at resources.price_per_gpu_hour. Right: the best "
                "metric so far against the cumulative spend, trials in launch order; the dashed line is "
                "search.budget.",
            ),
            "</section>",
        ]
    )


def memory_section(data: ReportData, plot) -> str:
    """Each trial's estimated peak memory beside the measured one, on runs whose trials were planned."""
    table = memory_table(data)
    if not table:
        return ""
    return "\n".join(
        [
            "<section><h2>Memory: estimate vs measured</h2>",
            plot(
                "plot-memory",
                "Estimated and measured peak memory per trial",
                "Estimated: the plan made before the trial started (qlora-launch estimate's model; hatched: a "
                "trial skipped as SKIPPED_WONT_FIT, at what it would need). Measured: torch's peak allocated "
                f"memory over the trial plus the {CUDA_OVERHEAD_GIB:g} GiB CUDA context the estimate counts "
                "(GPU trials only: a CPU trial's RSS holds the whole process, not what the estimate models). "
                "Red marks: the memory the trial was given (its GPU share, or the planner's budget). "
                "`qlora-launch estimate --calibrate RUN_DIR` turns the worst ratio into resources.memory_margin.",
            ),
            f'<div class="card">{table}</div>',
            "</section>",
        ]
    )


def render_html(data: ReportData, png_names: Sequence[str] = ()) -> str:
    from plotly.offline import get_plotlyjs

    metric = data["metric"]
    figs = {
        "plot-loss": curve_figure(data, "loss", "Training loss per trial", "training loss"),
        "plot-metric": curve_figure(data, metric, f"{metric} on the eval set", metric),
        "plot-scatter": scatter_figure(data),
        "plot-parallel": parallel_figure(data),
        "plot-resources": resources_figure(data),
        "plot-cost": cost_figure(data),
        "plot-memory": memory_figure(data),
    }
    png_for = {
        "plot-loss": "loss.png",
        "plot-metric": "metric.png",
        "plot-scatter": "lr_rank.png",
        "plot-parallel": "parallel.png",
        "plot-resources": "time_memory.png",
    }
    x, y = pick_pair(data["param_keys"], data["trials"])
    m = html.escape(metric)

    def plot(div_id: str, title: str, caption: str = "") -> str:
        png = png_for.get(div_id)
        link = f' <a class="png" href="{png}" title="static PNG of this plot">PNG</a>' if png in png_names else ""
        head = f'<h3 class="plot-title">{title}{link}</h3>'
        fig = figs.get(div_id)
        if fig is None:
            return f'<div class="card plot empty">{head}<p>Nothing to plot: this run has no data for it.</p></div>'
        cap = f'<p class="caption">{caption}</p>' if caption else ""
        return f'<div class="card plot">{head}{figure_html(fig, div_id)}{cap}</div>'

    title = f"{data['experiment']} · qlora-launch report"
    body = "\n".join(
        [
            header_section(data),
            kpi_section(data),
            '<section><h2>Training curves</h2><div class="grid2">',
            plot(
                "plot-loss",
                "Training loss per trial",
                f"Per-step training loss (smoothed when over {SMOOTH_AFTER} points; raw values faint). "
                "Dotted lines ending in ✕ are trials the scheduler (ASHA) stopped early "
                "at a rung; the thick line is the best trial.",
            ),
            plot(
                "plot-metric",
                f"{m} per trial (eval set)",
                f"{m} at each evaluation; {'higher' if data['mode'] == 'max' else 'lower'} is better.",
            ),
            "</div></section>",
            '<section><h2>Hyperparameters</h2><div class="grid2">',
            plot(
                "plot-scatter",
                f"{html.escape(short_key(x or ''))} × {html.escape(short_key(y or metric))}, coloured by {m}",
                f"Each point is a trial, coloured by its best {m}; ✕ = stopped early; outlined = best trial.",
            ),
            plot(
                "plot-parallel",
                f"All hyperparameters → {m}",
                "One line per trial across every searched hyperparameter; drag along an axis to filter.",
            ),
            "</div></section>",
            trial_table_section(data),
            best_section(data),
            "<section><h2>Time and memory</h2>",
            plot(
                "plot-resources",
                "Wall time and peak memory per trial",
                "Wall time is Tune's time_total_s of the trial; memory is the peak RSS of its rank-0 Train worker.",
            ),
            "</section>",
            memory_section(data, plot),
            cost_section(data, plot),
            samples_section(data),
            footer_section(data, png_names),
        ]
    )
    return PAGE.format(title=html.escape(title), css=CSS, plotlyjs=get_plotlyjs(), body=body, js=JS)
