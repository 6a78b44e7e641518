"""Shared internals of seal, verify and recover: tensors as blocks, and moving data to and from lanes."""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from . import _bits, _kernels
from ._layout import Layout, TensorSpec
from ._mac import BlockMac
from ._pages import SCATTERED_BLOCKS, Workspace, chunks, is_mapped, read, release
from .errors import UsageError
from .levels import BLOCK, ST_TO_NP

Blocks = NDArray[np.unsignedinteger]


def blocks_of(arr: NDArray[np.generic] | None, spec: TensorSpec, *, copy: bool = True) -> Blocks:
    """``[nblocks, 64]`` unsigned copy of a tensor (zeros when missing); a read-only view if ``copy`` is False."""
    if arr is None:
        dt = ST_TO_NP[spec.dtype]
        return np.zeros((spec.nblocks, BLOCK), dtype=_bits._UINT[1 if dt == np.bool_ else dt.itemsize])
    flat = _bits.uint_view(arr)
    if copy or flat.size % BLOCK or not flat.size:  # a copy: an input file's values are read with pread
        got = read(flat)
        if got is not flat and got.size and got.size % BLOCK == 0:
            return got.reshape(-1, BLOCK)
        return _bits.to_blocks(got, copy=copy)
    return _bits.to_blocks(flat, copy=False)


def to_tensor(ub: Blocks, spec: TensorSpec) -> NDArray[np.generic]:
    """Inverse of ``blocks_of``."""
    flat = ub.reshape(-1)[: spec.numel]  # a view: blocks are either our own copy or unchanged input
    out: NDArray[np.generic] = flat.view(ST_TO_NP[spec.dtype]).reshape(spec.shape)
    return out


def data_bytes(ub: Blocks, spec: TensorSpec) -> NDArray[np.uint32]:
    """The protected data of each block as 4-byte shards: ``[nblocks, data_shards]``."""
    if spec.is_float:
        raw = _bits.hi_bytes(ub, spec.k)
    else:
        raw = np.ascontiguousarray(ub).view(np.uint8).reshape(ub.shape[0], -1)
    return np.ascontiguousarray(raw).view(np.uint32)


def set_data(ub: Blocks, spec: TensorSpec, rows: NDArray[np.int64], data: NDArray[np.uint32]) -> None:
    """Write restored data shards into blocks ``rows`` of ``ub`` (low bits untouched)."""
    sub = ub[rows]
    if spec.is_float:
        _bits.set_hi(sub, data.view(np.uint8), spec.k)
    else:
        sub.view(np.uint8).reshape(rows.size, -1)[:] = data.view(np.uint8)
    ub[rows] = sub


