"""ONNX adapter: tiny graphs built with onnx.helper (initializers, Constants in nested If/Loop
subgraphs, typed fields, external data), malformed files through the CLI, and silero-vad in onnxruntime."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import shutil
import stat
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import helpers
import ml_dtypes
import numpy as np
import pytest
from adapter_suite import AdapterTests

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import paramseal  # noqa: E402
from paramseal import FormatError, files  # noqa: E402
from paramseal.errors import MissingDependencyError  # noqa: E402
from paramseal.formats import Loaded, adapter_for  # noqa: E402
from paramseal.formats.onnx_format import OnnxAdapter, iter_tensor_names  # noqa: E402

ADAPTER = OnnxAdapter()
OPSET = [helper.make_opsetid("", 17)]
F32 = TensorProto.FLOAT

# --------------------------------------------------------------------------- building tiny models


def _model(graph: Any, metadata: Mapping[str, str] | None = None) -> Any:
    m = helper.make_model(graph, opset_imports=OPSET, producer_name="paramseal-tests")
    m.ir_version = 8
    for k, v in (metadata or {}).items():
        m.metadata_props.add(key=k, value=v)
    return m


def _tensor(name: str, a: np.ndarray, *, typed: bool = False) -> Any:
    """A TensorProto in raw_data (numpy_helper) or in its typed field (helper.make_tensor)."""
    if not typed:
        return numpy_helper.from_array(a, name)
    dt = helper.np_dtype_to_tensor_dtype(a.dtype)
    if a.dtype in (np.float16, helpers.BF16):
        t = TensorProto(name=name, data_type=dt, dims=a.shape)
        t.int32_data.extend(a.reshape(-1).view(np.uint16).astype(np.int32).tolist())  # bit patterns
        return t
    return helper.make_tensor(name, dt, a.shape, a.reshape(-1).tolist())


def make_file(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> Path:
    """The shared suite's hook: an ONNX file holding ``tensors`` as initializers (graph with no nodes)."""
    graph = helper.make_graph([], "g", [], [], initializer=[_tensor(k, v) for k, v in tensors.items()])
    onnx.save_model(_model(graph, metadata), str(path))
    return path


def mlp(rng: np.random.Generator, *, typed: bool = False) -> Any:
    """Y = relu(X W1 + b1) W2 + b2, plus unused initializers of every other dtype."""
    w = {
        "W1": rng.standard_normal((8, 256)).astype(np.float32),
        "b1": rng.standard_normal(256).astype(np.float32),
        "W2": rng.standard_normal((256, 4)).astype(np.float32),
        "b2": rng.standard_normal(4).astype(np.float32),
    }
    extra = {
        "half": rng.standard_normal(70).astype(np.float16),
        "brain": rng.standard_normal(33).astype(helpers.BF16),
        "double": rng.standard_normal(9),
        "steps": np.arange(5, dtype=np.int64),
        "ids": np.arange(-3, 4, dtype=np.int32),
        "codes": np.arange(7, dtype=np.uint8),
        "mask": np.array([True, False, True]),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["X", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "W2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["Y"]),
    ]
    inits = [_tensor(k, v, typed=typed) for k, v in {**w, **extra}.items()]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", F32, [None, 8])],
        [helper.make_tensor_value_info("Y", F32, [None, 4])],
        initializer=inits,
    )
    return _model(graph, {"author": "tests"})


def _const(out: str, a: np.ndarray) -> Any:
    return helper.make_node("Constant", [], [out], value=numpy_helper.from_array(a, ""))


def control_flow(rng: np.random.Generator) -> Any:
    """Weights in Constants at depth 1 and 2 of If subgraphs and inside Loop and Scan bodies.

    Both branches of the inner If name their Constant ``w``: sibling subgraphs may reuse
    a name, so those two get their subgraph path as a prefix.
    """
    h = helper.make_tensor_value_info

    def branch(name: str, wname: str, out: str) -> Any:
        return helper.make_graph(
            [
                _const(wname, rng.standard_normal((256, 3)).astype(np.float32)),
                helper.make_node("MatMul", ["H", wname], [out]),
            ],
            name,
            [],
            [h(out, F32, [1, 3])],
        )

    inner = helper.make_node(
        "If",
        ["flag"],
        ["deep"],
        name="inner_if",
        then_branch=branch("t2", "w", "d1"),
        else_branch=branch("e2", "w", "d2"),
    )
    else_graph = helper.make_graph(
        [_const("flag", np.array(True)), inner, helper.make_node("Identity", ["deep"], ["e_out"])],
        "e1",
        [],
        [h("e_out", F32, [1, 3])],
    )
    outer = helper.make_node(
        "If", ["cond"], ["picked"], name="outer_if", then_branch=branch("t1", "then_w", "t_out"), else_branch=else_graph
    )
    body = helper.make_graph(
        [
            _const("loop_b", rng.standard_normal(3).astype(np.float32)),
            helper.make_node("Add", ["y_in", "loop_b"], ["y_out"]),
            helper.make_node("Identity", ["c_in"], ["c_out"]),
        ],
        "body",
        [h("i", TensorProto.INT64, []), h("c_in", TensorProto.BOOL, []), h("y_in", F32, [1, 3])],
        [h("c_out", TensorProto.BOOL, []), h("y_out", F32, [1, 3])],
    )
    scan_body = helper.make_graph(
        [
            _const("scan_w", rng.standard_normal(3).astype(np.float32)),
            helper.make_node("Mul", ["row", "scan_w"], ["p"]),
            helper.make_node("Add", ["s_in", "p"], ["s_out"]),
            helper.make_node("Identity", ["s_out"], ["r_out"]),
        ],
        "scan_body",
        [h("s_in", F32, [3]), h("row", F32, [3])],
        [h("s_out", F32, [3]), h("r_out", F32, [3])],
    )
    nodes = [
        helper.make_node("MatMul", ["X", "W0"], ["H"]),
        outer,
        _const("trips", np.array(3, np.int64)),
        _const("go", np.array(True)),
        helper.make_node("Loop", ["trips", "go", "picked"], ["L"], name="loop", body=body),
        _const("s_shape", np.array([3], np.int64)),
        helper.make_node(
            "ConstantOfShape", ["s_shape"], ["s0"], value=numpy_helper.from_array(np.zeros(1, np.float32))
        ),
        helper.make_node("Scan", ["s0", "L"], ["S", "Z"], name="scan", num_scan_inputs=1, body=scan_body),
    ]
    graph = helper.make_graph(
        nodes,
        "cf",
        [h("X", F32, [1, 4]), h("cond", TensorProto.BOOL, [])],
        [h("Z", F32, [1, 3])],
        initializer=[numpy_helper.from_array(rng.standard_normal((4, 256)).astype(np.float32), "W0")],
    )
    return _model(graph, {"author": "tests"})


def save(model: Any, path: Path, *, external: bool = False) -> Path:
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, location=f"{path.name}.data", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


# --------------------------------------------------------------------------- ground truth without the adapter


def _protos(model: Any) -> Iterator[tuple[str, Any]]:
    """(initializer name or node output name, TensorProto) for every tensor, at any depth."""

    def graph(g: Any) -> Iterator[tuple[str, Any]]:
        for t in g.initializer:
            yield t.name, t
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield n.output[0], a.t
                elif a.type == onnx.AttributeProto.GRAPH:
                    yield from graph(a.g)

    yield from graph(model.graph)


