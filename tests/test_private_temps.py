"""An output's temporary file in a folder of its own (0700), reached through its descriptor.

Whoever else may write OUT's folder (a shared, group-writable one) could put a link at the temporary
file's name between its creation and the writer's open by name: the writer (root, for recover --in-place
in a user's folder) then truncated and wrote the file it named. No one else may enter the temporary's
folder; renaming that folder and putting a link at its name changes nothing for a path through its
descriptor. These tests play that other user: they touch only names in OUT's folder, never in the
temporary's folder (which they could not enter).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helpers
import pytest

import paramseal
from paramseal import _patch, files, sharded
from paramseal._paths import atomic_path, temp_beside
from paramseal._tempname import discard
from paramseal.errors import OutputError
from paramseal.formats import safetensors as st_format
from paramseal.formats.registry import adapters

PRECIOUS = b"precious, someone else's"
pytestmark = pytest.mark.filterwarnings("ignore:.*keeps its seal header only:paramseal.errors.ParamSealWarning")


def _temporaries(folder: Path) -> list[Path]:
    ours = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    return sorted(ours + [p for p in folder.iterdir() if p.name.startswith(".paramseal-") and p not in ours])


def _swap_in_links(folder: Path, victim: Path, names: list[str], prefix: str = ".") -> None:
    """Another user who may write ``folder``: every ParamSeal temporary there made to lead to ``victim``.

    A temporary file is replaced by a link; a temporary folder (which they may not enter) renamed away, a link
    to a folder of theirs put at its name, in which each of ``names`` leads to ``victim``.
    """
    evil = victim.parent / "evil"
    evil.mkdir(exist_ok=True)
    for n in names:
        if not (evil / n).is_symlink():
            (evil / n).symlink_to(victim)
    for p in _temporaries(folder):
        if p.is_symlink() or not p.name.startswith(prefix) or p.name.startswith(".moved-"):
            continue
        if p.is_dir():
            p.rename(p.with_name(f".moved-{p.name}"))
            p.symlink_to(evil, target_is_directory=True)
        else:
            p.unlink()
            p.symlink_to(victim)


def _before_writes(monkeypatch: pytest.MonkeyPatch, act: Callable[[], None]) -> None:
    """Run ``act`` as each writer starts, its temporary made and not yet opened."""

    def wrap(real: Callable[..., Any]) -> Callable[..., Any]:
        def write(*a: Any, **kw: Any) -> Any:
            act()
            return real(*a, **kw)

        return write

    monkeypatch.setattr(st_format.StreamWriter, "__init__", wrap(st_format.StreamWriter.__init__))
    for adapter in {type(a) for a in adapters()}:
        monkeypatch.setattr(adapter, "write", wrap(adapter.write))
    from paramseal.formats import _onnx_write  # its side files' and model's own temporaries, opened by name

    monkeypatch.setattr(_onnx_write, "open", wrap(open), raising=False)


def _onnx_model(path: Path) -> Path:
    """A two-layer ONNX model with its weights in external data (``NAME.data``)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = helpers.fp32_model(1 << 17, seed=5, tensors=2)
    (a, wa), (b, wb) = ((n, v.reshape(256, 256)) for n, v in w.items())
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", a], ["h"]), helper.make_node("MatMul", ["h", b], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
        initializer=[numpy_helper.from_array(wa, a), numpy_helper.from_array(wb, b)],
    )
    m = helper.make_model(g)
    onnx.save_model(m, str(path), save_as_external_data=True, location=f"{path.name}.data", size_threshold=0)
    return path


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.write_bytes(PRECIOUS)
    return victim


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".pt", ".onnx"])
def test_a_link_put_at_the_temporary_name_before_the_writer_opens_it_is_not_written_through(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    if suffix == ".pt":
        pytest.importorskip("torch")
    shared = tmp_path / "shared"
    shared.mkdir()
    victim = _victim(tmp_path)
    out, header = shared / f"out{suffix}", shared / "h.json"
    names = [out.name, header.name, f"{out.name}.data"]
    _before_writes(monkeypatch, lambda: _swap_in_links(shared, victim, names))
    failed = None
    try:
        if suffix == ".safetensors":  # the streaming writer, and --header-out's file beside it
            files.seal_file(sealed_file, out, key, reseal=True, header_out=header)
        elif suffix == ".onnx":  # the model's temporary, then its side file's and its own in the writer's folder
            files.seal_file(_onnx_model(tmp_path / "m.onnx"), out, key)
        else:
            files.recover_file(sealed_file, out, key)
    except OutputError as e:  # a link found after the write (refused since e196df5): too late for the victim
        failed = e
    assert victim.read_bytes() == PRECIOUS
    assert failed is None, failed
    assert suffix != ".safetensors" or header.read_text().startswith("{")
    monkeypatch.undo()
    assert files.verify_file(out, key).ok
    # what is left is the other user's: their link, and the folder they renamed (one at least), emptied
    assert any(p.name.startswith(".moved-") for p in _temporaries(shared))
    for p in _temporaries(shared):
        assert p.is_symlink() or (p.name.startswith(".moved-") and not any(p.iterdir())), p


def test_a_link_put_at_the_sharded_output_folder_being_built_is_not_written_through(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files beside the shards (config.json) were copied into it by name, following a link put there."""
    ckpt = helpers.write_checkpoint(tmp_path / "ckpt", {"model-1.safetensors": helpers.fp32_model(1 << 10)})
    (ckpt / "config.json").write_text("{}")
    shared = tmp_path / "shared"
    shared.mkdir()
    victim = _victim(tmp_path)
    real = sharded._copy_others

    def copy(*a: Any) -> None:
        _swap_in_links(shared, victim, ["config.json"])
        real(*a)

    monkeypatch.setattr(sharded, "_copy_others", copy)
    failed = None
    try:
        sharded.seal_dir(ckpt, shared / "sealed", key, workers=1)
    except OutputError as e:
        failed = e
    assert victim.read_bytes() == PRECIOUS
    # a folder is renamed by its name, which now leads elsewhere: refused, not renamed
    assert failed is not None and "was replaced before its rename" in str(failed), failed
    assert not (shared / "sealed").exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".pt", ".json"])
def test_the_temporary_file_is_alone_in_a_new_folder_only_its_owner_may_enter(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    if suffix == ".pt":
        pytest.importorskip("torch")
    seen: list[tuple[str, int, int, list[str]]] = []

    def look() -> None:
        for p in _temporaries(tmp_path):
            st = os.lstat(p)
            seen.append((p.name, stat.S_IMODE(st.st_mode) if stat.S_ISDIR(st.st_mode) else -1, st.st_uid, []))
            seen[-1][3].extend(os.listdir(p))

    _before_writes(monkeypatch, look)
    if suffix == ".json":  # no format writer: looked at inside the block
        with atomic_path(tmp_path / "page.json") as tmp:
            tmp.write_text("{}")
            look()
    else:  # twice: a second output, a folder of its own
        for _ in range(2):
            if suffix == ".safetensors":  # the streaming writer (recover copies the input instead)
                files.seal_file(sealed_file, tmp_path / f"out{suffix}", key, reseal=True)
            else:
                files.recover_file(sealed_file, tmp_path / f"out{suffix}", key)
    names = {n for n, *_ in seen}
    assert seen and all(mode == 0o700 and uid == os.geteuid() for _, mode, uid, _ in seen), seen
    assert all(len(inside) <= 1 for *_, inside in seen) and (suffix == ".json" or len(names) == 2), seen
    assert _temporaries(tmp_path) == []


def test_no_temporary_folder_is_left_after_a_failed_write(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk as the output is written (its space reserved): the error, and nothing left behind."""
    real = os.posix_fallocate

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    out = tmp_path / "out.safetensors"
    with pytest.raises(OutputError, match=f"cannot write '{out}'"):
        files.seal_file(sealed_file, out, key, reseal=True)
    monkeypatch.setattr(os, "posix_fallocate", real)
    assert _temporaries(tmp_path) == [] and not out.exists()


@pytest.mark.parametrize("when", ["writing", "recover's input copy"])
def test_no_temporary_folder_is_left_after_an_interrupt(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """Ctrl-C (SIGTERM unwinds as it does) while the output is written, or while recover copies its input."""

    def interrupted(*a: object, **kw: object) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "out.safetensors"
    if when == "writing":
        monkeypatch.setattr(st_format.StreamWriter, "finish", interrupted)
    else:
        monkeypatch.setattr(_patch.Precopy, "join", interrupted)
    with pytest.raises(KeyboardInterrupt):
        if when == "writing":
            files.seal_file(sealed_file, out, key, reseal=True)
        else:
            files.recover_file(sealed_file, out, key)
    monkeypatch.undo()
    for t in threading.enumerate():
        if t.name == "paramseal-precopy":
            t.join()
    assert _temporaries(tmp_path) == [] and not out.exists()


def test_a_link_put_at_the_scratch_folder_is_not_written_through(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lane store past PARAMSEAL_SCRATCH_MIB lives in files beside the output, opened by name too."""
    from paramseal import _pages

    shared = tmp_path / "shared"
    shared.mkdir()
    victim = _victim(tmp_path)
    real = _pages.Mapping.__init__

    def mapping(self: Any, path: Path, **kw: Any) -> None:
        _swap_in_links(shared, victim, [f"scratch{i}" for i in range(8)], ".paramseal-")
        real(self, path, **kw)

    monkeypatch.setenv("PARAMSEAL_SCRATCH_MIB", "0")
    monkeypatch.setattr(_pages.Mapping, "__init__", mapping)
    failed = None
    try:
        files.seal_file(sealed_file, shared / "out.safetensors", key, reseal=True)
    except Exception as e:  # before: the scratch folder's cleanup met the link (rmtree refuses one)
        failed = e
    assert victim.read_bytes() == PRECIOUS
    assert failed is None, failed
    monkeypatch.undo()
    assert files.verify_file(shared / "out.safetensors", key).ok


@pytest.mark.parametrize("swap", ["symlink", "hardlink"])
def test_an_in_place_patch_is_not_written_through_a_name_swapped_after_its_checks(
    tmp_path: Path, model_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    """`recover --in-place` of a safetensors file writes its rebuilt blocks into the file itself, opened by name
    after its checks (not a link, one name): a link put there meanwhile had them written into the file it named."""
    files.seal_file(model_file, model_file, key, in_place=True)
    with open(model_file, "r+b") as f:  # a bit flipped on disk: the header stays as sealed, so it is patched
        f.seek(-5, os.SEEK_END)
        byte = f.read(1)[0]
        f.seek(-5, os.SEEK_END)
        f.write(bytes([byte ^ 0x40]))
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(model_file.read_bytes())  # the same bytes: every check made by name still passes
    before = victim.read_bytes()
    room_kept = _patch._room_kept

    def swapped(*args: Any) -> bool:  # another user, between the checks and the open
        model_file.unlink()
        if swap == "symlink":
            model_file.symlink_to(victim)
        else:
            os.link(victim, model_file)
        return room_kept(*args)

    monkeypatch.setattr(_patch, "_room_kept", swapped)
    with pytest.raises(OutputError, match="while it was recovered; nothing was written"):
        files.recover_file(model_file, model_file, key, in_place=True)
    assert victim.read_bytes() == before


def test_a_precopy_cancelled_twice_leaves_a_later_temporary_be(tmp_path: Path, model_file: Path) -> None:
    """recover cancels an unused copy, writes its output another way, then cancels it again: its path through a
    descriptor (/proc/self/fd/N) led by then to whatever folder took that number, and the second cancel removed it
    (another thread's output in the making, in a process that recovers in threads)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    pre = _patch.Precopy(model_file, temp_beside(a / "out.safetensors"))
    pre.cancel()
    later = temp_beside(b / "out.safetensors")  # the lowest free descriptor: the one the copy's folder had
    try:
        pre.cancel()
        assert later.exists()
    finally:
        discard(later)
    assert not os.listdir(a) and not os.listdir(b)


def test_a_file_system_that_keeps_no_modes_still_takes_outputs(
    tmp_path: Path, model_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vfat, exFAT, CIFS and WSL's /mnt/c show every folder with fixed modes (0755, 0777), whatever mkdir or
    chmod asked: the new temporary folder's group and other bits were taken for a folder put there by someone
    else, and every output there was refused. Ours (its owner) it is: it is used."""
    real = os.fstat

    def modeless(fd: int) -> os.stat_result:
        st = real(fd)
        if not stat.S_ISDIR(st.st_mode):
            return st
        return os.stat_result((st.st_mode | 0o777, *tuple(st)[1:]))

    monkeypatch.setattr(os, "fstat", modeless)
    files.seal_file(model_file, tmp_path / "out.safetensors", key)
    monkeypatch.undo()
    assert files.verify_file(tmp_path / "out.safetensors", key).ok
    assert not _temporaries(tmp_path)


def test_an_interrupt_just_after_a_sharded_folder_is_renamed_into_place_keeps_it(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C between the folder's rename and the flag that said it was placed: the clean-up took it for the
    unfinished folder and emptied, through its descriptor, the output just put in place."""
    ckpt = helpers.write_checkpoint(tmp_path / "ckpt", {"model-1.safetensors": helpers.fp32_model(1 << 10)})
    (ckpt / "config.json").write_text("{}")
    out = tmp_path / "sealed"
    real = os.replace

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        real(src, dst, **kw)
        if Path(dst) == out:
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        sharded.seal_dir(ckpt, out, key, workers=1)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ckpt.iterdir())
    assert files.verify_file(out / "model-1.safetensors", key).status == "intact"
    assert _temporaries(tmp_path) == []
