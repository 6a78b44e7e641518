#!/usr/bin/env python3
"""The seal's strata transpose (``ps_to_strata``), AVX-512 and plain C, staging rows ``ng`` or `row_stride` apart.

Usage::

    python benchmarks/bench_strata_rows.py [--repeats 7] [--ng 16195 16384]

For each ``ng`` (groups per superblock: 16195 in bench_core's 1 GiB fp32 model, 16384 a size whose
rows lie a multiple of 4 KiB apart) and F = 255 float strata, times `_native_strata.to_strata` on
the same random words, pad and 256 keyed-like permutations into an ``[F, ng]`` array (rows ``ng``
words apart, as before 056c528) and into one whose rows are ``row_stride(ng)`` apart, each with the
AVX-512 path (16 groups at a time, each stratum's 16 words gathered and stored as a run) and with the
plain C every CPU has (each group's words stored down the columns, the only path before the AVX-512
one). Prints the calling thread's CPU milliseconds per call (``ng`` at or above 256 splits over the
cores: run it as ``taskset -c 0`` for one thread's whole cost), best and median of ``--repeats``,
alternating the four, and checks that all give the same strata.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from paramseal import _native, _native_strata

F, NPERM = 255, 256


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--ng", type=int, nargs="+", default=[16195, 16384])
    a = ap.parse_args(argv)
    if a.repeats < 1 or min(a.ng) < 1:
        ap.error("--repeats and every --ng must be at least 1")
    if not _native.portable():
        raise SystemExit("the strata kernels need the compiled library (pip install . with a C compiler)")
    rng = np.random.default_rng(0)
    perm = np.stack([rng.permutation(255) for _ in range(NPERM)]).astype(np.int16)
    print(f"{'ng':>6}  {'path':<9}{'rows apart':<22}{'best ms':>9}{'median ms':>11}  same strata")
    for ng in a.ng:
        w, pad = (rng.integers(0, 2**32, (ng, 255), dtype=np.uint32) for _ in range(2))
        rows = {f"ng ({ng})": ng, f"row_stride ({_native_strata.row_stride(ng)})": _native_strata.row_stride(ng)}
        outs = {name: np.empty((F, ld), np.uint32) for name, ld in rows.items()}  # both paths write the same array
        runs = {(path, name): outs[name] for path in ("AVX-512", "plain C") for name in rows}
        got, times = {}, {run: [] for run in runs}
        simd = _native.SIMD
        try:
            for rep in range(a.repeats + 1):  # the first round checks the strata, untimed
                for (path, name), out in runs.items():
                    _native.SIMD = path == "AVX-512"
                    t0 = time.thread_time()
                    v = _native_strata.to_strata(w, pad, 0, perm, F, out)
                    if rep:
                        times[path, name].append(time.thread_time() - t0)
                    else:
                        got[path, name] = v.copy()
        finally:
            _native.SIMD = simd
        same = all(np.array_equal(v, next(iter(got.values()))) for v in got.values())
        for (path, name), ts in times.items():
            best, med = 1e3 * min(ts), 1e3 * statistics.median(ts)
            print(f"{ng:>6}  {path:<9}{name:<22}{best:>9.2f}{med:>11.2f}  {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
