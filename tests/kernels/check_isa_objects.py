#!/usr/bin/env python3
"""The objects of include/ttt/precompiled/isa/ (compiled with -mavx2 -mfma, -mavx512*) define only
symbols of the AVX instruction sets: templates instantiated for one of them (xsimd::avx,
fma3<avx2>, avx512bw ... in their names; no baseline unit can instantiate those) and the tables'
accessors. Any other global symbol (an inline function or template instance that a
baseline unit may also define, std::min say) could be the copy the linker keeps, and would then run
AVX code on a CPU without it. Usage: check_isa_objects.py NM OBJECT..."""
import subprocess
import sys

ALLOWED = {"DW.ref.__gxx_personality_v0"}  # the C++ runtime's, the same bytes in every unit


def main(argv):
    nm, objects = argv[1], argv[2:]
    if not objects:
        print("check_isa_objects.py: no objects given", file=sys.stderr)
        return 2
    bad = []
    for obj in objects:
        out = subprocess.run([nm, "-C", "--defined-only", obj], check=True, capture_output=True, text=True).stdout
        n = 0
        for line in out.splitlines():
            parts = line.split(" ", 2)
            if len(parts) < 3 or parts[1].islower() and parts[1] not in "uvw":
                continue  # local symbols cannot stand in for another unit's
            n += 1
            if "avx" not in parts[2] and parts[2] not in ALLOWED:
                bad.append(f"{obj}: {parts[1]} {parts[2]}")
        if n == 0:
            bad.append(f"{obj}: no global symbols at all (not the isa unit?)")
    for b in bad:
        print("not of its instruction set:", b)
    print(f"{len(objects)} objects checked, {len(bad)} foreign symbols")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
