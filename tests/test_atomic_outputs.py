"""Outputs placed whole or not at all, whatever stops the program: interrupts, repeated interrupts, two outputs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import helpers
import numpy as np
import pytest

import paramseal
from paramseal import _patch, files, sharded


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


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_an_interrupt_once_the_sealed_model_is_in_place_still_places_its_header_out(
    tmp_path: Path, model_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """Ctrl-C (or SIGTERM) between the sealed model's rename and its --header-out's: the new model was
    in place and the header file was still an older seal's, which --header-from then read for this one."""
    out, hdr = tmp_path / f"sealed{suffix}", tmp_path / "sealed.header.json"
    old = files.seal_file(model_file, out, key, header_out=hdr)
    real = os.replace

    def interrupted_after(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        real(a, b)
        if Path(b) == out:
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted_after)
    with pytest.raises(KeyboardInterrupt):
        files.seal_file(model_file, out, key, header_out=hdr, reseal=True)
    monkeypatch.undo()
    new = files.read_header(out, key)
    assert new != old.header_json  # the model was sealed again (a new salt) ...
    assert hdr.read_text(encoding="utf-8").strip() == new  # ... and the header kept beside it is its own
    assert files.verify_file(out, key, header=files.read_header(hdr)).ok
    assert _temporaries(tmp_path) == []


def test_an_interrupt_before_the_sealed_model_is_in_place_leaves_both_outputs_as_they_were(
    tmp_path: Path, model_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, hdr = tmp_path / "sealed.safetensors", tmp_path / "sealed.header.json"
    files.seal_file(model_file, out, key, header_out=hdr)
    before = out.read_bytes(), hdr.read_bytes()

    def interrupted_before(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted_before)
    with pytest.raises(KeyboardInterrupt):
        files.seal_file(model_file, out, key, header_out=hdr, reseal=True)
    monkeypatch.undo()
    assert (out.read_bytes(), hdr.read_bytes()) == before and _temporaries(tmp_path) == []


@pytest.mark.parametrize(
    ("command", "suffix"), [("seal", ".safetensors"), ("seal", ".npz"), ("recover", ".safetensors")]
)
def test_an_existing_output_keeps_its_mode_as_cp_keeps_it(
    tmp_path: Path, model_file: Path, sealed_file: Path, key: paramseal.Key, command: str, suffix: str
) -> None:
    """README: a new output gets the umask's mode, one that replaces a file keeps that file's mode (as cp does)."""
    out = tmp_path / f"out{suffix}"
    out.write_bytes(b"an older output")
    os.chmod(out, 0o640)
    if command == "seal":
        files.seal_file(model_file, out, key)
    else:
        assert files.recover_file(sealed_file, out, key).path == out
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and out.read_bytes() != b"an older output"


_CUT_SUBMIT = """
import threading, time
from paramseal import _parallel
_parallel._cores = lambda: 2  # a pool even on one core
start, ran = threading.Thread.start, []
def cut(self):  # Ctrl-C just as the pool's first thread started, before the pool recorded it
    start(self)
    if self.name.startswith("paramseal") and not getattr(cut, "done", False):
        cut.done = True
        raise KeyboardInterrupt
threading.Thread.start = cut
def item(x):
    time.sleep(0.2)
    ran.append(x)
try:
    _parallel.parallel_map(item, range(4))
except KeyboardInterrupt:
    seen = sorted(ran)
time.sleep(0.5)
print(seen)
print(sorted(ran))
"""


def test_an_interrupt_while_a_pool_starts_a_thread_neither_leaves_work_running_nor_hangs_the_exit() -> None:
    """Ctrl-C inside ThreadPoolExecutor.submit, as it started the pool's first thread: the item queued ran on
    after parallel_map had raised, and at exit the interpreter waited forever for that thread, which
    concurrent.futures never wakes (the program hung after printing 'interrupted'; seen under SIGINT)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    try:
        r = subprocess.run([sys.executable, "-c", _CUT_SUBMIT], env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the interpreter never exited")
    assert r.returncode == 0, r.stderr
    seen, at_exit = r.stdout.splitlines()
    assert seen == at_exit  # nothing ran after parallel_map raised


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_a_sealed_output_and_its_rename_are_flushed_to_disk_before_seal_reports_it(
    tmp_path: Path, model_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """The file's fsync keeps its bytes; only the folder's keeps its name: a crash could bring the old file back."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    synced = helpers.record_fsyncs(monkeypatch)
    out = out_dir / f"m{suffix}"
    files.seal_file(model_file, out, key)
    assert {out.stat().st_ino, out_dir.stat().st_ino} <= set(synced)


def test_a_new_key_files_name_is_flushed_to_disk_before_keygen_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key lost in a crash after keygen said OK leaves every model sealed with it unverifiable."""
    synced = helpers.record_fsyncs(monkeypatch)
    for overwrite in (False, True):
        synced.clear()
        p = paramseal.write_key(tmp_path / "my.key", paramseal.Key.generate(), overwrite=overwrite)
        assert {p.stat().st_ino, tmp_path.stat().st_ino} <= set(synced)


def test_a_sealed_checkpoint_folder_is_flushed_to_disk_before_seal_reports_it(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its shards' names in the new folder, and the folder's own name in its parent."""
    rng = np.random.default_rng(0)
    shards = {
        f"model-0000{i}-of-00002.safetensors": {f"w{i}": rng.standard_normal((64, 64), np.float32)} for i in (1, 2)
    }
    ckpt = helpers.write_checkpoint(tmp_path / "ckpt", shards, {"format": "pt"}, {"total_size": 1})
    (tmp_path / "parent").mkdir()
    out = tmp_path / "parent" / "sealed"
    synced = helpers.record_fsyncs(monkeypatch)
    sharded.seal_dir(ckpt, out, key, workers=1)
    assert {out.stat().st_ino, out.parent.stat().st_ino} <= set(synced)


def test_a_pt_torch_names_after_its_output_is_never_readable_by_others_before_its_rename(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch writes it in a folder of its own with a new file's mode (0644), moved beside the output as the
    temporary file: it waited there readable by all until its final mode (0600 here) was set."""
    torch = pytest.importorskip("torch")
    w = helpers.fp32_model(1 << 16, seed=3)
    torch.save({k: torch.from_numpy(v) for k, v in w.items()}, tmp_path / "in.pt")
    out = tmp_path / "out.pt"
    out.write_bytes(b"private")
    out.chmod(0o600)
    modes: list[int] = []
    real = os.replace

    def spy(a: str | os.PathLike[str], b: str | os.PathLike[str], **kw: object) -> None:
        if Path(b).resolve().is_relative_to(tmp_path.resolve()):  # beside the output, or into its temporary folder
            modes.append(stat.S_IMODE(os.lstat(a).st_mode))
        real(a, b, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", spy)
    files.seal_file(tmp_path / "in.pt", out, key)
    assert len(modes) == 2 and all(m & 0o077 == 0 for m in modes), [oct(m) for m in modes]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
