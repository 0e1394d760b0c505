"""The model registry: which version of each model line is in production, and how it got there.

Layout under the registry root (a local folder or s3://bucket/prefix, by default the `publish.to`
prefix, so it sits beside the published versions):

    <root>/<name>/champion.json                  the pointer: version, location, metric, score, ...
    <root>/<name>/history/<time>-<id>.json       one object per event (retrain or rollback)

Every write is a single atomic object write (see orchestrator.storage.kv). S3 has no append, so the
history is one object per record under keys that sort by time; reading it lists the prefix.

champion.json moves by compare-and-swap: `set_champion` writes only if the pointer still holds the
version this Registry read when it decided (`get_champion`, at the start of a retrain or a rollback),
with one conditional PUT on S3 (`If-Match` on the ETag, `If-None-Match: *` for the first champion) or
under an exclusive lock in a local folder. When two promotions (or a promotion and a rollback) overlap,
the first to move the pointer wins; the other gets a UserError naming the champion now there and
changes nothing.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple

from orchestrator.core.errors import UserError, did_you_mean
from orchestrator.core.s3_uri import is_s3
from orchestrator.storage.kv import Conflict, NotFound, Storage, open_storage

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PROMOTED = "promoted"
KEPT = "kept"
FAILED = "failed"
ROLLBACK = "rollback"
# Decisions after which the data counts as consumed: the same data is not retrained on again.
SUCCESSFUL = (PROMOTED, KEPT)
LAST_READ: Any = object()  # set_champion's default: conditional on what get_champion last returned


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise UserError(f"model name '{name}': use letters, digits, '.', '_' and '-' only (retrain.name).")
    return name


class Registry:
    """Champion pointer and history per model name in one storage root.

    Args:
        storage: where the registry lives.
        endpoint_url: S3 endpoint used to check that a champion's location still exists.
        clock: returns the current UTC time (injected in tests).
    """

    def __init__(self, storage: Storage, endpoint_url: Optional[str] = None, clock: Callable[[], datetime] = utcnow):
        self.storage = storage
        self.endpoint_url = endpoint_url
        self.clock = clock
        self._tokens: Dict[str, Optional[str]] = {}  # name -> version token of the champion last read

    @classmethod
    def open(cls, uri: str, endpoint_url: Optional[str] = None, clock: Callable[[], datetime] = utcnow) -> "Registry":
        return cls(open_storage(uri, endpoint_url), endpoint_url=endpoint_url, clock=clock)

    @property
    def uri(self) -> str:
        return self.storage.uri

    # ---- history -----------------------------------------------------------------------------
    def record_run(self, name: str, record: Dict[str, Any]) -> Dict[str, Any]:
        """Append one event to the history of `name` and return it with `id`, `name` and `time` set."""
        check_name(name)
        now = self.clock()
        rec_id = f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}"
        rec = {"id": rec_id, "name": name, "time": now.isoformat(), **record}
        self.storage.write_json(f"{name}/history/{rec_id}.json", rec)
        return rec

    def history(self, name: str) -> List[Dict[str, Any]]:
        """Every event of `name`, oldest first."""
        check_name(name)
        out = []
        for key in self.storage.list(f"{name}/history"):
            if key.endswith(".json"):
                try:
                    out.append(self.storage.read_json(key))
                except NotFound:  # removed between list and read
                    continue
        return sorted(out, key=lambda r: r.get("id", ""))

    def names(self) -> List[str]:
        """Model names that have a champion or a history here."""
        return [
            d
            for d in self.storage.list_dirs("")
            if NAME_RE.fullmatch(d)
            and (self.storage.exists(f"{d}/champion.json") or self.storage.has_any(f"{d}/history"))
        ]

    def check_known(self, name: str) -> None:
        """Raises UserError when `name` has neither a history nor a champion here (naming the known ones)."""
        if self.history(name) or self.get_champion(name, verify=False) is not None:
            return
        known = self.names()
        raise UserError(
            f"no model named '{name}' in the registry {self.uri}.{did_you_mean(name, known)} "
            f"Known: {', '.join(known) or 'none'}."
        )

    def last_successful(self, name: str) -> Optional[Dict[str, Any]]:
        """The latest retrain that finished with a decision (promoted or kept)."""
        for rec in reversed(self.history(name)):
            if rec.get("kind") == "retrain" and rec.get("decision") in SUCCESSFUL:
                return rec
        return None

    # ---- champion ----------------------------------------------------------------------------
    def get_champion(self, name: str, verify: bool = True) -> Optional[Dict[str, Any]]:
        """The champion pointer of `name`, or None before the first promotion.

        Raises:
            UserError: the pointer names a version whose files are gone (when `verify`).
        """
        champ, self._tokens[name] = self.storage.read_json_with_token(f"{check_name(name)}/champion.json")
        if champ is None:
            return None
        if verify and not self.location_exists(champ.get("location", "")):
            raise UserError(
                f"the champion of '{name}' ({self.storage.url(f'{name}/champion.json')}) points at version "
                f"'{champ.get('version')}' at {champ.get('location')}, which does not exist. Restore that "
                f"version, or move the pointer with `qlora-launch rollback {name} --to VERSION`."
            )
        return champ

    def set_champion(
        self,
        name: str,
        *,
        version: str,
        location: str,
        metric: Optional[str] = None,
        score: Optional[float] = None,
        hparams: Optional[Dict[str, Any]] = None,
        expected: Any = LAST_READ,
        **extra: Any,
    ) -> Dict[str, Any]:
        """Point the champion of `name` at a published version (one atomic, conditional object write).

        Args:
            expected: the version token of the champion the caller decided on (None: there was none).
                By default, the one this Registry's last `get_champion(name)` saw (or, if it never read
                it, the one there now).

        Raises:
            UserError: the champion moved since that read (another promotion or rollback won); the
                pointer is left as the other writer set it.
        """
        key = f"{check_name(name)}/champion.json"
        if expected is LAST_READ:
            if name not in self._tokens:
                self.get_champion(name, verify=False)
            expected = self._tokens[name]
        pointer = {
            "name": name,
            "version": version,
            "location": location,
            "metric": metric,
            "score": score,
            "hparams": hparams or {},
            "since": self.clock().isoformat(),
            **extra,
        }
        try:
            self._tokens[name] = self.storage.write_json_if(key, pointer, expected)
        except Conflict:
            self._tokens.pop(name, None)
            raise UserError(self._moved(name, version, location)) from None
        return pointer

    def _moved(self, name: str, version: str, location: str) -> str:
        """The message for a champion write that lost a race."""
        try:
            now, _ = self.storage.read_json_with_token(f"{name}/champion.json")
        except UserError:
            now = {"version": "(unreadable)"}
        if now is None:
            there = "was removed by someone else"
        else:
            by = ", ".join(f"{k.replace('_', ' ')} {now[k]}" for k in ("since", "job_id") if now.get(k))
            there = f"was moved by someone else to version '{now.get('version')}'{f' ({by})' if by else ''}"
        return (
            f"the champion of '{name}' ({self.storage.url(f'{name}/champion.json')}) {there} after this "
            f"command read it: version '{version}' ({location}) did not become champion and the pointer was "
            f"left as is. See `qlora-launch champion {name}` and `qlora-launch history {name}`, then re-run "
            "if it should still move."
        )

    def champions_in_order(self, name: str) -> List[Dict[str, Any]]:
        """Every version ever promoted, in order of first promotion, with what its pointer held."""
        seen: Dict[str, Dict[str, Any]] = {}
        for rec in self.history(name):
            if rec.get("decision") == PROMOTED and rec.get("version") and rec["version"] not in seen:
                seen[rec["version"]] = rec
        return list(seen.values())

    def rollback(self, name: str, to_version: Optional[str] = None, reason: Optional[str] = None) -> Dict[str, Any]:
        """Move the champion pointer back and record that in the history.

        Without `to_version`, the pointer goes to the version promoted before the current one.

        Raises:
            UserError: nothing to roll back to, an unknown version, or its files are gone.
        """
        current = self.get_champion(name, verify=False)  # the pointer moves only from this one
        promoted = self.champions_in_order(name)
        versions = [r["version"] for r in promoted]
        if to_version is None:
            if current is None:
                raise UserError(f"'{name}' has no champion in {self.uri}; nothing to roll back.")
            if current["version"] not in versions or versions.index(current["version"]) == 0:
                raise UserError(
                    f"no champion of '{name}' before version '{current['version']}'; "
                    f"pass --to VERSION (promoted versions: {', '.join(versions) or 'none'})."
                )
            target = promoted[versions.index(current["version"]) - 1]
        else:
            if to_version not in versions:
                raise UserError(
                    f"version '{to_version}' of '{name}' was never promoted; "
                    f"promoted versions: {', '.join(versions) or 'none'}."
                )
            target = promoted[versions.index(to_version)]
        if current is not None and current.get("version") == target["version"]:
            raise UserError(f"'{name}' already has version '{target['version']}' as champion.")
        if not self.location_exists(target["location"]):
            raise UserError(
                f"version '{target['version']}' of '{name}' is gone from {target['location']}; "
                "pick another with --to VERSION."
            )
        ch = target.get("challenger") or {}
        self.set_champion(
            name,
            version=target["version"],
            location=target["location"],
            metric=target.get("metric"),
            score=ch.get("score"),
            hparams=ch.get("hparams"),
            record_id=target.get("id"),
            rolled_back_from=current.get("version") if current else None,
        )
        return self.record_run(
            name,
            {
                "kind": ROLLBACK,
                "decision": ROLLBACK,
                "version": target["version"],
                "location": target["location"],
                "from_version": current.get("version") if current else None,
                "reason": reason or "manual rollback",
            },
        )

    # ---- locations ---------------------------------------------------------------------------
    def location_exists(self, location: str) -> bool:
        """Whether a published version still has files (local folder or S3; other schemes trusted)."""
        if not location:
            return False
        if is_s3(location):
            return open_storage(location, self.endpoint_url).has_any("")
        if "://" in location:  # hf:// and others cannot be checked offline
            return True
        return open_storage(location).has_any("")


def registry_uri_for(cfg: Any) -> str:
    """Where the registry of a config lives: retrain.registry, else publish.to.

    Raises:
        UserError: neither gives a folder or s3:// prefix.
    """
    rt = cfg.retrain
    uri = rt.registry if rt and rt.registry else (cfg.publish.to if cfg.publish else None)
    if uri and uri.startswith("file:///"):
        uri = uri[len("file://") :]  # a local folder, as publish.to takes it
    if not uri:
        raise UserError(
            "`retrain.registry`: not set and there is no `publish.to` to default to; set it to a folder or "
            "s3://bucket/prefix."
        )
    if "://" in uri and not is_s3(uri):
        raise UserError(
            f"`retrain.registry`: '{uri}' cannot hold the registry (it defaults to publish.to); set "
            "retrain.registry to a folder or s3://bucket/prefix."
        )
    return uri


def endpoint_for(cfg: Any) -> Optional[str]:
    if cfg.publish and cfg.publish.endpoint_url:
        return cfg.publish.endpoint_url
    return cfg.output.endpoint_url


def open_registry(
    registry: Optional[str], endpoint_url: Optional[str], config_path: Optional[str], name: Optional[str]
) -> Tuple[Registry, Optional[str]]:
    """(Registry, model name) from an explicit registry and endpoint, or from a config's retrain: section
    (explicit values win over the config's).

    Raises:
        UserError: neither a registry nor a config with a retrain: section was given.
    """
    if config_path:
        from orchestrator.core.config_load import load_config

        cfg = load_config(config_path, prices=False)
        if cfg.retrain is None:
            raise UserError(f"{config_path}: no retrain: section to take the registry from; pass --registry.")
        reg = Registry.open(registry or registry_uri_for(cfg), endpoint_url or endpoint_for(cfg))
        return reg, name or cfg.retrain.name
    if not registry:
        raise UserError(
            "say where the registry is: --registry PATH_OR_S3 (or --config CONFIG with a retrain: section)."
        )
    return Registry.open(registry, endpoint_url), name
