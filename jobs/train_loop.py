"""What each Ray Train worker runs: quantized base + LoRA, the HF Trainer, reports to Ray.

construct (config in) -> setup (model, data, trainer) -> train (resuming from Ray's checkpoint) -> cleanup
"""

from __future__ import annotations

import resource
import shutil
import tempfile
from typing import Any, Dict, Optional, Tuple

from jobs.checkpoints import HF_SUBDIR as CHECKPOINT_DIR  # the HF checkpoint inside a Ray checkpoint
from orchestrator.core.config import RunConfig


def train_fn_per_worker(config: Dict[str, Any]) -> None:
    """Ray Train entry point: `config` holds the run config JSON, the trial's params and a data ref."""
    import ray.train

    from jobs.worker_log import log_target, output_to, prime_log, sync_log

    rank = ray.train.get_context().get_world_rank()
    spec, trial_id = config.get("log"), config.get("trial_id") or "trial"
    log = log_target(spec, trial_id, rank)
    prime_log(spec, log, trial_id)
    with output_to(log, stream=bool(spec and spec.get("stream")), header=f"trial {trial_id} rank {rank}"):
        try:
            _train(config, rank, lambda: sync_log(spec, log, trial_id))
        except BaseException:
            import traceback

            traceback.print_exc()  # the full traceback in the trial's log; Ray carries the error to the driver
            raise
        finally:
            sync_log(spec, log, trial_id)


def _train(config: Dict[str, Any], rank: int, sync_log) -> None:

    params = {**config.get("params", {}), **config.get("plan_params", {})}
    cfg = RunConfig.model_validate(config["run_config"]).with_params(params)
    data = resolve_data(config["data"])
    from jobs.wandb_trial import start_tracking, sync_tracking

    tracker = start_tracking(cfg, config)
    from jobs.modeling import load_tokenizer, load_trainable, param_counts
    from jobs.train_backend import placement  # the GPU ids and share Ray gave this worker

    tokenizer = load_tokenizer(cfg)
    model = load_trainable(cfg, device_map=_device_map(cfg))
    counts = param_counts(model)
    if rank == 0:
        print(
            f"trainable params: {counts['trainable_params']:,} || all params: {counts['total_params']:,} "
            f"|| trainable%: {counts['trainable_pct']:.4f}",
            flush=True,
        )
    if tracker is not None:
        tracker.config.update({**counts}, allow_val_change=True)
    output_dir = tempfile.mkdtemp(prefix="qlora-trial-")
    resume, step = restore_checkpoint(output_dir)
    extra = {**counts, "resumed_from_step": step, **config.get("plan", {}), **placement()}  # plan: the estimate's
    trainer = build_trainer(cfg, model, tokenizer, data, extra, output_dir, report_to_wandb=tracker is not None)
    if config.get("mlflow_live"):
        from jobs.mlflow_live import mlflow_live_callback

        trainer.add_callback(mlflow_live_callback(config["mlflow_live"], config["trial_id"], config.get("params", {})))
    from jobs.worker_log import sync_callback

    sink = config.get("tracking_sink")
    if tracker is not None and sink:
        trainer.add_callback(sync_callback(lambda: sync_tracking(tracker, sink)))
    trainer.add_callback(sync_callback(sync_log))
    try:
        trainer.train(resume_from_checkpoint=resume)
    finally:
        if tracker is not None:
            tracker.finish()
            if sink:
                sync_tracking(tracker, sink)
        shutil.rmtree(trainer.args.output_dir, ignore_errors=True)


def resolve_data(data: Any) -> Dict[str, Any]:
    """The tokenized splits as Datasets, from [ObjectRef] of pyarrow Tables (jobs.data.trial_data: sent by
    value, tokenized once per search) or from the Tables or Datasets themselves."""
    import pyarrow
    import ray

    from jobs.data import dataset_of

    if isinstance(data, list) and data and isinstance(data[0], ray.ObjectRef):
        data = ray.get(data[0])
    return {k: dataset_of(v) if isinstance(v, pyarrow.Table) else v for k, v in data.items()}


def _device_map(cfg: RunConfig):
    import torch

    if cfg.quantization.mode != "none" and torch.cuda.is_available():
        import ray.train.torch

        return {"": ray.train.torch.get_device()}
    return None


