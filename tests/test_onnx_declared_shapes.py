"""ONNX declared shapes that the graph contradicts: ONNX Runtime may compute with them, so they are tampering.

The graph digest leaves declared shapes out (value_info, main outputs' shapes, subgraphs' input and output types),
as shape inference adds and changes them. ONNX Runtime's default optimizations fold a ``Shape`` of a value declared
5 long to 5: ``ReduceSum(Slice(y, 0, Shape(y)))`` over 7 values then gives 15.0 instead of 31.5. Verify checks the
declarations against what ``onnx.shape_inference`` gives from the graph alone (`_onnx_shapes`); seal refuses a model
that already has such a contradiction. Declarations that tools write (infer_shapes, symbolic_shape_infer,
version_converter, numpy_helper's re-encoding) agree with the graph, and verify intact.
"""

from __future__ import annotations

import importlib.util
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helpers
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper, version_converter  # noqa: E402

import paramseal  # noqa: E402
from paramseal import files  # noqa: E402
from paramseal.errors import ParamSealWarning  # noqa: E402
from paramseal.formats._onnx_shapes import check_declared  # noqa: E402
from paramseal.formats._onnx_tensors import tensor_names, tensor_slots  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "onnx-graph1"
from helpers import SILERO, SILERO_VARIANTS, needs_silero  # noqa: E402

_X = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])
_W = numpy_helper.from_array(np.array([1.5], np.float32), "w")
_ZERO = numpy_helper.from_array(np.array([0], np.int64), "zero")


def _save(path: Path, nodes: list[Any], outputs: list[Any], inputs: tuple[Any, ...] = (_X,)) -> Path:
    g = helper.make_graph(nodes, "g", list(inputs), outputs, [_W, _ZERO])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save_model(m, str(path))
    return path


def _sliced(src: str = "y") -> list[Any]:
    """total = ReduceSum(Slice(src, 0, Shape(src))): what ONNX Runtime folds when src's length is declared."""
    return [
        helper.make_node("Shape", [src], [f"{src}_n"]),
        helper.make_node("Slice", [src, "zero", f"{src}_n"], [f"{src}_s"]),
        helper.make_node("ReduceSum", [f"{src}_s"], [f"{src}_t"], keepdims=0),
    ]


def _flat(path: Path, also_output_y: bool = False) -> Path:
    """y = x * w; total = ReduceSum(Slice(y, 0, Shape(y))); y is also an output if ``also_output_y``."""
    y = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])] if also_output_y else []
    total = helper.make_tensor_value_info("y_t", TensorProto.FLOAT, [])
    return _save(path, [helper.make_node("Mul", ["x", "w"], ["y"]), *_sliced()], [total, *y])


def _loop(path: Path, nested: bool = False) -> Path:
    """A Loop (run once) whose body sums its loop-carried input ``vi`` as `_sliced` does; ``nested``: in a Loop."""
    vec = ["N"]

    def body(name: str, inner: list[Any]) -> Any:
        return helper.make_graph(
            [helper.make_node("Identity", ["ci"], ["co"]), *inner, helper.make_node("Identity", ["vi"], ["vo"])],
            name,
            [
                helper.make_tensor_value_info("i", TensorProto.INT64, []),
                helper.make_tensor_value_info("ci", TensorProto.BOOL, []),
                helper.make_tensor_value_info("vi", TensorProto.FLOAT, vec),
            ],
            [
                helper.make_tensor_value_info("co", TensorProto.BOOL, []),
                helper.make_tensor_value_info("vo", TensorProto.FLOAT, vec),
                helper.make_tensor_value_info("vi_t", TensorProto.FLOAT, []),
            ],
        )

    inner = body("inner", _sliced("vi"))
    run = [helper.make_node("Loop", ["one", "yes", "vi"], ["vi_last", "vi_ts"], body=inner)]
    mid = helper.make_graph(
        [
            helper.make_node("Identity", ["ci"], ["co"]),
            *run,
            helper.make_node("ReduceSum", ["vi_ts"], ["vi_t"], keepdims=0),
            helper.make_node("Identity", ["vi"], ["vo"]),
        ],
        "outer",
        list(inner.input),
        list(inner.output),
    )
    consts = [
        helper.make_node("Constant", [], ["one"], value=helper.make_tensor("", TensorProto.INT64, [], [1])),
        helper.make_node("Constant", [], ["yes"], value=helper.make_tensor("", TensorProto.BOOL, [], [True])),
    ]
    nodes = [*consts, helper.make_node("Mul", ["x", "w"], ["y"])]
    nodes.append(helper.make_node("Loop", ["one", "yes", "y"], ["vf", "tots"], body=mid if nested else inner))
    return _save(path, nodes, [helper.make_tensor_value_info("tots", TensorProto.FLOAT, [1])])


