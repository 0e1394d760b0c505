"""The YAML config as a whole: `RunConfig` assembles the sections of `config_sections`, every problem at once.

The validated `RunConfig` crosses to the Ray workers as plain JSON (`RunConfig.model_dump(mode="json")`)
and is validated again there by the same model, so both sides agree on every default.
Loading, `--set` overrides and error formatting live in `orchestrator.core.config_load`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Optional

from pydantic import Field, model_validator

from orchestrator.core.config_sections import (
    GENERATION_METRICS,
    SEARCHABLE,
    DataConfig,
    DistributionConfig,
    FaultToleranceConfig,
    LoraConfig,
    MergeConfig,
    MetricsConfig,
    ModelConfig,
    OutputConfig,
    PublishConfig,
    QuantizationConfig,
    ResourcesConfig,
    RetrainConfig,
    SearchConfig,
    TrackingConfig,
    TrainingConfig,
    _Section,
)
from orchestrator.core.errors import UserError
from orchestrator.core.training_options import lora_init_problem


class RunConfig(_Section):
    """The whole config file."""

    model: ModelConfig
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    fault_tolerance: FaultToleranceConfig = Field(default_factory=FaultToleranceConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    merge: MergeConfig = Field(default_factory=MergeConfig)
    publish: Optional[PublishConfig] = None
    retrain: Optional[RetrainConfig] = None

    @model_validator(mode="after")
    def _cross_section(self):
        if self.data.format != "columns" and self.model.task != "causal_lm":
            raise ValueError(
                f"data.format {self.data.format} trains on chat turns and needs model.task causal_lm; "
                "use data.format columns (with a prompt_template) for seq2seq"
            )
        for key, dist in self.search.space.items():
            _check_space_bounds(key, dist)
        r = self.resources
        if r.instance_prices is not None and r.price_per_gpu_hour is not None and r.price_note is None:
            raise ValueError(
                "resources: give either price_per_gpu_hour or instance_prices (priced through the cluster YAML's "
                "node types), not both"
            )
        if self.search.budget and self.search.budget.usd is not None and not r.priced:
            raise ValueError(
                "search.budget.usd is counted in dollars: set resources.price_per_gpu_hour (what one GPU-hour "
                "costs; on CPU-only trials one worker-hour) or resources.instance_prices, or give the budget as "
                "search.budget.gpu_hours"
            )
        sharded = r.strategy == "fsdp" and r.num_workers > 1
        init_problem = lora_init_problem(self.lora.init, self.quantization.mode, r.gpus, sharded)
        if init_problem:
            raise ValueError(init_problem)
        if sharded and self.quantization.mode == "8bit":
            raise ValueError(
                "resources.strategy fsdp shards a 4-bit or 16-bit base; bitsandbytes' 8-bit weights keep a "
                "per-row scale FSDP cannot shard with them: set quantization.mode 4bit (QLoRA) or none, or "
                "use resources.strategy ddp"
            )
        if self.training.kernels == "liger" and self.resources.gpus <= 0:
            raise ValueError(
                "training.kernels liger runs Liger's Triton kernels, which need a CUDA GPU, and the trials run on CPU "
                "(resources.gpus_per_worker is 0): give the workers a GPU, or set training.kernels to auto or none"
            )
        return self

    # ---- helpers used on both sides -------------------------------------------------------------
    @property
    def experiment(self) -> str:
        return self.output.experiment or "experiment"

    @property
    def needs_generation(self) -> bool:
        return self.search.metric in GENERATION_METRICS

    @property
    def data_endpoint(self) -> Optional[str]:
        """The S3 endpoint for s3:// data: data.endpoint_url, else output.endpoint_url."""
        return self.data.endpoint_url or self.output.endpoint_url

    @property
    def model_endpoint(self) -> Optional[str]:
        """The S3 endpoint for an s3:// base model: model.endpoint_url, else output.endpoint_url."""
        return self.model.endpoint_url or self.output.endpoint_url

    def to_json(self) -> Dict[str, Any]:
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:12]

    def with_params(self, params: Dict[str, Any]) -> "RunConfig":
        """A copy with dotted keys (a trial's sampled hyperparameters) applied and validated."""
        data = self.to_json()
        for key, value in params.items():
            _set_dotted(data, key, value)
        return RunConfig.model_validate(data)

    def fixed_params(self) -> Dict[str, Any]:
        """The current value of every key the search space covers (what `train` runs with)."""
        data = self.to_json()
        return {k: _get_dotted(data, k) for k in self.search.space}


def _check_space_bounds(key: str, dist: DistributionConfig) -> None:
    vals = dist.bounds()
    nums = [v for v in vals if isinstance(v, (int, float))]
    if len(nums) != len(vals):
        raise ValueError(f"search.space.{key}: values must be numbers (got {vals})")
    if key == "training.learning_rate" and min(nums) <= 0:
        raise ValueError(f"search.space.{key}: learning rates must be > 0 (got {min(nums)})")
    if key == "lora.r" and min(nums) < 1:
        raise ValueError(f"search.space.{key}: LoRA ranks must be >= 1 (got {min(nums)})")
    if key == "lora.dropout" and (min(nums) < 0 or max(nums) >= 1):
        raise ValueError(f"search.space.{key}: dropout must lie in [0, 1) (got {vals})")
    if SEARCHABLE[key] is int and dist.type in ("uniform", "loguniform"):
        raise ValueError(f"search.space.{key} is an integer: use choice or randint, not {dist.type}")


def _set_dotted(data: Dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        if node.get(p) is None:
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise UserError(f"--set {key}: '{p}' is not a section")
    node[parts[-1]] = value


def _get_dotted(data: Dict[str, Any], key: str) -> Any:
    node: Any = data
    for p in key.split("."):
        node = node[p]
    return node
