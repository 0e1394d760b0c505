"""The compare-and-swap tests of tests/unit/storage/test_kv_cas.py on a prefix of a fresh bucket of the moto
S3 server (conditional PUTs: If-Match on the ETag, If-None-Match: *)."""

from __future__ import annotations

import pytest

from tests.helpers.s3_server import s3_bucket, s3_server  # noqa: F401  (pytest fixtures)
from tests.unit.storage.test_kv_cas import (  # noqa: F401  (collected here with the S3 root below)
    test_a_key_deleted_since_the_read_is_refused,
    test_existing_key_with_expected_none_is_refused,
    test_missing_key_with_expected_none_is_written_and_the_token_reads_back,
    test_racing_writers_from_one_read_exactly_one_wins,
    test_token_mismatch_is_refused_and_the_right_token_writes,
    test_writing_the_bytes_already_there_is_not_a_conflict,
)


@pytest.fixture
def store_root(s3_bucket):  # noqa: F811
    return f"s3://{s3_bucket.name}/kv", s3_bucket.endpoint