def _if(path: Path) -> Path:
    """y = If(c, then: x * w, else: x + w); Shape(y) an output (ONNX Runtime gave 5, both branches' declared so)."""

    def branch(out: str, op: str) -> Any:
        vec = [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N"])]
        return helper.make_graph([helper.make_node(op, ["x", "w"], [out])], out, [], vec)

    nodes = [
        helper.make_node("If", ["c"], ["y"], then_branch=branch("t", "Mul"), else_branch=branch("e", "Add")),
        helper.make_node("Shape", ["y"], ["n"]),
    ]
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    return _save(path, nodes, [helper.make_tensor_value_info("n", TensorProto.INT64, [1])], (_X, c))


def _body(m: Any, depth: int = 1) -> Any:
    g = m.graph
    for _ in range(depth):
        g = next(a.g for n in g.node if n.op_type == "Loop" for a in n.attribute)
    return g


def _set_dim(v: Any, value: int) -> None:
    d = v.type.tensor_type.shape.dim[0]
    d.Clear()
    d.dim_value = value


def _declare_y(m: Any) -> None:
    m.graph.value_info.add().CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [5]))


_ATTACKS: dict[str, tuple[Callable[[Path], Path], Callable[[Any], None], str, str]] = {
    # model, edit, the value named, where it is declared
    "value_info": (_flat, _declare_y, "y", "a value_info entry of the main graph"),
    "main output": (
        lambda p: _flat(p, also_output_y=True),
        lambda m: _set_dim(m.graph.output[1], 5),
        "y",
        "output 1 of the main graph",
    ),
    "Loop body input": (_loop, lambda m: _set_dim(_body(m).input[2], 5), "vi", "input 2 of subgraph Loop#3:body"),
    "Loop body output": (_loop, lambda m: _set_dim(_body(m).output[1], 5), "vo", "output 1 of subgraph Loop#3:body"),
    "If branch output": (
        _if,
        lambda m: _set_dim(next(a.g for a in m.graph.node[0].attribute if a.name == "then_branch").output[0], 5),
        "t",
        "output 0 of subgraph If#0:then_branch",
    ),
    "nested Loop body input": (
        lambda p: _loop(p, nested=True),
        lambda m: _set_dim(_body(m, 2).input[2], 5),
        "vi",
        "input 2 of subgraph Loop#3:body/Loop#1:body",
    ),
}


def _verify(path: Path, key_file: Path) -> tuple[int, dict[str, Any]]:
    rc, out, err = helpers.run_cli(["verify", path, "--key", key_file, "--json"])
    assert "Traceback" not in err, err
    return rc, json.loads(out)


def _edited(src: Path, dst: Path, edit: Callable[[Any], None]) -> Path:
    m = onnx.load(str(src))
    edit(m)
    onnx.save_model(m, str(dst))
    return dst


@pytest.mark.parametrize("attack", list(_ATTACKS))
def test_a_declared_shape_edited_after_sealing_is_tampering_that_recover_refuses(
    tmp_path: Path, key_file: Path, attack: str
) -> None:
    """y (7 long at run time, declared ["N"]) declared 5 long: verify exited 0 before, ONNX Runtime gave 15.0."""
    make, edit, name, where = _ATTACKS[attack]
    sealed = tmp_path / "s.onnx"
    assert helpers.run_cli(["seal", make(tmp_path / "m.onnx"), sealed, "--key", key_file])[0] == 0
    assert _verify(sealed, key_file)[0] == 0
    edited = _edited(sealed, tmp_path / "e.onnx", edit)
    rc, rep = _verify(edited, key_file)
    assert rc == 2 and rep["status"] == "tampered" and not rep["recoverable"] and not rep["tampered_tensors"], rep
    issues = rep["metadata_issues"]  # a loop-carried input: its first and its second iteration's (as vo) too
    assert len(issues) == (2 if "Loop body input" in attack else 1), issues
    issue = next(i for i in issues if f"'{name}' ({where})" in i)
    told_onnx = f"gives float[N] (the installed onnx {onnx.__version__}'s inference"  # another may infer otherwise
    for told in ("declared float[5]", told_onnx, "ONNX Runtime may compute"):
        assert told in issue, (told, issue)
    out = tmp_path / "out.onnx"
    rc, text, _ = helpers.run_cli(["recover", edited, out, "--key", key_file])
    assert rc == 2 and "declared float[5]" in text and not out.exists(), text


