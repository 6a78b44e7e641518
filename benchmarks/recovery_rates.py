"""Measure how much tampering ParamSeal can undo, bit-exactly, on a ~1M-parameter model.

The model is deterministic and shaped like a small transformer (embeddings, per-layer
attention and MLP matrices of different sizes, biases, layer norms, a classifier head and
an int64 ``position_ids`` tensor). It is sealed once per level; every trial copies only the
tensors it tampers with, runs :func:`paramseal.recover` and counts a success only when the
status is ``recovered`` *and* every output tensor is byte-identical to the sealed one.
A trial whose status is ``recovered`` but whose output is not byte-identical is a *false
claim*: it is flagged in the tables and on stderr, and the run exits with status 1.

The code that sealed each level is read from its sealed header and printed with its bounds:
fp32 ``standard`` and ``strong`` are sealed with ``irs4`` by default (interleaved Reed-Solomon
groups of 255 values over key-rotated strata, plus an outer erasure code across groups);
``light`` (and ``--code lanes``) with the lane code. For irs4 the bounds are *per group*
(``paramseal._strata.capacity``): the whole model recovers only if every group does, so the
whole-model rate sits a little below them, and falls slowly as the model (the number of
groups) grows.

Attacks (every trial has its own seeded generator):

* ``contiguous-blocks``: 2-5 runs of consecutive 64-value blocks (in file order, runs may
  cross tensor boundaries) totalling ``rate`` of all blocks, overwritten with random values
  on each tensor's scale;
* ``short-runs``: many runs of 1..64 consecutive blocks (lengths uniform, file order,
  runs may cross tensor boundaries) at uniformly random, non-overlapping places (two runs
  may happen to touch), totalling ``rate`` of all blocks, overwritten with random values;
  confined damage broken into many small pieces rather than 2-5 long ones;
* ``rows``: ``round(rate * rows)`` random whole rows of every 2-D tensor (so ``rate`` of
  the matrix parameters; a row need not start or end on a block boundary), overwritten;
* ``whole-tensors``: tensors taken in random order while they fit in ``rate`` of all
  parameters, each wholly overwritten (the fraction actually replaced is reported);
* ``scattered``: ``rate`` of all parameters, uniformly over the whole model, overwritten;
* ``bitflips``: n distinct uniformly random bits of the model flipped (any bit position,
  any tensor, the int64 one included).

Only the tampering is seeded: ``seal`` draws a fresh random salt, from which the stratum
rotations (irs4) or the lane permutation (lanes) are derived, so borderline points near a
bound can differ slightly between runs. Rate sweeps stop after two rates in a row with no
success.

    python benchmarks/recovery_rates.py                 # 50 trials per point, ~1.2M params
    python benchmarks/recovery_rates.py --quick         # smoke run
    python benchmarks/recovery_rates.py --code lanes --attacks scattered   # the older code
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

import paramseal
import paramseal._outer
import paramseal._strata
import paramseal.header
from paramseal import Key

BLOCK = 64
KEY = Key(bytes(range(32)))

# Rates per code and level, bracketing where each breaks. Light is always sealed with lanes.
CONTIGUOUS_RATES: dict[str, dict[str, tuple[float, ...]]] = {
    "irs4": {
        "standard": (0.15, 0.17, 0.18, 0.19, 0.20, 0.22, 0.25),  # per-group bound 22.7% (outer host 2)
        "strong": (0.25, 0.28, 0.30, 0.32, 0.33, 0.35, 0.38),  # per-group bound 34.7%
    },
    "lanes": {
        "light": (0.05, 0.08, 0.10, 0.11),
        "standard": (0.10, 0.15, 0.18, 0.20, 0.22),
        "strong": (0.20, 0.25, 0.30, 0.33, 0.35),
    },
}
SCATTERED_RATES: dict[str, dict[str, tuple[float, ...]]] = {
    "irs4": {
        "standard": (0.05, 0.08, 0.10, 0.11, 0.12, 0.13, 0.14, 0.16),  # per-group radius 18.1%
        "strong": (0.10, 0.15, 0.18, 0.20, 0.21, 0.22, 0.25),  # per-group radius 27.8%
    },
    # 0.3%, 0.4% and 0.7% are extra resolution near the lane bounds (0.42% standard, 0.71% strong).
    "lanes": dict.fromkeys(
        ("light", "standard", "strong"),
        (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.007, 0.01, 0.02, 0.05),
    ),
}
# Many short runs and whole rows: confined damage, but spread over many places.
SHORT_RUNS_RATES: dict[str, dict[str, tuple[float, ...]]] = {
    "irs4": {
        "standard": (0.12, 0.14, 0.15, 0.16, 0.17, 0.18, 0.20),
        "strong": (0.20, 0.22, 0.24, 0.26, 0.28, 0.30, 0.32),
    },
    "lanes": {
        "light": (0.02, 0.05, 0.08, 0.10),
        "standard": (0.05, 0.10, 0.15, 0.18, 0.20),
        "strong": (0.10, 0.20, 0.25, 0.30, 0.33),
    },
}
# A row of d or 4d values rarely starts on a block boundary, so rows taint ~1.25x their share of blocks.
ROWS_RATES: dict[str, dict[str, tuple[float, ...]]] = {
    "irs4": {
        "standard": (0.08, 0.10, 0.11, 0.12, 0.13, 0.14, 0.16),
        "strong": (0.16, 0.18, 0.19, 0.20, 0.21, 0.22, 0.24),
    },
    "lanes": {
        "light": (0.02, 0.05, 0.08),
        "standard": (0.05, 0.10, 0.12, 0.15, 0.18),
        "strong": (0.10, 0.15, 0.20, 0.25, 0.28),
    },
}
BITFLIPS: tuple[int, ...] = (1, 10, 100, 1000)
ATTACK_IDS = {"contiguous-blocks": 1, "whole-tensors": 2, "scattered": 3, "bitflips": 4, "short-runs": 5, "rows": 6}

Tensors = dict[str, NDArray[np.generic]]


# --------------------------------------------------------------------------- model


def build_model(params: int = 1_200_000, seed: int = 0) -> Tensors:
    """A deterministic transformer-shaped checkpoint with about ``params`` parameters.

    Four layers of width ``d`` (chosen from ``params``), a classifier head of 100 classes,
    ``4d`` positions, and the vocabulary size chosen to land close to ``params``.
    """
    layers, classes = 4, 100
    d = max(16, 8 * round(math.sqrt(params / 62) / 8))
    positions = 4 * d
    per_layer = 12 * d * d + 13 * d
    fixed = layers * per_layer + positions * d + 2 * d + classes * d + classes + positions
    vocab = max(16, round((params - fixed) / d))
    rng = np.random.default_rng(seed)

    def normal(shape: tuple[int, ...], std: float, mean: float = 0.0) -> NDArray[np.float32]:
        return (mean + std * rng.standard_normal(shape)).astype(np.float32)

    m: Tensors = {"embed.weight": normal((vocab, d), 0.02), "pos_embed.weight": normal((positions, d), 0.01)}
    for i in range(layers):
        p = f"layers.{i}."
        m[p + "ln1.weight"] = normal((d,), 0.05, 1.0)
        m[p + "ln1.bias"] = normal((d,), 0.01)
        m[p + "attn.qkv.weight"] = normal((3 * d, d), 1 / math.sqrt(d))
        m[p + "attn.qkv.bias"] = np.zeros(3 * d, dtype=np.float32) if i == 0 else normal((3 * d,), 0.02)
        m[p + "attn.out.weight"] = normal((d, d), 1 / math.sqrt(d))
        m[p + "attn.out.bias"] = normal((d,), 0.02)
        m[p + "ln2.weight"] = normal((d,), 0.05, 1.0)
        m[p + "ln2.bias"] = normal((d,), 0.01)
        m[p + "mlp.fc1.weight"] = normal((4 * d, d), 1 / math.sqrt(d))
        m[p + "mlp.fc1.bias"] = normal((4 * d,), 0.02)
        m[p + "mlp.fc2.weight"] = normal((d, 4 * d), 0.5 / math.sqrt(d))
        m[p + "mlp.fc2.bias"] = normal((d,), 0.02)
    m["ln_f.weight"] = normal((d,), 0.05, 1.0)
    m["ln_f.bias"] = normal((d,), 0.01)
    m["head.weight"] = normal((classes, d), 0.02)
    m["head.bias"] = np.zeros(classes, dtype=np.float32)
    m["position_ids"] = np.arange(positions, dtype=np.int64).reshape(1, positions)
    return m


# --------------------------------------------------------------------------- a sealed target


@dataclass
class Target:
    """A sealed model plus what the attacks need to know about it (computed once)."""

    level: str
    k: int
    code: str  # what sealed it, from the header: "irs4" or "lanes"
    host: int  # irs4: free bytes per codeword hosting the outer code, from the header
    sealed: Tensors
    header_json: str
    names: list[str]
    numel: NDArray[np.int64]
    nblocks: NDArray[np.int64]
    value_start: NDArray[np.int64]  # first global value index of each tensor
    block_start: NDArray[np.int64]  # first global block index of each tensor
    bit_start: NDArray[np.int64]  # first global bit index of each tensor
    loc: list[float] = field(default_factory=list)  # per tensor: mean (floats) or min (ints)
    scale: list[float] = field(default_factory=list)  # per tensor: std (floats) or range (ints)
    seal_s: float = 0.0

    @property
    def total_values(self) -> int:
        return int(self.numel.sum())

    @property
    def total_blocks(self) -> int:
        return int(self.nblocks.sum())

    @property
    def total_bits(self) -> int:
        return int(self.bit_start[-1] + self.numel[-1] * self.sealed[self.names[-1]].itemsize * 8)


def make_target(model: Tensors, level: str, key: Key = KEY, code: str | None = None) -> Target:
    """Seal ``model`` at ``level`` (``code`` None: the default for the model) and precompute offsets and scales."""
    t0 = time.perf_counter()
    s = paramseal.SealConfig(level=level, code=code).seal(model, key)
    seal_s = time.perf_counter() - t0
    h = paramseal.header.parse_header(s.header_json, key)
    names = list(s.tensors)
    numel = np.array([s.tensors[n].size for n in names], dtype=np.int64)
    nblocks = np.maximum(1, -(-numel // BLOCK))
    bits = np.array([s.tensors[n].size * s.tensors[n].itemsize * 8 for n in names], dtype=np.int64)

    def starts(a: NDArray[np.int64]) -> NDArray[np.int64]:
        return np.concatenate([[0], np.cumsum(a)[:-1]]).astype(np.int64)

    loc, scale = [], []
    for n in names:
        a = s.tensors[n]
        if np.issubdtype(a.dtype, np.floating):
            mean, std = float(a.mean(dtype=np.float64)), float(a.std(dtype=np.float64))
            loc.append(mean)
            scale.append(max(std, 1e-3 * abs(mean), 1e-3))
        else:
            loc.append(float(a.min()))
            scale.append(float(a.max()) - float(a.min()) + 1.0)
    k = paramseal.levels.bits_for("F32", level, None)
    return Target(
        level,
        k,
        "irs4" if h.irs else "lanes",
        h.host,
        s.tensors,
        s.header_json,
        names,
        numel,
        nblocks,
        starts(numel),
        starts(nblocks),
        starts(bits),
        loc,
        scale,
        seal_s,
    )


# --------------------------------------------------------------------------- attacks


def _random_values(
    tg: Target, t: int, n: int, rng: np.random.Generator, old: NDArray[np.generic]
) -> NDArray[np.generic]:
    """``n`` random values on tensor ``t``'s scale, each differing from ``old`` in some bit."""
    a = tg.sealed[tg.names[t]]
    if np.issubdtype(a.dtype, np.floating):
        new = (tg.loc[t] + tg.scale[t] * rng.standard_normal(n)).astype(a.dtype)
    else:
        new = (tg.loc[t] + rng.integers(0, int(tg.scale[t]), n)).astype(a.dtype)
    u = new.view(f"u{a.itemsize}")
    same = u == old.view(f"u{a.itemsize}")
    u[same] ^= u.dtype.type(1 << (a.itemsize * 8 - 2))  # unchanged by chance: flip a high bit
    return new


