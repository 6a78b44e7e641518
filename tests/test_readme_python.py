"""README's Python examples, run as written: each ```python block, with only the names it leaves to the reader.

The worked example's shell commands are replayed by test_readme_example.py; these blocks had no such check
(a renamed function or attribute in them would have stayed in README unnoticed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from safetensors.numpy import save_file

import paramseal
from paramseal import _demo_model

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def _block(first_line: str) -> str:
    found = [b for b in _blocks() if b.startswith(first_line)]
    assert len(found) == 1, f"README has {len(found)} python blocks starting {first_line!r}"
    return found[0]


def test_every_python_block_is_checked() -> None:
    assert [b.splitlines()[0] for b in _blocks()] == [
        "import paramseal",
        "import paramseal.torch as pst",
        "from paramseal.gpu import GpuVerifier",
    ]


def test_the_api_example_runs_and_its_comments_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_file(_demo_model.train(0), str(tmp_path / "model.safetensors"))  # "the worked example's model"
    monkeypatch.chdir(tmp_path)
    ns: dict[str, Any] = {}
    exec(_block("import paramseal\n"), ns)
    assert ns["report"].status == "intact"
    assert ns["result"].report.status == "recovered"
    assert ns["result"].report.restored_count > 0


def _module_and_key() -> tuple[Any, paramseal.Key]:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).eval()
    return model, paramseal.Key.generate()


def test_the_live_module_example_runs() -> None:
    model, key = _module_and_key()
    ns: dict[str, Any] = {"model": model, "key": key}
    exec(_block("import paramseal.torch as pst\n"), ns)
    assert ns["pst"].verify_module(model, key, ns["header"]).status == "intact"


def test_the_gpu_example_runs_on_the_tensors_device() -> None:
    """README says "model already on the GPU": the lines run on the CPU too (the torch-ops engine), as in CI."""
    import paramseal.torch as pst

    model, key = _module_and_key()
    header = pst.seal_module(model, key).header_json
    seal_id = paramseal.verify({n: t.numpy() for n, t in model.state_dict().items()}, key, header).seal_id
    ns: dict[str, Any] = {"model": model, "key": key, "header": header, "ID": seal_id}
    exec(_block("from paramseal.gpu import GpuVerifier\n"), ns)
    v = ns["verifier"]
    assert v.check().ok and v.verify().status == "intact" and v.verify(expect_seal=seal_id).status == "intact"
