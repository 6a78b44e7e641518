"""The irs4 code's fixed numbers: the GF(2^8) tables, the group width, the entry flags and the decode statuses.

Both the code's construction and API (`_irs`) and its numba kernels (`_irs_kernels`) need them;
this module imports nothing from the package, so neither of those imports the other's half.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

FIELD = 0x11D
N_POS = 255
FLAG_FIXED_MASK = 0x0F  # bit b: byte b of the entry is not stored as the code expects (an erasure)
FLAG_BAD = 0x10  # the entry lies in a block whose MAC failed: it may be an error
FLAG_PAD = 0x20  # padding: content known to be zero, never an error position

# decode() status per group
CLEAN = 0  # nothing to correct (fixed bytes re-derived)
CORRECTED = 1
TOO_MANY = -1  # more erasures than parity, or the locator is longer than the radius
ROOT_COUNT = -2  # the locator does not have as many roots as its degree
ROOT_LOCATION = -3  # a root lies on padding or on an entry not flagged FLAG_BAD
INCONSISTENT = -4  # the correction does not reproduce the syndromes


def xor_span(basis: Sequence[int]) -> NDArray[np.int64]:
    """``[2^n]``: entry v is the XOR of ``basis[b]`` over the bits b of v (a GF(2)-linear map as a table)."""
    t = np.zeros(1 << len(basis), np.int64)
    for b, v in enumerate(basis):
        t[1 << b : 2 << b] = t[: 1 << b] ^ v
    return t


def _gf_tables() -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    # LOG[0] = 512 and EXP[>= 510] = 0 make products branch-free: a zero factor lands in the zero tail
    exp = np.zeros(1040, np.int64)
    log = np.full(256, 512, np.int64)
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= FIELD
    exp[255:510] = exp[0:255]
    return exp, log


EXP, LOG = _gf_tables()
KEEP = np.array(  # word mask that zeroes the fixed bytes of flag bits 0-3
    [sum(0xFF << (8 * b) for b in range(4) if not (f >> b) & 1) for f in range(16)], np.int64
)
