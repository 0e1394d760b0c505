"""A trial that no node can ever host is refused before the search starts, locally and on a cluster.

One trial asks Ray for `resources.num_workers` bundles of {CPU: cpus_per_worker, GPU: gpus_per_worker,
**custom} (Ray Train's placement group, PACK: the workers may spread over nodes, each bundle on one
node) plus a sliver of CPU for its Tune driver (jobs.search.TRIAL_CPU). Ray would wait for such a
trial forever (observed: nine silent minutes on two 1-CPU nodes); here it exits 2 naming what one trial
needs, what the largest node has, and the fix.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from orchestrator.core.config import RunConfig

EPS = 1e-9
MIN_GPU_SHARE = 0.125  # orchestrator.estimate.trial_plan.GPU_STEP
NODE_KEYS = ("CPU", "GPU")


def worker_request(cfg: RunConfig) -> Dict[str, float]:
    """What one Train worker asks Ray for (jobs.search.trial_driver builds the same)."""
    r = cfg.resources
    gpu = MIN_GPU_SHARE if r.gpus_per_worker == "auto" else r.gpus  # auto: the smallest share a trial may get
    return {"CPU": r.cpus_per_worker, **({"GPU": gpu} if gpu else {}), **r.custom}


def _fmt(res: Dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in res.items()) + "}"


def _workers_on(node: Dict[str, float], per_worker: Dict[str, float]) -> int:
    """How many workers one node holds."""
    return min(int((node.get(k, 0.0) + EPS) // v) for k, v in per_worker.items() if v > 0)


def placeable(per_worker: Dict[str, float], workers: int, driver_cpu: float, nodes: List[Dict[str, float]]) -> bool:
    """Whether `workers` bundles of `per_worker` and the trial driver's CPU fit on `nodes` at all (empty cluster)."""
    left = workers
    spare = False
    for node in sorted(nodes, key=lambda n: _workers_on(n, per_worker), reverse=True):
        n = min(left, _workers_on(node, per_worker))
        left -= n
        spare = spare or node.get("CPU", 0.0) - n * per_worker.get("CPU", 0.0) + EPS >= driver_cpu
    return left <= 0 and spare


def largest_node(nodes: List[Dict[str, float]]) -> Dict[str, float]:
    """The node with the most GPUs, then CPUs."""
    return max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0))) if nodes else {}


def fit_problem(cfg: RunConfig, nodes: List[Dict[str, float]], where: str, fix: str) -> Optional[str]:
    """The message when one trial of `cfg` can never be placed on `nodes` (each node's total resources), else
    None. `where` names the nodes ("this machine (Ray: --cpus 1)", "the cluster at ..."); `fix` ends the message."""
    from jobs.search import TRIAL_CPU

    r = cfg.resources
    per_worker = worker_request(cfg)
    if placeable(per_worker, r.num_workers, TRIAL_CPU, nodes):
        return None
    big = largest_node(nodes)
    has = {k: big.get(k, 0.0) for k in list(NODE_KEYS) + [k for k in per_worker if k not in NODE_KEYS]}
    short = [k for k, v in per_worker.items() if v > 0 and not any(n.get(k, 0.0) + EPS >= v for n in nodes)]
    keys = ", ".join(f"resources.{'custom.' + k if k not in NODE_KEYS else k.lower() + 's_per_worker'}" for k in short)
    return (
        f"`resources`: one trial needs {r.num_workers} worker(s) x {_fmt(per_worker)} plus {TRIAL_CPU:g} CPU for "
        f"its driver, but the largest node of {where} has {_fmt(has)} ({len(nodes)} node(s)): Ray would wait for "
        f"it forever. Lower {keys or 'resources.num_workers or resources.cpus_per_worker'}, or {fix}."
    )


def local_nodes() -> List[Dict[str, float]]:
    """The total resources of each live node of the connected Ray."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def cluster_nodes(cluster: Any) -> Tuple[Optional[List[Dict[str, float]]], str]:
    """Each live node's total resources from the dashboard's state API (/api/v0/nodes), or (None, why)."""
    try:
        resp = cluster.client._do_request("GET", "/api/v0/nodes?limit=10000&detail=true")
        if resp.status_code != 200:
            return None, f"the dashboard answered {resp.status_code} to /api/v0/nodes"
        rows = json.loads(resp.text)["data"]["result"]["result"]
    except Exception as e:  # an older or unusual dashboard: the check is skipped, never the run
        return None, f"could not read the cluster's nodes ({type(e).__name__}: {str(e)[:120]})"
    return [dict(n.get("resources_total") or {}) for n in rows if n.get("state") == "ALIVE"], ""


def autoscaling(cluster: Any) -> bool:
    """Whether the cluster's autoscaler may add worker nodes of configured types (its status lists them under
    'Worker node types:'; a fixed `ray start` cluster lists none). Unknown: True (the check is then skipped)."""
    try:
        resp = cluster.client._do_request("GET", "/api/cluster_status")
        text = json.loads(resp.text)["data"].get("autoscalingStatus") or ""
    except Exception:
        return True
    _, found, types = text.partition("Worker node types:")
    return not found or bool(types.strip())


def check_cluster_fits(cfg: RunConfig, cluster: Any, echo=print) -> None:
    """Before a cluster run is submitted: refuse a trial that no node of a fixed-size cluster can host.
    `cluster`: orchestrator.launch.ray_jobs.connect's Cluster.

    Raises:
        UserError: naming what one trial needs, the largest node and the fix.
    """
    from orchestrator.core.errors import UserError

    nodes, why = cluster_nodes(cluster)
    if nodes is None:
        echo(f"Note: {why}; one trial's resources were not checked against the cluster's nodes.")
        return
    problem = fit_problem(cfg, nodes, f"the cluster at {cluster.address}", "add a node that large to the cluster")
    if problem and autoscaling(cluster):
        echo(f"Note: no node of the cluster can host one trial now; its autoscaler must add one. {problem}")
    elif problem:
        raise UserError(problem)
