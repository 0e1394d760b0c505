#!/usr/bin/env bash
# All GPU figures in one call of the device tool: scripts/gpu_check.sh (two 4-bit trials sharing the GPU
# through `qlora-launch tune`), then bench/gpu_bench.sh (seed recipe, orchestration overhead, search
# efficiency), on the GPU image, which has no network and no Ray, pydantic or bitsandbytes.
#
#   Here, once (needs the package index):   bash scripts/device_check.sh prepare
#   On the GPU machine (device tool):       bash scripts/device_check.sh
#       carry: [".devbundle"]   timeout_s: 480   (BUDGET, default 420 s, bounds everything; see below)
#   Here, to check the bundle is complete:  bash scripts/device_check.sh simulate [SIM_PYTHON]
#   Issue 16's GPU figures and the estimate check in ONE call (what a 15-minute loan should run first):
#       device tool: bash scripts/device_check.sh all          carry: [".devbundle"]   timeout_s: 590
#       here first:  bash scripts/device_check.sh simulate-all [SIM_PYTHON]
#     BUDGET (default 560, at most 565) bounds the whole call: the bundle set-up, then
#     1. scripts/gpu_throughput.py (8B shape, plain HF + peft vs ours with each feature) for THR_BUDGET
#        (default 290) seconds, 2. bench/bench_overhead.py --quick (where `train`'s start-up goes on a GPU) for
#        OVH_BUDGET (default 100), 3. scripts/gpu_estimate_check.py (~1B Llama, estimate vs measured peak, with
#        and without Liger) until 5 s before the end. Each script gives every sub-run (a variant, a `qlora-launch
#        train`) the time left as its timeout and rewrites its JSON and table after every row, so what finished
#        comes back even if a step is cut. Back in $OUT: device_check_all.log, throughput.json/.md,
#        overhead_gpu.json, estimate_check.json/.md, estimate_logs.tar.gz.
#   Each alone (the old modes, kept):
#       device tool: bash scripts/device_check.sh throughput   carry: [".devbundle"]   timeout_s: 560 (BUDGET 500)
#       here first:  bash scripts/device_check.sh simulate-throughput [SIM_PYTHON]
#       device tool: bash scripts/device_check.sh estimate     carry: [".devbundle"]   timeout_s: 330 (BUDGET 300)
#       here first:  .venv/bin/python scripts/gpu_estimate_check.py --out /tmp/est --cpu-smoke
#   A loan is 15 minutes of device time in all, the machine's start included: `all` (590 s) fits with the
#   start; `throughput` + `estimate` (560 + 330 s) do not.
#
# `prepare` installs, for CPython 3.12 (the image's python3), every package the image lacks or has in
# another version than requirements.lock pins (Ray 2.60.0 with its default/train/tune extras, pydantic,
# jsonschema, opencensus/opentelemetry, transformers, tokenizers, peft, datasets, bitsandbytes, ...; the
# list is BUNDLE below, worked out from each package's Requires-Dist against the image's package list in
# the device tool's KINDS.md) into a --target tree, prunes what a local run never loads (Ray's Java jars,
# RLlib, Serve, LLM, the dashboard's web UI (replaced by a stub page: the dashboard server still starts,
# and with it the state API that Ray Train's placement-group cleanup needs), source maps, tests, bitsandbytes'
# CUDA 11/12, ROCm and XPU libraries, virtualenv's seed wheels), strips debug symbols from every ELF file
# (Ray's _raylet.so, raylet and gcs_server carry ~100 MB of them), and packs the tree into
# .devbundle/site-cp312.tar.xz (git-ignored; ~39 MiB, 211 MB unpacked; with the working tree (~1.3 MB)
# under the 64 MiB a device call carries). Downloads and the unpacked tree stay in bench/out/device_build/.
# The image's own numpy, pandas, pyarrow, aiohttp, grpcio, requests, pyyaml, click, rich,
# huggingface_hub (1.33), accelerate (1.15), torch (2.11+cu130), matplotlib ... are used as they are.
#
# `simulate` builds the same bundle for the local Python (3.11), and runs `scripts/gpu_check.sh --cpu-smoke`
# with SIM_PYTHON (default /tmp/gpuenv-sim/bin/python: a venv holding only packages the image has) and the
# bundle on PYTHONPATH, then lists the bundled packages that the run imported (their __pycache__).
#
# On the device, in order, each step bounded so that the call ends inside BUDGET seconds and later steps
# still run when an earlier one fails; every file that comes back is directly in $OUT (8 at most):
#   device_check.log      everything printed (versions, gpu_check's figures, the benchmark tables)
#   gpu_check_tune.log    the `qlora-launch tune` output of the GPU check
#   gpu_check.json        its figures (per-trial step time and peak memory, device peak, wall time)
#   seed_recipe.json, overhead.json, search.json   the benchmarks' JSON (where they finished)
#   nvidia_smi.csv        nvidia-smi every second over the benchmarks
#   extras.tar.gz         results.json/trials.csv, bench logs, nvidia-smi samples; Ray logs on failure
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
REPO=$PWD

