#!/usr/bin/env bash
# DARTS / DARTS-i / DARTS-ii / DARTS-iii (paper §5.2, Table 4, Figures 15-17) in one command:
# search with the in-NAS mitigations, train the found cells and the stored variants, attack all of them,
# print the Table 4 summary.
#
#   bash launch/table4.sh quick      # digits, tiny supernet; ~4 h on 2 CPU cores (8 victims, 5 attacks; estimate)
#   bash launch/table4.sh paper      # CIFAR-10, the §g search and §d training: GPU days
#
# Environment: TASKS (default "pgd backdoor membership stealing poison"), VARIANTS (default
# "darts darts_i darts_ii darts_iii"), METHODS (searchers, default "darts"; any of darts pc_darts gdas snas drnas
# random: every method is searched under every variant, so the summary has a row per (method, mitigation);
# random search has no α, so only its "darts" variant runs), WORKDIR (default workdir/table4_$PRESET), SEARCH_FLAGS (extra flags for
# every search, e.g. "--config.search.hypergradient=first_order"), EXTRA_FLAGS (for every training and attack,
# e.g. "--config.zoo_dir=/data/zoo"). Every step is resumable: rerun the same command after a kill and finished
# searches, trainings and measurements are reused.
set -euo pipefail
PRESET=${1:-quick}
case "$PRESET" in quick|paper) ;; *) echo "usage: $0 quick|paper (got '$PRESET')" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORKDIR=${WORKDIR:-workdir/table4_$PRESET}
TASKS=${TASKS:-pgd backdoor membership stealing poison}
VARIANTS=${VARIANTS:-darts darts_i darts_ii darts_iii}
METHODS=${METHODS:-darts}

declare -A FLAGS=(  # docs/protocol.md §f.4: n_step 5 [paper example], γ = 0.5 [project default]
  [darts]=""
  [darts_i]="--config.search.n_step=5"
  [darts_ii]="--config.search.skip_gamma=0.5"
  [darts_iii]="--config.search.n_step=5 --config.search.skip_gamma=0.5"
)
models=()
for method in $METHODS; do
  case "$method" in darts|pc_darts|gdas|snas|drnas|random) ;;
    *) echo "unknown method '$method'; choose from: darts pc_darts gdas snas drnas random" >&2; exit 2 ;; esac
  for v in $VARIANTS; do
    [[ -v FLAGS[$v] ]] || { echo "unknown variant '$v'; choose from: ${!FLAGS[*]}" >&2; exit 2; }
    [[ $method == random && $v != darts ]] && { echo "=== skip random/$v (no α: the mitigations do not apply)"; continue; }
    name=$v; [[ $method == darts ]] || name="${method}_$v"  # darts keeps its old directories
    echo "=== search $name ($PRESET)"
    # shellcheck disable=SC2086  # the flags are separate words
    $PY launch/main.py --config=configs/search.py:"$PRESET" --config.search.method="$method" ${FLAGS[$v]} \
        ${SEARCH_FLAGS:-} --workdir="$WORKDIR/search/$name"
    models+=("genotype:$WORKDIR/search/$name/genotype.json")
  done
done
for v in $VARIANTS; do models+=("$v"); done  # the stored Table 4 cells
for m in "${models[@]}"; do
  echo "=== train $m"
  # shellcheck disable=SC2086
  $PY launch/main.py --config=configs/train.py:"$PRESET" --config.model="$m" ${EXTRA_FLAGS:-}
done
list=$(printf "'%s'," "${models[@]}")
for task in $TASKS; do
  echo "=== $task"
  extra=()
  [[ $task == stealing ]] && extra=(--config.stealing.matrix_budget=0)  # Table 4: architecture-aware only
  # shellcheck disable=SC2086
  $PY launch/main.py --config=configs/"$task".py:"$PRESET" --config.models="(${list%,})" "${extra[@]}" \
      ${EXTRA_FLAGS:-} --workdir="$WORKDIR"
done
$PY launch/table4.py "$WORKDIR" --out "$WORKDIR/table4.md"
