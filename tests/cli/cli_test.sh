#!/usr/bin/env bash
# Tests of the `ttt` command-line tool, run by ctest (see CMakeLists.txt here).
#
#   cli_test.sh TTT_BINARY REFERENCE_DIR WORK_DIR CASE [ARG]
#
# CASE: eval_ref NAME   ttt eval on a reference case, checked by compare.py (needs python3 + numpy)
#       eval_grads NAME ttt eval --grads on a reference case, checked by compare.py --grads
#       eval_threads    --threads 1 and --threads 2 write the same bytes
#       usage_errors    wrong flags / bad values exit 2 with one line on stderr; --help exits 0
#       data_errors     bad files and tensors exit 1 with "ttt eval: ..." naming the file / tensor
#       info            ttt info prints the parameter count (counted independently from the file)
#       init_generate   ttt init + ttt generate: reproducible, right length, text prompts
#       train_resume    ttt train: N steps + --resume N more == 2N steps (log and weights, bit for bit);
#                       the output loads in generate / eval / eval-loss
#       train_errors    ttt train / eval-loss: bad data, short data, bad --resume, bad flags
#       custom_learner  (TTT_BINARY = ttt-custom, the tool built with the example learners) init,
#                       train, generate, info, eval --grads and eval-loss with a user's learner, as
#                       the TTT layer and as a hierarchical model's mixer (--arch hier --mixer);
#                       an unknown --layer or --mixer lists every learner
#       train_mpi MPIRUN  mpirun -np 2 ttt train == one process of --threads 2, bit for bit (TTT and
#                       hier); --resume after it (2 processes, or 1 of 2 threads) continues bit for bit;
#                       ranks given other flags stop at the start; a rank killed mid-run stops the
#                       other, the last checkpoint loads and --resume finishes the run
#       checkpoint_folders  ttt init --preset (the official standard configurations); a checkpoint
#                       split into shards with model.safetensors.index.json loads in info / eval /
#                       generate and gives the single file's outputs; pytorch_model.bin refused
#       train_hier      ttt train --arch hier (TTT-Linear at 2x): resume bit for bit, --config, the
#                       output loads in info / generate / eval / eval-loss, eval --grads checked by
#                       finite differences through the program (fd_grads.py), bad flags and configs
#       tokenize        ttt tokenize with the Llama-2 tokenizer (data/llama2, scripts/setup.sh
#                       --llama-tokenizer; skipped without it): "Hello world!" <-> its ids, round trips,
#                       bad files / ids / flags; ttt generate --tokenizer on a random 32,000-token model
#                       prints the text of the ids it generates; a vocab_size that does not match
# Exit status: 0 pass, 1 fail, 77 skipped (ctest SKIP_RETURN_CODE).
set -u

TTT=$1
REF=$2
WORK=$3
CASE=$4
ARG=${5:-}
CASES="$REF/ttt-lm-pytorch"
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
skip() {
  echo "SKIP: $*"
  exit 77
}

if [ ! -x "$TTT" ]; then
  echo "FAIL: $TTT is not built (build the ttt-cli target first)"
  exit 1
fi
rm -rf "$WORK"
mkdir -p "$WORK" || exit 1
cd "$WORK" || exit 1

# A python3 that has numpy: $TTT_PYTHON, python3 on PATH, or the system one.
find_python_numpy() {
  local p
  for p in "${TTT_PYTHON:-}" python3 /usr/bin/python3 /usr/local/bin/python3; do
    [ -n "$p" ] || continue
    command -v "$p" >/dev/null 2>&1 || continue
    if "$p" -c 'import numpy' >/dev/null 2>&1; then
      echo "$p"
      return 0
    fi
  done
  return 1
}
find_python() {
  local p
  for p in "${TTT_PYTHON:-}" python3 /usr/bin/python3; do
    [ -n "$p" ] || continue
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import json' >/dev/null 2>&1; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# run EXPECTED_RC ARGS...: runs ttt, stdout in out.txt, stderr in err.txt, checks the exit status.
run() {
  local want=$1
  shift
  "$TTT" "$@" >out.txt 2>err.txt
  local rc=$?
  if [ "$rc" != "$want" ]; then
    fail "ttt $* exited $rc, expected $want; stderr: $(head -c 400 err.txt)"
    return 1
  fi
  return 0
}

# The error of the last run is exactly one line starting with PREFIX and containing each WORD.
check_err() {
  local prefix=$1
  shift
  local lines
  lines=$(wc -l <err.txt)
  if [ "$lines" != 1 ]; then
    fail "expected one line on stderr, got $lines: $(cat err.txt)"
    return
  fi
  case "$(cat err.txt)" in
    "$prefix"*) ;;
    *) fail "stderr does not start with '$prefix': $(cat err.txt)" ;;
  esac
  local w
  for w in "$@"; do
    grep -qF -- "$w" err.txt || fail "stderr does not mention '$w': $(cat err.txt)"
  done
}

# le VALUE NBYTES: little-endian bytes of a (possibly negative) integer.
le() {
  local v=$1 n=$2 i hex
  for ((i = 0; i < n; i++)); do
    printf -v hex '%02x' $(((v >> (8 * i)) & 255))
    printf "\\x$hex"
  done
}

# st_write FILE "name|DTYPE|[shape]|v1 v2 ..." ...: a safetensors file of integer tensors.
st_write() {
  local file=$1
  shift
  local header="{" off=0 spec name dtype shape vals size n first=1
  for spec in "$@"; do
    IFS='|' read -r name dtype shape vals <<<"$spec"
    case $dtype in I64 | F64) size=8 ;; I32 | F32) size=4 ;; I16) size=2 ;; *) size=1 ;; esac
    n=$(echo $vals | wc -w)
    [ $first = 1 ] || header+=","
    first=0
    header+="\"$name\":{\"dtype\":\"$dtype\",\"shape\":$shape,\"data_offsets\":[$off,$((off + n * size))]}"
    off=$((off + n * size))
  done
  header+="}"
  while ((${#header} % 8)); do header+=" "; done
  {
    le ${#header} 8
    printf '%s' "$header"
    for spec in "$@"; do
      IFS='|' read -r name dtype shape vals <<<"$spec"
      case $dtype in I64 | F64) size=8 ;; I32 | F32) size=4 ;; I16) size=2 ;; *) size=1 ;; esac
      for v in $vals; do le "$v" $size; done
    done
  } >"$file"
}

need_reference() {
  [ -f "$CASES/$1/expected.safetensors" ] || skip "reference case $CASES/$1 is not there"
}

