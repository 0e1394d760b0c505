"""Loading, splitting and tokenizing the examples (worker side).

Tokenization pads nothing: `DataCollatorForSeq2Seq` pads each batch to its own longest example and
pads labels with -100, so padding never counts in the loss (the seed padded everything to 512).
For causal LM the prompt tokens are masked with -100 too: the loss is on the completion only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from orchestrator.core.config import RunConfig
from orchestrator.core.config_sections import DataConfig
from orchestrator.core.s3_uri import parse_hub

IGNORE_INDEX = -100


def load_source(source: str, endpoint_url: Optional[str] = None):
    """A `datasets.Dataset` from a JSONL/CSV/Parquet file (local or s3://bucket/key), a save_to_disk folder,
    or `hub:NAME[:config][@revision]` (its train split)."""
    import datasets

    if source.startswith("hub:"):
        name, config, revision = parse_hub(source)
        return datasets.load_dataset(name, config, revision=revision, split="train")
    if source.startswith("s3://"):
        return _load_s3(source, endpoint_url)
    p = Path(source)
    if p.is_dir():
        ds = datasets.load_from_disk(str(p))
        return ds["train"] if isinstance(ds, datasets.DatasetDict) else ds
    return _load_file(p)


def _load_file(p: Path):
    import datasets

    kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}[p.suffix.lower()]
    return datasets.load_dataset(kind, data_files=str(p), split="train")


def _load_s3(uri: str, endpoint_url: Optional[str]):
    """An s3:// file read through pyarrow's S3 filesystem (the default AWS credential chain), then loaded
    as a local file would be; the copy lives only while it is read into memory."""
    import tempfile

    import datasets
    import pyarrow.fs

    from orchestrator.core.ray_storage import s3_filesystem
    from orchestrator.core.s3_uri import parse_s3

    bucket, key = parse_s3(uri)
    fs = s3_filesystem(bucket, endpoint_url)
    with tempfile.TemporaryDirectory(prefix="qlora-data-") as tmp:
        local = Path(tmp) / Path(key).name
        pyarrow.fs.copy_files(f"{bucket}/{key}", str(local), source_filesystem=fs)
        ds = _load_file(local)
        return datasets.Dataset(table_of(ds))  # in memory: the temporary file goes away


def table_of(ds) -> Any:
    """The rows of a `datasets.Dataset` as one in-memory-serializable pyarrow Table.

    A Dataset that `load_dataset`/`.map` built is memory-mapped from Arrow files in this node's cache,
    and pickles as the path of those files: on another node that path does not exist. A pyarrow Table
    pickles (and goes through Ray's object store) by value.
    """
    if ds._indices is not None:  # a split or a select: take the rows it points at
        ds = ds.flatten_indices(keep_in_memory=True)
    return ds.data.table


def dataset_of(table) -> Any:
    """A `datasets.Dataset` over a pyarrow Table received by value (no cache file behind it)."""
    import datasets

    return datasets.Dataset(table)


def trial_data(data: Dict[str, Any]) -> Dict[str, Any]:
    """What each trial receives: the tokenized train and eval splits as pyarrow Tables (by value)."""
    return {"train": table_of(data["train"]), "eval": table_of(data["eval"])}


def load_splits(data: DataConfig, endpoint_url: Optional[str] = None) -> Dict[str, "object"]:
    """{'train', 'eval'[, 'test']} datasets; eval is split off train when no eval source is given.

    Without data.test, `data.test_split` of train is set aside first (before eval is split off and before
    any trial sees the data), so the test rows are in neither train nor eval.
    """
    train = load_source(data.train, endpoint_url)
    test = load_source(data.test, endpoint_url) if data.test else None
    if test is None and data.test_split > 0:
        parts = train.train_test_split(test_size=data.test_split, seed=data.split_seed)
        train, test = parts["train"], parts["test"]
    if data.eval:
        splits = {"train": train, "eval": load_source(data.eval, endpoint_url)}
    else:
        parts = train.train_test_split(test_size=data.eval_split, seed=data.split_seed)
        splits = {"train": parts["train"], "eval": parts["test"]}
    if test is not None:
        splits["test"] = test
    return splits


def tokenize(ds, tokenizer, cfg: RunConfig):
    """Token ids and labels for every example, unpadded; columns other than the model's are dropped."""
    d = cfg.data
    if cfg.model.task == "seq2seq":

        def fn(batch):
            enc = tokenizer(batch[d.input_column], max_length=d.max_input_length, truncation=True)
            tgt = tokenizer(text_target=batch[d.target_column], max_length=d.max_target_length, truncation=True)
            enc["labels"] = tgt["input_ids"]
            return enc
    else:

        def fn(batch):
            return causal_features(batch[d.input_column], batch[d.target_column], tokenizer, d)

    return ds.map(fn, batched=True, remove_columns=ds.column_names, desc="tokenize")


def causal_features(inputs, targets, tokenizer, d: DataConfig) -> Dict[str, list]:
    """Prompt + completion + EOS; labels are -100 on the prompt so only the completion is learned."""
    out: Dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
    for inp, tgt in zip(inputs, targets):
        prompt = tokenizer(d.prompt_template.format(input=inp), max_length=d.max_input_length, truncation=True)
        comp = tokenizer(str(tgt), add_special_tokens=False, max_length=d.max_target_length - 1, truncation=True)
        ids = prompt["input_ids"] + comp["input_ids"] + [tokenizer.eos_token_id]
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append([IGNORE_INDEX] * len(prompt["input_ids"]) + comp["input_ids"] + [tokenizer.eos_token_id])
    return out


def build_collator(tokenizer, model=None, pad_to_multiple_of: Optional[int] = None, packing: bool = False):
    """Dynamic padding per batch (label padding -100), or with `packing` one padding-free row per batch.

    Packed: the batch's examples are concatenated into a [1, total_tokens] row with position_ids that
    restart at 0 for each example and a -100 label at each boundary; transformers' mask builder turns
    the position restarts into a block-diagonal causal mask, so no token attends across examples and no
    compute goes to padding. Only for models where `packing_keeps_examples_apart` holds, and with the
    model's `config.use_cache` off (transformers detects packed rows only when no cache is built).
    """
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if packing:
        return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX, return_tensors="pt")

    return DataCollatorForSeq2Seq(
        tokenizer, model=model, label_pad_token_id=IGNORE_INDEX, pad_to_multiple_of=pad_to_multiple_of
    )


def packing_keeps_examples_apart(model, examples, ratio: float = 0.1) -> Tuple[bool, float, float]:
    """Does this model give a packed row the logits its examples have one by one?

    Three forward passes over the first two examples (eval mode, no grad, no cache): one by one; packed
    with restarting positions (what training will do); and packed as one plain sequence (what a model
    that ignores the restarts would compute: the second example sees the first). Returns (ok, packed
    |Δlogit|, leaking |Δlogit|), both the largest absolute difference from one by one. `ok` when the
    packed difference is under `ratio` of the leaking one: numerical noise (bf16 kernels on a GPU
    differ a little with the shapes) passes, attention across examples does not.
    """
    import torch

    feats = [{"input_ids": list(e["input_ids"]), "labels": list(e["labels"])} for e in list(examples)[:2]]
    if len(feats) < 2:
        return False, float("nan"), float("nan")
    packed = build_collator(None, packing=True)(feats)
    device = next(p for p in model.parameters()).device
    ids = packed["input_ids"].to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # use_cache=False as in training: transformers looks for packed rows only when there is no cache.
            one_by_one = torch.cat(
                [
                    model(input_ids=torch.tensor([f["input_ids"]], device=device), use_cache=False).logits[0].float()
                    for f in feats
                ]
            )
            row = model(input_ids=ids, position_ids=packed["position_ids"].to(device), use_cache=False).logits[0]
            leak = model(input_ids=ids, use_cache=False).logits[0]
    finally:
        model.train(was_training)
    d_packed = float((row.float() - one_by_one).abs().max())
    d_leak = float((leak.float() - one_by_one).abs().max())
    return d_leak > 0 and d_packed <= ratio * d_leak, d_packed, d_leak


def prepare_datasets(cfg: RunConfig, tokenizer) -> Dict[str, Any]:
    """Raw and tokenized splits: {'train','eval'} tokenized, plus 'eval_raw' (for samples) and 'test_raw'."""
    raw = load_splits(cfg.data, cfg.data_endpoint)
    out = {name: tokenize(ds, tokenizer, cfg) for name, ds in raw.items() if name in ("train", "eval")}
    out["eval_raw"] = raw["eval"]
    if "test" in raw:
        out["test_raw"] = raw["test"]
    return out
