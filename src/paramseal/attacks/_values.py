"""Attacks on tensor values: each takes the model and returns a new one (touched tensors are copies)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import _json
from .._bits import uint_view
from ..errors import UnsupportedError, UsageError
from ..header import METADATA_KEY
from ..levels import FLOATS, dtype_name, value_bits
from ._spec import AttackSpec

Tensors = dict[str, NDArray[Any]]
Rng = np.random.Generator


def _name(a: NDArray[Any]) -> str:
    try:
        return dtype_name(a.dtype)
    except UnsupportedError:
        return str(a.dtype)


def is_float(a: NDArray[Any]) -> bool:
    """Whether ``a`` is a float dtype ParamSeal seals (fp64/32/16, bf16)."""
    return _name(a) in FLOATS


def field_bits(a: NDArray[Any], field: str, k: int) -> list[int]:
    """Bit positions (LSB = 0) of ``field`` in ``a``'s dtype; integer tensors have only 'any'."""
    width = value_bits(a.dtype)  # a 4-bit value is held in a byte whose high bits the file does not keep
    fmt = FLOATS.get(_name(a))
    match field:
        case "any":
            return list(range(width))
        case _ if fmt is None:
            return []
        case "sign":
            return [fmt.bits - 1]
        case "exponent":
            return list(range(fmt.mantissa, fmt.mantissa + fmt.exponent))
        case "mantissa":
            return list(range(fmt.mantissa))
        case "watermark":
            return list(range(_low_bits(a, k)))
    raise AssertionError(field)


def _low_bits(a: NDArray[Any], k: int) -> int:
    """``k``, checked to fit in ``a``'s values (a larger --bits would shift past them and change nothing)."""
    width = a.dtype.itemsize * 8
    if k > width:
        raise UsageError(f"--bits {k} is more than the {width} bits of a {_name(a)} value")
    return k


def sealed_k(metadata: Mapping[str, str], tensors: Mapping[str, NDArray[Any]] | None = None) -> dict[str, int]:
    """The watermark bits per tensor from a ParamSeal header (untrusted; empty when not sealed).

    Without one in ``metadata``, the copy in the weights of ``tensors`` (a sealed .pt or .npy keeps only that).
    """
    text = metadata.get(METADATA_KEY)
    if text is None and tensors is not None:
        from .._embed import header_copies

        copies = header_copies(tensors)
        text = copies[0][1] if copies else None
    if text is None:
        return {}
    try:
        table = _json.loads(text).get("tensors", [])
        return {str(t["name"]): int(t["k"]) for t in table}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def pick(t: Mapping[str, NDArray[Any]], spec: AttackSpec, default: Callable[[str, NDArray[Any]], bool]) -> list[str]:
    """The tensors an attack touches: ``spec.tensors`` (checked) or those ``default`` accepts."""
    if spec.tensors:
        missing = [n for n in spec.tensors if n not in t]
        if missing:
            raise UsageError(f"no tensor named {', '.join(map(repr, missing))}; the model has: {', '.join(t)}")
        return list(spec.tensors)
    names = [n for n, a in t.items() if a.size and default(n, a)]
    if not names:
        raise UsageError(f"the model has no tensor that {spec.kind} can attack; pass --tensor NAME")
    return names


def classifier(t: Mapping[str, NDArray[Any]]) -> str:
    """The classifier: the last 2-D float tensor in file order."""
    names = [n for n, a in t.items() if a.ndim == 2 and is_float(a)]
    if not names:
        raise UsageError("the model has no 2-D float tensor to treat as the classifier; pass --tensor NAME")
    return names[-1]


class Draft:
    """A copy-on-write view of a model: a tensor is copied the first time it is written."""

    def __init__(self, tensors: Mapping[str, NDArray[Any]]) -> None:
        self.t: Tensors = dict(tensors)
        self._copied: set[str] = set()

    def w(self, name: str) -> NDArray[Any]:
        """A writable copy of ``name`` (the same array on later calls)."""
        if name not in self._copied:
            self.t[name] = np.array(self.t[name], copy=True, order="C")
            self._copied.add(name)
        return self.t[name]

    def flat(self, name: str) -> NDArray[Any]:
        """Writable flat values of ``name``."""
        return self.w(name).reshape(-1)

    def bits(self, name: str) -> NDArray[np.unsignedinteger]:
        """Writable flat unsigned view of ``name``."""
        a = self.t[name]
        if a.dtype.itemsize > 8:  # complex128: no unsigned integer is as wide, and ParamSeal never seals it
            raise UsageError(
                f"attack cannot change the bits of tensor '{name}': its {a.dtype} values are "
                f"{a.dtype.itemsize * 8} bits wide, more than the 64 it handles; choose others with --tensor"
            )
        return uint_view(self.w(name))