case_eval_ref() {
  local name=$ARG
  need_reference "$name"
  local py
  py=$(find_python_numpy) || skip "no python3 with numpy (Debian: python3-numpy) to run compare.py"
  run 0 eval --model "$CASES/$name" --input "$CASES/$name/expected.safetensors" --out out.safetensors --threads 2 ||
    return
  "$py" "$REF/compare.py" "$CASES/$name/expected.safetensors" out.safetensors || fail "compare.py: $name differs"
  # the output also carries the inputs
  "$py" - out.safetensors "$CASES/$name/expected.safetensors" <<'EOF' || fail "input_ids not copied"
import json, struct, sys
def header(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; return json.loads(b[8:8 + n]), b, n
h, b, n = header(sys.argv[1])
e, eb, en = header(sys.argv[2])
def raw(h, b, n, k):
    s, t = h[k]["data_offsets"]; return b[8 + n + s:8 + n + t]
assert h["input_ids"]["dtype"] == "I64" and h["input_ids"]["shape"] == e["input_ids"]["shape"]
assert raw(h, b, n, "input_ids") == raw(e, eb, en, "input_ids")
assert h["loss"]["shape"] == [] and h["loss"]["dtype"] == "F32"
EOF
}

case_eval_grads() {
  local name=$ARG
  need_reference "$name"
  local py
  py=$(find_python_numpy) || skip "no python3 with numpy (Debian: python3-numpy) to run compare.py"
  run 0 eval --model "$CASES/$name" --input "$CASES/$name/expected.safetensors" --out out.safetensors --grads ||
    return
  "$py" "$REF/compare.py" "$CASES/$name/expected.safetensors" out.safetensors --grads ||
    fail "compare.py --grads: $name differs"
  # every parameter of model.safetensors has its grad.{name}, with the parameter's shape
  "$py" - out.safetensors "$CASES/$name/model.safetensors" <<'EOF' || fail "grad.* tensors do not match the parameters"
import json, struct, sys
def header(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; return json.loads(b[8:8 + n])
h, m = header(sys.argv[1]), header(sys.argv[2])
params = [k for k in m if k != "__metadata__"]
assert params, "no parameters"
for k in params:
    assert h["grad." + k]["shape"] == m[k]["shape"], k
    assert h["grad." + k]["dtype"] == "F32", k
EOF
  # without --grads no gradient is written
  run 0 eval --model "$CASES/$name" --input "$CASES/$name/expected.safetensors" --out plain.safetensors || return
  if grep -q "grad\\." plain.safetensors; then fail "grad.* written without --grads"; fi
  return 0
}

case_eval_threads() {
  need_reference linear_decode
  local m="$CASES/linear_decode"
  run 0 eval --model "$m" --input "$m/expected.safetensors" --out t1.safetensors --threads 1 || return
  run 0 eval --model "$m" --input "$m/expected.safetensors" --out t2.safetensors --threads 2 || return
  run 0 eval --model "$m" --input "$m/expected.safetensors" --out t0.safetensors || return
  cmp -s t1.safetensors t2.safetensors || fail "--threads 1 and --threads 2 give different outputs"
  cmp -s t1.safetensors t0.safetensors || fail "--threads 1 and the default give different outputs"
}

case_usage_errors() {
  run 0 init --out model --vocab 97 || return
  local g=(generate --model model --prompt-ids 1,2,3)
  run 2 eval --bogus && check_err "ttt eval: " "--bogus"
  run 2 eval --model model --input in.st --out out.st --bogus && check_err "ttt eval: " "--bogus"
  run 2 && check_err "ttt: " "subcommand"
  run 2 frobnicate && check_err "ttt: " "frobnicate"
  run 2 eval --model model --input x && check_err "ttt eval: " "--out"
  run 2 eval --model model --input x --out y --threads -1 && check_err "ttt eval: " "--threads"
  run 2 eval --model model --input x --out y --threads two && check_err "ttt eval: " "--threads"
  run 2 eval --model model --input x --out y --device tpu && check_err "ttt eval: " "--device"
  run 2 eval --model model --input x --out y --device cuda --grads && check_err "ttt eval: " "--device cuda" "--grads"
  run 2 eval --model model --input x --out y --device cuda --dtype bf16 && check_err "ttt eval: " "--device cuda" "fp32"
  run 2 "${g[@]}" --top-p 2 && check_err "ttt generate: " "--top-p" "(0, 1]"
  run 2 "${g[@]}" --top-p 0 && check_err "ttt generate: " "--top-p"
  run 2 "${g[@]}" --top-p nan && check_err "ttt generate: " "--top-p"
  run 2 "${g[@]}" --temperature -1 && check_err "ttt generate: " "--temperature"
  run 2 "${g[@]}" --temperature inf && check_err "ttt generate: " "--temperature"
  run 2 "${g[@]}" --top-k -5 && check_err "ttt generate: " "--top-k"
  run 2 "${g[@]}" --max-new-tokens -1 && check_err "ttt generate: " "--max-new-tokens"
  run 2 "${g[@]}" --max-new-tokens lots && check_err "ttt generate: " "--max-new-tokens"
  run 2 "${g[@]}" --prompt hi && check_err "ttt generate: " "--prompt"
  run 2 generate --model model --prompt-ids 1,x && check_err "ttt generate: " "'x'"
  run 2 generate --model model --prompt-ids "" && check_err "ttt generate: " "--prompt-ids"
  run 2 generate --model model --prompt-ids 1,2, && check_err "ttt generate: " "--prompt-ids"
  run 2 generate --model model --prompt-ids 1,,2 && check_err "ttt generate: " "--prompt-ids"
  run 2 generate --model model && check_err "ttt generate: " "--prompt-ids"
  run 2 init --out m2 --layer transformer && check_err "ttt init: " "--layer"
  run 2 init --out m2 --hidden 64 --heads 3 && check_err "ttt init: " "num_attention_heads"
  run 2 init --out m2 --hidden abc && check_err "ttt init: " "--hidden"
  run 2 init --out m2 --intermediate -5 && check_err "ttt init: " "--intermediate" "must be >= 0, got -5"
  run 2 init --out m2 --vocab 0 && check_err "ttt init: " "--vocab" "must be > 0, got 0"
  run 2 init --out model && check_err "ttt init: " "--force"
  # bad flags are reported before the model is read
  run 2 generate --model /nonexistent --prompt-ids 1 --top-p 2 && check_err "ttt generate: " "--top-p"

  local h
  for h in "--help" "eval --help" "info --help" "generate --help" "init --help" "eval --bogus --help"; do
    # shellcheck disable=SC2086
    run 0 $h && { grep -q "Usage" out.txt || fail "ttt $h: no usage text"; }
  done
  run 0 --version && { grep -q "^ttt " out.txt || fail "ttt --version: $(cat out.txt)"; }
}

case_data_errors() {
  run 0 init --out model --vocab 97 --layers 1 || return
  local e=(eval --model model --out out.st)
  st_write ok.st "input_ids|I64|[2,3]|1 2 3 4 5 6"
  run 0 "${e[@]}" --input ok.st || return
  [ -s out.st ] || fail "eval wrote no output"
  rm -f out.st

  st_write oov.st "input_ids|I64|[2,3]|1 2 3 4 97 6"
  run 1 "${e[@]}" --input oov.st && check_err "ttt eval: " "oov.st" "'input_ids'" "97" "[1, 1]" "[0, 97)"
  st_write neg.st "input_ids|I32|[1,3]|1 -2 3"
  run 1 "${e[@]}" --input neg.st && check_err "ttt eval: " "'input_ids'" "-2"
  run 1 "${e[@]}" --input missing.st && check_err "ttt eval: " "missing.st"
  head -c 100 ok.st >trunc_header.st
  run 1 "${e[@]}" --input trunc_header.st && check_err "ttt eval: " "trunc_header.st" "truncated"
  head -c $(($(wc -c <ok.st) - 8)) ok.st >trunc_data.st
  run 1 "${e[@]}" --input trunc_data.st && check_err "ttt eval: " "trunc_data.st" "'input_ids'"
  printf 'abc' >tiny.st
  run 1 "${e[@]}" --input tiny.st && check_err "ttt eval: " "tiny.st"
  st_write noids.st "tokens|I64|[1,2]|1 2"
  run 1 "${e[@]}" --input noids.st && check_err "ttt eval: " "'input_ids'"
  st_write float.st "input_ids|F32|[1,2]|0 0"
  run 1 "${e[@]}" --input float.st && check_err "ttt eval: " "'input_ids'" "F32"
  st_write flat.st "input_ids|I64|[3]|1 2 3"
  run 1 "${e[@]}" --input flat.st && check_err "ttt eval: " "'input_ids'" "[B, L]"
  st_write empty.st "input_ids|I64|[1,0]|"
  run 1 "${e[@]}" --input empty.st && check_err "ttt eval: " "'input_ids'" "empty"
  st_write plen.st "input_ids|I64|[1,3]|1 2 3" "prompt_len|I64|[1]|3"
  run 1 "${e[@]}" --input plen.st && check_err "ttt eval: " "'prompt_len'"
  run 1 eval --model nomodel --input ok.st --out out.st && check_err "ttt eval: " "nomodel"
  [ ! -e out.st ] || fail "a failed eval left an output file"

  # a decode request on the init'd model works, and I32 ids are accepted
  st_write dec.st "input_ids|I32|[1,5]|1 2 3 4 5" "prompt_len|I64|[1]|2"
  run 0 "${e[@]}" --input dec.st

  # unknown learner in config.json
  mkdir -p badlayer && cp model/model.safetensors badlayer/ &&
    sed 's/"ttt_layer_type": "linear"/"ttt_layer_type": "rnn"/' model/config.json >badlayer/config.json
  run 1 info --model badlayer && check_err "ttt info: " "rnn" "linear, mlp"
  # weights that do not fit the config
  mkdir -p badweights && cp model/config.json badweights/ && cp ok.st badweights/model.safetensors
  run 1 info --model badweights && check_err "ttt info: " "model.safetensors"
}

case_info() {
  need_reference linear_tiny
  local py expected
  py=$(find_python) || skip "no python3 to count the parameters of model.safetensors"
  for name in linear_tiny mlp_tiny; do
    expected=$("$py" - "$CASES/$name/model.safetensors" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
n = 0
for k, v in h.items():
    if k != "__metadata__":
        c = 1
        for d in v["shape"]:
            c *= d
        n += c
print(n)
EOF
    )
    run 0 info --model "$CASES/$name" || continue
    grep -qx "parameters = $expected" out.txt || fail "ttt info $name: no 'parameters = $expected' in: $(cat out.txt)"
    grep -qx "learner = ${name%_tiny}" out.txt || fail "ttt info $name: learner line missing"
    grep -qx "vocab_size = 97" out.txt || fail "ttt info $name: config line missing"
    grep -q "^state_bytes_per_sequence = [1-9][0-9]*$" out.txt || fail "ttt info $name: state bytes missing"
  done
}

case_init_generate() {
  local layer
  for layer in linear mlp; do
    run 0 init --out "m_$layer" --layer "$layer" --seed 3 --mini-batch 4 || return
    [ -f "m_$layer/config.json" ] && [ -f "m_$layer/model.safetensors" ] || fail "init wrote no checkpoint"
    local g=(generate --model "m_$layer" --prompt-ids 5,6,7,8,9 --max-new-tokens 12 --ignore-eos)
    run 0 "${g[@]}" --greedy && cp out.txt greedy1.txt
    run 0 "${g[@]}" --greedy && cp out.txt greedy2.txt
    cmp -s greedy1.txt greedy2.txt || fail "$layer: two greedy runs differ"
    [ "$(wc -w <greedy1.txt)" = 12 ] || fail "$layer: expected 12 ids, got: $(cat greedy1.txt)"
    grep -qE '^[0-9]+( [0-9]+)*$' greedy1.txt || fail "$layer: output is not a list of ids: $(cat greedy1.txt)"
    grep -q "prefill" err.txt && grep -q "tokens/s" err.txt || fail "$layer: no timing line: $(cat err.txt)"
    run 0 "${g[@]}" --temperature 0 && { cmp -s out.txt greedy1.txt || fail "$layer: temperature 0 is not greedy"; }
    run 0 "${g[@]}" --top-k 1 && { cmp -s out.txt greedy1.txt || fail "$layer: top-k 1 is not greedy"; }
    run 0 "${g[@]}" --seed 17 --temperature 1.3 --top-k 50 --top-p 0.95 && cp out.txt s1.txt
    run 0 "${g[@]}" --seed 17 --temperature 1.3 --top-k 50 --top-p 0.95 && cp out.txt s2.txt
    cmp -s s1.txt s2.txt || fail "$layer: two sampling runs with the same seed differ"
    # text prompt through the byte tokenizer (the default vocab of init is 259)
    run 0 generate --model "m_$layer" --prompt "Hello, TTT" --max-new-tokens 5 --greedy
    # stop at an EOS token: the first greedy token
    local first
    first=$(cut -d' ' -f1 greedy1.txt)
    run 0 generate --model "m_$layer" --prompt-ids 5,6,7,8,9 --max-new-tokens 12 --greedy --eos "$first" &&
      { [ "$(cat out.txt)" = "$first" ] || fail "$layer: did not stop at --eos $first: $(cat out.txt)"; }
    run 1 generate --model "m_$layer" --prompt-ids 5,259 && check_err "ttt generate: " "259" "vocabulary"
    # several prompts and --num-samples decode together: line [i] is what that prompt alone gives
    # with seed --seed + i (greedy: the same line for every sample of a prompt)
    run 0 "${g[@]}" --greedy --prompt-ids 1,2 --prompt-ids 7 --num-samples 2 || return
    [ "$(wc -l <out.txt)" = 6 ] || fail "$layer: 3 prompts x 2 samples: expected 6 lines: $(cat out.txt)"
    [ "$(sed -n 1p out.txt)" = "[0] $(cat greedy1.txt)" ] && [ "$(sed -n 2p out.txt)" = "[1] $(cat greedy1.txt)" ] ||
      fail "$layer: batched greedy line differs from the single run: $(cat out.txt) vs $(cat greedy1.txt)"
    grep -q "batched decode: 6 sequences, 11 steps" err.txt || fail "$layer: no batched timing line: $(cat err.txt)"
    cp out.txt batch.txt
    run 0 generate --model "m_$layer" --prompt-ids 1,2 --max-new-tokens 12 --ignore-eos --greedy || return
    [ "$(sed -n 3p batch.txt)" = "[2] $(cat out.txt)" ] || fail "$layer: batched line [2] differs: $(cat batch.txt)"
    run 0 "${g[@]}" --seed 17 --temperature 1.3 --top-k 50 --top-p 0.95 --num-samples 3 || return
    [ "$(sed -n 1p out.txt)" = "[0] $(cat s1.txt)" ] || fail "$layer: sample [0] differs from seed 17 alone"
    cp out.txt samples.txt
    run 0 "${g[@]}" --seed 19 --temperature 1.3 --top-k 50 --top-p 0.95 || return
    [ "$(sed -n 3p samples.txt)" = "[2] $(cat out.txt)" ] || fail "$layer: sample [2] differs from seed 19 alone"
    run 2 "${g[@]}" --num-samples 0 && check_err "ttt generate: " "--num-samples"
    # --dtype bf16: the weights in bf16; a single and a batched run, and the batched line [0] is
    # the single run's (the same sums per row: the tile kernels take each row on its own)
    run 0 "${g[@]}" --greedy --dtype bf16 || return
    [ "$(wc -w <out.txt)" = 12 ] || fail "$layer: --dtype bf16: expected 12 ids, got: $(cat out.txt)"
    grep -q "^weights: bf16 (" err.txt || fail "$layer: --dtype bf16 does not say so: $(cat err.txt)"
    run 2 "${g[@]}" --dtype fp16 && check_err "ttt generate: " "--dtype" "fp16" "fp32, bf16"
    # --bf16-activations: with --dtype bf16 only, and only where the CPU has AVX512_BF16
    run 2 "${g[@]}" --greedy --bf16-activations && check_err "ttt generate: " "--bf16-activations" "--dtype bf16"
    if grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null; then
      run 0 "${g[@]}" --greedy --dtype bf16 --bf16-activations || return
      grep -q "^weights: bf16 (avx512-bf16 kernel)" err.txt || fail "$layer: --bf16-activations does not say so: $(cat err.txt)"
    else
      run 2 "${g[@]}" --greedy --dtype bf16 --bf16-activations && check_err "ttt generate: " "--bf16-activations" "AVX512_BF16"
    fi
    run 2 generate --model "m_$layer" --prompt hi --prompt "" && check_err "ttt generate: " "--prompt: prompt 2 is empty"
  done
  run 0 init --out small --vocab 97 || return
  run 1 generate --model small --prompt "hello" &&
    check_err "ttt generate: " "vocab_size 97 is too small for the byte-level tokenizer (needs >= 256); use --prompt-ids"
  run 0 init --out small --vocab 97 --force --layer mlp --seed 1
  run 0 info --model small && { grep -qx "learner = mlp" out.txt || fail "init --force did not overwrite"; }
}

# A small text corpus: two documents in a folder (one nested).
make_corpus() {
  mkdir -p corpus/sub
  local i
  for i in $(seq 1 40); do echo "line $i: the quick brown fox jumps over the lazy dog $((i * 7 % 11))"; done >corpus/a.txt
  for i in $(seq 1 30); do echo "second document, row $i"; done >corpus/sub/b.txt
}

case_train_resume() {
  make_corpus
  local t=(train --data corpus --hidden 16 --layers 2 --heads 2 --mini-batch 8 --seq-len 32 --batch 2 --steps 8
    --lr 3e-3 --warmup 2 --accum 2 --val-every 4 --seed 5)
  run 0 "${t[@]}" --out full || return
  grep -q "^step 8/8 " err.txt || fail "no progress line for step 8 on stderr: $(cat err.txt)"
  grep -q "tok/s" err.txt || fail "no tokens/s on stderr"
  local f
  for f in config.json model.safetensors optimizer.safetensors trainer.json log.csv; do
    [ -f "full/$f" ] || fail "train did not write $f"
  done
  [ "$(head -1 full/log.csv)" = "step,lr,train_loss,val_loss,tokens_per_s,elapsed_s" ] || fail "log.csv header: $(head -1 full/log.csv)"
  [ "$(wc -l <full/log.csv)" = 9 ] || fail "log.csv: expected 8 rows: $(cat full/log.csv)"
  run 0 "${t[@]}" --out part --stop-after 4 --quiet || return
  [ -s err.txt ] && fail "--quiet still wrote to stderr: $(cat err.txt)"
  grep -q '"step": 4' part/trainer.json || fail "interrupted run: trainer.json is not at step 4: $(cat part/trainer.json)"
  run 0 "${t[@]}" --out part --resume --quiet || return
  cmp -s full/model.safetensors part/model.safetensors || fail "resumed run's weights differ from the uninterrupted run's"
  cmp -s full/optimizer.safetensors part/optimizer.safetensors || fail "resumed run's optimizer state differs"
  diff <(cut -d, -f1-4 full/log.csv) <(cut -d, -f1-4 part/log.csv) >/dev/null ||
    fail "resumed run's losses differ: $(diff <(cut -d, -f1-4 full/log.csv) <(cut -d, -f1-4 part/log.csv))"
  # the trained model is a checkpoint like any other
  run 0 generate --model part --prompt "the quick" --max-new-tokens 8 --greedy
  run 0 info --model part && { grep -qx "vocab_size = 259" out.txt || fail "info: vocab_size"; }
  st_write in.st "input_ids|I64|[1,4]|116 104 101 32"
  run 0 eval --model part --input in.st --out evalout.st
  run 0 eval-loss --model part --data corpus --seq-len 16 --out pos.csv || return
  grep -qE '^loss = [0-9.]+$' out.txt || fail "eval-loss: no 'loss = X' line: $(cat out.txt)"
  [ "$(head -1 pos.csv)" = "position,loss" ] || fail "eval-loss CSV header: $(head -1 pos.csv)"
  [ "$(wc -l <pos.csv)" = 17 ] || fail "eval-loss CSV: expected 16 positions, got $(($(wc -l <pos.csv) - 1))"
  # bf16 weights: the loss within 2% of fp32's; --grads needs fp32
  local l32 l16
  l32=$(sed -n 's/^loss = //p' out.txt)
  run 0 eval-loss --model part --data corpus --seq-len 16 --dtype bf16 || return
  l16=$(sed -n 's/^loss = //p' out.txt)
  awk -v a="$l32" -v b="$l16" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 0.02 * a) }' ||
    fail "eval-loss --dtype bf16: $l16 vs fp32 $l32"
  run 0 eval --model part --input in.st --out evalbf.st --dtype bf16
  run 2 eval --model part --input in.st --out evalbf.st --dtype bf16 --grads &&
    check_err "ttt eval: " "--grads" "fp32"
  # the MLP learner trains and loads too
  run 0 train --data corpus/a.txt --layer mlp --hidden 16 --heads 2 --layers 1 --seq-len 16 --batch 2 --steps 3 --out mlp --quiet &&
    run 0 generate --model mlp --prompt-ids 1,2,3 --max-new-tokens 3 --greedy
}

