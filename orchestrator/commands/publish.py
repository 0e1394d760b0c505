"""`publish` and `pull`: thin over orchestrator.publish.push.publish_run and orchestrator.publish.pull.pull."""

from __future__ import annotations

from typing import Optional

import click

from orchestrator.core.errors import UserError
from orchestrator.core.rundir import RunDir


def _run_publish_section(run_dir: str):
    """The publish: section of the run's config.json, or None (defaults for the options)."""
    return (RunDir(run_dir).config() or {}).get("publish") or None


@click.command("publish")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--to",
    "to",
    default=None,
    metavar="URI",
    help="s3://bucket/prefix, a local folder (path or file:///path) or hf://org/name (YAML publish.to; "
    "default: the run's publish.to).",
)
@click.option(
    "--what",
    type=click.Choice(["adapter", "merged", "both"]),
    default=None,
    help="What to publish (YAML publish.what; default both).",
)
@click.option("--endpoint-url", default=None, help="S3-compatible endpoint, e.g. MinIO (YAML publish.endpoint_url).")
@click.option(
    "--version",
    "version",
    default=None,
    help="Version name under the prefix / Hub tag (default: the run's end time + a content hash).",
)
@click.option(
    "--private/--public",
    "private",
    default=None,
    help="Hub: create the repo private or public (YAML publish.private; default private).",
)
@click.option("--revision", default=None, help="Hub: branch to commit to (YAML publish.revision; default main).")
@click.option("--dry-run", is_flag=True, help="List every file, its size and destination; upload nothing.")
def publish_cmd(
    run_dir: str,
    to: Optional[str],
    what: Optional[str],
    endpoint_url: Optional[str],
    version: Optional[str],
    private: Optional[bool],
    revision: Optional[str],
    dry_run: bool,
) -> None:
    """Publish the best model of RUN_DIR (a `tune` run folder) with a manifest.

    The merge is verified again first (merged vs base + adapter); files go under a new version
    (s3://bucket/prefix/<version>/) and latest.json is written last, or into one Hub commit.

    \b
      qlora-launch publish runs/t5 --to s3://models/summarizer --dry-run
      qlora-launch publish runs/t5 --to hf://my-org/t5-summarizer --what adapter
    """
    from orchestrator.publish.push import publish_run

    section = _run_publish_section(run_dir) or {}
    to = to or section.get("to")
    if not to:
        raise UserError(
            "say where to publish: --to s3://bucket/prefix or --to hf://org/name (or a publish.to in the run's config)."
        )
    publish_run(
        run_dir,
        to,
        what=what or section.get("what") or "both",
        endpoint_url=endpoint_url or section.get("endpoint_url"),
        version=version,
        private=private,
        revision=revision,
        dry_run=dry_run,
        echo=click.echo,
    )


@click.command("pull")
@click.argument("location")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option(
    "--version", "version", default=None, help="A published version (S3) or revision/tag (Hub) instead of the latest."
)
@click.option("--endpoint-url", default=None, help="S3-compatible endpoint (YAML publish.endpoint_url).")
def pull_cmd(location: str, dest: str, version: Optional[str], endpoint_url: Optional[str]) -> None:
    """Download a published model into DEST, checking every sha256 against its manifest.

    LOCATION is s3://bucket/prefix (its latest.json), s3://bucket/prefix/VERSION, the same as a local
    folder, or hf://org/name.
    A mismatch is refused and DEST is left untouched.
    """
    from orchestrator.publish.pull import pull

    pull(location, dest, endpoint_url=endpoint_url, version=version, echo=click.echo)


def register(group) -> None:
    group.add_command(publish_cmd)
    group.add_command(pull_cmd)
