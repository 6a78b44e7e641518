"""Make the golden sealed file for the compatibility corpus (run once per format version; NOT run by tests).

    python tests/golden/make_golden.py

writes, beside this script:

* ``v1/original.safetensors``: a small deterministic model of mixed dtypes (f32, f16, bf16, f64, i64, bool);
* ``v1/sealed.safetensors``: the same model sealed at level ``standard`` with ParamSeal scheme ``paramseal/1``;
* ``v1/golden.key``: the key it was sealed with. A published TEST key: never use it for anything real.

Sealing draws a random salt, so rerunning gives a different (equally valid) sealed file.
Never regenerate an existing version's files: they pin the on-disk format. For a new
format version, add a new folder (v2/, ...) and keep the old ones.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

import paramseal
from paramseal import files
from paramseal.formats import Loaded

HERE = Path(__file__).resolve().parent
GOLDEN_KEY_HEX = "9f1c2b3a4d5e6f708192a3b4c5d6e7f80112233445566778899aabbccddeeff0"
METADATA = {"model": "paramseal-golden", "purpose": "compatibility corpus"}


def golden_model() -> dict[str, np.ndarray]:
    """Deterministic weights: the same on every machine and numpy version."""
    rng = np.random.Generator(np.random.PCG64(20260101))
    f32 = (rng.standard_normal((48, 64)) * 0.2).astype(np.float32)
    return {
        "encoder.weight": f32,
        "encoder.bias": np.linspace(-1, 1, 48, dtype=np.float32),
        "norm.weight": (1 + 0.1 * rng.standard_normal(300)).astype(np.float16),
        "attn.weight": (rng.standard_normal((20, 30)) * 0.05).astype(ml_dtypes.bfloat16),
        "head.weight": rng.standard_normal(200).astype(np.float64),
        "position_ids": np.arange(100, dtype=np.int64),
        "mask": (np.arange(33) % 3 == 0),
    }


def golden_model_v3() -> dict[str, np.ndarray]:
    """v3 (irs4) seals fp32 models: the same model without its fp16, bf16 and fp64 tensors."""
    m = golden_model()
    return {n: a for n, a in m.items() if a.dtype not in (np.float16, ml_dtypes.bfloat16, np.float64)}


def golden_onnx() -> Any:
    """A small ONNX model (``onnx-graph1``): initializers raw and typed, Constants typed with an empty name
    present (as silero-vad's), one with a tensor doc string. Runs: y = (x @ W + b) * scale, k = 16000."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.Generator(np.random.PCG64(20261204))
    w = (rng.standard_normal((16, 16)) * 0.2).astype(np.float32)
    b = helper.make_tensor("b", TensorProto.FLOAT, [16], np.linspace(-1, 1, 16, dtype=np.float32).tolist())
    k = helper.make_tensor("", TensorProto.INT64, [], [16000])  # name "" present: numpy_helper.from_array drops it
    scale = helper.make_tensor("", TensorProto.FLOAT, [1], [0.5])
    scale.doc_string = "a note on the tensor"
    nodes = [
        helper.make_node("Constant", [], ["k"], value=k),
        helper.make_node("Constant", [], ["scale"], value=scale),
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["h2"]),
        helper.make_node("Mul", ["h2", "scale"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "golden",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16]),
            helper.make_tensor_value_info("k", TensorProto.INT64, []),
        ],
        [numpy_helper.from_array(w, "W"), b],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="paramseal-golden")
    m.ir_version = 8
    return m


def main(version: str = "v1") -> None:
    out = HERE / version
    if out.exists():
        sys.exit(f"{out} exists: golden files are never regenerated; add a new version folder instead")
    out.mkdir()
    key = paramseal.Key(bytes.fromhex(GOLDEN_KEY_HEX))
    paramseal.write_key(out / "golden.key", key)
    if version == "onnx-graph1":  # the first ONNX graph digest (a bare SHA-256), as sealed before 'v2:'
        import onnx

        onnx.save_model(golden_onnx(), str(out / "original.onnx"))
        files.seal_file(out / "original.onnx", out / "sealed.onnx", key, level="standard")
        (out / "original.onnx").unlink()  # golden_onnx() builds it again
        print(f"wrote {out} with paramseal {paramseal.__version__}")
        return
    model = golden_model_v3() if version.startswith("v3") else golden_model()  # v3-mac2, v3-mac3 too
    files.write_model(out / "original.safetensors", Loaded(model, dict(METADATA)))
    files.seal_file(out / "original.safetensors", out / "sealed.safetensors", key, level="standard")
    print(f"wrote {out} with paramseal {paramseal.__version__}")


if __name__ == "__main__":
    main(*sys.argv[1:])
