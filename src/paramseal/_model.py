"""Shared internals of seal, verify and recover: tensors as blocks, and moving data to and from lanes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from . import _bits
from ._layout import Layout, TensorSpec
from ._mac import BlockMac
from .levels import BLOCK, ST_TO_NP

Blocks = NDArray[np.unsignedinteger]


def blocks_of(arr: NDArray[np.generic] | None, spec: TensorSpec) -> Blocks:
    """``[nblocks, 64]`` unsigned view-copy of a tensor (zeros when the tensor is missing)."""
    if arr is None:
        dt = ST_TO_NP[spec.dtype]
        return np.zeros((spec.nblocks, BLOCK), dtype=_bits._UINT[1 if dt == np.bool_ else dt.itemsize])
    return _bits.to_blocks(_bits.uint_view(arr))


def to_tensor(ub: Blocks, spec: TensorSpec) -> NDArray[np.generic]:
    """Inverse of ``blocks_of``."""
    flat = ub.reshape(-1)[: spec.numel].copy()
    return flat.view(ST_TO_NP[spec.dtype]).reshape(spec.shape)


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


def gather_lanes(layout: Layout, specs: list[TensorSpec], blocks: list[Blocks]) -> NDArray[np.uint32]:
    """Every lane's data shards, ``[lanes, K]``."""
    out = np.zeros((layout.lanes, layout.K), dtype=np.uint32)
    for t, (spec, ub) in enumerate(zip(specs, blocks)):
        b0 = int(layout.block_start[t])
        sl = slice(b0, b0 + spec.nblocks)
        cols = layout.off_data[sl, None] + np.arange(spec.data_shards)
        out[layout.lane[sl, None], cols] = data_bytes(ub, spec)
    return out


def storage_index(layout: Layout, spec: TensorSpec, t: int) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
    """Lane rows, parity columns and validity mask of each block's stored parity shards."""
    b0 = int(layout.block_start[t])
    sl = slice(b0, b0 + spec.nblocks)
    width = max(0, 2 * spec.k - 1)
    j = np.arange(width)
    valid = j[None, :] < layout.n_store[sl, None]
    cols = np.where(valid, layout.off_store[sl, None] + j, 0)
    return layout.lane[sl, None], cols, valid


def read_parity(layout: Layout, specs: list[TensorSpec], blocks: list[Blocks]) -> NDArray[np.uint32]:
    """The parity shards as found in the low bits, ``[lanes, M]``."""
    out = np.zeros((layout.lanes, layout.M), dtype=np.uint32)
    for t, (spec, ub) in enumerate(zip(specs, blocks)):
        if not spec.is_float or layout.M == 0:
            continue
        rows, cols, valid = storage_index(layout, spec, t)
        lo = _bits.lo_bytes(ub, spec.k).view(np.uint32)[:, 1:]  # word 0 is the tag
        r = np.broadcast_to(rows, cols.shape)
        out[r[valid], cols[valid]] = lo[valid]
    return out


def write_storage(
    layout: Layout, spec: TensorSpec, t: int, ub: Blocks, parity: NDArray[np.uint32], rows: NDArray[np.int64] | None = None
) -> None:
    """Write parity into the low bits of blocks ``rows`` (all when None), zeroing tag and spare bits."""
    if not spec.is_float:
        return
    lr, cols, valid = storage_index(layout, spec, t)
    if rows is not None:
        lr, cols, valid = lr[rows], cols[rows], valid[rows]
    n = cols.shape[0]
    lo = np.zeros((n, 2 * spec.k), dtype=np.uint32)
    if layout.M:
        lo[:, 1:] = np.where(valid, parity[lr, cols], 0)
    target = ub if rows is None else ub[rows]
    _bits.set_lo(target, lo.view(np.uint8), spec.k)
    if rows is not None:
        ub[rows] = target


def compute_tags(
    mac: BlockMac, salt: bytes, t: int, spec: TensorSpec, ub: Blocks, internal: NDArray[np.bool_]
) -> NDArray[np.uint64]:
    """Tags of every block of tensor ``t`` (tag bits masked where the tag is stored in the block)."""
    mask = _bits.tag_mask(spec.k, ub.dtype.itemsize * 8) if spec.is_float else None
    return mac.tags(ub, mac.pads(salt, t, spec.nblocks), mask, internal)


def stored_tags(spec: TensorSpec, ub: Blocks, internal: NDArray[np.bool_], external: NDArray[np.uint64] | None) -> NDArray[np.uint64]:
    """The tags the file carries: in the low bits, or in the header for blocks without room."""
    tags = _bits.read_tags(ub, spec.k) if spec.is_float else np.zeros(spec.nblocks, np.uint64)
    ext = np.flatnonzero(~internal)
    if ext.size:
        tags[ext] = external if external is not None and external.size == ext.size else np.uint64(1 << 40)
    return tags


def as_mapping(tensors: Mapping[str, NDArray[np.generic]]) -> dict[str, NDArray[np.generic]]:
    """Plain dict of numpy arrays (accepts any mapping, keeps order)."""
    return {str(k): np.asarray(v) for k, v in tensors.items()}


__all__ = [
    "as_mapping",
    "blocks_of",
    "compute_tags",
    "data_bytes",
    "gather_lanes",
    "read_parity",
    "set_data",
    "storage_index",
    "stored_tags",
    "to_tensor",
    "write_storage",
]
