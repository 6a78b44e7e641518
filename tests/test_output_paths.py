"""Output and input paths that are odd but legal: long names, names a shell or a decoder trips on, links."""

from __future__ import annotations

import errno
import json
import os
import sys
import warnings
from pathlib import Path

import helpers
import numpy as np
import pytest

import paramseal
from paramseal import files, sharded
from paramseal.errors import ParamSealWarning

NAME_MAX = 255  # bytes in a file name on the file systems the tests run on


def _long(suffix: str, fill: str = "m") -> str:
    """A name of exactly NAME_MAX bytes ending in ``suffix`` (``fill`` may be a multi-byte character)."""
    room = NAME_MAX - len(suffix.encode())
    n = room // len(fill.encode())
    return "x" * (room - n * len(fill.encode())) + fill * n + suffix


def _model_in(tmp_path: Path, suffix: str) -> Path:
    """A one-tensor fp32 model (large enough for a .pt to carry its header in its weights) as ``suffix``."""
    w = helpers.fp32_model(1 << 16, seed=3)
    src = helpers.write_st(tmp_path / "in.safetensors", w)
    if suffix == ".safetensors":
        return src
    out = tmp_path / f"in{suffix}"
    files.write_model(out, files.read_model(src))
    return out


def _temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".npy", ".pt"])
@pytest.mark.parametrize("fill", ["m", "é"])
def test_an_output_name_at_the_length_limit_is_written(tmp_path: Path, key_file: Path, suffix: str, fill: str) -> None:
    """The temporary file beside it ('.NAME.XXXXXXXX.tmp') is longer: it must not make a legal name fail."""
    if suffix == ".pt":
        pytest.importorskip("torch")
    src = _model_in(tmp_path, suffix)
    out = tmp_path / _long(suffix, fill)
    rc, _, err = helpers.run_cli(["seal", src, out, "--key", key_file])
    assert rc == 0, err
    rc, _, err = helpers.run_cli(["verify", out, "--key", key_file])
    assert rc == 0, err
    back = tmp_path / _long(suffix, "r")
    rc, _, err = helpers.run_cli(["recover", out, back, "--key", key_file])
    assert rc == 0 and back.is_file(), err
    assert _temps(tmp_path) == []


def test_a_sharded_output_folder_named_at_the_length_limit_is_written(tmp_path: Path, key_file: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    shard = _long(".safetensors", "s")  # a shard's own temporary, in the folder being built
    t = helpers.fp32_model(1 << 12, seed=1)
    helpers.write_st(folder / shard, t)
    (folder / sharded.INDEX).write_text(json.dumps({"metadata": {}, "weight_map": dict.fromkeys(t, shard)}))
    out = tmp_path / _long("")
    rc, _, err = helpers.run_cli(["seal", folder, out, "--key", key_file])
    assert rc == 0, err
    assert sharded.verify_dir(out, paramseal.load_key(key_file)).status == "intact"
    assert _temps(tmp_path) == []


def test_keygen_force_replaces_a_key_named_at_the_length_limit(tmp_path: Path) -> None:
    kf = tmp_path / _long(".key")
    rc, _, err = helpers.run_cli(["keygen", kf])
    assert rc == 0, err
    old = kf.read_text()
    rc, _, err = helpers.run_cli(["keygen", kf, "--force"])
    assert rc == 0, err
    assert kf.read_text() != old and _temps(tmp_path) == []


@pytest.mark.skipif(sys.platform != "linux", reason="file-name limits as on Linux")
def test_atomic_path_temporary_names_fit_and_leave_the_final_name_known(tmp_path: Path) -> None:
    from paramseal._tempname import final_name, final_path

    dst = tmp_path / _long(".safetensors", "é")
    with files.atomic_path(dst) as tmp:
        (folder,) = _temps(tmp_path)  # the temporary file's own folder, '.NAME.XXXXXXXX.tmp' cut to fit
        assert len(os.fsencode(folder)) <= NAME_MAX and tmp.name == dst.name and tmp.parent.samefile(tmp_path / folder)
        assert final_name(tmp) == dst.name and final_path(tmp) == dst
        tmp.write_bytes(b"x")
    assert dst.read_bytes() == b"x" and final_path(tmp) == tmp and _temps(tmp_path) == []


def test_onnx_external_data_side_files_fit_beside_an_output_named_at_the_limit(tmp_path: Path, key_file: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), f"w{i}") for i in range(2)]
    model = helper.make_model(helper.make_graph([], "g", [], [], initializer=inits))
    src = tmp_path / "in.onnx"
    onnx.save_model(model, str(src), save_as_external_data=True, location="in.onnx.data", size_threshold=0)
    out = tmp_path / _long(".onnx")
    rc, _, err = helpers.run_cli(["seal", src, out, "--key", key_file])
    assert rc == 0, err
    side = [p for p in tmp_path.iterdir() if p.name.endswith(".data") and p.name != "in.onnx.data"]
    assert len(side) == 1 and side[0].name.startswith(out.name[:200]), [p.name for p in side]
    rc, _, err = helpers.run_cli(["verify", out, "--key", key_file])
    assert rc == 0, err
    rc, _, err = helpers.run_cli(["recover", out, out, "--in-place", "--key", key_file])  # its side file replaced
    assert rc == 0, err
    side = [p for p in tmp_path.iterdir() if p.name.endswith(".data") and p.name != "in.onnx.data"]
    assert len(side) == 1 and _temps(tmp_path) == [], [p.name for p in side]
    rc, _, err = helpers.run_cli(["verify", out, "--key", key_file])
    assert rc == 0, err


