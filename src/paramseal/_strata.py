"""Where the interleaved Reed–Solomon groups of the ``irs4`` code take their values from.

The fp32 values of every float tensor (header order) form the *float region* of a
stream of 32-bit words; the bytes of the other tensors, each padded to whole
words, form the *data region* after it. The stream is cut into 255 **strata** of
G words: float strata first, then data strata, so that position j of every group
is the same kind of word and one code (one set of free nibbles) serves all groups.
Group g takes from stratum j the word ``j*G + (g + o_j) mod G``, with key-derived
rotations ``o_j``: a contiguous run of damage puts at most one word of each of its
strata into a group, and an attacker without the key cannot choose the group a
changed word falls in.

That word sits at position ``p_g(j)`` of the group, by one of ``PERMS`` key-derived
permutations (float strata among float positions, data among data, the last float
stratum, which may hold padding, in place). With position j taken from stratum j in
every group, anyone could XOR every word of d + 1 whole strata with constants chosen
as a codeword of the public code: every group would receive a valid codeword, and the
errors-only decoder would take the attacker's weights as decoded. Under the secret
permutations the same constants land on different positions in different groups, and
no such pattern is a codeword of all of them. Header field ``strata_perms``; 0 (the
first irs4 seals) is the unpermuted layout, whose groups are then only trusted when
their flagged words fit as erasures.

The code is linear, so without more the all-zero model, and any sealed group with every
byte multiplied by one constant of GF(2^8), would be codewords under every key. So the
code runs on the words XORed with a keyed pad (AES-CTR, one word per group position):
the stored model is a codeword *plus the pad*, zeroing or scaling the model leaves a
keyed, random-looking remainder, and the decoder sees an error in every word. Header
field ``keyed_offset``; seals without it are trusted only when their damage fits as
erasures, like unpermuted ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numba
import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

from . import _irs, _native, _outer
from ._layout import TensorSpec
from ._pages import file_span, pwrite_all, release
from ._parallel import halves, parallel_map
from .errors import NonFiniteError
from .keys import Key
from .levels import BLOCK

N_POS = 255
CODE_NAME = "irs4-gf256"
KS = (8, 12, 16)  # fp32 widths sealed with irs4; at k=4 tag bytes take 1/8 of the parity, so light keeps lanes
PERMS = 256  # keyed position permutations (group g uses g mod PERMS); 5 already leave no common codeword
GROUP_BATCH = 8192  # groups coded per batch without an outer code: [8192, 255] words (8 MiB)
MIN_FLOAT_STRATA = 192  # fewer: integer tensors take too much of every group; the lane code serves better
FLAG_BAD, FLAG_PAD = _irs.FLAG_BAD, _irs.FLAG_PAD


def applies(specs: list[TensorSpec]) -> bool:
    """Whether the irs4 code can seal this tensor table (every float tensor fp32 with one nibble-aligned k).

    Judged on the table as irs4 would seal it (`as_data`), so the answer is the same before and
    after tiny tensors become data: seal decides once. A model whose float tensors are all tiny
    would keep no watermark bits at all, so it is not for irs4.
    """
    if any(s.dtype != "F32" for s in specs if s.k):
        return False
    specs = as_data(specs)
    floats = [s for s in specs if s.is_float]
    if not floats or len({s.k for s in floats}) != 1 or floats[0].k not in KS:
        return False
    nf, nd = _sizes(specs)
    g, sf = _strata_of(nf, nd)
    if sf < MIN_FLOAT_STRATA:
        return False
    try:  # every layout in use builds (checked for all k and free strata >= 192); keep lanes if one does not
        _irs.code_for(floats[0].k, sf, _outer.choose_host(g, floats[0].k, sf))
    except ValueError:
        return False
    return True


def as_data(specs: list[TensorSpec]) -> list[TensorSpec]:
    """The tensor table as irs4 seals it: float tensors smaller than a block are data (k = 0).

    They are mostly graph constants (exponents, epsilons, fill values) that must stay exact:
    Pow(x, 2.0000153) of a negative x is NaN. As data they are still authenticated and protected.
    """
    return [replace(s, k=0) if s.is_float and s.numel < BLOCK else s for s in specs]


def _sizes(specs: list[TensorSpec]) -> tuple[int, int]:
    nf = sum(s.numel for s in specs if s.is_float)
    nd = sum(_data_words(s) for s in specs if not s.is_float)
    return nf, nd


def _data_words(s: TensorSpec) -> int:
    return -(-s.numel * (s.width // 8) // 4)


def _strata_of(nf: int, nd: int) -> tuple[int, int]:
    """Smallest stratum size G that fits both regions in 255 strata, and the float strata."""
    lo, hi = max(1, -(-(nf + nd) // N_POS)), max(1, nf, nd)  # hi fits: one stratum a region
    while lo < hi:  # the strata needed only fall as G grows: bisect (a step at a time took G / 255 steps)
        g = (lo + hi) // 2
        lo, hi = (lo, g) if -(-nf // g) + -(-nd // g) <= N_POS else (g + 1, hi)
    return lo, -(-nf // lo)


def words_per_stratum(specs: list[TensorSpec]) -> int:
    """G, the words per stratum irs4 gives this tensor table (the header's ``strata``)."""
    return _strata_of(*_sizes(as_data(specs)))[0]


def layout_of(specs: list[TensorSpec]) -> tuple[int, int, int]:
    """``(G, free strata, outer host)`` irs4 gives this tensor table (seal's choice; `applies` must hold)."""
    g, sf = _strata_of(*_sizes(as_data(specs)))
    k = next(s.k for s in as_data(specs) if s.is_float)
    return g, sf, _outer.choose_host(g, k, sf)


def _free_bytes(k: int) -> int:
    """Bit mask of the bytes of an fp32 word that hold free (watermark) nibbles."""
    return 0b1 if k <= 8 else 0b11


def _tag_bytes(k: int) -> NDArray[np.uint8]:
    """Per value offset in a block: mask of the bytes that hold bits of its 32-bit tag."""
    out = np.zeros(BLOCK, np.uint8)
    for j in range(BLOCK):
        bits = min(k, 32 - j * k)
        if bits <= 0:
            break
        out[j] = (1 << -(-bits // 8)) - 1
    return out


def capacity(k: int, host: int = 0, free_strata: int = N_POS) -> dict[str, float]:
    """Recovery bounds of the irs4 code at ``k`` bits (``host`` bytes for the outer code), per group.

    ``free_strata``: the strata of fp32 values (the rest hold integer data and carry no parity), as
    `layout_of` gives for a model. Tag bytes are erasures in every group (about ``free_strata`` * tag
    bytes per block / 256 per codeword).
    ``contiguous``: damage whose position the tags reveal (erasures), per codeword d_t - eps.
    ``scattered``: errors-only collaborative radius sum_t (d_t - eps) / 5. The whole model decodes
    only if every group does, so the rate reached on a large model is below this radius.
    """
    code = _irs.code_for(k, free_strata, host)
    eps = free_strata * int(np.unpackbits(_tag_bytes(k)).sum()) / (BLOCK * 4)
    d = code.d.astype(np.float64)
    return {
        "contiguous_bound": float(np.mean(d - eps) / N_POS),
        "scattered_radius": float(np.sum(d - eps) / 5 / N_POS),
        "parity_fraction": float(d.sum() / (4 * N_POS)),
    }


@dataclass(frozen=True, slots=True)
class Strata:
    """The stratum layout of one sealed model."""

    k: int
    G: int
    free_strata: int
    offs: NDArray[np.int64] = field(repr=False)  # (255,) rotation of each stratum (key-derived)
    specs: tuple[TensorSpec, ...]
    start: NDArray[np.int64]  # stream index of each tensor's first word
    nwords: NDArray[np.int64]
    is_float: NDArray[np.bool_]
    n_float: int
    n_data: int
    host: int  # free bytes per codeword that carry the outer code (0: no outer code)
    perms: int  # keyed position permutations (0: position j is stratum j in every group)
    pad_key: bytes | None = field(repr=False)  # keyed offset (None: the first irs4 seals had none)
    perm: NDArray[np.int64] = field(repr=False)  # (perms, 255): the stratum at each position
    iperm: NDArray[np.int64] = field(repr=False)  # (perms, 255): the position of each stratum

    @property
    def code(self) -> _irs.Code:
        """The inner code for this layout (cached per process)."""
        return _irs.code_for(self.k, self.free_strata, self.host)

    @property
    def outer(self) -> _outer.Outer:
        """The superblocks (and, with ``host``, the outer code's shards)."""
        return _outer.plan(self.G, self.k, self.free_strata, self.host)

    @property
    def data0(self) -> int:
        """Stream index of the data region."""
        return self.free_strata * self.G

    @property
    def trusted(self) -> bool:
        """Whether errors-only decoding can be trusted (keyed positions and keyed offset)."""
        return bool(self.perms) and self.pad_key is not None

    def pad(self, groups: NDArray[np.int64]) -> NDArray[np.uint32]:
        """The keyed offset of ``groups``: ``[len(groups), 255]`` words (zero without one)."""
        if self.pad_key is None or not groups.size:
            return np.zeros((groups.size, N_POS), np.uint32)
        cuts = np.flatnonzero(np.diff(groups) != 1) + 1
        if not cuts.size:  # consecutive groups (a seal's batch): the keystream as it comes, no copy
            return self._pad_run(int(groups[0]), int(groups[-1]) + 1)
        out = np.empty((groups.size, N_POS), np.uint32)
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, groups.size], strict=True):
            out[a:b] = self._pad_run(int(groups[a]), int(groups[b - 1]) + 1)
        return out

    def _pad_run(self, g0: int, g1: int) -> NDArray[np.uint32]:
        """The offset of consecutive groups ``[g0, g1)``: keystream words ``[255 g0, 255 g1)``."""
        assert self.pad_key is not None
        w0, w1 = N_POS * g0, N_POS * g1
        block = w0 // 4  # 4 words per AES block
        n = 4 * (w1 - 4 * block)
        raw = np.empty(n + 15, np.uint8)  # update_into wants a block's slack; 3x faster than update
        nblk = -(-n // 16)
        key = self.pad_key

        def part(r: tuple[int, int]) -> None:  # AES blocks [a, b) of the keystream; OpenSSL lets go of the GIL
            a, b = r
            enc = Cipher(algorithms.AES(key), modes.CTR((block + a).to_bytes(16, "big"))).encryptor()
            if b == nblk:
                enc.update_into(_zeros(n - 16 * a), raw[16 * a :].data)
            else:  # the slack must not reach the next part's bytes: it falls in this part's last block,
                enc.update_into(_zeros(16 * (b - 1 - a)), raw[16 * a : 16 * b - 1].data)
                raw[16 * (b - 1) : 16 * b] = np.frombuffer(enc.update(bytes(16)), np.uint8)  # written last

        parallel_map(part, halves(nblk) if n >= 1 << 20 else [(0, nblk)])
        return raw[:n].view("<u4")[w0 - 4 * block :].reshape(g1 - g0, N_POS)

    def vindex(self, groups: NDArray[np.int64]) -> NDArray[np.int64]:
        """Stream index of every position of ``groups``: ``[len(groups), 255]``."""
        if self.perms:
            j = self.perm[groups % self.perms]
            return j * self.G + (groups[:, None] + self.offs[j]) % self.G
        j = np.arange(N_POS, dtype=np.int64)
        return j * self.G + (groups[:, None] + self.offs[None, :]) % self.G

    def _to_positions(self, by_stratum: NDArray[Any], g0: int) -> NDArray[Any]:
        """Rows of groups ``g0, g0 + 1, ...`` in stratum order -> position order (a copy)."""
        if not self.perms:
            return np.ascontiguousarray(by_stratum)
        rows = np.arange(g0, g0 + by_stratum.shape[0]) % self.perms
        return np.ascontiguousarray(np.take_along_axis(by_stratum, self.perm[rows], axis=1))

    def vindex_at(self, g: NDArray[np.int64], pos: NDArray[np.int64]) -> NDArray[np.int64]:
        """Stream index of position ``pos`` of group ``g`` (elementwise; `vindex` for whole groups)."""
        j = self.perm[g % self.perms, pos] if self.perms else pos
        return j * self.G + (g + self.offs[j]) % self.G

    def groups_of(self, v: NDArray[np.int64]) -> NDArray[np.int64]:
        """The group each stream word ``v`` belongs to."""
        return (v % self.G - self.offs[v // self.G]) % self.G

    def words_per_block(self, t: int) -> int:
        """Stream words per 64-value block of tensor ``t``."""
        s = self.specs[t]
        return BLOCK if self.is_float[t] else BLOCK * (s.width // 8) // 4 or 1

    # ------------------------------------------------------------------ reading and writing words

    def float_runs(self, v0: int, v1: int) -> Iterator[tuple[int, int, int, int]]:
        """``(tensor, local index, stream index, count)`` pieces of the float-region range ``[v0, v1)``."""
        return self._runs(v0, min(v1, self.n_float), True)

    def _runs(self, v0: int, v1: int, floats: bool) -> Iterator[tuple[int, int, int, int]]:
        """Pieces of ``[v0, v1)`` in the float region (``floats``) or the data region, tensor by tensor."""
        ts = np.flatnonzero(self.is_float if floats else ~self.is_float)
        i = int(np.searchsorted(self.start[ts], v0, side="right")) - 1
        v = v0
        while v < v1 and i < ts.size:
            t = int(ts[i])
            n = min(v1, int(self.start[t] + self.nwords[t])) - v
            if n > 0:
                yield t, v - int(self.start[t]), v, n
                v += n
            i += 1

    def _pieces(self, g0: int, g1: int) -> Iterator[tuple[int, int, int, int]]:
        """``(stratum, stream index, column, count)``: where groups ``[g0, g1)`` sit in each stratum."""
        ng = g1 - g0
        for j in range(N_POS):
            a = (g0 + int(self.offs[j])) % self.G
            first = min(ng, self.G - a)
            yield j, j * self.G + a, 0, first
            if first < ng:
                yield j, j * self.G, first, ng - first

    def gather(
        self, flats: list[NDArray[np.unsignedinteger]], data: DataRegion, g0: int, g1: int, *, seal: bool
    ) -> NDArray[np.uint32]:
        """Words of groups ``[g0, g1)`` as ``[ng, 255]``; padding is zero.

        ``seal``: the free bits of float words are cleared, and NaN/Inf values are refused.
        """
        wt = np.zeros((N_POS, g1 - g0), np.uint32)
        for j, v0, c0, n in self._pieces(g0, g1):
            if j < self.free_strata:
                for t, lo, v, m in self.float_runs(v0, v0 + n):
                    part = np.asarray(flats[t][lo : lo + m])
                    if seal and np.any((part >> np.uint32(23)) & np.uint32(0xFF) == 0xFF):
                        raise self._non_finite(t)
                    wt[j, c0 + v - v0 : c0 + v - v0 + m] = part
                    release(flats[t][lo : lo + m])
            else:
                d0 = v0 - self.data0
                m = max(0, min(n, self.n_data - d0))
                wt[j, c0 : c0 + m] = data[d0 : d0 + m]
        if seal:
            wt[: self.free_strata] &= np.uint32(~((1 << self.k) - 1) & 0xFFFFFFFF)
        return self._to_positions(wt.T, g0)

    def seal_words(
        self, flats: list[NDArray[np.unsignedinteger]], data: DataRegion, g0: int, g1: int, pad: NDArray[np.uint32]
    ) -> NDArray[np.uint32]:
        """The encoder's input for groups ``[g0, g1)``: their words XOR ``pad``, free bits cleared.

        NaN/Inf values are refused. The compiled gather where the library is built (`_native`,
        any CPU), else `groups` (its reference: the tests compare the two).
        """
        ng = g1 - g0
        g = np.arange(g0, g1, dtype=np.int64)
        ts = self._flat_words(flats)
        if not (_native.portable() and ng > 0 and self.free_strata > 0) or ts is None:
            w = self.groups(flats, data, g, seal=True)[0]
            w ^= pad
            w[:, : self.free_strata] &= self._clear_mask()
            return w
        w = np.empty((ng, N_POS), np.uint32)
        zeros = np.zeros(ng, np.uint32)  # the source of padding words
        pieces = self._native_pieces(flats, ts, g0, ng, zeros)
        perm = self._perm16()
        if _native.gather(w, g0, perm, self.free_strata, pieces, pad, int(self._clear_mask())) >= 0:
            self.groups(flats, data, g, seal=True)  # raises, naming the tensor as the reference does
            raise AssertionError("the compiled gather found a NaN/Inf word that the reference did not")
        if self.free_strata < N_POS:
            r, pos, dw, _ = self._data_strata(flats, data, g, None)
            w[r, pos] = dw ^ pad[r, pos]
        return w

    def _flat_words(self, arrays: list[NDArray[np.unsignedinteger]]) -> list[int] | None:
        """The float tensors with words, or None if one is no flat contiguous uint32 array (the kernels' input)."""
        ts = [int(t) for t in np.flatnonzero(self.is_float & (self.nwords > 0))]
        ok = all(arrays[t].dtype == np.uint32 and arrays[t].ndim == 1 and arrays[t].flags.c_contiguous for t in ts)
        return ts if ok else None

    def _perm16(self) -> NDArray[np.int16]:
        """``[perms or 1, 255]``: the stratum at each position, as the compiled kernels take it."""
        p = self.perm if self.perms else np.arange(N_POS, dtype=np.int64)[None, :]
        return np.ascontiguousarray(p, dtype=np.int16)

    def _native_pieces(
        self,
        flats: list[NDArray[np.unsignedinteger]],
        ts: list[int],
        g0: int,
        ng: int,
        zeros: NDArray[np.uint32] | None,
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint64], NDArray[np.int32]]:
        """Where rows ``[0, ng)`` (groups ``g0...``) of each float stratum lie: pieces for ``ps_gather``.

        A stratum's rows are one stretch of the stream, or two where it wraps; each is cut where
        a tensor starts and where padding does (padding reads from ``zeros``; None: the pieces are
        for writing, ``ps_put_strata``, and padding is marked with descriptor -2). Returns the
        first piece of each stratum (``F + 1``), each piece's end row, the address of its row 0
        and the descriptor of the mapped file it lies in (-1 if none; the address is then the
        byte offset of row 0 in that file: ``ps_gather`` reads it without faulting pages in).
        """
        F, G = self.free_strata, self.G
        j = np.arange(F, dtype=np.int64)
        a = (g0 + self.offs[:F]) % G
        first = np.minimum(ng, G - a)
        wrap = first < ng
        rj = np.r_[j, j[wrap]]
        rrow = np.r_[np.zeros(F, np.int64), first[wrap]]
        rs = np.r_[j * G + a, j[wrap] * G]
        rn = np.r_[first, ng - first[wrap]]
        tarr = np.array(ts, np.int64)
        bounds = np.unique(np.r_[self.start[tarr], self.n_float]).astype(np.int64)
        lo = np.asarray(np.searchsorted(bounds, rs, side="right"), np.int64)
        hi = np.asarray(np.searchsorted(bounds, rs + rn, side="left"), np.int64)
        cnt = 1 + np.maximum(hi - lo, 0)
        idx = np.repeat(np.arange(rs.size), cnt)
        k = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        nb = bounds.size - 1
        s0 = np.where(k == 0, rs[idx], bounds[np.minimum(lo[idx] + k - 1, nb)])
        s1 = np.where(k == cnt[idx] - 1, rs[idx] + rn[idx], bounds[np.minimum(lo[idx] + k, nb)])
        row0 = rrow[idx] + s0 - rs[idx]
        row1 = row0 + s1 - s0
        tstart = self.start[tarr]  # float tensors lie in header order: increasing
        owner = np.maximum(np.searchsorted(tstart, s0, side="right") - 1, 0)
        addr0 = np.array([flats[t].ctypes.data for t in ts], np.int64)
        padding = s0 >= self.n_float
        at_pad = 0 if zeros is None else zeros.ctypes.data
        addr = np.where(padding, at_pad, addr0[owner] + 4 * (s0 - tstart[owner])) - 4 * row0
        spans = [file_span(flats[t]) for t in ts]
        fds = np.array([-1 if sp is None else sp[0] for sp in spans], np.int32)
        foff = np.array([0 if sp is None else sp[1] for sp in spans], np.int64)
        fd = np.where(padding, -1 if zeros is not None else -2, fds[owner]).astype(np.int32)
        addr = np.where(fd >= 0, foff[owner] + 4 * (s0 - tstart[owner]) - 4 * row0, addr)  # a file offset there
        order = np.lexsort((row0, rj[idx]))
        pstart = np.searchsorted(rj[idx][order], np.arange(F + 1, dtype=np.int64)).astype(np.int64)
        base = np.ascontiguousarray(addr[order]).astype(np.uint64)
        return pstart, np.ascontiguousarray(row1[order]), base, np.ascontiguousarray(fd[order])

    def scatter(
        self,
        outs: list[NDArray[np.unsignedinteger]],
        w: NDArray[np.uint32],
        g0: int,
        g1: int,
        pad: NDArray[np.uint32] | None = None,
    ) -> None:
        """Write the float words of groups ``[g0, g1)`` (``[ng, 255]``, XOR ``pad`` if given) into ``outs``."""
        if pad is not None and _native.portable() and w.shape[0] and self.free_strata:
            wt = _native.to_strata(w, pad, g0, self._perm16(), self.free_strata)
            ts = self._flat_words(outs)
            if ts is not None:
                # the writes in one compiled loop: a Python call per piece cost as much as the copying
                _native.put_strata(wt, self._native_pieces(outs, ts, g0, g1 - g0, None))
                return
        else:
            wt = self.to_strata(w if pad is None else w ^ pad, g0)
        for j, v0, c0, n in self._pieces(g0, g1):
            if j >= self.free_strata:
                continue
            for t, lo, v, m in self.float_runs(v0, v0 + n):
                write_run(outs[t], lo, wt[j, c0 + v - v0 : c0 + v - v0 + m])

    def flags_range(self, g0: int, g1: int, bad: list[NDArray[np.bool_]]) -> NDArray[np.uint8]:
        """``flags`` of groups ``[g0, g1)`` as ``[ng, 255]``, computed run by run (no per-word lookup)."""
        ft = np.zeros((N_POS, g1 - g0), np.uint8)
        free = _free_bytes(self.k)
        for j, v0, c0, n in self._pieces(g0, g1):
            col = ft[j, c0 : c0 + n]
            floats = j < self.free_strata
            end = self.n_float if floats else self.data0 + self.n_data
            col[max(0, end - v0) :] = FLAG_PAD | (free if floats else 0)
            for t, lo, v, m in self._runs(v0, min(v0 + n, end), floats):
                col[v - v0 : v - v0 + m] = self._flags_of(t, lo + np.arange(m), bad, free)
        return self._to_positions(ft.T, g0)

    def _flags_of(self, t: int, local: NDArray[np.int64], bad: list[NDArray[np.bool_]], free: int) -> NDArray[np.uint8]:
        """Flags of words ``local`` of tensor ``t``."""
        s = self.specs[t]
        blk = local // self.words_per_block(t)
        f = np.where(bad[t][blk], FLAG_BAD, 0).astype(np.uint8)
        if self.is_float[t]:
            internal = (blk != s.nblocks - 1) | s.block_storage_ends()[1][1]
            f |= np.where(internal, _tag_bytes(self.k)[local % BLOCK], 0).astype(np.uint8)
            f |= np.where(blk < s.reserved, free, 0).astype(np.uint8)
        return f

    def read(
        self,
        flats: list[NDArray[np.unsignedinteger]],
        data: DataRegion,
        v: NDArray[np.int64],
        bad: list[NDArray[np.bool_]] | None = None,
    ) -> tuple[NDArray[np.uint32], NDArray[np.uint8] | None]:
        """Words at stream indices ``v`` (any shape; padding reads as zero) and, given ``bad``, their flags.

        The numpy reference of `groups` (and its fallback), word by word.
        """
        flat_v = v.reshape(-1)
        out = np.zeros(flat_v.size, np.uint32)
        fl = self._pad_flags(flat_v)
        free = _free_bytes(self.k)
        live = np.flatnonzero(fl == 0)
        for t, sel in self._segments(flat_v[live]):
            at = live[sel]
            local = flat_v[at] - self.start[t]
            if self.is_float[t]:
                out[at] = flats[t][local]  # a gather: only the pages holding these words are read
                release(flats[t][int(local.min()) : int(local.max()) + 1])
            if bad is not None:
                fl[at] = self._flags_of(t, local, bad, free)
        dl = (flat_v >= self.data0) & (flat_v < self.data0 + self.n_data)
        out[dl] = data[flat_v[dl] - self.data0]
        return out.reshape(v.shape), None if bad is None else fl.reshape(v.shape)

    def groups(
        self,
        flats: list[NDArray[np.unsignedinteger]],
        data: DataRegion,
        g: NDArray[np.int64],
        bad: list[NDArray[np.bool_]] | None = None,
        *,
        seal: bool = False,
    ) -> tuple[NDArray[np.uint32], NDArray[np.uint8] | None]:
        """Words of the sorted groups ``g`` as ``[len(g), 255]`` (position order) and, given ``bad``, their flags.

        Float strata in one compiled pass over runs of consecutive groups (a run reads a stretch
        of each stratum); data strata word by word. ``seal``: NaN/Inf refused, free bits cleared.
        Equal to `gather` / `flags_range` (a range) and `read` (any groups), its numpy references.
        """
        ng = g.size
        w = np.zeros((ng, N_POS), np.uint32)
        f = np.zeros((ng, N_POS), np.uint8) if bad is not None else None
        if not ng:
            return w, f
        ts = self._flat_words(flats)
        if ts is None:
            v = self.vindex(g)  # a tensor the kernel cannot take (not a contiguous uint32 array): numpy
            w, f = self.read(flats, data, v, bad)
            if seal:
                self._check_finite(w, v)
                w[v < self.data0] &= self._clear_mask()
            return w, f
        cuts = np.flatnonzero(np.diff(g) != 1) + 1
        row0 = np.r_[0, cuts].astype(np.int64)
        runs = np.stack([g[row0], np.diff(np.r_[row0, ng]), row0], axis=1).astype(np.int64)
        ipermt = self._ipermt()
        keep = int(self._clear_mask()) if seal else 0xFFFFFFFF
        tagb, free, no_bad = _tag_bytes(self.k), _free_bytes(self.k), np.zeros(1, np.bool_)
        tensors = [(t, self.specs[t].block_storage_ends()[1][1]) for t in ts]  # with last block's tag inside

        # the compiled gather where the library is built (no numba kernel to load: most of a light recover)
        kern = _native.gather_runs if _native.portable() else _gather_nb

        def part(rs: NDArray[np.int64]) -> int:  # one core's rows of w, every tensor (the kernels drop the GIL)
            for t, last_internal in tensors:
                spec, t0 = self.specs[t], int(self.start[t])
                first_bad = kern(
                    rs, self.G, self.offs, ipermt, t0, t0 + int(self.nwords[t]), flats[t],
                    no_bad if bad is None else bad[t], spec.nblocks, last_internal, spec.reserved,
                    tagb, free, keep, seal, w, f,
                )  # fmt: skip
                release(flats[t])
                if first_bad >= 0:
                    return t
            if f is not None and self.n_float < self.data0:  # padding at the end of the float region
                kern(
                    rs, self.G, self.offs, ipermt, self.n_float, self.data0, None, no_bad,
                    0, False, 0, tagb, free, keep, False, w, f,
                )  # fmt: skip
            return -1

        nan_in = [t for t in parallel_map(part, _split_runs(runs, ng)) if t >= 0]
        if nan_in:
            raise self._non_finite(min(nan_in))
        if self.free_strata < N_POS:
            r, pos, dw, df = self._data_strata(flats, data, g, bad)
            w[r, pos] = dw
            if f is not None and df is not None:
                f[r, pos] = df
        return w, f

    def _data_strata(
        self,
        flats: list[NDArray[np.unsignedinteger]],
        data: DataRegion,
        g: NDArray[np.int64],
        bad: list[NDArray[np.bool_]] | None,
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint32], NDArray[np.uint8] | None]:
        """The data strata's words of groups ``g`` (few: by the numpy reference) and where they go.

        Returns rows ``[ng, 1]`` and positions ``[ng, data strata]`` to index ``[ng, 255]`` arrays
        with, then the words and, given ``bad``, their flags.
        """
        js = np.arange(self.free_strata, N_POS)
        v = js * self.G + (g[:, None] + self.offs[js]) % self.G
        dw, df = self.read(flats, data, v, bad)
        pos = self._ipermt()[js][:, g % max(1, self.perms)].T
        return np.arange(g.size)[:, None], pos, dw, df

    def _ipermt(self) -> NDArray[np.int64]:
        """``[255, perms]``: the position of each stratum under each permutation (one column when unpermuted)."""
        return np.ascontiguousarray((self.iperm if self.perms else np.arange(N_POS, dtype=np.int64)[None, :]).T)

    def _clear_mask(self) -> np.uint32:
        return np.uint32(~((1 << self.k) - 1) & 0xFFFFFFFF)  # type: ignore[no-any-return]

    def _non_finite(self, t: int) -> NonFiniteError:
        return NonFiniteError(self.specs[t].name)

    def _check_finite(self, w: NDArray[np.uint32], v: NDArray[np.int64]) -> None:
        hit = (v < self.n_float) & ((w >> np.uint32(23)) & np.uint32(0xFF) == 0xFF)
        if hit.any():
            raise self._non_finite(int(self.owner(v[hit][:1])[0]))

    def to_strata(self, w: NDArray[np.uint32], g0: int) -> NDArray[np.uint32]:
        """Float strata of groups ``g0, g0 + 1, ...``: ``[free_strata, ng]`` (the inverse of `groups`' placement)."""
        out = np.empty((self.free_strata, w.shape[0]), np.uint32)
        ipermt = self._ipermt()
        parallel_map(lambda r: _strata_of_nb(w[r[0] : r[1]], g0 + r[0], ipermt, out[:, r[0] : r[1]]), halves(len(w)))
        return out

    def pack_data(self, flats: list[NDArray[np.unsignedinteger]]) -> DataRegion:
        """The data region's words, read from the data tensors' flat values when asked (not copied whole)."""
        return DataRegion(self, flats)

    def _segments(self, v: NDArray[np.int64]) -> Iterator[tuple[int, NDArray[np.int64]]]:
        """``(tensor, positions in v)`` for the stream words ``v`` (inside a region), tensor by tensor."""
        if not v.size:
            return
        t_of = self.owner(v)
        if len(self.specs) < 1 << 15:  # numpy sorts 16-bit keys by radix: linear time
            t_of = t_of.astype(np.int16)
        order = np.argsort(t_of, kind="stable")
        ts = t_of[order]
        cuts = np.flatnonzero(np.diff(ts)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, ts.size], strict=True):
            yield int(ts[a]), order[a:b]

    def owner(self, v: NDArray[np.int64]) -> NDArray[np.int64]:
        """The tensor holding each stream word ``v`` (words inside a region only)."""
        # Empty tensors share their start with another tensor: sorted before it, "the last start <= v"
        # is the tensor that holds the word.
        order = np.lexsort((self.nwords > 0, self.start))
        owner: NDArray[np.int64] = order[np.searchsorted(self.start[order], v, side="right") - 1]
        return owner

    def flags(self, v: NDArray[np.int64], bad: list[NDArray[np.bool_]]) -> NDArray[np.uint8]:
        """Decoder flags of stream words ``v``: unstored bytes (tags, header copy, padding), padding, failed blocks."""
        flat_v = v.reshape(-1)
        out = self._pad_flags(flat_v)
        free = _free_bytes(self.k)
        live = np.flatnonzero(out == 0)
        for t, sel in self._segments(flat_v[live]):
            out[live[sel]] = self._flags_of(t, flat_v[live[sel]] - self.start[t], bad, free)
        return out.reshape(v.shape)

    def _pad_flags(self, flat_v: NDArray[np.int64]) -> NDArray[np.uint8]:
        """Flags of the padding words among ``flat_v`` (zero elsewhere)."""
        out = np.zeros(flat_v.size, np.uint8)
        out[(flat_v >= self.n_float) & (flat_v < self.data0)] = FLAG_PAD | _free_bytes(self.k)
        out[flat_v >= self.data0 + self.n_data] = FLAG_PAD
        return out


class DataRegion:
    """The words of the data region (each data tensor's bytes, padded to whole words), read on demand.

    Indexed like the array it stands for: ``region[a:b]`` or ``region[indices]`` (region offsets).
    Only the words asked for are read, so memory does not grow with the integer tensors.
    """

    def __init__(self, st: Strata, flats: list[NDArray[np.unsignedinteger]]) -> None:
        self._st, self._flats = st, flats

    def __getitem__(self, idx: slice | NDArray[np.int64]) -> NDArray[np.uint32]:
        st = self._st
        if isinstance(idx, slice):
            a, b, _ = idx.indices(st.n_data)
            out = np.zeros(max(0, b - a), np.uint32)
            for t, lo, v, m in st._runs(st.data0 + a, st.data0 + b, False):
                out[v - st.data0 - a : v - st.data0 - a + m] = self._words(t, lo + np.arange(m))
            return out
        out = np.zeros(idx.size, np.uint32)
        for t, sel in st._segments(st.data0 + idx):
            out[sel] = self._words(t, st.data0 + idx[sel] - st.start[t])
        return out

    def _words(self, t: int, local: NDArray[np.int64]) -> NDArray[np.uint32]:
        """Words ``local`` of data tensor ``t``; the bytes past its end read as zero."""
        raw = self._flats[t].reshape(-1).view(np.uint8)
        full = raw.size // 4
        out = np.zeros(local.size, np.uint32)
        whole = local < full
        if whole.any():
            out[whole] = raw[: 4 * full].view(np.uint32)[local[whole]]
        if not whole.all():  # the last word, partly past the tensor's bytes
            tail = np.zeros(4, np.uint8)
            tail[: raw.size - 4 * full] = raw[4 * full :]
            out[~whole] = tail.view(np.uint32)[0]
        release(raw[4 * int(local.min()) : 4 * int(local.max()) + 4])
        return out


def plan(
    specs: list[TensorSpec],
    key: Key,
    salt: bytes,
    host: int | None = None,
    perms: int | None = None,
    offset: bool = True,
) -> Strata:
    """The stratum layout of ``specs`` under ``key`` and ``salt``; ``host`` None: chosen from the size.

    ``perms``: keyed position permutations (None: ``PERMS``, for a new seal; a sealed model: its header's).
    ``offset``: the keyed offset (every new seal; a sealed model: its header's ``keyed_offset``).
    """
    perms = PERMS if perms is None else perms
    nf, nd = _sizes(specs)
    g, sf = _strata_of(nf, nd)
    is_float = np.array([s.is_float for s in specs], np.bool_)
    nwords = np.array([s.numel if s.is_float else _data_words(s) for s in specs], np.int64)
    start = np.zeros(len(specs), np.int64)
    f0, d0 = 0, sf * g
    for t in range(len(specs)):
        if is_float[t]:
            start[t], f0 = f0, f0 + nwords[t]
        else:
            start[t], d0 = d0, d0 + nwords[t]
    k = next(s.k for s in specs if s.is_float)
    nonce = hashlib.sha256(b"strata" + salt).digest()[:16]
    enc = Cipher(algorithms.AES(key.derive("strata")), modes.CTR(nonce)).encryptor()
    raw = np.frombuffer(enc.update(bytes(8 * N_POS)) + enc.finalize(), dtype="<u8")
    offs = (raw % np.uint64(g)).astype(np.int64)
    if host is None:
        host = _outer.choose_host(g, k, sf)
    perm = _permutations(key, salt, sf, perms)
    iperm = np.argsort(perm, axis=1)
    pad_key = hashlib.sha256(key.derive("irs-offset") + salt).digest() if offset else None
    return Strata(k, g, sf, offs, tuple(specs), start, nwords, is_float, nf, nd, host, perms, pad_key, perm, iperm)


def _permutations(key: Key, salt: bytes, sf: int, n: int) -> NDArray[np.int64]:
    """``(n, 255)`` keyed position -> stratum maps: float strata but the last among themselves, data among data."""
    out = np.tile(np.arange(N_POS, dtype=np.int64), (n, 1))
    if n:
        nonce = hashlib.sha256(b"strata-perm" + salt).digest()[:16]
        enc = Cipher(algorithms.AES(key.derive("strata-perm")), modes.CTR(nonce)).encryptor()
        raw = np.frombuffer(enc.update(bytes(8 * n * N_POS)) + enc.finalize(), dtype="<u8").reshape(n, N_POS)
        out[:, : sf - 1] = np.argsort(raw[:, : sf - 1], axis=1, kind="stable")
        out[:, sf:] = sf + np.argsort(raw[:, sf:], axis=1, kind="stable")
    return out


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


@numba.njit(cache=True, nogil=True)
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


@numba.njit(cache=True, nogil=True)
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


_ZEROS = np.zeros(0, np.uint8)


def _zeros(n: int) -> memoryview:
    """``n`` zero bytes (a shared read-only buffer, grown as needed): the plaintext of a keystream."""
    global _ZEROS
    z = _ZEROS  # read once: another thread may replace the buffer, with a smaller one, meanwhile
    if z.size < n:
        z = np.zeros(max(n, 2 * z.size), np.uint8)
        z.flags.writeable = False
        _ZEROS = z
    return z.data[:n]


def write_run(out: NDArray[np.unsignedinteger], lo: int, words: NDArray[np.unsignedinteger]) -> None:
    """Write ``words`` into flat values from index ``lo`` (a write call when they lie in a mapped file)."""
    dst = out[lo : lo + words.size]
    where = file_span(dst)
    if where is None:
        dst[:] = words
        return
    pwrite_all(where[0], np.ascontiguousarray(words).view(np.uint8).reshape(-1).data, where[1])


__all__ = [
    "CODE_NAME",
    "KS",
    "PERMS",
    "DataRegion",
    "Strata",
    "applies",
    "as_data",
    "capacity",
    "layout_of",
    "plan",
    "words_per_stratum",
    "write_run",
]
