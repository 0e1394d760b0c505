#!/usr/bin/env bash
# GPU check: a short 4-bit (QLoRA NF4) tune with two trials sharing one GPU (resources.gpus_per_worker: 0.5),
# then the peak GPU memory (per trial, from torch, and for the whole device, from nvidia-smi) and the step time.
#
#   scripts/gpu_check.sh                 # on a machine with one NVIDIA GPU, from the repository root
#   scripts/gpu_check.sh --cpu-smoke     # the same pipeline on CPU (gpus_per_worker 0): checks this script
#
# Offline: the model is a small Llama built from a config with random weights (jobs/tiny_models.py), its
# tokenizer trained on the seed data; nothing is downloaded. Environment knobs:
#   PYTHON (default .venv/bin/python if present, else python3), HIDDEN (model width, default 1024),
#   MAX_STEPS (default 30), OUT (work folder, default a new temp dir; kept for inspection).
# The figures are printed and written to $OUT/gpu_check.json.
set -euo pipefail

cd "$(dirname "$0")/.."
MODE=gpu
if [[ "${1:-}" == "--cpu-smoke" ]]; then MODE=cpu; fi
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
HIDDEN=${HIDDEN:-1024}
MAX_STEPS=${MAX_STEPS:-30}
OUT=${OUT:-$(mktemp -d -t qlora-gpu-check.XXXXXX)}
mkdir -p "$OUT"
echo "== qlora-launch GPU check ($MODE) in $OUT"

if [[ $MODE == gpu ]]; then
  command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: no NVIDIA GPU here (try --cpu-smoke)" >&2; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PYTHON" - <<'EOF'
import torch, bitsandbytes as bnb
assert torch.cuda.is_available(), "torch sees no CUDA device"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), bitsandbytes {bnb.__version__}, "
      f"device {torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()}")
EOF
  GPUS=0.5; DTYPE=bfloat16; CPUS=2
else
  GPUS=0; DTYPE=float32; CPUS=1
fi

# 1. The model: a 2-layer Llama of width $HIDDEN, random weights, saved like any hub model.
"$PYTHON" -m jobs.tiny_models llama --data examples/data/seed/train.jsonl --out "$OUT/model" --size "$HIDDEN"

# 2. The config: two trials at once, each asking for half the GPU; fifo so both run every step.
EVAL=$(( MAX_STEPS / 3 > 0 ? MAX_STEPS / 3 : 1 ))
cat > "$OUT/gpu_check.yaml" <<EOF
# scripts/gpu_check.sh writes and runs this: qlora-launch tune $OUT/gpu_check.yaml
model: {name_or_path: $OUT/model, task: causal_lm}
quantization: {mode: 4bit, quant_type: nf4, double_quant: true, compute_dtype: $DTYPE}
lora: {r: 8, alpha: 16, dropout: 0.05, target_modules: all-linear}
data:
  train: $PWD/examples/data/seed/train.jsonl
  eval: $PWD/examples/data/seed/eval.jsonl
  input_column: article
  target_column: summary
  max_input_length: 256
  max_target_length: 64
training: {max_steps: $MAX_STEPS, batch_size: 4, learning_rate: 2.0e-4, eval_steps: $EVAL, logging_steps: 1, mixed_precision: auto}
search:
  num_samples: 2
  max_concurrent_trials: 2
  metric: eval_loss
  scheduler: fifo
  seed: 0
  space:
    training.learning_rate: {type: choice, values: [1.0e-4, 3.0e-4]}
resources: {num_workers: 1, cpus_per_worker: $CPUS, gpus_per_worker: $GPUS}
tracking: {wandb: false}
output: {dir: $OUT/runs, experiment: gpu_check}
merge: {enabled: false}
EOF

# 3. Sample the device's memory and the processes on it while the tune runs.
SAMPLER_PID=""
if [[ $MODE == gpu ]]; then
  (
    while true; do
      used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
      procs=$(nvidia-smi --query-compute-apps=pid --format=csv,noheader | grep -c . || true)
      echo "$used $procs"
      sleep 0.5
    done
  ) > "$OUT/nvidia_smi_samples.txt" 2>/dev/null &
  SAMPLER_PID=$!
