"""Loading the base model (quantized for training, 16/32-bit for merging) and wrapping it with LoRA."""

from __future__ import annotations

from typing import Dict, Optional

from jobs.fsdp import is_fsdp
from orchestrator.core.config import RunConfig

TASK_TYPES = {"seq2seq": "SEQ_2_SEQ_LM", "causal_lm": "CAUSAL_LM"}


def model_class(task: str):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if task == "seq2seq" else AutoModelForCausalLM


def load_tokenizer(cfg: RunConfig):
    from transformers import AutoTokenizer

    from jobs.model_cache import model_path

    tok = AutoTokenizer.from_pretrained(
        model_path(cfg, weights=False), revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code
    )
    if cfg.model.chat_template:  # saved with the merged model, so it is served with the template it learned
        tok.chat_template = cfg.model.chat_template
    if tok.pad_token is None:  # Llama-style tokenizers ship without one
        tok.pad_token = tok.eos_token
    if cfg.model.task == "causal_lm":
        tok.padding_side = "left"  # generation continues the prompt on the right
    return tok


def bnb_config(cfg: RunConfig):
    """The BitsAndBytesConfig for the configured quantization, or None for plain LoRA."""
    import torch
    from transformers import BitsAndBytesConfig

    q = cfg.quantization
    if q.mode == "none":
        return None
    if q.mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype),
        # FSDP shards floating-point tensors only: the packed NF4 bytes are stored in the compute dtype
        bnb_4bit_quant_storage=getattr(torch, q.compute_dtype if is_fsdp(cfg) else "uint8"),
    )


def load_base(cfg: RunConfig, quantized: bool, dtype: Optional[str] = None, device_map=None):
    """The base model: quantized (for training) or in `dtype` (for merging; never 4-bit)."""
    import torch

    from jobs.model_cache import model_path

    kwargs = dict(revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code)
    if cfg.model.attn_implementation:
        kwargs["attn_implementation"] = cfg.model.attn_implementation
    if quantized and cfg.quantization.mode != "none":
        kwargs["quantization_config"] = bnb_config(cfg)
        if device_map is not None:
            kwargs["device_map"] = device_map
    else:
        kwargs["dtype"] = getattr(torch, dtype or "float32")
    return model_class(cfg.model.task).from_pretrained(model_path(cfg), **kwargs)


def base_dtype(cfg: RunConfig) -> str:
    """merge.dtype, with auto resolved to the base's own torch_dtype (float32 when it names none)."""
    if cfg.merge.dtype != "auto":
        return cfg.merge.dtype
    from transformers import AutoConfig

    from jobs.model_cache import model_path

    conf = AutoConfig.from_pretrained(
        model_path(cfg, weights=False), revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code
    )
    dtype = str(getattr(conf, "dtype", None) or getattr(conf, "torch_dtype", None) or "float32")
    dtype = dtype.removeprefix("torch.")
    return dtype if dtype in ("float32", "bfloat16", "float16") else "float32"


def lora_config(cfg: RunConfig):
    from peft import LoraConfig

    lc = cfg.lora
    return LoraConfig(
        r=lc.r,
        lora_alpha=lc.alpha,
        lora_dropout=lc.dropout,
        target_modules=lc.target_modules,
        bias=lc.bias,
        task_type=TASK_TYPES[cfg.model.task],
        use_dora=lc.use_dora,
        use_rslora=lc.use_rslora,
        # loftq is applied after wrapping (apply_loftq): peft's init_lora_weights="loftq" wants the
        # full-precision model and quantizes it itself; here the base is loaded 4-bit already.
        init_lora_weights="gaussian" if lc.init == "gaussian" else True,
    )


def load_trainable(cfg: RunConfig, device_map=None):
    """Quantized base + `prepare_model_for_kbit_training` + a fresh LoRA adapter."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if is_fsdp(cfg):  # only rank 0 reads the weights; the others build the model on meta (jobs/fsdp_load.py)
        from jobs.fsdp_load import load_base_rank0

        model = load_base_rank0(cfg)
    else:
        model = load_base(cfg, quantized=True, device_map=device_map)
    # FSDP checkpoints each decoder layer itself
    checkpointing = cfg.training.checkpointing_on and not is_fsdp(cfg)
    if cfg.quantization.mode != "none":
        # Reentrant checkpointing breaks under DDP ("Expected to mark a variable ready only once").
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    from transformers import set_seed

    set_seed(cfg.training.seed)  # the adapter's initial weights: the same trial reproduces
    peft_model = get_peft_model(model, lora_config(cfg))
    if cfg.lora.init == "loftq":
        apply_loftq(peft_model, cfg)
    if is_fsdp(cfg):
        from jobs.fsdp_load import mark_pending

        r = mark_pending(peft_model)
        print(
            f"FSDP rank {r['rank']} loaded {r['materialized_elements']:,} of {r['total_elements']:,} parameter "
            "elements before sharding (the rest on meta until rank 0 scatters the shards)",
            flush=True,
        )
    return peft_model


def apply_loftq(peft_model, cfg: RunConfig) -> None:
    """LoftQ on a 4-bit base: A and B of every adapted layer fitted (SVD) to W - dequant(quant(W)), W read
    from the model's full-precision safetensors. peft computes it on CUDA (the config refuses CPU trials)."""
    from peft import replace_lora_weights_loftq

    from jobs.model_cache import model_path

    replace_lora_weights_loftq(peft_model, model_path=str(model_path(cfg)))


def param_counts(peft_model) -> Dict[str, float]:
    """The figures of peft's `print_trainable_parameters`: trainable, total, share in %."""
    trainable, total = peft_model.get_nb_trainable_parameters()
    return {"trainable_params": int(trainable), "total_params": int(total), "trainable_pct": 100.0 * trainable / total}


def linear_module_names(model) -> list:
    """Leaf names of the linear layers LoRA can adapt (what `target_modules` may list)."""
    import torch

    names = set()
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) or type(mod).__name__ in ("Linear4bit", "Linear8bitLt", "Conv1D"):
            names.add(name.split(".")[-1])
    return sorted(names)
