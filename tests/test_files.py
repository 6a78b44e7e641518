"""Files: seal/verify/recover/inspect on safetensors, atomic outputs, never touching the input."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import helpers
import numpy as np
import pytest

import paramseal
from paramseal import InputError, NotSealedError, OutputError, ParamSealWarning, UsageError, _patch, files
from paramseal.formats import Loaded
from paramseal.formats.safetensors import StreamWriter, read_layout
from paramseal.header import METADATA_KEY, SET_KEY, parse_header

META = {"author": "tests", "license": "apache-2.0"}


def test_seal_file_preserves_names_shapes_dtypes_and_metadata(
    tmp_path: Path, model_file: Path, model: dict, key: paramseal.Key
) -> None:
    out = tmp_path / "sealed.safetensors"
    h = helpers.sha256(model_file)
    sealed = files.seal_file(model_file, out, key)
    assert helpers.sha256(model_file) == h, "the input must never be modified"
    tensors, meta = helpers.read_st(out)
    assert set(tensors) == set(model)
    for name, a in model.items():
        assert tensors[name].shape == a.shape and tensors[name].dtype == a.dtype, name
        k = sealed.header.tensors[[t.name for t in sealed.header.tensors].index(name)].k
        changed = helpers.uview(tensors[name]) ^ helpers.uview(a)
        assert not np.any(changed >> k), f"{name}: bits above the low {k} changed"
    assert {k: v for k, v in meta.items() if k != METADATA_KEY} == META
    assert meta[METADATA_KEY] == sealed.header_json
    assert files.verify_file(out, key).status == "intact"


def test_scalar_and_empty_tensors_keep_their_shape_through_files(tmp_path: Path, key: paramseal.Key) -> None:
    m = {
        "w": np.ones((16, 16), np.float32),
        "temperature": np.array(0.7, np.float32),
        "empty": np.zeros((0, 5), np.float32),
    }
    src = helpers.write_st(tmp_path / "m.safetensors", m)
    out = tmp_path / "s.safetensors"
    files.seal_file(src, out, key)
    tensors, _ = helpers.read_st(out)
    assert tensors["temperature"].shape == (), "a 0-d tensor must stay 0-d"
    assert tensors["empty"].shape == (0, 5)
    assert files.read_model(src).tensors["temperature"].shape == ()


@pytest.mark.parametrize("level", ["light", "standard", "strong"])
def test_every_dtype_round_trips_through_seal_verify_recover(tmp_path: Path, key: paramseal.Key, level: str) -> None:
    # Every dtype, plus enough fp32 that even the light level can rebuild one block of each tensor.
    model = {**helpers.small_model(1), "big.weight": np.random.default_rng(1).standard_normal(8192).astype(np.float32)}
    model_file = helpers.write_st(tmp_path / "m.safetensors", model, META)
    sealed_p, tampered_p, fixed_p = tmp_path / "s.safetensors", tmp_path / "t.safetensors", tmp_path / "f.safetensors"
    files.seal_file(model_file, sealed_p, key, level=level)
    sealed_t, meta = helpers.read_st(sealed_p)
    for name, a in model.items():
        if not helpers.is_float(a.dtype):
            assert helpers.same_bytes(sealed_t[name], a), name
    # Flip one bit in every tensor (bf16, fp16, fp64, ints and bool included).
    t = dict(sealed_t)
    for name, a in t.items():
        t = helpers.flip_bit(t, name, a.size // 2, 0)
    helpers.write_st(tampered_p, t, meta)
    r = files.verify_file(tampered_p, key)
    assert r.status == "tampered" and sorted(r.tampered_tensors) == sorted(model)
    res = files.recover_file(tampered_p, fixed_p, key)
    assert res.report.status == "recovered"
    fixed, fixed_meta = helpers.read_st(fixed_p)
    helpers.assert_model_equal(fixed, sealed_t)
    assert fixed_meta == meta
    assert files.verify_file(fixed_p, key).status == "intact"


def test_output_equal_to_input_is_refused_without_in_place(model_file: Path, key: paramseal.Key) -> None:
    h = helpers.sha256(model_file)
    with pytest.raises(UsageError, match="in-place"):
        files.seal_file(model_file, model_file, key)
    assert helpers.sha256(model_file) == h


def test_output_that_is_a_symlink_to_the_input_is_refused(tmp_path: Path, model_file: Path, key: paramseal.Key) -> None:
    link = tmp_path / "link.safetensors"
    link.symlink_to(model_file)
    h = helpers.sha256(model_file)
    with pytest.raises(UsageError, match="in-place"):
        files.seal_file(model_file, link, key)
    assert helpers.sha256(model_file) == h and link.is_symlink()


def test_in_place_seal_and_recover(tmp_path: Path, model_file: Path, key: paramseal.Key) -> None:
    files.seal_file(model_file, model_file, key, in_place=True)
    assert files.verify_file(model_file, key).status == "intact"
    sealed_t, meta = helpers.read_st(model_file)
    helpers.write_st(model_file, helpers.flip_bit(sealed_t, "fc.weight", 3, 27), meta)
    res = files.recover_file(model_file, model_file, key, in_place=True)
    assert res.report.status == "recovered"
    helpers.assert_model_equal(helpers.read_st(model_file)[0], sealed_t)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_in_place_through_a_symlink_writes_the_file_it_names(
    tmp_path: Path, model_file: Path, key: paramseal.Key
) -> None:
    """The link was replaced by a new file and the file it names left unsealed, or tampered (a hub cache's blob)."""
    link = tmp_path / "link.safetensors"
    link.symlink_to(model_file)
    files.seal_file(link, link, key, in_place=True)
    assert link.is_symlink() and files.verify_file(model_file, key).status == "intact"
    sealed_t, meta = helpers.read_st(model_file)
    helpers.write_st(model_file, helpers.flip_bit(sealed_t, "fc.weight", 3, 27), meta)
    assert files.recover_file(link, link, key, in_place=True).report.status == "recovered"
    assert link.is_symlink()
    helpers.assert_model_equal(helpers.read_st(model_file)[0], sealed_t)


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_in_place_through_a_hub_cache_link_keeps_the_links_format(
    tmp_path: Path, model: dict[str, np.ndarray], key: paramseal.Key, ext: str
) -> None:
    """A hub cache's blob has no extension: the format is the link's name's ('cannot tell the format' of the blob)."""
    fmt = ext[1:]
    (tmp_path / "blobs").mkdir()
    (tmp_path / "snapshot").mkdir()
    blob = tmp_path / "blobs" / "9f86d081884c7d65"
    files.write_model(blob, Loaded(model, {}), fmt)
    link = tmp_path / "snapshot" / f"model{ext}"
    link.symlink_to(Path("..") / "blobs" / blob.name)
    files.seal_file(link, link, key, in_place=True)
    assert link.is_symlink() and files.verify_file(link, key).status == "intact"
    sealed = files.read_model(link)
    files.write_model(blob, Loaded(helpers.flip_bit(sealed.tensors, "fc.weight", 3, 27), sealed.metadata), fmt)
    assert files.recover_file(link, link, key, in_place=True).report.status == "recovered"
    assert link.is_symlink() and sorted(p.name for p in blob.parent.iterdir()) == [blob.name]
    helpers.assert_model_equal(files.read_model(link).tensors, sealed.tensors)


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_in_place_through_a_link_without_an_extension_takes_the_files_format(
    tmp_path: Path, model: dict[str, np.ndarray], key: paramseal.Key, ext: str
) -> None:
    """'model' -> 'model.safetensors': 'cannot tell the format of model' once the link's name alone was asked."""
    target = tmp_path / f"model{ext}"
    files.write_model(target, Loaded(model, {}))
    link = tmp_path / "model"
    link.symlink_to(target.name)
    files.seal_file(link, link, key, in_place=True)
    assert link.is_symlink() and files.verify_file(target, key).status == "intact"
    sealed = files.read_model(target)
    files.write_model(target, Loaded(helpers.flip_bit(sealed.tensors, "fc.weight", 3, 27), sealed.metadata))
    assert files.recover_file(link, link, key, in_place=True).report.status == "recovered"
    assert link.is_symlink()
    helpers.assert_model_equal(files.read_model(target).tensors, sealed.tensors)


def test_sealing_an_already_sealed_file_is_refused(tmp_path: Path, sealed_file: Path, key: paramseal.Key) -> None:
    with pytest.raises(UsageError, match="already sealed"):
        files.seal_file(sealed_file, tmp_path / "twice.safetensors", key)
    assert not (tmp_path / "twice.safetensors").exists()


def test_verify_of_unsealed_file_raises_not_sealed(model_file: Path, key: paramseal.Key) -> None:
    with pytest.raises(NotSealedError, match="paramseal seal"):
        files.verify_file(model_file, key)


def _only_expected_files(folder: Path, expected: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == expected


class _Boom(OSError):
    pass


def test_failed_write_leaves_no_temp_file_and_keeps_the_old_output(
    tmp_path: Path, model_file: Path, key: paramseal.Key, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"previous content")

    def half_write(self: StreamWriter, metadata: dict) -> None:
        self.map.buf[:16] = 7  # the data is in place, the header half-written
        raise _Boom(28, "No space left on device")

    monkeypatch.setattr(StreamWriter, "finish", half_write)
    with pytest.raises(OutputError, match="the disk is full") as caught:
        files.seal_file(model_file, out, key)
    assert isinstance(caught.value.__cause__, _Boom) and isinstance(caught.value, OSError)
    assert out.read_bytes() == b"previous content"
    _only_expected_files(tmp_path, {"model.safetensors", "out.safetensors", "test.key"})


def test_interrupted_write_leaves_no_temp_file(
    tmp_path: Path, model_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: StreamWriter, metadata: dict) -> None:
        self.map.buf[:16] = 7
        raise KeyboardInterrupt

    monkeypatch.setattr(StreamWriter, "finish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        files.seal_file(model_file, tmp_path / "out.safetensors", key)
    _only_expected_files(tmp_path, {"model.safetensors"})


def test_seal_failure_writes_nothing(tmp_path: Path, key: paramseal.Key) -> None:
    src = helpers.write_st(tmp_path / "nan.safetensors", {"w": np.array([1.0, np.nan], np.float32)})
    h = helpers.sha256(src)
    with pytest.raises(paramseal.UnsupportedError, match="NaN"):
        files.seal_file(src, tmp_path / "out.safetensors", key)
    _only_expected_files(tmp_path, {"nan.safetensors"})
    assert helpers.sha256(src) == h


def test_output_into_missing_folder_is_a_usage_error(tmp_path: Path, model_file: Path, key: paramseal.Key) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        files.seal_file(model_file, tmp_path / "no" / "such" / "out.safetensors", key)


def test_output_that_is_a_directory_is_a_usage_error(tmp_path: Path, model_file: Path, key: paramseal.Key) -> None:
    d = tmp_path / "outdir.safetensors"
    d.mkdir()
    with pytest.raises(UsageError, match="directory"):
        files.seal_file(model_file, d, key)
    assert d.is_dir() and not any(d.iterdir())


def test_output_that_is_a_folder_without_a_model_extension_says_it_is_a_folder(
    tmp_path: Path, model_file: Path, key: paramseal.Key
) -> None:
    """'seal m.safetensors outdir' said "cannot tell the format of 'outdir'", which does not say what to change."""
    d = tmp_path / "outdir"
    d.mkdir()
    with pytest.raises(UsageError, match="because it is a directory; give a file path"):
        files.seal_file(model_file, d, key)
    assert d.is_dir() and not any(d.iterdir())


def test_new_output_files_get_ordinary_permissions(tmp_path: Path, model_file: Path, key: paramseal.Key) -> None:
    """A sealed model is meant to be shared: it gets the mode any new file gets (umask), not 0600."""
    old = os.umask(0o022)
    try:
        out = tmp_path / "sealed.safetensors"
        files.seal_file(model_file, out, key)
        plain = tmp_path / "plain"
        plain.write_bytes(b"")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_mode_reads_the_umask_without_setting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mask: int
) -> None:
    """The umask is read from /proc: setting it to read it would give another thread's new file a wrong mode."""
    from paramseal.formats.base import new_mode

    old = os.umask(mask)
    try:
        plain, folder = tmp_path / "plain", tmp_path / "folder"
        plain.write_bytes(b"")
        folder.mkdir()
        with monkeypatch.context() as mp:

            def no_umask(_: int) -> int:
                raise AssertionError("os.umask called")

            mp.setattr(os, "umask", no_umask)
            got = (new_mode(), new_mode(folder=True))
    finally:
        os.umask(old)
    assert got == (stat.S_IMODE(plain.stat().st_mode), stat.S_IMODE(folder.stat().st_mode))
    assert got == (0o666 & ~mask, 0o777 & ~mask)


def test_new_mode_without_proc_sets_and_restores_the_umask(monkeypatch: pytest.MonkeyPatch) -> None:
    from paramseal.formats import base

    real_open = open

    def no_proc(path: object, *a: object, **k: object) -> object:
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *a, **k)  # type: ignore[call-overload]

    old = os.umask(0o027)
    try:
        monkeypatch.setattr("builtins.open", no_proc)
        assert base.new_mode() == 0o640 and base.new_mode(folder=True) == 0o750
        monkeypatch.undo()
        assert os.umask(0o027) == 0o027  # left as it was
    finally:
        os.umask(old)


def test_a_replaced_output_keeps_its_mode(tmp_path: Path, sealed_file: Path, key: paramseal.Key) -> None:
    """An in-place recover that rewrites the file (its header must change) keeps a read-only model read-only."""
    t, meta = helpers.read_st(sealed_file)
    p = helpers.write_st(tmp_path / "ro.safetensors", helpers.flip_bit(t, "fc.weight", 3, 27), {**meta, "x": "added"})
    os.chmod(p, 0o444)
    res = files.recover_file(p, p, key, in_place=True)  # the added metadata key forces the atomic path
    assert res.report.status == "recovered" and stat.S_IMODE(p.stat().st_mode) == 0o444
    helpers.assert_model_equal(helpers.read_st(p)[0], t)


def test_recover_beyond_capacity_writes_nothing_unless_partial_is_allowed(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key
) -> None:
    t, meta = helpers.read_st(sealed_file)
    t["embed.weight"] = np.zeros_like(t["embed.weight"])
    t["fc.weight"] = np.zeros_like(t["fc.weight"])
    bad = helpers.write_st(tmp_path / "bad.safetensors", t, meta)
    out = tmp_path / "out.safetensors"
    res = files.recover_file(bad, out, key)
    assert res.report.status == "unrecoverable"
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    res = files.recover_file(bad, out, key, allow_partial=True)
    assert res.report.status == "unrecoverable" and out.exists()
    # The partial output keeps its seal, so verify still names what remains tampered.
    r = files.verify_file(out, key)
    assert r.status == "tampered" and {"embed.weight", "fc.weight"} <= set(r.tampered_tensors)


def test_recover_of_intact_file_writes_a_copy(tmp_path: Path, sealed_file: Path, key: paramseal.Key) -> None:
    out = tmp_path / "copy.safetensors"
    res = files.recover_file(sealed_file, out, key)
    assert res.report.status == "intact"
    a, am = helpers.read_st(sealed_file)
    b, bm = helpers.read_st(out)
    helpers.assert_model_equal(b, a)
    assert am == bm


def test_recover_drops_extra_tensors_and_restores_renamed_ones(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key
) -> None:
    t, meta = helpers.read_st(sealed_file)
    want = dict(t)
    t["fc.bias.renamed"] = t.pop("fc.bias")
    t["backdoor"] = np.ones(4, np.float32)
    bad = helpers.write_st(tmp_path / "bad.safetensors", t, meta)
    out = tmp_path / "out.safetensors"
    res = files.recover_file(bad, out, key)
    assert res.report.status == "recovered"
    got, _ = helpers.read_st(out)
    helpers.assert_model_equal(got, want)


def test_inspect_unsealed_file_describes_every_level(model_file: Path) -> None:
    info = files.inspect_file(model_file)
    assert info["sealed"] is False and info["tensors"] == 10
    assert info["parameters"]["F32"] == 64 * 48 + 40 * 33 + 40
    assert set(info["levels"]) == {"light", "standard", "strong"}
    f32 = info["levels"]["standard"]["F32"]
    assert f32["k"] == 8 and f32["max_relative_change"] == pytest.approx(255 * 2.0**-23)
    assert f32["contiguous_bound"] == pytest.approx(7.5 / 31.5, abs=1e-4)
    assert info["levels"]["strong"]["F32"]["contiguous_bound"] == pytest.approx(11.5 / 31.5, abs=1e-4)
    assert info["levels"]["standard"]["I64"]["k"] == 0


def test_inspect_says_a_model_whose_floats_all_hold_nan_cannot_be_sealed(tmp_path: Path, key: paramseal.Key) -> None:
    """Seal takes NaN/Inf tensors as data; inspect must not promise bits they will not carry."""
    from paramseal.errors import UnsupportedError

    src = helpers.write_st(tmp_path / "m.safetensors", {"a": np.full(1000, np.nan, np.float32), "i": np.arange(10)})
    info = files.inspect_file(src)
    assert "NaN or Inf" in info["cannot_seal"]
    assert info["levels"] == {}  # seal refuses it: no level would protect it
    with pytest.raises(UnsupportedError, match="NaN or Inf"):
        files.seal_file(src, tmp_path / "out.safetensors", key)
    # one finite fp32 tensor is enough: the dtype carries bits again
    mixed = helpers.write_st(
        tmp_path / "mixed.safetensors", {"a": np.full(1000, np.nan, np.float32), "b": np.ones(640, np.float32)}
    )
    info = files.inspect_file(mixed)
    assert "cannot_seal" not in info and info["levels"]["standard"]["F32"]["k"] == 8


def test_inspect_says_a_model_without_floats_has_none_not_that_they_hold_nan(
    tmp_path: Path, key: paramseal.Key
) -> None:
    """An integer-only model holds no NaN: inspect says why it cannot be sealed as seal does."""
    from paramseal.errors import UnsupportedError

    src = helpers.write_st(tmp_path / "m.safetensors", {"i": np.arange(1000, dtype=np.int64)})
    info = files.inspect_file(src)
    assert info["cannot_seal"].startswith("it has no float tensors") and "NaN" not in info["cannot_seal"]
    with pytest.raises(UnsupportedError, match="without float tensors"):
        files.seal_file(src, tmp_path / "out.safetensors", key)


def test_inspect_sealed_file_needs_no_key_and_shows_the_settings(sealed_file: Path, key: paramseal.Key) -> None:
    info = files.inspect_file(sealed_file)
    assert info["sealed"] is True
    s = info["seal"]
    assert s["scheme"] == "paramseal/2" and s["level"] == "standard" and s["block"] == 64
    assert s["key_fingerprint"] == key.fingerprint
    assert "not checked" in s["authenticated"]
    assert list(info["levels"]) == ["standard"]
    assert info["levels"]["standard"]["BF16"]["k"] == 1


def test_read_and_write_model_round_trip(tmp_path: Path, model: dict) -> None:
    p = tmp_path / "rw.safetensors"
    files.write_model(p, Loaded(model, {"x": "y"}))
    got = files.read_model(p)
    helpers.assert_model_equal(got.tensors, model)
    assert got.metadata == {"x": "y"}
    assert [q.name for q in tmp_path.iterdir()] == ["rw.safetensors"]


def test_progress_is_shown_when_asked_and_not_otherwise(
    tmp_path: Path, model_file: Path, key: paramseal.Key, capsys: pytest.CaptureFixture[str]
) -> None:
    files.seal_file(model_file, tmp_path / "a.safetensors", key, progress=True)
    err = capsys.readouterr().err
    assert "seal" in err and "done" in err
    files.verify_file(tmp_path / "a.safetensors", key)  # stderr is not a terminal here: silent
    assert capsys.readouterr().err == ""


def _flip_in_file(path: Path, offsets: list[int]) -> None:
    """Flip one bit at each byte offset of the file itself (its header stays as it is)."""
    with open(path, "r+b") as f:
        for off in offsets:
            f.seek(off)
            b = f.read(1)[0]
            f.seek(off)
            f.write(bytes([b ^ 0x10]))


def test_in_place_recover_patches_only_the_rebuilt_blocks(tmp_path: Path, model_file: Path, key: paramseal.Key) -> None:
    """A header left as it is: the file is patched where it lies (same inode), only the damaged bytes change."""
    sealed = tmp_path / "s.safetensors"
    files.seal_file(model_file, sealed, key)
    want = sealed.read_bytes()
    size = len(want)
    hit = [size - 5, size // 2 + 3, size - 4001]  # in the tensor data (the header is at the front)
    _flip_in_file(sealed, hit)
    before = sealed.read_bytes()
    assert [i for i in range(size) if before[i] != want[i]] == sorted(hit)
    inode = os.stat(sealed).st_ino
    res = files.recover_file(sealed, sealed, key, in_place=True)
    assert res.report.status == "recovered" and res.path == sealed
    assert os.stat(sealed).st_ino == inode  # patched, not replaced
    assert sealed.read_bytes() == want
    assert files.verify_file(sealed, key).status == "intact"
    assert {p.name for p in tmp_path.iterdir()} == {model_file.name, "s.safetensors"}  # no copy, no temporary file


def test_in_place_recover_with_a_changed_header_replaces_the_file_atomically(
    tmp_path: Path, model_file: Path, key: paramseal.Key
) -> None:
    sealed = tmp_path / "s.safetensors"
    files.seal_file(model_file, sealed, key)
    sealed_t, meta = helpers.read_st(sealed)
    helpers.write_st(sealed, helpers.flip_bit(sealed_t, "fc.weight", 3, 27), {**meta, "note": "added"})
    inode = os.stat(sealed).st_ino
    res = files.recover_file(sealed, sealed, key, in_place=True)
    assert res.report.ok
    helpers.assert_model_equal(helpers.read_st(sealed)[0], sealed_t)
    assert os.stat(sealed).st_ino != inode  # a new file renamed over the old one


def test_in_place_recover_beyond_capacity_leaves_the_file_untouched(
    tmp_path: Path, model_file: Path, key: paramseal.Key
) -> None:
    sealed = tmp_path / "s.safetensors"
    files.seal_file(model_file, sealed, key)
    size = sealed.stat().st_size
    lay_start = size - os.path.getsize(model_file) // 2  # the second half of the data, and more
    _flip_in_file(sealed, list(range(lay_start, size, 7)))
    before = sealed.read_bytes()
    res = files.recover_file(sealed, sealed, key, in_place=True)
    assert not res.report.ok and res.path is None
    assert sealed.read_bytes() == before


def _with_header(path: Path, header: bytes) -> None:
    """Rewrite a safetensors file with another header text (same data section)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    path.write_bytes(len(header).to_bytes(8, "little") + header + raw[8 + n :])


def test_in_place_recover_refuses_a_header_safetensors_refuses(
    tmp_path: Path, model_file: Path, key: paramseal.Key
) -> None:
    """A duplicate __metadata__ key: Python's json keeps the last, safetensors refuses the file, and so do we."""
    import safetensors.numpy as stn

    sealed = tmp_path / "s.safetensors"
    files.seal_file(model_file, sealed, key)
    raw = sealed.read_bytes()
    head = raw[8 : 8 + int.from_bytes(raw[:8], "little")].rstrip(b" ")
    _with_header(sealed, b'{"__metadata__":{"junk":"' + b"A" * 5000 + b'"},' + head[1:])
    with pytest.raises(Exception, match="duplicate"):
        stn.load_file(sealed)
    before = sealed.read_bytes()
    with pytest.raises(paramseal.FormatError, match="duplicate key '__metadata__'"):
        files.recover_file(sealed, sealed, key, in_place=True)
    assert sealed.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "model.safetensors",
        "s.safetensors",
    ]


def test_in_place_recover_of_a_hard_linked_file_leaves_the_other_name_alone(
    tmp_path: Path, model_file: Path, key: paramseal.Key
) -> None:
    sealed = tmp_path / "s.safetensors"
    files.seal_file(model_file, sealed, key)
    _flip_in_file(sealed, [sealed.stat().st_size - 9])
    tampered = sealed.read_bytes()
    other = tmp_path / "other-name.safetensors"
    os.link(sealed, other)
    with pytest.warns(ParamSealWarning, match="had 1 other hard link"):  # which still holds the tampered model
        res = files.recover_file(sealed, sealed, key, in_place=True)
    assert res.report.status == "recovered"
    assert files.verify_file(sealed, key).status == "intact"
    assert other.read_bytes() == tampered  # replaced by name, as before: the link is not written through


def test_inspect_takes_each_dtype_at_its_widest_sealed_k(tmp_path: Path, key: paramseal.Key) -> None:
    """A tiny tensor last in the table (k = 0: too small for bits) must not hide the others' k."""
    rng = np.random.default_rng(5)
    model = {
        "w": rng.standard_normal((256, 64)).astype(np.float32),
        "z.scale": np.ones(3, np.float32),
    }  # last in the table
    p = helpers.write_st(tmp_path / "m.safetensors", model)
    files.seal_file(p, tmp_path / "s.safetensors", key)
    info = files.inspect_file(tmp_path / "s.safetensors")
    assert info["levels"]["standard"]["F32"]["k"] == 8, info["levels"]


def test_a_write_that_finds_no_folder_is_not_blamed_on_a_full_disk(tmp_path: Path) -> None:
    """/proc reports no free space: the free-space guess must not turn ENOENT into 'is the disk full?'."""
    import errno

    from paramseal.errors import cannot_write

    msg = str(cannot_write("/proc/out.safetensors", FileNotFoundError(errno.ENOENT, "No such file or directory")))
    assert "disk full" not in msg and "write elsewhere" in msg, msg


def _fp32_model(seed: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "a.weight": (0.02 * rng.standard_normal((192, 160))).astype(np.float32),
        "a.bias": rng.standard_normal(160).astype(np.float32),
        "b.weight": (0.05 * rng.standard_normal((160, 96))).astype(np.float32),
        "ids": np.arange(40, dtype=np.int64),
    }


@pytest.fixture(params=["mixed-dtypes", "fp32-strong"])
def sealed_pair(
    request: pytest.FixtureRequest, tmp_path: Path, model: dict[str, np.ndarray], key: paramseal.Key
) -> tuple[Path, Path]:
    """(input model file, sealed file) sealed file to file: the lane code, and irs4 at strong."""
    if request.param == "mixed-dtypes":
        src, level = helpers.write_st(tmp_path / "m.safetensors", model, {"author": "tests"}), "standard"
    else:
        src, level = helpers.write_st(tmp_path / "m.safetensors", _fp32_model(), {"author": "tests"}), "strong"
    out = tmp_path / "sealed.safetensors"
    files.seal_file(src, out, key, level=level)
    return src, out


def test_the_seal_records_its_safetensors_header_length(sealed_pair: tuple[Path, Path], key: paramseal.Key) -> None:
    _, sealed = sealed_pair
    raw = sealed.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    h = parse_header(files.read_header(sealed, key), key)
    assert h.st_room == n and raw[8 + n - 1 : 8 + n] == b" "  # padded: the room was reserved before sealing
    assert paramseal.seal(_fp32_model(), key).header.st_room == 0  # in memory: no file, nothing recorded


def test_a_model_rewritten_by_the_safetensors_library_recovers_to_the_sealed_file_byte_for_byte(
    sealed_pair: tuple[Path, Path], tmp_path: Path, key: paramseal.Key
) -> None:
    """Load, edit, save with safetensors (new order, compact header): recover gives back the sealed bytes."""
    import safetensors.numpy as stn

    _, sealed = sealed_pair
    t, meta = helpers.read_st(sealed)
    name = next(n for n, a in t.items() if a.dtype == np.float32 and a.size > 1000)
    t[name] = t[name].copy()
    t[name].reshape(-1)[:700] = 0.5  # whole blocks replaced
    bad = tmp_path / "rewritten.safetensors"
    stn.save_file(dict(reversed(list(t.items()))), str(bad), metadata=meta)
    assert bad.read_bytes()[:8] != sealed.read_bytes()[:8]  # the padding is gone
    out = tmp_path / "recovered.safetensors"
    res = files.recover_file(bad, out, key)
    assert res.report.status == "recovered"
    assert out.read_bytes() == sealed.read_bytes()


def test_a_stripped_header_is_written_back_byte_for_byte(tmp_path: Path, key: paramseal.Key) -> None:
    """The metadata held the header alone and lost it: the copy in the weights vouches, recover restores it."""
    import safetensors.numpy as stn

    sealed = tmp_path / "sealed.safetensors"
    big = {"w": (0.02 * np.random.default_rng(3).standard_normal((512, 512))).astype(np.float32)}  # room for a copy
    files.seal_file(helpers.write_st(tmp_path / "m.safetensors", big), sealed, key)
    bare = tmp_path / "bare.safetensors"
    stn.save_file(helpers.read_st(sealed)[0], str(bare))  # no metadata at all
    rep = files.verify_file(bare, key)
    assert rep.status == "intact" and any("recover writes it back" in n for n in rep.notes)
    out = tmp_path / "recovered.safetensors"
    assert files.recover_file(bare, out, key).report.status == "intact"
    assert out.read_bytes() == sealed.read_bytes()


def test_in_place_and_patched_copies_give_the_sealed_file_byte_for_byte(
    sealed_pair: tuple[Path, Path], tmp_path: Path, key: paramseal.Key
) -> None:
    """Flipped bits, header untouched: the fast paths (in place, patched copy) write the sealed file back."""
    _, sealed = sealed_pair
    raw = bytearray(sealed.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    for at in (8 + n + 5, len(raw) // 2, len(raw) - 3):
        raw[at] ^= 0x10
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    out = tmp_path / "copy.safetensors"
    assert files.recover_file(bad, out, key).report.status == "recovered"
    assert out.read_bytes() == sealed.read_bytes()
    assert files.recover_file(bad, bad, key, in_place=True).report.status == "recovered"
    assert bad.read_bytes() == sealed.read_bytes()


def _forged_room(sealed: Path, dst: Path, key: paramseal.Key, room: object) -> Path:
    """``sealed`` re-saved by the safetensors library, a block zeroed, its header re-signed (a key
    holder's) with ``room`` as the recorded safetensors header length."""
    import safetensors.numpy as stn

    from paramseal._header_body import _mac

    t, meta = helpers.read_st(sealed)
    name = next(n for n, a in t.items() if a.dtype == np.float32 and a.size > 1000)
    t[name] = t[name].copy()
    t[name].reshape(-1)[:64] = 0.0
    body = json.loads(meta[METADATA_KEY])
    body.pop("hmac")
    um = body.pop("user_metadata")
    body["safetensors_header_bytes"] = room
    body["hmac"] = _mac(key, body)
    body["user_metadata"] = um
    meta[METADATA_KEY] = json.dumps(body, sort_keys=True, separators=(",", ":"))
    stn.save_file(t, str(dst), metadata=meta)
    return dst


@pytest.mark.parametrize("room", [10**11, 2**63, 12345, 10**6 + 8])
def test_a_recorded_header_length_beyond_any_seal_is_not_used(
    sealed_pair: tuple[Path, Path], tmp_path: Path, key: paramseal.Key, room: int
) -> None:
    """A signed length far beyond the header (or unaligned) does not size the output: recover writes its own room."""
    _, sealed = sealed_pair
    bad = _forged_room(sealed, tmp_path / "bad.safetensors", key, room)
    out = tmp_path / "out.safetensors"
    assert files.recover_file(bad, out, key).report.status == "recovered"
    assert out.stat().st_size < sealed.stat().st_size + 4096
    assert files.verify_file(out, key).status == "intact"


@pytest.mark.parametrize("room", [-8, "1552", 1552.0, True, None, float("inf"), 1e300])
def test_a_recorded_header_length_that_is_no_byte_count_is_a_clean_error(
    sealed_pair: tuple[Path, Path], tmp_path: Path, key: paramseal.Key, room: object
) -> None:
    _, sealed = sealed_pair
    bad = _forged_room(sealed, tmp_path / "bad.safetensors", key, room)
    with pytest.raises(paramseal.FormatError, match="authentic but unreadable"):
        files.recover_file(bad, tmp_path / "out.safetensors", key)
    with pytest.raises(paramseal.FormatError, match="authentic but unreadable"):
        files.verify_file(bad, key)


@pytest.mark.parametrize("room", [-8, 10**15, 8.0, True])
def test_seal_refuses_a_header_length_it_could_not_record(key: paramseal.Key, room: object) -> None:
    with pytest.raises(UsageError, match="st_room"):
        paramseal.SealConfig().seal(_fp32_model(), key, st_room=room)  # type: ignore[arg-type]


def test_a_header_kept_in_a_json_file_with_a_newline_recovers_to_the_sealed_file_byte_for_byte(
    sealed_pair: tuple[Path, Path], tmp_path: Path, key: paramseal.Key
) -> None:
    """``--header-from h.json`` saved with a final newline (shells, editors): the output carries it as sealed."""
    import safetensors.numpy as stn

    _, sealed = sealed_pair
    kept = tmp_path / "h.json"
    kept.write_text(files.read_header(sealed, key) + "\n", encoding="utf-8")
    t, meta = helpers.read_st(sealed)
    del meta[METADATA_KEY]
    bad = tmp_path / "bad.safetensors"
    stn.save_file(t, str(bad), metadata=meta)
    out = tmp_path / "out.safetensors"
    assert files.recover_file(bad, out, key, header=files.read_header(kept, key)).report.ok
    assert out.read_bytes() == sealed.read_bytes()


def test_in_place_recover_of_a_file_with_its_header_repadded_writes_the_sealed_file(
    sealed_pair: tuple[Path, Path], tmp_path: Path, key: paramseal.Key
) -> None:
    """The same header JSON with less padding (the data moved up): in place would keep the wrong room."""
    _, sealed = sealed_pair
    raw = sealed.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    body = raw[8 : 8 + n].rstrip(b" ")
    m = -(-len(body) // 8) * 8
    assert m < n
    moved = bytearray(m.to_bytes(8, "little") + body.ljust(m) + raw[8 + n :])
    moved[8 + m + 9] ^= 0x04  # a bit of the first tensor
    bad = tmp_path / "repadded.safetensors"
    bad.write_bytes(bytes(moved))
    assert files.recover_file(bad, bad, key, in_place=True).report.status == "recovered"
    assert bad.read_bytes() == sealed.read_bytes()


def test_reseal_drops_the_old_seal_s_shard_set_record(tmp_path: Path, model_file: Path, key: paramseal.Key) -> None:
    """A shard resealed on its own is a new seal: the old checkpoint's set record is not carried into it."""
    shard = tmp_path / "shard.safetensors"
    files.seal_file(model_file, shard, key, extra_metadata={SET_KEY: '{"set": "old"}'})
    out = tmp_path / "resealed.safetensors"
    sealed = files.seal_file(shard, out, key, reseal=True)
    _, meta = helpers.read_st(out)
    assert SET_KEY not in meta and sealed.header.user_metadata is not None
    assert SET_KEY not in sealed.header.user_metadata
    assert {k: v for k, v in meta.items() if k != METADATA_KEY} == META


def test_in_place_recover_flushes_the_patched_blocks_to_disk(
    tmp_path: Path, model_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Patched where it lies, the file is fsynced before recover reports it recovered (a crash must not undo it)."""
    sealed = tmp_path / "s.safetensors"
    files.seal_file(model_file, sealed, key)
    _flip_in_file(sealed, [sealed.stat().st_size - 5])
    inode = os.stat(sealed).st_ino
    synced = helpers.record_fsyncs(monkeypatch)
    assert files.recover_file(sealed, sealed, key, in_place=True).report.status == "recovered"
    assert os.stat(sealed).st_ino == inode  # patched, not replaced
    assert inode in synced


def test_in_place_recover_of_edited_metadata_writes_the_sealed_metadata_back(
    tmp_path: Path, model_file: Path, key: paramseal.Key
) -> None:
    """A metadata value edited in the header at the same length: patching in place would keep the edit."""
    sealed = tmp_path / "s.safetensors"
    files.seal_file(model_file, sealed, key)
    want = sealed.read_bytes()
    n = int.from_bytes(want[:8], "little")
    old = json.dumps(META["license"]).encode()
    new = json.dumps(META["license"][::-1]).encode()
    assert want[8 : 8 + n].count(old) == 1 and len(new) == len(old) and new != old
    sealed.write_bytes(want.replace(old, new, 1))
    _flip_in_file(sealed, [sealed.stat().st_size - 5])
    assert files.verify_file(sealed, key).status == "tampered"
    assert files.recover_file(sealed, sealed, key, in_place=True).report.ok
    assert helpers.read_st(sealed)[1]["license"] == META["license"]
    assert sealed.read_bytes() == want


def test_recover_of_swapped_tensors_puts_their_data_back_in_place_and_in_a_copy(
    tmp_path: Path, key: paramseal.Key
) -> None:
    """Two tensors' data swapped, the header untouched: the fast paths (a patched copy, in place) must move it back."""
    src = helpers.write_st(tmp_path / "m.safetensors", helpers.fp32_model(8192, tensors=2))
    sealed = tmp_path / "s.safetensors"
    files.seal_file(src, sealed, key)
    want = sealed.read_bytes()
    lay = read_layout(sealed)
    a, b = (want[lay.data_start + e.start : lay.data_start + e.end] for e in lay.entries)
    assert len(a) == len(b) and a != b
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(want[: lay.data_start] + b + a)
    rep = files.verify_file(bad, key)
    assert rep.status == "tampered" and sorted(rep.tampered_tensors) == sorted(e.name for e in lay.entries)
    out = tmp_path / "out.safetensors"
    assert files.recover_file(bad, out, key).report.status == "recovered"
    assert out.read_bytes() == want
    assert files.recover_file(bad, bad, key, in_place=True).report.status == "recovered"
    assert bad.read_bytes() == want


def test_a_swap_and_a_rename_are_structured_in_the_findings_not_only_in_their_issue_text(
    tmp_path: Path, key: paramseal.Key
) -> None:
    """Report.moved parsed the issue wording: a finding with other words (or none) lost its move."""
    src = helpers.write_st(tmp_path / "m.safetensors", helpers.fp32_model(1 << 12, tensors=4))
    sealed = tmp_path / "s.safetensors"
    files.seal_file(src, sealed, key)
    t, meta = helpers.read_st(sealed)
    t["layer0.weight"], t["layer1.weight"] = t["layer1.weight"], t["layer0.weight"]
    t["layer2.renamed"] = t.pop("layer2.weight")
    bad = helpers.write_st(tmp_path / "bad.safetensors", t, meta)
    want = {"layer0.weight": "layer1.weight", "layer1.weight": "layer0.weight", "layer2.weight": "layer2.renamed"}
    how = {"layer0.weight": "swapped", "layer1.weight": "swapped", "layer2.weight": "renamed"}
    for rep in (files.verify_file(bad, key), files.recover_file(bad, tmp_path / "out.safetensors", key).report):
        assert {n: f.moved_from for n, f in rep.tensors.items() if f.moved_from} == want, rep.kind
        assert {n: f.moved_how for n, f in rep.tensors.items() if f.moved_how} == how, rep.kind
        assert rep.tensors["layer3.weight"].moved_from is None and rep.tensors["layer3.weight"].moved_how is None
        # the issue text is for people: reworded or dropped, the moves stay
        quiet = dataclasses.replace(rep, tensors={n: dataclasses.replace(f, issues=()) for n, f in rep.tensors.items()})
        assert quiet.moved == want and quiet.moved_by("renamed") == {"layer2.weight": "layer2.renamed"}, rep.kind
        assert quiet.moved_by("swapped") == {k: v for k, v in want.items() if how[k] == "swapped"}, rep.kind


def test_recover_file_summary_says_restorable_values_were_not_written_when_nothing_was(
    tmp_path: Path, key: paramseal.Key, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """recover_file past the code's reach wrote nothing (path None), yet report.summary() said "restored N value(s)"."""
    helpers.pin_salt(monkeypatch)  # a drawn salt could restore all of these 20% (about 1 seal in 90)
    src = helpers.write_st(tmp_path / "m.safetensors", helpers.fp32_model(1 << 16, tensors=2))
    sealed = tmp_path / "s.safetensors"
    files.seal_file(src, sealed, key)
    t, meta = helpers.read_st(sealed)
    blocks = helpers.block_list(t)
    pick = np.random.default_rng(0).choice(len(blocks), len(blocks) // 5, replace=False)  # past the code's reach
    bad = helpers.write_st(tmp_path / "bad.safetensors", helpers.randomize_blocks(t, [blocks[i] for i in pick]), meta)
    out = tmp_path / "out.safetensors"
    res = files.recover_file(bad, out, key)
    assert res.path is None and not out.exists() and res.report.restored_count, res.report.summary()
    assert not res.report.written
    lines = res.report.summary().splitlines()
    why = ", not written (--allow-partial writes them): ["
    assert len(lines) == 2 and all("could restore" in ln and why in ln and "restored" not in ln for ln in lines)
    part = files.recover_file(bad, out, key, allow_partial=True)
    assert part.path == out and part.report.written and part.report.restored_count == res.report.restored_count
    assert part.report.summary() == res.report.summary().replace("could restore", "restored").replace(why, ": [")
    # the CLI prints the report's own lines: one place words them
    rc, text, err = helpers.run_cli(["recover", bad, tmp_path / "cli.safetensors", "--key", key_file])
    assert rc == 2 and text.splitlines()[1:] == lines, (text, err)


def test_recover_does_not_use_a_copy_of_the_input_that_failed(
    tmp_path: Path, model_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The input's copy made beside the output while verify runs stopped short: the output is written anew."""
    sealed = tmp_path / "s.safetensors"
    files.seal_file(model_file, sealed, key)
    want = sealed.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(want)
    _flip_in_file(bad, [len(want) - 5])
    monkeypatch.setattr(_patch, "copy_range", lambda *a: False)  # the kernel copy fails: nothing copied
    out = tmp_path / "out.safetensors"
    assert files.recover_file(bad, out, key).report.status == "recovered"
    assert out.read_bytes() == want
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([model_file.name, sealed.name, bad.name, out.name])


@pytest.mark.parametrize(
    "tensors",
    [
        {"w": (150_000,), "ids": (20_000,)},  # an int64 tensor takes a fifth of every group: fewer parity strata
        {"w": (120, 128), "b": (10,)},  # too small for the outer code: no hosted bytes
        {"w": (150_000,), "mask": (20_000,)},  # an fp32 tensor holding -inf is sealed as data, as an integer one
    ],
    ids=["integer-data", "small", "non-finite"],
)
def test_inspect_bounds_are_those_of_the_layout_seal_chooses(
    tmp_path: Path, key: paramseal.Key, tensors: dict[str, tuple[int, ...]]
) -> None:
    """What each level 'would give' (unsealed) is what the sealed file shows, from the code the seal built."""
    from paramseal import _strata
    from paramseal.evaluation._runner import seal_code

    rng = np.random.default_rng(0)
    model = {
        n: rng.integers(0, 1 << 40, s).astype(np.int64) if n == "ids" else rng.standard_normal(s).astype(np.float32)
        for n, s in tensors.items()
    }
    if "mask" in model:
        model["mask"][::2] = -np.inf
    src = helpers.write_st(tmp_path / "m.safetensors", model)
    before = files.inspect_file(src)["levels"]
    for level in ("standard", "strong"):
        out = tmp_path / f"{level}.safetensors"
        files.seal_file(src, out, key, level=level)
        text = helpers.read_st(out)[1][METADATA_KEY]
        h = json.loads(text)
        assert h["code"] == _strata.CODE_NAME
        g, sf = _strata._strata_of(*_strata._sizes(_strata.as_data(list(parse_header(text, key).tensors))))
        assert g == h["strata"]
        want = _strata.capacity(before[level]["F32"]["k"], h["outer_host"], sf)
        shown = files.inspect_file(out)["levels"][level]["F32"]
        assert shown["contiguous_bound"] == round(want["contiguous_bound"], 4)
        assert shown["contiguous_bound"] == before[level]["F32"]["contiguous_bound"]
        assert shown["scattered_radius_per_group"] == round(want["scattered_radius"], 4)
        assert shown["scattered_radius_per_group"] == before[level]["F32"]["scattered_radius_per_group"]
        # eval's results report the same bounds as inspect
        got = seal_code(text, "F32", before[level]["F32"]["k"])
        assert (got["contiguous_bound"], got["scattered_bound"]) == (
            shown["contiguous_bound"],
            shown["scattered_radius_per_group"],
        )


_CUT_SHORT = """
import os, sys
from paramseal import _model
from paramseal.cli import main

path, at = sys.argv[1], int(sys.argv[2])
tags = _model.compute_tags

def cut(*args, **kw):  # another program cuts the input short once its first tensor is being checked
    if os.path.getsize(path) > at:
        os.truncate(path, at)
    return tags(*args, **kw)

_model.compute_tags = cut
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("command", ["verify", "recover"])
def test_an_input_cut_short_while_it_is_read_is_a_clean_error(tmp_path: Path, key: paramseal.Key, command: str) -> None:
    """Not a SIGBUS with no message: exit 3 naming the file, no temp file left, the input only cut."""
    rng = np.random.default_rng(7)
    src = tmp_path / "m.safetensors"
    tensors = {f"t{i}": rng.standard_normal((256, 256)).astype(np.float32) for i in range(6)}
    files.write_model(src, Loaded(tensors, {}))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    sealed = out_dir / "sealed.safetensors"
    files.seal_file(src, sealed, key)
    keyfile = paramseal.keys.write_key(tmp_path / "k.key", key)
    before = sealed.read_bytes()
    at = read_layout(sealed).data_start + 256 * 256 * 4 + 1000  # inside the second tensor
    args = [command, str(sealed), *([str(out_dir / "rec.safetensors")] if command == "recover" else [])]
    run = subprocess.run(
        [sys.executable, "-c", _CUT_SHORT, str(sealed), str(at), *args, "--key", str(keyfile)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 3, (run.returncode, run.stderr)
    assert f"'{sealed}' changed while it was read" in run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["sealed.safetensors"]  # no hidden temporary output
    assert sealed.read_bytes() == before[:at]


_CUT_WHILE_WRITING = """
import os, sys
from paramseal.formats import numpy as npz_format, pytorch
from paramseal.cli import main

path, at, hook = sys.argv[1], int(sys.argv[2]), sys.argv[3]
module = npz_format if hook == "write_npy" else pytorch
first = getattr(module, hook)

def cut(*args, **kw):  # another program cuts the input short once the output's values are being written
    if os.path.getsize(path) > at:
        os.truncate(path, at)
    return first(*args, **kw)

setattr(module, hook, cut)
sys.exit(main(sys.argv[4:]))
"""


@pytest.mark.parametrize(("out_name", "hook"), [("rec.npz", "write_npy"), ("rec.pt", "numpy_to_tensor")])
def test_an_input_cut_short_while_another_format_is_written_from_it_is_a_clean_error(
    tmp_path: Path, key: paramseal.Key, out_name: str, hook: str
) -> None:
    """recover IN.safetensors OUT.npz (or .pt) wrote OUT's values straight from IN's map: SIGBUS, temp file left."""
    if hook == "numpy_to_tensor":
        pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    src = tmp_path / "m.safetensors"
    files.write_model(src, Loaded({f"t{i}": rng.standard_normal((256, 256)).astype(np.float32) for i in range(4)}, {}))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    sealed = out_dir / "sealed.safetensors"
    files.seal_file(src, sealed, key)
    keyfile = paramseal.keys.write_key(tmp_path / "k.key", key)
    at = read_layout(sealed).data_start + 1000  # inside the first tensor
    args = ["recover", str(sealed), str(out_dir / out_name), "--key", str(keyfile)]
    run = subprocess.run(
        [sys.executable, "-c", _CUT_WHILE_WRITING, str(sealed), str(at), hook, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 3, (run.returncode, run.stderr)
    assert f"'{sealed}' changed while it was read" in run.stderr and "Traceback" not in run.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["sealed.safetensors"]  # no hidden temporary output


def _stripped(sealed_file: Path, tmp_path: Path) -> Path:
    """The sealed model without its metadata header: only the search of its weights tells it is sealed."""
    loaded = files.read_model(sealed_file)
    out = tmp_path / "stripped.safetensors"
    files.write_model(out, Loaded(loaded.tensors, {}))
    return out


def test_a_seal_found_in_the_weights_is_refused_before_the_output_is_kept(
    tmp_path: Path, sealed_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search runs beside the seal: its refusal still comes before the output or its header are kept,
    and before an error the seal raises meanwhile; the other errors pass where the search finds nothing."""
    src, dst, kept = _stripped(sealed_file, tmp_path), tmp_path / "twice.safetensors", tmp_path / "h.json"
    with pytest.raises(UsageError, match="already sealed"):
        files.seal_file(src, dst, key, header_out=kept)
    assert not dst.exists() and not kept.exists()

    def fails(*a: object, **k: object) -> None:
        raise InputError("the seal failed")

    monkeypatch.setattr(files, "seal_flat", fails)
    with pytest.raises(UsageError, match="already sealed"):
        files.seal_file(src, dst, key)
    plain = tmp_path / "plain.safetensors"
    files.write_model(plain, Loaded({"w": np.arange(4096, dtype=np.float32).reshape(64, 64)}, {}))
    with pytest.raises(InputError, match="the seal failed"):
        files.seal_file(plain, dst, key)
    assert not dst.exists()


def test_seal_file_waits_for_the_search_of_the_weights_before_it_lets_go_of_them(
    tmp_path: Path, model_file: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search reads the input's mapping: seal_file does not return (or raise) before it has ended."""
    import threading
    import time

    from paramseal import _embed_find, _native

    if _native._lib() is None:
        pytest.skip("without the compiled kernels the search runs first, alone")
    real, ended = _embed_find.carries_seal, threading.Event()

    def slow(tensors: object) -> bool:
        time.sleep(0.5)
        found = real(tensors)  # type: ignore[arg-type]
        ended.set()
        return found

    monkeypatch.setattr(_embed_find, "carries_seal", slow)
    files.seal_file(model_file, tmp_path / "a.safetensors", key)
    assert ended.is_set()
    ended.clear()

    def fails(*a: object, **k: object) -> None:
        raise InputError("failed early")

    monkeypatch.setattr(files, "seal_flat", fails)
    with pytest.raises(InputError, match="failed early"):
        files.seal_file(model_file, tmp_path / "b.safetensors", key)
    assert ended.is_set()