case_train_errors() {
  make_corpus
  local m=(--hidden 16 --layers 1 --heads 2 --seq-len 16 --batch 2 --steps 2 --quiet)
  : >empty.txt
  run 1 train --data empty.txt --out o1 "${m[@]}" && check_err "ttt train: " "empty.txt" "no data"
  mkdir -p emptydir
  run 1 train --data emptydir --out o1 "${m[@]}" && check_err "ttt train: " "emptydir" "no data"
  run 1 train --data nope.txt --out o1 "${m[@]}" && check_err "ttt train: " "nope.txt" "no such file"
  printf 'short text' >short.txt
  run 1 train --data short.txt --out o1 "${m[@]}" && check_err "ttt train: " "short.txt" "too short for seq_len 16"
  run 1 train --data corpus --out o1 "${m[@]}" --resume && check_err "ttt train: " "o1" "no such folder"
  run 0 train --data corpus --out o2 "${m[@]}" || return
  run 1 train --data corpus --out o2 "${m[@]}" && check_err "ttt train: " "o2" "holds a training run already"
  run 1 train --data corpus --out o2 --hidden 32 --layers 1 --heads 2 --seq-len 16 --batch 2 --steps 2 --resume &&
    check_err "ttt train: " "config.json" "differs"
  run 1 train --data corpus/a.txt --out o2 "${m[@]}" --resume && check_err "ttt train: " "data differs"
  mkdir -p plain
  run 1 train --data corpus --out plain "${m[@]}" --resume && check_err "ttt train: " "trainer.json"
  : >afile
  run 1 train --data corpus --out afile "${m[@]}" && check_err "ttt train: " "afile"
  run 2 train --data corpus --out o3 "${m[@]}" --layer foo && check_err "ttt train: " "--layer"
  run 2 train --data corpus --out o3 "${m[@]}" --steps 0 && check_err "ttt train: " "--steps"
  run 2 train --data corpus --out o3 "${m[@]}" --lr nan && check_err "ttt train: " "--lr"
  run 2 train --data corpus --out o3 "${m[@]}" --lr -1 && check_err "ttt train: " "--lr" "must be > 0, got -1"
  run 2 train --data corpus --out o3 "${m[@]}" --weight-decay -0.5 && check_err "ttt train: " "--weight-decay" "must be >= 0, got -0.5"
  run 2 train --data corpus --out o3 "${m[@]}" --val-windows 0 && check_err "ttt train: " "--val-windows" "must be > 0, got 0"
  run 2 train --out o3 "${m[@]}" && check_err "ttt train: " "--data"
  run 2 train --data corpus --out o3 --hidden 15 --heads 2 --steps 2 && check_err "ttt train: " "hidden_size"
  run 2 train --data corpus --out o3 "${m[@]}" --bogus && check_err "ttt train: " "--bogus"
  [ -e o3 ] && fail "a refused command created its output folder"
  # divergence: resumed with an absurd learning rate, it stops and keeps the checkpoint of step 2
  local d=(--hidden 16 --layers 1 --heads 2 --seq-len 16 --batch 2 --steps 5 --quiet)
  run 0 train --data corpus --out div "${d[@]}" --stop-after 2 || return
  run 1 train --data corpus --out div "${d[@]}" --resume --lr 1e30 &&
    check_err "ttt train: " "training stopped" "last good checkpoint (step 2)"
  grep -q '"step": 2' div/trainer.json || fail "divergence changed the checkpoint: $(cat div/trainer.json)"
  run 0 generate --model div --prompt-ids 1,2 --max-new-tokens 2 --greedy
  run 1 eval-loss --model o2 --data short.txt --seq-len 16 && check_err "ttt eval-loss: " "short.txt" "too short"
  run 1 eval-loss --model nothere --data corpus --seq-len 8 && check_err "ttt eval-loss: " "nothere"
  run 1 eval-loss --model o2 --data empty.txt --seq-len 8 && check_err "ttt eval-loss: " "empty.txt" "no data"
  run 2 eval-loss --model o2 --data corpus && check_err "ttt eval-loss: " "--seq-len"
  run 0 init --out small --vocab 97 || return
  run 1 eval-loss --model small --data corpus --seq-len 8 && check_err "ttt eval-loss: " "vocab_size 97"
}

