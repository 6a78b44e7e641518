"""ONNX tensors whose names the file does not tell apart are reported by what and where they are.

ParamSeal names an initializer with no name '' and tells tensors of one graph that share a name apart by
a suffix of its own ('#2', 'W#2'); a report that quoted those names showed the user names no tool shows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import helpers
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

sys.path.insert(0, str(Path(__file__).parent / "golden"))
from make_golden import golden_onnx  # noqa: E402  (initializers W and b, Constants k and scale)


@pytest.fixture
def sealed(tmp_path: Path, key_file: Path) -> Path:
    onnx.save_model(golden_onnx(), str(tmp_path / "m.onnx"))
    assert helpers.run_cli(["seal", tmp_path / "m.onnx", tmp_path / "s.onnx", "--key", key_file])[0] == 0
    return tmp_path / "s.onnx"


def _issues(path: Path, key_file: Path) -> tuple[int, str, dict[str, Any]]:
    rc, out, err = helpers.run_cli(["verify", path, "--key", key_file])
    assert "Traceback" not in err
    rc_json, doc, _ = helpers.run_cli(["verify", path, "--key", key_file, "--json"])
    assert rc_json == rc
    return rc, out, {n: t["issues"] for n, t in json.loads(doc)["tensors"].items()}


@pytest.mark.parametrize("names", [("",), ("", ""), ("W", "W")])
def test_initializers_the_file_does_not_tell_apart_are_reported_by_place(
    tmp_path: Path, key_file: Path, sealed: Path, names: tuple[str, ...]
) -> None:
    m = onnx.load(str(sealed))
    for init, name in zip(m.graph.initializer, names, strict=False):
        init.name = name
    onnx.save_model(m, str(tmp_path / "edited.onnx"))
    rc, out, issues = _issues(tmp_path / "edited.onnx", key_file)
    assert rc == 2 and "#2" not in out and "''" not in out, out
    what = "named 'W'" if names[0] else "with no name"
    if names == ("",):
        assert issues == {"W": [f"renamed: its data is now in an initializer {what} in the main graph"]}, issues
        return
    second = [f"renamed: its data is now in the 2nd of 2 initializers {what} in the main graph"]
    if names[0]:  # W kept its name: b, renamed to it, is the second of that name
        assert issues == {"b": second}, issues
    else:
        assert issues == {"W": [second[0].replace("2nd", "1st")], "b": second}, issues
    assert f"b: {second[0]}" in out, out


def test_shown_names_say_where_a_node_value_sharing_a_name_is() -> None:
    from paramseal.formats._onnx_tensors import shown_names, tensor_names, tensor_slots

    m = golden_onnx()
    m.graph.initializer[1].name = "k"  # the name of the Constant k's output
    slots = tensor_slots(m)
    assert tensor_names(slots) == ["W", "k", "k#2", "scale"]  # ParamSeal's names, as sealed models keep them
    shared = " (one of 2 tensors of that name there)"
    assert shown_names(slots) == {
        "k": "initializer 'k' in the main graph" + shared,
        "k#2": "attribute 'value' of Constant node 'Constant#0' in the main graph" + shared,
    }
    assert shown_names(tensor_slots(golden_onnx())) == {}  # names the file tells apart are its own


@pytest.mark.parametrize("added", [("",), ("", ""), ("W",)])
def test_an_added_initializer_the_file_does_not_tell_apart_is_reported_by_place(
    tmp_path: Path, key_file: Path, sealed: Path, added: tuple[str, ...]
) -> None:
    m = onnx.load(str(sealed))
    for name in added:
        m.graph.initializer.append(onnx.numpy_helper.from_array(np.ones(3, np.float32), name))
    onnx.save_model(m, str(tmp_path / "edited.onnx"))
    rc, out, _ = _issues(tmp_path / "edited.onnx", key_file)
    assert rc == 2 and "#2" not in out and "''" not in out, out
    lines = [ln.strip() for ln in out.splitlines() if "extra tensor" in ln]
    if added == ("",):
        want = ["an initializer with no name in the main graph"]
    elif added == ("", ""):
        want = [f"the {n} of 2 initializers with no name in the main graph" for n in ("1st", "2nd")]
    else:  # the sealed W comes first
        want = ["the 2nd of 2 initializers named 'W' in the main graph"]
    assert lines == [f"extra tensor not in the seal: {w}" for w in want], out
    rc, out, err = helpers.run_cli(["recover", tmp_path / "edited.onnx", tmp_path / "r.onnx", "--key", key_file])
    assert f"extra tensor not in the seal: {want[-1]}" in out + err and "#2" not in out + err, out + err


@pytest.mark.parametrize("command", ["verify", "recover"])
def test_json_keeps_paramseals_names_and_says_where_each_is_in_tensor_places(
    tmp_path: Path, key_file: Path, sealed: Path, command: str
) -> None:
    m = onnx.load(str(sealed))
    m.graph.initializer[1].name = "W"  # b renamed to W: ParamSeal's name for it is W#2
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.ones(3, np.float32), ""))
    onnx.save_model(m, str(tmp_path / "edited.onnx"))
    out_file = [tmp_path / "r.onnx"] if command == "recover" else []
    rc, doc, err = helpers.run_cli([command, tmp_path / "edited.onnx", *out_file, "--key", key_file, "--json"])
    rep = json.loads(doc)
    assert rc == 2 and rep["moved"] == {"b": "W#2"} and rep["extra_tensors"] == [""], (doc, err)
    assert rep["tensor_places"] == {
        "W#2": "the 2nd of 2 initializers named 'W' in the main graph",
        "": "an initializer with no name in the main graph",
    }, rep["tensor_places"]  # not W: intact, in no list
    rc, doc, _ = helpers.run_cli([command, sealed, *out_file, "--key", key_file, "--json"])
    assert rc == 0 and json.loads(doc)["tensor_places"] == {}, doc


def test_a_tampered_tensor_the_file_does_not_tell_apart_is_labelled_by_place(tmp_path: Path, key_file: Path) -> None:
    m = golden_onnx()
    m.graph.initializer[0].name = ""  # W sealed with no name: ParamSeal's name for it is ''
    onnx.save_model(m, str(tmp_path / "m.onnx"))
    assert helpers.run_cli(["seal", tmp_path / "m.onnx", tmp_path / "s.onnx", "--key", key_file])[0] == 0
    m = onnx.load(str(tmp_path / "s.onnx"))
    w = onnx.numpy_helper.to_array(m.graph.initializer[0]).copy()
    w.reshape(-1).view(np.uint32)[0] ^= 1 << 30  # an exponent bit of its first value
    m.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, ""))
    onnx.save_model(m, str(tmp_path / "edited.onnx"))
    rc, out, _ = helpers.run_cli(["verify", tmp_path / "edited.onnx", "--key", key_file])
    lines = [ln.strip() for ln in out.splitlines() if "tampered block" in ln]
    assert rc in (1, 2) and lines, out
    assert lines[0].startswith("an initializer with no name in the main graph: 1 tampered block(s): 0"), out
