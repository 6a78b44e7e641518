"""NumPy ``.npz`` and ``.npy``: the shared suite, no pickles ever, bfloat16, metadata entry, odd layouts."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import helpers
import ml_dtypes
import numpy as np
import pytest
from adapter_suite import AdapterTests

import paramseal
from paramseal import FormatError, UsageError, files
from paramseal.formats import Loaded, adapter_for
from paramseal.formats.numpy import METADATA_ENTRY, NPY_TENSOR_NAME
from paramseal.header import METADATA_KEY


def save_npy(f: io.BufferedIOBase | io.BytesIO, a: np.ndarray) -> None:
    """np.save, except bfloat16 gets the descr 'bfloat16' (np.save would write raw 'V2' and lose the type)."""
    if a.dtype == ml_dtypes.bfloat16:
        np.lib.format.write_array_header_1_0(f, {"descr": "bfloat16", "fortran_order": False, "shape": a.shape})
        f.write(np.ascontiguousarray(a).tobytes())
    else:
        np.save(f, a, allow_pickle=False)


class TestNpzSuite(AdapterTests):
    adapter_name = "npz"
    suffix = ".npz"

    def make_file(self, path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
        if not any(a.dtype == ml_dtypes.bfloat16 for a in tensors.values()):
            extra = {METADATA_ENTRY: np.array(json.dumps(metadata))} if metadata else {}
            np.savez(path, **tensors, **extra)
            return
        with zipfile.ZipFile(path, "w") as zf:
            for name, a in tensors.items():
                buf = io.BytesIO()
                save_npy(buf, a)
                zf.writestr(f"{name}.npy", buf.getvalue())
            if metadata:
                buf = io.BytesIO()
                np.save(buf, np.array(json.dumps(metadata)))
                zf.writestr(f"{METADATA_ENTRY}.npy", buf.getvalue())

    def read_native(self, path: Path) -> dict[str, np.ndarray]:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if k != METADATA_ENTRY}

    def malformed_cases(self) -> dict[str, bytes]:
        def npz(**arrays: np.ndarray) -> bytes:
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            return buf.getvalue()

        def npy(a: np.ndarray) -> bytes:
            buf = io.BytesIO()
            np.save(buf, a)
            return buf.getvalue()

        def zipped(*members: tuple[str, bytes]) -> bytes:
            buf = io.BytesIO()
            with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
                warnings.simplefilter("ignore")  # "Duplicate name"
                for name, raw in members:
                    zf.writestr(name, raw)
            return buf.getvalue()

        return {
            "metadata_not_a_string": npz(w=np.ones(3, np.float32), **{METADATA_ENTRY: np.ones(2)}),
            "metadata_not_json": npz(w=np.ones(3, np.float32), **{METADATA_ENTRY: np.array("{oops")}),
            "metadata_nested_too_deep": npz(
                w=np.ones(3, np.float32), **{METADATA_ENTRY: np.array("[" * 100_000 + "]" * 100_000)}
            ),
            "object_array": npz(w=np.array([{"a": 1}], dtype=object)),
            "raw_v2_bfloat16": npz(w=np.ones(3, ml_dtypes.bfloat16)),
            "metadata_value_not_a_string": npz(w=np.ones(3, np.float32), **{METADATA_ENTRY: np.array('{"a": 1}')}),
            "only_metadata": npz(**{METADATA_ENTRY: np.array('{"a": "1"}')}),
            "member_with_trailing_bytes": zipped(("w.npy", npy(np.ones(3, np.float32)) + bytes(8))),
            "member_named_twice": zipped(
                ("w.npy", npy(np.ones(3, np.float32))), ("w.npy", npy(np.zeros(3, np.float32)))
            ),
            "member_not_npy": zipped(("w.npy", npy(np.ones(3, np.float32))), ("b", npy(np.ones(3, np.float32)))),
        }


class TestNpzCompressedSuite(TestNpzSuite):
    """``np.savez_compressed`` archives read the same (ParamSeal writes uncompressed)."""

    def make_file(self, path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
        if any(a.dtype == ml_dtypes.bfloat16 for a in tensors.values()):
            return super().make_file(path, tensors, metadata)
        extra = {METADATA_ENTRY: np.array(json.dumps(metadata))} if metadata else {}
        np.savez_compressed(path, **tensors, **extra)


class TestNpySuite(AdapterTests):
    adapter_name = "npy"
    suffix = ".npy"
    keeps_metadata = False
    single_tensor = True
    single_name = NPY_TENSOR_NAME

    def make_file(self, path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
        (a,) = tensors.values()
        with open(path, "wb") as f:
            save_npy(f, a)

    def read_native(self, path: Path) -> dict[str, np.ndarray]:
        return {NPY_TENSOR_NAME: np.load(path, allow_pickle=False)}

    def malformed_cases(self) -> dict[str, bytes]:
        buf = io.BytesIO()
        np.save(buf, np.ones(3, np.float32))
        good = buf.getvalue()
        return {
            "trailing_bytes": good + b"\0" * 8,
            "bad_version": good[:6] + b"\x09\x00" + good[8:],
            "cut_inside_the_version": good[:7],
            "header_not_a_dict": good[:10] + b"[1, 2]".ljust(len(good) - 10 - 12, b" ") + good[-12:],
        }


# --------------------------------------------------------------------------- never unpickle


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("suffix", [".npz", ".npy"])
def test_object_arrays_are_refused_and_never_unpickled(tmp_path: Path, key_file: Path, suffix: str) -> None:
    marker = tmp_path / "pwned"
    evil = np.array([Payload(marker)], dtype=object)
    p = tmp_path / f"evil{suffix}"
    if suffix == ".npz":
        np.savez(p, w=np.ones(3, np.float32), evil=evil)
    else:
        np.save(p, evil, allow_pickle=True)
    with pytest.raises(FormatError, match="object array") as ei:
        adapter_for(p).read(p)
    assert p.name in str(ei.value)
    rc, out, err = helpers.run_cli(["verify", p, "--key", key_file])
    assert rc == 3 and p.name in err and "Traceback" not in err
    assert not marker.exists(), "the pickle payload ran"
    np.load(p, allow_pickle=True)[()] if suffix == ".npy" else np.load(p, allow_pickle=True)["evil"]
    assert marker.exists(), "control: an unsafe np.load does run the payload, so the check above can fail"


# --------------------------------------------------------------------------- bfloat16, names, metadata, layouts


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda b: b"\x93NUMPX" + b[6:], "does not start with the \\x93NUMPY magic"),
        (lambda b: b[:6] + b"\x03\x00" + b[8:], "has .npy format version 3.0; supported: 1.0, 2.0"),
    ],
    ids=["magic", "version"],
)
def test_a_npy_header_that_is_not_numpys_says_what_is_wrong(
    tmp_path: Path, key_file: Path, edit: Any, says: str
) -> None:
    """Without these checks the file still failed (exit 3), as a bare TypeError from numpy's header reader."""
    buf = io.BytesIO()
    np.save(buf, np.ones(3, np.float32))
    p = tmp_path / "m.npy"
    p.write_bytes(edit(buf.getvalue()))
    rc, _, err = helpers.run_cli(["verify", p, "--key", key_file])
    assert rc == 3 and says in err, err


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_a_npy_header_with_an_unclosed_bracket_is_a_clean_error_not_an_internal_one(
    tmp_path: Path, key_file: Path, suffix: str
) -> None:
    """numpy's fallback parser for such a header raised tokenize.TokenError (found by a header bit-flip fuzz):
    verify, inspect and seal ended in 'internal error' with a traceback."""
    buf = io.BytesIO()
    np.save(buf, np.ones(3, np.float32))
    raw = buf.getvalue()
    end = raw.index(b"}")
    bad = raw[:end] + b" " + raw[end + 1 :]  # the dict's closing brace gone, the length kept
    p = tmp_path / f"m{suffix}"
    if suffix == ".npy":
        p.write_bytes(bad)
        where = f"'{p}'"
    else:
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("w.npy", bad)
        where = f"'{p}': member 'w.npy'"
    out = tmp_path / f"o{suffix}"
    for argv in (["verify", p, "--key", key_file], ["inspect", p], ["seal", p, out, "--key", key_file]):
        rc, _, err = helpers.run_cli(argv)
        assert rc == 3 and f"{where} has a malformed .npy header" in err and "Traceback" not in err, (argv, err)
    assert not out.exists()


