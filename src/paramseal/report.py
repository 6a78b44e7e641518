"""Reports returned by verify and recover, with their JSON form and CLI exit codes."""

from __future__ import annotations

import functools
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TextIO, overload

import numpy as np
from numpy.typing import NDArray

from ._lost_ranges import lost_ranges
from .errors import TamperedError, UnrecoverableError, UsageError, one_line

Status = Literal["intact", "tampered", "recovered", "unrecoverable"]
Moved = Literal["swapped", "renamed"]  # how a tensor's data came to be under another name


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
    moved_from: str | None = None  # the name this tensor's data was found under (swapped or renamed)
    moved_how: Moved | None = None  # set with ``moved_from``: "swapped" or "renamed"
    # Per block of ``unrecoverable_blocks``, the mask of its values left unknown (bit j: value j; irs4, whose
    # blocks can be partly decoded); None: every value of each (`_lost_ranges`).
    unrecoverable_masks: Ints | None = None

    def __post_init__(self) -> None:
        if (self.moved_from is None) != (self.moved_how is None):
            raise ValueError("moved_from and moved_how are given together or not at all")
        for f in ("tampered_blocks", "restored_indices", "restored_xor", "unrecoverable_blocks"):
            v = getattr(self, f)
            if not isinstance(v, Ints):
                object.__setattr__(self, f, Ints(v))
        if self.unrecoverable_masks is not None and not isinstance(self.unrecoverable_masks, Ints):
            object.__setattr__(self, "unrecoverable_masks", Ints(self.unrecoverable_masks))

    def _ranges(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """``unrecoverable_ranges`` as start and stop arrays: runs of consecutive values merged."""
        masks = None if self.unrecoverable_masks is None else self.unrecoverable_masks.array
        return lost_ranges(self.unrecoverable_blocks.array, masks, self.numel)

    @property
    def unrecoverable_ranges(self) -> list[tuple[int, int]]:
        """Flat ``[start, stop)`` index ranges of values not restored (whole blocks, or the masked values of each)."""
        lo, hi = self._ranges()
        return list(zip(lo.tolist(), hi.tolist(), strict=True))

    @property
    def unrecoverable_count(self) -> int:
        """Number of values in ``unrecoverable_ranges``."""
        lo, hi = self._ranges()
        return int((hi - lo).sum())

    @property
    def unrecoverable_indices(self) -> tuple[int, ...]:
        """Every flat index in ``unrecoverable_ranges`` (can be large: prefer the ranges)."""
        return tuple(i for lo, hi in self.unrecoverable_ranges for i in range(lo, hi))

    def to_dict(self, recover: bool = False) -> dict[str, Any]:
        """JSON-able form (the lists `Report.write_json` streams, here whole).

        ``recover``: a recover report's finding, which always has ``restored`` and the
        ``unrecoverable_*`` entries (empty for a tensor only renamed), so a script can read them.
        """
        return self._json_parts(lambda chunks: json.loads("[" + ", ".join(chunks) + "]"), recover)

    def _json_parts(self, put: Any, recover: bool = False) -> dict[str, Any]:
        """`to_dict` with each long list replaced by ``put(chunks)``: a placeholder the writer streams."""
        d: dict[str, Any] = {
            "tampered_blocks": put(_ints(self.tampered_blocks.array)),
            "issues": list(self.issues),
            "moved_how": self.moved_how,  # the name found under is in the top-level `moved`
        }
        if recover or self.restored_indices or self.unrecoverable_blocks:
            xor = self.restored_xor.array
            d["restored"] = {
                "indices": put(_ints(self.restored_indices.array)),
                "xor_bits": put(_chunked(xor, lambda c: ", ".join(f'"0x{x:x}"' for x in c.tolist()))),
                "bits_changed": put(_chunked(xor, _bit_lists)),
            }
            lo, hi = self._ranges()
            d["unrecoverable_ranges"] = put(
                _chunked(np.stack([lo, hi], 1), lambda c: ", ".join(f"[{a}, {b}]" for a, b in c.tolist()))
            )
            d["unrecoverable_count"] = int((hi - lo).sum())
        return d


_CHUNK = 1 << 16  # list entries formatted at a time: the JSON writer's memory stays bounded


def write_json_streamed(out: TextIO, build: Callable[[Any], Any], indent: int) -> None:
    """Write the JSON of ``build(put)`` to ``out``, where ``put(chunks)`` stands for a list written slice by slice.

    ``chunks`` yields the list's items as JSON text (``"1, 2"``); each list comes out on one line.
    """
    token = os.urandom(8).hex()  # no string in the document (tensor names are the user's) can be it
    streams: list[Iterable[str]] = []

    def put(chunks: Iterable[str]) -> str:
        streams.append(chunks)
        return f"{token}:{len(streams) - 1}"

    text = json.dumps(build(put), indent=indent)
    pos = 0
    for i, chunks in enumerate(streams):
        mark = f'"{token}:{i}"'
        at = text.index(mark, pos)
        out.write(text[pos:at])
        out.write("[")
        for n, part in enumerate(chunks):
            out.write(", " + part if n else part)
        out.write("]")
        pos = at + len(mark)
    out.write(text[pos:])


@functools.lru_cache(maxsize=8)
def _bits_of_byte(j: int) -> NDArray[np.object_]:
    """For each value v of byte j of an XOR: ``", b1, b2..."``, its set bit numbers."""
    table = np.empty(256, dtype=object)
    table[:] = ["".join(f", {8 * j + b}" for b in range(8) if v >> b & 1) for v in range(256)]
    return table


def _bit_lists(xor: NDArray[np.integer]) -> str:
    """``[0, 3], [17]...``: each XOR's set bit numbers, as the items of a JSON list (a table per byte)."""
    x = np.asarray(xor, dtype=np.uint64)
    joined = np.full(x.size, "", dtype=object)
    for j in range(8):
        part = ((x >> np.uint64(8 * j)) & np.uint64(0xFF)).astype(np.intp)
        if part.any():
            joined += _bits_of_byte(j)[part]
    return ", ".join(["[" + v[2:] + "]" for v in joined.tolist()])


def _chunked(a: NDArray[Any], fmt: Any) -> Iterator[str]:
    for i in range(0, len(a), _CHUNK):
        yield fmt(a[i : i + _CHUNK])


def _ints(a: NDArray[np.integer]) -> Iterator[str]:
    return _chunked(a, lambda c: ", ".join(map(str, c.tolist())))


def ints_json(a: NDArray[np.integer]) -> Iterator[str]:
    """``a`` as the items of a JSON list, a slice at a time (for `write_json_streamed`)."""
    return _ints(a)


def bit_lists_json(xor: NDArray[np.integer]) -> Iterator[str]:
    """Each XOR's set bit numbers (``[0, 3], [17]``) as the items of a JSON list, a slice at a time."""
    return _chunked(np.asarray(xor), _bit_lists)


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of ``verify`` or ``recover``."""

    kind: Literal["verify", "recover"]
    status: Status
    recoverable: bool
    tensors: dict[str, TensorFinding] = field(default_factory=dict)
    extra_tensors: tuple[str, ...] = ()
    # names of the report (of `tensors`, `extra_tensors`, `moved`) that are ParamSeal's, not the file's (an ONNX
    # initializer with no name, tensors of one graph that share a name: '', '#2', 'W#2') -> where the file has it
    tensor_places: dict[str, str] = field(default_factory=dict)
    metadata_issues: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # facts worth knowing that are not tampering
    key_fingerprint: str = ""
    level: str = ""
    total_blocks: int = 0
    lanes_failed: int = 0
    checked_blocks: int | None = None  # partial verification (verify --tensors): the blocks checked
    # a sharded folder's shards found under other file names (renamed or swapped): sealed shard name -> file
    moved_shards: dict[str, str] = field(default_factory=dict)
    # recover: whether its output was written; False (exit 2 without allow_partial): the restored values are
    # what it could restore, in no file (or module), and `summary` says so
    written: bool = True
    # the seal's id (32 hex digits, authenticated): a file's header salt, a sharded set's set id; another
    # seal of the same model under the same key (an older version put back) has another id
    seal_id: str = ""
    # recover: False where it decoded nothing (another seal than the one expected: `pinned`), whose
    # restored and unrecoverable counts are then no counts, as verify's are not (null in `to_dict`)
    decoded: bool = True

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
    def moved(self) -> dict[str, str]:
        """Sealed name -> the name its data was found under, for each tensor swapped or renamed."""
        return {n: f.moved_from for n, f in self.tensors.items() if f.moved_from is not None}

    def moved_by(self, how: Moved) -> dict[str, str]:
        """`moved`, only the tensors moved ``how``: "swapped" or "renamed"."""
        if how not in ("swapped", "renamed"):
            raise ValueError(f"moved_by takes 'swapped' or 'renamed', not {how!r}")
        return {n: f.moved_from for n, f in self.tensors.items() if f.moved_from is not None and f.moved_how == how}

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
            how = "paramseal.recover, paramseal.files.recover_file or paramseal.sharded.recover_dir restores it"
            raise TamperedError(f"the model was tampered with (recoverable: {how}): {line}", self)
        raise UnrecoverableError(f"the model was tampered with and cannot be fully recovered: {line}", self)

    @property
    def _counted(self) -> bool:
        """Whether values were decoded, so restored and unrecoverable counts mean something."""
        return self.kind == "recover" and self.decoded

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the schema of ``--json``)."""
        return self._to_dict(lambda f: f.to_dict(self.kind == "recover"))

    def _to_dict(self, finding: Any, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """`to_dict`, each tensor's entry made by ``finding(tensor_finding)``; ``extra`` follows ``recoverable``."""
        return {
            "kind": self.kind,
            "status": self.status,
            "recoverable": self.recoverable,
            **(extra or {}),
            "tampered_tensors": self.tampered_tensors,
            "tampered_blocks": self.tampered_block_count,
            "total_blocks": self.total_blocks,
            "checked_blocks": self.total_blocks if self.checked_blocks is None else self.checked_blocks,
            # verify decodes nothing, nor a recover the pin refused: null, not a 0 read as "nothing lost"
            "restored_parameters": self.restored_count if self._counted else None,
            "unrecoverable_parameters": self.unrecoverable_count if self._counted else None,
            "extra_tensors": list(self.extra_tensors),
            "moved": self.moved,
            "moved_shards": dict(self.moved_shards),
            "tensor_places": dict(self.tensor_places),
            "metadata_issues": list(self.metadata_issues),
            "notes": list(self.notes),
            "key_fingerprint": self.key_fingerprint,
            "seal_id": self.seal_id,
            "level": self.level,
            "tensors": {n: finding(f) for n, f in self.tensors.items() if f.tampered_blocks or f.issues},
        }

    def to_json(self) -> str:
        """``to_dict`` as indented JSON (each list on one line)."""
        out = io.StringIO()
        self.write_json(out)
        return out.getvalue()

    def write_json(self, out: TextIO, extra: Mapping[str, Any] | None = None) -> None:
        """Write `to_json`'s document to ``out`` as it is formatted, a slice of each long list at a time.

        A report can name tens of millions of values (a replaced layer of an LLM): formatting them
        all at once would take gigabytes. Memory stays bounded by ``_CHUNK`` entries. ``extra``:
        top-level entries the report cannot know, after ``recoverable`` (the CLI's ``written`` and
        ``output``: whether recover wrote OUT, which its exit code 2 leaves open).
        """
        recover = self.kind == "recover"
        write_json_streamed(out, lambda put: self._to_dict(lambda f: f._json_parts(put, recover), extra), indent=2)

    def summary(self) -> str:
        """Human-readable lines for the CLI.

        A recover report whose output was not ``written`` (exit 2 without ``--allow-partial``) calls its
        restored values restorable only.
        """
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
                n = f"{len(f.restored_indices)} value(s)"
                done = (
                    f"restored {n}" if self.written else f"could restore {n}, not written (--allow-partial writes them)"
                )
                what.append(f"{done}: {idx}{more}")
            if f.unrecoverable_blocks:
                what.append(
                    f"{f.unrecoverable_count} value(s) in {len(f.unrecoverable_blocks)} block(s) NOT recoverable"
                )
            lines.append(f"  {self.tensor_places.get(name, name)}: " + "; ".join(what))
        lines += [f"  extra tensor not in the seal: {self.tensor_places.get(n, n)}" for n in self.extra_tensors]
        lines += [f"  metadata: {m}" for m in self.metadata_issues]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(map(one_line, lines))  # a tensor name is the file's: its control characters escaped


SEAL_ID = re.compile(r"[0-9a-f]{32}")


@overload
def seal_id_arg(text: str) -> str: ...
@overload
def seal_id_arg(text: None) -> None: ...
def seal_id_arg(text: str | None) -> str | None:
    """A seal id as the user gives it (any case, spaces around): 32 hex digits, lower case; UsageError if not.

    None (no id expected) stays None. The entry points call it first, so a typo fails before any work.
    """
    if text is None:
        return None
    sid = text.strip().lower()
    if not SEAL_ID.fullmatch(sid):
        what = "hex digits" if re.fullmatch(r"[0-9a-f]*", sid) else "characters, not all hex digits"
        # not quoted: a key pasted in its place must not be printed
        raise UsageError(
            f"a seal id is the 32 hex digits that 'paramseal seal' printed after 'seal id'; the one given has "
            f"{len(sid)} {what} (verify --json gives a model's as seal_id)"
        )
    return sid


def pinned(rep: Report, expected: str | None) -> Report:
    """``rep`` judged against the seal id the user approved (None: as it is).

    A model sealed anew, or an older sealed version put back, verifies under its own seal;
    only the id tells it from the approved one. Such a model is tampering that recover cannot
    undo (the approved weights are not in it): not recoverable, and recover writes nothing.
    """
    if expected is None:
        return rep
    expected = seal_id_arg(expected)
    if rep.seal_id == expected:
        return rep
    # the expected id is not quoted: the caller has it, and one who passed a key's half by mistake must not see it
    carries = (
        f"carries seal {rep.seal_id}"
        if rep.seal_id
        else "carries no one seal (shards of several, or one whose set record nothing vouches for)"
    )
    issue = (
        f"the model {carries}, not the one expected: another seal of it under this key (an older version put "
        "back, or the model sealed again), which recover cannot turn into the expected one"
    )
    return replace(
        rep,
        status="tampered" if rep.kind == "verify" else "unrecoverable",
        recoverable=False,
        metadata_issues=(issue, *rep.metadata_issues),
        written=rep.written and rep.kind == "verify",
    )


__all__ = [
    "SEAL_ID",
    "Ints",
    "Moved",
    "Report",
    "Status",
    "TensorFinding",
    "bit_lists_json",
    "ints_json",
    "pinned",
    "seal_id_arg",
    "write_json_streamed",
]
