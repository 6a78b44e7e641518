"""safetensors files, read and written with the safetensors library (numpy backend).

The header is validated here first (size, JSON, dtypes, offsets in range,
back to back with no overlap or gap, covering the data) because a malformed file
must fail clearly before anything runs, whatever the installed library checks (0.8
refuses overlapping offsets; older versions read them), and ParamSeal also reads
files through its own mapping.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from safetensors import SafetensorError, safe_open

from .. import _json
from .._pages import Mapping, copy_range, file_span
from ..errors import FormatError, InputError
from ..levels import NIBBLE, ST_TO_NP, ST_UNSEALED, dtype_name
from .base import Loaded, pack4, shape_error, stored_size, unpack4

_MAX_HEADER = 100_000_000  # the safetensors library refuses longer headers
_READ = {**ST_TO_NP, **ST_UNSEALED}  # seal refuses the latter itself; verify reports a sealed tensor retyped so


def _dtype_name(dt: np.dtype[np.generic]) -> str:
    """The file's name of ``dt``: one seal refuses is written as read (an attack drill on a retyped model)."""
    return next((k for k, v in ST_UNSEALED.items() if v == dt), None) or dtype_name(dt)


class SafetensorsAdapter:
    """Adapter for ``.safetensors`` files."""

    name = "safetensors"
    extensions: tuple[str, ...] = (".safetensors", ".st")
    keeps_metadata = True
    carried_metadata: frozenset[str] = frozenset()

    def sniff(self, head: bytes) -> bool:
        """A little-endian header length followed by a JSON object."""
        if len(head) < 9:
            return False
        n = struct.unpack("<Q", head[:8])[0]
        return 2 <= n <= _MAX_HEADER and head[8:9] == b"{"

    def read(self, path: Path) -> Loaded:
        """Validate the header, then load every tensor in file order."""
        lay = read_layout(path)
        try:
            with safe_open(str(path), framework="numpy") as f:
                tensors = {
                    e.name: _contiguous(f.get_tensor(e.name)) if e.dtype in ST_TO_NP else _raw(path, lay, e)
                    for e in lay.entries
                }
        except (SafetensorError, OSError, ValueError, TypeError) as e:
            raise FormatError(f"cannot read safetensors file '{path}': {e}") from None
        return Loaded(tensors, lay.metadata)

    def write(self, path: Path, loaded: Loaded) -> None:
        """Write widest dtypes first, then by name (each tensor aligned), with the metadata sorted.

        The library keeps metadata in a hash map, whose order changes from run to run: the same
        model would give other bytes each time (a seeded attack, a conversion, a checksum kept).
        """
        arrays = {k: _contiguous(_little(v)) for k, v in loaded.tensors.items()}
        for n, a in arrays.items():
            if a.dtype in NIBBLE and a.size % 2:
                raise FormatError(
                    f"cannot write tensor '{n}' to safetensors: it holds {a.size} 4-bit values, an odd number, and "
                    "safetensors packs them two a byte; write it to the format it was read from"
                )
        order = sorted(arrays, key=lambda n: (-arrays[n].dtype.itemsize, n))
        entries = [(n, _dtype_name(arrays[n].dtype), tuple(arrays[n].shape)) for n in order]
        meta = dict(sorted(loaded.metadata.items()))
        w = StreamWriter(path, entries, exact_room(entries, meta))
        try:
            for n in order:
                w.array(n)[...] = pack4(arrays[n]) if arrays[n].dtype in NIBBLE else arrays[n]
            w.finish(meta)
        except BaseException:
            w.abort()
            raise


