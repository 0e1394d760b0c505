"""Pre-flight estimate: LoRA trainable parameters and training memory, from a model's config alone.

The model is built on the meta device (shapes, no weights, no download), then walked once into a
`ModelShape`. Everything after that is arithmetic on the shape, so it is exact where the libraries are
deterministic and a stated rough formula where they are not:

- LoRA trainable parameters: exactly what peft 0.21 creates for `lora.target_modules` (module-name
  matching, "all-linear" = every Linear/Conv1D except the output head) and `lora.bias`.
- 4/8-bit weights: the modules transformers' bitsandbytes integration replaces (exact type
  nn.Linear or Conv1D, minus the output head, tied weights and `_keep_in_fp32_modules`), the packed
  weights plus their quantization constants; everything else stays in the compute dtype.
- Activations: a rough per-layer formula (Korthikanti et al. 2022), see `activation_bytes`.

torch/transformers are imported lazily (only `inspect_model` needs them): the CLI stays light.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from orchestrator.errors import UserError, did_you_mean

ARCH_DIR = Path(__file__).parent / "arch_configs"
GIB = 1024**3

# The seed article's table (percent of trainable parameters), quoted as printed there.
TABLE_RANKS = (1, 2, 4, 8, 16)
TABLE_ARCHS = ("llama-2-7b", "llama-2-13b", "llama-2-70b", "falcon-180b")
SEED_TABLE = {
    1: (0.002, 0.002, 0.001, 0.000),
    2: (0.005, 0.004, 0.002, 0.001),
    4: (0.010, 0.007, 0.003, 0.002),
    8: (0.019, 0.014, 0.006, 0.004),
    16: (0.038, 0.028, 0.012, 0.008),
}

# NF4/FP4 in bitsandbytes: 64 weights per block share one absmax; with double quantization the absmaxes
# are themselves 8-bit, 256 per second-level block with one fp32 absmax (plus one fp32 offset per tensor).
NF4_BLOCK = 64
DQ_BLOCK = 256
CUDA_OVERHEAD_GIB = 1.0  # CUDA context + allocator slack per process, assumed
ACTIVATION_FORMULA = (
    "per layer b*s*h*(34 + 5*a*s/h) bytes at 16-bit without recomputation (Korthikanti et al. 2022); with "
    "gradient checkpointing 2*b*s*h per layer plus one layer recomputed; plus logits b*s*V*8 bytes"
)


@dataclass(frozen=True)
class ShippedArch:
    """An architecture whose config.json ships in orchestrator/arch_configs/ (published values)."""

    file: str
    hub_id: str
    nominal_params: float  # the size in the model's name; the seed's table divides by it
    attention_targets: Tuple[str, ...]  # the attention query/value projections (fused qkv on Falcon)


SHIPPED_ARCHS: Dict[str, ShippedArch] = {
    "llama-2-7b": ShippedArch("llama-2-7b.json", "meta-llama/Llama-2-7b-hf", 7e9, ("q_proj", "v_proj")),
    "llama-2-13b": ShippedArch("llama-2-13b.json", "meta-llama/Llama-2-13b-hf", 13e9, ("q_proj", "v_proj")),
    "llama-2-70b": ShippedArch("llama-2-70b.json", "meta-llama/Llama-2-70b-hf", 70e9, ("q_proj", "v_proj")),
    "falcon-180b": ShippedArch("falcon-180b.json", "tiiuae/falcon-180B", 180e9, ("query_key_value",)),
    "t5-small": ShippedArch("t5-small.json", "google-t5/t5-small", 60e6, ("q", "v")),
    "tinyllama-1.1b": ShippedArch("tinyllama-1.1b.json", "TinyLlama/TinyLlama_v1.1", 1.1e9, ("q_proj", "v_proj")),
}
_ALIASES = {a.hub_id.lower(): name for name, a in SHIPPED_ARCHS.items()}
_ALIASES.update({a.hub_id.split("/")[-1].lower(): name for name, a in SHIPPED_ARCHS.items()})
_ALIASES["t5-small"] = "t5-small"


# ---- the model's shape ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ModuleInfo:
    """One named module of the model. kind: linear | conv1d | embedding | other."""

    name: str
    kind: str
    cls: str
    in_features: int = 0
    out_features: int = 0
    bias: int = 0  # bias elements

    @property
    def weight_numel(self) -> int:
        return self.in_features * self.out_features

    def lora_params(self, r: int) -> int:
        """peft's lora_A + lora_B (lora_embedding_A/B for embeddings): r * (in + out)."""
        return r * (self.in_features + self.out_features)


