"""Publishing the best model of a run to S3 or the Hugging Face Hub (`pull` is orchestrator.publish.pull).

A publication is the best adapter and/or the merged model, a model card (README.md) and
`manifest.json` (provenance + the sha256 and size of every other file). Before anything is uploaded
the merge is verified again (merged model vs base + adapter on eval inputs); a failure stops it.

S3 layout under `s3://bucket/prefix` (a local folder `--to DIR` gets the same, with DIR as the prefix):

    <prefix>/<version>/adapter/...      the LoRA adapter + tokenizer
    <prefix>/<version>/merged/...       the merged model + tokenizer
    <prefix>/<version>/README.md        the model card
    <prefix>/<version>/manifest.json    written after every file is uploaded and verified
    <prefix>/latest.json                the pointer, written last: readers never see a partial version

latest.json is read (with its ETag) before anything is uploaded and moved with one conditional PUT at
the end: if another publication moved it in between, this one stops with a UserError and leaves it
alone (see orchestrator.publish.destination.LatestPointer).

The default version name is derived from the run's end time and the content, so re-running a failed
publication resumes it: files already stored with the right checksum are skipped. A complete version
is never overwritten with different content.

On the Hub a publication is one commit (repo created private if needed) tagged with the version name.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from orchestrator.core.errors import UserError
from orchestrator.core.scores import fidelity_text
from orchestrator.publish import hub
from orchestrator.publish.card import model_card
from orchestrator.publish.destination import LATEST, Destination, LatestPointer, parse_destination
from orchestrator.publish.manifest import (
    CARD,
    MANIFEST,
    FileEntry,
    RunRecord,
    build_manifest,
    check_version,
    collect_files,
    content_version,
    manifest_bytes,
    utc_now,
)
from orchestrator.publish.merge_recheck import verify_run_merge

Echo = Callable[..., None]


@dataclass
class Publication:
    """What `publish_run` did (or, for a dry run, would do)."""

    version: str
    location: str  # the versioned URI: s3://bucket/prefix/<version> or hf://org/name@<commit>
    destination: str  # --to as given
    files: List[Dict[str, Any]]  # path, size, sha256, destination of every file (manifest.json last)
    manifest: Dict[str, Any]
    merge_check: Optional[Dict[str, Any]]
    latest: Optional[str] = None  # the pointer object (S3)
    commit: Optional[str] = None  # the Hub commit id
    uploaded: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    dry_run: bool = False


# ---- publishing ---------------------------------------------------------------------------------


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _locked(echo: Echo) -> Echo:
    lock = threading.Lock()

    def out(*a, **k):
        with lock:
            echo(*a, **k)

    return out


def publish_run(
    run_dir: Any,
    to: str,
    *,
    what: str = "both",
    endpoint_url: Optional[str] = None,
    version: Optional[str] = None,
    private: Optional[bool] = None,
    revision: Optional[str] = None,
    dry_run: bool = False,
    echo: Optional[Echo] = None,
    s3_client: Any = None,
    hf_api: Any = None,
    concurrency: Optional[int] = None,
    verify: Optional[Callable[[RunRecord], Dict[str, Any]]] = None,
) -> Publication:
    """Publish the best model of a `tune` run folder to `s3://bucket/prefix` or `hf://org/name`.

    Args:
        run_dir: the run folder (runs/<experiment>).
        to: s3://bucket/prefix, a local folder (path or file:///path) or hf://org/name[@revision].
        what: adapter, merged or both.
        endpoint_url: S3-compatible endpoint (MinIO, R2, a local test server).
        version: the version name (default: run end time + content hash, so a re-run resumes).
        private, revision: Hub only; default from the run's publish: section, else private, main.
        dry_run: list every file, size and destination; upload nothing, verify nothing.
        echo: where progress lines go (click.echo in the CLI); silent when None.
        s3_client, hf_api: clients to use instead of new ones (other sessions/roles, tests).
        concurrency: parallel transfers (S3; default orchestrator.storage.s3.CONCURRENCY).
        verify: the merge check (default: verify_run_merge).

    Returns:
        A Publication with .version and .location (the versioned URI).

    Raises:
        UserError: bad URI or run folder, failed merge check, missing bucket/credentials, access denied,
            an unreachable endpoint after retries. Nothing is marked latest in any of these cases.
    """
    echo = _locked(echo or (lambda *a, **k: None))
    problems: List[str] = []
    dest = run = None
    try:
        dest = parse_destination(to)
    except UserError as e:
        problems += e.problems
    try:
        run = RunRecord.load(Path(run_dir), what)
    except UserError as e:
        problems += e.problems
    if problems:
        raise UserError(*problems)
    pub_cfg = run.cfg.publish
    if private is None:
        private = pub_cfg.private if pub_cfg else True
    if dest.scheme == "hf":
        revision = revision or dest.revision or (pub_cfg.revision if pub_cfg else None)
    hasher = None
    if dest.scheme == "s3" and not dry_run:
        from orchestrator.storage.checksums import file_checksums

        hasher = file_checksums  # the manifest's sha256 and S3's checksum from one read of each file
    files = collect_files(run, what, hasher) if hasher else collect_files(run, what)
    version = check_version(version) if version else content_version(run, files, what)
    location = dest.version_uri(version)

    bucket: Any = None
    if dest.scheme == "local" and not dry_run:
        from orchestrator.publish.folder import FolderBucket

        bucket = FolderBucket(dest.root)
        bucket.check()
        _check_version_free(bucket, dest, version, files)
    elif dest.scheme == "s3" and not dry_run:
        from orchestrator.storage.s3 import CONCURRENCY, Bucket

        bucket = Bucket(dest.bucket, endpoint_url, client=s3_client, concurrency=concurrency or CONCURRENCY)
        bucket.check()  # no bucket, no credentials, access denied: fail before the slow merge check
        _check_version_free(bucket, dest, version, files)

    if dry_run:
        merge_check = run.results.get("merge_check")
    elif run.has_merged():
        echo(f"Verifying the merge of {run.run_dir} (merged vs base + adapter on eval inputs) ...")
        merge_check = (verify or verify_run_merge)(run)
        echo(f"  passed: max |logit diff| {merge_check['max_abs_logit_diff']:.3g} <= {merge_check['tolerance']}")
        if merge_check.get("fidelity"):
            echo(f"  fidelity: {fidelity_text(merge_check['fidelity'])}")
    else:
        merge_check = {"passed": None, "skipped": "the run has no merged model; the adapter is published alone"}

    repo_id = dest.repo_id if dest.scheme == "hf" else None
    card = FileEntry.from_bytes(
        CARD,
        model_card(run, what=what, version=version, location=location, merge_check=merge_check, repo_id=repo_id).encode(
            "utf-8"
        ),
    )
    published = files + [card]
    libraries = {"s3": ("boto3",), "hf": ("huggingface_hub",)}.get(dest.scheme, ())
    manifest = build_manifest(
        run, published, version=version, what=what, location=location, merge_check=merge_check, libraries=libraries
    )
    manifest_entry = FileEntry.from_bytes(MANIFEST, manifest_bytes(manifest))
    listing = [
        {**f.describe(), "destination": _file_destination(dest, version, f.path)} for f in published + [manifest_entry]
    ]
    result = Publication(
        version=version,
        location=location,
        destination=dest.uri,
        files=listing,
        manifest=manifest,
        merge_check=merge_check,
        dry_run=dry_run,
        latest=dest.url(dest.key(LATEST)) if dest.scheme in ("s3", "local") else None,
    )
    if dry_run:
        _print_plan(result, run, dest, echo)
        return result
    if dest.scheme in ("s3", "local"):  # one layout: a local folder is copied into like a bucket prefix
        return _publish_s3(result, bucket, dest, run, published, manifest_entry, echo)
    return _publish_hub(result, dest, run, published, manifest_entry, private, revision, hf_api, echo)


def _file_destination(dest: Destination, version: str, path: str) -> str:
    if dest.scheme in ("s3", "local"):
        return dest.url(dest.key(version, path))
    return f"hf://{dest.repo_id}/{path}"


def _check_version_free(bucket, dest: Destination, version: str, files: List[FileEntry]) -> None:
    """A complete version (it has a manifest) may be re-published only with the same model files."""
    raw = bucket.get(dest.key(version, MANIFEST))
    if raw is None:
        return
    try:
        old = {f["path"]: f["sha256"] for f in json.loads(raw)["files"]}
    except (ValueError, KeyError, TypeError):
        old = None
    new = {f.path: f.sha256 for f in files}
    if old is None or {p: h for p, h in old.items() if p != CARD} != new:
        raise UserError(
            f"version '{version}' already exists at {dest.version_uri(version)} with different files; published "
            "versions are never overwritten: pass another --version (or none, for a fresh name)."
        )


def _print_plan(pub: Publication, run: RunRecord, dest: Destination, echo: Echo) -> None:
    score = f"{run.metric}={run.score:.4g}" if isinstance(run.score, (int, float)) else run.metric
    echo(
        f"Would publish version {pub.version} of {run.results.get('experiment')} (best trial "
        f"{run.best.get('trial_id')}, {score}) to {pub.location}:"
    )
    width = max(len(f["path"]) for f in pub.files)
    for f in pub.files:
        echo(f"  {f['path']:<{width}}  {_size(f['size']):>10}  {f['destination']}")
    total = sum(f["size"] for f in pub.files)
    echo(f"{len(pub.files)} files, {_size(total)}.")
    if dest.scheme in ("s3", "local"):
        echo(f"Then {pub.latest} -> {pub.version} (written last).")
    mc = pub.merge_check or {}
    last = (
        (
            f"last recorded: {'passed' if mc.get('passed') else 'FAILED'}, max |logit diff| "
            f"{mc.get('max_abs_logit_diff')}"
        )
        if "max_abs_logit_diff" in mc
        else "none recorded"
    )
    echo(f"The merge is verified again before any upload ({last}). Dry run: nothing uploaded.")


def _publish_s3(
    pub: Publication,
    bucket,
    dest: Destination,
    run: RunRecord,
    published: List[FileEntry],
    manifest_entry: FileEntry,
    echo: Echo,
) -> Publication:
    from orchestrator.storage.s3 import Upload

    items = [
        Upload(
            dest.key(pub.version, f.path), f.size, f.sha256, path=f.source, data=f.data, checksum=f.transfer_checksum
        )
        for f in published
    ]
    total = sum(f.size for f in published)
    echo(f"Publishing {len(items)} files ({_size(total)}) to {pub.location}/ ...")
    offset = len(dest.key(pub.version)) + 1

    def on_event(kind: str, key: str, size: int) -> None:
        if kind == "uploaded":
            echo(f"  uploaded  {key[offset:]}  ({_size(size)})")
        elif kind == "skip":
            echo(f"  skipped   {key[offset:]}  (already there with the right checksum)")

    latest = LatestPointer(dest, bucket.endpoint_url, client=bucket.client)
    latest.read()  # the pointer moves at the end only if nobody else moved it meanwhile
    manifest_key = dest.key(pub.version, MANIFEST)
    existing = bucket.get(manifest_key)
    if existing is not None:
        # Complete already, with the same model files (_check_version_free): never touched again.
        echo(f"  version {pub.version} is already complete there (same files): nothing to upload")
        pub.manifest = json.loads(existing)
        pub.skipped = [f["path"] for f in pub.manifest.get("files", [])] + [MANIFEST]
    else:
        uploaded, skipped = bucket.upload(items, on_event)
        pub.uploaded = [k[offset:] for k in uploaded]
        pub.skipped = [k[offset:] for k in skipped]
        # Objects of an earlier, different attempt at this version that the manifest will not list.
        keep = {i.key for i in items} | {manifest_key}  # a concurrent publication's manifest stays
        for key in bucket.list(dest.key(pub.version)):
            if key not in keep:
                bucket.delete(key)
        # The version is complete from here on. A concurrent publication of the same version may have
        # written its manifest first (same files, another timestamp): then that one stands, and the pointer
        # names its checksum, so that it matches what is stored.
        existing = bucket.put_new(manifest_key, manifest_entry.data)
        if existing is None:
            pub.uploaded.append(MANIFEST)
        else:
            pub.manifest = json.loads(existing)
            pub.skipped.append(MANIFEST)
    manifest_raw = existing if existing is not None else manifest_entry.data
    pointer = {
        "version": pub.version,
        "location": pub.location,
        "manifest": f"{pub.version}/{MANIFEST}",
        "manifest_sha256": hashlib.sha256(manifest_raw).hexdigest(),
        "what": pub.manifest.get("what"),
        "experiment": pub.manifest.get("experiment"),
        "metric": pub.manifest.get("metric"),
        "published_at": utc_now(),
    }
    if not latest.move(pointer, pub.location):
        echo(f"  {pub.latest} already pointed at {pub.version} (a concurrent publication of the same version)")
    echo(
        f"Published version {pub.version} to {pub.location} ({len(pub.uploaded)} uploaded, {len(pub.skipped)} "
        f"skipped, every checksum verified); {pub.latest} -> {pub.version}."
    )
    return pub


def _publish_hub(
    pub: Publication,
    dest: Destination,
    run: RunRecord,
    published: List[FileEntry],
    manifest_entry: FileEntry,
    private: bool,
    revision: Optional[str],
    api: Any,
    echo: Echo,
) -> Publication:
    value = run.score
    metric = f"{run.metric}={value:.4g}" if isinstance(value, (int, float)) else run.metric
    message = f"qlora-launch: {run.results.get('experiment')} best trial {run.best.get('trial_id')}, {metric}"
    description = (
        f"Version {pub.version} ({pub.manifest.get('what')}). Base model "
        f"{run.cfg.model.name_or_path}; metric {run.metric} ({run.mode}). Files and sha256 in manifest.json."
    )
    files = published + [manifest_entry]
    echo(
        f"Committing {len(files)} files to hf://{dest.repo_id} (revision {revision or 'main'}, "
        f"{'private' if private else 'public'}) ..."
    )
    oid = hub.commit(
        dest.repo_id,
        files,
        message=message,
        description=description,
        private=private,
        revision=revision,
        tag=pub.version,
        api=api,
    )
    pub.commit = oid
    pub.location = f"hf://{dest.repo_id}@{oid}"
    pub.uploaded = [f.path for f in files]
    echo(f"Published version {pub.version} to hf://{dest.repo_id} as commit {oid} (tag {pub.version}).")
    return pub


def publish_from_config(run_dir: Any, cfg: Any, echo: Optional[Echo] = None) -> Optional[Publication]:
    """The `publish:` step at the end of `tune`: publish the run when the config has a publish: section.

    Returns None when it has none.
    """
    p = getattr(cfg, "publish", None)
    if p is None:
        return None
    return publish_run(
        run_dir, p.to, what=p.what, endpoint_url=p.endpoint_url, private=p.private, revision=p.revision, echo=echo
    )
