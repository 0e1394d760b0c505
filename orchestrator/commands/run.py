"""`validate`, `tune`, `train`: check a config, run a search, run one trial."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import click
import yaml

from orchestrator.commands.options import address_option, config_argument, set_option
from orchestrator.config import RunConfig, describe_space, load_config
from orchestrator.errors import UserError


def prepare(config: str, overrides: List[str], experiment: Optional[str] = None,
            check_modules: bool = True) -> RunConfig:
    """Load, override, validate and preflight a config (no side effects). Raises UserError."""
    from orchestrator.preflight import check_run

    sets = list(overrides) + ([f"output.experiment={experiment}"] if experiment else [])
    cfg = load_config(config, sets)
    check_run(cfg, check_modules=check_modules)
    return cfg


def plan_text(cfg: RunConfig, verb: str) -> str:
    """What a run would do: resolved config, search space, resources (for --dry-run and validate)."""
    r = cfg.resources
    trials = 1 if verb == "train" else cfg.search.num_samples
    lines = ["Resolved config:", yaml.safe_dump(cfg.to_json(), sort_keys=False).rstrip(), ""]
    if verb == "tune":
        lines.append(f"Search: {trials} trials, {cfg.search.algorithm} sampling, {cfg.search.scheduler} scheduler, "
                     f"{cfg.search.metric} ({cfg.search.resolved_mode}), at most {cfg.search.max_concurrent_trials} "
                     "at once")
        lines += [f"  {s}" for s in describe_space(cfg)] or ["  (empty space: every trial uses the config's values)"]
    else:
        lines.append(f"One trial with {cfg.fixed_params() or 'the config values'}")
    lines.append(f"Resources per trial: {r.num_workers} Ray Train worker(s) x {r.cpus_per_worker:g} CPU"
                 f" + {r.gpus_per_worker:g} GPU; up to {min(trials, cfg.search.max_concurrent_trials)} trials at once")
    return "\n".join(lines)


def run(config: str, verb: str, overrides: List[str], *, dry_run: bool = False, address: Optional[str] = None,
        wait: bool = True, resume: bool = False, cpus: Optional[int] = None, gpus: Optional[float] = None,
        experiment: Optional[str] = None, params: Optional[Dict[str, Any]] = None, echo=click.echo) -> int:
    """`tune`/`train`: validate everything, then run locally or submit to a cluster. Returns the exit code."""
    cfg = prepare(config, overrides, experiment, check_modules=address is None)
    if dry_run:
        echo(plan_text(cfg, verb))
        if address:
            from orchestrator.submit import describe_submission

            echo("\n".join(describe_submission(cfg, verb, address, resume=resume)))
        echo(f"Results would go to {output_location(cfg)}. Dry run: nothing started.")
        return 0
    if address:
        from orchestrator.submit import submit_run

        return submit_run(cfg, verb, address, wait=wait, resume=resume, echo=echo)
    from orchestrator.preflight import check_local_gpus

    check_local_gpus(cfg, gpus)
    from jobs.api import run_dir_for
    from orchestrator.run_storage import check_s3_output

    check_s3_output(cfg, resume)  # credentials, bucket, no earlier run there: before anything starts
    run_dir = run_dir_for(cfg)  # the run folder, or its local staging copy for an s3:// output.dir
    if run_dir.exists() and not resume and any(run_dir.iterdir()):
        raise UserError(
            f"`output.experiment`: '{run_dir}' already holds a run. Pass --resume to continue it, "
            f"--experiment NAME (or --set output.experiment=NAME) for a new one, or delete the folder."
        )
    from orchestrator.local import run_local
    from orchestrator.summary import print_summary

    try:
        run_dir = run_local(cfg, verb, cpus=cpus, gpus=gpus, resume=resume, params=params, echo=echo)
    except BaseException:
        _clean_failed(run_dir, resume)
        raise
    return print_summary(run_dir)


def _clean_failed(run_dir: Path, resume: bool) -> None:
    """A run that failed before it reported anything leaves no half-written folder behind."""
    if resume or not run_dir.exists():
        return
    if not (run_dir / "ray" / "tune").exists():
        shutil.rmtree(run_dir, ignore_errors=True)


def output_location(cfg: RunConfig) -> str:
    if "://" in cfg.output.dir:
        return f"{cfg.output.dir.rstrip('/')}/{cfg.experiment}"
    return str((Path(cfg.output.dir) / cfg.experiment).resolve())


def run_options(f):
    """Options shared by `tune` and `train`."""
    for opt in reversed([
        set_option,
        click.option("--dry-run", is_flag=True, help="Print the resolved config, search space and resources; "
                                                     "start nothing."),
        address_option,
        click.option("--no-wait", is_flag=True, help="With --address: print the job id and return at once."),
        click.option("--resume", is_flag=True, help="Continue an interrupted run in the same output folder "
                                                    "(finished trials are not run again)."),
        click.option("--cpus", type=int, default=None, help="Local mode: CPUs Ray may use (default: all)."),
        click.option("--gpus", type=float, default=None, help="Local mode: GPUs Ray may use (default: all)."),
        click.option("--experiment", default=None, help="Run name; overrides output.experiment "
                                                        "(default: the config file's stem)."),
    ]):
        f = opt(f)
    return f


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
        click.secho("Config is well-formed!", fg="green")

    @group.command()
    @config_argument
    @run_options
    def tune(config, overrides, dry_run, address, no_wait, resume, cpus, gpus, experiment):
        """Run a Ray Tune search of QLoRA trials, then merge, verify and record the best.

        Without --address Ray starts in-process (local mode) and results land in output.dir/EXPERIMENT.
        """
        raise SystemExit(run(config, "tune", overrides, dry_run=dry_run, address=address, wait=not no_wait,
                             resume=resume, cpus=cpus, gpus=gpus, experiment=experiment))

    @group.command()
    @config_argument
    @run_options
    def train(config, overrides, dry_run, address, no_wait, resume, cpus, gpus, experiment):
        """Run one QLoRA trial with the config's hyperparameters (same code path as a tune trial)."""
        raise SystemExit(run(config, "train", overrides, dry_run=dry_run, address=address, wait=not no_wait,
                             resume=resume, cpus=cpus, gpus=gpus, experiment=experiment))
