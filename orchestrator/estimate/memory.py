"""Pre-flight estimate, in bytes: weights per storage format, activations, and the memory per GPU of
QLoRA, 8-bit LoRA, 16-bit LoRA and full fine-tuning, from a `ModelShape` (orchestrator.estimate.shapes),
under the trial's strategy (DDP replicas or FSDP shards: orchestrator.estimate.strategy states the formula).

It is arithmetic on the shape, exact where the libraries are deterministic and a stated rough formula
where they are not:

- 4/8-bit weights: the modules transformers' bitsandbytes integration replaces (`ModelShape.quantized`),
  the packed weights plus their quantization constants; everything else stays in the compute dtype.
- Activations: a rough per-layer formula (Korthikanti et al. 2022), and the logits, fused or not:
  orchestrator.estimate.activations.

Imports no torch/transformers: the CLI stays light.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from orchestrator.core.training_options import OPTIMIZER_STATE_BYTES
from orchestrator.estimate.activations import ACTIVATION_FORMULA, activation_bytes, fused_loss, sequence_lengths
from orchestrator.estimate.shapes import LoraCount, ModelShape, count_lora, target_module_list
from orchestrator.estimate.strategy import host_ram_note, per_gpu, strategy_assumption

GIB = 1024**3

# NF4/FP4 in bitsandbytes: 64 weights per block share one absmax; with double quantization the absmaxes
# are themselves 8-bit, 256 per second-level block with one fp32 absmax (plus one fp32 offset per tensor).
NF4_BLOCK = 64
DQ_BLOCK = 256
CUDA_OVERHEAD_GIB = 1.0  # CUDA context + allocator slack per process, assumed


def with_cuda_context(allocated_gb: float) -> float:
    """A measured peak (torch's max_memory_allocated, GiB) plus the CUDA context and allocator slack the
    estimate counts as a flat CUDA_OVERHEAD_GIB: the figure to set beside an estimate."""
    return round(allocated_gb + CUDA_OVERHEAD_GIB, 3)


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def quantized_tensor_bytes(numel: int, bits: int, double_quant: bool = True) -> int:
    """Bytes of one bitsandbytes-quantized weight with its quantization constants.

    4-bit: numel/2 packed + one absmax per 64 weights (fp32; with double quant 8-bit plus one fp32 per
    256 absmaxes and one fp32 offset). 8-bit (LLM.int8): numel bytes; the per-row fp32 scales are
    added by the caller, who knows the row count. The small lookup tables (16 or 256 fp32) are shared.
    """
    if bits == 8:
        return numel
    packed = (numel + 1) // 2
    blocks = math.ceil(numel / NF4_BLOCK)
    if double_quant:
        return packed + blocks + 4 * math.ceil(blocks / DQ_BLOCK) + 4
    return packed + 4 * blocks


def weight_bytes(shape: ModelShape, fmt: str, other_dtype_bytes: int = 2, double_quant: bool = True) -> int:
    """Bytes the model's weights take in one storage format (what get_memory_footprint reports, plus the
    quantization constants it does not see).

    fmt: nf4 (4-bit; nf4 and fp4 are the same size) | int8 | 16bit | fp32. In nf4/int8 only the modules
    bitsandbytes converts are quantized; the rest (embeddings, norms, output head, biases) stay in
    `other_dtype_bytes` per element.
    """
    if fmt == "16bit":
        return 2 * shape.total_params + shape.buffer_bytes
    if fmt == "fp32":
        return 4 * shape.total_params + shape.buffer_bytes
    qset = set(shape.quantized)
    qmods = [m for m in shape.modules if m.name in qset]
    rest = shape.total_params - sum(m.weight_numel for m in qmods)
    if fmt == "nf4":
        q = sum(quantized_tensor_bytes(m.weight_numel, 4, double_quant) for m in qmods)
    elif fmt == "int8":
        q = sum(quantized_tensor_bytes(m.weight_numel, 8) + 4 * m.out_features for m in qmods)
    else:
        raise ValueError(f"unknown weight format {fmt}")
    return q + other_dtype_bytes * rest + shape.buffer_bytes


def quant_constant_bytes(shape: ModelShape, double_quant: bool = True) -> int:
    """The 4-bit quantization constants alone (what quantized_tensor_bytes adds to the packed weights)."""
    qset = set(shape.quantized)
    return sum(
        quantized_tensor_bytes(m.weight_numel, 4, double_quant) - (m.weight_numel + 1) // 2
        for m in shape.modules
        if m.name in qset
    )


@dataclass
class VariantMemory:
    """Bytes per worker (per GPU) for one way of fine-tuning."""

    key: str
    label: str
    weights: int
    adapter: int
    gradients: int
    optimizer: int
    activations: int
    overhead: int
    gathered: int = 0  # FSDP: the full weights of the running and the prefetched layer (estimate.strategy)

    @property
    def total(self) -> int:
        return (
            self.weights + self.adapter + self.gradients + self.optimizer + self.gathered + self.activations
        ) + self.overhead


@dataclass
class Estimate:
    """The whole estimate for one model and config; `to_json` is the --json output."""

    shape: ModelShape
    target_modules: Union[str, List[str]]
    bias: str
    counts: List[LoraCount]
    memory_rank: int
    weights_by_format: Dict[str, int]
    variants: List[VariantMemory]
    configured_variant: str
    batch_size: int
    seq_lens: Tuple[int, ...]
    gradient_checkpointing: bool
    gpu_mem_gib: float
    gpus_per_worker: float
    num_workers: int
    strategy: str
    warnings: List[str]
    assumptions: List[str]

    @property
    def budget_bytes(self) -> int:
        gpus = self.gpus_per_worker if self.gpus_per_worker > 0 else 1.0
        return int(gpus * self.gpu_mem_gib * GIB)

    def fits(self, v: VariantMemory) -> bool:
        return v.total <= self.budget_bytes

    def to_json(self) -> Dict[str, Any]:
        s = self.shape
        return {
            "model": {
                "name": s.name,
                "source": s.source,
                "class": s.model_class,
                "task": s.task,
                "total_params": s.total_params,
                "hidden_size": s.hidden_size,
                "num_heads": s.num_heads,
                "layers": list(s.layers),
                "vocab_size": s.vocab_size,
                "output_head": s.output_head,
                "quantized_modules": len(s.quantized),
                "quantized_weight_params": s.quantized_weight_numel,
                "linear_modules_not_quantized": s.not_quantized_linear,
            },
            "lora": {
                "target_modules": self.target_modules,
                "bias": self.bias,
                "ranks": [
                    {
                        "r": c.r,
                        "trainable_params": c.trainable,
                        "all_params": c.all_params,
                        "share_percent": 100 * c.share,
                    }
                    for c in self.counts
                ],
            },
            "weights_bytes": self.weights_by_format,
            "memory": {
                "rank": self.memory_rank,
                "batch_size": self.batch_size,
                "seq_lens": list(self.seq_lens),
                "gradient_checkpointing": self.gradient_checkpointing,
                "configured_variant": self.configured_variant,
                "variants": [dict(asdict(v), total=v.total, fits=self.fits(v)) for v in self.variants],
            },
            "gpu": {
                "gpu_mem_gib": self.gpu_mem_gib,
                "gpus_per_worker": self.gpus_per_worker,
                "num_workers": self.num_workers,
                "strategy": self.strategy,
                "budget_bytes_per_worker": self.budget_bytes,
            },
            "warnings": self.warnings,
            "assumptions": self.assumptions,
        }


def logits_line(cfg, fused: bool) -> str:
    """The estimate's assumption about the logits: Liger's chunks or whole, and evaluation's batch."""
    k = cfg.training.kernels
    b_eval = cfg.training.eval_batch_size or cfg.training.batch_size
    if fused:
        how = "in Liger's chunks in training (training.kernels: liger)"
    elif k == "auto":
        how = "whole (training.kernels: auto counts them whole; Liger runs only on a CUDA worker that has it)"
    else:
        how = f"whole (training.kernels: {k})"
    return f"logits: {how}; evaluation builds them whole at its batch size {b_eval} (training.eval_batch_size)"


