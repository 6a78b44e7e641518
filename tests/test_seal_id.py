"""The seal id and ``--expect-seal``: an older sealed version put back (a rollback) is caught."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import helpers
import numpy as np
import pytest

from paramseal import files
from paramseal.errors import UsageError
from paramseal.report import pinned, seal_id_arg

run = helpers.run_cli


def _seal(src: Path, dst: Path, key_file: Path, *extra: str) -> str:
    """Seal through the CLI; the seal id it printed."""
    rc, out, err = run(["seal", src, dst, "--key", key_file, *extra])
    assert rc == 0, (out, err)
    m = re.search(r"^seal id: ([0-9a-f]{32}) ", out, re.M)
    assert m, out
    return m.group(1)


@pytest.fixture()
def versions(tmp_path: Path, model_file: Path, key_file: Path) -> tuple[Path, str, Path, str]:
    """v1 sealed; then an approved change sealed again (--reseal) as v2: their files and seal ids."""
    v1 = tmp_path / "v1.safetensors"
    id1 = _seal(model_file, v1, key_file)
    t, meta = helpers.read_st(v1)
    name = sorted(n for n, a in t.items() if a.dtype == np.float32)[0]
    t[name] = (t[name] * np.float32(1.5)).astype(np.float32)  # the approved fine-tune
    changed = helpers.write_st(tmp_path / "changed.safetensors", t, meta)
    v2 = tmp_path / "v2.safetensors"
    id2 = _seal(changed, v2, key_file, "--reseal")
    return v1, id1, v2, id2


def test_seal_prints_the_id_that_verify_reports_and_inspect_shows(
    tmp_path: Path, model_file: Path, key_file: Path
) -> None:
    out = tmp_path / "s.safetensors"
    sid = _seal(model_file, out, key_file)
    rc, so, _ = run(["verify", out, "--key", key_file, "--json"])
    assert rc == 0 and json.loads(so)["seal_id"] == sid
    # half a key's digits, which output hides when typed on the command line: not the id pinned
    rc, so, _ = run(["verify", out, "--key", key_file, "--json", "--expect-seal", sid])
    assert rc == 0 and json.loads(so)["seal_id"] == sid
    rc, _, se = run(["verify", out, "--key", key_file, "--expect-seal", sid, "--expect-seal", sid])
    assert rc == 3 and "--expect-seal given twice: a model carries one seal" in se
    rc, so, _ = run(["inspect", out, "--json"])
    assert rc == 0 and json.loads(so)["seal"]["salt"] == sid
    assert _seal(model_file, tmp_path / "again.safetensors", key_file) != sid  # each seal its own


def test_an_older_version_put_back_verifies_alone_but_not_against_the_approved_id(
    tmp_path: Path, key_file: Path, versions: tuple[Path, str, Path, str]
) -> None:
    v1, id1, v2, id2 = versions
    deployed = tmp_path / "deployed.safetensors"
    shutil.copyfile(v1, deployed)  # the rollback: v1 where v2 was approved
    assert run(["verify", deployed, "--key", key_file])[0] == 0  # its own seal is intact: the reason for a pin
    rc, so, _ = run(["verify", deployed, "--key", key_file, "--expect-seal", id2])
    assert rc == 2 and so.startswith("FAIL:") and "NOT fully recoverable" in so
    assert f"carries seal {id1}, not the one expected" in so
    rc, so, _ = run(["verify", deployed, "--key", key_file, "--expect-seal", id2, "--json"])
    doc = json.loads(so)
    assert rc == 2 and doc["status"] == "tampered" and doc["recoverable"] is False and doc["seal_id"] == id1
    assert any(id1 in m for m in doc["metadata_issues"])
    assert run(["verify", v2, "--key", key_file, "--expect-seal", id2.upper()])[0] == 0  # any case
    assert run(["verify", deployed, "--key", key_file, "--expect-seal", f" {id1} "])[0] == 0


def test_recover_writes_nothing_for_another_seal_and_recovers_the_expected_one(
    tmp_path: Path, key_file: Path, versions: tuple[Path, str, Path, str]
) -> None:
    v1, id1, v2, id2 = versions
    out = tmp_path / "out.safetensors"
    for extra in ([], ["--allow-partial"]):
        rc, so, _ = run(["recover", v1, out, "--key", key_file, "--expect-seal", id2, "--json", *extra])
        doc = json.loads(so)
        assert rc == 2 and not out.exists()
        assert doc["status"] == "unrecoverable" and doc["written"] is False and doc["seal_id"] == id1
        # nothing decoded: no counts, as verify gives none (they were 0 and 0, read as "nothing lost")
        assert doc["restored_parameters"] is None and doc["unrecoverable_parameters"] is None, doc
    before = helpers.sha256(v1)
    rc, so, _ = run(["recover", v1, v1, "--in-place", "--key", key_file, "--expect-seal", id2])
    assert rc == 2 and "nothing written" in so and helpers.sha256(v1) == before
    # the approved version, tampered, is recovered as ever
    t, meta = helpers.read_st(v2)
    bad = helpers.write_st(tmp_path / "bad.safetensors", helpers.flip_bit(t, "fc.bias", 3, 30), meta)
    rc, so, _ = run(["recover", bad, out, "--key", key_file, "--expect-seal", id2])
    assert rc == 0 and so.startswith("OK: recovered") and helpers.sha256(out) == helpers.sha256(v2)


@pytest.fixture()
def large_versions(tmp_path: Path, key_file: Path) -> tuple[Path, str, Path, str]:
    """As `versions`, of a model large enough to carry copies of its header in its weights."""
    rng = np.random.default_rng(5)
    t = {"a.weight": rng.standard_normal((256, 320)).astype(np.float32), "fc.bias": np.ones(40, np.float32)}
    v1, v2 = tmp_path / "v1.safetensors", tmp_path / "v2.safetensors"
    id1 = _seal(helpers.write_st(tmp_path / "m.safetensors", t), v1, key_file)
    t, meta = helpers.read_st(v1)
    t["a.weight"] = (t["a.weight"] * np.float32(0.5)).astype(np.float32)  # the approved fine-tune
    id2 = _seal(helpers.write_st(tmp_path / "changed.safetensors", t, meta), v2, key_file, "--reseal")
    return v1, id1, v2, id2


@pytest.mark.parametrize("how", ["as sealed", "approved header pasted", "metadata stripped"])
def test_the_approved_header_given_over_an_older_version_recovers_nothing(
    tmp_path: Path, key_file: Path, key: object, large_versions: tuple[Path, str, Path, str], how: str
) -> None:
    """recover --header-from the approved header --allow-partial --expect-seal wrote the older weights under it."""
    v1, id1, v2, id2 = large_versions
    assert "header_copies_in_weights=tensor" in run(["inspect", v1])[1]  # else "pasted" leaves nothing to tell
    old = tmp_path / "old.safetensors"
    t, meta = helpers.read_st(v1)
    if how == "approved header pasted":  # the metadata then agrees with the header given: only the weights tell
        meta["paramseal"] = helpers.read_st(v2)[1]["paramseal"]
    elif how == "metadata stripped":
        meta = {}
    helpers.write_st(old, t, meta)
    out = tmp_path / "out.safetensors"
    pin = ["--header-from", v2, "--expect-seal", id2, "--json"]
    rc, so, _ = run(["verify", old, "--key", key_file, *pin])
    doc = json.loads(so)
    assert rc == 2 and doc["seal_id"] == id1 and doc["recoverable"] is False, doc
    assert any(f"carries seal {id1}, not the one expected" in m for m in doc["metadata_issues"])
    rc, so, _ = run(["recover", old, out, "--key", key_file, "--allow-partial", *pin])
    doc = json.loads(so)
    assert rc == 2 and not out.exists() and doc["written"] is False and doc["seal_id"] == id1, doc
    assert any(f"carries seal {id1}, not the one expected" in m for m in doc["metadata_issues"])
    # the library: files.recover_file, and paramseal.recover on the arrays (the torch API goes through it)
    import paramseal

    approved = files.read_header(v2, key)  # type: ignore[arg-type]
    res = files.recover_file(old, out, key, header=approved, expect_seal=id2, allow_partial=True)  # type: ignore[arg-type]
    assert res.path is None and not out.exists() and res.report.seal_id == id1
    got = paramseal.recover(t, key, approved, expect_seal=id2)  # type: ignore[arg-type]
    assert got.report.status == "unrecoverable" and got.report.seal_id == id1 and not got.report.written
    assert all(helpers.same_bytes(got.tensors[n], a) for n, a in t.items())  # as given, nothing rebuilt
    # without the pin, --allow-partial writes what it could under the header given, as ever
    rc, _, _ = run(["recover", old, out, "--key", key_file, "--allow-partial", "--header-from", v2])
    assert rc == 2 and out.exists()


def test_the_approved_version_tampered_recovers_pinned_with_its_header_given(
    tmp_path: Path, key_file: Path, large_versions: tuple[Path, str, Path, str]
) -> None:
    """The other seal's copies are looked for only to refuse a rollback: the approved model, damaged, recovers."""
    _, _, v2, id2 = large_versions
    t, meta = helpers.read_st(v2)
    bad = helpers.write_st(tmp_path / "bad.safetensors", helpers.flip_bit(t, "fc.bias", 3, 30), meta)
    out = tmp_path / "out.safetensors"
    rc, so, _ = run(["recover", bad, out, "--key", key_file, "--header-from", v2, "--expect-seal", id2])
    assert rc == 0 and so.startswith("OK: recovered") and helpers.sha256(out) == helpers.sha256(v2), so


