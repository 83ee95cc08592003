#!/bin/sh
# Ctrl-C during the study keeps the finished parts and says how to resume; --resume then skips
# them (their files are not rewritten) and finishes the rest. With a grid of two rates the choice
# is always at its edge, so --edge-steps 1 adds one rate beyond it per model.
#   interrupt_resume.sh STUDY_BINARY WORK_DIR
set -u
study=$1
work=$2
rm -rf "$work"
mkdir -p "$work"
out=$work/out
set -- --models ttt-linear,ttt-mlp --lrs 0.005,0.01 --edge-steps 1 --seeds 0,1 --tokens 24576 --contexts 32 --batch 4 \
  --time-contexts 32,64 --decode 2 --eval-seqs 2 --val-seqs 2 --no-plots --out "$out"
first=ttt-linear-L32-s0-lr0.005
"$study" "$@" >"$work/first.out" 2>"$work/first.err" &
pid=$!
# wait until the first model is trained and evaluated, then interrupt (SIGINT, as Ctrl-C)
i=0
while [ ! -f "$out/parts/run-$first.done" ]; do
  i=$((i + 1))
  if [ $i -gt 2000 ] || ! kill -0 $pid 2>/dev/null; then echo "FAIL: the first part never finished"; cat "$work/first.err"; exit 1; fi
  sleep 0.05
done
kill -INT $pid
wait $pid
rc=$?
if [ $rc -eq 0 ]; then echo "SKIP-LIKE FAIL: the run finished before the interrupt; make it longer"; exit 1; fi
[ $rc -eq 130 ] || { echo "FAIL: exit status $rc after SIGINT, expected 130"; cat "$work/first.err"; exit 1; }
grep -q -- "--resume" "$work/first.err" || { echo "FAIL: no resume hint"; cat "$work/first.err"; exit 1; }
[ ! -f "$out/summary.md" ] || { echo "FAIL: summary written by an interrupted run"; exit 1; }
for f in train/$first.csv val/$first.txt test/$first.csv weights/$first.bin; do
  [ -s "$out/$f" ] || { echo "FAIL: finished part's file $f missing"; exit 1; }
done
if ls "$out"/*/*.tmp.* >/dev/null 2>&1; then echo "FAIL: temporary files left"; exit 1; fi
before=$(cksum "$out/train/$first.csv" "$out/weights/$first.bin")
touch -d "2000-01-01" "$out/weights/$first.bin"
"$study" "$@" --resume >"$work/second.out" 2>"$work/second.err" || { echo "FAIL: resume failed"; cat "$work/second.err"; exit 1; }
after=$(cksum "$out/train/$first.csv" "$out/weights/$first.bin")
[ "$before" = "$after" ] || { echo "FAIL: the finished part was redone"; exit 1; }
[ -n "$(find "$out/weights/$first.bin" ! -newermt 2000-01-02)" ] || { echo "FAIL: weights rewritten on resume"; exit 1; }
grep -q "trained earlier" "$work/second.err" || { echo "FAIL: resume did not say it skipped"; cat "$work/second.err"; exit 1; }
grep -q "^study: [0-9]* of [0-9]* runs done, about [0-9:]* of training left" "$work/second.err" ||
  { echo "FAIL: no estimate of the time left after a run"; cat "$work/second.err"; exit 1; }
[ -s "$out/summary.md" ] && ls "$out"/test/ttt-mlp-L32-s1-lr*.csv >/dev/null 2>&1 && [ -s "$out/time/ttt-mlp.csv" ] ||
  { echo "FAIL: resumed run did not finish"; exit 1; }
# the summary: the sweep table with a choice per model, mean ± sd over the two seeds, the ranking
grep -q "## Learning rate" "$out/summary.md" && grep -q "| ttt-mlp | 32 | .* | 0.0" "$out/summary.md" &&
  grep -q " ± " "$out/summary.md" && grep -q "Ranked by accuracy" "$out/summary.md" ||
  { echo "FAIL: summary lacks the sweep, the spread or the ranking"; cat "$out/summary.md"; exit 1; }
# every seed's accuracy beside the mean
grep -q "^Every seed (accuracy %, seeds 0 / 1)" "$out/summary.md" && grep -q "^| ttt-mlp | [0-9.]* / [0-9.]* |" "$out/summary.md" ||
  { echo "FAIL: summary lacks every seed's accuracy"; cat "$out/summary.md"; exit 1; }
# the rate beyond the grid: one more seed-0 run per model, a third column of the sweep table
for m in ttt-linear ttt-mlp; do
  n=$(ls "$out"/parts/run-$m-L32-s0-lr*.done | wc -l)
  [ "$n" -eq 3 ] || { echo "FAIL: $m ran $n rates from seed 0, expected the grid's 2 and 1 beyond it"; exit 1; }
done
grep -q "^| model | context | 0.0[0-9]* | 0.0[0-9]* | 0.0[0-9]* | chosen |" "$out/summary.md" ||
  { echo "FAIL: the sweep table lacks the rate beyond the grid"; cat "$out/summary.md"; exit 1; }
# other settings with --resume are refused, naming the option
if "$study" --models ttt-linear,ttt-mlp --lrs 0.005,0.01 --seeds 0,1 --tokens 4096 --contexts 32 --out "$out" --resume 2>"$work/third.err"; then
  echo "FAIL: resume with other settings accepted"; exit 1
fi
grep -q "tokens" "$work/third.err" || { echo "FAIL: refusal does not name the option"; cat "$work/third.err"; exit 1; }
echo "PASS"
