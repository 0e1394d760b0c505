#!/usr/bin/env bash
# Benchmark 5: the speed benchmarks on one GPU, in one short call of the device tool.
#
#   Here, once (needs PyPI):   bash bench/gpu_bench.sh prepare
#   On the GPU machine:        bash bench/gpu_bench.sh            (device tool: carry ["bench/out/gpu_wheels"],
#                                                                   timeout_s 540; about 4-5 min on an H100)
#
# What it runs, on GPU 0, each side measured in the same call:
#   1. bench/bench_seed_recipe.py: the seed's recipe vs ours on the t5-small-shaped model, 4-bit (bf16
#      compute), the seed's 10 examples x 30 epochs (as on the CPU): wall time per epoch, real tokens/s,
#      eval loss, peak GPU memory, GPU utilisation.
#   2. bench/bench_overhead.py and 3. bench/bench_search.py, only where Ray imports. The GPU image has no
#      Ray, and Ray's wheel (79 MB for cp312) is larger than the 64 MiB a device call can carry, so on that
#      image they are skipped with a note; on a GPU box or cluster image with the project installed they run.
# Then it prints one table: tokens/s, peak GPU memory (torch's max_memory_allocated per run, and the
# largest memory.used nvidia-smi saw) and GPU utilisation (mean and max of NVML samples every 0.5 s during
# training; nvidia-smi's 1 s log of the whole call is kept too).
# Output: JSON per benchmark, the nvidia-smi log and the full log, in $OUT (or bench/out/gpu/).
#
# `prepare` downloads, into bench/out/gpu_wheels/ (git-ignored), the wheels the GPU image lacks or has in
# another version than requirements.lock pins: pydantic (+core, annotated-types, typing-inspection),
# typing_extensions, datasets (+dill, multiprocess), bitsandbytes, transformers, tokenizers, peft. The
# bitsandbytes wheel (43 MB) is cut down to its CPU and CUDA 13 libraries (the image's torch is cu130) so
# that everything fits the carry limit.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=bench/out/gpu_wheels
# huggingface_hub stays the image's (1.33 satisfies transformers' >=1.31; the pinned 2.4 needs httpx2, which
# the image lacks); so do accelerate (the same 1.15), torch and everything else it has.
PINNED="pydantic pydantic_core annotated-types typing-inspection typing_extensions datasets dill multiprocess
        bitsandbytes transformers tokenizers peft"

if [[ "${1:-}" == "prepare" ]]; then
  set -e
  PY=${PYTHON:-.venv/bin/python}
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  specs=()
  for name in $PINNED; do
    spec=$(grep -iE "^${name//[-_]/[-_]}==" requirements.lock | head -1)
    [[ -n "$spec" ]] || { echo "not pinned in requirements.lock: $name" >&2; exit 1; }
    specs+=("$spec")
  done
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" "${specs[@]}"
  # Keep bitsandbytes' CPU and CUDA 13.x libraries only, with a RECORD that matches.
  "$PY" - "$WHEELS" <<'EOF'
import re, sys, zipfile
from pathlib import Path
for whl in Path(sys.argv[1]).glob("bitsandbytes-*.whl"):
    keep = lambda n: not re.search(r"libbitsandbytes_(cuda1[0-2]\d|rocm|xpu)", n)
    tmp = whl.with_suffix(".tmp")
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if not keep(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = "".join(ln for ln in data.decode().splitlines(True) if keep(ln.split(",")[0])).encode()
            dst.writestr(info, data)
    tmp.replace(whl)
EOF
  du -sh "$WHEELS"; ls -1 "$WHEELS"
  echo "Now, with the device tool: bash bench/gpu_bench.sh   (carry: [\"$WHEELS\"])"
  exit 0
fi

OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_bench.log") 2>&1
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error \
       PYTHONWARNINGS=ignore
nvidia-smi -L || { echo "no NVIDIA GPU here"; exit 1; }
if [[ -d "$WHEELS" ]] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
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

echo "== 1. seed recipe vs ours"
"$PY" bench/bench_seed_recipe.py --threads 0 --order ours,seed,ours,ours_no_ckpt \
  --json-out "$OUT/seed_recipe.json" || echo "bench_seed_recipe failed (exit $?)"

if "$PY" -c "import ray" 2>/dev/null; then
  echo "== 2. orchestration overhead"
  "$PY" bench/bench_overhead.py --rounds 1 --threads 4 \
    --json-out "$OUT/overhead.json" || echo "bench_overhead failed (exit $?)"
  echo "== 3. search efficiency"
  "$PY" bench/bench_search.py --json-out "$OUT/search.json" || echo "bench_search failed (exit $?)"
else
  echo "== 2, 3 skipped: Ray is not installed here (its 79 MB wheel does not fit a 64 MiB device call)"
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
