"""Loading, splitting and tokenizing the examples (worker side).

How a row becomes text, and which of its tokens carry the loss, is jobs.formats (data.format).
Tokenization pads nothing: `DataCollatorForSeq2Seq` pads each batch to its own longest example and
pads labels with -100, so padding never counts in the loss (the seed padded everything to 512).
For causal LM the prompt tokens are masked with -100 too: the loss is on the completion only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from jobs.formats import TARGET, Piece, counter, fit, fit_messages, row_pieces, text_of, uses_chat
from orchestrator.core.config import RunConfig
from orchestrator.core.config_sections import DataConfig
from orchestrator.core.rows import MESSAGES_COLUMN, row_problem
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
    if kind == "json" and p.suffix.lower() == ".jsonl":
        lines = p.read_text(encoding="utf-8").splitlines()
        if any(not line.strip() for line in lines):
            # datasets' JSON reader fails on a blank line once a column mixes types (a bad row): read a copy
            # without them, in memory
            import tempfile

            with tempfile.TemporaryDirectory(prefix="qlora-data-") as tmp:
                clean = Path(tmp) / p.name
                clean.write_text("".join(line + "\n" for line in lines if line.strip()), encoding="utf-8")
                return datasets.Dataset(table_of(datasets.load_dataset(kind, data_files=str(clean), split="train")))
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


def _refuse_bad_rows(data: DataConfig, key: str, source: str, ds) -> None:
    """A UserError naming the first unusable rows of a source the preflight could not read (s3://, hub:,
    a save_to_disk folder), before any trial starts."""
    from orchestrator.core.errors import UserError
    from orchestrator.core.rows import describe_bad_rows

    bad = [(f"row {n}", why) for n, row in enumerate(ds, 1) if (why := row_problem(data, row))]
    if bad:
        raise UserError(describe_bad_rows(f"data.{key}", source, bad))


def load_splits(
    data: DataConfig, endpoint_url: Optional[str] = None, dropped: Optional[Dict[str, int]] = None
) -> Dict[str, "object"]:
    """{'train', 'eval'[, 'test']} datasets; eval is split off train when no eval source is given.

    Without data.test, `data.test_split` of train is set aside first (before eval is split off and before
    any trial sees the data), so the test rows are in neither train nor eval.

    With data.on_bad_rows skip, unusable rows (orchestrator.core.rows) are dropped from each source before
    the split; `dropped` then receives the count per source (train, eval, test)."""

    def load(key: str):
        ds = load_source(getattr(data, key), endpoint_url)
        source = getattr(data, key)
        if data.on_bad_rows == "error" and ("://" in source or source.startswith("hub:") or Path(source).is_dir()):
            _refuse_bad_rows(data, key, source, ds)  # local files were checked before the run (launch.bad_rows)
        if data.on_bad_rows == "skip":
            before = len(ds)
            ds = ds.filter(lambda row: row_problem(data, row) is None, desc=f"drop bad {key} rows")
            if dropped is not None:
                dropped[key] = before - len(ds)
        return ds

    train = load("train")
    test = load("test") if data.test else None
    if test is None and data.test_split > 0 and len(train) >= 3:  # fewer rows: nothing to spare for a test set
        parts = train.train_test_split(test_size=data.test_split, seed=data.split_seed)
        train, test = parts["train"], parts["test"]
    if data.eval:
        splits = {"train": train, "eval": load("eval")}
    else:
        parts = train.train_test_split(test_size=data.eval_split, seed=data.split_seed)
        splits = {"train": parts["train"], "eval": parts["test"]}
    if test is not None:
        splits["test"] = test
    return splits


def tokenize(ds, tokenizer, cfg: RunConfig):
    """Token ids and labels for every example, unpadded; columns other than the model's are dropped."""
    return tokenize_counted(ds, tokenizer, cfg)[0]


def tokenize_counted(ds, tokenizer, cfg: RunConfig) -> Tuple[Any, int]:
    """(tokenized dataset, how many examples were truncated) — see jobs.formats for the rules."""

    def fn(batch):
        out: Dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "truncated": []}
        for values in zip(*batch.values()):
            feats, cut = row_features(cfg, tokenizer, dict(zip(batch.keys(), values)))
            for k, v in feats.items():
                out[k].append(v)
            out["truncated"].append(cut)
        return out

    mapped = ds.map(fn, batched=True, remove_columns=ds.column_names, desc="tokenize")
    n_cut = int(sum(mapped["truncated"]))
    return mapped.remove_columns("truncated"), n_cut


