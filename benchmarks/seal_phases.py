#!/usr/bin/env python3
"""Where the time of an irs4 seal and of a light in-place recover goes, step by step.

Usage::

    python benchmarks/seal_phases.py [--size-gib 1.0] [--dir SCRATCH]

Writes the LLaMA-shaped fp32 checkpoint of ``bench_core.py``, then, in this one process:

* seals it file to file with a timer around each step of the engine (keyed offset, gather,
  outer content and parity, inner encode, scatter, the tag pass's reads, tags and writes).
  The seal runs its superblocks, then its tag chunks, two (one per core) at a time, so the
  steps overlap: for each one it prints the CPU seconds of the threads that ran it and the
  summed wall seconds, and for the whole the wall seconds of the superblock pass, the tag
  pass and the rest (opening, the header and the final flush to disk);
* flips 100 random bits in a copy of the sealed file and recovers it in place in a fresh
  process (as a user runs it), timing the check, the gather of the damaged groups, the code
  tables, the decode and the numba kernels the decoder loads.

Seconds of one run on a warm page cache: a breakdown, not a benchmark (use ``bench_core.py``
for that). The recover's steps do not nest, so with "rest" they add up to its total; numba
kernel loads are shown apart, as part of whichever step (or "rest") they fall in.
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_core  # noqa: E402

from paramseal import Key, _file_header, _irs, _outer, _recover_file, _strata, files, load_key  # noqa: E402

T: collections.Counter[str] = collections.Counter()  # wall seconds per label (summed over threads)
CPU: collections.Counter[str] = collections.Counter()  # CPU seconds of the calling threads per label
LOCK = threading.Lock()


def timed(owner: Any, name: str, label: str) -> None:
    """Wrap ``owner.name`` so that its wall time adds to ``T[label]`` and its thread's CPU time to ``CPU[label]``.

    The CPU time is the calling thread's: a step that hands work to the kernel pool shows less
    CPU than it caused. In the seal's tasks the pool is not used (their kernels run inline).
    """
    f = getattr(owner, name)

    @functools.wraps(f)
    def g(*a: Any, **k: Any) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return f(*a, **k)
        finally:
            with LOCK:
                T[label] += time.perf_counter() - t0
                CPU[label] += time.thread_time() - c0

    setattr(owner, name, g)


def first_kernel_load() -> None:
    """Time the first numba kernel loaded (it pays numba's registries, and scipy's import if installed)."""
    import numba.core.dispatcher as dispatcher

    real = dispatcher.Dispatcher._compile_for_args

    def spy(self: Any, *a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real(self, *a, **k)
        finally:  # threads load a kernel side by side: keep the longest, not the sum
            label = f"numba kernel load ({self.py_func.__name__})"
            T[label] = max(T[label], time.perf_counter() - t0)

    dispatcher.Dispatcher._compile_for_args = spy


def show(title: str, total: float) -> None:
    print(f"\n{title}: {total:.2f} s")
    steps = {k: v for k, v in T.items() if not k.startswith("numba")}
    for label, s in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"  {label:<50}{s:7.2f} s")
    print(f"  {'rest':<50}{total - sum(steps.values()):7.2f} s")
    for label, s in T.items():
        if label.startswith("numba"):
            print(f"  {'(within the steps) ' + label:<50}{s:7.2f} s")
    T.clear()


def show_overlapped(title: str, total: float, cpu: float) -> None:
    """The seal: passes by wall time, then each step's CPU and summed wall seconds (threads overlap)."""
    print(f"\n{title}: {total:.2f} s wall, {cpu:.2f} s CPU (process)")
    passes = {k: v for k, v in T.items() if k.startswith("pass:")}
    for label, s in passes.items():
        print(f"  {label:<50}{s:7.2f} s")
    print(f"  {'rest (opening, header, final flush)':<50}{total - sum(passes.values()):7.2f} s")
    print(f"  {'step':<50}{'CPU s':>7}  {'wall s, summed over threads':>28}")
    for label, s in sorted(CPU.items(), key=lambda kv: -kv[1]):
        if not label.startswith("pass:"):
            print(f"  {label:<50}{s:7.2f}  {T[label]:28.2f}")
    T.clear()
    CPU.clear()


