"""Loading the base for FSDP without a full copy per rank (the low-memory loading of FSDP-QLoRA tools).

Only rank 0 reads the checkpoint: it loads (and quantizes) the whole base on the CPU, into host memory. Every
other rank builds the same model on the meta device (no memory) from the config alone, with rank 0's
parameter shapes and dtypes and rank 0's 4-bit quant states (absmax, quant_map, nested statistics: about
3 % of the 4-bit weights, sent whole, as FSDP does not shard them). The LoRA weights, which the optimizer
holds, are real on every rank (they are tiny); the base weights stay on meta.

After accelerate has wrapped the model (FSDP2 `fully_shard`, which leaves meta parameters on meta), rank 0
sends every rank, parameter by parameter, only its own shard (a dim-0 chunk) into its local tensor, and
the (small, unsharded) buffers are broadcast. So a rank other than 0 never holds a full base parameter,
and each device holds only its shard: rank 0's full copy stays in host memory and is freed afterwards.

accelerate's own `cpu_ram_efficient_loading` does this for 16-bit models only (it skips any model with
bitsandbytes `Params4bit`, accelerate 1.15 `fsdp2_prepare_model`), and transformers 5 loads a quantized
model in full on every rank; hence this module. Answer.AI's fsdp_qlora (`low_memory`) is the model.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from orchestrator.core.config import RunConfig

PENDING = "_qlora_rank0_load"  # set on the model between loading and the scatter after wrapping
WRAPPERS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def canonical(name: str) -> str:
    """A parameter's name without the wrappers activation checkpointing or compilation insert."""
    for w in WRAPPERS:
        name = name.replace(w, "")
    return name


def world() -> tuple:
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def load_base_rank0(cfg: RunConfig):
    """The base model: real (on the CPU) on rank 0, a meta-device copy of rank 0's on every other rank."""
    import torch.distributed as dist

    from jobs.modeling import load_base

    rank, _ = world()
    spec: list = [None]
    model = None
    if rank == 0:
        model = load_base(cfg, quantized=True, device_map={"": "cpu"})
        spec[0] = skeleton_spec(model)
    dist.broadcast_object_list(spec, src=0)
    if model is None:
        model = build_skeleton(cfg, spec[0])
    return model


def skeleton_spec(model) -> Dict[str, Any]:
    """What another rank needs to rebuild `model` on meta: parameter shapes/dtypes and the 4-bit quant states."""
    params = {n: (tuple(p.shape), p.dtype, bool(p.requires_grad)) for n, p in model.named_parameters()}
    quant = {}
    for name, mod in model.named_modules():
        qs = getattr(getattr(mod, "weight", None), "quant_state", None)
        if qs is not None:
            quant[name] = qs
    return {"params": params, "quant": quant}


def build_skeleton(cfg: RunConfig, spec: Dict[str, Any]):
    """The base on the meta device, built from its config (no weights read), shaped like rank 0's."""
    import torch
    from transformers import AutoConfig

    from jobs.model_cache import model_path
    from jobs.modeling import bnb_config, model_class

    conf = AutoConfig.from_pretrained(
        model_path(cfg, weights=False), revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code
    )
    kwargs: Dict[str, Any] = {"trust_remote_code": cfg.model.trust_remote_code}
    if cfg.model.attn_implementation:
        kwargs["attn_implementation"] = cfg.model.attn_implementation
    with torch.device("meta"):
        model = model_class(cfg.model.task).from_config(conf, **kwargs)
    quantizer = None
    if cfg.quantization.mode != "none":
        from transformers.quantizers import AutoHfQuantizer

        quantizer = AutoHfQuantizer.from_config(bnb_config(cfg))
        quantizer.preprocess_model(model, device_map={"": "cpu"})  # Linear -> Linear4bit, as from_pretrained
    own = dict(model.named_parameters())
    differ = sorted(set(own) ^ set(spec["params"]))
    for name, (shape, _dtype, _grad) in spec["params"].items():
        mod_name, _, leaf = name.rpartition(".")
        qs = spec["quant"].get(mod_name) if leaf == "weight" else None
        expected = tuple(qs.shape) if qs is not None else shape  # a 4-bit weight: its unpacked shape
        if name in own and tuple(own[name].shape) != tuple(expected):
            differ.append(f"{name} {tuple(own[name].shape)} vs {tuple(expected)}")
    if differ:
        raise RuntimeError(f"the model built from the config differs from rank 0's loaded one: {differ[:5]}")
    for name, (shape, dtype, requires_grad) in spec["params"].items():
        mod_name, _, leaf = name.rpartition(".")
        mod = model.get_submodule(mod_name)
        data = torch.empty(shape, dtype=dtype, device="meta")
        qs = spec["quant"].get(mod_name)
        if qs is not None and leaf == "weight":
            from bitsandbytes.nn import Params4bit

            mod._parameters[leaf] = Params4bit(
                data,
                requires_grad=False,
                quant_state=qs,
                blocksize=qs.blocksize,
                compress_statistics=qs.nested,
                quant_type=qs.quant_type,
                quant_storage=dtype,
                module=mod,
                bnb_quantized=True,
            )
            mod.quant_state = qs
        else:
            mod._parameters[leaf] = torch.nn.Parameter(data, requires_grad=requires_grad)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    if quantizer is not None:  # what from_pretrained marks on a quantized model (peft and kbit prep read it)
        model.hf_quantizer = quantizer
        model.config.quantization_config = quantizer.quantization_config
        quantizer.postprocess_model(model)
    return model