def flip(src: Path, dst: Path, which: Mapping[str, tuple[int, int]], nth: int = 0) -> None:
    """Copy an inline ONNX model, flipping bit ``b`` of value ``i`` of each named tensor (the nth of that name)."""
    m = onnx.load(str(src))
    seen: dict[str, int] = {}
    for name, t in _protos(m):
        if name in which:
            seen[name] = seen.get(name, -1) + 1
            if seen[name] != nth:
                continue
            i, b = which[name]
            raw = bytearray(t.raw_data)
            raw[i * _itemsize(t) + b // 8] ^= 1 << (b % 8)
            t.raw_data = bytes(raw)
    assert set(seen) == set(which), seen
    onnx.save_model(m, str(dst))


def _itemsize(t: Any) -> int:
    return int(np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize)


def skeleton(path: Path) -> bytes:
    """The model with every tensor payload, external-data file name and metadata_props removed."""
    m = onnx.load(str(path), load_external_data=False)
    for _, t in _protos(m):
        for f in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            t.ClearField(f)
        t.ClearField("external_data")
    del m.metadata_props[:]
    return m.SerializeToString()


def run(path: Path, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return list(ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, dict(feeds)))


def cf_feeds(cond: bool) -> dict[str, np.ndarray]:
    return {"X": np.linspace(-1, 1, 4, dtype=np.float32)[None], "cond": np.array(cond)}


def bound_ok(orig: np.ndarray, sealed: np.ndarray, k: int, mantissa: int = 23) -> bool:
    """Every normal value within (2^k - 1) 2^-M of its magnitude; subnormals/zeros within the absolute bound."""
    o, s = orig.astype(np.float64), sealed.astype(np.float64)
    tiny = np.finfo(orig.dtype).tiny
    rel = (2**k - 1) * 2.0**-mantissa
    normal = np.abs(o) >= tiny
    ok_rel = np.abs(s - o)[normal] <= rel * np.abs(o)[normal]
    ok_abs = np.abs(s - o)[~normal] <= (2**k) * float(np.finfo(orig.dtype).smallest_subnormal)
    return bool(ok_rel.all() and ok_abs.all())


# --------------------------------------------------------------------------- fixtures


@pytest.fixture()
def cf_file(tmp_path: Path) -> Path:
    return save(control_flow(np.random.default_rng(1)), tmp_path / "cf.onnx")


@pytest.fixture()
def mlp_file(tmp_path: Path) -> Path:
    return save(mlp(np.random.default_rng(2)), tmp_path / "mlp.onnx")


@pytest.fixture()
def ext_file(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    return save(mlp(np.random.default_rng(3)), d / "ext.onnx", external=True)


# --------------------------------------------------------------------------- the shared adapter suite


class TestOnnxSuite(AdapterTests):
    """Files made with onnx itself: every tensor an initializer of a graph with no nodes."""

    adapter_name = "onnx"
    suffix = ".onnx"

    def make_file(self, path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
        make_file(path, tensors, metadata)

    def read_native(self, path: Path) -> dict[str, np.ndarray]:
        return {name: numpy_helper.to_array(t) for name, t in _protos(onnx.load(str(path)))}

    def malformed_cases(self) -> dict[str, bytes]:
        raw = make_file(Path(self._tmp) / "m.onnx", {"w": np.ones(64, np.float32)}).read_bytes()
        return {case: fn(raw) for case, fn in MALFORMED.items() if case not in ("truncated", "empty", "garbage")}

    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path: Path) -> None:
        self._tmp = tmp_path


# --------------------------------------------------------------------------- reading and writing


def test_detected_by_extension_and_by_content(tmp_path: Path, mlp_file: Path) -> None:
    assert isinstance(adapter_for(mlp_file), OnnxAdapter)
    odd = tmp_path / "model.weights"
    shutil.copy(mlp_file, odd)
    assert isinstance(adapter_for(odd), OnnxAdapter)
    assert ADAPTER.sniff(mlp_file.read_bytes()[:64])
    st = helpers.write_st(tmp_path / "m.safetensors", {"w": np.ones(3, np.float32)})
    assert not ADAPTER.sniff(st.read_bytes()[:64])
    assert not ADAPTER.sniff(b"") and not ADAPTER.sniff(b"PK\x03\x04....")


@pytest.mark.parametrize("typed", [False, True], ids=["raw_data", "typed_fields"])
def test_reads_every_dtype_and_writes_back_in_the_same_storage_form(tmp_path: Path, typed: bool) -> None:
    rng = np.random.default_rng(5)
    src = save(mlp(rng, typed=typed), tmp_path / "m.onnx")
    want = {name: numpy_helper.to_array(t) for name, t in _protos(onnx.load(str(src)))}
    got = ADAPTER.read(src)
    assert list(got.tensors) == list(want)  # file order
    helpers.assert_model_equal(got.tensors, want)
    assert got.tensors["brain"].dtype == helpers.BF16 and got.tensors["half"].dtype == np.float16
    assert got.metadata == {"author": "tests"}
    # New values (every bit pattern) go back in the same form, and onnx reads them identically.
    new = {k: helpers.random_tensor(rng, v.dtype, v.shape, wild=True) for k, v in got.tensors.items()}
    out = tmp_path / "out.onnx"
    ADAPTER.write(out, Loaded(new, {"author": "tests", "x": "✓"}))
    back = onnx.load(str(out))
    for name, t in _protos(back):
        helpers.assert_model_equal({name: numpy_helper.to_array(t)}, {name: new[name]})
        if new[name].size:
            assert t.HasField("raw_data") != typed, name
    assert {p.key: p.value for p in back.metadata_props} == {"author": "tests", "x": "✓"}
    assert skeleton(out) == skeleton(src)


@pytest.mark.parametrize("typed", [False, True], ids=["raw_data", "typed_fields"])
def test_onnxruntime_reads_exactly_the_values_written(tmp_path: Path, key: paramseal.Key, typed: bool) -> None:
    """Each weight is a graph output (16-bit floats widened by Cast, which is exact), so onnxruntime
    shows the very values in the sealed file; they must equal what the adapter wrote, bit for bit."""
    rng = np.random.default_rng(11)
    w = {
        "f32": rng.standard_normal(300).astype(np.float32),
        "f16": rng.standard_normal(300).astype(np.float16),
        "bf16": rng.standard_normal(300).astype(helpers.BF16),
        "f64": rng.standard_normal(300),
        "i64": np.arange(-5, 5, dtype=np.int64),
        "i8": np.arange(-5, 5, dtype=np.int8),
        "flags": np.array([True, False, True]),
    }
    nodes, outs = [], []
    for name, a in w.items():
        wide = a.dtype in (np.float16, helpers.BF16)
        nodes.append(
            helper.make_node("Cast" if wide else "Identity", [name], [f"out_{name}"], **({"to": F32} if wide else {}))
        )
        outs.append(
            helper.make_tensor_value_info(
                f"out_{name}", F32 if wide else helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)
            )
        )
    inits = [_tensor(k, v, typed=typed) for k, v in w.items()]
    src = save(_model(helper.make_graph(nodes, "ids", [], outs, initializer=inits)), tmp_path / "ids.onnx")
    out = tmp_path / "sealed.onnx"
    files.seal_file(src, out, key, level="strong")
    written = ADAPTER.read(out).tensors
    assert not helpers.same_bytes(written["f16"], w["f16"])  # sealing did change the low bits
    for name, got in zip(w, run(out, {}), strict=True):
        want = written[name]
        want = want.astype(np.float32) if want.dtype in (np.float16, helpers.BF16) else want
        assert helpers.same_bytes(got, want), name


def test_names_are_output_names_with_subgraph_prefix_only_on_clashes(cf_file: Path) -> None:
    names = list(ADAPTER.read(cf_file).tensors)
    # file order: onnx.helper stores a node's attributes sorted by name, so else_branch comes first
    assert names == [
        "W0",
        "flag",
        "outer_if:else_branch/inner_if:else_branch/w",
        "outer_if:else_branch/inner_if:then_branch/w",
        "then_w",
        "trips",
        "go",
        "loop_b",
        "s_shape",
        "s0:value",  # the ConstantOfShape fill value
        "scan_w",
    ]
    where = dict(iter_tensor_names(cf_file))
    assert "subgraph outer_if:else_branch/inner_if:else_branch" in where[names[2]]


def test_a_tensors_pattern_matching_nothing_names_the_close_tensor_names(
    tmp_path: Path, cf_file: Path, key: paramseal.Key, key_file: Path
) -> None:
    """A subgraph's 'w' is sealed as 'outer_if:.../w' and a typo names nothing: exit 3 said only 'check the pattern'."""
    sealed = tmp_path / "s.onnx"
    files.seal_file(cf_file, sealed, key)
    rc, _, err = helpers.run_cli(["verify", sealed, "--key", key_file, "--tensors", "w"])
    assert rc == 3 and "matches none of the 11 sealed tensors" in err, err
    assert "'outer_if:else_branch/inner_if:else_branch/w', 'outer_if:else_branch/inner_if:then_branch/w'" in err, err
    rc, _, err = helpers.run_cli(["verify", sealed, "--key", key_file, "--tensors", "then_W"])
    assert rc == 3 and "close names: 'then_w'" in err, err
    rc, _, err = helpers.run_cli(["verify", sealed, "--key", key_file, "--tensors", "zzz*"])
    assert rc == 3 and "close names" not in err, err


def test_constants_in_model_local_functions_are_covered(tmp_path: Path, key: paramseal.Key) -> None:
    fw = np.random.default_rng(9).standard_normal((4, 64)).astype(np.float32)
    fn = helper.make_function(
        "local", "affine", ["x"], ["y"], [_const("fw", fw), helper.make_node("MatMul", ["x", "fw"], ["y"])],
        [helper.make_opsetid("", 17)],
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("affine", ["X"], ["Y"], domain="local")],
        "g",
        [helper.make_tensor_value_info("X", F32, [1, 4])],
        [helper.make_tensor_value_info("Y", F32, [1, 64])],
    )
    m = helper.make_model(graph, opset_imports=[*OPSET, helper.make_opsetid("local", 1)], functions=[fn])
    m.ir_version = 8
    src = save(m, tmp_path / "fn.onnx")
    assert list(ADAPTER.read(src).tensors) == ["fw"]
    out = tmp_path / "sealed.onnx"
    files.seal_file(src, out, key)
    x = {"X": np.ones((1, 4), np.float32)}
    (ya,), (yb,) = run(src, x), run(out, x)
    assert 0 < np.abs(ya - yb).max() <= 1e-4 * np.abs(ya).max()


def test_seal_keeps_the_graph_and_stores_the_header_in_metadata_props(
    tmp_path: Path, cf_file: Path, key: paramseal.Key
) -> None:
    before = helpers.sha256(cf_file)
    out = tmp_path / "sealed.onnx"
    files.seal_file(cf_file, out, key)
    assert helpers.sha256(cf_file) == before
    assert skeleton(out) == skeleton(cf_file)
    m, orig = onnx.load(str(out)), onnx.load(str(cf_file))
    assert m.opset_import == orig.opset_import and m.ir_version == orig.ir_version
    assert [p.key for p in m.metadata_props] == ["author", "paramseal.graph", "paramseal"]
    onnx.checker.check_model(m)
    # Every float value moved by at most the standard level's bound; ints and bools not at all.
    a, b = ADAPTER.read(cf_file).tensors, ADAPTER.read(out).tensors
    for name in a:
        if a[name].dtype == np.float32:
            assert bound_ok(a[name], b[name], k=8), name
        else:
            helpers.assert_model_equal({name: b[name]}, {name: a[name]})
    for cond in (True, False):
        (za,), (zb,) = run(cf_file, cf_feeds(cond)), run(out, cf_feeds(cond))
        assert np.abs(za - zb).max() <= 1e-4 * np.abs(za).max()


def test_tamper_in_nested_if_and_initializer_is_located_and_recovered_bit_exactly(
    tmp_path: Path, cf_file: Path, key: paramseal.Key, key_file: Path
) -> None:
    sealed = tmp_path / "sealed.onnx"
    assert helpers.run_cli(["seal", cf_file, sealed, "--key", key_file])[0] == 0
    assert helpers.run_cli(["verify", sealed, "--key", key_file])[0] == 0
    bad = tmp_path / "bad.onnx"
    # the else-branch 'w' (two levels deep), and the initializer W0: exponent bits
    flip(sealed, bad, {"w": (7, 28)}, nth=0)
    flip(bad, bad, {"W0": (3, 30)})
    rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file, "--json"])
    assert rc == 1, err
    rep = json.loads(out)
    deep = "outer_if:else_branch/inner_if:else_branch/w"
    assert sorted(rep["tampered_tensors"]) == sorted([deep, "W0"])
    assert rep["tensors"][deep]["tampered_blocks"] == [0] and rep["tensors"]["W0"]["tampered_blocks"] == [0]
    fixed = tmp_path / "fixed.onnx"
    rc, out, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file, "--json"])
    assert rc == 0, err
    restored = json.loads(out)["tensors"]
    assert restored[deep]["restored"]["indices"] == [7] and restored["W0"]["restored"]["indices"] == [3]
    assert helpers.sha256(fixed) == helpers.sha256(sealed)  # the very same file, byte for byte
    for cond in (True, False):
        for x, y in zip(run(fixed, cf_feeds(cond)), run(sealed, cf_feeds(cond)), strict=True):
            assert helpers.same_bytes(x, y)
    # the tampered else branch really changed the output before recovery
    assert not np.array_equal(run(bad, cf_feeds(False))[0], run(sealed, cf_feeds(False))[0])


# --------------------------------------------------------------------------- external data


def test_external_data_stays_external_beside_the_output(tmp_path: Path, ext_file: Path, key: paramseal.Key) -> None:
    src_listing = helpers.listing(ext_file.parent)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "sealed.onnx"
    files.seal_file(ext_file, out, key)
    assert helpers.listing(ext_file.parent) == src_listing  # the input and its data are untouched
    assert sorted(p.name for p in out_dir.iterdir()) == ["sealed.onnx", "sealed.onnx.data"]
    m, orig = onnx.load(str(out), load_external_data=False), onnx.load(str(ext_file), load_external_data=False)
    layout = {n: {e.key: e.value for e in t.external_data} for n, t in _protos(m) if t.data_location == 1}
    orig_layout = {n: {e.key: e.value for e in t.external_data} for n, t in _protos(orig) if t.data_location == 1}
    assert set(layout) == set(orig_layout) and len(layout) >= 10
    for n, info in layout.items():
        assert info == {**orig_layout[n], "location": "sealed.onnx.data"}, n
    assert (out_dir / "sealed.onnx.data").stat().st_size == (ext_file.parent / "ext.onnx.data").stat().st_size
    assert files.verify_file(out, key).status == "intact"
    x = {"X": np.linspace(-2, 2, 16, dtype=np.float32).reshape(2, 8)}
    (ya,), (yb,) = run(ext_file, x), run(out, x)
    assert 0 < np.abs(ya - yb).max() <= 1e-4 * np.abs(ya).max()


def test_tampered_external_data_is_located_and_recovered_into_external_data(
    tmp_path: Path, ext_file: Path, key: paramseal.Key
) -> None:
    sealed = tmp_path / "sealed.onnx"
    files.seal_file(ext_file, sealed, key)
    m = onnx.load(str(sealed), load_external_data=False)
    off = {n: int({e.key: e.value for e in t.external_data}["offset"]) for n, t in _protos(m) if t.data_location == 1}
    data = tmp_path / "sealed.onnx.data"
    good = data.read_bytes()
    raw = bytearray(good)
    raw[off["W2"] + 4 * 20 + 3] ^= 0x40  # W2[20], an exponent bit
    data.write_bytes(bytes(raw))
    rep = files.verify_file(sealed, key)
    assert rep.status == "tampered" and rep.tampered_tensors == ["W2"]
    fixed_dir = tmp_path / "fixed"
    fixed_dir.mkdir()
    res = files.recover_file(sealed, fixed_dir / "fixed.onnx", key)
    assert res.report.status == "recovered"
    assert (fixed_dir / "fixed.onnx.data").read_bytes() == good
    assert files.verify_file(fixed_dir / "fixed.onnx", key).status == "intact"


