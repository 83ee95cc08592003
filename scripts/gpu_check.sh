#!/usr/bin/env bash
# The GPU check (issue 11), for a machine with an NVIDIA GPU: runs the parity tests
# (tests/cuda/test_scan.cu: the GPU scans against the same block phases on the host, fp32 / bf16 /
# fp16 inputs, prefill in chunks, prefill + decode; tests/cuda/test_model.cpp: the GPU model's
# logits against the CPU model's) and the benchmark (benchmarks/bench_cuda.cu: the scans next to
# cuBLAS, the 125m-shaped model's prefill and decode), then prints one summary. A few minutes.
#   scripts/gpu_check.sh --build BIN_DIR      build the three programs (CMake, sm_80 and sm_90) on
#                                             any machine with nvcc and the project's packages (no
#                                             GPU needed) into BIN_DIR, with the shared libraries
#                                             they need that a bare GPU machine may lack and the
#                                             reference vectors (../shared/reference) if present
#   TTT_GPU_BIN=BIN_DIR scripts/gpu_check.sh [OUT_DIR]   run them on the GPU machine (the device
#                                             tool: OUT_DIR=$OUT)
#   scripts/gpu_check.sh [OUT_DIR]            no BIN_DIR: build test_scan and bench_cuda here with
#                                             nvcc from the include folder alone (a machine without
#                                             the project's packages: test_model needs the CPU
#                                             library and is skipped) and run them
#   TTT_GPU_BENCH_ARGS='...'                  extra arguments for the benchmark (split at spaces)
# Exit status: 0 every check passed, 1 a check failed, 77 no GPU / no nvcc.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)

# build DIR ARCH_FLAGS...: test_scan and (where Google Benchmark's header is) bench_cuda into DIR
# with nvcc alone
build() {
  local dir=$1
  shift
  mkdir -p "$dir"
  [ -x "$nvcc" ] || { echo "gpu_check: no nvcc (install the CUDA toolkit)"; return 77; }
  "$nvcc" -std=c++17 -O3 "$@" -I"$root/include" "$root/tests/cuda/test_scan.cu" -o "$dir/test_scan" \
    2>"$dir/test_scan.build.txt" &
  local t=$! b=
  if [ -f /usr/include/benchmark/benchmark.h ]; then
    "$nvcc" -std=c++17 -O3 "$@" -I"$root/include" "$root/benchmarks/bench_cuda.cu" -lbenchmark -lcublas \
      -o "$dir/bench_cuda" 2>"$dir/bench_cuda.build.txt" &
    b=$!
  else
    echo "gpu_check: no Google Benchmark header: the benchmark is not built"
  fi
  local rc=0
  wait $t || { echo "gpu_check: test_scan did not build:"; head -c 2000 "$dir/test_scan.build.txt"; rc=1; }
  if [ -n "$b" ]; then wait $b || { echo "gpu_check: bench_cuda did not build:"; head -c 2000 "$dir/bench_cuda.build.txt"; rc=1; }; fi
  return $rc
}

