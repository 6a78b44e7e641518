"""Reading an ONNX model's tensors: the dtype tables, every tensor proto at any subgraph depth, its name and values.

Kept apart from `onnx_format` (the adapter, and the graphs it remembers) and `_onnx_write` (which fills the
protos found here with new values) because both read and write walk the model the same way. What is covered
and how tensors are named is told in `onnx_format`'s docstring.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

from ..errors import FormatError, MissingDependencyError
from ..levels import NIBBLE
from .base import shape_error, stored_size, unpack4

# TensorProto.DataType -> numpy dtype, for the dtypes the engine seals.
_DTYPES: dict[int, np.dtype[np.generic]] = {
    1: np.dtype(np.float32),
    2: np.dtype(np.uint8),
    3: np.dtype(np.int8),
    4: np.dtype(np.uint16),
    5: np.dtype(np.int16),
    6: np.dtype(np.int32),
    7: np.dtype(np.int64),
    9: np.dtype(np.bool_),
    10: np.dtype(np.float16),
    11: np.dtype(np.float64),
    12: np.dtype(np.uint32),
    13: np.dtype(np.uint64),
    16: np.dtype(ml_dtypes.bfloat16),
}
# Read but never sealed (as levels.ST_UNSEALED): a sealed tensor retyped to one is tampering to report, not a
# file to refuse; seal refuses them itself. complex64/128, float8 e4m3fn / e4m3fnuz / e5m2 / e5m2fnuz / e8m0, and
# uint4 / int4 / float4 e2m1, stored two a byte and held one a byte (levels.NIBBLE).
_UNSEALED: dict[int, np.dtype[np.generic]] = {
    14: np.dtype(np.complex64),
    15: np.dtype(np.complex128),
    17: np.dtype(ml_dtypes.float8_e4m3fn),
    18: np.dtype(ml_dtypes.float8_e4m3fnuz),
    19: np.dtype(ml_dtypes.float8_e5m2),
    20: np.dtype(ml_dtypes.float8_e5m2fnuz),
    21: np.dtype(ml_dtypes.uint4),
    22: np.dtype(ml_dtypes.int4),
    23: np.dtype(ml_dtypes.float4_e2m1fn),
    24: np.dtype(ml_dtypes.float8_e8m0fnu),
}
_READ = {**_DTYPES, **_UNSEALED}
ONNX_OF: dict[np.dtype[np.generic], int] = {v: k for k, v in _READ.items()}
# Where a tensor keeps its values when it does not use raw_data (onnx.proto3 comments).
TYPED_FIELD: dict[int, str] = {
    1: "float_data",
    11: "double_data",
    7: "int64_data",
    12: "uint64_data",
    13: "uint64_data",
    14: "float_data",  # real and imaginary parts, one after the other
    15: "double_data",  # as 14
    **{t: "int32_data" for t in (2, 3, 4, 5, 6, 9, 10, 16, 17, 18, 19, 20, 21, 22, 23, 24)},  # 21-23: a byte each
}
_FIELD_DTYPE = {"float_data": np.float32, "double_data": np.float64, "int64_data": np.int64, "uint64_data": np.uint64}
ALL_TYPED = ("float_data", "double_data", "int32_data", "int64_data", "uint64_data", "string_data")
EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_ATTR_TENSOR, _ATTR_GRAPH, _ATTR_SPARSE, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSES = 4, 5, 11, 9, 10, 12


def import_onnx() -> ModuleType:
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError("reading and writing ONNX models", "onnx") from None
    return onnx


@dataclass(frozen=True, slots=True)
class _Slot:
    """One tensor of the model: its base name, subgraph path and the (mutable) proto holding it."""

    base: str
    path: tuple[str, ...]
    proto: Any  # onnx.TensorProto
    where: str  # for messages
    initializer: bool = False  # a graph's initializer (bound by its name), not a node attribute's value


# the external-data files read: file -> (start, end, which tensor) of each tensor's bytes
Ranges = dict[Path, list[tuple[int, int, str]]]


def parse_model(onnx: ModuleType, path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise FormatError(f"cannot read '{path}': {e.strerror}") from None
    if not raw:
        raise FormatError(f"'{path}' is not an ONNX model: the file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(raw)
    except Exception:  # protobuf's DecodeError and friends, by implementation: their text names its C++ types
        raise FormatError(
            f"'{path}' is not a valid ONNX model: its bytes do not parse as one (truncated, corrupt or another "
            "format); give a file of another format its own extension"
        ) from None
    # A protobuf cut at a field boundary still parses: require what every model has.
    if model.ir_version <= 0 or not model.HasField("graph") or not len(model.opset_import):
        raise FormatError(
            f"'{path}' is not a complete ONNX model (ir_version, graph or opset_import is missing); "
            "the file is truncated or not ONNX"
        )
    return model


def tensor_slots(model: Any) -> list[_Slot]:
    """Every tensor in file order: a graph's initializers, then its nodes and their subgraphs."""
    out: list[_Slot] = []
    _walk_graph(model.graph, (), out)
    for f in model.functions:
        _walk_nodes(f.node, (f"function {f.domain}:{f.name}",), out)
    for i, ti in enumerate(model.training_info):
        for part in ("initialization", "algorithm"):
            if ti.HasField(part):
                _walk_graph(getattr(ti, part), (f"training_info[{i}]:{part}",), out)
    return out


