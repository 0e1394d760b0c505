#!/usr/bin/env bash
# Benchmark 5: the speed benchmarks on one GPU, in one short call of the device tool.
#
#   Here, once (needs PyPI):   bash bench/gpu_bench.sh prepare     (= bash scripts/device_check.sh prepare)
#   On the GPU machine:        bash scripts/device_check.sh        (device tool: carry [".devbundle"],
#                                                                   timeout_s 540; runs scripts/gpu_check.sh,
#                                                                   then this script, all figures into $OUT)
#   On a GPU box with the project installed:   bash bench/gpu_bench.sh
#
# What it runs, on GPU 0, each side measured in the same call, each step bounded by DEADLINE (epoch
# seconds, optional: a step with less than its minimum left is skipped, a running one is stopped there):
#   1. bench/bench_seed_recipe.py: the seed's recipe vs ours on the t5-small-shaped model, 4-bit (bf16
#      compute), the seed's 10 examples x 30 epochs (as on the CPU): wall time per epoch, real tokens/s,
#      eval loss, peak GPU memory, GPU utilisation.
#   2. bench/bench_overhead.py (OVERHEAD_ARGS, default one bare+ray round) and 3. bench/bench_search.py
#      (SEARCH_ARGS, default --quick: FIFO and ASHA, 2 trials x 10 steps at 0.5 GPU each), where Ray imports.
#      On the GPU image Ray comes from the bundle that scripts/device_check.sh unpacks onto PYTHONPATH.
# Then it prints one table: tokens/s, peak GPU memory (torch's max_memory_allocated per run, and the
# largest memory.used nvidia-smi saw) and GPU utilisation (mean and max of NVML samples every 0.5 s during
# training; nvidia-smi's 1 s log of the whole call is kept too).
# Output: JSON per benchmark, the nvidia-smi log and the full log, in $OUT (or bench/out/gpu/).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "prepare" ]]; then
  exec bash scripts/device_check.sh prepare
fi

OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_bench.log") 2>&1
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error \
       PYTHONWARNINGS=ignore RAY_USAGE_STATS_ENABLED=0
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
DEADLINE=${DEADLINE:-$(( $(date +%s) + 36000 ))}
# bounded NAME MIN_SECONDS CMD...: run CMD until DEADLINE; skip it when less than MIN_SECONDS are left.
bounded() {
  local name=$1 min=$2 left rc=0; shift 2
  left=$(( DEADLINE - $(date +%s) ))
  if (( left < min )); then echo "$name skipped: ${left} s left of the budget, it needs ~${min} s"; return 0; fi
  timeout -k 15 "$left" "$@" || rc=$?
  if (( rc == 124 || rc == 137 )); then echo "$name stopped at the deadline (${left} s); partial output above"
  elif (( rc )); then echo "$name failed (exit $rc)"; fi
  return 0
}
# Only inside scripts/device_check.sh (a machine of its own): `ray stop --force` ends every Ray on the machine.
ray_stop() {
  [[ -n "${QLORA_DEVICE_CHECK:-}" ]] || return 0
  "$PY" -c "from ray.scripts.scripts import main; main()" stop --force >/dev/null 2>&1 || true
}
nvidia-smi -L || { echo "no NVIDIA GPU here"; exit 1; }
"$PY" - <<'EOF' || exit 1
import importlib
for m in ("torch", "transformers", "peft", "bitsandbytes", "datasets", "pydantic", "yaml", "ray"):
    try:
        mod = importlib.import_module(m)
        print(f"{m} {getattr(mod, '__version__', '?')}")
    except ImportError as e:
        print(f"{m} MISSING ({e})")
import torch
assert torch.cuda.is_available(), "torch sees no GPU"
print("GPU:", torch.cuda.get_device_name(0))
EOF

nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv,nounits -l 1 \
  > "$OUT/nvidia_smi.csv" &
SMI=$!
trap 'kill $SMI 2>/dev/null' EXIT
T0=$(date +%s)

echo "== 1. seed recipe vs ours ($(( DEADLINE - $(date +%s) )) s left)"
bounded bench_seed_recipe 60 "$PY" bench/bench_seed_recipe.py --threads 0 --order ours,seed,ours,ours_no_ckpt \
  --json-out "$OUT/seed_recipe.json"

