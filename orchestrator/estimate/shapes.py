"""Pre-flight estimate, the model's side: its shape and its LoRA trainable parameters, from its config alone.

The model is built on the meta device (shapes, no weights, no download), then walked once into a
`ModelShape`. Everything after that is arithmetic on the shape (memory: orchestrator.estimate.memory),
exact where the libraries are deterministic:

- LoRA trainable parameters: exactly what peft 0.21 creates for `lora.target_modules` (module-name
  matching, "all-linear" = every Linear/Conv1D except the output head) and `lora.bias`.
- The modules bitsandbytes quantizes: those transformers' integration replaces (exact type nn.Linear
  or Conv1D, minus the output head, tied weights and `_keep_in_fp32_modules`), see `_bnb_converted`.

torch/transformers are imported lazily (only `load_model_config` and `inspect_model` need them): the CLI
stays light.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from orchestrator.core.errors import UserError, did_you_mean

ARCH_DIR = Path(__file__).parent / "arch_configs"


@dataclass(frozen=True)
class ShippedArch:
    """An architecture whose config.json ships in orchestrator/estimate/arch_configs/ (published values)."""

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
    "qwen2.5-0.5b-instruct": ShippedArch(
        "qwen2.5-0.5b-instruct.json", "Qwen/Qwen2.5-0.5B-Instruct", 0.5e9, ("q_proj", "v_proj")
    ),
    "llama-3.1-8b": ShippedArch("llama-3.1-8b.json", "meta-llama/Llama-3.1-8B-Instruct", 8e9, ("q_proj", "v_proj")),
}
_ALIASES = {a.hub_id.lower(): name for name, a in SHIPPED_ARCHS.items()}
_ALIASES.update({a.hub_id.split("/")[-1].lower(): name for name, a in SHIPPED_ARCHS.items()})
_ALIASES["t5-small"] = "t5-small"
_ALIASES["meta-llama/llama-3.1-8b"] = _ALIASES["llama-3.1-8b"] = "llama-3.1-8b"  # the base: same shapes


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
            raise UserError(f"{path}: not a readable model config ({type(e).__name__}: {str(e)[:200]}).") from None

    p = Path(name_or_path).expanduser()
    arch = shipped_arch(name_or_path)
    if arch and not p.exists():  # a local folder of the same name wins
        return read(ARCH_DIR / SHIPPED_ARCHS[arch].file, f"shipped config {arch} ({SHIPPED_ARCHS[arch].hub_id})")
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UserError(
                f"model folder '{name_or_path}' has no config.json; pass a model folder saved with "
                "save_pretrained, a config.json file, or a shipped architecture name."
            )
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


def inspect_model(
    model_config: Any, task: Optional[str] = None, name: str = "", source: str = "", trust_remote_code: bool = False
) -> ModelShape:
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
            f"model.task is {task} but {type(model_config).__name__} has no {auto.__name__[len('AutoModelFor') :]} "
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
    matched = [
        m for m in shape.modules if m.name and (m.name in targets or any(m.name.endswith(f".{t}") for t in targets))
    ]
    linear_names = sorted({m.name.rsplit(".", 1)[-1] for m in shape.modules if m.kind in ("linear", "conv1d")})
    if not matched:
        hints = "".join(did_you_mean(t, linear_names) for t in targets)
        raise UserError(
            f"lora.target_modules {targets} matches no module of {shape.model_class}. Its linear layers are named "
            f'{", ".join(linear_names)}; or use "all-linear".{hints}'
        )
    bad = [m for m in matched if m.kind == "other"]
    if bad:
        raise UserError(
            f"lora.target_modules matches {bad[0].name} ({bad[0].cls}), which LoRA cannot wrap (peft supports "
            f"Linear, Conv1D and Embedding layers). Name the linear layers inside it instead: "
            f"{', '.join(linear_names)}."
        )
    return matched


def count_lora(
    shape: ModelShape, r: int, target_modules: Union[str, Sequence[str]] = "all-linear", bias: str = "none"
) -> LoraCount:
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
