"""Which mixed precision a trial trains in, and what the user is told about it.

T5-family models (t5, mt5, umt5, longt5) overflow in fp16: their feed-forward activations pass fp16's
range and the loss turns to nan (a known property of the pretrained weights, documented on the HF T5
model page). So `mixed_precision: auto` on a GPU without bf16 trains them in fp32, and an explicit `fp16`
is kept as asked but named in the run's notices.
"""

from __future__ import annotations

from typing import Optional, Tuple

FP16_OVERFLOWS = ("t5", "mt5", "umt5", "longt5")


def choose_precision(
    setting: str, model_type: Optional[str], cuda: bool, bf16_supported: bool
) -> Tuple[bool, bool, Optional[str]]:
    """(bf16, fp16, notice or None) for `training.mixed_precision` = `setting` on this device."""
    overflows = (model_type or "").lower() in FP16_OVERFLOWS
    if setting == "bf16":
        return True, False, None
    if setting == "fp16":
        if overflows:
            return (
                False,
                True,
                (
                    f"training.mixed_precision is fp16 on a {model_type} model, whose activations overflow fp16 "
                    "(the loss often turns to nan). Use bf16 on a GPU that has it, or 'no' (fp32)."
                ),
            )
        return False, True, None
    if setting != "auto" or not cuda:
        return False, False, None
    if bf16_supported:
        return True, False, None
    if overflows:
        return (
            False,
            False,
            (
                f"mixed_precision auto trained this {model_type} model in fp32: this GPU has no bf16, and "
                f"{model_type} overflows in fp16. Set training.mixed_precision: 'no' to silence this."
            ),
        )
    return False, True, None
