"""Sharded sets: what a folder's set records say when its index is gone, and files added to a sealed set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import helpers
import numpy as np
import pytest

import paramseal
from paramseal import sharded

SHARDS = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"]


@pytest.fixture()
def sealed(tmp_path: Path, key: paramseal.Key) -> Path:
    """Three sealed shards, their index and a config file."""
    rng = np.random.default_rng(11)
    shards = {
        shard: {
            f"layers.{i}.weight": helpers.random_tensor(rng, np.float32, (64, 48)),
            f"layers.{i}.norm": helpers.random_tensor(rng, np.float16, (64,)),
        }
        for i, shard in enumerate(SHARDS)
    }
    src = helpers.write_checkpoint(tmp_path / "ckpt", shards)
    (src / "config.json").write_text("{}")
    sharded.seal_dir(src, tmp_path / "sealed", key, workers=1)
    return tmp_path / "sealed"


def test_inspect_without_an_index_names_the_shards_the_set_records_list_and_the_folder_lacks(sealed: Path) -> None:
    """With the index gone, inspect described only the files carrying set records: a shard deleted as well was not
    named (3 shards listed by every record, '2 shards (2 sealed)', no warning), where with the index it is
    ``missing_shards``. Now the records list the set as the index would: the absent shard is missing, text and JSON."""
    with_index = sharded.inspect_dir(sealed)
    (sealed / SHARDS[1]).unlink()
    indexed = sharded.inspect_dir(sealed)
    assert indexed["missing_shards"] == [SHARDS[1]], indexed
    (sealed / sharded.INDEX).unlink()
    rc, out, err = helpers.run_cli(["inspect", sealed, "--json"])
    info = json.loads(out)
    assert rc == 0 and err == "" and info["index"] is None and "index_problem" in info, (out, err)
    assert info["missing_shards"] == [SHARDS[1]] and "unreadable_shards" not in info, info
    assert info["shards"] == indexed["shards"] == 3 and info["sealed_shards"] == 2 and not info["sealed"], info
    assert sorted(info["per_shard"]) == [SHARDS[0], SHARDS[2]] and info["tensors"] == indexed["tensors"], info
    assert info["seal"]["set_id"] == with_index["seal"]["set_id"] is not None, info
    rc, text, _ = helpers.run_cli(["inspect", sealed])
    assert rc == 0 and "in 3 shards (2 sealed)" in text.splitlines()[0], text
    assert f"WARNING: shard '{SHARDS[1]}' is missing from the folder; run verify" in text, text


def test_inspect_without_an_index_takes_a_renamed_shard_for_the_one_its_record_names(sealed: Path) -> None:
    """Index gone, a shard renamed: its file carries its record, so the shard is there (verify finds it renamed,
    exit 1), not missing; nothing is added for a set that is whole."""
    (sealed / sharded.INDEX).unlink()
    (sealed / SHARDS[1]).rename(sealed / "renamed.safetensors")
    info = sharded.inspect_dir(sealed)
    assert "missing_shards" not in info and info["shards"] == 3 and info["sealed"], info
    assert sorted(info["per_shard"]) == sorted([SHARDS[0], "renamed.safetensors", SHARDS[2]]), info
    intact = sealed.parent / "intact"
    shutil.copytree(sealed, intact)
    (intact / "renamed.safetensors").rename(intact / SHARDS[1])
    assert "missing_shards" not in sharded.inspect_dir(intact) and sharded.inspect_dir(intact)["shards"] == 3


def _add_unsealed_shard(folder: Path) -> dict[str, np.ndarray]:
    """An unsealed shard written into the sealed set and added to its index, as a tool adding weights would."""
    added = {"adapter.weight": np.ones((64, 8), np.float32), "adapter.bias": np.zeros((8,), np.float32)}
    helpers.write_st(folder / "model-00004-of-00004.safetensors", added)
    index = json.loads((folder / sharded.INDEX).read_text())
    index["weight_map"] |= dict.fromkeys(added, "model-00004-of-00004.safetensors")
    (folder / sharded.INDEX).write_text(json.dumps(index))
    return added


def test_an_unsealed_shard_added_to_the_index_is_added_tensors_as_in_a_single_file(
    tmp_path: Path, sealed: Path, key: paramseal.Key, key_file: Path
) -> None:
    """A file never sealed, added to the set and to its index, made verify and recover exit 2 ('cannot be
    verified', its tensors 'cannot be checked', nothing written). A single file's added tensor is tampering that
    recover undoes by leaving it out (verify exit 1, recover exit 0): the added shard is now the same, its tensors
    extra tensors, and recover writes the set without it (and its tensors out of the index)."""
    one = tmp_path / "one.safetensors"
    t, meta = helpers.read_st(sealed / SHARDS[0])
    helpers.write_st(one, {**t, "adapter.weight": np.ones((64, 8), np.float32)}, meta)
    assert helpers.run_cli(["verify", one, "--key", key_file])[0] == 1
    assert helpers.run_cli(["recover", one, tmp_path / "one_fixed.safetensors", "--key", key_file])[0] == 0
    before = json.loads((sealed / sharded.INDEX).read_text())
    added = _add_unsealed_shard(sealed)
    shard = "model-00004-of-00004.safetensors"
    rc, out, err = helpers.run_cli(["verify", sealed, "--key", key_file, "--json"])
    rep = json.loads(out)
    assert rc == 1 and err == "" and rep["status"] == "tampered" and rep["recoverable"], (out, err)
    assert sorted(rep["extra_tensors"]) == sorted(f"{shard}:{n}" for n in added), rep
    assert rep["tampered_tensors"] == [] and not set(added) & set(rep["tensors"]), rep
    assert [m for m in rep["metadata_issues"] if f"shard '{shard}'" in m and "added" in m] == rep["metadata_issues"]
    rc, text, _ = helpers.run_cli(["verify", sealed, "--key", key_file])
    assert rc == 1 and f"extra tensor not in the seal: {shard}:adapter.weight" in text, text
    fixed = tmp_path / "fixed"
    rc, out, err = helpers.run_cli(["recover", sealed, fixed, "--key", key_file])
    assert rc == 0 and err == "" and f"shard '{shard}', added to the set, was left out" in out, (out, err)
    assert sorted(p.name for p in fixed.glob("*.safetensors")) == SHARDS
    assert json.loads((fixed / sharded.INDEX).read_text())["weight_map"] == before["weight_map"]
    assert sharded.verify_dir(fixed, key, workers=1).status == "intact"
    report = sharded.recover_dir(sealed, tmp_path / "again", key, workers=1)
    assert report.status == "recovered" and report.written and len(report.extra_tensors) == 2, report


def test_a_shard_of_the_set_replaced_by_an_unsealed_file_is_still_unrecoverable(
    sealed: Path, key: paramseal.Key
) -> None:
    """Only a file the set never had is added: a shard the set records list, replaced by an unsealed file, loses
    that shard's weights (exit 2), as before."""
    helpers.write_st(sealed / SHARDS[1], {"layers.1.weight": np.ones((64, 48), np.float32)})
    report = sharded.verify_dir(sealed, key, workers=1)
    assert report.status == "tampered" and not report.recoverable and report.extra_tensors == (), report
    assert any(f"shard '{SHARDS[1]}' cannot be verified" in m for m in report.metadata_issues), report


def test_a_moved_tensor_whose_copy_has_a_few_damaged_blocks_is_still_found_and_repaired(
    tmp_path: Path, sealed: Path, key: paramseal.Key
) -> None:
    """A copy is taken for a moved tensor when most of its blocks verify (README), but the check compared the
    damaged blocks with the size a report's finding carries, 0: one damaged block of 48 and the copy was refused,
    the tensor 'missing' (exit 2, nothing recovered). Now 3 damaged blocks of 48: found, and recover repairs them."""
    name = "layers.0.weight"  # 64 x 48 float32: 48 blocks
    pristine = (sealed / SHARDS[0]).read_bytes(), (sealed / SHARDS[1]).read_bytes()
    t1, m1 = helpers.move_tensor(name, sealed / SHARDS[0], sealed / SHARDS[1])
    t1[name].reshape(-1)[[0, 64 * 10, 64 * 30]] += 1.0  # one value in each of three blocks
    helpers.write_st(sealed / SHARDS[1], t1, m1)
    rep = sharded.verify_dir(sealed, key, workers=1)
    assert rep.exit_code == 1 and rep.tensors[name].issues == (f"moved to shard '{SHARDS[1]}'",), rep.tensors[name]
    assert list(rep.tensors[name].tampered_blocks) == [0, 10, 30], rep.tensors[name]
    out = tmp_path / "fixed"
    rec = sharded.recover_dir(sealed, out, key, workers=1)
    assert rec.status == "recovered" and rec.written, rec
    assert ((out / SHARDS[0]).read_bytes(), (out / SHARDS[1]).read_bytes()) == pristine


def test_recover_checks_a_shard_with_a_tensor_moved_out_once_unless_a_copy_is_refused(
    tmp_path: Path, sealed: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """recover checked the shard that lacks a moved tensor twice, as verify once did: each copy alone (to choose the
    copies to take), then the whole shard with them. Now once, that check the one recover goes on from."""
    from paramseal import _recover_file, _shard_moves

    checked: list[tuple[str, str | None]] = []

    def counted(real: Any) -> Any:
        def check(loaded: Any, path: Path, *a: Any, **kw: Any) -> Any:
            checked.append((path.name, kw.get("select")))
            return real(loaded, path, *a, **kw)

        return check

    for module in (_shard_moves, _recover_file):
        monkeypatch.setattr(module, "check_loaded", counted(module.check_loaded))
    name = "layers.0.weight"
    t1, m1 = helpers.move_tensor(name, sealed / SHARDS[0], sealed / SHARDS[1])
    rep = sharded.recover_dir(sealed, tmp_path / "fixed", key, workers=1)
    assert rep.status == "recovered" and rep.tensors[name].issues[0] == f"moved to shard '{SHARDS[1]}'", rep
    assert [c for c in checked if c[0] == SHARDS[0]] == [(SHARDS[0], None)], checked
    t1[name].reshape(-1)[: 64 * 40] = 0  # 40 blocks of 48 no longer its data: refused, checked again without it
    helpers.write_st(sealed / SHARDS[1], t1, m1)
    checked.clear()
    rep = sharded.recover_dir(sealed, tmp_path / "not", key, workers=1)
    assert not rep.written and "missing" in rep.tensors[name].issues, rep.tensors[name]
    assert [c for c in checked if c[0] == SHARDS[0]] == [(SHARDS[0], None)] * 2, checked


def test_inspect_without_an_index_says_the_set_records_do_not_name_a_stray_file(sealed: Path) -> None:
    """With the index gone, a stray file beside a missing shard was 'not named by the index': there is none."""
    (sealed / SHARDS[1]).unlink()
    (sealed / sharded.INDEX).unlink()
    helpers.write_st(sealed / "extra.safetensors", {"x": np.ones(8, np.float32)})
    rc, text, _ = helpers.run_cli(["inspect", sealed])
    assert rc == 0, text
    assert "WARNING: file 'extra.safetensors' is not named by the set records; it carries no set record" in text, text
    assert "index" not in [line for line in text.splitlines() if "extra.safetensors" in line][0]


def _sealed_with(key: paramseal.Key, tmp_path: Path, name: str, tensors: dict[str, np.ndarray]) -> Path:
    """``tensors`` sealed as shard ``name`` of a set of its own, with ``key`` (an attacker's re-seal)."""
    src = helpers.write_checkpoint(tmp_path / f"src-{name[:11]}", {name: tensors})
    sharded.seal_dir(src, tmp_path / f"resealed-{name[:11]}", key, workers=1, reseal=True)
    return tmp_path / f"resealed-{name[:11]}" / name


def test_a_listed_shard_resealed_with_another_key_is_tampering_not_a_wrong_key(
    tmp_path: Path, sealed: Path, key: paramseal.Key, key_file: Path, other_key: paramseal.Key
) -> None:
    """A shard of the set, tampered and re-sealed with an attacker's key, stopped verify and recover with 'key does
    not match ... pass the key used at seal time' (exit 3), though the key is right for every other shard. It is
    tampering: the shard is named as sealed with another key (exit 2), and recover writes nothing."""
    t, _ = helpers.read_st(sealed / SHARDS[1])
    shutil.copy(_sealed_with(other_key, tmp_path, SHARDS[1], helpers.flip_bit(t, "layers.1.weight", 3, 30)),
                sealed / SHARDS[1])  # fmt: skip
    rc, out, err = helpers.run_cli(["verify", sealed, "--key", key_file, "--json"])
    assert rc == 2 and err == "", (out, err)
    rep = json.loads(out)
    assert rep["status"] == "tampered" and not rep["recoverable"], rep
    assert any(f"shard '{SHARDS[1]}' was sealed with another key (fingerprint {other_key.fingerprint}" in m
               for m in rep["metadata_issues"]), rep  # fmt: skip
    assert "does not match" not in out and "seal time" not in out and key.secret.hex() not in out, out
    assert "layers.1.weight" in rep["tampered_tensors"] and "layers.0.weight" not in rep["tampered_tensors"], rep
    rc, out, err = helpers.run_cli(["recover", sealed, tmp_path / "fixed", "--key", key_file])
    assert rc == 2 and err == "" and not (tmp_path / "fixed").exists(), (out, err)
    assert f"shard '{SHARDS[1]}' was sealed with another key" in out and "seal time" not in out, out
    report = sharded.recover_dir(sealed, tmp_path / "partial", key, allow_partial=True, workers=1)
    assert report.written and report.status == "unrecoverable", report


def test_a_shard_sealed_with_another_key_added_to_the_index_is_an_added_shard(
    tmp_path: Path, sealed: Path, key_file: Path, other_key: paramseal.Key
) -> None:
    """A file sealed with another key, added to the set and to its index, stopped verify with 'key does not match'
    (exit 3): it is an added shard, as an unsealed one is (verify exit 1, recover leaves it out, exit 0)."""
    shard = "model-00004-of-00004.safetensors"
    added = {"adapter.weight": np.ones((64, 8), np.float32)}
    shutil.copy(_sealed_with(other_key, tmp_path, shard, added), sealed / shard)
    before = json.loads((sealed / sharded.INDEX).read_text())
    index = json.loads((sealed / sharded.INDEX).read_text())
    index["weight_map"]["adapter.weight"] = shard
    (sealed / sharded.INDEX).write_text(json.dumps(index))
    rc, out, err = helpers.run_cli(["verify", sealed, "--key", key_file, "--json"])
    assert rc == 1 and err == "", (out, err)
    rep = json.loads(out)
    assert rep["extra_tensors"] == [f"{shard}:adapter.weight"] and rep["recoverable"], rep
    assert any(f"shard '{shard}'" in m and "added" in m and "another key" in m for m in rep["metadata_issues"]), rep
    fixed = tmp_path / "fixed"
    rc, out, err = helpers.run_cli(["recover", sealed, fixed, "--key", key_file])
    assert rc == 0 and err == "" and f"shard '{shard}', added to the set, was left out" in out, (out, err)
    assert sorted(p.name for p in fixed.glob("*.safetensors")) == SHARDS
    assert json.loads((fixed / sharded.INDEX).read_text())["weight_map"] == before["weight_map"]


def test_every_shard_under_another_key_is_still_a_wrong_key(
    tmp_path: Path, sealed: Path, key: paramseal.Key, other_key: paramseal.Key
) -> None:
    """No shard authenticates with the key given: the key is wrong (exit 3, both fingerprints, the key never said),
    with a shard replaced by one of the right key's other seal or not."""
    other = paramseal.write_key(tmp_path / "other.key", other_key)
    for args in (["verify", sealed, "--key", other], ["recover", sealed, tmp_path / "o", "--key", other]):
        rc, out, err = helpers.run_cli(args)
        assert rc == 3 and "key does not match" in err and not (tmp_path / "o").exists(), (out, err)
        assert key.fingerprint in err and other_key.fingerprint in err and other_key.secret.hex() not in out + err, err


def test_verify_tensors_matching_only_an_added_shard_reports_them_as_extra(
    sealed: Path, key: paramseal.Key, key_file: Path
) -> None:
    """``verify --tensors`` matching only an added unsealed shard's tensors opened that shard alone: with no sealed
    shard read, no set record said the set lacks it, and it was a shard that 'cannot be verified' (exit 2) where
    plain verify reports its tensors as extra (exit 1). The records of the shards not opened now say so too."""
    added = _add_unsealed_shard(sealed)
    shard = "model-00004-of-00004.safetensors"
    rc, out, err = helpers.run_cli(["verify", sealed, "--key", key_file, "--tensors", "adapter.*", "--json"])
    rep = json.loads(out)
    assert rc == 1 and err == "" and rep["recoverable"], (out, err)
    assert sorted(rep["extra_tensors"]) == sorted(f"{shard}:{n}" for n in added), rep
    assert rep["tampered_tensors"] == [] and rep["tensors"] == {}, rep
    assert any(f"shard '{shard}'" in m and "added" in m for m in rep["metadata_issues"]), rep
    assert not any("cannot be verified" in m for m in rep["metadata_issues"]), rep
    rc, text, _ = helpers.run_cli(["verify", sealed, "--key", key_file, "--tensors", "adapter.bias"])
    assert rc == 1 and f"extra tensor not in the seal: {shard}:adapter.bias" in text, text
    assert "adapter.weight" not in text, text
    report = sharded.verify_dir(sealed, key, tensors="*.weight", workers=1)
    assert report.exit_code == 1 and report.extra_tensors == (f"{shard}:adapter.weight",), report


def test_verify_checking_no_shard_still_names_the_key_and_the_level_the_set_was_sealed_at(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """With no shard checked (``--tensors`` matching only an added shard's), --json gave key_fingerprint "" and
    level "": the key is the one given, the level the one the shards not read were sealed at (their headers)."""
    src = helpers.write_checkpoint(
        tmp_path / "ckpt", {s: {f"l.{i}": np.ones((64, 48), np.float32) * i} for i, s in enumerate(SHARDS)}
    )
    folder = tmp_path / "sealed"
    sharded.seal_dir(src, folder, key, level="strong", workers=1)
    _add_unsealed_shard(folder)
    rc, out, err = helpers.run_cli(["verify", folder, "--key", key_file, "--tensors", "adapter.*", "--json"])
    rep = json.loads(out)
    assert rc == 1 and rep["checked_blocks"] == 0, (out, err)
    assert rep["key_fingerprint"] == key.fingerprint and rep["level"] == "strong", rep
    report = sharded.verify_dir(folder, key, tensors="adapter.bias", workers=1)
    assert (report.key_fingerprint, report.level) == (key.fingerprint, "strong"), report


@pytest.mark.parametrize("sealed_with_other_key", [False, True])
def test_shards_swapped_beside_an_added_shard_are_still_found_renamed(
    tmp_path: Path, sealed: Path, key: paramseal.Key, other_key: paramseal.Key, sealed_with_other_key: bool
) -> None:
    """Two shards swapped are found renamed (exit 1, recover writes them back); with a file added to the set and its
    index as well, that file (no seal of the key, so no set record) stopped the search: every tensor of both shards
    was on the wrong shard (exit 2, nothing recovered). Now the renames are found as without it, and it is added."""
    pristine = {s: (sealed / s).read_bytes() for s in SHARDS}
    (sealed / SHARDS[0]).rename(sealed / "swap.safetensors")
    (sealed / SHARDS[1]).rename(sealed / SHARDS[0])
    (sealed / "swap.safetensors").rename(sealed / SHARDS[1])
    shard = "model-00004-of-00004.safetensors"
    added = _add_unsealed_shard(sealed)
    if sealed_with_other_key:
        shutil.copy(_sealed_with(other_key, tmp_path, shard, added), sealed / shard)
    rep = sharded.verify_dir(sealed, key, workers=1)
    assert rep.exit_code == 1 and rep.moved_shards == {SHARDS[0]: SHARDS[1], SHARDS[1]: SHARDS[0]}, rep
    assert sorted(rep.extra_tensors) == sorted(f"{shard}:{n}" for n in added), rep
    assert [m for m in rep.metadata_issues if "was sealed as" in m or "the index maps" in m] == [], rep
    assert any(f"shard '{shard}'" in m and "added" in m for m in rep.metadata_issues), rep
    rec = sharded.recover_dir(sealed, tmp_path / "fixed", key, workers=1)
    assert rec.written and rec.status == "recovered", rec
    assert {s: (tmp_path / "fixed" / s).read_bytes() for s in SHARDS} == pristine
    assert sorted(p.name for p in (tmp_path / "fixed").glob("*.safetensors")) == SHARDS


def test_an_unsealed_file_under_the_name_of_a_shard_found_elsewhere_is_no_added_shard(
    sealed: Path, key: paramseal.Key
) -> None:
    """The set's renames are found past a file added to it only when that file takes no sealed shard's name: an
    unsealed file written as a shard whose own file was renamed is that shard replaced (exit 2), as before."""
    (sealed / SHARDS[0]).rename(sealed / "swap.safetensors")
    (sealed / SHARDS[1]).rename(sealed / SHARDS[0])
    (sealed / "swap.safetensors").rename(sealed / "elsewhere.safetensors")
    helpers.write_st(sealed / SHARDS[1], {"layers.1.weight": np.ones((64, 48), np.float32)})
    rep = sharded.verify_dir(sealed, key, workers=1)
    assert rep.exit_code == 2 and rep.moved_shards == {} and rep.extra_tensors == (), rep


def test_a_renamed_shard_whose_name_an_unsealed_file_took_is_said_to_be_that_shard_not_a_stray(
    sealed: Path, key: paramseal.Key
) -> None:
    """A shard renamed, an unsealed file written under its name (exit 2, that shard replaced): the renamed file was
    'not a shard ... neither the index nor a sealed set record names it', though its own sealed record does."""
    (sealed / SHARDS[0]).rename(sealed / "elsewhere.safetensors")
    helpers.write_st(sealed / SHARDS[0], {"layers.0.weight": np.ones((64, 48), np.float32)})
    for rep in (sharded.verify_dir(sealed, key, workers=1), sharded.recover_dir(sealed, sealed.with_name("f"), key)):
        assert rep.exit_code == 2, rep
        said = [n for n in rep.notes if "'elsewhere.safetensors'" in n]
        assert len(said) == 1 and "neither the index nor a sealed set record names it" not in said[0], rep.notes
        assert f"its sealed set record says it is shard '{SHARDS[0]}' of this checkpoint" in said[0], said


def _moved_into_new_file(folder: Path, name: str, shard: str) -> dict[str, np.ndarray]:
    """Tensor ``name`` moved whole from ``shard`` into a new unsealed file beside an adapter, both added to the
    index; returns the new file's tensors."""
    t, m = helpers.read_st(folder / shard)
    new = {name: t.pop(name), "adapter.weight": np.ones((64, 8), np.float32)}
    helpers.write_st(folder / shard, t, m)
    helpers.write_st(folder / "model-00004-of-00004.safetensors", new)
    index = json.loads((folder / sharded.INDEX).read_text())
    index["weight_map"] |= dict.fromkeys(new, "model-00004-of-00004.safetensors")
    (folder / sharded.INDEX).write_text(json.dumps(index))
    return new


# the moved tensor holds its shard's records only (64 x 48), a part of its header copy (64 x 256), a whole copy
@pytest.mark.parametrize("shape", [(64, 48), (64, 256), (256, 256)])
def test_a_sealed_tensor_moved_into_a_new_file_is_found_there_and_the_file_is_added(
    tmp_path: Path, key: paramseal.Key, key_file: Path, shape: tuple[int, int]
) -> None:
    """A tensor moved whole into a new file (added to the index) made that file a shard: its weights carry the
    tensor's shard's ParamSeal records (and header copy), so alone it read as that shard's seal with its header
    gone ('cannot be verified') or its other tensors missing ('set record cannot be trusted'), exit 2, the tensor
    missing. It is a file added to the set holding a moved tensor: found there (exit 1), put back by recover, the
    file left out."""
    rng = np.random.default_rng(5)
    shards = {
        s: {f"layers.{i}.weight": helpers.random_tensor(rng, np.float32, shape), f"layers.{i}.norm": rng.random(64)}
        for i, s in enumerate(SHARDS)
    }
    sealed = tmp_path / "sealed"
    sharded.seal_dir(helpers.write_checkpoint(tmp_path / "ckpt", shards), sealed, key, workers=1)
    pristine = {s: (sealed / s).read_bytes() for s in SHARDS}
    new, name = "model-00004-of-00004.safetensors", "layers.0.weight"
    _moved_into_new_file(sealed, name, SHARDS[0])
    rc, out, err = helpers.run_cli(["verify", sealed, "--key", key_file, "--json"])
    rep = json.loads(out)
    assert rc == 1 and err == "" and rep["recoverable"], (out, err)
    assert rep["tensors"][name]["issues"] == [f"moved to shard '{new}'"] and rep["tampered_tensors"] == [name], rep
    assert rep["extra_tensors"] == [f"{new}:adapter.weight"], rep
    added = [m for m in rep["metadata_issues"] if f"shard '{new}'" in m and "moved or copied into it" in m]
    assert len(added) == 1 and "not part of the sealed set" in added[0], rep["metadata_issues"]
    assert not any("cannot be" in m or "set record" in m for m in rep["metadata_issues"]), rep["metadata_issues"]
    rc, out, err = helpers.run_cli(["recover", sealed, tmp_path / "fixed", "--key", key_file])
    assert rc == 0 and err == "" and f"shard '{new}', added to the set, was left out" in out, (out, err)
    assert {p.name: p.read_bytes() for p in (tmp_path / "fixed").glob("*.safetensors")} == pristine
    t, _ = helpers.read_st(sealed / new)
    t[name].reshape(-1)[:] = 0.5  # not its data any more: no copy taken, the tensor lost (exit 2), the file added
    helpers.write_st(sealed / new, t)
    rep2 = sharded.verify_dir(sealed, key, workers=1)
    assert rep2.exit_code == 2 and "missing" in rep2.tensors[name].issues, rep2.tensors[name]
    assert [m for m in rep2.metadata_issues if f"shard '{new}'" in m and "added" in m], rep2.metadata_issues


def test_inspect_reports_an_index_that_disagrees_with_its_shards_as_seal_refuses_it(
    tmp_path: Path, sealed: Path, key_file: Path
) -> None:
    """seal refuses a folder whose index disagrees with its shards (exit 3, every difference listed); inspect said
    nothing of it, on that folder or a sealed one. It now lists each difference (text and JSON) and still exits 0;
    the tensors mapped to a shard missing from the folder are not judged (its own warning says it is missing)."""
    src = tmp_path / "ckpt"
    index = json.loads((src / sharded.INDEX).read_text())
    index["weight_map"]["layers.0.weight"] = SHARDS[1]
    del index["weight_map"]["layers.2.norm"]
    index["weight_map"]["ghost"] = SHARDS[2]
    (src / sharded.INDEX).write_text(json.dumps(index))
    rc, _, err = helpers.run_cli(["seal", src, tmp_path / "refused", "--key", key_file])
    assert rc == 3 and "disagrees with its shards" in err, err
    wrong = [
        f"tensor 'layers.0.weight' is mapped to '{SHARDS[1]}' but held by '{SHARDS[0]}'",
        f"tensor 'layers.2.norm' in shard '{SHARDS[2]}' is not in the index",
        f"tensor 'ghost' is mapped to '{SHARDS[2]}', which does not hold it",
    ]
    assert all(w in err for w in wrong), err
    rc, out, err = helpers.run_cli(["inspect", src, "--json"])
    assert rc == 0 and err == "" and json.loads(out)["index_disagreements"] == wrong, (out, err)
    rc, text, _ = helpers.run_cli(["inspect", src])
    assert rc == 0 and [line for line in text.splitlines() if "disagrees" in line] == [
        f"WARNING: the index disagrees with its shards: {w}; seal refuses the folder until the index is fixed"
        for w in wrong
    ], text
    assert "index_disagreements" not in sharded.inspect_dir(sealed)
    (sealed / sharded.INDEX).write_text(json.dumps(index))
    (sealed / SHARDS[1]).unlink()
    info = sharded.inspect_dir(sealed)
    assert info["index_disagreements"] == wrong and info["missing_shards"] == [SHARDS[1]], info  # none of layers.1
    rc, text, _ = helpers.run_cli(["inspect", sealed])
    assert rc == 0 and f"WARNING: the index disagrees with its shards: {wrong[2]}; run verify" in text, text


def test_a_file_sealed_with_another_key_holding_a_moved_tensor_is_named_as_that_keys(
    tmp_path: Path, key: paramseal.Key, other_key: paramseal.Key
) -> None:
    """A tensor carrying its shard's header copy, moved into a file sealed with another key (added to the index):
    the file read under the tensor's shard's seal, from that copy, was said to carry no seal of its own, the other
    key's header in its metadata not named. It is named (its fingerprint), the tensor found moved (exit 1)."""
    rng = np.random.default_rng(5)
    shards = {
        s: {f"layers.{i}.weight": helpers.random_tensor(rng, np.float32, (256, 256))} for i, s in enumerate(SHARDS)
    }
    sealed = tmp_path / "sealed"
    sharded.seal_dir(helpers.write_checkpoint(tmp_path / "ckpt", shards), sealed, key, workers=1)
    new, name = "model-00004-of-00004.safetensors", "layers.0.weight"
    theirs = _sealed_with(other_key, tmp_path, new, {"adapter.weight": np.ones((64, 8), np.float32)})
    t, m = helpers.read_st(theirs)
    moved = _moved_into_new_file(sealed, name, SHARDS[0])
    helpers.write_st(sealed / new, {**t, name: moved[name]}, m)  # the other key's file, the tensor moved into it
    rep = sharded.verify_dir(sealed, key, workers=1)
    assert rep.exit_code == 1 and rep.tensors[name].issues == (f"moved to shard '{new}'",), rep
    assert rep.extra_tensors == (f"{new}:adapter.weight",), rep
    said = [m for m in rep.metadata_issues if f"shard '{new}'" in m and "added" in m]
    assert len(said) == 1 and f"another key (fingerprint {other_key.fingerprint})" in said[0], rep.metadata_issues
    assert "moved or copied into it" in said[0] and "no seal of its own" not in said[0], said


def test_a_shard_resealed_with_another_key_holding_a_moved_tensor_is_that_keys_not_the_tensors_shards(
    tmp_path: Path, key: paramseal.Key, other_key: paramseal.Key
) -> None:
    """A shard re-sealed with another key, a tensor carrying another shard's header copy moved into it: read under
    that copy, the re-sealed shard was judged as the other shard (its tensors 'missing' as 'FILE:TENSOR', its own
    extra, 'set record cannot be trusted'), the other key not named. It is named as sealed with another key, as
    without the tensor (exit 2), and the moved tensor is found there."""
    rng = np.random.default_rng(5)
    shards = {
        s: {
            f"layers.{i}.weight": helpers.random_tensor(rng, np.float32, (256, 256)),
            f"layers.{i}.norm": rng.random(64),
        }
        for i, s in enumerate(SHARDS)
    }
    sealed = tmp_path / "sealed"
    sharded.seal_dir(helpers.write_checkpoint(tmp_path / "ckpt", shards), sealed, key, workers=1)
    name = "layers.0.weight"
    t0, m0 = helpers.read_st(sealed / SHARDS[0])
    moved = t0.pop(name)
    helpers.write_st(sealed / SHARDS[0], t0, m0)
    t1, m1 = helpers.read_st(_sealed_with(other_key, tmp_path, SHARDS[1], shards[SHARDS[1]]))
    helpers.write_st(sealed / SHARDS[1], {**t1, name: moved}, m1)
    index = json.loads((sealed / sharded.INDEX).read_text())
    index["weight_map"][name] = SHARDS[1]
    (sealed / sharded.INDEX).write_text(json.dumps(index))
    rep = sharded.verify_dir(sealed, key, workers=1)
    assert rep.exit_code == 2 and rep.tensors[name].issues == (f"moved to shard '{SHARDS[1]}'",), rep
    said = f"shard '{SHARDS[1]}' was sealed with another key (fingerprint {other_key.fingerprint})"
    assert any(m.startswith(said) for m in rep.metadata_issues), rep.metadata_issues
    assert not [n for n in rep.tensors if n.startswith(SHARDS[1])] and rep.extra_tensors == (), rep
    assert not any("set record" in m or m.startswith(f"{SHARDS[1]}:") for m in rep.metadata_issues), rep
    assert rep.tensors["layers.1.weight"].issues == (f"its shard '{SHARDS[1]}' cannot be checked",), rep
    rec = sharded.recover_dir(sealed, tmp_path / "fixed", key, workers=1)
    assert not rec.written and any(m.startswith(said) for m in rec.metadata_issues), rec


def test_shards_sealed_at_different_levels_give_no_one_level_and_a_note_naming_each(
    tmp_path: Path, sealed: Path, key: paramseal.Key, key_file: Path
) -> None:
    """A shard re-sealed on its own at another level (``seal --reseal`` of the one file, copied back: no set record,
    so tampered) gave the report the first shard's level, as if the set had one. Now ``level`` is "" as where the
    shards' headers differ with none checked, and a note names each level with its shards."""
    from paramseal import files

    files.seal_file(sealed / SHARDS[1], tmp_path / "re.safetensors", key, level="strong", reseal=True)
    shutil.copy(tmp_path / "re.safetensors", sealed / SHARDS[1])
    rc, out, err = helpers.run_cli(["verify", sealed, "--key", key_file, "--json"])
    rep = json.loads(out)
    assert rc == 2 and rep["status"] == "tampered" and rep["level"] == "", (out, err)
    want = f"shards sealed at different levels: standard ({SHARDS[0]}, {SHARDS[2]}); strong ({SHARDS[1]})"
    assert want in rep["notes"], rep
    report = sharded.verify_dir(sealed, key, workers=1)
    assert report.level == "" and want in report.notes, report
    report = sharded.recover_dir(sealed, tmp_path / "fixed", key, allow_partial=True, workers=1)
    assert report.level == "" and want in report.notes, report
    report = sharded.verify_dir(sealed, key, tensors="layers.1.*", workers=1)  # one level among the shards checked
    assert report.level == "strong" and not any("different levels" in n for n in report.notes), report
