"""One trial's resource request against the nodes (orchestrator.launch.capacity) and local mode's CPU shaving
(orchestrator.launch.local.fit_to_machine): values worked out by hand, no Ray."""

from __future__ import annotations

from orchestrator.core.config import RunConfig
from orchestrator.launch.capacity import fit_problem, placeable, worker_request
from orchestrator.launch.local import fit_to_machine

DRIVER = 0.01  # jobs.search.TRIAL_CPU


def make_cfg(resources=None, search=None) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {"name_or_path": "t5-small"},
            "data": {"train": "examples/data/seed/train.jsonl"},
            "resources": resources or {},
            "search": {"num_samples": 4, "max_concurrent_trials": 2, **(search or {})},
        }
    )


def test_worker_request_is_what_the_trial_driver_asks_for():
    assert worker_request(make_cfg()) == {"CPU": 1.0}
    cfg = make_cfg({"cpus_per_worker": 4, "gpus_per_worker": 0.5, "custom": {"gpu_pool": 1}})
    assert worker_request(cfg) == {"CPU": 4.0, "GPU": 0.5, "gpu_pool": 1.0}


def test_placeable_by_hand():
    one = {"CPU": 1.0}
    assert placeable(one, 1, DRIVER, [{"CPU": 2.0}])
    assert not placeable(one, 1, DRIVER, [{"CPU": 1.0}])  # the worker takes the node, the driver's sliver has none
    assert placeable(one, 1, DRIVER, [{"CPU": 1.0}, {"CPU": 1.0}])  # the driver goes on the other node
    assert not placeable(one, 2, DRIVER, [{"CPU": 1.0}, {"CPU": 1.0}])  # 2.01 CPUs on 2
    assert placeable(one, 2, DRIVER, [{"CPU": 2.0}, {"CPU": 1.0}])  # PACK may spread the workers over nodes
    assert not placeable(one, 3, DRIVER, [{"CPU": 2.0}, {"CPU": 1.0}])
    assert placeable({"CPU": 0.99}, 2, DRIVER, [{"CPU": 2.0}])  # what fit_to_machine hands two 1-CPU workers
    gpu = {"CPU": 1.0, "GPU": 1.0}
    assert not placeable(gpu, 1, DRIVER, [{"CPU": 64.0}])
    assert placeable(gpu, 2, DRIVER, [{"CPU": 8.0}, {"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}])
    assert placeable({"CPU": 1.0, "GPU": 0.25}, 4, DRIVER, [{"CPU": 8.0, "GPU": 1.0}])  # four on one GPU


def test_fit_problem_names_what_one_trial_needs_the_largest_node_and_the_fix():
    cfg = make_cfg({"cpus_per_worker": 2})
    msg = fit_problem(cfg, [{"CPU": 1.0, "memory": 1e9}], "this machine", "pass a larger --cpus")
    assert msg is not None
    assert "one trial needs 1 worker(s) x {CPU: 2} plus 0.01 CPU for its driver" in msg
    assert "the largest node of this machine has {CPU: 1, GPU: 0} (1 node(s))" in msg
    assert "Lower resources.cpus_per_worker, or pass a larger --cpus." in msg
    assert fit_problem(cfg, [{"CPU": 4.0}], "x", "y") is None

    gpus = make_cfg({"gpus_per_worker": 1, "custom": {"gpu_pool": 1}})
    nodes = [{"CPU": 16.0}, {"CPU": 8.0, "gpu_pool": 1.0}]
    msg = fit_problem(gpus, nodes, "the cluster at http://head:8265", "add a node that large to the cluster")
    assert "x {CPU: 1, GPU: 1, gpu_pool: 1}" in msg and "has {CPU: 16, GPU: 0, gpu_pool: 0} (2 node(s))" in msg
    assert "Lower resources.gpus_per_worker, or add a node that large" in msg  # gpu_pool exists on a node

    # every worker fits some node, but not all of them together: the count is what to lower
    many = make_cfg({"num_workers": 3})
    msg = fit_problem(many, [{"CPU": 1.0}, {"CPU": 1.0}], "the cluster", "add nodes")
    assert "3 worker(s) x {CPU: 1}" in msg and "Lower resources.num_workers or resources.cpus_per_worker" in msg


def test_fit_to_machine_shaves_cpus_only_where_that_makes_trials_fit():
    lines = []
    # two 1-CPU trials beside their drivers on 2 CPUs: 0.99 each (as before)
    assert fit_to_machine(make_cfg(), 2, lines.append).resources.cpus_per_worker == 0.99
    assert "so 2 trials run at once" in lines[-1]
    # enough CPUs: unchanged
    assert fit_to_machine(make_cfg(), 4, lines.append).resources.cpus_per_worker == 1.0
    # two 2-CPU trials cannot share 2 CPUs, and one would not fit beside its driver: one at a time, 1.99
    cfg = fit_to_machine(make_cfg({"cpus_per_worker": 2}), 2, lines.append)
    assert cfg.resources.cpus_per_worker == 1.99 and "one trial fits at a time" in lines[-1]
    # two 2-CPU trials on 3 CPUs: (3 - 2 x 0.01) / 2 = 1.49 each, not below half the ask (as before)
    assert fit_to_machine(make_cfg({"cpus_per_worker": 2}), 3, lines.append).resources.cpus_per_worker == 1.49
    # two 4-CPU trials on 5 CPUs: 2.49 is above half of 4, so both run at once
    assert fit_to_machine(make_cfg({"cpus_per_worker": 4}), 5, lines.append).resources.cpus_per_worker == 2.49
    # a 2-CPU worker on 1 CPU: shaving would halve it and more, so it is left for fit_problem to refuse
    big = make_cfg({"cpus_per_worker": 2})
    assert fit_to_machine(big, 1, lines.append) is big
    assert fit_problem(big, [{"CPU": 1.0}], "this machine", "pass --cpus") is not None
