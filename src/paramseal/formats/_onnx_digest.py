"""The graph digest: what an ONNX model runs besides its tensor values, which the seal adds to the values.

Kept apart from `_onnx_tensors`, whose walk over the model's tensors it uses, so that what the digest covers
in each version (`GRAPH_VERSION`) reads in one place. `onnx_format` writes it at seal and checks it at verify.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from ..levels import ST_TO_NP
from ._onnx_tensors import ALL_TYPED, ONNX_OF, tensor_names, tensor_slots

#: The graph digest new seals write. 1 (a bare SHA-256 in hex, seals before 'v2:') also covers the tensor
#: protos' fields besides their storage: a Constant value's name (even an empty one: whether it is present),
#: its doc string and metadata_props, which a tool re-encoding a tensor (numpy_helper) drops; and the types
#: graphs declare for their outputs and subgraphs for their inputs, which shape inference fills in. 2 ('v2:'
#: and the hex) keeps of each tensor only what runs: its data type, dims and, for an initializer, its name
#: (the values are the seal's to authenticate, and a tensor's other fields are notes), of subgraphs' inputs
#: and outputs their names, of the main graph's outputs their names and types less the shapes
#: (`_strip_declared_types`), none of the notes below the model (metadata_props,
#: doc strings, value_info) in functions and at any depth, and an opset domain "" as an absent one
#: (`_strip_annotations`).
GRAPH_VERSION = 2
GRAPH_VERSIONS = (2, 1)  # those verify checks, newest first
_VERSIONED = re.compile(r"v([0-9]{1,9}):")  # 'v2:' and the hex; a newer ParamSeal's 'v3:' and on


def graph_version(digest: str) -> int:
    """The version of a sealed ``paramseal.graph`` value (`GRAPH_VERSION`); one not in `GRAPH_VERSIONS` is newer."""
    return int(m.group(1)) if (m := _VERSIONED.match(digest)) else 1


def graph_digest(
    onnx: ModuleType, skeleton: bytes, dtypes: Mapping[str, str] | None = None, version: int | None = None
) -> str:
    """SHA-256 of what the model runs besides its tensor values: what the seal adds to the values.

    Re-pointing a node at another initializer, or changing an operator or attribute, changes it.
    Not covered: how and where values are stored (raw or typed fields, external files), metadata,
    doc strings, the producer, and ``value_info`` (shape annotations that shape inference adds; `_onnx_shapes`
    checks the declared shapes against the graph instead);
    from version 2 on, nor a tensor's own notes, the shapes of the main graph's outputs, the types of
    subgraphs' inputs and outputs, the notes
    (metadata_props, doc strings, value_info) of nodes, graphs and functions, and whether an opset's
    domain "" is written out (`GRAPH_VERSION`). ``dtypes`` (tensor name ->
    safetensors dtype name) puts those tensors' data types back first. ``version``: `GRAPH_VERSION` if None.
    """
    version = GRAPH_VERSION if version is None else version
    m = onnx.ModelProto()
    m.ParseFromString(skeleton)
    slots = tensor_slots(m)
    for name, slot in zip(tensor_names(slots), slots, strict=True):
        if dtypes and (dt := ST_TO_NP.get(dtypes.get(name, ""))) is not None and dt in ONNX_OF:
            slot.proto.data_type = ONNX_OF[dt]
    for slot in slots:
        t = slot.proto
        if version >= 2:
            bare = onnx.TensorProto(data_type=t.data_type, dims=t.dims)
            if slot.initializer and t.name:
                bare.name = t.name
            t.CopyFrom(bare)
        for f in ("raw_data", "external_data", "data_location", *ALL_TYPED):
            t.ClearField(f)
    for f in ("metadata_props", "doc_string", "producer_name", "producer_version"):
        m.ClearField(f)
    _strip_notes(m.graph)
    if version >= 2:
        _strip_declared_types(m.graph, sub=False)
        _strip_annotations(m)
    digest = hashlib.sha256(m.SerializeToString(deterministic=True)).hexdigest()
    return digest if version == 1 else f"v{version}:{digest}"


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


def _strip_annotations(m: Any) -> None:
    """Clear the notes below the model, and an opset domain "" (the same as none).

    Notes: the metadata_props and doc strings of every graph, node, graph input and output and function,
    attributes' doc strings, and every graph's and function's value_info (`_strip_notes`, which version 1
    runs too, clears the doc strings and value_info of the main graph's tree alone). ONNX Runtime does not
    read them, and tools drop them: torch.export writes its stack traces into metadata_props,
    onnx.version_converter drops the nodes', onnxruntime's symbolic shape inference the outputs'. The
    model's own metadata_props (the seal's header, the user's metadata) are checked apart. An opset domain
    "" is the same as an absent one: onnx.proto's OperatorSetIdProto says 'The empty string ("") or absence
    of this field implies the operator set that is defined as part of the ONNX specification', and
    version_converter writes out the "" that silero_vad_half leaves absent ("ai.onnx" is kept apart).
    """
    for o in (*m.opset_import, *(o for f in m.functions for o in f.opset_import)):
        if o.domain == "":
            o.ClearField("domain")
    parts = ("initialization", "algorithm")
    graphs = [m.graph, *(getattr(t, p) for t in m.training_info for p in parts if t.HasField(p))]
    nodes = [n for f in m.functions for n in f.node]
    for f in m.functions:
        for field in ("metadata_props", "doc_string", "value_info"):
            f.ClearField(field)
    while graphs:
        g = graphs.pop()
        for field in ("metadata_props", "doc_string", "value_info"):
            g.ClearField(field)
        for x in (*g.input, *g.output):
            x.ClearField("metadata_props")
            x.ClearField("doc_string")
        nodes.extend(g.node)
        while nodes:
            n = nodes.pop()
            n.ClearField("metadata_props")
            n.ClearField("doc_string")
            for a in n.attribute:
                a.ClearField("doc_string")
                graphs.extend([a.g] if a.HasField("g") else a.graphs)


def _strip_declared_types(g: Any, sub: bool) -> None:
    """Clear what shape inference fills in of the types a graph declares for its outputs and inputs.

    Of the main graph's outputs only the shapes (an unknown dim named 'unk__0'): the kind of value (tensor,
    sequence, optional, map) and its element types stay, which ONNX Runtime checks against what the nodes
    compute and refuses to load a model over (an output declared DOUBLE that a node computes as FLOAT). Of a
    subgraph's inputs and outputs the whole type, which inference adds where the model leaves it out (an If
    branch's untyped output, a Loop body's input), in its subgraphs too. The names stay, and so do the main
    graph's input types: what a caller may feed.
    """
    for v in (*g.output, *(g.input if sub else ())):
        if sub:
            v.ClearField("type")
        else:
            strip_shapes(v.type)
    for node in g.node:
        for a in node.attribute:
            if a.HasField("g"):
                _strip_declared_types(a.g, sub=True)
            for s in a.graphs:
                _strip_declared_types(s, sub=True)


def strip_shapes(t: Any) -> None:
    """Clear the shapes of a TypeProto, nested in a sequence, optional or map too; its kinds and element types stay."""
    kind = t.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        getattr(t, kind).ClearField("shape")
    elif kind in ("sequence_type", "optional_type") and getattr(t, kind).HasField("elem_type"):
        strip_shapes(getattr(t, kind).elem_type)
    elif kind == "map_type" and t.map_type.HasField("value_type"):
        strip_shapes(t.map_type.value_type)
