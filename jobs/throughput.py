"""Tokens per second and MFU of a trial, and which throughput features it trains with.

Tokens: the real (non-padding) tokens of every training micro-batch (`real_tokens`), summed over the
trial's workers. Training time: the wall time of the optimizer steps, each from the fetch of its
micro-batches to the end of its optimizer step (data loading, forward, backward, clipping, the optimizer);
evaluation, logging and checkpoint saves between steps are not counted. On CUDA the device is synchronized
at the end of each step so the clock sees the work, not its launch. After a resume, the figures are those
of the resumed session.

MFU (model FLOPs utilization) = achieved FLOP/s / peak FLOP/s of the trial's devices. The achieved FLOPs
count the model's matrix products for QLoRA (`flops_per_token`): the base is frozen, so a token costs

    forward 2N  +  backward activation gradients 2N  +  LoRA weight gradients 2·N_lora
    (+ 2N for the recomputed forward when gradient checkpointing is on)

with N the parameters that take part in matrix products (all of them minus the input embedding table;
a tied embedding counts, it is the LM head) and N_lora the trainable adapter parameters. Attention's
score and value products (about 4·layers·hidden·context per token forward, 7 % of 2N for an 8B model at
2,048 tokens) are not counted, so the MFU is a slight lower bound. Full fine-tuning would add the weight
gradients (another 2N: the usual 6N); QLoRA does not compute them. The peak is `resources.peak_tflops` or,
on CUDA, the dense bf16 tensor-core figure of the GPU (`PEAK_BF16_TFLOPS`); on CPU without
`resources.peak_tflops` MFU is null: there is no peak figure to divide by and none is invented.
MFU is computed for causal LMs only (null for seq2seq: an encoder-decoder's tokens do not each pass
through every parameter, so 2N per token would overstate it).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Mapping, Optional, Tuple

from orchestrator.core.config import RunConfig

# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name();
# the first match wins, so the more specific names come first.
PEAK_BF16_TFLOPS: Tuple[Tuple[str, float], ...] = (
    # NVIDIA H100 datasheet: SXM 1,979 / PCIe 1,513 / NVL 1,671 TFLOPS bf16 "with sparsity"; dense is half.
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.5),
    ("H100", 989.4),
    # NVIDIA H200 datasheet: SXM 1,979 / NVL 1,671 TFLOPS bf16 with sparsity (the H100's tensor cores).
    ("H200 NVL", 835.5),
    ("H200", 989.4),
    # NVIDIA A100 datasheet: bf16 tensor core 312 TFLOPS (624 with sparsity), SXM and PCIe alike.
    ("A100", 312.0),
    # NVIDIA L40S datasheet: bf16 733 TFLOPS with sparsity; L40: 362 with sparsity.
    ("L40S", 366.5),
    ("L40", 181.0),
    # NVIDIA L4 datasheet: bf16 242 TFLOPS with sparsity.
    ("L4", 121.0),
    # AWS G5 (A10G): NVIDIA quotes no datasheet; 70 TFLOPS bf16 dense is the figure commonly used (the A10's
    # datasheet says 125 dense / 250 with sparsity for the A10 itself, at a higher power limit).
    ("A10G", 70.0),
    ("A10", 125.0),
    # NVIDIA Ada whitepaper: GeForce RTX 4090 bf16 with fp32 accumulate 165.2 TFLOPS dense (330.4 sparse).
    ("RTX 4090", 165.2),
    # NVIDIA Ampere GA102 whitepaper: RTX 3090 bf16 with fp32 accumulate 71 TFLOPS dense.
    ("RTX 3090", 71.0),
)


def peak_tflops(device_name: Optional[str], configured: Optional[float] = None) -> Optional[float]:
    """resources.peak_tflops when set, else the table's figure for this GPU name (None: unknown or CPU)."""
    if configured:
        return float(configured)
    if not device_name:
        return None
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def matmul_params(model) -> int:
    """N of the MFU formula: every parameter (a 4-bit one counted as the weights it packs) minus the input
    embedding table, unless that table is tied to the LM head (then it is a matrix product)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    _, total = model.get_nb_trainable_parameters() if hasattr(model, "get_nb_trainable_parameters") else (0, None)
    if total is None:
        total = sum(p.numel() for p in model.parameters())
    emb = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if emb is None or (head is not None and head.weight is emb.weight):
        return int(total)
    return int(total - emb.weight.numel())


def flops_per_token(n_params: int, n_trainable: int, checkpointing: bool) -> int:
    """Training FLOPs per token for QLoRA (the module docstring): 4N + 2·N_lora, + 2N with checkpointing."""
    return (6 if checkpointing else 4) * n_params + 2 * n_trainable


def mfu(tokens_per_s: float, flops_per_tok: int, peak: Optional[float], devices: float) -> Optional[float]:
    """Achieved over peak FLOP/s (a fraction in [0, 1]); None without a peak."""
    if not peak or devices <= 0:
        return None
    return tokens_per_s * flops_per_tok / (peak * 1e12 * devices)


def real_tokens(inputs: Mapping[str, Any]) -> int:
    """The non-padding tokens of one collated batch.

    Padded batches: the attention mask's ones (encoder tokens), plus for seq2seq the decoder's labels that
    are not -100. Packed batches (one padding-free row, position_ids, no attention mask): every token.
    """
    labels = inputs.get("labels")
    decoder = int((labels != -100).sum()) if "decoder_input_ids" in inputs and labels is not None else 0
    mask = inputs.get("attention_mask")
    if mask is not None:
        return int(mask.sum()) + decoder
    ids = inputs.get("input_ids")
    return (int(ids.numel()) if ids is not None else 0) + decoder


def resolve_kernels(setting: str, cuda: bool, model_type: Optional[str]) -> Tuple[str, Optional[str]]:
    """training.kernels on this worker: ("liger" | "none", why auto chose none or None).

    auto: liger on CUDA when liger-kernel is importable and has kernels for this model type. An explicit
    liger the config already refused on CPU workers; here, one without the package fails loudly (the
    Trainer's own ImportError)."""
    if setting == "none":
        return "none", None
    if setting == "liger":
        return "liger", None
    if not cuda:
        return "none", "no CUDA device (Liger's kernels are Triton GPU kernels)"
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except Exception as e:  # noqa: BLE001 - not installed, or its triton does not load
        return "none", f"liger-kernel is not importable ({type(e).__name__}); install the `gpu` extra"
    if (model_type or "") not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        return "none", f"liger-kernel has no kernels for model type {model_type!r}"
    return "liger", None


def resolve_compile(setting: Any) -> bool:
    """training.torch_compile: auto stays off until a measurement shows it wins for QLoRA (docs/benchmarks.md)."""
    return setting is True


def throughput_fields(last: Mapping[str, Any]) -> Dict[str, Any]:
    """The trials.csv / results.json fields from a trial's last report."""
    keys = ("train_tokens", "train_time_s", "tokens_per_s", "mfu", "kernels", "torch_compile")
    return {k: last[k] for k in keys if k in last}


class ThroughputMeter:
    """Counts a trial's training tokens and step time (`attach` it to the Trainer before `train`)."""

    def __init__(self, cfg: RunConfig, model, kernels: str, compiled: bool):
        import torch

        self.cuda = torch.cuda.is_available()
        self.tokens = 0
        self.seconds = 0.0
        self._step_start: Optional[float] = None
        self.kernels, self.compiled = kernels, compiled
        device = torch.cuda.get_device_name() if self.cuda else None
        self.peak = peak_tflops(device, cfg.resources.peak_tflops)
        self.devices = cfg.resources.gpus if self.cuda else 1.0
        self.flops: Optional[int] = None
        if cfg.model.task == "causal_lm":
            trainable, _ = model.get_nb_trainable_parameters()
            checkpointing = cfg.training.checkpointing_on
            self.flops = flops_per_token(matmul_params(model), int(trainable), checkpointing)

    def attach(self, trainer) -> None:
        """Wrap the Trainer's get_batch_samples (called once per optimizer step, training only) to count the
        step's tokens and start its clock; a callback stops the clock at the step's end."""
        fetch = trainer.get_batch_samples

        def counted(epoch_iterator, num_batches, device):
            self._step_start = time.perf_counter()
            batches, n_items = fetch(epoch_iterator, num_batches, device)
            self.tokens += sum(real_tokens(b) for b in batches)
            return batches, n_items

        trainer.get_batch_samples = counted
        trainer.add_callback(_step_clock_class()(self))

    def step_ended(self) -> None:
        if self._step_start is None:
            return
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - self._step_start
        self._step_start = None

    def fields(self) -> Dict[str, Any]:
        """train_tokens, tokens_per_s, mfu (summed tokens over the workers, the slowest worker's time), and
        the features the trial trained with. A collective when the trial has several workers."""
        tokens, seconds, workers = _across_workers(self.tokens, self.seconds)
        rate = tokens / seconds if seconds > 0 else 0.0
        out: Dict[str, Any] = {
            "train_tokens": tokens,
            "train_time_s": round(seconds, 3),
            "tokens_per_s": rate,
            "mfu": None,
            "kernels": self.kernels,
            "torch_compile": self.compiled,
        }
        if self.flops is not None and rate > 0:
            out["mfu"] = mfu(rate, self.flops, self.peak, self.devices * workers)
        return out


def _across_workers(tokens: int, seconds: float) -> Tuple[int, float, int]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tokens, seconds, 1
    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, (tokens, seconds))
    return sum(t for t, _ in every), max(s for _, s in every), len(every)


_STEP_CLOCK = None


def _step_clock_class():
    global _STEP_CLOCK
    if _STEP_CLOCK is None:
        from transformers import TrainerCallback

        class StepClock(TrainerCallback):
            def __init__(self, meter: ThroughputMeter):
                self.meter = meter

            def on_step_end(self, args, state, control, **kwargs):
                self.meter.step_ended()

        _STEP_CLOCK = StepClock
    return _STEP_CLOCK
