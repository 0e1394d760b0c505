"""`resources.instance_prices`: a GPU-hour price from the cluster launcher YAML's node types.

Each node type of the cluster YAML (`available_node_types`) that has GPUs is priced from the table:
its instance type (AWS `node_config.InstanceType`, GCP `machineType`, Azure `vmSize`), spot when the node
type asks for spot capacity (AWS `InstanceMarketOptions.MarketType: spot`, GCP `scheduling.preemptible`
or `provisioningModel: SPOT`), divided by its GPUs (the node type's `resources.GPU`, else the table's
`gpus`, else `GPUS_PER_INSTANCE`). The dearest GPU-hour among them becomes `resources.price_per_gpu_hour`:
Ray may place a trial on any of them, and a budget must hold wherever it lands. Node types without GPUs
(the head) are not priced: spend counts the devices trials hold.

Resolved once, on the machine that loads the config (`load_config`); the config a cluster job gets
carries the resolved price and `price_note`, so the head needs no cluster YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from orchestrator.core.errors import UserError

# GPUs per instance for common GPU instance types (AWS and GCP documentation, 2026).
_SIZES_ONE = ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")
GPUS_PER_INSTANCE: Dict[str, int] = {
    **{f"{fam}.{s}": 1 for fam in ("g4dn", "g5", "g6", "g6e") for s in _SIZES_ONE},
    **{f"{fam}.{s}": n for fam in ("g5", "g6", "g6e") for s, n in (("12xlarge", 4), ("24xlarge", 4), ("48xlarge", 8))},
    "g4dn.12xlarge": 4,
    "g4dn.metal": 8,
    "p3.2xlarge": 1,
    "p3.8xlarge": 4,
    "p3.16xlarge": 8,
    "p3dn.24xlarge": 8,
    "p4d.24xlarge": 8,
    "p4de.24xlarge": 8,
    "p5.48xlarge": 8,
    "p5e.48xlarge": 8,
    "p5en.48xlarge": 8,
    **{f"a2-highgpu-{n}g": n for n in (1, 2, 4, 8)},
    "a2-megagpu-16g": 16,
    **{f"a2-ultragpu-{n}g": n for n in (1, 2, 4, 8)},
    "a3-highgpu-8g": 8,
    "a3-megagpu-8g": 8,
    **{f"g2-standard-{c}": 1 for c in (4, 8, 12, 16, 32)},
    "g2-standard-24": 2,
    "g2-standard-48": 4,
    "g2-standard-96": 8,
}


def _instance_type(node_config: Dict[str, Any]) -> Optional[str]:
    for key in ("InstanceType", "machineType"):
        if node_config.get(key):
            return str(node_config[key]).rsplit("/", 1)[-1]
    vm = (((node_config.get("azure_arm_parameters") or {}).get("vmSize")) if node_config else None) or None
    return str(vm) if vm else None


def _is_spot(node_config: Dict[str, Any]) -> bool:
    market = (node_config.get("InstanceMarketOptions") or {}).get("MarketType")
    sched = node_config.get("scheduling") or {}
    if isinstance(sched, list):  # GCP's scheduling is sometimes written as a list of one mapping
        sched = sched[0] if sched else {}
    return (
        str(market).lower() == "spot"
        or bool(sched.get("preemptible"))
        or str(sched.get("provisioningModel", "")).upper() == "SPOT"
        or str((node_config.get("azure_arm_parameters") or {}).get("priority", "")).lower() == "spot"
    )


def find_cluster_yaml(given: Optional[str], config_dir: Path) -> Path:
    if given:
        path = Path(given).expanduser()
        path = path if path.is_absolute() else (config_dir / path if (config_dir / path).exists() else path)
        if not path.is_file():
            raise UserError(
                f"resources.cluster_config: {given} not found. Give the path of the Ray cluster launcher YAML "
                "whose node types instance_prices prices."
            )
        return path
    for cand in (config_dir / "cluster.yaml", Path("cluster.yaml")):
        if cand.is_file():
            return cand
    raise UserError(
        "resources.instance_prices prices the node types of a Ray cluster YAML, and there is no cluster.yaml "
        f"beside the config ({config_dir}) or in the current folder: set resources.cluster_config to its path, "
        "or give resources.price_per_gpu_hour instead."
    )


def gpu_node_prices(cluster: Dict[str, Any], prices: Dict[str, Any], where: str) -> List[Tuple[str, str, float]]:
    """[(node type, description, dollars per GPU-hour)] for each GPU node type. Raises UserError naming
    what is missing from the table."""
    types = cluster.get("available_node_types")
    if not isinstance(types, dict) or not types:
        raise UserError(f"{where} has no available_node_types: resources.instance_prices has nothing to price.")
    out = []
    for name, node in types.items():
        node = node or {}
        cfg = node.get("node_config") or {}
        itype = _instance_type(cfg)
        declared = (node.get("resources") or {}).get("GPU")
        entry = prices.get(itype) if itype else None
        if declared is not None:  # declared by the node type (GPU: 0 keeps a GPU instance off trials)
            gpus = declared
        else:
            gpus = (entry.gpus if entry is not None else None) or GPUS_PER_INSTANCE.get(itype or "")
        if not gpus:
            continue  # a CPU node type (the head): not priced
        if itype is None:
            raise UserError(f"{where}: node type {name} names no instance type (node_config.InstanceType).")
        if entry is None:
            raise UserError(
                f"resources.instance_prices has no price for {itype} (node type {name} of {where}): add "
                f"`{itype}: {{on_demand: <$ per hour>, spot: <$ per hour>}}`."
            )
        spot = _is_spot(cfg)
        if spot and entry.spot is None:
            raise UserError(
                f"node type {name} of {where} asks for spot {itype} capacity: give resources.instance_prices."
                f"{itype}.spot (its spot $ per hour)."
            )
        hourly = entry.spot if spot else entry.on_demand
        out.append(
            (name, f"{name}: {itype} {'spot' if spot else 'on-demand'} ${hourly:g}/h / {gpus} GPU", hourly / gpus)
        )
    if not out:
        raise UserError(
            f"{where} has no GPU node type that resources.instance_prices could price (none declares resources.GPU "
            "or is a known GPU instance type): give the table's gpus for your instance type."
        )
    return out


def resolve_prices(cfg, config_dir: Path):
    """The config with price_per_gpu_hour and price_note filled in from instance_prices (unchanged without)."""
    r = cfg.resources
    if r.instance_prices is None or (r.price_note is not None and r.price_per_gpu_hour is not None):
        return cfg  # nothing to price, or priced already (a config written by a run, sent to a cluster job)
    path = find_cluster_yaml(r.cluster_config, config_dir)
    try:
        cluster = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"resources.cluster_config: cannot read {path}: {e}") from None
    rows = gpu_node_prices(cluster, r.instance_prices, str(path))
    price = max(p for _, _, p in rows)
    note = "; ".join(f"{d} = ${p:.4g}/GPU-h" for _, d, p in rows) + f" (from {path.name}; the dearest counts)"
    return cfg.model_copy(
        update={"resources": r.model_copy(update={"price_per_gpu_hour": round(price, 6), "price_note": note})}
    )
