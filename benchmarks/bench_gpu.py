#!/usr/bin/env python3
"""GPU in-memory verification speed: ``paramseal.gpu.GpuVerifier.check()`` against a device copy.

Usage (on a machine with a CUDA GPU)::

    python benchmarks/bench_gpu.py [--gib 4] [--bf16-gib 2] [--probe-gib 1] [--json OUT.json]

For each model it builds a LLaMA-shaped state (``bench_core.llm_shapes``; values
N(0, 0.02) drawn on the GPU, fixed seed), seals it with ``paramseal.seal`` on the
CPU (numba on every core; the seal time is printed), moves the sealed tensors to
the GPU and times, each the best and median of ``--repeat`` runs after a warm-up,
with ``torch.cuda.synchronize`` around ``time.perf_counter``:

* ``check()``: the whole call a user makes (structure check, one kernel launch per device, block size
  and k, the count of failing blocks and its transfer to the host);
* kernels: only the kernel launches (the grouped ones; per tensor where grouping is off), timed with
  CUDA events;
* copy: ``dst.copy_(src)`` of one flat buffer of the same bytes (reads and writes
  them: the reference for a pass over the weights).

Throughput is bytes of weights per second (1 TB = 10**12 bytes). The first model
(``--probe-gib``, fp32) is sealed first to measure the seal time; larger models
are shrunk to fit ``--seal-budget-s``. Every model is then tampered with (random
single-bit flips, one in a tag) and the failing blocks on the GPU are compared
with ``paramseal.verify`` on a host copy of the same weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_core import llm_shapes  # noqa: E402

import paramseal  # noqa: E402
from paramseal import gpu  # noqa: E402
from paramseal.formats.pytorch import numpy_to_tensor, tensor_to_numpy  # noqa: E402

GB = 1e9
TB = 1e12
DEVICE = "cuda"  # --device cpu: a dry run of the script itself (torch engine, tiny sizes)


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def build(gib: float, dtype: torch.dtype, seed: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Host arrays of a LLaMA-shaped model of about ``gib`` GiB, drawn on the GPU (fast), in ``dtype``."""
    size = torch.empty((), dtype=dtype).element_size()
    shapes, dims = llm_shapes(int(gib * 2**30 / size))
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    out = {}
    for name, shape in shapes:
        t = (torch.randn(shape, generator=g, device=DEVICE, dtype=torch.float32) * 0.02).to(dtype)
        out[name] = tensor_to_numpy(t, name)
    return out, dims


def timed(fn: Any, repeat: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def event_timed(fn: Any, repeat: int, warmup: int = 2) -> list[float]:
    if DEVICE != "cuda":
        return timed(fn, repeat, warmup)
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) / 1e3)
    return out


def copy_times(nbytes: int, repeat: int) -> list[float]:
    """Times of ``dst.copy_(src)`` for one flat buffer of ``nbytes`` on the device."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src)
    return timed(lambda: dst.copy_(src), repeat)


def row(label: str, nbytes: int, times: list[float], copy_best: float | None) -> dict[str, Any]:
    best, med = min(times), statistics.median(times)
    r = {
        "what": label,
        "best_s": best,
        "median_s": med,
        "tb_s_best": nbytes / best / TB,
        "tb_s_median": nbytes / med / TB,
    }
    if copy_best is not None:
        r["vs_copy"] = copy_best / best
    print(
        f"  {label:<34} best {best * 1e3:8.3f} ms  median {med * 1e3:8.3f} ms  "
        f"{r['tb_s_best']:6.3f} TB/s (median {r['tb_s_median']:6.3f})"
        + (f"  {r['vs_copy']:.2f}x copy" if copy_best is not None else ""),
        flush=True,
    )
    return r


def tamper_matches_cpu(
    state: dict[str, torch.Tensor], v: gpu.GpuVerifier, key: paramseal.Key, header: str, seed: int
) -> dict[str, Any]:
    """Flip random bits (one in a tag), compare GPU failing blocks with the CPU engine's, then undo."""
    rng = np.random.default_rng(seed)
    names = list(state)
    flips = []
    for i in range(8):
        name = names[int(rng.integers(len(names)))]
        t = state[name]
        index = 0 if i == 0 else int(rng.integers(t.numel()))  # value 0 keeps tag bits
        bit = 0 if i == 0 else int(rng.integers(t.element_size() * 8))
        flips.append((name, index, bit))
    for name, index, bit in flips:
        _flip(state[name], index, bit)
    got = v.check()
    rep = paramseal.verify({n: tensor_to_numpy(t, n) for n, t in state.items()}, key, header)
    want = {n: f.tampered_blocks for n, f in rep.tensors.items() if f.tampered_blocks}
    for name, index, bit in flips:
        _flip(state[name], index, bit)
    restored = v.check().ok
    same = dict(got.blocks) == want
    print(
        f"  tampered copy: {got.failing} failing blocks on GPU, identical to CPU: {same}; restored intact: {restored}"
    )
    return {"flips": flips, "gpu_failing": got.failing, "identical_to_cpu": same, "restored_ok": restored}


