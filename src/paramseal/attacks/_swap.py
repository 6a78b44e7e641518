"""The swap attack: values moved, none changed (pairs of 64-value blocks, of rows, or of whole tensors)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import UsageError
from ..levels import BLOCK
from ._spec import AttackSpec
from ._truth import words
from ._values import Draft, Rng, Tensors, is_float, pick


def swap(t: Tensors, spec: AttackSpec, rng: Rng) -> Tensors:
    """Swap ``n`` distinct pairs of 64-value blocks or of rows, or of whole tensors of the same shape and dtype."""
    mode, n = spec.mode_or_default, spec.n or 1
    d = Draft(t)
    if mode == "tensors":
        for x, y in _tensor_pairs(t, spec, n, rng):
            d.t[x], d.t[y] = t[y], t[x]
        return d.t

    def unit(a: NDArray[Any]) -> int:
        if mode == "blocks":
            return BLOCK
        return a.size // a.shape[0] if a.ndim >= 2 and a.shape[0] else 0

    def fits(a: NDArray[Any]) -> bool:
        return unit(a) > 0 and a.size // unit(a) >= 2

    names = pick(t, spec, lambda _n, a: is_float(a) and fits(a))
    if short := [nm for nm in names if not fits(t[nm])]:  # named with --tensor
        what = "64-value blocks" if mode == "blocks" else "rows"
        raise UsageError(
            f"swap --mode {mode} needs at least two {what} in each tensor; {', '.join(map(repr, short))} "
            f"{'has' if len(short) == 1 else 'have'} fewer"
        )
    # n distinct pairs: a pair drawn twice swapped back, a unit in two pairs moved twice, and a pair of equal
    # units (two blocks of ones) changed nothing
    what = "64-value blocks" if mode == "blocks" else "rows"
    pairs = [_unit_pairs(t[nm], unit(t[nm]), rng) for nm in names]
    have = sum(len(p) for p in pairs)
    if not have:
        raise UsageError(
            f"no two {what} of different values in the chosen tensors to swap (equal ones swap to no change)"
        )
    if n > have:
        raise UsageError(
            f"cannot swap {n} distinct pairs of {what.split()[-1]}: the chosen tensors have {have} "
            f"(of different values, no {what.split()[-1][:-1]} in two pairs)"
        )
    left, per = np.array([len(p) for p in pairs], dtype=np.float64), np.zeros(len(names), dtype=np.int64)
    for _ in range(n):  # the tensor of each pair, by the pairs it has left
        k = int(rng.choice(len(names), p=left / left.sum()))
        per[k] += 1
        left[k] -= 1
    for nm, made, c in zip(names, pairs, per.tolist(), strict=True):
        if not c:
            continue
        w = unit(t[nm])
        i, j = made[np.sort(rng.choice(len(made), size=c, replace=False))].T
        v = d.bits(nm)[: t[nm].size // w * w].reshape(-1, w)
        v[i], v[j] = v[j], v[i]  # fancy indexing copies: the right side is read before either write
    return d.t


def _unit_pairs(a: NDArray[Any], w: int, rng: Rng) -> NDArray[np.int64]:
    """Disjoint pairs ``(m, 2)`` of ``a``'s units of ``w`` values whose bits differ, as many as there can be."""
    rows = words(a).reshape(a.size, -1)[: a.size // w * w].reshape(a.size // w, -1).astype(np.uint64)
    h = np.zeros(len(rows), dtype=np.uint64)
    for col in rows.T:  # equal units hash alike; a collision only keeps two units from being paired
        h = (h ^ col) * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(29)
    order = rng.permutation(len(rows))
    return order[_matching(np.unique(h[order], return_inverse=True)[1].reshape(-1))]


def _matching(g: NDArray[np.intp]) -> NDArray[np.int64]:
    """Pairs ``(m, 2)`` of positions into ``g`` (each item's group of equal values, items in random order).

    No position is in two pairs and no pair within a group, and as many pairs are made as there can be:
    items ordered by groups, largest first (ties by first appearance), and one paired with the one half
    the items further on, or, where one group is more than half, with one past that group.
    """
    if len(g) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    counts = np.bincount(g)
    first = np.full(len(counts), len(g))
    np.minimum.at(first, g, np.arange(len(g)))
    order = np.lexsort((np.arange(len(g)), first[g], -counts[g])).astype(np.int64)
    big, half = int(counts.max()), len(g) // 2
    off = big if big > half else half
    m = len(g) - off
    return np.stack([order[: min(m, half)], order[off : off + min(m, half)]], axis=1)


def _tensor_pairs(t: Tensors, spec: AttackSpec, n: int, rng: Rng) -> list[tuple[str, str]]:
    """``n`` pairs of tensors of one shape and dtype and different values, no tensor in two pairs.

    A tensor in two pairs would move twice (its values would end in a third tensor, and two swaps of
    three tensors could put every value back). Among each shape and dtype, shuffled, tensors are
    ordered by groups of equal values, largest first, and one is paired with the one half the
    group further on: no pair is of equal values, and as many pairs are made as there can be.
    """
    names = pick(t, spec, lambda _n, a: True)
    groups: dict[tuple[Any, ...], list[str]] = {}
    for nm in names:
        groups.setdefault((t[nm].shape, t[nm].dtype), []).append(nm)
    pairs: list[tuple[str, str]] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        shuffled = [members[int(i)] for i in rng.permutation(len(members))]
        same: dict[bytes, int] = {}  # tensors of equal bits: a swap of two of them changes nothing
        g = [
            same.setdefault(hashlib.blake2b(np.ascontiguousarray(words(t[nm])).data).digest(), len(same))
            for nm in shuffled
        ]
        pairs += [(shuffled[i], shuffled[j]) for i, j in _matching(np.array(g, dtype=np.intp)).tolist()]
    if not pairs:
        raise UsageError("no two tensors with the same shape and dtype (and different values) to swap")
    if n > len(pairs):
        raise UsageError(
            f"cannot swap {n} distinct pairs of tensors: the chosen tensors make {len(pairs)} "
            "(of the same shape and dtype, different values, no tensor in two pairs)"
        )
    return [pairs[int(k)] for k in np.sort(rng.choice(len(pairs), size=n, replace=False))]
