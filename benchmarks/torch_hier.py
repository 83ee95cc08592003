#!/usr/bin/env python3
"""The PyTorch side of bench_hier: lucidrains' simple-hierarchical-transformer (the original this
library's ttt::hier reimplements) timed at bench_hier's shapes, for the side-by-side table in
benchmarks/README.md ("Hierarchical transformer: against the original").

  PYTHONPATH=<dir with simple_hierarchical_transformer, local_attention, einops> \
    /usr/bin/python3 benchmarks/torch_hier.py --threads 2 --tokens 4096 --reps 3

Models (as bench_hier: dim 128, depth 2, 4 heads of 32, ff_mult 4, 259 byte tokens, seq_len 32768):
  flat-full   hierarchies (1), full attention
  flat-local  hierarchies (1), local window 128
  h128-local  hierarchies (1, 2, 8), local windows 128 at each level
(h128-ttt has no counterpart in the original.)

  prefill  model(ids) under torch.no_grad(): every position's logits (bench_hier's Hier/*/prefill/n)
  train    model(ids of n + 1 tokens, return_loss=True) and .backward() (Hier/*/train/n; no optimiser)
Each row: the fastest of --reps timed runs after one untimed warm-up; wall-clock (time.perf_counter).
Prints one line per row and, with --json FILE, writes them (written to FILE.tmp, then renamed).
"""
import argparse
import sys

from torch_timing import best_of, write_json

CONFIGS = {
    "flat-full": dict(hierarchies=1, window_sizes=None),
    "flat-local": dict(hierarchies=1, window_sizes=128),
    "h128-local": dict(hierarchies=(1, 2, 8), window_sizes=(128, 128, 128)),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, nargs="+", default=[4096])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--kinds", nargs="+", default=["prefill", "train"], choices=["prefill", "train"])
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args()
    try:
        import torch
        from simple_hierarchical_transformer import HierarchicalTransformer
    except ImportError as e:
        sys.exit(f"torch_hier.py: {e}; put simple_hierarchical_transformer, local_attention and einops on PYTHONPATH "
                 "and use a Python with torch (Debian: apt-get install python3-torch; /usr/bin/python3)")
    if a.threads < 1 or a.reps < 1 or min(a.tokens) < 2:
        sys.exit("torch_hier.py: --threads and --reps must be >= 1, --tokens >= 2")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows = []
    for name in a.models:
        model = HierarchicalTransformer(num_tokens=259, dim=128, depth=2, seq_len=32768, dim_head=32, heads=4,
                                        ff_mult=4, **CONFIGS[name])
        for n in a.tokens:
            for kind in a.kinds:
                ids = torch.randint(1, 259, (1, n + (kind == "train")))

                def once():
                    if kind == "prefill":
                        model.eval()
                        with torch.no_grad():
                            model(ids)
                    else:
                        model.train()
                        model.zero_grad(set_to_none=True)
                        out = model(ids, return_loss=True)  # (total loss, breakdown)
                        (out[0] if isinstance(out, tuple) else out).backward()

                best = best_of(once, a.reps)
                row = dict(model=name, kind=kind, tokens=n, ms=best * 1e3, threads=a.threads, torch=torch.__version__)
                rows.append(row)
                print(f"{name:11s} {kind:8s} {n:6d} tokens {best * 1e3:10.1f} ms  ({a.threads} threads, torch {torch.__version__})",
                      flush=True)
    if a.json:
        write_json(a.json, rows)


if __name__ == "__main__":
    main()
