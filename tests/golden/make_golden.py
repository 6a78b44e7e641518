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


def main(version: str = "v1") -> None:
    out = HERE / version
    if out.exists():
        sys.exit(f"{out} exists: golden files are never regenerated; add a new version folder instead")
    out.mkdir()
    key = paramseal.Key(bytes.fromhex(GOLDEN_KEY_HEX))
    paramseal.write_key(out / "golden.key", key)
    model = golden_model_v3() if version.startswith("v3") else golden_model()  # v3-mac2 too
    files.write_model(out / "original.safetensors", Loaded(model, dict(METADATA)))
    files.seal_file(out / "original.safetensors", out / "sealed.safetensors", key, level="standard")
    print(f"wrote {out} with paramseal {paramseal.__version__}")


if __name__ == "__main__":
    main(*sys.argv[1:])
