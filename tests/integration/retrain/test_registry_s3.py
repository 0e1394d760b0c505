"""The registry's storage tests of tests/unit/retrain/test_registry.py, on a prefix in a fresh bucket of the
moto S3 server instead of a local folder."""

from __future__ import annotations

import pytest

from tests.helpers.s3_server import s3_bucket, s3_server  # noqa: F401  (pytest fixtures)
from tests.unit.retrain.test_registry import (  # noqa: F401  (collected here with the S3 root below)
    test_champion_history_and_rollback,
    test_pointer_at_missing_version_is_a_clear_error,
    test_storage_roundtrip_and_atomic_local_write,
)


@pytest.fixture
def root(s3_bucket):  # noqa: F811
    return f"s3://{s3_bucket.name}/models/summarizer", s3_bucket.endpoint
