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

from . import _code, _model
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
        layout = build_layout(specs, key, salt, self.lanes)
        prog = progress or Progress.null()
        blocks = [_model.blocks_of(arrays[s.name], s) for s in specs]
        prog.step("encode")
        parity = _code.encode(_model.gather_lanes(layout, specs, blocks), layout.M)
        mac = BlockMac(key)
        external: dict[int, NDArray[np.uint64]] = {}
        out: dict[str, NDArray[np.generic]] = {}
        for t, (spec, ub) in enumerate(zip(specs, blocks, strict=True)):
            prog.step(spec.name)
            _model.write_storage(layout, spec, t, ub, parity)
            internal = layout.tag_internal[layout.block_start[t] : layout.block_start[t] + spec.nblocks]
            tags = _model.compute_tags(mac, salt, t, spec, ub, internal)
            if spec.is_float and internal.any():
                write_tags(ub, np.where(internal, tags, np.uint64(0)), spec.k)  # zero: tag kept in the header
            if not internal.all():
                external[t] = tags[~internal]
            out[spec.name] = _model.to_tensor(ub, spec)
        header = Header(
            level=self.level,
            bits=self.bits,
            salt=salt,
            key_fingerprint=key.fingerprint,
            lanes=layout.lanes,
            tensors=tuple(specs),
            external_tags=external,
            user_metadata=dict(metadata or {}),
        )
        return SealedModel(out, header.to_json(key), header)


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