def test_a_contradicted_declaration_in_a_first_digest_seal_is_tampering(tmp_path: Path) -> None:
    """The check is of the file, not of the digest's version: a v1 seal (tests/golden/onnx-graph1) gets it too."""
    key_file = GOLDEN / "golden.key"
    assert _verify(GOLDEN / "sealed.onnx", key_file)[0] == 0

    def declared(m: Any) -> None:  # the first output, [1, 16] by its nodes, declared [3, 16]
        v = m.graph.output[0]
        assert [d.dim_value for d in v.type.tensor_type.shape.dim] == [1, 16], v
        v.type.tensor_type.shape.dim[0].dim_value = 3

    rc, rep = _verify(_edited(GOLDEN / "sealed.onnx", tmp_path / "e.onnx", declared), key_file)
    assert rc == 2 and any("float[3,16]" in i and "gives float[1,16]" in i for i in rep["metadata_issues"]), rep


def test_seal_refuses_a_model_whose_declarations_its_graph_contradicts(tmp_path: Path, key_file: Path) -> None:
    src = _edited(_flat(tmp_path / "m.onnx"), tmp_path / "declared.onnx", _declare_y)
    out = tmp_path / "s.onnx"
    rc, _, err = helpers.run_cli(["seal", src, out, "--key", key_file])
    assert rc == 3 and "Traceback" not in err and not out.exists(), err
    for told in ("'y' (a value_info entry of the main graph)", "float[5]", "float[N]", "infer_shapes", "nothing"):
        assert told in err, (told, err)
    # the fix it names: the declarations removed and inferred again
    fixed = onnx.load(str(src))
    fixed.graph.ClearField("value_info")
    onnx.save_model(onnx.shape_inference.infer_shapes(fixed, data_prop=True), str(tmp_path / "fixed.onnx"))
    assert helpers.run_cli(["seal", tmp_path / "fixed.onnx", out, "--key", key_file])[0] == 0
    assert _verify(out, key_file)[0] == 0


@pytest.mark.parametrize(
    "declared, contradicts",
    [
        (helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"]), False),  # as inferred
        (helper.make_tensor_value_info("y", TensorProto.FLOAT, ["length"]), False),  # symbolic: no claim
        (helper.make_tensor_value_info("y", TensorProto.FLOAT, [None]), False),
        (helper.make_tensor_value_info("y", TensorProto.FLOAT, None), False),
        (helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N"]), True),  # another element type
        (helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1]), True),  # another rank
        (helper.make_tensor_value_info("y", TensorProto.FLOAT, [7]), True),  # a dim the caller chooses
        (helper.make_tensor_value_info("y_n", TensorProto.INT64, [1]), False),  # Shape(y): 1 long
        (helper.make_tensor_value_info("y_n", TensorProto.INT64, [2]), True),
        (  # another kind of value
            helper.make_value_info("y", helper.make_sequence_type_proto(helper.make_tensor_type_proto(1, ["N"]))),
            True,
        ),
        (helper.make_tensor_value_info("nowhere", TensorProto.FLOAT, [5]), False),  # no such value
        (helper.make_tensor_value_info("y", 99, ["N"]), True),  # an element type onnx has no name for
        (helper.make_value_info("y", helper.make_map_type_proto(99, helper.make_tensor_type_proto(1, []))), True),
    ],
)
def test_what_contradicts_the_graph(tmp_path: Path, declared: Any, contradicts: bool) -> None:
    m = onnx.load(str(_flat(tmp_path / "m.onnx")))
    m.graph.value_info.append(declared)
    check = check_declared(onnx, m.SerializeToString(), {})
    assert check.skipped is None and len(check.found) == contradicts, check
    assert all("99, unknown to onnx" in c.declared for c in check.found if "99" in str(declared)), check


