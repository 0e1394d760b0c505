"""`retrain`, `history`, `champion`, `rollback` and the `schedule` group: thin over
orchestrator.retrain, orchestrator.registry and orchestrator.schedule."""

from __future__ import annotations

import json
from typing import Optional, Tuple

import click

from orchestrator.commands.options import address_option, config_argument, set_option
from orchestrator.errors import UserError

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
store_option = click.option(
    "--store",
    default=None,
    help="SQLite file of the schedules (default $QLORA_LAUNCH_HOME/schedules.sqlite, ~/.qlora-launch/).",
)


def _open_registry(registry: Optional[str], endpoint_url: Optional[str], config_path: Optional[str], name: Optional[str]):
    """(Registry, name) from --registry/--endpoint-url, or from a config's retrain section."""
    from orchestrator.registry import Registry, endpoint_for, registry_uri_for

    if config_path:
        from orchestrator.config import load_config

        cfg = load_config(config_path)
        if cfg.retrain is None:
            raise UserError(f"{config_path}: no retrain: section to take the registry from; pass --registry.")
        return Registry.open(registry or registry_uri_for(cfg), endpoint_url or endpoint_for(cfg)), name or cfg.retrain.name
    if not registry:
        raise UserError("say where the registry is: --registry PATH_OR_S3 (or --config CONFIG with a retrain: section).")
    return Registry.open(registry, endpoint_url), name


def _fmt_score(v) -> str:
    return "-" if v is None else f"{v:.6g}"


@click.command("retrain")
@config_argument
@address_option
@click.option("--force", is_flag=True, help="Retrain even when the training data has not changed.")
@set_option
@click.option("--dry-run", is_flag=True, help="Say what would happen (champion, new data or not, plan); start nothing.")
@click.option("--job-id", default=None, hidden=True, help="Id recorded with the run (set by schedules and Ray Jobs).")
def retrain_cmd(config: str, address: Optional[str], force: bool, overrides: Tuple[str, ...], dry_run: bool,
                job_id: Optional[str]) -> None:
    """Retrain CONFIG on fresh data; promote the result only if it beats the champion.

    Skips with "no new data" (exit 0) when the training data is unchanged since the last successful
    retrain. Needs a retrain: section, a held-out set (retrain.eval_data or data.test) and a
    publish: section.
    """
    from orchestrator.config import load_config
    from orchestrator.retrain import retrain

    cfg = load_config(config, list(overrides))
    if dry_run:
        from orchestrator.retrain import plan_retrain

        for line in plan_retrain(cfg, force=force):
            click.echo(line)
        click.echo("Dry run: nothing trained, published or recorded.")
        return
    outcome = retrain(cfg, force=force, address=address, job_id=job_id, echo=click.echo)
    click.echo(outcome.summary())


@click.command("history")
@click.argument("name", required=False)
@registry_option
@endpoint_option
@from_config_option
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON lines.")
def history_cmd(name, registry, endpoint_url, config_path, as_json) -> None:
    """Past retrains, promotions and rollbacks of NAME (all names when omitted)."""
    reg, name = _open_registry(registry, endpoint_url, config_path, name)
    names = [name] if name else reg.names()
    if name and not reg.history(name) and reg.get_champion(name, verify=False) is None:
        from orchestrator.errors import did_you_mean

        known = reg.names()
        raise UserError(
            f"no model named '{name}' in the registry {reg.uri}.{did_you_mean(name, known)} "
            f"Known: {', '.join(known) or 'none'}."
        )
    rows = [r for n in names for r in reg.history(n)]
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, sort_keys=True))
        return
    if not rows:
        click.echo(f"no history in {reg.uri}")
        return
    header = ("time", "name", "decision", "version", "challenger", "champion", "data", "job", "reason")
    table = [header]
    for r in rows:
        ch, cp = r.get("challenger") or {}, r.get("champion") or {}
        table.append((
            r.get("time", "")[:19],
            r.get("name", ""),
            r.get("decision", ""),
            r.get("version") or "-",
            _fmt_score(ch.get("score")),
            _fmt_score(cp.get("score")),
            (r.get("data_fingerprint") or "-")[:12],
            r.get("job_id") or "-",
            r.get("reason", ""),
        ))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    for row in table:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + str(row[-1]))