@pytest.mark.parametrize(
    ("given", "says"),
    [("xyz", "3 characters, not all hex digits"), ("ab" * 15, "30 hex digits"), ("", "0 hex digits")],
)
def test_a_malformed_seal_id_is_refused_before_any_work(
    tmp_path: Path, sealed_file: Path, key_file: Path, given: str, says: str
) -> None:
    out = tmp_path / "out.safetensors"
    for argv in (["verify", sealed_file], ["recover", sealed_file, out]):
        rc, so, se = run([*argv, "--key", tmp_path / "no such key", "--expect-seal", given])
        assert rc == 3 and says in se and "key" not in se.split("seal id")[0], se  # before the key is read
        assert not out.exists()


def test_a_key_given_as_the_seal_id_is_never_printed(sealed_file: Path, key_file: Path) -> None:
    secret = key_file.read_text().strip()
    for given in (secret, secret[:32]):
        rc, so, se = run(["verify", sealed_file, "--key", key_file, "--expect-seal", given])
        assert rc in (2, 3) and secret[:16] not in so + se, (so, se)


def test_the_library_pins_too(tmp_path: Path, sealed_file: Path, key: object) -> None:
    rep = files.verify_file(sealed_file, key)  # type: ignore[arg-type]
    assert re.fullmatch(r"[0-9a-f]{32}", rep.seal_id)
    assert files.verify_file(sealed_file, key, expect_seal=rep.seal_id.upper()) == rep  # type: ignore[arg-type]
    other = "0" * 32
    got = files.verify_file(sealed_file, key, expect_seal=other)  # type: ignore[arg-type]
    assert got.status == "tampered" and not got.recoverable and got.exit_code == 2
    res = files.recover_file(sealed_file, tmp_path / "r.safetensors", key, expect_seal=other)  # type: ignore[arg-type]
    assert res.path is None and not res.report.written and res.report.status == "unrecoverable"
    assert pinned(rep, None) is rep and pinned(rep, rep.seal_id) is rep
    with pytest.raises(UsageError, match="32 hex digits"):
        seal_id_arg("g" * 32)


