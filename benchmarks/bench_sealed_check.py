#!/usr/bin/env python3
"""Seal's check for an input already sealed (`_embed_find.carries_seal`): alone, inside a seal, and its bit packing.

Usage::

    python benchmarks/bench_sealed_check.py [--size-gib 1.0] [--rounds 3] [--dir SCRATCH]

Writes ``bench_core.py``'s LLaMA-shaped fp32 checkpoint once. Each round then prints:

* the check alone, on the file mapped as seal maps it (``open_model``), wall and CPU seconds;
* a file-to-file seal (``files.seal_file``, level standard) with the check's thread timed inside it
  (wall, and ``time.thread_time``: its own CPU, not that of the threads its reads are split over);
* ``ps_pack`` of 16M 32-bit values at field widths 1 to 22 with the vector paths on (``pext`` where the
  library has it) and off (the plain loop), nanoseconds a value, one call on one core (best of 5).

Run it with ``PYTHONPATH`` at another tree's ``src`` to compare two trees; absolute times drift with the
host, so compare runs made one after the other.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_core  # noqa: E402

WIDTHS = (1, 2, 4, 8, 13, 22)


def check_alone(model: Path) -> tuple[float, float]:
    from paramseal import _embed_find
    from paramseal._model_io import open_model

    with open_model(model) as loaded:
        t0, c0 = time.perf_counter(), time.process_time()
        found = _embed_find.carries_seal(loaded.tensors)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert not found, "the benchmark's model is not sealed"
    return wall, cpu


def check_in_seal(model: Path, out: Path) -> tuple[float, float, float]:
    from paramseal import Key, _embed_find, files

    real, got = _embed_find.carries_seal, []

    def timed(tensors):  # type: ignore[no-untyped-def]
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return real(tensors)
        finally:
            got.append((time.perf_counter() - t0, time.thread_time() - c0))

    _embed_find.carries_seal = timed
    try:
        out.unlink(missing_ok=True)
        os.sync()
        t0 = time.perf_counter()
        files.seal_file(model, out, Key.generate(), progress=False)
        seal = time.perf_counter() - t0
    finally:
        _embed_find.carries_seal = real
        out.unlink(missing_ok=True)
    ((wall, cpu),) = got
    return seal, wall, cpu


def pack_ns(vector: bool) -> dict[int, float]:
    from paramseal import _native, _native_blocks

    lib = _native._lib()
    if lib is None:
        raise SystemExit("the compiled library is not built: nothing to time")
    u = np.random.default_rng(0).integers(0, 1 << 32, (1 << 18, 64), dtype=np.uint32)
    _native_blocks.set_vector(vector)
    try:
        out = {}
        for w in WIDTHS:
            packed = np.empty((u.shape[0], 8 * w), np.uint8)
            best = float("inf")
            for _ in range(5):  # the library's call itself: one core
                t0 = time.perf_counter()
                lib.ps_pack(u.ctypes.data, 4, 64, 0, u.shape[0], 64, 0, w, packed.ctypes.data)
                best = min(best, time.perf_counter() - t0)
            assert np.array_equal(packed, _native_blocks.pack(u, 0, w))
            out[w] = best / u.size * 1e9
        return out
    finally:
        _native_blocks.set_vector(True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    a = ap.parse_args()
    import paramseal

    print(f"paramseal from {os.path.dirname(paramseal.__file__)}")
    with tempfile.TemporaryDirectory() as tmp:
        where = a.dir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        model = where / f"f32_{a.size_gib:g}.safetensors"
        if not model.exists():
            bench_core.write_checkpoint(model, a.size_gib)
        for r in range(1, a.rounds + 1):
            wall, cpu = check_alone(model)
            seal, in_wall, in_cpu = check_in_seal(model, where / "sealed.safetensors")
            print(f"round {r}: check alone {wall:.3f} s (CPU {cpu:.3f} s); in a seal of {seal:.2f} s, "
                  f"its thread {in_wall:.3f} s (its CPU {in_cpu:.3f} s)")  # fmt: skip
    on, off = pack_ns(True), pack_ns(False)
    print("ps_pack of 32-bit values, ns a value (vector paths on / off): "
          + ", ".join(f"W={w} {on[w]:.2f}/{off[w]:.2f}" for w in WIDTHS))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
