"""Declared shapes that an ONNX model's graph contradicts, which ONNX Runtime may compute with.

The graph digest (`_onnx_digest`) leaves out the shapes a model declares (``value_info`` at any depth, the
main graph's output shapes, the types of subgraphs' inputs and outputs), which shape inference adds and
changes. But ONNX Runtime trusts a declared dim where its own inference leaves one open: its default graph
optimizations fold a ``Shape`` of the value to the declared dim, and the model computes something else. Here
the declarations are checked against the graph instead: a copy of the model with every declaration removed
(the main graph's inputs kept: the digest covers them, and a caller feeds them) goes through
``onnx.shape_inference.infer_shapes``, and each declared type is compared with the inferred one
(`contradicts`). Seal refuses a model with a contradiction, so verify counts one as an edit.

A ``Loop`` body's loop-carried inputs are typed, for the copy, as the ``Loop``'s inputs are (ONNX inference
leaves them untyped: their shapes may change from one iteration to the next). That is their type in the first
iteration, so what the body declares must hold there whenever the body runs at all; a loop-carried input's
declaration must also hold in a second iteration, where it is the body's output of the first.

Not checked: a concrete dim declared where inference leaves the dim open (unknown, or a symbol it makes up such
as 'unk__0': a data-dependent length, what a node of a domain without a schema computes), which ONNX Runtime
folds all the same; what a Loop body declares of its other values past the first iteration; the declarations
of model-local functions and training graphs; Loop bodies nested more
than `_LOOP_PASSES` deep (their loop-carried inputs stay untyped); and a model that inference cannot read at
all (`ShapeCheck.skipped`, which verify notes and seal warns of).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..levels import ST_TO_NP
from ._onnx_digest import strip_shapes
from ._onnx_tensors import ONNX_OF, tensor_names, tensor_slots

_SMALL = 1024  # integer tensors of at most this many values go into the copy: the shapes and indices inference reads
_INTEGER: dict[int, np.dtype[Any]] = {6: np.dtype("<i4"), 7: np.dtype("<i8")}  # TensorProto INT32, INT64
_LOOP_PASSES = 4  # inference passes that type Loop bodies, one per level of nested Loops


@dataclass(frozen=True, slots=True)
class Contradiction:
    """A declared type that the graph contradicts."""

    name: str  # the value's name
    where: str  # what declares it, and in which graph
    declared: str  # the declared type, as text ('float[5]')
    inferred: str  # the type inference gives ('float[N]')


@dataclass(frozen=True, slots=True)
class ShapeCheck:
    """The contradictions found, or why the declarations could not be checked."""

    found: tuple[Contradiction, ...] = ()
    skipped: str | None = None  # inference failed: nothing was checked
    onnx_version: str = ""  # the onnx whose inference gave the types compared (another may infer otherwise)


def check_declared(
    onnx: ModuleType,
    skeleton: bytes,
    values: Mapping[str, NDArray[np.generic]],
    dtypes: Mapping[str, str] | None = None,
) -> ShapeCheck:
    """Compare what the model ``skeleton`` declares with what inference gives once the declarations are removed.

    ``values``: the model's tensors by ParamSeal name; its small integer ones (the shapes, axes and indices that
    inference reads) go into the copy, whose payloads the skeleton lacks. ``dtypes`` (tensor name -> safetensors
    dtype name, as sealed) puts those tensors' data types back first, as the graph digest does: a tensor saved
    again as another dtype is that tensor's tampering, which recover restores, not a contradicted declaration.
    """
    model = onnx.ModelProto()
    model.ParseFromString(skeleton)
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    _put_values(bare, values, dtypes or {})
    _undeclare(bare.graph, main=True)
    for f in bare.functions:  # not compared (functions are not checked), but not to be read by inference either
        f.ClearField("value_info")
    try:
        inferred = _infer(onnx, bare)
    except _Unreadable as e:
        return ShapeCheck(skipped=str(e), onnx_version=str(onnx.__version__))
    symbols = {
        d.dim_param
        for v in model.graph.input
        if v.type.HasField("tensor_type")
        for d in v.type.tensor_type.shape.dim
        if d.dim_param
    }
    found = []
    for where, declared, got in _declarations(onnx, model.graph, inferred.graph):
        if got is not None and contradicts(declared.type, got, symbols):
            found.append(Contradiction(declared.name, where, type_text(onnx, declared.type), type_text(onnx, got)))
    return ShapeCheck(tuple(found), onnx_version=str(onnx.__version__))


def _put_values(m: Any, values: Mapping[str, NDArray[np.generic]], dtypes: Mapping[str, str]) -> None:
    """Put back the sealed data types (``dtypes``), and the values of the small integer tensors."""
    slots = tensor_slots(m)
    for name, slot in zip(tensor_names(slots), slots, strict=True):
        t, a = slot.proto, values.get(name)
        if (sealed := ST_TO_NP.get(dtypes.get(name, ""))) is not None and sealed in ONNX_OF:
            t.data_type = ONNX_OF[sealed]
        dt = _INTEGER.get(t.data_type)
        if a is None or dt is None or a.size > _SMALL or list(a.shape) != list(t.dims):
            continue
        t.ClearField("external_data")
        t.ClearField("data_location")
        for f in ("int32_data", "int64_data"):
            t.ClearField(f)
        t.raw_data = np.asarray(a, dtype=dt).tobytes()


def _undeclare(g: Any, main: bool) -> None:
    """Remove what a graph declares: its value_info, and its outputs' shapes (a subgraph's: its I/O types)."""
    g.ClearField("value_info")
    for v in g.output:
        if main:
            strip_shapes(v.type)
        else:
            v.ClearField("type")
    for v in () if main else g.input:
        v.ClearField("type")
    for _, sub, _ in _subgraphs(g):
        _undeclare(sub, main=False)


class _Unreadable(Exception):
    """onnx's shape inference raised on the model (its message says why)."""


