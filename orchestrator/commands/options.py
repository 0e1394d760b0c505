"""Options shared by several commands, defined once."""

from __future__ import annotations

import click

config_argument = click.argument("config", type=click.Path(dir_okay=False))
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any YAML key, e.g. --set training.learning_rate=1e-4 (repeatable).",
)
address_option = click.option(
    "--address",
    envvar="RAY_ADDRESS",
    default=None,
    help="Ray cluster dashboard address (http://HEAD:8265) to submit to as a Ray Job; env RAY_ADDRESS.",
)