def test_a_dim_that_inference_leaves_open_is_not_checked(tmp_path: Path) -> None:
    """y = Slice(x, 0, k) with k fed: inference names y's length 'unk__0', so a declared 5 is no contradiction.

    ONNX Runtime folds its Shape to 5 all the same (README): the gap that remains.
    """
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    total = helper.make_tensor_value_info("y_t", TensorProto.FLOAT, [])
    nodes = [helper.make_node("Slice", ["x", "zero", "k"], ["y"]), *_sliced()]
    m = onnx.load(str(_save(tmp_path / "m.onnx", nodes, [total], (_X, k))))
    _declare_y(m)
    check = check_declared(onnx, m.SerializeToString(), {})
    assert check.skipped is None and not check.found, check
    m.graph.value_info[0].type.tensor_type.shape.dim[0].dim_value = 5  # 'y' as rank 2 is one: [5] vs [unk]
    m.graph.value_info[0].type.tensor_type.shape.dim.add().dim_value = 1
    assert len(check_declared(onnx, m.SerializeToString(), {}).found) == 1


def test_shape_constants_are_read_from_the_values(tmp_path: Path) -> None:
    """The skeleton holds no tensor values: the small integer ones (a Reshape's shape) come from the model read."""
    shape = numpy_helper.from_array(np.array([2, 3], np.int64), "shape")
    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])],
        [shape],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    slots = tensor_slots(m)
    values = {n: numpy_helper.to_array(s.proto) for n, s in zip(tensor_names(slots), slots, strict=True)}
    shape.ClearField("raw_data")
    m.graph.initializer[0].ClearField("raw_data")
    skeleton = m.SerializeToString()
    assert not check_declared(onnx, skeleton, {}).found  # without the values: unknown, no claim to check
    [found] = check_declared(onnx, skeleton, values).found
    assert (found.name, found.declared, found.inferred) == ("y", "float[3,2]", "float[2,3]")


def test_a_model_that_shape_inference_cannot_read_is_sealed_with_a_warning_and_a_note(
    tmp_path: Path, key: paramseal.Key
) -> None:
    """A node of a domain the model imports no opset for: onnx's inference raises; the check is skipped."""
    nodes = [helper.make_node("Mul", ["x", "w"], ["y"]), helper.make_node("Foo", ["y"], ["z"], domain="com.example")]
    src = _save(tmp_path / "m.onnx", nodes, [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    sealed = tmp_path / "s.onnx"
    with pytest.warns(ParamSealWarning, match="declared shapes were not checked.*No opset import for domain"):
        files.seal_file(_edited(src, src, _declare_y), sealed, key)
    rep = files.verify_file(sealed, key)
    assert rep.status == "intact" and rep.exit_code == 0 and not rep.metadata_issues, rep.summary()
    assert any("declared shapes were not checked" in n and "com.example" in n for n in rep.notes), rep.notes


def _symbolic(m: Any) -> Any:
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    return SymbolicShapeInference.infer_shapes(m, auto_merge=True)


def _resaved(m: Any) -> Any:
    for s in tensor_slots(m):
        s.proto.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(s.proto), s.proto.name))
    return m


