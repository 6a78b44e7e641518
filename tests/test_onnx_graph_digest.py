"""ONNX graph digest (``paramseal.graph``): tensor protos re-encoded by tools, and shapes inferred, are not an edited
graph.

``numpy_helper.from_array(numpy_helper.to_array(t), t.name)`` keeps every value and the graph, but moves typed
fields into raw_data and drops what the array does not carry: an empty ``name`` that was present (silero-vad's
Constants), the tensor's doc string. Seals since the ``v2:`` digest verify such a model intact; seals of the first
digest (``tests/golden/onnx-graph1``) verify exactly as before.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helpers
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import numpy_helper  # noqa: E402

import paramseal  # noqa: E402
from paramseal import files  # noqa: E402
from paramseal.formats import GRAPH_KEY, _onnx_digest  # noqa: E402
from paramseal.formats._onnx_tensors import tensor_names, tensor_slots  # noqa: E402

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))
from helpers import SILERO, SILERO_VARIANTS, needs_silero  # noqa: E402
from make_golden import golden_onnx  # noqa: E402


def _protos(m: Any) -> Iterator[tuple[str, bool, Any]]:
    """(ParamSeal name, is an initializer, TensorProto) of every tensor in ``m``."""
    slots = tensor_slots(m)
    for name, s in zip(tensor_names(slots), slots, strict=True):
        yield name, s.where.startswith("initializer"), s.proto


def _resave(src: Path, dst: Path, which: str = "constants", edit: Callable[[str, Any], None] | None = None) -> Path:
    """``src`` with the tensors ``which`` ('none', 'constants', 'initializers', 'all') re-encoded through
    numpy_helper, then ``edit`` applied to each tensor."""
    m = onnx.load(str(src))
    for name, init, t in _protos(m):
        if which == "all" or which == ("initializers" if init else "constants"):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
        if edit is not None:
            edit(name, t)
    onnx.save_model(m, str(dst))
    return dst


def _set(name: str, value: Any) -> Callable[[str, Any], None]:
    """An edit: tensor ``name``'s first value becomes ``value``, in whatever form it is stored."""

    def edit(n: str, t: Any) -> None:
        if n != name:
            return
        a = numpy_helper.to_array(t).copy()
        a.reshape(-1)[0] = value
        if t.HasField("raw_data"):
            t.raw_data = a.tobytes()
        else:
            field = {1: "float_data", 7: "int64_data"}[t.data_type]
            getattr(t, field)[0] = a.reshape(-1)[0].item()

    return edit


def _verify(path: Path, key_file: Path, *extra: str | Path) -> tuple[int, dict[str, Any]]:
    rc, out, err = helpers.run_cli(["verify", path, "--key", key_file, "--json", *extra])
    assert "Traceback" not in err
    return rc, json.loads(out)


@pytest.fixture
def small_sealed(tmp_path: Path, key_file: Path) -> Path:
    onnx.save_model(golden_onnx(), str(tmp_path / "m.onnx"))
    assert helpers.run_cli(["seal", tmp_path / "m.onnx", tmp_path / "s.onnx", "--key", key_file])[0] == 0
    return tmp_path / "s.onnx"


def test_re_encoded_tensors_of_a_small_model_verify_intact(tmp_path: Path, key_file: Path, small_sealed: Path) -> None:
    m = onnx.load(str(small_sealed))
    graph = {p.key: p.value for p in m.metadata_props}[GRAPH_KEY]
    assert graph.startswith("v2:") and len(graph) == 3 + 64
    k = next(t for n, _, t in _protos(m) if n == "k")
    assert k.HasField("name") and list(k.int64_data) == [16000]  # the form numpy_helper changes
    for which in ("constants", "initializers", "all"):
        rc, rep = _verify(_resave(small_sealed, tmp_path / f"{which}.onnx", which), key_file)
        assert rc == 0 and rep["status"] == "intact" and not rep["metadata_issues"], (which, rep)
        k = onnx.load(str(tmp_path / f"{which}.onnx")).graph.node[0].attribute[0].t
        assert k.HasField("raw_data") != k.HasField("name") == (which == "initializers")


