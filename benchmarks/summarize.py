#!/usr/bin/env python3
"""Markdown tables from Google Benchmark JSON files (--benchmark_out=FILE --benchmark_out_format=json).

For each benchmark it keeps the fastest repetition over all the files given (on a shared machine
the minimum is the estimate least disturbed by other processes) and prints its wall time,
tokens/s, ms or us per token, GFLOP/s, and wall/CPU (main thread): a ratio well above 1 means the
main thread was preempted during that repetition.

    python3 benchmarks/summarize.py run1/bench_layer.json run2/bench_layer.json

With --compare, two sides (before, after) side by side: tokens/s of each and after/before; a side
may be several files joined by commas (the fastest repetition over them, as above).

    python3 benchmarks/summarize.py --compare before.json after.json
    python3 benchmarks/summarize.py --compare b1.json,b2.json a1.json,a2.json
"""
import json
import sys


def load(paths):
    best = {}
    order = []
    for p in paths:
        with open(p) as f:
            data = json.load(f)
        for b in data["benchmarks"]:
            if b.get("run_type", "iteration") != "iteration" or "error_occurred" in b:
                continue
            name = b.get("run_name", b["name"])
            if "/real_time" not in name:
                # rates of a benchmark without UseRealTime are per CPU second: make them per wall second
                scale = b["cpu_time"] / b["real_time"]
                b = dict(b, items_per_second=b.get("items_per_second", 0.0) * scale)
                if "GFLOP/s" in b:
                    b["GFLOP/s"] *= scale
            name = name.replace("/real_time", "").replace("/iterations:1", "").replace("/iterations:48", "")
            if name not in best:
                order.append(name)
            if name not in best or b["real_time"] < best[name]["real_time"]:
                best[name] = b
    return best, order


def compare(before, after):
    b0, order = load(before.split(","))
    b1, order1 = load(after.split(","))
    order += [n for n in order1 if n not in b0]
    print("| benchmark | before tokens/s | after tokens/s | after/before |")
    print("|---|---:|---:|---:|")
    for name in order:
        t0 = b0.get(name, {}).get("items_per_second", 0.0)
        t1 = b1.get(name, {}).get("items_per_second", 0.0)
        ratio = f"{t1 / t0:.2f}" if t0 and t1 else "-"
        print(f"| {name} | {t0:,.0f} | {t1:,.0f} | {ratio} |")


def main(paths):
    best, order = load(paths)
    print("| benchmark | time | tokens/s | per token | GFLOP/s | wall/CPU |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in order:
        b = best[name]
        unit = b["time_unit"]
        tps = b.get("items_per_second", 0.0)
        per_tok = 1e3 / tps if tps else float("nan")
        per = f"{per_tok:.3f} ms" if per_tok >= 0.1 else f"{per_tok * 1e3:.1f} us"
        shown = name
        t = b["real_time"]
        tstr = f"{t:,.0f}" if t >= 100 else f"{t:.3g}"
        print(f"| {shown} | {tstr} {unit} | {tps:,.0f} | {per} | {b.get('GFLOP/s', 0.0):.1f} | "
              f"{b['real_time'] / b['cpu_time']:.2f} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] == "--compare":
        if len(sys.argv) != 4:
            sys.exit("summarize.py --compare BEFORE.json AFTER.json")
        compare(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1:])