if [ "${1:-}" = --build ]; then
  dir=$(mkdir -p "${2:?usage: scripts/gpu_check.sh --build BIN_DIR}" && cd "$2" && pwd)
  [ -x "$nvcc" ] || { echo "gpu_check: no nvcc (install the CUDA toolkit)"; exit 77; }
  start=$(date +%s)
  gen=()
  cdir=${TTT_GPU_CMAKE_DIR:-$root/build-cuda}  # the CMake build tree (not in BIN_DIR, which travels)
  command -v ninja >/dev/null && [ ! -f "$cdir/CMakeCache.txt" ] && gen=(-G Ninja)
  cmake "${gen[@]}" -S "$root" -B "$cdir" -DCMAKE_BUILD_TYPE=Release -DTTT_ENABLE_CUDA=ON \
    -DCMAKE_CUDA_COMPILER="$nvcc" -DTTT_BUILD_TESTS=ON -DTTT_BUILD_BENCHMARKS=ON -DTTT_BUILD_EXAMPLES=OFF >/dev/null || exit 1
  cmake --build "$cdir" -j"${JOBS:-2}" --target test_cuda_scan test_cuda_model bench_cuda || exit 1
  cp "$cdir/tests/cuda/test_cuda_scan" "$dir/test_scan"
  cp "$cdir/tests/cuda/test_cuda_model" "$dir/test_model"
  cp "$cdir/benchmarks/bench_cuda" "$dir/bench_cuda"
  # the shared libraries a bare GPU machine may lack (Google Benchmark, OpenMP)
  for p in "$dir/test_model" "$dir/bench_cuda"; do
    ldd "$p" | awk '/libbenchmark|libgomp/ {print $3}' | while read -r l; do cp -L "$l" "$dir/"; done
  done
  # the official code's reference vectors travel with the programs (test_model checks them)
  ref=$root/../shared/reference/ttt-lm-pytorch
  if [ -d "$ref" ]; then rm -rf "$dir/reference" && mkdir -p "$dir/reference" && cp -r "$ref" "$dir/reference/"; fi
  echo "gpu_check: built in $(($(date +%s) - start)) s into $dir"
  exit 0
fi

out=${1:-$root/build-gpu}
mkdir -p "$out"
"$nvcc" --version 2>/dev/null | tail -1
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader; fi
summary=()
bin=${TTT_GPU_BIN:-}
if [ -n "$bin" ]; then
  export LD_LIBRARY_PATH="$bin:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  if ldd "$bin/test_scan" "$bin/test_model" "$bin/bench_cuda" 2>/dev/null | grep -q "not found"; then
    ldd "$bin/test_scan" "$bin/test_model" "$bin/bench_cuda" 2>/dev/null | grep "not found"
    echo "gpu_check: the programs in $bin do not start here; building them"
    bin=
  else
    summary+=("programs: built ahead in $TTT_GPU_BIN")
  fi
fi
if [ -z "$bin" ]; then
  bin=$out/bin
  arch=(-arch=native)
  "$nvcc" -arch=native --version >/dev/null 2>&1 || arch=(-arch=sm_90)
  start=$(date +%s)
  build "$bin" "${arch[@]}"
  brc=$?
  [ $brc = 77 ] && exit 77
  summary+=("programs: built here with ${arch[*]} in $(($(date +%s) - start)) s (exit $brc)")
  export LD_LIBRARY_PATH="$bin:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
fi

status=0
start=$(date +%s)
"$bin/test_scan" 2>&1 | tee "$out/test_scan.txt"
rc=${PIPESTATUS[0]}
summary+=("test_scan: $(tail -1 "$out/test_scan.txt") (exit $rc, $(($(date +%s) - start)) s)")
if [ "$rc" = 77 ]; then status=77; elif [ "$rc" != 0 ]; then status=1; fi

if [ -x "$bin/test_model" ] && [ "$status" != 77 ]; then
  start=$(date +%s)
  [ -d "$bin/reference" ] && export TTT_REFERENCE_DIR="$bin/reference"
  "$bin/test_model" 2>&1 | tee "$out/test_model.txt"
  rc=${PIPESTATUS[0]}
  summary+=("test_model: $(tail -1 "$out/test_model.txt") (exit $rc, $(($(date +%s) - start)) s)")
  [ "$rc" != 0 ] && status=1
else
  summary+=("test_model: not built (it needs the CPU library: scripts/gpu_check.sh --build on a machine with the packages)")
fi

if [ -x "$bin/bench_cuda" ] && [ "$status" != 77 ]; then
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$bin/bench_cuda" --benchmark_min_time=0.1 --benchmark_out="$out/bench_cuda.json" --benchmark_out_format=json \
    ${TTT_GPU_BENCH_ARGS:-} 2>&1 | tee "$out/bench_cuda.txt"
  rc=${PIPESTATUS[0]}
  summary+=("bench_cuda: exit $rc, $(($(date +%s) - start)) s; table in $out/bench_cuda.txt")
  [ "$rc" != 0 ] && status=1
fi
echo "== gpu_check summary"
printf '%s\n' "${summary[@]}"
exit $status