def test_an_external_data_location_that_is_not_utf8_is_exit_3_not_an_internal_error(
    tmp_path: Path, ext_file: Path, key_file: Path
) -> None:
    """protobuf hands such a string field over as bytes, and the location check raised TypeError (found by a
    byte-flip fuzz): verify, recover, inspect and seal ended in 'internal error' with a traceback."""
    raw = ext_file.read_bytes()
    name = ext_file.name.encode() + b".data"
    assert name in raw
    bad = ext_file.with_name("bad.onnx")
    bad.write_bytes(raw.replace(name, name[:-6] + b"\xf8.data", 1))  # one byte of the name, the length kept
    out = tmp_path / "o.onnx"
    for argv in (["verify", bad, "--key", key_file], ["recover", bad, out, "--key", key_file], ["inspect", bad]):
        rc, _, err = helpers.run_cli(argv)
        assert rc == 3 and "has malformed external_data (text that is not UTF-8)" in err, (argv, err)
    rc, _, err = helpers.run_cli(["seal", bad, out, "--key", key_file])
    assert rc == 3 and "Traceback" not in err and not out.exists(), err


def test_one_external_file_per_tensor_keeps_that_layout(tmp_path: Path, key: paramseal.Key) -> None:
    src = tmp_path / "src" / "m.onnx"
    src.parent.mkdir()
    onnx.save_model(
        mlp(np.random.default_rng(6)), str(src), save_as_external_data=True, all_tensors_to_one_file=False,
        size_threshold=0,
    )  # fmt: skip
    n_files = len(list(src.parent.iterdir())) - 1
    out = tmp_path / "sealed.onnx"
    files.seal_file(src, out, key)
    side = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("sealed.onnx."))
    assert side == sorted(f"sealed.onnx.{i}.data" for i in range(1, n_files + 1)) and n_files >= 10
    assert files.verify_file(out, key).status == "intact"
    x = {"X": np.linspace(-2, 2, 16, dtype=np.float32).reshape(2, 8)}
    (ya,), (yb,) = run(src, x), run(out, x)
    assert 0 < np.abs(ya - yb).max() <= 1e-4 * np.abs(ya).max()