@click.command("champion")
@click.argument("name", required=False)
@registry_option
@endpoint_option
@from_config_option
@click.option("--json", "as_json", is_flag=True, help="Print the pointer as JSON.")
def champion_cmd(name, registry, endpoint_url, config_path, as_json) -> None:
    """What version of NAME is in production now, and since when."""
    reg, name = _open_registry(registry, endpoint_url, config_path, name)
    if not name:
        raise UserError("name the model: qlora-launch champion NAME (or --config CONFIG).")
    champ = reg.get_champion(name)
    if champ is None:
        raise UserError(f"'{name}' has no champion in {reg.uri} yet; run `qlora-launch retrain CONFIG` first.")
    if as_json:
        click.echo(json.dumps(champ, indent=2, sort_keys=True))
        return
    click.echo(f"{name}: version {champ['version']} since {champ.get('since')}")
    click.echo(f"  location: {champ['location']}")
    click.echo(f"  {champ.get('metric')}: {_fmt_score(champ.get('score'))}")
    if champ.get("hparams"):
        click.echo(f"  hparams: {json.dumps(champ['hparams'], sort_keys=True)}")


@click.command("rollback")
@click.argument("name", required=False)
@click.option("--to", "to_version", default=None, help="Version to go back to (default: the previous champion).")
@click.option("--reason", default=None, help="Why; recorded in the history.")
@registry_option
@endpoint_option
@from_config_option
def rollback_cmd(name, to_version, reason, registry, endpoint_url, config_path) -> None:
    """Move the champion pointer of NAME back, and record it in the history."""
    reg, name = _open_registry(registry, endpoint_url, config_path, name)
    if not name:
        raise UserError("name the model: qlora-launch rollback NAME (or --config CONFIG).")
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
    "--misfire-grace", "misfire_grace_s", type=int, default=3600, show_default=True,
    help="Seconds late a missed run may still start (runs missed while the scheduler was down are coalesced into one).",
)
@store_option
def schedule_add(name, cron, every_s, config, address, tz, misfire_grace_s, store) -> None:
    """Add schedule NAME: run `qlora-launch retrain CONFIG` on --cron."""
    from orchestrator.schedule import add_schedule

    spec = add_schedule(name, config, cron=cron, every_s=every_s, address=address, tz=tz,
                        misfire_grace_s=misfire_grace_s, store=store)
    click.echo(f"added schedule '{name}': {spec['cron'] or f'every {every_s:g}s'} ({tz}); next run {spec['next_run']}")
    click.echo("Start the scheduler with `qlora-launch schedule run`, or export it with `schedule export`.")


@schedule_group.command("list")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the schedules as JSON.")
def schedule_list(store, as_json) -> None:
    """The schedules, their next run and their last run."""
    from orchestrator.schedule import list_schedules, store_path

    items = list_schedules(store)
    if as_json:
        click.echo(json.dumps(items, indent=2, sort_keys=True, default=str))
        return
    if not items:
        click.echo(f"no schedules in {store_path(store)}")
        return
    for s in items:
        when = s["cron"] or f"every {s['every_s']:g}s"
        last = s["last_run"]
        last_s = f"{last['slot']} {last['status']}" + (f" (exit {last['rc']})" if last and last.get("rc") is not None else "") if last else "never"
        click.echo(f"{s['name']}: {when} {s['timezone']}  next {s['next_run'] or '-'}  last {last_s}")
        click.echo(f"  qlora-launch retrain {s['config']}" + (f" --address {s['address']}" if s.get("address") else ""))


@schedule_group.command("remove")
@click.argument("name")
@store_option
def schedule_remove(name, store) -> None:
    """Remove schedule NAME (a running retrain is not stopped)."""
    from orchestrator.schedule import remove_schedule

    remove_schedule(name, store)
    click.echo(f"removed schedule '{name}'")


@schedule_group.command("run")
@store_option
@click.option("--poll", "poll_s", type=float, default=10.0, show_default=True, help="Seconds between store re-reads.")
@click.option("--max-workers", type=int, default=4, show_default=True, help="Schedules that may run at once.")
def schedule_run(store, poll_s, max_workers) -> None:
    """The scheduler: runs each schedule's retrain on time until stopped (restart-safe)."""
    import logging

    from orchestrator.schedule import run_scheduler

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_scheduler(store, poll_s=poll_s, max_workers=max_workers, echo=click.echo)


@schedule_group.command("export")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["crontab", "k8s"]), required=True, help="crontab line or Kubernetes CronJob.")
@click.option("--image", default=None, help="k8s: container image with qlora-launch (env QLORA_LAUNCH_IMAGE).")
@store_option
def schedule_export(name, fmt, image, store) -> None:
    """Print schedule NAME as a crontab line or a Kubernetes CronJob (concurrencyPolicy Forbid)."""
    from orchestrator.schedule import export_schedule

    click.echo(export_schedule(name, fmt, store, image), nl=False)


def register(group) -> None:
    for cmd in (retrain_cmd, history_cmd, champion_cmd, rollback_cmd, schedule_group):
        group.add_command(cmd)
