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
  and ``#2``, ``#3``... is appended if it still clashes (a report says where such a tensor,
  or an initializer with no name, is instead: `shown_names`).

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

import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .._embed import header_copies
from .._tempname import cut_name, final_path, name_max
from ..errors import FormatError, ParamSealWarning, UsageError
from ..header import METADATA_KEY
from ._onnx_digest import GRAPH_VERSIONS, graph_digest, graph_version
from ._onnx_shapes import ShapeCheck, check_declared
from ._onnx_tensors import (
    Ranges,
    import_onnx,
    parse_model,
    refuse_shared,
    shown_names,
    strip_payload,
    tensor_names,
    tensor_slots,
    to_array,
)
from ._onnx_write import SidePlan, container, fill, named_by_others, our_names, serialize, side_files
from .base import Loaded

# ModelProto field tags that can follow ir_version (field 1) at the start of a file.
_SECOND_FIELDS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42}


def _text(v: str | bytes) -> str:
    """A ``metadata_props`` string; protobuf hands back bytes that are not UTF-8 (a damaged file): kept visible."""
    return v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v


@dataclass(frozen=True, slots=True)
class _Template:
    """A model read in this process, tensor payloads removed, to write the graph back."""

    skeleton: bytes
    names: frozenset[str]
    inputs: frozenset[Path]  # external-data files of the source: never overwritten
    model: Path  # the source model file, resolved: writing over it is writing in place
    shown: Mapping[str, str]  # the tensors the file's names do not tell apart: how to find them (`shown_names`)


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
        onnx = import_onnx()
        model = parse_model(onnx, path)
        try:
            slots = tensor_slots(model)
        except FormatError as e:
            raise FormatError(f"'{path}': {e}") from None
        names = tensor_names(slots)
        base = path.parent
        tensors: dict[str, NDArray[np.generic]] = {}
        inputs: Ranges = {}
        issues: list[str] = []
        for name, slot in zip(names, slots, strict=True):
            tensors[name] = to_array(slot, base, path, inputs, issues)
            strip_payload(slot.proto)
        refuse_shared(path, inputs)
        meta: dict[str, str] = {}
        for p in model.metadata_props:
            key = _text(p.key)
            if key in meta:
                raise FormatError(f"'{path}': metadata_props has the key '{key}' twice")
            meta[key] = _text(p.value)
        template = _Template(
            model.SerializeToString(), frozenset(names), frozenset(inputs), path.resolve(), shown_names(slots)
        )
        _TEMPLATES.remember(template)
        graph = graph_digest(onnx, template.skeleton)
        return Loaded(tensors, meta, source=template, container_issues=tuple(issues), graph=graph)

    def write(self, path: Path, loaded: Loaded) -> None:
        """Fill the graph read earlier with the new values (see the module docstring) and write it."""
        onnx = import_onnx()
        src = loaded.source
        dst = final_path(path)  # _paths.atomic_path writes to a temporary file (in a folder of its own), renamed here
        out = dst.name
        try:
            template = src if isinstance(src, _Template) else _TEMPLATES.find(frozenset(loaded.tensors))
            if template is not None and template.names != frozenset(loaded.tensors):
                # e.g. a partial recover of a model whose initializer was renamed: the tensors carry the sealed names
                raise _mismatch(template.names, frozenset(loaded.tensors))
        except FormatError as e:
            raise FormatError(f"'{dst}': {e}") from None
        if template is None:
            _refuse_sealed_container(dst, loaded)
            model = container(onnx, loaded)
        else:
            model = onnx.ModelProto()
            model.ParseFromString(template.skeleton)
        slots = tensor_slots(model)
        plan = SidePlan(dst.parent, out)  # beside the output, not in the temporary's folder
        for name, slot in zip(tensor_names(slots), slots, strict=True):
            fill(slot.proto, np.asarray(loaded.tensors[name]), name, plan)
        del model.metadata_props[:]
        for k, v in loaded.metadata.items():
            model.metadata_props.add(key=k, value=v)
        plan.place_moved()
        if not plan.files:
            path.write_bytes(serialize(model, out))
            return
        inputs = template.inputs if template is not None else frozenset()
        in_place = template is not None and dst.resolve() == template.model
        old = side_files(onnx, dst)
        plan.relocate()
        stale = plan.stale(old, inputs, in_place)
        shared = named_by_others(stale, dst)
        plan.commit(serialize(model, out), path, dst, [p for p in stale if p not in shared])
        for p, by in shared.items():
            warnings.warn(
                f"kept '{p.name}', which the replaced '{out}' used: {_few(by)} in the same folder may use it too "
                f"(the new '{out}' uses {_few(sorted(plan.names.values()))}); delete it once no model needs it",
                ParamSealWarning,
                stacklevel=2,
            )


