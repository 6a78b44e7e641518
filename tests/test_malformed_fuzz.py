"""Malformed model files, for every verb: a one-line error and exit 3, no traceback, nothing written.

Cases found by fuzzing the format readers (the `adapter_suite` cases cover the general ones).
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import helpers
import numpy as np
import pytest

import paramseal

VERBS = ("verify", "recover", "seal", "inspect")


def assert_clean_exit_3(tmp_path: Path, key_file: Path, bad: Path, verb: str, *needles: str) -> str:
    """Run ``verb`` on ``bad``: exit 3, one 'error:' line naming the file, no output, no file changed."""
    out = bad.with_name("out" + bad.suffix)
    before = helpers.listing(tmp_path)
    argv = {
        "verify": ["verify", bad, "--key", key_file],
        "recover": ["recover", bad, out, "--key", key_file],
        "seal": ["seal", bad, out, "--key", key_file],
        "inspect": ["inspect", bad],
    }[verb]
    rc, stdout, stderr = helpers.run_cli(argv)
    assert rc == 3, (verb, stdout, stderr)
    assert "Traceback" not in stdout + stderr and "internal error" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and bad.name in lines[0], stderr
    for n in needles:
        assert n in lines[0], stderr
    assert not out.exists() and helpers.listing(tmp_path) == before
    return lines[0]


def _npz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


# --------------------------------------------------------------------------- .npz / .npy


@pytest.mark.parametrize("verb", VERBS)
def test_an_encrypted_npz_member_is_a_format_error_not_an_internal_one(
    tmp_path: Path, key_file: Path, verb: str
) -> None:
    """zipfile refuses an encrypted member with a RuntimeError (found by flipping the zip flag bit)."""
    raw = bytearray(_npz({"a.npy": _npy(np.arange(100, dtype=np.float32))}))
    raw[6] |= 1  # the local header's general-purpose flag: bit 0, encrypted
    i = raw.find(b"PK\x01\x02")
    raw[i + 8] |= 1  # and the central directory's, which zipfile reads
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    assert_clean_exit_3(tmp_path, key_file, bad, verb, "'a.npy' is encrypted")


def _long_header_npy() -> bytes:
    """A .npy whose header is longer than numpy's max_header_size (10000): numpy's refusal spans three lines."""
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }"
    header = text + " " * (20032 - 12 - len(text) - 1) + "\n"
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header.encode() + bytes(16)


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_numpys_multi_line_refusal_of_a_long_header_is_one_error_line_without_its_pickle_advice(
    tmp_path: Path, key_file: Path, verb: str, suffix: str
) -> None:
    """Found flipping a bit of a sealed .npz member's header length: numpy's advice (allow_pickle) is not ours."""
    raw = _long_header_npy()
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(raw if suffix == ".npy" else _npz({"a.npy": raw}))
    line = assert_clean_exit_3(tmp_path, key_file, bad, verb, "Header info length (20020)")
    assert "allow_pickle" not in line


# --------------------------------------------------------------------------- --header-from


@pytest.mark.parametrize("verb", ["verify", "recover"])
@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"scheme": ' + "[" * 100_000 + "]" * 100_000 + "}"])
def test_a_header_json_nested_too_deep_is_a_clean_error_not_a_recursion_error(
    tmp_path: Path, key_file: Path, sealed_file: Path, verb: str, text: str
) -> None:
    """json.loads raises RecursionError, not ValueError, on deep nesting (found fuzzing --header-from)."""
    header = tmp_path / "header.json"
    header.write_text(text)
    out = tmp_path / "out.safetensors"
    before = helpers.listing(tmp_path)
    argv = [verb, sealed_file, *([out] if verb == "recover" else []), "--key", key_file, "--header-from", header]
    rc, stdout, stderr = helpers.run_cli(argv)
    assert rc == 3 and "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert stderr.splitlines() == [stderr.strip()] and "header.json' is no ParamSeal header" in stderr, stderr
    assert not out.exists() and helpers.listing(tmp_path) == before


# --------------------------------------------------------------------------- attack on a damaged header


@pytest.mark.parametrize(
    ("attack", "said"),
    [
        (["--kind", "metadata", "--mode", "edit"], "to be a JSON object, and it is not"),
        (["--kind", "lsb-rewrite"], "lsb-rewrite needs a sealed model"),
        (["--kind", "bitflip", "--field", "watermark"], "--field watermark needs a sealed model"),
    ],
)
def test_attack_on_a_header_nested_too_deep_is_a_clean_error_as_for_any_header_that_is_not_json(
    tmp_path: Path, attack: list[str], said: str
) -> None:
    """json.loads raises RecursionError there, which the attacks' readers of the header did not catch."""
    model = {"w": np.arange(4000, dtype=np.float32)}
    src = helpers.write_st(tmp_path / "m.safetensors", model, {"paramseal": "[" * 50_000 + "]" * 50_000})
    out = tmp_path / "out.safetensors"
    before = helpers.listing(tmp_path)
    rc, stdout, stderr = helpers.run_cli(["attack", *attack, src, out])
    assert rc == 3 and "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert stderr.splitlines() == [stderr.strip()] and said in stderr, stderr
    assert not out.exists() and helpers.listing(tmp_path) == before