def mark_pending(model) -> Dict[str, int]:
    """After LoRA is added: make the trainable (LoRA) weights real on ranks > 0, remember rank 0's full
    tensors for the scatter, and say what this rank materialized (elements on a real device vs. in all)."""
    import torch

    rank, _ = world()
    if rank > 0:
        for mod in model.modules():
            for leaf, p in list(mod._parameters.items()):
                if p is not None and p.requires_grad and p.is_meta:
                    mod._parameters[leaf] = torch.nn.Parameter(torch.empty_like(p, device="cpu"), requires_grad=True)
    full: Optional[Dict[str, Any]] = None
    if rank == 0:
        full = {canonical(n): p.detach() for n, p in model.named_parameters()}
        full.update({canonical(n): b for n, b in model.named_buffers()})
    setattr(model, PENDING, {"full": full})
    total = sum(p.numel() for p in model.parameters())
    real = sum(p.numel() for p in model.parameters() if not p.is_meta)
    return {"rank": rank, "materialized_elements": int(real), "total_elements": int(total)}


def scatter_from_rank0(model, device) -> bool:
    """After FSDP wrapping: fill every rank's shards (and buffers) from rank 0's full tensors; False when
    the model was loaded in full on every rank (nothing to do)."""
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, Shard

    pending = getattr(model, PENDING, None)
    if pending is None:
        return False
    rank, size = world()
    full = pending["full"]
    for mod in model.modules():  # meta shards and buffers get (uninitialized) memory on this rank's device
        if any(t.is_meta for t in (*mod.parameters(recurse=False), *mod.buffers(recurse=False))):
            mod.to_empty(device=device, recurse=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if isinstance(p, DTensor):
                if tuple(p.placements) != (Shard(0),):
                    raise RuntimeError(f"{name}: unexpected FSDP placement {p.placements}")
                _scatter_dim0(p.to_local(), full[canonical(name)] if rank == 0 else None, p.shape[0], rank, size)
            else:
                _broadcast(p.data, full[canonical(name)] if rank == 0 else None)
        for name, b in model.named_buffers():
            _broadcast(b, full[canonical(name)] if rank == 0 else None)
    for mod in model.modules():  # the quant states go where the shards went (rank 0 loaded them on the CPU)
        qs = getattr(mod, "quant_state", None)
        if qs is not None and hasattr(qs, "absmax"):
            qs.to(device)
    delattr(model, PENDING)
    dist.barrier()
    return True


def _scatter_dim0(local, full, rows: int, rank: int, size: int) -> None:
    """FSDP2's Shard(0): rank r holds rows [r * c, (r + 1) * c) of the parameter, c = ceil(rows / size).
    Rank 0 sends each rank its chunk in turn, moved to the device one chunk at a time (never the whole
    parameter: on a GPU that would be a transient as large as the largest parameter)."""
    import torch
    import torch.distributed as dist

    chunk = -(-rows // size)
    if rank == 0:
        for r in range(size):
            part = full[r * chunk : (r + 1) * chunk]
            if r == 0:
                local.copy_(part.to(device=local.device, dtype=local.dtype))
            elif part.shape[0]:
                dist.send(part.to(device=local.device, dtype=local.dtype).contiguous(), dst=r)
    elif local.shape[0]:
        recv = torch.empty(local.shape, dtype=local.dtype, device=local.device)
        dist.recv(recv, src=0)
        local.copy_(recv)


def _broadcast(tensor, full) -> None:
    import torch.distributed as dist

    if full is not None:
        tensor.copy_(full.to(device=tensor.device, dtype=tensor.dtype))
    dist.broadcast(tensor, src=0)
