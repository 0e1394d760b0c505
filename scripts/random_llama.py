"""A random-weight 4-bit Llama of any shape, built fast (scripts/gpu_throughput.py), and random token documents.

The model is built on the meta device; each decoder linear is then drawn in bf16 on the target device and
quantized there to NF4 (bitsandbytes Params4bit, double quantization), one matrix at a time: an 8B shape never
needs a 16 GB initialization or any file. Embeddings, head and norms are materialized in the compute dtype.
"""

from __future__ import annotations

from typing import Any, Dict

PAD_ID = 0  # the fixed-length rows' padding: documents() draws ids from 4 up, so no real token is 0

SHAPE_8B = dict(
    hidden_size=4096,
    num_hidden_layers=32,
    intermediate_size=14336,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    max_position_embeddings=131072,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
SHAPE_TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=512,
    max_position_embeddings=2048,
    tie_word_embeddings=False,
)


def build_model(shape: Dict[str, Any], device, compute_dtype, seed: int = 0, quant_storage=None):
    """A random-weight Llama of `shape`, its decoder linears NF4 4-bit (bitsandbytes), built on meta and
    materialized one matrix at a time on `device` (quantized there). `quant_storage`: the packed weights'
    dtype (uint8 by default; the compute dtype under FSDP, which shards floating-point tensors only)."""
    import bitsandbytes as bnb
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    storage = quant_storage or torch.uint8
    conf = LlamaConfig(**shape)
    with torch.device("meta"):
        model = LlamaForCausalLM(conf)
    g = torch.Generator(device=device).manual_seed(seed)

    def rand(*size):
        return torch.randn(*size, generator=g, device=device, dtype=torch.bfloat16) * 0.02

    def ones(n):
        return torch.nn.Parameter(torch.ones(n, device=device, dtype=compute_dtype))

    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, lin in list(parent.named_children()):
                if not isinstance(lin, torch.nn.Linear):
                    continue
                q = bnb.nn.Linear4bit(
                    lin.in_features,
                    lin.out_features,
                    bias=False,
                    compute_dtype=compute_dtype,
                    compress_statistics=True,
                    quant_type="nf4",
                    quant_storage=storage,
                    device="meta",
                )
                w = rand(lin.out_features, lin.in_features)
                q.weight = bnb.nn.Params4bit(
                    w, requires_grad=False, quant_type="nf4", compress_statistics=True, quant_storage=storage, module=q
                ).to(device)  # quantized on `device`
                setattr(parent, name, q)
                del w
        layer.input_layernorm.weight = ones(conf.hidden_size)
        layer.post_attention_layernorm.weight = ones(conf.hidden_size)
    model.model.norm.weight = ones(conf.hidden_size)
    model.model.embed_tokens.weight = torch.nn.Parameter(rand(conf.vocab_size, conf.hidden_size).to(compute_dtype))
    model.lm_head.weight = torch.nn.Parameter(rand(conf.vocab_size, conf.hidden_size).to(compute_dtype))
    model.model.rotary_emb = LlamaRotaryEmbedding(conf).to(device)
    model.is_loaded_in_4bit = True  # what prepare_model_for_kbit_training looks for
    return model


def documents(n: int, lo: int, hi: int, vocab: int, seed: int = 0):
    """`n` random-token documents of uniform random length in [lo, hi], as a tokenized Dataset."""
    import random

    from datasets import Dataset

    rng = random.Random(seed)
    ids = [[rng.randrange(4, vocab) for _ in range(rng.randint(lo, hi))] for _ in range(n)]
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": ids})


def fixed_rows(trainer, meter, length: int) -> None:
    """Every packed row exactly `length` tokens, so torch.compile sees one shape: a longer row is cut (the
    cut tokens are not trained, not counted), a shorter one gets a padding segment (PAD_ID, labels -100,
    positions from 0: a separate sequence to the attention) that the meter does not count as real tokens."""
    import torch

    inner = trainer.data_collator

    class Fixed:
        def __init__(self):
            self.inner = inner

        def __call__(self, features):
            batch = inner(features)
            n = batch["input_ids"].shape[-1]
            if n >= length:
                return {
                    k: (v[..., :length] if torch.is_tensor(v) and v.shape[-1] == n else v) for k, v in batch.items()
                }
            pad = length - n
            fill = {"input_ids": PAD_ID, "labels": -100}
            out = {}
            for k, v in batch.items():
                if k == "position_ids":
                    tail = torch.arange(pad, dtype=v.dtype).expand(*v.shape[:-1], pad)
                elif torch.is_tensor(v) and v.shape[-1] == n and k in fill:
                    tail = torch.full((*v.shape[:-1], pad), fill[k], dtype=v.dtype)
                else:
                    raise ValueError(f"fixed_rows: a packed batch with {k!r} of shape {tuple(v.shape)}")
                out[k] = torch.cat([v, tail], dim=-1)
            return out

    trainer.data_collator = Fixed()
    fetch = trainer.get_batch_samples  # the meter's counting wrapper

    def uncounted_padding(epoch_iterator, num_batches, device):
        batches, n_items = fetch(epoch_iterator, num_batches, device)
        meter.tokens -= sum(int((b["input_ids"] == PAD_ID).sum()) for b in batches)
        return batches, n_items

    trainer.get_batch_samples = uncounted_padding
