#!/usr/bin/env python3
"""What ONNX Runtime computes with an edited declared shape, and what verify says of it (README, ONNX section).

Usage::

    python benchmarks/onnx_declared_shapes.py [--dir SCRATCH]

Part 1 seals small models that compute ``ReduceSum(Slice(y, 0, Shape(y)))`` over ``y = x * 1.5`` (``x``: 7 values,
declared ``["N"]``), declares ``y`` 5 long in one place after sealing, and prints what ONNX Runtime gives with its
default graph optimizations and with them off (``ORT_DISABLE_ALL``), and verify's exit code. The same for a length
inference leaves open (``y = Slice(x * 1.5, 0, k)``, ``k`` fed: the gap README admits), for an ``If`` whose branch
outputs are declared 5 long (one branch, both), and for a ``Loop`` whose loop-carried value grows by ``x`` (4 values)
each of 3 iterations, its body input declared 4 long (the ``Shape`` of it each iteration).

Part 2 counts, for the silero-vad models (when the package is installed), the concrete dims they declare that the
check judges (inference gives a dim, or a main graph input's) and those it leaves open, and times the check
(median of 5 runs).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import paramseal
from paramseal import files
from paramseal.formats import _onnx_shapes as shapes
from paramseal.formats._onnx_tensors import tensor_names, tensor_slots

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
X7 = np.arange(7, dtype=np.float32) + 1


def _vi(name: str, t: int, dims: Any) -> Any:
    return helper.make_tensor_value_info(name, t, dims)


def _model(nodes: list[Any], outputs: list[Any], inputs: list[Any]) -> Any:
    init = [
        numpy_helper.from_array(np.array([1.5], np.float32), "w"),
        numpy_helper.from_array(np.array([0], np.int64), "z"),
    ]
    g = helper.make_graph(nodes, "g", inputs, outputs, init)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _summed(src: str) -> list[Any]:
    return [
        helper.make_node("Shape", [src], [f"{src}_n"]),
        helper.make_node("Slice", [src, "z", f"{src}_n"], [f"{src}_s"]),
        helper.make_node("ReduceSum", [f"{src}_s"], [f"{src}_t"], keepdims=0),
    ]


def _flat(y_out: bool, sliced: bool = False) -> Any:
    ins = [_vi("x", F, ["N"])] + ([_vi("k", I64, [1])] if sliced else [])
    first = [helper.make_node("Mul", ["x", "w"], ["xw"]), helper.make_node("Slice", ["xw", "z", "k"], ["y"])]
    nodes = (first if sliced else [helper.make_node("Mul", ["x", "w"], ["y"])]) + _summed("y")
    return _model(nodes, [_vi("y_t", F, []), *([_vi("y", F, ["N"])] if y_out else [])], ins)


def _if() -> Any:
    def branch(out: str, op: str) -> Any:
        return helper.make_graph([helper.make_node(op, ["x", "w"], [out])], out, [], [_vi(out, F, ["N"])])

    node = helper.make_node("If", ["c"], ["y"], then_branch=branch("t", "Mul"), else_branch=branch("e", "Add"))
    return _model(
        [node, helper.make_node("Shape", ["y"], ["n"])], [_vi("n", I64, [1])], [_vi("x", F, ["N"]), _vi("c", B, [])]
    )


def _loop(grows: bool) -> Any:
    """A Loop over vi = x * w, once: the sum of vi. ``grows``: 3 times over vi = x, which gains x each; Shape(vi)."""
    step = (
        helper.make_node("Concat", ["vi", "x"], ["vo"], axis=0)
        if grows
        else helper.make_node("Mul", ["vi", "w"], ["vo"])
    )
    body = helper.make_graph(
        [helper.make_node("Identity", ["ci"], ["co"]), step, helper.make_node("Shape", ["vi"], ["sh"]), *_summed("vi")],
        "b",
        [_vi("i", I64, []), _vi("ci", B, []), _vi("vi", F, ["L"])],
        [_vi("co", B, []), _vi("vo", F, ["L2"]), _vi("sh", I64, [1]), _vi("vi_t", F, [])],
    )
    consts = [
        helper.make_node("Constant", [], ["trips"], value=helper.make_tensor("", I64, [], [3 if grows else 1])),
        helper.make_node("Constant", [], ["yes"], value=helper.make_tensor("", B, [], [True])),
        helper.make_node("Mul", ["x", "w"], ["xw"]),
    ]
    loop = helper.make_node("Loop", ["trips", "yes", "x" if grows else "xw"], ["vf", "shs", "tots"], body=body)
    outs = [_vi("shs", I64, None)] if grows else [_vi("tots", F, None)]
    return _model([*consts, loop], outs, [_vi("x", F, [4] if grows else ["N"])])


def _dim5(v: Any, value: int = 5) -> None:
    d = v.type.tensor_type.shape.dim[0]
    d.Clear()
    d.dim_value = value


def _body(m: Any) -> Any:
    return next(a.g for n in m.graph.node if n.op_type == "Loop" for a in n.attribute)


def _branches(m: Any) -> list[Any]:
    return [a.g for a in m.graph.node[0].attribute]


def _else(m: Any) -> Any:
    return next(a.g for a in m.graph.node[0].attribute if a.name == "else_branch")


def _run(m: Any, feeds: dict[str, Any], optimized: bool) -> str:
    so = ort.SessionOptions()
    so.log_severity_level = 4
    if not optimized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        out = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    except Exception as e:  # noqa: BLE001 - what ONNX Runtime says is the result here
        return f"refused ({type(e).__name__})"
    return str(np.asarray(out).ravel().tolist())


CASES: list[tuple[str, Any, Any, dict[str, Any]]] = [
    ("value_info y [5]", lambda: _flat(False), lambda m: m.graph.value_info.append(_vi("y", F, [5])), {"x": X7 - 1}),
    ("main output y [5]", lambda: _flat(True), lambda m: _dim5(m.graph.output[1]), {"x": X7 - 1}),
    ("Loop body input vi [5]", lambda: _loop(False), lambda m: _dim5(_body(m).input[2]), {"x": X7 - 1}),
    ("If: else branch [5], else runs", _if, lambda m: _dim5(_else(m).output[0]), {"x": X7, "c": np.array(False)}),
    ("If: else branch [5], then runs", _if, lambda m: _dim5(_else(m).output[0]), {"x": X7, "c": np.array(True)}),
    (
        "If: both branches [5]",
        _if,
        lambda m: [_dim5(b.output[0]) for b in _branches(m)],
        {"x": X7, "c": np.array(False)},
    ),
    (
        "open dim: y=Slice(x*w,0,k) [5]",
        lambda: _flat(False, True),
        lambda m: m.graph.value_info.append(_vi("y", F, [5])),
        {"x": X7, "k": np.array([7])},
    ),
    (
        "Loop, vi grows by 4: vi [4]",
        lambda: _loop(True),
        lambda m: _dim5(_body(m).input[2], 4),
        {"x": np.ones(4, np.float32)},
    ),
]


def part1(scratch: Path, key: paramseal.Key) -> None:
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}")
    print(
        f"{'declared after sealing':34} {'as sealed':>22} {'edited (default opt)':>24} {'edited (opt off)':>22}  verify"
    )
    for label, make, edit, feeds in CASES:
        src = scratch / "m.onnx"
        onnx.save_model(make(), str(src))
        sealed, edited = scratch / "s.onnx", scratch / "e.onnx"
        files.seal_file(src, sealed, key)
        m = onnx.load(str(sealed))
        edit(m)
        onnx.save_model(m, str(edited))
        before = _run(onnx.load(str(sealed)), feeds, True)
        after, off = _run(m, feeds, True), _run(m, feeds, False)
        print(f"{label:34} {before:>22} {after:>24} {off:>22}  exit {files.verify_file(edited, key).exit_code}")


def part2() -> None:
    spec = importlib.util.find_spec("silero_vad")
    data = Path(spec.origin).parent / "data" if spec and spec.origin else None
    if data is None or not data.is_dir():
        print("silero-vad is not installed: part 2 skipped")
        return
    judged = left_open = 0
    for path in sorted(data.glob("*.onnx")):
        m = onnx.load(str(path))
        slots = tensor_slots(m)
        values = {n: numpy_helper.to_array(s.proto) for n, s in zip(tensor_names(slots), slots, strict=True)}
        for s in slots:
            s.proto.ClearField("raw_data")
        skeleton = m.SerializeToString()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            found = shapes.check_declared(onnx, skeleton, values).found
            times.append(time.perf_counter() - start)
        bare = onnx.ModelProto()
        bare.CopyFrom(m)
        shapes._put_values(bare, values, {})
        shapes._undeclare(bare.graph, main=True)
        got = shapes._infer(onnx, bare)
        symbols = {d.dim_param for v in m.graph.input for d in v.type.tensor_type.shape.dim if d.dim_param}
        j = o = 0
        for _, declared, inferred in shapes._declarations(onnx, m.graph, got.graph):
            t = declared.type
            if not (t.HasField("tensor_type") and t.tensor_type.HasField("shape")):
                continue
            dims = t.tensor_type.shape.dim
            ok = inferred is not None and inferred.HasField("tensor_type") and inferred.tensor_type.HasField("shape")
            other = inferred.tensor_type.shape.dim if ok else []
            for n, d in enumerate(dims):
                if d.HasField("dim_value"):
                    b = other[n] if len(other) == len(dims) else None
                    if b is not None and (b.HasField("dim_value") or b.dim_param in symbols):
                        j += 1
                    else:
                        o += 1
        judged, left_open = judged + j, left_open + o
        ms = 1000 * statistics.median(times)
        print(f"{path.name:32} {ms:6.1f} ms  concrete dims judged {j:4}, left open {o:4}, contradictions {len(found)}")
    print(f"{'all':32} {'':9}  concrete dims judged {judged:4}, left open {left_open:4}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    key = paramseal.Key.generate()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        part1(Path(tmp), key)
    part2()


if __name__ == "__main__":
    main()
