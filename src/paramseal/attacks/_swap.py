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
    # n distinct pairs: a pair drawn twice swapped back, and a unit in two pairs moved twice
    free = np.array([t[nm].size // unit(t[nm]) for nm in names], dtype=np.float64)
    if n > int((free // 2).sum()):
        what = "blocks" if mode == "blocks" else "rows"
        raise UsageError(f"cannot swap {n} distinct pairs of {what}: the chosen tensors have {int((free // 2).sum())}")
    left, per = free.copy(), np.zeros(len(names), dtype=np.int64)
    for _ in range(n):  # the tensor of each pair, by the units it has left
        p = np.where(left >= 2, left, 0)
        k = int(rng.choice(len(names), p=p / p.sum()))
        per[k] += 1
        left[k] -= 2
    for nm, units, c in zip(names, free.astype(np.int64).tolist(), per.tolist(), strict=True):
        if not c:
            continue
        # all of a tensor's pairs in one draw without replacement: one unit per pair at most
        w = unit(t[nm])
        i, j = rng.choice(units, size=(2, c), replace=False)
        v = d.bits(nm)[: units * w].reshape(units, w)
        v[i], v[j] = v[j], v[i]  # fancy indexing copies: the right side is read before either write
    return d.t


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
        same: dict[bytes, list[str]] = {}  # tensors of equal bits: a swap of two of them changes nothing
        for i in rng.permutation(len(members)):
            nm = members[int(i)]
            same.setdefault(hashlib.blake2b(np.ascontiguousarray(words(t[nm])).data).digest(), []).append(nm)
        runs = sorted(same.values(), key=len, reverse=True)
        order = [nm for g in runs for nm in g]
        big, half = len(runs[0]), len(order) // 2
        if big > half:  # each pair takes one of the largest group of equal tensors
            pairs += [(order[i], order[big + i]) for i in range(len(order) - big)]
        else:  # a run of equal tensors is at most half long: i and i + half are never both in it
            pairs += [(order[i], order[half + i]) for i in range(half)]
    if not pairs:
        raise UsageError("no two tensors with the same shape and dtype (and different values) to swap")
    if n > len(pairs):
        raise UsageError(
            f"cannot swap {n} distinct pairs of tensors: the chosen tensors make {len(pairs)} "
            "(of the same shape and dtype, different values, no tensor in two pairs)"
        )
    return [pairs[int(k)] for k in np.sort(rng.choice(len(pairs), size=n, replace=False))]
