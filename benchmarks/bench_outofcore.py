#!/usr/bin/env python3
"""Out-of-core benchmark: seal, verify and recover a checkpoint larger than comfortable for RAM.

Usage::

    python benchmarks/bench_outofcore.py --size-gib 14 [--dir SCRATCH] [--keep]

It streams a synthetic LLaMA-shaped fp32 safetensors checkpoint to disk (the
shapes of ``bench_core.llm_shapes``, values ~ N(0, 0.02), written a tensor slice
at a time so the generator itself stays small), then runs, each in a fresh
worker process whose peak RSS (VmHWM) is read at the end (its time is the call, after
the imports, for SHA-256 and ParamSeal alike):

* SHA-256 of the sealed file (8 MiB reads), the baseline and the reference hash;
* ``files.seal_file`` of the checkpoint (the input is deleted afterwards to save disk);
* ``files.verify_file`` of the sealed file;
* ``files.verify_file --tensors`` on one layer (partial verification; its MB/s counts
  only that layer's bytes, the data it checks);
* 1000 single-bit flips written into the sealed file in place, then
  ``files.recover_file`` to a new file, whose data section must hash like the sealed one.

It prints time, MB/s, peak RSS and the bound: the largest tensor plus 512 MiB (what
the issue set), plus the scratch budget for lane stores kept in memory
(``PARAMSEAL_SCRATCH_MIB``, default 1024; run with ``PARAMSEAL_SCRATCH_MIB=0`` for
the streaming-only bound). Disk needed: about 3x the checkpoint (sealed, recovered,
and the lane store while sealing).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import llm_shapes  # noqa: E402

MIB = 1 << 20
SEED = 20261130


def write_checkpoint(path: Path, size_gib: float) -> tuple[int, int]:
    """Stream the checkpoint to ``path``; returns (bytes, largest tensor bytes)."""
    from paramseal._pages import release
    from paramseal.formats.safetensors import StreamWriter, header_room

    shapes, _ = llm_shapes(int(size_gib * (1 << 30)) // 4)
    entries = [(n, "F32", s) for n, s in shapes]
    w = StreamWriter(path, entries, header_room(entries, {"format": "pt"}))
    rng = np.random.default_rng(SEED)
    largest = 0
    for name, _ in shapes:
        flat = w.array(name).reshape(-1)
        largest = max(largest, flat.nbytes)
        for i in range(0, flat.size, 8 << 20):
            part = rng.standard_normal(min(8 << 20, flat.size - i), dtype=np.float32) * np.float32(0.02)
            if name.endswith("norm.weight"):
                part += np.float32(1.0)
            flat[i : i + part.size] = part
            release(flat[i : i + part.size])
    w.finish({"format": "pt"})
    return path.stat().st_size, largest


WORKER = r"""
import json, os, sys, time, hashlib
from pathlib import Path
op, a, b = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if op not in ("sha256", "data-sha256"):  # imported before the timer, as hashlib is for the baseline
    from paramseal import Key, files
t0 = time.perf_counter()
if op in ("sha256", "data-sha256"):
    h = hashlib.sha256()
    with open(a, "rb") as f:
        if op == "data-sha256":  # the tensor data only: header padding differs between writers
            f.seek(8 + int.from_bytes(f.read(8), "little"))
        while chunk := f.read(8 << 20):
            h.update(chunk)
    out = h.hexdigest()
else:
    key = Key(bytes.fromhex(os.environ["BENCH_KEY"]))
    if op == "seal":
        out = files.seal_file(a, b, key).header.lanes
    elif op == "verify":
        out = files.verify_file(a, key, tensors=os.environ.get("BENCH_PATTERN") or None).status
    else:
        r = files.recover_file(a, b, key).report
        out = [r.status, r.restored_count]