class Tamper:
    """Copy-on-write view of a sealed model: only touched tensors are copied."""

    def __init__(self, tg: Target) -> None:
        self.tg = tg
        self.out: Tensors = dict(tg.sealed)
        self.replaced = 0

    def flat(self, t: int) -> NDArray[np.generic]:
        name = self.tg.names[t]
        if self.out[name] is self.tg.sealed[name]:
            self.out[name] = self.tg.sealed[name].copy()
        return self.out[name].reshape(-1)

    def replace(self, t: int, idx: NDArray[np.int64] | slice, rng: np.random.Generator) -> None:
        f = self.flat(t)
        old = f[idx].copy()
        f[idx] = _random_values(self.tg, t, old.size, rng, old)
        self.replaced += old.size


def attack_contiguous_blocks(tg: Target, rate: float, rng: np.random.Generator) -> Tamper:
    B = tg.total_blocks
    n = max(1, round(rate * B))
    runs = min(int(rng.integers(2, 6)), n)  # 2..5 runs, each of at least one block
    cuts = np.sort(rng.choice(np.arange(1, n), runs - 1, replace=False))
    lens = np.diff(np.concatenate([[0], cuts, [n]]))
    free = B - n
    gaps = np.diff(np.concatenate([[0], np.sort(rng.integers(0, free + 1, runs)), [free]]))
    tp = Tamper(tg)
    pos = 0
    for length, gap in zip(lens, gaps[:-1], strict=True):
        pos += int(gap)
        _replace_blocks(tp, pos, pos + int(length), rng)
        pos += int(length)
    return tp


