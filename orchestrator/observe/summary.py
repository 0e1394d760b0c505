"""The end-of-run summary: the trial table and where the best model is."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.core.rundir import RunDir
from orchestrator.core.scores import fidelity_of, fidelity_text, test_rows, test_size

# trials.csv columns the table leaves out (the throughput's parts: tokens_per_s and mfu are shown)
HIDDEN = ("planned_steps", "error", "fit_limit", "train_tokens", "train_time_s")
# Settings each trial records: when every trial has the same value, one line under the table says it.
SAME_FOR_ALL = ("gradient_checkpointing", "kernels", "torch_compile")
# Short headers, so the table fits a terminal (trials.csv keeps the full names).
LABELS = {
    "trial_id": "trial",
    "time_s": "time s",
    "gradient_checkpointing": "ckpt",
    "estimated_peak_gb": "est. GiB",
    "measured_peak_gb": "peak GiB",
    "needed_gb": "needs GiB",
    "available_gb": "has GiB",
    "tokens_per_s": "tok/s",
    "spend_gpu_hours": "GPU-h",
    "spend_usd": "$",
    "torch_compile": "compile",
}


def table_columns(rows: list) -> tuple:
    """([(key, header)], {key: value} of the settings every trial shares): columns empty for every trial
    are left out; hyperparameters are headed by their last part (`training.learning_rate` -> `learning_rate`)
    when that is unambiguous."""
    keys: list = []
    for row in rows:
        keys += [k for k in row if k not in keys and k not in HIDDEN]
    keys = [k for k in keys if any(row.get(k) not in (None, "") for row in rows)]
    same = {}
    for k in SAME_FOR_ALL:
        values = {str(row.get(k)) for row in rows}
        if k in keys and len(values) == 1:
            same[k] = rows[0].get(k)
    keys = [k for k in keys if k not in same]
    tails = [k.rsplit(".", 1)[-1] for k in keys]
    cols = [(k, LABELS.get(k) or (t if tails.count(t) == 1 else k)) for k, t in zip(keys, tails)]
    return cols, same


def print_summary(run_dir: Path) -> int:
    """Print the trial table and the best trial; 0 when a best model exists and its merge passed."""
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # a log or a pipe has no width to respect: the table's columns need not be cut
    run = RunDir(run_dir)
    res = run.results()
    if res is None:
        raise FileNotFoundError(f"{run.results_path} is missing or unreadable")
    metric = res["metric"]
    best = res.get("best") or {}
    table = Table(title=f"{res['experiment']}: {res['num_trials']} trials ({metric}, {res['mode']})")
    cols, same = table_columns(res["trials"])
    for k, header in cols:
        table.add_column(header, justify="right" if k not in ("trial_id", "status") else "left")
    for row in res["trials"]:
        style = "bold green" if row.get("trial_id") == best.get("trial_id") else None
        table.add_row(*[_fmt(row.get(k)) for k, _ in cols], style=style)
    console.print(table)
    if same and res["trials"]:
        text = ", ".join(f"{k} {_fmt(v)}" for k, v in same.items())
        console.print(f"Every trial: {text}", markup=False, highlight=False)
    if res.get("spend"):
        from orchestrator.core.budget import spend_line

        num_samples = ((run.config() or {}).get("search") or {}).get("num_samples", res["num_trials"])
        console.print(spend_line(res["spend"], num_samples, res["num_trials"]), markup=False, highlight=False)
    print_problems(console, run, res)
    if not best:
        console.print("[red]No trial reported the metric; nothing was merged.[/red]")
        return 1
    p = res.get("params", {})
    console.print(
        f"Best trial [bold]{best['trial_id']}[/bold]: {metric} = {_fmt(best['metrics'].get(metric))} "
        f"at step {best['step']}, params {best['params']}"
    )
    if p.get("trainable_params"):
        console.print(
            f"Trainable params: {p['trainable_params']:,} of {p['total_params']:,} ({p['trainable_pct']:.3f}%)"
        )
    console.print(f"Adapter: {res['paths'].get('adapter')}")
    check = res.get("merge_check")
    if check:
        verdict = "[green]passed[/green]" if check["passed"] else "[red]FAILED[/red]"
        console.print(
            f"Merged:  {res['paths'].get('merged')}  (merge check {verdict}: max |Δlogit| "
            f"{check['max_abs_logit_diff']:.2e} <= {check['tolerance']:.0e})"
        )
        fid = fidelity_of(check)
        if fid:
            verdict = "[green]ok[/green]" if fid.get("passed") else "[yellow]over merge.max_metric_drop[/yellow]"
            console.print(f"Fidelity ({verdict}): {fidelity_text(fid)}")
        if not check["passed"]:
            return 1
    rows = test_rows(res)
    if rows:
        console.print(f"Test set ({test_size(res)} examples, never seen by the search): untuned base -> merged")
        for k, base, merged, lift in rows:
            console.print(f"  {k}: {_fmt(base)} -> [bold]{_fmt(merged)}[/bold]  (lift {_fmt(lift)}, + is better)")
    console.print(f"Results: {run.results_path}, {run.trials_csv}")
    if res["paths"].get("remote_run_dir"):
        console.print(
            f"On S3:   {res['paths']['remote_run_dir']}/ (run folder), {res['paths']['storage']}/ "
            "(checkpoints, search state)"
        )
    return 0


def print_problems(console, run: RunDir, res) -> None:
    """Failed and skipped trials (one line each: the path to a failed trial's log, a skipped one's estimate) and
    the notices, each once."""
    from orchestrator.core.trial_status import SKIPPED_WONT_FIT, wont_fit_text

    for row in res["trials"]:
        if row.get("status") == SKIPPED_WONT_FIT:
            console.print(f"trial {row['trial_id']} skipped, won't fit: {wont_fit_text(row)}", style="magenta")
        if row.get("status") != "ERROR":
            continue
        at = f" at step {row['steps']}" if row.get("steps") else ""
        log = run.trial_dir(str(row["trial_id"])) / "worker.log"
        console.print(
            f"trial {row['trial_id']} failed{at}: {row.get('error') or 'see its log'} (log: {log})",
            style="red",
            markup=False,
            highlight=False,
        )
    notices = res.get("notices") or []
    if notices:
        console.print("Notices:", style="yellow")
        for n in notices:
            console.print(f"  - {n}", markup=False, highlight=False)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