@dataclass
class ModelShape:
    """Everything the estimate needs from a model, read once from a meta-device instance."""

    name: str
    source: str
    model_class: str
    task: str
    total_params: int  # unique parameters (tied weights once), like peft's all_param
    bias_params: int  # parameters whose name contains "bias" (peft's bias="all")
    buffer_bytes: int
    hidden_size: int
    num_heads: int
    vocab_size: int
    layers: Tuple[int, ...]  # (decoder,) or (encoder, decoder)
    output_head: Optional[str]
    modules: List[ModuleInfo]
    quantized: List[str]  # modules bitsandbytes replaces when loading in 4/8-bit
    not_quantized_linear: List[str] = field(default_factory=list)

    def module(self, name: str) -> ModuleInfo:
        return next(m for m in self.modules if m.name == name)

    @property
    def quantized_weight_numel(self) -> int:
        q = set(self.quantized)
        return sum(m.weight_numel for m in self.modules if m.name in q)


def arch_names() -> List[str]:
    return list(SHIPPED_ARCHS)


def shipped_arch(name: str) -> Optional[str]:
    """The shipped architecture a name refers to (its own name or its hub id), else None."""
    key = name.strip().lower()
    return key if key in SHIPPED_ARCHS else _ALIASES.get(key)


def load_model_config(name_or_path: str, trust_remote_code: bool = False) -> Tuple[Any, str]:
    """The transformers config for a local model folder, a config.json, a shipped arch name (or its hub
    id), or a model already in the local HF cache, in that order. Nothing is downloaded.

    Returns:
        (PretrainedConfig, a short description of where it came from)

    Raises:
        UserError: nothing readable was found, with the accepted forms and the shipped names.
    """
    from transformers import AutoConfig

    def read(path: Path, label: str):
        try:
            return AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code), label
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: not a readable model config ({type(e).__name__}: {str(e)[:200]}).")

    p = Path(name_or_path).expanduser()
    arch = shipped_arch(name_or_path)
    if arch and not p.exists():  # a local folder of the same name wins
        return read(ARCH_DIR / SHIPPED_ARCHS[arch].file, f"shipped config {arch} ({SHIPPED_ARCHS[arch].hub_id})")
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UserError(f"model folder '{name_or_path}' has no config.json; pass a model folder saved with "
                            "save_pretrained, a config.json file, or a shipped architecture name.")
        return read(p, f"local folder {p}")
    if p.is_file():
        return read(p, f"config file {p}")
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name_or_path):
        try:
            cfg = AutoConfig.from_pretrained(name_or_path, local_files_only=True, trust_remote_code=trust_remote_code)
            return cfg, f"HF cache {name_or_path}"
        except (OSError, ValueError):
            pass
    names = arch_names()
    raise UserError(
        f"model '{name_or_path}': no config found. estimate reads only a model's config.json, offline: pass a "
        f"local model folder, a config.json file, or a shipped architecture: {', '.join(names)}."
        + did_you_mean(name_or_path.lower(), names + list(_ALIASES))
    )


