"""Research prototype: byte-aligned interleaved Reed–Solomon codes that survive scattered tampering.

NOT wired into the package. Self-contained (numpy + numba). See docs/scattered-design.md.

Construction (fp32, k watermark bits per value, k in {8, 12}):

* A value is 4 bytes; byte 0 (and at k=12 the low nibble of byte 1) is watermark.
* The model (N values, file order, zero-padded to 255*G) is cut into 255 equal **strata**
  of G values. Group g takes from stratum j the value ``j*G + (g + o_j) mod G``; the
  offsets o_j are key-derived. So a contiguous run spreads evenly over all groups, and an
  attacker without the key hits each group, at each position, with probability |A_j|/G.
* A group carries 4 interleaved RS codewords over GF(2^8), length 255: codeword t takes
  byte (t + j) mod 4 of the group's j-th value. A tampered value is ONE error position,
  shared by the 4 codewords, which a collaborative (multi-sequence Berlekamp–Massey)
  decoder corrects up to sum_t(d_t - eps_t) / 5 errors (d_t = parity symbols of codeword t,
  eps_t erasures).
* Parity is placed bit-exactly: codeword t's free (watermark) nibbles are solved from a
  GF(2) system (syndrome map restricted to free nibbles, inverted once), so at k=12 the
  half-byte watermark nibbles carry parity too: d_t ~ 95.5 (37.5 %) instead of 63.75.
* Blocks of 256 consecutive values carry a 32-bit keyed tag in byte 0 of 4 values
  (offsets 0, 64, 128, 192). Those bytes are permanent erasures for the code (their parity
  symbol is not stored). Flagged blocks become erasures when few enough; otherwise the
  group is decoded errors-only and every located error must lie in a flagged block.

The tag here is a keyed 64-bit mixing hash (NOT cryptographic; it only stands in for the
engine's Wegman–Carter MAC so that detection and flagging are simulated realistically).

Optional outer layer (--outer S,R): a Cauchy RS code over superblocks of ~S groups repairs the few
groups the inner decoder reports as failed (see Outer).

    python benchmarks/sim_scattered.py                  # 50 trials/point, 2^20 params, k=8 and 12 (~6-18 min, 2 cores)
    python benchmarks/sim_scattered.py --outer 240,3    # the same with the outer layer
    python benchmarks/sim_scattered.py --margins        # decoded groups vs distance to the decoding radius
    python benchmarks/sim_scattered.py --quick          # smoke run (~1-2 min)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import dataclass

import numba as nb
import numpy as np

from paramseal import _irs_consts

# --------------------------------------------------------------------------- GF(2^8)
N_POS = 255  # values per group = RS length
BLOCK = 256  # values per tagged block
MAC_OFFSETS = (0, 64, 128, 192)  # values of a block whose byte 0 holds a tag byte
GB = 256  # groups per batch in the syndrome kernel


# the library's GF(2^8) tables (same field, 0x11D): LOG[0] = 512 and EXP[>= 510] = 0 keep products branch-free
EXP, LOG = _irs_consts.EXP.astype(np.int32), _irs_consts.LOG.astype(np.int32)


def gf_mul_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    r = EXP[(LOG[a] + LOG[b]) % 255]
    return np.where((a == 0) | (b == 0), 0, r).astype(np.int64)


# --------------------------------------------------------------------------- code construction
@dataclass
class Code:
    """Everything the kernels need for one level (k)."""

    k: int
    d: np.ndarray  # (4,) parity symbols per codeword
    W: int  # uint64 words per packed syndrome / free-nibble vector
    syn: np.ndarray  # (255, 4, 2, 16, W) uint64: syndrome contribution of nibble v of byte b at position j
    enc: np.ndarray  # (255, 4, 2, 16, W) uint64: the same composed with the solver: free-nibble contribution
    par: np.ndarray  # (4, 2*dmax, 16, W) uint64: free-nibble vector from syndrome nibble q = v
    fn: np.ndarray  # (4, 2*dmax) int32: free nibble r of codeword t -> j*8 + b*2 + nib
    wmask: int  # watermark bits of a value
    first: np.ndarray  # (4,) first root exponent b_t: syndromes r(alpha^{i+b_t})
    hn: np.ndarray  # (4, 2*host) hosted data nibbles per codeword (j*8 + b*2 + nib), for the outer code


def _bits_of_bytes(byts: np.ndarray) -> np.ndarray:
    """(..., n) bytes -> (..., 8n) bits, bit 8i+k = bit k of byte i."""
    return np.unpackbits(byts.astype(np.uint8)[..., None], axis=-1, bitorder="little").reshape(*byts.shape[:-1], -1)


def _pack_bits(bits: np.ndarray, W: int) -> np.ndarray:
    """(..., nbits) 0/1 -> (..., W) uint64, bit i -> word i>>6, bit i&63."""
    pad = np.zeros((*bits.shape[:-1], W * 64), np.uint8)
    pad[..., : bits.shape[-1]] = bits
    return np.packbits(pad, axis=-1, bitorder="little").view("<u8").reshape(*bits.shape[:-1], W)


def _gf2_inverse(m: np.ndarray) -> np.ndarray:
    """Inverse of a square 0/1 matrix over GF(2); raises if singular."""
    n = m.shape[0]
    aug = np.concatenate([m.astype(bool), np.eye(n, dtype=bool)], axis=1)
    packed = np.packbits(aug, axis=1)
    for c in range(n):
        byte, bit = c >> 3, 7 - (c & 7)
        col = (packed[:, byte] >> bit) & 1
        cand = np.nonzero(col[c:])[0]
        if cand.size == 0:
            raise ValueError(f"free-nibble system is singular at column {c} of {n}")
        p = c + cand[0]
        if p != c:
            packed[[c, p]] = packed[[p, c]]
            col[[c, p]] = col[[p, c]]
        rows = np.nonzero(col)[0]
        rows = rows[rows != c]
        packed[rows] ^= packed[c]
    return np.unpackbits(packed, axis=1)[:, n : 2 * n].astype(np.uint8)


def build_code(k: int, host: int = 0) -> Code:
    """Precompute the syndrome tables and the free-nibble solver for k watermark bits (8 or 12).

    host > 0 turns the last 2*host free nibbles of every codeword into data nibbles (d_t drops by host): they
    carry the outer code's parity (see Outer).
    """
    if k not in (8, 12):
        raise ValueError("this prototype handles k = 8 and k = 12")
    free_nibbles = k // 4  # nibbles (from bit 0) that are watermark
    # free nibble lists per codeword, in position order
    fn_lists: list[list[tuple[int, int, int]]] = [[] for _ in range(4)]
    for j in range(N_POS):
        for b in range(4):
            t = (b - j) & 3
            for nib in range(2):
                if 2 * b + nib < free_nibbles:
                    fn_lists[t].append((j, b, nib))
    d = np.array([len(fl) // 2 - host for fl in fn_lists], np.int64)  # 8 d_t free bits are needed
    hn = np.zeros((4, 2 * host), np.int64)
    dmax = int(d.max())
    W = (8 * dmax + 63) // 64
    par = np.zeros((4, 2 * dmax, 16, W), np.uint64)
    fn = np.full((4, 2 * dmax), -1, np.int32)
    first = np.zeros(4, np.int64)
    for t in range(4):
        dt = int(d[t])
        fl = fn_lists[t]
        # Hosted (outer-parity) nibbles: the last 2*host, else whole bytes taken from the end or the start.
        byte0 = [i for i, (j, b, nib) in enumerate(fl) if b == 0 and nib == 0]
        choices = [list(range(2 * dt, 2 * dt + 2 * host))]
        if host:
            choices += [sum(([i, i + 1] for i in byte0[-host:]), []), sum(([i, i + 1] for i in byte0[:host]), [])]
        # Syndromes are r(alpha^{i+b}), i < d_t. For some b the GF(2) map from the free nibbles to the
        # syndrome bits is singular (k=12: rank 8 d_t - 1), so take the first (hosting, b) that works.
        found = False
        for hosted in choices:
            keep = [i for i in range(len(fl)) if i not in set(hosted)][: 2 * dt]  # at most one nibble left over
            used = [fl[i] for i in keep]
            for b0 in (1, 0, 2, 3, 4, 5, 6, 7):
                cols = np.zeros((8 * dt, 8 * dt), np.uint8)
                for r, (j, _b, nib) in enumerate(used):
                    pw = EXP[(np.arange(b0, b0 + dt) * j) % 255]
                    for kb in range(4):
                        row = gf_mul_np(np.full(dt, 1 << (4 * nib + kb)), pw)
                        cols[:, 4 * r + kb] = _bits_of_bytes(row[None, :])[0]
                try:
                    inv = _gf2_inverse(cols)  # free bits = inv @ syndrome bits
                except ValueError:
                    continue
                first[t] = b0
                found = True
                break
            if found:
                break
        if not found:
            raise ValueError(f"no first root / hosting choice gives an invertible free-nibble system for codeword {t}")
        for r, (j, b, nib) in enumerate(used):
            fn[t, r] = j * 8 + b * 2 + nib
        for r, i in enumerate(hosted):
            j, b, nib = fl[i]
            hn[t, r] = j * 8 + b * 2 + nib
        for q in range(2 * dt):
            sub = inv[:, 4 * q : 4 * q + 4].astype(np.int64)
            for v in range(16):
                vb = np.array([(v >> kb) & 1 for kb in range(4)], np.int64)
                f = (sub @ vb) & 1
                par[t, q, v] = _pack_bits(f[None, :].astype(np.uint8), W)[0]
    syn = np.zeros((N_POS, 4, 2, 16, W), np.uint64)
    for j in range(N_POS):
        for b in range(4):
            t = (b - j) & 3
            pw = EXP[(np.arange(first[t], first[t] + d[t]) * j) % 255]
            for nib in range(2):
                prods = gf_mul_np((np.arange(16) << (4 * nib))[:, None], pw[None, :])  # (16, d_t)
                syn[j, b, nib] = _pack_bits(_bits_of_bytes(prods), W)
    wmask = (1 << k) - 1
    enc = _compose(syn, par, d)
    return Code(k=k, d=d, W=W, syn=syn, enc=enc, par=par, fn=fn, wmask=wmask, first=first, hn=hn)


@nb.njit(cache=True)
def _compose(syn, par, d):  # type: ignore[no-untyped-def]
    """enc[j, b, nib, v] = solver(syn[j, b, nib, v]): data nibble -> its share of the free nibbles, directly."""
    enc = np.zeros_like(syn)
    W = syn.shape[-1]
    for j in range(syn.shape[0]):
        for b in range(4):
            t = (b - j) & 3
            for nib in range(2):
                for v in range(16):
                    for q in range(2 * d[t]):
                        x = (syn[j, b, nib, v, q >> 4] >> np.uint64(4 * (q & 15))) & np.uint64(15)
                        if x != 0:
                            for w in range(W):
                                enc[j, b, nib, v, w] ^= par[t, q, x, w]
    return enc


# --------------------------------------------------------------------------- layout
@dataclass
class Layout:
    """Stratified key-derived interleaver over N values."""

    n: int
    G: int
    offs: np.ndarray  # (255,) int64, key-derived rotation per stratum
    fixed: np.ndarray  # (G, 255) uint8: bitmask of bytes that are not stored parity (tag byte / pad)


def build_layout(n: int, code: Code, key_seed: int) -> Layout:
    G = -(-n // N_POS)
    rng = np.random.default_rng([key_seed, 0x5EA1])
    offs = rng.integers(0, G, N_POS).astype(np.int64)
    g = np.arange(G)[:, None]
    j = np.arange(N_POS)[None, :]
    vi = j * G + (g + offs[None, :]) % G  # (G, 255)
    wm_bytes = 0b1 if code.k == 8 else 0b11  # bytes holding watermark nibbles
    fixed = np.zeros((G, N_POS), np.uint8)
    is_mac = (vi < n) & np.isin(vi % BLOCK, MAC_OFFSETS)
    fixed[is_mac] |= 0b1  # byte 0 holds a tag byte
    fixed[vi >= n] |= wm_bytes  # padding: content known zero, watermark bytes not stored
    return Layout(n=n, G=G, offs=offs, fixed=fixed)


# --------------------------------------------------------------------------- block tags
@nb.njit(cache=True)
def _mix(h: np.uint64) -> np.uint64:
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@nb.njit(parallel=True, cache=True)
def block_tags(vals: np.ndarray, key: np.uint64) -> np.ndarray:
    """32-bit keyed tag per block over all bits except the tag bytes themselves."""
    n = vals.shape[0]
    nblk = (n + BLOCK - 1) // BLOCK
    out = np.zeros(nblk, np.uint32)
    for bi in nb.prange(nblk):
        h = key ^ np.uint64(bi) * np.uint64(0x9E3779B97F4A7C15)
        a = bi * BLOCK
        e = min(n, a + BLOCK)
        for i in range(a, e):
            v = np.uint64(vals[i])
            if (i - a) % 64 == 0:
                v &= np.uint64(0xFFFFFF00)
            h = _mix(h ^ v ^ (np.uint64(i - a) << np.uint64(32)))
        tag = np.uint32(h >> np.uint64(32))
        for m in range(4):
            if a + 64 * m >= n:  # a short last block stores fewer tag bytes
                tag &= np.uint32(0xFFFFFFFF) ^ (np.uint32(255) << np.uint32(8 * m))
        out[bi] = tag
    return out


@nb.njit(parallel=True, cache=True)
def write_tags(vals: np.ndarray, tags: np.ndarray) -> None:
    n = vals.shape[0]
    for bi in nb.prange(tags.shape[0]):
        for m in range(4):
            i = bi * BLOCK + 64 * m
            if i < n:
                byte = (np.uint32(tags[bi]) >> np.uint32(8 * m)) & np.uint32(255)
                vals[i] = (vals[i] & np.uint32(0xFFFFFF00)) | byte


@nb.njit(parallel=True, cache=True)
def stored_tags(vals: np.ndarray, nblk: int) -> np.ndarray:
    n = vals.shape[0]
    out = np.zeros(nblk, np.uint32)
    for bi in nb.prange(nblk):
        t = np.uint32(0)
        for m in range(4):
            i = bi * BLOCK + 64 * m
            if i < n:
                t |= (vals[i] & np.uint32(255)) << np.uint32(8 * m)
        out[bi] = t
    return out


# --------------------------------------------------------------------------- encoder
def _make_kernels(W: int):  # type: ignore[no-untyped-def]
    """Kernels compiled for a fixed word count W, so the W-word XORs unroll."""

    @nb.njit(parallel=True)
    def accumulate(vals, n, G, offs, fixed, keep, syn, acc):  # type: ignore[no-untyped-def]
        """acc[g, t] ^= packed syndromes of codeword t of group g, over the bits `keep` of each stored byte.

        Batches of GB groups walk the 255 strata together, so each stratum's table slice is reused GB times
        and the reads are GB consecutive values per stratum.
        """
        nbatch = (G + GB - 1) // GB
        for bi in nb.prange(nbatch):
            g0 = bi * GB
            ng = min(G, g0 + GB) - g0
            for j in range(N_POS):
                base = j * G
                o = offs[j]
                for gg in range(ng):
                    g = g0 + gg
                    p = g + o
                    if p >= G:
                        p -= G
                    vi = base + p
                    if vi >= n:
                        continue
                    v = vals[vi] & keep
                    fx = fixed[g, j]
                    for b in range(4):
                        if (fx >> b) & 1:
                            continue
                        byte = (v >> np.uint32(8 * b)) & np.uint32(255)
                        if byte == 0:
                            continue
                        t = (b - j) & 3
                        lo = byte & np.uint32(15)
                        hi = byte >> np.uint32(4)
                        if lo != 0:
                            for w in range(W):
                                acc[g, t, w] ^= syn[j, b, 0, lo, w]
                        if hi != 0:
                            for w in range(W):
                                acc[g, t, w] ^= syn[j, b, 1, hi, w]

    @nb.njit(parallel=True)
    def place(vals, n, G, offs, acc, fn, d):  # type: ignore[no-untyped-def]
        """OR each codeword's free nibbles (acc, from the composed table) into the values."""
        for g in nb.prange(G):
            for t in range(4):
                for r in range(2 * d[t]):
                    loc = fn[t, r]
                    j = loc >> 3
                    sh = 4 * (loc & 7)  # 8*b + 4*nib
                    p = g + offs[j]
                    if p >= G:
                        p -= G
                    vi = j * G + p
                    if vi >= n:
                        continue
                    nib = (acc[g, t, r >> 4] >> np.uint64(4 * (r & 15))) & np.uint64(15)
                    vals[vi] |= np.uint32(nib) << np.uint32(sh)

    return accumulate, place


