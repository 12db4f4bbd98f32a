#!/usr/bin/env bash
# The study grid on SLURM: one shard of configs/study.py per array task, then the report.
#
#   launch/slurm_study.sh SHARDS [--gpus N] [--cpus N] [--time HH:MM:SS] [--partition P] -- LAUNCHER_FLAGS...
#   e.g. launch/slurm_study.sh 8 --gpus 1 -- --config=configs/study.py:paper --workdir=/scratch/study \
#          --config.seeds="(0,1,2)"
#
# Submits an array of SHARDS tasks (each runs `python launch/main.py LAUNCHER_FLAGS
# --config.study.shard=$SLURM_ARRAY_TASK_ID/SHARDS --config.study.report=False`) and a job that runs after
# all of them succeed and writes WORKDIR/report.md (`python -m nas_jax.tasks.study WORKDIR`). Shards are
# disjoint and each writes only its own cells' results files; the cells of one victim are in one shard, so
# no victim is trained twice. Every cell is resumable: resubmitting the same command finishes what a failed
# or preempted array task left. Run from the repository root with the project's environment active.
# DRY_RUN=1 prints the sbatch commands instead of submitting them; PYTHON=... picks the interpreter.
set -euo pipefail

if [[ -n "${SLURM_ARRAY_TASK_ID:-}" && -n "${NAS_JAX_STUDY_SHARDS:-}" ]]; then  # inside one array task
  exec "${PYTHON:-python}" launch/main.py "$@" "--config.study.shard=${SLURM_ARRAY_TASK_ID}/${NAS_JAX_STUDY_SHARDS}" \
    --config.study.report=False
fi

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 1 && "$1" =~ ^[0-9]+$ && "$1" -ge 1 ]] || usage
shards=$1; shift
gpus=0; cpus=4; time_limit=24:00:00; partition=""
while [[ $# -gt 0 && "$1" != "--" ]]; do
  case "$1" in
    --gpus) gpus=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --time) time_limit=$2; shift 2 ;;
    --partition) partition=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
done
[[ "${1:-}" == "--" ]] || usage
shift
workdir=""
for flag in "$@"; do [[ "$flag" == --workdir=* ]] && workdir=${flag#--workdir=}; done
if [[ -z "$workdir" ]]; then
  echo "pass --workdir=DIR among the launcher flags: every shard and the report must use the same one." >&2
  exit 2
fi
mkdir -p "$workdir/slurm"

common=(--cpus-per-task="$cpus" --time="$time_limit" --output="$workdir/slurm/%x-%A_%a.out")
[[ -n "$partition" ]] && common+=(--partition="$partition")
[[ "$gpus" -gt 0 ]] && common+=(--gpus-per-task="$gpus")
array=(sbatch --parsable --job-name=nas_jax_study --array=0-$((shards - 1)) "${common[@]}"
       --export=ALL,NAS_JAX_STUDY_SHARDS="$shards" "$0" "$@")
if [[ -n "${DRY_RUN:-}" ]]; then
  printf '%q ' "${array[@]}"; echo
  echo "sbatch --dependency=afterok:JOBID --job-name=nas_jax_report --wrap='python -m nas_jax.tasks.study $workdir'"
  exit 0
fi
job=$("${array[@]}")
job=${job%%;*}
sbatch --parsable --dependency=afterok:"$job" --job-name=nas_jax_report --output="$workdir/slurm/report-%j.out" \
  --wrap="${PYTHON:-python} -m nas_jax.tasks.study $(printf '%q' "$workdir")"
echo "submitted array $job ($shards shards) and its report job; logs in $workdir/slurm/"