# --------------------------------------------------------------------------- names from the file in an error line


@pytest.mark.parametrize("verb", VERBS)
def test_control_characters_of_a_tensor_name_in_an_error_are_shown_escaped_on_one_line(
    tmp_path: Path, key_file: Path, verb: str
) -> None:
    """A name is the file's to choose: a newline split the error line, an escape sequence drove the terminal."""
    name = "w\x1b[2K\rOK: intact\n\u202e"
    src = helpers.write_st(tmp_path / "m.safetensors", {name: np.arange(8, dtype=np.float32)})
    header, data = helpers.st_parts(src.read_bytes())
    header[name]["dtype"] = "F99"
    text = json.dumps(header).encode()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(text)) + text + data)
    src.unlink()
    line = assert_clean_exit_3(tmp_path, key_file, bad, verb, r"tensor 'w\x1b[2K\rOK: intact\n\u202e' has dtype F99")
    assert not any(c in line for c in "\x1b\r\u202e")


# --------------------------------------------------------------------------- PyTorch


def _torch_zip(tmp_path: Path) -> bytes:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"w": torch.arange(300, dtype=torch.float32)}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("verb", ["inspect", "verify"])
def test_a_torch_zip_asking_for_a_newer_zip_version_is_read_by_torch_not_an_internal_error(
    tmp_path: Path, key_file: Path, verb: str
) -> None:
    """zipfile raises NotImplementedError there (found by byte flips); torch's own reader reads the file."""
    raw = bytearray(_torch_zip(tmp_path))
    i = raw.find(b"PK\x01\x02")
    raw[i + 6 : i + 8] = struct.pack("<H", 128)  # "version needed to extract": 12.8
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(raw))
    argv = ["inspect", bad] if verb == "inspect" else ["verify", bad, "--key", key_file]
    rc, stdout, stderr = helpers.run_cli(argv)
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    # read as the unsealed model it is: inspect shows it, verify says it carries no seal
    assert (rc, stderr) == (0, "") if verb == "inspect" else rc == 3 and "carries no ParamSeal header" in stderr


@pytest.mark.parametrize("verb", VERBS)
def test_a_legacy_torch_file_whose_storage_list_names_an_unknown_storage_is_a_format_error(
    tmp_path: Path, key_file: Path, verb: str
) -> None:
    """torch's legacy reader asserts (AssertionError) that each storage listed was unpickled (found by byte flips)."""
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"w": torch.arange(300, dtype=torch.float32)}, buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    key = next(k for k in raw.split(b"X")[1:] if k[4:].split(b"q")[0].isdigit())  # a BINUNICODE storage key
    name = key[4 : 4 + struct.unpack("<I", key[:4])[0]]
    at = raw.rfind(name)  # its last mention: the list of storages after the model's pickle
    bad = tmp_path / "bad.pt"
    bad.write_bytes(raw[:at] + b"9" * len(name) + raw[at + len(name) :])
    line = assert_clean_exit_3(tmp_path, key_file, bad, verb, "cannot read PyTorch file", "torch.load cannot parse it")
    assert "AssertionError" not in line, line


