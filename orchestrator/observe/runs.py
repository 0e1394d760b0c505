"""Local experiments: `qlora-launch runs` lists the run folders under a directory with their best
metric; `qlora-launch runs show EXP` prints one experiment's trial table.

Reads the run folders through RunDir (docs/run_layout.md), with the report's view of a run
(report/data.py); a folder without results.json is listed as unfinished (still running, interrupted or
failed) with what its trials.csv already says.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

from orchestrator.core.errors import UserError, did_you_mean
from orchestrator.core.formatting import is_number
from orchestrator.core.rundir import RunDir
from orchestrator.observe.report.data import load_report_data, peak_memory

DEFAULT_ROOT = "runs"  # output.dir's default


def list_runs(root=DEFAULT_ROOT) -> List[Dict[str, Any]]:
    """One dict per run folder under `root`, newest first.

    Keys: experiment, path, state (finished | unfinished), metric, mode, best_value, best_trial,
    num_trials, counts {status: n}, started_at, finished_at, report (path or None).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [info for d in root.iterdir() if d.is_dir() and (info := run_info(d)) is not None]
    return sorted(runs, key=lambda r: r["_sort"], reverse=True)


def run_info(run_dir: Path) -> Optional[Dict[str, Any]]:
    """What `runs` shows of one folder, or None when it is not a run folder."""
    run = RunDir(run_dir)
    results, config = run.results(), run.config()
    if results is None and config is None:
        return None
    try:
        data = load_report_data(run)
    except UserError:
        data = None
    search = (config or {}).get("search") or {}
    trials = data["trials"] if data else []
    metric = (results or {}).get("metric") or search.get("metric")
    mode = (results or {}).get("mode") or search.get("mode") or ("min" if metric and "loss" in metric else "max")
    best = (results or {}).get("best") or {}
    best_value = (best.get("metrics") or {}).get(metric) if best else None
    if best_value is None and trials:  # unfinished: the best so far from trials.csv
        scored = [r for r in trials if is_number(r.get(metric))]
        if scored:
            pick = (min if mode == "min" else max)(scored, key=lambda r: r[metric])
            best_value, best = pick[metric], {"trial_id": pick["trial_id"]}
    counts: Dict[str, int] = {}
    for r in trials:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    report = _report_page(run)
    mtime = max((p.stat().st_mtime for p in (run.results_path, run.config_path) if p.exists()), default=0.0)
    return {
        "experiment": (results or {}).get("experiment") or run.path.name,
        "path": str(run.path.resolve()),
        "state": "finished" if results is not None else "unfinished",
        "metric": metric,
        "mode": mode,
        "best_value": best_value,
        "best_trial": best.get("trial_id"),
        "num_trials": len(trials) or (results or {}).get("num_trials") or 0,
        "planned_trials": search.get("num_samples"),
        "counts": counts,
        "started_at": (results or {}).get("started_at"),
        "finished_at": (results or {}).get("finished_at"),
        "report": report,
        "_sort": (results or {}).get("finished_at") or datetime.fromtimestamp(mtime, timezone.utc).isoformat(),
    }


def find_run(exp: str, root=DEFAULT_ROOT) -> Path:
    """The run folder of experiment `exp`: a path to a run folder, or a name under `root`."""
    for cand in (Path(exp), Path(root) / exp):
        if RunDir(cand).is_run():
            return cand
    names = [r["experiment"] for r in list_runs(root)]
    hint = did_you_mean(exp, names)
    known = f" Experiments in {root}: {', '.join(sorted(names))}." if names and not hint else ""
    raise UserError(
        f"EXP: no run '{exp}' in '{root}'.{hint}{known} Pass a run folder, or --dir for another output.dir."
    )


def trial_table(run_dir: Path) -> Dict[str, Any]:
    """The trial rows of a run, best first: {experiment, metric, mode, columns, rows, best_trial, state}."""
    run = RunDir(run_dir)
    data = load_report_data(run)
    metric, mode = data["metric"], data["mode"]
    cols = ["trial_id", *data["param_keys"], metric, "steps", "status", "time_s", "peak_mem_mb"]
    rows = []
    for r in data["trials"]:
        row = {c: r.get(c) for c in cols}
        row["peak_mem_mb"] = peak_memory(data, str(r["trial_id"]))
        if r.get("planned_steps"):
            row["planned_steps"] = r["planned_steps"]
        rows.append(row)
    sign = 1 if mode == "min" else -1
    rows.sort(key=lambda r: (not is_number(r.get(metric)), sign * r[metric] if is_number(r.get(metric)) else 0))
    return {
        "experiment": data["experiment"],
        "metric": metric,
        "mode": mode,
        "columns": cols,
        "rows": rows,
        "best_trial": (data["best"] or {}).get("trial_id"),
        "state": "finished" if data["results"] else "unfinished",
        "report": _report_page(run),
    }


