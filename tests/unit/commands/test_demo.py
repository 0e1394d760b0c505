"""`make demo` can be run again and again: each run is its own experiment, so the second never meets
the first's run folder ("already holds a run") and nothing is overwritten."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.core.config_load import load_config
from orchestrator.core.errors import UserError
from orchestrator.launch.preflight import check_local_start

REPO = Path(__file__).resolve().parents[3]


def demo_tune_args() -> list:
    """The `qlora-launch tune` command line `make demo` runs (make -n: printed, not run)."""
    out = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if "qlora-launch tune" in ln)
    return shlex.split(line)[2:]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_a_second_demo_is_a_new_experiment_and_starts(tmp_path):
    first = demo_tune_args()
    time.sleep(1.1)  # the name carries the UTC time to the second; a demo takes minutes
    second = demo_tune_args()
    names = [args[args.index("--experiment") + 1] for args in (first, second)]
    assert all(re.fullmatch(r"demo-\d{8}T\d{6}Z", n) for n in names) and names[0] != names[1]
    assert first[0] == second[0] == "examples/t5_tiny_summarize_local.yaml"

    cfgs = [load_config(REPO / first[0], [f"output.dir={tmp_path}", f"output.experiment={n}"]) for n in names]
    done = check_local_start(cfgs[0], resume=False, gpus=0)  # what the first demo leaves behind
    done.mkdir(parents=True)
    (done / "results.json").write_text("{}")
    with pytest.raises(UserError, match="already holds a run"):
        check_local_start(cfgs[0], resume=False, gpus=0)  # the old fixed name: the second demo failed
    second_dir = check_local_start(cfgs[1], resume=False, gpus=0)
    assert second_dir != done and (done / "results.json").exists()
