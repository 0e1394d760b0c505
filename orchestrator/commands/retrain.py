"""`retrain`, `history`, `champion`, `rollback` and the `schedule` group: thin over orchestrator.retrain
(gate, registry, listing, schedule, daemon, schedule_export)."""

from __future__ import annotations

import json
from typing import Optional, Tuple

import click

from orchestrator.commands.options import address_option, config_argument, set_option
from orchestrator.core.errors import UserError

registry_option = click.option(
    "--registry",
    default=None,
    metavar="PATH_OR_S3",
    help="Registry folder or s3://bucket/prefix (YAML retrain.registry, default publish.to).",
)
endpoint_option = click.option(
    "--endpoint-url", default=None, help="S3-compatible endpoint of an s3:// registry (YAML publish.endpoint_url)."
)
from_config_option = click.option(
    "--config",
    "config_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Take the registry, endpoint and model name from this config's retrain: section.",
)


def registry_source_options(f):
    """--registry, --endpoint-url and --config: where the registry (and the model name) come from."""
    return registry_option(endpoint_option(from_config_option(f)))


def _registry_and_name(verb: str, registry, endpoint_url, config_path, name):
    """The registry and the model name a `champion`/`rollback` command works on (a name is required)."""
    from orchestrator.retrain.registry import open_registry

    reg, name = open_registry(registry, endpoint_url, config_path, name)
    if not name:
        raise UserError(f"name the model: qlora-launch {verb} NAME (or --config CONFIG).")
    return reg, name


store_option = click.option(
    "--store",
    default=None,
    help="SQLite file of the schedules (default $QLORA_LAUNCH_HOME/schedules.sqlite, ~/.qlora-launch/).",
)


@click.command("retrain")
@config_argument
@address_option
@click.option("--force", is_flag=True, help="Retrain even when the training data has not changed.")
@set_option
@click.option("--dry-run", is_flag=True, help="Say what would happen (champion, new data or not, plan); start nothing.")
@click.option("--job-id", default=None, hidden=True, help="Id recorded with the run (set by schedules and Ray Jobs).")
def retrain_cmd(
    config: str, address: Optional[str], force: bool, overrides: Tuple[str, ...], dry_run: bool, job_id: Optional[str]
) -> None:
    """Retrain CONFIG on fresh data; promote the result only if it beats the champion.

    Skips with "no new data" (exit 0) when the training data is unchanged since the last successful
    retrain. Needs a retrain: section, a held-out set (retrain.eval_data or data.test) and a
    publish: section.
    """
    from orchestrator.core.config_load import load_config
    from orchestrator.retrain.gate import retrain

    cfg = load_config(config, list(overrides))
    if dry_run:
        from orchestrator.retrain.gate import plan_retrain

        for line in plan_retrain(cfg, force=force):
            click.echo(line)
        click.echo("Dry run: nothing trained, published or recorded.")
        return
    outcome = retrain(cfg, force=force, address=address, job_id=job_id, echo=click.echo)
    click.echo(outcome.summary())


@click.command("history")
@click.argument("name", required=False)
@registry_source_options
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON lines.")
def history_cmd(name, registry, endpoint_url, config_path, as_json) -> None:
    """Past retrains, promotions and rollbacks of NAME (all names when omitted)."""
    from orchestrator.retrain.listing import history_table
    from orchestrator.retrain.registry import open_registry

    reg, name = open_registry(registry, endpoint_url, config_path, name)
    names = [name] if name else reg.names()
    if name:
        reg.check_known(name)
    rows = [r for n in names for r in reg.history(n)]
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, sort_keys=True))
        return
    if not rows:
        click.echo(f"no history in {reg.uri}")
        return
    for line in history_table(rows):
        click.echo(line)


@click.command("champion")
@click.argument("name", required=False)
@registry_source_options
@click.option("--json", "as_json", is_flag=True, help="Print the pointer as JSON.")
def champion_cmd(name, registry, endpoint_url, config_path, as_json) -> None:
    """What version of NAME is in production now, and since when."""
    from orchestrator.retrain.listing import champion_lines

    reg, name = _registry_and_name("champion", registry, endpoint_url, config_path, name)
    champ = reg.get_champion(name)
    if champ is None:
        raise UserError(f"'{name}' has no champion in {reg.uri} yet; run `qlora-launch retrain CONFIG` first.")
    if as_json:
        click.echo(json.dumps(champ, indent=2, sort_keys=True))
        return
    for line in champion_lines(name, champ):
        click.echo(line)


