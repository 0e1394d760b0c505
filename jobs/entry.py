"""Entry point of a Ray Job on a cluster: `python -m jobs.entry tune|train --config-b64 B64 [--resume]`.

The config travels as base64 JSON on the command line (it holds no secrets) and is validated again
here by the same pydantic model as on the launcher.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys

from pathlib import Path

from orchestrator.config import RunConfig, resolve_paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.entry")
    ap.add_argument("verb", choices=["tune", "train"])
    ap.add_argument("--config-b64", required=True)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    cfg = RunConfig.model_validate(json.loads(base64.b64decode(args.config_b64)))
    # Paths inside the project travel relative to it; Train workers change directory, so anchor them here.
    cfg = resolve_paths(cfg, Path.cwd())

    from orchestrator.errors import UserError
    from orchestrator.run_storage import check_s3_output

    try:  # an s3:// output: the bucket as the cluster sees it, and no earlier run there unless --resume
        check_s3_output(cfg, args.resume)
    except UserError as e:
        print(f"Error: {e}", file=sys.stderr, flush=True)
        return 2

    import ray

    ray.init()  # inside a Ray Job this connects to the job's cluster
    from jobs.api import run_train, run_tune
    from orchestrator.summary import print_summary

    fn = run_tune if args.verb == "tune" else run_train
    run_dir = fn(cfg, resume=args.resume)
    return print_summary(run_dir)


if __name__ == "__main__":
    sys.exit(main())