def test_bfloat16_written_by_paramseal_is_read_by_plain_numpy_with_ml_dtypes(tmp_path: Path) -> None:
    a = helpers.random_tensor(np.random.default_rng(0), helpers.BF16, (50,), wild=True)
    p = tmp_path / "b.npz"
    adapter_for(p, must_exist=False).write(p, Loaded({"w": a}))
    with np.load(p, allow_pickle=False) as z:
        assert z["w"].dtype == ml_dtypes.bfloat16
        helpers.assert_model_equal({"w": z["w"]}, {"w": a})


def test_raw_v2_bfloat16_from_np_save_is_refused_with_a_hint(tmp_path: Path, key_file: Path) -> None:
    """Read as raw bytes (verify reports a sealed tensor saved so as retyped); seal and inspect refuse it."""
    p = tmp_path / "v2.npy"
    np.save(p, np.ones(3, ml_dtypes.bfloat16))
    assert adapter_for(p).read(p).tensors["array"].dtype == np.dtype("V2")
    for argv in (["seal", p, tmp_path / "o.safetensors", "--key", key_file], ["inspect", p]):
        rc, _, err = helpers.run_cli(argv)
        assert rc == 3 and "raw dtype |V2" in err and "bfloat16" in err and "v2.npy" in err, err


@pytest.mark.parametrize(
    ("dtype", "raw"),
    # float8_e5m2: np.savez writes '<f1', which np.load cannot read (it exited 3, 'truncated or corrupt')
    [("float8_e4m3fn", "|V1"), ("float8_e5m2", "|V1"), ("bfloat16", "|V2"), ("complex64", None)],
)
def test_a_sealed_tensor_saved_again_by_np_savez_as_float8_is_tampering_not_a_bad_file(
    tmp_path: Path, key_file: Path, dtype: str, raw: str | None
) -> None:
    """verify and recover of a sealed .npz whose F32 tensor was saved again (np.savez) as float8 or bfloat16 exited
    3 ('raw dtype |V1: ...'), where .safetensors/.pt/.onnx report the retype as tampering: np.savez writes ml_dtypes'
    types as raw bytes (the type is lost), now read as such; verify names the tensor and the change (exit 1),
    recover restores it byte for byte; seal and inspect of an unsealed file still refuse it, naming file and tensor."""
    rng = np.random.default_rng(0)
    plain = tmp_path / "m.npz"
    sizes = {"a": 32768, "b": 8192, "c": 16384}  # b: within capacity
    np.savez(plain, **{n: rng.standard_normal(k).astype(np.float32) for n, k in sizes.items()})
    sealed = tmp_path / "sealed.npz"
    assert helpers.run_cli(["seal", plain, sealed, "--key", key_file])[0] == 0
    got = files.read_model(sealed)
    arrays = {n: a.astype(getattr(ml_dtypes, dtype, None) or dtype) if n == "b" else a for n, a in got.tensors.items()}
    bad = tmp_path / "retyped.npz"
    with np.load(sealed, allow_pickle=False) as z:
        np.savez(bad, **arrays, **{METADATA_ENTRY: z[METADATA_ENTRY]})
    assert files.read_model(bad).tensors["b"].dtype.str == (raw or np.dtype(dtype).str)
    shown = raw or dtype
    rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file])
    assert rc == 1 and f"b: dtype changed from F32 to {shown}" in out, (out, err)
    drill = tmp_path / "drill.npz"  # attack writes the retyped tensor back as it was read
    assert helpers.run_cli(["attack", bad, drill, "--kind", "bitflip", "--seed", "1"])[0] == 0
    assert files.read_model(drill).tensors["b"].dtype == files.read_model(bad).tensors["b"].dtype
    fixed = tmp_path / "fixed.npz"
    rc, out, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file])
    assert rc == 0, (out, err)
    assert fixed.read_bytes() == sealed.read_bytes()
    unsealed = tmp_path / "u.npz"
    with np.load(plain, allow_pickle=False) as z:
        np.savez(unsealed, **{n: z[n].astype(arrays[n].dtype) for n in z.files})
    for argv in (["seal", unsealed, tmp_path / "o.npz", "--key", key_file], ["inspect", unsealed]):
        rc, _, err = helpers.run_cli(argv)
        assert rc == 3 and f"'{unsealed}'" in err and "tensor 'b'" in err and shown in err, err
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize(
    ("array", "says"),
    [
        (np.ones(3, ml_dtypes.float8_e4m3fn), "1-byte values of unknown type (np.save writes float8"),
        (np.ones(3, np.float32).view("V4"), "4-byte values of unknown type"),
    ],
    ids=["float8-V1", "V4"],
)
def test_a_raw_void_array_other_than_v2_is_refused_without_talking_of_bfloat16(
    tmp_path: Path, key_file: Path, array: np.ndarray, says: str
) -> None:
    """A float8 array from np.save (|V1) was refused as if it were bfloat16 ('as a uint16 view')."""
    p = tmp_path / "raw.npy"
    np.save(p, array)
    out = tmp_path / "out.safetensors"
    rc, _, err = helpers.run_cli(["seal", p, out, "--key", key_file])
    assert rc == 3 and f"raw dtype |V{array.dtype.itemsize}: {says}" in err and "raw.npy" in err, err
    assert "bfloat16" not in err and "uint16" not in err and not out.exists()


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_a_structured_array_is_refused_as_structured_not_as_raw_bfloat16(
    tmp_path: Path, key_file: Path, suffix: str
) -> None:
    rec = np.zeros(4096, dtype=[("x", "<f4"), ("y", "<i4")])
    p = tmp_path / f"rec{suffix}"
    np.save(p, rec) if suffix == ".npy" else np.savez(p, w=np.ones(3, np.float32), rec=rec)
    out = tmp_path / f"out{suffix}"
    rc, _, err = helpers.run_cli(["seal", p, out, "--key", key_file])
    assert rc == 3 and "structured array" in err and "'x'" in err and p.name in err, err
    assert "bfloat16" not in err and not out.exists()