def ranks_from_config(cfg) -> List[int]:
    """Ranks the search may try: `search.space["lora.r"]` (choice values; randint's ends), else lora.r."""
    dist = cfg.search.space.get("lora.r")
    if dist is None:
        return [cfg.lora.r]
    if dist.type == "choice":
        vals = [int(v) for v in dist.values]
    else:  # randint(low, high) samples low..high-1; report both ends
        vals = [int(dist.low), max(int(dist.low), int(math.ceil(dist.high)) - 1)]
    return sorted(set(vals))


def estimate(shape: ModelShape, cfg, ranks: Optional[Sequence[int]] = None, gpu_mem_gib: float = 24.0) -> Estimate:
    """Trainable parameters per rank and memory per worker for QLoRA, 8-bit LoRA, 16-bit LoRA and full
    fine-tuning, at the config's batch size and lengths, with a fit check against `resources`.

    Args:
        shape: from `inspect_model`.
        cfg: a validated RunConfig (lora, quantization, training, data and resources are read).
        ranks: ranks to report; default `ranks_from_config(cfg)`. Memory is given for the largest.
        gpu_mem_gib: memory of one GPU.
    training.gradient_checkpointing auto is resolved here: off when the configured variant fits the budget.
    Raises:
        UserError: lora.target_modules does not fit the model.
    """
    if cfg.training.gradient_checkpointing == "auto":  # on only when the configured variant does not fit
        off = estimate(shape, cfg.with_params({"training.gradient_checkpointing": False}), ranks, gpu_mem_gib)
        if off.fits(next(v for v in off.variants if v.key == off.configured_variant)):
            return off
        return estimate(shape, cfg.with_params({"training.gradient_checkpointing": True}), ranks, gpu_mem_gib)
    ranks = sorted(set(int(r) for r in (ranks or ranks_from_config(cfg))))
    tm = cfg.lora.target_modules
    counts = [count_lora(shape, r, tm, cfg.lora.bias) for r in ranks]
    top = counts[-1]
    q = cfg.quantization
    compute = DTYPE_BYTES[q.compute_dtype]
    # the formats side by side keep non-quantized parameters in 16-bit; the QLoRA column uses compute_dtype
    weights = {
        "nf4_double_quant": weight_bytes(shape, "nf4", 2, double_quant=True),
        "nf4": weight_bytes(shape, "nf4", 2, double_quant=False),
        "int8": weight_bytes(shape, "int8", 2),
        "16bit": weight_bytes(shape, "16bit"),
        "fp32": weight_bytes(shape, "fp32"),
    }
    seq = sequence_lengths(shape.task, cfg.data.max_input_length, cfg.data.max_target_length)
    ckpt = cfg.training.gradient_checkpointing
    fused = fused_loss(shape, cfg)

    def activations(act_bytes: int, eval_batch: Optional[int] = cfg.training.eval_batch_size) -> int:
        return activation_bytes(shape, cfg.training.batch_size, seq, ckpt, act_bytes, fused, eval_batch)

    act16 = activations(2)
    over = int(CUDA_OVERHEAD_GIB * GIB)
    t = top.trainable
    adapter = dict(adapter=4 * t, gradients=4 * t, optimizer=OPTIMIZER_STATE_BYTES[cfg.training.optim] * t)
    variants = [
        # prepare_model_for_kbit_training (jobs/modeling.py, the QLoRA recipe) upcasts what is not quantized
        VariantMemory(
            "qlora",
            f"QLoRA 4-bit {q.quant_type.upper()}{' +DQ' if q.double_quant else ''}",
            weight_bytes(shape, "nf4", 4, q.double_quant),
            activations=activations(compute),
            overhead=over,
            **adapter,
        ),
        VariantMemory(
            "lora_8bit", "LoRA 8-bit", weight_bytes(shape, "int8", 4), activations=act16, overhead=over, **adapter
        ),
        VariantMemory("lora_16bit", "LoRA 16-bit", weights["16bit"], activations=act16, overhead=over, **adapter),
        VariantMemory(
            "full",
            "Full FT (fp32 + AdamW)",
            weights["fp32"],
            adapter=0,
            gradients=4 * shape.total_params,
            optimizer=8 * shape.total_params,
            activations=act16,
            overhead=over,
        ),
    ]
    res = cfg.resources
    configured = {"4bit": "qlora", "8bit": "lora_8bit", "none": "lora_16bit"}[q.mode]
    full = next(v for v in variants if v.key == configured)
    warnings: List[str] = []
    # not sharded by FSDP (quant states and buffers are not parameters): every rank holds them whole
    qconst = quant_constant_bytes(shape, q.double_quant)
    variants = [
        per_gpu(
            v,
            res.strategy,
            res.num_workers,
            sum(shape.layers),
            (qconst if v.key == "qlora" else 0) + shape.buffer_bytes,
        )
        for v in variants
    ]
    linear_not_q = [shape.module(n) for n in shape.not_quantized_linear if n != shape.output_head]
    if linear_not_q:
        n_params = sum(m.weight_numel for m in linear_not_q)
        kinds: Dict[str, int] = {}
        for m in linear_not_q:
            key = f"{m.name.rsplit('.', 1)[-1]} ({m.cls})"
            kinds[key] = kinds.get(key, 0) + 1
        warnings.append(
            f"{len(linear_not_q)} linear layers, {n_params / shape.total_params:.0%} of the parameters, are not "
            f"quantized by bitsandbytes: {', '.join(f'{k} x{n}' for k, n in kinds.items())}. transformers "
            "converts only modules of type exactly nn.Linear or Conv1D, and skips the model's "
            "_keep_in_fp32_modules."
        )
    if res.gpus == 0:
        warnings.append(
            f"resources.gpus_per_worker is 0 (training on CPU); the fit is checked against one {gpu_mem_gib:g} GiB GPU."
        )
    if fused:  # Liger fuses the loss in training only: evaluation's whole logits may be what sets the peak
        one = activations(compute if configured == "qlora" else 2, eval_batch=1)
        if full.activations > one:
            warnings.append(
                "Evaluation builds the whole logits (Liger fuses the loss only in training) and sets this "
                f"peak: training.eval_batch_size: 1 takes {(full.activations - one) / GIB:.2f} GiB off it, for "
                "a slower evaluation."
            )
    assumptions = [
        strategy_assumption(res.strategy, res.num_workers),
        *[a for a in [host_ram_note(res.strategy, res.num_workers, full.weights)] if a],
        f"budget per worker = gpus_per_worker x {gpu_mem_gib:g} GiB (--gpu-mem-gb); a worker trains on one GPU",
        f"adapter weights and their gradients are fp32, and training.optim {cfg.training.optim} keeps "
        f"{OPTIMIZER_STATE_BYTES[cfg.training.optim]} bytes of state: "
        f"{8 + OPTIMIZER_STATE_BYTES[cfg.training.optim]} bytes per trainable parameter",
        "full fine-tuning: fp32 weights + fp32 gradients + AdamW 2 fp32 states = 16 bytes per parameter",
        "QLoRA and 8-bit LoRA: prepare_model_for_kbit_training upcasts the parameters bitsandbytes does not "
        f"quantize (embeddings, norms, output head) to fp32; matmuls run in {q.compute_dtype}",
        "weights by storage format: as loaded, non-quantized parameters in 16-bit",
        "activations (rough, +-50 %): " + ACTIVATION_FORMULA,
        logits_line(cfg, fused),
        f"CUDA context and allocator slack: {CUDA_OVERHEAD_GIB:g} GiB per process",
    ]
    return Estimate(
        shape=shape,
        target_modules=target_module_list(tm),
        bias=cfg.lora.bias,
        counts=counts,
        memory_rank=top.r,
        weights_by_format=weights,
        variants=variants,
        configured_variant=configured,
        batch_size=cfg.training.batch_size,
        seq_lens=seq,
        gradient_checkpointing=ckpt,
        gpu_mem_gib=gpu_mem_gib,
        gpus_per_worker=res.gpus,
        num_workers=res.num_workers,
        strategy=res.strategy,
        warnings=warnings,
        assumptions=assumptions,
    )
