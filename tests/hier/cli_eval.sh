#!/usr/bin/env bash
# ttt eval [--grads] on a simple-hierarchical-transformer reference case, checked with the
# reference's compare.py (logits, embeddings, the four losses and, with --grads, every gradient).
# usage: cli_eval.sh TTT_BINARY CASE_DIR COMPARE_PY PYTHON OUT_FILE
set -euo pipefail
ttt=$1 case=$2 compare=$3 python=$4 out=$5
"$ttt" eval --model "$case" --input "$case/expected.safetensors" --out "$out" --grads
"$python" "$compare" "$case/expected.safetensors" "$out" --grads