def _own_opset(m: Any) -> Any:
    return version_converter.convert_version(m, next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")))


_TOOLS: dict[str, Callable[[Any], Any]] = {
    "infer_shapes": lambda m: onnx.shape_inference.infer_shapes(m, data_prop=True),
    "infer_shapes, no data_prop": onnx.shape_inference.infer_shapes,
    "symbolic_shape_infer": _symbolic,
    "symbolic after infer_shapes": lambda m: _symbolic(onnx.shape_inference.infer_shapes(m, data_prop=True)),
    "version_converter, own opset": _own_opset,
    "numpy_helper": _resaved,
}


@needs_silero
@pytest.mark.parametrize("variant", SILERO_VARIANTS)
def test_silero_after_tools_that_rewrite_declarations_verifies_intact(
    tmp_path: Path, key: paramseal.Key, variant: str
) -> None:
    """Every tool that runs on the variant: the shapes it declares agree with the graph (exit 0, nothing noted)."""
    assert SILERO is not None
    sealed = tmp_path / "sealed.onnx"
    files.seal_file(SILERO / variant, sealed, key)
    ran = []
    for name, tool in _TOOLS.items():
        if "symbolic" in name and importlib.util.find_spec("onnxruntime") is None:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tools' own (version_converter's adapters)
                m = tool(onnx.load(str(sealed)))
        except AssertionError:  # symbolic_shape_infer on silero_vad, _16k_op15 and _half (onnxruntime 1.32)
            assert "symbolic" in name, name
            continue
        onnx.save_model(m, str(tmp_path / "tool.onnx"))
        rep = files.verify_file(tmp_path / "tool.onnx", key)
        assert rep.exit_code == 0 and not rep.metadata_issues and not rep.notes, (name, rep.summary())
        ran.append(name)
    assert len(ran) >= 4, ran


@needs_silero
def test_the_check_costs_little_on_silero() -> None:
    """Measured: 5-30 ms a variant (2 shared cores); a generous bound, not a benchmark."""
    assert SILERO is not None
    slowest = 0.0
    for variant in SILERO_VARIANTS:
        m = onnx.load(str(SILERO / variant))
        slots = tensor_slots(m)
        values = {n: numpy_helper.to_array(s.proto) for n, s in zip(tensor_names(slots), slots, strict=True)}
        for s in slots:
            s.proto.ClearField("raw_data")
        skeleton = m.SerializeToString()
        start = time.perf_counter()
        check = check_declared(onnx, skeleton, values)
        slowest = max(slowest, time.perf_counter() - start)
        assert check.skipped is None and not check.found, (variant, check)
    assert slowest < 2.0, slowest


def _reshaping(tmp_path: Path, key_file: Path) -> Path:
    """Sealed: r = Reshape(x, shape) declared [2, 3], shape = [2, 3] a tensor, and a spare one for the capacity."""
    rng = np.random.Generator(np.random.PCG64(5))
    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Add", ["r", "b"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [
            numpy_helper.from_array(np.array([2, 3], np.int64), "shape"),
            numpy_helper.from_array(rng.standard_normal((2, 3)).astype(np.float32), "b"),
            numpy_helper.from_array(rng.standard_normal(1 << 14).astype(np.float32), "spare"),  # capacity to recover
        ],
        value_info=[helper.make_tensor_value_info("r", TensorProto.FLOAT, [2, 3])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save_model(m, str(tmp_path / "m.onnx"))
    sealed = tmp_path / "s.onnx"
    assert helpers.run_cli(["seal", tmp_path / "m.onnx", sealed, "--key", key_file])[0] == 0
    return sealed


def _reshaped(m: Any) -> None:
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array([3, 2], np.int64), "shape"))


def test_a_tampered_shape_constant_is_that_tensors_tampering_which_recover_restores(
    tmp_path: Path, key_file: Path
) -> None:
    """A Reshape's shape edited from [2, 3] to [3, 2] contradicts the declared [2, 3] only through its value.

    The check reads only the values that verified intact: the tampered tensor is located and restored, not an
    edited graph that recover refuses.
    """
    edited = _edited(_reshaping(tmp_path, key_file), tmp_path / "e.onnx", _reshaped)
    rc, rep = _verify(edited, key_file)
    assert rc == 1 and rep["tampered_tensors"] == ["shape"] and not rep["metadata_issues"], rep
    out = tmp_path / "out.onnx"
    assert helpers.run_cli(["recover", edited, out, "--key", key_file])[0] == 0
    assert _verify(out, key_file)[0] == 0


