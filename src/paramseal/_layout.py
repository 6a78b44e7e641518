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

from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

from .keys import Key
from .levels import BLOCK, FLOATS, ST_TO_NP, TAG_BITS

MAX_SHARDS = 32768  # leopard (reed-solomon-simd) accepts any K, M up to 2**15 each
_MIN_BLOCKS_PER_LANE_PARITY = 16
_TARGET_K = 30000  # data shards per lane: long codewords average damage well (8192 lost capacity)


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
        return max(1, -(-self.numel // BLOCK))

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

    def block_storage(self) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
        """Per block: parity shards stored in its low bits, and whether its tag is stored there."""
        nb = self.nblocks
        bits = np.full(nb, BLOCK * self.k, dtype=np.int64)
        bits[-1] = (self.numel - BLOCK * (nb - 1)) * self.k
        internal = (bits >= TAG_BITS) & (self.k > 0)
        shards = np.where(internal, (bits - TAG_BITS) // 32, 0)
        shards[: self.reserved] = 0
        return shards, internal


@dataclass(frozen=True, slots=True)
class Layout:
    """The lane layout of a whole model; derived from the header and the key."""

    lanes: int
    K: int
    M: int
    block_start: NDArray[np.int64]  # first global block index of each tensor
    lane: NDArray[np.int64]  # per global block
    off_data: NDArray[np.int64]  # per global block: first data shard in its lane
    n_data: NDArray[np.int64]
    off_store: NDArray[np.int64]  # per global block: first parity shard it stores
    n_store: NDArray[np.int64]
    tag_internal: NDArray[np.bool_]
    perm: NDArray[np.int64]  # [stripes, lanes]: lane of the j-th block of each stripe
    stripe_data: NDArray[np.int64]  # per stripe: first data shard (same in every lane)
    stripe_store: NDArray[np.int64]  # per stripe: first parity shard
    holes: NDArray[np.int64]  # per lane: parity shards that no block stores

    def stored(self, lanes: NDArray[np.int64]) -> NDArray[np.bool_]:
        """``[len(lanes), M]``: whether each parity shard of those lanes is stored in some block."""
        rows = np.full(self.lanes, -1, dtype=np.int64)
        rows[lanes] = np.arange(lanes.size)
        pick = np.flatnonzero(rows[self.lane] >= 0)
        return ranges_mask(rows[self.lane[pick]], self.off_store[pick], self.n_store[pick], (lanes.size, self.M))

    @property
    def nblocks(self) -> int:
        """Blocks in the model."""
        return int(self.lane.size)


def _perm(key: Key, salt: bytes, nstripes: int, lanes: int) -> NDArray[np.int64]:
    """Key-derived permutation of lanes for every stripe (AES-CTR values, argsorted)."""
    if lanes == 1:
        return np.zeros((nstripes, 1), dtype=np.int64)
    enc = Cipher(algorithms.AES(key.derive("interleave")), modes.CTR(salt[:16].ljust(16, b"\0"))).encryptor()
    r = np.frombuffer(enc.update(bytes(8 * nstripes * lanes)), dtype="<u8").reshape(nstripes, lanes)
    return np.argsort(r, axis=1, kind="stable").astype(np.int64)


def build_layout(specs: list[TensorSpec], key: Key, salt: bytes, lanes: int | None = None) -> Layout:
    """Lay out every block of ``specs``; ``lanes`` is chosen from the model size when None."""
    n_data = np.concatenate([np.full(s.nblocks, s.data_shards, dtype=np.int64) for s in specs])
    st = [s.block_storage() for s in specs]
    n_store = np.concatenate([a for a, _ in st])
    internal = np.concatenate([b for _, b in st])
    nb = n_data.size
    block_start = np.cumsum([0] + [s.nblocks for s in specs])[:-1].astype(np.int64)
    if lanes is not None:
        g = lanes
    else:
        # Enough lanes to keep codewords short (fast), few enough that each lane's parity
        # can still rebuild several of the largest blocks (tiny models get one lane).
        biggest = int((n_data + n_store).max())
        g = max(
            1, min(-(-int(n_data.sum()) // _TARGET_K), int(n_store.sum()) // (_MIN_BLOCKS_PER_LANE_PARITY * biggest))
        )
    while True:
        nstripes = -(-nb // g)
        starts = np.arange(0, nb, g)
        ds = np.maximum.reduceat(n_data, starts)
        ss = np.maximum.reduceat(n_store, starts)
        K, M = int(ds.sum()), int(ss.sum())
        if (K <= MAX_SHARDS and M <= MAX_SHARDS) or lanes is not None:
            break
        g = int(g * max(K, M) / (0.95 * MAX_SHARDS)) + 1
    perm = _perm(key, salt, nstripes, g)
    # The last stripe may be short: its blocks go to the lanes its permutation lists first.
    lane = perm.reshape(-1)[:nb]
    stripe = np.arange(nb, dtype=np.int64) // g
    od = np.concatenate([[0], np.cumsum(ds)[:-1]]).astype(np.int64)[stripe]
    os_ = np.concatenate([[0], np.cumsum(ss)[:-1]]).astype(np.int64)[stripe]
    holes = M - np.bincount(lane, weights=n_store, minlength=g).astype(np.int64)
    sd = np.concatenate([[0], np.cumsum(ds)[:-1]]).astype(np.int64)
    ss_ = np.concatenate([[0], np.cumsum(ss)[:-1]]).astype(np.int64)
    return Layout(
        g,
        K,
        M,
        block_start,
        lane,
        od,
        n_data,
        os_,
        n_store,
        internal,
        perm,
        sd,
        ss_,
        holes,
    )


def ranges_mask(
    rows: NDArray[np.int64], starts: NDArray[np.int64], lens: NDArray[np.int64], shape: tuple[int, int]
) -> NDArray[np.bool_]:
    """Boolean ``shape`` mask with ``[start, start+len)`` set in each given row (vectorised, O(set cells))."""
    out = np.zeros(shape, dtype=np.bool_)
    keep = lens > 0
    rows, starts, lens = rows[keep], starts[keep], lens[keep]
    if not lens.size:
        return out
    first = np.repeat(rows * shape[1] + starts, lens)
    step = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    out.reshape(-1)[first + step] = True
    return out


__all__ = ["MAX_SHARDS", "Layout", "TensorSpec", "build_layout", "ranges_mask"]