echo "== 1b. sequence packing, padded vs packed causal LM ($(( DEADLINE - $(date +%s) )) s left)"
# at most 100 s of the budget: a Llama-shaped model (hidden 1024), seed data x4 with varied lengths
DEADLINE_ALL=$DEADLINE; DEADLINE=$(( $(date +%s) + 100 < DEADLINE ? $(date +%s) + 100 : DEADLINE ))
bounded bench_packing 40 "$PY" bench/bench_packing.py --size 1024 --rounds 2 --vary-lengths \
  --json-out "$OUT/packing.json"
DEADLINE=$DEADLINE_ALL

if "$PY" -c "import ray" 2>/dev/null; then
  echo "== 2. orchestration overhead ($(( DEADLINE - $(date +%s) )) s left)"
  # shellcheck disable=SC2086
  bounded bench_overhead 60 "$PY" bench/bench_overhead.py ${OVERHEAD_ARGS:---rounds 1 --threads 4} \
    --json-out "$OUT/overhead.json"
  ray_stop  # a run stopped at the deadline leaves Ray's processes (and their GPU memory) behind
  echo "== 3. search efficiency ($(( DEADLINE - $(date +%s) )) s left)"
  # shellcheck disable=SC2086
  bounded bench_search 45 "$PY" bench/bench_search.py ${SEARCH_ARGS:---quick} --json-out "$OUT/search.json"
  ray_stop
else
  echo "== 2, 3 skipped: Ray does not import here (on the GPU image, run scripts/device_check.sh)"
fi
kill $SMI 2>/dev/null
echo "== whole call: $(( $(date +%s) - T0 )) s of benchmarks"

"$PY" - "$OUT" <<'EOF'
import csv, json, sys
from pathlib import Path
out = Path(sys.argv[1])
gib = lambda b: "" if b is None else f"{b / 1024**3:.2f}"
pct = lambda x: "" if x is None else f"{x:.0f}%"
rows = []
p = out / "seed_recipe.json"
if p.exists():
    d = json.loads(p.read_text())
    for r in d["runs"]:
        rows.append([f"1 {r['variant']}", f"{r['real_tokens_per_s']:.0f}", f"{r['all_tokens_per_s']:.0f}",
                     f"{r['s_per_epoch']:.2f} s/epoch", gib(r.get("peak_gpu_mem_bytes")),
                     gib(r.get("gpu_mem_used_max_bytes")), pct(r.get("gpu_util_mean")), pct(r.get("gpu_util_max"))])
    s = d["summary"]
    print(f"seed recipe: ours/seed wall {s.get('wall_ratio_ours_over_seed', float('nan')):.3f}x, "
          f"eval loss ours {s.get('eval_loss_ours', float('nan')):.3f} vs seed {s.get('eval_loss_seed', float('nan')):.3f}")
p = out / "overhead.json"
if p.exists():
    d = json.loads(p.read_text())
    for r in d["runs"]:
        g = r.get("gpu") or {}
        rows.append([f"2 {r['side']}", "", "", f"{r['median_step_s']:.3f} s/step", gib(r.get("peak_gpu_mem_bytes")),
                     gib(g.get("gpu_mem_used_max_bytes")), pct(g.get("gpu_util_mean")), pct(g.get("gpu_util_max"))])
    print("overhead:", {k: round(v, 3) if isinstance(v, float) else v for k, v in d["summary"].items()})
p = out / "search.json"
if p.exists():
    d = json.loads(p.read_text())
    for r in d["searches"]:
        rows.append([f"3 {r['search']}", "", "", f"{r['trial_steps']} trial-steps, best {r['best_eval_loss']:.4f}",
                     "", gib(r.get("gpu_mem_used_max_bytes")), pct(r.get("gpu_util_mean")), pct(r.get("gpu_util_max"))])
head = ["run", "real tok/s", "all tok/s", "time", "peak alloc GiB", "max used GiB (NVML)", "GPU util mean", "max"]
w = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else []
for row in [head] + rows:
    print("  ".join(str(c).ljust(n) for c, n in zip(row, w)))
smi = out / "nvidia_smi.csv"
if smi.exists():
    vals = [r for r in csv.reader(smi.open()) if r and r[0][:1].isdigit()]
    if vals:
        util = [float(r[1]) for r in vals]
        print(f"nvidia-smi over the call: {len(vals)} samples, util mean {sum(util) / len(util):.0f}% "
              f"max {max(util):.0f}%, memory.used max {max(float(r[2]) for r in vals):.0f} MiB")
EOF
