"""The one entry point of a Ray Job: `python -m orchestrator.launch.entry tune|train|retrain --config-b64 B64`.

`tune` and `train` (with `--resume`) run the pipeline's `execute` on the job's cluster; `retrain` (with
`--job-id`, `--force`) runs the retrain gate there. The config travels as base64 JSON on the command line
(it holds no secrets) and is validated again here by the same pydantic model as on the launcher.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

from orchestrator.core.config import RunConfig
from orchestrator.core.config_load import resolve_paths
from orchestrator.core.errors import UserError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orchestrator.launch.entry")
    ap.add_argument("verb", choices=["tune", "train", "retrain"])
    ap.add_argument("--config-b64", required=True)
    ap.add_argument("--resume", action="store_true", help="tune/train: continue the run in its storage")
    ap.add_argument("--verbose", action="store_true", help="tune/train: stream the workers' output too")
    ap.add_argument("--job-id", default=None, help="retrain: the submission id, recorded in the registry")
    ap.add_argument("--force", action="store_true", help="retrain: train even when the data is unchanged")
    args = ap.parse_args(argv)
    cfg = RunConfig.model_validate(json.loads(base64.b64decode(args.config_b64)))
    if args.verb == "retrain":
        return _retrain(cfg, args.force, args.job_id)
    # Paths inside the project travel relative to it; Train workers change directory, so anchor them here.
    cfg = resolve_paths(cfg, Path.cwd())

    from orchestrator.storage.run_upload import check_s3_output

    try:  # an s3:// output: the bucket as the cluster sees it, and no earlier run there unless --resume
        check_s3_output(cfg, args.resume)
    except UserError as e:
        print(f"Error: {e}", file=sys.stderr, flush=True)
        return 2

    import ray

    # Inside a Ray Job this connects to the job's cluster. Without --verbose the workers' output stays in
    # their trials' log files (copied to the run's storage), not in the job's log.
    ray.init(log_to_driver=args.verbose, logging_level="INFO" if args.verbose else "WARNING")
    from orchestrator.core.rundir import run_dir_for
    from orchestrator.launch.pipeline import execute
    from orchestrator.observe.driver_log import driver_logging
    from orchestrator.observe.summary import print_summary

    with driver_logging(run_dir_for(cfg), args.verbose, cfg=cfg):
        run_dir = execute(cfg, args.verb, resume=args.resume, verbose=args.verbose)
    return print_summary(run_dir)


def _retrain(cfg: RunConfig, force: bool, job_id) -> int:
    import ray

    from orchestrator.retrain.gate import retrain

    ray.init()  # inside a Ray Job this joins the job's cluster; training then runs on it
    try:
        outcome = retrain(cfg, force=force, job_id=job_id)
    except UserError as e:
        print(f"Error: {e}", file=sys.stderr, flush=True)
        return 2
    print(outcome.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
