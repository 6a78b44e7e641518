"""Compatibility corpus: sealed files from every released format version must keep verifying.

If one of these fails, the on-disk format changed. That must be deliberate: bump the
scheme version, keep reading the old one, and add a new folder under tests/golden/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import helpers
import numpy as np
import pytest

import paramseal
from paramseal import files
from paramseal._mac import MAC_NAME, MAC_V1, MAC_V2

GOLDEN = Path(__file__).parent / "golden"
VERSIONS = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir() and (p / "sealed.safetensors").exists())
EXPECTED_DTYPES = {
    "encoder.weight": "float32",
    "encoder.bias": "float32",
    "norm.weight": "float16",
    "attn.weight": "bfloat16",
    "head.weight": "float64",
    "position_ids": "int64",
    "mask": "bool",
}
#: v3 (irs4, an fp32 code) keeps the fp32, int64 and bool tensors of the same model.
FP32_ONLY = {n: d for n, d in EXPECTED_DTYPES.items() if d in ("float32", "int64", "bool")}


def expected_dtypes(version: str) -> dict[str, str]:
    return FP32_ONLY if version.startswith("v3") else EXPECTED_DTYPES


def test_corpus_is_present_and_small() -> None:
    assert "v1" in VERSIONS
    total = sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file())
    assert total < 240_000  # grown by v3-mac3, the per-block hash MAC


@pytest.fixture(params=VERSIONS)
def golden(request: pytest.FixtureRequest) -> Path:
    return GOLDEN / request.param


def test_golden_file_has_the_expected_tensors_and_scheme(golden: Path) -> None:
    tensors, meta = helpers.read_st(golden / "sealed.safetensors")
    assert {n: str(a.dtype) for n, a in tensors.items()} == expected_dtypes(golden.name)
    h = json.loads(meta["paramseal"])
    scheme, _, mac = golden.name[1:].partition("-")  # vN: scheme paramseal/N; vN-macM: with the M-th block MAC
    assert h["scheme"] == f"paramseal/{scheme}"
    assert (h["code"] == "irs4-gf256") == (scheme == "3")
    assert h["mac"] == {"mac2": MAC_V2, "mac3": MAC_NAME}.get(mac, MAC_V1)
    assert meta["model"] == "paramseal-golden"


def test_golden_file_verifies_intact(golden: Path) -> None:
    key = paramseal.load_key(golden / "golden.key")
    r = files.verify_file(golden / "sealed.safetensors", key)
    assert r.status == "intact", r.summary()
    rc, out, err = helpers.run_cli(["verify", golden / "sealed.safetensors", "--key", golden / "golden.key"])
    assert rc == 0, err


def test_golden_file_verifies_with_the_numpy_fallback_too(golden: Path) -> None:
    """The compiled kernels and the pure-numpy path must read the same format."""
    sealed, key = str(golden / "sealed.safetensors"), str(golden / "golden.key")
    code = (
        "import paramseal; from paramseal import files, _kernels;"
        "assert not _kernels.HAVE_NUMBA, 'fallback not active';"
        f"r = files.verify_file({sealed!r}, paramseal.load_key({key!r}));"
        "print(r.status)"
    )
    env = {**os.environ, "PARAMSEAL_NO_NUMBA": "1"}
    env.pop("PARAMSEAL_KEY", None)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "intact"


def test_golden_sealing_changed_only_low_bits_of_the_original(golden: Path) -> None:
    orig, _ = helpers.read_st(golden / "original.safetensors")
    sealed, meta = helpers.read_st(golden / "sealed.safetensors")
    ks = {t["name"]: t["k"] for t in json.loads(meta["paramseal"])["tensors"]}
    for name, a in orig.items():
        k = ks[name]
        if k == 0:
            assert helpers.same_bytes(sealed[name], a), name
        else:
            hi = ~np.array((1 << k) - 1, dtype=helpers.uview(a).dtype)
            assert np.array_equal(helpers.uview(a) & hi, helpers.uview(sealed[name]) & hi), name


@pytest.mark.parametrize(("version", "name"), [(v, n) for v in VERSIONS for n in expected_dtypes(v)])
def test_golden_file_bit_flip_is_located_and_recovered(tmp_path: Path, version: str, name: str) -> None:
    golden = GOLDEN / version
    key = paramseal.load_key(golden / "golden.key")
    sealed, meta = helpers.read_st(golden / "sealed.safetensors")
    a = sealed[name]
    idx, bit = a.size // 2, (helpers.width(a.dtype) - 3 if a.dtype != np.bool_ else 0)
    bad = helpers.write_st(tmp_path / "bad.safetensors", helpers.flip_bit(sealed, name, idx, bit), meta)
    r = files.verify_file(bad, key)
    assert r.tampered_tensors == [name] and r.tensors[name].tampered_blocks == (idx // 64,)
    out = tmp_path / "fixed.safetensors"
    res = files.recover_file(bad, out, key)
    assert res.report.status == "recovered"
    assert res.report.tensors[name].restored_indices == (idx,)
    assert res.report.tensors[name].restored_xor == (1 << bit,)
    fixed, fixed_meta = helpers.read_st(out)
    helpers.assert_model_equal(fixed, sealed)
    assert fixed_meta == meta


def test_only_seals_of_the_older_block_macs_get_their_note(golden: Path) -> None:
    """Seals of either older MAC are told that an edit found passing in one block passes in all of them, and to
    reseal; the current MAC's are not."""
    r = files.verify_file(golden / "sealed.safetensors", paramseal.load_key(golden / "golden.key"))
    mac = json.loads(helpers.read_st(golden / "sealed.safetensors")[1]["paramseal"])["mac"]
    older = [n for n in r.notes if n.startswith(f"sealed with the older block MAC '{mac}'")]
    assert len(older) == (0 if golden.name.endswith("-mac3") else 1), r.notes
    assert all("--reseal" in n and "every block sealed with this key" in n for n in older)
    if mac == MAC_V2:  # what still carries there: the edits that keep the tag
        assert "found passing in one block with its tag left as it was" in older[0]


