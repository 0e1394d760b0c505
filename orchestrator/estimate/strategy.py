"""Memory per GPU under `resources.strategy` (ddp | fsdp) at `resources.num_workers` = N workers.

With W the weights (as stored: 4-bit packed + constants for QLoRA), A the LoRA weights, G their gradients,
O the optimizer state, X the activations of one micro-batch, C the CUDA context and L the decoder layers:

    DDP:   per GPU = W + A + G + O + X + C                       (every worker holds a full replica)
    FSDP:  per GPU = ceil((W - Q + A + G + O) / N) + Q + 2 * ceil(W / L) + X + C      (N > 1)

Q is the 4-bit quantization constants (absmax, nested statistics: about 3 % of W), which FSDP does not
shard: every rank holds them all (0 for a 16-bit base).

Loading (jobs/fsdp_load.py): only rank 0 reads the checkpoint, into host memory (about W, plus the
checkpoint shard being read and quantized); the other ranks build the model on the meta device, and after
wrapping rank 0 sends each rank its shards one chunk at a time. No GPU ever holds the whole base, so loading
peaks below training; rank 0's node needs W of free host RAM (`host_ram_note`).

FSDP (jobs/fsdp.py: FSDP2 `fully_shard` per decoder layer, full shard) keeps 1/N of every parameter, of
its gradient and of its optimizer state on each worker. A layer's full weights exist only while it runs:
the running layer and the one prefetched, 2 * W / L (an upper bound: W / L counts the embeddings and the
head as if they were spread over the layers). Activations are not sharded: each worker runs its own
micro-batch through every layer. With N = 1 FSDP shards nothing and is DDP.

Imports no torch: the CLI stays light.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from orchestrator.estimate.memory import VariantMemory

FSDP_FORMULA = (
    "fsdp over N workers: per GPU = ceil((weights - replicated + adapter + gradients + optimizer) / N) + "
    "replicated (the 4-bit quant constants and the buffers, which FSDP does not shard) + 2 x weights / "
    "decoder layers (the running layer's and the prefetched "
    "layer's gathered weights) + activations (not sharded) + CUDA context"
)


def gathered_layer_bytes(weights: int, layers: int) -> int:
    """FSDP's transient full weights: the running decoder layer's and the prefetched one's (2 * W / L)."""
    return 2 * math.ceil(weights / max(1, layers))


def per_gpu(v: "VariantMemory", strategy: str, num_workers: int, layers: int, replicated: int = 0) -> "VariantMemory":
    """`v` (the memory of one full replica) as one GPU holds it under `strategy` over `num_workers`;
    `replicated`: the part of v.weights every rank holds whole (the 4-bit quantization constants, the buffers)."""
    n = int(num_workers)
    if strategy != "fsdp" or n <= 1:
        return v
    return replace(
        v,
        weights=math.ceil((v.weights - replicated) / n) + replicated,
        adapter=math.ceil(v.adapter / n),
        gradients=math.ceil(v.gradients / n),
        optimizer=math.ceil(v.optimizer / n),
        gathered=gathered_layer_bytes(v.weights, layers),
    )


def strategy_assumption(strategy: str, num_workers: int) -> str:
    """The line `estimate` prints under Assumptions for this strategy."""
    n = int(num_workers)
    if strategy == "fsdp" and n > 1:
        return f"memory is per GPU: the {n} FSDP workers each hold 1/{n} of the model; " + FSDP_FORMULA
    return f"memory is per GPU: each of the {n} {strategy.upper()} worker(s) holds a full replica"


def host_ram_note(strategy: str, num_workers: int, full_weights: int) -> Optional[str]:
    """The host memory FSDP's loading needs on rank 0's node (jobs/fsdp_load.py), or None."""
    if strategy != "fsdp" or int(num_workers) <= 1:
        return None
    return (
        f"FSDP loading: only rank 0 reads the base, into host RAM ({full_weights / 1024**3:.2f} GiB plus the "
        "checkpoint shard being read); the other ranks build it on the meta device and receive only their "
        "shards, so no GPU holds the whole base"
    )
