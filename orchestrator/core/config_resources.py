"""The `resources:` section of the YAML config (orchestrator.core.config_sections holds the others)."""

from __future__ import annotations

from typing import Annotated, Dict, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from orchestrator.core.config_data import _Section


class InstancePrice(_Section):
    """One entry of `resources.instance_prices`: dollars per instance-hour."""

    on_demand: float = Field(..., gt=0, description="On-demand dollars per instance-hour.")
    spot: Optional[float] = Field(
        None, gt=0, description="Spot dollars per instance-hour (needed when a node type asks for spot)."
    )
    gpus: Optional[int] = Field(
        None,
        ge=1,
        description="GPUs per instance; needed only for instance types qlora-launch does not know and whose "
        "node type in the cluster YAML declares no resources.GPU.",
    )


class ResourcesConfig(_Section):
    """`resources:` what one trial asks Ray for."""

    num_workers: int = Field(
        1, ge=1, description="Ray Train workers per trial (one device each): DDP ranks or FSDP shards (strategy)."
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="How a trial's num_workers share the work. ddp: each worker holds the whole model and "
        "trains on its share of every batch. fsdp: the base weights, LoRA weights, gradients and optimizer "
        "state are sharded across the workers (each holds 1/num_workers; activations are not sharded), so a "
        "model too large for one device trains on several.",
    )
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs per Train worker.")
    gpus_per_worker: Union[Annotated[float, Field(ge=0)], Literal["auto"]] = Field(
        0.0,
        description="GPUs per Train worker, at most 1 (a trial spreads over GPUs through num_workers); fractions "
        "share one GPU. auto: each trial asks for the share its own "
        "estimated peak memory needs (x resources.memory_margin, rounded up to 1/8 of resources.gpu_memory_gb, "
        "at most 1 GPU).",
    )
    memory_margin: float = Field(
        1.2,
        ge=1.0,
        le=4.0,
        description="gpus_per_worker auto asks for the estimated peak times this. `qlora-launch estimate "
        "--calibrate RUN_DIR` suggests one from a past run's measured peaks (GPU runs).",
    )
    gpu_memory_gb: Optional[float] = Field(
        None,
        gt=0,
        description="Memory of one GPU in GiB, for planning (training.gradient_checkpointing: auto). Unset on GPU "
        "workers: auto keeps checkpointing on.",
    )

    @property
    def gpus(self) -> float:
        """gpus_per_worker as a number: `auto` is at most one GPU (each trial's share is resolved in the search)."""
        return 1.0 if self.gpus_per_worker == "auto" else self.gpus_per_worker

    @property
    def priced(self) -> bool:
        """A dollar price is set, directly or through instance_prices (resolved when the config loads)."""
        return self.price_per_gpu_hour is not None or self.instance_prices is not None

    @field_validator("gpus_per_worker", mode="before")
    @classmethod
    def _number_or_auto(cls, v):
        if v == "auto":
            return v
        try:
            ok = not isinstance(v, bool) and float(v) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"must be a number of GPUs >= 0 (fractions share one GPU) or auto (got {v!r})")
        return v

    @model_validator(mode="after")
    def _one_gpu_per_worker(self):
        if self.gpus_per_worker != "auto" and self.gpus_per_worker > 1:
            n = self.gpus_per_worker
            raise ValueError(
                f"resources.gpus_per_worker is {n:g}, but a worker trains on one device: more GPUs per worker "
                f"would sit idle (the model is loaded on one). Set gpus_per_worker: 1 and num_workers: "
                f"{self.num_workers * int(-(-n // 1))} (with strategy: fsdp to shard a model too large for one GPU)"
            )
        return self

    @model_validator(mode="after")
    def _auto_gpus_need_memory(self):
        if self.gpus_per_worker == "auto" and self.gpu_memory_gb is None:
            raise ValueError(
                "resources.gpus_per_worker auto sizes each trial's GPU share from its estimated memory: set "
                "resources.gpu_memory_gb (the memory of one GPU in GiB, e.g. 80), or a number of GPUs"
            )
        return self

    peak_tflops: Optional[float] = Field(
        None,
        gt=0,
        description="Peak dense bf16 TFLOP/s of one device, for each trial's MFU (default: a table of known GPUs by "
        "name; on CPU MFU stays empty unless this is set).",
    )
    price_per_gpu_hour: Optional[float] = Field(
        None,
        gt=0,
        description="What one GPU-hour costs in dollars (on CPU-only trials: one Train worker-hour); "
        "search.budget.usd needs it (or instance_prices). With it, each trial's spend_usd is recorded.",
    )
    instance_prices: Optional[Dict[str, InstancePrice]] = Field(
        None,
        description="Dollars per instance-hour by instance type, e.g. {g5.2xlarge: {on_demand: 1.212, spot: 0.49}}. "
        "Instead of price_per_gpu_hour: the GPU node types of resources.cluster_config are priced from it "
        "(spot where the node type asks for spot capacity) and divided by their GPUs; the dearest GPU-hour "
        "of those node types becomes price_per_gpu_hour, so a budget holds wherever a trial lands.",
    )
    cluster_config: Optional[str] = Field(
        None,
        description="The Ray cluster launcher YAML that instance_prices prices (its available_node_types); "
        "default: cluster.yaml beside the run config, else in the current folder.",
    )
    price_note: Optional[str] = Field(
        None,
        description="Filled in by qlora-launch when instance_prices set price_per_gpu_hour: which node "
        "types and prices it came from. Not an input.",
    )
    custom: Dict[str, float] = Field(
        default_factory=dict,
        description="Extra Ray resources each Train worker and the merge task ask for (e.g. {gpu_pool: 1}): "
        "pins them to the nodes that offer them (`ray start --resources`).",
    )
