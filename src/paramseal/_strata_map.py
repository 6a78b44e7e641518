"""Where the words of an irs4 stratum layout lie: group positions, stream words, file pieces, flags.

The fields of `_strata.Strata` and the arithmetic on them that reads no weights (the layout
itself is described in `_strata`): separate from the reading and writing of words there, so
that each stays short. Also the keyed offset's keystream and the flags the decoder takes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

from . import _irs, _native_strata, _outer
from ._irs_consts import FLAG_BAD, FLAG_PAD, N_POS
from ._layout import TensorSpec
from ._pages import file_spans
from ._parallel import halves, parallel_map
from .levels import BLOCK


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


_KEPT_TABLES = 8  # a few superblocks in flight (one a core) and the one each just finished


class Scratch(threading.local):
    """Each thread's work arrays, reused from one superblock of a seal to the next.

    A fresh array of a few MiB is mapped anew and page-faulted (zeroed by the kernel) on every
    call; a seal makes several of 16 MiB per superblock, so it keeps them. An array handed out
    is valid until the same thread asks for that name again.
    """

    def get(self, name: str, shape: tuple[int, ...], dtype: type[np.generic]) -> NDArray[Any]:
        """An uninitialised ``shape`` array of ``dtype``, this thread's ``name`` buffer (grown as needed)."""
        n = math.prod(shape)
        a: NDArray[Any] | None = self.__dict__.get(name)
        if a is None or a.size < n or a.dtype != dtype:
            a = np.empty(n, dtype)
            self.__dict__[name] = a
        return a[:n].reshape(shape)


class Offset:
    """The keyed offset of a batch of consecutive groups (`StrataMap.offset`).

    Where the compiled kernels make it from its key as they go (`_native_strata.makes_pad`, every
    position a float stratum), they take the key: the 16 MiB array a superblock was written by one
    pass and read by two. Elsewhere, and for any caller that asks, `array` makes the words (once).
    """

    def __init__(
        self, st: StrataMap | None, g0: int, g1: int, scratch: Scratch | None, words: NDArray[np.uint32] | None = None
    ) -> None:
        self._st, self._g0, self._g1, self._scratch, self._words = st, g0, g1, scratch, words
        key = None if st is None else st.pad_key
        made = st is not None and key is not None and st.free_strata == N_POS and _native_strata.makes_pad()
        self.key: bytes | None = key if made else None

    @staticmethod
    def given(pad: Offset | NDArray[np.uint32]) -> Offset:
        """``pad`` itself, or an offset whose words are the array ``pad``."""
        return pad if isinstance(pad, Offset) else Offset(None, 0, pad.shape[0], None, pad)

    def array(self) -> NDArray[np.uint32]:
        """``[g1 - g0, 255]`` words (`StrataMap.pad`)."""
        if self._words is None:
            assert self._st is not None
            self._words = self._st.pad(np.arange(self._g0, self._g1, dtype=np.int64), self._scratch)
        return self._words

    def for_kernels(self) -> NDArray[np.uint32] | bytes:
        """The key where the kernels make the words, else the words."""
        return self.key if self.key is not None else self.array()


_KEPT_HELD = 4  # a seal's inputs and outputs, and a caller's other lists


