"""ONNX models (``.onnx``): initializers, Constant nodes at any subgraph depth, external data.

What is covered. Every dense ``TensorProto`` in the model: graph initializers,
tensor-valued node attributes (the ``value`` of a ``Constant`` node, and of
``ConstantOfShape``), in the main graph, in every ``If``/``Loop``/``Scan``
subgraph at any depth, in model-local functions and in training-info graphs;
inline (``raw_data`` or typed fields) or in external-data files. Sparse
and string tensors are refused with a FormatError rather than
left unprotected, and so are tensors whose external bytes overlap (each is
sealed apart: writing one would overwrite the other's seal). complex,
8-bit-float and 4-bit (uint4, int4, float4: unpacked, one value a byte) tensors
are read, for verify to report a sealed tensor saved again so as tampered, and
written back as read (packed); seal refuses them itself.

Tensor names (stable: they depend only on the graph, which sealing never
changes):

* an initializer is named by its own name;
* a ``Constant`` node's ``value`` by the node's output name;
* any other tensor attribute by ``<output>:<attribute>`` (e.g. ``x:value`` for a
  ``ConstantOfShape`` producing ``x``);
* only when that name occurs more than once in the model (sibling subgraphs may
  reuse names) is it prefixed by its subgraph path, one ``<node>:<attribute>/``
  per level (``If_0:then_branch/w``; a nameless node is ``<op>#<index>``),
  and ``#2``, ``#3``... is appended if it still clashes.

Writing changes tensor values only: the same nodes, inputs, outputs, opsets,
attributes, tensor dtypes and storage form (``raw_data``, typed fields or
external data). ParamSeal's metadata goes into ``metadata_props``, and nothing
else is added.

ONNX cannot be written from tensors alone: the graph is needed. ``read`` returns
the graph (tensor payloads removed) as ``Loaded.source``, and ``files`` passes it
on to ``write``, which fills it with the new values. For a ``Loaded`` built by
hand, ``write`` looks for the graph among the last few models read in this
process with exactly these tensor names. Tensors that match no graph read are written as a
graph-less ONNX file of initializers (a plain container that ONNX runtimes cannot
run), unless they share more than half of their names with a graph read: those are
that graph's tensors with some renamed, added or dropped, and writing them is
refused. A sealed model is never written graph-less (``seal m.safetensors m.onnx``
is refused): a sealed file is meant to be deployed, and that one could not be.

External data stays external, with the same tensors in the same order at the
same offsets (a tensor written with another byte length than read, as recover
restores one saved again as complex or float8, no longer fits its slot: it goes
after the rest of its file; one saved again in a dtype of the same width, such as
float16 as bfloat16, goes back into its slot), in side files named after the
output (``OUT.data``, or ``OUT.1.data``... when the source had several). A name some file already has is
not reused: the side files then get a fresh name (``OUT.<8 hex digits>.data``), so
that the old model and its data stay a matching pair until the new model takes the
output's name, and another model's data in the same folder is never overwritten. ``write`` therefore
renames the model into place itself (``_paths.atomic_path`` then replaces it with
the same bytes) and only afterwards removes the side files of the replaced
model that carry ParamSeal's names for this output, unless another ``.onnx`` file in
the folder names them (a copy of the model file shares its data): those are kept, with
a warning. A failure before that rename removes the new side files and leaves the old pair as it was; a side file of the
input is never overwritten, and is removed only when the input itself was
replaced (in place).
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import re
import secrets
import stat
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

from .._embed import header_copies
from .._tempname import cut_name, final_name, name_max, temp_prefix
from ..errors import FormatError, MissingDependencyError, ParamSealError, ParamSealWarning, UsageError, cannot_write
from ..header import METADATA_KEY
from ..levels import NIBBLE, ST_TO_NP
from .base import Loaded, new_mode, pack4, shape_error, stored_size, unpack4

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
_ONNX_OF: dict[np.dtype[np.generic], int] = {v: k for k, v in _READ.items()}
# Where a tensor keeps its values when it does not use raw_data (onnx.proto3 comments).
_TYPED_FIELD: dict[int, str] = {
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
_ALL_TYPED = ("float_data", "double_data", "int32_data", "int64_data", "uint64_data", "string_data")
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_ALIGN = 4096  # where a tensor moved to the end of its external-data file starts (onnx's page alignment)
_ATTR_TENSOR, _ATTR_GRAPH, _ATTR_SPARSE, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSES = 4, 5, 11, 9, 10, 12
# ModelProto field tags that can follow ir_version (field 1) at the start of a file.
_SECOND_FIELDS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42}


def _onnx() -> ModuleType:
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


@dataclass(frozen=True, slots=True)
class _Template:
    """A model read in this process, tensor payloads removed, to write the graph back."""

    skeleton: bytes
    names: frozenset[str]
    inputs: frozenset[Path]  # external-data files of the source: never overwritten
    model: Path  # the source model file, resolved: writing over it is writing in place


class _Templates:
    """The graphs of recently read models, found again by their tensor names (the latest read wins)."""

    _KEEP = 8

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_names: OrderedDict[frozenset[str], _Template] = OrderedDict()

    def remember(self, t: _Template) -> None:
        with self._lock:
            self._by_names.pop(t.names, None)
            self._by_names[t.names] = t
            while len(self._by_names) > self._KEEP:
                self._by_names.popitem(last=False)

    def find(self, names: frozenset[str]) -> _Template | None:
        """The latest graph whose tensors are exactly ``names``; None if none shares most of them."""
        with self._lock:
            if names in self._by_names:
                return self._by_names[names]
            for other in reversed(self._by_names):
                # mostly the same names: the tensors of a graph read, renamed or cut; not a new model
                if 2 * len(other & names) > min(len(other), len(names)):
                    raise _mismatch(other, names)
        return None


def _mismatch(graph: frozenset[str], names: frozenset[str]) -> FormatError:
    missing, extra = sorted(graph - names), sorted(names - graph)
    return FormatError(
        "cannot write the ONNX model: its tensors do not match the graph read "
        f"(missing from the tensors: {_few(missing)}; not in the graph: {_few(extra)}); "
        "ParamSeal writes ONNX tensor values only and never adds or removes tensors"
    )


_TEMPLATES = _Templates()
# the external-data files read: file -> (start, end, which tensor) of each tensor's bytes
_Ranges = dict[Path, list[tuple[int, int, str]]]


class OnnxAdapter:
    """Adapter for ``.onnx`` files (needs ``pip install 'paramseal[onnx]'``)."""

    name = "onnx"
    extensions: tuple[str, ...] = (".onnx",)
    keeps_metadata = True  # metadata_props
    carried_metadata: frozenset[str] = frozenset()

    def sniff(self, head: bytes) -> bool:
        """A ModelProto: ``ir_version`` (field 1) first, then one of the fields that follow it."""
        return len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 0x7F and head[2] in _SECOND_FIELDS

    def read(self, path: Path) -> Loaded:
        """Parse the model, read every tensor (external data included) and ``metadata_props``."""
        onnx = _onnx()
        model = _parse(onnx, path)
        try:
            slots = _slots(model)
        except FormatError as e:
            raise FormatError(f"'{path}': {e}") from None
        names = _names(slots)
        base = path.parent
        tensors: dict[str, NDArray[np.generic]] = {}
        inputs: _Ranges = {}
        issues: list[str] = []
        for name, slot in zip(names, slots, strict=True):
            tensors[name] = _to_array(slot, base, path, inputs, issues)
            _strip(slot.proto)
        _refuse_shared(path, inputs)
        meta: dict[str, str] = {}
        for p in model.metadata_props:
            if p.key in meta:
                raise FormatError(f"'{path}': metadata_props has the key '{p.key}' twice")
            meta[p.key] = p.value
        template = _Template(model.SerializeToString(), frozenset(names), frozenset(inputs), path.resolve())
        _TEMPLATES.remember(template)
        graph = _graph_digest(onnx, template.skeleton)
        return Loaded(tensors, meta, source=template, container_issues=tuple(issues), graph=graph)

    def write(self, path: Path, loaded: Loaded) -> None:
        """Fill the graph read earlier with the new values (see the module docstring) and write it."""
        onnx = _onnx()
        src = loaded.source
        out = final_name(path)  # _paths.atomic_path writes to a temporary file and renames it
        try:
            template = src if isinstance(src, _Template) else _TEMPLATES.find(frozenset(loaded.tensors))
            if template is not None and template.names != frozenset(loaded.tensors):
                # e.g. a partial recover of a model whose initializer was renamed: the tensors carry the sealed names
                raise _mismatch(template.names, frozenset(loaded.tensors))
        except FormatError as e:
            raise FormatError(f"'{path.parent / out}': {e}") from None
        if template is None:
            _refuse_sealed_container(path.parent / out, loaded)
            model = _container(onnx, loaded)
        else:
            model = onnx.ModelProto()
            model.ParseFromString(template.skeleton)
        slots = _slots(model)
        plan = _SidePlan(path.parent, out)
        for name, slot in zip(_names(slots), slots, strict=True):
            _fill(slot.proto, np.asarray(loaded.tensors[name]), name, plan)
        del model.metadata_props[:]
        for k, v in loaded.metadata.items():
            model.metadata_props.add(key=k, value=v)
        plan.place_moved()
        if not plan.files:
            path.write_bytes(_serialize(model, out))
            return
        dst = path.parent / out
        inputs = template.inputs if template is not None else frozenset()
        in_place = template is not None and dst.resolve() == template.model
        old = _side_files(onnx, dst)
        plan.relocate()
        stale = plan.stale(old, inputs, in_place)
        shared = _named_by_others(stale, dst)
        plan.commit(_serialize(model, out), path, dst, [p for p in stale if p not in shared])
        for p, by in shared.items():
            warnings.warn(
                f"kept '{p.name}', which the replaced '{out}' used: {_few(by)} in the same folder may use it too "
                f"(the new '{out}' uses {_few(sorted(plan.names.values()))}); delete it once no model needs it",
                ParamSealWarning,
                stacklevel=2,
            )


# --------------------------------------------------------------------------- reading


def _parse(onnx: ModuleType, path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise FormatError(f"cannot read '{path}': {e.strerror}") from None
    if not raw:
        raise FormatError(f"'{path}' is not an ONNX model: the file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(raw)
    except Exception as e:  # protobuf's DecodeError and friends, by implementation
        raise FormatError(f"'{path}' is not a valid ONNX model (truncated or corrupt protobuf: {e})") from None
    # A protobuf cut at a field boundary still parses: require what every model has.
    if model.ir_version <= 0 or not model.HasField("graph") or not len(model.opset_import):
        raise FormatError(
            f"'{path}' is not a complete ONNX model (ir_version, graph or opset_import is missing); "
            "the file is truncated or not ONNX"
        )
    return model


def _slots(model: Any) -> list[_Slot]:
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
        out.append(_Slot(t.name, path, t, f"initializer '{t.name}' in {_place(path)}"))
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


def _names(slots: list[_Slot]) -> list[str]:
    """Unique, stable names: the base name, prefixed by the subgraph path only where it clashes."""
    count: dict[str, int] = {}
    for s in slots:
        count[s.base] = count.get(s.base, 0) + 1
    seen: set[str] = set()
    names = []
    for s in slots:
        name = s.base if count[s.base] == 1 or not s.path else "/".join(s.path) + "/" + s.base
        unique, n = name, 1
        while unique in seen:
            n += 1
            unique = f"{name}#{n}"
        seen.add(unique)
        names.append(unique)
    return names


def _dtype(proto: Any, where: str) -> np.dtype[np.generic]:
    dt = _READ.get(proto.data_type)
    if dt is None:
        raise FormatError(
            f"{where} has ONNX data type {proto.data_type}, which ParamSeal does not support; supported: "
            "float, float16, bfloat16, double, (u)int8/16/32/64 and bool"
        )
    return dt


def _to_array(slot: _Slot, base: Path, path: Path, inputs: _Ranges, issues: list[str]) -> NDArray[np.generic]:
    t, where = slot.proto, f"'{path}': {slot.where}"
    dt = _dtype(t, where)
    shape = tuple(int(d) for d in t.dims)
    if any(d < 0 for d in shape):
        raise FormatError(f"{where} has a negative dimension {list(shape)}")
    if why := shape_error(shape, dt):
        raise FormatError(f"{where} has shape {list(shape)}, which no array can have ({why})")
    n = math.prod(shape)
    if t.HasField("segment"):
        raise FormatError(f"{where} is a segmented tensor, which ParamSeal does not support")
    le, size = dt.newbyteorder("<"), stored_size(dt, n)
    if t.data_location == _EXTERNAL:
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
    field = _TYPED_FIELD[t.data_type]
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


def _external_info(t: Any, where: str) -> tuple[str, int, int | None]:
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


def _read_external(t: Any, base: Path, nbytes: int, where: str, inputs: _Ranges, what: str) -> bytes:
    loc, offset, length = _external_info(t, where)
    file = (base / loc).resolve()
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


def _refuse_shared(path: Path, inputs: _Ranges) -> None:
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


def _graph_digest(onnx: ModuleType, skeleton: bytes, dtypes: Mapping[str, str] | None = None) -> str:
    """SHA-256 of what the model runs besides its tensor values: what the seal adds to the values.

    Re-pointing a node at another initializer, or changing an operator or attribute, changes it.
    Not covered: how and where values are stored (raw or typed fields, external files), metadata,
    doc strings, the producer, and ``value_info`` (shape annotations that shape inference adds).
    ``dtypes`` (tensor name -> safetensors dtype name) puts those tensors' data types back first.
    """
    m = onnx.ModelProto()
    m.ParseFromString(skeleton)
    slots = _slots(m)
    for name, slot in zip(_names(slots), slots, strict=True):
        if dtypes and (dt := ST_TO_NP.get(dtypes.get(name, ""))) is not None and dt in _ONNX_OF:
            slot.proto.data_type = _ONNX_OF[dt]
    for slot in slots:
        for f in ("raw_data", "external_data", "data_location", *_ALL_TYPED):
            slot.proto.ClearField(f)
    for f in ("metadata_props", "doc_string", "producer_name", "producer_version"):
        m.ClearField(f)
    _strip_notes(m.graph)
    return hashlib.sha256(m.SerializeToString(deterministic=True)).hexdigest()


def graph_as_sealed(loaded: Loaded, dtypes: Mapping[str, str]) -> str | None:
    """The graph digest of the ONNX model read as ``loaded`` with its tensors' data types as sealed (``dtypes``).

    A tensor's data type is in the digest (seals before this kept it there), but the seal header holds
    each tensor's dtype too: a tensor saved again as another dtype is reported and restored as that
    tensor's tampering, not as an edited graph that recover cannot restore. None if not an ONNX model read.
    """
    if not isinstance(loaded.source, _Template):
        return None
    return _graph_digest(_onnx(), loaded.source.skeleton, dtypes)


def _strip_notes(g: Any) -> None:
    """Clear a graph's doc strings and value_info, in its subgraphs too."""
    g.ClearField("doc_string")
    g.ClearField("value_info")
    for node in g.node:
        node.ClearField("doc_string")
        for a in node.attribute:
            if a.HasField("g"):
                _strip_notes(a.g)
            for sub in a.graphs:
                _strip_notes(sub)