case_train_hier() {
  make_corpus
  local t=(train --arch hier --data corpus --hidden 16 --layers 2 --heads 2 --hierarchies 1,2 --window-sizes 8,none
    --mixer attention,ttt-linear --mini-batch 4 --seq-len 32 --batch 2 --steps 6 --lr 3e-3 --warmup 2 --accum 2
    --val-every 3 --seed 3)
  run 0 "${t[@]}" --out full || return
  grep -q "^step 6/6 " err.txt || fail "hier: no progress line for step 6: $(cat err.txt)"
  grep -q '"model_type": "simple-hierarchical-transformer"' full/config.json || fail "hier: config.json: $(cat full/config.json)"
  grep -q '"ttt-linear"' full/config.json || fail "hier: config.json has no ttt-linear mixer: $(cat full/config.json)"
  grep -q '"arch": "hier"' full/trainer.json || fail "hier: trainer.json does not record --arch"
  run 0 "${t[@]}" --out part --stop-after 3 --quiet || return
  run 0 "${t[@]}" --out part --resume --quiet || return
  cmp -s full/model.safetensors part/model.safetensors || fail "hier: resumed run's weights differ from the uninterrupted run's"
  cmp -s full/optimizer.safetensors part/optimizer.safetensors || fail "hier: resumed run's optimizer state differs"
  diff <(cut -d, -f1-4 full/log.csv) <(cut -d, -f1-4 part/log.csv) >/dev/null || fail "hier: resumed run's losses differ"
  # the same model from a --config file (flags given on top override its keys)
  printf '{"num_tokens": 259, "dim": 16, "depth": 2, "heads": 2, "dim_head": 8, "hierarchies": [1, 2],\n "window_sizes": [8, null], "mixer": ["attention", "ttt-linear"], "ttt_mini_batch_size": 4}\n' >h.json
  run 0 train --arch hier --config h.json --data corpus --seq-len 32 --batch 2 --steps 6 --lr 3e-3 --warmup 2 --accum 2 \
    --val-every 3 --seed 3 --out fromjson --quiet || return
  cmp -s full/model.safetensors fromjson/model.safetensors || fail "hier: --config run differs from the flags run"
  run 0 info --model full && { grep -q "^parameters = [0-9]" out.txt || fail "hier info: $(cat out.txt)"; }
  run 0 generate --model full --prompt "the quick" --max-new-tokens 8 --greedy
  run 0 eval-loss --model full --data corpus --seq-len 16 --out pos.csv || return
  grep -qE '^loss = [0-9.]+$' out.txt || fail "hier eval-loss: $(cat out.txt)"
  [ "$(wc -l <pos.csv)" = 17 ] || fail "hier eval-loss CSV: expected 16 positions"
  run 2 eval-loss --model full --data corpus --seq-len 64 && check_err "ttt eval-loss: " "--seq-len 64" "seq_len 32"
  # eval --grads on a checkpoint with a TTT mixer, checked by finite differences of `ttt eval`
  st_write in.st "input_ids|I64|[2,12]|116 104 101 32 113 117 105 99 107 32 98 114 108 105 110 101 32 49 58 32 116 104 101 32"
  local py
  if py=$(find_python_numpy); then
    TTT_COMPARE_DIR="$REF" "$py" "$SRC/fd_grads.py" "$TTT" full in.st fd --prefix layers.0.1.attn.ttt. \
      --prefix layers.1.1.attn.ttt. --prefix layers.0.0.attn.to_qkv --prefix token_emb --per-tensor 1 >fd.txt 2>&1 ||
      fail "hier eval --grads vs finite differences: $(grep -v '^ok' fd.txt | head -20)"
    tail -1 fd.txt
  else
    echo "note: no python3 with numpy; the finite-difference check of eval --grads is skipped"
  fi
  # errors
  local m=(--arch hier --data corpus --hidden 16 --layers 1 --heads 2 --seq-len 16 --batch 2 --steps 2 --quiet)
  run 2 train "${m[@]}" --out e1 --layer mlp && check_err "ttt train: " "--layer does not apply to --arch hier"
  run 2 train --data corpus --out e1 --hierarchies 1,2 --steps 2 --quiet && check_err "ttt train: " "--hierarchies does not apply to --arch ttt"
  run 2 train "${m[@]}" --out e1 --hierarchies 1,3 && check_err "ttt train: " "hierarchies" "powers of two"
  run 2 train "${m[@]}" --out e1 --hierarchies 1,2 --window-sizes 8,huge && check_err "ttt train: " "--window-sizes" "huge"
  run 2 train "${m[@]}" --out e1 --hierarchies 1,2 --mixer attention,lstm && check_err "ttt train: " "lstm" "ttt-linear"
  run 2 train "${m[@]}" --out e1 --hierarchies 1,2 --strides 1,4 && check_err "ttt train: " "hierarchical_stride"
  run 2 train "${m[@]}" --out e1 --hierarchies 1,2 --predict-hierarchy 4 && check_err "ttt train: " "predict_hierarchy 4"
  # dim_head defaults to the file's dim / heads (not to --hidden / --heads)
  printf '{"num_tokens": 259, "dim": 32, "depth": 1, "heads": 2}' >dh.json
  run 0 train --arch hier --config dh.json --data corpus --seq-len 16 --batch 2 --steps 1 --out dh --quiet || return
  grep -q '"dim_head": 16' dh/config.json || fail "hier: dim_head not dim / heads of the --config file: $(cat dh/config.json)"
  printf '{"num_tokens": 100, "dim": 16, "depth": 1}' >small.json
  run 1 train "${m[@]}" --out e1 --config small.json && check_err "ttt train: " "small.json" "num_tokens 100"
  printf '{"num_tokens": 259, "dim": 16, "depth": 1, "seq_len": 8}' >short.json
  run 1 train "${m[@]}" --out e1 --config short.json && check_err "ttt train: " "short.json" "seq_len 8"
  printf '{"num_tokens": 259, "dim": 16, "depth": 1, "colour": 3}' >unknown.json
  run 1 train "${m[@]}" --out e1 --config unknown.json && check_err "ttt train: " "unknown.json" "colour"
  printf '{"num_tokens": 259,' >broken.json
  run 1 train "${m[@]}" --out e1 --config broken.json && check_err "ttt train: " "broken.json" "not valid JSON"
  run 1 train "${m[@]}" --out e1 --config nothere.json && check_err "ttt train: " "nothere.json"
  [ -e e1 ] && fail "a refused command created its output folder"
  run 0 train "${m[@]}" --out e2 || return
  run 1 train "${m[@]}" --out e2 --hierarchies 1,2 --resume && check_err "ttt train: " "config.json" "differs" "hierarchies"
  run 0 train "${m[@]}" --out e3 --threads 2 --hierarchies 1,4 --strides 1,2 --mixer attention,ttt-mlp ||
    fail "hier: --threads 2 with a strided TTT-MLP hierarchy"
  # a TTT mixer names its inner optimizer; the decay gate's parameters are in the checkpoint
  run 0 train "${m[@]}" --out e4 --hierarchies 1,2 --mixer attention,ttt-linear-decay || return
  grep -q '"ttt-linear-decay"' e4/config.json || fail "hier: config.json has no ttt-linear-decay mixer"
  grep -q 'learnable_ttt_decay_weight' e4/model.safetensors || fail "hier: no decay gate in the checkpoint"
  run 2 train "${m[@]}" --out e1 --hierarchies 1,2 --mixer attention,ttt-linear-lion && check_err "ttt train: " "lion" "-momentum"
}