def attack_short_runs(tg: Target, rate: float, rng: np.random.Generator) -> Tamper:
    B = tg.total_blocks
    n = max(1, round(rate * B))
    lens = rng.integers(1, 65, n)  # at least enough runs of 1..64 blocks; keep those that reach n
    m = int(np.searchsorted(np.cumsum(lens), n)) + 1
    lens = lens[:m]
    lens[-1] -= int(lens.sum()) - n  # trim the last run to the budget
    # Uniform placement: the m runs and the B - n untouched blocks in random order.
    before = np.concatenate([[0], np.cumsum(lens)[:-1]])  # tampered blocks before each run
    slots = np.sort(rng.choice(B - n + m, m, replace=False))
    starts = slots - np.arange(m) + before  # untouched blocks before the run + tampered ones
    hit = np.repeat(starts - before, lens) + np.arange(n)
    tp = Tamper(tg)
    _replace_block_set(tp, hit, rng)
    return tp


def _replace_block_set(tp: Tamper, blocks: NDArray[np.int64], rng: np.random.Generator) -> None:
    """Overwrite the global blocks ``blocks`` (sorted, distinct), tensor by tensor."""
    tg = tp.tg
    owner = np.searchsorted(tg.block_start, blocks, side="right") - 1
    for t in np.unique(owner):
        rel = blocks[owner == t] - tg.block_start[t]
        idx = (rel[:, None] * BLOCK + np.arange(BLOCK)).reshape(-1)
        tp.replace(int(t), idx[idx < tg.numel[t]], rng)


