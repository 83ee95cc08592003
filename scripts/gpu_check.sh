#!/usr/bin/env bash
# The GPU check (issue 11), for a machine with an NVIDIA GPU: builds the CUDA test and benchmark
# with nvcc straight from the include folder (no CMake; device machines may have no network and
# no Debian packages), runs the parity test (tests/cuda/test_scan.cu: the GPU scans against the
# same block phases on the host, fp32 / bf16 / fp16 inputs, prefill in chunks, prefill + decode)
# and the benchmark (benchmarks/bench_cuda.cu, Google Benchmark + cuBLAS), then prints one summary.
# A few minutes at most.
#   scripts/gpu_check.sh [OUT_DIR]            build here and run (the device tool: OUT_DIR=$OUT)
#   scripts/gpu_check.sh --build BIN_DIR      only build, for sm_80 and sm_90, on a machine with
#                                             nvcc and no GPU; copies Google Benchmark's library
#                                             and headers beside the programs
#   TTT_GPU_BIN=BIN_DIR scripts/gpu_check.sh [OUT_DIR]   run the programs built by --build
#                                             (rebuilt here if they do not start)
#   TTT_GPU_BENCH_ARGS='...'                  extra arguments for the benchmark
# Exit status: 0 every check passed, 1 a check failed, 77 no GPU / no nvcc.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)

# build DIR ARCH_FLAGS...: the two programs into DIR (the benchmark only where Google Benchmark's
# header is: the system's, or the copy in DIR/include)
build() {
  local dir=$1
  shift
  mkdir -p "$dir"
  [ -x "$nvcc" ] || { echo "gpu_check: no nvcc (install the CUDA toolkit)"; return 77; }
  local inc=() lib=(-lbenchmark)
  if [ -f "$dir/include/benchmark/benchmark.h" ]; then inc=(-I"$dir/include"); lib=(-L"$dir" -l:libbenchmark.so.1debian); fi
  "$nvcc" -std=c++17 -O3 "$@" -I"$root/include" "$root/tests/cuda/test_scan.cu" -o "$dir/test_scan" \
    2>"$dir/test_scan.build.txt" &
  local t=$!
  local b=
  if [ -f "$dir/include/benchmark/benchmark.h" ] || [ -f /usr/include/benchmark/benchmark.h ]; then
    "$nvcc" -std=c++17 -O3 "$@" -I"$root/include" "${inc[@]}" "$root/benchmarks/bench_cuda.cu" "${lib[@]}" -lcublas \
      -Xlinker -rpath='$ORIGIN' -o "$dir/bench_cuda" 2>"$dir/bench_cuda.build.txt" &
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
  dir=${2:?usage: scripts/gpu_check.sh --build BIN_DIR}
  mkdir -p "$dir/include"
  if [ -f /usr/include/benchmark/benchmark.h ]; then
    cp -r /usr/include/benchmark "$dir/include/"
    cp -L /usr/lib/x86_64-linux-gnu/libbenchmark.so.1debian "$dir/" 2>/dev/null || cp -L "$(ldconfig -p | awk '/libbenchmark.so /{print $NF; exit}')" "$dir/libbenchmark.so.1debian"
  fi
  start=$(date +%s)
  build "$dir" -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
  rc=$?
  echo "gpu_check: built in $(($(date +%s) - start)) s into $dir"
  exit $rc
fi

out=${1:-$root/build-gpu}
mkdir -p "$out"
"$nvcc" --version 2>/dev/null | tail -1
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader; fi
summary=()
bin=${TTT_GPU_BIN:-}
if [ -n "$bin" ]; then
  export LD_LIBRARY_PATH="$bin:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  if ldd "$bin/test_scan" "$bin/bench_cuda" 2>/dev/null | grep -q "not found"; then
    echo "gpu_check: the programs in $bin do not start here; building them"
    bin=
  else
    summary+=("programs: built ahead in $TTT_GPU_BIN")
  fi
fi
if [ -z "$bin" ]; then
  bin=$out/bin
  [ -n "${TTT_GPU_BIN:-}" ] && [ -d "$TTT_GPU_BIN/include" ] && mkdir -p "$bin" && cp -r "$TTT_GPU_BIN/include" "$TTT_GPU_BIN"/libbenchmark.so* "$bin/" 2>/dev/null
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
