#!/usr/bin/env python3
"""How much damage leaves a model whose header lives only in its weights recoverable.

Usage::

    python benchmarks/header_copies.py [--trials 100] [--flips 1000] [--dir SCRATCH]
    python benchmarks/header_copies.py --format pt --dtype bf16 --attack lowflips --flips 20
    python benchmarks/header_copies.py --format npy,pt,safetensors --attack scattered --rate 0.01

An `.npy` file, a `.pt` saved by torch itself (``torch.save(model.state_dict())``, which drops
the ``_metadata`` entry ParamSeal's own `.pt` files keep it in) or a safetensors file whose
metadata was stripped keeps the seal header only as copies in the low bits of its largest
tensors. Those copies carry no parity, so this measures the reader that rebuilds the header
from damaged copies (each copy, a byte-wise majority, mixes of two). Each model is sealed once
at ``--level`` (``standard``):

* ``npy``: one 1024 x 1024 array saved as ``.npy`` (one carrier; ``--rows``: another number of rows);
* ``safetensors`` (printed as ``stripped``): a transformer-shaped model of 13 tensors (1.18M
  values; ``--scale S``: its widths S times, S x 1.18M values), written as safetensors with no
  metadata at all (two carriers at fp32);
* ``--model PATH``: the float tensors of a real model instead (cast to ``--dtype``; not with npy);
* ``pt``: the same 13 tensors as a PyTorch ``.pt`` state dict, without that entry (``--one``:
  the one array of ``npy`` instead, in any format).

``--dtype`` casts the model (fp32 by default, or bf16); the header copies per carrier and the
carriers are whatever ``seal`` chose for that model, and are printed. Every trial applies one
seeded attack to the sealed values, writes the file with no metadata, runs
``files.recover_file`` and counts a success only when the status is ``recovered`` and the
output is byte-identical to the sealed model:

* ``flips`` (the default): ``--flips`` distinct random bits anywhere (any bit of any value);
* ``lowflips``: ``--flips`` distinct random bits among the low k bits of every value (the
  storage bits the seal wrote, where the header copies are; k is the level's for the dtype);
* ``scattered``: ``--rate`` of all values, uniformly over the model, replaced by random
  values on the model's scale (as ``recovery_rates.py --attacks scattered``).

``--metadata`` keeps the sealed metadata (the header with it) in the attacked safetensors or
``.pt`` file, as ParamSeal writes them: the same attacks with the header not at stake. A
failed trial is counted as ``header lost`` (no authentic header: every copy was hit beyond
rebuilding), ``unrecoverable`` (the header was found; the damage is past the code's capacity,
as it would be with the header in the metadata) or ``other`` (anything else, such as an
output that is not the sealed model), and its reason is printed on stderr.
"""

from __future__ import annotations

import argparse
import collections
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np

from paramseal import Key, ParamSealError, files
from paramseal.errors import NotSealedError, UsageError
from paramseal.formats import Loaded
from paramseal.header import HeaderAuthError
from paramseal.levels import FLOATS, dtype_name

KEY = Key(bytes(range(32)))
EXT = {"npy": ".npy", "pt": ".pt", "safetensors": ".safetensors"}
LABEL = {"npy": "npy", "pt": "pt", "safetensors": "stripped"}
DTYPES = {"f32": np.dtype(np.float32), "bf16": np.dtype(ml_dtypes.bfloat16)}
SCALE = 0.05  # the weights' standard deviation, which replacement values share


def _unsigned(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1).view(f"u{a.itemsize}")


def _owners(tensors: dict[str, np.ndarray], pos: np.ndarray, per: int) -> list[tuple[str, np.ndarray]]:
    """``pos`` (over all values, ``per`` positions a value) split by tensor: ``[(name, positions in it)]``."""
    names = list(tensors)
    ends = np.cumsum([tensors[n].size * per for n in names])
    owner = np.searchsorted(ends, pos, side="right")
    starts = np.concatenate([[0], ends[:-1]])
    return [(n, pos[owner == i] - starts[i]) for i, n in enumerate(names) if np.any(owner == i)]