def attack_rows(tg: Target, rate: float, rng: np.random.Generator) -> Tamper:
    tp = Tamper(tg)
    for t, name in enumerate(tg.names):
        a = tg.sealed[name]
        if a.ndim != 2:
            continue
        rows, cols = a.shape
        picked = rng.choice(rows, round(rate * rows), replace=False)
        if picked.size:
            tp.replace(t, (picked[:, None] * cols + np.arange(cols)).reshape(-1), rng)
    return tp


def _replace_blocks(tp: Tamper, b0: int, b1: int, rng: np.random.Generator) -> None:
    """Overwrite global blocks ``[b0, b1)``, tensor by tensor."""
    tg = tp.tg
    for t in range(len(tg.names)):
        s, e = int(tg.block_start[t]), int(tg.block_start[t] + tg.nblocks[t])
        lo, hi = max(b0, s), min(b1, e)
        if lo >= hi:
            continue
        v0, v1 = (lo - s) * BLOCK, min((hi - s) * BLOCK, int(tg.numel[t]))
        if v0 < v1:
            tp.replace(t, slice(v0, v1), rng)


def attack_whole_tensors(tg: Target, rate: float, rng: np.random.Generator) -> Tamper:
    budget = rate * tg.total_values
    tp = Tamper(tg)
    for t in rng.permutation(len(tg.names)):
        if tp.replaced + tg.numel[t] <= budget:
            tp.replace(int(t), slice(None), rng)
    return tp