def test_golden_file_with_wrong_key_is_a_key_mismatch(golden: Path) -> None:
    with pytest.raises(paramseal.KeyMismatchError):
        files.verify_file(golden / "sealed.safetensors", paramseal.Key(bytes(32)))


def test_golden_files_identity_records_are_read_with_the_metadata_gone(tmp_path: Path, golden: Path) -> None:
    """v2+ wrote a record (magic, index, salt) in each float tensor with room: this version must still read them.

    With the metadata header kept, records serve only renamed tensors, so verifying intact never reads them.
    """
    if golden.name == "v1":
        pytest.skip("v1 wrote no records")
    tensors, meta = helpers.read_st(golden / "sealed.safetensors")
    with_records = sum(t["reserved"] > 0 for t in json.loads(meta["paramseal"])["tensors"])
    assert with_records
    p = helpers.write_st(tmp_path / "stripped.safetensors", tensors, {"model": meta["model"]})
    rc, _, err = helpers.run_cli(["verify", p, "--key", golden / "golden.key"])
    assert rc == 2 and f"ParamSeal records remain in {with_records} of its tensors" in err, err


@pytest.mark.parametrize("version", ["v2", "v3-mac2"])
def test_a_seal_of_an_older_block_mac_resealed_gets_the_current_one(tmp_path: Path, version: str) -> None:
    """What verify's note says to do: 'seal --reseal' of an older-MAC seal writes the current MAC, which inspect
    shows and verify gives no note for."""
    golden = GOLDEN / version
    key_file = tmp_path / "golden.key"  # a private copy: the corpus's is readable by all (a warning)
    paramseal.write_key(key_file, paramseal.load_key(golden / "golden.key"))
    out = tmp_path / "resealed.safetensors"
    rc, _, err = helpers.run_cli(["seal", golden / "sealed.safetensors", out, "--key", key_file, "--reseal"])
    assert rc == 0, err
    assert json.loads(helpers.read_st(out)[1]["paramseal"])["mac"] == MAC_NAME
    rc, so, err = helpers.run_cli(["inspect", out])
    assert rc == 0 and f"mac={MAC_NAME}," in so, (so, err)
    r = files.verify_file(out, paramseal.load_key(key_file))
    assert r.status == "intact" and not [n for n in r.notes if "older block MAC" in n], r.notes
