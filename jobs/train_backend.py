"""The torch process-group backend of a trial's Train workers, chosen where they run, and where Ray placed them.

Ray Train picks `nccl` whenever a worker asks for GPUs. A worker given a GPU share on a node without CUDA
(Ray started with logical GPUs: `--gpus` on a CPU machine, as the placement test does) then fails to
start, and Accelerate is pointed at cuda:N; `DeviceTorchConfig` asks rank 0 whether it sees CUDA and,
when it does not, uses gloo and the CPU (nccl and the assigned GPU as before when it does).
`placement()` is what Ray assigned the worker, for its reports.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ray.train.torch import TorchConfig
from ray.train.torch.config import _TorchBackend


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


DEVICE = "nccl-or-gloo"  # resolved in _DeviceBackend.on_start (TorchTrainer fills in only an empty backend)


def _use_cpu() -> None:
    import os

    os.environ["ACCELERATE_TORCH_DEVICE"] = "cpu"


class _DeviceBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config):
        if backend_config.backend == DEVICE:
            gpu = worker_group.get_resources_per_worker().get("GPU", 0) > 0
            cuda = gpu and worker_group.execute_single(0, _has_cuda)
            backend_config = dataclasses.replace(backend_config, backend="nccl" if cuda else "gloo")
            super().on_start(worker_group, backend_config)
            if gpu and not cuda:  # Ray told Accelerate to use cuda:N (from the GPU ids it assigned)
                worker_group.execute(_use_cpu)
            return
        super().on_start(worker_group, backend_config)


@dataclass
class DeviceTorchConfig(TorchConfig):
    """TorchConfig whose backend is chosen where the workers run: nccl with CUDA, gloo without."""

    backend: Optional[str] = DEVICE

    @property
    def backend_cls(self):
        return _DeviceBackend


def placement() -> Dict[str, Any]:
    """The GPU ids and the GPU share Ray assigned this worker ({} without GPUs), and its node."""
    import ray

    ctx = ray.get_runtime_context()
    ids = ctx.get_accelerator_ids().get("GPU") or []
    if not ids:
        return {}
    return {
        "placed_at": time.time(),
        "ray_gpu_ids": ",".join(str(i) for i in ids),
        "ray_gpu_share": float(ctx.get_assigned_resources().get("GPU", 0.0)),
        "ray_node_id": ctx.get_node_id(),
    }