def inspect_model(model_config: Any, task: Optional[str] = None, name: str = "", source: str = "",
                  trust_remote_code: bool = False) -> ModelShape:
    """Build the model on the meta device (no memory, no weights) and read its shape.

    Args:
        model_config: a transformers PretrainedConfig.
        task: seq2seq or causal_lm (picks AutoModelForSeq2SeqLM / AutoModelForCausalLM, as training
            does); None: seq2seq for encoder-decoder configs, else causal_lm.
    Raises:
        UserError: the architecture does not fit the task, or transformers cannot build it.
    """
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    enc_dec = bool(getattr(model_config, "is_encoder_decoder", False))
    task = task or ("seq2seq" if enc_dec else "causal_lm")
    auto = transformers.AutoModelForSeq2SeqLM if task == "seq2seq" else transformers.AutoModelForCausalLM
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with torch.device("meta"):
            model = auto.from_config(model_config, trust_remote_code=trust_remote_code)
    except ValueError as e:
        other = "causal_lm" if task == "seq2seq" else "seq2seq"
        raise UserError(
            f"model.task is {task} but {type(model_config).__name__} has no {auto.__name__[len('AutoModelFor'):]} "
            f"model ({str(e).splitlines()[0][:160]}). Set model.task: {other} if that is what the model is."
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)

    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - moved in some versions
        Conv1D = ()
    out_emb = model.get_output_embeddings()
    output_head = next((n for n, m in model.named_modules() if out_emb is not None and m is out_emb), None)

    modules: List[ModuleInfo] = []
    for n, m in model.named_modules():
        bias = getattr(m, "bias", None)
        nb = bias.numel() if isinstance(bias, torch.nn.Parameter) else 0
        if Conv1D and isinstance(m, Conv1D):
            i, o = m.weight.shape
            modules.append(ModuleInfo(n, "conv1d", type(m).__name__, int(i), int(o), nb))
        elif isinstance(m, torch.nn.Linear):
            modules.append(ModuleInfo(n, "linear", type(m).__name__, m.in_features, m.out_features, nb))
        elif isinstance(m, torch.nn.Embedding):
            modules.append(ModuleInfo(n, "embedding", type(m).__name__, m.num_embeddings, m.embedding_dim, 0))
        else:
            modules.append(ModuleInfo(n, "other", type(m).__name__))

    quantized = _bnb_converted(model, modules, Conv1D)
    total = sum(p.numel() for p in model.parameters())
    bias_params = sum(p.numel() for n, p in model.named_parameters() if "bias" in n)
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    c = model_config
    if enc_dec:
        enc = getattr(c, "num_layers", None) or getattr(c, "encoder_layers", None) or c.num_hidden_layers
        dec = getattr(c, "num_decoder_layers", None) or getattr(c, "decoder_layers", None) or enc
        layers: Tuple[int, ...] = (int(enc), int(dec))
    else:
        layers = (int(c.num_hidden_layers),)
    qset = set(quantized)
    shape = ModelShape(
        name=name or getattr(c, "_name_or_path", "") or type(model).__name__,
        source=source,
        model_class=type(model).__name__,
        task=task,
        total_params=int(total),
        bias_params=int(bias_params),
        buffer_bytes=int(buffer_bytes),
        hidden_size=int(c.hidden_size),
        num_heads=int(c.num_attention_heads),
        vocab_size=int(c.vocab_size),
        layers=layers,
        output_head=output_head,
        modules=modules,
        quantized=quantized,
        not_quantized_linear=[m.name for m in modules if m.kind in ("linear", "conv1d") and m.name not in qset],
    )
    del model
    return shape


