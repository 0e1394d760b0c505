"""`report`, `runs`, `runs show`: look at finished (and running) searches."""

from __future__ import annotations

import json
from pathlib import Path

import click

from orchestrator.core.errors import UserError

dir_option = click.option(
    "--dir",
    "root",
    default=None,
    metavar="DIR",
    help="Folder that holds the run folders (output.dir; default ./runs, env QLORA_RUNS_DIR).",
)


def report(run_dir: str, open_browser: bool = False, pngs: bool = True, echo=click.echo) -> Path:
    """Write RUN_DIR/report/index.html (+ PNGs); optionally open it in a browser. Returns the HTML path."""
    from orchestrator.observe.report.html import write_report

    path = write_report(Path(run_dir), pngs=pngs)
    echo(f"Report: {path}")
    if pngs:
        echo(f"PNGs:   {path.parent}/{{loss,metric,lr_rank,parallel,time_memory}}.png")
    if open_browser:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            echo(f"No browser found here; open {path.resolve().as_uri()} yourself.")
    return path


def _root(root):
    import os

    return root or os.environ.get("QLORA_RUNS_DIR") or "runs"


def register(group) -> None:
    @group.command("report")
    @click.argument("run_dir", type=click.Path(file_okay=False))
    @click.option("--open", "open_browser", is_flag=True, help="Open the report in the default browser.")
    @click.option("--no-png", is_flag=True, help="Only the HTML page (skip the matplotlib PNGs).")
    def report_command(run_dir, open_browser, no_png):
        """Write a self-contained HTML report of RUN_DIR (a `tune` run folder) and PNGs of its plots.

        \b
        The page (RUN_DIR/report/index.html) needs no internet: loss and eval metric per trial
        (ASHA's early stops marked), learning rate x rank, all hyperparameters, a sortable trial
        table, the best config, trainable-parameter share, time and memory per trial, and sample
        predictions beside their references. `tune` writes it at the end of every search.
        """
        if not Path(run_dir).is_dir():
            raise UserError(
                f"RUN_DIR: '{run_dir}' does not exist. Pass a folder written by `qlora-launch tune` "
                "(output.dir/EXPERIMENT, e.g. runs/t5_tiny_summarize_local); `qlora-launch runs` "
                "lists them."
            )
        report(run_dir, open_browser=open_browser, pngs=not no_png)

    @group.group("runs", invoke_without_command=True)
    @dir_option
    @click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
    @click.pass_context
    def runs_group(ctx, root, as_json):
        """List local experiments (run folders in DIR) with their best metric, newest first.

        `qlora-launch runs show EXP` prints one experiment's trial table.
        """
        ctx.ensure_object(dict)
        ctx.obj["runs_root"] = root
        if ctx.invoked_subcommand is not None:
            return
        from orchestrator.observe.runs import list_runs, print_runs, public

        root = _root(root)
        runs = list_runs(root)
        if as_json:
            click.echo(json.dumps([public(r) for r in runs], indent=2))
            return
        print_runs(runs, root)

    @runs_group.command("show")
    @click.argument("exp")
    @dir_option
    @click.option("--json", "as_json", is_flag=True, help="Print the trial table as JSON.")
    @click.pass_context
    def runs_show(ctx, exp, root, as_json):
        """Print the trial table of EXP (an experiment name in DIR, or a run folder), best first."""
        from orchestrator.observe.runs import find_run, print_trials, trial_table

        root = _root(root or (ctx.obj or {}).get("runs_root"))
        info = trial_table(find_run(exp, root))
        if as_json:
            click.echo(json.dumps(info, indent=2))
            return
        print_trials(info)
