#!/usr/bin/env bash
# The main job: the long-context study. On a fresh Debian machine: install what is missing
# (scripts/setup.sh: compiler, Eigen, xsimd, CLI11, gnuplot-nox, npm and the Brown corpus, ...),
# build the study in Release with -march=native (TTT_NATIVE=OFF scripts/demo.sh for a portable
# build), run its two parts, print where the results are. With --parity it also builds the `ttt`
# tool and checks the library against the official PyTorch reference vectors (the test command,
# scripts/test.sh, runs the same checks: ctest's cli_eval_* and parity tests).
#   1. real text (the Brown corpus, bytes): every model's learning rate swept on a validation
#      split, 3 seeds, test loss by token position to 1k tokens; then time and memory vs context
#      up to 32k tokens -> results/study/brown/
#   2. multi-query associative recall (Zoology's MQAR): accuracy by number of key-value pairs,
#      same protocol -> results/study/mqar/
#   scripts/demo.sh                      default study (about 15 minutes on 2 cores, build included;
#                                        docs/study.md has the measured figure)
#   scripts/demo.sh --parity             ... and the parity check against the reference vectors
#   scripts/demo.sh --full               the long version of both parts (see docs/study.md)
#   scripts/demo.sh [--full] --resume    after Ctrl-C: continue, skipping the finished parts
#   scripts/demo.sh --task text:PATH ... any other options: one study run with them
#                                        (examples/study/study --help)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
jobs=${JOBS:-2}
start=$(date +%s)

scripts/setup.sh --brown
echo "== building the study (Release, TTT_NATIVE=${TTT_NATIVE:-ON})"
# Ninja (setup.sh installs it) overlaps the units of the study and the ttt tool better than make:
# 4:00 against 5:11 for this build on 2 cores; an existing folder keeps its generator
gen=()
[ -f build-demo/CMakeCache.txt ] || ! command -v ninja >/dev/null || gen=(-G Ninja)
# the library's float instances alone (TTT_PRECOMPILED_DOUBLE=OFF): the study runs in float, and
# the double ones (the tests' finite differences) would double the library's build
cmake "${gen[@]}" -S . -B build-demo -DCMAKE_BUILD_TYPE=Release -DTTT_BUILD_TESTS=OFF -DTTT_BUILD_EXAMPLES=ON \
  -DTTT_BUILD_BENCHMARKS=OFF -DTTT_PRECOMPILED_DOUBLE=OFF -DTTT_NATIVE=${TTT_NATIVE:-ON} >/dev/null
parity=0 args=()
for a in "$@"; do
  if [ "$a" = --parity ]; then parity=1; else args+=("$a"); fi
done
set -- "${args[@]}"
targets=(study)
[ $parity = 1 ] && targets+=(ttt-cli)
mkdir -p results
if ! cmake --build build-demo -j"$jobs" --target "${targets[@]}" >results/demo-build.log 2>&1; then
  tail -30 results/demo-build.log; echo "build failed; full log in results/demo-build.log" >&2; exit 1
fi
echo "   built in $(( $(date +%s) - start )) s"

study=build-demo/examples/study/study
two=1 sfx=
for a in "$@"; do
  case $a in --full) sfx=-full ;; --resume) ;; *) two=0 ;; esac
done
if [ $two = 1 ]; then
  echo; echo "== study 1/2: real text (Brown corpus)"
  $study --task text:data/brown --out results/study/brown$sfx "$@"
  echo; echo "== study 2/2: multi-query associative recall"
  $study --task mqar --no-timing --out results/study/mqar$sfx "$@"
else
  $study "$@"
fi

ref=../shared/reference/ttt-lm-pytorch
if [ $parity = 1 ] && [ ! -d "$ref" ]; then echo "demo: --parity needs the reference vectors in $ref" >&2; exit 1; fi
if [ $parity = 1 ]; then
  echo
  echo "== parity with the official ttt-lm-pytorch (reference vectors)"
  py=python3
  python3 -c "import numpy" 2>/dev/null || py=/usr/bin/python3
  mkdir -p results/parity
  for c in "$ref"/*/; do
    c=${c%/}
    build-demo/examples/ttt eval --model "$c" --input "$c/expected.safetensors" --out "results/parity/$(basename "$c").safetensors" >/dev/null
    printf '%-14s ' "$(basename "$c")"
    $py ../shared/reference/compare.py "$c/expected.safetensors" "results/parity/$(basename "$c").safetensors" | tail -1
  done
fi
echo
echo "scripts/demo.sh took $(( $(date +%s) - start )) s"
