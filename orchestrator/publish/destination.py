"""Where a publication goes (`publish --to`) or comes from (`pull LOCATION`): an S3 prefix or a Hub repo.

S3 layout under `s3://bucket/prefix`: `<prefix>/<version>/...` (the files of one version, its
`manifest.json` last) and `<prefix>/latest.json`, the pointer to the newest complete version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from orchestrator.core.errors import UserError

LATEST = "latest.json"


@dataclass
class Destination:
    """A parsed --to: an S3 prefix or a Hub repo."""

    uri: str
    scheme: str  # s3 | hf
    bucket: str = ""
    prefix: str = ""
    repo_id: str = ""
    revision: Optional[str] = None

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))

    def version_uri(self, version: str) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.key(version)}"
        return f"hf://{self.repo_id}@{version}"


def parse_destination(uri: str) -> Destination:
    """`s3://bucket/prefix` or `hf://org/name[@revision]`.

    Raises:
        UserError: any other shape, with the forms that work.
    """
    from orchestrator.core.s3_uri import parse_s3
    from orchestrator.publish.hub import parse_hf

    uri = (uri or "").strip()
    if uri.startswith("s3://"):
        bucket, prefix = parse_s3(uri)
        if any(p in (".", "..") for p in prefix.split("/")):
            raise UserError(f"'{uri}': '.' and '..' are not allowed in the S3 prefix.")
        return Destination(uri, "s3", bucket=bucket, prefix=prefix)
    if uri.startswith("hf://"):
        repo_id, rev = parse_hf(uri)
        return Destination(uri, "hf", repo_id=repo_id, revision=rev)
    raise UserError(f"'{uri}' is not a place to publish to; use s3://bucket/prefix or hf://org/name.")
