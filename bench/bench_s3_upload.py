"""Upload throughput of one 200 MB file through a local S3 server: ours against boto3's default.

    python bench/bench_s3_upload.py               # 200 MB, 3 rounds
    python bench/bench_s3_upload.py --mb 50 --rounds 1   # a quick smoke run

A private moto S3 server (`moto_server`, the one the tests use) is started on loopback; boto3 talks
HTTP to it. Per round, each variant uploads the same random file under its own key (the order rotates
from round to round) and the object is deleted afterwards so the in-memory server does not grow:

  boto3_default   `client.upload_file(path, bucket, key)`: boto3's default TransferConfig (8 MiB parts,
                  10 threads) and default checksum (CRC32 when supported)
  ours_transfer   orchestrator.storage.s3's transfer alone: 16 MiB parts, 8 parts in flight, SHA-256 checksums
                  per part, adaptive retries
  ours_publish    what `publish` does per file: list the version prefix for an object to skip, the
                  transfer above, then a HeadObject comparing the server's SHA-256 checksum with the
                  one computed from the local bytes

The file's sha256 (what the manifest lists) and the S3 checksum expected for it are computed once
beforehand, in one read, and not timed: publish computes them while it stages the files, before any
upload (about 0.5 s for 200 MB here). Throughput is MB/s (10^6 bytes) of file
size over wall time; the table shows the median of the rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import print_table, write_json  # noqa: E402

VARIANTS = ("boto3_default", "ours_transfer", "ours_publish")


def make_file(path: Path, size: int) -> str:
    """Random bytes (incompressible), written in 8 MiB blocks; returns the sha256."""
    h = hashlib.sha256()
    block = os.urandom(8 << 20)
    with path.open("wb") as f:
        left = size
        while left:
            chunk = block[: min(left, len(block))]
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=200, help="file size in MB (10^6 bytes)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    import boto3

    from orchestrator.storage.checksums import PART_SIZE, file_checksums
    from orchestrator.storage.s3 import CONCURRENCY, Bucket, Upload
    from tests.helpers.s3_server import start_s3_server, stop_s3_server

    size = args.mb * 10**6
    load_before = os.getloadavg()
    proc, endpoint = start_s3_server()
    times: Dict[str, List[float]] = {v: [] for v in VARIANTS}
    try:
        default = boto3.client("s3", endpoint_url=endpoint)
        default.create_bucket(Bucket="bench")
        ours = Bucket("bench", endpoint)
        with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
            path = Path(tmp) / "blob.bin"
            make_file(path, size)
            # What publish computes while staging (one read per file), before any upload: not timed.
            digest, checksum = file_checksums(path, size)
            item = lambda key: Upload(key, size, digest, path=path, checksum=checksum)  # noqa: E731
            runs = {
                "boto3_default": lambda key: default.upload_file(str(path), "bench", key),
                "ours_transfer": lambda key: ours._transfer([item(key)], lambda *a: None),
                "ours_publish": lambda key: ours.upload([item(key)]),
            }
            for r in range(args.rounds):
                order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
                for name in order:
                    key = f"{name}/{r}/blob.bin"
                    t0 = time.perf_counter()
                    runs[name](key)
                    dt = time.perf_counter() - t0
                    assert default.head_object(Bucket="bench", Key=key)["ContentLength"] == size
                    default.delete_object(Bucket="bench", Key=key)
                    times[name].append(dt)
                    print(f"round {r + 1}: {name:<14} {dt:6.2f} s  {size / dt / 1e6:6.1f} MB/s", flush=True)
    finally:
        stop_s3_server(proc)

    med = {v: statistics.median(t) for v, t in times.items()}
    rows = [
        [
            v,
            f"{med[v]:.2f}",
            f"{size / med[v] / 1e6:.1f}",
            " ".join(f"{t:.2f}" for t in times[v]),
            f"{med['boto3_default'] / med[v]:.2f}x",
        ]
        for v in VARIANTS
    ]
    print_table(
        f"S3 upload of a {args.mb} MB file through moto_server on loopback, median of {args.rounds}",
        ["variant", "median s", "MB/s", "rounds (s)", "vs boto3 default"],
        rows,
    )
    out = {
        "file_mb": args.mb,
        "rounds": args.rounds,
        "endpoint": "moto_server on 127.0.0.1 (HTTP)",
        "ours": {"part_size_mib": PART_SIZE >> 20, "concurrency": CONCURRENCY, "checksum": "SHA256"},
        "seconds": times,
        "median_s": med,
        "median_mb_per_s": {v: size / med[v] / 1e6 for v in VARIANTS},
        "loadavg_1_5_15": {"before": load_before, "after": os.getloadavg()},  # the machine is shared
    }
    print(f"\nwrote {write_json('s3_upload', out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