fi
stop_sampler() { if [[ -n "$SAMPLER_PID" ]]; then kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; fi; }
trap stop_sampler EXIT

START=$(date +%s)
RC=0
"$PYTHON" -m orchestrator.cli tune "$OUT/gpu_check.yaml" --cpus "$(( CPUS * 2 + 1 ))" \
  $( [[ $MODE == gpu ]] && echo "--gpus 1" ) > "$OUT/tune.log" 2>&1 || RC=$?
END=$(date +%s)
stop_sampler
trap - EXIT
if [[ $RC -ne 0 ]]; then
  echo "tune failed (exit $RC); last lines of $OUT/tune.log:" >&2
  tail -40 "$OUT/tune.log" >&2
  exit "$RC"
fi

# 4. The figures: per trial from Tune's per-report results (JSON lines), per device from nvidia-smi.
"$PYTHON" - "$OUT" "$MODE" "$(( END - START ))" <<'EOF'
import json, sys
from pathlib import Path

out, mode, wall = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
run = out / "runs" / "gpu_check"
trial_files = sorted((run / "ray").glob("tune/*/result.json"))
if len(trial_files) != 2:
    sys.exit(f"expected 2 trials under {run / 'ray' / 'tune'}, found {len(trial_files)}")
print(f"== results ({mode}), wall time of the tune: {wall} s")
step_times = []
figures = {"mode": mode, "tune_wall_s": wall, "trials": []}
for f in trial_files:
    rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "step" in r]
    first, last = rows[0], rows[-1]
    # Between the first and the last report: steady-state steps (model load and first compile excluded),
    # each eval+checkpoint included.
    steps = last["step"] - first["step"]
    step_s = (last["time_total_s"] - first["time_total_s"]) / steps if steps > 0 else float("nan")
    step_times.append(step_s)
    peak = max((r.get("peak_gpu_mem_mb") or 0) for r in rows)
    figures["trials"].append({"trial": f.parent.name, "steps": last["step"], "step_s": step_s,
                              "steps_timed": [first["step"], last["step"]], "peak_gpu_mem_mb": peak,
                              "peak_rss_mb": max((r.get("peak_rss_mb") or 0) for r in rows),
                              "eval_loss": last.get("eval_loss"), "time_total_s": last.get("time_total_s")})
    print(f"trial {f.parent.name[:40]}: {last['step']} steps, step time {step_s * 1000:.0f} ms "
          f"(steps {first['step']}->{last['step']}), peak GPU memory (torch max_memory_allocated) {peak:.0f} MiB, "
          f"eval_loss {last.get('eval_loss')}")
samples = out / "nvidia_smi_samples.txt"
rows = []
if samples.exists():
    rows = [tuple(int(x) for x in line.split()) for line in samples.read_text().splitlines()
            if len(line.split()) == 2 and all(x.isdigit() for x in line.split())]
if rows:
    print(f"device peak memory.used (nvidia-smi, both trials + CUDA contexts): {max(r[0] for r in rows)} MiB; "
          f"most processes on the GPU at once: {max(r[1] for r in rows)}")
    figures.update(device_peak_mem_used_mib=max(r[0] for r in rows), max_gpu_processes=max(r[1] for r in rows),
                   nvidia_smi_samples=len(rows))
    if max(r[1] for r in rows) < 2:
        print("WARNING: the two trials never held the GPU at the same time")
summary = json.loads((run / "results.json").read_text())
print(f"trials: {[(t['trial_id'], t['status'], t['steps']) for t in summary['trials']]}")
print(f"mean step time: {sum(step_times) / len(step_times) * 1000:.0f} ms")
figures.update(mean_step_s=sum(step_times) / len(step_times),
               results=[{k: t.get(k) for k in ("trial_id", "status", "steps", "eval_loss", "time_s")}
                        for t in summary["trials"]])
(out / "gpu_check.json").write_text(json.dumps(figures, indent=2))
EOF
echo "== done; config, logs and results in $OUT"
