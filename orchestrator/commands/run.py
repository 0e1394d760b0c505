"""`validate`, `tune`, `train`: check a config, run a search, run one trial."""

from __future__ import annotations

import json

import click

from orchestrator.commands.options import address_option, config_argument, set_option
from orchestrator.launch.pipeline import plan_text, prepare, run


def run_options(f):
    """Options shared by `tune` and `train`."""
    for opt in reversed(
        [
            set_option,
            click.option(
                "--dry-run", is_flag=True, help="Print the resolved config, search space and resources; start nothing."
            ),
            address_option,
            click.option("--no-wait", is_flag=True, help="With --address: print the job id and return at once."),
            click.option(
                "--resume",
                is_flag=True,
                help="Continue an interrupted run in the same output folder (finished trials are not run again).",
            ),
            click.option("--cpus", type=int, default=None, help="Local mode: CPUs Ray may use (default: all)."),
            click.option("--gpus", type=float, default=None, help="Local mode: GPUs Ray may use (default: all)."),
            click.option(
                "-v",
                "--verbose",
                is_flag=True,
                help="Also stream the Ray workers' and libraries' output here (it always goes to the run "
                "folder: trials/<id>/worker.log, driver.log; `qlora-launch logs RUN_DIR` shows it).",
            ),
            click.option(
                "--experiment",
                default=None,
                help="Run name; overrides output.experiment (default: the config file's stem).",
            ),
        ]
    ):
        f = opt(f)
    return f


def _run(verb, config, overrides, no_wait, **options) -> int:
    return run(config, verb, overrides, wait=not no_wait, echo=click.echo, **options)


def register(group: click.Group) -> None:
    @group.command()
    @config_argument
    @set_option
    @click.option("--json", "as_json", is_flag=True, help="Print the resolved config as JSON.")
    def validate(config, overrides, as_json):
        """Check CONFIG (keys, types, ranges, data files, columns, model, target modules); start nothing.

        Every problem is listed at once with its YAML key; exit code 2 when there is any.
        """
        cfg = prepare(config, overrides)
        if as_json:
            click.echo(json.dumps(cfg.to_json(), indent=2))
            return
        click.echo(plan_text(cfg, "tune"))
        from orchestrator.estimate.wont_fit import validate_warning

        warning = validate_warning(cfg)  # most of the space cannot fit: a warning, not an error
        if warning:
            click.secho(warning, fg="yellow")
        click.secho("Config is well-formed!", fg="green")

    @group.command()
    @config_argument
    @run_options
    def tune(**options):
        """Run a Ray Tune search of QLoRA trials, then merge, verify and record the best.

        Without --address Ray starts in-process (local mode) and results land in output.dir/EXPERIMENT.
        """
        raise SystemExit(_run(verb="tune", **options))

    @group.command()
    @config_argument
    @run_options
    def train(**options):
        """Run one QLoRA trial with the config's hyperparameters (a tune trial's code, as a bare Ray Train run)."""
        raise SystemExit(_run(verb="train", **options))