def test_a_subarray_dtype_is_named_as_one_with_the_plain_array_to_save_instead(tmp_path: Path, key_file: Path) -> None:
    """A crafted descr ('<f4', (2,)) was called 'a structured array (dtype [('', '|V8')])', fixed with dtype.names."""
    text = "{'descr': ('<f4', (2,)), 'fortran_order': False, 'shape': (3,), }"
    text += " " * (117 - len(text)) + "\n"  # the header padded to 128 bytes in all
    p = tmp_path / "sub.npy"
    p.write_bytes(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode() + bytes(24))
    out = tmp_path / "out.npy"
    rc, _, err = helpers.run_cli(["seal", p, out, "--key", key_file])
    assert rc == 3 and "subarray dtype (<f4 in blocks of shape (2,))" in err and "shape (3, 2)" in err, err
    assert "structured" not in err and "names" not in err and not out.exists()


def test_metadata_entry_is_hidden_and_its_name_is_reserved(tmp_path: Path) -> None:
    p = tmp_path / "m.npz"
    a = adapter_for(p, must_exist=False)
    a.write(p, Loaded({"w": np.ones(3, np.float32)}, {"paramseal": "{}", "k": "v"}))
    with np.load(p, allow_pickle=False) as z:
        assert z.files == ["w", METADATA_ENTRY]
        assert z[METADATA_ENTRY].dtype.kind == "U"  # a plain string, not a pickle
    got = a.read(p)
    assert list(got.tensors) == ["w"] and got.metadata == {"k": "v", "paramseal": "{}"}
    with pytest.raises(UsageError, match="reserved"):
        a.write(tmp_path / "n.npz", Loaded({METADATA_ENTRY: np.ones(2)}))


