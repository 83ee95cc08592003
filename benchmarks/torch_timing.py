"""Timing and output helpers shared by the PyTorch side-by-side scripts (torch_layer.py,
torch_hier.py): the fastest of several timed runs after an untimed warm-up, and a JSON file
written to a temporary name and renamed."""
import json
import os
import time


def best_of(once, reps):
    """Seconds of the fastest of `reps` calls of `once()` (wall clock), after one untimed call."""
    once()  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - t0)
    return best


def write_json(path, obj):
    """Write obj to path through path.tmp (a reader never sees a half-written file)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1)
    os.replace(tmp, path)
