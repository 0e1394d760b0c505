"""What a publication carries: the files of a finished run and `manifest.json` (the card: card.py).

`RunRecord.load` reads and checks the run folder (through orchestrator.core.rundir.RunDir). The
manifest makes a published model traceable (base model, config, best trial, data fingerprints,
library versions, git commit, times) and checkable (sha256 and size of every other file published).
Nothing secret goes in: the config holds no credentials, and `scrub` removes any value that looks like
one (secret-named keys, URL user-info, the values of credential environment variables) from the
manifest and the card before they are written.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from orchestrator.core.errors import UserError
from orchestrator.core.fingerprint import sha256_file
from orchestrator.core.rundir import RunDir

FORMAT = "qlora-launch/manifest/1"
MANIFEST = "manifest.json"
CARD = "README.md"
WHAT = ("adapter", "merged", "both")
PARTS = ("adapter", "merged")  # folders of a publication: best/adapter and best/merged of the run folder

SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_TOKEN",
    "WANDB_API_KEY",
    "RAY_AUTH_TOKEN",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
)
_SECRET_KEY = re.compile(
    r"(?i)^(.*[_-])?(token|secret|password|passwd|api[_-]?key|apikey|access[_-]?key(_id)?|secret[_-]?key|"
    r"credentials?|authorization|private[_-]?key)$"
)
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
REDACTED = "<redacted>"


@dataclass(frozen=True)
class FileEntry:
    """One published file: its path in the publication, size, sha256, and where its bytes are."""

    path: str
    size: int
    sha256: str
    source: Optional[Path] = None
    data: Optional[bytes] = None
    transfer_checksum: Optional[str] = None  # what the store will report (S3: ChecksumSHA256), if computed

    @classmethod
    def from_bytes(cls, path: str, data: bytes) -> "FileEntry":
        return cls(path, len(data), hashlib.sha256(data).hexdigest(), data=data)

    def describe(self) -> Dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass
class RunRecord:
    """A finished `tune` run folder, read and checked (docs/run_layout.md): `RunRecord.load(run_dir, what)`."""

    run_dir: Path
    cfg: Any  # RunConfig
    results: Dict[str, Any]

    @property
    def dir(self) -> RunDir:
        return RunDir(self.run_dir)

    @property
    def best(self) -> Dict[str, Any]:
        return self.results.get("best") or {}

    @property
    def metric(self) -> str:
        return self.results.get("metric") or self.cfg.search.metric

    @property
    def mode(self) -> str:
        return self.results.get("mode") or self.cfg.search.resolved_mode

    @property
    def score(self) -> Optional[float]:
        return (self.best.get("metrics") or {}).get(self.metric)

    def part_dir(self, part: str) -> Path:
        return {"adapter": self.dir.adapter_dir, "merged": self.dir.merged_dir}[part]

    def has_merged(self) -> bool:
        d = self.part_dir("merged")
        return (d / "config.json").is_file() and any(d.glob("*.safetensors"))

    @classmethod
    def load(cls, run_dir: Path, what: str = "both") -> "RunRecord":
        """Read config.json and results.json and check the folders `what` needs; every problem at once.

        Raises:
            UserError: not a run folder, no best trial, no best adapter, no merged model when asked for.
        """
        from orchestrator.core.config import RunConfig

        run_dir = Path(run_dir)
        rd = RunDir(run_dir)
        if what not in WHAT:
            raise UserError(f"--what '{what}': use one of {', '.join(WHAT)}.")
        if not run_dir.is_dir():
            raise UserError(
                f"{run_dir} is not a folder; pass the run folder that `qlora-launch tune` wrote (runs/<experiment>)."
            )
        problems: List[str] = []
        cfg, results = None, {}
        missing = [p.name for p in (rd.config_path, rd.results_path) if not p.is_file()]
        if missing:
            problems.append(
                f"{run_dir} is not a finished tune run folder ({' and '.join(missing)} missing); pass the "
                "folder `qlora-launch tune` wrote (runs/<experiment>)."
            )
            if len(missing) == 2 and not rd.best_dir.is_dir():
                raise UserError(*problems)
        else:
            try:
                cfg = RunConfig.model_validate(_json_of(rd.config(), rd.config_path))
                results = _json_of(rd.results(), rd.results_path)
            except (ValueError, TypeError) as e:
                problems.append(f"{run_dir}: cannot read config.json/results.json ({str(e).splitlines()[0]}).")
        if cfg is not None and not (results.get("best") or {}).get("trial_id"):
            problems.append(f"{rd.results_path} names no best trial: the search finished without a result.")
        record = cls(run_dir, cfg, results)
        adapter = record.part_dir("adapter")
        if not (adapter / "adapter_config.json").is_file() or not (
            (adapter / "adapter_model.safetensors").is_file() or (adapter / "adapter_model.bin").is_file()
        ):
            problems.append(
                f"{adapter} holds no adapter (adapter_config.json + adapter_model.safetensors): the run has no best "
                "adapter to publish; re-run `qlora-launch tune` (or `--resume`) until it finishes."
            )
        if what in ("merged", "both") and not record.has_merged():
            problems.append(
                f"{record.part_dir('merged')} holds no merged model (config.json + *.safetensors); enable merge: "
                "and re-run, or publish --what adapter."
            )
        if problems:
            raise UserError(*problems)
        return record


def _json_of(content: Any, path: Path) -> Any:
    """What RunDir read from `path`; its tolerant readers give None for a file that is not JSON."""
    if content is None:
        raise ValueError(f"{path.name} is not readable JSON")
    return content


def trained_config(run: RunRecord):
    """The run's config with the best trial's hyperparameters applied (what the published model had)."""
    try:
        return run.cfg.with_params(run.best.get("params") or {})
    except (ValueError, KeyError, TypeError, UserError):
        return run.cfg


def parts_of(what: str) -> List[str]:
    return list(PARTS) if what == "both" else [what]


Hasher = Callable[[Path, int], Tuple[str, Optional[str]]]  # (path, size) -> (sha256 hex, transfer checksum)


def _sha256_only(path: Path, size: int) -> Tuple[str, Optional[str]]:
    return sha256_file(path), None


def collect_files(run: RunRecord, what: str, hasher: Hasher = _sha256_only) -> List[FileEntry]:
    """Every file of the parts `what` names, as `adapter/...` and `merged/...`, sorted, hashed.

    `hasher` may compute the store's own checksum in the same read (orchestrator.storage.checksums.file_checksums).
    """
    out: List[FileEntry] = []
    for part in parts_of(what):
        base = run.part_dir(part)
        for f in sorted(p for p in base.rglob("*") if p.is_file()):
            rel = f.relative_to(base).as_posix()
            if rel.startswith(".") or "/." in rel:
                continue
            size = f.stat().st_size
            digest, transfer = hasher(f, size)
            out.append(FileEntry(f"{part}/{rel}", size, digest, source=f, transfer_checksum=transfer))
    return out


def content_version(run: RunRecord, files: Sequence[FileEntry], what: str) -> str:
    """The default version name: the run's end time and a hash of the published model files.

    The same run published again gets the same version, so a failed publication re-run resumes it.
    """
    h = hashlib.sha256(what.encode())
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"\0{f.path}\0{f.sha256}".encode())
    when = run.results.get("finished_at") or run.results.get("started_at") or ""
    try:
        stamp = datetime.fromisoformat(when).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    except ValueError:
        stamp = "run"
    return f"{stamp}-{h.hexdigest()[:8]}"


VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_version(version: str) -> str:
    if not VERSION_RE.fullmatch(version or "") or version.endswith(".json"):
        raise UserError(f"--version '{version}': use letters, digits, '.', '_' and '-' (at most 128).")
    return version


# ---- secrets --------------------------------------------------------------------------------------


def scrub(obj: Any, secrets: Optional[Sequence[str]] = None) -> Any:
    """A copy of `obj` with anything that looks like a credential removed."""
    if secrets is None:
        secrets = [v for k in SECRET_ENV if len(v := os.environ.get(k, "")) >= 4]
    if isinstance(obj, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_KEY.match(k) and v not in (None, "") else scrub(v, secrets))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [scrub(v, secrets) for v in obj]
    if isinstance(obj, str):
        s = _URL_USERINFO.sub(r"\1", obj)
        for value in secrets:
            s = s.replace(value, REDACTED)
        return s
    return obj


# ---- provenance ---------------------------------------------------------------------------------


def git_commit() -> Dict[str, Any]:
    """The commit of the qlora-launch source tree ($QLORA_LAUNCH_GIT_COMMIT in images without .git)."""
    env = os.environ.get("QLORA_LAUNCH_GIT_COMMIT")
    if env:
        return {"commit": env, "dirty": None}
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        return {"commit": commit or None, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def publish_versions(extra: Sequence[str] = ()) -> Dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("qlora-launch", *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


_KEEP_METRICS = re.compile(r"^(eval_.*|loss|epoch|step|train_loss)$")


def best_metrics(run: RunRecord) -> Dict[str, Any]:
    """The best trial's evaluation metrics (not Ray's bookkeeping: host names, pids, local paths)."""
    m = run.best.get("metrics") or {}
    return {k: v for k, v in sorted(m.items()) if _KEEP_METRICS.match(k) and isinstance(v, (int, float))}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def test_section(results: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The held-out test scores of the merged model and the untuned base, and the lift (None: not scored)."""
    scores = results.get("scores") or {}
    if not scores.get("test"):
        return None
    return {"merged": scores.get("test"), "base": scores.get("base_test"), "lift": scores.get("lift")}