def scale(a: NDArray[Any]) -> tuple[float, float]:
    """Mean and std of a tensor, std never zero (a constant tensor gets 10% of its magnitude)."""
    x = a.astype(np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0.0, 1.0
    m, s = float(x.mean()), float(x.std())
    return m, s if s > 0 else max(abs(m), 1.0) * 0.1


def _parts(a: NDArray[Any]) -> list[NDArray[Any]]:
    """``a``'s real-valued parts: a complex tensor's real and imaginary parts, else ``a`` itself.

    Value attacks change each part as a tensor of its own (``astype(np.float64)`` keeps the real part only).
    """
    return [a.real, a.imag] if np.iscomplexobj(a) else [a]


def _join(dtype: np.dtype[Any], values: list[NDArray[Any]]) -> NDArray[Any]:
    """The values of dtype ``dtype`` whose :func:`_parts` are ``values``."""
    if len(values) == 1:
        return values[0].astype(dtype, copy=False)
    out = np.empty(values[0].shape, dtype)
    out.real, out.imag = values
    return out


def random_like(a: NDArray[Any], size: int, rng: Rng) -> NDArray[Any]:
    """``size`` random values on ``a``'s scale (each part's, for a complex ``a``), in ``a``'s dtype."""
    values = []
    for p in _parts(a):
        m, s = scale(p)
        values.append((m + s * rng.standard_normal(size)).astype(p.dtype))
    return _join(a.dtype, values)


def _overwrite(d: Draft, name: str, idx: NDArray[np.int64], new: NDArray[Any]) -> None:
    """Write ``new`` at ``idx``, nudging any value that would equal the old one so every index changes."""
    u = d.bits(name)
    nu = uint_view(np.ascontiguousarray(new)).copy()
    same = nu == u[idx]
    nu[same] ^= np.array(1, dtype=nu.dtype)
    u[idx] = nu


def _spread(sizes: list[int], pos: NDArray[np.int64]) -> list[tuple[str | int, NDArray[np.int64]]]:
    """Split global positions over tensors of ``sizes``: (tensor number, local positions)."""
    ends = np.cumsum(sizes)
    which = np.searchsorted(ends, pos, side="right")
    out: list[tuple[str | int, NDArray[np.int64]]] = []
    for i in np.unique(which):
        sel = pos[which == i]
        out.append((int(i), sel - (ends[i] - sizes[i])))
    return out


def bitflip(t: Tensors, spec: AttackSpec, meta: Mapping[str, str], rng: Rng) -> Tensors:
    """Flip exactly ``n`` distinct random bits, drawn uniformly over the allowed bits of the chosen tensors."""
    n = spec.n or 1
    ks = sealed_k(meta, t) if spec.field == "watermark" and spec.bits is None else {}
    if spec.field == "watermark" and not ks and spec.bits is None:
        raise UsageError("--field watermark needs a sealed model (to read k per tensor) or --bits K")
    names = pick(t, spec, lambda _n, a: (spec.field == "any" and a.dtype.itemsize <= 8) or is_float(a))
    fields = [field_bits(t[nm], spec.field, spec.bits or ks.get(nm, 0)) for nm in names]
    sizes = [t[nm].size * len(f) for nm, f in zip(names, fields, strict=True)]
    total = sum(sizes)
    if n > total:
        raise UsageError(f"cannot flip {n} bits: the chosen tensors have only {total} {spec.field} bits")
    pos = np.sort(rng.choice(total, size=n, replace=False)).astype(np.int64)
    d = Draft(t)
    for i, local in _spread(sizes, pos):
        nm, f = names[int(i)], np.array(fields[int(i)], dtype=np.int64)
        u = d.bits(nm)
        idx, bit = local // len(f), f[local % len(f)]
        np.bitwise_xor.at(u, idx, (np.ones(idx.size, dtype=u.dtype) << bit.astype(u.dtype)))
    return d.t


def random_modify(t: Tensors, spec: AttackSpec, rng: Rng) -> Tensors:
    """Replace exactly round(fraction x N) values of the chosen tensors by random values on each tensor's scale."""
    names = pick(t, spec, lambda _n, a: is_float(a))
    sizes = [t[nm].size for nm in names]
    total = sum(sizes)
    if not total:
        raise UsageError(f"the chosen tensors ({', '.join(map(repr, names))}) hold no values for random-modify")
    count = max(1, round(spec.fraction_or_default * total))
    if spec.contiguous:
        runs = min(int(rng.integers(2, 6)), count)
        lens = np.full(runs, count // runs, dtype=np.int64)
        lens[: count % runs] += 1
        seg = total // runs
        if lens.max() <= seg:
            starts = [i * seg + int(rng.integers(0, seg - ln + 1)) for i, ln in enumerate(lens)]
        else:  # nearly every value: a run is longer than total // runs, so share out the values left untouched
            gaps = np.diff(np.arange(runs + 1) * (total - count) // runs)
            ends = np.cumsum(lens + gaps)
            starts = [int(e - ln - g + rng.integers(0, g + 1)) for e, ln, g in zip(ends, lens, gaps, strict=True)]
        pos = np.concatenate([np.arange(s, s + ln, dtype=np.int64) for s, ln in zip(starts, lens, strict=True)])
    else:
        pos = np.sort(rng.choice(total, size=count, replace=False)).astype(np.int64)
    d = Draft(t)
    for i, local in _spread(sizes, pos):
        nm = names[int(i)]
        _overwrite(d, nm, local, random_like(t[nm], local.size, rng))
    return d.t


def noise(t: Tensors, spec: AttackSpec, rng: Rng) -> Tensors:
    """Add Gaussian noise with std ``sigma`` x each chosen tensor's std (a complex one's: each part's, to each part)."""
    d = Draft(t)
    for nm in pick(t, spec, lambda _n, a: is_float(a)):
        noisy = []
        for p in _parts(t[nm]):
            _, s = scale(p)
            x = p.astype(np.float64)
            noisy.append((x + spec.noise_sigma * s * rng.standard_normal(x.shape)).astype(p.dtype))
        d.t[nm] = _join(t[nm].dtype, noisy)
    return d.t


def prune(t: Tensors, spec: AttackSpec) -> Tensors:
    """Magnitude pruning: zero the round(fraction x numel) smallest-magnitude values (complex: modulus) of each."""
    d = Draft(t)
    for nm in pick(t, spec, lambda _n, a: is_float(a) and a.ndim >= 2):
        count = round(spec.fraction_or_default * t[nm].size)
        if count:
            a = t[nm]
            mag = np.abs((a if np.iscomplexobj(a) else a.astype(np.float64)).reshape(-1))
            d.flat(nm)[np.argpartition(mag, count - 1)[:count]] = 0
    return d.t


def backdoor_row(t: Tensors, spec: AttackSpec, rng: Rng) -> Tensors:
    """Overwrite ``n`` random rows of the classifier (or ``--tensor``) with strong random values."""
    nm = spec.tensors[0] if spec.tensors else classifier(t)
    pick(t, spec, lambda _n, a: True)
    a = t[nm]
    if a.ndim < 2:
        raise UsageError(f"backdoor-row needs a tensor with rows; '{nm}' has shape {list(a.shape)}")
    n = spec.n or 1
    if n > a.shape[0]:
        raise UsageError(f"'{nm}' has {a.shape[0]} rows; cannot overwrite {n}")
    rows = np.sort(rng.choice(a.shape[0], size=n, replace=False))
    d = Draft(t)
    width = a.size // a.shape[0]
    stds = [(p.dtype, scale(p)[1]) for p in _parts(a)]
    for r in rows:
        idx = np.arange(r * width, (r + 1) * width, dtype=np.int64)
        _overwrite(d, nm, idx, _join(a.dtype, [(3 * s * rng.standard_normal(width)).astype(dt) for dt, s in stds]))
    return d.t


def whole_tensors(t: Tensors, spec: AttackSpec, rng: Rng, zero: bool) -> Tensors:
    """Replace (random values on its scale) or zero whole tensors.

    ``--tensor`` names them; else with ``fraction`` tensors are taken in random order while
    they fit in that fraction of all parameters; else one random float tensor.
    """
    if spec.tensors:
        names = pick(t, spec, lambda _n, a: True)
    else:
        floats = pick(t, spec, lambda _n, a: is_float(a))
        order = [floats[i] for i in rng.permutation(len(floats))]
        if spec.fraction is None:
            names = order[:1]
        else:
            budget = spec.fraction * sum(a.size for a in t.values())
            names, used = [], 0
            for nm in order:
                if used + t[nm].size <= budget:
                    names.append(nm)
                    used += t[nm].size
            if not names:
                smallest = min(t[nm].size for nm in floats)
                raise UsageError(f"--fraction {spec.fraction} is smaller than the smallest tensor ({smallest} values)")
    d = Draft(t)
    for nm in names:
        a = t[nm]
        if zero:
            d.t[nm] = np.zeros_like(a)
        else:  # every value changes, as random-modify's do (a low-precision draw can equal the old value)
            _overwrite(d, nm, np.arange(a.size, dtype=np.int64), random_like(a, a.size, rng))
    return d.t


def lsb_rewrite(t: Tensors, spec: AttackSpec, meta: Mapping[str, str], rng: Rng) -> Tensors:
    """Rewrite the low k bits of a fraction of values with uniformly random (plausible) bits."""
    ks = sealed_k(meta, t) if spec.bits is None else {}
    if spec.bits is None and not ks:
        raise UsageError("lsb-rewrite needs a sealed model (to read k per tensor) or --bits K")
    d = Draft(t)
    for nm in pick(t, spec, lambda n, a: is_float(a) and (spec.bits or ks.get(n, 0)) > 0):
        a = t[nm]
        k = _low_bits(a, spec.bits or ks.get(nm, 0))
        count = round(spec.fraction_or_default * a.size)
        idx = np.sort(rng.choice(a.size, size=count, replace=False)).astype(np.int64)
        u = d.bits(nm)
        mask = u.dtype.type((1 << k) - 1)
        low = rng.integers(0, 1 << k, size=count, dtype=np.uint64).astype(u.dtype)
        u[idx] = (u[idx] & ~mask) | low
    return d.t


def quantize(t: Tensors, spec: AttackSpec) -> Tensors:
    """An int8 (per-tensor symmetric) or fp16 quantise/dequantise round trip of the chosen tensors.

    A complex tensor's real and imaginary parts are quantised each as a tensor of its own (int8: each its own scale).
    """
    d = Draft(t)
    for nm in pick(t, spec, lambda _n, a: is_float(a)):
        d.t[nm] = _join(t[nm].dtype, [_quantized(p, spec.mode_or_default) for p in _parts(t[nm])])
    return d.t


def _quantized(a: NDArray[Any], mode: str) -> NDArray[Any]:
    x = a.astype(np.float64)
    if mode == "fp16":
        return x.astype(np.float16).astype(a.dtype)
    # the scale from the finite values, which alone are quantised: one -inf (a mask) made every value NaN
    ok = np.isfinite(x)
    m = float(np.max(np.abs(x[ok]))) if ok.any() else 0.0
    s = m / 127 if m > 0 else 1.0
    return np.where(ok, np.clip(np.round(np.where(ok, x, 0) / s), -127, 127) * s, x).astype(a.dtype)


def metadata(meta: Mapping[str, str], spec: AttackSpec, rng: Rng) -> dict[str, str]:
    """Edit the ParamSeal header (one character of its salt), strip it, or edit a user metadata key."""
    out = dict(meta)
    mode = spec.mode_or_default
    if mode == "user":
        out["attacker.note"] = f"edited {int(rng.integers(1 << 30))}"
        return out
    if METADATA_KEY not in out:
        raise UsageError(
            f"metadata --mode {mode} needs a ParamSeal header in the file's metadata, and this file has none (a "
            "sealed .npy, or a .pt saved again by torch, keeps it in its weights only: use bitflip --field "
            "watermark or lsb-rewrite)"
        )
    if mode == "strip":
        del out[METADATA_KEY]
        return out
    try:
        body = _json.loads(out[METADATA_KEY])
    except ValueError:
        body = None
    if not isinstance(body, dict):  # edit changes one character of its salt: there is no salt to edit
        raise UsageError(
            f"metadata --mode edit needs the file's ParamSeal header ('{METADATA_KEY}') to be a JSON object, and it "
            "is not (it is damaged already); use --mode strip to remove it"
        )
    salt = str(body.get("salt") or "00")  # an empty salt has no character to change
    i = int(rng.integers(len(salt)))
    body["salt"] = salt[:i] + ("0" if salt[i] != "0" else "1") + salt[i + 1 :]
    out[METADATA_KEY] = json.dumps(body, separators=(",", ":"))
    return out


__all__ = ["Draft", "classifier", "field_bits", "is_float", "pick", "sealed_k"]
