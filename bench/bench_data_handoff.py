"""Handing the tokenized data to a trial: today's Dataset-by-path vs pyarrow Tables by value.

    python bench/bench_data_handoff.py              # 100k rows, 2 rounds per side
    python bench/bench_data_handoff.py --rows 5000  # a smoke run

The data: `--rows` synthetic examples (a 48-word input, a 10-word target) written as JSONL, loaded with
`datasets.load_dataset` and tokenized with `.map` into memory-mapped Arrow cache files, exactly as
`jobs.data.prepare_datasets` does on the driver (the tokenizer is a cheap word->id hash, since the
hand-off is what is measured, not the tokenizer). Then, in local Ray (2 CPUs):

  by-path   `ray.put({"train": Dataset, "eval": Dataset})`, what jobs/search.py did before: the Datasets
            pickle as the paths of the driver's cache files (works only where those paths exist).
  by-value  `ray.put(jobs.data.trial_data(data))`: the splits as pyarrow Tables, copied into the object
            store; the worker wraps them back with `jobs.train_loop.resolve_data`.

A Ray task (1 CPU, a stand-in for a Train worker) gets the ref, resolves it, and collates its first batch
of 8 examples with the product's collator. Measured per side, each in a fresh subprocess (sides
alternate): the bytes that travel (the pickled payload), the driver's RSS growth over the hand-off, the
put time, the time from the put to the worker's first batch ("time to first step" without the model),
and the worker's RSS after resolving.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import OUT_DIR, machine, markdown_table, print_table, write_json  # noqa: E402

WORK = OUT_DIR / "handoff"
WORDS = [f"w{i}" for i in range(5000)]


def make_data(rows: int) -> Path:
    import random

    path = WORK / f"synthetic-{rows}.jsonl"
    if path.exists():
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(0)
    with path.open("w") as f:
        for _ in range(rows):
            f.write(
                json.dumps({"input": " ".join(rnd.choices(WORDS, k=48)), "output": " ".join(rnd.choices(WORDS, k=10))})
                + "\n"
            )
    return path


def side(mode: str, data_path: str, cache: str) -> dict:
    """One measurement, in this (fresh) process."""
    import datasets
    import psutil
    import ray

    datasets.disable_progress_bars()
    proc = psutil.Process()

    def tok(batch):
        ids = [[hash(w) % 32000 for w in x.split()] + [1] for x in batch["input"]]
        lab = [[hash(w) % 32000 for w in x.split()] + [1] for x in batch["output"]]
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": lab}

    raw = datasets.load_dataset("json", data_files=data_path, split="train", cache_dir=cache)
    parts = raw.train_test_split(test_size=0.05, seed=0)
    data = {
        k: parts[s].map(tok, batched=True, remove_columns=raw.column_names)
        for k, s in (("train", "train"), ("eval", "test"))
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=2 * 2**30)

    @ray.remote(num_cpus=1)
    def first_batch(refs):
        import psutil

        from jobs.data import build_collator
        from jobs.train_loop import resolve_data

        got = resolve_data(refs)
        batch = build_collator(None, packing=True)([got["train"][i] for i in range(8)])
        return (
            time.perf_counter(),
            len(got["train"]),
            int(batch["input_ids"].numel()),
            psutil.Process().memory_info().rss,
        )

    ray.get(first_batch.remote({"train": [{"input_ids": [1], "labels": [1]}] * 8}))  # warm the worker
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    if mode == "by-path":
        payload = {"train": data["train"], "eval": data["eval"]}
    else:
        from jobs.data import trial_data

        payload = trial_data(data)
    ref = ray.put(payload)
    t_put = time.perf_counter()
    rss1 = proc.memory_info().rss
    t_first, n, tokens, worker_rss = ray.get(first_batch.remote([ref]))
    ray.shutdown()
    import pickle

    size = len(pickle.dumps(payload, protocol=5))  # what the object store holds (Ray serializes with pickle 5)
    return {
        "mode": mode,
        "rows": n,
        "driver_rss_growth_mb": (rss1 - rss0) / 2**20,
        "driver_rss_mb": rss1 / 2**20,
        "put_s": t_put - t0,
        "to_first_batch_s": t_first - t0,
        "worker_rss_mb": worker_rss / 2**20,
        "payload_mb": size / 2**20,
        "first_batch_tokens": tokens,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--side", choices=["by-path", "by-value"])
    ap.add_argument("--data")
    ap.add_argument("--cache")
    args = ap.parse_args()
    if args.side:
        print(json.dumps(side(args.side, args.data, args.cache)))
        return
    data = make_data(args.rows)
    results = []
    for r in range(args.rounds):
        for mode in ("by-path", "by-value"):
            cache = WORK / f"cache-{mode}-{r}"
            out = subprocess.run(
                [sys.executable, __file__, "--side", mode, "--data", str(data), "--cache", str(cache)],
                capture_output=True,
                text=True,
                env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
            )
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    headers = [
        "side",
        "rows",
        "payload (MB)",
        "driver RSS growth (MB)",
        "put (s)",
        "to first batch (s)",
        "worker RSS (MB)",
    ]
    rows = [
        [
            x["mode"],
            x["rows"],
            f"{x['payload_mb']:.2f}",
            f"{x['driver_rss_growth_mb']:.0f}",
            f"{x['put_s']:.2f}",
            f"{x['to_first_batch_s']:.2f}",
            f"{x['worker_rss_mb']:.0f}",
        ]
        for x in results
    ]
    print_table(f"Data hand-off, {args.rows} rows", headers, rows)
    print(markdown_table(headers, rows))
    write_json("data_handoff", {"machine": machine(), "rows": args.rows, "results": results})


if __name__ == "__main__":
    main()
