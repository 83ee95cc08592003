#!/usr/bin/env bash
# Build the io tests (safetensors, atomic writes, config.json) with AddressSanitizer and
# UndefinedBehaviorSanitizer in build-asan and run them. Non-zero on any failure.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="$root/build-asan"
jobs=${JOBS:-2}

cmake -S "$root" -B "$build" \
  -DTTT_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DTTT_BUILD_TESTS=ON \
  -DTTT_BUILD_EXAMPLES=OFF -DTTT_BUILD_BENCHMARKS=OFF
cmake --build "$build" --target test_io -j"$jobs"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# Every io case but the two that tokenize the test texts with the real Llama-2 and Mistral
# vocabularies (20 of the 27 s under ASan; the Release suite runs them): the real Llama-2 file is
# still read here (its older Metaspace layout), and every other tokenizer path on small vocabularies.
"$build/tests/io/test_io" '-tce=*(data/llama2) gives*,*(data/mistral) gives*'