@pytest.mark.parametrize("limit", [-1, 0, 8])
def test_a_name_limit_the_file_system_cannot_tell_or_too_small_gives_a_usable_temporary_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """pathconf says -1 where a file system has no limit: temporary names must not be cut to nothing (or loop)."""
    from paramseal import _tempname

    monkeypatch.setattr(_tempname.os, "pathconf", lambda *_: limit)
    assert _tempname.name_max(tmp_path) == (NAME_MAX if limit <= 0 else limit)
    assert _tempname.cut_name("model.safetensors", -3) == ""
    dst = tmp_path / "model.safetensors"
    with files.atomic_path(dst) as tmp:
        tmp.write_bytes(b"x")
    assert dst.read_bytes() == b"x" and _temps(tmp_path) == []


def test_in_place_keeps_the_format_of_a_safetensors_file_named_bin(tmp_path: Path, key_file: Path) -> None:
    """``.bin`` names no one format: a safetensors file under it is read as one, and written in place as one.

    ``seal``/``recover --in-place`` turned such a file into a torch pickle (a new ``.bin`` output is a .pt),
    dropping its metadata, and recover called the result recovered.
    """
    w = helpers.fp32_model(1 << 16, seed=5)
    m = helpers.write_st(tmp_path / "pytorch_model.bin", w, metadata={"format": "pt"})
    assert helpers.run_cli(["seal", m, m, "--key", key_file, "--in-place"])[0] == 0
    assert m.read_bytes()[8:9] == b"{"  # still safetensors: an 8-byte length, then its JSON header
    sealed = m.read_bytes()
    raw = bytearray(sealed)
    raw[-100] ^= 0x40  # a bit flipped in the last tensor's data
    m.write_bytes(bytes(raw))
    rc, out, err = helpers.run_cli(["recover", m, m, "--key", key_file, "--in-place"])
    assert rc == 0, out + err
    assert m.read_bytes() == sealed


