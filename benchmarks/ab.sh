#!/usr/bin/env bash
# A same-session before/after of one benchmark program: builds BASE (a commit) in a worktree with
# the CI's configuration, builds the current tree, then runs the two alternately (before, after,
# before, after) and prints the fastest repetition of each side (benchmarks/summarize.py --compare).
#   benchmarks/ab.sh BASE [PROGRAM [FILTER]]
#   benchmarks/ab.sh 1aa4c95 bench_layer 'Layer/(Linear|MLP)/(prefill/2048|decode)/|Learner/(Linear|MLP)/(dual_form|train)/'
# Environment: AB_DIR (worktree and results, default /tmp/ttt-ab), AB_RUNS (2), AB_MIN_TIME (0.5),
# JOBS (2), AB_PAIRED (0). Run it with nothing else running; the numbers go to benchmarks/README.md
# with the command.
# AB_PAIRED=1: each run starts the two sides at the same time, one thread each, pinned to cores 0
# and 1 (taskset), the cores swapped every run. The drift of a shared machine (another tenant, the
# clock) then hits both sides alike: on the 2-core EPYC a layer's prefill varied 70.5-72.8 ms over
# six paired runs against 68-81 ms alternating (benchmarks/README.md, "The dual forms' kernels").
# The two share the L3 and the memory bus, so a paired number is not a one-thread number of an idle
# machine: use it for the difference.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
base=${1:?usage: benchmarks/ab.sh BASE [PROGRAM [FILTER]]}
prog=${2:-bench_layer}
filter=${3:-.}
dir=${AB_DIR:-/tmp/ttt-ab}
runs=${AB_RUNS:-2}
min_time=${AB_MIN_TIME:-0.5}
jobs=${JOBS:-2}
paired=${AB_PAIRED:-0}
cfg=(-DCMAKE_BUILD_TYPE=Release -DTTT_BUILD_TESTS=OFF -DTTT_BUILD_EXAMPLES=OFF -DTTT_BUILD_BENCHMARKS=ON)

mkdir -p "$dir"
if [ ! -d "$dir/base" ]; then git -C "$root" worktree add --detach "$dir/base" "$base" >/dev/null; fi
git -C "$dir/base" checkout --quiet --detach "$base"
for side in base after; do
  src=$([ $side = base ] && echo "$dir/base" || echo "$root")
  cmake -S "$src" -B "$dir/build-$side" "${cfg[@]}" >/dev/null
  cmake --build "$dir/build-$side" -j"$jobs" --target "$prog" >/dev/null
done
before=() after=()
for r in $(seq 1 "$runs"); do
  core=$((r % 2))
  for side in base after; do
    out="$dir/$prog-$side-$r.json"
    args=(--benchmark_filter="$filter" --benchmark_min_time="$min_time" --benchmark_out="$out"
      --benchmark_out_format=json)
    if [ "$paired" = 1 ]; then
      OMP_NUM_THREADS=1 taskset -c "$core" "$dir/build-$side/benchmarks/$prog" "${args[@]}" >/dev/null 2>&1 &
      core=$((1 - core))
    else
      OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$dir/build-$side/benchmarks/$prog" "${args[@]}" >/dev/null
    fi
    if [ $side = base ]; then before+=("$out"); else after+=("$out"); fi
  done
  wait
done
mode=$([ "$paired" = 1 ] && echo "paired, one thread each" || echo "alternating")
echo "$prog, $base (before) vs $(git -C "$root" rev-parse --short HEAD)+worktree (after), best of $runs each ($mode):"
python3 "$root/benchmarks/summarize.py" --compare "$(IFS=,; echo "${before[*]}")" "$(IFS=,; echo "${after[*]}")"
