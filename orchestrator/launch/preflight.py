"""Static checks on the driver before anything starts: data sources, columns, model path, target modules.

Every problem is collected and raised at once as a UserError naming the YAML key and the fix. Nothing
here imports torch; the target-module check builds the model on the meta device (no weights) with a
lazy transformers import, and only when the model's config is on local disk.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import List, Optional

from orchestrator.core.config import RunConfig
from orchestrator.core.errors import UserError, did_you_mean

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def check_run(cfg: RunConfig, check_modules: bool = True) -> None:
    """Raise UserError listing every data and model problem; return quietly when all is well."""
    from orchestrator.core.rows import required_columns
    from orchestrator.launch.bad_rows import check_bad_rows

    problems: List[str] = []
    d = cfg.data
    cols = required_columns(d)
    sources = [(f"data.{k}", getattr(d, k)) for k in ("train", "eval", "test")]
    if cfg.retrain and cfg.retrain.eval_data:
        sources.append(("retrain.eval_data", cfg.retrain.eval_data))
    for key, src in sources:
        if src:
            min_rows = 2 if key == "data.train" and not d.eval else 1
            found = check_source(key, src, cols, min_rows, endpoint_url=cfg.data_endpoint)
            problems += found or check_bad_rows(key, src, d)
    if cfg.model.name_or_path.startswith("s3://"):
        from orchestrator.storage.sources import check_s3_model

        model_problem = "\n".join(check_s3_model(cfg.model.name_or_path, cfg.model_endpoint)) or None
    else:
        model_problem = check_model_path(cfg.model.name_or_path)
    if model_problem:
        problems.append(model_problem)
    elif check_modules and is_local_path(cfg.model.name_or_path):
        problems += check_model_against_config(cfg)
    if problems:
        raise UserError(*problems)


def check_source(
    key: str, source: str, columns: List[str], min_rows: int = 1, endpoint_url: Optional[str] = None
) -> List[str]:
    """Problems with one data source: missing, unknown format, undecodable, missing columns, empty."""
    if source.startswith("s3://"):
        from orchestrator.storage.sources import check_s3_source

        return check_s3_source(key, source, columns, min_rows, endpoint_url, check_file)
    if source.startswith("hub:"):
        return []  # resolved where the data is loaded (the hub may be reachable only there)
    p = Path(source)
    if not p.exists():
        return [
            f"`{key}`: file '{source}' does not exist. Fix the path (relative paths are read from the "
            f"config file's folder) or create the file."
        ]
    if p.is_dir():
        return _check_saved_dataset(key, p, columns)
    return check_file(key, source, p, columns, min_rows)


def check_file(
    key: str, source: str, p: Path, columns: List[str], min_rows: int = 1, partial: bool = False
) -> List[str]:
    """Problems with one data file at `p` (shown as `source`); `partial`: `p` holds only its first lines."""
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        return [f"`{key}`: cannot read '{p.name}': use .jsonl, .csv, .parquet or a datasets save_to_disk folder."]
    try:
        header, rows = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}[fmt](p)
    except ValueError as e:
        return [f"`{key}`: {str(e).replace(str(p), source)}"]
    if partial:
        rows = max(rows, min_rows) if rows else 0  # only the first lines were read
    problems = []
    missing = [c for c in columns if c not in header]
    if rows == 0:
        problems.append(f"`{key}`: '{source}' has no examples; add at least {min_rows}.")
    elif missing:
        for c in missing:
            which = _column_key(c, columns)
            fix = f"Set {which} to the right column." if which != "data.format" else "Add the column."
            problems.append(
                f"`{which}`: column '{c}' is not in {source}; it has {', '.join(sorted(header)) or 'no columns'}."
                f"{did_you_mean(c, header)} {fix}"
            )
    elif rows < min_rows:
        problems.append(
            f"`{key}`: '{source}' has {rows} example(s); at least {min_rows} are needed to split off "
            f"an eval set. Add examples or set data.eval."
        )
    return problems


def _column_key(column: str, columns: List[str]) -> str:
    """The YAML key that makes `column` required (data.format names messages/instruction columns itself)."""
    from orchestrator.core.rows import INSTRUCTION_COLUMN, MESSAGES_COLUMN

    if columns[0] in (MESSAGES_COLUMN, INSTRUCTION_COLUMN) and column == columns[0]:
        return "data.format"
    return "data.input_column" if column == columns[0] else "data.target_column"


def _jsonl(p: Path):
    header: set = set()
    rows = 0
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"'{p}' is not UTF-8 text (byte {e.start}); save it as UTF-8.") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"line {n} of '{p}' is not valid JSON ({e.msg}); each line must be one JSON object."
            ) from None
        if not isinstance(row, dict):
            raise ValueError(f"line {n} of '{p}' is a JSON {type(row).__name__}, not an object with named fields.")
        header |= set(row)
        rows += 1
    return header, rows


def _csv(p: Path):
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            rows = sum(1 for r in reader if any(c.strip() for c in r))
    except UnicodeDecodeError as e:
        raise ValueError(f"'{p}' is not UTF-8 text (byte {e.start}); save it as UTF-8.") from None
    except csv.Error as e:
        raise ValueError(f"'{p}' is not valid CSV: {e}.") from None
    return set(header), rows


def _parquet(p: Path):
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(p)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise ValueError(f"'{p}' is not a readable Parquet file: {e}.") from None
    return set(meta.schema_arrow.names), meta.metadata.num_rows


def _check_saved_dataset(key: str, p: Path, columns: List[str]) -> List[str]:
    info = next(iter(sorted(p.rglob("dataset_info.json"))), None)
    if info is None:
        return [f"`{key}`: '{p}' is a folder but not a datasets save_to_disk folder (no dataset_info.json)."]
    feats = set((json.loads(info.read_text()).get("features") or {}).keys())
    missing = [c for c in columns if c not in feats]
    return [
        f"`{key}`: column '{c}' is not in '{p}'; it has {', '.join(sorted(feats))}.{did_you_mean(c, feats)}"
        for c in missing
    ]


def is_local_path(name: str) -> bool:
    if "://" in name:
        return False
    return name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") > 1


def check_model_path(name: str) -> Optional[str]:
    if not is_local_path(name):
        return None  # a hub id, resolved on the workers (from the hub or the local cache)
    p = Path(name).expanduser()
    if not p.exists():
        return (
            f"`model.name_or_path`: '{name}' does not exist. Give a local model folder (e.g. build one with "
            f"`python -m jobs.tiny_models t5 --data DATA.jsonl --out models/tiny-t5`) or a hub id like t5-small."
        )
    if not (p / "config.json").exists():
        return f"`model.name_or_path`: '{name}' has no config.json; point it at a folder saved with save_pretrained."
    return None


def check_model_against_config(cfg: RunConfig) -> List[str]:
    """The model fits model.task, and lora.target_modules names layers it has (meta device, no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    mconf = AutoConfig.from_pretrained(cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code)
    cls = AutoModelForSeq2SeqLM if cfg.model.task == "seq2seq" else AutoModelForCausalLM
    try:
        with torch.device("meta"):
            model = cls.from_config(mconf, trust_remote_code=cfg.model.trust_remote_code)
    except ValueError:
        other = "causal_lm" if cfg.model.task == "seq2seq" else "seq2seq"
        return [
            f"`model.task` is {cfg.model.task} but '{cfg.model.name_or_path}' is a {mconf.model_type} model "
            f"({type(mconf).__name__}), which has no {cfg.model.task} head. Set model.task: {other}."
        ]
    fsdp = check_fsdp_layers(cfg, model)
    if fsdp or not isinstance(cfg.lora.target_modules, list):
        return fsdp
    # GPT-2 style models keep their projections in transformers' Conv1D (a transposed Linear): peft adapts
    # those too, and bitsandbytes quantizes them.
    names = sorted(
        {
            n.split(".")[-1]
            for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"
        }
    )
    missing = [m for m in cfg.lora.target_modules if m not in names]
    if not missing:
        return []
    return [
        f"`lora.target_modules`: the model has no module named {', '.join(repr(m) for m in missing)}"
        f".{did_you_mean(missing[0], names)} Its linear modules are: {', '.join(names)} "
        f'(or use "all-linear").'
    ]


def check_fsdp_layers(cfg: RunConfig, model) -> List[str]:
    """strategy fsdp wraps the model decoder layer by layer: the class must name its layer class in
    `_no_split_modules` (jobs/fsdp.py layer_classes), and that class must occur in the model."""
    if cfg.resources.strategy != "fsdp" or cfg.resources.num_workers <= 1:
        return []
    names = list(getattr(model, "_no_split_modules", None) or [])
    present = {type(m).__name__ for m in model.modules()}
    if names and any(n in present for n in names):
        return []
    why = (
        f"its layer classes {names} do not occur in it"
        if names
        else "it names no decoder layer class (_no_split_modules)"
    )
    return [
        f"`resources.strategy` is fsdp, but {type(model).__name__} ('{cfg.model.name_or_path}') cannot be sharded "
        f"layer by layer: {why}. Set resources.strategy: ddp (each worker holds the whole model)."
    ]


def check_local_start(cfg: RunConfig, *, resume: bool, gpus: Optional[float]) -> Path:
    """Local mode, before Ray starts: the GPUs asked for exist, an s3:// output is usable, and the run
    folder holds no earlier run unless `resume`. Returns the run folder (its staging copy for s3://).

    Raises:
        UserError: naming the key and the fix.
    """
    from orchestrator.core.rundir import run_dir_for
    from orchestrator.storage.run_upload import check_s3_output

    check_local_gpus(cfg, gpus)
    check_s3_output(cfg, resume)  # credentials, bucket, no earlier run there: before anything starts
    run_dir = run_dir_for(cfg)
    if run_dir.exists() and not resume and any(run_dir.iterdir()):
        raise UserError(
            f"`output.experiment`: '{run_dir}' already holds a run. Pass --resume to continue it, "
            f"--experiment NAME (or --set output.experiment=NAME) for a new one, or delete the folder."
        )
    return run_dir


def check_resume_kind(run_dir: Path, verb: str) -> None:
    """`--resume` continues the kind of run the folder holds: `tune` a Ray Tune search (ray/tune/), `train` its
    bare Ray Train run (ray/train-<id>/reports.jsonl). The other kind's resume would find nothing of its own
    and start from step 0 in the folder of another run. A folder with neither (a run that failed before its
    first report) starts again.

    Raises:
        UserError: the folder holds the other kind of run, with the command that continues it.
    """
    from orchestrator.core.ray_storage import RAY_DIR, TRAIN_REPORTS, TRAIN_RUN_PREFIX, TUNE_DIR

    ray_dir = run_dir / RAY_DIR
    searched = (ray_dir / TUNE_DIR).is_dir()
    trained = any(ray_dir.glob(f"{TRAIN_RUN_PREFIX}*/{TRAIN_REPORTS}"))
    fresh = "or start a new run with --experiment NAME (or --set output.experiment=NAME)"
    if verb == "train" and searched and not trained:
        raise UserError(
            f"--resume: '{run_dir}' holds a Ray Tune search (ray/tune/), from `qlora-launch tune` or from a "
            f"`train` of a version that ran it as a one-trial search; `train --resume` continues only its own "
            f"runs. Continue that search with `qlora-launch tune CONFIG --resume`, {fresh}."
        )
    if verb == "tune" and trained and not searched:
        raise UserError(
            f"--resume: '{run_dir}' holds a `train` run (ray/train-*/), not a search. Continue it with "
            f"`qlora-launch train CONFIG --resume`, {fresh}."
        )


def check_local_gpus(cfg: RunConfig, gpus: Optional[float]) -> None:
    """GPUs asked for by `resources` must exist on this machine in local mode."""
    auto = cfg.resources.gpus_per_worker == "auto"
    ask = 0.125 if auto else cfg.resources.gpus  # auto: a trial's share is at least 1/8
    shown = "auto (at least 0.125)" if auto else f"{ask:g}"
    need = ask * cfg.resources.num_workers
    if need <= 0:
        return
    have = gpus if gpus is not None else detect_gpus()
    if have < ask:
        raise UserError(
            f"`resources.gpus_per_worker` is {shown} but this machine has "
            f"{have:g} GPU(s). Set resources.gpus_per_worker: 0 to train on CPU, or pass --address to run on a "
            f"Ray cluster with GPU workers."
        )
    if have < need:
        raise UserError(
            f"`resources`: one trial needs {need:g} GPUs ({cfg.resources.num_workers} workers x "
            f"{ask:g}) but this machine has {have:g}. Lower resources.num_workers or "
            f"resources.gpus_per_worker."
        )


def detect_gpus() -> float:
    """GPUs Ray would see on this machine (no torch import, no Ray start)."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0.0
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        return float(get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators())
    except Exception:  # no NVIDIA library: no GPU
        return 0.0
