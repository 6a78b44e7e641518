#!/usr/bin/env python3
"""Where the time of an irs4 seal and of a light in-place recover goes, step by step.

Usage::

    python benchmarks/seal_phases.py [--size-gib 1.0] [--dir SCRATCH]
    python benchmarks/seal_phases.py --heavy [--size-gib 0.5] [--dir SCRATCH]

Writes the LLaMA-shaped fp32 checkpoint of ``bench_core.py``, then, in this one process:

* seals it file to file with a timer around each step of the engine (keyed offset, gather,
  outer content (made by the gather where every stratum is a float one, else a pass of its own inside
  it) and parity, inner encode, or inner encode and placement in one pass, scatter, the
  tags written in the staged strata (whole blocks, and the blocks a row cuts once all their parts are
  staged), the requests to start writing to disk, the short tag pass after the superblocks
  (reserved and short blocks), the code tables and the encoder's linear map as they are built, and
  the final flush; within the scatter, its placement, its tags and its writes, shown as "of which").
  The seal runs its superblocks, then its tag chunks, two (one per core) at a time, so the
  steps overlap: for each one it prints the CPU seconds of the threads that ran it and the
  summed wall seconds, and for the whole the wall seconds of the superblock pass, the tag
  pass and the rest (opening, the header and the final flush to disk);
* flips 100 random bits in a copy of the sealed file and recovers it in place in a fresh
  process (as a user runs it), timing the check, the gather of the damaged groups, the code
  tables, the decode and the numba kernels the decoder loads.

With ``--heavy`` instead: seals the checkpoint (untimed), damages a copy with 1% scattered and then a copy
with 1% contiguous damage (``bench_core.tamper``, seed 1) and recovers each to a new file in a fresh
process, timing its phases in the main thread (check, decode and rebuild, report, write; wall seconds and
the process's CPU seconds, which include the input's copy made beside the output meanwhile) and, within the
decode and rebuild, the steps its batches run side by side (gather of the damaged groups, keyed offset,
syndromes, compiled decode, rebuild of the failed blocks; CPU seconds of the calling threads and wall
seconds summed over them). Each output is then compared with the sealed file, value for value.

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

from paramseal import (  # noqa: E402
    Key,
    _file_header,
    _irs,
    _irs_recover,
    _native,
    _native_strata,
    _outer,
    _pages,
    _recover_file,
    _seal_tags,
    _strata,
    files,
    load_key,
)

T: collections.Counter[str] = collections.Counter()  # wall seconds per label (summed over threads)
CPU: collections.Counter[str] = collections.Counter()  # CPU seconds of the calling threads per label
LOCK = threading.Lock()


def _wrap(owner: Any, name: str, clock: Any, add: Any) -> None:
    """Wrap ``owner.name`` so that each call's wall seconds and ``clock`` seconds go to ``add(wall, cpu)``."""
    f = getattr(owner, name)

    @functools.wraps(f)
    def g(*a: Any, **k: Any) -> Any:
        t0, c0 = time.perf_counter(), clock()
        try:
            return f(*a, **k)
        finally:
            add(time.perf_counter() - t0, clock() - c0)

    for attr in ("cache_info", "cache_clear"):  # an lru_cache'd step keeps them: the package reads its misses
        if hasattr(f, attr):
            setattr(g, attr, getattr(f, attr))
    setattr(owner, name, g)