def row_features(cfg: RunConfig, tokenizer, row: Dict[str, Any]) -> Tuple[Dict[str, list], bool]:
    """One example's input_ids / attention_mask / labels, and whether anything was truncated.

    Chat formats: the whole conversation (max_input_length + max_target_length tokens) with labels on
    the assistant turns only. Otherwise the prompt (max_input_length, its INPUT trimmed, cue kept) and the
    target: seq2seq labels, or for causal_lm the completion + EOS after the prompt (labels -100 on it)."""
    d = cfg.data
    if uses_chat(cfg, tokenizer):
        budget = d.max_input_length + d.max_target_length
        if d.format == "messages":
            pieces, cut = fit_messages(cfg, tokenizer, row[MESSAGES_COLUMN], budget)
        else:
            pieces, cut = fit(tokenizer, row_pieces(cfg, tokenizer, row), counter(tokenizer, False), budget)
        ids, labels = labelled_ids(tokenizer, pieces)
        cut = cut or len(ids) > budget
        ids, labels = ids[:budget], labels[:budget]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}, cut
    pieces = row_pieces(cfg, tokenizer, row)
    head, target = pieces[:-1], pieces[-1][1]
    head, cut = fit(tokenizer, head, counter(tokenizer, True), d.max_input_length)
    enc = tokenizer(text_of(head), max_length=d.max_input_length, truncation=True)
    if cfg.model.task == "seq2seq":
        lab = tokenizer(text_target=target)["input_ids"]
        enc["labels"] = tokenizer(text_target=target, max_length=d.max_target_length, truncation=True)["input_ids"]
        return dict(enc), cut or len(lab) > d.max_target_length
    comp = tokenizer(target, add_special_tokens=False)["input_ids"]
    cut = cut or len(comp) > d.max_target_length - 1
    comp = comp[: d.max_target_length - 1] + [tokenizer.eos_token_id]
    ids = enc["input_ids"] + comp
    labels = [IGNORE_INDEX] * len(enc["input_ids"]) + comp
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}, cut


def labelled_ids(tokenizer, pieces: List[Piece]) -> Tuple[List[int], List[int]]:
    """The pieces' text as token ids (no special tokens added: the template writes them) and labels that are
    -100 except on tokens starting inside a TARGET piece (offset mapping; piece by piece for slow tokenizers)."""
    if not tokenizer.is_fast:
        ids: List[int] = []
        labels: List[int] = []
        for kind, text in pieces:
            part = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += part
            labels += part if kind == TARGET else [IGNORE_INDEX] * len(part)
        return ids, labels
    spans, at = [], 0
    for kind, text in pieces:
        if kind == TARGET:
            spans.append((at, at + len(text)))
        at += len(text)
    enc = tokenizer(text_of(pieces), add_special_tokens=False, return_offsets_mapping=True)
    labels = [
        tok if e > s and any(a <= s < b for a, b in spans) else IGNORE_INDEX
        for tok, (s, e) in zip(enc["input_ids"], enc["offset_mapping"])
    ]
    return list(enc["input_ids"]), labels


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
    """Raw and tokenized splits: {'train','eval'} tokenized, plus 'eval_raw' (for samples) and 'test_raw',
    and 'stats': {'truncated': {split: n}, 'dropped_bad_rows': {source: n} (on_bad_rows skip only)}."""
    dropped: Dict[str, int] = {}
    raw = load_splits(cfg.data, cfg.data_endpoint, dropped)
    out: Dict[str, Any] = {}
    truncated: Dict[str, int] = {}
    for name in ("train", "eval"):
        out[name], truncated[name] = tokenize_counted(raw[name], tokenizer, cfg)
    out["stats"] = {"truncated": truncated, **({"dropped_bad_rows": dropped} if dropped else {})}
    out["eval_raw"] = raw["eval"]
    if "test" in raw:
        out["test_raw"] = raw["test"]
    return out


def data_stats_line(stats: Dict[str, Any]) -> str:
    """'Truncated: 3 train / 0 eval examples (...)' and, with on_bad_rows skip, the rows dropped per source."""
    t = stats["truncated"]
    line = (
        f"Truncated {t['train']} train / {t['eval']} eval examples to data.max_input_length/max_target_length "
        "(input text trimmed, template cues kept)"
    )
    if "dropped_bad_rows" in stats:
        line += "; dropped bad rows (data.on_bad_rows: skip): " + ", ".join(
            f"{stats['dropped_bad_rows'][k]} {k}" for k in ("train", "eval", "test") if k in stats["dropped_bad_rows"]
        )
    return line


def data_notices(stats: Dict[str, Any], cfg: RunConfig) -> List[str]:
    """What the summary's notices say about the data: examples truncated, bad rows dropped."""
    out = []
    t = {k: n for k, n in stats.get("truncated", {}).items() if n}
    if t:
        d = cfg.data
        out.append(
            "Truncated " + " / ".join(f"{n} {k}" for k, n in t.items()) + " examples to data.max_input_length "
            f"{d.max_input_length} / max_target_length {d.max_target_length} (input text trimmed, template cues "
            "kept); raise them to train on whole examples."
        )
    dropped = stats.get("dropped_bad_rows") or {}
    if any(dropped.values()):
        out.append(
            "Dropped bad rows (data.on_bad_rows: skip): "
            + ", ".join(f"{n} {k}" for k, n in dropped.items() if n)
            + "; set data.on_bad_rows: error and run `qlora-launch validate` to list them."
        )
    return out