# --------------------------------------------------------------------------- sharded folders: the set's id


def _checkpoint(folder: Path, scale: float = 1.0, shape: tuple[int, int] = (64, 80)) -> Path:
    """Two shards and their index (the Hugging Face layout); ``shape`` large enough carries header copies."""

    rng = np.random.default_rng(11)
    folder.mkdir()  # a folder already there is the caller's mistake
    shards = {
        f"model-0000{i + 1}-of-00002.safetensors": {
            f"layers.{i}.weight": (rng.standard_normal(shape) * scale).astype(np.float32)
        }
        for i in range(2)
    }
    return helpers.write_checkpoint(folder, shards, {"format": "pt"}, {"total_size": 1})


def test_a_sharded_folder_s_seal_id_is_its_set_s_and_pins_verify_and_recover(tmp_path: Path, key_file: Path) -> None:
    from paramseal import load_key, sharded

    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    id1 = _seal(_checkpoint(tmp_path / "c1"), v1, key_file)
    id2 = _seal(_checkpoint(tmp_path / "c2", scale=0.5), v2, key_file)
    assert id1 != id2 and sharded.seal_id(v2, load_key(key_file)) == id2
    rc, so, _ = run(["verify", v2, "--key", key_file, "--json", "--expect-seal", id2])
    assert rc == 0 and json.loads(so)["seal_id"] == id2
    # the older set put back
    rc, so, _ = run(["verify", v1, "--key", key_file, "--json", "--expect-seal", id2])
    doc = json.loads(so)
    assert rc == 2 and doc["status"] == "tampered" and doc["seal_id"] == id1
    assert any(f"carries seal {id1}, not the one expected" in m for m in doc["metadata_issues"])
    out = tmp_path / "out"
    rc, so, _ = run(["recover", v1, out, "--key", key_file, "--json", "--expect-seal", id2, "--allow-partial"])
    doc = json.loads(so)
    assert rc == 2 and doc["written"] is False and doc["status"] == "unrecoverable" and not out.exists()
    assert doc["restored_parameters"] is None and doc["unrecoverable_parameters"] is None, doc  # none decoded
    # one shard of the older set among the approved one's: no one id, nothing written
    mixed = tmp_path / "mixed"
    shutil.copytree(v2, mixed)
    shutil.copyfile(v1 / "model-00001-of-00002.safetensors", mixed / "model-00001-of-00002.safetensors")
    rc, so, _ = run(["recover", mixed, out, "--key", key_file, "--expect-seal", id2])
    assert rc == 2 and "nothing written" in so and not out.exists()
    # the approved set, tampered, recovers as ever
    bad = tmp_path / "bad"
    shutil.copytree(v2, bad)
    shard = bad / "model-00002-of-00002.safetensors"
    t, meta = helpers.read_st(shard)
    w = t["layers.1.weight"].reshape(-1).view(np.uint32)
    w[7] ^= np.uint32(1 << 29)
    helpers.write_st(shard, t, meta)
    rc, so, _ = run(["recover", bad, out, "--key", key_file, "--expect-seal", id2])
    assert rc == 0 and so.startswith("OK: recovered"), so
    assert helpers.sha256(out / shard.name) == helpers.sha256(v2 / shard.name)


