"""ONNX graph digest (``paramseal.graph``, ``v2:``): annotations that tools add or drop are not an edited graph.

``metadata_props`` on nodes, graphs, their inputs and outputs and on functions are notes (torch.export writes its
``pkg.torch.onnx.*`` there; ``onnx.version_converter`` and onnxruntime's symbolic shape inference drop them), which
ONNX Runtime does not read. The model's own ``metadata_props`` (the seal's header, the user's metadata) stay checked.
An opset domain written as ``""`` names the ONNX operator set as an absent one does (version_converter writes it out).
Seals of the first digest (``tests/golden/onnx-graph1``) verify exactly as before.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import paramseal  # noqa: E402
from paramseal import files  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "onnx-graph1"

from helpers import SILERO, needs_silero  # noqa: E402

needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")


def _model(path: Path) -> Path:
    """y = If(c, then: Scale(x) + w, else: LeakyRelu(x, 0.5)), Scale a model-local function (x * 2 by a Constant)."""
    rng = np.random.Generator(np.random.PCG64(23))
    w = numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "w")
    then = helper.make_graph(
        [helper.make_node("Scale", ["x"], ["s"], domain="local"), helper.make_node("Add", ["s", "w"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [64])],
        [w],
    )
    e = helper.make_tensor_value_info("e", TensorProto.FLOAT, [64])
    other = helper.make_graph([helper.make_node("LeakyRelu", ["x"], ["e"], alpha=0.5)], "else", [], [e])
    two = numpy_helper.from_array(np.full(64, 2.0, dtype=np.float32), "")
    scale = helper.make_function(
        "local",
        "Scale",
        ["a"],
        ["b"],
        [helper.make_node("Constant", [], ["two"], value=two), helper.make_node("Mul", ["a", "two"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
        "g",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [64]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])],
    )
    m = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)], functions=[scale]
    )
    m.ir_version = 10
    onnx.checker.check_model(m)
    onnx.save_model(m, str(path))
    return path


def _graphs(m: Any) -> Iterator[Any]:
    """Every GraphProto of ``m``: the main and training graphs, and subgraphs at any depth (functions' too)."""
    todo = [m.graph, *(t.algorithm for t in m.training_info)]
    nodes = [n for f in m.functions for n in f.node]
    while todo or nodes:
        if todo:
            g = todo.pop()
            yield g
            nodes.extend(g.node)
        while nodes:
            for a in nodes.pop().attribute:
                todo.extend([a.g] if a.HasField("g") else a.graphs)


def _annotate(m: Any) -> None:
    """What torch.export writes: metadata_props on every node, graph, graph input and output, and function."""
    notes = 0

    def note(x: Any) -> None:
        nonlocal notes
        notes += 1
        x.metadata_props.add(key="pkg.torch.onnx.stack_trace", value=f'File "model.py", line {notes}')

    for g in _graphs(m):
        for x in (g, *g.input, *g.output, *g.value_info, *g.node):
            note(x)
    for f in m.functions:
        for x in (f, *f.node, *f.value_info):
            note(x)
    assert notes >= 12


def _edited(src: Path, dst: Path, edit: Callable[[Any], None]) -> Path:
    m = onnx.load(str(src))
    edit(m)
    onnx.save_model(m, str(dst))
    return dst


def _exit(path: Path, key: paramseal.Key) -> int:
    rep = files.verify_file(path, key)
    assert rep.exit_code != 0 or (rep.status == "intact" and not rep.metadata_issues), rep.summary()
    assert rep.exit_code != 2 or any("graph" in i for i in rep.metadata_issues), rep.summary()
    return rep.exit_code


def test_metadata_props_below_the_model_are_not_the_graph(tmp_path: Path, key: paramseal.Key) -> None:
    sealed = tmp_path / "s.onnx"
    files.seal_file(_model(tmp_path / "m.onnx"), sealed, key)
    assert _exit(sealed, key) == 0
    annotated = _edited(sealed, tmp_path / "annotated.onnx", _annotate)
    assert _exit(annotated, key) == 0
    # sealed with the annotations, verified without them (what version_converter leaves)
    resealed = tmp_path / "resealed.onnx"
    files.seal_file(annotated, resealed, key, reseal=True)
    assert _exit(_edited(resealed, tmp_path / "bare.onnx", lambda m: None), key) == 0

    def stripped(m: Any) -> None:
        for g in _graphs(m):
            for x in (g, *g.input, *g.output, *g.node):
                del x.metadata_props[:]
        for f in m.functions:
            for x in (f, *f.node):
                del x.metadata_props[:]

    assert _exit(_edited(resealed, tmp_path / "stripped.onnx", stripped), key) == 0

    def branch(m: Any, name: str) -> Any:
        return next(a.g for a in m.graph.node[0].attribute if a.name == name)

    def attribute(m: Any) -> None:  # else_branch's LeakyRelu slope
        branch(m, "else_branch").node[0].attribute[0].f = 0.25

    def operator(m: Any) -> None:  # then_branch's Add becomes a Sub
        branch(m, "then_branch").node[1].op_type = "Sub"

    def node_input(m: Any) -> None:  # the function multiplies its input by itself
        m.functions[0].node[1].input[1] = "a"

    def model_metadata(m: Any) -> None:  # the model's own metadata_props stay checked
        m.metadata_props.add(key="author", value="someone")

    for edit in (attribute, operator, node_input):
        assert _exit(_edited(annotated, tmp_path / "edited.onnx", edit), key) == 2, edit.__name__
    rep = files.verify_file(_edited(annotated, tmp_path / "md.onnx", model_metadata), key)
    assert rep.exit_code != 0 and any("author" in i for i in rep.metadata_issues), rep.summary()


def test_first_digest_seals_still_cover_node_metadata(tmp_path: Path) -> None:
    """onnx-graph1's bare digest covered node metadata_props: as before, an added one is an edited graph."""
    key = paramseal.load_key(GOLDEN / "golden.key")
    assert _exit(GOLDEN / "sealed.onnx", key) == 0

    def noted(m: Any) -> None:
        m.graph.node[2].metadata_props.add(key="namespace", value="mlp")

    assert _exit(_edited(GOLDEN / "sealed.onnx", tmp_path / "noted.onnx", noted), key) == 2


def _same_opset(m: Any) -> Any:
    """A conversion to the opset the model already has: it copies the graph, not every annotation."""
    from onnx import version_converter

    return version_converter.convert_version(m, next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")))


def _symbolic(m: Any) -> Any:
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    return SymbolicShapeInference.infer_shapes(m, auto_merge=True)


@needs_silero
@needs_ort
@pytest.mark.parametrize("tool", [_same_opset, _symbolic])
def test_silero_op18_annotations_dropped_by_tools_verify_intact(
    tmp_path: Path, key: paramseal.Key, tool: Callable[[Any], Any]
) -> None:
    """silero_vad_op18_ifless (torch.export) notes its nodes and outputs; both tools drop some of them."""
    assert SILERO is not None
    sealed = tmp_path / "sealed.onnx"
    files.seal_file(SILERO / "silero_vad_op18_ifless.onnx", sealed, key)
    notes = onnx.load(str(sealed))
    assert all(len(n.metadata_props) for n in notes.graph.node) and len(notes.graph.output[0].metadata_props)
    out = tmp_path / "out.onnx"
    onnx.save_model(tool(onnx.load(str(sealed))), str(out))
    assert _exit(out, key) == 0

    def attribute(m: Any) -> None:
        a = next(a for n in m.graph.node for a in n.attribute if a.type == onnx.AttributeProto.INT)
        a.i += 1

    def node_input(m: Any) -> None:
        n = next(n for n in m.graph.node if len(n.input) >= 2)
        n.input[0], n.input[1] = n.input[1], n.input[0]

    for edit in (attribute, node_input):
        assert _exit(_edited(out, tmp_path / "edited.onnx", edit), key) == 2, edit.__name__


def _default_domain(present: bool) -> Callable[[Any], None]:
    """An edit: the ONNX opset's domain written out as "" (``present``), or absent, in the model and its functions."""

    def edit(m: Any) -> None:
        for o in (*m.opset_import, *(o for f in m.functions for o in f.opset_import)):
            if o.domain == "":
                o.ClearField("domain")
                if present:
                    o.domain = ""

    return edit


@pytest.mark.parametrize("sealed_present", [False, True])
def test_an_empty_opset_domain_is_an_absent_one(tmp_path: Path, key: paramseal.Key, sealed_present: bool) -> None:
    """onnx.proto: the empty string or absence of ``OperatorSetIdProto.domain`` both name the ONNX operator set."""
    src = _edited(_model(tmp_path / "m.onnx"), tmp_path / "m.onnx", _default_domain(sealed_present))
    sealed = tmp_path / "s.onnx"
    files.seal_file(src, sealed, key)
    m = onnx.load(str(sealed))
    assert [o.HasField("domain") for o in (m.opset_import[0], m.functions[0].opset_import[0])] == [sealed_present] * 2
    assert _exit(_edited(sealed, tmp_path / "other.onnx", _default_domain(not sealed_present)), key) == 0

    def ml(m: Any) -> None:  # the operator set named is another one
        m.opset_import[0].domain = "ai.onnx.ml"

    def ai_onnx(m: Any) -> None:  # runtimes read it as "", onnx.proto names only "" and none: left apart
        m.opset_import[0].domain = "ai.onnx"

    def function_ml(m: Any) -> None:
        m.functions[0].opset_import[0].domain = "ai.onnx.ml"

    def opset_version(m: Any) -> None:
        m.opset_import[0].version = 18

    def node_domain(m: Any) -> None:  # the function is looked up in another domain
        branch = next(a.g for a in m.graph.node[0].attribute if a.name == "then_branch")
        branch.node[0].domain = "ai.onnx.ml"

    for edit in (ml, ai_onnx, function_ml, opset_version, node_domain):
        other = _edited(sealed, tmp_path / "other.onnx", _default_domain(not sealed_present))
        assert _exit(_edited(other, tmp_path / "edited.onnx", edit), key) == 2, edit.__name__


def test_first_digest_seals_still_cover_how_the_opset_domain_is_written(tmp_path: Path) -> None:
    """onnx-graph1 writes its opset's domain as "": its bare digest tells that from an absent one, as before."""
    key = paramseal.load_key(GOLDEN / "golden.key")
    assert onnx.load(str(GOLDEN / "sealed.onnx")).opset_import[0].HasField("domain")
    assert _exit(_edited(GOLDEN / "sealed.onnx", tmp_path / "absent.onnx", _default_domain(False)), key) == 2


@needs_silero
@pytest.mark.parametrize(
    "variant", ["silero_vad_half.onnx", "silero_vad_16k_op15.onnx", "silero_vad_16k_sequence.onnx"]
)
def test_silero_converted_to_its_own_opset_verifies_intact(tmp_path: Path, key: paramseal.Key, variant: str) -> None:
    """These three leave the ONNX opset's domain absent; version_converter writes it out as ""."""
    assert SILERO is not None
    sealed = tmp_path / "sealed.onnx"
    files.seal_file(SILERO / variant, sealed, key)
    assert not onnx.load(str(sealed)).opset_import[0].HasField("domain")
    out = tmp_path / "out.onnx"
    onnx.save_model(_same_opset(onnx.load(str(sealed))), str(out))
    assert onnx.load(str(out)).opset_import[0].HasField("domain")
    assert _exit(out, key) == 0

    def ml(m: Any) -> None:
        m.opset_import[0].domain = "ai.onnx.ml"

    def opset_version(m: Any) -> None:
        m.opset_import[0].version -= 1

    for edit in (ml, opset_version):
        assert _exit(_edited(out, tmp_path / "edited.onnx", edit), key) == 2, edit.__name__


def _documented(m: Any) -> None:
    """Doc strings everywhere below the model, and a function's value_info (shape notes, as a graph's)."""
    for g in _graphs(m):
        for x in (g, *g.input, *g.output, *g.node, *(a for n in g.node for a in n.attribute)):
            x.doc_string = "a note"
    for f in m.functions:
        for x in (f, *f.node, *(a for n in f.node for a in n.attribute)):
            x.doc_string = "a note"
        f.value_info.add(name="two").type.tensor_type.elem_type = TensorProto.FLOAT


def test_doc_strings_and_value_info_in_functions_are_not_the_graph(tmp_path: Path, key: paramseal.Key) -> None:
    """README: doc strings and value_info are not in the digest; those of functions, attributes and graph
    inputs and outputs neither."""

    def trained(m: Any) -> None:  # a training graph (a copy of the else branch) for its notes
        step = next(a.g for a in m.graph.node[0].attribute if a.name == "else_branch")
        m.training_info.add().algorithm.CopyFrom(step)

    sealed = tmp_path / "s.onnx"
    files.seal_file(_edited(_model(tmp_path / "m.onnx"), tmp_path / "t.onnx", trained), sealed, key)
    assert _exit(sealed, key) == 0
    documented = _edited(sealed, tmp_path / "documented.onnx", _documented)
    assert onnx.load(str(documented)).training_info[0].algorithm.doc_string == "a note"
    assert _exit(documented, key) == 0

    def renamed(m: Any) -> None:  # what the function is called by: not a note
        m.functions[0].name = "Twice"
        branch = next(a.g for a in m.graph.node[0].attribute if a.name == "then_branch")
        branch.node[0].op_type = "Twice"

    assert _exit(_edited(documented, tmp_path / "renamed.onnx", renamed), key) == 2


def test_first_digest_seals_still_cover_input_doc_strings(tmp_path: Path) -> None:
    key = paramseal.load_key(GOLDEN / "golden.key")
    assert _exit(_edited(GOLDEN / "sealed.onnx", tmp_path / "doc.onnx", _documented), key) == 2