def _walk_graph(g: Any, path: tuple[str, ...], out: list[_Slot]) -> None:
    if len(g.sparse_initializer):
        raise FormatError(
            f"sparse initializer '{g.sparse_initializer[0].values.name}' in {_place(path)}: "
            "ParamSeal does not support sparse tensors yet"
        )
    for t in g.initializer:
        out.append(_Slot(t.name, path, t, f"initializer '{t.name}' in {_place(path)}", initializer=True))
    _walk_nodes(g.node, path, out)


def _walk_nodes(nodes: Any, path: tuple[str, ...], out: list[_Slot]) -> None:
    for i, n in enumerate(nodes):
        label = n.name or f"{n.op_type}#{i}"
        first = n.output[0] if len(n.output) else label
        for a in n.attribute:
            base = first if (n.op_type == "Constant" and a.name == "value") else f"{first}:{a.name}"
            where = f"attribute '{a.name}' of {n.op_type} node '{label}' in {_place(path)}"
            if a.type == _ATTR_TENSOR:
                out.append(_Slot(base, path, a.t, where))
            elif a.type == _ATTR_TENSORS:
                out.extend(_Slot(f"{base}[{j}]", path, t, where) for j, t in enumerate(a.tensors))
            elif a.type in (_ATTR_SPARSE, _ATTR_SPARSES):
                raise FormatError(f"{where} is a sparse tensor: ParamSeal does not support sparse tensors yet")
            elif a.type == _ATTR_GRAPH:
                _walk_graph(a.g, (*path, f"{label}:{a.name}"), out)
            elif a.type == _ATTR_GRAPHS:
                for j, g in enumerate(a.graphs):
                    _walk_graph(g, (*path, f"{label}:{a.name}[{j}]"), out)


def _place(path: tuple[str, ...]) -> str:
    return "the main graph" if not path else f"subgraph {'/'.join(path)}"


def _plain_names(slots: list[_Slot]) -> list[str]:
    """The base name, prefixed by the subgraph path only where it clashes; not yet unique (`tensor_names`)."""
    count: dict[str, int] = {}
    for s in slots:
        count[s.base] = count.get(s.base, 0) + 1
    return [s.base if count[s.base] == 1 or not s.path else "/".join(s.path) + "/" + s.base for s in slots]


def tensor_names(slots: list[_Slot]) -> list[str]:
    """Unique, stable names: `_plain_names`, a clash within one graph told apart by a suffix ('#2', '#3')."""
    seen: set[str] = set()
    names = []
    for name in _plain_names(slots):
        unique, n = name, 1
        while unique in seen:
            n += 1
            unique = f"{name}#{n}"
        seen.add(unique)
        names.append(unique)
    return names


