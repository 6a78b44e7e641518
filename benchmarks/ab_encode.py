#!/usr/bin/env python3
"""Two builds of the compiled library, A against B: the irs4 table encoder, single-threaded.

Usage::

    python benchmarks/ab_encode.py A.so B.so [--k 8] [--rounds 6]

Build each library from its own ``_native.c`` (``gcc -O2 -shared -fPIC -o A.so _native.c``).
Both encode the same random 64 MiB of words (rows of 255), alternating A and B in one process
so that the machine's drift falls on both; the code tables are 64-byte aligned as
``_irs.code_for`` makes them. Prints seconds per GiB (best of the rounds) and B/A, and exits 1
if the two outputs differ.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time

import numpy as np

from paramseal import _irs, _irs_consts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--k", type=int, default=8, choices=(8, 12, 16))
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    code = _irs.code_for(args.k, _irs_consts.N_POS, 2)
    i64, vp = ctypes.c_int64, ctypes.c_void_p
    libs = [ctypes.CDLL(p) for p in (args.a, args.b)]
    for lib in libs:
        lib.ps_encode_tab.restype = ctypes.c_int
        lib.ps_encode_tab.argtypes = [vp, i64, i64, vp, ctypes.c_int, vp, vp, i64, vp]
    ng = (64 << 20) // (4 * _irs_consts.N_POS)
    rng = np.random.default_rng(0)
    w0 = rng.integers(0, 2**32, (ng, _irs_consts.N_POS), dtype=np.uint32) & np.uint32(
        (0xFFFFFFFF << args.k) & 0xFFFFFFFF
    )
    b0s = np.zeros(_irs_consts.N_POS, np.uint8)  # as _native._encode_tab: whole free bytes skipped, hosted ones read
    b0s[: code.free_strata] = code.k // 8
    b0s[code.hosted.reshape(-1)] = 0
    fn, d = np.ascontiguousarray(code.fn, np.int64), np.ascontiguousarray(code.d, np.int64)
    w = w0.copy()
    best, outs = [float("inf")] * 2, []
    for r in range(args.rounds):
        for i, lib in enumerate(libs):
            np.copyto(w, w0)
            t = time.perf_counter()
            rc = lib.ps_encode_tab(
                w.ctypes.data, 0, ng, code.enc.ctypes.data, code.words, b0s.ctypes.data, fn.ctypes.data, fn.shape[1],
                d.ctypes.data,
            )  # fmt: skip
            best[i] = min(best[i], time.perf_counter() - t)
            if rc:
                print(f"{'AB'[i]} refused the code (rc {rc})", file=sys.stderr)
                return 1
            if r == 0:
                outs.append(w.copy())
    per_gib = (1 << 30) / w0.nbytes
    a, b = best[0] * per_gib, best[1] * per_gib
    print(f"k={args.k}: A {a:.2f}  B {b:.2f} s/GiB single-threaded, B/A {b / a:.3f}")
    if not np.array_equal(outs[0], outs[1]):
        print("the two builds encode differently", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