dt = time.perf_counter() - t0
hwm = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
print(json.dumps({"out": out, "seconds": dt, "peak": hwm}))
"""


def run(op: str, a: Path, b: Path, env: dict[str, str]) -> dict[str, object]:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", WORKER, op, str(a), str(b)], env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{op} failed:\n{p.stderr[-3000:]}")
    r: dict[str, object] = json.loads(p.stdout.strip().splitlines()[-1])
    r["process_seconds"] = time.perf_counter() - t
    return r


def flip_bits(path: Path, n: int, seed: int) -> list[int]:
    """Flip ``n`` random bits of the data section in place (pwrite); returns the byte offsets."""
    with open(path, "r+b") as f:
        hlen = int.from_bytes(f.read(8), "little")
        start, end = 8 + hlen, path.stat().st_size
        rng = np.random.default_rng(seed)
        offs = sorted(set(int(x) for x in rng.integers(start, end, n)))
        for off in offs:
            b = os.pread(f.fileno(), 1, off)[0] ^ (1 << int(rng.integers(8)))
            os.pwrite(f.fileno(), bytes([b]), off)
    return offs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=14.0)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if not (math.isfinite(args.size_gib) and args.size_gib > 0):
        ap.error(f"--size-gib must be a positive number of GiB, not {args.size_gib}")
    if args.dir is not None and not args.dir.is_dir():
        ap.error(f"--dir {args.dir} is not an existing folder")
    shapes, dims = llm_shapes(int(args.size_gib * (1 << 30)) // 4)
    pattern = f"model.layers.{min(3, dims['layers'] - 1)}.*"  # a small model may have fewer than 4 layers
    layer_bytes = sum(4 * int(np.prod(s)) for n, s in shapes if fnmatch.fnmatchcase(n, pattern))
    folder = Path(tempfile.mkdtemp(prefix="paramseal-ooc-", dir=args.dir))
    env = {**os.environ, "BENCH_KEY": os.urandom(32).hex()}
    try:
        src, sealed, fixed = folder / "model.safetensors", folder / "sealed.safetensors", folder / "fixed.safetensors"
        t = time.perf_counter()
        size, largest = write_checkpoint(src, args.size_gib)
        print(
            f"checkpoint : {size / (1 << 30):.2f} GiB, largest tensor {largest / MIB:.0f} MiB "
            f"(written in {time.perf_counter() - t:.0f} s)"
        )
        from paramseal._pages import scratch_budget

        budget = scratch_budget()
        bound = largest + 512 * MIB + budget
        # (label, result, bytes the operation covers: the whole file but for the partial verify)
        rows = [("seal", run("seal", src, sealed, env), size)]
        src.unlink()
        rows.append(("sha256 (baseline)", run("sha256", sealed, sealed, env), size))
        ref = run("data-sha256", sealed, sealed, env)["out"]
        rows.append(("verify", run("verify", sealed, sealed, env), size))
        env_p = {**env, "BENCH_PATTERN": pattern}
        rows.append((f"verify --tensors '{pattern}'", run("verify", sealed, sealed, env_p), layer_bytes))
        flips = len(flip_bits(sealed, 1000, 1))  # distinct bytes: a small file may draw one twice
        rows.append((f"recover ({flips} bit flips)", run("recover", sealed, fixed, env), size))
        same = run("data-sha256", fixed, fixed, env)["out"] == ref
        sha_s = float(rows[1][1]["seconds"])  # type: ignore[arg-type]
        print(
            f"bound      : peak RSS < largest tensor + 512 MiB + scratch budget {budget / MIB:.0f} MiB "
            f"= {bound / MIB:.0f} MiB"
        )
        print(f"{'operation':<38} {'s':>8} {'MB/s':>8} {'x SHA':>7} {'peak RSS MiB':>13}  result")
        for name, r, nbytes in rows:
            s = float(r["seconds"])  # type: ignore[arg-type]
            peak = int(r["peak"])  # type: ignore[call-overload]
            ok = "within bound" if peak < bound else "OVER BOUND"
            print(f"{name:<38} {s:8.1f} {nbytes / s / 1e6:8.0f} {sha_s / s:7.2f} {peak / MIB:13.0f}  {r['out']} ({ok})")
        print(f"MB/s: bytes covered / s (the partial verify: its {layer_bytes / MIB:.0f} MiB); x SHA: time ratio")
        print(f"recovered tensor data identical to the sealed file's (SHA-256 of the data sections): {same}")
        status = rows[-1][1]["out"][0]  # type: ignore[index]
        if not same or status != "recovered":
            print(f"FAILED: recover said {status!r}; its data section {'matches' if same else 'differs'}")
            return 1
        return 0
    finally:
        if args.keep:
            print(f"files kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
