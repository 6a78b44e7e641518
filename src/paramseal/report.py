"""Reports returned by verify and recover, with their JSON form and CLI exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import NDArray

from .errors import TamperedError, UnrecoverableError

Status = Literal["intact", "tampered", "recovered", "unrecoverable"]


class Ints(Sequence[int]):
    """An immutable sequence of ints kept in one numpy array: 8 bytes an entry, not a tuple's ~40.

    A report can name millions of values (a replaced layer of an LLM); as tuples of Python ints
    that cost gigabytes. It behaves as a tuple of ints (iteration, indexing, ``len``, hashing,
    and equality with tuples and lists); ``.array`` is the read-only array itself.
    """

    __slots__ = ("_a",)

    def __init__(self, values: Iterable[int] | NDArray[np.integer] = ()) -> None:
        if isinstance(values, Ints):
            self._a: NDArray[np.integer] = values._a
            return
        if isinstance(values, np.ndarray):
            a = values
        else:
            vals = list(values)
            if not all(isinstance(v, (int, np.integer)) for v in vals):
                raise TypeError("Ints holds integers only")
            try:
                a = np.array(vals, dtype=np.int64)
            except OverflowError:  # XORs of 64-bit values reach 2**64 - 1
                a = np.array(vals, dtype=np.uint64)
        if not a.size:
            a = np.zeros(0, np.int64)
        if a.dtype.kind not in "iu":
            raise TypeError(f"Ints holds integers, not {a.dtype}")
        a = np.array(a.reshape(-1), dtype=np.uint64 if a.dtype == np.uint64 else np.int64)  # a copy of its own
        a.flags.writeable = False
        self._a = a

    @property
    def array(self) -> NDArray[np.integer]:
        """The values as a read-only array (int64, or uint64 for 64-bit unsigned input)."""
        return self._a

    def __len__(self) -> int:
        return int(self._a.size)

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> Ints: ...
    def __getitem__(self, i: int | slice) -> int | Ints:
        if isinstance(i, slice):
            return Ints(self._a[i])
        return int(self._a[i])

    def __iter__(self) -> Iterator[int]:
        for a in range(0, self._a.size, 1 << 16):  # Python ints a slice at a time, never all at once
            yield from self._a[a : a + (1 << 16)].tolist()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Ints):
            return bool(np.array_equal(self._a, other._a))
        if isinstance(other, (tuple, list)):
            return len(other) == len(self) and all(x == y for x, y in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash((len(self), self._a.tobytes()))

    def __repr__(self) -> str:
        return repr(tuple(self)) if len(self) <= 20 else f"Ints({len(self)} values: {tuple(self[:8])} ...)"

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> NDArray[Any]:
        return self._a if dtype is None else self._a.astype(dtype)


@dataclass(frozen=True, slots=True)
class TensorFinding:
    """What verify or recover found in one tensor (header name).

    The index fields are `Ints` (any sequence of ints given is turned into one).
    """

    name: str
    tampered_blocks: Ints = Ints()
    issues: tuple[str, ...] = ()
    restored_indices: Ints = Ints()
    restored_xor: Ints = Ints()  # per restored value: XOR of found and sealed bits
    unrecoverable_blocks: Ints = Ints()  # tampered blocks recover could not rebuild
    numel: int = 0

    def __post_init__(self) -> None:
        for f in ("tampered_blocks", "restored_indices", "restored_xor", "unrecoverable_blocks"):
            v = getattr(self, f)
            if not isinstance(v, Ints):
                object.__setattr__(self, f, Ints(v))

    @property
    def unrecoverable_ranges(self) -> list[tuple[int, int]]:
        """Flat ``[start, stop)`` index ranges of values not restored (whole blocks: which changed is unknown)."""
        out: list[tuple[int, int]] = []
        for b in self.unrecoverable_blocks:
            lo, hi = b * 64, min((b + 1) * 64, self.numel)
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], hi)
            elif hi > lo:
                out.append((lo, hi))
        return out

    @property
    def unrecoverable_count(self) -> int:
        """Number of values in ``unrecoverable_ranges``."""
        return sum(hi - lo for lo, hi in self.unrecoverable_ranges)

    @property
    def unrecoverable_indices(self) -> tuple[int, ...]:
        """Every flat index in ``unrecoverable_ranges`` (can be large: prefer the ranges)."""
        return tuple(i for lo, hi in self.unrecoverable_ranges for i in range(lo, hi))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        d: dict[str, Any] = {"tampered_blocks": self.tampered_blocks.array.tolist(), "issues": list(self.issues)}
        if self.restored_indices or self.unrecoverable_blocks:
            d["restored"] = {
                "indices": self.restored_indices.array.tolist(),
                "xor_bits": [f"0x{x:x}" for x in self.restored_xor],
                "bits_changed": [[b for b in range(64) if x >> b & 1] for x in self.restored_xor],
            }
            d["unrecoverable_ranges"] = [list(r) for r in self.unrecoverable_ranges]
            d["unrecoverable_count"] = self.unrecoverable_count
        return d


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of ``verify`` or ``recover``."""

    kind: Literal["verify", "recover"]
    status: Status
    recoverable: bool
    tensors: dict[str, TensorFinding] = field(default_factory=dict)
    extra_tensors: tuple[str, ...] = ()
    metadata_issues: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # facts worth knowing that are not tampering
    key_fingerprint: str = ""
    level: str = ""
    total_blocks: int = 0
    lanes_failed: int = 0
    checked_blocks: int | None = None  # partial verification (verify --tensors): the blocks checked

    @property
    def partial(self) -> bool:
        """Whether only some tensors were checked (verify --tensors)."""
        return self.checked_blocks is not None

    @property
    def ok(self) -> bool:
        """True for an intact model, or a fully recovered one."""
        return self.status in ("intact", "recovered")

    @property
    def tampered_tensors(self) -> list[str]:
        """Names (as sealed) of tensors with any finding."""
        return [n for n, f in self.tensors.items() if f.tampered_blocks or f.issues]

    @property
    def tampered_block_count(self) -> int:
        """Tampered blocks over all tensors."""
        return sum(len(f.tampered_blocks) for f in self.tensors.values())

    @property
    def restored_count(self) -> int:
        """Values restored by recover."""
        return sum(len(f.restored_indices) for f in self.tensors.values())

    @property
    def unrecoverable_count(self) -> int:
        """Values recover could not restore."""
        return sum(f.unrecoverable_count for f in self.tensors.values())

    @property
    def exit_code(self) -> int:
        """0 intact/recovered, 1 tampered but recoverable, 2 not fully recoverable."""
        if self.status in ("intact", "recovered"):
            return 0
        return 1 if self.status == "tampered" and self.recoverable else 2

    def raise_for_status(self) -> None:
        """Raise unless the model is whole (intact, or fully recovered): for callers that want exceptions.

        TamperedError (exit code 1) when the damage can be undone, UnrecoverableError (2) when not.
        """
        if self.ok:
            return
        lines = self.summary().splitlines()
        line = lines[0].strip() if lines else self.status
        if self.status == "tampered" and self.recoverable:
            raise TamperedError(f"the model was tampered with (recoverable: recover it): {line}", self)
        raise UnrecoverableError(f"the model was tampered with and cannot be fully recovered: {line}", self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the schema of ``--json``)."""
        return {
            "kind": self.kind,
            "status": self.status,
            "recoverable": self.recoverable,
            "tampered_tensors": self.tampered_tensors,
            "tampered_blocks": self.tampered_block_count,
            "total_blocks": self.total_blocks,
            "checked_blocks": self.total_blocks if self.checked_blocks is None else self.checked_blocks,
            "restored_parameters": self.restored_count,
            "unrecoverable_parameters": self.unrecoverable_count,
            "extra_tensors": list(self.extra_tensors),
            "metadata_issues": list(self.metadata_issues),
            "notes": list(self.notes),
            "key_fingerprint": self.key_fingerprint,
            "level": self.level,
            "tensors": {n: f.to_dict() for n, f in self.tensors.items() if f.tampered_blocks or f.issues},
        }

    def to_json(self) -> str:
        """``to_dict`` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        """Human-readable lines for the CLI."""
        lines = []
        for name in self.tampered_tensors:
            f = self.tensors[name]
            what = list(f.issues)
            if f.tampered_blocks:
                shown = ", ".join(map(str, f.tampered_blocks[:8])) + (" ..." if len(f.tampered_blocks) > 8 else "")
                what.append(f"{len(f.tampered_blocks)} tampered block(s): {shown}")
            if f.restored_indices:
                idx = ", ".join(
                    f"[{i}] bits {'/'.join(str(b) for b in range(64) if x >> b & 1)}"
                    for i, x in zip(f.restored_indices[:4], f.restored_xor[:4], strict=True)
                )
                more = " ..." if len(f.restored_indices) > 4 else ""
                what.append(f"restored {len(f.restored_indices)} value(s): {idx}{more}")
            if f.unrecoverable_blocks:
                what.append(
                    f"{f.unrecoverable_count} value(s) in {len(f.unrecoverable_blocks)} block(s) NOT recoverable"
                )
            lines.append(f"  {name}: " + "; ".join(what))
        lines += [f"  extra tensor not in the seal: {n}" for n in self.extra_tensors]
        lines += [f"  metadata: {m}" for m in self.metadata_issues]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


__all__ = ["Ints", "Report", "Status", "TensorFinding"]
