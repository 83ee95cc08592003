#!/usr/bin/env bash
# tokens/s of `ttt train` in 1 process (1 and 2 threads) and in 2 MPI processes (1 thread each),
# three runs each, on this repository's text; checks that 2 processes write the bytes 2 threads
# write. Numbers in benchmarks/README.md ("Data-parallel training over MPI"). Not a test.
#   benchmarks/mpi_train.sh [build/examples/ttt]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T=$(realpath "${1:-$root/build/examples/ttt}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cat "$root"/README.md "$root"/docs/*.md "$root"/include/ttt/*/*.hpp >corpus.txt
[ "$(id -u)" = 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS=1
for layer in linear mlp; do
  a=(train --data corpus.txt --layer "$layer" --hidden 256 --layers 4 --heads 4 --seq-len 256 --batch 4 --steps 8
    --val-windows 2 --quiet)
  for rep in 1 2 3; do
    rm -rf o1 o2 o3
    echo "$layer run $rep, 1 process x 1 thread:    $("$T" "${a[@]}" --threads 1 --out o1 | grep -oE '[0-9]+ tokens/s.*')"
    echo "$layer run $rep, 1 process x 2 threads:   $("$T" "${a[@]}" --threads 2 --out o2 | grep -oE '[0-9]+ tokens/s.*')"
    echo "$layer run $rep, 2 processes x 1 thread:  $(mpirun -np 2 "$T" "${a[@]}" --threads 1 --out o3 | grep -oE '[0-9]+ tokens/s.*')"
    cmp -s o2/model.safetensors o3/model.safetensors && echo "  2 processes == 2 threads, bit for bit" ||
      echo "  2 processes and 2 threads DIFFER"
  done
done