def test_npz_member_named_like_a_torch_archive_is_still_npz(tmp_path: Path) -> None:
    p = tmp_path / "tricky"
    with open(p, "wb") as f:
        np.savez(f, **{"archive/data.pkl": np.ones(3, np.float32)})
    assert adapter_for(p).name == "npz"
    assert list(adapter_for(p).read(p).tensors) == ["archive/data.pkl"]


def test_fortran_order_and_big_endian_arrays_read_as_their_values(tmp_path: Path) -> None:
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = tmp_path / "f.npz"
    np.savez(p, fort=np.asfortranarray(base), big=base.astype(">f4"), big64=np.arange(3, dtype=">i8"))
    got = adapter_for(p).read(p).tensors
    assert np.array_equal(got["fort"], base) and got["fort"].flags.c_contiguous
    assert got["big"].dtype == np.float32 and np.array_equal(got["big"], base)
    assert got["big64"].dtype == np.int64 and got["big64"].tolist() == [0, 1, 2]


def test_npy_tensor_name_is_fixed_so_seal_into_another_name_verifies(tmp_path: Path, key: paramseal.Key) -> None:
    p = tmp_path / "weights.npy"
    np.save(p, helpers.random_tensor(np.random.default_rng(0), np.float32, (800, 64)))
    out = tmp_path / "sealed-under-another-name.npy"
    paramseal.files.seal_file(p, out, key)
    assert list(adapter_for(out).read(out).tensors) == [NPY_TENSOR_NAME]
    assert paramseal.files.verify_file(out, key).status == "intact"


def test_a_one_tensor_model_of_another_name_sealed_or_recovered_into_npy_verifies(
    tmp_path: Path, key_file: Path
) -> None:
    # a .npy holds no name (read as 'array'): its array is the sealed model's only tensor, whatever it was called
    src = tmp_path / "m.npz"
    np.savez(src, w=helpers.random_tensor(np.random.default_rng(0), np.float32, (800, 64)))
    out = tmp_path / "sealed.npy"
    assert helpers.run_cli(["seal", src, out, "--key", key_file])[0] == 0
    rc, _, err = helpers.run_cli(["verify", out, "--key", key_file])
    assert rc == 0, err
    for ext in ("npy", "npz"):
        rec = tmp_path / f"recovered.{ext}"
        assert helpers.run_cli(["recover", out, rec, "--key", key_file])[0] == 0
        rc, _, err = helpers.run_cli(["verify", rec, "--key", key_file])
        assert rc == 0, err
    assert list(adapter_for(rec).read(rec).tensors) == ["w"]  # the .npz gets the sealed name back


@pytest.mark.parametrize("ext", ["npz", "safetensors"])
def test_a_npy_recovered_into_a_format_with_metadata_carries_the_header_there(
    tmp_path: Path, key: paramseal.Key, key_file: Path, ext: str
) -> None:
    """A .npy keeps its header in its weights only: recovered into .npz, the output had none in its metadata.

    verify of that output then said its metadata 'was stripped; recover writes it back', of a file recover had
    just written, and a second recover wrote another file. Sealed without user metadata, the header is whole.
    """
    src, sealed, bad = tmp_path / "m.npy", tmp_path / "s.npy", tmp_path / "bad.npy"
    np.save(src, helpers.random_tensor(np.random.default_rng(0), np.float32, (800, 200)))
    files.seal_file(src, sealed, key)
    a = np.load(sealed)
    a[-3:] = 0.5  # clear of the header copies at the start
    np.save(bad, a)
    rec, again = tmp_path / f"r.{ext}", tmp_path / f"again.{ext}"
    assert helpers.run_cli(["recover", bad, rec, "--key", key_file])[0] == 0
    assert METADATA_KEY in adapter_for(rec).read(rec).metadata
    rc, out, err = helpers.run_cli(["verify", rec, "--key", key_file])
    assert rc == 0 and "note" not in out, (out, err)
    assert helpers.run_cli(["recover", rec, again, "--key", key_file])[0] == 0
    assert helpers.sha256(again) == helpers.sha256(rec)


