"""What a config needs before a retrain (or a schedule of one) can start: checked all at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

from orchestrator.core.errors import UserError
from orchestrator.retrain.registry import check_name, registry_uri_for


def eval_data_of(cfg: Any) -> Optional[str]:
    """The held-out set challenger and champion are scored on: retrain.eval_data, else data.test."""
    rt = cfg.retrain
    return (rt.eval_data if rt and rt.eval_data else None) or cfg.data.test


def check_retrain_config(cfg: Any, need_publish: bool = True) -> None:
    """Everything that can be checked before training, all problems at once.

    Raises:
        UserError: no retrain section, no held-out set, no metric, no registry, nowhere to publish.
    """
    if cfg.retrain is None:
        raise UserError(
            "`retrain`: the config has no retrain: section; add one with at least `name:` "
            "(and a held-out set in retrain.eval_data or data.test)."
        )
    problems: List[str] = []
    try:
        check_name(cfg.retrain.name)
    except UserError as e:
        problems += e.problems
    data = eval_data_of(cfg)
    if not data:
        problems.append(
            "`retrain.eval_data`: no held-out set to score challenger and champion on; set retrain.eval_data "
            "or data.test to a file the training never sees."
        )
    elif "://" not in data and not data.startswith("hub:") and not Path(data).exists():
        problems.append(f"`retrain.eval_data`: '{data}' does not exist (defaults to data.test); fix the path.")
    if not getattr(cfg.search, "metric", None):
        problems.append("`search.metric`: the promotion gate needs a metric (eval_loss or eval_rouge*).")
    try:
        registry_uri_for(cfg)
    except UserError as e:
        problems += e.problems
    if need_publish and cfg.publish is None:
        problems.append("`publish`: promotion publishes the challenger; add a publish: section with `to:`.")
    if problems:
        raise UserError(*problems)
