"""The irs4 encoder as one GF(2)-linear map, for ``ps_irs_encode_affine``.

The encoder's free bits are a GF(2)-linear function of the bits it reads (syndromes, then the
solver: both linear). So each read byte's share of each free byte of its codeword is an 8x8 bit
matrix, which ``gf2p8affineqb`` applies to 64 bytes at once: 8 free bytes of 8 groups. That is one
product per read byte and free byte, with no syndromes, no solve and no broadcast of single bytes:
about 770 instructions a group at k = 8 and 1550 at k = 12, against about 1050 multiplies at k = 8
for the syndrome encoder, with about as many shuffles, broadcasts and XORs, and a k = 12 solve that
reads 1.5 MiB of tables. The matrices (about 400 KiB at k = 8, 530 at k = 16, 790 at k = 12) are read
from L2, each serving 32 groups.

The matrices are read off the syndrome encoder itself (`_plan`): one probe group per bit it reads,
holding that bit alone; the bits the encoder sets are the probe's column of the map. A map that
sets a bit outside the free bytes ``place_free_bytes`` writes, or reaches across codewords, is
refused (None: the syndrome encoder serves). `tests/test_native.py` compares the two encoders, and
both with numba, for every code in use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from . import _gfni_plan, _irs_consts


@dataclass(frozen=True, slots=True, eq=False)
class AffinePlan:
    nsrc: NDArray[np.int32]  # (4,) bytes codeword t reads
    nblk: NDArray[np.int32]  # (4,) blocks of 8 free bytes of codeword t (8 or 16; the last ones may be padding)
    src: NDArray[np.int16]  # the read bytes (byte of the group), codeword 0's first
    mats: NDArray[np.uint64]  # for each read byte, nblk[t] blocks of 8 matrices (free byte 8 e + L in qword L)


def _codeword(byte: NDArray[np.int64]) -> NDArray[np.int64]:
    """Codeword of each byte of a group: byte b of word j is codeword (b - j) & 3."""
    return ((byte & 3) - (byte >> 2)) & 3


def _transpose8(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Each word's 8x8 bit block transposed: bit i of byte b goes to bit b of byte i (Hacker's Delight 7-3)."""
    x = x.copy()
    for shift, mask in ((7, 0x00AA00AA00AA00AA), (14, 0x0000CCCC0000CCCC), (28, 0x00000000F0F0F0F0)):
        t = (x ^ (x >> np.uint64(shift))) & np.uint64(mask)
        x ^= t ^ (t << np.uint64(shift))
    return x


def plan(k: int, free_strata: int, host: int, encode: Callable[[NDArray[np.uint32]], None]) -> AffinePlan | None:
    """The map of the (k, free_strata, host) code as ``encode`` (the syndrome encoder, in place) computes it.

    Probes about 6000 groups (k = 8, every stratum a float): the caller keeps what it returns.
    """
    p = _gfni_plan._plan(k, free_strata, host)
    nbytes = 4 * _irs_consts.N_POS
    keep = np.unpackbits(p.keep[:nbytes], bitorder="little")
    bits = np.flatnonzero(keep)  # every bit the code reads: one probe group each
    image = np.zeros((bits.size, nbytes), np.uint8)
    probe_at, probe_bit = (np.arange(bits.size), bits >> 3), (1 << (bits & 7)).astype(np.uint8)
    image[probe_at] = probe_bit
    encode(image.view("<u4"))
    image[probe_at] ^= probe_bit  # the probe's own bit off: the bits it sets
    # where place_free_bytes puts free byte e of codeword t (spread, masks: see _gfni_plan._spread)
    bit = np.arange(64, dtype=np.uint64)
    flag = [((p.masks[:, i : i + 1] >> bit) & np.uint64(1)).reshape(-1).astype(np.int64) for i in range(3)]
    gb = np.flatnonzero(flag[2])  # the group bytes that get a free byte
    source = p.spread.reshape(-1)[gb].astype(np.int64) + 128 * flag[0][gb] + 256 * flag[1][gb]
    t_of, e_of = source // 128, source % 128
    outside = np.ones(nbytes, bool)
    outside[gb] = False
    if np.any(np.bitwise_or.reduce(image, axis=0)[outside]):
        return None  # a bit set outside the free bytes: not this kernel's map
    src_byte = bits >> 3
    nsrc, nblk, srcs, mats = [], [], [], []
    for t in range(4):
        dst = np.full(128, -1, np.int64)
        dst[e_of[t_of == t]] = gb[t_of == t]
        nd = int((dst >= 0).sum())
        if np.any(dst[:nd] < 0):
            return None  # free bytes not numbered 0 .. nd - 1
        probe = np.flatnonzero(_codeword(src_byte) == t)  # bits ascend: a read byte's probes are consecutive
        if np.any(np.bitwise_or.reduce(image[probe], axis=0)[gb[t_of != t]]):
            return None  # a read byte of codeword t reaching another codeword's free bytes
        nb = 8 if nd <= 64 else 16
        reads, at = np.unique(src_byte[probe], return_inverse=True)
        col = np.zeros((reads.size, nd, 8), np.uint8)  # [read byte, free byte, its bit b]: the bits b sets there
        col[at, :, bits[probe] & 7] = image[probe][:, dst[:nd]]
        m = np.zeros((reads.size, 8 * nb, 8), np.uint8)  # [read byte, free byte, output bit i] -> row of bits b
        m[:, :nd] = _transpose8(col.view("<u8")[..., 0]).view(np.uint8).reshape(reads.size, nd, 8)
        # gf2p8affineqb: output bit i of a byte is the parity of (matrix byte 7 - i) & input
        nsrc.append(reads.size)
        nblk.append(nb)
        srcs.append(reads.astype(np.int16))
        mats.append(np.ascontiguousarray(m[:, :, ::-1]).view("<u8").reshape(-1))
    return AffinePlan(
        np.array(nsrc, np.int32), np.array(nblk, np.int32), np.ascontiguousarray(np.concatenate(srcs)),
        np.ascontiguousarray(np.concatenate(mats)),
    )  # fmt: skip
