"""The numba kernels of the stratum gathers, which `_strata.Strata` runs where the library is not built.

Separate from `_strata` as code numba compiles: the references of ``ps_gather_runs`` and
``ps_to_strata`` in ``_native.c`` (`Strata.groups`, `Strata.to_strata`), and `_split_runs`,
which cuts their rows into one part per core.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ._irs_consts import FLAG_BAD, FLAG_PAD
from ._jit import njit
from ._parallel import halves


def _gather_nb(  # type: ignore[no-untyped-def]
    runs, G, offs, ipermt, t0, t1, src, bad, nb, li, rs, tagb, free, keep, seal, w, fl
):  # fmt: skip
    """The numba reference of `_native.gather_runs` (``src`` None: padding; ``fl`` None: no flags)."""
    src = np.zeros(0, np.uint32) if src is None else src
    want = fl is not None
    return _gather_runs_nb(
        runs, G, offs, ipermt, t0, t1, src, bad, nb, li, rs, tagb, free, np.uint32(keep), seal, want, w,
        fl if want else np.zeros((1, 1), np.uint8),
    )  # fmt: skip


@njit(cache=True, nogil=True)
def _gather_runs_nb(  # type: ignore[no-untyped-def]
    runs, G, offs, ipermt, t0, t1, src, bad, nb, li, rs, tagb, free, keep, seal, want_flags, w, fl
):  # fmt: skip
    """The words of stream range ``[t0, t1)`` (one tensor, flat values ``src``) that runs of groups hold.

    Into ``w`` (and flags into ``fl``) in position order. ``runs``: rows ``(first group, groups,
    first row)``; ``ipermt[j, r]``: position of stratum j under permutation r. Tiles of 128
    groups keep their rows of ``w`` in cache while each stratum is read as a stretch. Flags as
    `Strata._flags_of`, with ``bad`` the tensor's failed blocks; an empty ``src`` is padding
    (words zero, flags ``FLAG_PAD | free``). Returns the stream index of the first NaN/Inf word
    when ``seal`` (else -1); ``keep`` masks every word (the free bits cleared).

    One tensor per call: a list of arrays in numba costs reference counting per word.
    """
    nperm = ipermt.shape[1]
    pad = src.shape[0] == 0
    for ri in range(runs.shape[0]):
        g0, ng, r0 = runs[ri, 0], runs[ri, 1], runs[ri, 2]
        for a in range(0, ng, 128):
            b = min(ng, a + 128)
            for j in range(t0 // G, (t1 - 1) // G + 1):
                ws = (g0 + a + offs[j]) % G  # the tile's words in stratum j: [ws, ws + b - a), wrapping
                for s0, s1, i0 in ((ws, min(G, ws + b - a), a), (0, ws + b - a - G, a + G - ws)):
                    lo, hi = max(j * G + s0, t0), min(j * G + s1, t1)
                    if lo >= hi:
                        continue
                    i = i0 + lo - j * G - s0
                    p = (g0 + i) % nperm
                    for x in range(lo, hi):
                        row = r0 + i
                        pos = ipermt[j, p]
                        i += 1
                        p += 1
                        if p == nperm:
                            p = 0
                        if pad:
                            if want_flags:
                                fl[row, pos] = FLAG_PAD | free
                            continue
                        local = x - t0
                        word = src[local]
                        if seal and (word >> 23) & 0xFF == 0xFF:
                            return x
                        w[row, pos] = word & keep
                        if want_flags:
                            blk = local // 64
                            f = FLAG_BAD if bad[blk] else 0
                            if blk != nb - 1 or li:
                                f |= tagb[local % 64]
                            if blk < rs:
                                f |= free
                            fl[row, pos] = f
    return -1


@njit(cache=True, nogil=True)
def _strata_of_nb(w, g0, ipermt, out):  # type: ignore[no-untyped-def]
    """``out[j, i]``: the word of float stratum j in group g0 + i (rows of ``w`` in position order)."""
    nperm = ipermt.shape[1]
    for a in range(0, w.shape[0], 128):
        b = min(w.shape[0], a + 128)
        for j in range(out.shape[0]):
            p = (g0 + a) % nperm
            for i in range(a, b):
                out[j, i] = w[i, ipermt[j, p]]
                p += 1
                if p == nperm:
                    p = 0


def _split_runs(runs: NDArray[np.int64], ng: int) -> list[NDArray[np.int64]]:
    """``runs`` (rows ``first group, groups, first row`` covering rows ``[0, ng)``) cut into one part per core."""
    out = []
    for a, b in halves(ng):
        lo = np.maximum(runs[:, 2], a)
        hi = np.minimum(runs[:, 2] + runs[:, 1], b)
        keep = hi > lo
        r = runs[keep]
        lo, hi = lo[keep], hi[keep]
        out.append(np.stack([r[:, 0] + lo - r[:, 2], hi - lo, lo], axis=1))
    return out


__all__: list[str] = []