def _bnb_converted(model, modules: List[ModuleInfo], conv1d_cls) -> List[str]:
    """The modules transformers' bitsandbytes integration swaps for Linear4bit/Linear8bitLt.

    It converts modules whose type is exactly nn.Linear (not a subclass) or Conv1D, skipping the output
    head, tied weights, the last module and `_keep_in_fp32_modules` (transformers 5.x,
    `replace_with_bnb_linear` + `get_keys_to_not_convert`).
    """
    import torch

    try:
        from transformers.quantizers.base import get_keys_to_not_convert
        from transformers.quantizers.quantizers_utils import should_convert_module

        skip = list(set(get_keys_to_not_convert(model)) | set(getattr(model, "_keep_in_fp32_modules", None) or []))
    except ImportError:  # pragma: no cover - older/newer transformers: keep the output head in 16-bit
        skip = [n for n, m in model.named_modules() if m is model.get_output_embeddings()]

        def should_convert_module(name, patterns):
            return not any(name == p or name.startswith(p + ".") or name.endswith(p) for p in patterns)

    out = []
    by_name = dict(model.named_modules())
    for m in modules:
        if m.kind not in ("linear", "conv1d") or not should_convert_module(m.name, skip):
            continue
        mod = by_name[m.name]
        if type(mod) is torch.nn.Linear or (conv1d_cls and isinstance(mod, conv1d_cls)):
            out.append(m.name)
    return out


# ---- LoRA parameters -----------------------------------------------------------------------------

@dataclass
class LoraCount:
    """Trainable parameters of a LoRA adapter, as peft's get_nb_trainable_parameters reports them."""

    r: int
    lora_params: int  # lora_A + lora_B
    bias_params: int  # biases made trainable by lora.bias
    base_params: int

    @property
    def trainable(self) -> int:
        return self.lora_params + self.bias_params

    @property
    def all_params(self) -> int:  # peft's all_param: the base plus the adapter
        return self.base_params + self.lora_params

    @property
    def share(self) -> float:
        """trainable / all params, the percentage peft's print_trainable_parameters shows (as a fraction)."""
        return self.trainable / self.all_params


def target_module_list(target_modules: Union[str, Sequence[str]]) -> Union[str, List[str]]:
    if isinstance(target_modules, str):
        return "all-linear" if target_modules.lower() == "all-linear" else [target_modules]
    return list(target_modules)


def match_targets(shape: ModelShape, target_modules: Union[str, Sequence[str]]) -> List[ModuleInfo]:
    """The modules peft wraps with LoRA for `target_modules` (peft 0.21 `check_target_module_exists`).

    Raises:
        UserError: nothing matches, or a name matches a module LoRA cannot wrap.
    """
    targets = target_module_list(target_modules)
    if targets == "all-linear":
        # peft: every Linear/Conv1D by full name, minus the output embedding of a PreTrainedModel
        keys = {m.name for m in shape.modules if m.kind in ("linear", "conv1d")} - {shape.output_head}
        return [m for m in shape.modules if m.name in keys]
    matched = [m for m in shape.modules
               if m.name and (m.name in targets or any(m.name.endswith(f".{t}") for t in targets))]
    linear_names = sorted({m.name.rsplit(".", 1)[-1] for m in shape.modules if m.kind in ("linear", "conv1d")})
    if not matched:
        hints = "".join(did_you_mean(t, linear_names) for t in targets)
        raise UserError(
            f"lora.target_modules {targets} matches no module of {shape.model_class}. Its linear layers are named "
            f"{', '.join(linear_names)}; or use \"all-linear\".{hints}"
        )
    bad = [m for m in matched if m.kind == "other"]
    if bad:
        raise UserError(
            f"lora.target_modules matches {bad[0].name} ({bad[0].cls}), which LoRA cannot wrap (peft supports "
            f"Linear, Conv1D and Embedding layers). Name the linear layers inside it instead: "
            f"{', '.join(linear_names)}."
        )
    return matched


def count_lora(shape: ModelShape, r: int, target_modules: Union[str, Sequence[str]] = "all-linear",
               bias: str = "none") -> LoraCount:
    """LoRA trainable parameters for rank r, exactly as peft counts them."""
    matched = match_targets(shape, target_modules)
    lora = sum(m.lora_params(r) for m in matched)
    if bias == "all":
        b = shape.bias_params
    elif bias == "lora_only":
        b = sum(m.bias for m in matched)
    else:
        b = 0
    return LoraCount(r=r, lora_params=lora, bias_params=b, base_params=shape.total_params)


# ---- memory --------------------------------------------------------------------------------------

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


