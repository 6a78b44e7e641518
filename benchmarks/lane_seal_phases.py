#!/usr/bin/env python3
"""Where the CPU seconds of a 16-bit (lane code) seal go, step by step.

Usage::

    python benchmarks/lane_seal_phases.py [--size-gib 0.375] [--dtype bf16|f16] [--level standard] [--dir SCRATCH]

Writes the LLaMA-shaped checkpoint of ``bench_core.py`` in a 16-bit dtype, then seals it file to
file in this process with a timer around each step of the lane seal: the chunk reads (both passes),
the non-finite check, packing the high bits, the stripes and partial stripes into the lane store,
the keyed permutations, the coder (its compiled kernel, or where that does not serve its split
layout and parity shards, apart), the parity written into the low bits, the tags, and the writes
into the output's page cache. For each it prints the user and system CPU seconds of the threads that
ran it (``RUSAGE_THREAD``), and the process's totals: CPU seconds, unlike wall time, hold up on a
machine shared with other work. Indented steps run inside the one above them. A kernel a step hands
to the thread pool (the coder's split layout, the permutations' sort, when called from the main
thread) counts in "rest": run it as ``taskset -c 0 python ...`` (one core: every kernel runs in its
step's thread) for the whole split. System time here is mostly first touches of fresh memory (the
lane store) and page-cache copies, and varies with the machine's state.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_core  # noqa: E402

from paramseal import Key, _bits, _code, _kernels, _layout, _model, _rs16, _sealing, files  # noqa: E402

USR: collections.Counter[str] = collections.Counter()
SYS: collections.Counter[str] = collections.Counter()
CALLS: collections.Counter[str] = collections.Counter()  # a step never called is a stale hook: main says so
LOCK = threading.Lock()

# (owner, attribute, label): indented labels run inside the step above them
STEPS: list[tuple[Any, str, str]] = [
    (_sealing, "read_blocks", "read chunks (preadv, both passes)"),
    (_sealing, "_refuse_non_finite", "non-finite check"),
    (_model, "gather_chunk", "gather into the lane store"),
    (_bits, "hi_bytes", "  pack the high bits"),
    (_kernels, "scatter_stripes", "  whole stripes into the store"),
    (_kernels, "scatter_blocks", "  partial stripes into the store"),
    (_layout.Layout, "perm_rows", "keyed stripe permutations (both passes)"),
    (_code, "encode_into", "encode (the lanes' parity)"),
    (_rs16, "parity_words", "  parity from the words (compiled)"),
    (_kernels, "to_split", "  split layout (where the above does not serve)"),
    (_rs16, "parity", "  parity shards (compiled or library)"),
    (_model, "write_storage", "parity into the low bits"),
    (_sealing, "_tag_chunk", "tags"),
    (_sealing, "write_blocks", "write chunks (pwrite into the page cache)"),
]
# the coder takes one path or the other: the steps of the path not taken are not stale hooks
PATHS = [
    ["  parity from the words (compiled)"],
    ["  split layout (where the above does not serve)", "  parity shards (compiled or library)"],
]


def timed(owner: Any, name: str, label: str) -> None:
    """Wrap ``owner.name``: each call's thread user and system seconds add to ``label``."""
    f = getattr(owner, name)

    @functools.wraps(f)
    def g(*a: Any, **k: Any) -> Any:
        r0 = resource.getrusage(resource.RUSAGE_THREAD)
        try:
            return f(*a, **k)
        finally:
            r1 = resource.getrusage(resource.RUSAGE_THREAD)
            with LOCK:
                USR[label] += r1.ru_utime - r0.ru_utime
                SYS[label] += r1.ru_stime - r0.ru_stime
                CALLS[label] += 1

    setattr(owner, name, g)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gib", type=float, default=0.375)
    ap.add_argument("--dtype", choices=["bf16", "f16"], default="bf16")
    ap.add_argument("--level", default="standard")
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="paramseal-lanes-", dir=a.dir) as tmp:
        model, out = Path(tmp) / "model.safetensors", Path(tmp) / "sealed.safetensors"
        bench_core.write_checkpoint(model, a.size_gib, a.dtype)
        for c in (USR, SYS, CALLS):
            c.clear()
        for owner, name, label in STEPS:
            timed(owner, name, label)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        files.seal_file(model, out, Key.generate(), level=a.level, progress=False)
        r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    usr, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    what = f"seal of {a.size_gib} GiB {a.dtype}, level {a.level}"
    print(f"{what}: {wall:.2f} s wall, {usr:.2f} s user + {sys_:.2f} s system")
    print(f"  {'step':<48}{'user s':>8}{'sys s':>8}")
    top_u = top_s = 0.0
    for _, _, label in STEPS:
        print(f"  {label:<48}{USR[label]:8.3f}{SYS[label]:8.3f}")
        if not label.startswith(" "):
            top_u, top_s = top_u + USR[label], top_s + SYS[label]
    print(f"  {'rest (layout, header, opening, final flush)':<48}{usr - top_u:8.3f}{sys_ - top_s:8.3f}")
    taken = any(all(CALLS[label] for label in path) for path in PATHS)
    either = {label for path in PATHS for label in path} if taken else set()
    stale = [label.strip() for _, _, label in STEPS if not CALLS[label] and label not in either]
    if stale:
        print(f"never called (the seal no longer runs these hooks): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