def test_inspect_shows_a_sharded_folder_s_set_id_read_without_the_key(tmp_path: Path, key_file: Path) -> None:
    """inspect of a folder showed no set id (the id seal and verify give it); its records name it, the key unused."""
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    id1 = _seal(_checkpoint(tmp_path / "c1"), v1, key_file)
    id2 = _seal(_checkpoint(tmp_path / "c2", scale=0.5), v2, key_file)
    rc, so, _ = run(["inspect", v2, "--json"])
    doc = json.loads(so)
    assert rc == 0 and doc["seal"]["set_id"] == id2 and doc["seal"]["authenticated"].startswith("not checked")
    assert {i["set_id"] for i in doc["per_shard"].values()} == {id2}
    rc, so, _ = run(["inspect", v2])
    assert rc == 0 and f"set_id={id2}, authenticated=not checked" in so and "WARNING" not in so
    # one shard of the older set among the approved one's: no one id, and each shard's named
    mixed = tmp_path / "mixed"
    shutil.copytree(v2, mixed)
    shutil.copyfile(v1 / SHARD, mixed / SHARD)
    doc = json.loads(run(["inspect", mixed, "--json"])[1])
    assert doc["seal"]["set_id"] is None and doc["per_shard"][SHARD]["set_id"] == id1
    rc, so, _ = run(["inspect", mixed])
    assert rc == 0 and "set_id=none" in so and f"{SHARD}: {id1}" in so and f": {id2}" in so
    # a record naming no well-formed id (here the key's digits) is shown as none, never printed
    secret = key_file.read_text().strip()
    t, meta = helpers.read_st(v2 / SHARD)
    meta["paramseal_set"] = json.dumps({**json.loads(meta["paramseal_set"]), "set": secret})
    helpers.write_st(mixed / SHARD, t, meta)
    for extra in ([], ["--json"]):
        rc, so, se = run(["inspect", mixed, *extra])
        assert rc == 0 and secret[:16] not in so + se and secret[-16:] not in so + se
    assert json.loads(run(["inspect", mixed, "--json"])[1])["per_shard"][SHARD]["set_id"] is None


