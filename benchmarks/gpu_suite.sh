#!/usr/bin/env bash
# Every side-by-side benchmark at GPU sizes in one command, for a machine with one GPU
# (budget: 10 minutes on one H200) whose Python already has CUDA jax, flax, optax, chex, orbax and PyTorch.
# The packages it lacks are installed offline from the wheels of benchmarks/gpu_wheels.sh (into OUT/site,
# never into the image). Each benchmark writes its BENCHMARKS.md section to OUT/sections/NAME.md
# ($NAS_JAX_BENCH_SECTIONS) and its log to OUT/logs/NAME.log; OUT/summary.md lists status and seconds.
# Merge locally:  python benchmarks/merge_sections.py OUT/sections [--prefix gpu_]
#
#   benchmarks/gpu_suite.sh [--out DIR] [--wheels DIR] [--only a,b] [--smoke]
#
# --smoke: tiny sizes, a few seconds per benchmark on CPU (what tests/test_gpu_suite.py runs).
# Steps: compile_time, search_step (the §g step + 50-epoch estimate), search_methods (every searcher's §g step), train_throughput (darts C=36 L=20 and
# ResNet-18 vs PyTorch), pgd_throughput (vs torchattacks), grad_variance_throughput (vs torch.func),
# membership_throughput (HopSkipJump vs ART, Knockoff), training_attack_cost, and population_throughput and
# autoattack_throughput where the tree has them, and space_throughput (one program for every genotype vs one
# network per genotype). The time limits add up to 650 s.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/gpu_results"; wheels="$root/benchmarks/wheels"; only=""; smoke=0
py="${PYTHON:-python3}"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --wheels) wheels="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --smoke) smoke=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_suite.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out/sections" "$out/logs"
out="$(cd "$out" && pwd)"
cd "$root"

# Offline install of what this Python cannot import (module:wheel-name pairs).
missing=()
for pair in ml_collections:ml-collections absl:absl-py yaml:PyYAML tqdm:tqdm sklearn:scikit-learn scipy:scipy \
            joblib:joblib threadpoolctl:threadpoolctl six:six torchattacks:torchattacks art:adversarial-robustness-toolbox; do
  "$py" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ -d "$wheels" ]; then
    echo "installing from $wheels into $out/site: ${missing[*]}"
    "$py" -m pip install --quiet --no-index --no-deps --find-links "$wheels" --target "$out/site" "${missing[@]}" \
      || echo "warning: offline install failed; benchmarks needing ${missing[*]} will fail" >&2
  else
    echo "warning: missing ${missing[*]} and no wheel folder $wheels (run benchmarks/gpu_wheels.sh beforehand)" >&2
  fi
fi
export PYTHONPATH="$out/site:$root${PYTHONPATH:+:$PYTHONPATH}"
export NAS_JAX_BENCH_SECTIONS="$out/sections"
"$py" -c "import jax; print('devices:', jax.devices())" | tee "$out/logs/devices.log"

# name | timeout s | GPU-size arguments | smoke arguments
steps=(
  "compile_time|110|--reps 2|--smoke --reps 1 --only search_first_order"
  "search_step|80|--reps 3|--tiny --reps 1 --hypergradients first_order"
  "search_methods|45|--channels 16 --layers 8 --batch 64 --size 32 --ops all --reps 2|--tiny --reps 1 --methods darts,gdas"
  "train_throughput|65|--models darts,resnet --darts-c 36 --darts-layers 20 --batch 96 --steps 10 --reps 3 --warmup 2 --max-wait 0 --no-probe|--models darts --darts-c 2 --darts-layers 3 --batch 8 --steps 1 --reps 1 --warmup 1 --max-wait 0 --no-probe"
  "pgd_throughput|45|--darts-c 36 --darts-layers 20 --batch 256 --reps 3 --warmup 1 --max-wait 0|--models darts --darts-c 2 --darts-layers 3 --batch 8 --reps 1 --max-wait 0"
  "grad_variance_throughput|55|--darts-c 36 --darts-layers 20 --n 256 --chunks 1,32 --reps 3 --max-wait 0|--models darts --darts-c 2 --darts-layers 3 --n 4 --chunks 1,2 --reps 1 --max-wait 0"
  "membership_throughput|65|--max-iter 10 --n-inputs 100 --art-inputs 4 --reps 1 --max-wait 0|--max-iter 1 --init-eval 4 --init-size 4 --n-inputs 2 --art-inputs 1 --reps 1 --knockoff-budget 96 --knockoff-epochs 1 --max-wait 0"
  "training_attack_cost|45|--darts-c 36 --darts-layers 20 --steps 5 --reps 2 --warmup 1 --max-wait 0|--models darts --modes clean --darts-c 2 --darts-layers 3 --batch 8 --steps 1 --reps 1 --warmup 1 --max-wait 0"
  "population_throughput|40||--smoke"
  "autoattack_throughput|40|--darts-c 36 --darts-layers 20 --batch 64|--darts-c 2 --darts-layers 3 --batch 4 --steps 1 --queries 4"
  "space_throughput|60|--channels 16 --layers 8 --genotypes 200 --per-genotype 1|--smoke"
)
printf '| benchmark | status | seconds |\n|---|---|---|\n' > "$out/summary.md"
failed=0
for step in "${steps[@]}"; do
  IFS='|' read -r name limit full small <<< "$step"
  if [ -n "$only" ] && [[ ",$only," != *",$name,"* ]]; then continue; fi
  if [ ! -f "benchmarks/$name.py" ]; then
    echo "| $name | not in this tree | |" >> "$out/summary.md"; continue
  fi
  args="$full"; [ "$smoke" = 1 ] && args="$small"
  echo "== $name $args (limit ${limit}s)"
  t0=$(date +%s)
  # shellcheck disable=SC2086
  timeout --kill-after=10 "$limit" "$py" "benchmarks/$name.py" $args > "$out/logs/$name.log" 2>&1
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  case $rc in
    0) status=ok ;;
    124|137) status="timed out (> ${limit} s)"; failed=1 ;;
    *) status="failed (exit $rc; see logs/$name.log)"; failed=1 ;;
  esac
  [ $rc = 0 ] && [ ! -f "$out/sections/$name.md" ] && { status="no section written"; failed=1; }
  echo "| $name | $status | $dt |" >> "$out/summary.md"
  echo "   $status in ${dt}s"
done
cat "$out/summary.md"
exit $failed
