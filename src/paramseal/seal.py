"""Seal a model: embed tags and Reed–Solomon parity in the low mantissa bits.

Sealing overwrites the lowest k bits of every float value once, on purpose.
"Bit-exact recovery" afterwards means exactly the *sealed* model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from . import _code, _embed, _model
from ._bits import write_tags
from ._layout import TensorSpec, build_layout
from ._mac import BlockMac
from ._progress import Progress
from .errors import UnsupportedError, UsageError
from .header import Header
from .keys import Key
from .levels import FLOATS, LEVELS, bits_for, dtype_name


@dataclass(frozen=True, slots=True)
class SealConfig:
    """How to seal. ``SealConfig().seal(t, key)`` is exactly ``paramseal.seal(t, key)``."""

    level: str = "standard"
    bits: int | None = None
    lanes: int | None = None  # None: chosen from the model size

    def seal(
        self,
        tensors: Mapping[str, NDArray[np.generic]],
        key: Key,
        *,
        metadata: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> SealedModel:
        """Seal ``tensors`` (name -> array) with ``key``; the input is not modified."""
        if self.level not in LEVELS:
            raise UsageError(f"unknown level '{self.level}'; choose one of {', '.join(LEVELS)}")
        arrays = _model.as_mapping(tensors)
        if not arrays:
            raise UsageError("cannot seal an empty model: it has no tensors")
        specs = [_spec(name, a, self.level, self.bits) for name, a in arrays.items()]
        if not any(s.is_float for s in specs):
            raise UnsupportedError("cannot seal a model without float tensors: the watermark lives in float mantissas")
        salt = os.urandom(16)
        meta = dict(metadata or {})
        emb = _embed.plan(specs, _copy_size(specs, self.level, self.bits, salt, key, meta))
        specs = emb.specs
        layout = build_layout(specs, key, salt, self.lanes)
        prog = progress or Progress.null()
        blocks = [_model.blocks_of(arrays[s.name], s) for s in specs]
        prog.step("encode")
        parity = _code.encode(_model.gather_lanes(layout, specs, blocks), layout.M)
        mac = BlockMac(key)
        external: dict[int, NDArray[np.uint64]] = {}
        every = np.arange(max(s.nblocks for s in specs), dtype=np.int64)
        for t, (spec, ub) in enumerate(zip(specs, blocks, strict=True)):
            prog.step(spec.name)
            _model.write_storage(layout, spec, t, ub, parity)
            if spec.reserved and t not in emb.carriers:  # carriers get theirs once the header exists
                content = _embed.reserved_content(spec, t, len(specs), salt, None)
                _embed.write_reserved(ub, spec, content, every[: spec.reserved])
            internal = layout.tag_internal[layout.block_start[t] : layout.block_start[t] + spec.nblocks]
            tags = _model.compute_tags(mac, salt, t, spec, ub, internal)
            if spec.is_float and internal.any():
                write_tags(ub, np.where(internal, tags, np.uint64(0)), spec.k)  # zero: tag kept in the header
            if not internal.all():
                external[t] = tags[~internal]
        header = Header(
            level=self.level,
            bits=self.bits,
            salt=salt,
            key_fingerprint=key.fingerprint,
            lanes=layout.lanes,
            tensors=tuple(specs),
            external_tags=external,
            user_metadata=meta,
            carriers=emb.carriers,
        )
        copy = header.to_json(key, embedded=True).encode()
        for t in emb.carriers:
            spec, ub = specs[t], blocks[t]
            rows = every[: spec.reserved]
            _embed.write_reserved(ub, spec, _embed.reserved_content(spec, t, len(specs), salt, copy), rows)
            tags = _model.compute_tags(mac, salt, t, spec, ub, np.ones(spec.nblocks, np.bool_), rows)
            sub = ub[rows]
            write_tags(sub, tags, spec.k)
            ub[rows] = sub
        out = {s.name: _model.to_tensor(ub, s) for s, ub in zip(specs, blocks, strict=True)}
        return SealedModel(out, header.to_json(key), header)


def _copy_size(
    specs: list[TensorSpec], level: str, bits: int | None, salt: bytes, key: Key, meta: dict[str, str]
) -> int:
    """An upper bound on the embedded header's length, known before sealing.

    Tags, MACs and digests have fixed widths, so only the reserved block counts
    and the lane count can still grow the JSON: allow them 7 digits each.
    """
    ext = {
        t: np.zeros(int((~s.block_storage()[1]).sum()), np.uint64)
        for t, s in enumerate(specs)
        if not s.block_storage()[1].all()
    }
    probe = Header(level, bits, salt, key.fingerprint, 0, tuple(specs), ext, meta, carriers=(0,) * _embed.CARRIERS)
    return len(probe.to_json(key, embedded=True)) + 7 * (len(specs) + 1 + _embed.CARRIERS)


def _spec(name: str, a: NDArray[np.generic], level: str, bits: int | None) -> TensorSpec:
    dt = dtype_name(a.dtype)
    k = bits_for(dt, level, bits)
    if dt in FLOATS and a.size and not np.isfinite(a.astype(np.float32) if dt == "BF16" else a).all():
        raise UnsupportedError(
            f"cannot seal tensor '{name}': it holds NaN or Inf values, whose low bits are not free "
            "(changing them turns Inf into NaN); fix the weights first"
        )
    return TensorSpec(name, dt, tuple(int(d) for d in a.shape), k)


@dataclass(frozen=True, slots=True)
class SealedModel:
    """Sealed tensors plus the header to store beside them (``metadata['paramseal']``)."""

    tensors: dict[str, NDArray[np.generic]]
    header_json: str
    header: Header = field(repr=False)


def seal(
    tensors: Mapping[str, NDArray[np.generic]],
    key: Key,
    *,
    level: str = "standard",
    bits: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> SealedModel:
    """Seal ``tensors`` with the default configuration at ``level`` (or explicit ``bits``)."""
    return SealConfig(level=level, bits=bits).seal(tensors, key, metadata=metadata)


__all__ = ["SealConfig", "SealedModel", "TensorSpec", "seal"]