def test_a_failed_write_leaves_no_external_data_behind(
    tmp_path: Path, ext_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def disk_full(self: Path, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OSError, match="No space"):
        files.seal_file(ext_file, out_dir / "sealed.onnx", key)
    assert list(out_dir.iterdir()) == []


def test_a_side_file_that_cannot_be_written_is_named_as_the_output_not_read_as_an_input(
    tmp_path: Path, ext_file: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    real = os.replace

    def replace(a: Any, b: Any) -> None:
        if str(b).endswith(".data"):  # the side file cannot be put in place
            raise OSError(errno.EACCES, "Permission denied")
        real(a, b)

    monkeypatch.setattr("os.replace", replace)
    before = helpers.listing(tmp_path)
    rc, stdout, stderr = helpers.run_cli(["seal", ext_file, out_dir / "sealed.onnx", "--key", key_file])
    assert rc == 3, (stdout, stderr)
    assert stderr.startswith("error: cannot write ") and "sealed.onnx.data'" in stderr, stderr
    assert "cannot read" not in stderr and ".tmp" not in stderr, stderr
    assert helpers.listing(tmp_path) == before


def test_another_models_file_with_the_side_files_name_is_kept(
    tmp_path: Path, ext_file: Path, key: paramseal.Key, key_file: Path
) -> None:
    """A file named like the output's data that neither the input nor the replaced model uses may be another's."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    other = out_dir / "sealed.onnx.data"
    other.write_bytes(b"another model's weights")
    rc, _, err = helpers.run_cli(["seal", ext_file, out_dir / "sealed.onnx", "--key", key_file])
    assert rc == 0, err
    assert other.read_bytes() == b"another model's weights"
    (side,) = _side_names(out_dir / "sealed.onnx")
    assert side != "sealed.onnx.data" and sorted(p.name for p in out_dir.iterdir()) == sorted(
        ["sealed.onnx", side, "sealed.onnx.data"]
    )
    assert files.verify_file(out_dir / "sealed.onnx", key).status == "intact"


def test_a_replaced_models_data_file_you_may_not_write_is_refused_before_any_work(
    tmp_path: Path, ext_file: Path, key: paramseal.Key, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new data goes to a fresh name, but the old pair's data is deleted once the new model is in place.

    A read-only (or another user's) data file went without a word, though the model beside it would be
    refused (exit 3); now it is refused the same way. --in-place still replaces a read-only model's data.
    """
    helpers.as_a_user(monkeypatch)
    out = tmp_path / "o" / "m.onnx"
    out.parent.mkdir()
    files.seal_file(ext_file, out, key)
    (side,) = _side_names(out)
    (out.parent / side).chmod(0o444)
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    for argv in (
        ["seal", ext_file, out, "--key", key_file, "--reseal"],
        ["recover", ext_file, out, "--key", key_file],
        ["attack", "--kind", "bitflip", ext_file, out],
    ):
        rc, _, err = helpers.run_cli(argv)
        assert rc == 3 and f"cannot write '{out.parent / side}' (the external data of '{out}'" in err, err
        assert "mode 444" in err and {p.name: p.read_bytes() for p in out.parent.iterdir()} == before
    rc, _, err = helpers.run_cli(["recover", out, out, "--key", key_file, "--in-place"])
    assert rc == 0 and not (out.parent / side).exists() and files.verify_file(out, key).status == "intact", err


def test_the_data_files_take_the_replaced_models_mode(
    tmp_path: Path, ext_file: Path, key: paramseal.Key, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only model sealed --in-place stays read-only, and so does its new data (it came out writable)."""
    helpers.as_a_user(monkeypatch)
    ext_file.chmod(0o444)
    (ext_file.parent / "ext.onnx.data").chmod(0o444)
    rc, _, err = helpers.run_cli(["seal", ext_file, ext_file, "--key", key_file, "--in-place"])
    assert rc == 0, err
    (side,) = _side_names(ext_file)
    assert [stat.S_IMODE(p.stat().st_mode) for p in (ext_file, ext_file.parent / side)] == [0o444, 0o444]
    out = tmp_path / "o.onnx"
    out.write_bytes(b"an older model")
    out.chmod(0o640)
    assert helpers.run_cli(["recover", ext_file, out, "--key", key_file])[0] == 0
    (side,) = _side_names(out)
    assert [stat.S_IMODE(p.stat().st_mode) for p in (out, tmp_path / side)] == [0o640, 0o640]
    assert files.verify_file(out, key).status == "intact"


def test_typed_field_model_seals_and_runs_in_onnxruntime(tmp_path: Path, key: paramseal.Key) -> None:
    src = save(mlp(np.random.default_rng(8), typed=True), tmp_path / "typed.onnx")
    out = tmp_path / "sealed.onnx"
    files.seal_file(src, out, key)
    assert all(not t.HasField("raw_data") for _, t in _protos(onnx.load(str(out))) if t.dims and t.dims[0])
    x = {"X": np.linspace(-2, 2, 16, dtype=np.float32).reshape(2, 8)}
    (ya,), (yb,) = run(src, x), run(out, x)
    assert 0 < np.abs(ya - yb).max() <= 1e-4 * np.abs(ya).max()
    assert files.verify_file(out, key).status == "intact"


@pytest.mark.parametrize(
    ("name", "change"),
    [("half", 0x10000), ("brain", -0x10000), ("codes", 0x100), ("mask", 1)],
    ids=["float16_high_bits", "bfloat16_negative", "uint8_high_bits", "bool_2"],
)
def test_typed_values_out_of_their_dtypes_range_are_tampering_not_intact(
    tmp_path: Path, key: paramseal.Key, name: str, change: int
) -> None:
    """int32_data wider than the dtype: the low bits read the sealed value, but loaders differ on the rest."""
    model = mlp(np.random.default_rng(8), typed=True)
    model.graph.node.append(helper.make_node("Cast", [name], ["used"], to=F32))  # else onnxruntime drops it
    model.graph.output.append(helper.make_tensor_value_info("used", F32, None))
    src = save(model, tmp_path / "typed.onnx")
    sealed = tmp_path / "sealed.onnx"
    files.seal_file(src, sealed, key)
    m = onnx.load(str(sealed))
    t = next(t for t in m.graph.initializer if t.name == name)
    i = next(i for i, v in enumerate(t.int32_data) if v)  # a 1 (True) for the bool: 2 stays True
    t.int32_data[i] += change
    bad = save(m, tmp_path / "bad.onnx")
    same = adapter_for(sealed).read(sealed).tensors[name]
    assert adapter_for(bad).read(bad).tensors[name].tobytes() == same.tobytes()  # ParamSeal reads the low bits
    if name in ("half", "brain"):  # the model no longer loads in onnxruntime
        with pytest.raises(Exception, match="data overflow"):
            run(bad, {"X": np.zeros((1, 8), np.float32)})
    rep = files.verify_file(bad, key)
    assert rep.status == "tampered" and rep.exit_code == 1 and rep.tampered_tensors == []
    assert any(f"'{name}'" in m and "int32_data" in m for m in rep.metadata_issues)
    fixed = tmp_path / "fixed.onnx"
    assert files.recover_file(bad, fixed, key).report.status == "recovered"
    assert files.verify_file(fixed, key).status == "intact"
    run(fixed, {"X": np.zeros((1, 8), np.float32)})


def _side_names(model: Path) -> set[str]:
    m = onnx.load(str(model), load_external_data=False)
    return {{e.key: e.value for e in t.external_data}["location"] for _, t in _protos(m) if t.data_location == 1}


def test_never_overwrites_the_inputs_external_data(tmp_path: Path, key: paramseal.Key, key_file: Path) -> None:
    src = save(mlp(np.random.default_rng(4)), tmp_path / "a.onnx", external=False)
    m = onnx.load(str(src))
    onnx.save_model(m, str(src), save_as_external_data=True, location="b.onnx.data", size_threshold=0)
    before = helpers.listing(tmp_path)
    rc, _, err = helpers.run_cli(["seal", src, tmp_path / "b.onnx", "--key", key_file])
    assert rc == 0, err
    after = helpers.listing(tmp_path)
    assert {n: after[n] for n in before} == before  # the input's data file, named like the output's, is kept
    (side,) = _side_names(tmp_path / "b.onnx")
    assert side != "b.onnx.data" and set(after) == {*before, "b.onnx", side}
    assert files.verify_file(tmp_path / "b.onnx", key).status == "intact"


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(28, "No space left on device")], ids=["ctrl-c", "full"])
def test_an_interrupted_rewrite_leaves_a_model_that_matches_its_external_data(
    tmp_path: Path, ext_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    """Stopped at each rename in turn, the output is the old sealed pair or the new one, never a mix."""
    out = tmp_path / "out" / "sealed.onnx"
    out.parent.mkdir()
    files.seal_file(ext_file, out, key)
    real = __import__("os").replace
    for stop in range(1, 10):
        calls = 0

        def replace(a: Any, b: Any, _stop: int = stop) -> None:
            nonlocal calls
            calls += 1
            if calls == _stop:
                raise error
            real(a, b)

        monkeypatch.setattr("os.replace", replace)
        try:
            files.seal_file(ext_file, out, key)
            done = True
        except (KeyboardInterrupt, OSError):
            done = False
        monkeypatch.setattr("os.replace", real)
        assert files.verify_file(out, key).status == "intact", stop
        # no temporary files and no side file the model does not use
        assert sorted(p.name for p in out.parent.iterdir()) == sorted({"sealed.onnx", *_side_names(out)}), stop
        if done:
            break
    assert done and stop >= 3  # the side file's rename, the model's, the caller's


def test_old_side_files_are_removed_only_when_paramseal_named_them(
    tmp_path: Path, ext_file: Path, key: paramseal.Key
) -> None:
    out = tmp_path / "o" / "m.onnx"
    out.parent.mkdir()
    onnx.save_model(onnx.load(str(ext_file)), str(out), save_as_external_data=True, location="weights.bin")
    files.seal_file(ext_file, out, key)  # replaces a model whose data file may be shared: it stays
    assert (out.parent / "weights.bin").exists() and _side_names(out) == {"m.onnx.data"}
    files.seal_file(ext_file, out, key)  # replaces ParamSeal's own pair: the old data file goes
    (side,) = _side_names(out)
    assert side != "m.onnx.data" and sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["m.onnx", side, "weights.bin"]
    )
    assert files.verify_file(out, key).status == "intact"


def test_in_place_seal_and_recover_of_a_model_with_external_data(
    tmp_path: Path, ext_file: Path, key: paramseal.Key, key_file: Path
) -> None:
    folder = ext_file.parent
    assert _side_names(ext_file) == {"ext.onnx.data"}  # ParamSeal's own naming: the output's name is taken
    rc, _, err = helpers.run_cli(["seal", ext_file, ext_file, "--key", key_file, "--in-place"])
    assert rc == 0, err
    (side,) = _side_names(ext_file)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["ext.onnx", side])
    assert files.verify_file(ext_file, key).status == "intact"
    good = (folder / side).read_bytes()
    m = onnx.load(str(ext_file), load_external_data=False)
    off = {n: int({e.key: e.value for e in t.external_data}["offset"]) for n, t in _protos(m) if t.data_location == 1}
    raw = bytearray(good)
    raw[off["W1"] + 4 * 7 + 2] ^= 0x10
    (folder / side).write_bytes(bytes(raw))
    rc, _, err = helpers.run_cli(["recover", ext_file, ext_file, "--key", key_file, "--in-place"])
    assert rc == 0, err
    (fixed,) = _side_names(ext_file)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["ext.onnx", fixed])
    assert (folder / fixed).read_bytes() == good
    assert files.verify_file(ext_file, key).status == "intact"


def test_in_place_seal_keeps_a_data_file_another_model_in_the_folder_names(
    tmp_path: Path, ext_file: Path, key_file: Path
) -> None:
    """'ext.onnx.data' has ParamSeal's name for ext.onnx's data, but a copy of the model file shares it: the
    in-place seal deleted it without a word, and the copy no longer loaded. It is kept, and seal says so."""
    folder = ext_file.parent
    shared = folder / "ext.onnx.data"
    before = shared.read_bytes()
    copy = shutil.copy(ext_file, folder / "copy.onnx")
    rc, _, err = helpers.run_cli(["seal", ext_file, ext_file, "--key", key_file, "--in-place"])
    assert rc == 0, err
    (side,) = _side_names(ext_file)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["ext.onnx", side, "copy.onnx", "ext.onnx.data"])
    assert shared.read_bytes() == before
    assert "warning: kept 'ext.onnx.data'" in err and "'copy.onnx'" in err and f"'{side}'" in err, err
    feeds = {"X": np.ones((1, 8), np.float32)}
    assert run(copy, feeds)[0].shape == run(ext_file, feeds)[0].shape
    # once no other model names it, the next rewrite removes ParamSeal's own data of the replaced model
    Path(copy).unlink()
    rc, _, err = helpers.run_cli(["recover", ext_file, ext_file, "--key", key_file, "--in-place"])
    assert rc == 0 and "warning" not in err, err
    (fixed,) = _side_names(ext_file)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["ext.onnx", fixed, "ext.onnx.data"])


def test_in_place_seal_removes_its_data_file_when_another_model_names_only_a_longer_name_ending_in_it(
    tmp_path: Path, ext_file: Path, key_file: Path
) -> None:
    """'next.onnx' beside 'ext.onnx' uses 'next.onnx.data', whose name holds 'ext.onnx.data': the search of its
    bytes took that for a use, kept the replaced model's data and warned that 'next.onnx' may use it."""
    folder = ext_file.parent
    save(mlp(np.random.default_rng(5)), folder / "next.onnx", external=True)
    rc, _, err = helpers.run_cli(["seal", ext_file, ext_file, "--key", key_file, "--in-place"])
    assert rc == 0 and "warning" not in err, err
    (side,) = _side_names(ext_file)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["ext.onnx", side, "next.onnx", "next.onnx.data"])


def test_in_place_through_a_link_into_another_folder_keeps_the_external_data_beside_the_link(
    tmp_path: Path, ext_file: Path, key: paramseal.Key
) -> None:
    """A reader finds external data beside the name it opens: side files written beside the link's target were lost."""
    (tmp_path / "blobs").mkdir()
    blob = ext_file.rename(tmp_path / "blobs" / "ext.onnx")
    ext_file.symlink_to(blob)
    files.seal_file(ext_file, ext_file, key, in_place=True)
    assert files.verify_file(ext_file, key).status == "intact"
    assert [p.name for p in blob.parent.iterdir()] == ["ext.onnx"]


def test_a_sealed_model_is_never_written_as_a_graphless_onnx(
    tmp_path: Path, model_file: Path, key: paramseal.Key, key_file: Path
) -> None:
    before = helpers.listing(tmp_path)
    rc, _, err = helpers.run_cli(["seal", model_file, tmp_path / "conv.onnx", "--key", key_file])
    assert rc == 3 and "graph" in err and ".safetensors" in err, err
    assert helpers.listing(tmp_path) == before
    sealed = tmp_path / "s.safetensors"
    files.seal_file(model_file, sealed, key)
    before = helpers.listing(tmp_path)
    rc, _, err = helpers.run_cli(["recover", sealed, tmp_path / "r.onnx", "--key", key_file])
    assert rc == 3 and "graph" in err, err
    assert helpers.listing(tmp_path) == before
    # sealed with user metadata into .npy: refused as graphless, not sent to --header-from, which cannot help
    one, arr = tmp_path / "one.safetensors", tmp_path / "one.npy"
    w = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
    files.write_model(one, Loaded({"w": w}, {"run": "7"}))
    files.seal_file(one, arr, key)
    before = helpers.listing(tmp_path)
    rc, _, err = helpers.run_cli(["recover", arr, tmp_path / "r.onnx", "--key", key_file])
    assert rc == 3 and "ONNX needs the model's graph" in err and "--header-from" not in err, err
    assert helpers.listing(tmp_path) == before


@pytest.mark.parametrize("out", [".npy"])
def test_an_onnx_models_seal_is_never_written_where_its_graph_digest_cannot_be_kept(
    tmp_path: Path, key: paramseal.Key, key_file: Path, out: str
) -> None:
    """An .npy stores no metadata, so it would lose the sealed graph digest that verify checks.

    Seal and recover said OK and wrote a file that verify called tampered (exit 2: the ParamSeal
    entries 'are not the ones sealed'), intact or not (a .pt too, before it kept metadata in its
    _metadata); .npz and .pt keep the digest and verify.
    """
    w = np.random.default_rng(7).standard_normal((300, 512)).astype(np.float32)  # room for the header copies
    plain = make_file(tmp_path / "m.onnx", {"w": w})
    sealed = tmp_path / "s.onnx"
    files.seal_file(plain, sealed, key)
    tampered = tmp_path / "t.onnx"
    flip(sealed, tampered, {"w": (1000, 30)})
    for cmd, src in (("seal", plain), ("recover", sealed), ("recover", tampered)):
        before = helpers.listing(tmp_path)
        rc, so, err = helpers.run_cli([cmd, src, tmp_path / f"o{out}", "--key", key_file])
        assert rc == 3 and "paramseal.graph" in err and ".npz" in err and "OK" not in so, (cmd, src, so, err)
        assert helpers.listing(tmp_path) == before
    for kept in (tmp_path / "o.npz", tmp_path / "o.pt"):
        rc, so, err = helpers.run_cli(["recover", tampered, kept, "--key", key_file])
        assert rc == 0 and "OK: recovered" in so, err
        assert helpers.run_cli(["verify", kept, "--key", key_file])[0] == 0


# --------------------------------------------------------------------------- malformed input


def _drop_opset(raw: bytes) -> bytes:
    m = onnx.ModelProto()
    m.ParseFromString(raw)
    cut = onnx.ModelProto()
    cut.CopyFrom(m)
    cut.ClearField("opset_import")
    del cut.metadata_props[:]
    short = cut.SerializeToString()
    assert raw.startswith(short)  # a protobuf cut exactly at a field boundary still parses
    return short


def _edit(fn: Callable[[Any], None]) -> Callable[[bytes], bytes]:
    def make(raw: bytes) -> bytes:
        m = onnx.ModelProto()
        m.ParseFromString(raw)
        fn(m)
        return m.SerializeToString()

    return make


def _first_init(m: Any) -> Any:
    return m.graph.initializer[0]


def _key_twice(m: Any) -> None:
    """The first metadata_props entry (the seal header of a sealed model) again, as a second value for its key."""
    if not m.metadata_props:
        m.metadata_props.add(key="k", value="v")
    m.metadata_props.add(key=m.metadata_props[0].key, value=m.metadata_props[0].value)


MALFORMED: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "truncated_by_one_byte": lambda raw: raw[:-1],
    "cut_at_a_field_boundary": _drop_opset,
    "empty": lambda raw: b"",
    "garbage": lambda raw: bytes(range(256)) * 4,
    "trailing_garbage": lambda raw: raw + b"\0" * 16,
    "raw_data_too_short": _edit(lambda m: setattr(_first_init(m), "raw_data", _first_init(m).raw_data[:-4])),
    "negative_dim": _edit(lambda m: _first_init(m).dims.__setitem__(0, -1)),
    # no bytes, but numpy counts the other dimensions too: no array has this shape
    "empty_with_a_huge_dim": _edit(
        lambda m: m.graph.initializer.append(helper.make_tensor("z", TensorProto.FLOAT, [0, 2**62], b"", raw=True))
    ),
    "string_tensor": _edit(
        lambda m: m.graph.initializer.append(helper.make_tensor("s", TensorProto.STRING, [1], [b"x"]))
    ),
    "typed_values_too_few": _edit(
        lambda m: m.graph.initializer.append(TensorProto(name="t", data_type=F32, dims=[4], float_data=[1.0, 2.0, 3.0]))
    ),
    # two values for one key (the seal header here): a reader would have to pick one
    "metadata_key_twice": _edit(_key_twice),
    "unsupported_dtype": _edit(lambda m: setattr(_first_init(m), "data_type", TensorProto.FLOAT4E2M1)),
    # a dtype read (to report a tensor retyped), whose size the tensor's bytes do not match
    "complex_over_f32_bytes": _edit(lambda m: setattr(_first_init(m), "data_type", TensorProto.COMPLEX64)),
    "float8_over_f32_bytes": _edit(lambda m: setattr(_first_init(m), "data_type", TensorProto.FLOAT8E4M3FN)),
    "segmented_tensor": _edit(lambda m: _first_init(m).segment.CopyFrom(TensorProto.Segment(begin=0, end=1))),
    "sparse_initializer": _edit(
        lambda m: m.graph.sparse_initializer.append(
            helper.make_sparse_tensor(
                numpy_helper.from_array(np.ones(1, np.float32), "sp"),
                numpy_helper.from_array(np.zeros(1, np.int64), "i"),
                [3],
            )
        )
    ),
}


@pytest.mark.parametrize("verb", ["verify", "seal", "inspect"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_onnx_is_exit_3_naming_the_file_and_writing_nothing(
    tmp_path: Path, mlp_file: Path, key: paramseal.Key, key_file: Path, case: str, verb: str
) -> None:
    sealed = tmp_path / "sealed.onnx"
    files.seal_file(mlp_file, sealed, key)
    bad = tmp_path / f"bad_{case}.onnx"
    bad.write_bytes(MALFORMED[case](sealed.read_bytes()))
    out = tmp_path / "out.onnx"
    before = helpers.listing(tmp_path)
    argv = {
        "verify": ["verify", bad, "--key", key_file, "--json"],
        "seal": ["seal", bad, out, "--key", key_file],
        "inspect": ["inspect", bad],
    }[verb]
    rc, stdout, stderr = helpers.run_cli(argv)
    assert rc == 3, (stdout, stderr)
    assert stderr.startswith("error: ") and bad.name in stderr and "Traceback" not in stderr + stdout
    assert helpers.listing(tmp_path) == before


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("truncated", "truncated"),
        ("missing", "cannot read its external data"),
        ("outside", "outside the model's folder"),
        ("absolute_location", "outside the model's folder"),
        ("negative_offset", "malformed external_data"),
        ("a_folder", "cannot read its external data"),
        ("length", "external length"),
        ("nul_in_location", "malformed external_data"),
        ("dims_past_the_file", "truncated"),  # 4 TiB claimed: reported, not allocated
    ],
)
def test_bad_external_data_is_a_format_error(
    tmp_path: Path, ext_file: Path, key_file: Path, case: str, message: str
) -> None:
    data = ext_file.parent / "ext.onnx.data"
    match case:
        case "truncated":
            data.write_bytes(data.read_bytes()[:-10])
        case "missing":
            data.unlink()
        case "a_folder":
            data.unlink()
            data.mkdir()
        case "outside" | "absolute_location" | "negative_offset" | "length" | "nul_in_location" | "dims_past_the_file":
            shutil.copy(data, tmp_path / "ext.onnx.data")  # there to be read, were '..' followed
            m = onnx.load(str(ext_file), load_external_data=False)
            t = m.graph.initializer[0]
            for e in t.external_data:
                if case == "outside" and e.key == "location":
                    e.value = "../ext.onnx.data"
                if case == "absolute_location" and e.key == "location":  # the model's own data file, named absolutely
                    e.value = str(data.resolve())
                if case == "negative_offset" and e.key == "offset":
                    e.value = "-4"
                if case == "nul_in_location" and e.key == "location":
                    e.value = "ext.onnx\0.data"
                if case == "length" and e.key == "length":
                    e.value = str(int(e.value) + 4)
            if case == "dims_past_the_file":
                del t.dims[:]
                t.dims.append(2**40)
                keep = [(e.key, e.value) for e in t.external_data if e.key != "length"]
                del t.external_data[:]
                for k, v in keep:
                    t.external_data.add(key=k, value=v)
            ext_file.write_bytes(m.SerializeToString())
    with pytest.raises(FormatError, match=message):
        ADAPTER.read(ext_file)
    before = helpers.listing(tmp_path)
    rc, _, err = helpers.run_cli(["seal", ext_file, tmp_path / "o.onnx", "--key", key_file])
    assert rc == 3 and ext_file.name in err and message in err
    assert helpers.listing(tmp_path) == before


def test_external_data_that_is_a_fifo_is_refused_without_waiting_for_a_writer(
    tmp_path: Path, ext_file: Path, key_file: Path
) -> None:
    data = ext_file.parent / "ext.onnx.data"
    data.unlink()
    os.mkfifo(data)
    got: list[BaseException] = []

    def read() -> None:
        try:
            ADAPTER.read(ext_file)
        except BaseException as e:
            got.append(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    waited = reader.is_alive()
    if waited:  # give it a writer, so that the test fails rather than hangs
        os.close(os.open(data, os.O_WRONLY | os.O_NONBLOCK))
        reader.join()
    assert not waited, "reading the model waited for a writer to its FIFO"
    assert isinstance(got[0], FormatError) and "not a regular file" in str(got[0])
    rc, _, err = helpers.run_cli(["seal", ext_file, tmp_path / "o.onnx", "--key", key_file])
    assert rc == 3 and "not a regular file" in err and not (tmp_path / "o.onnx").exists()


def test_external_data_that_is_a_loop_of_links_is_a_format_error_read_or_replaced(
    tmp_path: Path, ext_file: Path, key_file: Path
) -> None:
    """Path.resolve raised RuntimeError ('Symlink loop'): a traceback and 'internal error' from every verb."""
    data = ext_file.parent / "ext.onnx.data"
    intact = data.read_bytes()
    data.unlink()
    data.symlink_to(data.name)
    with pytest.raises(FormatError, match="external data 'ext.onnx.data': it is a loop of symbolic links"):
        ADAPTER.read(ext_file)
    for argv in (["verify", ext_file, "--key", key_file], ["seal", ext_file, tmp_path / "o.onnx", "--key", key_file]):
        rc, _, err = helpers.run_cli(argv)
        assert rc == 3 and "it is a loop of symbolic links" in err and len(err.splitlines()) == 1, err
    # an output replaced: the old model's data is a loop, which is left as it is
    data.unlink()
    data.write_bytes(intact)
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(ext_file, out / "ext.onnx")
    (out / "ext.onnx.data").symlink_to("ext.onnx.data")
    rc, _, err = helpers.run_cli(["seal", ext_file, out / "ext.onnx", "--key", key_file])
    assert rc == 0 and "Traceback" not in err and (out / "ext.onnx.data").is_symlink(), err


def test_external_data_linked_from_outside_the_folder_is_refused_saying_it_is_a_link(
    tmp_path: Path, ext_file: Path, key_file: Path
) -> None:
    """As in the Hugging Face cache: the data's name is in the folder, the file a link to a blob elsewhere."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    data = ext_file.parent / "ext.onnx.data"
    data.rename(blobs / "abc")
    data.symlink_to(blobs / "abc")
    rc, _, err = helpers.run_cli(["verify", ext_file, "--key", key_file])
    assert rc == 3 and "symbolic link" in err and "cp -L" in err and "Traceback" not in err


def test_tensors_sharing_external_bytes_are_refused_not_sealed_into_a_broken_model(
    tmp_path: Path, key_file: Path
) -> None:
    """Two initializers at the same offset (deduplicated data): each would be sealed, and one overwrite the other."""
    d = tmp_path / "src"
    d.mkdir()
    w = np.random.default_rng(4).standard_normal((16, 16)).astype(np.float32)
    (d / "m.onnx.data").write_bytes(w.tobytes())
    inits = []
    for name in ("W1", "W2"):
        t = TensorProto(name=name, data_type=F32, dims=w.shape, data_location=TensorProto.EXTERNAL)
        for k, v in (("location", "m.onnx.data"), ("offset", "0"), ("length", str(w.nbytes))):
            t.external_data.add(key=k, value=v)
        inits.append(t)
    nodes = [helper.make_node("MatMul", ["X", "W1"], ["h"]), helper.make_node("MatMul", ["h", "W2"], ["Y"])]
    x, y = (helper.make_tensor_value_info(n, F32, [1, 16]) for n in ("X", "Y"))
    src = d / "m.onnx"
    onnx.save_model(_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits)), str(src))
    before = helpers.listing(tmp_path)
    rc, _, err = helpers.run_cli(["seal", src, tmp_path / "o.onnx", "--key", key_file])
    assert rc == 3 and "'W1'" in err and "'W2'" in err and "share bytes" in err and "Traceback" not in err
    assert helpers.listing(tmp_path) == before


def _values(path: Path) -> list[tuple[str, np.ndarray]]:
    m = onnx.load(str(path))
    return [(n, numpy_helper.to_array(t)) for n, t in _protos(m)] + [
        (p.key, np.array(p.value)) for p in m.metadata_props
    ]


@pytest.mark.parametrize("seed", range(10))
def test_random_byte_corruption_never_passes_with_changed_values_or_crashes(
    tmp_path: Path, cf_file: Path, key: paramseal.Key, key_file: Path, seed: int
) -> None:
    """Parser fuzz: flip random bytes anywhere. Intact is only allowed when every value and the metadata are
    unchanged (bytes of the graph itself, such as a node name, are not authenticated)."""
    sealed = tmp_path / "sealed.onnx"
    files.seal_file(cf_file, sealed, key)
    rng = np.random.default_rng(seed)
    raw = bytearray(sealed.read_bytes())
    for _ in range(int(rng.integers(1, 4))):
        raw[int(rng.integers(0, len(raw)))] ^= int(rng.integers(1, 256))
    bad = tmp_path / "fuzzed.onnx"
    bad.write_bytes(bytes(raw))
    rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file])
    assert "Traceback" not in err and rc in (0, 1, 2, 3), (rc, out, err)
    if rc == 3:
        assert err.startswith("error: ")
    if rc == 0:
        got, want = _values(bad), _values(sealed)
        assert [n for n, _ in got] == [n for n, _ in want]
        for (n, a), (_, b) in zip(got, want, strict=True):
            helpers.assert_model_equal({n: a}, {n: b})


def test_model_re_saved_by_onnx_with_external_data_still_verifies(
    tmp_path: Path, cf_file: Path, key: paramseal.Key
) -> None:
    sealed = tmp_path / "sealed.onnx"
    files.seal_file(cf_file, sealed, key)
    other = tmp_path / "other"
    other.mkdir()
    onnx.save_model(onnx.load(str(sealed)), str(other / "re.onnx"), save_as_external_data=True, size_threshold=0)
    assert files.verify_file(other / "re.onnx", key).status == "intact"


def test_without_onnx_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, mlp_file: Path, key_file: Path
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'paramseal\[onnx\]'"):
        ADAPTER.read(mlp_file)
    rc, _, err = helpers.run_cli(["verify", mlp_file, "--key", key_file])
    assert rc == 3 and "pip install 'paramseal[onnx]'" in err


def test_writing_tensors_that_do_not_match_the_graph_read_is_refused(tmp_path: Path, cf_file: Path) -> None:
    loaded = ADAPTER.read(cf_file)
    t = dict(loaded.tensors)
    t.pop("loop_b")
    t["new"] = np.ones(3, np.float32)
    with pytest.raises(FormatError, match="'loop_b'.*'new'"):
        ADAPTER.write(tmp_path / "x.onnx", Loaded(t, {}))
    assert not (tmp_path / "x.onnx").exists()


def _renamed_initializer(tmp_path: Path, key: paramseal.Key) -> Path:
    """A sealed MLP whose first initializer (and the node reading it) was renamed 'W1x'."""
    sealed = tmp_path / "sealed.onnx"
    files.seal_file(save(mlp(np.random.default_rng(2)), tmp_path / "m.onnx"), sealed, key)
    m = onnx.load(str(sealed))
    m.graph.initializer[0].name = "W1x"
    m.graph.node[0].input[1] = "W1x"
    return save(m, tmp_path / "renamed.onnx")


def test_partial_recover_of_a_model_with_a_renamed_initializer_is_a_clear_error(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """The recovered tensors carry the sealed names, which the file's graph no longer has."""
    renamed = _renamed_initializer(tmp_path, key)
    before = helpers.listing(tmp_path)
    rc, _, err = helpers.run_cli(["recover", renamed, tmp_path / "out.onnx", "--key", key_file, "--allow-partial"])
    assert rc == 3 and "'W1x'" in err and "out.onnx'" in err and "Traceback" not in err, err
    assert helpers.listing(tmp_path) == before


def test_recover_of_a_renamed_initializer_does_not_say_zero_values_were_lost(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """Every value is restored, but the graph no longer names it: the failure is the graph's, not lost values."""
    renamed = _renamed_initializer(tmp_path, key)
    rc, out, err = helpers.run_cli(["recover", renamed, tmp_path / "out.onnx", "--key", key_file])
    assert rc == 2, (out, err)
    first = out.splitlines()[0]
    assert first.startswith("FAIL: ") and "nothing written" in first and "(0 values" not in first, out
    assert "graph" in out, out


def test_fresh_tensors_are_written_as_a_graphless_container(tmp_path: Path, model: dict[str, np.ndarray]) -> None:
    p = tmp_path / "fresh.onnx"
    ADAPTER.write(p, Loaded(model, {"a": "1"}))
    back = ADAPTER.read(p)
    helpers.assert_model_equal(back.tensors, model)
    assert back.metadata == {"a": "1"}
    assert len(onnx.load(str(p)).graph.node) == 0


# --------------------------------------------------------------------------- silero-vad in onnxruntime

_spec = importlib.util.find_spec("silero_vad")
SILERO = Path(_spec.origin).parent / "data" if _spec and _spec.origin else None
VARIANTS = sorted(p.name for p in SILERO.glob("*.onnx")) if SILERO else []
CHUNKS = 300


def speechlike(n: int, sr: int) -> np.ndarray:
    """A fixed synthetic voice: a gliding pitch, harmonics shaped by vowel formants, syllables and pauses."""
    rng = np.random.default_rng(0)
    t = np.arange(n) / sr
    f0 = 120 + 25 * np.sin(2 * np.pi * 0.8 * t) + 10 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    vowels = np.array([(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480)], float)
    formants = vowels[(t * 4).astype(int) % 4]  # a new vowel every 250 ms
    y = np.zeros(n)
    for h in range(1, 30):
        f = h * f0
        gain = sum(1 / (1 + ((f - formants[:, j]) / 90) ** 2) for j in range(3)) * (f < sr / 2)
        y += gain / h**0.5 * np.sin(h * phase)
    env = ((t % 2.0) < 1.2) * np.sin(np.pi * (t % 0.25) / 0.25)  # 1.2 s of syllables, 0.8 s of pause
    return (y / np.abs(y).max() * 0.5 * env + 0.005 * rng.standard_normal(n)).astype(np.float32)


def vad(path: Path, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Speech probabilities over CHUNKS chunks, state fed back, context prepended as silero's OnnxWrapper does."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in s.get_inputs()}
    cs, ctx = (512, 64) if sr == 16000 else (256, 32)
    x = speechlike(CHUNKS * cs, sr).reshape(CHUNKS, cs)
    windows = np.concatenate([np.vstack([np.zeros((1, ctx), np.float32), x[:-1, -ctx:]]), x], axis=1)
    if "h" in names:  # the sequence variant takes every window at once
        zero = np.zeros((1, 1, 128), np.float32)
        p, h, c = s.run(None, {"input": windows, "h": zero, "c": zero})
        return np.asarray(p).reshape(-1), np.concatenate([h, c]).reshape(-1)
    state = np.zeros((2, 1, 128), np.float32)
    probs = []
    for w in windows:
        feed = {"input": w[None], "state": state}
        if "sr" in names:
            feed["sr"] = np.array(sr, np.int64)
        out, state = s.run(None, feed)
        probs.append(float(np.asarray(out).reshape(-1)[0]))
    return np.array(probs), state.reshape(-1)


def _rates(name: str) -> list[int]:
    # only the plain model and the if-less op18 export take 8 kHz too (the rest are 16k, or take no sr)
    return [16000, 8000] if name in ("silero_vad.onnx", "silero_vad_op18_ifless.onnx") else [16000]


#: Worst |delta p| over all chunks allowed at each level (measured figures are in the README).
PROB_TOL = {"light": 5e-5, "standard": 5e-4, "strong": 1e-2}


@pytest.mark.skipif(not VARIANTS, reason="silero-vad is not installed")
@pytest.mark.parametrize(
    "level", ["standard", pytest.param("light", marks=pytest.mark.slow), pytest.param("strong", marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("variant", VARIANTS)
def test_sealed_silero_vad_runs_in_onnxruntime_within_the_bound(
    tmp_path: Path, key: paramseal.Key, variant: str, level: str
) -> None:
    assert SILERO is not None
    src = SILERO / variant
    out = tmp_path / variant
    files.seal_file(src, out, key, level=level)
    assert skeleton(out) == skeleton(src)
    k = {"light": 4, "standard": 8, "strong": 12}[level]
    a, b = ADAPTER.read(src).tensors, ADAPTER.read(out).tensors
    assert all(bound_ok(a[n], b[n], k) for n in a if a[n].dtype == np.float32)
    for sr in _rates(variant):
        (pa, sa), (pb, sb) = vad(src, sr), vad(out, sr)
        diff = float(np.abs(pa - pb).max())
        print(f"{variant} {level} {sr} Hz: p in [{pa.min():.3f}, {pa.max():.3f}], max |dp| {diff:.3g}")
        assert pa.max() - pa.min() > 0.3  # the signal exercises the model
        assert 0 < diff <= PROB_TOL[level], (variant, sr, diff)
        assert np.abs(sa - sb).max() <= 100 * PROB_TOL[level]
        assert np.array_equal(pa > 0.5, pb > 0.5) or np.abs(pa - 0.5).min() <= PROB_TOL[level]


@pytest.mark.skipif("silero_vad.onnx" not in VARIANTS, reason="silero-vad is not installed")
def test_silero_tamper_in_if_subgraph_constant_is_recovered_and_runs_identically(
    tmp_path: Path, key_file: Path
) -> None:
    assert SILERO is not None
    sealed = tmp_path / "sealed.onnx"
    assert helpers.run_cli(["seal", SILERO / "silero_vad.onnx", sealed, "--key", key_file])[0] == 0
    w = "If_0_else_branch__Inline_0__encoder.0.reparam_conv.weight"  # a Constant inside the If's else branch
    b = "If_0_then_branch__Inline_0__encoder.0.reparam_conv.weight"
    bad = tmp_path / "bad.onnx"
    flip(sealed, bad, {w: (1000, 27), b: (5, 2)})
    rc, out, _ = helpers.run_cli(["verify", bad, "--key", key_file, "--json"])
    rep = json.loads(out)
    assert rc == 1 and sorted(rep["tampered_tensors"]) == sorted([w, b])
    assert rep["tensors"][w]["tampered_blocks"] == [1000 // 64] and rep["tensors"][b]["tampered_blocks"] == [0]
    fixed = tmp_path / "fixed.onnx"
    assert helpers.run_cli(["recover", bad, fixed, "--key", key_file])[0] == 0
    assert hashlib.sha256(fixed.read_bytes()).digest() == hashlib.sha256(sealed.read_bytes()).digest()
    for sr in (16000, 8000):
        pf, sf = vad(fixed, sr)
        ps, ss = vad(sealed, sr)
        assert np.array_equal(pf, ps) and np.array_equal(sf, ss)


@pytest.mark.skipif("silero_vad_op18_ifless.onnx" not in VARIANTS, reason="silero-vad is not installed")
def test_silero_with_metadata_props_stripped_still_verifies_from_the_weights(
    tmp_path: Path, key: paramseal.Key
) -> None:
    assert SILERO is not None
    sealed = tmp_path / "sealed.onnx"
    files.seal_file(SILERO / "silero_vad_op18_ifless.onnx", sealed, key)
    m = onnx.load(str(sealed))
    del m.metadata_props[:]
    onnx.save_model(m, str(tmp_path / "stripped.onnx"))
    assert files.verify_file(tmp_path / "stripped.onnx", key).status == "intact"
    flip(tmp_path / "stripped.onnx", tmp_path / "bad.onnx", {"model.decoder.rnn.weight_ih": (7, 30)})
    rep = files.verify_file(tmp_path / "bad.onnx", key)
    assert rep.tampered_tensors == ["model.decoder.rnn.weight_ih"] and rep.tensors[
        rep.tampered_tensors[0]
    ].tampered_blocks == (0,)


@pytest.mark.skipif("silero_vad_16k_op15.onnx" not in VARIANTS, reason="silero-vad is not installed")
def test_silero_tamper_in_initializer_is_located_and_recovered(tmp_path: Path, key: paramseal.Key) -> None:
    assert SILERO is not None
    sealed = tmp_path / "sealed.onnx"
    files.seal_file(SILERO / "silero_vad_16k_op15.onnx", sealed, key)
    name = "model.decoder.decoder.2.weight"
    bad = tmp_path / "bad.onnx"
    flip(sealed, bad, {name: (100, 31)})  # the sign bit
    rep = files.verify_file(bad, key)
    assert rep.tampered_tensors == [name] and rep.tensors[name].tampered_blocks == (1,)
    res = files.recover_file(bad, tmp_path / "fixed.onnx", key)
    assert res.report.status == "recovered" and list(res.report.tensors[name].restored_indices) == [100]
    assert (tmp_path / "fixed.onnx").read_bytes() == sealed.read_bytes()


def _mlp(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w1, w2 = (rng.standard_normal((256, 256)).astype(np.float32) for _ in range(2))
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "W2"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_an_edited_graph_is_tampering_that_recover_refuses(tmp_path: Path, key: paramseal.Key) -> None:
    """Two weights swapped by re-pointing the nodes, not by moving bytes: the values all verify."""
    sealed = tmp_path / "s.onnx"
    files.seal_file(_mlp(tmp_path / "m.onnx"), sealed, key)
    assert files.verify_file(sealed, key).status == "intact"

    def edited(name: str, fn: Callable[[Any], None]) -> Path:
        m = onnx.load(str(sealed))
        fn(m)
        onnx.save(m, str(tmp_path / f"{name}.onnx"))
        return tmp_path / f"{name}.onnx"

    def swap(m: Any) -> None:
        m.graph.node[0].input[1], m.graph.node[2].input[1] = "W2", "W1"

    def swap_and_hide(m: Any) -> None:  # and drop the sealed digest from the metadata too
        swap(m)
        keep = [p for p in m.metadata_props if p.key != "paramseal.graph"]
        del m.metadata_props[:]
        m.metadata_props.extend(keep)

    for name, fn in (("swap", swap), ("identity", lambda m: setattr(m.graph.node[1], "op_type", "Identity")),
                     ("hide", swap_and_hide)):  # fmt: skip
        p = edited(name, fn)
        rep = files.verify_file(p, key)
        assert rep.status == "tampered" and rep.exit_code == 2 and rep.tampered_tensors == [], name
        assert any("graph" in m for m in rep.metadata_issues), rep.metadata_issues
        res = files.recover_file(p, tmp_path / f"{name}.out.onnx", key)
        assert res.report.status == "unrecoverable" and not (tmp_path / f"{name}.out.onnx").exists()

    def typed(m: Any) -> None:  # how a value is stored is not the graph
        t = m.graph.initializer[1]
        a = numpy_helper.to_array(t)
        t.ClearField("raw_data")
        t.float_data.extend(a.ravel().tolist())

    assert files.verify_file(edited("typed", typed), key).status == "intact"
    # notes, not what runs: shape inference's value_info, the producer, doc strings
    for name, fn in (("inferred", lambda m: m.CopyFrom(onnx.shape_inference.infer_shapes(m))),
                     ("producer", lambda m: setattr(m, "producer_name", "other")),
                     ("doc", lambda m: setattr(m.graph.node[0], "doc_string", "note"))):  # fmt: skip
        assert files.verify_file(edited(name, fn), key).status == "intact", name
    m = onnx.load(str(sealed))
    onnx.save(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.data", size_threshold=0)
    assert files.verify_file(tmp_path / "ext.onnx", key).status == "intact"
    del m.metadata_props[:]  # every entry gone: the header and the graph digest come back from the weights
    onnx.save(m, str(tmp_path / "bare.onnx"))
    assert files.verify_file(tmp_path / "bare.onnx", key).status == "intact"


def _retype(src: Path, dst: Path, name: str, dtype: str, form: str = "raw") -> np.ndarray:
    """Save the model again with tensor ``name`` converted to ``dtype`` (in raw_data, its typed field, or every
    tensor in external data); its values."""
    m = onnx.load(str(src))
    (t,) = (t for n, t in _protos(m) if n == name)
    a = numpy_helper.to_array(t).astype(getattr(ml_dtypes, dtype, None) or np.dtype(dtype))
    new = TensorProto(name=t.name, data_type=helper.np_dtype_to_tensor_dtype(a.dtype), dims=a.shape)
    if "4" in dtype:  # int4, uint4, float4_e2m1fn: packed two a byte (typed: one byte in each int32_data)
        new = helper.make_tensor(t.name, new.data_type, a.shape, a, raw=form != "typed")
    elif form != "typed":
        new.raw_data = a.tobytes()
    elif a.dtype.kind == "c":  # real and imaginary parts
        field = "float_data" if a.dtype == np.complex64 else "double_data"
        getattr(new, field).extend(a.reshape(-1).view(a.real.dtype).tolist())
    else:
        new.int32_data.extend(a.reshape(-1).view(np.uint8).astype(np.int32).tolist())  # float8 bit patterns
    t.CopyFrom(new)
    save(m, dst, external=form == "external")
    return a


@pytest.mark.parametrize(
    ("dtype", "form"),
    [
        ("complex64", "raw"),
        ("float8_e4m3fn", "raw"),
        ("complex64", "typed"),
        ("float8_e5m2", "typed"),
        ("complex64", "external"),  # restored at the end of the side file: its slot no longer fits
        ("float8_e4m3fnuz", "external"),
        ("float8_e8m0fnu", "raw"),
        ("float8_e8m0fnu", "typed"),
        ("complex128", "raw"),
        ("complex128", "typed"),
        ("int4", "raw"),
        ("uint4", "typed"),
        ("float4_e2m1fn", "raw"),
        ("float4_e2m1fn", "typed"),
        ("int4", "external"),
    ],
)
def test_a_sealed_tensor_retyped_to_a_dtype_paramseal_cannot_seal_is_tampering_not_a_bad_file(
    tmp_path: Path, key_file: Path, dtype: str, form: str
) -> None:
    """verify and recover exited 3 ('has ONNX data type 14, which ParamSeal does not support') on a model whose
    sealed F32 initializer was saved again as complex or float8, as .safetensors and .pt report it (19009ea);
    the data type also changed the graph digest, which recover cannot restore. seal and inspect still refuse
    such a tensor, exit 3, naming the file and the tensor."""
    src = save(mlp(np.random.default_rng(3)), tmp_path / "m.onnx")
    sealed = tmp_path / "sealed.onnx"
    assert helpers.run_cli(["seal", src, sealed, "--key", key_file])[0] == 0
    bad = tmp_path / "retyped.onnx"
    want = _retype(sealed, bad, "b1", dtype, form)
    assert helpers.same_bytes(ADAPTER.read(bad).tensors["b1"], want)  # read as written, typed fields included
    rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file])
    assert rc == 1 and f"b1: dtype changed from F32 to {dtype}" in out and "graph" not in out, (out, err)
    drill = tmp_path / "drill.onnx"  # attack writes the retyped tensor back as it was read
    assert helpers.run_cli(["attack", bad, drill, "--kind", "bitflip", "--seed", "1"])[0] == 0
    assert str(files.read_model(drill).tensors["b1"].dtype) == dtype
    fixed = tmp_path / "fixed.onnx"
    rc, out, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file])
    assert rc == 0, (out, err)
    helpers.assert_model_equal(ADAPTER.read(fixed).tensors, ADAPTER.read(sealed).tensors)
    if form == "raw":  # typed: F32 values go to float_data; external: to side files
        assert fixed.read_bytes() == sealed.read_bytes()
    assert helpers.run_cli(["verify", fixed, "--key", key_file])[0] == 0
    x = {"X": np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)}
    assert helpers.same_bytes(run(fixed, x)[0], run(sealed, x)[0])
    unsealed = tmp_path / "u.onnx"
    _retype(src, unsealed, "b1", dtype, form)
    for argv in (["seal", unsealed, tmp_path / "o.onnx", "--key", key_file], ["inspect", unsealed]):
        rc, _, err = helpers.run_cli(argv)
        assert rc == 3 and f"'{unsealed}'" in err and f"tensor 'b1': dtype {dtype} is not supported" in err, err
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("form", ["raw", "typed"])
def test_a_sealed_tensor_of_an_odd_count_retyped_to_4_bits_reads_without_its_pad_nibble(
    tmp_path: Path, key_file: Path, form: str
) -> None:
    """33 values in 17 bytes (the last high nibble pads): read as 33, written back as 17; recover restores the
    sealed model byte for byte."""
    src = save(mlp(np.random.default_rng(3)), tmp_path / "m.onnx")
    sealed = tmp_path / "sealed.onnx"
    assert helpers.run_cli(["seal", src, sealed, "--key", key_file])[0] == 0
    bad = tmp_path / "retyped.onnx"
    want = _retype(sealed, bad, "brain", "uint4", form)
    assert want.shape == (33,) and helpers.same_bytes(ADAPTER.read(bad).tensors["brain"], want)
    rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file])
    assert rc == 1 and "brain: dtype changed from BF16 to uint4" in out, (out, err)
    drill = tmp_path / "drill.onnx"
    assert helpers.run_cli(["attack", bad, drill, "--kind", "bitflip", "--seed", "1", "--tensor", "b1"])[0] == 0
    (t,) = (t for n, t in _protos(onnx.load(str(drill))) if n == "brain")
    assert len(t.raw_data if form == "raw" else t.int32_data) == 17
    assert helpers.same_bytes(numpy_helper.to_array(t), want)
    fixed = tmp_path / "fixed.onnx"
    rc, out, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file])
    assert rc == 0, (out, err)
    helpers.assert_model_equal(ADAPTER.read(fixed).tensors, ADAPTER.read(sealed).tensors)
    if form == "raw":
        assert fixed.read_bytes() == sealed.read_bytes()


def _ext_layout(path: Path) -> dict[str, tuple[str, int, int]]:
    """(side file, offset, length) of every external tensor of the model at ``path``."""
    m = onnx.load(str(path), load_external_data=False)
    info = {n: {e.key: e.value for e in t.external_data} for n, t in _protos(m) if t.data_location == 1}
    return {n: (i["location"], int(i["offset"]), int(i["length"])) for n, i in info.items()}


def test_a_tensor_restored_to_its_slots_length_goes_back_into_its_slot_and_the_side_file_does_not_grow(
    tmp_path: Path, key_file: Path
) -> None:
    """recover put every retyped external tensor after the end of its side file, even one whose restored bytes
    have the slot's length (float16 saved again as bfloat16): the side file grew by a page and more, and left a
    hole where the tensor was; it now goes back at its offset. A slot it no longer fits still moves to the end."""
    src = save(mlp(np.random.default_rng(3)), tmp_path / "src.onnx", external=True)
    sealed = tmp_path / "sealed.onnx"
    assert helpers.run_cli(["seal", src, sealed, "--key", key_file])[0] == 0
    want = ADAPTER.read(sealed).tensors
    bad = tmp_path / "bad" / "bad.onnx"
    bad.parent.mkdir()
    _retype(sealed, tmp_path / "half.onnx", "half", "bfloat16", "external")  # same width: the slot keeps its length
    _retype(tmp_path / "half.onnx", bad, "b1", "complex64", "external")  # twice the width: the F32 bytes no longer fit
    before, data = _ext_layout(bad), (bad.parent / "bad.onnx.data").read_bytes()
    assert before["half"][2] == want["half"].nbytes and before["b1"][2] == 2 * want["b1"].nbytes
    fixed = tmp_path / "fixed" / "fixed.onnx"
    fixed.parent.mkdir()
    rc, out, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file])
    assert rc == 0, (out, err)
    assert (bad.parent / "bad.onnx.data").read_bytes() == data  # the input's side file is not written to
    after = _ext_layout(fixed)
    assert after["half"][1:] == before["half"][1:]
    assert after["b1"][1] >= len(data) and after["b1"][2] == want["b1"].nbytes
    assert {n: a[1:] for n, a in after.items() if n != "b1"} == {n: b[1:] for n, b in before.items() if n != "b1"}
    side = fixed.parent / after["b1"][0]
    assert side.stat().st_size == after["b1"][1] + after["b1"][2]  # nothing after the moved tensor
    loaded = onnx.load(str(fixed))
    for n, t in _protos(loaded):
        assert helpers.same_bytes(numpy_helper.to_array(t), want[n]), n
    assert helpers.run_cli(["verify", fixed, "--key", key_file])[0] == 0
    again = tmp_path / "fixed" / "again.onnx"
    assert helpers.run_cli(["recover", fixed, again, "--key", key_file])[0] == 0
    assert _ext_layout(again) == {n: (f"{again.name}.data", *a[1:]) for n, a in after.items()}
    assert (fixed.parent / "again.onnx.data").read_bytes() == side.read_bytes()


