"""Retraining with a promotion gate, against a real S3 server (moto on loopback, boto3 over HTTP).

The registry and the published versions live in the same bucket prefix (publish.to). Training,
scoring and publishing are injected fakes here: a "challenger" is a run folder whose score.json says
how good it is, publishing copies it under <publish.to>/<version>/. The scheduler test runs the real
`qlora-launch schedule run` daemon and the real `qlora-launch retrain` in subprocesses.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # `tests.helpers.s3_server` under plain `pytest` too

from orchestrator.cli import cli  # noqa: E402
from orchestrator.core.config_load import load_config  # noqa: E402
from orchestrator.core.errors import UserError  # noqa: E402
from orchestrator.core.s3_uri import join  # noqa: E402
from orchestrator.retrain.cluster_job import submit_retrain  # noqa: E402
from orchestrator.retrain.data_fingerprint import fingerprint_data  # noqa: E402
from orchestrator.retrain.gate import retrain  # noqa: E402
from orchestrator.retrain.ledger import Ledger  # noqa: E402
from orchestrator.retrain.parts import Published, TrainResult  # noqa: E402
from orchestrator.retrain.registry import Registry  # noqa: E402
from orchestrator.retrain.schedule import list_schedules  # noqa: E402
from orchestrator.retrain.schedule_paths import store_path  # noqa: E402
from orchestrator.storage.kv import open_storage  # noqa: E402
from tests.helpers.s3_server import s3_bucket, s3_server  # noqa: E402,F401

pytestmark = pytest.mark.integration
NAME = "summarizer"


class World:
    """A config on disk, its data, the S3 bucket, and fake train/score/publish parts that count calls."""

    def __init__(self, tmp: Path, bucket, **retrain_cfg: Any):
        self.tmp, self.endpoint = tmp, bucket.endpoint
        self.prefix = f"s3://{bucket.name}/models/{NAME}"
        self.train = tmp / "train.jsonl"
        self.write_data(["a cat sat", "a dog ran"])
        (tmp / "test.jsonl").write_text('{"input": "held out", "output": "out"}\n')
        self.config = tmp / "summarize.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "model": {"name_or_path": "t5-small"},
                    "data": {"train": "train.jsonl", "test": "test.jsonl"},
                    "training": {"learning_rate": 2e-4},
                    "search": {
                        "metric": "eval_loss",
                        "space": {"training.learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-3}},
                    },
                    "output": {"dir": str(tmp / "runs")},
                    "publish": {"to": self.prefix, "endpoint_url": self.endpoint},
                    "retrain": {"name": NAME, "min_improvement": 0.05, **retrain_cfg},
                }
            )
        )
        self.next_loss = 1.0
        self.merge_ok = True
        self.trained: List[Optional[Dict[str, Any]]] = []
        self.published: List[str] = []
        self.scored: List[str] = []

    def cfg(self):
        return load_config(self.config)

    def write_data(self, lines: List[str]) -> None:
        self.train.write_text("".join(json.dumps({"input": t, "output": t.split()[0]}) + "\n" for t in lines))

    @property
    def registry(self) -> Registry:
        return Registry.open(self.prefix, self.endpoint)

    # -- the injected parts ----------------------------------------------------------------------
    def trainer(self, cfg, params):
        self.trained.append(params)
        run_dir = Path(cfg.output.dir) / cfg.experiment
        run_dir.mkdir(parents=True)
        (run_dir / "score.json").write_text(json.dumps({"eval_loss": self.next_loss}))
        hp = params if params is not None else {"training.learning_rate": 3e-4}  # a search picks its own
        return TrainResult(str(run_dir), hparams=hp, merge_ok=self.merge_ok, merge_detail="max diff 1e-6")

    def evaluator(self, model, cfg, data):
        assert data == str(self.tmp / "test.jsonl")  # both models on the same held-out set
        self.scored.append(model)
        if model.startswith("s3://"):
            return open_storage(model, self.endpoint).read_json("score.json")
        return json.loads((Path(model) / "score.json").read_text())

    def publisher(self, run_dir, cfg):
        version = f"v{len(self.published) + 1}"
        loc = join(cfg.publish.to, version)
        st = open_storage(loc, cfg.publish.endpoint_url)
        st.write_bytes("adapter/adapter_model.safetensors", b"weights of " + version.encode())
        st.write_bytes("score.json", (Path(run_dir) / "score.json").read_bytes())
        open_storage(cfg.publish.to, cfg.publish.endpoint_url).write_json("latest.json", {"version": version})
        self.published.append(version)
        return Published(version, loc)

    def retrain(self, **kw):
        return retrain(
            self.cfg(),
            trainer=self.trainer,
            evaluator=self.evaluator,
            publisher=self.publisher,
            echo=lambda s: None,
            **kw,
        )


@pytest.fixture
def world(tmp_path, s3_bucket):
    return World(tmp_path, s3_bucket)


def cli_run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def champion_bytes(w: World) -> bytes:
    return open_storage(w.prefix, w.endpoint).read_bytes(f"{NAME}/champion.json")


# ---- the gate ------------------------------------------------------------------------------------


def test_first_run_promotes_and_unchanged_data_is_skipped(world):
    out = world.retrain()
    assert out.decision == "promoted" and "no champion yet" in out.reason
    champ = world.registry.get_champion(NAME)
    assert champ["version"] == "v1" and champ["location"] == f"{world.prefix}/v1" and champ["score"] == 1.0
    keys = open_storage(world.prefix, world.endpoint).list("")
    assert f"{NAME}/champion.json" in keys and "v1/adapter/adapter_model.safetensors" in keys
    assert world.trained == [{"training.learning_rate": 2e-4}]  # reuse with no champion: the config's values

    before = champion_bytes(world)
    again = world.retrain()
    assert again.decision == "skipped" and "no new data" in again.reason
    assert world.published == ["v1"] and len(world.trained) == 1  # nothing trained, nothing published
    assert champion_bytes(world) == before
    assert len(world.registry.history(NAME)) == 1

    r = cli_run("retrain", str(world.config), "--dry-run")
    assert r.exit_code == 0 and "champion: v1" in r.output and "would stop: no new data" in r.output
    r = cli_run("retrain", str(world.config), "--dry-run", "--force")
    assert "would train one trial with {'training.learning_rate': 0.0002}" in r.output
    assert "Dry run: nothing trained" in r.output and len(world.registry.history(NAME)) == 1

    # the real CLI, with its real (heavy) parts, stops at the fingerprint: exit 0, nothing else happens
    r = cli_run("retrain", str(world.config))
    assert r.exit_code == 0 and "no new data" in r.output
    assert champion_bytes(world) == before


def test_worse_challenger_is_not_promoted(world):
    world.retrain()
    before = champion_bytes(world)

    world.write_data(["a cat sat", "a dog ran", "new data arrived"])
    world.next_loss = 1.3  # worse (eval_loss: lower is better)
    out = world.retrain()
    assert out.decision == "kept" and "not better enough" in out.reason
    assert out.challenger_score == 1.3 and out.champion_score == 1.0
    assert world.published == ["v1"] and champion_bytes(world) == before
    # reuse: the challenger trained with the champion's hyperparameters
    assert world.trained[-1] == world.registry.get_champion(NAME)["hparams"]

    world.write_data(["a cat sat", "a dog ran", "new data arrived", "and more"])
    world.next_loss = 0.97  # better, but by 0.03 < min_improvement 0.05
    out = world.retrain()
    assert out.decision == "kept" and ">= 0.05 (absolute)" in out.reason
    assert champion_bytes(world) == before
    rec = world.registry.history(NAME)[-1]
    assert rec["decision"] == "kept" and rec["challenger"]["score"] == 0.97 and rec["champion"]["score"] == 1.0


def test_better_challenger_is_promoted_history_shows_both_and_rollback_works(world):
    world.retrain()
    world.write_data(["fresh", "data", "arrived"])
    world.next_loss = 0.8
    out = world.retrain()
    assert out.decision == "promoted" and out.champion["version"] == "v2"
    assert world.scored[-1] == f"{world.prefix}/v1"  # the champion was re-scored, not trusted from the pointer
    champ = world.registry.get_champion(NAME)
    assert champ["version"] == "v2" and champ["score"] == 0.8 and champ["location"] == f"{world.prefix}/v2"

    hist = world.registry.history(NAME)
    assert [(r["decision"], r["version"]) for r in hist] == [("promoted", "v1"), ("promoted", "v2")]
    for rec in hist:  # everything recorded
        for key in ("time", "data_fingerprint", "config_hash", "reason", "job_id", "metric", "challenger"):
            assert rec.get(key), key
        assert rec["challenger"]["run_dir"] and rec["challenger"]["score"] is not None
    assert hist[1]["champion"] == {"version": "v1", "location": f"{world.prefix}/v1", "score": 1.0}
    assert hist[0]["data_fingerprint"] != hist[1]["data_fingerprint"]

    reg = ["--registry", world.prefix, "--endpoint-url", world.endpoint]
    r = cli_run("history", NAME, *reg)
    assert r.exit_code == 0
    rows = [ln for ln in r.output.splitlines()[1:] if ln.strip()]
    assert len(rows) == 2 and all("promoted" in ln for ln in rows) and "v1" in rows[0] and "v2" in rows[1]
    r = cli_run("champion", NAME, *reg)
    assert r.exit_code == 0 and "version v2" in r.output

    r = cli_run("rollback", NAME, *reg, "--reason", "complaints")
    assert r.exit_code == 0 and "now version v1 (was v2)" in r.output
    assert world.registry.get_champion(NAME)["version"] == "v1"
    last = world.registry.history(NAME)[-1]
    assert last["kind"] == "rollback" and last["from_version"] == "v2" and last["reason"] == "complaints"
    r = cli_run("history", "--config", str(world.config), "--json")
    assert [json.loads(ln)["decision"] for ln in r.output.splitlines()] == ["promoted", "promoted", "rollback"]
    r = cli_run("rollback", NAME, *reg, "--to", "v2")
    assert r.exit_code == 0 and world.registry.get_champion(NAME)["version"] == "v2"


def test_failed_merge_check_blocks_promotion(world):
    world.retrain()
    world.write_data(["other data"])
    world.next_loss, world.merge_ok = 0.5, False
    out = world.retrain()
    assert out.decision == "kept" and "merge check did not pass" in out.reason
    assert world.published == ["v1"]


def test_retune_runs_a_search_and_force_retrains_unchanged_data(tmp_path, s3_bucket):
    w = World(tmp_path, s3_bucket, strategy="retune", improvement="relative", min_improvement=0.1)
    w.retrain()
    assert w.trained == [None]  # None = a search, as `tune` runs it
    w.next_loss = 0.85  # 15% better than 1.0
    out = w.retrain(force=True)
    assert out.decision == "promoted" and "+15.00%" in out.reason and w.trained == [None, None]
    assert w.registry.history(NAME)[-1]["forced"] is True


def test_a_failed_run_is_recorded_and_does_not_consume_the_data(world):
    world.retrain()
    world.write_data(["new"])

    def broken(cfg, params):
        raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError):
        retrain(world.cfg(), trainer=broken, evaluator=world.evaluator, publisher=world.publisher, echo=lambda s: None)
    assert world.registry.history(NAME)[-1]["decision"] == "failed"
    assert "worker lost" in world.registry.history(NAME)[-1]["reason"]
    world.next_loss = 0.5
    assert world.retrain().decision == "promoted"  # not skipped as "no new data"


def test_evaluation_without_the_metric_is_a_clear_error(world):
    with pytest.raises(UserError, match="has no numeric 'eval_loss' \\(it returned eval_rouge1\\)"):
        retrain(
            world.cfg(),
            trainer=world.trainer,
            evaluator=lambda m, c, d: {"eval_rouge1": 0.3},
            publisher=world.publisher,
            echo=lambda s: None,
        )


# ---- bad input through the CLI: exit 2, a clear message, no traceback -------------------------------


def test_retrain_config_without_eval_set_or_retrain_section_exits_2(world):
    data = yaml.safe_load(world.config.read_text())
    data["data"].pop("test")
    world.config.write_text(yaml.safe_dump(data))
    r = cli_run("retrain", str(world.config))
    assert r.exit_code == 2 and "`retrain.eval_data`: no held-out set" in r.output and "Traceback" not in r.output
    data.pop("retrain")
    world.config.write_text(yaml.safe_dump(data))
    r = cli_run("retrain", str(world.config))
    assert r.exit_code == 2 and "no retrain: section" in r.output


def test_champion_pointer_at_a_missing_version_exits_2(world):
    world.registry.set_champion(NAME, version="v9", location=f"{world.prefix}/v9", metric="eval_loss", score=1.0)
    for args in (
        ["retrain", str(world.config)],
        ["champion", NAME, "--registry", world.prefix, "--endpoint-url", world.endpoint],
    ):
        r = cli_run(*args)
        assert r.exit_code == 2, r.output
        assert "points at version 'v9'" in r.output and "does not exist" in r.output and "Traceback" not in r.output


def test_unknown_model_and_unreachable_registry_exit_2(world, tmp_path):
    world.retrain()
    r = cli_run("history", "sumarizer", "--registry", world.prefix, "--endpoint-url", world.endpoint)
    assert r.exit_code == 2 and "Did you mean 'summarizer'?" in r.output
    r = cli_run("champion", NAME, "--registry", "s3://no-such-bucket/x", "--endpoint-url", world.endpoint)
    assert r.exit_code == 2 and "bucket 'no-such-bucket' does not exist" in r.output


# ---- on a cluster: the same flow as a Ray Job --------------------------------------------------------


def test_address_submits_the_retrain_as_a_ray_job(world):
    seen = {}

    def fake_submit(address, entrypoint, *, runtime_env, metadata, submission_id, wait, echo):
        # what the cluster would run: python -m orchestrator.launch.entry retrain --config-b64 ... --job-id ID
        argv = shlex.split(entrypoint)
        assert (
            argv[:4] == ["python", "-m", "orchestrator.launch.entry", "retrain"]
            and argv[argv.index("--job-id") + 1] == submission_id
        )
        seen.update(address=address, metadata=metadata, runtime_env=runtime_env)
        from orchestrator.core.config import RunConfig

        cfg = RunConfig.model_validate(json.loads(base64.b64decode(argv[argv.index("--config-b64") + 1])))
        retrain(
            cfg,
            job_id=submission_id,
            trainer=world.trainer,
            evaluator=world.evaluator,
            publisher=world.publisher,
            echo=lambda s: None,
        )
        return 0

    out = submit_retrain(world.cfg(), "http://head:8265", submit=fake_submit, echo=lambda s: None)
    assert out.decision == "promoted" and out.record["job_id"].startswith("qlora-retrain-summarizer-")
    assert seen["address"] == "http://head:8265" and seen["metadata"]["retrain_name"] == NAME
    assert "working_dir" in seen["runtime_env"]


# ---- the scheduler: killed and restarted -------------------------------------------------------------


def _ledger_rows(store: Path) -> List[Dict[str, Any]]:
    try:
        return Ledger(store).runs("tick")
    except Exception:  # the daemon may be creating tables right now
        return []


def _wait_for(cond, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_scheduler_killed_and_restarted_keeps_schedules_and_runs_no_slot_twice(tmp_path):
    # A config whose retrain finishes fast and for real: its data was already consumed, so the
    # real `qlora-launch retrain` stops at "no new data".
    (tmp_path / "train.jsonl").write_text('{"input": "a b", "output": "a"}\n')
    (tmp_path / "test.jsonl").write_text('{"input": "c d", "output": "c"}\n')
    cfg_path = tmp_path / "tick.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": "t5-small"},
                "data": {"train": "train.jsonl", "test": "test.jsonl"},
                "publish": {"to": "s3://not-contacted/x"},
                "retrain": {"name": NAME, "registry": str(tmp_path / "registry")},
            }
        )
    )
    reg = Registry.open(str(tmp_path / "registry"))
    reg.record_run(
        NAME,
        {
            "kind": "retrain",
            "decision": "kept",
            "data_fingerprint": fingerprint_data(load_config(cfg_path))["combined"],
        },
    )
    store = store_path(str(tmp_path / "home" / "schedules.sqlite"))
    r = cli_run("schedule", "add", "tick", "--every", "2", str(cfg_path), "--store", str(store))
    assert r.exit_code == 0, r.output

    exe = str(Path(sys.executable).parent / "qlora-launch")
    daemon_log = open(tmp_path / "daemon.log", "ab")

    def start():
        return subprocess.Popen(
            [exe, "schedule", "run", "--store", str(store), "--poll", "0.3"],
            stdout=daemon_log,
            stderr=subprocess.STDOUT,
        )

    def done():
        return [x for x in _ledger_rows(store) if x["status"] in ("ok", "failed")]

    daemon = start()
    try:
        _wait_for(lambda: len(done()) >= 2, 40, "two runs before the kill")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        before = _ledger_rows(store)
        assert [s["name"] for s in list_schedules(str(store))] == ["tick"]  # the store kept it
        time.sleep(3)  # down across at least one scheduled time
        daemon = start()
        _wait_for(lambda: len(done()) >= len([x for x in before if x["status"] == "ok"]) + 2, 40, "runs after restart")
        daemon.send_signal(signal.SIGTERM)  # graceful: waits for the running retrain
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        daemon_log.close()

    rows = _ledger_rows(store)
    slots = [x["slot"] for x in rows]
    assert len(slots) == len(set(slots))
    assert min(x["slot"] for x in rows if x not in before) > max(x["slot"] for x in before)
    # every run that finished ran exactly once: its log holds one retrain, which found no new data
    for x in rows:
        if x["status"] == "ok":
            text = Path(x["log"]).read_text()
            assert text.count("no new data") == 1, text
            assert x["rc"] == 0
    assert {x["status"] for x in rows} <= {"ok", "skipped-busy", "interrupted", "running"}
    assert "failed" not in {x["status"] for x in rows}
    assert len(reg.history(NAME)) == 1  # skips record nothing; nothing was retrained


# ---- end to end: real QLoRA training and scoring, champion fetched from S3 ---------------------------

SEED = Path(__file__).resolve().parents[3] / "examples" / "data" / "seed"


def _s3_publisher(run_dir: str, cfg) -> Published:
    """Stands in for orchestrator.publish.push: best/adapter and best/merged under <publish.to>/<version>/."""
    version = f"v-{Path(run_dir).name}"
    dst = open_storage(join(cfg.publish.to, version), cfg.publish.endpoint_url)
    for sub in ("adapter", "merged"):
        root = Path(run_dir) / "best" / sub
        for f in sorted(root.rglob("*")):
            if f.is_file():
                dst.write_bytes(f"{sub}/{f.relative_to(root).as_posix()}", f.read_bytes())
    return Published(version, dst.uri)


def test_real_training_beats_the_published_champion_and_is_promoted(tmp_path, s3_bucket, monkeypatch, ray_local_2cpu):
    """One real retrain: a 4-bit QLoRA trial on a tiny T5 (Ray in-process), merged and checked,
    scored with the real evaluator against the champion fetched from S3 (the untrained base, published
    as v0), promoted, pointer moved. Then the real CLI skips the unchanged data."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    model = tmp_path / "tiny-t5"
    subprocess.run(
        [sys.executable, "-m", "jobs.tiny_models", "t5", "--data", str(SEED / "train.jsonl"), "--out", str(model)],
        check=True,
        capture_output=True,
    )
    prefix = f"s3://{s3_bucket.name}/models/{NAME}"
    v0 = open_storage(f"{prefix}/v0", s3_bucket.endpoint)
    from orchestrator.publish.manifest import FORMAT, FileEntry, manifest_bytes

    entries = []
    for f in model.iterdir():
        v0.write_bytes(f"merged/{f.name}", f.read_bytes())
        entries.append(FileEntry.from_bytes(f"merged/{f.name}", f.read_bytes()).describe())
    v0.write_bytes("manifest.json", manifest_bytes({"format": FORMAT, "version": "v0", "files": entries}))
    reg = Registry.open(prefix, s3_bucket.endpoint)
    champion_hparams = {"training.learning_rate": 1e-2, "lora.r": 4}
    reg.set_champion(
        NAME, version="v0", location=f"{prefix}/v0", metric="eval_loss", score=None, hparams=champion_hparams
    )
    reg.record_run(
        NAME,
        {
            "kind": "retrain",
            "decision": "promoted",
            "version": "v0",
            "location": f"{prefix}/v0",
            "data_fingerprint": "older data",
            "challenger": {"hparams": champion_hparams},
        },
    )
    cfg_path = tmp_path / "t5_tiny_retrain.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": str(model), "task": "seq2seq"},
                "quantization": {"mode": "4bit", "compute_dtype": "float32"},
                "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q", "k", "v"]},
                "data": {
                    "train": str(SEED / "train.jsonl"),
                    "eval": str(SEED / "eval.jsonl"),
                    "test": str(SEED / "test.jsonl"),
                    "input_column": "article",
                    "target_column": "summary",
                    "max_input_length": 64,
                    "max_target_length": 16,
                },
                "training": {"max_steps": 10, "batch_size": 2, "eval_steps": 5, "generation_max_length": 8},
                "search": {
                    "metric": "eval_loss",
                    "space": {
                        "training.learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
                        "lora.r": {"type": "choice", "values": [4, 8]},
                    },
                },
                "tracking": {"wandb": False},
                "output": {"dir": str(tmp_path / "runs")},
                "publish": {"to": prefix, "endpoint_url": s3_bucket.endpoint},
                "retrain": {"name": NAME, "strategy": "reuse"},
            }
        )
    )

    out = retrain(load_config(cfg_path), publisher=_s3_publisher)  # real trainer and evaluator

    rec = out.record
    assert out.decision == "promoted", out.reason
    assert rec["challenger"]["hparams"] == champion_hparams  # reuse: trained with the champion's values
    assert rec["challenger"]["merge_ok"] is True
    assert out.challenger_score < out.champion_score  # both really scored on the same test set
    for who in ("challenger", "champion"):  # by a Ray task in a worker process, not by this driver
        assert rec[who]["scored_on"]["node_id"] and rec[who]["scored_on"]["pid"] != os.getpid()
    champ = reg.get_champion(NAME)
    assert champ["version"] == rec["version"] != "v0" and champ["score"] == out.challenger_score
    keys = open_storage(champ["location"], s3_bucket.endpoint).list("")
    assert "merged/model.safetensors" in keys and "adapter/adapter_config.json" in keys
    assert [r["version"] for r in reg.history(NAME)] == ["v0", rec["version"]]

    r = cli_run("retrain", str(cfg_path))
    assert r.exit_code == 0 and "no new data" in r.output
    assert reg.get_champion(NAME)["version"] == rec["version"]