# --------------------------------------------------------------------------- the in-memory and torch APIs


def test_verify_and_recover_in_memory_and_on_a_live_module_take_the_expected_seal(key: object) -> None:
    import paramseal

    torch = pytest.importorskip("torch")
    from paramseal import torch as pst

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.Linear(48, 8))
    first = pst.seal_module(m, key)  # type: ignore[arg-type]
    id1 = first.header.salt.hex()
    old = {n: t.clone() for n, t in m.state_dict().items()}
    with torch.no_grad():
        m[0].weight.mul_(0.5)  # the approved change, sealed again
    second = pst.seal_module(m, key, reseal=True)  # type: ignore[arg-type]
    id2 = second.header.salt.hex()
    assert pst.verify_module(m, key, second.header_json, expect_seal=id2).status == "intact"  # type: ignore[arg-type]
    m.load_state_dict(old)  # the older version put back, with its own header
    rep = pst.verify_module(m, key, first.header_json, expect_seal=id2)  # type: ignore[arg-type]
    assert rep.status == "tampered" and not rep.recoverable and rep.seal_id == id1
    rep = pst.recover_module(m, key, first.header_json, expect_seal=id2, allow_partial=True)  # type: ignore[arg-type]
    assert rep.status == "unrecoverable" and not rep.written
    assert all(torch.equal(t, old[n]) for n, t in m.state_dict().items())  # left as it was
    # numpy arrays: paramseal.verify / recover
    arrays = {n: t.numpy() for n, t in m.state_dict().items()}
    assert paramseal.verify(arrays, key, first.header_json, expect_seal=id1).status == "intact"  # type: ignore[arg-type]
    res = paramseal.recover(arrays, key, first.header_json, expect_seal=id2)  # type: ignore[arg-type]
    assert res.report.status == "unrecoverable" and not res.report.written
    assert all(np.array_equal(res.tensors[n], a) for n, a in arrays.items())
    with pytest.raises(UsageError, match="32 hex digits"):
        paramseal.verify(arrays, key, first.header_json, expect_seal=id1[:-1])  # type: ignore[arg-type]


def _versions(tmp_path: Path, key_file: Path) -> tuple[Path, str, Path, str]:
    """An older and an approved sealed checkpoint, shards large enough to carry header copies in their weights."""
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    id1 = _seal(_checkpoint(tmp_path / "c1", shape=(256, 320)), v1, key_file)
    id2 = _seal(_checkpoint(tmp_path / "c2", scale=0.5, shape=(256, 320)), v2, key_file)
    return v1, id1, v2, id2


SHARD = "model-00001-of-00002.safetensors"