def _strip(t: Any) -> None:
    """Drop a tensor's payload but keep how it is stored (an empty raw_data stays present)."""
    if t.data_location == _EXTERNAL:
        return
    if t.HasField("raw_data"):
        t.raw_data = b""
        return
    for f in _ALL_TYPED:
        t.ClearField(f)


# --------------------------------------------------------------------------- writing


def _refuse_sealed_container(dst: Path, loaded: Loaded) -> None:
    if METADATA_KEY in loaded.metadata or header_copies(loaded.tensors):
        raise _graphless(dst)


def _graphless(dst: Path) -> UsageError:
    return UsageError(
        f"cannot write the sealed model to '{dst.name}': ONNX needs the model's graph, and these tensors come "
        "from no ONNX model (ParamSeal does not convert models); write it as .safetensors, .npz or .pt, "
        "or seal the original .onnx model"
    )


def require_graph(dst: Path, loaded: Loaded) -> None:
    """Raise UsageError, before any work, if a sealed model read as ``loaded`` cannot be written to ONNX ``dst``.

    Such a model comes from no ONNX model, so the writer would refuse it only after a whole recover, and
    an earlier refusal (about the metadata) would point the user at a remedy that cannot help.
    """
    if not isinstance(loaded.source, _Template) and _TEMPLATES.find(frozenset(loaded.tensors)) is None:
        raise _graphless(dst)


