"""The irs4 code's numba kernels: table encoder, syndromes and the collaborative decoder.

They are the reference for the compiled kernels in ``_native.c`` and the fallback where that
library is not built; `_irs._run` launches `run_nb`. Separate from the code's construction
because they are a compiled hot path with their own scratch and batch sizes.
"""

from __future__ import annotations

import numpy as np

from ._irs_consts import (
    CLEAN,
    CORRECTED,
    EXP,
    FLAG_BAD,
    FLAG_FIXED_MASK,
    FLAG_PAD,
    INCONSISTENT,
    KEEP,
    LOG,
    N_POS,
    ROOT_COUNT,
    ROOT_LOCATION,
    TOO_MANY,
)
from ._jit import njit, prange

_BATCH_WORDS = 1024  # batch groups x words: a position's table slice and the batch's accumulators stay in L1
_NMAX = 258  # polynomial buffer length (degrees up to 255 + slack)
_ERASE_DIRECT = 8  # up to this many flagged entries (when they fit) go straight to erasure decoding


@njit(cache=True, nogil=True, inline="always")
def _accumulate(W, flags, use_flags, g0, m, table, b0f, F, acc, words):  # type: ignore[no-untyped-def]
    """acc[4 gg + t] ^= table shares of the bytes of groups g0..g0+m-1, from byte b0f of positions < F.

    Position-major over the batch, so each position's 8 KB table slice is reused m times. The two
    nibbles of a byte go to the same codeword: XOR both rows first, then one read-modify-write.
    """
    for j in range(N_POS):
        b0 = b0f if j < F else 0
        base = 128 * j
        for gg in range(m):
            v = np.int64(W[g0 + gg, j])
            if use_flags:
                v &= KEEP[flags[g0 + gg, j] & FLAG_FIXED_MASK]
            for b in range(b0, 4):
                x = (v >> (8 * b)) & 255
                if x != 0:
                    ra = 4 * gg + ((b - j) & 3)
                    r0 = base + 32 * b + (x & 15)
                    r1 = base + 32 * b + 16 + (x >> 4)
                    for w in range(words):
                        acc[ra, w] ^= table[r0, w] ^ table[r1, w]


@njit(cache=True, nogil=True)
def _batch_shares(W, flags, use_flags, g0, m, table, b0f, F):  # type: ignore[no-untyped-def]
    """(4 m, words) accumulated shares of a batch; words is a compile-time constant in each branch."""
    words = table.shape[1]
    acc = np.zeros((4 * m, words), np.uint64)
    if words == 4:
        _accumulate(W, flags, use_flags, g0, m, table, b0f, F, acc, 4)
    elif words == 8:
        _accumulate(W, flags, use_flags, g0, m, table, b0f, F, acc, 8)
    elif words == 12:
        _accumulate(W, flags, use_flags, g0, m, table, b0f, F, acc, 12)
    else:
        _accumulate(W, flags, use_flags, g0, m, table, b0f, F, acc, 16)
    return acc


@njit(cache=True, nogil=True)
def _place(W, g0, m, acc, fn, d):  # type: ignore[no-untyped-def]
    """OR each codeword's free nibbles (from the composed shares acc) into the words."""
    for gg in range(m):
        for t in range(4):
            for r in range(2 * d[t]):
                loc = fn[t, r]
                nib = np.int64((acc[4 * gg + t, r >> 4] >> np.uint64(4 * (r & 15))) & np.uint64(15))
                W[g0 + gg, loc >> 3] |= np.uint32(nib << (4 * (loc & 7)))


@njit(cache=True, nogil=True)
def _zero(g0, m, acc, a_off, out):  # type: ignore[no-untyped-def]
    for gg in range(m):
        z = True
        for r in range(a_off + 4 * gg, a_off + 4 * gg + 4):
            for w in range(acc.shape[1]):
                if acc[r, w] != 0:
                    z = False
        out[g0 + gg] = z


@njit(cache=True, nogil=True)
def _decode_batch(W, flags, g0, m, acc, a_off, d, first, status):  # type: ignore[no-untyped-def]
    sc = _scratch()
    for gg in range(m):
        g = g0 + gg
        status[g] = _decode_group(W, flags, g, acc, a_off + 4 * gg, d, first, sc)


