"""Memory per GPU under `resources.strategy` (ddp | fsdp) at `resources.num_workers` = N workers.

With W the weights (as stored: 4-bit packed + constants for QLoRA), A the LoRA weights, G their gradients,
O the optimizer state, X the activations of one micro-batch, C the CUDA context and L the decoder layers:

    DDP:   per GPU = W + A + G + O + X + C                       (every worker holds a full replica)
    FSDP:  per GPU = ceil((W + A + G + O) / N) + 2 * ceil(W / L) + X + C      (N > 1)

Loading comes first: on GPU workers every rank loads the whole (4-bit) base onto its GPU before FSDP
shards it, so W + C must fit one GPU too (`load_warning`); on CPU workers the base loads into host memory.

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
    "fsdp over N workers: per GPU = ceil((weights + adapter + gradients + optimizer) / N) + 2 x weights / "
    "decoder layers (the running layer's and the prefetched layer's gathered weights) + activations (not "
    "sharded) + CUDA context"
)


def gathered_layer_bytes(weights: int, layers: int) -> int:
    """FSDP's transient full weights: the running decoder layer's and the prefetched one's (2 * W / L)."""
    return 2 * math.ceil(weights / max(1, layers))


def per_gpu(v: "VariantMemory", strategy: str, num_workers: int, layers: int) -> "VariantMemory":
    """`v` (the memory of one full replica) as one GPU holds it under `strategy` over `num_workers`."""
    n = int(num_workers)
    if strategy != "fsdp" or n <= 1:
        return v
    return replace(
        v,
        weights=math.ceil(v.weights / n),
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


def load_warning(strategy: str, num_workers: int, full_weights: int, overhead: int, budget: int) -> Optional[str]:
    """Why FSDP over these workers cannot even load the base (every rank loads all of it first), or None."""
    if strategy != "fsdp" or int(num_workers) <= 1 or full_weights + overhead <= budget:
        return None
    gib = 1024**3
    return (
        f"FSDP: each worker loads the whole base ({full_weights / gib:.2f} GiB + {overhead / gib:g} GiB CUDA "
        f"context) onto its GPU before sharding it, more than the {budget / gib:g} GiB budget: the trial would "
        "run out of memory while loading, whatever num_workers is"
    )