def _little(a: NDArray[np.generic]) -> NDArray[np.generic]:
    """Little-endian, as safetensors stores every dtype (a big-endian array is byte-swapped)."""
    return a.astype(a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a


def _contiguous(a: NDArray[np.generic]) -> NDArray[np.generic]:
    # np.ascontiguousarray would turn a 0-d tensor into shape (1,)
    return a if a.flags.c_contiguous else a.copy(order="C")


def _raw(path: Path, lay: Layout, e: Entry) -> NDArray[np.generic]:
    """A tensor in a dtype ParamSeal does not seal, read from its bytes (the library's numpy side lacks float8).

    F4 is unpacked, one value a byte (levels.NIBBLE).
    """
    dt = _READ[e.dtype]
    packed = dt in NIBBLE
    count = e.end - e.start if packed else (e.end - e.start) // dt.itemsize
    a: NDArray[np.generic] = np.fromfile(path, np.uint8 if packed else dt, count, offset=lay.data_start + e.start)
    if a.size != count:
        raise FormatError(f"'{path}' is truncated: tensor '{e.name}' ends past the end of the file")
    return unpack4(a, dt, e.shape) if packed else a.reshape(e.shape)


@dataclass(frozen=True, slots=True)
class Entry:
    """One tensor in a safetensors file: dtype name, shape and byte offsets in the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Layout:
    """A validated safetensors header: where the data section starts and every tensor in data order."""

    data_start: int
    entries: list[Entry]
    metadata: dict[str, str]


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _json_fault(e: json.JSONDecodeError, text: bytes) -> str:
    """What is wrong with the header's JSON ``text``, in words, at a byte offset (the parser counts characters)."""
    at = len(e.doc[: e.pos].encode())  # the doc is ``text`` decoded as UTF-8: it encodes back
    if at >= len(text):
        return "its JSON text ends early, at the end of the header"
    if e.msg.startswith("Unterminated string"):
        return f"a string in its JSON, from offset {at} of the header, is never closed"
    if e.msg == "Extra data":
        return f"bytes follow its JSON object, from offset {at} of the header"
    return f"it is not valid JSON at offset {at} of the header (byte 0x{text[at]:02x})"


def _parse_header_json(text: bytes, path: Path) -> dict[str, Any]:
    """The header as the safetensors library reads it: UTF-8 (no BOM), one JSON object, no key twice.

    Stricter in one way: the object must be the first byte (the library also skips leading
    spaces, which no writer puts there).

    Python's json would guess UTF-16/32, skip a BOM and keep the last of two equal keys, so a file
    the library refuses, or reads otherwise, could pass here.
    """
    try:
        if not text.startswith(b"{"):
            raise ValueError("the header is not a JSON object")
        header = _json.loads(text, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as e:  # its own text ("'utf-8' codec can't decode byte ...") is the codec's
        raise FormatError(
            f"'{path}' has a malformed safetensors header (it is not UTF-8 text: byte 0x{e.object[e.start]:02x} at "
            f"offset {e.start} of the header): the file is corrupt"
        ) from None
    except json.JSONDecodeError as e:  # its text ("Expecting ',' delimiter: line 1 column 62 (char 61)"): the parser's
        fault = _json_fault(e, text)
        raise FormatError(f"'{path}' has a malformed safetensors header ({fault}): the file is corrupt") from None
    except ValueError as e:  # ours: a duplicate key, no JSON object, nested too deep
        raise FormatError(f"'{path}' has a malformed safetensors header (invalid JSON: {e})") from None
    if not isinstance(header, dict):
        raise FormatError(f"'{path}' has a malformed safetensors header: not a JSON object")
    return header


def read_layout(path: Path) -> Layout:
    """Validate the header (size, JSON, dtypes, offsets in range, back to back with no gap, covering the data)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise FormatError(f"'{path}' is not a safetensors file: it is {size} bytes, too short for a header")
            n = struct.unpack("<Q", raw)[0]
            if n > _MAX_HEADER or 8 + n > size:  # n is not quoted: it is the file's first bytes (a key file's?)
                raise FormatError(
                    f"'{path}' is truncated or not safetensors: its header length field exceeds the file size "
                    f"({size} bytes)"
                )
            text = f.read(n)
    except OSError as e:  # a read that failed is not a malformed file (nor, in a shard, tampering)
        raise InputError(f"cannot read '{path}': {e.strerror}") from None
    header = _parse_header_json(text, path)
    meta_raw = header.pop("__metadata__", None)
    if meta_raw is None:  # the library reads null as no metadata (its Option), so a verified model may have it
        meta_raw = {}
    if not isinstance(meta_raw, dict) or not all(isinstance(v, str) for v in meta_raw.values()):
        raise FormatError(f"'{path}' has malformed __metadata__: it must map strings to strings")
    spans = []
    data_len = size - 8 - n
    for name, info in header.items():
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            if type(dtype) is not str:  # a list or object is no dtype (nor a key to look up)
                raise TypeError
            count = 1
            for d in shape:
                if type(d) is not int or d < 0:  # not bool: JSON true is not a dimension
                    raise ValueError
                count *= d
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"'{path}': tensor '{name}' has a malformed entry {info!r}") from None
        if dtype not in _READ:
            raise FormatError(
                f"'{path}': tensor '{name}' has dtype {dtype}, which ParamSeal does not support; "
                f"supported: {', '.join(sorted(ST_TO_NP))}"
            )
        if not (type(start) is int and type(end) is int and 0 <= start <= end <= data_len):
            raise FormatError(
                f"'{path}': tensor '{name}' has offsets [{start}, {end}] outside the {data_len}-byte data section "
                "(the file is truncated or corrupt)"
            )
        if _READ[dtype] in NIBBLE and count % 2:  # the library reads no tensor that ends inside a byte
            raise FormatError(
                f"'{path}': tensor '{name}' holds {count} values of dtype {dtype}, two a byte: an odd number, which "
                "the safetensors library refuses (the file is corrupt or edited)"
            )
        if end - start != stored_size(_READ[dtype], count):
            raise FormatError(
                f"'{path}': tensor '{name}' spans {end - start} bytes but dtype {dtype} and shape {shape} need "
                f"{stored_size(_READ[dtype], count)}"
            )
        if why := shape_error(tuple(shape), _READ[dtype]):
            raise FormatError(f"'{path}': tensor '{name}' has shape {shape}, which no array can have ({why})")
        spans.append((start, end, name, dtype, tuple(shape)))
    spans.sort()
    pos = 0
    for start, end, name, _, _ in spans:
        if start < pos:
            raise FormatError(f"'{path}': tensor '{name}' overlaps the tensor before it (offset {start} < {pos})")
        if start > pos:  # the library refuses the file: a verified model must be one it loads
            raise FormatError(
                f"'{path}': tensor '{name}' starts at offset {start}, leaving {start - pos} unused bytes after the "
                "tensor before it; the safetensors library refuses such a file (the file is corrupt or edited)"
            )
        pos = end
    if pos != data_len:
        raise FormatError(f"'{path}': the data section is {data_len} bytes but the tensors cover {pos}")
    entries = [Entry(name, dt, shape, a, b) for a, b, name, dt, shape in spans]
    return Layout(8 + n, entries, {str(k): v for k, v in meta_raw.items()})


def map_tensors(path: Path) -> tuple[Mapping, dict[str, NDArray[np.generic]], dict[str, str]]:
    """Map a safetensors file: lazy views of every tensor (no page read until used) and the metadata.

    Close the returned mapping when done; :func:`paramseal._pages.release` drops pages already read.
    """
    lay = read_layout(path)
    m = Mapping(path)
    tensors = {e.name: _view(m, lay.data_start + e.start, e) for e in lay.entries}
    return m, tensors, lay.metadata


def _view(m: Mapping, at: int, e: Entry) -> NDArray[np.generic]:
    """Tensor ``e`` of a mapped file: a view, or an unpacked copy of an F4 one (two values a byte)."""
    dt = _READ[e.dtype]
    if dt in NIBBLE:
        return unpack4(m.array(at, np.dtype(np.uint8), (e.end - e.start,)), dt, e.shape)
    return m.array(at, dt, e.shape)


class StreamWriter:
    """Writes a safetensors file whose tensors are filled in place, chunk by chunk, through a mapping.

    The header is written last (``finish``), into room reserved up front and padded with
    spaces, as the format allows; data offsets follow the given order. The safetensors
    library has no streaming writer, and a model larger than memory needs one.
    """

    def __init__(self, path: Path, entries: list[tuple[str, str, tuple[int, ...]]], room: int) -> None:
        self.room = -(-room // 8) * 8  # data starts 8-byte aligned, like the library's files
        self.entries, pos = _lay_out(entries)
        self._by_name = {e.name: e for e in self.entries}
        self.map = Mapping(path, write=True, size=8 + self.room + pos)

    def array(self, name: str) -> NDArray[np.generic]:
        """The writable view of tensor ``name`` (of an F4 one, its packed bytes: `pack4`)."""
        e = self._by_name[name]
        if _READ[e.dtype] in NIBBLE:
            return self.map.array(8 + self.room + e.start, np.dtype(np.uint8), (e.end - e.start,))
        return self.map.array(8 + self.room + e.start, _READ[e.dtype], e.shape)

    def copy_in(self, name: str, src: NDArray[np.generic]) -> bool:
        """Fill tensor ``name`` from ``src``, a view of a mapped file, by an in-kernel copy.

        Returns False (nothing usable copied) when ``src`` is not such a view or the kernel cannot copy.
        """
        e = self._by_name[name]
        where = file_span(src)
        if where is None or src.nbytes != e.end - e.start:
            return False
        return copy_range(where[0], where[1], self.map.fileno(), 8 + self.room + e.start, src.nbytes)

    def finish(self, metadata: dict[str, str]) -> None:
        """Write the header, flush and unmap."""
        head = header_json(self.entries, metadata)
        if len(head) > self.room:
            raise AssertionError(f"safetensors header of {len(head)} bytes exceeds the {self.room} reserved")
        buf = self.map.buf
        buf[:8] = np.frombuffer(struct.pack("<Q", self.room), np.uint8)
        buf[8 : 8 + self.room] = np.frombuffer(head.ljust(self.room, b" "), np.uint8)
        self.map.flush()
        self.map.close()

    def abort(self) -> None:
        """Unmap without finishing (the caller deletes the file)."""
        self.map.close()


def exact_room(entries: list[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str]) -> int:
    """The header's length for these tensors, laid out in this order, and metadata (no padding but to 8 bytes)."""
    return len(header_json(_lay_out(entries)[0], metadata))


def _lay_out(entries: list[tuple[str, str, tuple[int, ...]]]) -> tuple[list[Entry], int]:
    """The tensors one after another in this order, and the data section's length."""
    laid, pos = [], 0
    for name, dt, shape in entries:
        n = stored_size(_READ[dt], int(np.prod(shape, dtype=np.int64)))
        laid.append(Entry(name, dt, tuple(shape), pos, pos + n))
        pos += n
    return laid, pos


def max_header() -> int:
    """The longest header the safetensors library (and `read_layout`) reads: seal never writes a longer one."""
    return _MAX_HEADER


def header_room(entries: list[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str]) -> int:
    """An upper bound on the header's length for these tensors and metadata (offsets at their widest)."""
    wide = [Entry(n, dt, sh, 1 << 62, 1 << 62) for n, dt, sh in entries]
    return len(header_json(wide, metadata))


def header_json(entries: list[Entry], metadata: dict[str, str]) -> bytes:
    """The safetensors header for ``entries`` and ``metadata``."""
    head: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    for e in entries:
        head[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [e.start, e.end]}
    return json.dumps(head, separators=(",", ":")).encode()
