#!/usr/bin/env python3
"""The compiled kernels against their numba references, on random data of the given size.

Usage::

    python benchmarks/bench_kernels.py [--mib 256] [--repeats 3]

Prints seconds per GiB (best of ``--repeats``, after one untimed warm-up call) for the irs4
inner encoder at k = 8, 12, 16
(host 2, all 255 positions fp32), the decoder's syndromes (every group, as a heavy-damage
recover computes them), a whole decode of groups with 3 replaced words each (compiled: the
syndromes and the decoder), the block MAC's hash, and the lane code's data movers and
permutation sort on bf16-shaped data (per GiB of bf16 model; the sort against numpy's stable
argsort), each with the compiled library and with numba, in the same run, and checks that both
give the same output. With GFNI, the rows under each encoder time its two compiled forms alternated
(best of each): as one linear map (`_gfni_affine`, what seals use) and by syndromes (with the ratio to
the row above), and where the syndromes skip the free bytes (k = 8 and 12, `_gfni_plan._compact`) the
syndromes multiplying every byte; "True" at the end: all gave the same output.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time
from collections.abc import Callable, Iterator

import numpy as np

from paramseal import _gfni_plan, _irs, _irs_consts, _irs_kernels, _kernels, _native, _native_blocks, _outer


def best(fn: Callable[[], object], repeats: int) -> float:
    """Best of ``repeats`` timed calls after one untimed call (numba's kernel load, the compiled tables)."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


@contextlib.contextmanager
def settings(mode: dict[str, bool]) -> Iterator[None]:
    """`_native`'s switches set as ``mode`` inside."""
    saved = {name: getattr(_native, name) for name in mode}
    try:
        for name, value in mode.items():
            setattr(_native, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(_native, name, value)


def switched(fn: Callable[[], object], repeats: int, modes: list[dict[str, bool]]) -> list[float]:
    """Best of ``repeats`` calls of ``fn`` under each of ``modes`` (`settings`), alternated: the host drifts."""
    out: list[list[float]] = [[] for _ in modes]
    for _ in range(repeats + 1):
        for i, mode in enumerate(modes):
            with settings(mode):
                t0 = time.perf_counter()
                fn()
                out[i].append(time.perf_counter() - t0)
    return [min(ts[1:]) for ts in out]


def encode_from(code: _irs.Code, x: np.ndarray, w0: np.ndarray) -> None:
    """``x`` = ``w0``, then encoded in place by the compiled encoder."""
    np.copyto(x, w0)
    _native.encode(code, x)


@contextlib.contextmanager
def numba_only() -> Iterator[None]:
    """Every kernel call inside falls back to numba (the compiled library looks absent)."""
    real = _native._load, _native._lib
    _native._load = _native._lib = lambda: None  # type: ignore[assignment]
    try:
        yield
    finally:
        _native._load, _native._lib = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if a.mib < 1:
        ap.error(f"--mib must be at least 1, not {a.mib}")
    if a.repeats < 1:
        ap.error(f"--repeats must be at least 1, not {a.repeats}")
    if not _native.portable():
        raise SystemExit("the compiled library is not available here (install with a C compiler present)")
    how = "GFNI and AVX-512" if _native.available() else "nibble tables (this CPU has no GFNI/AVX-512)"
    print(f"irs4 coding kernels: {how}")
    rng = np.random.default_rng(1)
    ng = (a.mib << 20) // (4 * _irs_consts.N_POS)
    per_gib = (1 << 30) / (ng * 4 * _irs_consts.N_POS)
    print(
        f"{ng:,} groups ({ng * 4 * _irs_consts.N_POS / 2**20:.0f} MiB of words); "
        f"seconds per GiB, best of {a.repeats} after a warm-up"
    )
    print(f"{'kernel':<34}{'compiled':>10}{'numba':>10}{'ratio':>8}  same output")
    base = rng.integers(0, 2**32, (ng, _irs_consts.N_POS), dtype=np.uint64).astype(np.uint32)
    for k in (8, 12, 16):
        code = _irs.code_for(k, _irs_consts.N_POS, 2)
        w0 = base & np.uint32(~((1 << k) - 1) & 0xFFFFFFFF)
        x, y = w0.copy(), w0.copy()
        tn = best(lambda x=x, code=code, w0=w0: (np.copyto(x, w0), _native.encode(code, x)), a.repeats)
        tr = best(lambda y=y, code=code, w0=w0: (np.copyto(y, w0), _irs._run(0, code, y, None)), a.repeats)
        same = np.array_equal(x, y)
        enc = x.copy()
        # the copies are in both timings: subtract one
        tc = best(lambda x=x, w0=w0: np.copyto(x, w0), a.repeats)
        tn, tr = tn - tc, tr - tc
        print(f"{f'irs4 encode, k={k}':<34}{tn * per_gib:>10.2f}{tr * per_gib:>10.2f}{tr / tn:>8.1f}  {same}")
        if _native.available():  # the two GFNI encoders, alternated, and the syndromes with every byte multiplied
            modes = [{"AFFINE": True}, {"AFFINE": False, "COMPACT": True}, {"AFFINE": False, "COMPACT": False}]
            if not _gfni_plan._plan(k, _irs_consts.N_POS, 2).cmask:
                modes.pop()  # nothing skipped at this k
            run = functools.partial(encode_from, code, x, w0)
            ts = [t - tc for t in switched(run, a.repeats, modes)]
            same_m = True
            for mode in modes:
                with settings(mode):
                    run()
                same_m = same_m and np.array_equal(x, enc)
            labels = [
                "  as one linear map, alternated",
                "  by syndromes, free bytes skipped",
                "  by syndromes, every byte",
            ]
            for i, t in enumerate(ts):
                ratio = f"{t / ts[i - 1]:>8.2f}" if i else ""
                print(f"{labels[i]:<34}{t * per_gib:>10.2f}{'':>10}{ratio}  {same_m if i == len(ts) - 1 else ''}")
        if k == 8:
            enc8 = enc
    o = _outer.plan(ng, 8, _irs_consts.N_POS, 2)
    got_c = _native.content(base, _irs_consts.N_POS, 8, o.shard)
    want_c = np.zeros((ng, o.shard), np.uint8)
    tn = best(lambda: _native.content(base, _irs_consts.N_POS, 8, o.shard), a.repeats)
    tr = best(lambda: _outer._content_nb(base, _irs_consts.N_POS, 8, want_c), a.repeats)
    same = got_c is not None and np.array_equal(got_c, want_c)
    print(f"{'outer content, k=8':<34}{tn * per_gib:>10.2f}{tr * per_gib:>10.2f}{tr / tn:>8.1f}  {same}")
    code = _irs.code_for(8, _irs_consts.N_POS, 2)
    enc = enc8
    flags = np.zeros(enc.shape, np.uint8)
    flags[:, :4] = 1  # some fixed bytes, as tag bytes are
    tn = best(lambda: _native.syndromes(code, enc, flags), a.repeats)
    with numba_only():  # numba's own syndromes (all groups, as a decode computes them)
        tr = best(lambda: _irs._run(2, code, enc, None), a.repeats)
    got = _native.syndromes(code, enc[:2048], flags[:2048])
    want = _irs_kernels._batch_shares(enc, flags, True, 0, 2048, code.syn, 0, _irs_consts.N_POS)
    same = got is not None and np.array_equal(got, want)
    print(f"{'decoder syndromes (k=8)':<34}{tn * per_gib:>10.2f}{tr * per_gib:>10.2f}{tr / tn:>8.1f}  {same}")
    # a whole decode, as heavy damage needs it: every group with 3 replaced words (flagged) and tag bytes fixed
    bad = enc.copy()
    hit = rng.integers(4, _irs_consts.N_POS, (ng, 3))
    rows = np.arange(ng)
    for c in range(3):
        flags[rows, hit[:, c]] |= _irs_consts.FLAG_BAD
        bad[rows, hit[:, c]] ^= rng.integers(1, 2**32, ng, dtype=np.uint64).astype(np.uint32)
    x, y = bad.copy(), bad.copy()
    tn = best(lambda: (np.copyto(x, bad), _irs.decode(code, x, flags)), a.repeats)
    with numba_only():
        tr = best(lambda: (np.copyto(y, bad), _irs.decode(code, y, flags)), a.repeats)
    same = np.array_equal(x, y) and np.array_equal(x[:, 4:], enc[:, 4:])
    print(f"{'decode, 3 bad words a group (k=8)':<34}{tn * per_gib:>10.2f}{tr * per_gib:>10.2f}{tr / tn:>8.1f}  {same}")
    nb = (a.mib << 20) // 256
    words = rng.integers(0, 1 << 16, (nb, 128), dtype=np.uint16)
    keys = rng.integers(0, (1 << 32) - 5, 512, dtype=np.uint64)
    wmask = np.full(10, 0xFF, np.uint16)
    internal = np.ones(nb, np.bool_)
    pads = rng.integers(0, (1 << 32) - 5, (nb, 3), dtype=np.uint64)
    numba_mlh = _kernels._kernel("mlh", nb)
    for label, keys2 in (("block MAC hash (fp32 blocks)", None), ("  with the per-block 2nd hash", keys[::-1].copy())):
        k2 = np.zeros(0, np.uint64) if keys2 is None else keys2[:128]
        out, ref = np.empty(nb, np.uint64), np.empty(nb, np.uint64)
        numba_mlh(words, keys[:128], k2, wmask, internal, pads, ref)  # load it before timing
        tn = best(lambda k=keys2, o=out: _native_blocks.mlh(words, keys, wmask, internal, pads, o, k), a.repeats)
        tr = best(lambda k=k2, o=ref: numba_mlh(words, keys[:128], k, wmask, internal, pads, o), a.repeats)
        print(
            f"{label:<34}{tn * (1 << 30) / words.nbytes:>10.3f}"
            f"{tr * (1 << 30) / words.nbytes:>10.3f}{tr / tn:>8.1f}  {np.array_equal(out, ref)}"
        )
    lane_code(rng, a.mib, a.repeats)


def lane_code(rng: np.random.Generator, mib: int, repeats: int) -> None:
    """The lane code's data movers (bf16 shapes) and its permutation sort, per GiB of bf16 model."""
    nb = (mib << 20) // 128  # bf16 blocks: 64 values of 2 bytes
    per_gib = (1 << 30) / (nb * 128)

    def row(name: str, tn: float, tr: float, same: bool) -> None:
        print(f"{name:<34}{tn * per_gib:>10.3f}{tr * per_gib:>10.3f}{tr / tn:>8.1f}  {same}")

    u = rng.integers(0, 1 << 16, (nb, 64), dtype=np.uint16)
    ref = np.empty((nb, 120), np.uint8)
    ser = _kernels._SER
    ser["pack"](u, 1, 15, ref)  # numba's first call compiles or loads it: not timed
    got = _native_blocks.pack(u, 1, 15)
    tn = best(lambda: _native_blocks.pack(u, 1, 15), repeats)
    tr = best(lambda: ser["pack"](u, 1, 15, ref), repeats)
    row("lanes: pack 15 high bits (bf16 k=1)", tn, tr, got is not None and np.array_equal(got, ref))
    # start from u's complement, not u: the fields are u's own, so unpacking into u leaves it
    # unchanged and a compiled unpack that wrote nothing would still compare equal
    v1, v2 = ~u, ~u
    ser["unpack"](ref, 1, 15, v1)
    done = _native_blocks.unpack(ref, v2, 1, 15)
    same = done and np.array_equal(v1, v2) and np.array_equal(v1 >> 1, u >> 1)
    tn = best(lambda: _native_blocks.unpack(ref, v2, 1, 15), repeats)
    tr = best(lambda: ser["unpack"](ref, 1, 15, v1), repeats)
    row("lanes: unpack them", tn, tr, same)
    K, lanes = 30_000, max(16, nb // 30_000 * 4)  # a store's shape: data shards x lanes, a 128-lane slice coded
    store = rng.integers(0, 1 << 32, (K, lanes), dtype=np.uint64).astype(np.uint32)
    sl = store[:, : min(128, lanes)]
    sref = np.zeros((K, 64 * -(-2 * sl.shape[1] // 32)), np.uint8)
    ser["split"](sl, sref)
    calls = lanes // sl.shape[1]  # the whole store, as encode_into codes it
    tn = best(lambda: [_native_blocks.split(sl) for _ in range(calls)], repeats) * nb * 120 / store.nbytes
    tr = best(lambda: [ser["split"](sl, sref) for _ in range(calls)], repeats) * nb * 120 / store.nbytes
    got = _native_blocks.split(sl)
    row("lanes: leopard split layout", tn, tr, got is not None and np.array_equal(got, sref))
    g = 9000
    ns = nb // g
    perm = np.argsort(rng.random((ns, g)), axis=1).astype(np.int64)
    x = rng.integers(0, 1 << 32, (ns, g, 30), dtype=np.uint64).astype(np.uint32)
    s1, s2 = np.zeros((ns * 30, g), np.uint32), np.zeros((ns * 30, g), np.uint32)
    _kernels._stripes_in_nb(s1, 0, 30, perm, x)
    tn = best(lambda: _native_blocks.stripes(s2, 0, perm, x, out=False), repeats)
    tr = best(lambda: _kernels._stripes_in_nb(s1, 0, 30, perm, x), repeats)
    row("lanes: stripes into the store", tn, tr, np.array_equal(s1, s2))
    keys = rng.integers(0, 2**64 - 1, (ns, g), dtype=np.uint64, endpoint=True)
    want = np.argsort(keys, axis=1, kind="stable")
    tn = best(lambda: _native_blocks.argsort_rows(keys), repeats)
    tr = best(lambda: np.argsort(keys, axis=1, kind="stable"), repeats)
    row("lanes: permutation sort (vs numpy)", tn, tr, np.array_equal(_native_blocks.argsort_rows(keys), want))


if __name__ == "__main__":
    main()
