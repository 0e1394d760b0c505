"""`qlora-launch estimate` from a config: load the RunConfig (or defaults around --model), read the model's
shape on the meta device (orchestrator.estimate.shapes), estimate its memory (orchestrator.estimate.memory).

The Python API the CLI calls; pydantic and the config module are imported lazily, torch/transformers only
inside `inspect_model`.
"""

from __future__ import annotations

from typing import Optional, Sequence

from orchestrator.core.errors import UserError
from orchestrator.estimate.memory import Estimate, estimate
from orchestrator.estimate.shapes import inspect_model, load_model_config, shipped_arch


def load_estimate_config(config_path: Optional[str], overrides: Sequence[str] = (), model: Optional[str] = None):
    """The RunConfig to estimate: the YAML config (with --set), or defaults around `model` alone.

    Returns:
        (RunConfig, task or None): the task is None when it should come from the model's config (only
        --model given and no --set model.task), so a causal LM named by --model is not read as seq2seq.
    Raises:
        UserError: a missing/invalid config, or neither a config nor a model.
    """
    from pydantic import ValidationError

    from orchestrator.core.config_load import format_validation_errors, load_config, parse_overrides, validate_dict

    params = parse_overrides(list(overrides))
    if config_path is None and not model:
        raise UserError(
            "estimate needs a CONFIG file, --model NAME_OR_CONFIG, or --table. "
            "Example: qlora-launch estimate --model llama-2-7b"
        )
    if config_path is not None:
        cfg = load_config(config_path, list(overrides), prices=False)
        task_from_model = False
    else:
        cfg = validate_dict({"model": {"name_or_path": model}, "data": {"train": "(unused by estimate)"}})
        task_from_model = True
    if model:
        params["model.name_or_path"] = model
        task_from_model = True
    if "model.task" in params:
        task_from_model = False
    if params:
        try:
            cfg = cfg.with_params(params)
        except ValidationError as e:
            raise UserError(*format_validation_errors(e, cfg.to_json())) from None
    return cfg, (None if task_from_model else cfg.model.task)


def run_estimate(
    config_path: Optional[str] = None,
    overrides: Sequence[str] = (),
    model: Optional[str] = None,
    ranks: Optional[Sequence[int]] = None,
    gpu_mem_gib: float = 24.0,
) -> Estimate:
    """`qlora-launch estimate`: load the config, read the model's shape on the meta device, estimate.

    Raises:
        UserError: a bad config, an unknown model, target modules that do not fit the model.
    """
    if gpu_mem_gib <= 0:
        raise UserError(f"--gpu-mem-gb must be > 0 (got {gpu_mem_gib:g}).")
    if ranks and min(ranks) < 1:
        raise UserError(f"--rank must be >= 1 (got {min(ranks)}).")
    cfg, task = load_estimate_config(config_path, overrides, model)
    mc, source = load_model_config(cfg.model.name_or_path, cfg.model.trust_remote_code)
    name = shipped_arch(cfg.model.name_or_path) or cfg.model.name_or_path
    shape = inspect_model(mc, task, name, source, cfg.model.trust_remote_code)
    return estimate(shape, cfg, ranks, gpu_mem_gib)