def shown_names(slots: list[_Slot]) -> dict[str, str]:
    """How the user finds the tensors whose names the file does not tell apart, by their `tensor_names`.

    An initializer with no name, and tensors of one graph that share a name: ParamSeal's own names for them
    ('', '#2', 'W#2') mean nothing to a reader of the model. Those are said as what and where they are.
    """
    plain = _plain_names(slots)
    groups: dict[str, list[_Slot]] = {}
    for name, slot in zip(plain, slots, strict=True):
        groups.setdefault(name, []).append(slot)
    out: dict[str, str] = {}
    for name, slot, shared in zip(tensor_names(slots), slots, (groups[n] for n in plain), strict=True):
        if slot.base and len(shared) == 1:
            continue  # its name is the file's
        place = _place(slot.path)
        if all(s.initializer and s.base == slot.base for s in shared):
            what = f"named '{slot.base}'" if slot.base else "with no name"
            nth = next(i for i, s in enumerate(shared, 1) if s is slot)
            out[name] = (
                f"an initializer {what} in {place}"
                if len(shared) == 1
                else f"the {_ordinal(nth)} of {len(shared)} initializers {what} in {place}"
            )
        else:  # a node's value among them, or a name ParamSeal makes up: where the file keeps it
            out[name] = slot.where + (f" (one of {len(shared)} tensors of that name there)" if len(shared) > 1 else "")
    return out


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def proto_dtype(proto: Any, where: str) -> np.dtype[np.generic]:
    dt = _READ.get(proto.data_type)
    if dt is None:
        raise FormatError(
            f"{where} has ONNX data type {proto.data_type}, which ParamSeal does not support; supported: "
            "float, float16, bfloat16, double, (u)int8/16/32/64 and bool"
        )
    return dt


def to_array(slot: _Slot, base: Path, path: Path, inputs: Ranges, issues: list[str]) -> NDArray[np.generic]:
    t, where = slot.proto, f"'{path}': {slot.where}"
    dt = proto_dtype(t, where)
    shape = tuple(int(d) for d in t.dims)
    if any(d < 0 for d in shape):
        raise FormatError(f"{where} has a negative dimension {list(shape)}")
    if why := shape_error(shape, dt):
        raise FormatError(f"{where} has shape {list(shape)}, which no array can have ({why})")
    n = math.prod(shape)
    if t.HasField("segment"):
        raise FormatError(f"{where} is a segmented tensor, which ParamSeal does not support")
    le, size = dt.newbyteorder("<"), stored_size(dt, n)
    if t.data_location == EXTERNAL:
        raw = _read_external(t, base, size, where, inputs, slot.where)
        return unpack4(raw, dt, shape) if dt in NIBBLE else np.frombuffer(raw, le).astype(dt).reshape(shape)
    if t.HasField("raw_data"):
        if len(t.raw_data) != size:
            raise FormatError(
                f"{where} holds {len(t.raw_data)} bytes but {dt} with shape {list(shape)} needs "
                f"{size} (the file is truncated or corrupt)"
            )
        if dt in NIBBLE:
            return unpack4(t.raw_data, dt, shape)
        return np.frombuffer(t.raw_data, le).astype(dt).reshape(shape)
    field = TYPED_FIELD[t.data_type]
    vals = getattr(t, field)
    per = 2 if dt.kind == "c" else 1  # a complex value is two floats
    want = size if dt in NIBBLE else n * per  # 4-bit: one packed byte (two values) each
    if len(vals) != want:
        raise FormatError(f"{where} has {len(vals)} values in {field} but shape {list(shape)} needs {want}")
    wide = np.array(vals, np.int64 if field == "int32_data" else _FIELD_DTYPE[field])
    if per == 2:
        return wide.view(dt).reshape(shape)
    lim = _typed_range(dt, field)
    # no writer stores these, and the value read depends on the loader: one that keeps the low bits (as
    # here) reads the sealed values, while ONNX Runtime refuses float16/bfloat16 ones ('data overflow')
    if lim is not None and (bad := int(((wide < lim[0]) | (wide > lim[1])).sum())):
        issues.append(
            f"{slot.where}: {bad} value(s) in {field} lie outside [{lim[0]}, {lim[1]}], the range of {dt}"
            f"{' bit patterns' if dt.kind not in 'biu' else ''}, which "
            "ONNX loaders truncate or refuse (ONNX Runtime: 'data overflow'); recover writes them in range"
        )
    if dt in NIBBLE:
        return unpack4((wide & 0xFF).astype(np.uint8), dt, shape)
    if field == "int32_data" and dt.kind not in "biu":  # float16/bfloat16/float8: bit patterns
        a = (wide & ((1 << 8 * dt.itemsize) - 1)).astype(f"<u{dt.itemsize}").view(dt)
    else:
        a = wide.astype(dt)
    return a.reshape(shape)


