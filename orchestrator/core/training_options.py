"""Choices of the LoRA and optimizer options that depend on the hardware or name outside libraries:
the HF optimizer names `training.optim` offers, and which `lora.init` can run where.

Checked with real attempts (peft 0.21, bitsandbytes 0.50, torch CPU): PiSSA on a 4-bit base is refused by
peft ("Please initialize PiSSA under float32, float16, or bfloat16"); LoftQ on a 4-bit base
(peft.replace_lora_weights_loftq) computes on CUDA ("Torch not compiled with CUDA enabled" on CPU);
peft's own init_lora_weights="loftq" wants the full-precision model and quantizes it itself; the
bitsandbytes 8-bit and paged optimizers step on CPU.
"""

from __future__ import annotations

from typing import Optional

# HF optimizer names that need nothing beyond torch and bitsandbytes (TrainingArguments.optim).
OPTIMIZERS = (
    "adamw_torch",
    "adamw_torch_fused",
    "adafactor",
    "sgd",
    "adagrad",
    "rmsprop",
    "adamw_bnb_8bit",
    "adamw_8bit",
    "paged_adamw_8bit",
    "paged_adamw_32bit",
    "lion_8bit",
    "lion_32bit",
    "paged_lion_8bit",
    "paged_lion_32bit",
)


# Optimizer state per trainable parameter, in bytes (what `estimate` counts for training.optim): AdamW keeps
# two fp32 moments; the bitsandbytes 8-bit ones two 8-bit moments (tensors under 4,096 elements stay 32-bit
# there: a rounding for tiny adapters); Lion and RMSprop/Adagrad one moment; HF's sgd has no momentum by
# default; Adafactor factors its second moment (rows + columns of each matrix) and keeps no first moment:
# counted as one fp32 value per parameter, an upper bound. Paged optimizers hold the same state (it may page
# to host memory under pressure).
OPTIMIZER_STATE_BYTES = {
    "adamw_torch": 8,
    "adamw_torch_fused": 8,
    "adafactor": 4,
    "sgd": 0,
    "adagrad": 4,
    "rmsprop": 4,
    "adamw_bnb_8bit": 2,
    "adamw_8bit": 2,
    "paged_adamw_8bit": 2,
    "paged_adamw_32bit": 8,
    "lion_8bit": 1,
    "lion_32bit": 4,
    "paged_lion_8bit": 1,
    "paged_lion_32bit": 4,
}
assert set(OPTIMIZER_STATE_BYTES) == set(OPTIMIZERS)


def lora_init_problem(
    init: str, quantization_mode: str, gpus_per_worker: float, sharded: bool = False
) -> Optional[str]:
    """Why `lora.init` cannot run with this quantization and these workers (None: it can). `sharded`: FSDP
    over more than one worker, where only rank 0 holds the base (on the CPU) until it is sharded."""
    if init != "loftq":
        return None
    if quantization_mode != "4bit":
        return (
            f"lora.init loftq fits the adapter to the 4-bit quantization error; quantization.mode is "
            f"{quantization_mode}: set it to 4bit, or use lora.init default/gaussian"
        )
    if gpus_per_worker <= 0:
        return (
            "lora.init loftq: peft computes LoftQ on CUDA and the trials run on CPU (resources.gpus_per_worker "
            "is 0); give the workers a GPU, or use lora.init default/gaussian"
        )
    if sharded:
        return (
            "lora.init loftq computes the adapter from the whole base on one GPU, and under "
            "resources.strategy fsdp only rank 0 holds the base (on the CPU) until it is sharded: use "
            "lora.init default/gaussian with fsdp, or resources.strategy ddp with loftq"
        )
    return None