case_custom_learner() {
  make_corpus
  run 0 init --out bfl --layer bias_free_linear --hidden 16 --layers 1 --heads 2 --vocab 64 --seed 3 || return
  grep -q '"ttt_layer_type": "bias_free_linear"' bfl/config.json || fail "init: config.json does not name the learner"
  run 0 info --model bfl && { grep -q "bias_free_linear" out.txt || fail "info does not name the learner: $(cat out.txt)"; }
  # both example learners train (exact gradients derived from their maps) and load back
  local l
  for l in bias_free_linear relu_mlp; do
    run 0 train --data corpus/a.txt --layer $l --hidden 16 --heads 2 --layers 1 --seq-len 16 --batch 4 --steps 12 \
      --lr 1e-2 --out "t_$l" --quiet || return
    awk -F, 'NR == 2 { first = $3 } END { if (!($3 < first - 0.5)) exit 1 }' "t_$l/log.csv" ||
      fail "$l: the train loss did not fall by 0.5 in 12 steps: $(cat "t_$l/log.csv")"
    run 0 generate --model "t_$l" --prompt-ids 1,2,3 --max-new-tokens 4 --greedy
    run 0 eval-loss --model "t_$l" --data corpus --seq-len 16 || return
  done
  st_write in.st "input_ids|I64|[1,4]|1 5 9 2"
  run 0 eval --model bfl --input in.st --out g.st --grads || return
  run 2 init --out x --layer nope && check_err "ttt init: " "bias_free_linear" "relu_mlp" "linear"
  # the user's learner in the hierarchical model's TTT mixer slot: trains (resume bit for bit), loads in
  # info / generate / eval / eval-loss; an unknown mixer lists the user's learners among the valid ones
  local h=(train --arch hier --data corpus --hidden 16 --layers 1 --heads 2 --hierarchies 1,2 --window-sizes 8,none
    --mixer attention,ttt-relu_mlp-momentum --mini-batch 4 --seq-len 32 --batch 2 --steps 12 --lr 1e-2 --seed 3)
  run 0 "${h[@]}" --out hier --quiet || return
  grep -q '"ttt-relu_mlp-momentum"' hier/config.json || fail "hier: config.json has no ttt-relu_mlp-momentum mixer"
  awk -F, 'NR == 2 { first = $3 } END { if (!($3 < first - 0.5)) exit 1 }' hier/log.csv ||
    fail "hier relu_mlp: the train loss did not fall by 0.5 in 12 steps: $(cat hier/log.csv)"
  run 0 "${h[@]}" --out hier_part --stop-after 6 --quiet || return
  run 0 "${h[@]}" --out hier_part --resume --quiet || return
  cmp -s hier/model.safetensors hier_part/model.safetensors || fail "hier relu_mlp: resumed run's weights differ"
  run 0 info --model hier && { grep -q "^parameters = [0-9]" out.txt || fail "hier relu_mlp info: $(cat out.txt)"; }
  run 0 generate --model hier --prompt-ids 1,2,3 --max-new-tokens 4 --greedy
  run 2 generate --model hier --prompt-ids 1,2,3 --dtype bf16 && check_err "ttt generate: " "--dtype bf16" "hierarchical"
  run 0 eval-loss --model hier --data corpus --seq-len 16 || return
  st_write hin.st "input_ids|I64|[1,5]|1 5 9 2 7"
  run 0 eval --model hier --input hin.st --out hg.st --grads || return
  run 2 train --arch hier --data corpus --hidden 16 --layers 1 --heads 2 --hierarchies 1,2 --mixer attention,ttt-nope \
    --seq-len 32 --steps 1 --out hx && check_err "ttt train: " "mixer 'ttt-nope'" "ttt-relu_mlp" "ttt-bias_free_linear"
}

