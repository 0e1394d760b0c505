"""The Hugging Face Hub side of publishing: one commit per publication, and downloads for `pull`.

Everything goes through `huggingface_hub.HfApi` (imported when called; tests replace it). The token
comes from `HF_TOKEN` or the login cache, as huggingface_hub finds it; we never read, print or store it.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

from orchestrator.core.errors import UserError

# Folders a publication owns in the repo: files there that the new publication lacks are deleted in
# the same commit, so the repo holds exactly one consistent version. Other files are left alone.
OWNED = ("adapter/", "merged/")
_REPO = re.compile(r"hf://([A-Za-z0-9][A-Za-z0-9._-]*)/([A-Za-z0-9][A-Za-z0-9._-]*)(?:@([^\s]+))?/?")


def parse_hf(uri: str) -> Tuple[str, Optional[str]]:
    """`hf://org/name[@revision]` -> ("org/name", revision or None).

    Raises:
        UserError: anything else.
    """
    m = _REPO.fullmatch(uri or "")
    if not m or ".." in m.group(2) or m.group(2).endswith((".git", ".")):
        raise UserError(f"'{uri}' is not a valid Hub URI; use hf://org/name (optionally hf://org/name@revision).")
    return f"{m.group(1)}/{m.group(2)}", m.group(3)


def hf_api(api: Any = None):
    if api is not None:
        return api
    from huggingface_hub import HfApi

    return HfApi()


@contextlib.contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """Hub errors as UserError lines; the token never appears in them."""
    try:
        from huggingface_hub import errors as hfe
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        raise UserError("huggingface_hub is not installed; pip install huggingface_hub.") from None
    try:
        yield
    except hfe.LocalTokenNotFoundError:
        raise UserError(f"no Hugging Face token for {what}: set HF_TOKEN or run `hf auth login`.") from None
    except hfe.RepositoryNotFoundError:
        raise UserError(f"{what}: the repository does not exist or this token cannot see it.") from None
    except hfe.RevisionNotFoundError:
        raise UserError(f"{what}: no such revision (branch, tag or commit).") from None
    except hfe.HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status == 401:
            raise UserError(f"{what}: the Hugging Face token was refused (401); set a valid HF_TOKEN.") from None
        if status == 403:
            raise UserError(f"{what}: access denied (403); the token needs write access to this repo/org.") from None
        raise UserError(f"{what}: Hub error {status or ''}: {str(e).splitlines()[0]}") from None
    except UserError:
        raise
    except (OSError, ValueError) as e:
        raise UserError(f"{what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    except Exception as e:
        if type(e).__module__.split(".")[0] in ("httpx", "httpcore", "requests", "urllib3"):
            raise UserError(
                f"{what}: cannot reach the Hugging Face Hub ({type(e).__name__}); check the network."
            ) from None
        raise


def commit(
    repo_id: str,
    files: Sequence[Any],
    *,
    message: str,
    description: str,
    private: bool,
    revision: Optional[str],
    tag: Optional[str],
    api: Any = None,
) -> str:
    """Create the repo if needed, put `files` (FileEntry) in one commit, tag it; returns the commit id."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    api = hf_api(api)
    where = f"hf://{repo_id}"
    with hub_errors(where):
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        existing = _list_files(api, repo_id, revision)
        new = {f.path for f in files}
        ops: List[Any] = [
            CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=f.data if f.data is not None else str(f.source))
            for f in files
        ]
        ops += [CommitOperationDelete(path_in_repo=p) for p in existing if p.startswith(OWNED) and p not in new]
        info = api.create_commit(
            repo_id,
            operations=ops,
            commit_message=message,
            commit_description=description,
            revision=revision,
            repo_type="model",
        )
        oid = getattr(info, "oid", None) or str(info)
        if tag:
            api.create_tag(repo_id, tag=tag, revision=oid, exist_ok=True, repo_type="model")
    return oid


def _list_files(api: Any, repo_id: str, revision: Optional[str]) -> List[str]:
    from huggingface_hub import errors as hfe

    try:
        return list(api.list_repo_files(repo_id, revision=revision, repo_type="model"))
    except (hfe.RevisionNotFoundError, hfe.RepositoryNotFoundError, hfe.EntryNotFoundError):
        return []


def download(repo_id: str, revision: Optional[str], dest: Path, api: Any = None) -> Path:
    """A snapshot of the repo at `revision` in `dest` (the caller checks it against its manifest)."""
    api = hf_api(api)
    rev = f"@{revision}" if revision else ""
    with hub_errors(f"hf://{repo_id}{rev}"):
        api.snapshot_download(repo_id, revision=revision, local_dir=str(dest), repo_type="model")
    return dest