# Missing on the GPU image (or there in another version), by package; pins come from requirements.lock.
BUNDLE="ray jsonschema jsonschema-specifications referencing rpds-py
  aiohttp-cors colorful opencensus opencensus-context google-api-core google-auth googleapis-common-protos
  proto-plus pyasn1 pyasn1-modules cryptography cffi pycparser
  opentelemetry-api opentelemetry-sdk opentelemetry-exporter-prometheus opentelemetry-proto
  opentelemetry-semantic-conventions smart-open virtualenv distlib platformdirs python-discovery tensorboardX
  pydantic pydantic-core annotated-types typing-inspection typing-extensions
  datasets dill multiprocess bitsandbytes transformers tokenizers peft
  protobuf fsspec liger-kernel"
# liger-kernel (training.kernels liger; pure Python over the image's Triton 3.6) is not in requirements.lock, which
# CI installs on CPU: its pin comes from pyproject.toml's `gpu` extra.
# protobuf and fsspec are on the image, in versions this script cannot read: googleapis-common-protos'
# google/rpc/code_pb2 (imported by opencensus in Ray's metrics agent) refuses a protobuf runtime older than
# 6.33.5, and datasets 5.2 needs fsspec<=2026.9.0; the lock's pins of both are small and satisfy both.
# Not bundled although Ray's extras name them: py-spy (a profiler binary the dashboard runs only when asked to
# profile). Not needed on the paths run here: wandb, mlflow, optuna (bench_search's optuna_asha only),
# rouge-score (seq2seq ROUGE metric; all runs here score eval_loss), plotly (the HTML report: after_search
# warns and goes on), boto3, croniter, apscheduler.