def _report_page(run: RunDir) -> Optional[str]:
    """The run's report page, when `report` has written it."""
    page = run.report_dir / "index.html"
    return str(page) if page.exists() else None


# ---- printing -----------------------------------------------------------------------------------


def print_runs(runs: List[Dict[str, Any]], root, console=None) -> None:
    from rich.table import Table

    console = console or _console()
    if not runs:
        console.print(
            f"No runs in {root}. Start one with `qlora-launch tune CONFIG` (results go to "
            f"output.dir/EXPERIMENT), or pass --dir."
        )
        return
    table = Table(title=f"Experiments in {root}", title_justify="left", header_style="bold")
    for col, just in (
        ("experiment", "left"),
        ("state", "left"),
        ("trials", "right"),
        ("metric", "left"),
        ("best", "right"),
        ("best trial", "left"),
        ("finished (UTC)", "left"),
        ("report", "left"),
    ):
        table.add_column(col, justify=just, no_wrap=col != "report")
    for r in runs:
        c = r["counts"]
        trials = str(r["num_trials"])
        if r["state"] != "finished" and r.get("planned_trials"):
            trials = f"{r['num_trials']}/{r['planned_trials']}"
        detail = ", ".join(f"{n} {_status_word(s)}" for s, n in sorted(c.items()) if s != "COMPLETED")
        table.add_row(
            r["experiment"],
            "[green]finished[/green]" if r["state"] == "finished" else "[yellow]unfinished[/yellow]",
            trials + (f" ({detail})" if detail else ""),
            f"{r['metric']} ({r['mode']})" if r["metric"] else "",
            _fmt(r["best_value"]),
            r["best_trial"] or "",
            (r["finished_at"] or "")[:19].replace("T", " "),
            "yes" if r["report"] else "",
        )
    console.print(table)
    console.print("Trial table: qlora-launch runs show EXP · report: qlora-launch report RUN_DIR")


def print_trials(info: Dict[str, Any], console=None) -> None:
    from rich.table import Table

    console = console or _console()
    metric = info["metric"]
    heads = {"trial_id": "trial", "time_s": "time (s)", "peak_mem_mb": "peak mem (MB)"}
    table = Table(
        title=f"{info['experiment']}: {len(info['rows'])} trials, best first by {metric} ({info['mode']})"
        + ("" if info["state"] == "finished" else " [unfinished]"),
        title_justify="left",
        header_style="bold",
    )
    for c in info["columns"]:
        table.add_column(heads.get(c, c), justify="left" if c in ("trial_id", "status") else "right", no_wrap=True)
    for r in info["rows"]:
        cells = []
        for c in info["columns"]:
            v = r.get(c)
            if c == "steps" and r.get("planned_steps"):
                cells.append(f"{_fmt(v)}/{r['planned_steps']}")
            elif c == "status":
                cells.append(_status_word(v))
            else:
                cells.append(_fmt(v))
        best = r.get("trial_id") == info["best_trial"]
        table.add_row(*cells, style="bold green" if best else None)
    console.print(table)
    if info["best_trial"]:
        console.print(f"Best trial: [bold]{info['best_trial']}[/bold]")
    if info.get("report"):
        console.print(f"Report: {info['report']}")


def _console():
    """A rich Console; piped output gets a wide one so tables are not squeezed to 80 columns."""
    import os
    import sys

    from rich.console import Console

    wide = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    return Console(soft_wrap=True, width=200 if wide else None)


def _status_word(s) -> str:
    words = {
        "COMPLETED": "completed",
        "STOPPED_EARLY": "stopped early",
        "ERROR": "failed",
        "SKIPPED_WONT_FIT": "won't fit",
    }
    return words.get(str(s), str(s).lower())


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if v == 0:
            return "0"
        return f"{v:.3e}" if abs(v) < 1e-3 else f"{v:.4g}"
    return str(v)


def public(info: Dict[str, Any]) -> Dict[str, Any]:
    """A run_info dict without its private sort key (for --json)."""
    return {k: v for k, v in info.items() if not k.startswith("_")}