def test_a_partial_recover_of_an_external_tensor_saved_with_another_shape_writes_it_after_its_file(
    tmp_path: Path, key_file: Path
) -> None:
    """recover --allow-partial of a model whose sealed external tensor was saved again with another shape ran the
    whole recover, then exited 3 ('cannot write tensor 'b1': 1024 bytes do not fit its 512-byte slot') where the
    same model with inline data was written; the restored tensor now goes after the rest of its side file."""
    src = save(mlp(np.random.default_rng(3)), tmp_path / "src.onnx", external=True)
    sealed = tmp_path / "sealed.onnx"
    assert helpers.run_cli(["seal", src, sealed, "--key", key_file])[0] == 0
    m = onnx.load(str(sealed))
    (t,) = (t for n, t in _protos(m) if n == "b1")
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t)[:128], "b1"))
    bad = save(m, tmp_path / "bad.onnx", external=True)
    fixed = tmp_path / "fixed.onnx"
    rc, out, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file, "--allow-partial"])
    assert rc == 2 and "partial result written" in out, (out, err)
    loc, offset, length = _ext_layout(fixed)["b1"]
    want = ADAPTER.read(sealed).tensors["b1"]
    assert offset >= (tmp_path / "bad.onnx.data").stat().st_size and length == want.nbytes
    assert helpers.same_bytes(ADAPTER.read(fixed).tensors["b1"], want)
    assert helpers.run_cli(["verify", fixed, "--key", key_file])[0] == 0


