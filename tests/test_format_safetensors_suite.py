"""safetensors passes the shared adapter suite (tests/adapter_suite.py)."""

from __future__ import annotations

from pathlib import Path

import helpers
import numpy as np
from adapter_suite import AdapterTests


class TestSafetensorsSuite(AdapterTests):
    adapter_name = "safetensors"
    suffix = ".safetensors"
    keeps_order = False  # the safetensors library orders tensors by dtype alignment, then name

    def make_file(self, path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
        helpers.write_st(path, tensors, metadata)

    def read_native(self, path: Path) -> dict[str, np.ndarray]:
        return helpers.read_st(path)[0]