class _Held(NamedTuple):
    """A list of arrays' float tensors with words (``ts``), as the compiled movers take them.

    The arrays themselves, whether each is a flat contiguous uint32 array (``ok``), their addresses,
    and the file each lies in (`file_spans`).
    """

    ts: tuple[int, ...]
    arrays: tuple[NDArray[np.unsignedinteger], ...]
    ok: bool
    addr: NDArray[np.int64]
    fds: NDArray[np.int32]
    foff: NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class StrataMap:
    """The stratum layout of one sealed model (`_strata.Strata` adds reading and writing words)."""

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
    # the last few `piece_table`s: a seal's superblock asks for its own two or three times (gather, writes,
    # and tags where they are made in the pass)
    _tables: dict[tuple[Any, ...], tuple[NDArray[Any], ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _tables_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    # `_held` of the last few array lists (a seal's inputs and outputs), by their float tensors' arrays
    _held_of: dict[tuple[int, ...], _Held] = field(default_factory=dict, init=False, repr=False, compare=False)

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

    def offset(self, g0: int, g1: int, scratch: Scratch | None = None) -> Offset:
        """The keyed offset of groups ``[g0, g1)`` for the seal's kernels: its key, or its words when asked for."""
        return Offset(self, g0, g1, scratch)

    def pad(self, groups: NDArray[np.int64], scratch: Scratch | None = None) -> NDArray[np.uint32]:
        """The keyed offset of ``groups``: ``[len(groups), 255]`` words (zero without one).

        ``scratch``: consecutive groups' keystream is made in its ``pad`` buffer (valid until the next).
        """
        if self.pad_key is None or not groups.size:
            return np.zeros((groups.size, N_POS), np.uint32)
        cuts = np.flatnonzero(np.diff(groups) != 1) + 1
        if not cuts.size:  # consecutive groups (a seal's batch): the keystream as it comes, no copy
            return self._pad_run(int(groups[0]), int(groups[-1]) + 1, scratch)
        out = np.empty((groups.size, N_POS), np.uint32)
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, groups.size], strict=True):
            out[a:b] = self._pad_run(int(groups[a]), int(groups[b - 1]) + 1)
        return out

    def _pad_run(self, g0: int, g1: int, scratch: Scratch | None = None) -> NDArray[np.uint32]:
        """The offset of consecutive groups ``[g0, g1)``: keystream words ``[255 g0, 255 g1)``."""
        assert self.pad_key is not None
        w0, w1 = N_POS * g0, N_POS * g1
        block = w0 // 4  # 4 words per AES block
        n = 4 * (w1 - 4 * block)
        # update_into wants a block's slack; 3x faster than update
        raw = np.empty(n + 15, np.uint8) if scratch is None else scratch.get("pad", (n + 15,), np.uint8)
        nblk = -(-n // 16)
        key = self.pad_key

        def part(r: tuple[int, int]) -> None:  # AES blocks [a, b) of the keystream; both let go of the GIL
            a, b = r
            if _native_strata.aes256_ctr(key, block + a, raw[16 * a : 16 * b]):  # VAES: 4 blocks an instruction
                return
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

    def _ipermt(self) -> NDArray[np.int64]:
        """``[255, perms]``: the position of each stratum under each permutation (one column when unpermuted)."""
        return np.ascontiguousarray((self.iperm if self.perms else np.arange(N_POS, dtype=np.int64)[None, :]).T)

    def _perm16(self) -> NDArray[np.int16]:
        """``[perms or 1, 255]``: the stratum at each position, as the compiled kernels take it."""
        p = self.perm if self.perms else np.arange(N_POS, dtype=np.int64)[None, :]
        return np.ascontiguousarray(p, dtype=np.int16)

    def _clear_mask(self) -> np.uint32:
        return np.uint32(~((1 << self.k) - 1) & 0xFFFFFFFF)  # type: ignore[no-any-return]

    def flat_words(self, arrays: list[NDArray[np.unsignedinteger]]) -> list[int] | None:
        """The float tensors with words, or None if one is no flat contiguous uint32 array (the kernels' input)."""
        held = self._held(arrays)
        return list(held.ts) if held.ok else None

    def _held(self, arrays: list[NDArray[np.unsignedinteger]]) -> _Held:
        """`_Held` of ``arrays``' float tensors with words: made once per list of arrays (by their identity).

        A seal asks for it four times a superblock (`flat_words` and `_native_pieces`, of its inputs and
        of its outputs); made each time, those took 0.13 and 0.68 ms a call (docs/performance.md).
        """
        ts = tuple(np.flatnonzero(self.is_float & (self.nwords > 0)).tolist())
        arrs = tuple(arrays[t] for t in ts)
        key = tuple(map(id, arrs))  # the entry keeps arrs alive: no other array can take one of their ids
        with self._tables_lock:
            got = self._held_of.get(key)
        if got is not None:
            return got
        ok = all(a.dtype == np.uint32 and a.ndim == 1 and a.flags.c_contiguous for a in arrs)
        addr = np.array([a.ctypes.data for a in arrs], np.int64)
        fds, foff = file_spans(addr, np.array([a.nbytes for a in arrs], np.int64))
        got = _Held(ts, arrs, ok, addr, fds, foff)
        with self._tables_lock:
            self._held_of[key] = got
            while len(self._held_of) > _KEPT_HELD:
                del self._held_of[next(iter(self._held_of))]
        return got

    def _native_pieces(
        self,
        flats: list[NDArray[np.unsignedinteger]],
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
        F = self.free_strata
        held = self._held(flats)
        assert held.ok  # the caller asked `flat_words`
        ts = list(held.ts)
        rj, row0, row1, s0, owner, padding = self.piece_table(ts, g0, ng)
        tstart = self.start[np.array(ts, np.int64)]
        addr0, fds, foff = held.addr, held.fds, held.foff
        at_pad = 0 if zeros is None else zeros.ctypes.data
        addr = np.where(padding, at_pad, addr0[owner] + 4 * (s0 - tstart[owner])) - 4 * row0
        fd = np.where(padding, -1 if zeros is not None else -2, fds[owner]).astype(np.int32)
        addr = np.where(fd >= 0, foff[owner] + 4 * (s0 - tstart[owner]) - 4 * row0, addr)  # a file offset there
        pstart = np.searchsorted(rj, np.arange(F + 1, dtype=np.int64)).astype(np.int64)
        return pstart, row1, np.ascontiguousarray(addr).astype(np.uint64), np.ascontiguousarray(fd)

    def piece_table(self, ts: list[int], g0: int, ng: int) -> tuple[NDArray[Any], ...]:
        """The pieces of `_native_pieces` (rows ``[0, ng)``, groups ``g0...``), in stratum then row order.

        Six arrays (read-only: kept for the next calls with these arguments): each piece's stratum, first
        row, end row, the stream index of its first row, its owner (an index into ``ts``) and whether it is
        padding.
        """
        key = (tuple(ts), g0, ng)
        with self._tables_lock:
            got = self._tables.get(key)
        if got is None:
            got = self._piece_table(ts, g0, ng)
            for a in got:
                a.setflags(write=False)
            with self._tables_lock:
                self._tables[key] = got
                while len(self._tables) > _KEPT_TABLES:
                    del self._tables[next(iter(self._tables))]
        return got

    def _piece_table(self, ts: list[int], g0: int, ng: int) -> tuple[NDArray[Any], ...]:
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
        owner = np.maximum(np.searchsorted(self.start[tarr], s0, side="right") - 1, 0)  # float tensors: increasing
        order = np.lexsort((row0, rj[idx]))
        return (
            np.ascontiguousarray(rj[idx][order]),
            np.ascontiguousarray(row0[order]),
            np.ascontiguousarray(row1[order]),
            np.ascontiguousarray(s0[order]),
            np.ascontiguousarray(owner[order]),
            np.ascontiguousarray((s0 >= self.n_float)[order]),
        )

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


__all__ = ["StrataMap"]