def attack_scattered(tg: Target, rate: float, rng: np.random.Generator) -> Tamper:
    n = max(1, round(rate * tg.total_values))
    idx = np.sort(rng.choice(tg.total_values, n, replace=False))
    owner = np.searchsorted(tg.value_start, idx, side="right") - 1
    tp = Tamper(tg)
    for t in np.unique(owner):
        sel = idx[owner == t] - tg.value_start[t]
        tp.replace(int(t), sel, rng)
    return tp


def attack_bitflips(tg: Target, n: float, rng: np.random.Generator) -> Tamper:
    pos = rng.choice(tg.total_bits, int(n), replace=False)
    owner = np.searchsorted(tg.bit_start, pos, side="right") - 1
    tp = Tamper(tg)
    for t in np.unique(owner):
        rel = pos[owner == t] - tg.bit_start[t]
        f = tp.flat(int(t))
        w = f.itemsize * 8
        u = f.view(f"u{f.itemsize}")
        np.bitwise_xor.at(u, rel // w, (np.ones(rel.size, dtype=u.dtype) << (rel % w).astype(u.dtype)))
        tp.replaced += int(np.unique(rel // w).size)
    return tp


ATTACKS: dict[str, Callable[[Target, float, np.random.Generator], Tamper]] = {
    "contiguous-blocks": attack_contiguous_blocks,
    "whole-tensors": attack_whole_tensors,
    "scattered": attack_scattered,
    "bitflips": attack_bitflips,
    "short-runs": attack_short_runs,
    "rows": attack_rows,
}


# --------------------------------------------------------------------------- one trial


@dataclass
class Outcome:
    success: bool
    status: str
    seconds: float
    replaced_frac: float  # parameters changed / all parameters
    blocks_frac: float  # blocks changed / all blocks (ground truth)
    localized: bool  # the report's tampered blocks are exactly the changed blocks
    int_hit: bool  # an integer tensor was tampered with
    handed: tuple[int, int] = (0, 0)  # irs4: most groups one superblock handed the outer code, and its parity shards


def changed_blocks(tg: Target, tampered: Tensors) -> dict[str, NDArray[np.int64]]:
    """Ground truth: per tampered tensor, the blocks whose bytes changed."""
    out = {}
    for t, name in enumerate(tg.names):
        a, b = tg.sealed[name], tampered[name]
        if a is b:
            continue
        w = f"u{a.itemsize}"
        diff = a.reshape(-1).view(w) != b.reshape(-1).view(w)
        pad = int(tg.nblocks[t]) * BLOCK - diff.size
        blocks = np.flatnonzero(np.concatenate([diff, np.zeros(pad, bool)]).reshape(-1, BLOCK).any(axis=1))
        if blocks.size:
            out[name] = blocks
    return out


def bit_exact(tg: Target, out: Tensors) -> bool:
    """Every output tensor is byte-identical (same name, dtype, shape, bytes) to the sealed one."""
    if list(out) != tg.names:
        return False
    for name in tg.names:
        a, b = tg.sealed[name], out[name]
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if not np.array_equal(np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8)):
            return False
    return True


_HANDED: list[tuple[int, int]] = []  # (failed groups, parity shards) per call of the outer code's repair


def _watch_outer() -> None:
    """Record what each superblock hands the outer code: the margin a point has, not just pass or fail."""
    real = paramseal._outer.Outer.repair
    if getattr(real, "watched", False):
        return

    def repair(self: Any, code: Any, w: Any, failed: NDArray[np.bool_], s: int) -> Any:
        _HANDED.append((int(np.count_nonzero(failed)), self.parity_count(s)))
        return real(self, code, w, failed, s)

    repair.watched = True  # type: ignore[attr-defined]
    paramseal._outer.Outer.repair = repair  # type: ignore[method-assign]


def run_trial(tg: Target, attack: str, rate: float, rng: np.random.Generator, key: Key = KEY) -> Outcome:
    tp = ATTACKS[attack](tg, rate, rng)
    truth = changed_blocks(tg, tp.out)
    _watch_outer()
    _HANDED.clear()
    t0 = time.perf_counter()
    r = paramseal.recover(tp.out, key, tg.header_json)
    dt = time.perf_counter() - t0
    ok = r.report.status == "recovered" and bit_exact(tg, r.tensors)
    found = {n: f.tampered_blocks for n, f in r.report.tensors.items() if f.tampered_blocks}
    localized = found.keys() == truth.keys() and all(np.array_equal(found[n], truth[n]) for n in truth)
    nchanged = sum(v.size for v in truth.values())
    int_hit = any(not np.issubdtype(tg.sealed[n].dtype, np.floating) for n in truth)
    handed = max(_HANDED, default=(0, 0))
    return Outcome(
        ok, r.report.status, dt, tp.replaced / tg.total_values, nchanged / tg.total_blocks, localized, int_hit, handed
    )


def trial_rng(seed: int, level: str, attack: str, rate: float, trial: int) -> np.random.Generator:
    """Independent, reproducible generator per (level, attack, rate, trial)."""
    return np.random.default_rng([seed, sum(map(ord, level)), ATTACK_IDS[attack], round(rate * 1e6), trial])


# --------------------------------------------------------------------------- sweep and report


@dataclass
class Point:
    level: str
    code: str
    attack: str
    rate: float
    outcomes: list[Outcome]

    @property
    def successes(self) -> int:
        return sum(o.success for o in self.outcomes)

    @property
    def trials(self) -> int:
        return len(self.outcomes)

    @property
    def all_ok(self) -> bool:
        return self.successes == self.trials

    @property
    def false_claims(self) -> int:
        """Trials that said 'recovered' without being byte-identical to the sealed model."""
        return sum(o.status == "recovered" and not o.success for o in self.outcomes)

    def rate_str(self) -> str:
        return str(int(self.rate)) if self.attack == "bitflips" else f"{100 * self.rate:g}%"


def sweep(
    tg: Target,
    attack: str,
    rates: Sequence[float],
    trials: int,
    seed: int,
    stop_after_zeros: int | None = None,
    log: Callable[[str], None] = print,
) -> list[Point]:
    points: list[Point] = []
    zeros = 0
    for rate in rates:
        outs = [run_trial(tg, attack, rate, trial_rng(seed, tg.level, attack, rate, i)) for i in range(trials)]
        p = Point(tg.level, tg.code, attack, rate, outs)
        points.append(p)
        worst = max(o.handed for o in outs)
        log(
            f"  {tg.level:8s} {tg.code:5s} {attack:17s} {p.rate_str():>6s}  {p.successes}/{p.trials}"
            f"  {np.mean([o.seconds for o in outs]):.3f}s"
            + (f"  outer code: at most {worst[0]} failed groups (of {worst[1]} parity shards)" if worst[0] else "")
        )
        if p.false_claims:
            log(f"  !!! FALSE CLAIM: {p.false_claims} trial(s) said 'recovered' but are not bit-exact !!!")
        zeros = zeros + 1 if p.successes == 0 else 0
        if stop_after_zeros is not None and zeros >= stop_after_zeros:
            break
    return points


def theoretical_bound(k: int) -> float:
    """Lane code: erasure bound (k - 0.5) / (32 - 0.5) for fp32 with a 32-bit tag per 64 values."""
    return (k - 0.5) / (32 - 0.5)


def scattered_bound(k: int) -> float:
    """Lane code: parameter fraction p at which the expected fraction of hit blocks equals the bound."""
    return float(1 - (1 - theoretical_bound(k)) ** (1 / BLOCK))


def bounds(tg: Target) -> tuple[str, str]:
    """The (contiguous, scattered) bounds of the code that sealed ``tg``, as table cells."""
    k = tg.k
    if tg.code == "irs4":
        cap = paramseal._strata.capacity(k, tg.host)
        return (f"{100 * cap['contiguous_bound']:.2f}% per group", f"{100 * cap['scattered_radius']:.2f}% per group")
    return (
        f"{100 * theoretical_bound(k):.2f}% of blocks, (k-0.5)/31.5",
        f"{100 * scattered_bound(k):.3f}% of params (blocks hit = bound)",
    )


def markdown(points: list[Point]) -> str:
    rows = [
        "| level | code | attack | rate | params changed (mean) | blocks tampered (mean) | success "
        "| mean recover s | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for p in points:
        o = p.outcomes
        notes = []
        bad_loc = sum(not x.localized for x in o)
        if bad_loc:
            notes.append(f"{bad_loc} mislocalized")
        if p.false_claims:
            notes.append(f"**{p.false_claims} claimed 'recovered' but not bit-exact**")
        statuses = {x.status for x in o if not x.success}
        if statuses:
            notes.append("failures: " + ", ".join(sorted(statuses)))
        if p.attack == "bitflips":
            notes.append(f"int64 tensor hit in {sum(x.int_hit for x in o)}/{len(o)}")
        elif any(x.int_hit for x in o):
            notes.append(f"int64 tensor hit in {sum(x.int_hit for x in o)}/{len(o)}")
        handed = [x.handed for x in o if x.handed[0]]
        if handed:
            mean = np.mean([h[0] for h in handed])
            worst = max(handed)
            notes.append(
                f"groups left to the outer code: mean {mean:.1f}, max {worst[0]} (of {worst[1]} parity shards)"
            )
        rows.append(
            f"| {p.level} | {p.code} | {p.attack} | {p.rate_str()} "
            f"| {100 * np.mean([x.replaced_frac for x in o]):.3f}% "
            f"| {100 * np.mean([x.blocks_frac for x in o]):.2f}% | {p.successes}/{p.trials} "
            f"| {np.mean([x.seconds for x in o]):.3f} | {'; '.join(notes)} |"
        )
    return "\n".join(rows)


def summary(targets: list[Target], points: list[Point]) -> str:
    rows = [
        "| level | sealed with | k (fp32) | contiguous bound | scattered bound | attack "
        "| highest rate with N/N | first rate below N/N |",
        "|---|---|---:|---|---|---|---:|---:|",
    ]
    for tg in targets:
        contiguous, scattered = bounds(tg)
        for attack in ATTACKS:
            ps = [p for p in points if p.level == tg.level and p.attack == attack]
            if not ps:
                continue
            best = max((p for p in ps if p.all_ok), key=lambda p: p.rate, default=None)
            first_bad = min((p for p in ps if not p.all_ok), key=lambda p: p.rate, default=None)
            rows.append(
                f"| {tg.level} | {tg.code} | {tg.k} | {contiguous} | {scattered} "
                f"| {attack} | {best.rate_str() if best else 'none'} "
                f"| {f'{first_bad.rate_str()} ({first_bad.successes}/{first_bad.trials})' if first_bad else '-'} |"
            )
    notes = []
    if any(tg.code == "irs4" for tg in targets):
        notes.append(
            "irs4 bounds are per group of 255 values (`paramseal._strata.capacity(k, host)`, host = the outer "
            f"code's bytes per codeword from the header: {', '.join(f'{t.level} {t.host}' for t in targets)}): "
            "contiguous = tag-flagged "
            "erasures, scattered = the collaborative errors-only radius. The whole model recovers only if every "
            "group does (the outer code repairs a few failed groups), so whole-model rates sit below them."
        )
    if any(tg.code == "lanes" for tg in targets):
        notes.append(
            "Lane-code bounds: (k-0.5)/31.5 of the blocks may be tampered; scattered, the parameter fraction "
            "at which that share of 64-value blocks is hit."
        )
    return "\n".join(rows) + "".join("\n\n" + n for n in notes)


def rates_for(tg: Target, attack: str, override: Sequence[float] | None) -> tuple[Sequence[float], int | None]:
    """The rates to sweep for ``attack`` on ``tg`` (chosen by the code that sealed it) and when to stop early."""
    if attack == "bitflips":
        return BITFLIPS, None
    table = {"scattered": SCATTERED_RATES, "short-runs": SHORT_RUNS_RATES, "rows": ROWS_RATES}.get(
        attack, CONTIGUOUS_RATES
    )
    return (override or table[tg.code][tg.level]), 2


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=None, help="trials per point (default 50; 5 with --quick)")
    ap.add_argument("--params", type=int, default=None, help="model size (default 1.2M; 300k with --quick)")
    ap.add_argument("--levels", default="standard,strong", help="comma-separated: light,standard,strong")
    ap.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated subset of " + ",".join(ATTACKS))
    ap.add_argument(
        "--code",
        choices=("irs", "lanes"),
        default=None,
        help="seal with this code (default: what paramseal picks, irs4 for fp32 standard/strong)",
    )
    ap.add_argument(
        "--rates",
        default=None,
        help="comma-separated rates replacing the defaults of the selected rate attacks (bitflips keep their counts)",
    )
    ap.add_argument(
        "--host",
        type=int,
        choices=paramseal._outer.KNOWN_HOSTS,
        default=None,
        help="irs4: host the outer code in this many bytes per codeword at every level (default: what paramseal "
        "picks per level); to compare hostings",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="small model, 5 trials: a smoke run")
    ap.add_argument("--markdown", metavar="PATH", help="also write the tables to PATH")
    args = ap.parse_args(argv)
    trials = args.trials if args.trials is not None else (5 if args.quick else 50)
    nparams = args.params if args.params is not None else (300_000 if args.quick else 1_200_000)
    levels = [x.strip() for x in args.levels.split(",") if x.strip()]
    attacks = [x.strip() for x in args.attacks.split(",") if x.strip()]
    override = [float(x) for x in args.rates.split(",") if x.strip()] if args.rates else None
    if trials < 1:
        ap.error(f"--trials must be at least 1, not {trials}")
    if nparams < 1:
        ap.error(f"--params must be at least 1, not {nparams}")
    if override and not all(0 < r <= 1 for r in override):
        ap.error(f"--rates are fractions of the model, each in (0, 1]: {args.rates}")
    for lv in levels:
        if lv not in paramseal.levels.LEVELS:
            ap.error(f"unknown level {lv!r}")
    for a in attacks:
        if a not in ATTACKS:
            ap.error(f"unknown attack {a!r}")
    if args.host is not None:
        for k in paramseal._strata.KS:
            paramseal._outer.HOSTS[k] = args.host

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    model = build_model(nparams)
    nfloat = sum(a.size for a in model.values() if a.dtype == np.float32)
    nint = sum(a.size for a in model.values() if a.dtype != np.float32)
    log(
        f"model: {len(model)} tensors, {nfloat + nint:,} params ({nfloat:,} fp32 + {nint:,} int64), "
        f"{trials} trials per point"
    )
    targets: list[Target] = []
    points: list[Point] = []
    for lv in levels:
        tg = make_target(model, lv, code=args.code)
        targets.append(tg)
        hosted = f" (outer code in {tg.host} bytes per codeword)" if tg.code == "irs4" else ""
        h = paramseal.header.parse_header(tg.header_json, KEY)
        reserved = sum(t.reserved for t in h.tensors)  # records and header copies: no parity in their free bits
        log(
            f"sealed at {lv} (k={tg.k}) with {tg.code}{hosted} in {tg.seal_s:.2f}s: {tg.total_blocks} blocks, "
            f"{reserved} reserved (header copies: {h.copies} in each of {len(h.carriers)} carriers)"
        )
        for attack in attacks:
            rates, stop = rates_for(tg, attack, override)
            points += sweep(tg, attack, rates, trials, args.seed, stop_after_zeros=stop, log=log)
    elapsed = time.perf_counter() - t_start

    false_claims = sum(p.false_claims for p in points)
    head = (
        f"ParamSeal recovery rates: {len(model)} tensors, {nfloat + nint:,} parameters "
        f"({nfloat:,} fp32 + {nint:,} int64), {trials} seeded trials per point, seed {args.seed}; "
        f"code per level as read from its sealed header ({', '.join(f'{t.level}: {t.code}' for t in targets)}); "
        f"success = status 'recovered' and every tensor byte-identical to the sealed model. "
        f"False claims (status 'recovered', not bit-exact): {false_claims}. Total run time {elapsed:.0f}s."
    )
    text = "\n\n".join([head, markdown(points), summary(targets, points)]) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text)
    if false_claims:
        log(f"!!! {false_claims} FALSE CLAIM(S): recover said 'recovered' but the output is not bit-exact !!!")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
