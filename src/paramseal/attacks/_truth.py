"""Ground truth of an attack: exactly which values and bits changed, found by diffing the bits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._bits import uint_view
from ..levels import BLOCK

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
    xor: NDArray[np.uint64]  # per index: XOR of the old and new bits

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
        bits = np.unpackbits(self.xor.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
        totals = bits.sum(axis=0)
        return {b: int(c) for b, c in enumerate(totals[: self.width]) if c}

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
            d["bits"] = [[b for b in range(self.width) if int(x) >> b & 1] for x in self.xor]
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
                f"[{i}] bits {'/'.join(str(b) for b in range(c.width) if int(x) >> b & 1)}"
                for i, x in zip(c.indices[:4], c.xor[:4], strict=True)
            )
            more = " ..." if c.count > 4 else ""
            lines.append(f"  {c.name}: {c.count} value(s) in {c.blocks.size} block(s) changed: {shown}{more}")
        lines += [f"  {s}" for s in self.structural]
        return "\n".join(lines)


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
        ua = uint_view(a)
        if a.dtype != b.dtype or a.size != b.size:
            structural.append(f"tensor '{name}' changed from {a.dtype}{list(a.shape)} to {b.dtype}{list(b.shape)}")
            idx = np.arange(a.size, dtype=np.int64)
            changes.append(TensorChange(name, a.size, ua.dtype.itemsize * 8, idx, np.zeros(a.size, np.uint64)))
            continue
        if a.shape != b.shape:
            structural.append(f"tensor '{name}' reshaped from {list(a.shape)} to {list(b.shape)}")
        ub = uint_view(b)
        idx = np.flatnonzero(ua != ub).astype(np.int64)
        xor = (ua[idx] ^ ub[idx]).astype(np.uint64)
        changes.append(TensorChange(name, a.size, ua.dtype.itemsize * 8, idx, xor))
    structural += [f"tensor '{n}' added" for n in after if n not in before]
    return tuple(changes), tuple(structural)


def metadata_diff(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[str, ...]:
    """Keys edited, added or removed."""
    keys = sorted(set(before) | set(after))
    return tuple(k for k in keys if before.get(k) != after.get(k))
