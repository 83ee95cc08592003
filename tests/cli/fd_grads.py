#!/usr/bin/env python3
"""Finite-difference check of `ttt eval --grads` on any checkpoint, through the program itself.

usage: fd_grads.py TTT_BINARY MODEL_DIR INPUT.safetensors WORK_DIR [--prefix P ...] [--per-tensor K]

Runs `ttt eval --grads`, then for the K largest-|gradient| entries of every parameter whose name
starts with one of the prefixes (all parameters without --prefix) writes the checkpoint with that
entry moved by +-h, runs `ttt eval` on each and compares (loss(+h) - loss(-h)) / 2h with the
written grad.{name}. float32 throughout, so the check is loose (a relative error of 5% of the
entry, or 2e-3 absolute) but catches a missing, mis-scaled or mis-placed gradient. Exit 1 on a
mismatch; needs numpy and the reference's compare.py beside (for its safetensors reader).
"""
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.environ.get("TTT_COMPARE_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "reference")))
from compare import load  # noqa: E402


def save(path, tensors):
    header, blobs, off = {}, [], 0
    for k, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ttt, model, inp, work = sys.argv[1:5]
    args = sys.argv[5:]
    prefixes, k_per = [], 2
    while args:
        if args[0] == "--prefix":
            prefixes.append(args[1])
        elif args[0] == "--per-tensor":
            k_per = int(args[1])
        args = args[2:]
    os.makedirs(work, exist_ok=True)
    out = os.path.join(work, "grads.safetensors")
    subprocess.run([ttt, "eval", "--model", model, "--input", inp, "--out", out, "--grads"], check=True)
    got = load(out)
    weights = {k: v.astype(np.float32) for k, v in load(os.path.join(model, "model.safetensors")).items()}
    probe = os.path.join(work, "probe")
    os.makedirs(probe, exist_ok=True)
    shutil.copy(os.path.join(model, "config.json"), probe)

    def loss_with(name, idx, delta):
        w = dict(weights)
        a = w[name].copy()
        a.flat[idx] += delta
        w[name] = a
        save(os.path.join(probe, "model.safetensors"), w)
        o = os.path.join(work, "probe_out.safetensors")
        subprocess.run([ttt, "eval", "--model", probe, "--input", inp, "--out", o], check=True)
        return float(load(o)["loss"])

    names = [n for n in weights if (not prefixes or n.startswith(tuple(prefixes))) and "grad." + n in got]
    missing = [n for n in weights if (not prefixes or n.startswith(tuple(prefixes))) and "grad." + n not in got
               and not n.endswith(("inv_freq", "rotary_emb.scale"))]
    bad = len(missing)
    for n in missing:
        print(f"MISSING grad.{n}")
    checked = 0
    for n in sorted(names):
        g = got["grad." + n].astype(np.float64)
        if g.shape != weights[n].shape:
            print(f"SHAPE grad.{n}: {g.shape} vs {weights[n].shape}")
            bad += 1
            continue
        for idx in np.argsort(-np.abs(g).ravel())[:k_per]:
            h = 2e-3 * max(1.0, abs(float(weights[n].flat[idx])))
            fd = (loss_with(n, idx, h) - loss_with(n, idx, -h)) / (2 * h)
            an = float(g.flat[idx])
            ok = abs(fd - an) <= 0.05 * abs(an) + 2e-3
            checked += 1
            if not ok:
                bad += 1
            print(f"{'ok ' if ok else 'BAD'} {n}[{idx}]: grad {an:+.6e}  finite difference {fd:+.6e}")
    print(f"{checked} entries of {len(names)} tensors checked, {bad} bad")
    if checked == 0:
        print("nothing checked")
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