def _typed_range(dt: np.dtype[np.generic], field: str) -> tuple[int, int] | None:
    """The values a typed field may hold for ``dt`` when it is wider than ``dt`` (None: any value)."""
    if dt == np.bool_:
        return 0, 1
    if dt.kind not in "iu":  # float16/bfloat16/float8 bit patterns in int32_data; float/double fields are exact
        return (0, (1 << 8 * dt.itemsize) - 1) if field == "int32_data" else None
    info = np.iinfo(dt)  # type: ignore[type-var]
    wide = np.iinfo(np.int32 if field == "int32_data" else _FIELD_DTYPE[field])  # type: ignore[type-var]
    return None if (info.min, info.max) == (wide.min, wide.max) else (int(info.min), int(info.max))


def external_info(t: Any, where: str) -> tuple[str, int, int | None]:
    info = {e.key: e.value for e in t.external_data}
    if not all(isinstance(v, str) for v in [*info, *info.values()]):  # protobuf gives bytes for non-UTF-8 text
        raise FormatError(f"{where} has malformed external_data (text that is not UTF-8): {info}")
    loc = info.get("location")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise FormatError(f"{where} has a malformed external_data offset or length: {info}") from None
    if not loc or "\0" in loc or offset < 0:  # no file name holds a NUL byte
        raise FormatError(f"{where} has malformed external_data (location and offset): {info}")
    return loc, offset, length


def _read_external(t: Any, base: Path, nbytes: int, where: str, inputs: Ranges, what: str) -> bytes:
    loc, offset, length = external_info(t, where)
    try:
        file = (base / loc).resolve()
    except (OSError, RuntimeError):  # a loop of links: RuntimeError before Python 3.13
        raise FormatError(f"{where}: cannot read its external data '{loc}': it is a loop of symbolic links") from None
    if Path(loc).is_absolute() or not file.is_relative_to(base.resolve()):
        if not Path(loc).is_absolute() and ".." not in Path(loc).parts:  # the name is inside: a link leads out
            raise FormatError(
                f"{where}: its external data '{loc}' is a symbolic link to '{file}', outside the model's folder "
                "(as in the Hugging Face cache); refusing to follow a link out of the folder: copy the model and "
                "its data into one folder (cp -L) and use the copy"
            )
        raise FormatError(f"{where} refers to external data '{loc}' outside the model's folder; refusing to read it")
    if length is not None and length != nbytes:
        raise FormatError(f"{where} has external length {length} but its dtype and shape need {nbytes} bytes")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is then refused below)
        with open(os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise FormatError(f"{where}: its external data '{loc}' is not a regular file; refusing to read it")
            raw = b""  # a size the file cannot hold is reported below, not allocated: the dims are the file's to claim
            if offset + nbytes <= st.st_size:
                f.seek(offset)
                raw = f.read(nbytes)
    except OSError as e:
        raise FormatError(f"{where}: cannot read its external data '{loc}': {e.strerror}") from None
    if len(raw) != nbytes:
        raise FormatError(
            f"{where}: external data file '{loc}' ends before byte {offset + nbytes} (the file is truncated)"
        )
    inputs.setdefault(file, []).append((offset, offset + nbytes, what))
    return raw


def refuse_shared(path: Path, inputs: Ranges) -> None:
    """Tensors whose external bytes overlap (deduplicated data) would each be sealed, then one overwritten."""
    for file, ranges in inputs.items():
        live = sorted(r for r in ranges if r[1] > r[0])
        for (_, end, a), (start, _, b) in zip(live, live[1:], strict=False):
            if start < end:
                raise FormatError(
                    f"'{path}': {a} and {b} share bytes of external data file '{file.name}' (from byte {start}); "
                    "ParamSeal seals every tensor apart and cannot write both into the same bytes: save the "
                    "model with a copy of the data for each (onnx.load, then onnx.save_model) and seal that"
                )


def strip_payload(t: Any) -> None:
    """Drop a tensor's payload but keep how it is stored (an empty raw_data stays present)."""
    if t.data_location == EXTERNAL:
        return
    if t.HasField("raw_data"):
        t.raw_data = b""
        return
    for f in ALL_TYPED:
        t.ClearField(f)
