"""The values a recover report names unrecoverable, as ``[start, stop)`` flat index ranges.

A report names them by block (``unrecoverable_blocks``), each block whole or, where recover
knows which of its values stay unknown (irs4: a block only partly decoded), by a 64-bit mask
(``unrecoverable_masks``, bit j for value j of the block).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .levels import BLOCK

ALL = np.uint64((1 << 64) - 1)  # the mask of a whole block


def lost_ranges(
    blocks: NDArray[np.integer], masks: NDArray[np.integer] | None, numel: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Start and stop arrays of the values named, runs of consecutive values merged; ``masks`` None: whole blocks."""
    b = blocks.astype(np.int64)
    m = np.full(b.size, ALL) if masks is None else masks.astype(np.uint64)
    order = np.argsort(b, kind="stable")
    b, m = b[order], m[order]
    whole = m == ALL
    lo, hi = b[whole] * BLOCK, (b[whole] + 1) * BLOCK
    if not whole.all():  # the values of each masked block, one by one
        bits = np.unpackbits(m[~whole].astype("<u8").view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
        r, c = np.nonzero(bits)
        v = b[~whole][r] * BLOCK + c
        lo, hi = np.r_[lo, v], np.r_[hi, v + 1]
        at = np.argsort(lo, kind="stable")
        lo, hi = lo[at], hi[at]
    hi = np.minimum(hi, numel)
    keep = hi > lo
    lo, hi = lo[keep], hi[keep]
    first = np.r_[True, lo[1:] > hi[:-1]] if lo.size else np.zeros(0, np.bool_)
    last = np.r_[first[1:], True] if lo.size else first
    return lo[first], hi[last]


def ranges_mask(lo: NDArray[np.int64], hi: NDArray[np.int64], numel: int) -> NDArray[np.bool_]:
    """A bool array of ``numel`` values, True inside the ranges ``[lo, hi)`` of `lost_ranges` (disjoint, apart)."""
    edge = np.zeros(numel + 1, np.int8)
    edge[np.minimum(lo, numel)] += 1  # runs are merged: no start is another's stop, so no index is hit twice
    edge[np.minimum(hi, numel)] -= 1
    return np.cumsum(edge[:numel], dtype=np.int8) > 0


__all__ = ["ALL", "lost_ranges", "ranges_mask"]
