"""Ground truth of an attack: exactly which values and bits changed, found by diffing the bits."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._bits import uint_view
from ..levels import BLOCK
from ..report import bit_lists_json

#: Per-index detail (indices and bits) is listed by ``to_dict`` only up to this many changed values per tensor;
#: beyond it the exact index ranges and a per-bit histogram are given (``attack --json`` streams them all).
MAX_LISTED = 10_000


@dataclass(frozen=True, slots=True, eq=False)
class TensorChange:
    """The values of one tensor whose bits differ after the attack."""

    name: str
    numel: int
    width: int  # bits per value
    indices: NDArray[np.int64]  # sorted flat indices
    xor: NDArray[np.uint64]  # per index: XOR of the old and new bits (a row of 64-bit words, low first, past 64)

    @property
    def count(self) -> int:
        """Number of changed values."""
        return int(self.indices.size)

    @property
    def blocks(self) -> NDArray[np.int64]:
        """Sorted 64-value blocks holding a changed value."""
        b: NDArray[np.int64] = self.indices // BLOCK  # indices are sorted, so equal blocks are adjacent
        if b.size < 2:
            return b
        keep = np.ones(b.size, dtype=np.bool_)
        keep[1:] = b[1:] != b[:-1]
        return b[keep]

    @property
    def bits_flipped(self) -> int:
        """Total number of bits that differ."""
        return int(np.unpackbits(self.xor.view(np.uint8)).sum())

    def ranges(self) -> list[list[int]]:
        """The changed indices as ``[start, stop)`` runs."""
        if self.indices.size == 0:
            return []
        cut = np.flatnonzero(np.diff(self.indices) != 1) + 1
        starts = np.concatenate([[0], cut])
        stops = np.concatenate([cut, [self.indices.size]])
        out: list[list[int]] = np.stack([self.indices[starts], self.indices[stops - 1] + 1], axis=1).tolist()
        return out

    def bit_counts(self) -> dict[int, int]:
        """How many changed values had each bit position flipped (LSB = 0)."""
        row = 8 * (self.xor.shape[1] if self.xor.ndim == 2 else 1)
        bits = np.unpackbits(self.xor.view(np.uint8).reshape(-1, row), axis=1, bitorder="little")
        totals = bits.sum(axis=0)
        return {b: int(c) for b, c in enumerate(totals[: self.width]) if c}

    def bits_json(self) -> Iterator[str]:
        """Each changed value's set bit numbers as the items of a JSON list, a slice at a time (``attack --json``)."""
        if self.xor.ndim == 1:
            return bit_lists_json(self.xor)
        step = 4096  # values wider than 64 bits (complex128): rare and small, listed one by one
        return (
            ", ".join(json.dumps(_set_bits(x, self.width)) for x in self.xor[i : i + step])
            for i in range(0, self.count, step)
        )

    def to_dict(self, max_listed: int = MAX_LISTED) -> dict[str, Any]:
        """JSON-able form: counts, exact index ranges, bit histogram, and per-index bits when few."""
        d: dict[str, Any] = {
            "numel": self.numel,
            "changed": self.count,
            "blocks": int(self.blocks.size),
            "bits_flipped": self.bits_flipped,
            "bit_counts": {str(b): c for b, c in self.bit_counts().items()},
            "ranges": self.ranges(),
        }
        if self.count <= max_listed:
            d["indices"] = self.indices.tolist()
            d["bits"] = [_set_bits(x, self.width) for x in self.xor]
        return d