@pytest.mark.parametrize("verb", ["verify", "recover"])
def test_a_sealed_npy_widened_to_float64_names_the_conversion_and_the_way_back(
    tmp_path: Path, key: paramseal.Key, key_file: Path, verb: str
) -> None:
    """np.save(p, np.load(p).astype(np.float64)) keeps every sealed value, but no header copy: the file was
    called unsealed, to be treated as tampered. It names the conversion and the np.save that undoes it."""
    src, sealed, wide = tmp_path / "m.npy", tmp_path / "w.npy", tmp_path / "w64.npy"
    np.save(src, helpers.random_tensor(np.random.default_rng(0), np.float32, (800, 200)))
    files.seal_file(src, sealed, key)
    np.save(wide, np.load(sealed).astype(np.float64))
    argv = [verb, wide, "--key", key_file] if verb == "verify" else [verb, wide, tmp_path / "r.npy", "--key", key_file]
    rc, _, err = helpers.run_cli(argv)
    assert rc == 3 and "converted from F32 to F64" in err, err
    fix = f"np.save({str(wide)!r}, np.load({str(wide)!r}).astype(np.float32))"
    assert fix in err and not (tmp_path / "r.npy").exists(), err
    np.save(wide, np.load(wide).astype(np.float32))  # the fix, as named
    assert helpers.sha256(wide) == helpers.sha256(sealed)
    # float32 values never sealed, saved as float64: no seal narrowed either, the usual message
    np.save(wide, np.load(src).astype(np.float64))
    rc, _, err = helpers.run_cli(["verify", wide, "--key", key_file])
    assert rc == 3 and "carries no ParamSeal header, in its metadata or in its weights" in err, err


