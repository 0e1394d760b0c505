"""FSDP inside a trial (`resources.strategy: fsdp`): the HF Trainer shards the model over the trial's workers.

Each of the `num_workers` Ray Train workers holds 1/N of every sharded parameter (base weights, LoRA
weights), of their gradients and of the optimizer state; a decoder layer's full weights exist only while it
runs (FSDP2 `fully_shard` per decoder layer, gathered for forward and backward, freed after). Activation
checkpointing is FSDP's own, per decoder layer.

- 4-bit: the NF4 weights are stored in the compute dtype (`bnb_4bit_quant_storage`, jobs.modeling.bnb_config)
  so they are floating-point tensors FSDP can shard; with the default uint8 storage accelerate leaves them
  out of the sharding (each rank would hold them all).
- CPU (gloo): accelerate only turns FSDP on for accelerators (on CPU its state stays MULTI_CPU and DDP
  wraps the model). `FsdpOnCpuMixin` sets the FSDP state after the Accelerator is built, so the same
  accelerate FSDP2 path runs on CPU, 4-bit base included (bitsandbytes 0.50 honours the float quant
  storage on CPU; `keep_4bit_layout_on_cpu` stops its CPU-kernel repacking, which FSDP would corrupt).
- Checkpoints: FULL_STATE_DICT, so the Trainer's `save_model` gathers the adapter's shards and rank 0
  writes an ordinary peft adapter (adapter_model.safetensors) that loads and merges like a DDP one.
"""

from __future__ import annotations

from typing import Any, Dict, List

from orchestrator.core.config import RunConfig


def is_fsdp(cfg: RunConfig) -> bool:
    """Whether this trial shards its model (strategy fsdp over more than one worker)."""
    return cfg.resources.strategy == "fsdp" and cfg.resources.num_workers > 1


def layer_classes(model) -> List[str]:
    """The decoder layer classes FSDP wraps one by one: the model's `_no_split_modules` (what transformers
    never splits across devices), e.g. ['LlamaDecoderLayer']."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = list(getattr(base, "_no_split_modules", None) or [])
    if not names:
        raise ValueError(
            f"{type(base).__name__} names no decoder layer class (_no_split_modules): FSDP cannot wrap it "
            "layer by layer; use resources.strategy ddp"
        )
    return names


def fsdp_arguments(cfg: RunConfig, model) -> Dict[str, Any]:
    """The TrainingArguments that turn FSDP2 on for this trial (transformers 5.x: `fsdp=True` + fsdp_config)."""
    return {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": layer_classes(model),
            "reshard_after_forward": True,  # full shard: a layer's weights are freed after its forward
            "activation_checkpointing": bool(cfg.training.checkpointing_on),  # per wrapped decoder layer
            "state_dict_type": "FULL_STATE_DICT",  # the adapter is gathered, rank 0 saves it whole
            "cpu_ram_efficient_loading": False,
        },
    }


def fsdp_trainer_class(cls):
    """`cls` (a Trainer class) that also shards on CPU workers; on GPU it is `cls` with nothing changed."""
    return type(f"Fsdp{cls.__name__}", (FsdpOnCpuMixin, cls), {})


def _scatter_after_prepare(accelerator) -> None:
    """`accelerator.prepare` that, once the model is wrapped, fills the shards from rank 0 (jobs/fsdp_load.py)."""
    import torch

    from jobs.fsdp_load import scatter_from_rank0

    prepare = accelerator.prepare

    def prepare_then_scatter(*objs, **kw):
        out = prepare(*objs, **kw)
        for obj in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(obj, torch.nn.Module):
                scatter_from_rank0(obj, accelerator.device)
        return out

    accelerator.prepare = prepare_then_scatter


class FsdpOnCpuMixin:
    """Turns accelerate's FSDP state on where it leaves it off: CPU workers (MULTI_CPU, gloo)."""

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()  # type: ignore[misc]
        _scatter_after_prepare(self.accelerator)  # type: ignore[attr-defined]
        args = self.args  # type: ignore[attr-defined]
        state = self.accelerator.state  # type: ignore[attr-defined]
        if args.fsdp_plugin_args is None or getattr(state, "fsdp_plugin", None) is not None:
            return
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        if state.distributed_type != DistributedType.MULTI_CPU:
            return
        plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
        state.fsdp_plugin = plugin
        state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.is_fsdp_enabled = True