@pytest.mark.parametrize(
    ("variant", "name", "dtype", "stripped"),
    [
        ("silero_vad.onnx", "If_0_else_branch__Inline_0__encoder.0.reparam_conv.weight", "complex64", False),
        ("silero_vad_op18_ifless.onnx", "model.encoder.2.reparam_conv.weight", "float8_e4m3fn", True),
    ],
)
def test_silero_with_a_weight_retyped_is_tampering_that_recover_restores_to_run_identically(
    tmp_path: Path, key_file: Path, variant: str, name: str, dtype: str, stripped: bool
) -> None:
    """A Constant inside an If branch, an initializer: saved again as complex or float8 with the onnx library.

    ``stripped``: its metadata_props dropped too (the other variants have no room for a header copy in their
    weights): the header and the graph digest then come from the weights."""
    if variant not in VARIANTS:
        pytest.skip("silero-vad is not installed")
    assert SILERO is not None
    sealed = tmp_path / "sealed.onnx"
    assert helpers.run_cli(["seal", SILERO / variant, sealed, "--key", key_file])[0] == 0
    bad = tmp_path / "bad.onnx"
    _retype(sealed, bad, name, dtype)
    bare = tmp_path / "bare.onnx"
    m = onnx.load(str(bad))
    del m.metadata_props[:]
    onnx.save(m, str(bare))
    for p in (bad, bare) if stripped else (bad,):
        rc, out, err = helpers.run_cli(["verify", p, "--key", key_file, "--json"])
        rep = json.loads(out)
        assert rc == 1 and rep["tampered_tensors"] == [name] and not rep["metadata_issues"], (p, out, err)
        assert f"dtype changed from F32 to {dtype}" in " ".join(rep["tensors"][name]["issues"])
    fixed = tmp_path / "fixed.onnx"
    assert helpers.run_cli(["recover", bad, fixed, "--key", key_file])[0] == 0
    assert fixed.read_bytes() == sealed.read_bytes()
    helpers.assert_model_equal(ADAPTER.read(fixed).tensors, ADAPTER.read(sealed).tensors)
    pf, sf = vad(fixed, 16000)
    ps, ss = vad(sealed, 16000)
    assert np.array_equal(pf, ps) and np.array_equal(sf, ss)


