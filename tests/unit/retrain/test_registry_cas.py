"""champion.json moves by compare-and-swap: racing promotions, a decision on a stale champion, and a
`rollback` that loses to a promotion, on a local folder. tests/integration/retrain/test_registry_cas_s3.py
runs the same tests on a real S3 server (and races two whole retrains through the gate)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # `tests.*` under plain `pytest` too

from orchestrator.cli import cli  # noqa: E402
from orchestrator.core.errors import UserError  # noqa: E402
from orchestrator.retrain.registry import Registry  # noqa: E402
from tests.unit.retrain.test_registry import promote, publish_fake  # noqa: E402

NAME = "summarizer"


@pytest.fixture
def root(tmp_path):
    """A registry root: a local folder (the S3 root is in tests/integration/retrain/test_registry_cas_s3.py)."""
    return str(tmp_path / "registry"), None


@pytest.mark.parametrize("first", [True, False], ids=["no-champion-yet", "over-a-champion"])
def test_two_racing_promotions_one_wins_the_other_is_told_who(root, first):
    uri, endpoint = root
    if not first:
        promote(Registry.open(uri, endpoint), uri, endpoint, "v0", 2.0)
    locs = {v: publish_fake(uri, endpoint, v) for v in ("va", "vb")}
    barrier = threading.Barrier(2)
    won, lost, errors = [], {}, []

    def promotion(version: str) -> None:
        try:
            reg = Registry.open(uri, endpoint)
            reg.get_champion(NAME)  # what the gate reads when it decides
            barrier.wait(timeout=30)
            reg.set_champion(NAME, version=version, location=locs[version], metric="eval_loss", score=1.0)
            won.append(version)
        except UserError as e:
            lost[version] = str(e)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=promotion, args=(v,)) for v in ("va", "vb")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(won) == 1 and len(lost) == 1, (won, lost, errors)
    (winner,), ((loser, msg),) = won, lost.items()
    assert Registry.open(uri, endpoint).get_champion(NAME)["version"] == winner
    assert f"was moved by someone else to version '{winner}'" in msg
    assert f"version '{loser}' ({locs[loser]}) did not become champion" in msg
    assert f"qlora-launch champion {NAME}" in msg


def test_a_decision_on_a_stale_champion_is_refused(root):
    uri, endpoint = root
    promote(Registry.open(uri, endpoint), uri, endpoint, "v1", 2.0)
    slow = Registry.open(uri, endpoint)
    assert slow.get_champion(NAME)["version"] == "v1"  # decides against v1 ...
    promote(Registry.open(uri, endpoint), uri, endpoint, "v2", 1.5)  # ... while another promotion lands
    loc = publish_fake(uri, endpoint, "v3")
    with pytest.raises(UserError, match="to version 'v2' .*version 'v3' .* did not become champion"):
        slow.set_champion(NAME, version="v3", location=loc, metric="eval_loss", score=1.0)
    assert Registry.open(uri, endpoint).get_champion(NAME)["version"] == "v2"
    # Read again, decide again: now it moves (and further moves of its own need no new read).
    slow.get_champion(NAME)
    slow.set_champion(NAME, version="v3", location=loc, metric="eval_loss", score=1.0)
    slow.set_champion(NAME, version="v1", location=f"{uri}/v1", metric="eval_loss", score=2.0)
    assert Registry.open(uri, endpoint).get_champion(NAME)["version"] == "v1"
    # An explicit expectation: None means "there must be no champion yet".
    with pytest.raises(UserError, match="to version 'v1'"):
        slow.set_champion(NAME, version="v3", location=loc, expected=None)


def test_a_rollback_that_loses_to_a_promotion_exits_2_and_changes_nothing(root, monkeypatch):
    uri, endpoint = root
    reg = Registry.open(uri, endpoint)
    promote(reg, uri, endpoint, "v1", 2.0)
    promote(reg, uri, endpoint, "v2", 1.5)
    real_exists = Registry.location_exists
    raced = []

    def exists_then_promote(self, location):
        # Between the rollback's read of the champion and its write, another promotion lands.
        if not raced:
            raced.append(promote(Registry.open(uri, endpoint), uri, endpoint, "v3", 1.0))
        return real_exists(self, location)

    monkeypatch.setattr(Registry, "location_exists", exists_then_promote)
    args = ["rollback", NAME, "--registry", uri] + (["--endpoint-url", endpoint] if endpoint else [])
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert "to version 'v3'" in res.output and "version 'v1'" in res.output and "did not become champion" in res.output
    assert "Traceback" not in res.output
    assert Registry.open(uri, endpoint).get_champion(NAME)["version"] == "v3"
    assert [r["decision"] for r in Registry.open(uri, endpoint).history(NAME)] == ["promoted"] * 3  # no rollback
    # Re-run: it reads v3 now and rolls back to v2.
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and "champion is now version v2 (was v3)" in res.output, res.output