def test_a_torch_file_cut_short_says_it_ends_early(tmp_path: Path, key_file: Path) -> None:
    """torch.load of a legacy file cut short raises a bare EOFError: the line ended in 'EOFError:', then 'EOFError'."""
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"w": torch.arange(300, dtype=torch.float32)}, buf, _use_new_zipfile_serialization=False)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(buf.getvalue()[:64])
    line = assert_clean_exit_3(tmp_path, key_file, bad, "inspect", "cannot read PyTorch file", "it ends early")
    assert "EOFError" not in line, line


def _junk_zip(disks: int = 0) -> bytes:
    """A zip of one text member; ``disks``: a zip64 locator naming that many disks (zipfile raises on more than 1)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("junk.txt", b"junk" * 10)
    raw = buf.getvalue()
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, 0, disks) if disks else b""
    return raw[:-22] + locator + raw[-22:]


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth"])
@pytest.mark.parametrize(
    ("data", "said"),
    [
        (bytes(np.random.default_rng(7).integers(0, 256, 1024, dtype=np.uint8)), "torch.load cannot parse it"),
        (b"hello world\n" * 10, "torch.load cannot parse it"),
        (b"\x80\x02}q\x00.", "torch.load cannot parse it"),  # a pickle, but no torch.save file's
        (_junk_zip(), "it is a zip archive, but not one torch.save writes"),
        (_junk_zip(disks=2), "it is a zip archive, but not one torch.save writes"),  # is_zipfile raised on it
    ],
    ids=["random", "text", "pickle", "zip", "zip-of-disks"],
)
@pytest.mark.parametrize("verb", ["inspect", "verify", "seal"])
def test_garbage_read_as_a_torch_file_says_so_in_words_not_torchs_exception(
    tmp_path: Path, key_file: Path, suffix: str, data: bytes, said: str, verb: str
) -> None:
    """Random bytes named x.bin gave '... (truncated or not a torch.save file): IndexError: list index out of range'
    (or 'KeyError: 101', 'RuntimeError: [enforce fail at inline_container.cc:180] ...'): internal text."""
    bad = tmp_path / f"x{suffix}"
    bad.write_bytes(data)
    line = assert_clean_exit_3(tmp_path, key_file, bad, verb, f"cannot read PyTorch file '{bad}': {said}")
    assert "torch.save(model.state_dict(), path)" in line, line
    assert not any(w in line for w in ("Error", "list index", "enforce fail", "Invalid magic")), line


def test_a_tensor_name_added_to_a_sealed_file_is_shown_escaped_in_verifys_report(
    tmp_path: Path, key_file: Path, sealed_file: Path
) -> None:
    """An added tensor's name is the tamperer's: raw, '\\x1b[2K\\r' erased the report's line and wrote another."""
    tensors, meta = helpers.read_st(sealed_file)
    name = "x\x1b[2K\rOK: the model is intact\n\u202e"
    helpers.write_st(sealed_file, {**tensors, name: np.zeros(4, np.float32)}, meta)
    rc, stdout, stderr = helpers.run_cli(["verify", sealed_file, "--key", key_file])
    assert rc in (1, 2) and stdout.startswith("FAIL: "), (rc, stdout, stderr)
    assert r"extra tensor not in the seal: x\x1b[2K\rOK: the model is intact\n\u202e" in stdout, stdout
    assert not any(c in stdout for c in "\x1b\r\u202e")


# --------------------------------------------------------------------------- seeded mutation fuzz of sealed files