def sequence_lengths(task: str, max_input_length: int, max_target_length: int) -> Tuple[int, ...]:
    """Tokens per example seen by each stack: (encoder, decoder) for seq2seq, (prompt+completion,) else."""
    if task == "seq2seq":
        return (max_input_length, max_target_length)
    return (max_input_length + max_target_length,)


def activation_bytes(shape: ModelShape, batch_size: int, seq_lens: Tuple[int, ...], checkpointing: bool,
                     act_bytes: int = 2) -> int:
    """Rough activation memory of one training micro-batch (rough: +-50 %).

    Per transformer layer, without recomputation, b*s*h*(34 + 5*a*s/h) bytes at 16-bit activations
    (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"; the
    5*a*s/h term is the attention score matrix, smaller with fused SDPA kernels). With gradient
    checkpointing each layer keeps only its 16-bit input (2*b*s*h bytes) and one layer is recomputed at
    a time. Plus the logits: b*s*V*8 bytes (16-bit logits, their fp32 upcast for the loss, its fp32
    gradient, roughly). The encoder of a seq2seq model sees the input length, the decoder the target
    length; cross-attention and LoRA's own small activations are left out.
    """
    b, h, a = batch_size, shape.hidden_size, shape.num_heads
    scale = act_bytes / 2

    def full_layer(s: int) -> float:
        return b * s * h * (34 + 5 * a * s / h) * scale

    total = 0.0
    for n_layers, s in zip(shape.layers, seq_lens):
        total += n_layers * (2 * b * s * h * scale if checkpointing else full_layer(s))
    if checkpointing:
        total += max(full_layer(s) for s in seq_lens)
    total += b * seq_lens[-1] * shape.vocab_size * 8
    return int(total)


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

    @property
    def total(self) -> int:
        return self.weights + self.adapter + self.gradients + self.optimizer + self.activations + self.overhead


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
                "name": s.name, "source": s.source, "class": s.model_class, "task": s.task,
                "total_params": s.total_params, "hidden_size": s.hidden_size, "num_heads": s.num_heads,
                "layers": list(s.layers), "vocab_size": s.vocab_size, "output_head": s.output_head,
                "quantized_modules": len(s.quantized), "quantized_weight_params": s.quantized_weight_numel,
                "linear_modules_not_quantized": s.not_quantized_linear,
            },
            "lora": {
                "target_modules": self.target_modules, "bias": self.bias,
                "ranks": [{"r": c.r, "trainable_params": c.trainable, "all_params": c.all_params,
                           "share_percent": 100 * c.share} for c in self.counts],
            },
            "weights_bytes": self.weights_by_format,
            "memory": {
                "rank": self.memory_rank, "batch_size": self.batch_size, "seq_lens": list(self.seq_lens),
                "gradient_checkpointing": self.gradient_checkpointing,
                "configured_variant": self.configured_variant,
                "variants": [dict(asdict(v), total=v.total, fits=self.fits(v)) for v in self.variants],
            },
            "gpu": {"gpu_mem_gib": self.gpu_mem_gib, "gpus_per_worker": self.gpus_per_worker,
                    "num_workers": self.num_workers, "budget_bytes_per_worker": self.budget_bytes},
            "warnings": self.warnings,
            "assumptions": self.assumptions,
        }


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
    Raises:
        UserError: lora.target_modules does not fit the model.
    """
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
    act16 = activation_bytes(shape, cfg.training.batch_size, seq, ckpt, 2)
    over = int(CUDA_OVERHEAD_GIB * GIB)
    t = top.trainable
    adapter = dict(adapter=4 * t, gradients=4 * t, optimizer=8 * t)
    variants = [
        # prepare_model_for_kbit_training (jobs/modeling.py, the QLoRA recipe) upcasts what is not quantized
        VariantMemory("qlora", f"QLoRA 4-bit {q.quant_type.upper()}{' +DQ' if q.double_quant else ''}",
                      weight_bytes(shape, "nf4", 4, q.double_quant), activations=activation_bytes(shape, cfg.training.batch_size, seq, ckpt, compute),
                      overhead=over, **adapter),
        VariantMemory("lora_8bit", "LoRA 8-bit", weight_bytes(shape, "int8", 4), activations=act16, overhead=over,
                      **adapter),
        VariantMemory("lora_16bit", "LoRA 16-bit", weights["16bit"], activations=act16, overhead=over, **adapter),
        VariantMemory("full", "Full FT (fp32 + AdamW)", weights["fp32"], adapter=0,
                      gradients=4 * shape.total_params, optimizer=8 * shape.total_params,
                      activations=act16, overhead=over),
    ]
    configured = {"4bit": "qlora", "8bit": "lora_8bit", "none": "lora_16bit"}[q.mode]

    warnings = []
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
    res = cfg.resources
    if res.gpus_per_worker == 0:
        warnings.append(f"resources.gpus_per_worker is 0 (training on CPU); the fit is checked against one "
                        f"{gpu_mem_gib:g} GiB GPU.")
    assumptions = [
        f"memory is per worker: each of the {res.num_workers} DDP worker(s) holds a full replica",
        f"budget per worker = gpus_per_worker x {gpu_mem_gib:g} GiB (--gpu-mem-gb); more than one GPU per "
        "worker assumes the model is spread over them",
        "adapter weights, their gradients and AdamW's 2 states are fp32: 16 bytes per trainable parameter",
        "full fine-tuning: fp32 weights + fp32 gradients + AdamW 2 fp32 states = 16 bytes per parameter",
        "QLoRA and 8-bit LoRA: prepare_model_for_kbit_training upcasts the parameters bitsandbytes does not "
        f"quantize (embeddings, norms, output head) to fp32; matmuls run in {q.compute_dtype}",
        "weights by storage format: as loaded, non-quantized parameters in 16-bit",
        "activations (rough, +-50 %): " + ACTIVATION_FORMULA,
        f"CUDA context and allocator slack: {CUDA_OVERHEAD_GIB:g} GiB per process",
    ]
    return Estimate(
        shape=shape, target_modules=target_module_list(tm), bias=cfg.lora.bias, counts=counts,
        memory_rank=top.r, weights_by_format=weights, variants=variants, configured_variant=configured,
        batch_size=cfg.training.batch_size, seq_lens=seq, gradient_checkpointing=ckpt, gpu_mem_gib=gpu_mem_gib,
        gpus_per_worker=res.gpus_per_worker, num_workers=res.num_workers, warnings=warnings,
        assumptions=assumptions,
    )


# ---- the seed's table ----------------------------------------------------------------------------

def seed_formula_share(r: int, nominal_params: float) -> float:
    """The seed's figures: LoRA on one sqrt(N) x sqrt(N) matrix, 2*r*sqrt(N) parameters, over N
    (N = the size in the model's name). Reproduces all 20 cells of its table; no real set of modules does.
    """
    return 2 * r * math.sqrt(nominal_params) / nominal_params


@dataclass
class ShareTable:
    """Share of trainable parameters per rank and architecture: the seed's, its formula, and ours."""

    ranks: Tuple[int, ...]
    archs: Tuple[str, ...]
    total_params: Dict[str, int]
    target_sets: Dict[str, Dict[str, Union[str, List[str]]]]  # label -> arch -> target_modules
    ours: Dict[str, Dict[str, Dict[int, LoraCount]]]  # label -> arch -> r -> count

    def to_json(self) -> Dict[str, Any]:
        rows = []
        for r in self.ranks:
            for i, a in enumerate(self.archs):
                row = {"rank": r, "arch": a, "total_params": self.total_params[a],
                       "seed_percent": SEED_TABLE.get(r, (None,) * 4)[i] if a in TABLE_ARCHS else None,
                       "seed_formula_percent": 100 * seed_formula_share(r, SHIPPED_ARCHS[a].nominal_params)}
                for label, by_arch in self.ours.items():
                    c = by_arch[a][r]
                    row[label] = {"target_modules": self.target_sets[label][a], "trainable_params": c.trainable,
                                  "percent": 100 * c.share}
                rows.append(row)
        return {"ranks": list(self.ranks), "archs": list(self.archs), "rows": rows,
                "seed_formula": "100 * 2*r*sqrt(N) / N, N = nominal size (7e9, 13e9, 70e9, 180e9)",
                "share_definition": "trainable / (base + adapter), as peft's print_trainable_parameters"}


def share_table(ranks: Sequence[int] = TABLE_RANKS, archs: Sequence[str] = TABLE_ARCHS) -> ShareTable:
    """LoRA trainable-parameter share for the shipped architectures, for attention q,v and all-linear."""
    shapes = {}
    for a in archs:
        mc, src = load_model_config(a)
        shapes[a] = inspect_model(mc, None, a, src)
    target_sets = {
        "attention_qv": {a: list(SHIPPED_ARCHS[a].attention_targets) for a in archs},
        "all_linear": {a: "all-linear" for a in archs},
    }
    ours = {label: {a: {r: count_lora(shapes[a], r, t[a]) for r in ranks} for a in archs}
            for label, t in target_sets.items()}
    return ShareTable(tuple(ranks), tuple(archs), {a: s.total_params for a, s in shapes.items()}, target_sets, ours)


# ---- the Python API the CLI calls ----------------------------------------------------------------

def load_estimate_config(config_path: Optional[str], overrides: Sequence[str] = (), model: Optional[str] = None):
    """The RunConfig to estimate: the YAML config (with --set), or defaults around `model` alone.

    Returns:
        (RunConfig, task or None): the task is None when it should come from the model's config (only
        --model given and no --set model.task), so a causal LM named by --model is not read as seq2seq.
    Raises:
        UserError: a missing/invalid config, or neither a config nor a model.
    """
    from pydantic import ValidationError

    from orchestrator.config import format_validation_errors, load_config, parse_overrides, validate_dict

    params = parse_overrides(list(overrides))
    if config_path is None and not model:
        raise UserError("estimate needs a CONFIG file, --model NAME_OR_CONFIG, or --table. "
                        "Example: qlora-launch estimate --model llama-2-7b")
    if config_path is not None:
        cfg = load_config(config_path, list(overrides))
        task_from_model = False
    else:
        cfg = validate_dict({"model": {"name_or_path": model}, "data": {"train": "(unused by estimate)"}})
        task_from_model = True
    if model:
        params["model.name_or_path"] = model
        task_from_model = True
    if "model.task" in params:
        task_from_model = False
    if params:
        try:
            cfg = cfg.with_params(params)
        except ValidationError as e:
            raise UserError(*format_validation_errors(e, cfg.to_json())) from None
    return cfg, (None if task_from_model else cfg.model.task)


def run_estimate(config_path: Optional[str] = None, overrides: Sequence[str] = (), model: Optional[str] = None,
                 ranks: Optional[Sequence[int]] = None, gpu_mem_gib: float = 24.0) -> Estimate:
    """`qlora-launch estimate`: load the config, read the model's shape on the meta device, estimate.

    Raises:
        UserError: a bad config, an unknown model, target modules that do not fit the model.
    """
    if gpu_mem_gib <= 0:
        raise UserError(f"--gpu-mem-gb must be > 0 (got {gpu_mem_gib:g}).")
    if ranks and min(ranks) < 1:
        raise UserError(f"--rank must be >= 1 (got {min(ranks)}).")
    cfg, task = load_estimate_config(config_path, overrides, model)
    mc, source = load_model_config(cfg.model.name_or_path, cfg.model.trust_remote_code)
    name = shipped_arch(cfg.model.name_or_path) or cfg.model.name_or_path
    shape = inspect_model(mc, task, name, source, cfg.model.trust_remote_code)
    return estimate(shape, cfg, ranks, gpu_mem_gib)
