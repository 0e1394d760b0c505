"""`qlora-launch`: the Click group. Each verb lives in a module under orchestrator/commands/ and is a
thin layer over a Python function that tests call directly."""

from __future__ import annotations

import importlib
import sys

import click

from orchestrator import __version__
from orchestrator.core.errors import UserError

# One module per group of verbs; each exposes `register(group)`.
COMMAND_MODULES = ("run", "publish", "cluster", "retrain", "observe", "estimate")


class QloraGroup(click.Group):
    """Prints UserError as one clear paragraph with exit code 2 (a traceback only with --debug)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.secho(f"Error: {e}", fg="red", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


@click.group(cls=QloraGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qlora-launch")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Fine-tune language models with QLoRA on Ray: search, merge, publish, retrain.

    \b
    Start here:
      qlora-launch validate examples/t5_tiny_summarize_local.yaml
      qlora-launch tune examples/t5_tiny_summarize_local.yaml
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


for _name in COMMAND_MODULES:
    importlib.import_module(f"orchestrator.commands.{_name}").register(cli)


def main() -> None:  # console-script entry point
    cli(prog_name="qlora-launch")


if __name__ == "__main__":
    sys.exit(main())
