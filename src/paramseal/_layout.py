"""Where every byte of redundancy lives: blocks, stripes and lanes.

* A **block** is 64 consecutive values of one tensor, with one 32-bit tag.
* Its **data** is the high bits of its values (all bits for integer tensors),
  cut into 4-byte shards. Its **storage** is its low bits after the tag: that
  is where parity goes.
* Blocks are dealt to G **lanes** (independent Reed–Solomon codewords) one
  stripe of G consecutive blocks at a time. Inside each stripe the deal is a
  key-derived permutation, so an attacker cannot aim damage at one lane, and
  a destroyed run of blocks falls evenly on every lane.
* A lane stores its parity in the storage of its own blocks, in file order, so
  a contiguous attack erases a contiguous range of each lane's parity.

Every offset is common to all lanes (each stripe slot is sized to the largest
block in the stripe), so all lanes share one (K, M) and encode in one call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

from ._parallel import halves, parallel_map
from .keys import Key
from .levels import BLOCK, FLOATS, ST_TO_NP, TAG_BITS

MAX_SHARDS = 32768  # leopard (reed-solomon-simd) accepts any K, M up to 2**15 each
_MIN_BLOCKS_PER_LANE_PARITY = 16
_TARGET_K = 30000  # data shards per lane: long codewords average damage well (8192 lost capacity)


def block_count(numel: int) -> int:
    """Blocks of a tensor of ``numel`` values: 64 a block, at least one (an empty tensor is authenticated too)."""
    return max(1, -(-numel // BLOCK))


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One tensor as the header records it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    k: int
    reserved: int = 0  # leading blocks whose storage holds the embedded record/header, not parity

    @property
    def numel(self) -> int:
        """Number of values."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nblocks(self) -> int:
        """Number of 64-value blocks (at least one, so empty tensors are still authenticated)."""
        return block_count(self.numel)

    @property
    def width(self) -> int:
        """Bits per value."""
        return ST_TO_NP[self.dtype].itemsize * 8

    @property
    def is_float(self) -> bool:
        """Whether the tensor carries watermark bits."""
        return self.dtype in FLOATS and self.k > 0

    @property
    def data_shards(self) -> int:
        """4-byte data shards per block."""
        return BLOCK * (self.width - self.k) // 32

    def block_storage_ends(self) -> tuple[tuple[int, int], tuple[bool, bool]]:
        """Stored parity shards of a full block and of the last block, and whether each keeps its tag inside.

        Reserved leading blocks store none (the layout applies that).
        """
        last_bits = (self.numel - BLOCK * (self.nblocks - 1)) * self.k
        full_bits = BLOCK * self.k
        fi, li = bool(full_bits >= TAG_BITS and self.k > 0), bool(last_bits >= TAG_BITS and self.k > 0)
        return ((full_bits - TAG_BITS) // 32 if fi else 0, (last_bits - TAG_BITS) // 32 if li else 0), (fi, li)

    def tag_inside(self, rows: NDArray[np.int64]) -> NDArray[np.bool_]:
        """``block_storage()[1][rows]``, without an array of every block (a few blocks of a big tensor)."""
        full, last = self.block_storage_ends()[1]
        inside: NDArray[np.bool_] = np.where(rows == self.nblocks - 1, last, full)
        return inside

    def external_count(self) -> int:
        """Blocks whose tag is not stored inside (``~block_storage()[1]``'s count, without an array per block)."""
        (_, _), (fi, li) = self.block_storage_ends()
        return (self.nblocks - 1) * (not fi) + (not li)

    def block_storage(self) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
        """Per block: parity shards stored in its low bits, and whether its tag is stored there."""
        nb = self.nblocks
        bits = np.full(nb, BLOCK * self.k, dtype=np.int64)
        bits[-1] = (self.numel - BLOCK * (nb - 1)) * self.k
        internal = (bits >= TAG_BITS) & (self.k > 0)
        shards = np.where(internal, (bits - TAG_BITS) // 32, 0)
        shards[: self.reserved] = 0
        return shards, internal


class _PerBlock:
    """A per-block quantity computed on demand from the tensor table and stripes (no array per block).

    Indexed like the array it stands for: ``x[b]``, ``x[b, None]``, ``x[start:stop]``.
    """

    def __init__(self, fn: Callable[[NDArray[np.int64]], NDArray[Any]], n: int) -> None:
        self._fn, self._n = fn, n

    def __getitem__(self, idx: Any) -> NDArray[Any]:
        if isinstance(idx, tuple):  # (blocks, None): a column
            return self[idx[0]][:, None]
        if isinstance(idx, slice):
            return self._fn(np.arange(*idx.indices(self._n), dtype=np.int64))
        return self._fn(np.asarray(idx, dtype=np.int64))


class _PerStripe:
    """The key-derived lane permutation of each stripe, generated on demand: ``perm[s0:s1]``."""

    def __init__(self, layout: Layout) -> None:
        self._lay = layout

    def __getitem__(self, idx: slice) -> NDArray[np.int64]:
        s0, s1, _ = idx.indices(self._lay.nstripes)
        return self._lay.perm_rows(s0, s1)


_CACHE_ENTRIES = 1 << 24  # permutations of models up to this many blocks are kept (32 MiB in 16-bit lanes)
_STRIPE_ENTRIES = 1 << 22  # lanes of single stripes kept for sparse lookups (a model past the cache)
_GEN_ENTRIES = 1 << 22  # lanes a lookup past the cache may generate at once (64-bit keys and lanes: 64 MiB)
_SCAN = 1 << 16  # blocks (or cells) per step of a pass over every block: bounds the index temporaries


@dataclass(frozen=True, slots=True)
class Layout:
    """The lane layout of a whole model, derived from the tensor table, the key and the salt.

    Memory is O(tensors + stripes): per-block quantities (``lane``, ``off_data``, ``n_data``,
    ``off_store``, ``n_store``, ``tag_internal``) are computed on demand, and the per-stripe
    permutation is regenerated from the key when needed, so a 14 GiB model costs megabytes.
    """

    lanes: int
    K: int
    M: int
    specs: tuple[TensorSpec, ...]
    block_start: NDArray[np.int64]  # first global block index of each tensor
    stripe_data: NDArray[np.int64]  # per stripe: first data shard (same in every lane)
    stripe_store: NDArray[np.int64]  # per stripe: first parity shard
    nblocks: int
    _perm_key: bytes = field(repr=False)
    _perm_iv: int = field(repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def nstripes(self) -> int:
        """Stripes in the model (the last may be short)."""
        return int(self.stripe_data.size)

    @property
    def _stripe_step(self) -> int:
        """Stripes per step of a pass over stripes: about 1M lanes, so 64-bit key and sort temporaries stay small."""
        return max(1, _SCAN * 16 // self.lanes)

    @property
    def _lane_type(self) -> type[np.unsignedinteger]:
        """The narrowest type that holds a lane index (what the permutation caches keep)."""
        return np.uint16 if self.lanes <= 1 << 16 else np.uint32

    def perm_rows(self, s0: int, s1: int) -> NDArray[np.int64]:
        """``[s1 - s0, lanes]``: lane of the j-th block of each stripe (AES-CTR values, argsorted)."""
        g = self.lanes
        if g == 1:
            return np.zeros((s1 - s0, 1), dtype=np.int64)
        full = self._full()
        return full[s0:s1].astype(np.int64) if full is not None else self._gen(s0, s1)

    def _full(self) -> NDArray[np.unsignedinteger] | None:
        """Every stripe's permutation in the narrowest lane type, made once, if the model is small enough."""
        full = self._cache.get("perm")
        if full is None and self.nstripes * self.lanes <= _CACHE_ENTRIES:
            full = np.empty((self.nstripes, self.lanes), self._lane_type)
            step = self._stripe_step

            def fill(r: tuple[int, int]) -> None:  # one core's stripes: the keystream and the sort both drop the GIL
                for s0 in range(r[0], r[1], step):
                    s1 = min(r[1], s0 + step)
                    full[s0:s1] = self._gen(s0, s1)

            parallel_map(fill, halves(self.nstripes))
            self._cache["perm"] = full
        return full

    def _sparse(self, b: NDArray[np.int64]) -> NDArray[np.int64]:
        """Lanes of blocks ``b`` from their own stripes' permutations, generated a batch of stripes at a time.

        The stripes made are kept (up to ``_STRIPE_ENTRIES`` lanes) for the next lookup: verify's
        report and recover ask for the same damaged blocks' lanes several times.
        """
        g = self.lanes
        memo: dict[int, NDArray[np.unsignedinteger]] = self._cache.setdefault("stripes", {})
        stripes, at = np.unique(b // g, return_inverse=True)
        at, pos = at.reshape(-1), (b % g).reshape(-1)
        out = np.empty(pos.size, np.int64)
        order = np.argsort(at, kind="stable")
        ends = np.searchsorted(at[order], np.arange(1, stripes.size + 1))
        step = self._stripe_step
        for i in range(0, stripes.size, step):
            batch = stripes[i : i + step].tolist()
            rows = {s: r for s in batch if (r := memo.get(s)) is not None}  # one read each: safe if shared
            todo = [s for s in batch if s not in rows]
            if todo:
                keys = np.empty((len(todo), g), np.uint64)
                for j, s in enumerate(todo):
                    keys[j] = self._keys(s, s + 1)[0]
                if (len(memo) + len(todo)) * g > _STRIPE_ENTRIES:
                    memo = self._cache["stripes"] = {}  # a fresh memo: another reader keeps its own
                for s, row in zip(todo, stable_argsort_rows(keys), strict=True):
                    rows[s] = memo[s] = row.astype(self._lane_type)
            for j, s in enumerate(batch, start=i):
                sel = order[(ends[j - 1] if j else 0) : ends[j]]
                out[sel] = rows[s][pos[sel]]
        return out.reshape(b.shape)

    def _gen(self, s0: int, s1: int) -> NDArray[np.int64]:
        return stable_argsort_rows(self._keys(s0, s1))

    def blocks_in(self, chosen: NDArray[np.bool_]) -> NDArray[np.int64]:
        """The global blocks, in order, that lie in the lanes where ``chosen`` (``[lanes]``) is set."""
        nb, g = self.nblocks, self.lanes
        full = self._full() if g > 1 else None
        if full is not None:
            return np.flatnonzero(chosen[full.reshape(-1)[:nb]])
        out = []
        step = self._stripe_step
        for s0 in range(0, self.nstripes, step):
            s1 = min(self.nstripes, s0 + step)
            out.append(s0 * g + np.flatnonzero(chosen[self.perm_rows(s0, s1).reshape(-1)[: nb - s0 * g]]))
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def _keys(self, s0: int, s1: int) -> NDArray[np.uint64]:
        """The sort keys of stripes ``[s0, s1)``: the AES-CTR keystream from byte ``8 lanes s0``."""
        g = self.lanes
        first, nbytes = 8 * g * s0, 8 * g * (s1 - s0)
        ctr = ((self._perm_iv + first // 16) % (1 << 128)).to_bytes(16, "big")
        enc = Cipher(algorithms.AES(self._perm_key), modes.CTR(ctr)).encryptor()
        skip = first % 16
        return np.frombuffer(enc.update(bytes(skip + nbytes)), dtype="<u8", offset=skip).reshape(s1 - s0, g)

    def tensor_of(self, b: NDArray[np.int64]) -> NDArray[np.int64]:
        """Tensor index of global blocks ``b``."""
        return np.searchsorted(self.block_start, b, side="right").astype(np.int64) - 1

    def _table(self) -> dict[str, NDArray[np.int64]]:
        tab = self._cache.get("table")
        if tab is None:
            tab = self._cache["table"] = _profile(list(self.specs))
        return tab

    def _lane_of(self, b: NDArray[np.int64]) -> NDArray[np.int64]:
        g = self.lanes
        if g == 1 or not b.size:
            return np.zeros(b.shape, dtype=np.int64)
        st = b // g
        full: NDArray[np.unsignedinteger] | None = self._cache.get("perm")
        if full is not None:  # stripe s, position j is entry s * lanes + j = b
            return full.reshape(-1)[b].astype(np.int64)
        lo, hi = int(st.min()), int(st.max()) + 1
        if (hi - lo) * g > max(_GEN_ENTRIES, 4 * b.size) or 8 * np.unique(st).size <= hi - lo:
            # a few blocks (light damage): only their stripes, not the whole model's permutations
            return self._sparse(b)
        rows: NDArray[np.int64] = self.perm_rows(lo, hi)[st - lo, b % g]
        return rows

    def _rows(self, b: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        t = self.tensor_of(b)
        return t, b - self.block_start[t]

    def _n_store(self, b: NDArray[np.int64]) -> NDArray[np.int64]:
        tab = self._table()
        t, r = self._rows(b)
        return _store_of(tab, t, r)

    def _internal(self, b: NDArray[np.int64]) -> NDArray[np.bool_]:
        tab = self._table()
        t, r = self._rows(b)
        out: NDArray[np.bool_] = np.where(r == tab["nblocks"][t] - 1, tab["last_int"][t], tab["full_int"][t]) > 0
        return out

    @property
    def lane(self) -> _PerBlock:
        """Lane of each global block."""
        return _PerBlock(self._lane_of, self.nblocks)

    @property
    def off_data(self) -> _PerBlock:
        """First data shard of each block in its lane."""
        return _PerBlock(lambda b: self.stripe_data[b // self.lanes], self.nblocks)

    @property
    def off_store(self) -> _PerBlock:
        """First parity shard each block stores."""
        return _PerBlock(lambda b: self.stripe_store[b // self.lanes], self.nblocks)

    @property
    def n_data(self) -> _PerBlock:
        """Data shards of each block."""
        return _PerBlock(lambda b: self._table()["data"][self.tensor_of(b)], self.nblocks)

    @property
    def n_store(self) -> _PerBlock:
        """Parity shards each block stores."""
        return _PerBlock(self._n_store, self.nblocks)

    @property
    def tag_internal(self) -> _PerBlock:
        """Whether each block keeps its tag in its own low bits."""
        return _PerBlock(self._internal, self.nblocks)

    @property
    def perm(self) -> _PerStripe:
        """``perm[s0:s1]``: the lane permutation of those stripes."""
        return _PerStripe(self)

    def _irregular(self) -> list[tuple[int, NDArray[np.int64], NDArray[np.int64]]]:
        """Where some lane stores less than its stripe's parity share: ``(stripe, those lanes, what they store)``.

        Only stripes holding a tensor's first, reserved or last blocks, or the short last
        stripe, can be irregular, so this looks at O(tensors) stripes, not at every block,
        and keeps only the short lanes (a lane with no block in the stripe stores 0).
        """
        got = self._cache.get("irregular")
        if got is None:
            g, nb = self.lanes, self.nblocks
            tab = self._table()
            special = [self.block_start, self.block_start + np.maximum(tab["nblocks"] - 1, 0)]
            special += [self.block_start[t] + np.arange(r) for t, r in enumerate(tab["reserved"]) if r]
            cand = np.union1d(np.unique(np.concatenate(special) // g), [self.nstripes - 1])
            share = np.diff(np.append(self.stripe_store, self.M))
            got = []
            step = self._stripe_step  # one lane lookup a step
            for i in range(0, cand.size, step):
                cs = cand[i : i + step]
                sizes = np.minimum(g, nb - cs * g)
                b = np.repeat(cs * g - np.cumsum(sizes) + sizes, sizes) + np.arange(int(sizes.sum()))
                have = np.zeros((cs.size, g), dtype=np.int64)  # a lane with no block in the stripe stores 0
                have[np.repeat(np.arange(cs.size), sizes), self._lane_of(b)] = self._n_store(b)
                for r in np.flatnonzero((have < share[cs, None]).any(axis=1)).tolist():
                    short = np.flatnonzero(have[r] < share[cs[r]])
                    got.append((int(cs[r]), short, have[r, short]))
            self._cache["irregular"] = got
        return got

    @property
    def holes(self) -> NDArray[np.int64]:
        """Per lane: parity shards that no block stores."""
        share = np.diff(np.append(self.stripe_store, self.M))
        out = np.zeros(self.lanes, dtype=np.int64)
        for s, lanes, have in self._irregular():
            out[lanes] += share[s] - have
        return out

    def stored(self, lanes: NDArray[np.int64]) -> NDArray[np.bool_]:
        """``[len(lanes), M]``: whether each parity shard of those lanes is stored in some block."""
        rows = np.full(self.lanes, -1, dtype=np.int64)
        rows[lanes] = np.arange(lanes.size)
        share = np.diff(np.append(self.stripe_store, self.M))
        hole = np.zeros((lanes.size, self.M), dtype=np.bool_)
        for s, short, have in self._irregular():
            mine = rows[short] >= 0
            ranges_mask(rows[short[mine]], self.stripe_store[s] + have[mine], share[s] - have[mine], hole.shape, hole)
        return ~hole


def stable_argsort_rows(r: NDArray[np.uint64]) -> NDArray[np.int64]:
    """``np.argsort(r, axis=1, kind="stable")``, about 4x faster for random keys.

    Without equal keys in a row every sort gives the stable permutation, so quicksort is used
    and only rows with a tie (about 1e-12 each for random 64-bit keys) are sorted again stably.
    """
    from . import _native_blocks  # imports _kernels, which this module's importers need first

    fast = _native_blocks.argsort_rows(r)  # a radix sort, several times faster
    if fast is not None:
        return fast
    perm = np.argsort(r, axis=1, kind="quicksort").astype(np.int64)
    ties = np.flatnonzero((np.diff(np.take_along_axis(r, perm, axis=1), axis=1) == 0).any(axis=1))
    if ties.size:
        perm[ties] = np.argsort(r[ties], axis=1, kind="stable")
    return perm


def _profile(specs: list[TensorSpec]) -> dict[str, NDArray[np.int64]]:
    """Per tensor: data shards, stored parity shards of a full / the last block, reserved blocks, tag placement."""
    full_st, last_st, full_int, last_int = [], [], [], []
    for s in specs:
        st, internal = s.block_storage_ends()
        full_st.append(st[0])
        last_st.append(st[1])
        full_int.append(int(internal[0]))
        last_int.append(int(internal[1]))
    return {
        "data": np.array([s.data_shards for s in specs], dtype=np.int64),
        "full": np.array(full_st, dtype=np.int64),
        "last": np.array(last_st, dtype=np.int64),
        "reserved": np.array([s.reserved for s in specs], dtype=np.int64),
        "nblocks": np.array([s.nblocks for s in specs], dtype=np.int64),
        "full_int": np.array(full_int, dtype=np.int64),
        "last_int": np.array(last_int, dtype=np.int64),
    }


def _store_of(tab: dict[str, NDArray[np.int64]], t: NDArray[np.int64], r: NDArray[np.int64]) -> NDArray[np.int64]:
    base = np.where(r == tab["nblocks"][t] - 1, tab["last"][t], tab["full"][t])
    out: NDArray[np.int64] = np.where(r < tab["reserved"][t], 0, base)
    return out


def build_layout(specs: list[TensorSpec], key: Key, salt: bytes, lanes: int | None = None) -> Layout:
    """Lay out every block of ``specs``; ``lanes`` is chosen from the model size when None."""
    tab = _profile(specs)
    nbt = tab["nblocks"]
    nb = int(nbt.sum())
    block_start = np.concatenate([[0], np.cumsum(nbt)[:-1]]).astype(np.int64)
    total_data = int((tab["data"] * nbt).sum())
    # stored shards: full blocks, minus reserved ones, with the last block's own count
    total_store = int((tab["full"] * (nbt - 1 - np.minimum(tab["reserved"], nbt - 1)) + tab["last"]).sum())
    total_store -= int(((tab["reserved"] >= nbt) * tab["last"]).sum())
    if lanes is not None:
        g = lanes
    else:
        # Enough lanes to keep codewords short (fast), few enough that each lane's parity
        # can still rebuild several of the largest blocks (tiny models get one lane).
        biggest = int((tab["data"] + np.maximum(tab["full"], tab["last"])).max())
        g = max(1, min(-(-total_data // _TARGET_K), total_store // (_MIN_BLOCKS_PER_LANE_PARITY * biggest)))
    while True:
        ds, ss = _stripe_maxima(tab, block_start, nb, g)
        K, M = int(ds.sum()), int(ss.sum())
        if (K <= MAX_SHARDS and M <= MAX_SHARDS) or lanes is not None:
            break
        g = int(g * max(K, M) / (0.95 * MAX_SHARDS)) + 1
    sd = np.concatenate([[0], np.cumsum(ds)[:-1]]).astype(np.int64)
    ss_ = np.concatenate([[0], np.cumsum(ss)[:-1]]).astype(np.int64)
    iv = int.from_bytes(salt[:16].ljust(16, b"\0"), "big")
    return Layout(g, K, M, tuple(specs), block_start, sd, ss_, nb, key.derive("interleave"), iv, {"table": tab})


def _stripe_maxima(
    tab: dict[str, NDArray[np.int64]], block_start: NDArray[np.int64], nb: int, g: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per stripe of ``g`` blocks: the largest data and stored-parity shard counts of its blocks.

    A tensor's blocks are at most three runs of one stored count each (reserved: 0, then full blocks,
    then its last block's), so each stripe's maxima are over the runs it meets: O(tensors + stripes),
    not a pass over every block (a third of a lightly damaged bf16 model's recover setup).
    """
    nbt = tab["nblocks"]
    res = np.minimum(tab["reserved"], nbt)
    lens = np.stack([res, np.maximum(nbt - 1 - res, 0), (res <= nbt - 1).astype(np.int64)], axis=1)
    store = np.stack([np.zeros_like(nbt), tab["full"], tab["last"]], axis=1).reshape(-1)
    data, keep = np.repeat(tab["data"], 3), lens.reshape(-1) > 0
    starts = (block_start[:, None] + np.cumsum(lens, axis=1) - lens).reshape(-1)[keep]
    first = np.arange(0, nb, g, dtype=np.int64)
    idx = np.empty(2 * first.size, dtype=np.int64)  # pairs [run of a stripe's first block, past its last's)
    idx[0::2] = np.searchsorted(starts, first, side="right") - 1
    idx[1::2] = np.searchsorted(starts, np.minimum(first + g, nb) - 1, side="right")
    # reduceat's indices must lie inside the array: a zero one past the last run
    ds, ss = (np.maximum.reduceat(np.append(v[keep], 0), idx)[0::2].astype(np.int64) for v in (data, store))
    return ds, ss


def ranges_mask(
    rows: NDArray[np.int64],
    starts: NDArray[np.int64],
    lens: NDArray[np.int64],
    shape: tuple[int, int],
    out: NDArray[np.bool_] | None = None,
) -> NDArray[np.bool_]:
    """Boolean ``shape`` mask with ``[start, start+len)`` set in each given row (vectorised, O(set cells)).

    Sets cells in ``out`` when given. Works through the ranges a slice at a time, so
    the index temporaries stay small whatever the number of cells.
    """
    if out is None:
        out = np.zeros(shape, dtype=np.bool_)
    keep = lens > 0
    rows, starts, lens = rows[keep], starts[keep], lens[keep]
    flat = out.reshape(-1)
    step = max(1, _SCAN // max(1, int(lens.max(initial=1))))
    for i in range(0, lens.size, step):
        r, s, n = rows[i : i + step], starts[i : i + step], lens[i : i + step]
        first = np.repeat(r * shape[1] + s, n)
        first += np.arange(first.size) - np.repeat(np.cumsum(n) - n, n)
        flat[first] = True
    return out


__all__ = ["block_count", "MAX_SHARDS", "Layout", "TensorSpec", "build_layout", "ranges_mask", "stable_argsort_rows"]