def _write_model(path: Path, rng: np.random.Generator) -> None:
    """A small model in ``path``'s format, with room for its header in the weights (.npy keeps it only there)."""
    w = rng.standard_normal((300, 200)).astype(np.float32)
    model = {"w": w, "h": rng.standard_normal(130).astype(np.float16), "steps": np.arange(10)}
    if path.suffix == ".safetensors":
        helpers.write_st(path, model, {"author": "tests"})
    elif path.suffix == ".npz":
        np.savez(path, **model)
    elif path.suffix == ".npy":
        np.save(path, w)
    elif path.suffix == ".pt":
        torch = pytest.importorskip("torch")
        torch.save({k: torch.from_numpy(v) for k, v in model.items()}, path)
    else:
        from test_format_onnx import make_file

        make_file(path, {"w": w, "h": model["h"]}, {"author": "tests"})


def _mutate(raw: bytes, rng: np.random.Generator) -> bytes:
    """One seeded mutation, mostly in the first 4 KiB (headers, zip records, pickles, protobuf fields)."""
    m = bytearray(raw)
    at = int(rng.integers(min(4096, len(m)))) if rng.random() < 0.8 else int(rng.integers(len(m)))
    kind = rng.integers(5)
    if kind == 0:
        m[at] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        for i in rng.integers(min(4096, len(m)), size=int(rng.integers(2, 9))):
            m[i] = int(rng.integers(256))
    elif kind == 2:
        del m[at:]
    elif kind == 3:
        m[at:at] = rng.integers(256, size=int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    else:
        m[at : at + 64] = bytes(len(m[at : at + 64]))
    return bytes(m)


def _fuzz_sealed(tmp_path: Path, key: paramseal.Key, key_file: Path, suffix: str, rounds: int, seed: int) -> None:
    import warnings

    from paramseal import files

    rng = np.random.default_rng(seed)
    src, sealed = tmp_path / f"src{suffix}", tmp_path / f"sealed{suffix}"
    _write_model(src, rng)
    with warnings.catch_warnings():  # a .pt keeps its header in its _metadata only: seal warns so
        warnings.simplefilter("ignore")
        files.seal_file(src, sealed, key)
    base = sealed.read_bytes()
    case = tmp_path / "case"
    case.mkdir()
    for i in range(rounds):
        bad, out = case / f"bad{suffix}", case / f"out{suffix}"
        raw = _mutate(base, rng)
        for verb in ("verify", "recover") if i % 3 else ("verify", "recover", "inspect"):
            for p in case.iterdir():
                p.unlink()
            bad.write_bytes(raw)
            argv = {
                "verify": ["verify", bad, "--key", key_file],
                "recover": ["recover", bad, out, "--key", key_file],
                "inspect": ["inspect", bad],
            }[verb]
            rc, stdout, stderr = helpers.run_cli(argv)
            what = (suffix, i, verb, rc, stderr[-2000:])
            assert rc in (0, 1, 2, 3), what
            assert "Traceback" not in stdout + stderr and "internal error" not in stderr, what
            errors = [ln for ln in stderr.splitlines() if not ln.startswith("warning: ")]
            assert len(errors) <= 1 and (rc != 3 or errors[0].startswith("error: ")), what
            assert bad.read_bytes() == raw, what
            left = {p.name for p in case.iterdir()} - {bad.name}
            assert left == ({out.name} if verb == "recover" and rc in (0, 1) else set()) or (
                verb == "recover" and rc in (0, 1) and out.name in left and all(n.startswith("out") for n in left)
            ), (what, left)


SUFFIXES = [".safetensors", ".npz", ".npy", ".pt", ".onnx"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_seeded_mutations_of_a_sealed_file_end_in_a_verdict_or_a_clean_error(
    tmp_path: Path, key: paramseal.Key, key_file: Path, suffix: str
) -> None:
    """Byte flips, overwrites, cuts, insertions: exit 0-3, no traceback, one error line, input kept, no stray files."""
    _fuzz_sealed(tmp_path, key, key_file, suffix, rounds=12, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_many_seeded_mutations_of_a_sealed_file_end_in_a_verdict_or_a_clean_error(
    tmp_path: Path, key: paramseal.Key, key_file: Path, suffix: str
) -> None:
    _fuzz_sealed(tmp_path, key, key_file, suffix, rounds=400, seed=2)