@pytest.mark.parametrize("which", ["none", "all"])
@pytest.mark.parametrize(("name", "value"), [("k", 16001), ("scale", 0.25), ("b", 7.0), ("W", -3.0)])
def test_a_value_changed_in_either_storage_form_is_located(
    tmp_path: Path, key_file: Path, small_sealed: Path, which: str, name: str, value: float
) -> None:
    """Typed fields (not re-encoded) or raw_data (re-encoded): the tensor changed is the one reported.

    W has parity to restore a value from; some of the small tensors have none (exit 2).
    """
    rc, rep = _verify(_resave(small_sealed, tmp_path / "bad.onnx", which, _set(name, value)), key_file)
    assert rc in (1, 2) and (rc == 1 or name != "W") and not rep["metadata_issues"], rep
    assert rep["tampered_tensors"] == [name] and rep["tensors"][name]["tampered_blocks"] == [0], rep
    if rc == 1:
        out = tmp_path / "fixed.onnx"
        assert helpers.run_cli(["recover", tmp_path / "bad.onnx", out, "--key", key_file])[0] == 0
        assert _verify(out, key_file)[0] == 0


def test_re_encoded_model_with_an_edited_graph_is_still_tampering(
    tmp_path: Path, key_file: Path, small_sealed: Path
) -> None:
    """Dropping the storage form from the digest keeps what runs in it: a node, an initializer's name, dims."""

    def repoint(m: Any) -> None:
        m.graph.node[4].input[1] = "k"  # Mul by the Constant k instead of scale

    def rename(m: Any) -> None:  # the initializer no longer feeds the MatMul
        m.graph.initializer[1].name = "b_unused"

    def reshape(m: Any) -> None:
        m.graph.node[1].attribute[0].t.dims[:] = [1, 1]

    for edit in (repoint, rename, reshape):
        m = onnx.load(str(_resave(small_sealed, tmp_path / "all.onnx", "all")))
        edit(m)
        onnx.save_model(m, str(tmp_path / "edited.onnx"))
        rc, rep = _verify(tmp_path / "edited.onnx", key_file)
        assert rc == 2 and any("graph" in i for i in rep["metadata_issues"]), (edit.__name__, rep)
        assert not any("older kind" in i for i in rep["metadata_issues"]), rep  # a v2 seal: the v1 hint is not given
    # the entry switched to the first version's digest of the edited graph: the sealed metadata says otherwise
    v1 = _onnx_digest.graph_digest(onnx, onnx.load(str(tmp_path / "edited.onnx")).SerializeToString(), version=1)
    m = onnx.load(str(tmp_path / "edited.onnx"))
    next(p for p in m.metadata_props if p.key == GRAPH_KEY).value = v1
    onnx.save_model(m, str(tmp_path / "switched.onnx"))
    rc, rep = _verify(tmp_path / "switched.onnx", key_file)
    assert rc == 2 and any("graph" in i for i in rep["metadata_issues"]), rep
    assert any(GRAPH_KEY in i and "changed" in i for i in rep["metadata_issues"]), rep


def test_first_digest_seals_verify_as_before(tmp_path: Path) -> None:
    """tests/golden/onnx-graph1: sealed before 'v2:', its bare digest covers the tensors' storage form."""
    golden, key_file = GOLDEN / "onnx-graph1" / "sealed.onnx", GOLDEN / "onnx-graph1" / "golden.key"
    graph = {p.key: p.value for p in onnx.load(str(golden)).metadata_props}[GRAPH_KEY]
    assert len(graph) == 64 and int(graph, 16) >= 0
    assert _verify(golden, key_file)[0] == 0
    rc, rep = _verify(_resave(golden, tmp_path / "bad.onnx", "none", _set("W", -3.0)), key_file)
    assert rc == 1 and rep["tampered_tensors"] == ["W"] and not rep["metadata_issues"], rep
    assert helpers.run_cli(["recover", tmp_path / "bad.onnx", tmp_path / "fixed.onnx", "--key", key_file])[0] == 0
    assert (tmp_path / "fixed.onnx").read_bytes() == golden.read_bytes()
    m = onnx.load(str(golden))
    m.graph.node[4].input[1] = "k"
    onnx.save_model(m, str(tmp_path / "edited.onnx"))
    assert _verify(tmp_path / "edited.onnx", key_file)[0] == 2
    # typed to raw alone was never the graph; the Constants' empty names dropped were, and stay so for these seals
    assert _verify(_resave(golden, tmp_path / "init.onnx", "initializers"), key_file)[0] == 0
    rc, rep = _verify(_resave(golden, tmp_path / "const.onnx", "constants"), key_file)
    assert rc == 2 and any("graph" in i for i in rep["metadata_issues"]) and not rep["tampered_tensors"], rep
    # the finding says why a tool's re-encoding fails these seals, and how to get the newer digest; exit 2 as before
    [issue] = rep["metadata_issues"]
    for told in ("not the one sealed", "older kind", "numpy_helper", "infer_shapes", "version_converter", "--reseal"):
        assert told in issue, (told, issue)
    rc, rep = _verify(tmp_path / "edited.onnx", key_file)  # a real edit reads the same: the digest cannot tell
    assert rc == 2 and rep["metadata_issues"] == [issue], rep
    # README's remedy: seal the kept model again, which writes the new digest
    resealed = tmp_path / "resealed.onnx"
    assert helpers.run_cli(["seal", golden, resealed, "--reseal", "--key", key_file])[0] == 0
    assert {p.key: p.value for p in onnx.load(str(resealed)).metadata_props}[GRAPH_KEY].startswith("v2:")
    assert _verify(_resave(resealed, tmp_path / "const2.onnx", "constants"), key_file)[0] == 0