def _flip(t: torch.Tensor, index: int, bit: int) -> None:
    flat = t.reshape(-1).view(torch.uint8)
    flat[index * t.element_size() + bit // 8] ^= 1 << (bit % 8)


def bench_model(
    label: str, gib: float, dtype: torch.dtype, args: argparse.Namespace, key: paramseal.Key, sweep_tiles: bool
) -> dict[str, Any]:
    t0 = time.perf_counter()
    arrays, dims = build(gib, dtype, seed=len(label))
    t_build = time.perf_counter() - t0
    nbytes = sum(a.nbytes for a in arrays.values())
    print(f"\n{label}: {nbytes / 2**30:.2f} GiB, {len(arrays)} tensors, {dims}; built in {t_build:.1f} s", flush=True)
    t0 = time.perf_counter()
    sealed = paramseal.seal(arrays, key)
    t_seal = time.perf_counter() - t0
    print(f"  seal on the CPU ({os.cpu_count()} cores): {t_seal:.1f} s ({nbytes / t_seal / GB:.2f} GB/s)", flush=True)
    del arrays
    state = {n: numpy_to_tensor(a).to(DEVICE) for n, a in sealed.tensors.items()}
    header = sealed.header_json
    del sealed
    t0 = time.perf_counter()
    v = gpu.GpuVerifier(state, key, header)
    t_build_v = time.perf_counter() - t0
    print(f"  GpuVerifier built in {t_build_v:.2f} s (pads, keys, masks derived and uploaded)", flush=True)
    engine = "triton" if DEVICE == "cuda" and gpu.triton_available() else "torch ops"
    first = time.perf_counter()
    try:
        ok = v.check().ok
    except Exception as e:  # noqa: BLE001 - a grouped-kernel failure must not lose the rest of the run
        print(f"  grouped check failed: {type(e).__name__}: {e}; going on with one launch per tensor", flush=True)
        gpu.GROUPED = False
        ok = v.check().ok
    assert ok, "the sealed model does not verify on the GPU"
    print(f"  first check (compiles the kernel): {time.perf_counter() - first:.2f} s", flush=True)

    copy_t = copy_times(nbytes, args.repeat)
    rows = [row("device copy (baseline)", nbytes, copy_t, None)]
    copy_best = min(copy_t)
    grouped = gpu.GROUPED
    rows.append(row(f"check() [{engine}, grouped={grouped}]", nbytes, timed(v.check, args.repeat), copy_best))
    if grouped:
        gpu.GROUPED = False
        v.check()
        rows.append(row(f"check() [{engine}, one launch/tensor]", nbytes, timed(v.check, args.repeat), copy_best))
        gpu.GROUPED = True
    plans = v._plans

    def per_tensor() -> None:
        for p in plans:
            v._run(p, state[p.spec.name])

    def grouped_only() -> None:
        for g in v._groups:
            g.launch(state, gpu.tile(g.plans[0].words))

    kernels = grouped_only if grouped and DEVICE == "cuda" else per_tensor
    rows.append(row("kernels only (CUDA events)", nbytes, event_timed(kernels, args.repeat), copy_best))
    sweep = []
    if args.sweep and sweep_tiles and DEVICE == "cuda":
        default = (gpu.BLOCKS_PER_PROGRAM, gpu.NUM_WARPS)
        print(f"  default tile: {gpu.tile(v._plans[0].words)} (blocks/program, warps)")
        for bpp, warps in [(8, 1), (16, 2), (32, 2), (32, 4), (64, 2), (64, 4), (128, 8)]:
            gpu.BLOCKS_PER_PROGRAM, gpu.NUM_WARPS = bpp, warps
            try:
                times = event_timed(kernels, args.repeat)
                sweep.append(
                    {
                        "bpp": bpp,
                        "warps": warps,
                        **row(f"  kernels, {bpp}/prog, {warps} warps", nbytes, times, copy_best),
                    }
                )
            except Exception as e:  # noqa: BLE001 - report and go on
                print(f"  {bpp}/{warps}: failed: {type(e).__name__}: {e}", flush=True)
        gpu.BLOCKS_PER_PROGRAM, gpu.NUM_WARPS = default
    vt = gpu.GpuVerifier(state, key, header, backend="torch")
    rows.append(row("check() [plain torch ops]", nbytes, timed(vt.check, 3, warmup=1), copy_best))
    tamper = tamper_matches_cpu(state, v, key, header, seed=7)
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return {
        "label": label, "bytes": nbytes, "tensors": len(plans), "dims": dims, "build_s": t_build, "seal_s": t_seal,
        "verifier_build_s": t_build_v, "rows": rows, "sweep": sweep, "tamper": tamper,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=None, help="fp32 model size (GiB; default 4, 0.01 on cpu)")
    ap.add_argument(
        "--bf16-gib", type=float, default=None, help="bf16 model size (GiB; default 2, 0.01 on cpu); 0 to skip"
    )
    ap.add_argument(
        "--probe-gib", type=float, default=None, help="fp32 model sealed first to time sealing (default 1, 0.01 on cpu)"
    )
    ap.add_argument("--seal-budget-s", type=float, default=120.0, help="shrink later models to seal within this")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the tile-size sweep")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--device", default="cuda", help="cpu: dry-run this script without a GPU (tiny sizes)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    # the dry run's sizes are tiny unless given: the GPU sizes took minutes per check on 2 cores
    for name, on_gpu in (("gib", 4.0), ("bf16_gib", 2.0), ("probe_gib", 1.0)):
        if getattr(args, name) is None:
            setattr(args, name, on_gpu if DEVICE == "cuda" else 0.01)
    if DEVICE == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu needs a CUDA GPU (or --device cpu for a dry run)")
    key = paramseal.Key.generate()
    env = {
        "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "none (dry run)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "triton": gpu.triton_available(),
        "cpus": os.cpu_count(),
        "commit": os.environ.get("PARAMSEAL_COMMIT")
        or os.popen("git rev-parse --short HEAD 2>/dev/null").read().strip(),
    }
    print(json.dumps(env), flush=True)
    results = [bench_model(f"fp32 {args.probe_gib:g} GiB", args.probe_gib, torch.float32, args, key, False)]
    per_gib = results[0]["seal_s"] / (results[0]["bytes"] / 2**30)
    for label, gib, dt in (("fp32", args.gib, torch.float32), ("bf16", args.bf16_gib, torch.bfloat16)):
        if gib <= 0:
            continue
        fit = args.seal_budget_s / (per_gib * (1.6 if dt == torch.bfloat16 else 1.0))  # bf16 seals slower per byte
        if gib > fit:
            print(f"\n{label} {gib:g} GiB would take ~{gib * per_gib:.0f} s to seal: shrunk to {fit:.1f} GiB")
            gib = round(fit, 1)
        results.append(bench_model(f"{label} {gib:g} GiB", gib, dt, args, key, True))
    if args.json:
        args.json.write_text(json.dumps({"env": env, "results": results}, indent=2))


if __name__ == "__main__":
    main()