def graph_as_sealed(loaded: Loaded, dtypes: Mapping[str, str], version: int | None = None) -> str | None:
    """The graph digest of the ONNX model read as ``loaded`` with its tensors' data types as sealed (``dtypes``).

    A tensor's data type is in the digest (seals before this kept it there), but the seal header holds
    each tensor's dtype too: a tensor saved again as another dtype is reported and restored as that
    tensor's tampering, not as an edited graph that recover cannot restore. ``version``: the digest's
    (`_onnx_digest.GRAPH_VERSION`), as the one sealed; the current one if None. None if not an ONNX model read.
    """
    if not isinstance(loaded.source, _Template):
        return None
    return graph_digest(import_onnx(), loaded.source.skeleton, dtypes, version)


def declared_shapes(
    loaded: Loaded, dtypes: Mapping[str, str] | None = None, values: Mapping[str, NDArray[np.generic]] | None = None
) -> ShapeCheck | None:
    """The shapes the ONNX model read as ``loaded`` declares that its graph contradicts (`_onnx_shapes`).

    None if not an ONNX model read. Its small integer tensors (shapes, axes, indices) are taken from ``values``
    (``loaded``'s tensors if None); ``dtypes``: its tensors' data types as sealed, as for `graph_as_sealed`.
    """
    if not isinstance(loaded.source, _Template):
        return None
    return check_declared(import_onnx(), loaded.source.skeleton, loaded.tensors if values is None else values, dtypes)


def refuse_contradicted(path: Path, loaded: Loaded) -> None:
    """Refuse to seal an ONNX model whose declared shapes its graph contradicts: verify calls each one an edit.

    A model that shape inference cannot read is sealed, with a warning that its declarations were not checked.
    """
    shapes = declared_shapes(loaded)
    if shapes is None:
        return
    if shapes.skipped is not None:
        warnings.warn(
            f"'{path}': its declared shapes were not checked against its graph: {shapes.skipped}; verify checks "
            "them again, and says so where it cannot either",
            ParamSealWarning,
            stacklevel=3,
        )
    if not shapes.found:
        return
    listed = "; ".join(
        f"'{c.name}' ({c.where}) declared {c.declared}, the graph gives {c.inferred}" for c in shapes.found[:5]
    )
    more = f"; and {len(shapes.found) - 5} more" if len(shapes.found) > 5 else ""
    raise FormatError(
        f"cannot seal '{path}': it declares shapes that its graph contradicts, which ONNX Runtime may compute with "
        f"instead of what its graph gives (its graph optimizations fold a Shape of such a value): {listed}{more}. "
        "Verify calls such a declaration an edit made after sealing, so a sealed model has none. Correct them and "
        "seal again: remove the value_info entries named (or all of them, in subgraphs too, and let "
        "onnx.shape_inference.infer_shapes add them back), and clear or correct the dims of the outputs and "
        "subgraph inputs named; nothing was written"
    )


def unshown_names(loaded: Loaded) -> Mapping[str, str]:
    """How to find the tensors of the ONNX model read as ``loaded`` whose names the file does not tell apart.

    ParamSeal's names for an initializer with no name ('') and for tensors of one graph that share a name ('#2',
    'W#2') are its own: a report says where the tensor is instead. Empty if none, or not an ONNX model read.
    """
    return loaded.source.shown if isinstance(loaded.source, _Template) else {}


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


def replaced_side_files(dst: Path, src: Path) -> list[Path]:
    """The side files of the model at ``dst`` that writing ``src``'s model there removes, and its user may not write.

    Checked before any work, as ``dst`` itself is (`_paths.never_read_only`): the new data goes to
    fresh names, but once the new model is in place the old data it named is deleted, and a
    read-only or another user's data file would go without a word (a folder's permission suffices).
    """
    if dst.is_symlink() or not dst.is_file():
        return []
    onnx = import_onnx()
    old = side_files(onnx, dst) or frozenset()
    ours = our_names(cut_name(dst.name, name_max(dst.parent) - len(f".{len(old)}.{'0' * 8}.data")))
    effective = os.access in os.supports_effective_ids
    kept = [
        p
        for p in old
        if p.parent == dst.parent.resolve()
        and ours.fullmatch(p.name)
        and p.is_file()
        and not os.access(p, os.W_OK, effective_ids=effective)
    ]
    # an input's data file stays (`SidePlan.stale`); read the input only when one is in question
    inputs = (side_files(onnx, src) or frozenset()) if kept else frozenset()
    return sorted(dst.parent / p.name for p in kept if p not in inputs)  # named as the user named the folder


def _few(names: list[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(f"'{n}'" for n in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def iter_tensor_names(path: Path) -> Iterator[tuple[str, str]]:
    """Yield (ParamSeal name, where it lives in the model) for every tensor of an ONNX file."""
    slots = tensor_slots(parse_model(import_onnx(), path))
    yield from ((n, s.where) for n, s in zip(tensor_names(slots), slots, strict=True))


__all__ = [
    "GRAPH_VERSIONS",
    "OnnxAdapter",
    "declared_shapes",
    "graph_as_sealed",
    "graph_version",
    "iter_tensor_names",
    "refuse_contradicted",
    "replaced_side_files",
    "unshown_names",
]