def _infer(onnx: ModuleType, bare: Any) -> Any:
    """Infer, then type each Loop body's loop-carried inputs as its Loop's inputs and infer again (nested: more)."""
    inferred = _inferred(onnx, bare)
    for _ in range(_LOOP_PASSES):
        if not _type_loop_bodies(onnx, bare.graph, inferred.graph, ()):
            break
        inferred = _inferred(onnx, bare)
    return inferred


def _inferred(onnx: ModuleType, bare: Any) -> Any:
    try:
        return onnx.shape_inference.infer_shapes(bare, strict_mode=False, data_prop=True)
    except Exception as e:  # its errors vary by onnx version (InferenceError, ValidationError, RuntimeError)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise _Unreadable(f"onnx shape inference failed ({type(e).__name__}: {first})") from None


def _type_loop_bodies(onnx: ModuleType, g: Any, got: Any, outer: tuple[dict[str, Any], ...]) -> bool:
    """Type the loop-carried inputs of ``g``'s Loop bodies (any depth) as inferred in ``got``; whether any changed."""
    scope = (_types(onnx, got), *outer)
    changed = False
    for n, n_got in zip(g.node, got.node, strict=True):
        for a, a_got in zip(n.attribute, n_got.attribute, strict=True):
            subs, subs_got = ([a.g], [a_got.g]) if a.HasField("g") else (a.graphs, a_got.graphs)
            for sub, sub_got in zip(subs, subs_got, strict=True):
                if n.op_type == "Loop" and n.domain in ("", "ai.onnx") and a.name == "body":
                    for v, src in zip(sub.input[2:], n.input[2:], strict=False):
                        t = _lookup(scope, src)
                        if t is not None and v.type != t:  # a nested Loop's: better known in a later pass
                            v.type.CopyFrom(t)
                            changed = True
                changed |= _type_loop_bodies(onnx, sub, sub_got, scope)
    return changed


def _subgraphs(g: Any) -> Iterator[tuple[str, Any, bool]]:
    """Each subgraph of ``g``'s nodes, its place ('<node>:<attribute>', as tensor names give it), if a Loop body."""
    for i, n in enumerate(g.node):
        label = n.name or f"{n.op_type}#{i}"
        body = n.op_type == "Loop" and n.domain in ("", "ai.onnx")
        for a in n.attribute:
            if a.HasField("g"):
                yield f"{label}:{a.name}", a.g, body and a.name == "body"
            for j, s in enumerate(a.graphs):
                yield f"{label}:{a.name}[{j}]", s, False


