"""Do verify's ``recoverable`` verdict and recover's outcome agree? A seeded comparison near and past reach.

verify decides without rebuilding (irs4: it decodes the damaged groups; the lane code: it counts lost
shards per lane); recover rebuilds, checks the tags it can, and past reach writes what the decoded groups
corrected, restoring whole the partly decoded blocks whose tag then holds. Each trial seals a small model
(``--n`` values at most, a tenth of it at least, drawn per trial; three layers' weights and biases, and
integer position ids: see `model`) under a salt drawn from the seed, damages it, and runs `paramseal.verify` and
`paramseal.recover` (library API) on the same damaged copy. Damage, one kind per trial in turn, at a
fraction drawn log-uniformly from a range that straddles the code's edge for that configuration:

* ``scatter``: that fraction of all values replaced by random bit patterns, uniformly;
* ``runs``: 1-4 contiguous runs (file order, across tensors) totalling that fraction, random bit patterns;
* ``flips``: one random bit flipped in each of that fraction of the values;
* ``low``: as ``flips``, in the low k bits only (where parity and tags live).

Counted per configuration: trials where verify says recoverable and recover restores the sealed model
bit for bit (exit 0, output verifies intact, bytes equal); where verify says not recoverable and recover
exits 2; **danger** (verify yes, recover not whole); **safe** (verify no, recover exit 0); and **false
claims** (recover exit 0 with bytes that are not the seal's). Exit status 1 when any of the last three
occurs.

    python benchmarks/verdict_agreement.py                       # 600 trials per configuration
    python benchmarks/verdict_agreement.py --trials 50 --configs fp32-standard,bf16-standard
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

import paramseal
from paramseal.header import parse_header

KEY = paramseal.Key(bytes.fromhex("5ea1" * 16))
CONFIGS: dict[str, tuple[np.dtype, str, int]] = {  # dtype, level, k (its low bits)
    "fp32-standard": (np.dtype(np.float32), "standard", 8),
    "fp32-strong": (np.dtype(np.float32), "strong", 12),
    "bf16-standard": (np.dtype(ml_dtypes.bfloat16), "standard", 1),
    "bf16-strong": (np.dtype(ml_dtypes.bfloat16), "strong", 2),
    "fp16-standard": (np.dtype(np.float16), "standard", 2),
    "fp16-strong": (np.dtype(np.float16), "strong", 4),
}
KINDS = ("scatter", "runs", "flips", "low")
# fraction ranges per configuration and kind: a wide first sweep's edge (where verify's verdict turns) inside
EDGES: dict[str, dict[str, tuple[float, float]]] = {
    "fp32-standard": {"scatter": (0.11, 0.13), "runs": (0.18, 0.36), "flips": (0.105, 0.13), "low": (0.06, 0.3)},
    "fp32-strong": {"scatter": (0.19, 0.215), "runs": (0.3, 0.47), "flips": (0.19, 0.215), "low": (0.1, 0.45)},
    "bf16-standard": {"scatter": (3e-5, 1e-3), "runs": (0.01, 0.12), "flips": (3e-5, 1e-3), "low": (3e-5, 1e-3)},
    "bf16-strong": {"scatter": (3e-4, 6e-3), "runs": (0.05, 0.25), "flips": (3e-4, 6e-3), "low": (3e-4, 6e-3)},
    "fp16-standard": {"scatter": (5e-4, 5e-3), "runs": (0.03, 0.15), "flips": (5e-4, 5e-3), "low": (5e-4, 5e-3)},
    "fp16-strong": {"scatter": (1e-3, 1.5e-2), "runs": (0.06, 0.3), "flips": (1e-3, 1.5e-2), "low": (1e-3, 1.5e-2)},
}
_UINT = {2: np.uint16, 4: np.uint32}


def model(rng: np.random.Generator, dt: np.dtype, n: int) -> dict[str, NDArray[np.generic]]:
    """Three layers (a weight of 64 columns, a bias of 130 values) and integer position ids: about ``n`` values.

    A bias's last block holds 2 values, too few low bits for its tag, and the integer tensor has none: their
    tags live in the header, the only rebuilt blocks recover checks against an authenticated tag.
    """
    rows = max(1, n // 3 // 64)
    out: dict[str, NDArray[np.generic]] = {}
    for i in range(3):
        out[f"layer{i}.weight"] = (rng.standard_normal((rows, 64)) * 0.05).astype(np.float32).astype(dt)
        out[f"layer{i}.bias"] = (rng.standard_normal(130) * 0.05).astype(np.float32).astype(dt)
    out["position_ids"] = np.arange(300, dtype=np.int32 if dt.itemsize == 4 else np.int16)
    return out


def damage(
    rng: np.random.Generator, tensors: dict[str, NDArray[np.generic]], kind: str, frac: float, k: int
) -> dict[str, NDArray[np.generic]]:
    """A damaged copy of ``tensors`` (see the module docstring for ``kind``)."""
    names = list(tensors)  # every tensor is as wide as the float dtype: one flat view of them all
    flat = np.concatenate([np.ascontiguousarray(t).reshape(-1).view(_UINT[t.itemsize]) for t in tensors.values()])
    width = flat.dtype.itemsize * 8
    count = max(1, round(frac * flat.size))
    if kind == "runs":
        runs = int(rng.integers(1, 5))
        per = max(1, count // runs)
        for _ in range(runs):
            s = int(rng.integers(0, flat.size - per))
            flat[s : s + per] = rng.integers(0, 1 << width, per, dtype=np.uint64).astype(flat.dtype)
    else:
        at = rng.choice(flat.size, count, replace=False)
        if kind == "scatter":
            flat[at] = rng.integers(0, 1 << width, at.size, dtype=np.uint64).astype(flat.dtype)
        else:
            bit = rng.integers(0, width if kind == "flips" else k, at.size)
            flat[at] ^= np.left_shift(1, bit).astype(flat.dtype)
    parts = np.split(flat, np.cumsum([tensors[n].size for n in names])[:-1])
    return {n: p.view(tensors[n].dtype).reshape(tensors[n].shape) for n, p in zip(names, parts, strict=True)}


def _same(a: dict[str, NDArray[np.generic]], b: dict[str, NDArray[np.generic]]) -> bool:
    return all(
        a[n].dtype == b[n].dtype and np.array_equal(np.ascontiguousarray(a[n]).view(np.uint8), b[n].view(np.uint8))
        for n in b
    )


def _sealed_with_salt(salt: bytes, seal: Callable[[], paramseal.SealedModel]) -> paramseal.SealedModel:
    """``seal()`` drawing ``salt`` (its interleaving then depends on the seed alone)."""
    real = os.urandom
    os.urandom = lambda n: salt if n == 16 else real(n)
    try:
        return seal()
    finally:
        os.urandom = real


def trial(config: str, seed: int, n: int) -> tuple[str, str]:
    """One trial: its outcome class and a line describing it."""
    dt, level, k = CONFIGS[config]
    rng = np.random.default_rng([seed, list(CONFIGS).index(config)])
    salt = rng.bytes(16)
    size = int(np.exp(rng.uniform(np.log(n / 10), np.log(n))))
    s = _sealed_with_salt(salt, lambda: paramseal.seal(model(rng, dt, size), KEY, level=level))
    code = "irs4" if parse_header(s.header_json, KEY).irs else "lanes"
    kind = KINDS[seed % len(KINDS)]
    lo, hi = EDGES[config][kind]
    frac = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    bad = damage(rng, s.tensors, kind, frac, k)
    rep = paramseal.verify(bad, KEY, s.header_json)
    res = paramseal.recover(bad, KEY, s.header_json)
    exact = _same(res.tensors, s.tensors)
    whole = res.report.exit_code == 0 and exact and paramseal.verify(res.tensors, KEY, s.header_json).ok
    line = (
        f"{config} seed={seed} {code} n={size} {kind} {frac:.5f}: verify {rep.status} recoverable={rep.recoverable}, "
        f"recover {res.report.status} exit {res.report.exit_code} exact={exact} failed={res.report.lanes_failed}"
    )
    if rep.status == "intact":
        return "intact", line
    if res.report.exit_code == 0 and not exact:
        return "false claim", line
    if rep.recoverable:
        return ("yes, restored" if whole else "DANGER: yes, not restored"), line
    return ("SAFE: no, exit 0" if res.report.exit_code == 0 else "no, exit 2"), line


def _positive(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=_positive, default=600, help="trials per configuration")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first trial (trial i: seed + i)")
    ap.add_argument("--n", type=_positive, default=200_000, help="values in the largest model")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma list of " + ", ".join(CONFIGS))
    ap.add_argument("--verbose", action="store_true", help="a line for every trial")
    a = ap.parse_args(argv)
    configs = a.configs.split(",")
    if unknown := [c for c in configs if c not in CONFIGS]:
        ap.error(f"unknown configuration {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    if a.n < 2_000:
        ap.error(f"--n {a.n} is too small for a model that damage can hit in every way (2000 at least)")
    bad = 0
    for config in configs:
        tally: Counter[str] = Counter()
        t0 = time.perf_counter()
        for i in range(a.trials):
            what, line = trial(config, a.seed + i, a.n)
            tally[what] += 1
            if a.verbose or what in ("false claim", "DANGER: yes, not restored", "SAFE: no, exit 0"):
                print(line, flush=True)
        wrong = tally["false claim"] + tally["DANGER: yes, not restored"] + tally["SAFE: no, exit 0"]
        bad += wrong
        cells = ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
        print(f"{config}: {a.trials} trials: {cells}; disagreements {wrong} ({time.perf_counter() - t0:.0f} s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
