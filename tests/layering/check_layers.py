#!/usr/bin/env python3
"""Checks the include rules of docs/architecture.md: a header of include/ttt/<layer>/ includes only
headers of the layers it may include. Prints every violation; exits 1 if there is one."""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".") / "include" / "ttt"
below = ["core", "kernels", "blocks", "ad", "inner", "io", "layers", "models", "train"]
allowed = {
    "core": {"core"},
    "kernels": {"core", "kernels"},
    "blocks": {"core", "kernels", "blocks"},
    "ad": {"core", "kernels", "blocks", "ad"},
    "inner": {"core", "kernels", "blocks", "inner", "ad/real.hpp"},
    "io": {"core", "io"},
    "layers": {"core", "kernels", "blocks", "ad", "inner", "io", "layers"},
    "models": {"core", "kernels", "blocks", "ad", "inner", "io", "layers", "models"},
    "train": set(below),
    "precompiled": set(below) | {"precompiled"},  # the sources of ttt::precompiled: instances of everything
}
inc = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
bad = 0
for h in sorted(root.rglob("*.hpp")):
    rel = h.relative_to(root)
    if len(rel.parts) == 1:
        continue  # the umbrella header includes everything
    layer = rel.parts[0]
    if layer not in allowed:
        print(f"{rel}: in '{layer}/', which is not a layer of docs/architecture.md")
        bad += 1
        continue
    for target in inc.findall(h.read_text()):
        t = (h.parent / target).resolve().relative_to(root.resolve())
        tl = t.parts[0] if len(t.parts) > 1 else None
        if tl is None or tl in allowed[layer] or str(t) in allowed[layer]:
            continue
        print(f"{rel}: includes {t} (layer '{layer}' may include {sorted(allowed[layer])})")
        bad += 1
print(f"{bad} include(s) against the layering" if bad else "layering: every include is allowed")
sys.exit(1 if bad else 0)