# The inner update from the command line: learners and optimizers by name, their keys in
# config.json only when not the defaults, training and the subcommands on such checkpoints, and
# one-line errors for bad names, values out of range and contradicting flags.
case_inner_update() {
  make_corpus
  run 0 init --out plain --hidden 16 --layers 1 --heads 2 || return
  grep -q 'ttt_inner_optimizer' plain/config.json && fail "init: a default update wrote ttt_inner_optimizer"
  run 0 init --out sw --layer swiglu --swiglu-hidden 12 --inner-optimizer muon --ns-steps 3 --query-order before \
    --hidden 16 --layers 1 --heads 2 || return
  grep -q '"ttt_inner_optimizer": "muon"' sw/config.json || fail "init: no ttt_inner_optimizer: $(cat sw/config.json)"
  grep -q '"ttt_hidden_size": 12' sw/config.json || fail "init: no ttt_hidden_size: $(cat sw/config.json)"
  grep -q '"ttt_ns_steps": 3' sw/config.json || fail "init: no ttt_ns_steps"
  run 0 info --model sw && { grep -q "swiglu" out.txt || fail "info does not name the learner: $(cat out.txt)"; }
  local spec
  for spec in "linear momentum" "swiglu muon" "mlp decay"; do
    set -- $spec
    run 0 train --data corpus/a.txt --layer "$1" --inner-optimizer "$2" --hidden 16 --heads 2 --layers 1 --seq-len 16 \
      --batch 4 --steps 12 --mini-batch 4 --lr 1e-2 --out "t_$1_$2" --quiet || return
    awk -F, 'NR == 2 { first = $3 } END { if (!($3 < first - 0.5)) exit 1 }' "t_$1_$2/log.csv" ||
      fail "$1 / $2: the train loss did not fall by 0.5 in 12 steps: $(cat "t_$1_$2/log.csv")"
    run 0 generate --model "t_$1_$2" --prompt-ids 1,2,3 --max-new-tokens 4 --greedy || return
  done
  st_write in.st "input_ids|I64|[1,4]|1 5 9 2"
  run 0 eval --model t_linear_momentum --input in.st --out g.st --grads || return
  local m=(--out bad --hidden 16 --layers 1 --heads 2)
  run 2 init "${m[@]}" --inner-optimizer lion && check_err "ttt init: " "--inner-optimizer" "lion"
  run 2 init "${m[@]}" --inner-optimizer momentum --inner-beta 1 && check_err "ttt init: " "--inner-beta"
  run 2 init "${m[@]}" --inner-optimizer muon --ns-steps 0 && check_err "ttt init: " "--ns-steps"
  run 2 init "${m[@]}" --inner-beta 0.5 && check_err "ttt init: " "ttt_inner_beta is set" "'gd'"
  run 2 init "${m[@]}" --ns-steps 2 --inner-optimizer momentum && check_err "ttt init: " "ttt_ns_steps is set" "muon"
  run 2 init "${m[@]}" --swiglu-hidden 8 && check_err "ttt init: " "ttt_hidden_size" "'linear'"
  run 2 init "${m[@]}" --query-order during && check_err "ttt init: " "--query-order"
  run 2 init "${m[@]}" --mini-batch 0 && check_err "ttt init: " "mini_batch_size"
  run 2 train --arch hier --data corpus --out bad --inner-optimizer momentum && check_err "ttt train: " "--inner-optimizer"
  [ -e bad ] && fail "a refused command created its output folder"
  # a checkpoint naming an optimizer this program does not know
  sed 's/"ttt_inner_optimizer": "muon"/"ttt_inner_optimizer": "lion"/' sw/config.json >sw/c && mv sw/c sw/config.json
  run 1 info --model sw && check_err "ttt info: " "config.json" "ttt_inner_optimizer 'lion'" "gd, momentum, decay, muon, adam"
}