def flip(tensors: dict[str, np.ndarray], n: int, rng: np.random.Generator, low: int = 0) -> dict[str, np.ndarray]:
    """``n`` distinct random bits flipped over all values; ``low``: among each value's low ``low`` bits only."""
    width = next(iter(tensors.values())).itemsize * 8
    per = low or width
    out = {name: a.copy() for name, a in tensors.items()}
    total = sum(a.size for a in tensors.values()) * per
    for name, rel in _owners(tensors, rng.choice(total, size=n, replace=False), per):
        u = _unsigned(out[name])
        np.bitwise_xor.at(u, rel // per, np.ones(rel.size, u.dtype) << (rel % per).astype(u.dtype))
    return out


def scatter(tensors: dict[str, np.ndarray], rate: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``rate`` of all values, uniformly at random, replaced by random values that differ from them."""
    out = {name: a.copy() for name, a in tensors.items()}
    total = sum(a.size for a in tensors.values())
    for name, idx in _owners(tensors, rng.choice(total, size=max(1, round(rate * total)), replace=False), 1):
        flat = out[name].reshape(-1)
        new = (rng.standard_normal(idx.size) * SCALE).astype(flat.dtype)
        u, old = _unsigned(new), _unsigned(flat[idx].copy())
        u[u == old] ^= u.dtype.type(1 << (new.itemsize * 8 - 2))  # unchanged by chance: flip a high bit
        flat[idx] = new
    return out


def model(
    one: bool, dtype: np.dtype, rng: np.random.Generator, rows: int = 1024, scale: int = 1
) -> dict[str, np.ndarray]:
    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * SCALE).astype(np.float32).astype(dtype)

    if one:
        return {"array": w(rows, 1024)}
    m = {"tok": w(1000 * scale, 256)}
    for i in range(4):
        m |= {f"h{i}.qkv": w(256, 768 * scale), f"h{i}.qkv.b": w(768 * scale), f"h{i}.mlp": w(256, 128 * scale)}
    return m


def run(fmt: str, one: bool, a: argparse.Namespace, work: Path) -> tuple[int, collections.Counter[str], int, int]:
    ext, label = EXT[fmt], LABEL[fmt]
    src, sealed_p, bad, out = (work / f"{label}.{s}{ext}" for s in ("src", "sealed", "bad", "out"))
    if a.model:  # a real model's float tensors (its integer ones would be left alone by every attack)
        own = files.read_model(Path(a.model)).tensors
        tensors = {n: np.asarray(t).astype(DTYPES[a.dtype]) for n, t in own.items() if np.asarray(t).dtype.kind == "f"}
    else:
        tensors = model(one, DTYPES[a.dtype], np.random.default_rng(11), a.rows, a.scale)
    files.write_model(src, Loaded(tensors, {}))
    sealed = files.seal_file(src, sealed_p, KEY, level=a.level)
    loaded = files.read_model(sealed_p)
    ref, meta = loaded.tensors, (loaded.metadata if a.metadata else {})
    low = FLOATS[dtype_name(DTYPES[a.dtype])].levels[a.level]
    ok, failed = 0, collections.Counter[str]()
    for t in range(a.trials):
        rng = np.random.default_rng(9000 + t)
        match a.attack:
            case "flips":
                bad_t = flip(ref, a.flips, rng)
            case "lowflips":
                bad_t = flip(ref, a.flips, rng, low)
            case _:
                bad_t = scatter(ref, a.rate, rng)
        files.write_model(bad, Loaded(bad_t, meta))  # no metadata, unless --metadata
        try:
            res = files.recover_file(bad, out, KEY)
            got = files.read_model(out).tensors if res.report.status == "recovered" else {}
            exact = bool(got) and all(got[n].tobytes() == ref[n].tobytes() for n in ref)
            ok += exact
            if not exact:
                failed["unrecoverable" if res.report.status == "unrecoverable" else "other"] += 1
                print(f"  {label} trial {t}: status {res.report.status}, not bit-exact", file=sys.stderr)
        except ParamSealError as e:
            # no authentic header (every copy hit) or beyond what the code recovers
            failed["header lost" if isinstance(e, (HeaderAuthError, NotSealedError)) else "unrecoverable"] += 1
            print(f"  {label} trial {t}: {type(e).__name__}: {str(e)[:120]}", file=sys.stderr)
    return ok, failed, len(sealed.header.carriers), sealed.header.copies


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--attack", choices=("flips", "lowflips", "scattered"), default="flips")
    ap.add_argument("--flips", type=int, default=1000, help="bits flipped a trial (flips, lowflips)")
    ap.add_argument("--rate", type=float, default=0.01, help="share of values replaced a trial (scattered)")
    ap.add_argument(
        "--format", default="npy,safetensors", help="comma-separated: npy, pt, safetensors (default npy,safetensors)"
    )
    ap.add_argument("--one", action="store_true", help="seal one ROWS x 1024 array in every format")
    ap.add_argument("--rows", type=int, default=1024, help="rows of the one array (npy, --one; default 1024)")
    ap.add_argument(
        "--scale", type=int, default=1, help="the 13-tensor model's widths times this (S x 1.18M values; default 1)"
    )
    ap.add_argument("--model", help="a model file (safetensors, ...) whose float tensors are used instead")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="f32")
    ap.add_argument("--level", choices=("light", "standard", "strong"), default="standard")
    ap.add_argument(
        "--metadata", action="store_true", help="keep the sealed metadata (safetensors, pt): the header is not lost"
    )
    ap.add_argument("--dir", help="scratch folder (default: a temporary one)")
    a = ap.parse_args()
    fmts = a.format.split(",")
    if a.trials < 1:
        ap.error(f"--trials must be at least 1, not {a.trials}")
    if a.flips < 1:  # with no flip the status is 'intact', never 'recovered': every trial would count as failed
        ap.error(f"--flips must be at least 1, not {a.flips}")
    if a.rows < 1:
        ap.error(f"--rows must be at least 1, not {a.rows}")
    if a.scale < 1:
        ap.error(f"--scale must be at least 1, not {a.scale}")
    if not (math.isfinite(a.rate) and 0 < a.rate <= 1):
        ap.error(f"--rate must be a share of the values in (0, 1], not {a.rate}")
    if bad := [f for f in fmts if f not in EXT]:
        ap.error(f"--format must list npy, pt or safetensors, not {', '.join(map(repr, bad))}")
    if a.model and "npy" in fmts:
        ap.error("--model needs --format safetensors or pt: an .npy holds one array")
    if a.metadata and "npy" in fmts:
        ap.error("--metadata needs --format safetensors or pt: an .npy has no metadata to keep the header in")
    what = {
        "flips": f"{a.flips} random flips",
        "lowflips": f"{a.flips} random flips in the low k bits",
        "scattered": f"{100 * a.rate:g}% of values replaced",
    }[a.attack]
    work = Path(a.dir or tempfile.mkdtemp(prefix="ps-copies-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for fmt in dict.fromkeys(fmts):
            t0 = time.perf_counter()
            label = ("metadata" if fmt == "safetensors" else f"{fmt}+meta") if a.metadata else LABEL[fmt]
            head = label if a.dtype == "f32" and a.level == "standard" else f"{label} {a.dtype} {a.level}"
            if a.model:
                head += f" {Path(a.model).name}"
            elif a.scale > 1 and not (a.one or fmt == "npy"):
                head += f" x{a.scale}"
            try:
                ok, failed, carriers, copies = run(fmt, a.one or fmt == "npy", a, work)
            except UsageError as e:  # seal refuses a model too small to carry its header in a format without metadata
                print(f"{head:9s} not sealed: {e}", flush=True)
                continue
            why = "".join(f"; {why} {n}" for why, n in sorted(failed.items()))
            print(
                f"{head:9s} carriers {carriers}, copies per carrier {copies}: {what}, "
                f"recovered bit-exactly {ok}/{a.trials}{why} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)
        else:  # the files it wrote into the given folder
            for fmt in fmts:
                for s in ("src", "sealed", "bad", "out"):
                    (work / f"{LABEL.get(fmt, fmt)}.{s}{EXT.get(fmt, '')}").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
