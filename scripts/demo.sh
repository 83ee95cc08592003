#!/usr/bin/env bash
# The main job (until the long-context study lands): on a fresh machine, install what is missing,
# build the `ttt` tool in Release, then for TTT-Linear and TTT-MLP (Transformer and Mamba
# backbones) build a small byte-level model, prefill a long prompt, generate, and print the speed;
# finally check the library against the official PyTorch reference vectors. The tool is built
# with -march=native (TTT_NATIVE=OFF scripts/demo.sh for a portable build).
#   scripts/demo.sh              (PROMPT_TOKENS=2048 NEW_TOKENS=64 by default)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
jobs=${JOBS:-2}
prompt_tokens=${PROMPT_TOKENS:-2048}
new_tokens=${NEW_TOKENS:-64}
out=${OUT:-results/demo}

scripts/setup.sh
echo "== building ttt (Release)"
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=Release -DTTT_BUILD_TESTS=OFF -DTTT_BUILD_EXAMPLES=ON \
  -DTTT_BUILD_BENCHMARKS=OFF -DTTT_NATIVE=${TTT_NATIVE:-ON} >/dev/null
mkdir -p "$out"
if ! cmake --build build-demo -j"$jobs" --target ttt-cli >"$out/build.log" 2>&1; then
  tail -30 "$out/build.log"; echo "build failed; full log in $out/build.log" >&2; exit 1
fi
ttt=build-demo/examples/ttt
mkdir -p "$out"

ids=$(python3 -c "import random; random.seed(0); print(','.join(str(random.randrange(256)) for _ in range($prompt_tokens)))" 2>/dev/null ||
      seq -s, 1 "$prompt_tokens" | awk -F, '{for(i=1;i<=NF;i++) printf "%s%d", (i>1?",":""), ($i*37)%256}')

for variant in "linear" "mlp" "linear --pre-conv --share-qk --use-gate" "mlp --pre-conv --share-qk --use-gate"; do
  set -- $variant
  name=$1${2:+-mamba}
  echo
  echo "== TTT-$name: hidden 256, 4 layers, 4 heads, mini-batch 16, byte vocabulary"
  $ttt init --out "$out/$name" --layer $variant --hidden 256 --layers 4 --heads 4 --seed 1 --force >/dev/null
  $ttt info --model "$out/$name" | grep -E "parameters|state|learner"
  echo "-- prefill $prompt_tokens tokens, then greedy decode of $new_tokens tokens"
  $ttt generate --model "$out/$name" --prompt-ids "$ids" --max-new-tokens "$new_tokens" --greedy --ignore-eos >/dev/null
  echo "-- a text prompt (random weights: the continuation is noise, the speed is real)"
  $ttt generate --model "$out/$name" --prompt "Test-time training turns the hidden state into a model" \
    --max-new-tokens 32 --temperature 0.8 --top-p 0.9 --seed 3 --ignore-eos | head -c 300 | tr -cd '[:print:]\n'
  echo
done

ref=../shared/reference/ttt-lm-pytorch
if [ -d "$ref" ]; then
  echo
  echo "== parity with the official ttt-lm-pytorch (reference vectors)"
  py=python3
  python3 -c "import numpy" 2>/dev/null || py=/usr/bin/python3
  for c in "$ref"/*/; do
    c=${c%/}
    $ttt eval --model "$c" --input "$c/expected.safetensors" --out "$out/$(basename "$c").safetensors" >/dev/null
    printf '%-14s ' "$(basename "$c")"
    $py ../shared/reference/compare.py "$c/expected.safetensors" "$out/$(basename "$c").safetensors" | tail -1
  done
fi
echo
echo "checkpoints and outputs in $out/"