# mpi EXPECTED_RC NP ARGS...: mpirun -np NP ttt ARGS..., stdout in out.txt, stderr in err.txt.
mpi() {
  local want=$1 np=$2
  shift 2
  timeout 240 "$MPIRUN" -np "$np" "$TTT" "$@" >out.txt 2>err.txt
  local rc=$?
  if [ "$rc" != "$want" ]; then
    fail "mpirun -np $np ttt $* exited $rc, expected $want; stderr: $(head -c 600 err.txt)"
    return 1
  fi
  return 0
}

case_train_mpi() {
  MPIRUN=$ARG
  { [ -n "$MPIRUN" ] && command -v "$MPIRUN" >/dev/null; } || skip "no mpirun (MPI not found at configure time)"
  # Open MPI refuses root without these (CI containers run as root); CI machines have 2 cores
  [ "$(id -u)" = 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1
  make_corpus
  local b=(train --data corpus --hidden 16 --layers 2 --heads 2 --mini-batch 8 --seq-len 32 --batch 3 --warmup 2
    --val-every 3 --seed 5 --quiet)
  local t=("${b[@]}" --lr 3e-3 --steps 6 --save-every 2)
  run 0 "${t[@]}" --threads 2 --out one || return
  mpi 0 2 "${t[@]}" --out two || return
  [ "$(grep -c '^trained steps 0..6 of 6' out.txt)" = 1 ] || fail "expected one report (rank 0's): $(cat out.txt)"
  grep -q "MPI, 2 processes" out.txt || fail "the report does not say the processes: $(cat out.txt)"
  cmp -s one/model.safetensors two/model.safetensors || fail "2 processes: weights differ from 1 process of 2 threads"
  cmp -s one/optimizer.safetensors two/optimizer.safetensors || fail "2 processes: optimizer state differs"
  diff <(cut -d, -f1-3 one/log.csv) <(cut -d, -f1-3 two/log.csv) >/dev/null || fail "2 processes: train losses differ"
  grep -q '"processes": 2' two/trainer.json || fail "trainer.json does not record 2 processes"
  # resume after 2 processes: with 2, and with 1 process of 2 threads (the same shares)
  mpi 0 2 "${t[@]}" --out part --stop-after 4 && mpi 0 2 "${t[@]}" --out part --resume &&
    { cmp -s two/model.safetensors part/model.safetensors || fail "2 processes, --resume with 2: weights differ"; }
  mpi 0 2 "${t[@]}" --out part1 --stop-after 4 && run 0 "${t[@]}" --threads 2 --out part1 --resume &&
    { cmp -s two/model.safetensors part1/model.safetensors || fail "2 processes, --resume with 1: weights differ"; }
  # the hierarchical model trains the same way
  local h=(train --arch hier --data corpus --hidden 16 --layers 1 --heads 2 --hierarchies 1,2 --window-sizes none,none
    --mixer attention,ttt-linear --mini-batch 4 --seq-len 16 --batch 2 --steps 3 --seed 2 --quiet)
  run 0 "${h[@]}" --threads 2 --out hone && mpi 0 2 "${h[@]}" --out htwo &&
    { cmp -s hone/model.safetensors htwo/model.safetensors || fail "--arch hier, 2 processes: weights differ"; }
  # ranks started with other flags (one command per rank)
  timeout 120 "$MPIRUN" -np 1 "$TTT" "${b[@]}" --steps 6 --lr 3e-3 --out diff : -np 1 "$TTT" "${b[@]}" --steps 6 --lr 1e-3 \
    --out diff >out.txt 2>err.txt
  local rc=$?
  { [ $rc != 0 ] && [ $rc != 124 ]; } || fail "ranks with different --lr: exit $rc, expected an error"
  grep -q "rank 1 of 2 has other training options than rank 0" err.txt || fail "different --lr: $(head -c 600 err.txt)"
  [ -e diff/trainer.json ] && fail "different --lr: a checkpoint was written"
  # a rank killed mid-run: the other stops (no hang), the last checkpoint loads, --resume goes on
  local k=("${b[@]}" --lr 3e-3 --steps 100000 --save-every 1 --out killed)
  timeout 240 "$MPIRUN" -np 2 "$TTT" "${k[@]}" >kout.txt 2>kerr.txt &
  local job=$! i
  for i in $(seq 1 300); do
    grep -qE '"step": ([3-9]|[1-9][0-9]+),' killed/trainer.json 2>/dev/null && break
    sleep 0.1
  done
  local launcher victim
  launcher=$(pgrep -P $job | head -1)
  victim=$(pgrep -P "${launcher:-0}" | tail -1)
  if [ -z "$victim" ]; then
    fail "killed run: no rank process found under mpirun"
    kill $job
    wait $job
    return
  fi
  kill -9 "$victim"
  wait $job
  rc=$?
  [ $rc = 124 ] && fail "after a rank was killed the other did not stop within 240 s"
  [ $rc = 0 ] && fail "a killed rank: mpirun exited 0"
  run 0 info --model killed || fail "the checkpoint left by the killed run does not load"
  local at
  at=$(grep -oE '"step": [0-9]+' killed/trainer.json | grep -oE '[0-9]+')
  [ "${at:-0}" -ge 3 ] || fail "killed run: trainer.json at step ${at:-?}"
  mpi 0 2 "${k[@]}" --stop-after $((at + 2)) --resume || return
  grep -q "trained steps $at..$((at + 2)) of 100000" out.txt || fail "--resume after the kill: $(cat out.txt)"
}

# ttt tokenize and generate --tokenizer with the Llama-2 tokenizer (Mistral's too where it is there).
case_tokenize() {
  local data=${TTT_DATA_DIR:-$SRC/../../data}
  local tok=$data/llama2/tokenizer.json
  [ -f "$tok" ] || skip "no $tok (scripts/setup.sh --llama-tokenizer writes it)"
  run 0 tokenize --tokenizer "$tok" --text "Hello world!" &&
    { [ "$(cat out.txt)" = "1,15043,3186,29991" ] || fail "Hello world!: $(cat out.txt)"; }
  run 0 tokenize --tokenizer "$tok" --text "Hello world!" --no-bos &&
    { [ "$(cat out.txt)" = "15043,3186,29991" ] || fail "--no-bos: $(cat out.txt)"; }
  run 0 tokenize --tokenizer "$tok" --ids 1,15043,3186,29991 &&
    { [ "$(cat out.txt)" = "Hello world!" ] || fail "--ids: $(cat out.txt)"; }
  run 0 tokenize --tokenizer "$tok" --ids "1, 15043,3186,29991,2" --show-specials &&
    { [ "$(cat out.txt)" = "<s> Hello world!</s>" ] || fail "--show-specials: $(cat out.txt)"; }
  local text=$'Привет, мир! 🦙 日本語\n  two  spaces\tand a tab' ids
  run 0 tokenize --tokenizer "$tok" --text "$text" && ids=$(cat out.txt)
  run 0 tokenize --tokenizer "$tok" --ids "$ids" && { [ "$(cat out.txt)" = "$text" ] || fail "round trip: $(cat out.txt)"; }
  # Mistral's ids of "Hello world!", as transformers.js gave them (tests/io/data/mistral_expected.json)
  local mistral=$data/mistral/tokenizer.json
  if [ -f "$mistral" ]; then
    local want
    want=$(grep -F '{"text":"Hello world!","ids":[' "$SRC/../io/data/mistral_expected.json" | sed -E 's/.*"ids":\[([0-9,]*)\].*/\1/')
    [ -n "$want" ] || fail "no \"Hello world!\" in mistral_expected.json"
    run 0 tokenize --tokenizer "$mistral" --text "Hello world!" &&
      { [ "$(cat out.txt)" = "1,$want" ] || fail "Mistral: Hello world!: $(cat out.txt), expected 1,$want"; }
  fi

  # bad files and ids: exit 1, naming the file / id; bad flags: exit 2
  run 1 tokenize --tokenizer nowhere.json --text hi && check_err "ttt tokenize: " "nowhere.json" "cannot open"
  printf '{"model": ' >bad.json
  run 1 tokenize --tokenizer bad.json --text hi && check_err "ttt tokenize: " "bad.json" "not valid JSON"
  printf '{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}' >unigram.json
  run 1 tokenize --tokenizer unigram.json --text hi && check_err "ttt tokenize: " "unigram.json" 'model.type is "Unigram"' 'expected "BPE"'
  printf '{"version": "1.0"}' >nomodel.json
  run 1 tokenize --tokenizer nomodel.json --text hi && check_err "ttt tokenize: " "nomodel.json" "no 'model' section"
  run 1 tokenize --tokenizer "$tok" --ids 1,32000 &&
    check_err "ttt tokenize: " "token id 32000 at position 1" "outside the vocabulary [0, 32000)" "$tok"
  run 2 tokenize --tokenizer "$tok" --ids 1,x && check_err "ttt tokenize: " "--ids: 'x' is not an integer"
  run 2 tokenize --tokenizer "$tok" && check_err "ttt tokenize: " "--text" "--ids"
  run 2 tokenize --tokenizer "$tok" --text a --ids 1 && check_err "ttt tokenize: " "excludes"
  run 2 tokenize --tokenizer "$tok" --ids 1 --no-bos && check_err "ttt tokenize: " "excludes"
  run 2 tokenize --text a && check_err "ttt tokenize: " "--tokenizer"

  # generate --tokenizer: the prompt's ids are tokenize's, and the text printed is the decoded text
  # of the generated ids (those that --prompt-ids gives), after the prompt's
  run 0 init --out m32k --vocab 32000 --hidden 32 --layers 1 --heads 2 --seed 5 || return
  local prompt
  run 0 tokenize --tokenizer "$tok" --text "Hello world" && prompt=$(cat out.txt)
  run 0 generate --model m32k --prompt-ids "$prompt" --max-new-tokens 12 --greedy --ignore-eos || return
  local gen
  gen=$(tr ' ' ',' <out.txt)
  [ "$(echo "$gen" | tr ',' '\n' | wc -l)" = 12 ] || fail "expected 12 ids, got: $gen"
  run 0 generate --model m32k --tokenizer "$tok" --prompt "Hello world" --max-new-tokens 12 --greedy --ignore-eos &&
    cp out.txt text.txt
  local n
  n=$(echo "$prompt" | tr ',' '\n' | wc -l)
  grep -q "prefill: $n tokens" err.txt || fail "a prompt of $n tokens ($prompt) expected: $(cat err.txt)"
  [ -n "$(tr -d ' \n' <text.txt)" ] || fail "generate --tokenizer printed no text"
  run 0 tokenize --tokenizer "$tok" --ids "$prompt" --show-specials && cp out.txt pre.txt
  run 0 tokenize --tokenizer "$tok" --ids "$prompt,$gen" --show-specials && cp out.txt full.txt
  { head -c -1 pre.txt && cat text.txt; } | cmp -s - full.txt ||
    fail "generate --tokenizer printed '$(cat text.txt)'; decoding the ids gives '$(cat full.txt)' after '$(cat pre.txt)'"
  run 0 generate --model m32k --tokenizer "$tok" --prompt-ids "$prompt" --max-new-tokens 12 --greedy --ignore-eos &&
    { cmp -s out.txt text.txt || fail "--prompt-ids with --tokenizer: $(cat out.txt), expected $(cat text.txt)"; }
  run 0 init --out m259 || return
  run 1 generate --model m259 --tokenizer "$tok" --prompt hi &&
    check_err "ttt generate: " "m259" "vocab_size 259 does not match the 32000 tokens" "$tok"
  run 1 generate --model m32k --tokenizer bad.json --prompt hi && check_err "ttt generate: " "bad.json" "not valid JSON"
}

case_checkpoint_folders() {
  local py
  py=$(find_python) || skip "no python3 (splits a checkpoint into shards)"
  run 0 init --preset 125m --out p125 --seed 1 || return
  run 0 info --model p125 || return
  local kv
  for kv in "hidden_size = 768" "intermediate_size = 2048" "num_hidden_layers = 12" "num_attention_heads = 12" \
    "vocab_size = 32000" "bos_token_id = 1" "eos_token_id = 2"; do
    grep -qx "$kv" out.txt || fail "init --preset 125m: info lacks '$kv'"
  done
  rm -rf p125
  run 2 init --preset 2b --out p2 && check_err "ttt init: " "--preset" "2b"
  run 2 init --preset 125m --hidden 64 --out p2 && check_err "ttt init: " "--hidden"
  # one checkpoint, then the same weights as two shards + index (and a generation_config.json)
  run 0 init --out one --hidden 16 --layers 2 --heads 2 --seed 3 || return
  mkdir -p sharded && cp one/config.json sharded/ && echo '{"do_sample": false}' >sharded/generation_config.json
  "$py" - one/model.safetensors sharded <<'PY' || { fail "could not split the checkpoint"; return; }
import json, struct, sys
src, out = sys.argv[1], sys.argv[2]
b = open(src, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
head = json.loads(b[8:8 + n]); data = b[8 + n:]
names = sorted(k for k in head if k != "__metadata__")
parts = [names[: len(names) // 2], names[len(names) // 2 :]]
weight_map = {}
for i, part in enumerate(parts):
    fname = "model-%05d-of-%05d.safetensors" % (i + 1, len(parts))
    h, blob = {}, b""
    for k in part:
        s, e = head[k]["data_offsets"]
        h[k] = dict(head[k], data_offsets=[len(blob), len(blob) + e - s]); blob += data[s:e]
        weight_map[k] = fname
    hj = json.dumps(h).encode(); hj += b" " * (-len(hj) % 8)
    open(out + "/" + fname, "wb").write(struct.pack("<Q", len(hj)) + hj + blob)
json.dump({"metadata": {"total_size": len(data)}, "weight_map": weight_map}, open(out + "/model.safetensors.index.json", "w"))
PY
  st_write in.st "input_ids|I64|[1,5]|10 20 30 40 50"
  run 0 eval --model one --input in.st --out e1.st && run 0 eval --model sharded --input in.st --out e2.st &&
    { cmp -s e1.st e2.st || fail "sharded checkpoint: eval output differs from the single file's"; }
  run 0 generate --model one --prompt-ids 1,2,3 --max-new-tokens 6 --greedy && cp out.txt g1.txt &&
    run 0 generate --model sharded --prompt-ids 1,2,3 --max-new-tokens 6 --greedy &&
    { cmp -s g1.txt out.txt || fail "sharded checkpoint: generate differs"; }
  run 0 info --model sharded || return
  # a shard missing; then only pytorch_model.bin
  mv sharded/model-00002-of-00002.safetensors sharded/away
  run 1 info --model sharded && check_err "ttt info: " "model-00002-of-00002.safetensors: no such file"
  mkdir -p pt && cp one/config.json pt/ && printf 'PK\003\004' >pt/pytorch_model.bin
  run 1 info --model pt && check_err "ttt info: " "pytorch_model.bin: a PyTorch pickle checkpoint" "save_file("
}

case "$CASE" in
  checkpoint_folders) case_checkpoint_folders ;;
  inner_update) case_inner_update ;;
  train_mpi) case_train_mpi ;;
  eval_ref) case_eval_ref ;;
  eval_grads) case_eval_grads ;;
  eval_threads) case_eval_threads ;;
  usage_errors) case_usage_errors ;;
  data_errors) case_data_errors ;;
  info) case_info ;;
  init_generate) case_init_generate ;;
  train_resume) case_train_resume ;;
  train_errors) case_train_errors ;;
  train_hier) case_train_hier ;;
  custom_learner) case_custom_learner ;;
  tokenize) case_tokenize ;;
  *)
    echo "unknown case '$CASE'"
    exit 1
    ;;
esac

if [ "$failures" != 0 ]; then
  echo "$CASE: $failures failure(s)"
  exit 1
fi
echo "$CASE: ok"
exit 0
