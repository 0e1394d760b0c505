"""`jobs`, `status`, `logs`, `stop`: follow runs submitted to a Ray cluster (`tune|train --address`).

Each command is a thin layer over orchestrator.launch.ray_jobs; errors there are UserErrors (exit 2).
"""

from __future__ import annotations

import click

from orchestrator.commands.options import address_option

job_argument = click.argument("job_id", metavar="JOB")


@click.command("jobs")
@address_option
def jobs_command(address):
    """List the Ray Jobs on the cluster (oldest first) with their experiment and status.

    \b
    Example:
      qlora-launch jobs --address http://127.0.0.1:8265
    """
    from orchestrator.launch import ray_jobs

    for line in ray_jobs.format_jobs_table(ray_jobs.list_jobs(address)):
        click.echo(line)


@click.command("status")
@job_argument
@address_option
def status_command(job_id, address):
    """Show the status of job JOB (its id as printed at submission or by `qlora-launch jobs`)."""
    from orchestrator.launch import ray_jobs

    for line in ray_jobs.format_job_details(ray_jobs.job_status(address, job_id)):
        click.echo(line)


@click.command("logs")
@click.argument("job_id", metavar="JOB|RUN_DIR")
@address_option
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Stream new lines until the job (or the local run) ends; for a job, exit 0 if it SUCCEEDED, 1 if not.",
)
@click.option(
    "--trial", default=None, metavar="ID", help="RUN_DIR only: that trial's worker log (a trial id or its ending)."
)
@click.pass_context
def logs_command(ctx, job_id, address, follow, trial):
    """Print the logs of cluster job JOB, or of a local run folder RUN_DIR.

    \b
    RUN_DIR: its driver.log and the list of trial logs; with --trial ID, that trial's worker.log
    (library output, and the full traceback when it failed). --follow keeps printing until the run ends.
    """
    from pathlib import Path

    if Path(job_id).is_dir():
        from orchestrator.observe.run_logs import show_logs

        ctx.exit(show_logs(Path(job_id), trial=trial, follow=follow, echo=click.echo))
    if trial:
        raise click.UsageError(f"--trial goes with a run folder; '{job_id}' is not a folder here.")
    from orchestrator.launch import ray_jobs

    ctx.exit(ray_jobs.job_logs(address, job_id, follow=follow, echo=click.echo))


@click.command("stop")
@job_argument
@address_option
def stop_command(job_id, address):
    """Stop job JOB (its trials end; finished trials and checkpoints stay in the storage)."""
    from orchestrator.launch import ray_jobs

    if ray_jobs.stop_job(address, job_id):
        click.echo(f"Stop requested for job {job_id}; `qlora-launch status {job_id}` shows when it has stopped.")
    else:
        click.echo(f"Job {job_id} was not running; nothing to stop.")


def register(group) -> None:
    for cmd in (jobs_command, status_command, logs_command, stop_command):
        group.add_command(cmd)
