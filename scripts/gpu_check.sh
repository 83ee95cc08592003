#!/usr/bin/env bash
# The GPU check (issue 11), for a machine with an NVIDIA GPU: compiles the CUDA tests with nvcc
# straight from the include folder (no CMake, no Debian packages needed: device machines may have
# no network) and runs them, then prints one summary. A few minutes at most.
#   scripts/gpu_check.sh [OUT_DIR]      (the device tool: OUT_DIR=$OUT)
# Exit status: 0 every check passed, 1 a check failed, 77 no GPU / no nvcc.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/build-gpu}
mkdir -p "$out"
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$nvcc" ] || { echo "gpu_check: no nvcc (install the CUDA toolkit)"; exit 77; }
"$nvcc" --version | tail -1
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
arch=native
"$nvcc" -arch=native --version >/dev/null 2>&1 || arch=sm_90
status=0
summary=()
for t in test_linear_scan; do
  src="$root/tests/cuda/$t.cu"
  start=$(date +%s)
  if ! "$nvcc" -std=c++17 -O2 -arch="$arch" -I"$root/include" "$src" -o "$out/$t" 2>"$out/$t.build.txt"; then
    summary+=("$t: BUILD FAILED ($(head -c 300 "$out/$t.build.txt"))")
    status=1
    continue
  fi
  "$out/$t" | tee "$out/$t.txt"
  rc=${PIPESTATUS[0]}
  summary+=("$t: $(tail -1 "$out/$t.txt") (exit $rc, $(($(date +%s) - start)) s with the build)")
  if [ "$rc" = 77 ] && [ "$status" = 0 ]; then status=77; elif [ "$rc" != 0 ] && [ "$rc" != 77 ]; then status=1; fi
done
echo "== gpu_check summary"
printf '%s\n' "${summary[@]}"
exit $status
