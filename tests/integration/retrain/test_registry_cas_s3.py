"""champion.json's compare-and-swap on a prefix of a fresh bucket of the moto S3 server: the tests of
tests/unit/retrain/test_registry_cas.py with an S3 root, and two whole retrains (the gate, with the fake
parts of test_retrain.py) that both decide to promote: one moves the pointer, the other fails and says
which champion is there now."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # `tests.*` under plain `pytest` too

from orchestrator.core.errors import UserError  # noqa: E402
from orchestrator.retrain.registry import Registry  # noqa: E402
from tests.helpers.s3_server import s3_bucket, s3_server  # noqa: E402,F401  (pytest fixtures)
from tests.integration.retrain.test_retrain import NAME, World  # noqa: E402
from tests.unit.retrain.test_registry_cas import (  # noqa: E402,F401  (collected here with the S3 root below)
    test_a_decision_on_a_stale_champion_is_refused,
    test_a_rollback_that_loses_to_a_promotion_exits_2_and_changes_nothing,
    test_two_racing_promotions_one_wins_the_other_is_told_who,
)


@pytest.fixture
def root(s3_bucket):  # noqa: F811
    return f"s3://{s3_bucket.name}/models/summarizer", s3_bucket.endpoint


def test_two_retrains_that_both_promote_move_the_champion_once(tmp_path, s3_bucket, monkeypatch):  # noqa: F811
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    a, b = World(tmp_path / "a", s3_bucket), World(tmp_path / "b", s3_bucket)  # one registry, one publish.to
    b.published.append("(a's)")  # b publishes v2, a v1
    barrier = threading.Barrier(2)
    real_set = Registry.set_champion

    def set_together(self, *args, **kw):  # both have published and decided before either moves the pointer
        barrier.wait(timeout=60)
        return real_set(self, *args, **kw)

    monkeypatch.setattr(Registry, "set_champion", set_together)
    outcomes, errors = {}, []

    def retrain(world: World, tag: str) -> None:
        try:
            outcomes[tag] = world.retrain()
        except UserError as e:
            outcomes[tag] = e
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=retrain, args=(w, t)) for w, t in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    won = [t for t, o in outcomes.items() if not isinstance(o, UserError)]
    lost = [t for t, o in outcomes.items() if isinstance(o, UserError)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    winner = outcomes[won[0]]
    assert winner.decision == "promoted"
    version = winner.champion["version"]
    msg = str(outcomes[lost[0]])
    assert f"was moved by someone else to version '{version}'" in msg and "did not become champion" in msg
    reg = Registry.open(a.prefix, a.endpoint)
    assert reg.get_champion(NAME)["version"] == version
    hist = reg.history(NAME)
    assert sorted(r["decision"] for r in hist) == ["failed", "promoted"]
    failed = next(r for r in hist if r["decision"] == "failed")
    assert "did not become champion" in failed["reason"]