@njit(cache=True, nogil=True, parallel=True)
def run_nb(op, W, flags, table, fn, d, first, b0f, F, pre, out_ok, out_status):  # type: ignore[no-untyped-def]
    """One parallel kernel for the three operations (op 0 encode, 1 decode, 2 syndromes zero).

    A single prange kernel: each one costs seconds of compile time when the cache is cold.
    ``pre``: every group's syndromes computed already (`_native.syndromes`), or no rows.
    """
    ng = W.shape[0]
    batch = _BATCH_WORDS // table.shape[1]
    for bi in prange((ng + batch - 1) // batch):
        g0 = bi * batch
        m = min(ng, g0 + batch) - g0
        if pre.shape[0] > 0:
            acc, a_off = pre, 4 * g0
        else:
            acc, a_off = _batch_shares(W, flags, op == 1, g0, m, table, b0f, F), 0
        if op == 0:
            _place(W, g0, m, acc, fn, d)
        elif op == 1:
            _decode_batch(W, flags, g0, m, acc, a_off, d, first, out_status)
        else:
            _zero(g0, m, acc, a_off, out_ok)


@njit(cache=True, nogil=True)
def _scratch():  # type: ignore[no-untyped-def]
    """Work arrays of `_decode_group`, one set per batch."""
    return (
        np.zeros((4, _NMAX), np.int64),  # S: logs of the syndromes
        np.zeros((4, N_POS + 1), np.int64),  # pos: corrected positions per codeword (erasures, then errors)
        np.zeros((4, N_POS + 1), np.int64),  # val: their error values
        np.zeros(4, np.int64),  # npos
        np.zeros((4, _NMAX), np.int64),  # u: logs of the Forney syndromes (errors mode)
        np.zeros(4, np.int64),  # nlen: their lengths
        np.zeros(_NMAX, np.int64),  # lam: common error locator
        np.zeros(_NMAX, np.int64),  # psi: erasure / errata locator of one codeword
        np.zeros(_NMAX, np.int64),  # om: its evaluator (logs)
        np.zeros(_NMAX, np.int64),  # lpsi: logs of psi
        np.zeros(4, np.int64),  # ers: erasures per codeword if the flagged entries are erased
        np.zeros((4, _NMAX), np.int64),  # B: auxiliary polynomials of the multi-sequence BM
        np.zeros(_NMAX, np.int64),  # tmp
        np.zeros((4, 4), np.int64),  # BM state per sequence: discrepancy, step, length, order
    )


@njit(cache=True, nogil=True)
def _locator(pos, n, psi):  # type: ignore[no-untyped-def]
    """psi[0..n] = prod_k (1 - alpha^pos[k] x)."""
    psi[0] = 1
    for i in range(1, n + 1):
        psi[i] = 0
    for k in range(n):
        lx = pos[k]
        for i in range(k + 1, 0, -1):
            psi[i] ^= EXP[LOG[psi[i - 1]] + lx]


@njit(cache=True, nogil=True, inline="always")
def _eval_inv(lt, deg, j):  # type: ignore[no-untyped-def]
    """poly(alpha^-j) from the logs lt of its coefficients; the terms are independent (no Horner chain)."""
    lx = (255 - j) % 255
    e = 0
    val = EXP[lt[0]]
    for i in range(1, deg + 1):
        e += lx
        if e >= 255:
            e -= 255
        val ^= EXP[lt[i] + e]
    return val


@njit(cache=True, nogil=True)
def _multi_bm(u, nlen, lmax, lam, B, tmp, st):  # type: ignore[no-untyped-def]
    """Shortest common LFSR of the 4 sequences u[t, :nlen[t]] (Feng–Tzeng form) into lam; returns its length.

    Returns _NMAX as soon as the length passes lmax (it never shrinks). Sequences are taken
    longest first, which the prototype measured to recover more groups at the radius. B holds
    one auxiliary polynomial per sequence (only its first LB[t] + 1 terms are read).
    """
    bd, nt, LB, ordr = st[0], st[1], st[2], st[3]
    for i in range(1, lmax + 2):
        lam[i] = 0
    lam[0] = 1
    L = 0
    nmax = 0
    for t in range(4):
        B[t, 0] = 1
        bd[t] = 1
        nt[t] = -1
        LB[t] = 0
        ordr[t] = t
        nmax = max(nmax, nlen[t])
    for a in range(1, 4):  # stable sort, longest first
        x = ordr[a]
        i = a
        while i > 0 and nlen[ordr[i - 1]] < nlen[x]:
            ordr[i] = ordr[i - 1]
            i -= 1
        ordr[i] = x
    for n in range(nmax):
        for tt in range(4):
            t = ordr[tt]
            if n >= nlen[t]:
                continue
            dsc = 0
            for i in range(min(L, n) + 1):
                dsc ^= EXP[LOG[lam[i]] + u[t, n - i]]
            if dsc == 0:
                continue
            m = n - nt[t]
            lnew = max(L, LB[t] + m)
            if lnew > lmax:
                return _NMAX
            if lnew > L:
                for i in range(L + 1):
                    tmp[i] = lam[i]
            lc = (LOG[dsc] + 255 - LOG[bd[t]]) % 255  # log of dsc / bd[t]
            for i in range(LB[t] + 1):
                lam[i + m] ^= EXP[LOG[B[t, i]] + lc]
            if lnew > L:
                for i in range(L + 1):
                    B[t, i] = tmp[i]
                bd[t] = dsc
                nt[t] = n
                LB[t] = L
                L = lnew
    return L


@njit(cache=True, nogil=True)
def _erasures(flags, g, erase_bad, pos, npos):  # type: ignore[no-untyped-def]
    """Erased positions per codeword: the fixed bytes, and every byte of the flagged entries if erase_bad."""
    for t in range(4):
        npos[t] = 0
    for j in range(N_POS):
        f = flags[g, j]
        fx = f & FLAG_FIXED_MASK
        if erase_bad and (f & FLAG_BAD) != 0 and (f & FLAG_PAD) == 0:
            fx = 15
        if fx != 0:
            for b in range(4):
                if (fx >> b) & 1:
                    t = (b - j) & 3
                    pos[t, npos[t]] = j
                    npos[t] += 1


@njit(cache=True, nogil=True)
def _locate_errors(flags, g, d, cap, sc):  # type: ignore[no-untyped-def]
    """Errors-only step: add the common error positions (all flagged) to pos; returns 0 or a failure status.

    pos holds the fixed bytes on entry. A locator longer than cap is given up on at once.
    """
    S, pos, val, npos, u, nlen, lam, psi, om, lpsi, ers, B, tmp, st = sc
    for t in range(4):
        e = npos[t]
        if e > d[t]:
            return TOO_MANY
        nlen[t] = d[t] - e
        _locator(pos[t], e, psi)
        for k in range(e + 1):
            lpsi[k] = LOG[psi[k]]
        for i in range(e, d[t]):  # Forney syndromes: the erasures taken out
            s = 0
            for k in range(e + 1):
                s ^= EXP[lpsi[k] + S[t, i - k]]
            u[t, i - e] = LOG[s]
    lmax = 0
    while True:  # the radius: largest L with sum_t max(nlen_t - L, 0) >= L
        tot = 0
        for t in range(4):
            tot += max(nlen[t] - lmax - 1, 0)
        if tot < lmax + 1:
            break
        lmax += 1
    lmax = min(lmax, cap)
    L = _multi_bm(u, nlen, lmax, lam, B, tmp, st)
    if L > lmax:
        return TOO_MANY
    if L == 0:
        return 0
    for i in range(L + 1):
        tmp[i] = LOG[lam[i]]
    nr = 0
    for j in range(N_POS):  # every root must be a flagged entry: search only those
        f = flags[g, j]
        if (f & FLAG_BAD) != 0 and (f & FLAG_PAD) == 0 and _eval_inv(tmp, L, j) == 0:
            fx = f & FLAG_FIXED_MASK
            for t in range(4):
                if not (fx >> ((t + j) & 3)) & 1:
                    pos[t, npos[t]] = j
                    npos[t] += 1
            nr += 1
    if nr != L:
        nall = 0
        for j in range(N_POS):
            if _eval_inv(tmp, L, j) == 0:
                nall += 1
        return ROOT_LOCATION if nall == L else ROOT_COUNT
    return 0


@njit(cache=True, nogil=True)
def _forney(d, first, sc):  # type: ignore[no-untyped-def]
    """Error values at pos (val) per codeword; 0 or a failure status.

    Omega = S Psi mod x^d must vanish above deg Psi: then the values reproduce every syndrome,
    which is the full consistency check of the correction.
    """
    S, pos, val, npos, u, nlen, lam, psi, om, lpsi, ers, B, tmp, st = sc
    for t in range(4):
        n = npos[t]
        if n > d[t]:
            return TOO_MANY
        _locator(pos[t], n, psi)
        for k in range(n + 1):
            lpsi[k] = LOG[psi[k]]
        for i in range(d[t]):
            s = 0
            for k in range(min(i, n) + 1):
                s ^= EXP[lpsi[k] + S[t, i - k]]
            if i < n:
                om[i] = LOG[s]
            elif s != 0:
                return INCONSISTENT
        e1b = (256 - first[t]) % 255  # Forney factor X^(1 - b)
        for r in range(n):
            j = pos[t, r]
            lxi = (255 - j) % 255
            num = EXP[om[0]]  # Omega(X^-1), Psi'(X^-1): independent terms, no Horner chain
            e = 0
            for i in range(1, n):
                e += lxi
                if e >= 255:
                    e -= 255
                num ^= EXP[om[i] + e]
            den = EXP[lpsi[1]]
            e = 0
            for i in range(3, n + 1, 2):
                e += 2 * lxi
                if e >= 255:
                    e -= 255
                    if e >= 255:
                        e -= 255
                den ^= EXP[lpsi[i] + e]
            if den == 0:
                return INCONSISTENT
            val[t, r] = EXP[(LOG[num] + 255 - LOG[den] + j * e1b) % 255] if num != 0 else 0
    return 0


@njit(cache=True, nogil=True)
def _apply(W, flags, g, pos, val, npos):  # type: ignore[no-untyped-def]
    """Write the corrections: fixed bytes get their codeword value, other bytes are XORed."""
    changed = False
    for t in range(4):
        for r in range(npos[t]):
            j = pos[t, r]
            b = (t + j) & 3
            y = np.uint32(val[t, r] << (8 * b))
            if (flags[g, j] >> b) & 1:
                W[g, j] = (W[g, j] & np.uint32(~np.uint32(0xFF << (8 * b)))) | y
            elif y != 0:
                W[g, j] ^= y
                changed = True
    return CORRECTED if changed else CLEAN


@njit(cache=True, nogil=True)
def _decode_group(W, flags, g, acc, a0, d, first, sc):  # type: ignore[no-untyped-def]
    """Decode group g of W in place (its packed syndromes: acc rows a0..a0+3); returns its status.

    When the flagged entries fit as erasures, a cheap errors-only attempt (locator at most
    half their number) comes first: when it succeeds its correction is the erasure decoder's
    (that one is unique), at a cost that follows the actual damage, not the flagged count.
    """
    S, pos, val, npos, u, nlen, lam, psi, om, lpsi, ers, B, tmp, st = sc
    nbad = 0
    nfix = 0
    for t in range(4):
        ers[t] = 0
    for j in range(N_POS):
        f = flags[g, j]
        fx = f & FLAG_FIXED_MASK
        if (f & FLAG_BAD) != 0 and (f & FLAG_PAD) == 0:
            nbad += 1
            for t in range(4):
                ers[t] += 1
        elif fx != 0:
            for b in range(4):
                if (fx >> b) & 1:
                    ers[(b - j) & 3] += 1
        if fx != 0:
            nfix += 1
    if nbad == 0 and nfix == 0:
        for t in range(4):
            for w in range(acc.shape[1]):
                if acc[a0 + t, w] != 0:
                    return INCONSISTENT
        return CLEAN
    for t in range(4):
        for i in range(d[t]):
            S[t, i] = LOG[np.int64((acc[a0 + t, i >> 3] >> np.uint64(8 * (i & 7))) & np.uint64(255))]
    fits = True
    for t in range(4):
        if ers[t] > d[t]:
            fits = False
    if not fits or nbad > _ERASE_DIRECT:
        _erasures(flags, g, False, pos, npos)
        res = _locate_errors(flags, g, d, nbad // 2 if fits else _NMAX, sc)
        if res == 0:
            res = _forney(d, first, sc)
        if res == 0:
            return _apply(W, flags, g, pos, val, npos)
        if not fits:
            return res
    _erasures(flags, g, True, pos, npos)
    res = _forney(d, first, sc)
    if res != 0:
        return res
    return _apply(W, flags, g, pos, val, npos)
