#!/usr/bin/env python3
"""How often random bit flips leave a model whose header lives only in its weights recoverable.

Usage::

    python benchmarks/header_copies.py [--trials 100] [--flips 1000] [--dir SCRATCH]

A `.pt` or `.npy` file (or a safetensors file whose metadata was stripped) keeps the seal
header only as copies in the low bits of its largest tensors. Those copies carry no parity,
so this measures the reader that rebuilds the header from damaged copies (each copy, a
byte-wise majority, mixes of two). Two models, each sealed once at ``standard``:

* ``npy``: one 1024 x 1024 fp32 array saved as ``.npy`` (one carrier);
* ``stripped``: a transformer-shaped fp32 model of 13 tensors (1.18M values), written as
  safetensors with no metadata at all (two carriers).

Every trial flips ``--flips`` distinct random bits anywhere in the sealed values (any bit of
any value, seeded per trial), writes the file, runs ``files.recover_file`` and counts a
success only when the status is ``recovered`` and the output is byte-identical to the sealed
model. Prints the copies per carrier and the recovered count per model.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from paramseal import Key, ParamSealError, files
from paramseal.formats import Loaded

KEY = Key(bytes(range(32)))


def flip(tensors: dict[str, np.ndarray], n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` distinct random bits flipped over all values (uint32 views of fp32 tensors)."""
    names = list(tensors)
    sizes = np.array([tensors[k].size for k in names], np.int64)
    bits = rng.choice(int(sizes.sum()) * 32, size=n, replace=False)
    value, bit = bits // 32, (bits % 32).astype(np.uint32)
    owner = np.searchsorted(np.cumsum(sizes), value, side="right")
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = {}
    for i, name in enumerate(names):
        u = tensors[name].copy().reshape(-1).view(np.uint32)
        sel = owner == i
        np.bitwise_xor.at(u, value[sel] - start[i], np.uint32(1) << bit[sel])
        out[name] = u.view(np.float32).reshape(tensors[name].shape)
    return out


def model(kind: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    if kind == "npy":
        return {"array": w(1024, 1024)}
    m = {"tok": w(1000, 256)}
    for i in range(4):
        m |= {f"h{i}.qkv": w(256, 768), f"h{i}.qkv.b": w(768), f"h{i}.mlp": w(256, 128)}
    return m


def run(kind: str, trials: int, flips: int, work: Path) -> tuple[int, int, int]:
    ext = ".npy" if kind == "npy" else ".safetensors"
    src, sealed_p, bad, out = (work / f"{kind}.{s}{ext}" for s in ("src", "sealed", "bad", "out"))
    files.write_model(src, Loaded(model(kind, np.random.default_rng(11)), {}))
    sealed = files.seal_file(src, sealed_p, KEY)
    ref = files.read_model(sealed_p).tensors
    ok = 0
    for t in range(trials):
        files.write_model(bad, Loaded(flip(ref, flips, np.random.default_rng(9000 + t)), {}))  # no metadata
        try:
            res = files.recover_file(bad, out, KEY)
            got = files.read_model(out).tensors if res.report.status == "recovered" else {}
            ok += bool(got) and all(got[n].tobytes() == ref[n].tobytes() for n in ref)
        except ParamSealError as e:
            print(f"  {kind} trial {t}: {type(e).__name__}: {str(e)[:120]}", file=sys.stderr)
    return ok, len(sealed.header.carriers), sealed.header.copies


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--flips", type=int, default=1000)
    ap.add_argument("--dir", help="scratch folder (default: a temporary one)")
    a = ap.parse_args()
    if a.trials < 1:
        ap.error(f"--trials must be at least 1, not {a.trials}")
    if a.flips < 1:  # with no flip the status is 'intact', never 'recovered': every trial would count as failed
        ap.error(f"--flips must be at least 1, not {a.flips}")
    work = Path(a.dir or tempfile.mkdtemp(prefix="ps-copies-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for kind in ("npy", "stripped"):
            t0 = time.perf_counter()
            ok, carriers, copies = run(kind, a.trials, a.flips, work)
            print(
                f"{kind:9s} carriers {carriers}, copies per carrier {copies}: {a.flips} random flips, "
                f"recovered bit-exactly {ok}/{a.trials} ({time.perf_counter() - t0:.0f} s)"
            )
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)
        else:  # the files it wrote into the given folder
            for kind, ext in (("npy", ".npy"), ("stripped", ".safetensors")):
                for s in ("src", "sealed", "bad", "out"):
                    (work / f"{kind}.{s}{ext}").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