@click.command("rollback")
@click.argument("name", required=False)
@click.option("--to", "to_version", default=None, help="Version to go back to (default: the previous champion).")
@click.option("--reason", default=None, help="Why; recorded in the history.")
@registry_source_options
def rollback_cmd(name, to_version, reason, registry, endpoint_url, config_path) -> None:
    """Move the champion pointer of NAME back, and record it in the history."""
    reg, name = _registry_and_name("rollback", registry, endpoint_url, config_path, name)
    rec = reg.rollback(name, to_version, reason)
    click.echo(f"{name}: champion is now version {rec['version']} (was {rec.get('from_version') or 'none'})")


# ---- schedule group -------------------------------------------------------------------------


@click.group("schedule")
def schedule_group() -> None:
    """Run retrains on a cron schedule (daemon: `schedule run`), or export them to cron/Kubernetes."""


@schedule_group.command("add")
@click.argument("name")
@click.option("--cron", default=None, help="Cron expression, e.g. '0 3 * * 1' (Mondays 03:00), or @daily.")
@click.option("--every", "every_s", type=float, default=None, hidden=True, help="Run every N seconds (tests).")
@config_argument
@address_option
@click.option("--timezone", "tz", default="UTC", show_default=True, help="Time zone the cron is read in.")
@click.option(
    "--misfire-grace",
    "misfire_grace_s",
    type=int,
    default=3600,
    show_default=True,
    help="Seconds late a missed run may still start (runs missed while the scheduler was down are coalesced into one).",
)
@store_option
def schedule_add(name, cron, every_s, config, address, tz, misfire_grace_s, store) -> None:
    """Add schedule NAME: run `qlora-launch retrain CONFIG` on --cron."""
    from orchestrator.retrain.schedule import add_schedule

    spec = add_schedule(
        name, config, cron=cron, every_s=every_s, address=address, tz=tz, misfire_grace_s=misfire_grace_s, store=store
    )
    click.echo(f"added schedule '{name}': {spec['cron'] or f'every {every_s:g}s'} ({tz}); next run {spec['next_run']}")
    click.echo("Start the scheduler with `qlora-launch schedule run`, or export it with `schedule export`.")


@schedule_group.command("list")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the schedules as JSON.")
def schedule_list(store, as_json) -> None:
    """The schedules, their next run and their last run."""
    from orchestrator.retrain.listing import schedule_lines
    from orchestrator.retrain.schedule import list_schedules
    from orchestrator.retrain.schedule_paths import store_path

    items = list_schedules(store)
    if as_json:
        click.echo(json.dumps(items, indent=2, sort_keys=True, default=str))
        return
    if not items:
        click.echo(f"no schedules in {store_path(store)}")
        return
    for s in items:
        for line in schedule_lines(s):
            click.echo(line)


@schedule_group.command("remove")
@click.argument("name")
@store_option
def schedule_remove(name, store) -> None:
    """Remove schedule NAME (a running retrain is not stopped)."""
    from orchestrator.retrain.schedule import remove_schedule

    remove_schedule(name, store)
    click.echo(f"removed schedule '{name}'")


@schedule_group.command("run")
@store_option
@click.option("--poll", "poll_s", type=float, default=10.0, show_default=True, help="Seconds between store re-reads.")
@click.option("--max-workers", type=int, default=4, show_default=True, help="Schedules that may run at once.")
def schedule_run(store, poll_s, max_workers) -> None:
    """The scheduler: runs each schedule's retrain on time until stopped (restart-safe)."""
    import logging

    from orchestrator.retrain.daemon import run_scheduler

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_scheduler(store, poll_s=poll_s, max_workers=max_workers, echo=click.echo)


@schedule_group.command("export")
@click.argument("name")
@click.option(
    "--format", "fmt", type=click.Choice(["crontab", "k8s"]), required=True, help="crontab line or Kubernetes CronJob."
)
@click.option("--image", default=None, help="k8s: container image with qlora-launch (env QLORA_LAUNCH_IMAGE).")
@store_option
def schedule_export(name, fmt, image, store) -> None:
    """Print schedule NAME as a crontab line or a Kubernetes CronJob (concurrencyPolicy Forbid)."""
    from orchestrator.retrain.schedule_export import export_schedule

    click.echo(export_schedule(name, fmt, store, image), nl=False)


def register(group) -> None:
    for cmd in (retrain_cmd, history_cmd, champion_cmd, rollback_cmd, schedule_group):
        group.add_command(cmd)