class _Counted(np.ndarray):
    """An array that records the size of each conversion of it (``astype``)."""

    converted: list[int] = []

    def astype(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        _Counted.converted.append(int(self.size))
        return super().astype(*args, **kwargs)


def test_a_large_model_never_sealed_is_not_converted_whole_to_look_for_a_widened_seal(key: paramseal.Key) -> None:
    """With no header found, every float tensor was narrowed whole to each narrower type and compared (a 256 MiB
    float32 model: peak memory 124 MB -> 524 MB, time x2): weights that never were narrower fail on their first
    values."""
    from paramseal._weights_header import widened_seal

    w = np.random.default_rng(0).standard_normal((512, 512)).view(_Counted)  # float64 of no narrower type
    _Counted.converted.clear()
    assert widened_seal({"w": w}, key) is None
    assert max(_Counted.converted, default=0) < w.size, _Counted.converted


def test_several_tensors_into_npy_is_exit_3_with_a_hint(tmp_path: Path, key_file: Path) -> None:
    src = tmp_path / "m.npz"
    np.savez(src, a=np.ones(3, np.float32), b=np.ones(4, np.float32))
    out = tmp_path / "m.npy"
    rc, _, err = helpers.run_cli(["seal", src, out, "--key", key_file])
    assert rc == 3 and "exactly one array" in err and ".npz" in err, err
    assert not out.exists()


def test_npz_to_safetensors_and_back_keeps_every_value(tmp_path: Path, model: dict) -> None:
    p = tmp_path / "m.npz"
    adapter_for(p, must_exist=False).write(p, Loaded(model, {"a": "1"}))
    st = tmp_path / "m.safetensors"
    paramseal.files.write_model(st, paramseal.files.read_model(p))
    helpers.assert_model_equal(helpers.read_st(st)[0], model)


def _flip_member_byte(path: Path, offset: int) -> Path:
    """Flip one byte inside the data of the largest member, leaving the zip's CRC-32 stale."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        big = max(zf.infolist(), key=lambda i: i.file_size)
    n = int.from_bytes(raw[big.header_offset + 26 : big.header_offset + 28], "little")
    e = int.from_bytes(raw[big.header_offset + 28 : big.header_offset + 30], "little")
    raw[big.header_offset + 30 + n + e + offset] ^= 0x40
    bad = path.with_name("flipped" + path.suffix)
    bad.write_bytes(bytes(raw))
    return bad


def test_bit_flip_in_a_sealed_npz_is_located_and_recovered_not_a_crc_error(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    src = tmp_path / "m.npz"
    m = {"big": helpers.random_tensor(np.random.default_rng(0), np.float32, (200, 64)), "b": np.ones(7, np.float32)}
    np.savez(src, **m)
    sealed = tmp_path / "sealed.npz"
    paramseal.files.seal_file(src, sealed, key)
    bad = _flip_member_byte(sealed, 128 + 4 * 1000 + 3)  # past the .npy header: value 1000's top byte
    with pytest.raises(zipfile.BadZipFile):  # the zip CRC is really stale
        with np.load(bad, allow_pickle=False) as z:
            z["big"]
    rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file, "--json"])
    assert rc == 1, err
    assert json.loads(out)["tensors"]["big"]["tampered_blocks"] == [1000 // 64]
    assert "'big.npy'" in adapter_for(bad).read(bad).container_issues[0]
    fixed = tmp_path / "fixed.npz"
    rc, _, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file])
    assert rc == 0, err
    helpers.assert_model_equal(adapter_for(fixed).read(fixed).tensors, adapter_for(sealed).read(sealed).tensors)
    with np.load(fixed, allow_pickle=False) as z:  # the recovered archive has correct CRCs again
        assert z["big"].shape == (200, 64)


def test_a_stale_crc_in_a_sealed_npz_is_reported_as_container_damage(tmp_path: Path, key: paramseal.Key) -> None:
    """The seal covers values, not zip bytes: a CRC edited alone breaks np.load and must not read as intact."""
    src = tmp_path / "m.npz"
    np.savez(src, w1=helpers.random_tensor(np.random.default_rng(1), np.float32, (100, 64)), b=np.ones(7, np.float32))
    sealed = tmp_path / "sealed.npz"
    paramseal.files.seal_file(src, sealed, key)
    assert adapter_for(sealed).read(sealed).container_issues == ()
    raw = bytearray(sealed.read_bytes())
    central = raw.rfind(b"PK\x01\x02", 0, raw.rfind(b"w1.npy"))  # w1's central-directory record
    raw[central + 16] ^= 0x01  # its CRC-32; the member's data and local header are untouched
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(zipfile.BadZipFile, match="CRC"):
        with np.load(bad, allow_pickle=False) as z:
            z["w1"]
    loaded = adapter_for(bad).read(bad)
    (issue,) = loaded.container_issues
    assert "'w1.npy'" in issue and "CRC-32" in issue and "'b.npy'" not in issue
    helpers.assert_model_equal(loaded.tensors, adapter_for(sealed).read(sealed).tensors)
    rep = paramseal.files.verify_file(bad, key)
    assert rep.status == "tampered" and rep.exit_code == 1 and rep.tampered_tensors == []
    assert any("CRC-32" in m for m in rep.metadata_issues)
    fixed = tmp_path / "fixed.npz"
    assert paramseal.files.recover_file(bad, fixed, key).report.status == "recovered"
    assert adapter_for(fixed).read(fixed).container_issues == ()
    assert paramseal.files.verify_file(fixed, key).status == "intact"
    with np.load(fixed, allow_pickle=False) as z:
        assert z["w1"].shape == (100, 64)


def test_crc_error_in_an_unsealed_npz_is_a_format_error(tmp_path: Path, key_file: Path) -> None:
    src = tmp_path / "m.npz"
    np.savez(src, big=np.ones((100, 64), np.float32))
    bad = _flip_member_byte(src, 200)
    with pytest.raises(FormatError, match="CRC-32") as ei:
        adapter_for(bad).read(bad)
    assert "flipped.npz" in str(ei.value) and "big.npy" in str(ei.value)
    rc, _, err = helpers.run_cli(["seal", bad, tmp_path / "o.npz", "--key", key_file])
    assert rc == 3 and "CRC-32" in err and not (tmp_path / "o.npz").exists()


def test_corrupt_compressed_npz_is_a_format_error(tmp_path: Path, key_file: Path) -> None:
    src = tmp_path / "c.npz"
    np.savez_compressed(src, big=helpers.random_tensor(np.random.default_rng(0), np.float32, (100, 64)))
    bad = _flip_member_byte(src, 300)
    rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file])
    assert rc == 3 and "flipped.npz" in err and "Traceback" not in err, (out, err)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_a_header_promising_more_than_the_file_holds_costs_no_memory(
    tmp_path: Path, key_file: Path, suffix: str
) -> None:
    """A file of a few hundred bytes whose header promises 2 GB is truncated: reading it must not fill 2 GB."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (500_000_000,)})
    raw = buf.getvalue() + bytes(16)
    p = tmp_path / f"m{suffix}"
    if suffix == ".npz":
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("w.npy", raw)
    else:
        p.write_bytes(raw)
    # the child's own peak (VmHWM of its image): a wait4 ru_maxrss starts from this process's peak at fork
    script = (
        "import sys; from paramseal.cli import main\n"
        "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
        "print(next(ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')))\n"
        "sys.exit(rc)"
    )
    child = subprocess.run(
        [sys.executable, "-c", script, "verify", str(p), "--key", str(key_file)], capture_output=True, text=True
    )
    assert child.returncode == 3 and "truncated" in child.stderr, child.stderr
    peak_kib = int(child.stdout.split()[-1])
    assert peak_kib < 1 << 20, f"{peak_kib} KiB at peak"  # under 1 GiB


def test_a_sealed_npz_without_its_metadata_member_still_locates_a_bit_flip(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """The header copy in the weights lets verify read past a stale CRC even when the metadata member is gone."""
    src = tmp_path / "m.npz"
    np.savez(src, big=helpers.random_tensor(np.random.default_rng(5), np.float32, (800, 64)), b=np.ones(7, np.float32))
    sealed = tmp_path / "sealed.npz"
    paramseal.files.seal_file(src, sealed, key)
    stripped = tmp_path / "stripped.npz"
    with zipfile.ZipFile(sealed) as zin, zipfile.ZipFile(stripped, "w") as zout:
        for info in zin.infolist():
            if info.filename != f"{METADATA_ENTRY}.npy":
                zout.writestr(info.filename, zin.read(info))
    bad = _flip_member_byte(stripped, 128 + 4 * 40_000 + 3)  # value 40000's top byte, past the header copy
    rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file, "--json"])
    assert rc == 1, err
    assert json.loads(out)["tensors"]["big"]["tampered_blocks"] == [40_000 // 64]
    fixed = tmp_path / "fixed.npz"
    rc, _, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file])
    assert rc == 0, err
    helpers.assert_model_equal(adapter_for(fixed).read(fixed).tensors, adapter_for(sealed).read(sealed).tensors)


