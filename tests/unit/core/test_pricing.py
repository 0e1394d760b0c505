"""resources.instance_prices: the GPU-hour price from the cluster YAML's node types, worked by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from orchestrator.core.budget import budget_gpu_hours, budget_text, spend_summary
from orchestrator.core.config_load import load_config
from orchestrator.core.errors import UserError

REPO = Path(__file__).resolve().parents[3]
BASE = {"model": {"name_or_path": "m", "task": "seq2seq"}, "data": {"train": "t.jsonl"}}


def write(folder: Path, resources: dict, cluster=None, budget=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {**BASE, "resources": resources}
    if budget:
        data["search"] = {"budget": budget}
    if cluster is not None:
        (folder / "cluster.yaml").write_text(yaml.safe_dump(cluster))
    (folder / "run.yaml").write_text(yaml.safe_dump(data))
    return folder / "run.yaml"


def node(itype, spot=False, gpus=None):
    cfg = {"InstanceType": itype}
    if spot:
        cfg["InstanceMarketOptions"] = {"MarketType": "spot"}
    return {"resources": {"GPU": gpus} if gpus is not None else {}, "node_config": cfg}


def test_the_repository_cluster_yaml_prices_its_spot_g5_by_the_gpu(tmp_path):
    shutil.copy(REPO / "cluster.yaml", tmp_path / "cluster.yaml")  # head m5.2xlarge, gpu_spot g5.2xlarge spot
    path = write(tmp_path, {"instance_prices": {"g5.2xlarge": {"on_demand": 1.212, "spot": 0.4848}}})
    r = load_config(path).resources
    assert r.price_per_gpu_hour == pytest.approx(0.4848)  # spot price / 1 GPU; the CPU head is not priced
    assert "gpu_spot: g5.2xlarge spot $0.4848/h / 1 GPU" in r.price_note


def test_the_dearest_gpu_hour_counts_across_node_types(tmp_path):
    cluster = {
        "available_node_types": {
            "head": node("m5.2xlarge"),
            "big": node("g5.12xlarge"),  # 4 GPUs (known type), on demand: 5.672 / 4 = 1.418
            "small": node("g5.xlarge", spot=True),  # 0.50 / 1
            "custom": node("x9.weird", gpus=2),  # declares 2 GPUs: 2.0 / 2 = 1.0
        }
    }
    prices = {
        "g5.12xlarge": {"on_demand": 5.672},
        "g5.xlarge": {"on_demand": 1.006, "spot": 0.5},
        "x9.weird": {"on_demand": 2.0},
    }
    path = write(tmp_path, {"instance_prices": prices}, cluster, budget={"usd": 14.18})
    cfg = load_config(path)
    assert cfg.resources.price_per_gpu_hour == pytest.approx(1.418)
    assert budget_gpu_hours(cfg) == pytest.approx(10.0)
    assert "the dearest counts" in budget_text(cfg) and "big: g5.12xlarge on-demand $5.672/h / 4 GPU" in budget_text(
        cfg
    )
    spend = spend_summary(cfg, [{"spend_gpu_hours": 2.0}], None)
    assert spend["usd"] == pytest.approx(2.836) and "small: g5.xlarge spot $0.5/h" in spend["price_note"]


def test_a_resolved_config_reloads_as_it_is(tmp_path):
    """The config a cluster job gets carries the resolved price: the head needs no cluster YAML."""
    shutil.copy(REPO / "cluster.yaml", tmp_path / "cluster.yaml")
    cfg = load_config(write(tmp_path, {"instance_prices": {"g5.2xlarge": {"on_demand": 1.2, "spot": 0.5}}}))
    (tmp_path / "cluster.yaml").unlink()
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(cfg.to_json()))
    again = load_config(tmp_path / "again.yaml")
    assert again.resources.price_per_gpu_hour == 0.5 and again.resources.price_note == cfg.resources.price_note


def problem(path) -> str:
    with pytest.raises(UserError) as e:
        load_config(path)
    return " ".join(e.value.problems)


def test_a_gpu_instance_type_missing_from_the_table_is_named(tmp_path):
    shutil.copy(REPO / "cluster.yaml", tmp_path / "cluster.yaml")
    p = problem(write(tmp_path, {"instance_prices": {"g6.xlarge": {"on_demand": 0.8}}}))
    assert "no price for g5.2xlarge (node type gpu_spot" in p and "g5.2xlarge: {on_demand:" in p


def test_a_spot_node_type_needs_a_spot_price(tmp_path):
    shutil.copy(REPO / "cluster.yaml", tmp_path / "cluster.yaml")
    p = problem(write(tmp_path, {"instance_prices": {"g5.2xlarge": {"on_demand": 1.2}}}))
    assert "asks for spot g5.2xlarge capacity" in p and "instance_prices.g5.2xlarge.spot" in p


def test_no_cluster_yaml_to_price(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = problem(write(tmp_path / "cfg", {"instance_prices": {"g5.2xlarge": {"on_demand": 1.2}}}))
    assert "no cluster.yaml beside the config" in p and "resources.cluster_config" in p
    p = problem(
        write(tmp_path / "cfg", {"instance_prices": {"g5.2xlarge": {"on_demand": 1.2}}, "cluster_config": "nope.yaml"})
    )
    assert "resources.cluster_config: nope.yaml not found" in p


def test_a_cluster_without_gpu_node_types_is_refused(tmp_path):
    cluster = {"available_node_types": {"head": node("m5.2xlarge"), "w": node("unknown.big")}}
    p = problem(write(tmp_path, {"instance_prices": {"unknown.big": {"on_demand": 1.0}}}, cluster))
    assert "no GPU node type" in p and "gpus" in p


def test_price_and_table_together_are_refused(tmp_path):
    path = write(tmp_path, {"price_per_gpu_hour": 2.0, "instance_prices": {"g5.2xlarge": {"on_demand": 1.2}}})
    assert "either price_per_gpu_hour or instance_prices" in problem(path)


def test_a_dollar_budget_accepts_the_table_as_its_price(tmp_path):
    shutil.copy(REPO / "cluster.yaml", tmp_path / "cluster.yaml")
    path = write(tmp_path, {"instance_prices": {"g5.2xlarge": {"on_demand": 1.2, "spot": 0.5}}}, budget={"usd": 5})
    assert budget_gpu_hours(load_config(path)) == pytest.approx(10.0)


def test_a_gpu_instance_declared_with_no_gpus_is_not_priced(tmp_path):
    """A node type may keep a GPU instance off trials with resources: {GPU: 0}: it needs no price."""
    cluster = {"available_node_types": {"head": node("g5.xlarge", gpus=0), "w": node("g5.2xlarge", spot=True)}}
    cfg = load_config(write(tmp_path, {"instance_prices": {"g5.2xlarge": {"on_demand": 1.2, "spot": 0.5}}}, cluster))
    assert cfg.resources.price_per_gpu_hour == 0.5 and "head" not in cfg.resources.price_note


def test_a_price_note_alone_does_not_skip_the_pricing(tmp_path):
    shutil.copy(REPO / "cluster.yaml", tmp_path / "cluster.yaml")
    res = {"instance_prices": {"g5.2xlarge": {"on_demand": 1.2, "spot": 0.5}}, "price_note": "mine"}
    cfg = load_config(write(tmp_path, res, budget={"usd": 5}))
    assert cfg.resources.price_per_gpu_hour == 0.5 and budget_gpu_hours(cfg) == pytest.approx(10.0)


def test_commands_that_count_no_spend_need_no_cluster_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "cfg", {"instance_prices": {"g5.2xlarge": {"on_demand": 1.2}}})
    cfg = load_config(path, prices=False)  # estimate, history: the price is never used
    assert cfg.resources.price_per_gpu_hour is None and cfg.resources.instance_prices is not None
