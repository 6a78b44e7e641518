#!/usr/bin/env python3
"""The seal against SHA-256, round by round, beside the cost of writing a new file of the same size.

Usage::

    python benchmarks/seal_write_floor.py [--size-gib 1.0] [--rounds 8] [--dir SCRATCH] [--level standard]

Writes ``bench_core.py``'s LLaMA-shaped fp32 checkpoint, then runs ``--rounds`` rounds of three
operations, each in a fresh interpreter (``bench_core``'s workers, with its settling before each: the
last output removed, the disk flushed):

* ``sha256``: SHA-256 of the checkpoint (the baseline);
* ``write``: a new file of the checkpoint's size written from memory in 64 KiB pieces, then fsync:
  the output any seal to a new file must write, with no work at all (its copy into new page-cache
  pages, before the fsync, is shown too);
* ``seal``: ``files.seal_file`` of the checkpoint to a new file.

It prints each round's times, the seal's speed against SHA-256's, and the rank correlations (Spearman)
of the seal's time with the write's, its copy's and SHA-256's over the rounds. Writing into new page-cache
pages varies on this project's machines (a GiB's copy took 0.26-0.68 s within one run of this script, and
0.26-2.8 s in a scratch loop, while SHA-256 stayed near 1 s), and a seal to a new file writes a GiB too:
in that run the seal's time ranked with the copy's at +0.57. bench_core's best-of-N figures do not show
such rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_core  # noqa: E402


def spearman(x: list[float], y: list[float]) -> float:
    """Rank correlation of two equal-length samples (ties ranked by order: times rarely tie)."""
    rx = np.argsort(np.argsort(x, kind="stable")).astype(float)
    ry = np.argsort(np.argsort(y, kind="stable")).astype(float)
    return float(np.corrcoef(rx, ry)[0, 1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gib", type=float, default=1.0, help="checkpoint size in GiB (default 1.0)")
    ap.add_argument("--rounds", type=int, default=8, help="rounds of sha256, write, seal (default 8)")
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a new temporary folder)")
    ap.add_argument("--level", default="standard", help="seal level (default standard)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="kill a worker after this many seconds")
    a = ap.parse_args(argv)
    if not a.size_gib > 0:
        ap.error(f"--size-gib must be a positive number of GiB, not {a.size_gib}")
    if a.rounds < 3:
        ap.error(f"--rounds must be at least 3 (a correlation needs them), not {a.rounds}")
    if a.dir is not None and a.dir.exists() and not a.dir.is_dir():
        ap.error(f"--dir {a.dir} exists and is not a folder")

    work, made = bench_core.scratch_dir(a.dir, "paramseal-floor-")
    model, sealed, written = work / "model.safetensors", work / "model.sealed.safetensors", work / "write.tmp"
    env = bench_core.workers_env()
    try:
        bench_core.spawn("gen", [str(model), str(a.size_gib), "f32"], env, a.timeout)
        ops = [
            ("sha256", [str(model)]),
            ("write", [str(model), str(written)]),
            ("seal", [str(model), str(sealed), a.level]),
        ]
        times: dict[str, list[float]] = {op: [] for op, _ in ops}
        copies: list[float] = []
        cols = (
            f"{'round':>5} {'sha256 s':>9} {'write s':>8} {'(of which copy)':>16} {'seal s':>7} {'seal/SHA speed':>15}"
        )
        print(f"{cols} {'seal worker cpu s':>18}")
        for i in range(a.rounds):
            run = {}
            for op, args in ops:
                bench_core._settle(op, args)
                run[op] = bench_core.spawn(op, args, env, a.timeout)
                times[op].append(run[op].seconds)
            copies.append(float(run["write"].info["copy_s"]))
            sha, wr, seal = (times[op][-1] for op, _ in ops)
            print(
                f"{i + 1:>5} {sha:>9.2f} {wr:>8.2f} {copies[-1]:>16.2f} {seal:>7.2f} {sha / seal:>15.3f} "
                f"{run['seal'].cpu_s:>18.2f}",
                flush=True,
            )
        ratios = [s / t for s, t in zip(times["sha256"], times["seal"], strict=True)]
        print()
        print(f"seal/SHA speed: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}")
        print(
            f"write of a new file: {min(times['write']):.2f}-{max(times['write']):.2f} s, of which the copy into "
            f"new page-cache pages {min(copies):.2f}-{max(copies):.2f} s"
        )
        print(f"SHA-256: {min(times['sha256']):.2f}-{max(times['sha256']):.2f} s")
        print(f"rank correlation, seal time with write time: {spearman(times['seal'], times['write']):+.2f}")
        print(f"rank correlation, seal time with the write's copy: {spearman(times['seal'], copies):+.2f}")
        print(f"rank correlation, seal time with SHA-256 time: {spearman(times['seal'], times['sha256']):+.2f}")
    finally:
        for p in (model, sealed, written):
            p.unlink(missing_ok=True)
        if made:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