def test_an_approved_shard_s_header_on_an_older_shard_s_weights_is_another_seal(tmp_path: Path, key_file: Path) -> None:
    v1, _, v2, id2 = _versions(tmp_path, key_file)
    assert "header_copies_in_weights=tensor" in run(["inspect", v1 / SHARD])[1]  # else there is no rival to find
    mixed = tmp_path / "mixed"
    shutil.copytree(v2, mixed)
    t, meta = helpers.read_st(v1 / SHARD)
    # the older shard whole (its set record too), but the approved shard's authenticated header in the metadata
    helpers.write_st(mixed / SHARD, t, {**meta, "paramseal": helpers.read_st(v2 / SHARD)[1]["paramseal"]})
    rc, so, _ = run(["verify", mixed, "--key", key_file, "--expect-seal", id2, "--json"])
    doc = json.loads(so)
    # its weights are checked under their own seal: the pasted header's record vouched for them (exit 1, the id pinned)
    assert rc == 2 and doc["recoverable"] is False and doc["seal_id"] != id2, doc
    assert any("2 different sealed sets" in m for m in doc["metadata_issues"])
    from paramseal import load_key, sharded

    # what the records name, the weights unread (README): verify's seal_id above is the one checked
    assert sharded.seal_id(mixed, load_key(key_file)) == id2


@pytest.mark.parametrize("how", ["header pasted", "record stripped and pasted"])
def test_recover_allow_partial_writes_no_folder_holding_an_older_shard(
    tmp_path: Path, key_file: Path, how: str
) -> None:
    v1, _, v2, id2 = _versions(tmp_path, key_file)
    mixed = tmp_path / "mixed"
    shutil.copytree(v2, mixed)
    t, meta = helpers.read_st(v1 / SHARD)
    approved = helpers.read_st(v2 / SHARD)[1]
    if how == "header pasted":  # its weights' own seal is another set's: found once recovered
        meta["paramseal"] = approved["paramseal"]
    else:  # read from the weights, its record untrusted: it took the approved shards' id
        del meta["paramseal"]
        meta["paramseal_set"] = approved["paramseal_set"]
    helpers.write_st(mixed / SHARD, t, meta)
    out = tmp_path / "out"
    rc, so, _ = run(["recover", mixed, out, "--key", key_file, "--expect-seal", id2, "--allow-partial", "--json"])
    doc = json.loads(so)
    assert rc == 2 and doc["written"] is False and not out.exists(), doc
    assert any("carries no one seal" in m for m in doc["metadata_issues"])
    # without the pin, --allow-partial writes what it could, as ever: the older shard's weights among them
    rc, _, _ = run(["recover", mixed, out, "--key", key_file, "--allow-partial"])
    assert rc == 2 and helpers.read_st(out / SHARD)[0].keys() == t.keys()
    assert all(helpers.same_bytes(helpers.read_st(out / SHARD)[0][n], t[n]) for n in t)


def test_recover_pinned_restores_an_approved_shard_under_an_older_shard_s_header(
    tmp_path: Path, key_file: Path
) -> None:
    """It was exit 1, nothing written: the records named another id, the weights verify under the pinned one."""
    v1, _, v2, id2 = _versions(tmp_path, key_file)
    mixed = tmp_path / "mixed"
    shutil.copytree(v2, mixed)
    t, meta = helpers.read_st(v2 / SHARD)
    helpers.write_st(mixed / SHARD, t, {**meta, "paramseal": helpers.read_st(v1 / SHARD)[1]["paramseal"]})
    rc, so, _ = run(["verify", mixed, "--key", key_file, "--expect-seal", id2, "--json"])
    assert rc == 1 and json.loads(so)["seal_id"] == id2  # the approved weights, recoverable
    out = tmp_path / "out"
    rc, so, _ = run(["recover", mixed, out, "--key", key_file, "--expect-seal", id2, "--json"])
    doc = json.loads(so)
    assert rc == 0 and doc["written"] is True and doc["seal_id"] == id2, doc
    assert run(["verify", out, "--key", key_file, "--expect-seal", id2])[0] == 0