@needs_silero
def test_silero_constants_re_encoded_verify_intact_and_a_changed_one_is_located(tmp_path: Path, key_file: Path) -> None:
    assert SILERO is not None
    sealed = tmp_path / "sealed.onnx"
    assert helpers.run_cli(["seal", SILERO / "silero_vad.onnx", sealed, "--key", key_file])[0] == 0
    c0 = next(t for n, _, t in _protos(onnx.load(str(sealed))) if n == "Constant_0_output")
    assert c0.HasField("name") and list(c0.int64_data) == [16000]  # the sample rate, typed, with an empty name
    for which in ("constants", "initializers", "all"):
        rc, rep = _verify(_resave(sealed, tmp_path / f"{which}.onnx", which), key_file)
        assert rc == 0 and rep["status"] == "intact" and not rep["metadata_issues"], (which, rep)
    w = "If_0_else_branch__Inline_0__encoder.0.reparam_conv.weight"  # a Constant inside the If's else branch
    for name, value in (("Constant_0_output", 8000), (w, 0.5)):
        rc, rep = _verify(_resave(sealed, tmp_path / "bad.onnx", "all", _set(name, value)), key_file)
        assert rc == 1 and rep["tampered_tensors"] == [name] and rep["tensors"][name]["tampered_blocks"] == [0], rep