def timed(owner: Any, name: str, label: str) -> None:
    """Wrap ``owner.name`` so that its wall time adds to ``T[label]`` and its thread's CPU time to ``CPU[label]``.

    The CPU time is the calling thread's: a step that hands work to the kernel pool shows less
    CPU than it caused. In the seal's tasks the pool is not used (their kernels run inline).
    """

    def add(wall: float, cpu: float) -> None:
        with LOCK:
            T[label] += wall
            CPU[label] += cpu

    _wrap(owner, name, time.thread_time, add)


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
    ap.add_argument("--size-gib", type=float, default=None, help="default 1.0, with --heavy 0.5")
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--heavy", action="store_true", help="the heavy-recover breakdown (1%% scattered, 1%% contiguous)")
    ap.add_argument("--recover", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--recover-heavy", type=Path, nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.recover:
        recover_phases(a.recover)
        return
    if a.recover_heavy:
        heavy_recover_phases(*a.recover_heavy)
        return
    if a.size_gib is None:
        a.size_gib = 0.5 if a.heavy else 1.0
    if not (math.isfinite(a.size_gib) and a.size_gib > 0):
        ap.error(f"--size-gib must be a positive number of GiB, not {a.size_gib}")
    if a.dir is not None and not a.dir.is_dir():
        ap.error(f"--dir {a.dir} is not an existing folder")
    work = a.dir or Path(tempfile.mkdtemp(prefix="paramseal-phases-"))
    model, sealed, bad = work / "model.safetensors", work / "sealed.safetensors", work / "bad.safetensors"
    out = work / "recovered.safetensors"
    try:
        if a.heavy:
            heavy(model, sealed, bad, out, a.size_gib)
        else:
            phases(model, sealed, bad, a.size_gib)
    finally:  # files of the model's size: removed however the run ends
        for f in (model, sealed, bad, out):
            f.unlink(missing_ok=True)
        if a.dir is None:
            shutil.rmtree(work, ignore_errors=True)


def seal_steps(seal: Any) -> list[tuple[Any, str, str]]:
    """The seal's steps ``phases`` times: (owner, attribute, label); ``seal`` is ``paramseal._sealing``."""
    return [  # with VAES the gather and the one pass make the offset themselves (_strata_map.Offset): "pad" shows 0
        (_strata.Strata, "pad", "keyed offset (AES-CTR)"),
        (_strata.Strata, "seal_words", "gather (read words, offset, mask; outer content if F = 255)"),
        (_outer.Outer, "content", "  of which outer content, a pass of its own (F < 255)"),
        (_outer.Outer, "parity", "outer code: parity"),
        (_irs, "encode", "inner encode"),
        (_strata.Strata, "encode_placed", "inner encode and placement, one pass (linear map)"),
        (_strata.Strata, "scatter", "scatter (placement, write)"),
        (_native_strata, "to_strata", "  of which placement (ps_to_strata; none after the one pass)"),
        (_native_strata, "put_strata", "  of which writes (ps_put_strata)"),
        (_seal_tags.InPass, "tag", "  of which tags (whole blocks, cut blocks' parts)"),
        (_seal_tags, "start_writing", "start writing to disk (superblock pass)"),
        (_seal_tags.InPass, "rest", "tag pass: reserved and short blocks"),
        (seal, "read_blocks", "tag pass (other tensors): read back"),
        (seal, "_tag_chunk", "tag pass (other tensors): tags"),
        (seal, "write_blocks", "tag pass (other tensors): write"),
        (seal, "write_behind", "tag pass (other tensors): start writing to disk"),
        (_irs, "code_for", "code tables (_irs.code_for)"),
        (_native, "_affine_built", "encoder's linear map (_affine_built)"),
        (_pages.Mapping, "flush", "final flush (msync of the output's mapping)"),
    ]


def phases(model: Path, sealed: Path, bad: Path, size_gib: float) -> None:
    """Seal ``model`` with step timers, then recover a tampered copy in place in a fresh process."""
    key = Key.generate()
    bench_core.write_checkpoint(model, size_gib)
    os.sync()

    seal = importlib.import_module("paramseal._sealing")
    for owner, name, label in seal_steps(seal):
        timed(owner, name, label)
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


def load() -> str:
    """The load average (1, 5, 15 minutes): wall seconds on a shared machine depend on it."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def heavy(model: Path, sealed: Path, bad: Path, out: Path, size_gib: float) -> None:
    """Seal ``model``; recover a copy with 1% scattered, then one with 1% contiguous damage, in fresh processes."""
    key = Key.generate()
    bench_core.write_checkpoint(model, size_gib)
    files.seal_file(model, sealed, key, progress=False)
    model.unlink()
    print(f"paramseal {os.path.dirname(importlib.import_module('paramseal').__file__ or '')}, {load()}")
    env = {**os.environ, "PARAMSEAL_KEY": key.secret.hex()}
    inexact = []
    for kind in ("scattered", "contiguous"):
        desc = bench_core.tamper(sealed, bad, kind, 1)
        os.sync()
        print(f"\n1% {kind}: {desc}", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--recover-heavy", str(bad), str(out)]
        subprocess.run(cmd, env=env, check=True)
        exact, ndiff = bench_core.compare_to_sealed(sealed, out) if out.exists() else (False, -1)
        print("  output: " + ("bit-exact to the sealed file" if exact else f"NOT the sealed file ({ndiff:,} values)"))
        inexact += [] if exact else [kind]
        out.unlink(missing_ok=True)
    print(f"\n{load()}")
    if inexact:
        sys.exit(f"not bit-exact: {', '.join(inexact)}")


def phase(owner: Any, name: str, label: str, spent: dict[str, list[float]]) -> None:
    """Wrap ``owner.name`` so that its wall time and the process's CPU time add to ``spent[label]``."""

    def add(wall: float, cpu: float) -> None:
        w = spent.setdefault(label, [0.0, 0.0])
        w[0] += wall
        w[1] += cpu

    _wrap(owner, name, time.process_time, add)


def heavy_recover_phases(src: Path, dst: Path) -> None:
    """The recover of ``src`` to ``dst`` with phase and step timers (key from PARAMSEAL_KEY)."""
    from paramseal import _native, _patch

    recover = importlib.import_module("paramseal.recover")  # the package's `recover` is a function

    spent: dict[str, list[float]] = {}
    phase(_recover_file, "check_loaded", "check (verify)", spent)
    phase(recover, "report_of", "report", spent)
    phase(recover, "_conclude", "report", spent)
    for name in ("patch_copy", "patch_in_place", "write_recovered"):
        phase(_recover_file, name, "write (patch the input's copy, or write)", spent)
    phase(_patch.Precopy, "join", "wait for the input's copy", spent)
    timed(_strata.Strata, "groups", "gather the damaged groups' words and flags")
    timed(_strata.Strata, "pad", "keyed offset")
    timed(_native, "syndromes", "syndromes (compiled)")
    timed(_native, "decode", "decode (compiled)")
    timed(_irs_recover, "_rebuild", "rebuild the failed blocks (copy, header copy, tags)")
    real_decode_check = _irs_recover.decode_check
    steps: dict[str, tuple[float, float]] = {}

    def decode_check(*a: Any, **k: Any) -> Any:
        T.clear()  # steps timed before (a check's) are not the decode's
        CPU.clear()
        try:
            return real_decode_check(*a, **k)
        finally:
            steps.update({label: (CPU[label], T[label]) for label in T})

    _irs_recover.decode_check = decode_check
    phase(_irs_recover, "decode_check", "decode and rebuild (decode_check)", spent)

    t0, c0 = time.perf_counter(), time.process_time()
    res = files.recover_file(src, dst, load_key(None), progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    lib = "compiled library" if _native.available() else "numba kernels (no compiled library)"
    print(f"recover to a new file, fresh process ({res.report.status}, {lib}): {wall:.2f} s wall, {cpu:.2f} s CPU")
    print(f"  {'phase (main thread)':<58}{'wall s':>7}{'CPU s':>8}")
    for label, (w, c) in spent.items():
        print(f"  {label:<58}{w:7.2f}{c:8.2f}")
    print(f"  {'rest (opening, metadata, rename)':<58}{wall - sum(w for w, _ in spent.values()):7.2f}", end="")
    print(f"{cpu - sum(c for _, c in spent.values()):8.2f}")
    print(f"  {'within decode and rebuild, step (threads side by side)':<58}{'CPU s':>7}{'wall s, summed':>16}")
    for label, (c, w) in sorted(steps.items(), key=lambda kv: -kv[1][0]):
        print(f"  {label:<58}{c:7.2f}{w:16.2f}")
    dc = spent.get("decode and rebuild (decode_check)", [0.0, 0.0])[1]
    rest = "rest: batches' numpy steps, other threads (input's copy)"
    print(f"  {rest:<58}{dc - sum(c for c, _ in steps.values()):7.2f}")


if __name__ == "__main__":
    main()