def test_a_declaration_edited_to_match_a_tampered_shape_constant_is_refused_once_the_constant_is_restored(
    tmp_path: Path, key_file: Path
) -> None:
    """shape [3, 2] and r declared [3, 2] agree; verify reads intact values alone, so it sees the tensor's tampering.

    recover restored shape to [2, 3] and wrote a model whose r, still declared [3, 2], its graph contradicts: the
    output failed verify (exit 2). recover now checks the declarations against the restored values first.
    """

    def both(m: Any) -> None:
        _reshaped(m)
        v = next(v for v in m.graph.value_info if v.name == "r")
        v.type.tensor_type.shape.dim[0].dim_value, v.type.tensor_type.shape.dim[1].dim_value = 3, 2

    edited = _edited(_reshaping(tmp_path, key_file), tmp_path / "e.onnx", both)
    rc, rep = _verify(edited, key_file)
    assert rc == 1 and rep["tampered_tensors"] == ["shape"], rep
    out = tmp_path / "out.onnx"
    rc, text, err = helpers.run_cli(["recover", edited, out, "--key", key_file, "--json"])
    rep = json.loads(text)
    assert rc == 2 and rep["status"] == "unrecoverable" and not out.exists(), (rc, text, err)
    assert any("'r' (a value_info entry of the main graph) is declared float[3,2]" in i for i in rep["metadata_issues"])


def test_a_loop_carried_value_declared_as_long_as_it_starts_is_contradicted_by_the_second_iteration(
    tmp_path: Path,
) -> None:
    """vi grows by x (4 values) each iteration: declared [4], ONNX Runtime gave Shape(vi) 4, 4, 4 (not 4, 8, 12)."""

    def model(vi: list[Any]) -> Any:
        body = helper.make_graph(
            [
                helper.make_node("Identity", ["ci"], ["co"]),
                helper.make_node("Concat", ["vi", "x"], ["vo"], axis=0),
                helper.make_node("Shape", ["vi"], ["sh"]),
            ],
            "b",
            [
                helper.make_tensor_value_info("i", TensorProto.INT64, []),
                helper.make_tensor_value_info("ci", TensorProto.BOOL, []),
                helper.make_tensor_value_info("vi", TensorProto.FLOAT, vi),
            ],
            [
                helper.make_tensor_value_info("co", TensorProto.BOOL, []),
                helper.make_tensor_value_info("vo", TensorProto.FLOAT, ["L2"]),
                helper.make_tensor_value_info("sh", TensorProto.INT64, [1]),
            ],
        )
        three = helper.make_tensor("", TensorProto.INT64, [], [3])
        nodes = [
            helper.make_node("Constant", [], ["n"], value=three),
            helper.make_node("Constant", [], ["t"], value=helper.make_tensor("", TensorProto.BOOL, [], [True])),
            helper.make_node("Loop", ["n", "t", "x"], ["vf", "shs"], body=body),
        ]
        g = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("vf", "shs")],
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m

    for declared in (["L"], None):
        assert not check_declared(onnx, model(declared).SerializeToString(), {}).found, declared
    [found] = check_declared(onnx, model([4]).SerializeToString(), {}).found
    assert found.name == "vi" and "second iteration" in found.where, found
    assert (found.declared, found.inferred) == ("float[4]", "float[8]")


def test_update_inputs_outputs_dims_leaves_value_info_that_seal_refuses_until_it_is_inferred_again(
    tmp_path: Path, key_file: Path
) -> None:
    """README: the batch made dynamic by update_model_dims keeps value_info at batch 1; the refusal's fix works."""
    from onnx.tools import update_model_dims

    w = numpy_helper.from_array(np.arange(32, dtype=np.float32).reshape(8, 4), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    m = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    m = update_model_dims.update_inputs_outputs_dims(m, {"x": ["batch", 8]}, {"y": ["batch", 4]})
    onnx.save_model(m, str(tmp_path / "dyn.onnx"))
    rc, _, err = helpers.run_cli(["seal", tmp_path / "dyn.onnx", tmp_path / "s.onnx", "--key", key_file])
    assert (
        rc == 3
        and "'h' (a value_info entry of the main graph) declared float[1,4], the graph gives float[batch,4]" in err
    )
    assert "let onnx.shape_inference.infer_shapes add them back" in err and not (tmp_path / "s.onnx").exists()
    del m.graph.value_info[:]
    onnx.save_model(onnx.shape_inference.infer_shapes(m), str(tmp_path / "fixed.onnx"))
    assert helpers.run_cli(["seal", tmp_path / "fixed.onnx", tmp_path / "s.onnx", "--key", key_file])[0] == 0
    assert _verify(tmp_path / "s.onnx", key_file)[0] == 0
