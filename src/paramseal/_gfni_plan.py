"""The tables `_native`'s GFNI irs4 kernels take: GF(2^8)'s two fields mapped, and each code's encoder plan.

The compiled kernels multiply in gf2p8mulb's field (mod 0x11b) where the code is defined mod
0x11d: `_phi` maps one onto the other. `_plan` builds, once per code, the syndrome powers, the
lanes each codeword owns and the solver's nibble tables. Pure numpy: the calls into the library
stay in `_native`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from . import _irs, _irs_consts

# --------------------------------------------------------------------------- GF(2^8) field map


def _mul_11b(a: int, b: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return r


@functools.lru_cache(maxsize=1)
def _phi() -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """phi: GF(2^8) mod 0x11d -> mod 0x11b (alpha -> a root gamma of 0x11d there), and its inverse, as tables."""
    for gamma in range(2, 256):
        pw = [1]
        for _ in range(8):
            pw.append(_mul_11b(pw[-1], gamma))
        if pw[8] ^ pw[4] ^ pw[3] ^ pw[2] ^ pw[0] == 0:  # x^8 + x^4 + x^3 + x^2 + 1
            break
    else:  # pragma: no cover - the two fields are isomorphic, so a root exists
        raise AssertionError("no root of 0x11d in GF(2^8) mod 0x11b")
    fwd = _irs_consts.xor_span(pw[:8]).astype(np.uint8)
    inv = np.zeros(256, np.uint8)
    inv[fwd] = np.arange(256, dtype=np.uint8)
    return fwd, inv


def _affine_matrix(table: NDArray[np.uint8]) -> int:
    """The gf2p8affineqb matrix of a GF(2)-linear byte map (byte 7 - r: the inputs of output bit r)."""
    return sum(row << (8 * (7 - r)) for r, row in enumerate(_bit_rows(table)))


def _bit_rows(table: NDArray[np.uint8]) -> list[int]:
    """Of a GF(2)-linear byte map given as a table: for each output bit r, the input bits that reach it."""
    return [sum(1 << b for b in range(8) if (int(table[1 << b]) >> r) & 1) for r in range(8)]


# --------------------------------------------------------------------------- encoder tables


@dataclass(frozen=True, slots=True, eq=False)
class _Plan:
    powers: NDArray[np.uint8]
    dmax: int
    perm: NDArray[np.uint8]
    keep: NDArray[np.uint8]
    phi: int
    phi_inv: int
    tabs: NDArray[np.uint8]
    d: NDArray[np.int32]
    rowbytes: int
    spread: NDArray[np.uint8]  # [16, 64] and masks [16, 3]: where free bytes go (`_spread`)
    masks: NDArray[np.uint64]
    cols: NDArray[np.uint8] | None  # [4, dmax, rowbytes] where the solver is GF(2^8)-linear, else None
    cidx: NDArray[np.uint8]  # [4, 3, 64] and cpowers [dmax, 4, 3, 64], cmask: the compacted quarters (`_compact`)
    cpowers: NDArray[np.uint8]
    cmask: int


def _lane_perm() -> NDArray[np.uint8]:
    """Lanes of a 64-byte chunk (16 words) grouped by codeword: byte b of word j is codeword (b - j) & 3."""
    lanes = np.arange(64)
    cls = ((lanes & 3) - (lanes >> 2)) & 3
    return np.concatenate([lanes[cls == t] for t in range(4)]).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _plan(k: int, free_strata: int, host: int) -> _Plan:
    code = _irs.code_for(k, free_strata, host)
    fwd, inv_phi = _phi()
    d = code.d.astype(np.int64)
    dmax = int(d.max())
    perm = _lane_perm()
    # syndrome powers: alpha^((i + first_t) j) for byte lane (chunk c, permuted lane m)
    lane = perm.astype(np.int64)
    j = 16 * np.arange(16)[:, None] + (lane >> 2)[None, :]  # (16, 64)
    t = ((lane & 3) - (lane >> 2)) & 3  # (64,) codeword of each permuted lane
    i = np.arange(dmax)[:, None, None]
    e = ((i + code.first[t][None, None, :]) * j[None]) % 255
    powers = fwd[_irs_consts.EXP[e].astype(np.uint8)]
    powers[(i >= d[t][None, None, :]) | (j[None] >= _irs_consts.N_POS)] = 0
    # the bits the code reads: all but the free nibbles (hosted bytes are data)
    keep = np.full(1024, 0xFF, np.uint8)
    keep[1020:] = 0
    free_nibbles = [8 * jj + n for jj in range(free_strata) for n in range(k // 4)]
    hosted = {8 * int(jj) + n for jj in code.hosted.reshape(-1) for n in (0, 1)}
    for x in free_nibbles:
        if x not in hosted:
            keep[4 * (x >> 3) + ((x & 7) >> 1)] &= 0xF0 if x & 1 == 0 else 0x0F
    # free bits as bytes: composed solver rows, then Four Russians tables per syndrome nibble
    # inv composed with phi^-1 on each syndrome byte, a byte map as a table: output bit c of 8 bits is
    # their parity under inv_phi[1 << c] (an integer matmul took a quarter of this function)
    composed = _irs_consts.xor_span(_bit_rows(inv_phi)).astype(np.uint8)
    locs: list[list[int]] = []
    mats: list[NDArray[np.uint8]] = []  # [syndrome bit, free bit]: the solver's rows, transposed
    for tt in range(4):
        dt = int(d[tt])
        used = code.fn[tt, : 2 * dt].astype(np.int64)
        byte = 4 * (used >> 3) + ((used & 7) >> 1)
        blist = sorted(set(byte.tolist()))
        locs.append(blist)
        m = np.zeros((8 * dt, 8 * len(blist)), np.uint8)
        inv = code.inverses[tt]
        if inv is not None:
            # rows of 8 bits packed flat (packbits along a short axis was 5 times slower)
            comp = np.unpackbits(composed[np.packbits(inv, bitorder="little")], bitorder="little").reshape(inv.shape)
            row = 8 * np.searchsorted(blist, byte) + 4 * (used & 1)  # nibble r's 4 bits: rows row .. row + 3
            m[:, row[:, None] + np.arange(4)] = comp.reshape(used.size, 4, -1).transpose(2, 0, 1)
        mats.append(m)
    rowbytes = 64 if max(len(b) for b in locs) <= 64 else 128
    tabs = np.zeros((4, 2 * dmax, 16, rowbytes), np.uint8)
    for tt in range(4):
        dt, nb = int(d[tt]), len(locs[tt])
        if not dt:
            continue
        cols = np.zeros((8 * dt, rowbytes), np.uint8)  # syndrome bit -> free-byte image
        cols[:, :nb] = np.packbits(mats[tt], bitorder="little").reshape(8 * dt, nb)
        cols4 = cols.reshape(2 * dt, 4, rowbytes)
        for v in range(1, 16):
            low = (v & -v).bit_length() - 1
            tabs[tt, : 2 * dt, v] = tabs[tt, : 2 * dt, v & (v - 1)] ^ cols4[:, low]
    cidx, cpowers, cmask = _compact(keep, code.first.astype(np.int64), d, fwd, dmax)
    return _Plan(
        np.ascontiguousarray(powers),
        dmax,
        perm,
        keep,
        _affine_matrix(fwd),
        _affine_matrix(inv_phi),
        tabs,
        d.astype(np.int32),
        rowbytes,
        *_spread(locs),
        _gf_columns(tabs, d, fwd, inv_phi),
        cidx,
        cpowers,
        cmask,
    )


def _compact(
    keep: NDArray[np.uint8], first: NDArray[np.int64], d: NDArray[np.int64], fwd: NDArray[np.uint8], dmax: int
) -> tuple[NDArray[np.uint8], NDArray[np.uint8], int]:
    """The encoder's syndromes over 48 bytes a codeword for each quarter of a group (64 words) where that holds them.

    The bytes ``keep`` clears (the free bytes: byte 0 of a float word at k >= 8) add nothing to a
    syndrome, and they are a quarter of a float word's bytes. A quarter whose other bytes of each
    codeword fit in 48 is multiplied as 3 vectors instead of 4: ``cidx[q, v]`` picks vector v's bytes
    from raw chunks ``4 q + v`` and ``4 q + v + 1`` (vpermt2b: 128-bit lane t holds codeword t's bytes
    in word order), ``cpowers[i, q, v]`` their syndrome powers (phi-domain; 0 for an empty lane).
    Bit q of ``cmask``: quarter q is compacted.
    """
    cidx = np.zeros((4, 3, 64), np.uint8)
    cpow = np.zeros((dmax, 4, 3, 64), np.uint8)
    i = np.arange(dmax)[:, None]
    cmask = 0
    for q in range(4):
        fits = True
        for t in range(4):
            j = np.arange(64 * q, min(64 * q + 64, _irs_consts.N_POS))
            js = j[keep[4 * j + ((t + j) & 3)] != 0]
            e = np.arange(js.size)
            v, lane, c = e // 16, 16 * t + e % 16, (js - 64 * q) // 16
            if js.size > 48 or np.any((c != v) & (c != v + 1)):
                fits = False
                break
            cidx[q, v, lane] = 64 * (c - v) + 4 * (js % 16) + ((t + js) & 3)
            e_pow = ((i + first[t]) * js) % 255
            cpow[:, q, v, lane] = np.where(i < d[t], fwd[_irs_consts.EXP[e_pow].astype(np.uint8)], 0)
        if fits:
            cmask |= 1 << q
        else:
            cidx[q] = 0
            cpow[:, q] = 0
    return np.ascontiguousarray(cidx), np.ascontiguousarray(cpow), cmask


def _spread(locs: list[list[int]]) -> tuple[NDArray[np.uint8], NDArray[np.uint64]]:
    """Where ``ps_irs_encode`` puts free byte e of codeword t (byte ``locs[t][e]`` of the group).

    ``spread[c, b]``: the low 7 bits of source ``128 t + e`` for byte b of 64-byte chunk c;
    ``masks[c]``: the bytes whose source has bit 7 set, bit 8 set, and the bytes that get one.
    """
    flat = np.full(16 * 64, -1, np.int64)
    for t, where in enumerate(locs):
        assert len(where) <= 128 and (flat[where] < 0).all()  # codewords own disjoint bytes
        flat[where] = 128 * t + np.arange(len(where))
    src = flat.reshape(16, 64)
    bits = np.uint64(1) << np.arange(64, dtype=np.uint64)
    masks = np.stack([(bits * ((src >= 0) & (src >> b & 1 == 1))).sum(axis=1, dtype=np.uint64) for b in (7, 8)] +
                     [(bits * (src >= 0)).sum(axis=1, dtype=np.uint64)], axis=1)  # fmt: skip
    return np.ascontiguousarray(np.where(src >= 0, src & 127, 0).astype(np.uint8)), np.ascontiguousarray(masks)


@functools.lru_cache(maxsize=1)
def _mul_table_11b() -> NDArray[np.uint8]:
    """``[256, 256]`` products in GF(2^8) mod 0x11b (gf2p8mulb's field)."""
    exp = np.zeros(510, np.int64)
    x = 1
    for i in range(255):  # 3 generates the multiplicative group mod 0x11b
        exp[i] = x
        x = _mul_11b(x, 3)
    exp[255:] = exp[:255]
    log = np.zeros(256, np.int64)
    log[exp[:255]] = np.arange(255)
    out: NDArray[np.uint8] = exp[log[:, None] + log[None, :]].astype(np.uint8)
    out[0, :] = out[:, 0] = 0
    return out


def _gf_columns(
    tabs: NDArray[np.uint8], d: NDArray[np.int64], fwd: NDArray[np.uint8], inv_phi: NDArray[np.uint8]
) -> NDArray[np.uint8] | None:
    """The nibble tables as one GF(2^8) column per syndrome, or None where they are not GF(2^8)-linear.

    Where the free bits are whole bytes, the image of syndrome byte s (phi-domain) is
    ``phi^-1(col * s)`` byte by byte, ``col = phi(image of 1)``: checked here for the 8 bits of s.
    Both sides are GF(2)-linear in s (the tables XOR nibble images; phi^-1 and the product by col
    are linear), so that is every s: the encoder takes this shortcut only where it gives the
    tables' bytes exactly.
    """
    dmax, rowbytes = tabs.shape[1] // 2, tabs.shape[3]
    cols = np.zeros((4, dmax, rowbytes), np.uint8)
    s = 1 << np.arange(8)
    mul = _mul_table_11b()
    for t in range(4):
        dt = int(d[t])
        if not dt:
            continue
        image = tabs[t, 0 : 2 * dt : 2][:, s & 15] ^ tabs[t, 1 : 2 * dt : 2][:, s >> 4]  # [dt, 8, rowbytes]
        cols[t, :dt] = fwd[image[:, 0]]
        want = inv_phi[mul[cols[t, :dt, None, :], s[None, :, None]]]
        if not np.array_equal(want, image):
            return None
    return cols