def timed_call(label: str, f: Any, *a: Any) -> Any:
    """``f(*a)``, its wall time added to ``T[label]``."""
    t0 = time.perf_counter()
    try:
        return f(*a)
    finally:
        T[label] += time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--recover", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.recover:
        recover_phases(a.recover)
        return
    if not (math.isfinite(a.size_gib) and a.size_gib > 0):
        ap.error(f"--size-gib must be a positive number of GiB, not {a.size_gib}")
    if a.dir is not None and not a.dir.is_dir():
        ap.error(f"--dir {a.dir} is not an existing folder")
    work = a.dir or Path(tempfile.mkdtemp(prefix="paramseal-phases-"))
    model, sealed, bad = work / "model.safetensors", work / "sealed.safetensors", work / "bad.safetensors"
    try:
        phases(model, sealed, bad, a.size_gib)
    finally:  # three files of the model's size: removed however the run ends
        for f in (model, sealed, bad):
            f.unlink(missing_ok=True)
        if a.dir is None:
            shutil.rmtree(work, ignore_errors=True)


def phases(model: Path, sealed: Path, bad: Path, size_gib: float) -> None:
    """Seal ``model`` with step timers, then recover a tampered copy in place in a fresh process."""
    key = Key.generate()
    bench_core.write_checkpoint(model, size_gib)
    os.sync()

    seal = importlib.import_module("paramseal._sealing")
    timed(_strata.Strata, "pad", "keyed offset (AES-CTR)")
    timed(_strata.Strata, "seal_words", "gather (read words, offset, mask)")
    timed(_outer.Outer, "content", "outer code: content")
    timed(_outer.Outer, "parity", "outer code: parity (leopard)")
    timed(_irs, "encode", "inner encode")
    timed(_strata.Strata, "scatter", "scatter (placement, write)")
    timed(seal, "read_blocks", "tag pass: read back")
    timed(seal, "_tag_chunk", "tag pass: tags")
    timed(seal, "write_blocks", "tag pass: write")
    timed(seal, "write_behind", "tag pass: start writing to disk")
    passes = iter(["pass: superblocks (two at a time)", "pass: tag chunks (two at a time)"])
    real_task_map = seal.task_map
    seal.task_map = lambda fn, items: timed_call(next(passes), real_task_map, fn, items)
    t0, c0 = time.perf_counter(), time.process_time()
    files.seal_file(model, sealed, key, progress=False)
    show_overlapped(
        f"seal of {model.stat().st_size / 2**30:.2f} GiB", time.perf_counter() - t0, time.process_time() - c0
    )

    bench_core.tamper(sealed, bad, "bitflips", 7)
    os.sync()
    # recover in a fresh process, as a user runs it: this one has loaded numba and the tables already
    env = {**os.environ, "PARAMSEAL_KEY": key.secret.hex()}
    subprocess.run([sys.executable, os.path.abspath(__file__), "--recover", str(bad)], env=env, check=True)


def recover_phases(path: Path) -> None:
    """The in-place recover of ``path`` with step timers (key from PARAMSEAL_KEY)."""
    first_kernel_load()
    timed(_file_header, "check", "check (verify)")
    timed(_irs, "code_for", "code tables")
    timed(_irs, "decode", "decode")
    timed(_strata.Strata, "groups", "gather the damaged groups")
    timed(_recover_file, "patch_in_place", "write the rebuilt blocks")
    t0 = time.perf_counter()
    res = files.recover_file(path, path, load_key(None), in_place=True, progress=False)
    show(f"recover --in-place of 100 bit flips, fresh process ({res.report.status})", time.perf_counter() - t0)


if __name__ == "__main__":
    main()
