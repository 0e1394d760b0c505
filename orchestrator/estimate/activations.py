"""Activation memory of one training micro-batch, for the estimate (orchestrator.estimate.memory).

A rough per-layer formula (Korthikanti et al. 2022) and the memory of the output head and the loss, which for
a large vocabulary is most of it unless Liger's fused linear cross-entropy computes the loss. Imports no
torch/transformers.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

from orchestrator.estimate.shapes import ModelShape

ACTIVATION_FORMULA = (
    "per layer b*s*h*(34 + 5*a*s/h) bytes at 16-bit without recomputation (Korthikanti et al. 2022); with "
    "gradient checkpointing 2*b*s*h per layer plus one layer recomputed; plus logits b*s*V*8 bytes. With "
    "training.kernels: liger, Liger's fused linear cross-entropy holds b*s*h*4 + c*V*4 + 4*b*s in training "
    "(c = next_pow2(b*s / ceil(V/h)) rows of logits at a time), but evaluation still builds the whole logits "
    "(Liger fuses only in training mode): the larger of the training micro-batch and evaluation's logits "
    "b_eval*s*V*8 (training.eval_batch_size, default batch_size)"
)


def sequence_lengths(task: str, max_input_length: int, max_target_length: int) -> Tuple[int, ...]:
    """Tokens per example seen by each stack: (encoder, decoder) for seq2seq, (prompt+completion,) else."""
    if task == "seq2seq":
        return (max_input_length, max_target_length)
    return (max_input_length + max_target_length,)


# Causal LMs whose loss Liger's fused linear cross-entropy computes (`training.kernels: liger`): the families
# every Liger release since 0.5 patches. Liger 0.8.5 patches more (qwen3, gemma3, ...); those are counted
# unfused here, an overestimate of their logits memory.
LIGER_FUSED_LOSS_CLASSES = frozenset(
    f"{family}ForCausalLM" for family in ("Llama", "Mistral", "Mixtral", "Gemma", "Gemma2", "Qwen2", "Phi3")
)


def fused_loss(shape: ModelShape, cfg) -> bool:
    """Whether the trainer computes this model's loss with Liger's fused linear cross-entropy (`training.kernels:
    liger` on a model class it patches). `auto` turns Liger on only on CUDA workers that have it: counted
    unfused, the safe side."""
    return cfg.training.kernels == "liger" and shape.model_class in LIGER_FUSED_LOSS_CLASSES


def loss_bytes(shape: ModelShape, tokens: int, fused: bool) -> int:
    """Memory of the output head and the loss over `tokens` (= b*s) positions in a training step.

    Unfused: the logits, b*s*V*8 bytes (16-bit logits, their fp32 upcast for the loss, its fp32 gradient,
    roughly); evaluation builds the same logits without their gradient, counted at the same b*s*V*8.
    Fused (Liger's fused linear cross-entropy, `training.kernels: liger`): the logits are never whole; rows
    are taken c = next_pow2(ceil(b*s / ceil(V/h))) at a time (the chunk Liger sizes so one chunk of logits is
    about the size of the hidden states), and the input's gradient (b*s*h) and an fp32 loss per position are
    kept from the forward pass to the backward. All at 4 bytes: QLoRA's hidden states are fp32
    (prepare_model_for_kbit_training upcasts the embeddings, norms and head). The 16-bit copy of an fp32 head
    that autocast makes for the matmul (V*h*2, transient) is not counted, fused or not.
    """
    v, h = shape.vocab_size, shape.hidden_size
    if not fused:
        return tokens * v * 8
    chunk = min(tokens, 1 << max(0, math.ceil(tokens / math.ceil(v / h)) - 1).bit_length())
    return tokens * h * 4 + chunk * v * 4 + 4 * tokens


def activation_bytes(
    shape: ModelShape,
    batch_size: int,
    seq_lens: Tuple[int, ...],
    checkpointing: bool,
    act_bytes: int = 2,
    fused_loss: bool = False,
    eval_batch_size: Optional[int] = None,
) -> int:
    """Rough activation memory of one training micro-batch (rough: +-50 %).

    Per transformer layer, without recomputation, b*s*h*(34 + 5*a*s/h) bytes at 16-bit activations
    (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"; the
    5*a*s/h term is the attention score matrix, smaller with fused SDPA kernels). With gradient
    checkpointing each layer keeps only its 16-bit input (2*b*s*h bytes) and one layer is recomputed at
    a time. Plus the logits and the loss (`loss_bytes`). Evaluation (eval_batch_size, default batch_size:
    jobs/train_loop.py) keeps no activations but builds the whole logits, also under fused_loss (Liger's
    fused linear cross-entropy, which fuses only in training mode): the larger of the two. The encoder of a
    seq2seq model sees the input length, the decoder the target length; cross-attention and LoRA's own small
    activations are left out.
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
    total += loss_bytes(shape, b * seq_lens[-1], fused_loss)
    evaluation = loss_bytes(shape, (eval_batch_size or b) * seq_lens[-1], fused=False)  # whole logits, no grads
    return int(max(total, evaluation))