def test_an_unsealed_npz_is_written_with_only_its_arrays_and_never_an_object_array(tmp_path: Path) -> None:
    p = tmp_path / "plain.npz"
    a = adapter_for(p, must_exist=False)
    a.write(p, Loaded({"w": np.ones(3, np.float32), "b": np.zeros(2, np.int8)}))
    with np.load(p, allow_pickle=False) as z:
        assert z.files == ["w", "b"]
    with pytest.raises(UsageError, match="never pickles"):
        a.write(tmp_path / "o.npz", Loaded({"w": np.array([{"a": 1}], dtype=object)}))


def test_a_zip_whose_first_member_is_not_an_array_is_not_taken_for_npz(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "hello " * 20)
        zf.writestr("w.npy", b"")
    assert not adapter_for(tmp_path / "x.npz", must_exist=False).sniff(buf.getvalue()[:4096])


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_a_version_2_header_written_by_numpy_reads_bit_exactly(tmp_path: Path, key: paramseal.Key, suffix: str) -> None:
    """np.lib.format writes version 2.0 headers (np.save does for huge headers); both versions are read."""
    a = helpers.random_tensor(np.random.default_rng(3), np.float32, (600, 64), wild=True)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, version=(2, 0), allow_pickle=False)
    assert buf.getvalue()[6:8] == b"\x02\x00"
    p = tmp_path / f"v2{suffix}"
    if suffix == ".npz":
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("w.npy", buf.getvalue())
    else:
        p.write_bytes(buf.getvalue())
    (got,) = adapter_for(p).read(p).tensors.values()
    assert helpers.same_bytes(got, a)
    out = tmp_path / f"sealed{suffix}"
    paramseal.files.seal_file(p, out, key)
    assert paramseal.files.verify_file(out, key).status == "intact"


def test_an_npz_member_with_bytes_after_its_array_is_named_as_such_not_as_a_crc_error(
    tmp_path: Path, key_file: Path
) -> None:
    """The zip is sound (its CRC covers the extra bytes): the message must say what is really wrong."""
    buf = io.BytesIO()
    np.save(buf, np.ones(3, np.float32))
    p = tmp_path / "extra.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("w.npy", buf.getvalue() + b"hidden payload")
    with zipfile.ZipFile(p) as zf:
        assert zf.testzip() is None  # every CRC-32 matches
    before = helpers.listing(tmp_path)
    rc, out, err = helpers.run_cli(["seal", p, tmp_path / "o.npz", "--key", key_file])
    assert rc == 3, (out, err)
    assert "'w.npy'" in err and "bytes after its array data" in err and "CRC" not in err, err
    assert helpers.listing(tmp_path) == before


def test_a_metadata_member_that_is_not_0_d_names_its_shape(tmp_path: Path) -> None:
    p = tmp_path / "m.npz"
    np.savez(p, w=np.ones(3, np.float32), **{METADATA_ENTRY: np.array(['{"a": "1"}'])})
    with pytest.raises(FormatError, match=r"must be a 0-d string") as ei:
        adapter_for(p).read(p)
    assert "shape (1,)" in str(ei.value) and "m.npz" in str(ei.value)


def test_an_unknown_format_name_is_refused_listing_the_known_ones(tmp_path: Path) -> None:
    p = tmp_path / "m.npz"
    np.savez(p, w=np.ones(3, np.float32))
    before = helpers.listing(tmp_path)
    for call in (
        lambda: paramseal.files.read_model(p, "npzz"),
        lambda: paramseal.files.write_model(tmp_path / "o.npz", Loaded({"w": np.ones(3, np.float32)}), "npzz"),
    ):
        with pytest.raises(UsageError, match="unknown format 'npzz'") as ei:
            call()
        assert all(name in str(ei.value) for name in ("npz", "npy", "pytorch", "onnx", "safetensors"))
    assert helpers.listing(tmp_path) == before