def _serialize(model: Any, out: str) -> bytes:
    try:
        data: bytes = model.SerializeToString()
    except ValueError as e:  # protobuf refuses messages over 2 GiB
        raise FormatError(
            f"cannot write '{out}': the ONNX model is too large to store inline ({e}); "
            "keep its weights in external data"
        ) from None
    return data


def _side_files(onnx: ModuleType, dst: Path) -> frozenset[Path] | None:
    """The external-data files the model at ``dst`` uses (empty if none is there; None if unreadable)."""
    if not dst.exists():
        return frozenset()
    try:
        slots = _slots(_parse(onnx, dst))
        locs = (_external_info(s.proto, s.where)[0] for s in slots if s.proto.data_location == _EXTERNAL)
        return frozenset((dst.parent / loc).resolve() for loc in locs)
    except FormatError:
        return None


def replaced_side_files(dst: Path, src: Path) -> list[Path]:
    """The side files of the model at ``dst`` that writing ``src``'s model there removes, and its user may not write.

    Checked before any work, as ``dst`` itself is (`_paths.never_read_only`): the new data goes to
    fresh names, but once the new model is in place the old data it named is deleted, and a
    read-only or another user's data file would go without a word (a folder's permission suffices).
    """
    if dst.is_symlink() or not dst.is_file():
        return []
    onnx = _onnx()
    old = _side_files(onnx, dst) or frozenset()
    ours = _ours(cut_name(dst.name, name_max(dst.parent) - len(f".{len(old)}.{'0' * 8}.data")))
    effective = os.access in os.supports_effective_ids
    kept = [
        p
        for p in old
        if p.parent == dst.parent.resolve()
        and ours.fullmatch(p.name)
        and p.is_file()
        and not os.access(p, os.W_OK, effective_ids=effective)
    ]
    # an input's data file stays (`_SidePlan.stale`); read the input only when one is in question
    inputs = (_side_files(onnx, src) or frozenset()) if kept else frozenset()
    return sorted(dst.parent / p.name for p in kept if p not in inputs)  # named as the user named the folder