def training_arguments(
    cfg: RunConfig, output_dir: str, report_to_wandb: bool, model_type: Optional[str] = None, model=None
):
    import torch
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    from jobs.precision import choose_precision

    t = cfg.training
    cuda = torch.cuda.is_available()
    bf16, fp16, said = choose_precision(t.mixed_precision, model_type, cuda, cuda and torch.cuda.is_bf16_supported())
    if said:
        from jobs.worker_log import notice

        notice(said)
    kwargs: Dict[str, Any] = dict(
        output_dir=output_dir,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        weight_decay=t.weight_decay,
        optim=t.optim,
        max_grad_norm=t.max_grad_norm,
        lr_scheduler_type=t.lr_scheduler,
        eval_strategy="steps",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.save_steps or t.eval_steps,
        save_total_limit=t.save_total_limit,
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        seed=t.seed,
        data_seed=t.seed,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        dataloader_num_workers=t.dataloader_num_workers,
        bf16=bf16,
        fp16=fp16,
        use_cpu=not cuda,
        report_to=["wandb"] if report_to_wandb else "none",
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
        label_names=["labels"],
        remove_unused_columns=False,
    )
    from jobs.throughput import resolve_compile, resolve_kernels

    kernels, why = resolve_kernels(t.kernels, cuda, model_type)
    if why and cuda:
        from jobs.worker_log import notice

        notice(f"training.kernels auto: none ({why})")
    kwargs.update(use_liger_kernel=kernels == "liger", torch_compile=resolve_compile(t.torch_compile))
    from jobs.fsdp import fsdp_arguments, is_fsdp

    if is_fsdp(cfg):  # the model is sharded over the trial's workers (jobs/fsdp.py)
        kwargs.update(fsdp_arguments(cfg, model))
    if cfg.model.task == "seq2seq":
        return Seq2SeqTrainingArguments(
            predict_with_generate=cfg.needs_generation,
            generation_max_length=t.generation_max_length,
            generation_num_beams=t.generation_num_beams,
            **kwargs,
        )
    return TrainingArguments(**kwargs)


def wants_packing(cfg: RunConfig, model) -> bool:
    """data.packing for this model: true/false as set; auto only with flash-attention kernels."""
    if cfg.model.task != "causal_lm" or cfg.data.packing is False:
        return False
    if cfg.data.packing is True:
        return True
    return str(getattr(model.config, "_attn_implementation", "")).startswith("flash_attention")


def build_trainer(
    cfg: RunConfig,
    model,
    tokenizer,
    data: Dict[str, Any],
    extra: Dict[str, Any],
    output_dir: str,
    report_to_wandb: bool = False,
):
    """The HF Trainer (Seq2SeqTrainer when generations are scored) wired to Ray Train."""
    from ray.train.huggingface.transformers import prepare_trainer
    from transformers import Seq2SeqTrainer, Trainer

    from jobs.data import build_collator, packing_keeps_examples_apart
    from jobs.generation import causal_generation_trainer_class
    from jobs.metrics import generation_metrics_fn

    args = training_arguments(cfg, output_dir, report_to_wandb, getattr(model.config, "model_type", None), model)
    kw: Dict[str, Any] = {}
    cls: Any
    if cfg.model.task == "seq2seq":
        cls = Seq2SeqTrainer
        if cfg.needs_generation:
            kw["compute_metrics"] = generation_metrics_fn(tokenizer, cfg.metrics.rouge_tokenizer)
    elif cfg.needs_generation:  # generations from the prompt alone, scored after the eval loss
        cls, kw["run_config"] = causal_generation_trainer_class(), cfg
    else:
        cls = Trainer
    if args.fsdp:
        from jobs.fsdp import ShardReportCallback, fsdp_trainer_class, keep_4bit_layout_on_cpu

        keep_4bit_layout_on_cpu(model)
        cls, kw["callbacks"] = fsdp_trainer_class(cls), [ShardReportCallback()]
    packing = wants_packing(cfg, model)
    if packing:
        model.config.use_cache = False  # transformers detects packed rows only when it builds no cache
    if packing and args.fsdp:  # the base is on meta on ranks > 0 until it is sharded: no forward to compare
        print(
            "Sequence packing on, not checked: under FSDP the base is whole on rank 0 only, so the packed vs one "
            "by one comparison is not run (it relies on the attention kernel honouring restarting position_ids; "
            "the same model under resources.strategy ddp checks it)",
            flush=True,
        )
    elif packing:
        packing, diff, leak = packing_keeps_examples_apart(model, data["train"])
        print(
            f"Sequence packing {'on' if packing else 'off: the model lets packed examples see each other'} "
            f"(packed vs one by one: max |Δlogit| {diff:.1e}; {leak:.1e} if examples could see each other)",
            flush=True,
        )
    from jobs.throughput import ThroughputMeter

    meter = ThroughputMeter(cfg, model, "liger" if args.use_liger_kernel else "none", bool(args.torch_compile))
    trainer = cls(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["eval"],
        data_collator=build_collator(tokenizer, model if cfg.model.task == "seq2seq" else None, packing=packing),
        processing_class=tokenizer,
        callbacks=[report_callback_class()(extra=extra, meter=meter), *kw.pop("callbacks", [])],
        **kw,
    )
    meter.attach(trainer)  # tokens/s and MFU in every report (jobs/throughput.py)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # progress is shown by the driver; logs go to the tracker
    if cfg.model.task == "seq2seq":
        # T5's forward takes **kwargs but ignores num_items_in_batch: the Trainer would then scale its mean
        # loss by the DDP world size (and not divide it by the accumulation steps).
        trainer.model_accepts_loss_kwargs = False
    return prepare_trainer(trainer)


_REPORT_CALLBACK = None