build_bundle() {  # $1: python version (3.12 or 3.11); writes $BUNDLE_DIR/site-cpXY.tar.xz
  local pyver=$1 tag=cp${1/./} py=${PYTHON:-.venv/bin/python}
  local build=${BUILD_DIR:-bench/out/device_build}/$tag out=${BUNDLE_DIR:-.devbundle}
  local plat=(--only-binary=:all: --python-version "$pyver" --implementation cp
              --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64
              --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
  local specs=() name spec
  for name in $BUNDLE; do
    spec=$(grep -iE "^${name//[-_]/[-_]}==" requirements.lock | head -1)
    [[ -n "$spec" ]] || spec=$(grep -oiE "\"${name//[-_]/[-_]}==[^\"]+\"" pyproject.toml | head -1 | tr -d '"')
    [[ -n "$spec" ]] || { echo "not pinned in requirements.lock: $name" >&2; return 1; }
    specs+=("$spec")
  done
  mkdir -p "$build/wheels" "$out" || return 1
  echo "== downloading ${#specs[@]} wheels for $tag into $build/wheels"
  "$py" -m pip download -q --no-deps "${plat[@]}" -d "$build/wheels" "${specs[@]}" 2> >(grep -v "is ignored" >&2) ||
    return 1
  # Only the pinned versions (the cache may hold others from an earlier lock).
  local files=() f
  for spec in "${specs[@]}"; do
    name=${spec%%==*}; name=${name//-/_}
    f=$(ls "$build/wheels"/* 2>/dev/null | grep -iE "/${name//_/[-_]}-${spec##*==}-" | head -1)
    [[ -n "$f" ]] || { echo "no wheel for $spec in $build/wheels" >&2; return 1; }
    files+=("$f")
  done
  rm -rf "$build/site"
  "$py" -m pip install -q --no-deps --no-compile --no-index "${plat[@]}" --target "$build/site" "${files[@]}" ||
    return 1
  echo "== installed: $(du -sm "$build/site" | cut -f1) MB; pruning"
  "$py" - "$build/site" <<'EOF'
import os, re, shutil, sys
from pathlib import Path
site = Path(sys.argv[1])
gone = 0
def rm(p: Path):
    global gone
    if p.is_dir() and not p.is_symlink():
        gone += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        shutil.rmtree(p)
    elif p.exists():
        gone += p.stat().st_size
        p.unlink()
rm(site / "bin")  # console scripts with this machine's interpreter in their shebang
ray = site / "ray"
for sub in ("jars", "rllib", "serve", "llm", "train/examples", "tune/examples", "dashboard/client/build"):
    rm(ray / sub)
# The dashboard server refuses to start without client/build; a stub page keeps it (and its state API) up.
build = ray / "dashboard/client/build"
(build / "static").mkdir(parents=True)
(build / "static/.keep").write_text("")
(build / "index.html").write_text("<!doctype html><title>Ray</title><p>Dashboard UI not bundled (device check).\n")
for pkg in ("multiprocess", "jsonschema", "dill", "referencing", "jsonschema_specifications"):
    rm(site / pkg / "tests")
for whl in (site / "virtualenv/seed/wheels/embed").glob("*.whl"):
    rm(whl)  # seed wheels for new virtualenvs: Ray makes none here (no pip/uv runtime_env)
for lib in (site / "bitsandbytes").glob("libbitsandbytes_*.so"):
    if re.search(r"libbitsandbytes_(cuda1[0-2]\d|rocm|xpu)", lib.name):
        rm(lib)  # the image's torch is cu130: bitsandbytes loads libbitsandbytes_cuda130.so
for p in list(site.rglob("__pycache__")) + list(site.rglob("*.pyi")) + list(site.rglob("*.js.map")):
    rm(p)
print(f"pruned {gone / 2**20:.0f} MB")
EOF
  [[ $? -eq 0 ]] || return 1
  local before after
  before=$(du -sb "$build/site" | cut -f1)
  find "$build/site" -type f \( -name "*.so" -o -name "*.so.*" -o -perm -u+x \) -print0 |
    while IFS= read -r -d '' f; do
      if [[ $(head -c4 "$f" | od -An -c | tr -d ' ') == '177ELF' ]]; then strip --strip-unneeded "$f" 2>/dev/null || true; fi
    done
  after=$(du -sb "$build/site" | cut -f1)
  echo "== stripped ELF files: $(( (before - after) / 1048576 )) MB less; tree $(( after / 1048576 )) MB"
  tar -C "$build/site" --owner=0 --group=0 --numeric-owner -cf - . | xz -T2 "-${XZ_LEVEL:-9}" \
    > "$out/site-$tag.tar.xz.tmp" || return 1
  mv "$out/site-$tag.tar.xz.tmp" "$out/site-$tag.tar.xz" || return 1
  echo "== $out/site-$tag.tar.xz: $(du -b "$out/site-$tag.tar.xz" | cut -f1) bytes"
}

travel_size() {  # what a device call sends: tracked + untracked-not-ignored files + the carried bundle
  local tree bundle
  tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  bundle=$(du -cb .devbundle/site-cp312.tar.xz 2>/dev/null | tail -1 | cut -f1)
  echo "== would travel: working tree $tree + bundle ${bundle:-0} = $(( tree + ${bundle:-0} )) bytes" \
       "(limit $(( 64 * 1048576 )))"
  (( tree + ${bundle:-0} < 64 * 1048576 ))
}

unpack() {  # $1: bundle, $2: target
  rm -rf "$2" && mkdir -p "$2"
  if command -v xz >/dev/null; then
    tar -C "$2" -xJf "$1"
  else
    python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$1" "$2"
  fi
}

bundle_env() {  # $1: an unpacked bundle: onto PYTHONPATH, offline settings, compiled once
  export SITE=$1 PYTHONPATH=$1:$REPO PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 \
         TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error PYTHONWARNINGS=ignore
  # Compile once, on all cores, rather than in every Ray worker at once (as `run` does).
  timeout "${COMPILE_MAX:-90}" "${PYTHON:-python3}" -m compileall -q -j 0 "$1" >/dev/null 2>&1 || true
}

device_env() {  # on the GPU machine: the bundle unpacked onto PYTHONPATH, offline settings, the GPU named
  unpack .devbundle/site-cp312.tar.xz "${SITE:-/tmp/site}" ||
    { echo "no bundle: run 'bash scripts/device_check.sh prepare' here first"; return 1; }
  bundle_env "${SITE:-/tmp/site}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
}

until_s() {  # seconds from now to the epoch time $1 plus $2 (at least 1: `timeout 0` would mean no limit)
  local s=$(( $1 + ${2:-0} - $(date +%s) ))
  echo $(( s > 1 ? s : 1 ))
}

tee_log() {  # stdout and stderr from here on also into the file $1 (its folder made); close_log waits for it
  mkdir -p "$(dirname "$1")"
  exec > >(tee "$1") 2>&1
  TEE=$!
}

close_log() {  # the tee'd stdout/stderr closed and the tee waited for, so the log's end is not cut
  exec >&- 2>&-
  wait "${TEE:-}" 2>/dev/null || true
}

pack_estimate_logs() {  # $1: gpu_estimate_check.py's work folder, $2: results: its small files, no checkpoints
  local dest
  dest=$(cd "$2" && pwd) || return 0
  (cd "$1" && find . \( -path ./model -o -path ./data \) -prune -o -type f \( -name '*.log' -o -name results.json \
     -o -name trials.csv -o -name log_history.json -o -name estimate_check.json \) -size -4M -print0 |
     tar --null -czf "$dest/estimate_logs.tar.gz" -T -) 2>/dev/null || true
}

stop_ray() {  # a train stopped at the deadline can leave Ray's processes, and their GPU memory, behind (on a
  # GPU machine of our own only: this ends every Ray on the machine; never in a simulation on a shared one)
  if [[ -z ${SMOKE:-} ]] && command -v nvidia-smi >/dev/null; then
    "${PYTHON:-python3}" -c "from ray.scripts.scripts import main; main()" stop --force >/dev/null 2>&1 || true
  fi
}

sim_site() {  # here: the bundle built for SIM_PY's Python and unpacked into $SITE (sets SIM_PY and SITE)
  SIM_PY=${1:-/tmp/gpuenv-sim/bin/python}
  [[ -x "$SIM_PY" ]] || { echo "no $SIM_PY: make a venv holding only packages the GPU image has" >&2; return 1; }
  local ver
  ver=$("$SIM_PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  BUNDLE_DIR=${BUNDLE_DIR:-bench/out/device_build} XZ_LEVEL=${XZ_LEVEL:-1} build_bundle "$ver" || return 1
  SITE=${SIM_SITE:-/tmp/qlora-sim-site-cp${ver/./}}
  unpack "${BUNDLE_DIR:-bench/out/device_build}/site-cp${ver/./}.tar.xz" "$SITE"
}

estimate_check() {  # on the GPU machine: scripts/gpu_estimate_check.py (issue 15), inside BUDGET (default 300 s)
  local t0 res=${OUT:-bench/out/estimate_check} budget=${BUDGET:-300} work=${WORK:-/tmp/qlora-estimate}
  t0=$(date +%s)
  mkdir -p "$work"
  tee_log "$res/estimate_check.log"
  device_env || return 1
  local end=$(( t0 + budget - 10 ))
  echo "== [$(( $(date +%s) - t0 )) s] bundle ready; scripts/gpu_estimate_check.py with $(( end - $(date +%s) )) s"
  timeout -k 10 "$(until_s "$end" 5)" "${PYTHON:-python3}" scripts/gpu_estimate_check.py --out "$work" \
    --results "$res" --deadline "$end" "${@}"
  local rc=$?
  stop_ray
  pack_estimate_logs "$work" "$res"
  echo "== [$(( $(date +%s) - t0 )) s] gpu_estimate_check.py exit $rc"; ls -la "$res"
  return $rc
}

throughput() {  # on the GPU machine: scripts/gpu_throughput.py alone, inside BUDGET (default 500 s) seconds
  local t0 res=${OUT:-bench/out/throughput} budget=${BUDGET:-500}
  t0=$(date +%s)
  (( budget <= 540 )) || { echo "BUDGET $budget: at most 540 s in one device call" >&2; return 2; }
  tee_log "$res/throughput.log"
  device_env || return 1
  local end=$(( t0 + budget - 15 ))
  echo "== [$(( $(date +%s) - t0 )) s] bundle ready; scripts/gpu_throughput.py with $(( end - $(date +%s) )) s"
  timeout -k 10 "$(until_s "$end" 5)" "${PYTHON:-python3}" scripts/gpu_throughput.py --out "$res" \
    --deadline "$end" "${@}"
  local rc=$?
  echo "== [$(( $(date +%s) - t0 )) s] gpu_throughput.py exit $rc"; ls -la "$res"
  return $rc
}

all_checks() {  # throughput, start-up timeline, estimate check, inside BUDGET (default 560 s); SMOKE=1: on CPU
  local t0 res=${OUT:-bench/out/device_all} budget=${BUDGET:-560} work=${WORK:-/tmp/qlora-estimate}
  local py=${PYTHON:-python3} smoke=() thr=() gpus=1 end thr_end ovh_end rc_est rc_thr rc_ovh
  t0=$(date +%s)
  (( budget <= 565 )) || { echo "BUDGET $budget: at most 565 s (timeout_s 590 keeps 25 s for the return)" >&2; return 2; }
  end=$(( t0 + budget ))
  mkdir -p "$work"
  tee_log "$res/device_check_all.log"
  if [[ -n ${SMOKE:-} ]]; then
    bundle_env "$SITE"; smoke=(--cpu-smoke); thr=(--isolate yes --fsdp-ranks 2); gpus=0
  else
    device_env || return 1
  fi
  echo "== [$(( $(date +%s) - t0 )) s] bundle ready ($(du -sm "$SITE" | cut -f1) MB); $(nproc) cpus"
  # Issue 16's figures first, the estimate check (issue 15) with what is left; each step ends at its deadline.
  # 1. The throughput benchmark (8B shape): THR_BUDGET seconds (default 290), rows written as they finish;
  #    at least 260 s are left for steps 2 and 3.
  thr_end=$(( $(date +%s) + ${THR_BUDGET:-290} ))
  (( thr_end <= end - 260 )) || thr_end=$(( end - 260 ))
  echo "== [$(( $(date +%s) - t0 )) s] 1. scripts/gpu_throughput.py until +$(( thr_end - t0 )) s"
  timeout -k 10 "$(until_s "$thr_end" 5)" "$py" scripts/gpu_throughput.py --out "$res" \
    --deadline "$thr_end" "${smoke[@]}" "${thr[@]}" "$@"
  rc_thr=$?
  # 2. Where `train`'s start-up goes on a GPU: bench_overhead.py's timeline (bare HF vs `train`, tiny T5, one
  #    round), OVH_BUDGET seconds (default 100; its JSON is written once both sides ran: bare ~20 s, ray ~70 s).
  ovh_end=$(( $(date +%s) + ${OVH_BUDGET:-100} ))
  echo "== [$(( $(date +%s) - t0 )) s] 2. bench/bench_overhead.py --quick until +$(( ovh_end - t0 )) s"
  timeout -k 5 "$(until_s "$ovh_end")" "$py" bench/bench_overhead.py --quick --rounds 1 --gpus "$gpus" \
    --timeout 80 --work-dir "$work/overhead" --json-out "$res/overhead_gpu.json"
  rc_ovh=$?
  stop_ray
  # 3. The memory estimate against measured peaks, until 5 s before BUDGET.
  echo "== [$(( $(date +%s) - t0 )) s] 3. scripts/gpu_estimate_check.py until +$(( end - 5 - t0 )) s"
  timeout -k 5 "$(until_s "$end")" "$py" scripts/gpu_estimate_check.py --out "$work" \
    --results "$res" --deadline $(( end - 5 )) "${smoke[@]}"
  rc_est=$?
  stop_ray
  pack_estimate_logs "$work" "$res"
  echo "== [$(( $(date +%s) - t0 )) s] gpu_throughput.py exit $rc_thr, bench_overhead.py exit $rc_ovh, gpu_estimate_check.py exit $rc_est"
  ls -la "$res"
  (( rc_est == 0 && rc_thr == 0 && rc_ovh == 0 ))
}

case "${1:-run}" in
  all)
    # On the GPU machine (device tool):  bash scripts/device_check.sh all   carry: [".devbundle"]   timeout_s: 590
    # Extra arguments go to gpu_throughput.py (e.g. --variants hf_peft,ours_packing_liger).
    shift; all_checks "$@"; rc=$?; close_log; exit $rc
    ;;
  simulate-all)
    # Here: `all` with the bundle for the local Python and SIM_PYTHON, both scripts with --cpu-smoke.
    sim_site "${2:-}" || exit 1
    SMOKE=1 PYTHON=$SIM_PY OUT=${OUT:-bench/out/device-all-sim} WORK=${WORK:-$(mktemp -d -t qlora-all-sim.XXXXXX)} \
      all_checks; rc=$?; close_log; exit $rc
    ;;
  throughput)
    # On the GPU machine (device tool):  bash scripts/device_check.sh throughput
    #     carry: [".devbundle"]   timeout_s: 560   (BUDGET, default 500 s, at most 540)
    # Back in $OUT: throughput.json, throughput.md (the side-by-side table), throughput.log.
    shift; throughput "$@"; rc=$?; close_log; exit $rc
    ;;
  estimate)
    # On the GPU machine (device tool):  bash scripts/device_check.sh estimate   carry: [".devbundle"]
    #     timeout_s: 330 (BUDGET, default 300 s). Back in $OUT: estimate_check.json (estimate vs measured
    #     peak per configuration, after every row), estimate_check.md, estimate_check.log, estimate_logs.tar.gz
    #     (each train's log, results.json, trials.csv, worker.log, log_history.json; no model, data or checkpoints).
    shift; estimate_check "$@"; rc=$?; close_log; exit $rc
    ;;
  simulate-throughput)
    # Here: the same bundle for the local Python, then scripts/gpu_throughput.py --cpu-smoke --isolate yes with
    # SIM_PYTHON (default /tmp/gpuenv-sim/bin/python: only packages the GPU image has) and the bundle on PYTHONPATH.
    sim_site "${2:-}" || exit 1
    PYTHONPATH=$SITE:$REPO HF_HUB_OFFLINE=1 "$SIM_PY" scripts/gpu_throughput.py --cpu-smoke --isolate yes --fsdp-ranks 2 \
      --out "${OUT:-bench/out/throughput-sim}"
    exit $?
    ;;
  prepare)
    build_bundle "${PYVER:-3.12}" || exit 1
    travel_size
    exit $?
    ;;
  simulate)
    sim_site "${2:-}" || exit 1
    export PYTHONPATH=$SITE:$REPO RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1
    unset PYTHONDONTWRITEBYTECODE  # the import audit below reads the __pycache__ folders
    OUT=$(mktemp -d -t qlora-sim.XXXXXX) PYTHON=$SIM_PY bash scripts/gpu_check.sh --cpu-smoke; rc=$?
    echo "== bundled packages this run imported (a __pycache__ appeared):"
    (cd "$SITE" && find . -name __pycache__ -type d | cut -d/ -f2 | sort | uniq -c | sort -rn)
    exit $rc
    ;;
  run) ;;
  *) echo "usage: $0 [prepare|all|simulate [PYTHON]|simulate-all [PYTHON]|simulate-throughput [PYTHON]|throughput|estimate|run]" >&2
     exit 2 ;;
esac

# ---- on the GPU machine -------------------------------------------------------------------------------
T0=$(date +%s)
BUDGET=${BUDGET:-420}              # seconds from here to the end of the last benchmark
GPU_CHECK_MAX=${GPU_CHECK_MAX:-240} # at most this much of it for scripts/gpu_check.sh
DEADLINE=$(( T0 + BUDGET ))
RES=${OUT:-bench/out/device_check} # what comes back: files directly in here
WORK=${WORK:-/tmp/qlora-device}    # scratch
SITE=${SITE:-/tmp/site}
mkdir -p "$WORK"
tee_log "$RES/device_check.log"
left() { echo $(( DEADLINE - $(date +%s) )); }
stamp() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }

stamp "unpacking the bundle into $SITE"
unpack .devbundle/site-cp312.tar.xz "$SITE" || { echo "no bundle: run 'bash scripts/device_check.sh prepare' here first"; exit 1; }
export SITE PYTHONPATH=$SITE:$REPO PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 \
       TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error PYTHONWARNINGS=ignore
# Compile once, on all cores, rather than in every Ray worker at once.
timeout 90 python3 -m compileall -q -j 0 "$SITE" >/dev/null 2>&1 || true
stamp "bundle ready ($(du -sm "$SITE" | cut -f1) MB)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 - <<'EOF' || true
import importlib, os, sys
print("python", sys.version.split()[0], sys.executable)
for m in ("torch", "ray", "transformers", "peft", "bitsandbytes", "datasets", "tokenizers", "accelerate",
          "huggingface_hub", "pydantic", "numpy", "pandas", "pyarrow", "aiohttp", "grpc", "google.protobuf",
          "yaml", "click", "rich", "fsspec", "opentelemetry.sdk", "opencensus", "jsonschema"):
    try:
        mod = importlib.import_module(m)
        where = "bundle" if os.environ["SITE"] in (getattr(mod, "__file__", "") or "") else "image"
        print(f"  {m:18s} {str(getattr(mod, '__version__', '?')):14s} {where}")
    except Exception as e:  # noqa: BLE001
        print(f"  {m:18s} FAILED: {type(e).__name__}: {e}")
try:
    import ray.dashboard.optional_deps  # noqa: F401
    print("  ray dashboard optional deps: ok")
except Exception as e:  # noqa: BLE001
    print(f"  ray dashboard optional deps FAILED: {e}")
import torch
print("  cuda:", torch.cuda.is_available(), torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
try:  # what `ray.init()` without num_gpus will see (bench_overhead/bench_search rely on it)
    from ray._private.accelerators import get_accelerator_manager_for_resource
    print("  GPUs Ray detects:", get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators())
except Exception as e:  # noqa: BLE001
    print(f"  Ray GPU detection FAILED: {e}")
EOF
echo "cpus $(nproc); $(free -g | awk '/Mem:/{print $2" GiB RAM"}'); /dev/shm $(df -h /dev/shm | awk 'NR==2{print $2}')"

# 1. The GPU check: two 4-bit trials on half a GPU each.
stamp "1. scripts/gpu_check.sh ($(left) s left)"
rm -rf "$WORK/gpu_check"
limit=$(( $(left) > GPU_CHECK_MAX ? GPU_CHECK_MAX : $(left) ))
if (( limit >= 60 )); then
  OUT=$WORK/gpu_check PYTHON=python3 timeout -k 10 "$limit" bash scripts/gpu_check.sh
  rc=$?; (( rc )) && echo "gpu_check.sh failed (exit $rc$( (( rc == 124 )) && echo ": stopped after $limit s"))"
else
  echo "gpu_check skipped: $(left) s left"
fi
cp "$WORK/gpu_check/tune.log" "$RES/gpu_check_tune.log" 2>/dev/null || true
cp "$WORK/gpu_check/gpu_check.json" "$RES/gpu_check.json" 2>/dev/null || true
# A tune stopped part-way leaves Ray's processes, and their GPU memory, behind (a GPU machine of our own only:
# this ends every Ray on the machine).
if command -v nvidia-smi >/dev/null; then
  python3 -c "from ray.scripts.scripts import main; main()" stop --force >/dev/null 2>&1 || true
fi

# 2. The benchmarks, each bounded by what is left of BUDGET (bench/gpu_bench.sh reads DEADLINE).
stamp "2. bench/gpu_bench.sh ($(left) s left)"
OUT=$WORK/bench DEADLINE=$DEADLINE PYTHON=python3 QLORA_DEVICE_CHECK=1 bash bench/gpu_bench.sh ||
  echo "gpu_bench.sh failed (exit $?)"
for f in seed_recipe.json overhead.json search.json nvidia_smi.csv; do
  cp "$WORK/bench/$f" "$RES/$f" 2>/dev/null || true
done

# 3. Everything else small enough, in one archive.
stamp "3. packing extras"
(
  cd "$WORK" || exit 0
  list=$(find gpu_check -maxdepth 4 \( -name results.json -o -name trials.csv -o -name gpu_check.yaml \
           -o -name nvidia_smi_samples.txt \) 2>/dev/null)
  list+=" $(find bench -maxdepth 1 -type f 2>/dev/null)"
  for d in overhead search seed_recipe; do
    list+=" $(find "$REPO/bench/out/$d" -maxdepth 1 -type f \( -name '*.log' -o -name '*.yaml' \) -size -2M 2>/dev/null)"
  done
  # Ray's own logs where a step failed (errors, not the full session).
  if [[ ! -f "$RES/gpu_check.json" || ! -f "$RES/search.json" ]]; then
    for sess in $(ls -dt /tmp/ray/session_2* 2>/dev/null | head -4); do
      list+=" $(find "$sess/logs" -maxdepth 1 -type f \( -name '*.err' -o -name 'dashboard*.log' \
                 -o -name 'gcs_server.out' -o -name 'raylet.out' -o -name 'python-core-driver*.log' \) -size -1M \
                 2>/dev/null | head -100)"
    done
  fi
  # shellcheck disable=SC2086
  tar -czf "$RES/extras.tar.gz" --ignore-failed-read $list 2>/dev/null || true
)
ls -la "$RES"
stamp "done"
exec >&- 2>&-
wait "$TEE" 2>/dev/null || true