def build_manifest(
    run: RunRecord,
    files: Sequence[FileEntry],
    *,
    version: str,
    what: str,
    location: str,
    merge_check: Optional[Dict[str, Any]],
    libraries: Sequence[str] = (),
    published_at: Optional[str] = None,
) -> Dict[str, Any]:
    """The manifest of one publication (scrubbed). `files` are all the other files published."""
    cfg = run.cfg
    manifest = {
        "format": FORMAT,
        "version": version,
        "location": location,
        "what": what,
        "experiment": run.results.get("experiment") or cfg.experiment,
        "base_model": {"name_or_path": cfg.model.name_or_path, "revision": cfg.model.revision},
        "task": cfg.model.task,
        "quantization": cfg.quantization.mode,
        "config": cfg.to_json(),
        "trained_config": trained_config(run).to_json(),
        "best": {
            "trial_id": run.best.get("trial_id"),
            "params": run.best.get("params") or {},
            "step": run.best.get("step"),
            "metrics": best_metrics(run),
        },
        "metric": {"name": run.metric, "mode": run.mode, "value": run.score},
        "parameters": run.results.get("params") or {},
        "data_fingerprints": run.results.get("data_fingerprints") or {},
        "merge_check": merge_check,
        "test": test_section(run.results),
        "versions": {"tune": run.results.get("versions") or {}, "publish": publish_versions(libraries)},
        "git": git_commit(),
        "tuned": {"started_at": run.results.get("started_at"), "finished_at": run.results.get("finished_at")},
        "published_at": published_at or utc_now(),
        "files": [f.describe() for f in sorted(files, key=lambda f: f.path)],
        "total_size": sum(f.size for f in files),
    }
    return scrub(manifest)


def manifest_bytes(manifest: Dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode("utf-8")


def check_manifest(manifest: Any, where: str) -> List[Dict[str, Any]]:
    """The file list of a manifest read back, with every path checked to stay inside DEST.

    Raises:
        UserError: not a qlora-launch manifest, or a path that would escape the destination.
    """
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), list)
    ):
        raise UserError(f"{where} is not a qlora-launch manifest (format {FORMAT}); refusing to pull.")
    files = []
    for f in manifest["files"]:
        path = str(f.get("path", ""))
        parts = path.split("/")
        if (
            not path
            or path.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or "\\" in path
            or path == MANIFEST
        ):
            raise UserError(f"{where} lists an unsafe path {path!r}; refusing to pull.")
        if not re.fullmatch(r"[0-9a-f]{64}", str(f.get("sha256", ""))) or not isinstance(f.get("size"), int):
            raise UserError(f"{where}: entry {path!r} has no valid sha256/size; refusing to pull.")
        files.append({"path": path, "sha256": f["sha256"], "size": f["size"]})
    return files
