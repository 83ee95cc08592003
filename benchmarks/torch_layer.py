#!/usr/bin/env python3
"""The PyTorch side of bench_layer: the official ttt-lm-pytorch TTT layer (TTTLinear / TTTMLP from
its ttt.py, the code this library's layer reproduces) timed at bench_layer's shape, for the
side-by-side rows in benchmarks/README.md (issue 15, item 3: the layer against the GEMM rate and
against the official layer).

  PYTHONPATH=<dir with the official ttt.py> /usr/bin/python3 benchmarks/torch_layer.py \\
    --threads 2 --tokens 2048 --reps 5

Shape (as bench_layer's Layer/<L>/prefill/<n>): the 125m preset's layer, hidden 768, 12 heads of
64, mini-batch 16, no gate, no shared QK, no pre-conv; batch 1; the weights of the official
initialisation (normal, std 0.02). One row per layer type and n: the forward of n tokens from a
fresh state (no cache) under torch.no_grad(), the fastest of --reps timed runs after one untimed
warm-up, wall clock (time.perf_counter). Prints one line per row and, with --json FILE, writes
them (to FILE.tmp, then renamed).

ttt.py imports Hugging Face `transformers` for its model classes (configuration base, output
containers, a logger); the layer itself uses none of it. Debian has no `transformers` package, so
when it is missing this script puts small stand-ins for those names in sys.modules before the
import (a configuration object that keeps its keyword arguments, an nn.Module base class,
placeholder output classes, the standard logger).
"""
import argparse
import logging as _logging
import os
import sys
import types

from torch_timing import best_of, write_json

FLOPS_NOTE = "tokens/s only; the GFLOP/s of a row come from bench_layer's count for the same shape"


def install_transformers_standins():
    """Stand-ins for the transformers names that ttt.py imports (only when transformers is absent)."""
    try:
        import transformers  # noqa: F401
        return False
    except ImportError:
        pass
    import torch.nn as nn
    import torch.nn.functional as F

    class PretrainedConfig:
        def __init__(self, **kwargs):
            for k, v in kwargs.items():
                setattr(self, k, v)

    class PreTrainedModel(nn.Module):
        def __init__(self, config, *args, **kwargs):
            super().__init__()
            self.config = config

    class ModelOutput:
        pass

    class Logger(_logging.Logger):
        def warning_once(self, *args, **kwargs):
            self.warning(*args, **kwargs)

    _logging.setLoggerClass(Logger)
    mods = {name: types.ModuleType(name) for name in [
        "transformers", "transformers.activations", "transformers.modeling_outputs", "transformers.modeling_utils",
        "transformers.utils", "transformers.utils.import_utils"]}
    mods["transformers"].PretrainedConfig = PretrainedConfig
    mods["transformers.activations"].ACT2FN = {"silu": F.silu, "gelu": F.gelu}
    mods["transformers.modeling_outputs"].BaseModelOutputWithPast = ModelOutput
    mods["transformers.modeling_outputs"].CausalLMOutputWithPast = ModelOutput
    mods["transformers.modeling_utils"].PreTrainedModel = PreTrainedModel
    mods["transformers.utils"].ModelOutput = ModelOutput
    mods["transformers.utils"].logging = types.SimpleNamespace(get_logger=_logging.getLogger)
    mods["transformers.utils.import_utils"].is_causal_conv1d_available = lambda: False
    sys.modules.update(mods)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, nargs="+", default=[2048])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--layers", nargs="+", default=["linear", "mlp"], choices=["linear", "mlp"])
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args()
    if a.threads < 1 or a.reps < 1 or min(a.tokens) < 1:
        sys.exit("torch_layer.py: --threads, --reps and --tokens must be >= 1")
    try:
        import torch
    except ImportError as e:
        sys.exit(f"torch_layer.py: {e}; use a Python with torch (Debian: apt-get install python3-torch; /usr/bin/python3)")
    stand_ins = install_transformers_standins()
    try:
        import ttt as official
    except ImportError as e:
        sys.exit(f"torch_layer.py: {e}; put the directory with ttt-lm-pytorch's ttt.py on PYTHONPATH")
    if not hasattr(official, "TTTLinear") or not hasattr(official, "TTTMLP"):
        sys.exit(f"torch_layer.py: {official.__file__} is not ttt-lm-pytorch's ttt.py (no TTTLinear / TTTMLP)")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows = []
    for kind in a.layers:
        cfg = official.TTTConfig(**official.TTT_STANDARD_CONFIGS["125m"], ttt_layer_type=kind)
        layer = (official.TTTLinear if kind == "linear" else official.TTTMLP)(cfg, layer_idx=0).eval()
        for n in a.tokens:
            x = torch.randn(1, n, cfg.hidden_size)
            pos = torch.arange(n).unsqueeze(0)

            def once():
                with torch.no_grad():
                    layer(x, position_ids=pos)

            best = best_of(once, a.reps)
            row = dict(layer=kind, tokens=n, threads=a.threads, seconds=best, tokens_per_s=n / best)
            rows.append(row)
            print(f"torch {kind:6s} prefill n={n:6d} threads={a.threads}: {best * 1e3:9.1f} ms  "
                  f"{n / best:9.0f} tokens/s", flush=True)
    meta = dict(torch=torch.__version__, ttt_py=os.path.abspath(official.__file__), transformers_standins=stand_ins,
                reps=a.reps, note=FLOPS_NOTE)
    if a.json:
        write_json(a.json, dict(meta=meta, rows=rows))


if __name__ == "__main__":
    main()
