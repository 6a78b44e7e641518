"""The benchmark scripts refuse arguments that would give a traceback or a figure that means nothing.

They are scripts, not package code: each is loaded from ``benchmarks/`` by path. Nothing here
times anything or starts a worker process.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(script: str) -> ModuleType:
    name = f"paramseal_bench_{script}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _DIR / f"{script}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "args",
    [["--size-gib", "0"], ["--size-gib", "-1"], ["--size-gib", "nan"], ["--size-gib", "0.01", "--repeats", "0"]],
)
def test_bench_core_refuses_nonsense_arguments(
    args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _load("bench_core")

    def started(*a: object, **k: object) -> None:
        raise AssertionError("the benchmark started a worker")

    monkeypatch.setattr(bench, "spawn", started)
    monkeypatch.setattr(sys, "argv", ["bench_core.py", *args, "--dir", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        bench.main()
    assert e.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_bench_core_targets_need_a_true_outcome() -> None:
    outcome = _load("bench_core").outcome
    assert outcome("verify", "intact", None) == (True, "")
    assert not outcome("verify", "tampered", None)[0]
    assert outcome("recover", "recovered", True) == (True, "")
    for exact in (False, None):  # compared and different, or no output to compare
        ok, note = outcome("recover", "recovered", exact)
        assert not ok and "FALSE CLAIM" in note
    ok, note = outcome("recover", "unrecoverable", False)  # said so itself: its time is still reported
    assert ok and "not fully recovered" in note