_KERNELS: dict[int, tuple[object, object]] = {}


def kernels(W: int):  # type: ignore[no-untyped-def]
    if W not in _KERNELS:
        _KERNELS[W] = _make_kernels(W)
    return _KERNELS[W]


def syndromes_all(vals: np.ndarray, code: Code, lay: Layout, keep: int, table: np.ndarray | None = None) -> np.ndarray:
    """(G, 4, W) packed syndromes of every group (tag and padding bytes count as zero)."""
    acc = np.zeros((lay.G, 4, code.W), np.uint64)
    table = code.syn if table is None else table
    kernels(code.W)[0](vals, lay.n, lay.G, lay.offs, lay.fixed, np.uint32(keep), table, acc)
    return acc


def encode_parity(vals: np.ndarray, code: Code, lay: Layout) -> None:
    """vals: content with watermark bits zero; writes the parity nibbles in place."""
    acc = syndromes_all(vals, code, lay, 0xFFFFFFFF, code.enc)  # free nibbles, directly (free bits are zero)
    kernels(code.W)[1](vals, lay.n, lay.G, lay.offs, acc, code.fn, code.d)


# --------------------------------------------------------------------------- outer code (optional)
def _gather_index(lay: Layout) -> np.ndarray:
    g = np.arange(lay.G)[:, None]
    j = np.arange(N_POS)[None, :]
    return j * lay.G + (g + lay.offs[None, :]) % lay.G  # (G, 255)


