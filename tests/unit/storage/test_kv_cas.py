"""Compare-and-swap writes of orchestrator.storage.kv (`read_with_token` / `write_bytes_if`) on a local
folder. tests/integration/storage/test_kv_cas_s3.py runs the same tests on a real S3 server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from orchestrator.storage.kv import Conflict, LocalStorage, NotFound, open_storage


@pytest.fixture
def store_root(tmp_path):
    """(uri, endpoint) of an empty storage root (the S3 one is in tests/integration/storage/)."""
    return str(tmp_path / "kv"), None


def test_missing_key_with_expected_none_is_written_and_the_token_reads_back(store_root):
    st = open_storage(*store_root)
    token = st.write_bytes_if("m/champion.json", b'{"v": 1}', None)
    data, read = st.read_with_token("m/champion.json")
    assert data == b'{"v": 1}' and read == token
    assert st.read_json_with_token("m/champion.json") == ({"v": 1}, token)
    assert st.read_json_with_token("m/absent.json") == (None, None)
    with pytest.raises(NotFound):
        st.read_with_token("m/absent.json")


def test_existing_key_with_expected_none_is_refused(store_root):
    st = open_storage(*store_root)
    first = st.write_bytes_if("p.json", b"first", None)
    with pytest.raises(Conflict) as e:
        st.write_bytes_if("p.json", b"second", None)
    assert e.value.expected is None and e.value.current == first
    assert st.read_bytes("p.json") == b"first"


def test_token_mismatch_is_refused_and_the_right_token_writes(store_root):
    st = open_storage(*store_root)
    t1 = st.write_bytes_if("p.json", b"one", None)
    t2 = st.write_bytes_if("p.json", b"two", t1)
    assert t2 != t1 and st.read_bytes("p.json") == b"two"
    with pytest.raises(Conflict):  # t1 is stale: someone (here: we) moved it since
        st.write_bytes_if("p.json", b"three", t1)
    assert st.read_with_token("p.json") == (b"two", t2)
    # A plain (unconditional) write also changes the token.
    st.write_bytes("p.json", b"other")
    with pytest.raises(Conflict):
        st.write_bytes_if("p.json", b"three", t2)
    assert st.read_bytes("p.json") == b"other"


def test_a_key_deleted_since_the_read_is_refused(store_root):
    st = open_storage(*store_root)
    t1 = st.write_bytes_if("p.json", b"one", None)
    st.delete("p.json")
    with pytest.raises(Conflict):
        st.write_bytes_if("p.json", b"two", t1)
    assert not st.exists("p.json")


def test_writing_the_bytes_already_there_is_not_a_conflict(store_root):
    """What a retried conditional PUT sees when its first attempt landed: its own bytes."""
    st = open_storage(*store_root)
    t1 = st.write_bytes_if("p.json", b"same", None)
    assert st.write_bytes_if("p.json", b"same", None) == t1
    assert st.read_with_token("p.json") == (b"same", t1)


def test_racing_writers_from_one_read_exactly_one_wins(store_root):
    st0 = open_storage(*store_root)
    st0.write_bytes_if("p.json", b"start", None)
    n = 6
    barrier = threading.Barrier(n)
    won, lost, errors = [], [], []

    def writer(i: int) -> None:
        try:
            st = open_storage(*store_root)  # each writer its own storage (and S3 client)
            _, token = st.read_with_token("p.json")
            barrier.wait(timeout=30)
            st.write_bytes_if("p.json", f"writer {i}".encode(), token)
            won.append(i)
        except Conflict:
            lost.append(i)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(won) == 1 and len(lost) == n - 1
    assert st0.read_bytes("p.json") == f"writer {won[0]}".encode()


def test_local_lock_files_are_never_listed(tmp_path):
    st = LocalStorage(str(tmp_path / "kv"))
    st.write_bytes_if("m/champion.json", b"x", None)
    st.write_json("m/history/1.json", {"a": 1})
    assert (Path(st.root) / "m" / ".lock-champion.json").exists()
    assert st.list("") == ["m/champion.json", "m/history/1.json"]
    assert st.list("m") == ["m/champion.json", "m/history/1.json"]
    assert st.has_any("m") and st.list_dirs("m") == ["history"]