def report_callback_class():
    """RayReportCallback, built on first use.

    It subclasses Ray's RayTrainReportCallback, whose module imports transformers (and torch). Building it
    lazily keeps `import jobs.train_loop` light: the Tune trial actor imports this module only to hand
    `train_fn_per_worker` to its TorchTrainer, and would otherwise import transformers for nothing on
    every trial's start-up path (bench/bench_overhead.py).
    """
    global _REPORT_CALLBACK
    if _REPORT_CALLBACK is not None:
        return _REPORT_CALLBACK
    from ray.train.huggingface.transformers import RayTrainReportCallback

    class RayReportCallback(RayTrainReportCallback):
        """RayTrainReportCallback plus the step, parameter counts and peak memory in every report.

        Reports happen on save; saves follow evals (save_steps is a multiple of eval_steps), so every
        report carries a fresh metric for Tune's scheduler.
        """

        def __init__(self, extra: Optional[Dict[str, Any]] = None, meter=None):
            super().__init__()
            self.extra = dict(extra or {})
            self.meter = meter  # jobs.throughput.ThroughputMeter

        def on_save(self, args, state, control, **kwargs):
            import ray.train
            import torch
            import transformers.trainer

            metrics: Dict[str, Any] = {}
            for log in state.log_history:
                metrics.update(log)
            metrics.update(self.extra)
            if self.meter is not None:
                metrics.update(self.meter.fields())  # a collective over the workers: every rank calls on_save
            metrics["step"] = state.global_step
            metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            if torch.cuda.is_available():
                metrics["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
            ctx = ray.train.get_context()
            if ctx.get_world_size() > 1:
                metrics["world_size"] = ctx.get_world_size()
                metrics["ranks_in_sync"] = _ranks_in_sync(state.global_step, kwargs.get("model"))
            with tempfile.TemporaryDirectory() as tmp:
                # Only rank 0 reports a checkpoint: the HF Trainer writes the adapter, optimizer and
                # trainer state there alone (other ranks' folders hold just their RNG state).
                from jobs.checkpoints import stage_checkpoint
                from jobs.worker_log import NOTICES, notice

                src = transformers.trainer.get_last_checkpoint(args.output_dir) if ctx.get_world_rank() == 0 else None
                staged = stage_checkpoint(src, tmp, state.global_step, notice)
                if NOTICES:  # what the user should read in the summary, including a checkpoint not written
                    metrics["notices"] = "\n".join(NOTICES)
                checkpoint = ray.train.Checkpoint.from_directory(tmp) if staged is not None else None
                ray.train.report(metrics=metrics, checkpoint=checkpoint)

    def _ranks_in_sync(step: int, model) -> bool:
        """Whether every rank is at this step with the same trainable weights (DDP) or, under FSDP, the same
        replicated state: buffers, 4-bit quant states, shard layout (a collective: all ranks call it from on_save)."""
        import hashlib

        import torch
        import torch.distributed as dist

        h = hashlib.sha256()
        params = list(model.named_parameters()) if model is not None else []
        if any(hasattr(p, "full_tensor") for _, p in params):  # FSDP: compare what is replicated (jobs/fsdp.py)
            from jobs.fsdp import replicated_digest

            h.update(replicated_digest(model).encode())
            params = []
        for name, p in sorted(params, key=lambda x: x[0]):
            if p.requires_grad:
                h.update(name.encode())
                h.update(p.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
        mine = (step, h.hexdigest())
        if not dist.is_available() or not dist.is_initialized():
            return True
        every: list = [None] * dist.get_world_size()
        dist.all_gather_object(every, mine)
        return all(x == mine for x in every)

    RayReportCallback.__module__ = __name__  # pickles by reference through the module __getattr__ below
    RayReportCallback.__qualname__ = "RayReportCallback"
    _REPORT_CALLBACK = RayReportCallback
    return RayReportCallback


def __getattr__(name: str):
    if name == "RayReportCallback":
        return report_callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def restore_checkpoint(output_dir: str) -> Tuple[Optional[str], int]:
    """The HF checkpoint to resume from (and its step) when Ray restarted this run, else (None, 0).

    The Ray checkpoint is copied into the trainer's output dir, so the HF Trainer restores the adapter,
    optimizer, scheduler, RNG and the global step and continues counting from there. It is verified
    against its sha256 manifest first; one that is not whole (cut short by a lost node) is skipped for
    the newest whole previous checkpoint of the same run, or a fresh start (jobs/checkpoints.py).
    """
    import ray.train

    from jobs.checkpoints import pick_resumable

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None, 0

    def say(line: str) -> None:  # every rank picks the same checkpoint; rank 0 says why
        if ray.train.get_context().get_world_rank() == 0:
            from jobs.worker_log import notice

            notice(line)

    picked = pick_resumable(ckpt.path, ckpt.filesystem, output_dir, CHECKPOINT_DIR, log=say)
    if picked is None:
        return None, 0
    say(f"Resuming from checkpoint at step {picked.step}")
    return str(picked.dir), picked.step
