"""The YAML config's sections: one pydantic model per section, unknown keys rejected.

`orchestrator.core.config.RunConfig` assembles them into the whole config file.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from orchestrator.core.config_budget import BudgetConfig
from orchestrator.core.config_data import DataConfig, _Section  # noqa: F401  (DataConfig re-exported)
from orchestrator.core.config_resources import ResourcesConfig  # noqa: F401  (re-exported)
from orchestrator.core.errors import did_you_mean
from orchestrator.core.training_options import OPTIMIZERS

ROUGE_METRICS = ("eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_rougeLsum")
# Metrics computed on generated text (both tasks): the search, the test score and the report use them.
GENERATION_METRICS = ROUGE_METRICS + ("eval_exact_match",)


class ModelConfig(_Section):
    """`model:` the base model to fine-tune."""

    name_or_path: str = Field(
        description="Hub id (e.g. t5-small), a local model folder, or s3://bucket/prefix of a save_pretrained "
        "folder (fetched once per node into a local cache keyed by the objects' ETags)."
    )
    endpoint_url: Optional[str] = Field(
        None, description="S3-compatible endpoint for an s3:// name_or_path (default: output.endpoint_url)."
    )
    revision: Optional[str] = Field(None, description="Hub revision (branch, tag or commit) to pin.")
    task: Literal["seq2seq", "causal_lm"] = Field(
        "seq2seq", description="seq2seq (T5/BART: input -> target) or causal_lm (prompt + completion)."
    )
    trust_remote_code: bool = Field(False, description="Allow model code from the hub repo to run.")
    attn_implementation: Optional[Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3"]] = Field(
        None,
        description="Attention kernels (default: transformers' choice, sdpa); flash_attention_* needs the "
        "flash-attn package and a GPU.",
    )
    chat_template: Optional[str] = Field(
        None,
        description="A Jinja chat template (the tokenizer's chat_template format) used for data.format messages "
        "and instruction instead of the tokenizer's own; needed when the tokenizer has none.",
    )


class QuantizationConfig(_Section):
    """`quantization:` how the frozen base weights are stored during training."""

    mode: Literal["4bit", "8bit", "none"] = Field("4bit", description="4bit (QLoRA), 8bit, or none (plain LoRA).")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; nf4 is QLoRA's.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too (QLoRA).")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="dtype of the matmuls on dequantized weights."
    )


class LoraConfig(_Section):
    """`lora:` the trainable low-rank adapter."""

    r: int = Field(8, ge=1, description="LoRA rank (>= 1).")
    alpha: int = Field(16, ge=1, description="LoRA scaling alpha; the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input, in [0, 1).")
    target_modules: Union[Literal["all-linear"], List[str]] = Field(
        "all-linear", description='Module names to adapt, e.g. [q, k, v], or "all-linear".'
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases to train.")
    use_dora: bool = Field(
        False,
        description="DoRA: split each adapted weight into a magnitude vector (trained) and a direction (LoRA "
        "trains it); works on the 4/8-bit base, slower per step than plain LoRA.",
    )
    use_rslora: bool = Field(
        False,
        description="rsLoRA: scale the update by alpha / sqrt(r) instead of alpha / r, so higher ranks keep "
        "learning (matters when searching lora.r).",
    )
    init: Literal["default", "gaussian", "pissa", "loftq"] = Field(
        "default",
        description="How the adapter starts (peft's init_lora_weights). default: A Kaiming-uniform, B zero; "
        "gaussian: A Gaussian (1/r), B zero. loftq: A and B fitted (SVD) to the 4-bit quantization error of "
        "each weight, from the model's full-precision safetensors; peft computes it on CUDA, so it is refused "
        "with resources.gpus_per_worker 0 and with any quantization.mode but 4bit. pissa is refused: peft "
        "takes the SVD of unquantized weights only (a 4/8-bit base is rejected), and with quantization.mode "
        "none it rewrites the base weights to the residual, which the merge, scoring and publishing here "
        "(they load the original base) would not see.",
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError('must name at least one module, or be "all-linear"')
        return v

    @field_validator("init")
    @classmethod
    def _no_pissa(cls, v):
        if v == "pissa":
            raise ValueError(
                "pissa is not supported: peft takes the SVD of unquantized weights only (a 4/8-bit base is "
                "rejected), and on a full-precision base it rewrites the base weights to the residual, which "
                "the merge, scoring and publishing here (they load the original base) would not apply; use "
                "loftq (4-bit, CUDA), gaussian or default"
            )
        return v


class TrainingConfig(_Section):
    """`training:` the Hugging Face TrainingArguments we expose."""

    epochs: float = Field(3.0, gt=0, description="Number of epochs (ignored when max_steps is set).")
    max_steps: Optional[int] = Field(None, ge=1, description="Total optimizer steps; overrides epochs.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate (> 0).")
    batch_size: int = Field(8, ge=1, description="Per-worker train batch size.")
    eval_batch_size: Optional[int] = Field(None, ge=1, description="Per-worker eval batch size (default: batch_size).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Share of steps with linear warm-up.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule."
    )
    eval_steps: int = Field(10, ge=1, description="Evaluate (and report to Tune) every N steps.")
    save_steps: Optional[int] = Field(None, ge=1, description="Checkpoint every N steps; a multiple of eval_steps.")
    logging_steps: int = Field(1, ge=1, description="Log training loss every N steps.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept per trial (the best is always kept).")
    seed: int = Field(42, description="Random seed of the trial.")
    gradient_checkpointing: Union[bool, Literal["auto"]] = Field(
        "auto",
        description="Recompute activations (non-reentrant) to save memory, at up to 2x the step time. auto: on "
        "only for the trials whose estimated peak memory (with their sampled rank and batch size) does not fit "
        "resources.gpu_memory_gb x gpus_per_worker (on CPU: 80 % of host memory shared by the concurrent workers).",
    )
    group_by_length: bool = Field(True, description="Batch examples of similar length to cut padding.")
    generation_max_length: int = Field(64, ge=1, description="Max new tokens when a metric needs generations.")
    generation_num_beams: int = Field(1, ge=1, description="Beams for generation at eval.")
    dataloader_num_workers: int = Field(0, ge=0, description="DataLoader worker processes per Train worker.")
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = Field(
        "auto", description="auto: bf16 on GPUs that have it, else fp32."
    )
    optim: Literal[OPTIMIZERS] = Field(  # type: ignore[valid-type]
        "adamw_torch_fused",
        description="The HF Trainer's optimizer (TrainingArguments.optim). Default adamw_torch_fused (the "
        "Trainer's own default); the QLoRA recipe uses paged_adamw_8bit (8-bit states paged to CPU memory "
        "under GPU memory pressure). The bitsandbytes ones (*_8bit, paged_*, *_bnb*) also run on CPU with "
        "bitsandbytes 0.50 (paging only pages on CUDA).",
    )
    max_grad_norm: float = Field(
        1.0, ge=0.0, description="Clip the gradient norm to this (0: no clipping); the QLoRA recipe uses 0.3."
    )
    kernels: Literal["none", "liger", "auto"] = Field(
        "auto",
        description="liger: Liger's fused Triton kernels via the HF Trainer (CUDA workers, `gpu` extra). auto: liger "
        "on CUDA when liger-kernel is installed and supports the model type, else none. Trials record theirs.",
    )
    torch_compile: Union[bool, Literal["auto"]] = Field(
        "auto", description="torch.compile the model (TrainingArguments.torch_compile); auto: off until measured."
    )

    @field_validator("gradient_checkpointing", "torch_compile", mode="before")
    @classmethod
    def _bool_or_auto(cls, v):
        if not isinstance(v, bool) and v != "auto":
            raise ValueError(f"must be true, false or auto (got {v!r})")
        return v

    @property
    def checkpointing_on(self) -> bool:
        """gradient_checkpointing as a bool; an `auto` left unresolved (no estimate for the trial) keeps it on."""
        return self.gradient_checkpointing is not False

    @model_validator(mode="after")
    def _save_multiple_of_eval(self):
        if self.save_steps is not None and self.save_steps % self.eval_steps:
            raise ValueError(
                f"training.save_steps ({self.save_steps}) must be a multiple of training.eval_steps "
                f"({self.eval_steps}) so every checkpoint carries a fresh metric"
            )
        return self


SEARCHABLE = {
    "training.learning_rate": float,
    "training.batch_size": int,
    "training.weight_decay": float,
    "training.warmup_ratio": float,
    "training.gradient_accumulation_steps": int,
    "lora.r": int,
    "lora.alpha": int,
    "lora.dropout": float,
}


class DistributionConfig(_Section):
    """One search-space entry: {type: loguniform, low, high} or {type: choice, values: [...]}."""

    type: Literal["loguniform", "uniform", "choice", "randint"]
    low: Optional[float] = None
    high: Optional[float] = None
    values: Optional[List[Any]] = None

    @model_validator(mode="after")
    def _shape(self):
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty 'values' list")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"{self.type} needs 'low' and 'high'")
            if self.low >= self.high:
                raise ValueError(f"low ({self.low}) must be below high ({self.high})")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError(f"loguniform needs low > 0 (got {self.low})")
        return self

    def bounds(self) -> List[Any]:
        return list(self.values or []) if self.type == "choice" else [self.low, self.high]


class SearchConfig(_Section):
    """`search:` the Ray Tune search over trials."""

    num_samples: int = Field(4, ge=1, description="Number of trials.")
    max_concurrent_trials: int = Field(2, ge=1, description="Trials running at once.")
    metric: str = Field(
        "eval_loss",
        description="eval_loss, or a metric on greedy generations (seq2seq and causal_lm): eval_rouge1, "
        "eval_rouge2, eval_rougeL, eval_rougeLsum, eval_exact_match.",
    )
    mode: Optional[Literal["min", "max"]] = Field(None, description="min or max; inferred from the metric if absent.")
    scheduler: Literal["asha", "fifo"] = Field("asha", description="asha stops weak trials early; fifo runs all.")
    algorithm: Literal["random", "optuna"] = Field("random", description="How trials are sampled.")
    grace_period: int = Field(1, ge=1, description="ASHA: evaluations a trial gets before it can be stopped.")
    reduction_factor: int = Field(2, ge=2, description="ASHA: keep 1/reduction_factor at each rung.")
    space: Dict[str, DistributionConfig] = Field(
        default_factory=dict, description="Dotted config key -> distribution, e.g. training.learning_rate."
    )
    seed: Optional[int] = Field(None, description="Seed of the search algorithm (reproducible sampling).")
    budget: Optional[BudgetConfig] = Field(
        None,
        description="Stop launching trials when the spend so far plus the projected cost of the next trial "
        "would pass it ({gpu_hours: X} or {usd: X}); running trials finish.",
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v):
        known = ("eval_loss",) + GENERATION_METRICS
        if v not in known:
            raise ValueError(f"unknown metric '{v}'; use one of {', '.join(known)}.{did_you_mean(v, known)}")
        return v

    @field_validator("space")
    @classmethod
    def _known_keys(cls, v):
        bad = [k for k in v if k not in SEARCHABLE]
        if bad:
            k = bad[0]
            raise ValueError(
                f"'{k}' cannot be searched; searchable keys are {', '.join(SEARCHABLE)}.{did_you_mean(k, SEARCHABLE)}"
            )
        return v

    @property
    def resolved_mode(self) -> str:
        return self.mode or ("min" if self.metric.endswith("loss") else "max")


class MetricsConfig(_Section):
    """`metrics:` how generated text is scored (ROUGE in the search, the test score and the report)."""

    rouge_tokenizer: Literal["auto", "whitespace", "char", "jieba"] = Field(
        "auto",
        description="How ROUGE splits text into tokens. auto: char when the references are mostly Chinese, "
        "Japanese or Korean script, else rouge-score's default (lower-cased [a-z0-9] words, Porter-stemmed; "
        "it drops every CJK character, so CJK pairs would all score 0); char: each CJK character a token, "
        "other letters and digits as lower-cased words; jieba: Chinese word segmentation (the jieba "
        "package); whitespace: lower-cased whitespace-separated words (for text already segmented).",
    )


class FaultToleranceConfig(_Section):
    """`fault_tolerance:` what a lost worker or node costs."""

    max_failures: int = Field(2, ge=-1, description="Restarts of a trial from its last checkpoint (-1: unlimited).")


class TrackingConfig(_Section):
    """`tracking:` where metrics go."""

    wandb: bool = Field(True, description="Log each trial to W&B (offline files unless WANDB_API_KEY is set).")
    backend: Literal["wandb", "mlflow", "none"] = Field("wandb", description="wandb, mlflow or none.")
    project: str = Field("qlora-launch", description="W&B project / MLflow experiment name.")
    entity: Optional[str] = Field(None, description="W&B entity (team or user).")
    mode: Literal["auto", "offline", "online"] = Field(
        "auto", description="W&B mode; auto is online when WANDB_API_KEY is set, else offline."
    )
    mlflow_tracking_uri: Optional[str] = Field(None, description="MLflow tracking URI (default: RUN_DIR/mlruns).")

    @property
    def effective_backend(self) -> str:
        if self.backend == "wandb" and not self.wandb:
            return "none"
        return self.backend


class OutputConfig(_Section):
    """`output:` where results and checkpoints go."""

    dir: str = Field("runs", description="Local folder or s3://bucket/prefix for results and checkpoints.")
    experiment: Optional[str] = Field(None, description="Experiment name (default: the config file's stem).")
    endpoint_url: Optional[str] = Field(None, description="S3-compatible endpoint for an s3:// output.dir.")

    @field_validator("dir")
    @classmethod
    def _local_or_s3(cls, v):
        if "://" in v and not v.startswith("s3://"):
            raise ValueError("must be a local folder or s3://bucket/prefix (no other storage scheme)")
        return v

    @field_validator("experiment")
    @classmethod
    def _safe_name(cls, v):
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("use letters, digits, '.', '_' and '-' only")
        return v


class MergeConfig(_Section):
    """`merge:` folding the best adapter into the base for serving."""

    enabled: bool = Field(True, description="Merge the best adapter into a 16/32-bit copy of the base.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="dtype of the merged model; auto: the base's own torch_dtype (float32 if it has none)."
    )
    verify_samples: int = Field(4, ge=1, description="Eval inputs on which merged and base+adapter are compared.")
    atol: Optional[float] = Field(None, gt=0, description="Max |logit difference| allowed (default by dtype).")
    into: Literal["original", "dequantized"] = Field(
        "dequantized",
        description="Which base weights the adapter is folded into: dequantized (the 4-bit NF4 weights the "
        "adapter was trained on, dequantized, saved in the merge dtype: the merged model gives the trained "
        "model's outputs) or original (the base's own 16/32-bit weights: the adapter then meets weights it "
        "was not trained on). Figures for both: docs/benchmarks.md, Merge fidelity.",
    )
    max_metric_drop: float = Field(
        0.05,
        ge=0.0,
        description="Largest rise of the eval loss (mean token cross-entropy on the verify_samples eval "
        "examples) from the trained model (4-bit base + adapter) to the merged model that publish accepts; "
        "a larger drop is refused.",
    )

    def tolerance_for(self, dtype: str) -> float:
        """The allowed |logit difference| for a merge in `dtype` (the resolved one, never auto)."""
        return self.atol or {"float32": 1e-3, "bfloat16": 5e-2, "float16": 1e-2}[dtype]


class PublishConfig(_Section):
    """`publish:` where the best model goes at the end of `tune`."""

    to: str = Field(
        description="s3://bucket/prefix, hf://org/name, or a local folder (a path, relative to the current "
        "directory like output.dir, or file:///abs/path): the same layout, manifest.json and latest.json "
        "pointer as on S3. The retrain registry defaults to it."
    )
    what: Literal["adapter", "merged", "both"] = Field("both", description="What to publish.")
    endpoint_url: Optional[str] = Field(None, description="S3-compatible endpoint (MinIO, R2, ...).")
    private: bool = Field(True, description="Hub: create the repo private.")
    revision: Optional[str] = Field(None, description="Hub: branch to commit to.")

    @field_validator("to")
    @classmethod
    def _scheme(cls, v):
        if v.startswith("file://"):
            if not v.startswith("file:///") or v.rstrip("/") == "file:":
                raise ValueError("a file:// URI takes an absolute path: file:///abs/folder")
            return v[len("file://") :]  # a plain local path from here on
        if re.match(r"^(s3://[^/]+|hf://[^/]+/[^/]+)", v) or (
            v.strip() and not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", v)
        ):
            return v
        raise ValueError("must look like s3://bucket/prefix, hf://org/name or a local folder")


class RetrainConfig(_Section):
    """`retrain:` scheduled retraining with a promotion gate."""

    name: str = Field(description="Name of the model line (the champion pointer and history are kept per name).")
    strategy: Literal["retune", "reuse"] = Field("reuse", description="retune: a search; reuse: champion's hparams.")
    registry: Optional[str] = Field(
        None, description="Folder or s3:// prefix for history/champion (default: publish.to)."
    )
    min_improvement: float = Field(0.0, ge=0.0, description="How much better the challenger must be.")
    improvement: Literal["absolute", "relative"] = Field("absolute", description="How min_improvement is read.")
    eval_data: Optional[str] = Field(None, description="Held-out set both models are scored on (default: data.test).")