def _split(
    layout: Layout, t: int, spec: TensorSpec, r0: int = 0, r1: int | None = None
) -> tuple[int, int, NDArray[np.int64]]:
    """Whole stripes ``[s0, s1)`` of uniform blocks among rows ``[r0, r1)`` of tensor ``t``, and the other rows.

    Rows are returned relative to ``r0``. Reserved leading blocks and the last block may
    store less, so they are never in a whole stripe.
    """
    r1 = spec.nblocks if r1 is None else r1
    g = layout.lanes
    b0 = int(layout.block_start[t])
    lo, hi = b0 + max(r0, spec.reserved), b0 + min(r1, spec.nblocks - 1)
    s0, s1 = -(-lo // g), hi // g
    if s1 <= s0:
        return 0, 0, np.arange(r1 - r0, dtype=np.int64)
    edge = np.concatenate([np.arange(b0 + r0, s0 * g), np.arange(s1 * g, b0 + r1)]).astype(np.int64) - (b0 + r0)
    return s0, s1, edge


def gather_chunk(
    out: NDArray[np.uint32], layout: Layout, t: int, spec: TensorSpec, ub: Blocks, r0: int = 0, row0: int = 0
) -> None:
    """Scatter the data shards of blocks ``[r0, r0 + len(ub))`` of tensor ``t`` into ``out`` ``[K, lanes]``.

    ``out`` may hold only the shards from ``row0`` on (a window of stripes): row ``r`` is at ``r - row0``.
    """
    data = data_bytes(ub, spec)
    b0, d = int(layout.block_start[t]) + r0, spec.data_shards
    s0, s1, edge = _split(layout, t, spec, r0, r0 + ub.shape[0])
    if s1 > s0:  # whole stripes: one block-level scatter, no per-shard index arrays
        ns, off = s1 - s0, int(layout.stripe_data[s0]) - row0
        x = data[s0 * layout.lanes - b0 : s1 * layout.lanes - b0].reshape(ns, layout.lanes, d)
        _kernels.scatter_stripes(out, off, layout.perm[s0:s1], x)
    if edge.size:  # partial stripes: block by block, compiled (fancy indexing here cost 30 s on 3 GiB)
        b = b0 + edge
        offs = layout.off_data[b] - row0
        _kernels.scatter_blocks(out, offs, layout.lane[b], np.full(b.size, d, np.int64), data[edge])


class StripeWindow:
    """Gathers a window of whole stripes in memory, then writes them to a lane store on disk at once.

    The blocks of a stripe all lie in different lanes, so scattering them straight into a
    lane-major store on disk costs a page fault per block (29 of 71 s sealing 2.9 GiB). A window
    of T stripes writes each lane's T stripes as one run instead. Blocks must arrive in global
    order (tensor by tensor, chunk by chunk), as the seal's gather pass reads them.
    """

    def __init__(self, store: NDArray[np.uint32], layout: Layout, max_chunk_blocks: int, budget: int) -> None:
        g, ns = layout.lanes, layout.nstripes
        self.store, self.layout = store, layout
        self.rows = np.append(layout.stripe_data, layout.K)  # first shard row of each stripe, and the end
        per = int(np.diff(self.rows).max(initial=1))
        # a chunk spans at most ceil(chunk / g) + 1 stripes; beyond that, as many as the budget allows
        self.T = min(ns, max(2 + max_chunk_blocks // g, budget // max(1, 4 * g * per)))
        span = self.rows[np.minimum(np.arange(ns) + self.T, ns)] - self.rows[:ns]
        self.buf = np.zeros((int(span.max(initial=1)), g), dtype=np.uint32)
        self.w0 = 0  # first stripe held in the window

    def gather(self, t: int, spec: TensorSpec, ub: Blocks, r0: int) -> None:
        """Scatter blocks ``[r0, r0 + len(ub))`` of tensor ``t``, writing out the stripes before them first."""
        g = self.layout.lanes
        first = int(self.layout.block_start[t]) + r0
        s_first, s_last = first // g, (first + ub.shape[0] - 1) // g
        if s_last >= self.w0 + self.T:
            self._write(s_first)
        if s_last >= self.w0 + self.T:
            raise AssertionError(f"a chunk spans stripes {s_first}..{s_last}, more than the window of {self.T}")
        gather_chunk(self.buf, self.layout, t, spec, ub, r0, row0=int(self.rows[self.w0]))

    def finish(self) -> None:
        """Write every stripe still in the window."""
        self._write(self.layout.nstripes)

    def _write(self, upto: int) -> None:
        """Write stripes ``[w0, upto)`` to the store and slide the window to start at ``upto``."""
        upto = min(upto, self.w0 + self.T, self.layout.nstripes)
        base, r1 = int(self.rows[self.w0]), int(self.rows[upto])
        if r1 > base:
            self.store[base:r1] = self.buf[: r1 - base]  # one run of r1 - base words per lane
            release(self.store[base:r1])
        end = int(self.rows[min(self.w0 + self.T, self.layout.nstripes)])
        keep = end - r1  # rows of stripes already started, still in the window
        self.buf[:keep] = self.buf[r1 - base : r1 - base + keep]
        self.buf[keep : end - base] = 0  # rows past the old window's end were never written: still zero
        self.w0 = upto


def gather_selected(
    layout: Layout,
    specs: list[TensorSpec],
    blocks: list[Blocks],
    col_of_lane: NDArray[np.int64],
    ncols: int,
    ws: Workspace | None = None,
) -> tuple[NDArray[np.uint32], NDArray[np.uint32]]:
    """Data ``[K, ncols]`` and stored parity ``[M, ncols]`` of the lanes with ``col_of_lane >= 0`` only.

    With every lane selected (in order) the model is read chunk by chunk into ``ws``.
    """
    ws = ws or Workspace()
    data = ws.lanes_array(layout.K, ncols)
    parity = ws.lanes_array(layout.M, ncols)
    if ncols == layout.lanes and bool(np.all(col_of_lane == np.arange(layout.lanes))):
        for t, (spec, ub) in enumerate(zip(specs, blocks, strict=True)):
            far = 4 * SCATTERED_BLOCKS if is_mapped(data) else 0  # writes to the store
            for r0, r1 in chunks(
                spec.nblocks, ub.dtype.itemsize, int(layout.block_start[t]), layout.lanes, scattered=far
            ):
                part = ub[r0:r1]
                gather_chunk(data, layout, t, spec, part, r0)
                read_parity_chunk(parity, layout, t, spec, part, r0)
                release(part, data, parity)
        return data, parity
    chosen = layout.blocks_in(col_of_lane >= 0)
    ends = np.searchsorted(chosen, np.append(layout.block_start, layout.nblocks))
    for t, (spec, ub) in enumerate(zip(specs, blocks, strict=True)):
        b = chosen[ends[t] : ends[t + 1]]
        if not b.size:
            continue
        rows, c = b - int(layout.block_start[t]), col_of_lane[layout.lane[b]]
        sub = np.ascontiguousarray(ub[rows])
        release(ub)
        d = np.full(b.size, spec.data_shards, np.int64)
        _kernels.scatter_blocks(data, layout.off_data[b], c, d, data_bytes(sub, spec))
        if spec.is_float and _store_width(spec) and layout.M:
            lo = _bits.lo_bytes(sub, spec.k).view(np.uint32)[:, 1:]
            _kernels.scatter_blocks(parity, layout.off_store[b], c, layout.n_store[b], lo)
        release(data, parity)
    return data, parity


def lane_block_data(
    layout: Layout,
    t: int,
    spec: TensorSpec,
    lanes_data: NDArray[np.uint32],
    rows: NDArray[np.int64],
    col_of_lane: NDArray[np.int64] | None = None,
) -> NDArray[np.uint32]:
    """The data shards of blocks ``rows`` of tensor ``t``, read back from ``[K, lanes]`` (or selected lanes)."""
    b = int(layout.block_start[t]) + rows
    cols = layout.off_data[b, None] + np.arange(spec.data_shards)
    lanes = layout.lane[b] if col_of_lane is None else col_of_lane[layout.lane[b]]
    got: NDArray[np.uint32] = lanes_data[cols, lanes[:, None]]
    return got


def _store_width(spec: TensorSpec) -> int:
    return max(0, 2 * spec.k - 1)


def block_parity(
    layout: Layout,
    t: int,
    spec: TensorSpec,
    parity: NDArray[np.uint32],
    rows: NDArray[np.int64] | None = None,
    col_of_lane: NDArray[np.int64] | None = None,
    span: tuple[int, int] | None = None,
) -> NDArray[np.uint32]:
    """``[n, 2k-1]`` parity words that blocks ``rows`` (else rows ``span``, else all) store (zero past their share)."""
    w = _store_width(spec)
    r0, r1 = span or (0, spec.nblocks)
    n = r1 - r0 if rows is None else rows.size
    out = np.zeros((n, w), dtype=np.uint32)
    if w == 0 or layout.M == 0:
        return out
    b0 = int(layout.block_start[t])
    if rows is None:
        s0, s1, edge = _split(layout, t, spec, r0, r1)
        if s1 > s0:
            ns, off, g = s1 - s0, int(layout.stripe_store[s0]), layout.lanes
            a = s0 * g - b0 - r0
            out[a : a + ns * g] = _kernels.gather_stripes(parity, off, layout.perm[s0:s1], w).reshape(-1, w)
        rows_e = edge + r0
    else:
        rows_e = rows
    b = b0 + rows_e
    lanes = layout.lane[b] if col_of_lane is None else col_of_lane[layout.lane[b]]
    vals = _kernels.gather_blocks(parity, layout.off_store[b], lanes, layout.n_store[b], w)
    if rows is not None:
        return vals
    out[edge] = vals
    return out


def read_parity_chunk(
    out: NDArray[np.uint32], layout: Layout, t: int, spec: TensorSpec, ub: Blocks, r0: int = 0
) -> None:
    """Copy the parity stored in blocks ``[r0, r0 + len(ub))`` of tensor ``t`` into ``out`` ``[M, lanes]``."""
    w = _store_width(spec)
    if not spec.is_float or layout.M == 0 or w == 0:
        return
    lo = _bits.lo_bytes(ub, spec.k).view(np.uint32)[:, 1:]  # word 0 is the tag
    b0 = int(layout.block_start[t]) + r0
    s0, s1, edge = _split(layout, t, spec, r0, r0 + ub.shape[0])
    if s1 > s0:
        ns, off, g = s1 - s0, int(layout.stripe_store[s0]), layout.lanes
        _kernels.scatter_stripes(out, off, layout.perm[s0:s1], lo[s0 * g - b0 : s1 * g - b0].reshape(ns, g, w))
    if edge.size:
        b = b0 + edge
        _kernels.scatter_blocks(out, layout.off_store[b], layout.lane[b], layout.n_store[b], lo[edge])


def write_storage(
    layout: Layout,
    spec: TensorSpec,
    t: int,
    ub: Blocks,
    parity: NDArray[np.uint32],
    rows: NDArray[np.int64] | None = None,
    col_of_lane: NDArray[np.int64] | None = None,
    r0: int = 0,
) -> None:
    """Write parity into the low bits of blocks ``rows`` (else of all ``ub``, rows ``r0..``); zero the tag bits."""
    if not spec.is_float:
        return
    span = None if rows is not None else (r0, r0 + ub.shape[0])
    words = block_parity(layout, t, spec, parity, rows, col_of_lane, span)
    lo = np.zeros((words.shape[0], 2 * spec.k), dtype=np.uint32)
    lo[:, 1:] = words
    if rows is None:
        _bits.set_lo(ub, lo.view(np.uint8), spec.k)
    else:
        target = ub[rows]
        _bits.set_lo(target, lo.view(np.uint8), spec.k)
        ub[rows] = target


def compute_tags(
    mac: BlockMac,
    salt: bytes,
    t: int,
    spec: TensorSpec,
    ub: Blocks,
    internal: NDArray[np.bool_],
    rows: NDArray[np.int64] | None = None,
    r0: int = 0,
    at: NDArray[np.int64] | None = None,
) -> NDArray[np.uint64]:
    """Tags of blocks of tensor ``t``; ``internal`` covers the whole tensor.

    Which blocks: ``rows`` of ``ub`` (``ub`` is the whole tensor); else every row of ``ub``,
    which holds the tensor's blocks ``at`` (or ``r0, r0 + 1, ...``). Tag bits are masked
    where the block stores its tag.
    """
    mask = _bits.tag_mask(spec.k, ub.dtype.itemsize * 8) if spec.is_float else None
    if rows is not None:
        ub, at = np.ascontiguousarray(ub[rows]), rows
    if at is not None and at.size == 0:  # no blocks chosen: no tags (``min()`` of nothing raises)
        return np.zeros(0, dtype=np.uint64)
    if at is not None:  # the keystream of the blocks ``at`` only (a tensor's whole was derived per call)
        return mac.tags(ub, mac.pads_at(salt, t, at, name=spec.name), mask, internal[at])
    n = ub.shape[0]
    return mac.tags(ub, mac.pads(salt, t, n, r0, name=spec.name), mask, internal[r0 : r0 + n])


def stored_tags(
    spec: TensorSpec, ub: Blocks, internal: NDArray[np.bool_], external: NDArray[np.uint64] | None
) -> NDArray[np.uint64]:
    """The tags the blocks in ``ub`` carry: in their low bits, or in the header for blocks without room.

    ``internal`` and ``external`` cover exactly the blocks in ``ub`` (``external``: one tag per
    block that is not internal; None when the header has none, which fails those blocks).
    """
    tags = _bits.read_tags(ub, spec.k) if spec.is_float else np.zeros(ub.shape[0], np.uint64)
    ext = np.flatnonzero(~internal)
    if ext.size:
        tags[ext] = external if external is not None and external.size == ext.size else np.uint64(1 << 40)
    return tags


def as_mapping(tensors: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]:
    """Plain dict of numpy arrays (accepts any mapping, keeps order); names must be str.

    A name made str here would not be the caller's ({1: a} sealed as '1'), and two could merge ({1: a, '1': b}).
    A torch tensor (a state dict's) is read as the ``.pt`` reader reads one: bfloat16 as ml_dtypes', one
    that requires grad or lies on a GPU too (``np.asarray`` refuses those with torch's own errors). An array
    in the other byte order ('>f4') is read in this machine's: the same values (a copy).
    """
    if not isinstance(tensors, Mapping):
        raise UsageError(f"tensors must be a mapping of name (str) to array, not {type(tensors).__name__}")
    torch = sys.modules.get("torch")  # a torch tensor can only come from a process that imported torch
    out: dict[str, NDArray[np.generic]] = {}
    for k, v in tensors.items():
        if not isinstance(k, str):
            raise UsageError(f"tensor names must be str, not {type(k).__name__} ({k!r}); use {{str(k): v ...}}")
        if torch is not None and isinstance(v, torch.Tensor):
            from .formats.pytorch import tensor_to_numpy

            # any dtype: seal refuses one it cannot seal, verify reports a sealed tensor retyped as tampered
            out[k] = tensor_to_numpy(v, f"tensor '{k}'", copy=False, any_dtype=True)
        else:
            a = np.asarray(v)
            # the other byte order holds the same values: read in this machine's, as the file readers read it
            out[k] = a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))
    return out


__all__ = [
    "as_mapping",
    "blocks_of",
    "compute_tags",
    "data_bytes",
    "StripeWindow",
    "gather_chunk",
    "read_parity_chunk",
    "set_data",
    "block_parity",
    "gather_selected",
    "lane_block_data",
    "stored_tags",
    "to_tensor",
    "write_storage",
]
