#!/usr/bin/env python3
"""The outer code's parity per superblock: the compiled encoder against ``rsl.encode``, in one run.

Usage::

    python benchmarks/bench_outer_parity.py [--repeats 7]

For each shape (shards, parity shards, shard bytes) — a full superblock of fp32 content at k = 8
(16384, 170, 768) and a quarter one (4096, 43, 768) — times `Outer.parity`'s two paths on the
same random content: ``_rs16.parity`` (the compiled encoder) and ``rsl.encode`` as
`Outer.parity` calls it without the library (shards to bytes, parity back into columns). Prints
the calling thread's CPU milliseconds per call, best and median of ``--repeats`` after one
untimed call (the tables), alternating the two, and checks that both give the same bytes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import reed_solomon_leopard as rsl

from paramseal import _native, _rs16
from paramseal._kernels import rows_as_bytes

SHAPES = ((16384, 170, 768), (4096, 43, 768))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    if a.repeats < 1:
        ap.error(f"--repeats must be at least 1, not {a.repeats}")
    if not _native.available():
        raise SystemExit("the compiled encoder needs the library and a CPU with GFNI and AVX-512")
    rng = np.random.default_rng(1)
    print(f"{'n':>6}{'r':>5}{'shard':>6}  {'path':<9}{'best ms':>9}{'median ms':>11}  same bytes")
    for n, r, shard in SHAPES:
        content = rng.integers(0, 256, (n, shard), dtype=np.uint8)

        def leopard(c: np.ndarray = content, r: int = r) -> np.ndarray:
            par = np.frombuffer(b"".join(rsl.encode(rows_as_bytes(c), r)), np.uint8)
            return par.reshape(r, c.shape[1] // 64, 64).transpose(1, 0, 2)

        def compiled(c: np.ndarray = content, r: int = r) -> np.ndarray | None:
            return _rs16.parity(c, r)

        got, want = compiled(), leopard()
        same = got is not None and np.array_equal(got, want)
        times: dict[str, list[float]] = {"compiled": [], "leopard": []}
        paths: dict[str, Callable[[], object]] = {"compiled": compiled, "leopard": leopard}
        for _ in range(a.repeats):
            for name, f in paths.items():
                t0 = time.thread_time()
                f()
                times[name].append(time.thread_time() - t0)
        for name, ts in times.items():
            best, med = 1e3 * min(ts), 1e3 * statistics.median(ts)
            print(f"{n:>6}{r:>5}{shard:>6}  {name:<9}{best:>9.2f}{med:>11.2f}  {same}")


if __name__ == "__main__":
    main()
