"""The pure parts of cluster submission: entrypoint, runtime_env, metadata, token lookup, paths, errors.

No Ray cluster here: a fake JobSubmissionClient stands in where a call would reach one.
"""

from __future__ import annotations

import base64
import json
import logging
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.core.config import RunConfig
from orchestrator.core.errors import UserError
from orchestrator.launch import cluster as submit
from orchestrator.launch import ray_jobs

SECRETS = {
    "WANDB_API_KEY": "wandb-secret-value-123",
    "HF_TOKEN": "hf_secret_value_456",
    "AWS_ACCESS_KEY_ID": "AKIASECRETVALUE789",
    "AWS_SECRET_ACCESS_KEY": "aws/secret+value/000",
    "AWS_SESSION_TOKEN": "session-secret-value-111",
    "AWS_DEFAULT_REGION": "eu-west-1",
}


def make_cfg(**sections) -> RunConfig:
    data = {
        "model": {"name_or_path": "t5-small"},
        "data": {"train": "examples/data/seed/train.jsonl"},
        "output": {"experiment": "exp1"},
    }
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v}
    return RunConfig.model_validate(data)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No secrets, no Ray token, no AWS config from the machine running the tests."""
    for name in (
        *submit.SECRET_ENV_VARS,
        "RAY_AUTH_TOKEN",
        "RAY_AUTH_TOKEN_PATH",
        "RAY_ADDRESS",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


# ---- entrypoint ----------------------------------------------------------------------------------


def test_entrypoint_carries_the_config_as_base64_json():
    cfg = make_cfg()
    argv = shlex.split(submit.build_entrypoint(cfg, "tune"))
    assert argv[:4] == ["python", "-m", "orchestrator.launch.entry", "tune"]
    assert argv[4] == "--config-b64" and "--resume" not in argv
    assert json.loads(base64.b64decode(argv[5])) == cfg.to_json()
    assert RunConfig.model_validate(json.loads(base64.b64decode(argv[5]))) == cfg


def test_entrypoint_resume_and_train():
    argv = shlex.split(submit.build_entrypoint(make_cfg(), "train", resume=True))
    assert argv[3] == "train" and argv[-1] == "--resume"


def test_entrypoint_is_accepted_by_the_job_side(monkeypatch):
    """orchestrator.launch.entry parses the argv and validates the config; we stop it where it would start Ray."""
    entry = pytest.importorskip("orchestrator.launch.entry")
    import ray

    class Reached(Exception):
        pass

    def fake_init(*a, **kw):
        raise Reached

    monkeypatch.setattr(ray, "init", fake_init)
    argv = shlex.split(submit.build_entrypoint(make_cfg(), "tune", resume=True))[3:]
    with pytest.raises(Reached):
        entry.main(argv)


def test_entrypoint_rejects_unknown_verb():
    with pytest.raises(ValueError):
        submit.build_entrypoint(make_cfg(), "retrain")


# ---- runtime_env and secrets -----------------------------------------------------------------------


def test_runtime_env_forwards_only_set_secrets_by_name():
    env = {"WANDB_API_KEY": "w", "HF_TOKEN": "", "RAY_AUTH_TOKEN": "ray-tok", "OTHER": "x"}
    rt = submit.build_runtime_env(env)
    assert rt["env_vars"] == {"WANDB_API_KEY": "w", "PYTHONUNBUFFERED": "1"}
    assert rt["working_dir"] == str(submit.PROJECT_ROOT)
    assert (Path(rt["working_dir"]) / "orchestrator").is_dir() and (Path(rt["working_dir"]) / "jobs").is_dir()
    for name in ("/.venv", "/runs", "/models", "/wandb", "/mlruns", "/.git", "/bench/out"):
        assert name in rt["excludes"]


def test_working_dir_excludes_match_with_rays_own_matcher():
    from ray._private.runtime_env.packaging import _get_excludes

    root = submit.PROJECT_ROOT
    match = _get_excludes(root, submit.WORKING_DIR_EXCLUDES)
    for rel in (
        ".venv",
        ".venv/lib/x.py",
        "runs/exp/results.json",
        "models/tiny-t5",
        "wandb/run-1",
        "mlruns/0",
        ".git/HEAD",
        "bench/out/a.json",
        "jobs/__pycache__/x.pyc",
    ):
        assert match(root / rel), rel
    for rel in (
        "jobs/entry.py",
        "orchestrator/submit.py",
        "examples/data/seed/train.jsonl",
        "examples/models/readme.txt",
        "requirements.lock",
    ):
        assert not match(root / rel), rel


def test_describe_runtime_env_hides_every_value():
    rt = submit.build_runtime_env(SECRETS)
    assert rt["env_vars"]["HF_TOKEN"] == SECRETS["HF_TOKEN"]  # Ray needs the values...
    shown = json.dumps(submit.describe_runtime_env(rt))
    for value in SECRETS.values():
        assert value not in shown  # ...nobody reading the output sees them
    assert "HF_TOKEN" in shown


class FakeClient:
    """Records what would be sent to the cluster."""

    def __init__(self, final_status="SUCCEEDED", logs=("line 1\nline", " 2\n", "done\n")):
        self.submitted = {}
        self.final_status = final_status
        self.logs = logs

    def submit_job(self, **kw):
        self.submitted = kw
        return kw.get("submission_id") or "raysubmit_x"

    def get_job_info(self, job_id):
        return SimpleNamespace(
            status=self.final_status,
            message="boom\nmore" if self.final_status != "SUCCEEDED" else "",
            submission_id=job_id,
            job_id=None,
            metadata={},
            start_time=1,
            end_time=2,
        )

    async def tail_job_logs(self, job_id):
        for chunk in self.logs:
            yield chunk


@pytest.fixture
def fake_cluster(monkeypatch):
    client = FakeClient()
    monkeypatch.setattr(submit, "connect", lambda address: ray_jobs.Cluster(client, "http://head:8265", None))
    return client


def test_submit_run_sends_secrets_only_inside_runtime_env(clean_env, monkeypatch, fake_cluster, caplog):
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    lines = []
    with caplog.at_level(logging.DEBUG):
        rc = submit.submit_run(make_cfg(), "tune", "http://head:8265", echo=lines.append)
    assert rc == 0
    sent = fake_cluster.submitted
    assert {k: sent["runtime_env"]["env_vars"][k] for k in SECRETS} == SECRETS
    printed = "\n".join(lines) + caplog.text
    visible = printed + sent["entrypoint"] + json.dumps(sent["metadata"]) + sent["submission_id"]
    for value in SECRETS.values():
        assert value not in visible
    assert "WANDB_API_KEY" in printed  # the names are shown, so the user knows what travelled
    assert "line 1" in lines and "line 2" in lines and "done" in lines  # chunks re-joined into lines
    assert lines[-1].endswith("SUCCEEDED.")


def test_submit_run_metadata_and_id(clean_env, fake_cluster, monkeypatch):
    monkeypatch.setattr(submit.getpass, "getuser", lambda: "alice")
    cfg = make_cfg()
    submit.submit_run(cfg, "train", "http://head:8265", wait=False, echo=lambda s: None)
    md = fake_cluster.submitted["metadata"]
    assert md["experiment"] == "exp1" and md["config_hash"] == cfg.config_hash()
    assert md["user"] == "alice" and md["verb"] == "train"
    assert all(isinstance(v, str) for v in md.values())
    assert fake_cluster.submitted["submission_id"].startswith("qlora-train-exp1-")


def test_submit_run_returns_1_when_job_fails(clean_env, monkeypatch):
    client = FakeClient(final_status="FAILED")
    monkeypatch.setattr(submit, "connect", lambda address: ray_jobs.Cluster(client, "http://head:8265", None))
    lines = []
    assert submit.submit_run(make_cfg(), "tune", "http://head:8265", echo=lines.append) == 1
    assert any("FAILED: boom" in line for line in lines)


def test_no_wait_returns_after_submission(clean_env, fake_cluster):
    lines = []
    assert submit.submit_run(make_cfg(), "tune", "http://head:8265", wait=False, echo=lines.append) == 0
    assert not any("line 1" in line for line in lines)
    assert any("qlora-launch logs" in line for line in lines)


# ---- token lookup ----------------------------------------------------------------------------------


def test_token_from_env_first(tmp_path):
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-file")
    tok = ray_jobs.find_auth_token({"RAY_AUTH_TOKEN": " from-env \n"}, home=tmp_path)
    assert tok.value == "from-env" and tok.source == "RAY_AUTH_TOKEN"
    assert "from-env" not in repr(tok)


def test_token_from_path_var_then_default_file(tmp_path):
    f = tmp_path / "tok"
    f.write_text("path-token\n")
    tok = ray_jobs.find_auth_token({"RAY_AUTH_TOKEN_PATH": str(f)}, home=tmp_path)
    assert tok.value == "path-token" and str(f) in tok.source
    assert ray_jobs.find_auth_token({}, home=tmp_path) is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("default-token")
    assert ray_jobs.find_auth_token({}, home=tmp_path).value == "default-token"


def test_token_path_var_pointing_nowhere_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="RAY_AUTH_TOKEN_PATH"):
        ray_jobs.find_auth_token({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")}, home=tmp_path)


def test_auth_errors_become_user_errors():
    from ray.exceptions import AuthenticationError

    tok = ray_jobs.AuthToken("secret-tok", "RAY_AUTH_TOKEN")
    with pytest.raises(UserError, match="rejected the auth token from RAY_AUTH_TOKEN") as e:
        with ray_jobs._ray_errors("http://h:8265", tok):
            raise AuthenticationError("Authentication failed: Forbidden")
    assert "secret-tok" not in str(e.value)
    with pytest.raises(UserError, match="requires an auth token and none was found"):
        with ray_jobs._ray_errors("http://h:8265", None):
            raise AuthenticationError("Authentication required: Unauthorized")


def test_unknown_job_is_a_user_error():
    with pytest.raises(UserError, match="no job 'nope'"):
        with ray_jobs._ray_errors("http://h:8265", None, job_id="nope"):
            raise RuntimeError("Request failed with status code 404: Job nope does not exist.")


# ---- addresses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given,expected",
    [
        ("http://head:8265", "http://head:8265"),
        ("head:8265", "http://head:8265"),
        ("https://ray.example.com/", "https://ray.example.com"),
    ],
)
def test_normalize_address(given, expected):
    assert ray_jobs.normalize_address(given) == expected


@pytest.mark.parametrize("bad", [None, "", "ray://head:10001", "auto"])
def test_bad_addresses(bad):
    with pytest.raises(UserError, match="address"):
        ray_jobs.normalize_address(bad)


def test_unreachable_address_is_exit_2_without_traceback(clean_env):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    r = CliRunner().invoke(cli, ["jobs", "--address", f"http://127.0.0.1:{port}"])
    assert r.exit_code == 2
    assert "cannot reach the Ray dashboard" in r.output and "Traceback" not in r.output


def test_cluster_commands_have_help():
    for name in ("jobs", "status", "logs", "stop"):
        r = CliRunner().invoke(cli, [name, "--help"])
        assert r.exit_code == 0 and "--address" in r.output, name
    assert "--follow" in CliRunner().invoke(cli, ["logs", "--help"]).output


# ---- paths and storage -----------------------------------------------------------------------------


def test_prepare_for_cluster_paths(tmp_path):
    root = submit.PROJECT_ROOT
    cfg = make_cfg(
        data={"train": str(root / "examples/data/seed/train.jsonl"), "eval": "/elsewhere/eval.jsonl"},
        model={"name_or_path": str(root / "models/tiny-t5")},
    )
    out, notes = submit.prepare_for_cluster(cfg, cwd=tmp_path)
    assert out.data.train == "examples/data/seed/train.jsonl"  # travels in the working_dir
    assert out.data.eval == "/elsewhere/eval.jsonl"
    assert out.output.dir == str((tmp_path / "runs").resolve())  # not the job's temporary cwd
    joined = "\n".join(notes)
    assert "data.eval" in joined and "model.name_or_path" in joined and "output.dir" in joined


def test_prepare_for_cluster_keeps_s3_and_hub():
    cfg = make_cfg(data={"train": "hub:cnn_dailymail"}, output={"dir": "s3://bucket/prefix"})
    out, notes = submit.prepare_for_cluster(cfg)
    assert out.output.dir == "s3://bucket/prefix" and out.data.train == "hub:cnn_dailymail"
    assert notes == []


def test_s3_output_without_credentials_is_a_user_error(clean_env):
    cfg = make_cfg(output={"dir": "s3://bucket/prefix"})
    with pytest.raises(UserError, match=r"output.dir \(s3://bucket/prefix\).*no AWS credentials"):
        submit.check_storage_credentials(cfg)


def test_s3_output_with_env_credentials_passes(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret")
    assert submit.check_storage_credentials(make_cfg(output={"dir": "s3://bucket/prefix"})) is None
    assert submit.check_storage_credentials(make_cfg()) is None  # local output needs nothing


def test_s3_credentials_from_a_profile_get_a_note(clean_env, monkeypatch):
    creds = clean_env / "credentials"
    creds.write_text("[default]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = profile-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    note = submit.check_storage_credentials(make_cfg(output={"dir": "s3://bucket/prefix"}))
    assert note and "not forwarded" in note and "profile-secret" not in note


def test_s3_check_runs_before_anything_is_submitted(clean_env, monkeypatch):
    called = []
    monkeypatch.setattr(submit, "connect", lambda address: called.append(address))
    with pytest.raises(UserError):
        submit.submit_run(make_cfg(output={"dir": "s3://bucket/x"}), "tune", "http://head:8265", echo=lambda s: None)
    assert called == []


# ---- output formatting -----------------------------------------------------------------------------


def test_jobs_table_never_shows_runtime_env():
    job = SimpleNamespace(
        submission_id="qlora-tune-exp1-abc",
        job_id="01000000",
        status="RUNNING",
        metadata={"experiment": "exp1", "verb": "tune", "user": "alice"},
        start_time=1_700_000_000_000,
        end_time=None,
        runtime_env={"env_vars": {"HF_TOKEN": SECRETS["HF_TOKEN"]}},
    )
    table = "\n".join(ray_jobs.format_jobs_table([job]))
    assert "qlora-tune-exp1-abc" in table and "RUNNING" in table and "exp1" in table
    assert SECRETS["HF_TOKEN"] not in table
    job.message = "Job is running."
    details = "\n".join(ray_jobs.format_job_details(job))
    assert "RUNNING" in details and SECRETS["HF_TOKEN"] not in details


def test_describe_submission_for_dry_run(clean_env, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRETS["HF_TOKEN"])
    lines = submit.describe_submission(make_cfg(), "tune", "head:8265", resume=True)
    text = "\n".join(lines)
    assert "http://head:8265" in text and "orchestrator.launch.entry tune" in text and "--resume" in text
    assert "HF_TOKEN" in text and SECRETS["HF_TOKEN"] not in text
