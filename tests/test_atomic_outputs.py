"""Outputs placed whole or not at all, whatever stops the program: interrupts, repeated interrupts, two outputs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import paramseal
from paramseal import _patch, files


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def _precopy_done() -> None:
    """Wait for any input copy still being made (its file may be gone, it then stops)."""
    for t in threading.enumerate():
        if t.name == "paramseal-precopy":
            t.join()


def test_a_second_interrupt_while_recover_stops_its_input_copy_leaves_no_temporary_file(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while recover waited for its copy of the input, and again while it stopped that copy: the
    second KeyboardInterrupt left `cancel` before it deleted the copy, an input-size '.OUT.*.tmp' left behind."""

    def interrupted(self: threading.Thread, timeout: float | None = None) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "out.safetensors"
    monkeypatch.setattr(_patch.Precopy, "join", interrupted)
    with pytest.raises(KeyboardInterrupt):
        files.recover_file(sealed_file, out, key)
    monkeypatch.undo()
    _precopy_done()
    assert _temporaries(tmp_path) == [] and not out.exists()


def test_an_interrupt_while_recover_starts_its_input_copy_leaves_no_temporary_file(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the copy's thread started (start() waits for it): the copy was made before the
    block that stops it, and was left behind whole."""
    real = _patch.Precopy.start

    def interrupted(self: _patch.Precopy) -> None:
        real(self)
        raise KeyboardInterrupt

    out = tmp_path / "out.safetensors"
    monkeypatch.setattr(_patch.Precopy, "start", interrupted)
    with pytest.raises(KeyboardInterrupt):
        files.recover_file(sealed_file, out, key)
    _precopy_done()
    assert _temporaries(tmp_path) == [] and not out.exists()
