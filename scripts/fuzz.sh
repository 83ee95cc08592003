#!/usr/bin/env bash
# Build the libFuzzer targets (clang, ASan + UBSan) in build-fuzz and run each for FUZZ_SECONDS
# (default 60). Exits non-zero when a fuzzer finds a crash, a sanitizer report, an uncaught
# exception, a timeout or a memory blow-up; the reproducer is left in build-fuzz/fuzz-artifacts/.
#
#   FUZZ_SECONDS=30 scripts/fuzz.sh
#   build-fuzz/tests/fuzz/fuzz_safetensors build-fuzz/fuzz-artifacts/safetensors/crash-...  # replay
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="$root/build-fuzz"
seconds=${FUZZ_SECONDS:-60}
jobs=${JOBS:-2}

CC=clang CXX=clang++ cmake -S "$root" -B "$build" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTTT_BUILD_FUZZERS=ON -DTTT_BUILD_TESTS=ON -DTTT_BUILD_EXAMPLES=OFF -DTTT_BUILD_BENCHMARKS=OFF
cmake --build "$build" --target fuzz_safetensors fuzz_config -j"$jobs"

# the two fuzzers side by side (each is one process on one core): FUZZ_SECONDS of wall time in all
# instead of twice that; each one's output goes to its log, printed when both are done
fuzz() {
  local name=$1 corpus="$build/fuzz-corpus/$1" artifacts="$build/fuzz-artifacts/$1/" max_len=16384
  mkdir -p "$corpus" "$artifacts"  # the corpus grows across runs; the committed seeds stay read-only
  [ "$name" = config ] && max_len=4096
  "$build/tests/fuzz/fuzz_$name" \
    -max_total_time="$seconds" -max_len="$max_len" -timeout=20 -rss_limit_mb=2048 \
    -print_final_stats=1 -dict="$root/tests/fuzz/$name.dict" -artifact_prefix="$artifacts" \
    "$corpus" "$root/tests/fuzz/corpus/$name" > "$build/fuzz-$name.log" 2>&1
}
for name in safetensors config; do
  echo "== fuzz_$name for ${seconds}s (log: $build/fuzz-$name.log)"
  { rc=0; fuzz "$name" || rc=$?; echo "$rc" > "$build/fuzz-$name.rc"; } &
  if [ "$jobs" -lt 2 ]; then wait; fi  # JOBS=1: one after the other
done
wait
status=0
for name in safetensors config; do
  rc=$(cat "$build/fuzz-$name.rc")
  tail -n 12 "$build/fuzz-$name.log"
  if [ "$rc" -ne 0 ]; then
    echo "!! fuzz_$name found a problem (exit $rc); reproducer in $build/fuzz-artifacts/$name/, log $build/fuzz-$name.log" >&2
    status=1
  fi
done
exit "$status"