def _custom_op_model(node: onnx.NodeProto, w: np.ndarray) -> onnx.ModelProto:
    """A one-node model X -> Y in a custom domain, with one initializer ``w``."""
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", F32, [1])],
        [helper.make_tensor_value_info("Y", F32, [1])],
        initializer=[_tensor("w", w)],
    )
    m = helper.make_model(graph, opset_imports=[*OPSET, helper.make_opsetid("custom", 1)])
    m.ir_version = 8
    return m


def test_a_list_of_tensors_attribute_is_read_sealed_and_tamper_located(tmp_path: Path, key: paramseal.Key) -> None:
    """A TENSORS attribute (a custom op's) holds weights like any other: each is named, sealed and checked."""
    rng = np.random.default_rng(11)
    parts = [rng.standard_normal((64, 64)).astype(np.float32), rng.standard_normal(300).astype(np.float32)]
    node = helper.make_node("Mix", ["X"], ["Y"], domain="custom")
    node.attribute.append(helper.make_attribute("tables", [numpy_helper.from_array(p) for p in parts]))
    assert node.attribute[0].type == onnx.AttributeProto.TENSORS
    m = _custom_op_model(node, rng.standard_normal(5000).astype(np.float32))
    src = save(m, tmp_path / "mix.onnx")
    got = ADAPTER.read(src).tensors
    assert list(got) == ["w", "Y:tables[0]", "Y:tables[1]"]
    for i, p in enumerate(parts):
        assert helpers.same_bytes(got[f"Y:tables[{i}]"], p)
    sealed = tmp_path / "sealed.onnx"
    files.seal_file(src, sealed, key)
    tampered = onnx.load(str(sealed))
    t = tampered.graph.node[0].attribute[0].tensors[1]
    a = numpy_helper.to_array(t).copy()
    a[100] = -a[100]
    t.CopyFrom(numpy_helper.from_array(a, t.name))
    bad = save(tampered, tmp_path / "bad.onnx")
    rep = files.verify_file(bad, key)
    assert rep.status == "tampered" and rep.tampered_tensors == ["Y:tables[1]"]