def test_a_sealed_bfloat16_model_saved_again_by_np_savez_as_raw_v2_is_found_and_restored(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """np.savez of a sealed bf16 model's ml_dtypes arrays writes raw |V2 (same bits, type lost): verify and recover
    said 'carries no ParamSeal header ... seal it first' (exit 3; the copies in the weights were not looked for in
    raw bytes), inspect refused the file, and with --header-from every block failed (exit 2, 'NOT fully
    recoverable') though every bit was as sealed; now the copies are read, the retype is reported (exit 1) and
    recover writes the sealed values back as bfloat16, bit for bit, also after a flip."""
    rng = np.random.default_rng(3)
    model = {
        "w": rng.standard_normal((1024, 1024)).astype(ml_dtypes.bfloat16),
        "b": rng.standard_normal(256).astype(ml_dtypes.bfloat16),
    }
    sealed = paramseal.seal(model, key)
    assert sealed.header.carriers  # the header lives in the weights alone once the file has no metadata
    raw = tmp_path / "raw.npz"
    np.savez(raw, **sealed.tensors)
    assert {a.dtype.str for a in files.read_model(raw).tensors.values()} == {"|V2"}
    rc, out, err = helpers.run_cli(["verify", raw, "--key", key_file])
    assert rc == 1 and "w: dtype changed from BF16 to |V2" in out and "np.savez" in out, (out, err)
    rc, out, err = helpers.run_cli(["inspect", raw])
    assert rc == 0 and "sealed:" in out and "BF16" in out, (out, err)
    flipped = {n: a.copy() for n, a in sealed.tensors.items()}
    flipped["w"].view(np.uint16).reshape(-1)[5000] ^= 1 << 14
    hit = tmp_path / "hit.npz"
    np.savez(hit, **flipped)
    for src in (raw, hit):
        fixed = tmp_path / f"fixed-{src.stem}.npz"
        rc, out, err = helpers.run_cli(["recover", src, fixed, "--key", key_file])
        assert rc == 0, (out, err)
        got = files.read_model(fixed).tensors
        assert {a.dtype for a in got.values()} == {np.dtype(ml_dtypes.bfloat16)}
        helpers.assert_model_equal(got, sealed.tensors)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_a_read_error_with_no_message_is_named_alone(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bare exception from numpy's reader (EOFError()) gave an error line ending in 'EOFError: ', as the
    PyTorch reader's did before it was fixed, then the name alone: now what it means (formats.base.reason)."""
    from paramseal.formats import numpy as np_format

    def bare(*_: Any) -> Any:
        raise EOFError

    p = tmp_path / f"m{suffix}"
    if suffix == ".npy":
        np.save(p, np.ones(8, np.float32))
    else:
        np.savez(p, w=np.ones(8, np.float32))
    monkeypatch.setattr(np_format, "_read_npy", bare)
    with pytest.raises(FormatError) as e:
        adapter_for(p).read(p)
    assert str(e.value).endswith("(truncated or corrupt): it ends early"), e.value


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
@pytest.mark.parametrize(
    ("head", "said"),
    [
        (b"\x93NUMPY\x01\x00junk", "EOF: reading array header"),  # numpy's words, without 'ValueError: '
        (b"\x93NUMPY\x02\x00\x46", "EOF: reading array header length"),
        (
            b"\x93NUMPY\x01\x00\x46\x00"
            + b"{'descr': '<f4', 'fortran_order': False, 'shape': (10**30,), }".ljust(69)
            + b"\n",
            "do not parse",
        ),
    ],
    ids=["header-cut", "length-cut", "ast-node"],
)
def test_a_garbled_npy_header_is_said_in_words_not_as_pythons_exception(
    tmp_path: Path, key_file: Path, suffix: str, head: bytes, said: str
) -> None:
    """'cannot read .npy file ... (truncated or corrupt): ValueError: malformed node or string on line 1:
    <ast.BinOp object at 0x7f2b8030e800>': a class name and an object's address in a user's error line."""
    p = tmp_path / f"m{suffix}"
    if suffix == ".npy":
        p.write_bytes(head)
    else:
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("a.npy", head)
    for argv in (["inspect", p], ["verify", p, "--key", key_file]):
        rc, out, err = helpers.run_cli(argv)
        assert rc == 3 and "(truncated or corrupt): " in err and said in err, err
        assert "Error" not in err and " at 0x" not in err, err


def test_a_metadata_member_holding_no_unicode_character_is_a_format_error_not_an_internal_one(
    tmp_path: Path, key_file: Path
) -> None:
    """A byte changed in the metadata member's text made a code past U+10FFFF: numpy made a str of it, on which
    Python's own code failed ('SystemError: invalid maximum character passed to PyUnicode_New', exit 3 as an
    internal error with a traceback)."""
    raw = _npy_bytes(np.array('{"paramseal": "Z"}'))  # valid JSON: the bad code is in a string
    at = raw.rindex("Z".encode("utf-32-le"))
    member = raw[:at] + b"\xff\xff\xff\x7f" + raw[at + 4 :]  # the Z, as code 0x7fffffff
    p = tmp_path / "m.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("w.npy", _npy_bytes(np.ones(64, np.float32)))
        z.writestr(f"{METADATA_ENTRY}.npy", member)
    for argv in (["inspect", p], ["verify", p, "--key", key_file]):
        rc, out, err = helpers.run_cli(argv)
        assert rc == 3 and "holds 0x7fffffff, which is no Unicode character: the file is corrupt" in err, err
        assert "Traceback" not in err and "internal error" not in err, err


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a)
    return buf.getvalue()