def _gf_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(r, s) x (s, c) over GF(2^8)."""
    out = np.zeros((a.shape[0], b.shape[1]), np.uint8)
    lb = LOG[b]
    for r in range(a.shape[0]):
        out[r] = np.bitwise_xor.reduce(EXP[LOG[a[r]][:, None] + lb], axis=0).astype(np.uint8)
    return out


def _gf_inv(m: np.ndarray) -> np.ndarray:
    n = m.shape[0]
    a = [[int(x) for x in row] + [int(i == r) for i in range(n)] for r, row in enumerate(m)]
    for c in range(n):
        p = next(r for r in range(c, n) if a[r][c])
        a[c], a[p] = a[p], a[c]
        inv = int(EXP[255 - LOG[a[c][c]]]) if a[c][c] != 1 else 1
        a[c] = [int(EXP[LOG[x] + LOG[inv]]) for x in a[c]]
        for r in range(n):
            if r != c and a[r][c]:
                f = a[r][c]
                a[r] = [x ^ int(EXP[LOG[f] + LOG[y]]) for x, y in zip(a[r], a[c], strict=True)]
    return np.array([row[n:] for row in a], np.uint8)


@dataclass
class Outer:
    """Thin outer RS code over superblocks of S consecutive groups: R parity 'groups' per superblock.

    Column c (byte c of the 765 content bytes of a group, bytes 1-3 of its 255 values) of the S groups
    gets R Cauchy-RS parity bytes; those are hosted in the data nibbles the inner code set aside (host per
    codeword) of the NEXT superblock, spread so the R parities of one column sit in R different groups. A group
    the inner decoder cannot decode (it says so) is an erasure for the outer code; since it hosts only other
    superblocks' parity, F <= R failed groups in a superblock are repaired unless the next superblock's
    failed groups hold some of that parity.
    """

    S: int
    R: int
    cauchy: np.ndarray  # (R, S) uint8
    gi: np.ndarray  # (G, 255) value index of (group, position)
    slot_vi: np.ndarray  # (nsb, R*765, 2) value indices of the two nibbles hosting parity byte p
    slot_sh: np.ndarray  # (nsb, R*765, 2) their bit shifts
    slot_g: np.ndarray  # (nsb, R*765) hosting group (global index)
    cmask: np.ndarray  # (3,) content mask of bytes 1..3
    bounds: np.ndarray  # (nsb + 1,) superblock boundaries (group indices), sizes as even as possible

    @staticmethod
    def build(code: Code, lay: Layout, S: int, R: int) -> Outer:
        x = np.arange(R)
        y = np.arange(R, R + S)
        cauchy = EXP[255 - LOG[(x[:, None] ^ y[None, :])]].astype(np.uint8)  # 1 / (x_r + y_i)
        gi = _gather_index(lay)
        host = code.hn.shape[1] // 2
        nsb = -(-lay.G // S)
        bounds = np.linspace(0, lay.G, nsb + 1).round().astype(np.int64)
        need = R * 3 * N_POS
        slot_vi = np.zeros((nsb, need, 2), np.int64)
        slot_sh = np.zeros((nsb, need, 2), np.int64)
        slot_g = np.zeros((nsb, need), np.int64)
        for sb in range(nsb):
            hs = (sb + 1) % nsb  # parity of superblock sb lives in superblock sb+1: a failed group never
            gs = range(bounds[hs], bounds[hs + 1])  # takes its own column's parity down with it
            slots = []
            for t in range(4):
                for i in range(host):
                    locs = code.hn[t, 2 * i : 2 * i + 2]
                    for g in gs:
                        vis, shs, ok = [], [], True
                        for loc in locs:
                            j, b, nib = loc >> 3, (loc >> 1) & 3, loc & 1
                            vi = gi[g, j]
                            if vi >= lay.n or (lay.fixed[g, j] >> b) & 1:
                                ok = False
                            vis.append(vi)
                            shs.append(8 * b + 4 * nib)
                        if ok:
                            slots.append((vis, shs, g))
            if len(slots) < need:
                raise ValueError(f"superblock {sb}: {len(slots)} hosting bytes for {need} outer parity bytes")
            for p in range(need):
                slot_vi[sb, p], slot_sh[sb, p], slot_g[sb, p] = slots[p]
        cm = np.array([0xF0 if code.k == 12 else 0xFF, 0xFF, 0xFF], np.uint8)
        return Outer(S, R, cauchy, gi, slot_vi, slot_sh, slot_g, cm, bounds)

    def content(self, vals: np.ndarray, n: int) -> np.ndarray:
        """(G, 765) content bytes of every group."""
        gi = self.gi
        v = np.where(gi < n, vals[np.minimum(gi, n - 1)], 0).astype(np.uint32)
        by = np.stack([(v >> np.uint32(8 * b)) & np.uint32(255) for b in (1, 2, 3)], axis=-1).astype(np.uint8)
        return (by & self.cmask).reshape(gi.shape[0], 3 * N_POS)

    def parity(self, cg: np.ndarray, sb: int) -> np.ndarray:
        d = cg[self.bounds[sb] : self.bounds[sb + 1]]
        return _gf_matmul(self.cauchy[:, : d.shape[0]], d).reshape(-1)

    def embed(self, vals: np.ndarray, code: Code, lay: Layout) -> None:
        cg = self.content(vals, lay.n)
        for sb in range(self.slot_g.shape[0]):
            p = self.parity(cg, sb).astype(np.uint32)
            for h in range(2):  # .at: one value can host nibbles of two parity bytes
                nib = ((p >> np.uint32(4 * h)) & np.uint32(15)) << self.slot_sh[sb, :, h].astype(np.uint32)
                np.bitwise_or.at(vals, self.slot_vi[sb, :, h], nib)

    def repair(self, out: np.ndarray, status: np.ndarray, n: int) -> tuple[np.ndarray, bool]:
        """Fill the content of failed groups from the outer code. Returns (content bytes (G, 765), all solved)."""
        cg = self.content(out, n)
        ok = True
        for sb in range(self.slot_g.shape[0]):
            g0, g1 = self.bounds[sb], self.bounds[sb + 1]
            fl = np.nonzero(status[g0:g1])[0]
            if fl.size == 0:
                continue
            if fl.size > self.R:
                ok = False
                continue
            lost = np.isin(self.slot_g[sb], np.nonzero(status)[0]).reshape(self.R, 3 * N_POS)
            nib = [
                (out[self.slot_vi[sb, :, h]] >> self.slot_sh[sb, :, h].astype(np.uint32)) & np.uint32(15)
                for h in (0, 1)
            ]
            stored = (nib[0] | (nib[1] << np.uint32(4))).astype(np.uint8).reshape(self.R, 3 * N_POS)
            d = cg[g0:g1].copy()
            d[fl] = 0
            syn = stored ^ _gf_matmul(self.cauchy[:, : g1 - g0], d)  # = sum over failed of C[r, i] D[i]
            patterns = (1 << np.arange(self.R)) @ (~lost).astype(np.int64)  # available parities per column
            for pat in np.unique(patterns):
                rows = [r for r in range(self.R) if (pat >> r) & 1][: fl.size]
                cols = np.nonzero(patterns == pat)[0]
                if len(rows) < fl.size:
                    ok = False
                    continue
                inv = _gf_inv(self.cauchy[np.ix_(rows, fl)])
                d[np.ix_(fl, cols)] = _gf_matmul(inv, syn[np.ix_(rows, cols)])
            cg[g0:g1] = d
        return cg, ok

    def values(self, out: np.ndarray, cg: np.ndarray, status: np.ndarray, code: Code, n: int) -> np.ndarray:
        """Content values: decoded ones, with the content bytes of failed groups replaced by cg."""
        content = out & np.uint32(0xFFFFFFFF ^ code.wmask)
        for g in np.nonzero(status)[0]:
            gi = self.gi[g]
            m = gi < n
            by = cg[g].reshape(N_POS, 3).astype(np.uint32)
            v = (by[:, 0] << np.uint32(8)) | (by[:, 1] << np.uint32(16)) | (by[:, 2] << np.uint32(24))
            content[gi[m]] = v[m]
        return content


def seal(content: np.ndarray, code: Code, lay: Layout, key: int, outer: Outer | None = None) -> np.ndarray:
    """Content (uint32) -> sealed values: [outer parity], parity nibbles, then tags in byte 0 of 4 values a block."""
    vals = content & np.uint32(0xFFFFFFFF ^ code.wmask)
    if outer is not None:
        outer.embed(vals, code, lay)
    encode_parity(vals, code, lay)
    write_tags(vals, block_tags(vals, np.uint64(key)))
    return vals


# --------------------------------------------------------------------------- decoder
NMAX = 258


@nb.njit(inline="always")
def _mul(a: int, b: int) -> int:
    return EXP[LOG[a] + LOG[b]]


@nb.njit(inline="always")
def _div(a: int, b: int) -> int:  # b != 0
    return EXP[LOG[a] + 255 - LOG[b]]


@nb.njit(cache=True)
def _multi_bm(u, nlen):  # type: ignore[no-untyped-def]
    """Shortest common LFSR of 4 sequences u[t, :nlen[t]] (Feng–Tzeng style). Returns (Lambda, L)."""
    lam = np.zeros(NMAX, np.int64)
    lam[0] = 1
    L = 0
    B = np.zeros((4, NMAX), np.int64)
    for t in range(4):
        B[t, 0] = 1
    bd = np.ones(4, np.int64)
    nt = np.full(4, -1, np.int64)
    LB = np.zeros(4, np.int64)
    tmp = np.zeros(NMAX, np.int64)
    nmax = 0
    for t in range(4):
        nmax = max(nmax, nlen[t])
    ordr = np.argsort(-nlen)  # longest sequence first: measured to recover more groups at the radius
    for n in range(nmax):
        for tt in range(4):
            t = ordr[tt]
            if n >= nlen[t]:
                continue
            dsc = 0
            for i in range(min(L, n) + 1):
                dsc ^= _mul(lam[i], u[t, n - i])
            if dsc == 0:
                continue
            m = n - nt[t]
            lnew = max(L, LB[t] + m)
            if lnew + 1 >= NMAX:
                return lam, NMAX  # hopeless
            coef = _div(dsc, bd[t])
            if lnew > L:
                tmp[: L + 1] = lam[: L + 1]
            for i in range(LB[t] + 1):
                if B[t, i] != 0:
                    lam[i + m] ^= _mul(coef, B[t, i])
            if lnew > L:
                B[t, :] = 0
                B[t, : L + 1] = tmp[: L + 1]
                bd[t] = dsc
                nt[t] = n
                LB[t] = L
                L = lnew
    return lam, L


@nb.njit(cache=True)
def _decode_once(g, vals, n, G, offs, fixed, flagged, mode, acc, d, first, out):  # type: ignore[no-untyped-def]
    """Decode group g; mode 1 = flagged values are erasures, 0 = errors only. Returns a status (0 = ok)."""
    dmax = 0
    for t in range(4):
        dmax = max(dmax, d[t])
    r = np.zeros((4, N_POS), np.int64)
    er = np.zeros((4, N_POS), np.bool_)
    vidx = np.empty(N_POS, np.int64)
    flg = np.zeros(N_POS, np.bool_)
    for j in range(N_POS):
        p = g + offs[j]
        if p >= G:
            p -= G
        vi = j * G + p
        vidx[j] = vi
        v = np.uint32(0)
        if vi < n:
            v = vals[vi]
            flg[j] = flagged[vi // BLOCK]
        fx = fixed[g, j]
        for b in range(4):
            t = (b - j) & 3
            if (fx >> b) & 1:
                er[t, j] = True
            else:
                r[t, j] = (v >> np.uint32(8 * b)) & np.uint32(255)
                if mode == 1 and flg[j]:
                    er[t, j] = True
    # syndromes of the received word (tag / padding bytes as zero), from the batched kernel
    S = np.zeros((4, dmax), np.int64)
    for t in range(4):
        for i in range(d[t]):
            S[t, i] = (acc[g, t, i >> 3] >> np.uint64(8 * (i & 7))) & np.uint64(255)
    # erasure locators and modified syndromes
    u = np.zeros((4, NMAX), np.int64)
    nlen = np.zeros(4, np.int64)
    gam = np.zeros(NMAX, np.int64)
    for t in range(4):
        gam[:] = 0
        gam[0] = 1
        eps = 0
        for j in range(N_POS):
            if er[t, j]:
                x = EXP[j]
                eps += 1
                for i in range(eps, 0, -1):
                    gam[i] ^= _mul(gam[i - 1], x)
        if eps > d[t]:
            return 1
        nlen[t] = d[t] - eps
        for i in range(eps, d[t]):
            acc = 0
            for m in range(eps + 1):
                acc ^= _mul(gam[m], S[t, i - m])
            u[t, i - eps] = acc
    lam, L = _multi_bm(u, nlen)
    tot = 0
    for t in range(4):
        tot += max(nlen[t] - L, 0)
    if L >= NMAX or tot < L:
        return 2
    roots = np.zeros(N_POS, np.bool_)
    if L > 0:
        cnt = 0
        for j in range(N_POS):
            x = EXP[(255 - j) % 255]
            val = 0
            for i in range(L, -1, -1):
                val = _mul(val, x) ^ lam[i]
            if val == 0:
                roots[j] = True
                cnt += 1
                if vidx[j] >= n or not flg[j]:
                    return 4
        if cnt != L:
            return 3
    # Forney, per codeword, over erasures and located errors
    psi = np.zeros(NMAX, np.int64)
    om = np.zeros(NMAX, np.int64)
    pos = np.zeros(N_POS, np.int64)
    for t in range(4):
        npos = 0
        for j in range(N_POS):
            if er[t, j] or roots[j]:
                pos[npos] = j
                npos += 1
        if npos > d[t]:
            return 1
        psi[:] = 0
        psi[0] = 1
        for k in range(npos):
            x = EXP[pos[k]]
            for i in range(k + 1, 0, -1):
                psi[i] ^= _mul(psi[i - 1], x)
        # Omega = S * Psi mod x^d. Psi generates the syndromes iff Omega_i = 0 for npos <= i < d; then the
        # Forney values reproduce every syndrome, so this is the full consistency check of the correction.
        for i in range(d[t]):
            acc = 0
            for m in range(min(i, npos) + 1):
                acc ^= _mul(psi[m], S[t, i - m])
            if i >= npos and acc != 0:
                return 6
            om[i] = acc
        for k in range(npos):
            j = pos[k]
            xinv = EXP[(255 - j) % 255]
            num = 0
            for i in range(npos - 1, -1, -1):
                num = _mul(num, xinv) ^ om[i]
            den = 0
            xp = 1
            x2 = _mul(xinv, xinv)
            for i in range(1, npos + 1, 2):
                den ^= _mul(psi[i], xp)
                xp = _mul(xp, x2)
            if den == 0:
                return 5
            y = _div(num, den)
            if first[t] == 0:
                y = _mul(y, EXP[j])  # X^{1-b}
            elif first[t] > 1:
                y = _mul(y, EXP[(255 - j) * (first[t] - 1) % 255])
            r[t, j] ^= y
    for j in range(N_POS):
        vi = vidx[j]
        if vi < n:
            v = np.uint32(0)
            for b in range(4):
                v |= np.uint32(r[(b - j) & 3, j]) << np.uint32(8 * b)
            out[vi] = v
    return 0


@nb.njit(parallel=True, cache=True)
def decode_kernel(vals, n, G, offs, fixed, flagged, use_flags, acc, d, first, out, status):  # type: ignore[no-untyped-def]
    for g in nb.prange(G):
        st = 99
        if use_flags:
            nfl = 0
            for j in range(N_POS):
                p = g + offs[j]
                if p >= G:
                    p -= G
                vi = j * G + p
                if vi < n and flagged[vi // BLOCK]:
                    nfl += 1
            ok = True
            for t in range(4):
                fx = 0
                for j in range(N_POS):
                    if (fixed[g, j] >> ((t + j) & 3)) & 1:
                        fx += 1
                if nfl + fx > d[t]:
                    ok = False
            if ok:
                st = _decode_once(g, vals, n, G, offs, fixed, flagged, 1, acc, d, first, out)
        if st != 0:
            st2 = _decode_once(g, vals, n, G, offs, fixed, flagged, 0, acc, d, first, out)
            st = st2 if st == 99 else (st if st2 != 0 else 0)
        status[g] = st


def recover(tampered: np.ndarray, code: Code, lay: Layout, key: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check tags, decode every group, re-tag. Returns (values, per-group status, flagged blocks)."""
    nblk = -(-lay.n // BLOCK)
    flagged = block_tags(tampered, np.uint64(key)) != stored_tags(tampered, nblk)
    out = tampered.copy()
    status = np.zeros(lay.G, np.int64)
    if flagged.any():
        acc = syndromes_all(tampered, code, lay, 0xFFFFFFFF)
        decode_kernel(tampered, lay.n, lay.G, lay.offs, lay.fixed, flagged, True, acc, code.d, code.first, out, status)
        write_tags(out, block_tags(out, np.uint64(key)))
    return out, status, flagged


# --------------------------------------------------------------------------- attacks
def synthetic_model(n: int, seed: int) -> np.ndarray:
    """fp32 N(0, 0.02) weights as uint32 bit patterns."""
    return (np.random.default_rng(seed).standard_normal(n, dtype=np.float32) * np.float32(0.02)).view(np.uint32)


def tensor_table(n: int) -> np.ndarray:
    """Sizes of a small LLaMA-like decoder filling n values: 4h x h embedding and head, >= 8 layers of
    q, k, v, o (h x h), gate, up, down (h x 2.6875h) and two norms (h); the last tensor takes the rest."""
    h = max(8, int(np.sqrt(n / 104.5)))
    layer = [h * h] * 4 + [h * (43 * h // 16)] * 3 + [h, h]
    sizes = [4 * h * h]
    while sum(sizes) + sum(layer) + 4 * h * h <= n:
        sizes += layer
    sizes.append(n - sum(sizes))
    return np.array(sizes, np.int64)


def attack_scattered(vals: np.ndarray, rate: float, rng: np.random.Generator) -> float:
    idx = rng.choice(vals.size, int(round(rate * vals.size)), replace=False)
    vals[idx] = rng.integers(0, 2**32, idx.size, dtype=np.uint32)
    return idx.size / vals.size


def attack_runs(vals: np.ndarray, rate: float, rng: np.random.Generator) -> float:
    """1-8 runs of consecutive 256-value blocks, rate of all blocks in total, at random places."""
    nblk = -(-vals.size // BLOCK)
    dead = int(round(rate * nblk))
    runs = int(rng.integers(1, 9))
    cuts = np.sort(rng.choice(np.arange(1, dead), runs - 1, replace=False)) if runs > 1 else np.array([], np.int64)
    lens = np.diff(np.concatenate([[0], cuts, [dead]]))
    gaps = rng.multinomial(nblk - dead, np.full(runs + 1, 1 / (runs + 1)))
    pos, hit = 0, 0
    for r in range(runs):
        pos += int(gaps[r])
        a, b = pos * BLOCK, min(vals.size, (pos + int(lens[r])) * BLOCK)
        vals[a:b] = rng.integers(0, 2**32, b - a, dtype=np.uint32)
        hit += b - a
        pos += int(lens[r])
    return hit / vals.size


def attack_tensors(vals: np.ndarray, rate: float, rng: np.random.Generator) -> float:
    """Whole tensors in random order while they fit in rate; then the smallest one that reaches it."""
    sizes = tensor_table(vals.size)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    goal = rate * vals.size
    chosen, tot = [], 0
    order = rng.permutation(sizes.size)
    for i in order:
        if tot + sizes[i] <= goal:
            chosen.append(i)
            tot += sizes[i]
    if tot < goal:
        rest = [i for i in order if i not in chosen and tot + sizes[i] >= goal]
        if rest:
            i = min(rest, key=lambda i: sizes[i])
            chosen.append(i)
            tot += sizes[i]
    for i in chosen:
        a, b = starts[i], starts[i] + sizes[i]
        vals[a:b] = rng.integers(0, 2**32, b - a, dtype=np.uint32)
    return tot / vals.size


ATTACKS = {"scattered": attack_scattered, "contiguous-runs": attack_runs, "whole-tensors": attack_tensors}
RATES = {
    8: {
        "scattered": (0.05, 0.08, 0.10, 0.12, 0.15, 0.20, 0.25),
        "contiguous-runs": (0.15, 0.18, 0.20, 0.22, 0.25, 0.30),
        "whole-tensors": (0.15, 0.18, 0.20, 0.22, 0.25, 0.30),
    },
    12: {
        "scattered": (0.05, 0.08, 0.10, 0.12, 0.15, 0.18, 0.20, 0.22, 0.25),
        "contiguous-runs": (0.15, 0.18, 0.20, 0.25, 0.30, 0.33, 0.35),
        "whole-tensors": (0.15, 0.18, 0.20, 0.25, 0.30, 0.33, 0.35),
    },
}


# --------------------------------------------------------------------------- theory
def radius(code: Code, eps: float = 1.0) -> float:
    """Collaborative errors-only radius of a group with eps fixed erasures per codeword."""
    return float((code.d - eps).sum()) / 5.0


def binom_tail(nn: int, p: float, k: int) -> float:
    """P(Binomial(nn, p) >= k)."""
    from math import comb

    return float(sum(comb(nn, i) * p**i * (1 - p) ** (nn - i) for i in range(k, nn + 1)))


def predicted_model_failure(code: Code, G: int, p: float) -> float:
    tail = binom_tail(N_POS, p, int(np.floor(radius(code))) + 1)
    return float(1 - (1 - tail) ** G)


# --------------------------------------------------------------------------- runs
class SelfCheckError(AssertionError):
    pass


def self_check(code: Code, lay: Layout, content: np.ndarray, sealed: np.ndarray, key: int) -> None:
    if ((sealed ^ content) & np.uint32(0xFFFFFFFF ^ code.wmask)).any():
        raise SelfCheckError("seal changed bits above the watermark")
    out, status, flagged = recover(sealed, code, lay, key)
    if flagged.any() or not np.array_equal(out, sealed):
        raise SelfCheckError("an intact sealed model did not verify")
    # every group is a codeword: decode the intact model errors-only with every block flagged
    allf = np.ones(-(-lay.n // BLOCK), np.bool_)
    out = sealed.copy()
    status = np.zeros(lay.G, np.int64)
    acc = syndromes_all(sealed, code, lay, 0xFFFFFFFF)
    decode_kernel(sealed, lay.n, lay.G, lay.offs, lay.fixed, allf, False, acc, code.d, code.first, out, status)
    write_tags(out, block_tags(out, np.uint64(key)))
    if status.any() or not np.array_equal(out, sealed):
        raise SelfCheckError(f"{int((status != 0).sum())} groups of the intact model are not codewords")
    # a handful of single-bit flips anywhere are detected and repaired
    rng = np.random.default_rng(1234)
    tam = sealed.copy()
    for _ in range(20):
        i = int(rng.integers(lay.n))
        tam[i] ^= np.uint32(1 << int(rng.integers(32)))
    out, status, flagged = recover(tam, code, lay, key)
    if not flagged.any() or status.any() or not np.array_equal(out, sealed):
        raise SelfCheckError("20 single-bit flips were not detected and repaired")


def run_point(code, lay, sealed, key, attack, rate, trials, seed, outer=None):  # type: ignore[no-untyped-def]
    fails, fracs, wins, claims, times = [], [], 0, 0, []
    for tr in range(trials):
        rng = np.random.default_rng([seed, code.k, list(ATTACKS).index(attack), int(round(rate * 1e4)), tr])
        tam = sealed.copy()
        fracs.append(ATTACKS[attack](tam, rate, rng))
        t0 = time.perf_counter()
        out, status, _ = recover(tam, code, lay, key)
        claimed = not status.any()
        if outer is not None and not claimed:
            cg, claimed = outer.repair(out, status, lay.n)
            out = seal(outer.values(out, cg, status, code, lay.n), code, lay, key, outer)
        times.append(time.perf_counter() - t0)
        exact = bool(np.array_equal(out, sealed))
        if claimed and not exact:
            raise SelfCheckError(
                f"FALSE CLAIM: k={code.k} {attack} {rate} trial {tr}: decoder claimed success, output differs"
            )
        claims += claimed
        wins += exact
        fails.append(int((status != 0).sum()))
    return wins, claims, np.array(fails), np.array(fracs), float(np.median(times))


def margins(k: int, n: int, rate: float, trials: int, seed: int) -> None:
    """Decoded groups by (tampered values in the group) - (its errors-only radius), scattered attack."""
    code = build_code(k)
    key = 0xC0FFEE + k
    lay = build_layout(n, code, key)
    sealed = seal(synthetic_model(n, seed), code, lay, key)
    gi = _gather_index(lay)
    fx = np.array([[(lay.fixed[:, j] >> ((t + j) & 3)) & 1 for j in range(N_POS)] for t in range(4)]).sum(1).T
    rad = (code.d[None, :] - fx).sum(1) // 5
    tab: dict[int, list[int]] = {}
    for tr in range(trials):
        tam = sealed.copy()
        attack_scattered(tam, rate, np.random.default_rng([seed, k, 99, tr]))
        bad = tam != sealed
        e = np.where(gi < n, bad[np.minimum(gi, n - 1)], False).sum(1)
        _, status, _ = recover(tam, code, lay, key)
        for m, ok in zip((e - rad).astype(np.int64).tolist(), (status == 0).tolist(), strict=True):
            a = tab.setdefault(m, [0, 0])
            a[0] += 1
            a[1] += ok
    print(f"\nk={k}, scattered {rate:.0%}, {trials} trials: tampered values minus the group's radius -> decoded/groups")
    print("  " + "  ".join(f"{m:+d}: {a[1]}/{a[0]}" for m, a in sorted(tab.items()) if -5 <= m <= 3))


def fmt_fails(fails: np.ndarray) -> str:
    if not fails.any():
        return "all 0"
    vals, cnts = np.unique(fails, return_counts=True)
    if vals.size > 6:
        return f"{fails.min()}..{fails.max()} (mean {fails.mean():.0f})"
    return " ".join(f"{v}x{c}" for v, c in zip(vals, cnts, strict=True))


def simulate(k: int, n: int, trials: int, seed: int, attacks: list[str], outer_spec: tuple[int, ...] | None) -> None:
    key = 0xC0FFEE + k
    outer = None
    if outer_spec:  # the fewest hosted symbols per codeword that hold the outer parity
        for host in range(1, 9):
            code = build_code(k, host)
            lay = build_layout(n, code, key)
            try:
                outer = Outer.build(code, lay, outer_spec[0], outer_spec[1])
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"outer code {outer_spec} does not fit")
        outer_spec = (outer_spec[0], outer_spec[1], host)
    else:
        code = build_code(k)
        lay = build_layout(n, code, key)
    content = synthetic_model(n, seed)
    sealed = seal(content, code, lay, key, outer)
    self_check(code, lay, content, sealed, key)
    fx = np.array([[((lay.fixed[:, j] >> ((t + j) & 3)) & 1).sum() for j in range(N_POS)] for t in range(4)]).sum(1)
    print(
        f"\n== k={k}: d_t={code.d.tolist()} (first roots {code.first.tolist()}), {n} params, {lay.G} groups; "
        f"fixed erasures per codeword mean {fx.mean() / lay.G:.2f}; errors-only radius ~{radius(code):.1f} "
        f"values/group; self-checks passed"
        + (
            f"\n   outer code: superblocks of {outer_spec[0]} groups, {outer_spec[1]} parity groups each, hosted in "
            f"{outer_spec[2]} data symbols per codeword (d_t lowered by {outer_spec[2]})"
            if outer_spec
            else ""
        )
    )
    for attack in attacks:
        print(
            f"\n{attack:>16}  rate   actual  trials  exact  claimed  failed groups/trial (value x trials)  "
            f"{'predicted P(fail)*' if attack == 'scattered' else ''}  s/trial"
        )
        for rate in RATES[k][attack]:
            t0 = time.perf_counter()
            wins, claims, fails, fracs, med = run_point(code, lay, sealed, key, attack, rate, trials, seed, outer)
            pred = f"{predicted_model_failure(code, lay.G, rate):.2g}" if attack == "scattered" else ""
            print(
                f"{'':>16}  {rate:5.0%}  {fracs.mean():6.2%}  {trials:6d}  {wins:5d}  {claims:7d}  "
                f"{fmt_fails(fails):<36}  {pred:>16}  {med:6.2f}",
                flush=True,
            )
            del t0


def throughput(n: int, levels: list[int], seed: int) -> None:
    content = synthetic_model(n, seed)
    mb = content.nbytes / 1e6
    buf = content.tobytes()
    print(
        f"\n== throughput on {n} fp32 params ({mb:.0f} MB), numba threads {nb.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f}; best of 3 (recover: one run)"
    )
    row = "{:<46} {:8.0f} MB/s  {}"
    print(row.format("hashlib.sha256 (1 thread)", mb / _best(3, hashlib.sha256, buf), ""))
    for k in levels:
        code = build_code(k)
        key = 0xC0FFEE + k
        lay = build_layout(n, code, key)
        masked = content & np.uint32(0xFFFFFFFF ^ code.wmask)
        for threads in sorted({1, nb.config.NUMBA_NUM_THREADS}):
            nb.set_num_threads(threads)
            t_cp = _best(3, np.copy, masked)
            t_par = _best(3, _encode_copy, masked, code, lay) - t_cp
            t_seal = _best(3, seal, content, code, lay, key)
            print(row.format(f"k={k} parity (interleave + RS), {threads} thread(s)", mb / max(t_par, 1e-9), ""))
            print(row.format(f"k={k} seal (mask, parity, sim tags), {threads} thread(s)", mb / t_seal, ""))
        nb.set_num_threads(nb.config.NUMBA_NUM_THREADS)
        sealed = seal(content, code, lay, key)
        print(row.format(f"k={k} verify intact (sim tags only)", mb / _best(3, recover, sealed, code, lay, key), ""))
        for attack, rate in (("scattered", 0.10 if k == 8 else 0.20), ("contiguous-runs", 0.18 if k == 8 else 0.30)):
            tam = sealed.copy()
            ATTACKS[attack](tam, rate, np.random.default_rng(5))
            t0 = time.perf_counter()
            out, status, _ = recover(tam, code, lay, key)
            dt = time.perf_counter() - t0
            ok = "exact" if np.array_equal(out, sealed) else f"NOT exact ({int((status != 0).sum())} groups failed)"
            print(row.format(f"k={k} recover {attack} {rate:.0%}", mb / dt, ok))


def _encode_copy(masked: np.ndarray, code: Code, lay: Layout) -> None:
    encode_parity(masked.copy(), code, lay)


def _best(reps: int, fn, *args) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=int, default=1 << 20, help="fp32 parameters in the simulated model")
    ap.add_argument("--trials", type=int, default=50, help="seeded trials per point")
    ap.add_argument("--levels", default="8,12", help="watermark bits to simulate (8 and/or 12)")
    ap.add_argument("--attacks", default=",".join(ATTACKS), help="comma list of " + ", ".join(ATTACKS))
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--speed-params", type=int, default=1 << 23, help="model size for the throughput rows (0: skip)")
    ap.add_argument("--quick", action="store_true", help="2^18 params, 5 trials, small throughput model")
    ap.add_argument("--margins", action="store_true", help="only print decoded groups vs distance to the radius")
    ap.add_argument("--outer", default="", help="S,R: add the outer code (superblocks of ~S groups, R parity each)")
    a = ap.parse_args(argv)
    if a.quick:
        a.params, a.trials, a.speed_params = min(a.params, 1 << 18), min(a.trials, 5), min(a.speed_params, 1 << 21)
    levels = [int(x) for x in a.levels.split(",")]
    attacks = [x for x in a.attacks.split(",") if x]
    t0 = time.perf_counter()
    print(
        f"sim_scattered: numpy {np.__version__}, numba {nb.__version__}, threads {nb.get_num_threads()}, "
        f"params {a.params}, trials {a.trials}, seed {a.seed}, outer {a.outer or 'none'}"
    )
    if a.margins:
        for k in levels:
            margins(k, a.params, 0.13 if k == 8 else 0.21, a.trials, a.seed)
        return 0
    outer_spec = tuple(int(x) for x in a.outer.split(",")) if a.outer else None
    for k in levels:
        simulate(k, a.params, a.trials, a.seed, attacks, outer_spec)  # type: ignore[arg-type]
    if a.speed_params:
        throughput(a.speed_params, levels, a.seed)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