def _named_by_others(files: list[Path], model: Path) -> dict[Path, list[str]]:
    """Of ``files``, those another ``.onnx`` file beside ``model`` may use: its bytes hold the name.

    Two models may share one data file (a copy of a model file), and a name alone does not tell whose
    it is. A location is a relative path under the model's folder, stored as a plain string; a file that
    cannot be read counts as using them all.
    """
    found: dict[Path, list[str]] = {}
    if not files:
        return found
    me = model.resolve()
    try:
        others = sorted(f for f in model.parent.iterdir() if f.suffix.lower() == ".onnx" and f.resolve() != me)
    except OSError:
        return {p: ["another model"] for p in files}
    for other in others:
        try:
            if not other.is_file() or not other.stat().st_size:  # mmap refuses a length of 0
                continue
            with open(other, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as raw:
                named = [p for p in files if _locates(raw, os.fsencode(p.name))]
        except OSError:
            named = files
        for p in named:
            found.setdefault(p, []).append(other.name)
    return found


def _locates(raw: mmap.mmap, name: bytes) -> bool:
    """Whether a model's bytes name the file ``name``: as a whole location, or after a folder in one.

    A location is a protobuf string, its length just before it: 'next.onnx.data' holds 'ext.onnx.data',
    which a plain search takes for a use.
    """
    n, size = len(name), b""
    while True:  # the varint of the length
        size += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            break
    i = raw.find(name)
    while i >= 0:
        if raw[max(0, i - len(size)) : i] == size or raw[i - 1 : i] in (b"/", b"\\"):
            return True
        i = raw.find(name, i + 1)
    return False


def _ours(stem: str) -> re.Pattern[str]:
    """The names `_SidePlan.relocate` gives side files of an output whose names start with ``stem``."""
    return re.compile(re.escape(stem) + r"(\.[0-9]+)?(\.[0-9a-f]{8})?\.data")


def _container(onnx: ModuleType, loaded: Loaded) -> Any:
    """A graph-less model of initializers, for tensors that come from no ONNX graph."""
    inits = []
    for name in loaded.tensors:
        t = onnx.TensorProto()
        t.name = name
        t.raw_data = b""
        inits.append(t)
    graph = onnx.helper.make_graph([], "paramseal", [], [], initializer=inits)
    return onnx.helper.make_model(graph, producer_name="paramseal")


def _fill(t: Any, a: NDArray[np.generic], name: str, plan: _SidePlan) -> None:
    if a.dtype not in _ONNX_OF:
        raise FormatError(f"cannot write tensor '{name}' to ONNX: dtype {a.dtype} has no ONNX equivalent here")
    external = t.data_location == _EXTERNAL
    # the length read at its offset (the slot), before the dtype and dims change
    read = stored_size(_dtype(t, f"tensor '{name}'"), math.prod(t.dims)) if external else 0
    t.data_type = _ONNX_OF[a.dtype]
    del t.dims[:]
    t.dims.extend(a.shape)
    flat = np.ascontiguousarray(a).reshape(-1)
    if external:
        plan.add(t, _stored(flat), name, read)
    elif t.HasField("raw_data") or flat.size == 0:
        t.raw_data = _stored(flat)
    else:
        field = _TYPED_FIELD[t.data_type]
        for f in _ALL_TYPED:
            t.ClearField(f)
        if a.dtype in NIBBLE:  # one packed byte (two values) in each int32
            vals = pack4(flat).astype(np.int32)
        elif a.dtype.kind == "c":  # real and imaginary parts in float_data (complex64) or double_data
            vals = flat.view(np.float32 if a.dtype == np.complex64 else np.float64)
        elif a.dtype.itemsize <= 2 and a.dtype.kind in "fV":  # float16 / bfloat16 / float8 bit patterns
            vals = flat.view(f"u{a.dtype.itemsize}").astype(np.int32)
        elif field == "int32_data":
            vals = flat.astype(np.int32)
        else:
            vals = flat
        getattr(t, field).extend(vals.tolist())


def _stored(flat: NDArray[np.generic]) -> bytes:
    """``flat``'s values as ONNX stores them: little-endian, and 4-bit ones two a byte."""
    return pack4(flat).tobytes() if flat.dtype in NIBBLE else flat.astype(flat.dtype.newbyteorder("<")).tobytes()


class _SidePlan:
    """External-data side files of the output, same tensors at the same offsets, written atomically."""

    def __init__(self, folder: Path, out_name: str) -> None:
        self.folder = folder
        self.out_name = out_name
        self.stem = out_name  # what the side files' names start with (`relocate`)
        self.files: dict[str, list[tuple[int, bytes]]] = {}  # original location -> (offset, bytes)
        self.protos: list[tuple[Any, str]] = []
        self.names: dict[str, str] = {}  # original location -> new side file name
        self.moved: list[tuple[Any, str, bytes]] = []  # tensors that no longer fit their slot (`place_moved`)

    def add(self, t: Any, data: bytes, name: str, read: int) -> None:
        """Write ``data`` at the tensor's offset if it has its slot's length, else after the rest of its file.

        The slot's length is the entry's, or ``read`` where it gives none; the others go to `place_moved`.
        The slot is no other tensor's: reading refuses tensors whose bytes overlap (`_refuse_shared`).
        """
        loc, offset, length = _external_info(t, f"tensor '{name}'")
        if len(data) != (read if length is None else length):  # e.g. restored from complex64: twice its size
            self.moved.append((t, loc, data))
            return
        self.files.setdefault(loc, []).append((offset, data))
        self.protos.append((t, loc))

    def place_moved(self) -> None:
        """Put the tensors that no longer fit their slot after the rest of their file (the others stay put)."""
        for t, loc, data in self.moved:
            parts = self.files.setdefault(loc, [])
            end = max((o + len(d) for o, d in parts), default=0)
            offset = -(-end // _ALIGN) * _ALIGN
            keep = {e.key: e.value for e in t.external_data} | {"offset": str(offset), "length": str(len(data))}
            del t.external_data[:]
            for k, v in keep.items():
                t.external_data.add(key=k, value=v)
            parts.append((offset, data))
            self.protos.append((t, loc))
        self.moved.clear()

    def relocate(self) -> None:
        """Point every external tensor at its new side file, named after the output.

        A name some file already has gets a fresh suffix instead: it may be the input's or the
        replaced model's data (renaming over it would pair the old model with the new data) or
        another model's.
        """
        n = len(self.files)
        # named after the output, cut where a name would pass the file system's limit (a legal output name)
        room = name_max(self.folder) - len(f".{n}.{secrets.token_hex(4)}.data")
        self.stem = cut_name(self.out_name, room)
        for i, loc in enumerate(self.files, 1):
            stem = self.stem if n == 1 else f"{self.stem}.{i}"
            name = f"{stem}.data"
            while self._taken(name):
                name = f"{stem}.{secrets.token_hex(4)}.data"
            self.names[loc] = name
        for t, loc in self.protos:
            # a checksum of the old file would now be wrong, and ONNX treats it as optional
            keep = [(e.key, self.names[loc] if e.key == "location" else e.value) for e in t.external_data]
            del t.external_data[:]
            for k, v in keep:
                if k != "checksum":
                    t.external_data.add(key=k, value=v)

    def _taken(self, name: str) -> bool:
        # any file already there: the replaced model's or the input's (renaming over it would pair
        # the old model with the new data), or another model's that shares the folder
        return name in self.names.values() or os.path.lexists(self.folder / name)

    def stale(self, old: frozenset[Path] | None, inputs: frozenset[Path], in_place: bool) -> list[Path]:
        """Side files of the replaced model to remove once the new one is in place.

        Only those named by ParamSeal for this output: another file may be shared with other models.
        An input's file goes only when the input itself is replaced.
        """
        ours = _ours(self.stem)
        new = {(self.folder / n).resolve() for n in self.names.values()}
        return sorted(
            p
            for p in old or ()
            if p.parent == self.folder.resolve()
            and ours.fullmatch(p.name)
            and p not in new
            and (in_place or p not in inputs)
        )

    def commit(self, model: bytes, tmp: Path, dst: Path, stale: list[Path]) -> None:
        """Write the side files and the model so that the model at ``dst`` always has complete data.

        The side files take names the current model does not use, so the model's own rename is the
        moment the new pair replaces the old one; the old side files are removed after it. ``tmp``
        (the caller's temporary file, unless it is ``dst``) gets the same bytes first, for the caller's
        rename, which then changes nothing.
        """
        if tmp != dst:
            tmp.write_bytes(model)
        try:  # as _paths.atomic_path: a replaced model keeps its mode, and its data takes it too
            mode = stat.S_IMODE(os.stat(dst).st_mode)
        except FileNotFoundError:
            mode = new_mode()
        temps: list[Path] = []
        placed: list[Path] = []
        target = dst  # the file being made, for the message: a side file's temporary would read as an input
        try:
            for loc, parts in self.files.items():
                target = self.folder / self.names[loc]
                t = self._temp(self.names[loc], temps)
                with open(t, "r+b") as f:
                    for offset, data in sorted(parts, key=lambda p: p[0]):
                        f.seek(offset)
                        f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(t, mode)  # a read-only model replaced --in-place: its new data is read-only too
            for loc, t in zip(self.files, temps, strict=True):
                target = self.folder / self.names[loc]
                os.replace(t, target)
                placed.append(target)
            target = dst
            t = self._temp(dst.name, temps)
            with open(t, "r+b") as f:
                f.write(model)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(t, mode)
            os.replace(t, dst)
        except BaseException as e:
            for p in placed:
                p.unlink(missing_ok=True)
            if isinstance(e, OSError) and not isinstance(e, ParamSealError):
                raise cannot_write(target, e) from e
            raise
        finally:
            for p in temps:
                p.unlink(missing_ok=True)
        for p in stale:
            try:
                p.unlink(missing_ok=True)
            except OSError:  # the new pair is complete; an old file left over does no harm
                pass

    def _temp(self, name: str, temps: list[Path]) -> Path:
        fd, t = tempfile.mkstemp(prefix=temp_prefix(name, self.folder), suffix=".tmp", dir=self.folder)
        os.close(fd)
        temps.append(Path(t))
        return Path(t)


def _few(names: list[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(f"'{n}'" for n in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def iter_tensor_names(path: Path) -> Iterator[tuple[str, str]]:
    """Yield (ParamSeal name, where it lives in the model) for every tensor of an ONNX file."""
    slots = _slots(_parse(_onnx(), path))
    yield from ((n, s.where) for n, s in zip(_names(slots), slots, strict=True))


__all__ = ["OnnxAdapter", "graph_as_sealed", "iter_tensor_names", "replaced_side_files"]