def test_training_info_and_graph_list_attributes_are_covered(tmp_path: Path, key: paramseal.Key) -> None:
    """Tensors in a training_info graph and in a list-of-graphs (GRAPHS) attribute are read and sealed."""
    rng = np.random.default_rng(12)
    init_w = rng.standard_normal(3000).astype(np.float32)
    branch_w = rng.standard_normal(3000).astype(np.float32)
    node = helper.make_node("Fanout", ["X"], ["Y"], domain="custom")
    branch = helper.make_graph([_const("bw", branch_w)], "b", [], [helper.make_tensor_value_info("bw", F32, [3000])])
    node.attribute.append(helper.make_attribute("branches", [branch]))
    assert node.attribute[0].type == onnx.AttributeProto.GRAPHS
    m = _custom_op_model(node, rng.standard_normal(3000).astype(np.float32))
    ti = m.training_info.add()
    ti.initialization.CopyFrom(helper.make_graph([], "init", [], [], initializer=[_tensor("iw", init_w)]))
    src = save(m, tmp_path / "ti.onnx")
    got = ADAPTER.read(src).tensors
    assert set(got) == {"w", "bw", "iw"}
    assert helpers.same_bytes(got["iw"], init_w) and helpers.same_bytes(got["bw"], branch_w)
    sealed = tmp_path / "sealed.onnx"
    files.seal_file(src, sealed, key)
    assert files.verify_file(sealed, key).status == "intact"
    for name, proto in (("iw", lambda t: t.training_info[0].initialization.initializer[0]),
                        ("bw", lambda t: t.graph.node[0].attribute[0].graphs[0].node[0].attribute[0].t)):  # fmt: skip
        tampered = onnx.load(str(sealed))
        t = proto(tampered)
        a = numpy_helper.to_array(t).copy()
        a[7] = -a[7]
        t.CopyFrom(numpy_helper.from_array(a, t.name))
        rep = files.verify_file(save(tampered, tmp_path / f"bad_{name}.onnx"), key)
        assert rep.status == "tampered" and rep.tampered_tensors == [name], name


def test_a_main_graph_name_that_a_subgraph_reuses_keeps_its_plain_name(tmp_path: Path) -> None:
    """Only the subgraph's tensor gets the path prefix: the main graph's name is what the seal records."""
    rng = np.random.default_rng(13)
    w, inner = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    out = [helper.make_tensor_value_info("w", F32, [8])]
    branch = helper.make_graph([_const("w", inner)], "b", [], out)
    node = helper.make_node("If", ["c"], ["Y"], name="gate", then_branch=branch, else_branch=branch)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("Y", F32, [8])], initializer=[_tensor("w", w)],
    )  # fmt: skip
    src = save(_model(graph), tmp_path / "clash.onnx")
    got = ADAPTER.read(src).tensors
    assert list(got) == ["w", "gate:else_branch/w", "gate:then_branch/w"]
    assert helpers.same_bytes(got["w"], w) and helpers.same_bytes(got["gate:then_branch/w"], inner)


def _with_external_data(path: Path, fn: Callable[[dict[str, str]], dict[str, str]]) -> None:
    """Rewrite every external tensor's external_data entries of the model at ``path`` with ``fn``."""
    m = onnx.load(str(path), load_external_data=False)
    for _, t in _protos(m):
        if t.data_location == TensorProto.EXTERNAL:
            info = fn({e.key: e.value for e in t.external_data})
            del t.external_data[:]
            for k, v in info.items():
                t.external_data.add(key=k, value=v)
    path.write_bytes(m.SerializeToString())


def test_a_checksum_of_the_inputs_external_data_is_not_carried_to_the_new_side_file(
    tmp_path: Path, ext_file: Path, key: paramseal.Key
) -> None:
    """The checksum (optional in ONNX) describes the input's data file: the sealed file's bytes differ."""
    _with_external_data(ext_file, lambda info: {**info, "checksum": "0" * 40})
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    files.seal_file(ext_file, out_dir / "sealed.onnx", key)
    m = onnx.load(str(out_dir / "sealed.onnx"), load_external_data=False)
    layout = [{e.key: e.value for e in t.external_data} for _, t in _protos(m) if t.data_location == 1]
    assert len(layout) >= 10 and all(set(info) == {"location", "offset", "length"} for info in layout), layout
    assert files.verify_file(out_dir / "sealed.onnx", key).status == "intact"


def test_replacing_a_model_that_shares_the_inputs_external_data_keeps_that_data(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """b.onnx, a copy of a.onnx, uses a.onnx's data file b.onnx.data (ParamSeal's naming for b.onnx):
    sealing a.onnx over b.onnx must not remove the data file the input still reads."""
    src = save(mlp(np.random.default_rng(4)), tmp_path / "a.onnx")
    onnx.save_model(onnx.load(str(src)), str(src), save_as_external_data=True, location="b.onnx.data", size_threshold=0)
    shutil.copy(src, tmp_path / "b.onnx")
    want = {n: a.tobytes() for n, a in ADAPTER.read(src).tensors.items()}
    before = helpers.listing(tmp_path)
    rc, _, err = helpers.run_cli(["seal", src, tmp_path / "b.onnx", "--key", key_file])
    assert rc == 0, err
    after = helpers.listing(tmp_path)
    assert after["a.onnx"] == before["a.onnx"] and after["b.onnx.data"] == before["b.onnx.data"]
    assert {n: a.tobytes() for n, a in ADAPTER.read(src).tensors.items()} == want
    (side,) = _side_names(tmp_path / "b.onnx")
    assert side != "b.onnx.data" and set(after) == {*before, side}
    assert files.verify_file(tmp_path / "b.onnx", key).status == "intact"


def test_the_model_and_its_side_files_are_flushed_to_disk_before_they_replace_the_old_ones(
    tmp_path: Path, ext_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the rename must not leave a model whose external data never reached the disk."""
    synced = helpers.record_fsyncs(monkeypatch)
    out = tmp_path / "sealed.onnx"
    files.seal_file(ext_file, out, key)
    (side,) = _side_names(out)
    assert {out.stat().st_ino, (tmp_path / side).stat().st_ino} <= set(synced)
    assert tmp_path.stat().st_ino in synced  # and their names: the folder's entries, which a crash could lose
    assert files.verify_file(out, key).status == "intact"


def test_a_model_with_external_data_gets_the_usual_mode_and_a_replaced_one_keeps_its_own(
    tmp_path: Path, ext_file: Path, key: paramseal.Key, key_file: Path
) -> None:
    """As _paths.atomic_path: new files get the umask's mode (not mkstemp's 0600), a replaced model keeps its mode."""
    out = tmp_path / "sealed.onnx"
    old = os.umask(0o022)
    try:
        files.seal_file(ext_file, out, key)
    finally:
        os.umask(old)
    (side,) = _side_names(out)
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE((tmp_path / side).stat().st_mode) == 0o644
    os.chmod(out, 0o640)
    rc, _, err = helpers.run_cli(["seal", ext_file, out, "--key", key_file])
    assert rc == 0, err
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert files.verify_file(out, key).status == "intact"


def test_a_tensor_that_does_not_fit_its_external_slot_goes_after_the_rest_of_its_file(
    tmp_path: Path, ext_file: Path
) -> None:
    """The side file keeps the input's offsets: a longer tensor written there would run into its neighbour's bytes."""
    loaded = ADAPTER.read(ext_file)
    grown = {**loaded.tensors, "W1": np.arange(loaded.tensors["W1"].size + 1, dtype=np.float32)}
    ADAPTER.write(tmp_path / "o.onnx", Loaded(grown, loaded.metadata, source=loaded.source))
    before, after = _ext_layout(ext_file), _ext_layout(tmp_path / "o.onnx")
    assert after["W1"][1] >= (ext_file.parent / before["W1"][0]).stat().st_size
    assert {n: a[1:] for n, a in after.items() if n != "W1"} == {n: b[1:] for n, b in before.items() if n != "W1"}
    helpers.assert_model_equal(ADAPTER.read(tmp_path / "o.onnx").tensors, grown)


def test_a_metadata_key_damaged_into_invalid_utf8_is_tampering_not_an_internal_error(
    tmp_path: Path, cf_file: Path, key: paramseal.Key, key_file: Path
) -> None:
    """protobuf hands back a string field that is not UTF-8 as bytes: comparing it with the sealed keys crashed."""
    sealed = tmp_path / "sealed.onnx"
    files.seal_file(cf_file, sealed, key)
    raw = sealed.read_bytes()
    assert raw.count(b"\x06author") == 1  # the length-prefixed key of metadata_props' entry
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(raw.replace(b"\x06author", b"\x06auth\xffr"))
    rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file])
    assert "Traceback" not in err and rc == 1, (rc, out, err)
    assert "key 'author' was removed" in out and "key 'auth\\xffr' was added" in out, out


@pytest.mark.parametrize(
    "data", [b"\x00" * 8, b"hello world\n" * 10, bytes(range(256)) * 4], ids=["zeros", "text", "bytes"]
)
def test_bytes_that_are_no_protobuf_are_said_in_words_not_protobufs_error(
    tmp_path: Path, key_file: Path, data: bytes
) -> None:
    """It said '(truncated or corrupt protobuf: Error parsing message with type 'onnx.ModelProto': Wire format was
    corrupt)': protobuf's internal text."""
    p = tmp_path / "x.onnx"
    p.write_bytes(data)
    for argv in (["inspect", p], ["verify", p, "--key", key_file], ["seal", p, tmp_path / "o.onnx", "--key", key_file]):
        rc, _, err = helpers.run_cli(argv)
        assert rc == 3 and f"'{p}' is not a valid ONNX model: its bytes do not parse as one" in err, err
        assert "Error" not in err and "ModelProto" not in err, err
