"""Interleaved Reed–Solomon over GF(2^8) on groups of 255 words, parity in the free nibbles.

A batch is ``W: uint32[ng, 255]``: row g is one group, column j its position j. A group carries
4 codewords of length 255 over GF(2^8) (primitive polynomial 0x11d); codeword t takes byte
``(t + j) & 3`` of word j, so a replaced word is one error position shared by all 4 codewords.

Words ``j < free_strata`` are fp32 values whose low k bits are free. Codeword t satisfies d_t
syndrome equations ``S_i = r(alpha^(i + b_t)) = 0``, i < d_t, solved bit-exactly for its first
2 d_t free nibbles (in position order, low nibble first): d_t = floor(free nibbles / 2). The
GF(2) map from those free bits to the syndrome bits is inverted once and composed with the
syndrome table, so encoding is one table pass. Words ``j >= free_strata`` are pure data.

The decoder is collaborative: one error locator for the 4 codewords (multi-sequence
Berlekamp–Massey), which corrects up to sum_t (d_t - eps_t) / 5 replaced words per group (eps_t
erased bytes of codeword t), against d_t / 2 for a codeword alone. Only words flagged
``FLAG_BAD`` may be errors; when the flagged words fit as erasures (<= d_t per codeword with the
fixed bytes) they are erased instead. See docs/scattered-design.md, sections 2, 3 and 6.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from . import _parallel
from ._irs_consts import EXP, FLAG_BAD, FLAG_FIXED_MASK, FLAG_PAD, KEEP, LOG, N_POS
from ._irs_kernels import run_nb


@dataclass(frozen=True, slots=True, eq=False)
class Code:
    """Tables of one (k, free_strata) code; build with `code_for` (cached), treat as immutable.

    Packed vectors (syndromes, free nibbles) are ``words`` uint64 little-endian: syndrome i of a
    codeword is byte i, free nibble r is nibble r.
    """

    k: int
    free_strata: int
    d: NDArray[np.int64]  # (4,) parity symbols of each codeword
    first: NDArray[np.int64]  # (4,) first root exponent b_t
    words: int  # uint64 words per packed vector (a multiple of 4)
    fn: NDArray[np.int64]  # (4, 2 max d): free nibble r of codeword t -> 8 j + n (-1 past 2 d_t)
    host: int = 0  # whole free bytes per codeword turned into data (they carry the outer code)
    hosted: NDArray[np.int64] = field(default_factory=lambda: np.zeros((4, 0), np.int64))  # (4, host): j of byte 0
    # per codeword, the GF(2) solver: syndrome bits -> its free bits, packed order (None where d_t = 0)
    inverses: tuple[NDArray[np.uint8] | None, ...] = (None, None, None, None)
    # `syn` and `enc` once built (`_tables`): held by the code, so a kernel given the code holds them too
    held: list[NDArray[np.uint64]] = field(default_factory=list, repr=False)

    @property
    def syn(self) -> NDArray[np.uint64]:
        """(255 * 128, words): row 128 j + 16 n + v: syndromes of value v at nibble n of word j."""
        return _tables(self)[0]

    @property
    def enc(self) -> NDArray[np.uint64]:
        """The rows of `syn` composed with the solver: their share of the free nibbles."""
        return _tables(self)[1]


def _gf_mul(a: NDArray[np.int64], b: NDArray[np.int64]) -> NDArray[np.int64]:
    out: NDArray[np.int64] = EXP[LOG[a] + LOG[b]]
    return out


def _pack_bits(bits: NDArray[np.uint8], words: int) -> NDArray[np.uint64]:
    """(..., nbits) 0/1 -> (..., words) uint64, bit i -> word i >> 6, bit i & 63."""
    pad = np.zeros((*bits.shape[:-1], 64 * words), np.uint8)
    pad[..., : bits.shape[-1]] = bits
    return np.packbits(pad, axis=-1, bitorder="little").view("<u8").reshape(*bits.shape[:-1], words)


def _gf2_inverse(m: NDArray[np.uint8]) -> NDArray[np.uint8] | None:
    """Inverse of a square 0/1 matrix over GF(2), or None if it is singular."""
    n = m.shape[0]
    aug = np.concatenate([m.astype(np.uint8), np.eye(n, dtype=np.uint8)], axis=1)
    packed = _pack_bits(aug, (2 * n + 63) // 64)
    from . import _native  # imports this module

    done = _native.gf2_eliminate(packed)  # compiled: every seal and recover builds its code (4 of these)
    if not (_gf2_eliminate(packed) if done is None else done):
        return None
    bits = np.unpackbits(packed.view(np.uint8), axis=1, bitorder="little")
    return bits[:, n : 2 * n]


def _gf2_eliminate(packed: NDArray[np.uint64]) -> bool:
    """Gauss–Jordan on the packed ``[m | I]`` in place (the reference of ``ps_gf2_eliminate``); False if singular."""
    for c in range(packed.shape[0]):
        w, bit = c >> 6, np.uint64(1 << (c & 63))
        col = (packed[:, w] & bit) != 0
        cand = np.flatnonzero(col[c:])
        if cand.size == 0:
            return False
        p = c + int(cand[0])
        if p != c:
            packed[[c, p]] = packed[[p, c]]
            col[[c, p]] = col[[p, c]]
        rows = np.flatnonzero(col)
        rows = rows[rows != c]
        packed[rows, w:] ^= packed[c, w:]
    return True


def _gf2_apply(inv: NDArray[np.uint8], syn: NDArray[np.uint8], words: int) -> NDArray[np.uint64]:
    """Apply inv to bits(syn) over GF(2), packed: (..., d) syndrome bytes -> (..., words) free bits.

    Four Russians: a 256-entry table of column combinations per syndrome byte, then one
    gather per byte. (A float BLAS product is exact too, but thrashes when cores are busy.)
    """
    d = syn.shape[-1]
    cols = _pack_bits(np.ascontiguousarray(inv.T).reshape(d, 8, -1), words)  # (d, 8, words): syndrome bit 8 i + b
    table = np.zeros((d, 256, words), np.uint64)
    for v in range(1, 256):
        table[:, v] = table[:, v & (v - 1)] ^ cols[:, (v & -v).bit_length() - 1]
    flat = syn.reshape(-1, d)
    out = np.zeros((flat.shape[0], words), np.uint64)
    for i in range(d):
        out ^= table[i, flat[:, i]]
    return out.reshape(*syn.shape[:-1], words)


def _syndrome_bytes(first: NDArray[np.int64], d: NDArray[np.int64], nbytes: int) -> NDArray[np.uint8]:
    """(255, 8, 16, nbytes): syndrome i of nibble value v at nibble n of position j, in its codeword."""
    j = np.arange(N_POS)[:, None, None]
    n = np.arange(8)[None, :, None]
    i = np.arange(nbytes)[None, None, :]
    t = ((n >> 1) - j) & 3
    pw = EXP[((i + first[t]) * j) % 255]  # (255, 8, nbytes)
    bit = (1 << np.arange(4))[:, None] << (4 * (np.arange(8) & 1))[None, :]  # (4, 8): the nibble's bits
    one = _gf_mul(bit.T[None, :, :, None], pw[:, :, None, :])  # (255, 8, 4, nbytes)
    one[np.broadcast_to((i >= d[t])[:, :, None, :], one.shape)] = 0
    one = one.astype(np.uint8)
    out = np.zeros((N_POS, 8, 16, nbytes), np.uint8)
    for v in range(1, 16):  # the product is linear over GF(2) in v: XOR of its bits' (a quarter of the multiplies)
        out[:, :, v] = out[:, :, v & (v - 1)] ^ one[:, :, (v & -v).bit_length() - 1]
    return out


def _solver(t: int, nibs: list[int], d_t: int) -> tuple[int, NDArray[np.uint8]]:
    """First root b and the GF(2) inverse (syndrome bits -> free bits) for the free nibbles ``nibs``."""
    jj = np.array([x >> 3 for x in nibs], np.int64)
    h = np.array([x & 1 for x in nibs], np.int64)
    e = (1 << (4 * h[:, None] + np.arange(4)[None, :])).reshape(-1)  # free bit 4 r + kb
    jb = np.repeat(jj, 4)
    # Only root runs through alpha^0 (b = 0, or wrapping past 254): the constant word (c, c, ..., c)
    # is then no codeword, so XORing one constant into every value of a model is never "decoded".
    for b0 in (0, *range(254, 254 - d_t, -1)):
        pw = EXP[((np.arange(d_t)[None, :] + b0) * jb[:, None]) % 255]  # (8 d_t, d_t)
        cols = np.unpackbits(_gf_mul(e[:, None], pw).astype(np.uint8), axis=1, bitorder="little")
        inv = _gf2_inverse(cols.T)
        if inv is not None:
            return b0, inv
    raise ValueError(f"no first root gives an invertible free-nibble system for codeword {t}")


def _line_aligned(a: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """A copy of ``a`` that starts on a 64-byte cache line.

    A table row of 32 or 64 bytes then spans one line, not two (numpy's own allocations are
    16-byte aligned): the table encoder is faster (``benchmarks/ab_encode.py``).
    """
    raw = np.empty(a.nbytes + 64, np.uint8)
    at = -raw.ctypes.data % 64
    out = raw[at : at + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


@functools.lru_cache(maxsize=16)
def code_for(k: int, free_strata: int = N_POS, host: int = 0) -> Code:
    """The code for k free bits per fp32 value in the first ``free_strata`` positions (cached).

    ``host``: in each codeword, the free byte 0 of the first ``host`` positions that have one
    becomes data (d_t drops by ``host``); the outer code keeps its parity there. The first
    strata are never padding, so every group stores its hosted bytes.
    Raises ValueError for k outside (8, 12, 16) (at k=4 no root run through alpha^0 gives a
    solvable parity system), free_strata outside 1..255, or a layout without a solvable one.
    """
    if k not in (8, 12, 16):
        raise ValueError(f"cannot build a code for k={k} free bits; expected 8, 12 or 16")
    if not 1 <= free_strata <= N_POS:
        raise ValueError(f"cannot build a code with free_strata={free_strata}; expected 1 to {N_POS}")
    if host and (k < 8 or 4 * host > free_strata):
        raise ValueError(f"cannot host {host} bytes per codeword at k={k} with {free_strata} free positions")
    lists: list[list[int]] = [[] for _ in range(4)]
    for j in range(free_strata):
        for n in range(k // 4):
            lists[((n >> 1) - j) & 3].append(8 * j + n)
    hosted = np.zeros((4, host), np.int64)
    for t in range(4):  # byte 0 of position j belongs to codeword (-j) & 3
        js = [j for j in range(free_strata) if (-j) & 3 == t][:host]
        hosted[t] = sorted(js)
        gone = {8 * j for j in js} | {8 * j + 1 for j in js}
        lists[t] = [x for x in lists[t] if x not in gone]
    d = np.array([len(fl) // 2 for fl in lists], np.int64)
    dmax = int(d.max())
    words = max(4, -(-dmax // 32) * 4)  # 8 d bits, rounded up to 4 words for the unrolled XORs
    first = np.ones(4, np.int64)
    inv: list[NDArray[np.uint8] | None] = [None] * 4
    fn = np.full((4, max(1, 2 * dmax)), -1, np.int64)
    for t in range(4):
        if d[t]:
            used = lists[t][: 2 * int(d[t])]  # an odd free nibble out stays zero
            first[t], inv[t] = _solver(t, used, int(d[t]))
            fn[t, : len(used)] = used
    for a in (d, first, fn, hosted):
        a.setflags(write=False)
    for it in inv:
        if it is not None:
            it.setflags(write=False)
    return Code(k, free_strata, d, first, words, fn, host, hosted, tuple(inv))


_TABLES_LOCK = threading.Lock()


def _tables(code: Code) -> list[NDArray[np.uint64]]:
    """``code``'s syndrome and encoder tables (`Code.syn`, `Code.enc`), built on first use and kept by the code.

    Only the table kernels (numba's, and the compiled ones where the CPU lacks GFNI) read them:
    with GFNI a seal or recover never builds them (about half of `code_for`'s time).
    """
    with _TABLES_LOCK:  # the seal's and recover's threads share one code: the first builds, the others wait
        if not code.held:
            code.held.extend(_build_tables(code))
        return code.held


def _build_tables(code: Code) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    words, d, hosted = code.words, code.d, code.hosted
    sb = _syndrome_bytes(code.first, d, 8 * words)
    syn = sb.view("<u8").reshape(N_POS, 8, 16, words).copy()
    # composed table: the free-nibble share of each single data bit, then XOR-combined per value
    tt = ((np.arange(8)[None, :] >> 1) - np.arange(N_POS)[:, None]) & 3  # codeword of nibble n of word j
    share = np.zeros((N_POS, 8, 4, words), np.uint64)
    for t in range(4):
        it = code.inverses[t]
        if it is not None:
            sel = tt == t
            share[sel] = _gf2_apply(it, sb[sel][:, [1, 2, 4, 8], : int(d[t])], words)
    enc = np.zeros_like(syn)
    for v in range(1, 16):
        low = (v & -v).bit_length() - 1
        enc[:, :, v] = enc[:, :, v & (v - 1)] ^ share[:, :, low]
    keep = enc[hosted.reshape(-1), :2].copy()
    enc[: code.free_strata, : code.k // 4] = 0  # free nibbles carry no data
    enc[hosted.reshape(-1), :2] = keep  # hosted bytes do
    syn, enc = _line_aligned(syn.reshape(-1, words)), _line_aligned(enc.reshape(-1, words))
    syn.setflags(write=False)
    enc.setflags(write=False)
    return syn, enc


def byte_mask(flags: NDArray[np.uint8]) -> NDArray[np.uint32]:
    """Per entry: the word mask of the bytes that are stored as the code expects (not fixed)."""
    out: NDArray[np.uint32] = KEEP[flags & FLAG_FIXED_MASK].astype(np.uint32)
    return out


def radius(code: Code, eps_per_codeword: float = 0.0) -> float:
    """Collaborative errors-only radius: sum_t (d_t - eps) / 5 replaced words per group."""
    return float(sum(max(0.0, float(dt) - eps_per_codeword) for dt in code.d)) / 5.0


def fits(code: Code, flags: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Per group: whether its FLAG_BAD entries fit as erasures with the fixed bytes (<= d_t in every codeword).

    Then `decode` rebuilds the group from the entries not flagged alone (those the caller verified),
    whatever the flagged ones hold; otherwise it trusts the flagged entries it does not locate as errors.
    """
    if flags.ndim != 2 or flags.shape[1] != N_POS:
        raise ValueError(f"flags must have shape (ng, {N_POS}); got {flags.shape}")
    bad = ((flags & FLAG_BAD) != 0) & ((flags & FLAG_PAD) == 0)
    fx = np.where(bad, 0, flags & np.uint8(FLAG_FIXED_MASK))  # fixed bytes outside the flagged entries
    shift = ((np.arange(4)[:, None] + np.arange(N_POS)[None, :]) & 3).astype(np.uint8)  # byte of codeword t in j
    fixed = np.stack([((fx >> shift[t]) & 1).sum(axis=1) for t in range(4)], axis=1)
    out: NDArray[np.bool_] = np.all(bad.sum(axis=1)[:, None] + fixed <= code.d[None, :], axis=1)
    return out


def within_reach(code: Code, flags: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Per group, from its flags alone: whether `decode` gets it back when every FLAG_BAD entry is wrong.

    Exactly when the flagged entries fit as erasures (`fits`). Errors-only decoding reaches no
    further here: once the locator is found, each wrong entry still costs one unknown value in
    every codeword whose byte it stores, so codeword t needs nbad + (its fixed bytes outside the
    flagged entries) <= d_t, the erasure bound itself. The errors-only radius only pays off when
    fewer flagged entries are wrong than flagged, which the flags cannot tell.
    """
    return fits(code, flags)


def _check(W: NDArray[np.uint32], flags: NDArray[np.uint8] | None = None) -> None:
    if W.dtype != np.uint32 or W.ndim != 2 or W.shape[1] != N_POS or not W.flags.c_contiguous:
        raise ValueError(f"W must be a C-contiguous uint32 array of shape (ng, {N_POS}); got {W.dtype} {W.shape}")
    if not W.flags.writeable:
        raise ValueError("W is read-only; pass a writable array (it is updated in place)")
    if flags is not None and (flags.dtype != np.uint8 or flags.shape != W.shape or not flags.flags.c_contiguous):
        raise ValueError(
            f"flags must be a C-contiguous uint8 array of shape {W.shape}; got {flags.dtype} {flags.shape}"
        )


def _run(
    op: int, code: Code, W: NDArray[np.uint32], flags: NDArray[np.uint8] | None
) -> tuple[NDArray[np.bool_], NDArray[np.int8]]:
    ok = np.zeros(W.shape[0], np.bool_)
    status = np.zeros(W.shape[0], np.int8)
    fl = np.zeros((1, 1), np.uint8) if flags is None else flags
    # the encoder skips whole free bytes (unless some host data); syndromes take every byte
    b0f = code.k // 8 if op == 0 and not code.host else 0
    pre = None
    if op != 0 and W.shape[0]:  # syndromes from the compiled kernels where the library is built
        from . import _native  # imports this module

        pre = _native.syndromes(code, W, flags)
        if pre is not None and op == 1:  # the compiled decoder too: a light recover loads no numba kernel
            assert flags is not None
            got = _native.decode(code, W, flags, pre)
            assert got is not None  # the syndrome kernel's library holds the decoder
            return ok, got
        if pre is not None:  # op 2: nor does a check of the syndromes
            return np.asarray(~pre.reshape(W.shape[0], -1).any(axis=1)), status
    if pre is None:
        pre = np.zeros((0, code.words), np.uint64)
    table = code.enc if op == 0 else code.syn  # only numba's kernels read these: built on first use
    with _parallel.PARALLEL_LOCK:  # a parallel kernel: another thread of the caller's may be in one
        run_nb(op, W, fl, table, code.fn, code.d, code.first, b0f, code.free_strata, pre, ok, status)
    return ok, status


def encode(code: Code, W: NDArray[np.uint32]) -> None:
    """OR the parity nibbles into W in place; its free bits must be zero on entry.

    Uses the compiled encoder (`_native`: GFNI where the CPU has it, else nibble tables) where
    the library is built; the numba kernel (`_irs_kernels`) is the reference, and gives the same words.
    """
    _check(W)
    from . import _native  # imports this module

    if not _native.encode(code, W):
        _run(0, code, W, None)


def decode(code: Code, W: NDArray[np.uint32], flags: NDArray[np.uint8]) -> NDArray[np.int8]:
    """Correct W in place; returns the status of each group (CLEAN, CORRECTED or negative).

    Fixed bytes (flag bits 0-3) count as zero and are erasures; on success they hold their
    re-derived codeword byte. Only FLAG_BAD entries (never FLAG_PAD ones) may be errors: when
    they fit as erasures with the fixed bytes (<= d_t in every codeword) the group is decoded as
    if they were erased, otherwise errors-only with the fixed bytes as erasures. A group with
    nothing flagged only has its syndromes checked. A group that fails is left exactly as it was.

    A codeword left with exactly d_t erasures has no parity over to check the result, and
    one with d_t = 0 cannot see a change at all: the caller's MACs confirm what is rebuilt.
    """
    _check(W, flags)
    return _run(1, code, W, flags)[1]


def syndromes_zero(code: Code, W: NDArray[np.uint32]) -> NDArray[np.bool_]:
    """Per group: whether all syndromes of its 4 codewords are zero (W is a codeword as stored)."""
    _check(W)
    return _run(2, code, W, None)[0]