def shard_report(model) -> Dict[str, int]:
    """What this rank holds of the model: FSDP-managed modules, and parameter elements and bytes local vs. in
    full (the bytes are what `estimate` counts as the rank's share of the weights and the adapter).

    Under FSDP each parameter is a DTensor whose local shard is about 1/N of it; under DDP every rank holds
    every element (local == full).
    """
    local = full = local_bytes = full_bytes = 0
    for p in model.parameters():
        mine = p.to_local() if hasattr(p, "to_local") else p
        full += p.numel()
        local += mine.numel()
        full_bytes += p.numel() * p.element_size()
        local_bytes += mine.numel() * mine.element_size()
    from torch.distributed.fsdp import FSDPModule

    wrapped = sum(isinstance(m, FSDPModule) for m in model.modules())
    return {
        "fsdp_modules": int(wrapped),
        "local_param_elements": int(local),
        "full_param_elements": int(full),
        "local_param_bytes": int(local_bytes),
        "full_param_bytes": int(full_bytes),
    }


def keep_4bit_layout_on_cpu(model) -> int:
    """Stop bitsandbytes repacking 4-bit weights for its CPU kernel (returns how many layers it concerns).

    On a CPU with AVX512-BF16, a Linear4bit's forward in eval mode without grad rewrites `weight.data` into
    the kernel's own layout and marks the shared quant_state `packing_format_for_cpu`. Under FSDP that
    rewrite lands on the all-gathered copy, which is freed after the forward, while the flag stays: every
    later step reads the shards in the wrong layout (the loss jumped from 1.1 to 3.3 after the first
    evaluation). Training forwards never repack, so this costs only eval speed on CPU.
    """
    n = 0
    for m in model.modules():
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False
            n += 1
    return n


class ShardReportCallback:
    """Prints, on every rank at the start of training, what it holds of the sharded model (its worker log)."""

    def __new__(cls, *args, **kwargs):
        from transformers import TrainerCallback

        class _ShardReport(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kw):
                import torch.distributed as dist

                rank = dist.get_rank() if dist.is_initialized() else 0
                r = shard_report(model)
                print(
                    f"FSDP rank {rank}: {r['fsdp_modules']} FSDP modules; holds {r['local_param_elements']:,} of "
                    f"{r['full_param_elements']:,} parameter elements ({r['local_param_bytes']:,} of "
                    f"{r['full_param_bytes']:,} bytes)",
                    flush=True,
                )

        return _ShardReport()


def replicated_digest(model) -> str:
    """A checksum of what every FSDP rank must hold identically: the buffers (e.g. rotary frequencies), the
    4-bit quant states (absmax, quant_map, nested statistics: not sharded) and each parameter's full shape and
    placement. The shards themselves differ by design, and their gathered values are equal on every rank by
    construction (all ranks gather the same pieces), so comparing those would prove nothing."""
    import hashlib

    import torch

    h = hashlib.sha256()

    def add(name: str, t) -> None:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())

    for name, b in sorted(model.named_buffers(), key=lambda x: x[0]):
        add(name, b)
    for name, mod in sorted(model.named_modules(), key=lambda x: x[0]):
        qs = getattr(mod, "quant_state", None) or getattr(getattr(mod, "weight", None), "quant_state", None)
        if qs is None or not hasattr(qs, "absmax"):
            continue
        add(name + ".absmax", qs.absmax)
        add(name + ".code", qs.code)
        h.update(f"{name}:{tuple(qs.shape)}:{qs.quant_type}:{qs.blocksize}".encode())
        if qs.nested:
            add(name + ".offset", qs.offset)
            add(name + ".state2.absmax", qs.state2.absmax)
    for name, p in sorted(model.named_parameters(), key=lambda x: x[0]):
        h.update(f"{name}:{tuple(p.shape)}:{getattr(p, 'placements', None)}".encode())
    return h.hexdigest()