def _declarations(
    onnx: ModuleType, g: Any, got: Any, path: str = "", outer: tuple[dict[str, Any], ...] = (), body: bool = False
) -> Iterator[tuple[str, Any, Any]]:
    """(where, declared ValueInfoProto, the inferred TypeProto or None) of every declaration, at any depth.

    A Loop ``body``'s loop-carried inputs are compared twice: with their first iteration's type (the Loop's
    inputs), and with the body's outputs that the second iteration takes as them (a value that grows from one
    iteration to the next is not the length it starts with).
    """
    place = f"subgraph {path}" if path else "the main graph"
    scope = (_types(onnx, got), *outer)
    for v in g.value_info:
        yield f"a value_info entry of {place}", v, _lookup(scope, v.name)
    for i, v in enumerate(g.output):
        yield f"output {i} of {place}", v, _lookup(scope, v.name)
    for i, v in enumerate(g.input if path else ()):
        yield f"input {i} of {place}", v, _lookup(scope, v.name)
    for i, (v, out) in enumerate(zip(g.input[2:] if body else (), got.output[1:], strict=False), 2):
        nxt = f"input {i} of {place} in a second iteration (output {i - 1} of the first)"
        yield nxt, v, out.type if out.HasField("type") else None
    for (label, sub, loop), (_, sub_got, _) in zip(_subgraphs(g), _subgraphs(got), strict=True):
        yield from _declarations(onnx, sub, sub_got, f"{path}/{label}" if path else label, scope, loop)


def _types(onnx: ModuleType, g: Any) -> dict[str, Any]:
    """The inferred type of each value of graph ``g`` (its initializers' from their dims), by name."""
    out = {t.name: onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims)) for t in g.initializer}
    for v in (*g.value_info, *g.output, *g.input):
        if v.HasField("type"):
            out[v.name] = v.type
    return out


def _lookup(scope: tuple[dict[str, Any], ...], name: str) -> Any:
    """The type of ``name`` in the innermost graph of ``scope`` (inner first) that has it, or None."""
    return next((s[name] for s in scope if name in s), None)


def contradicts(declared: Any, inferred: Any, symbols: set[str]) -> bool:
    """Whether a declared TypeProto says what the inferred one rules out.

    Another kind of value (a tensor for a sequence), another element type, another rank, or a concrete dim
    where inference gives another one or a dim of a main graph input (``symbols``: the caller chooses it, so
    no one dim is it). A dim left open or symbolic on either side is not one.
    """
    kind, other = declared.WhichOneof("value"), inferred.WhichOneof("value")
    if kind is None or other is None:
        return False
    if kind != other:
        return True
    d, i = getattr(declared, kind), getattr(inferred, kind)
    if kind in ("tensor_type", "sparse_tensor_type"):
        if d.elem_type and i.elem_type and d.elem_type != i.elem_type:
            return True
        if not (d.HasField("shape") and i.HasField("shape")):
            return False
        if len(d.shape.dim) != len(i.shape.dim):
            return True
        return any(
            a.HasField("dim_value")
            and (b.dim_value != a.dim_value if b.HasField("dim_value") else b.dim_param in symbols)
            for a, b in zip(d.shape.dim, i.shape.dim, strict=True)
        )
    if kind in ("sequence_type", "optional_type"):
        return d.HasField("elem_type") and i.HasField("elem_type") and contradicts(d.elem_type, i.elem_type, symbols)
    if kind == "map_type":
        if d.key_type and i.key_type and d.key_type != i.key_type:
            return True
        return (
            d.HasField("value_type") and i.HasField("value_type") and contradicts(d.value_type, i.value_type, symbols)
        )
    return False


def type_text(onnx: ModuleType, t: Any) -> str:
    """A TypeProto as text: 'float[5,N,?]', 'float (shape not given)', 'sequence of float[3]'."""
    kind = t.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        x = getattr(t, kind)
        elem = _elem_name(onnx, x.elem_type) if x.elem_type else "(element type not given)"
        elem = ("sparse " if kind == "sparse_tensor_type" else "") + elem
        if not x.HasField("shape"):
            return f"{elem} (shape not given)"
        dims = [str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?" for d in x.shape.dim]
        return f"{elem}[{','.join(dims)}]"
    if kind in ("sequence_type", "optional_type"):
        inner = getattr(t, kind)
        what = kind.split("_")[0]
        return f"{what} of {type_text(onnx, inner.elem_type)}" if inner.HasField("elem_type") else what
    if kind == "map_type":
        key = _elem_name(onnx, t.map_type.key_type)
        return f"map of {key} to {type_text(onnx, t.map_type.value_type)}"
    return "(type not given)"


def _elem_name(onnx: ModuleType, code: int) -> str:
    """An element type's name ('float'), or its number where onnx names none (a file may hold any number)."""
    try:
        return str(onnx.TensorProto.DataType.Name(code)).lower()
    except ValueError:
        return f"(element type {code}, unknown to onnx)"