@pytest.mark.parametrize("verb", ["seal", "recover", "attack", "header-out"])
def test_an_existing_output_you_may_not_write_is_refused_as_cp_refuses_it(
    tmp_path: Path, model_file: Path, sealed_file: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    """A read-only file at OUT was replaced without a word: the rename into place needs only the folder's permission.

    cp, a shell's ``>`` and every framework's save refuse it; so does ParamSeal now, before any work (exit 3).
    """
    helpers.as_a_user(monkeypatch)
    kept = tmp_path / ("h.json" if verb == "header-out" else "kept.safetensors")
    kept.write_bytes(b"released, read-only")
    kept.chmod(0o444)
    argv = {
        "seal": ["seal", model_file, kept, "--key", key_file],
        "recover": ["recover", sealed_file, kept, "--key", key_file],
        "attack": ["attack", "--kind", "bitflip", sealed_file, kept],
        "header-out": ["seal", model_file, tmp_path / "s.safetensors", "--key", key_file, "--header-out", kept],
    }[verb]
    rc, _, err = helpers.run_cli(argv)
    assert rc == 3 and f"cannot write '{kept}'" in err and "mode 444" in err, err
    assert kept.read_bytes() == b"released, read-only" and _temps(tmp_path) == []
    assert not (tmp_path / "s.safetensors").exists()


def test_an_existing_output_on_a_read_only_file_system_is_refused_as_such_not_by_its_mode(
    tmp_path: Path, model_file: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a read-only mount (simulated: mounting needs root) the kernel's access() says no for a 0644 file.

    The refusal said 'you may not write it (mode 644) ... chmod u+w', which fails there too; a new output
    in the same folder was told the file system is read-only. Both are now told that.
    """
    kept = tmp_path / "kept.safetensors"
    kept.write_bytes(b"on a read-only mount")
    kept.chmod(0o644)
    real_access, real_statvfs = os.access, os.statvfs

    def access(path: object, mode: int, **kw: object) -> bool:
        return False if mode & os.W_OK and Path(str(path)) == kept else real_access(path, mode, **kw)  # type: ignore[arg-type]

    class _Ro:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "statvfs", lambda p: _Ro() if Path(str(p)) == kept else real_statvfs(p))
    rc, _, err = helpers.run_cli(["seal", model_file, kept, "--key", key_file])
    assert rc == 3 and "the file system is read-only" in err and "chmod" not in err, err
    assert kept.read_bytes() == b"on a read-only mount"


def test_in_place_still_replaces_a_read_only_model_and_a_link_to_one_is_replaced_not_written_through(
    tmp_path: Path, model_file: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--in-place names the file to change (it stays read-only); a link at OUT is replaced, the file it names stays."""
    import shutil

    helpers.as_a_user(monkeypatch)
    m = shutil.copy(model_file, tmp_path / "m.safetensors")
    os.chmod(m, 0o444)
    assert helpers.run_cli(["seal", m, m, "--key", key_file, "--in-place"])[0] == 0
    assert os.stat(m).st_mode & 0o777 == 0o444 and helpers.run_cli(["verify", m, "--key", key_file])[0] == 0
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"x")
    kept.chmod(0o444)
    link = tmp_path / "link.safetensors"
    link.symlink_to(kept.name)
    assert helpers.run_cli(["seal", model_file, link, "--key", key_file])[0] == 0
    assert not link.is_symlink() and kept.read_bytes() == b"x"


def test_an_output_in_a_loop_of_links_is_said_not_an_internal_error(tmp_path: Path, key_file: Path) -> None:
    """Path.resolve raised RuntimeError ('Symlink loop') for a checkpoint's output folder and for --header-out."""
    model = helpers.write_st(tmp_path / "m.safetensors", helpers.fp32_model(1 << 12, seed=1))
    ckpt = helpers.write_checkpoint(tmp_path / "ckpt", {"a.safetensors": helpers.fp32_model(1 << 12, seed=2)})
    sealed = tmp_path / "sealed"
    assert helpers.run_cli(["seal", ckpt, sealed, "--key", key_file])[0] == 0
    lp = tmp_path / "lp"
    lp.symlink_to("lp")
    before = helpers.listing(tmp_path)
    for argv, bad in (
        (["seal", ckpt, lp / "o"], lp / "o"),
        (["recover", sealed, lp / "o"], lp / "o"),
        (["seal", model, tmp_path / "o.safetensors", "--header-out", lp / "h.json"], lp / "h.json"),
    ):
        rc, out, err = helpers.run_cli([*argv, "--key", key_file])
        assert rc == 3 and err == f"error: cannot write '{bad}': folder '{lp}' does not exist\n", (out, err)
        assert helpers.listing(tmp_path) == before


def test_an_in_place_folder_or_a_header_from_in_a_loop_of_links_is_said_not_an_internal_error(
    tmp_path: Path, key_file: Path
) -> None:
    """--in-place with a folder, and --header-from, compared paths through Path.resolve: RuntimeError, a traceback."""
    ckpt = helpers.write_checkpoint(tmp_path / "ckpt", {"a.safetensors": helpers.fp32_model(1 << 12, seed=2)})
    sealed = tmp_path / "sealed"
    assert helpers.run_cli(["seal", ckpt, sealed, "--key", key_file])[0] == 0
    model = sealed / "a.safetensors"
    lp = tmp_path / "lp"
    lp.symlink_to("lp")
    before = helpers.listing(tmp_path)
    for argv, said in (
        (["seal", ckpt, lp, "--in-place"], "--in-place works for single files only"),
        (["recover", sealed, lp, "--in-place"], "--in-place works for single files only"),
        (["recover", model, model, "--in-place", "--header-from", lp], f"header file '{lp}' (--header-from, header=) "),
    ):
        rc, out, err = helpers.run_cli([*argv, "--key", key_file])
        assert rc == 3 and said in err and len(err.splitlines()) == 1, (out, err)
        assert helpers.listing(tmp_path) == before


def test_an_immutable_existing_output_is_hinted_at_not_only_the_folder(
    tmp_path: Path, model_file: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renaming over an immutable (chattr +i) file fails with EPERM in a writable folder (simulated: chattr needs root).

    The hint said only 'check that the folder is writable by you', which it was.
    """
    kept = tmp_path / "kept.safetensors"
    kept.write_bytes(b"immutable")
    real_replace = os.replace

    def replace(src: object, dst: object, **kw: object) -> None:
        if Path(str(dst)) == kept:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(dst))
        real_replace(src, dst, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace)
    rc, _, err = helpers.run_cli(["seal", model_file, kept, "--key", key_file])
    assert rc == 3 and f"cannot write '{kept}'" in err and "immutable or append-only" in err and "lsattr" in err, err
    assert kept.read_bytes() == b"immutable" and _temps(tmp_path) == []


def test_where_warnings_are_errors_the_hard_link_warning_comes_before_anything_is_replaced(
    tmp_path: Path, model_file: Path, key: paramseal.Key
) -> None:
    """The warning came after the rename: with warnings as errors the call failed, yet the file was replaced."""
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"old content")
    os.link(out, tmp_path / "other-name")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ParamSealWarning)
        with pytest.raises(ParamSealWarning, match="had 1 other hard link"):
            files.seal_file(model_file, out, key)
    assert out.read_bytes() == b"old content" and _temps(tmp_path) == []
    with pytest.warns(ParamSealWarning, match="had 1 other hard link"):
        files.seal_file(model_file, out, key)
    assert files.verify_file(out, key).status == "intact" and (tmp_path / "other-name").read_bytes() == b"old content"
