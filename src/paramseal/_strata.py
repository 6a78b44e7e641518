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

import contextlib
import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

from . import _irs, _native, _native_strata, _outer
from ._layout import TensorSpec
from ._pages import file_span, pwrite_all, release
from ._parallel import halves, parallel_map
from ._strata_kernels import _gather_nb, _split_runs, _strata_of_nb
from ._strata_map import Offset, Scratch, StrataMap, _free_bytes, _tag_bytes
from .errors import NonFiniteError
from .keys import Key
from .levels import BLOCK

N_POS = 255
CODE_NAME = "irs4-gf256"
KS = (8, 12, 16)  # fp32 widths sealed with irs4; at k=4 tag bytes take 1/8 of the parity, so light keeps lanes
PERMS = 256  # keyed position permutations (group g uses g mod PERMS); 5 already leave no common codeword
GROUP_BATCH = 8192  # groups coded per batch without an outer code: [8192, 255] words (8 MiB)
MIN_FLOAT_STRATA = 192  # fewer: integer tensors take too much of every group; the lane code serves better


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
class Strata(StrataMap):
    """The stratum layout of one sealed model, with the reading and writing of its groups' words."""

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
        self,
        flats: list[NDArray[np.unsignedinteger]],
        data: DataRegion,
        g0: int,
        g1: int,
        pad: Offset | NDArray[np.uint32],
        scratch: Scratch | None = None,
        content: NDArray[np.uint8] | None = None,
    ) -> NDArray[np.uint32]:
        """The encoder's input for groups ``[g0, g1)``: their words XOR the offset ``pad``, free bits cleared.

        NaN/Inf values are refused. The compiled gather where the library is built (`_native`,
        any CPU), else `groups` (its reference: the tests compare the two). ``scratch``: the
        compiled gather's arrays are its ``words`` buffer and, for the reads it stages, its ``strata``
        buffer, which `encode_placed` and `scatter` fill afterwards (valid until the next call).
        ``content``: ``[ng, outer.shard]`` bytes that get the words' outer-code content
        (`_outer.Outer.content`): made row by row by the gather where every stratum is a float one, by a
        pass of its own otherwise.
        """
        ng = g1 - g0
        g = np.arange(g0, g1, dtype=np.int64)
        ts = self.flat_words(flats)
        pad = Offset.given(pad)
        if not (_native.portable() and ng > 0 and self.free_strata > 0) or ts is None:
            w = self.groups(flats, data, g, seal=True)[0]
            w ^= pad.array()
            w[:, : self.free_strata] &= self._clear_mask()
            if content is not None:
                self.outer.content(w, content)
            return w
        w = np.empty((ng, N_POS), np.uint32) if scratch is None else scratch.get("words", (ng, N_POS), np.uint32)
        zeros = np.zeros(ng, np.uint32)  # the source of padding words
        pieces = self._native_pieces(flats, g0, ng, zeros)
        perm = self._perm16()
        shape = (self.free_strata, _native_strata.row_stride(ng))
        # the reads land in the strata buffer: free until encode_placed or scatter fills it (16 MiB a
        # thread less to fault in, at up to 2 ms a MiB on a cold host)
        stage = None if scratch is None else scratch.get("strata", shape, np.uint32)
        keep = int(self._clear_mask())
        fused = content if self.free_strata == N_POS else None  # no data words to come: each row is final
        if _native_strata.gather(w, g0, perm, self.free_strata, pieces, pad.for_kernels(), keep, stage, fused) >= 0:
            self.groups(flats, data, g, seal=True)  # raises, naming the tensor as the reference does
            raise AssertionError("the compiled gather found a NaN/Inf word that the reference did not")
        if self.free_strata < N_POS:
            r, pos, dw, _ = self._data_strata(flats, data, g, None)
            w[r, pos] = dw ^ pad.array()[r, pos]
        if content is not None and fused is None:
            self.outer.content(w, content)
        return w

    def encode_placed(
        self,
        w: NDArray[np.uint32],
        g0: int,
        pad: Offset | NDArray[np.uint32],
        scratch: Scratch,
        hosted: tuple[NDArray[np.uint8], NDArray[np.int16]] | None = None,
    ) -> NDArray[np.uint32] | None:
        """`_irs.encode` of ``w`` (groups ``g0...``) and `scatter`'s placement in one pass (`_native.encode_placed`).

        Returns `scatter`'s ``placed``: its ``strata`` buffer in ``scratch`` (``[F, ld]``, the first ``ng``
        words of each row placed), or None, ``w`` untouched, where that kernel does not serve: the caller
        encodes. ``hosted``: the outer parity to put into ``w`` first (`_outer.Outer.hosted_bytes`).
        """
        ng = w.shape[0]
        if not (_native.portable() and ng and self.free_strata):
            return None
        out = scratch.get("strata", (self.free_strata, _native_strata.row_stride(ng)), np.uint32)
        offset = Offset.given(pad).for_kernels()
        if not _native.encode_placed(self.code, w, offset, g0, self._perm16(), self.free_strata, out, hosted):
            return None
        return out

    def scatter(
        self,
        outs: list[NDArray[np.unsignedinteger]],
        w: NDArray[np.uint32],
        g0: int,
        g1: int,
        pad: NDArray[np.uint32] | None = None,
        scratch: Scratch | None = None,
        staged: Callable[[NDArray[np.uint32], int, int], None] | None = None,
        placed: NDArray[np.uint32] | None = None,
        writing: AbstractContextManager[object] | None = None,
    ) -> None:
        """Write the float words of groups ``[g0, g1)`` (``[ng, 255]``, XOR ``pad`` if given) into ``outs``.

        ``scratch``: the compiled path stages the strata in its ``strata`` buffer. ``staged``: called
        with that buffer (``[F, ld]``), ``g0`` and ``ng`` before it is written (the seal tags blocks there).
        ``placed``: what `encode_placed` returned for these words (the placement is then done; ``pad`` unused).
        ``writing``: held while the compiled path writes (a lock, so that threads writing one file take turns).
        """
        if (pad is not None or placed is not None) and _native.portable() and w.shape[0] and self.free_strata:
            shape = (self.free_strata, _native_strata.row_stride(w.shape[0]))
            if placed is not None:
                out, wt = placed, placed[:, : w.shape[0]]
            else:
                out = np.empty(shape, np.uint32) if scratch is None else scratch.get("strata", shape, np.uint32)
                assert pad is not None
                wt = _native_strata.to_strata(w, pad, g0, self._perm16(), self.free_strata, out)
            ts = self.flat_words(outs)
            if ts is not None:
                if staged is not None:
                    staged(out, g0, g1 - g0)
                # the writes in one compiled loop: a Python call per piece cost as much as the copying
                pieces = self._native_pieces(outs, g0, g1 - g0, None)
                with writing or contextlib.nullcontext():
                    _native_strata.put_strata(wt, pieces)
                return
        else:
            wt = self.to_strata(w if pad is None else w ^ pad, g0)
        if staged is not None:  # InPass stages only what the compiled path writes
            raise AssertionError("blocks were to be tagged in strata the compiled path does not write")
        for j, v0, c0, n in self._pieces(g0, g1):
            if j >= self.free_strata:
                continue
            for t, lo, v, m in self.float_runs(v0, v0 + n):
                write_run(outs[t], lo, wt[j, c0 + v - v0 : c0 + v - v0 + m])

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
        ts = self.flat_words(flats)
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
    "Scratch",
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