@dataclass(frozen=True, slots=True, eq=False)
class GroundTruth:
    """Exactly what one attack changed, to score localisation and recovery against."""

    kind: str
    seed: int
    options: dict[str, Any]
    total_parameters: int
    changes: tuple[TensorChange, ...] = ()
    structural: tuple[str, ...] = ()  # renamed/added/removed tensors, metadata edits, truncation
    metadata_keys: tuple[str, ...] = ()  # metadata keys edited, added or removed
    file: dict[str, int] = field(default_factory=dict)  # truncate: {"bytes_before", "bytes_after"}
    stopped: str = ""  # why the attack did less than its options ask (bfa: its search stopped early); '' if not

    @property
    def changed_parameters(self) -> int:
        """Values whose bits differ, over all tensors."""
        return sum(c.count for c in self.changes)

    @property
    def changed_tensors(self) -> list[str]:
        """Names of tensors with at least one changed value."""
        return [c.name for c in self.changes if c.count]

    @property
    def tampering_rate(self) -> float:
        """Changed values as a fraction of all parameters."""
        return self.changed_parameters / max(1, self.total_parameters)

    def by_name(self) -> dict[str, TensorChange]:
        """The changes keyed by tensor name."""
        return {c.name: c for c in self.changes}

    def to_dict(self, max_listed: int = MAX_LISTED, *, per_tensor: bool = True) -> dict[str, Any]:
        """JSON-able form (the schema of ``paramseal attack --json``); ``per_tensor=False`` omits ``tensors``."""
        d = {
            "kind": self.kind,
            "seed": self.seed,
            "options": self.options,
            "total_parameters": self.total_parameters,
            "changed_parameters": self.changed_parameters,
            "tampering_rate": self.tampering_rate,
            "changed_tensors": self.changed_tensors,
            "structural": list(self.structural),
            "metadata_keys": list(self.metadata_keys),
            "file": dict(self.file),
            "stopped": self.stopped or None,
        }
        if per_tensor:
            d["tensors"] = {c.name: c.to_dict(max_listed) for c in self.changes if c.count}
        return d

    def summary(self) -> str:
        """Human-readable lines for the CLI."""
        lines = []
        for c in self.changes:
            if not c.count:
                continue
            shown = ", ".join(
                f"[{i}] bits {'/'.join(map(str, _set_bits(x, c.width)))}"
                for i, x in zip(c.indices[:4], c.xor[:4], strict=True)
            )
            more = " ..." if c.count > 4 else ""
            lines.append(f"  {c.name}: {c.count} value(s) in {c.blocks.size} block(s) changed: {shown}{more}")
        lines += [f"  {s}" for s in self.structural]
        if self.stopped:
            lines.append(f"  {self.kind} {self.stopped}")
        return "\n".join(lines)


def _set_bits(x: NDArray[np.uint64], width: int) -> list[int]:
    """The bit positions set in one index's XOR (a word, or a row of words low first)."""
    v = int.from_bytes(np.ascontiguousarray(x).astype("<u8").tobytes(), "little")
    return [b for b in range(width) if v >> b & 1]


def words(a: NDArray[Any]) -> NDArray[np.unsignedinteger]:
    """Each value's bits as one unsigned word, or a row of 64-bit words when wider (complex128: no uint128)."""
    if a.dtype.itemsize <= 8:
        return uint_view(a)
    return np.ascontiguousarray(a).reshape(-1).view(np.uint64).reshape(a.size, a.dtype.itemsize // 8)


def diff(
    before: Mapping[str, NDArray[Any]], after: Mapping[str, NDArray[Any]]
) -> tuple[tuple[TensorChange, ...], tuple[str, ...]]:
    """Compare two models bit by bit: per-tensor changes plus structural differences, in ``before``'s order."""
    changes: list[TensorChange] = []
    structural: list[str] = []
    for name, a in before.items():
        b = after.get(name)
        if b is None:
            structural.append(f"tensor '{name}' removed")
            continue
        width = a.dtype.itemsize * 8
        if a.dtype != b.dtype or a.size != b.size:
            structural.append(f"tensor '{name}' changed from {a.dtype}{list(a.shape)} to {b.dtype}{list(b.shape)}")
            idx = np.arange(a.size, dtype=np.int64)
            changes.append(TensorChange(name, a.size, width, idx, np.zeros(a.size, np.uint64)))
            continue
        if a.shape != b.shape:
            structural.append(f"tensor '{name}' reshaped from {list(a.shape)} to {list(b.shape)}")
        ua, ub = words(a), words(b)
        ne = ua != ub
        idx = np.flatnonzero(ne.any(axis=1) if ne.ndim == 2 else ne).astype(np.int64)
        xor = (ua[idx] ^ ub[idx]).astype(np.uint64)
        changes.append(TensorChange(name, a.size, width, idx, xor))
    structural += [f"tensor '{n}' added" for n in after if n not in before]
    return tuple(changes), tuple(structural)


def metadata_diff(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[str, ...]:
    """Keys edited, added or removed."""
    keys = sorted(set(before) | set(after))
    return tuple(k for k in keys if before.get(k) != after.get(k))