@needs_silero
def test_stripped_metadata_finds_the_sealed_digest_of_either_version(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the metadata gone, verify derives the sealed graph entry from the weights' header: v1 or v2."""
    assert SILERO is not None
    for version in (1, 2):
        monkeypatch.setattr(_onnx_digest, "GRAPH_VERSION", version)
        sealed = tmp_path / f"s{version}.onnx"
        files.seal_file(SILERO / "silero_vad_op18_ifless.onnx", sealed, key)
        monkeypatch.undo()
        m = onnx.load(str(sealed))
        assert {p.key: p.value for p in m.metadata_props}[GRAPH_KEY].startswith("v2:") == (version == 2)
        del m.metadata_props[:]
        onnx.save_model(m, str(tmp_path / "bare.onnx"))
        rep = files.verify_file(tmp_path / "bare.onnx", key)
        assert rep.status == "intact" and not rep.metadata_issues, (version, rep.summary())
        # converted (its nodes' metadata_props dropped): v2 finds it intact; v1 cannot, and the finding says why
        onnx.save_model(onnx.version_converter.convert_version(m, 18), str(tmp_path / "converted.onnx"))
        rep = files.verify_file(tmp_path / "converted.onnx", key)
        assert rep.exit_code == (2 if version == 1 else 0), (version, rep.summary())
        assert all("older kind" in i and "version_converter" in i for i in rep.metadata_issues), rep.summary()
        m.graph.node[-1].op_type = "Identity" if m.graph.node[-1].op_type != "Identity" else "Neg"
        onnx.save_model(m, str(tmp_path / "bare.onnx"))
        rep = files.verify_file(tmp_path / "bare.onnx", key)
        assert rep.exit_code == 2 and len(rep.metadata_issues) == 1, (version, rep.summary())
        assert "the graph was edited; or" in rep.metadata_issues[0], rep.summary()


@needs_silero
def test_stripped_metadata_of_a_newer_graph_digest_says_it_may_be_one(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 'v3:' seal's metadata stripped: the weights' header keeps the entry's digest, not its version.

    This ParamSeal cannot tell that from a v1 or v2 seal's graph edited (exit 2, as those must stay), so the
    finding names both and how to tell; with the sealed copy given (--header-from), the upgrade refusal (exit 3).
    """
    from paramseal.formats import onnx_format

    assert SILERO is not None
    real = onnx_format.graph_digest
    monkeypatch.setattr(onnx_format, "graph_digest", lambda *a, **kw: "v3:" + real(*a, **kw)[-64:])
    newer = tmp_path / "v3.onnx"
    assert helpers.run_cli(["seal", SILERO / "silero_vad_op18_ifless.onnx", newer, "--key", key_file])[0] == 0
    monkeypatch.undo()
    m = onnx.load(str(newer))
    assert {p.key: p.value for p in m.metadata_props}[GRAPH_KEY].startswith("v3:")
    del m.metadata_props[:]
    onnx.save_model(m, str(tmp_path / "bare.onnx"))
    rc, rep = _verify(tmp_path / "bare.onnx", key_file)
    assert rc == 2 and not rep["recoverable"] and not rep["tampered_tensors"], rep
    [issue] = rep["metadata_issues"]
    for told in ("stripped", GRAPH_KEY, "graph was edited", "a newer ParamSeal", "--header-from", "upgrade"):
        assert told in issue, (told, issue)
    out = tmp_path / "never.onnx"
    rc, text, _ = helpers.run_cli(["recover", tmp_path / "bare.onnx", out, "--key", key_file])
    assert rc == 2 and "newer ParamSeal" in text and not out.exists(), text
    rc, text, err = helpers.run_cli(["verify", tmp_path / "bare.onnx", "--key", key_file, "--header-from", newer])
    assert rc == 3 and "version 3" in err and "upgrade ParamSeal" in err, (text, err)


def test_values_equal_in_every_storage_form() -> None:
    """The re-encoding these tests call harmless keeps every value (bit for bit) of the golden model."""
    m = golden_onnx()
    for _, _, t in _protos(m):
        a = numpy_helper.to_array(t)
        b = numpy_helper.to_array(numpy_helper.from_array(a, t.name))
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _loop_model(path: Path) -> Path:
    """y = x + c, n times, in a Loop whose body declares its inputs by name alone (shape inference types them)."""
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "c"], ["v_out"])],
        "body",
        [onnx.ValueInfoProto(name=n) for n in ("i", "cond_in", "v_in")],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, None), onnx.ValueInfoProto(name="v_out")],
        [numpy_helper.from_array(np.linspace(0, 1, 64, dtype=np.float32), "c")],
    )
    g = helper.make_graph(
        [helper.make_node("Loop", ["n", "", "x"], ["y"], body=body)],
        "g",
        [
            helper.make_tensor_value_info("n", TensorProto.INT64, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [64]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save_model(m, str(path))
    return path


def _inferred(src: Path, dst: Path) -> Path:
    onnx.save_model(onnx.shape_inference.infer_shapes(onnx.load(str(src)), data_prop=True), str(dst))
    return dst


def test_shape_inference_is_not_an_edited_graph(tmp_path: Path, key_file: Path) -> None:
    """infer_shapes types a subgraph's inputs and outputs and names unknown output dims ('unk__0'): annotations."""
    sealed = tmp_path / "s.onnx"
    assert helpers.run_cli(["seal", _loop_model(tmp_path / "m.onnx"), sealed, "--key", key_file])[0] == 0
    inferred = onnx.load(str(_inferred(sealed, tmp_path / "inferred.onnx")))
    assert inferred.graph.node[0].attribute[0].g.input[2].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    rc, rep = _verify(tmp_path / "inferred.onnx", key_file)
    assert rc == 0 and not rep["metadata_issues"], rep

    def renamed_output(m: Any) -> None:  # what the caller fetches: a name, not an annotation
        m.graph.output[0].name = "x"

    def input_retyped(m: Any) -> None:  # the main graph's inputs are what the caller feeds
        m.graph.input[1].type.tensor_type.elem_type = onnx.TensorProto.DOUBLE

    def body_input_renamed(m: Any) -> None:
        m.graph.node[0].attribute[0].g.input[2].name = "c"

    for edit in (renamed_output, input_retyped, body_input_renamed):
        m = onnx.load(str(tmp_path / "inferred.onnx"))
        edit(m)
        onnx.save_model(m, str(tmp_path / "edited.onnx"))
        rc, rep = _verify(tmp_path / "edited.onnx", key_file)
        assert rc == 2 and any("graph" in i for i in rep["metadata_issues"]), (edit.__name__, rep)
        assert not any("older kind" in i for i in rep["metadata_issues"]), rep  # a v2 seal: the v1 hint is not given


def test_shape_inference_fails_a_first_digest_seal_with_the_reason_and_the_remedy(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A v1 seal counts infer_shapes' typing of a Loop body as an edit (exit 2, nothing recovered), and says so."""
    monkeypatch.setattr(_onnx_digest, "GRAPH_VERSION", 1)  # as ParamSeal sealed before 'v2:'
    sealed = tmp_path / "s.onnx"
    assert helpers.run_cli(["seal", _loop_model(tmp_path / "m.onnx"), sealed, "--key", key_file])[0] == 0
    monkeypatch.undo()
    assert len({p.key: p.value for p in onnx.load(str(sealed)).metadata_props}[GRAPH_KEY]) == 64
    inferred = _inferred(sealed, tmp_path / "inferred.onnx")
    rc, rep = _verify(inferred, key_file)
    assert rc == 2 and rep["status"] == "tampered" and not rep["recoverable"], rep
    [issue] = rep["metadata_issues"]
    for told in ("not the one sealed", "older kind", "numpy_helper", "infer_shapes", "version_converter", "--reseal"):
        assert told in issue, (told, issue)
    out = tmp_path / "never.onnx"
    rc, text, _ = helpers.run_cli(["recover", inferred, out, "--key", key_file])
    assert rc == 2 and "older kind" in text and not out.exists(), text
    # the remedy it names: the sealed model sealed again gets the newer digest, which the same tool leaves intact
    resealed = tmp_path / "resealed.onnx"
    assert helpers.run_cli(["seal", sealed, resealed, "--reseal", "--key", key_file])[0] == 0
    rc, rep = _verify(_inferred(resealed, tmp_path / "inferred2.onnx"), key_file)
    assert rc == 0 and not rep["metadata_issues"], rep


def _output_retyped(how: str) -> Callable[[Any], None]:
    """An edit of the main graph's first output's declared type: ONNX Runtime then refuses to load the model."""
    from onnx import TensorProto, helper

    def edit(m: Any) -> None:
        t = m.graph.output[0].type
        if how in ("sequence", "optional"):
            make = helper.make_sequence_type_proto if how == "sequence" else helper.make_optional_type_proto
            t.CopyFrom(make(onnx.TypeProto(tensor_type=t.tensor_type)))
        elif how == "sequence of double":
            t.CopyFrom(helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.DOUBLE, None)))
        else:
            t.tensor_type.elem_type = getattr(TensorProto, how)

    return edit


_RETYPES = ["DOUBLE", "FLOAT16", "INT32", "sequence", "optional"]


def test_main_output_types_are_covered_and_their_shapes_are_not(
    tmp_path: Path, key_file: Path, small_sealed: Path
) -> None:
    """An output's kind or element type edited is an edited graph; a dim renamed or dropped is an annotation."""
    for how in (*_RETYPES, "sequence of double"):
        m = onnx.load(str(small_sealed))
        _output_retyped(how)(m)
        onnx.save_model(m, str(tmp_path / "edited.onnx"))
        rc, rep = _verify(tmp_path / "edited.onnx", key_file)
        assert rc == 2 and any("graph" in i for i in rep["metadata_issues"]), (how, rep)
    seq = onnx.load(str(small_sealed))
    _output_retyped("sequence")(seq)
    onnx.save_model(seq, str(tmp_path / "seq.onnx"))
    reseal = ["seal", tmp_path / "seq.onnx", tmp_path / "seq-s.onnx", "--reseal", "--key", key_file]
    assert helpers.run_cli(reseal)[0] == 0
    _output_retyped("sequence of double")(m := onnx.load(str(tmp_path / "seq-s.onnx")))
    onnx.save_model(m, str(tmp_path / "seq-e.onnx"))  # the element type within a sequence
    assert _verify(tmp_path / "seq-e.onnx", key_file)[0] == 2
    m = onnx.load(str(small_sealed))
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    m.graph.output[1].type.tensor_type.ClearField("shape")
    onnx.save_model(m, str(tmp_path / "shapes.onnx"))
    rc, rep = _verify(tmp_path / "shapes.onnx", key_file)
    assert rc == 0 and not rep["metadata_issues"], rep


@needs_silero
@pytest.mark.parametrize("how", _RETYPES)
def test_silero_output_retyped_is_an_edited_graph(tmp_path: Path, key_file: Path, how: str) -> None:
    """silero_vad_16k_op15's 'output' declared another type verified intact under a first 'v2:', and did not load."""
    assert SILERO is not None
    sealed = tmp_path / "sealed.onnx"
    assert helpers.run_cli(["seal", SILERO / "silero_vad_16k_op15.onnx", sealed, "--key", key_file])[0] == 0
    _output_retyped(how)(m := onnx.load(str(sealed)))
    onnx.save_model(m, str(tmp_path / "edited.onnx"))
    rc, rep = _verify(tmp_path / "edited.onnx", key_file)
    assert rc == 2 and any("graph" in i for i in rep["metadata_issues"]), rep


@needs_silero
@pytest.mark.parametrize("variant", SILERO_VARIANTS)
def test_silero_with_shapes_inferred_verifies_intact(tmp_path: Path, key: paramseal.Key, variant: str) -> None:
    """silero_vad, _16k_op15 and _half leave If branches' outputs untyped and outputs' dims unknown: inference fills."""
    assert SILERO is not None
    sealed = tmp_path / "sealed.onnx"
    files.seal_file(SILERO / variant, sealed, key)
    rep = files.verify_file(_inferred(sealed, tmp_path / "inferred.onnx"), key)
    assert rep.status == "intact" and not rep.metadata_issues, rep.summary()


def test_a_newer_graph_digest_version_is_refused_and_a_forged_one_is_tampering(
    tmp_path: Path, key_file: Path, small_sealed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 'v3:' digest sealed by a newer ParamSeal: refused with 'upgrade' (exit 3), not read as an edited graph.

    The sealed entry is authenticated: a 'v3:' written over a seal's entry in the file is tampering, as before.
    """
    from paramseal.formats import onnx_format

    real = onnx_format.graph_digest

    def newer(*args: Any, **kw: Any) -> str:  # what a later ParamSeal writes when it reads the model to seal it
        return "v3:" + real(*args, **kw)[-64:]

    monkeypatch.setattr(onnx_format, "graph_digest", newer)
    onnx.save_model(golden_onnx(), str(tmp_path / "m.onnx"))
    newer_sealed = tmp_path / "v3.onnx"
    assert helpers.run_cli(["seal", tmp_path / "m.onnx", newer_sealed, "--key", key_file])[0] == 0
    monkeypatch.undo()
    assert {p.key: p.value for p in onnx.load(str(newer_sealed)).metadata_props}[GRAPH_KEY].startswith("v3:")
    for cmd in (["verify", newer_sealed], ["recover", newer_sealed, tmp_path / "out.onnx"]):
        rc, out, err = helpers.run_cli([*cmd, "--key", key_file])
        assert rc == 3 and "Traceback" not in err and "graph" not in out, (cmd, out, err)
        assert "newer ParamSeal" in err and "version 3" in err and "upgrade ParamSeal" in err, err
    assert not (tmp_path / "out.onnx").exists()
    # this version's seal, its file's entry rewritten to 'v3:': the entry changed (graph as sealed, or edited)
    for edit_graph in (False, True):
        m = onnx.load(str(small_sealed))
        entry = next(p for p in m.metadata_props if p.key == GRAPH_KEY)
        entry.value = "v3:" + entry.value[-64:]
        if edit_graph:
            m.graph.node[4].input[1] = "k"
        onnx.save_model(m, str(tmp_path / "forged.onnx"))
        for extra in ([], ["--header-from", small_sealed]):
            rc, rep = _verify(tmp_path / "forged.onnx", key_file, *extra)
            assert rc == (2 if edit_graph else 1) and rep["status"] == "tampered", (edit_graph, extra, rep)
            assert any(GRAPH_KEY in i and "changed" in i for i in rep["metadata_issues"]), rep
            assert any("graph" in i and "not the one sealed" in i for i in rep["metadata_issues"]) == edit_graph, rep
