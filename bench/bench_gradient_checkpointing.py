"""Gradient checkpointing on vs off: step time and peak memory, same model, data and steps.

    python bench/bench_gradient_checkpointing.py            # Llama-shaped (hidden 256), 3 rounds per side
    python bench/bench_gradient_checkpointing.py --quick    # a smoke run: hidden 64, 1 round, 4 steps

Why: `training.gradient_checkpointing: auto` (the default) turns checkpointing on only for trials whose
estimate does not fit without it. This measures what a trial gains when it is off. Both sides are
bench_packing's run (the HF Trainer on the same 4-bit NF4 base with LoRA on all linear layers, r 8, batch
4, length-grouped padded batches), each in its own process so that its peak resident memory is its own,
alternating on/off so that drift in the machine's load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import args_json, machine, print_table, write_json  # noqa: E402

SIDES = ("on", "off")


def worker(side: str, size: int, steps: int, batch: int, repeat: int, copies: int) -> Dict[str, Any]:
    import torch
    from bench_packing import build_model, repeated_train, run_side

    torch.manual_seed(0)
    dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    res = run_side(
        "padded_grouped",
        build_model(size, 20 if size <= 64 else 100),
        repeated_train(repeat, False, copies),
        steps,
        batch,
        dtype,
        512 * copies,
        training={"gradient_checkpointing": side == "on"},
    )
    res["side"] = side
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        res["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="hidden 64, 1 round, 4 steps: a smoke run")
    ap.add_argument("--size", type=int, default=256, help="hidden size of the Llama-shaped model")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=4, help="copies of the 10 seed examples")
    ap.add_argument("--article-copies", type=int, default=2, help="each article N articles long")
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.rounds, args.steps, args.repeat, args.article_copies = 64, 1, 4, 1, 1
    shape = [str(args.size), str(args.steps), str(args.batch), str(args.repeat), str(args.article_copies)]
    if args.worker:
        res = worker(args.worker, *map(int, shape))
        res.pop("losses", None)
        print("RESULT " + json.dumps(res))
        return 0
    runs: List[Dict[str, Any]] = []
    for r in range(args.rounds):
        for side in SIDES if r % 2 == 0 else tuple(reversed(SIDES)):
            cmd = [sys.executable, __file__, "--worker", side, "--size", shape[0], "--steps", shape[1]]
            cmd += ["--batch", shape[2], "--repeat", shape[3], "--article-copies", shape[4]]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            res = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
            res["round"] = r
            runs.append(res)
            print(
                f"round {r} checkpointing {side}: {res['wall_s']:.2f} s ({res['cpu_s']:.2f} CPU s), "
                f"peak RSS {res['peak_rss_mb']:.0f} MiB, loss {res['final_loss']:.4f}",
                flush=True,
            )
    summary: Dict[str, Any] = {}
    for side in SIDES:
        mine = [x for x in runs if x["side"] == side]
        summary[side] = {
            "median_step_s": statistics.median(x["wall_s"] / x["steps"] for x in mine),
            "median_cpu_step_s": statistics.median(x["cpu_s"] / x["steps"] for x in mine),
            "median_peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in mine),
            "final_loss": mine[0]["final_loss"],
        }
    on, off = summary["on"], summary["off"]
    summary["off_speedup"] = on["median_step_s"] / off["median_step_s"]
    rows = [
        [
            f"checkpointing {side}",
            f"{summary[side]['median_step_s']:.3f}",
            f"{summary[side]['median_cpu_step_s']:.3f}",
            f"{summary[side]['median_peak_rss_mb']:.0f}",
            f"{summary[side]['final_loss']:.4f}",
        ]
        for side in SIDES
    ]
    print_table(
        f"Gradient checkpointing: hidden {args.size}, {args.steps} steps x batch {args.batch}, articles "
        f"x{args.article_copies}, median of {args.rounds}; off is {summary['off_speedup']:.2f}x faster per step",
        ["side", "s/step", "CPU s/step", "peak RSS MiB", "final loss"],
        rows,
    )
    write_json(
        "gradient_checkpointing",
        {"machine": machine(), "args": args_json(args), "runs": runs, "summary": summary},
        args.json_out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
