#!/usr/bin/env bash
# Packaging test: install the library from the build tree into a temporary prefix, then build and
# run a consumer project with find_package(ttt CONFIG) (header-only, and linking ttt::precompiled),
# and another with add_subdirectory.
set -euo pipefail
src=$1 build=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/share/cmake/ttt/tttConfig.cmake"
test -f "$work/prefix/include/ttt/ttt.hpp"
test ! -e "$work/prefix/include/ttt/precompiled/linear.cpp"  # headers only
ls "$work"/prefix/lib*/libttt_precompiled.a >/dev/null  # and the precompiled instances
cmake -S "$src/tests/packaging/consumer" -B "$work/pkg" -DCMAKE_PREFIX_PATH="$work/prefix" -DTTT_CONSUME=package >/dev/null
cmake --build "$work/pkg" >/dev/null
"$work/pkg/app"
"$work/pkg/app_precompiled"
cmake -S "$src/tests/packaging/consumer" -B "$work/sub" -DTTT_CONSUME=subdir -DTTT_SOURCE_DIR="$src" >/dev/null
cmake --build "$work/sub" >/dev/null
"$work/sub/app"
# as a subdirectory the library's own tests/examples/benchmarks stay off
test ! -e "$work/sub/ttt-build/tests"
echo "packaging ok"
