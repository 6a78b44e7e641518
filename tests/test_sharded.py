"""Sharded Hugging Face checkpoints: each shard self-contained, the set and the index checked as a whole."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import helpers
import numpy as np
import pytest

import paramseal
from paramseal import files, sharded

SHARDS = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"]


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    """Three shards, an index, a config file: the Hugging Face layout."""
    rng = np.random.default_rng(5)
    shards = {
        shard: {
            f"layers.{i}.attn.weight": helpers.random_tensor(rng, np.float32, (96, 64)),
            f"layers.{i}.mlp.weight": helpers.random_tensor(rng, np.float32, (64, 80)),
            f"layers.{i}.norm.weight": helpers.random_tensor(rng, np.float16, (64,)),
        }
        for i, shard in enumerate(SHARDS)
    }
    folder = helpers.write_checkpoint(tmp_path / "ckpt", shards, {"format": "pt"}, {"total_size": 1})
    (folder / "config.json").write_text('{"model_type": "test"}')
    return folder


@pytest.fixture()
def sealed_ckpt(tmp_path: Path, checkpoint: Path, key_file: Path) -> Path:
    out = tmp_path / "sealed"
    rc, stdout, err = helpers.run_cli(["seal", checkpoint, out, "--key", key_file])
    assert rc == 0, err
    assert "3 shard(s)" in stdout
    return out


def test_an_empty_path_is_refused_not_read_as_the_current_folder(
    sealed_ckpt: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`verify "$MODEL"` with MODEL unset, run inside a sealed checkpoint: it verified that folder, exit 0."""
    monkeypatch.chdir(sealed_ckpt)
    rc, out, err = helpers.run_cli(["verify", "", "--key", key_file])
    assert rc == 3 and "IN is empty (an unset shell variable?)" in err and "intact" not in out, (out, err)
    rc, out, _ = helpers.run_cli(["verify", "", "--key", key_file, "--json"])  # the error document says so too
    assert rc == 3 and json.loads(out)["error"].endswith("IN is empty (an unset shell variable?); give a path")
    for argv in (["verify", ".", "--key", ""], ["recover", ".", "", "--key", key_file], ["keygen", ""]):
        rc, _, err = helpers.run_cli(argv)
        assert rc == 3 and "is empty (an unset shell variable?)" in err, (argv, err)
    assert helpers.run_cli(["verify", ".", "--key", key_file])[0] == 0  # '.' given on purpose still works


def test_the_api_takes_str_paths_as_files_does(tmp_path: Path, checkpoint: Path, key: paramseal.Key) -> None:
    """seal_dir('ckpt', 'out', key) as files.seal_file takes str: AttributeError 'str' has no 'iterdir'."""
    out, rec = str(tmp_path / "out"), str(tmp_path / "rec")
    assert sharded.seal_dir(str(checkpoint), out, key, workers=1) == SHARDS
    assert sharded.is_sharded(out) and sharded.inspect_dir(out)["sealed"]
    t, meta = helpers.read_st(Path(out) / SHARDS[1])
    t["layers.1.mlp.weight"].reshape(-1)[:64] = 0
    helpers.write_st(Path(out) / SHARDS[1], t, meta)
    report = sharded.verify_dir(out, key, workers=1)
    assert report.status == "tampered" and report.tampered_tensors == ["layers.1.mlp.weight"]
    assert report.seal_id == sharded.seal_id(out, key)
    report = sharded.recover_dir(out, rec, key, workers=1, expect_seal=report.seal_id)
    assert report.status == "recovered" and report.written
    assert sharded.verify_dir(rec, key, workers=1).status == "intact"


def _recover_rebuilds_the_index(
    sealed: Path, fixed: Path, name: str, sealed_map: dict[str, str], key: paramseal.Key, key_file: Path
) -> None:
    """recover writes ``fixed`` with the index ``name`` rebuilt as sealed, says so, and the result verifies."""
    rc, out, err = helpers.run_cli(["recover", sealed, fixed, "--key", key_file])
    assert rc == 0 and f"{name} was rebuilt" in out, (out, err)
    assert out.splitlines()[0].endswith("(no value needed restoring)"), out  # not "(0 values restored)"
    assert sorted(p.name for p in fixed.iterdir()) == sorted([*SHARDS, name, "config.json"])
    assert json.loads((fixed / name).read_text())["weight_map"] == sealed_map
    assert sharded.verify_dir(fixed, key, workers=1).status == "intact"


def test_sealed_checkpoint_keeps_the_layout_and_every_shard_verifies_alone(
    sealed_ckpt: Path, checkpoint: Path, key: paramseal.Key, key_file: Path
) -> None:
    assert sorted(p.name for p in sealed_ckpt.iterdir()) == sorted([*SHARDS, sharded.INDEX, "config.json"])
    assert (sealed_ckpt / sharded.INDEX).read_bytes() == (checkpoint / sharded.INDEX).read_bytes()
    salts = set()
    for shard in SHARDS:
        assert files.verify_file(sealed_ckpt / shard, key).status == "intact"  # self-contained
        _, meta = helpers.read_st(sealed_ckpt / shard)
        salts.add(json.loads(meta["paramseal"])["salt"])
        assert json.loads(meta[sharded.SET_KEY])["shard"] == shard
    assert len(salts) == 3  # independent seals
    rc, out, _ = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file, "--json"])
    assert rc == 0 and json.loads(out)["status"] == "intact"


def test_a_flipped_bit_in_one_shard_is_located_and_recovered(tmp_path: Path, sealed_ckpt: Path, key_file: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(sealed_ckpt, bad)
    t, meta = helpers.read_st(bad / SHARDS[1])
    helpers.write_st(bad / SHARDS[1], helpers.flip_bit(t, "layers.1.mlp.weight", 700, 29), meta)
    rc, out, _ = helpers.run_cli(["verify", bad, "--key", key_file, "--json"])
    rep = json.loads(out)
    assert rc == 1 and rep["tampered_tensors"] == ["layers.1.mlp.weight"]
    assert rep["tensors"]["layers.1.mlp.weight"]["tampered_blocks"] == [700 // 64]
    fixed = tmp_path / "fixed"
    rc, out, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file, "--json"])
    assert rc == 0, err
    assert json.loads(out)["tensors"]["layers.1.mlp.weight"]["restored"]["indices"] == [700]
    for shard in SHARDS:
        got, got_meta = helpers.read_st(fixed / shard)
        want, want_meta = helpers.read_st(sealed_ckpt / shard)
        helpers.assert_model_equal(got, want)
        assert got_meta == want_meta
    assert (fixed / "config.json").exists()


def test_recover_json_says_whether_the_folder_was_written(tmp_path: Path, sealed_ckpt: Path, key_file: Path) -> None:
    """Exit 2 is a partial folder written (--allow-partial) or none: the JSON says which, as for one file."""
    bad = tmp_path / "bad"
    shutil.copytree(sealed_ckpt, bad)
    t, meta = helpers.read_st(bad / SHARDS[1])
    helpers.write_st(bad / SHARDS[1], {n: np.zeros_like(a) for n, a in t.items()}, meta)
    fixed = tmp_path / "fixed"
    for extra, written in (([], False), (["--allow-partial"], True)):
        rc, out, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file, "--json", *extra])
        d = json.loads(out)
        assert rc == 2 and fixed.exists() == written and d["status"] == "unrecoverable", err
        assert d["written"] is written and d["output"] == (str(fixed) if written else None)


def test_recover_text_says_restored_values_were_not_written_when_the_folder_was_not(
    tmp_path: Path, sealed_ckpt: Path, key_file: Path
) -> None:
    """Exit 2 without --allow-partial writes no folder: a shard's restorable values must not read as restored."""
    bad = tmp_path / "bad"
    shutil.copytree(sealed_ckpt, bad)
    t, meta = helpers.read_st(bad / SHARDS[1])
    helpers.write_st(bad / SHARDS[1], {n: np.zeros_like(a) for n, a in t.items()}, meta)  # past any code's reach
    t, meta = helpers.read_st(bad / SHARDS[0])
    helpers.write_st(bad / SHARDS[0], helpers.flip_bit(t, "layers.0.mlp.weight", 700, 29), meta)  # restorable
    fixed = tmp_path / "fixed"
    rc, unwritten, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file])
    assert rc == 2 and not fixed.exists() and "nothing written" in unwritten.splitlines()[0], (unwritten, err)
    why = ", not written (--allow-partial writes them)"
    assert f"layers.0.mlp.weight: 1 tampered block(s): 10; could restore 1 value(s){why}: [700] bits 29" in unwritten
    assert "restored" not in unwritten, unwritten
    rc, written, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file, "--allow-partial"])
    assert rc == 2 and fixed.exists() and "restored 1 value(s): [700] bits 29" in written, (written, err)
    # the tensors' lines word for word as when written (a note on what was copied comes only with a folder)
    lines = [ln.replace("could restore", "restored").replace(why, "") for ln in unwritten.splitlines()[1:]]
    tensors = [ln for ln in lines if not ln.startswith("  note:")]
    assert len(tensors) == 4 and tensors == [ln for ln in written.splitlines()[1:] if ln in tensors], written


def test_recover_dir_report_says_restorable_values_were_not_written_when_the_folder_was_not(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key
) -> None:
    """A library caller's report.summary() said "restored" for values in no folder (only the CLI passed written)."""
    bad = tmp_path / "bad"
    shutil.copytree(sealed_ckpt, bad)
    t, meta = helpers.read_st(bad / SHARDS[1])
    helpers.write_st(bad / SHARDS[1], {n: np.zeros_like(a) for n, a in t.items()}, meta)
    t, meta = helpers.read_st(bad / SHARDS[0])
    helpers.write_st(bad / SHARDS[0], helpers.flip_bit(t, "layers.0.mlp.weight", 700, 29), meta)
    rep = sharded.recover_dir(bad, tmp_path / "fixed", key, workers=1)
    assert not rep.written and rep.restored_count == 1 and not (tmp_path / "fixed").exists()
    assert "could restore 1 value(s), not written" in rep.summary() and "restored" not in rep.summary()
    rep = sharded.recover_dir(bad, tmp_path / "fixed", key, allow_partial=True, workers=1)
    assert rep.written and (tmp_path / "fixed").is_dir() and "restored 1 value(s): [700] bits 29" in rep.summary()


def test_recover_dir_of_an_intact_folder_copies_it_and_says_written_as_recover_file_does(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key
) -> None:
    """An intact model is written (copied), as recover_file writes an intact file: report.written says so."""
    one = files.recover_file(sealed_ckpt / SHARDS[0], tmp_path / "one.safetensors", key)
    assert one.report.status == "intact" and one.report.written and one.path is not None and one.path.is_file()
    rep = sharded.recover_dir(sealed_ckpt, tmp_path / "fixed", key, workers=1)
    assert rep.status == "intact" and rep.written and rep.exit_code == 0, rep.summary()
    assert sorted(p.name for p in (tmp_path / "fixed").iterdir()) == sorted(p.name for p in sealed_ckpt.iterdir())


def test_partial_verification_reads_only_the_shards_it_needs(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(sealed_ckpt, bad)
    t, meta = helpers.read_st(bad / SHARDS[2])
    helpers.write_st(bad / SHARDS[2], helpers.flip_bit(t, "layers.2.attn.weight", 3, 1), meta)
    opened: list[str] = []
    real = files.verify_file
    monkeypatch.setattr(files, "verify_file", lambda p, k, **kw: opened.append(Path(p).name) or real(p, k, **kw))
    rep = sharded.verify_dir(bad, key, tensors="layers.0.*", workers=1)
    assert rep.status == "intact" and opened == [SHARDS[0]]
    assert any("1 shard(s) checked, 2 not read" in n for n in rep.notes)
    whole = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert not whole.partial and rep.total_blocks == whole.total_blocks  # unread shards still count in the total
    assert rep.checked_blocks == files.verify_file(bad / SHARDS[0], key).total_blocks < whole.total_blocks
    rep = sharded.verify_dir(bad, key, tensors="*.attn.weight", workers=1)
    assert rep.status == "tampered" and rep.tampered_tensors == ["layers.2.attn.weight"]


def test_shards_swapped_or_from_another_seal_are_caught(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key: paramseal.Key
) -> None:
    swapped = tmp_path / "swapped"
    shutil.copytree(sealed_ckpt, swapped)
    (swapped / SHARDS[0]).rename(swapped / "tmp")
    (swapped / SHARDS[1]).rename(swapped / SHARDS[0])
    (swapped / "tmp").rename(swapped / SHARDS[1])
    rep = sharded.verify_dir(swapped, key, workers=1)
    assert rep.status == "tampered" and rep.exit_code == 1  # the whole set is there: recover renames them back
    assert any(f"file '{SHARDS[0]}' holds sealed shard '{SHARDS[1]}'" in m for m in rep.metadata_issues)
    (swapped / SHARDS[2]).unlink()  # and with a shard gone, not every shard can be placed: as before
    rep = sharded.verify_dir(swapped, key, workers=1)
    assert rep.status == "tampered" and rep.exit_code == 2
    assert any(f"shard '{SHARDS[0]}' was sealed as '{SHARDS[1]}'" in m for m in rep.metadata_issues)

    other = tmp_path / "other"
    sharded.seal_dir(checkpoint, other, key, workers=1)  # the same weights, sealed again: another set
    mixed = tmp_path / "mixed"
    shutil.copytree(sealed_ckpt, mixed)
    shutil.copy(other / SHARDS[2], mixed / SHARDS[2])
    rep = sharded.verify_dir(mixed, key, workers=1)
    assert rep.status == "tampered" and any("different sealed sets" in m for m in rep.metadata_issues)
    # the foreign shard is named apart from the others (it was not: only the count of sets was given)
    (msg,) = [m for m in rep.metadata_issues if "different sealed sets" in m]
    assert msg.endswith(f"'{SHARDS[0]}', '{SHARDS[1]}'; '{SHARDS[2]}')"), msg


def test_an_index_that_disagrees_with_the_shards_is_reported(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key, key_file: Path
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(sealed_ckpt, bad)
    idx = json.loads((bad / sharded.INDEX).read_text())
    idx["weight_map"]["layers.0.attn.weight"] = SHARDS[1]
    (bad / sharded.INDEX).write_text(json.dumps(idx))
    rep = sharded.verify_dir(bad, key, workers=1)
    assert any("maps tensor 'layers.0.attn.weight' to shard" in m for m in rep.metadata_issues)
    (bad / sharded.INDEX).write_text("{not json")  # sealed shards: an index lost, not a bad input
    rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file])
    assert rc == 1 and "not a valid safetensors index" in out and err == ""


def test_a_deleted_shard_is_tampering_not_a_bad_input(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key_file: Path
) -> None:
    (sealed_ckpt / SHARDS[1]).unlink()
    rc, out, err = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file])
    assert rc == 2 and f"shard '{SHARDS[1]}' named in the index is missing" in out and err == ""
    rc, out, _ = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file, "--tensors", "layers.1.*", "--json"])
    assert rc == 2 and any("missing" in m for m in json.loads(out)["metadata_issues"])
    rc, _, _ = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file, "--tensors", "layers.0.*"])
    assert rc == 0  # the shards checked are intact; the deleted one was not asked for
    rc, out, _ = helpers.run_cli(["recover", sealed_ckpt, tmp_path / "fixed", "--key", key_file])
    assert rc == 2 and not (tmp_path / "fixed").exists()
    assert "(0 values" not in out and "nothing written" in out, out  # a whole shard's values are lost
    (checkpoint / SHARDS[1]).unlink()  # before sealing, the same folder is a bad input
    rc, _, err = helpers.run_cli(["seal", checkpoint, tmp_path / "s2", "--key", key_file])
    assert rc == 3 and "does not exist" in err
    for s in (SHARDS[0], SHARDS[2]):  # every shard gone: still tampering, reported shard by shard
        (sealed_ckpt / s).unlink()
    rc, out, _ = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file, "--json"])
    assert rc == 2 and sum("missing from the folder" in m for m in json.loads(out)["metadata_issues"]) == 3
    rc, _, _ = helpers.run_cli(["recover", sealed_ckpt, tmp_path / "fixed", "--key", key_file])
    assert rc == 2 and not (tmp_path / "fixed").exists()


def test_bits_past_strong_warns_for_a_sharded_checkpoint_too(tmp_path: Path, checkpoint: Path, key_file: Path) -> None:
    rc, _, err = helpers.run_cli(["seal", checkpoint, tmp_path / "s", "--key", key_file, "--bits", "6"])
    assert rc == 0 and "warning: k=6 changes F16 weights" in err and "F32" not in err  # F16 strong is k=4


def test_seal_notes_the_shards_whose_weights_hold_no_header_copy(tmp_path: Path, key_file: Path) -> None:
    """A folder seal said nothing of shards too small for a header copy, as a file seal does; it names them, once."""
    rng = np.random.default_rng(7)
    small, big = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    for name, sizes, bare in (("mixed", (6_000, 300_000), [small]), ("large", (300_000, 300_000), [])):
        ckpt = helpers.write_checkpoint(
            tmp_path / name,
            {
                small: {"a": rng.standard_normal(sizes[0]).astype(np.float32)},
                big: {"b": rng.standard_normal(sizes[1]).astype(np.float32)},
            },
        )
        out = tmp_path / f"{name}-sealed"
        rc, _, err = helpers.run_cli(["seal", ckpt, out, "--key", key_file])
        assert rc == 0, err
        for shard in (small, big):
            carriers = files.inspect_file(out / shard)["seal"]["header_copies_in_weights"]
            assert (carriers == []) is (shard in bare)
        assert err.count("no copy of the seal header fits") == (1 if bare else 0), err
        if bare:
            assert f"shard(s) '{small}' (" in err and big not in err
            assert "keep a copy of those sealed shards" in err and "--header-from its copy" in err


def test_an_unreadable_file_beside_the_shards_is_an_input_error(
    tmp_path: Path, checkpoint: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    real = shutil.copy2

    def copy2(src: object, dst: object) -> object:
        if Path(str(src)).name == "config.json":
            raise PermissionError(errno.EACCES, "Permission denied", str(src))
        return real(src, dst)

    monkeypatch.setattr(shutil, "copy2", copy2)
    rc, _, err = helpers.run_cli(["seal", checkpoint, tmp_path / "s", "--key", key_file])
    assert rc == 3 and f"cannot read '{checkpoint / 'config.json'}'" in err and "cannot write" not in err
    # sorted: a folder lists in no set order (ext4 by name hash, tmpfs newest first)
    assert not (tmp_path / "s").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "test.key"]


def test_parallel_seal_and_unrecoverable_recover_write_nothing(
    tmp_path: Path, checkpoint: Path, key: paramseal.Key, key_file: Path
) -> None:
    out = tmp_path / "par"
    sharded.seal_dir(checkpoint, out, key, workers=2)  # a real process pool
    assert sharded.verify_dir(out, key, workers=2).status == "intact"
    rc, _, err = helpers.run_cli(["seal", checkpoint, out, "--key", key_file])
    assert rc == 3 and "already exists" in err
    t, meta = helpers.read_st(out / SHARDS[0])
    for name in t:  # destroy the whole shard: beyond any capacity
        t[name] = np.zeros_like(t[name])
    helpers.write_st(out / SHARDS[0], t, meta)
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, _, _ = helpers.run_cli(["recover", out, tmp_path / "fixed", "--key", key_file])
    assert rc == 2 and not (tmp_path / "fixed").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary folder left behind


def test_inspect_describes_a_sharded_checkpoint(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key: paramseal.Key
) -> None:
    rc, out, err = helpers.run_cli(["inspect", checkpoint, "--json"])
    assert rc == 0, err
    plain = json.loads(out)
    assert plain["shards"] == 3 and plain["tensors"] == 9 and not plain["sealed"]
    assert plain["parameters"] == {"F32": 3 * (96 * 64 + 64 * 80), "F16": 3 * 64}
    assert list(plain["levels"]) == ["light", "standard", "strong"]
    assert plain["levels"]["standard"]["F32"]["k"] == 8
    rc, out, _ = helpers.run_cli(["inspect", sealed_ckpt, "--json"])
    info = json.loads(out)
    assert rc == 0 and info["sealed"] and info["sealed_shards"] == 3 and info["mismatched_shards"] == []
    assert info["seal"]["level"] == "standard" and info["seal"]["key_fingerprint"] == key.fingerprint
    # one shard replaced by its unsealed original: named, in JSON and in text
    shutil.copy(checkpoint / SHARDS[1], sealed_ckpt / SHARDS[1])
    rc, out, _ = helpers.run_cli(["inspect", sealed_ckpt, "--json"])
    info = json.loads(out)
    assert not info["sealed"] and info["sealed_shards"] == 2 and info["mismatched_shards"] == [SHARDS[1]]
    rc, text, _ = helpers.run_cli(["inspect", sealed_ckpt])
    assert rc == 0 and "in 3 shards (2 sealed)" in text and SHARDS[1] in text


def test_inspect_of_a_checkpoint_with_a_shards_header_emptied_names_that_shard(sealed_ckpt: Path) -> None:
    """It was exit 3 with 'the ParamSeal header is not valid JSON: Expecting value: line 1 column 1', no shard named."""
    t, meta = helpers.read_st(sealed_ckpt / SHARDS[1])
    helpers.write_st(sealed_ckpt / SHARDS[1], t, {**meta, "paramseal": ""})
    said = f"'{sealed_ckpt / SHARDS[1]}': the ParamSeal header in the file's metadata is malformed (it is empty)"
    rc, out, err = helpers.run_cli(["inspect", sealed_ckpt, "--json"])
    info = json.loads(out)
    assert (
        rc == 0 and list(info["shard_warnings"]) == [SHARDS[1]] and info["shard_warnings"][SHARDS[1]].startswith(said)
    )
    assert info["sealed_shards"] == 2 and info["mismatched_shards"] == [SHARDS[1]]
    rc, out, err = helpers.run_cli(["inspect", sealed_ckpt])
    assert rc == 0 and f"WARNING: {said}" in out and "line 1 column" not in out + err, (out, err)


def test_an_index_naming_no_shards_is_exit_3(tmp_path: Path, key_file: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / sharded.INDEX).write_text('{"weight_map": {}}')
    for args in (["inspect", folder], ["verify", folder, "--key", key_file]):
        rc, _, err = helpers.run_cli(args)
        assert rc == 3 and "names no shards" in err and "Traceback" not in err


def test_an_index_that_is_no_json_object_says_so(checkpoint: Path) -> None:
    """A list or a string was reported in Python's words: 'list indices must be integers or slices, not str'."""
    for text, kind in (("[1, 2]", "list"), ('"weights"', "str")):
        (checkpoint / sharded.INDEX).write_text(text)
        rc, _, err = helpers.run_cli(["inspect", checkpoint])
        assert rc == 3 and f"it holds a JSON {kind}, not an object" in err and "indices" not in err, err


def test_an_index_or_set_record_nested_too_deep_for_json_is_no_traceback(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key_file: Path
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    idx = (checkpoint / sharded.INDEX).read_text()
    (checkpoint / sharded.INDEX).write_text(idx[:-1] + f', "x": {deep}}}')
    for args in (["inspect", checkpoint], ["verify", checkpoint, "--key", key_file]):
        rc, _, err = helpers.run_cli(args)
        assert rc == 3 and "not a valid safetensors index" in err and "Traceback" not in err, err
    rc, _, err = helpers.run_cli(["seal", checkpoint, tmp_path / "out", "--key", key_file])
    assert rc == 3 and not (tmp_path / "out").exists(), err
    # a shard's set record is read (unauthenticated) to find the shards: an edited one is a metadata edit
    tensors, meta = helpers.read_st(sealed_ckpt / SHARDS[0])
    helpers.write_st(sealed_ckpt / SHARDS[0], tensors, {**meta, "paramseal_set": deep})
    rc, out, err = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file])
    assert rc == 1 and "paramseal_set" in out and "Traceback" not in err, (out, err)


def _edit_index(folder: Path, edit: object) -> dict[str, str]:
    """Apply ``edit`` to the index's weight_map; returns the weight_map as sealed."""
    idx = json.loads((folder / sharded.INDEX).read_text())
    sealed_map = dict(idx["weight_map"])
    edit(idx["weight_map"])  # type: ignore[operator]
    (folder / sharded.INDEX).write_text(json.dumps(idx))
    return sealed_map


def test_a_tensor_dropped_from_the_index_is_tampering_and_recover_rebuilds_the_index(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key, key_file: Path
) -> None:
    sealed_map = _edit_index(sealed_ckpt, lambda wm: wm.pop("layers.2.mlp.weight"))
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.status == "tampered" and rep.exit_code == 1  # the shards are whole: recover can rebuild the index
    assert any(
        "holds sealed tensor 'layers.2.mlp.weight', which the index does not list" in m for m in rep.metadata_issues
    )
    rep = sharded.verify_dir(sealed_ckpt, key, tensors="layers.2.mlp.*", workers=1)
    assert rep.exit_code == 1 and any("'layers.2.mlp.weight'" in m for m in rep.metadata_issues)
    fixed = tmp_path / "fixed"
    rep = sharded.recover_dir(sealed_ckpt, fixed, key, workers=1)
    assert rep.written and rep.status == "recovered" and any("rebuilt" in n for n in rep.notes)
    rebuilt = json.loads((fixed / sharded.INDEX).read_text())
    size = sum(a.nbytes for s in SHARDS for a in helpers.read_st(fixed / s)[0].values())
    assert rebuilt["weight_map"] == sealed_map and rebuilt["metadata"] == {"total_size": size}  # not the index's 1
    assert sharded.verify_dir(fixed, key, workers=1).status == "intact"
    # every entry of a shard gone: the shard is still found through the set record, and put back
    _edit_index(sealed_ckpt, lambda wm: [wm.pop(n) for n in [n for n, f in wm.items() if f == SHARDS[1]]])
    rc, out, _ = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file])
    assert rc == 1 and f"shard '{SHARDS[1]}' of the sealed set is missing from the index" in out
    rep = sharded.recover_dir(sealed_ckpt, tmp_path / "fixed2", key, workers=1)
    assert rep.written and json.loads((tmp_path / "fixed2" / sharded.INDEX).read_text())["weight_map"] == sealed_map
    assert files.verify_file(tmp_path / "fixed2" / SHARDS[1], key).status == "intact"


def test_with_tensors_a_swapped_shard_or_a_misplaced_tensor_is_tampering_not_a_bad_pattern(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key
) -> None:
    swapped = tmp_path / "swapped"
    shutil.copytree(sealed_ckpt, swapped)
    (swapped / SHARDS[0]).rename(swapped / "tmp")
    (swapped / SHARDS[2]).rename(swapped / SHARDS[0])
    (swapped / "tmp").rename(swapped / SHARDS[2])
    rep = sharded.verify_dir(swapped, key, tensors="layers.0.*", workers=1)
    assert rep.exit_code == 1 and rep.tampered_tensors == [] and "layers.0.attn.weight" in rep.tensors
    assert any(f"file '{SHARDS[2]}' holds sealed shard '{SHARDS[0]}'" in m for m in rep.metadata_issues)
    _edit_index(sealed_ckpt, lambda wm: wm.update({"layers.2.attn.weight": SHARDS[0]}))
    rep = sharded.verify_dir(sealed_ckpt, key, tensors="layers.2.attn.*", workers=1)
    assert rep.exit_code == 1 and rep.partial
    assert any(f"maps tensor 'layers.2.attn.weight' to shard '{SHARDS[0]}'" in m for m in rep.metadata_issues)
    assert any(f"shard '{SHARDS[2]}' holds sealed tensor 'layers.2.attn.weight'" in m for m in rep.metadata_issues)


def test_a_tensor_moved_to_another_shard_is_said_to_be_gone_from_its_sealed_shard(
    sealed_ckpt: Path, key: paramseal.Key
) -> None:
    """Re-sharded (as save_pretrained does): the index and the files agree, but not with the sealed set.
    The shard sealed with the tensor no longer holds it, and must not be said to."""
    name = "layers.2.attn.weight"
    helpers.move_tensor(name, sealed_ckpt / SHARDS[2], sealed_ckpt / SHARDS[1])
    _edit_index(sealed_ckpt, lambda wm: wm.update({name: SHARDS[1]}))
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code != 0
    said = [m for m in rep.metadata_issues if f"shard '{SHARDS[2]}'" in m and f"'{name}'" in m]
    assert said and not any("holds sealed tensor" in m for m in said)
    assert any(f"was sealed with, and no longer holds, sealed tensor '{name}'" in m for m in said)


def test_an_unreadable_shard_is_reported_and_the_others_still_checked(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key_file: Path
) -> None:
    t, meta = helpers.read_st(sealed_ckpt / SHARDS[2])
    helpers.write_st(sealed_ckpt / SHARDS[2], helpers.flip_bit(t, "layers.2.mlp.weight", 5, 30), meta)
    shutil.copy(checkpoint / SHARDS[0], sealed_ckpt / SHARDS[0])  # replaced by an unsealed file
    data = (sealed_ckpt / SHARDS[1]).read_bytes()
    (sealed_ckpt / SHARDS[1]).write_bytes(data[: len(data) // 2])  # cut short
    rc, out, err = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file, "--json"])
    rep = json.loads(out)
    assert rc == 2 and err == ""
    assert any(
        f"shard '{SHARDS[0]}' cannot be verified" in m and "no ParamSeal header" in m for m in rep["metadata_issues"]
    )
    assert any(f"shard '{SHARDS[1]}' cannot be verified" in m and "truncated" in m for m in rep["metadata_issues"])
    assert "layers.2.mlp.weight" in rep["tampered_tensors"]  # the readable shard was still checked
    assert "layers.0.attn.weight" in rep["tampered_tensors"] and "layers.1.norm.weight" in rep["tampered_tensors"]
    rc, _, _ = helpers.run_cli(["recover", sealed_ckpt, tmp_path / "fixed", "--key", key_file])
    assert rc == 2 and not (tmp_path / "fixed").exists()
    other = tmp_path / "other.key"
    assert helpers.run_cli(["keygen", other])[0] == 0
    rc, _, err = helpers.run_cli(["verify", sealed_ckpt, "--key", other])
    assert rc == 3 and "key does not match" in err  # a wrong key is still a bad input


def test_subfolders_are_copied_and_the_output_folder_gets_the_usual_mode(
    tmp_path: Path, checkpoint: Path, key: paramseal.Key
) -> None:
    import os

    (checkpoint / "1_Pooling").mkdir()
    (checkpoint / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big.bin").write_text("not part of the checkpoint")
    (checkpoint / "linked").symlink_to(outside, target_is_directory=True)
    out = tmp_path / "sealed"
    sharded.seal_dir(checkpoint, out, key, workers=1)
    assert (out / "1_Pooling" / "config.json").read_text() == '{"pooling_mode_mean_tokens": true}'
    assert (out / "linked").is_symlink() and os.readlink(out / "linked") == str(outside)  # kept as a link
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*SHARDS, sharded.INDEX, "config.json", "1_Pooling", "linked"]
    )
    mask = os.umask(0o022)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask
    rep = sharded.recover_dir(out, tmp_path / "fixed", key, workers=1)
    assert rep.written and (tmp_path / "fixed" / "1_Pooling" / "config.json").exists()


def test_a_missing_shard_names_its_tensors(sealed_ckpt: Path, key: paramseal.Key) -> None:
    (sealed_ckpt / SHARDS[1]).unlink()
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 2
    assert sorted(rep.tampered_tensors) == ["layers.1.attn.weight", "layers.1.mlp.weight", "layers.1.norm.weight"]
    assert "missing" in rep.tensors["layers.1.attn.weight"].issues[0]


def _fp32_and_fp16_shards(tmp_path: Path) -> Path:
    """An unsealed folder of two shards: an fp32 tensor 'a' and an fp16 tensor 'b'."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(1)
    helpers.write_st(folder / SHARDS[0], {"a": helpers.random_tensor(rng, np.float32, (64, 64))}, {})
    helpers.write_st(folder / SHARDS[1], {"b": helpers.random_tensor(rng, np.float16, (64, 64))}, {})
    (folder / sharded.INDEX).write_text(json.dumps({"weight_map": {"a": SHARDS[0], "b": SHARDS[1]}}))
    return folder


def test_inspect_merges_the_levels_of_every_shard(tmp_path: Path) -> None:
    folder = _fp32_and_fp16_shards(tmp_path)
    info = sharded.inspect_dir(folder)
    assert sorted(info["levels"]["standard"]) == ["F16", "F32"]


def test_inspect_does_not_flag_shards_whose_code_differs_by_dtype(tmp_path: Path, key_file: Path) -> None:
    """An fp16-only shard is sealed with lanes (paramseal/2), an fp32 one with irs (paramseal/3), in one run.

    inspect warned that they were 'sealed differently or not at all'.
    """
    folder = _fp32_and_fp16_shards(tmp_path)
    rc, _, err = helpers.run_cli(["seal", folder, tmp_path / "out", "--key", key_file])
    assert rc == 0, err
    each = {files.inspect_file(tmp_path / "out" / s)["seal"]["scheme"] for s in SHARDS[:2]}
    assert len(each) == 2  # the premise: the shards' schemes differ
    info = sharded.inspect_dir(tmp_path / "out")
    assert info["sealed"] and info["mismatched_shards"] == [] and info["seal"]["scheme"] == " + ".join(sorted(each))
    rc, text, _ = helpers.run_cli(["inspect", tmp_path / "out"])
    assert rc == 0 and "WARNING" not in text, text


@pytest.mark.parametrize(
    ("shards", "refused", "why"),
    [
        (  # one integer-only shard: seal names it; its dtype was simply missing from the levels listed
            {"a.safetensors": {"w": np.ones(1000, np.float32)}, "b.safetensors": {"i": np.arange(100)}},
            "b.safetensors",
            "it has no float tensors",
        ),
        (  # every shard refused: the heading 'what each level would give:' had nothing under it
            {"a.safetensors": {"n": np.full(100, np.nan, np.float32)}, "b.safetensors": {"i": np.arange(100)}},
            "a.safetensors",
            "its float tensors each hold at least one NaN or Inf value",
        ),
    ],
)
def test_inspect_of_a_folder_with_a_shard_seal_refuses_lists_no_level_and_names_that_shard(
    tmp_path: Path, key_file: Path, shards: dict[str, dict[str, np.ndarray]], refused: str, why: str
) -> None:
    """inspect listed levels for a folder that seal refuses (exit 3) for one of its shards."""
    folder = helpers.write_checkpoint(tmp_path / "ckpt", shards)
    rc, _, err = helpers.run_cli(["seal", folder, tmp_path / "out", "--key", key_file])
    assert rc == 3 and f"shard '{refused}'" in err, err
    info = sharded.inspect_dir(folder)
    assert info["levels"] == {} and info["cannot_seal"].startswith(f"shard '{refused}': {why}"), info
    assert info["per_shard"][refused]["cannot_seal"] == info["cannot_seal"]
    rc, text, _ = helpers.run_cli(["inspect", folder])
    assert rc == 0 and f"cannot be sealed: shard '{refused}': {why}" in text, text
    assert text.splitlines()[-1] == "not sealed; no level applies: seal refuses this model", text
    assert "what each level would give" not in text and "k=" not in text, text
    rc, out, _ = helpers.run_cli(["inspect", folder, "--json"])
    assert rc == 0 and json.loads(out)["levels"] == {}


def test_errors_name_the_output_folder_and_in_place_is_refused_for_folders(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from paramseal.errors import cannot_write

    for cmd, src in (("seal", checkpoint), ("recover", sealed_ckpt)):
        rc, _, err = helpers.run_cli([cmd, src, src, "--key", key_file, "--in-place"])
        assert rc == 3 and "--in-place works for single files only" in err

    def full(src: object, dst: Path, *a: object, **kw: object) -> object:
        raise cannot_write(dst, OSError(errno.ENOSPC, "No space left on device", str(dst)))

    monkeypatch.setattr(files, "seal_file", full)
    out = tmp_path / "out"
    with pytest.raises(paramseal.ParamSealError) as e:
        sharded.seal_dir(checkpoint, out, paramseal.Key.generate(), workers=1)
    assert f"cannot write '{out / SHARDS[0]}'" in str(e.value) and ".tmp" not in str(e.value)


def test_header_from_is_refused_for_a_folder_naming_what_to_give_instead(
    tmp_path: Path, sealed_ckpt: Path, key_file: Path
) -> None:
    """--header-from is one file's header: a folder as IN or as FILE is refused (exit 3), a shard alone takes one.

    A folder as FILE was called 'input ... a sharded checkpoint: use paramseal.sharded', which is the API's advice.
    """
    shard = sealed_ckpt / SHARDS[0]
    kept = shutil.copy(shard, tmp_path / "kept.safetensors")
    for argv in (
        ["verify", sealed_ckpt, "--key", key_file, "--header-from", kept],
        ["recover", sealed_ckpt, tmp_path / "out", "--key", key_file, "--header-from", kept],
    ):
        rc, out, err = helpers.run_cli(argv)
        assert rc == 3 and "drop --header-from to check the folder, or give one shard's file" in err, err
    for argv in (
        ["verify", shard, "--key", key_file, "--header-from", sealed_ckpt],
        ["recover", shard, tmp_path / "o.safetensors", "--key", key_file, "--header-from", sealed_ckpt],
    ):
        rc, out, err = helpers.run_cli(argv)
        assert rc == 3 and f"'{sealed_ckpt}' is a folder; a seal header" in err and "input" not in err, err
        assert "give one shard's file" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o.safetensors").exists()
    assert helpers.run_cli(["verify", shard, "--key", key_file, "--header-from", kept])[0] == 0


def test_a_shard_that_cannot_be_sealed_is_named(tmp_path: Path, checkpoint: Path, key_file: Path) -> None:
    t, meta = helpers.read_st(checkpoint / SHARDS[1])
    helpers.write_st(checkpoint / SHARDS[1], {n: np.full_like(a, np.nan) for n, a in t.items()}, meta)
    rc, _, err = helpers.run_cli(["seal", checkpoint, tmp_path / "out", "--key", key_file])
    assert rc == 3 and f"shard '{SHARDS[1]}'" in err and "NaN or Inf" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_an_index_that_disagrees_with_its_shards_is_refused_at_seal_time(
    tmp_path: Path, checkpoint: Path, key_file: Path
) -> None:
    """Sealing went ahead and the fresh seal failed verify (tampered) at once; every difference is listed."""
    index = json.loads((checkpoint / sharded.INDEX).read_text())
    del index["weight_map"]["layers.0.norm.weight"]  # held by shard 1, not listed
    index["weight_map"]["layers.1.mlp.weight"] = SHARDS[2]  # held by shard 2
    index["weight_map"]["ghost"] = SHARDS[0]  # held by none
    (checkpoint / sharded.INDEX).write_text(json.dumps(index))
    out = tmp_path / "out"
    rc, _, err = helpers.run_cli(["seal", checkpoint, out, "--key", key_file])
    assert rc == 3 and "disagrees with its shards" in err and "Traceback" not in err, err
    for name in ("layers.0.norm.weight", "layers.1.mlp.weight", "ghost"):
        assert f"'{name}'" in err
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_a_folder_output_named_like_a_model_file_is_refused(tmp_path: Path, checkpoint: Path, key_file: Path) -> None:
    """'seal ckpt out.safetensors' made a folder called out.safetensors, which no loader reads as one file."""
    rc, _, err = helpers.run_cli(["seal", checkpoint, tmp_path / "out.safetensors", "--key", key_file])
    assert rc == 3 and "named like a model file" in err and not (tmp_path / "out.safetensors").exists(), err


def test_with_tensors_a_shard_whose_header_does_not_authenticate_is_read_whole(
    sealed_ckpt: Path, key: paramseal.Key
) -> None:
    """A tampered shard, its header edited to seal other names and its tensor dropped from the index."""
    p = sealed_ckpt / SHARDS[1]
    t, meta = helpers.read_st(p)
    t["layers.1.attn.weight"] = np.full_like(t["layers.1.attn.weight"], 7.0)
    meta["paramseal"] = meta["paramseal"].replace("layers.1.attn", "layers.1.attX")  # no longer authentic
    helpers.write_st(p, t, meta)
    _edit_index(sealed_ckpt, lambda wm: wm.pop("layers.1.attn.weight"))
    rep = sharded.verify_dir(sealed_ckpt, key, tensors="layers.*.attn.weight", workers=1)
    assert rep.status == "tampered" and rep.exit_code == 2, rep.summary()


def test_a_foreign_shard_is_caught_even_when_its_metadata_was_also_edited(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key: paramseal.Key, key_file: Path
) -> None:
    """An edited metadata key must not switch the set check off (recover said 'recovered' with a foreign shard)."""
    rc, _, _ = helpers.run_cli(["seal", checkpoint, tmp_path / "other", "--key", key_file])  # same model, new seal
    t, meta = helpers.read_st(tmp_path / "other" / SHARDS[1])
    helpers.write_st(sealed_ckpt / SHARDS[1], t, {**meta, "note": "hi"})
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 2 and any("different sealed sets" in m for m in rep.metadata_issues), rep.summary()
    rep = sharded.recover_dir(sealed_ckpt, tmp_path / "fixed", key, workers=1)
    assert not rep.written and rep.status == "unrecoverable" and not (tmp_path / "fixed").exists()


def test_a_file_only_an_edited_set_record_lists_is_no_shard(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key
) -> None:
    p = sealed_ckpt / SHARDS[0]
    t, meta = helpers.read_st(p)
    rec = json.loads(meta["paramseal_set"])
    meta["paramseal_set"] = json.dumps({**rec, "shards": [*rec["shards"], "junk.safetensors"]})
    helpers.write_st(p, t, meta)
    helpers.write_st(sealed_ckpt / "junk.safetensors", {"x": np.ones(4, np.float32)})  # unsealed
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 1 and not any("junk" in m for m in rep.metadata_issues), rep.summary()
    assert any("'junk.safetensors' is not a shard" in n for n in rep.notes), rep.notes
    rep = sharded.recover_dir(sealed_ckpt, tmp_path / "fixed", key, workers=1)
    assert rep.written and rep.status == "recovered" and (tmp_path / "fixed" / "junk.safetensors").is_file()
    assert sharded.verify_dir(tmp_path / "fixed", key, workers=1).status == "intact"


def test_a_safetensors_file_that_is_no_shard_is_noted_not_tampering(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key, key_file: Path
) -> None:
    """A loader that globs *.safetensors would read a stray copy or an unsealed file: verify says so, exit 0."""
    assert not any("not a shard" in n for n in sharded.verify_dir(sealed_ckpt, key, workers=1).notes)
    strays = ["extra.safetensors", "model-00004-of-00003.safetensors"]
    shutil.copy(sealed_ckpt / SHARDS[0], sealed_ckpt / strays[1])  # a copy of a sealed shard, under a new name
    helpers.write_st(sealed_ckpt / strays[0], {"x": np.ones(4, np.float32)})  # unsealed
    rc, out, err = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file])
    assert rc == 0 and out.startswith("OK:"), (out, err)
    assert all(f"note: file '{f}' is not a shard" in out for f in strays), out
    rc, out, _ = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file, "--json"])
    rep = json.loads(out)
    assert rc == 0 and rep["status"] == "intact" and rep["metadata_issues"] == []
    assert [n.split("'")[1] for n in rep["notes"] if "not a shard" in n] == strays, rep["notes"]
    rc, out, _ = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file, "--tensors", "layers.0.*"])
    assert rc == 0 and all(f"file '{f}' is not a shard" in out for f in strays), out
    fixed = tmp_path / "fixed"
    rc, out, err = helpers.run_cli(["recover", sealed_ckpt, fixed, "--key", key_file])
    assert rc == 0 and all(f"file '{f}' is not a shard" in out for f in strays), (out, err)
    assert "recover copies it unchanged" in out and all((fixed / f).is_file() for f in strays)
    # a shard under another name (the set whole, renamed) is a shard, not a stray
    for f in strays:
        (sealed_ckpt / f).unlink()
    (sealed_ckpt / SHARDS[2]).rename(sealed_ckpt / "renamed.safetensors")
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 1 and not any("not a shard" in n for n in rep.notes), rep.summary()


def test_in_place_into_another_folder_is_refused_not_ignored(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key_file: Path
) -> None:
    for cmd, src in (("seal", checkpoint), ("recover", sealed_ckpt)):
        rc, _, err = helpers.run_cli([cmd, src, tmp_path / "out", "--key", key_file, "--in-place"])
        assert rc == 3 and "--in-place works for single files only" in err
        assert not (tmp_path / "out").exists()


def _pool_of(parent: subprocess.Popen[bytes], n: int) -> list[int]:
    """The pids of ``parent``'s ``n`` spawned pool workers, once all are running (Linux /proc)."""

    def workers() -> list[int]:
        found = []
        for d in Path("/proc").iterdir():
            try:
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (d / "cmdline").read_bytes()
            except (OSError, IndexError):
                continue
            if stat[1] == str(parent.pid) and b"spawn_main" in cmd:
                found.append(int(d.name))
        return found

    deadline = time.monotonic() + 60
    while len(pids := workers()) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(pids) == n
    return pids


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _sleeping_pool(**kw: Any) -> subprocess.Popen[bytes]:
    script = "import time; from paramseal import _shard_pool; _shard_pool._map(time.sleep, [(60,), (60,)], 2)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", script], env=env, **kw)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    """A parent killed outright (SIGKILL, the OOM killer) cannot stop its pool: each worker notices and exits.

    They waited on the pool's queue forever, each holding its memory (hundreds of MiB after a shard).
    """
    parent = _sleeping_pool()
    try:
        pids = _pool_of(parent, 2)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(map(_alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in pids if _alive(p)]
        for p in left:  # cleanup for a failing run: they would sleep on otherwise
            os.kill(p, signal.SIGKILL)
        assert left == []
    finally:
        if parent.poll() is None:
            parent.kill()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_ctrl_c_stops_the_pool_at_once_and_quietly() -> None:
    """Ctrl-C reaches the whole process group: each worker printed a KeyboardInterrupt traceback, and the
    parent (on SIGTERM too) waited for the shards being written to finish."""
    parent = _sleeping_pool(start_new_session=True, stderr=subprocess.PIPE, preexec_fn=helpers.default_signals)
    try:
        pids = _pool_of(parent, 2)
        t0 = time.monotonic()
        os.killpg(parent.pid, signal.SIGINT)
        _, err = parent.communicate(timeout=50)
        assert time.monotonic() - t0 < 20 and not any(map(_alive, pids))
        assert err.decode().count("Traceback") == 1 and "KeyboardInterrupt" in err.decode()  # the parent's own
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)


@pytest.mark.parametrize(
    "name", ["diffusion_pytorch_model.safetensors.index.json", "model.fp16.safetensors.index.json"]
)
def test_an_index_under_another_name_is_used_everywhere(
    tmp_path: Path, checkpoint: Path, key: paramseal.Key, key_file: Path, name: str
) -> None:
    (checkpoint / sharded.INDEX).rename(checkpoint / name)
    assert sharded.is_sharded(checkpoint)
    sealed = tmp_path / "sealed"
    rc, out, err = helpers.run_cli(["seal", checkpoint, sealed, "--key", key_file])
    assert rc == 0 and "3 shard(s)" in out, err
    assert sorted(p.name for p in sealed.iterdir()) == sorted([*SHARDS, name, "config.json"])
    assert (sealed / name).read_bytes() == (checkpoint / name).read_bytes()
    for shard in SHARDS:  # each set record names the index, so a lost one is rebuilt under its own name
        assert json.loads(helpers.read_st(sealed / shard)[1][sharded.SET_KEY])["index"] == name
    rc, out, _ = helpers.run_cli(["inspect", sealed, "--json"])
    assert rc == 0 and json.loads(out)["index"] == name and json.loads(out)["sealed_shards"] == 3
    rc, _, err = helpers.run_cli(["verify", sealed, "--key", key_file])
    assert rc == 0, err
    rc, _, err = helpers.run_cli(["verify", sealed, "--key", key_file, "--tensors", "nothing.*"])
    assert rc == 3 and f"'{sealed / name}'" in err and "close names" not in err
    rc, _, err = helpers.run_cli(["verify", sealed, "--key", key_file, "--tensors", "layers.1.mlp.wieght"])
    assert rc == 3 and "close names: 'layers.1.mlp.weight'" in err, err  # it said only "check the pattern"
    with pytest.raises(paramseal.UsageError, match="is a sharded checkpoint"):
        files.verify_file(sealed, key)
    # a wrong index is rebuilt under its own name, and the note names it
    idx = json.loads((sealed / name).read_text())
    sealed_map = dict(idx["weight_map"])
    idx["weight_map"].pop("layers.1.mlp.weight")
    (sealed / name).write_text(json.dumps(idx))
    rc, out, _ = helpers.run_cli(["verify", sealed, "--key", key_file])
    assert rc == 1 and "'layers.1.mlp.weight'" in out
    _recover_rebuilds_the_index(sealed, tmp_path / "fixed", name, sealed_map, key, key_file)
    # an index that disagrees with its shards is named at seal time
    (checkpoint / name).write_text(json.dumps({"weight_map": {**sealed_map, "ghost": SHARDS[0]}}))
    rc, _, err = helpers.run_cli(["seal", checkpoint, tmp_path / "s2", "--key", key_file])
    assert rc == 3 and f"'{checkpoint / name}' disagrees with its shards" in err


def test_a_folder_with_several_indexes_is_refused_naming_them(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key_file: Path
) -> None:
    variant = "model.fp16.safetensors.index.json"
    for folder in (checkpoint, sealed_ckpt):
        shutil.copy(folder / sharded.INDEX, folder / variant)
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in (
        ["seal", checkpoint, tmp_path / "out", "--key", key_file],
        ["verify", sealed_ckpt, "--key", key_file],
        ["recover", sealed_ckpt, tmp_path / "out", "--key", key_file],
        ["inspect", sealed_ckpt],
    ):
        rc, out, err = helpers.run_cli(args)
        assert rc == 3 and out == "" and "Traceback" not in err, (args, err)
        assert f"2 safetensors indexes ('{variant}', '{sharded.INDEX}')" in err and "folder of its own" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def _swap(folder: Path, a: str, b: str) -> None:
    (folder / a).rename(folder / "tmp")
    (folder / b).rename(folder / a)
    (folder / "tmp").rename(folder / b)


@pytest.mark.parametrize("flip", [False, True])
def test_swapped_shards_are_recovered_under_their_sealed_names_bit_exact(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key, key_file: Path, flip: bool
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(sealed_ckpt, bad)
    _swap(bad, SHARDS[0], SHARDS[1])
    if flip:  # the file named SHARDS[0] holds the sealed SHARDS[1], whose tensors are layers.1.*
        t, meta = helpers.read_st(bad / SHARDS[0])
        helpers.write_st(bad / SHARDS[0], helpers.flip_bit(t, "layers.1.mlp.weight", 700, 29), meta)
    rc, out, _ = helpers.run_cli(["verify", bad, "--key", key_file, "--json"])
    rep = json.loads(out)
    assert rc == 1 and rep["recoverable"], out
    assert rep["tampered_tensors"] == (["layers.1.mlp.weight"] if flip else [])
    for here, sealed_as in ((SHARDS[0], SHARDS[1]), (SHARDS[1], SHARDS[0])):
        assert any(f"file '{here}' holds sealed shard '{sealed_as}'" in m for m in rep["metadata_issues"]), rep
    fixed = tmp_path / "fixed"
    rc, out, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file])
    assert rc == 0 and f"file '{SHARDS[0]}' was written as '{SHARDS[1]}'" in out, (out, err)
    assert _digests(fixed) == _digests(sealed_ckpt)  # every file, index and config.json too
    rc, _, _ = helpers.run_cli(["verify", fixed, "--key", key_file])
    assert rc == 0
    assert sharded.verify_dir(bad, key, tensors="layers.1.*", workers=1).exit_code == 1


def test_verify_and_recover_json_say_which_file_held_each_swapped_shard(
    tmp_path: Path, sealed_ckpt: Path, key_file: Path
) -> None:
    """Shards swapped were said only in metadata_issues' text: a script had to parse the wording."""
    bad = tmp_path / "bad"
    shutil.copytree(sealed_ckpt, bad)
    _swap(bad, SHARDS[0], SHARDS[1])
    want = {SHARDS[0]: SHARDS[1], SHARDS[1]: SHARDS[0]}
    rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file, "--json"])
    rep = json.loads(out)
    assert rc == 1 and rep["moved_shards"] == want and rep["moved"] == {}, (out, err)
    assert list(rep).index("moved_shards") == list(rep).index("moved") + 1  # beside the tensors' moves
    fixed = tmp_path / "fixed"
    rc, out, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file, "--json"])
    rep = json.loads(out)
    assert rc == 0 and rep["written"] and rep["moved_shards"] == want, (out, err)
    for argv in (["verify", fixed], ["verify", sealed_ckpt / SHARDS[0]]):  # nothing moved, a single file too: empty
        rc, out, err = helpers.run_cli([*argv, "--key", key_file, "--json"])
        assert rc == 0 and json.loads(out)["moved_shards"] == {}, (out, err)


def _with_last_shard_renamed(tmp_path: Path, sealed_ckpt: Path) -> Path:
    """A copy of the sealed folder whose last shard is now 'renamed.safetensors'."""
    bad = tmp_path / "bad"
    shutil.copytree(sealed_ckpt, bad)
    (bad / SHARDS[2]).rename(bad / "renamed.safetensors")
    return bad


def test_a_shard_renamed_to_a_name_nothing_lists_is_found_and_put_back(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key, key_file: Path
) -> None:
    bad = _with_last_shard_renamed(tmp_path, sealed_ckpt)
    rc, out, _ = helpers.run_cli(["verify", bad, "--key", key_file])
    assert rc == 1 and f"file 'renamed.safetensors' holds sealed shard '{SHARDS[2]}'" in out, out
    fixed = tmp_path / "fixed"
    rc, _, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file])
    assert rc == 0 and _digests(fixed) == _digests(sealed_ckpt), err
    assert sharded.verify_dir(fixed, key, workers=1).status == "intact"


def test_a_shard_claimed_by_two_files_is_not_guessed(tmp_path: Path, sealed_ckpt: Path, key_file: Path) -> None:
    (sealed_ckpt / SHARDS[2]).rename(sealed_ckpt / "a.safetensors")
    shutil.copy(sealed_ckpt / "a.safetensors", sealed_ckpt / "b.safetensors")
    rc, out, _ = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file])
    assert rc == 2 and f"shard '{SHARDS[2]}' named in the index is missing" in out and "holds sealed" not in out
    rc, _, _ = helpers.run_cli(["recover", sealed_ckpt, tmp_path / "fixed", "--key", key_file])
    assert rc == 2 and not (tmp_path / "fixed").exists()


def test_an_index_renamed_with_its_shard_is_not_said_to_name_a_file_the_folder_lacks(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key, key_file: Path
) -> None:
    """The index sends the renamed shard's tensors to its new name: a file there, said to be 'neither in the folder'."""
    bad = _with_last_shard_renamed(tmp_path, sealed_ckpt)
    _edit_index(bad, lambda wm: wm.update({n: "renamed.safetensors" for n, s in wm.items() if s == SHARDS[2]}))
    rc, out, _ = helpers.run_cli(["verify", bad, "--key", key_file])
    assert rc == 1 and f"file 'renamed.safetensors' holds sealed shard '{SHARDS[2]}'" in out, out
    (msg,) = [m for m in out.splitlines() if "the index names shard 'renamed.safetensors'" in m]
    assert "neither in the folder" not in msg and "not in the sealed set" in msg, msg
    fixed = tmp_path / "fixed"
    rc, _, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file])
    assert rc == 0 and _digests(fixed).keys() == _digests(sealed_ckpt).keys(), err
    assert sharded.verify_dir(fixed, key, workers=1).status == "intact"


def _total_size(folder: Path) -> int:
    return sum(t.nbytes for s in SHARDS for t in helpers.read_st(folder / s)[0].values())


@pytest.mark.parametrize(
    ("how", "text", "says"),
    [
        ("deleted", None, f"the index '{sharded.INDEX}' is missing from the folder"),
        ("malformed", '{"weight_map": ', "is not a valid safetensors index"),
        ("emptied", '{"metadata": {}, "weight_map": {}}', "names no shards"),
        ("a list", "[1, 2]", "it holds a JSON list, not an object"),
    ],
)
def test_a_lost_index_is_tampering_and_recover_rebuilds_it_from_the_shards(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key: paramseal.Key, key_file: Path,
    how: str, text: str | None, says: str,
) -> None:  # fmt: skip
    bad = tmp_path / "bad"
    shutil.copytree(sealed_ckpt, bad)
    if text is None:
        (bad / sharded.INDEX).unlink()
    else:
        (bad / sharded.INDEX).write_text(text)
    assert sharded.is_sharded(bad)
    rc, out, err = helpers.run_cli(["verify", bad, "--key", key_file, "--json"])
    rep = json.loads(out)
    assert rc == 1 and rep["status"] == "tampered" and rep["recoverable"] and err == "", (out, err)
    assert [m for m in rep["metadata_issues"] if says in m and "recover rebuilds it" in m] == rep["metadata_issues"]
    assert rep["checked_blocks"] == rep["total_blocks"] == sharded.verify_dir(sealed_ckpt, key, workers=1).total_blocks
    rc, info, err = helpers.run_cli(["inspect", bad, "--json"])
    assert rc == 0 and json.loads(info)["index"] is None and json.loads(info)["sealed_shards"] == len(SHARDS), err
    assert "'paramseal recover' rebuilds it" in json.loads(info)["index_problem"]
    rc, _, err = helpers.run_cli(["seal", bad, tmp_path / "again", "--key", key_file, "--reseal"])
    assert rc == 3 and "'paramseal recover' rebuilds the index" in err and not (tmp_path / "again").exists()
    fixed = tmp_path / "fixed"
    rc, out, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file])
    assert rc == 0 and f"{sharded.INDEX} was rebuilt" in out and "other metadata" in out, (out, err)
    rebuilt = json.loads((fixed / sharded.INDEX).read_text())
    assert rebuilt == {
        "metadata": {"total_size": _total_size(sealed_ckpt)},  # the fixture's index said 1: recomputed
        "weight_map": json.loads((sealed_ckpt / sharded.INDEX).read_text())["weight_map"],
    }
    assert {n: d for n, d in _digests(fixed).items() if n != sharded.INDEX} == {
        n: d for n, d in _digests(sealed_ckpt).items() if n != sharded.INDEX
    }
    rc, _, _ = helpers.run_cli(["verify", fixed, "--key", key_file])
    assert rc == 0
    (bad / SHARDS[1]).unlink()  # a shard lost too: its weights are gone, nothing written
    rc, out, _ = helpers.run_cli(["verify", bad, "--key", key_file])
    assert rc == 2 and f"shard '{SHARDS[1]}' of the sealed set is missing from the folder" in out, out
    rc, _, _ = helpers.run_cli(["recover", bad, tmp_path / "fixed2", "--key", key_file])
    assert rc == 2 and not (tmp_path / "fixed2").exists()


def test_a_folder_of_unsealed_or_unrelated_files_without_an_index_is_still_a_bad_input(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key_file: Path
) -> None:
    """Only set records make a folder without an index a checkpoint; several sets are not guessed between."""
    (checkpoint / sharded.INDEX).unlink()
    assert not sharded.is_sharded(checkpoint)
    for args in (["verify", checkpoint, "--key", key_file], ["recover", checkpoint, tmp_path / "o", "--key", key_file],
                 ["inspect", checkpoint]):  # fmt: skip
        rc, _, err = helpers.run_cli(args)
        assert rc == 3 and "is a folder; a sharded checkpoint folder needs its index" in err, err
    other = tmp_path / "other"  # a second sealing of the same checkpoint
    shutil.copy(sealed_ckpt / sharded.INDEX, checkpoint / sharded.INDEX)
    rc, _, err = helpers.run_cli(["seal", checkpoint, other, "--key", key_file])
    assert rc == 0, err
    (sealed_ckpt / sharded.INDEX).unlink()
    shutil.copy(other / SHARDS[0], sealed_ckpt / "foreign.safetensors")
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in (
        ["verify", sealed_ckpt, "--key", key_file],
        ["recover", sealed_ckpt, tmp_path / "o", "--key", key_file],
    ):
        rc, out, err = helpers.run_cli(args)
        assert rc == 3 and out == "" and "2 different sealed sets" in err and "'foreign.safetensors'" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_lost_index_under_another_name_is_rebuilt_under_its_own_name(
    tmp_path: Path, checkpoint: Path, key: paramseal.Key, key_file: Path
) -> None:
    name = "diffusion_pytorch_model.safetensors.index.json"
    (checkpoint / sharded.INDEX).rename(checkpoint / name)
    sealed = tmp_path / "sealed"
    sharded.seal_dir(checkpoint, sealed, key, workers=1)
    sealed_map = json.loads((sealed / name).read_text())["weight_map"]
    (sealed / name).unlink()
    rc, out, _ = helpers.run_cli(["verify", sealed, "--key", key_file])
    assert rc == 1 and f"the index '{name}' is missing" in out and "conventional" not in out, out
    _recover_rebuilds_the_index(sealed, tmp_path / "fixed", name, sealed_map, key, key_file)


def test_a_lost_index_of_shards_sealed_before_records_named_it_takes_the_conventional_name(
    tmp_path: Path, checkpoint: Path, key: paramseal.Key, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Set records without the index's name (older ParamSeal): rebuilt as model.safetensors.index.json, and said."""
    real = sharded._seal_one

    def old_style(src: Path, dst: Path, k: paramseal.Key, level: str, bits: int | None, record: str, *rest: Any) -> str:
        rec = json.loads(record)
        del rec["index"]
        return real(src, dst, k, level, bits, json.dumps(rec), *rest)

    name = "diffusion_pytorch_model.safetensors.index.json"
    (checkpoint / sharded.INDEX).rename(checkpoint / name)
    sealed = tmp_path / "sealed"
    with monkeypatch.context() as m:
        m.setattr(sharded, "_seal_one", old_style)
        sharded.seal_dir(checkpoint, sealed, key, workers=1)
    assert "index" not in json.loads(helpers.read_st(sealed / SHARDS[0])[1][sharded.SET_KEY])
    sealed_map = json.loads((sealed / name).read_text())["weight_map"]
    assert sharded.verify_dir(sealed, key, workers=1).status == "intact"  # old records still verify
    (sealed / name).unlink()
    rep = sharded.verify_dir(sealed, key, workers=1)
    assert rep.exit_code == 1 and any(f"rebuilt as '{sharded.INDEX}', the conventional name" in m
                                      for m in rep.metadata_issues), rep.metadata_issues  # fmt: skip
    fixed = tmp_path / "fixed"
    rc, out, err = helpers.run_cli(["recover", sealed, fixed, "--key", key_file])
    assert rc == 0 and "the conventional name" in out, (out, err)
    assert json.loads((fixed / sharded.INDEX).read_text())["weight_map"] == sealed_map
    assert not (fixed / name).exists() and sharded.verify_dir(fixed, key, workers=1).status == "intact"


@pytest.mark.parametrize("stray", ["a-copy.safetensors", "z-copy.safetensors"])
def test_a_stray_copy_of_a_shard_sealed_with_another_key_does_not_take_its_place_when_the_index_is_lost(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key_file: Path, other_key: paramseal.Key, stray: str
) -> None:
    """The rebuilt index maps a tensor to the shard the key vouches for, whatever the stray file's name sorts as."""
    other = tmp_path / "other"
    sharded.seal_dir(checkpoint, other, other_key, workers=1)
    shutil.copy(other / SHARDS[1], sealed_ckpt / stray)
    rc, out, err = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file])
    assert rc == 0, (out, err)  # with the index, a file it does not name is not a shard
    (sealed_ckpt / sharded.INDEX).unlink()
    rc, out, err = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file, "--json"])
    assert rc == 1 and err == "" and json.loads(out)["recoverable"], (out, err)
    fixed = tmp_path / "fixed"
    rc, out, err = helpers.run_cli(["recover", sealed_ckpt, fixed, "--key", key_file])
    assert rc == 0, (out, err)
    weight_map = json.loads((fixed / sharded.INDEX).read_text())["weight_map"]
    assert set(weight_map.values()) == set(SHARDS)
    rc, _, err = helpers.run_cli(["verify", fixed, "--key", key_file])
    assert rc == 0, err


def test_a_file_of_another_sealed_model_is_no_shard_when_the_index_is_lost(
    tmp_path: Path, sealed_ckpt: Path, key_file: Path, other_key: paramseal.Key
) -> None:
    """Another key's sealed shard with tensors of its own stopped verify with 'key does not match' (exit 3)."""
    src, other = tmp_path / "stranger", tmp_path / "stranger-sealed"
    src.mkdir()
    helpers.write_st(src / "x.safetensors", {"other.weight": np.ones((64, 64), np.float32)})
    (src / sharded.INDEX).write_text(json.dumps({"weight_map": {"other.weight": "x.safetensors"}}))
    sharded.seal_dir(src, other, other_key, workers=1)
    shutil.copy(other / "x.safetensors", sealed_ckpt / "stranger.safetensors")
    (sealed_ckpt / sharded.INDEX).unlink()
    rc, out, err = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file, "--json"])
    assert rc == 1 and json.loads(out)["recoverable"], (out, err)
    fixed = tmp_path / "fixed"
    rc, out, err = helpers.run_cli(["recover", sealed_ckpt, fixed, "--key", key_file])
    assert rc == 0, (out, err)
    assert set(json.loads((fixed / sharded.INDEX).read_text())["weight_map"].values()) == set(SHARDS)
    assert helpers.run_cli(["verify", fixed, "--key", key_file])[0] == 0


def test_an_index_that_cannot_be_read_is_a_bad_input_not_a_lost_index(
    tmp_path: Path, sealed_ckpt: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unreadable (permissions, an I/O error) was taken for tampering: exit 1, and recover replaced the index."""
    real = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self.name == sharded.INDEX:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    for argv in (["verify", sealed_ckpt], ["recover", sealed_ckpt, tmp_path / "fixed"]):
        rc, out, err = helpers.run_cli([*argv, "--key", key_file])
        assert rc == 3 and f"cannot read '{sealed_ckpt / sharded.INDEX}': Permission denied" in err, (out, err)
    assert not (tmp_path / "fixed").exists()


def test_a_subfolder_named_like_an_index_is_no_second_index(
    tmp_path: Path, checkpoint: Path, key: paramseal.Key
) -> None:
    """Only files are indexes: a folder ending in .safetensors.index.json beside the index is copied, not refused."""
    (checkpoint / "old.safetensors.index.json").mkdir()
    assert sharded.index_files(checkpoint) == [sharded.INDEX]
    out = tmp_path / "out"
    assert sharded.seal_dir(checkpoint, out, key, workers=1) == SHARDS
    assert (out / "old.safetensors.index.json").is_dir()
    assert sharded.verify_dir(out, key, workers=1).status == "intact"


@pytest.mark.parametrize("weight_map", [{"a": 1}, {"a": None}, {"a": ["x.safetensors"]}])
def test_an_index_mapping_a_tensor_to_no_file_name_is_exit_3(
    checkpoint: Path, key_file: Path, weight_map: dict[str, object]
) -> None:
    (checkpoint / sharded.INDEX).write_text(json.dumps({"weight_map": weight_map}))
    for args in (["inspect", checkpoint], ["verify", checkpoint, "--key", key_file]):
        rc, _, err = helpers.run_cli(args)
        assert rc == 3 and "weight_map must map tensor names to file names" in err and "Traceback" not in err, err


@pytest.mark.parametrize("name", ["../outside.safetensors", "sub/inside.safetensors"])
def test_an_index_naming_a_shard_in_another_folder_is_refused(
    tmp_path: Path, checkpoint: Path, key_file: Path, name: str
) -> None:
    """A shard path outside the folder (or in a subfolder) would be read, and written, outside the checkpoint."""
    (checkpoint / "sub").mkdir()
    for p in (checkpoint / name, tmp_path / "outside.safetensors"):  # the file exists: only its place is wrong
        shutil.copy(checkpoint / SHARDS[0], p)
    _edit_index(checkpoint, lambda wm: wm.update({n: name for n, s in wm.items() if s == SHARDS[0]}))
    before = sorted(p.name for p in tmp_path.iterdir()), (tmp_path / "outside.safetensors").read_bytes()
    rc, _, err = helpers.run_cli(["seal", checkpoint, tmp_path / "out", "--key", key_file])
    assert rc == 3 and f"names shard '{name}', which is not a .safetensors file in the same folder" in err, err
    assert (sorted(p.name for p in tmp_path.iterdir()), (tmp_path / "outside.safetensors").read_bytes()) == before


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_an_index_that_is_no_regular_file_is_exit_3_not_a_hang(
    tmp_path: Path, sealed_ckpt: Path, key_file: Path, kind: str
) -> None:
    """A FIFO put as the index hung verify, recover and inspect; a link to /dev/zero read until memory ran out."""
    index = sealed_ckpt / sharded.INDEX
    index.unlink()
    if kind == "fifo":
        os.mkfifo(index)
    else:
        index.symlink_to(os.devnull)  # /dev/zero took all memory: the same branch, without the risk
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    fixed = tmp_path / "fixed"
    runs = [["verify", sealed_ckpt, "--key", key_file], ["recover", sealed_ckpt, fixed, "--key", key_file]]
    for argv in [*runs, ["inspect", sealed_ckpt]]:
        p = subprocess.run(
            [sys.executable, "-m", "paramseal", *map(str, argv)], env=env, capture_output=True, text=True, timeout=60
        )
        assert p.returncode == 3 and p.stderr == f"error: cannot read '{index}': it is not a regular file\n", p.stderr
    assert not fixed.exists()


def test_an_index_naming_a_shard_longer_than_a_file_name_can_be_is_said_not_a_traceback(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key_file: Path
) -> None:
    """Looking the shard up raised ENAMETOOLONG: a traceback and 'this is a bug in ParamSeal', in every verb."""
    name = "x" * 300 + ".safetensors"
    said = f"names shard '{'x' * 60}...', a name of 312 bytes, longer than this file system allows"
    for folder in (checkpoint, sealed_ckpt):
        _edit_index(folder, lambda wm: wm.update({n: name for n, s in wm.items() if s == SHARDS[0]}))
    rc, _, err = helpers.run_cli(["seal", checkpoint, tmp_path / "out", "--key", key_file])
    assert rc == 3 and said in err and len(err.splitlines()) == 1 and not (tmp_path / "out").exists(), err
    rc, out, err = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file])  # an edited index: recover rebuilds it
    assert rc == 1 and said in out and err == "", (out, err)
    rc, out, err = helpers.run_cli(["inspect", sealed_ckpt])
    assert rc == 0 and said in out and "Traceback" not in err, (out, err)


@pytest.mark.parametrize("where", ["my.key", "sub/my.key", "linked.key"])
def test_a_key_file_in_the_checkpoint_folder_is_never_copied_into_the_output(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key_file: Path, where: str
) -> None:
    """seal and recover copy the files beside the shards: a key kept there went into the new folder, to be shipped."""
    for folder in (checkpoint, sealed_ckpt):
        (folder / "sub").mkdir(exist_ok=True)
        if where == "linked.key":
            (folder / where).symlink_to(key_file)
        else:
            shutil.copy(key_file, folder / where)
    for argv in (["seal", checkpoint, tmp_path / "out"], ["recover", sealed_ckpt, tmp_path / "out"]):
        before = helpers.listing(tmp_path)
        rc, out, err = helpers.run_cli([*argv, "--key", key_file])
        said = f"error: '{argv[1] / where}' holds a ParamSeal key, or 64 hex digits just like one"
        assert rc == 3 and err.startswith(said) and len(err.splitlines()) == 1, (out, err)
        assert "the files beside the shards are copied into" in err and key_file.read_text().strip() not in err
        assert helpers.listing(tmp_path) == before


def test_a_tensor_held_by_two_shards_is_refused_at_seal_time(tmp_path: Path, checkpoint: Path, key_file: Path) -> None:
    """The index maps it to one of them: the other copy would be sealed, and verify would call the set tampered."""
    t, meta = helpers.read_st(checkpoint / SHARDS[2])
    t["layers.0.attn.weight"] = helpers.read_st(checkpoint / SHARDS[0])[0]["layers.0.attn.weight"]
    helpers.write_st(checkpoint / SHARDS[2], t, meta)
    rc, _, err = helpers.run_cli(["seal", checkpoint, tmp_path / "out", "--key", key_file])
    assert rc == 3 and f"held by '{SHARDS[0]}', '{SHARDS[2]}'" in err and not (tmp_path / "out").exists(), err


def test_a_set_record_edited_to_list_a_file_outside_the_folder_does_not_open_it(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The set record in the file is read unauthenticated to find the shards: only names in the folder count."""
    shutil.copy(sealed_ckpt / SHARDS[0], tmp_path / "outside.safetensors")
    p = sealed_ckpt / SHARDS[1]
    t, meta = helpers.read_st(p)
    rec = json.loads(meta[sharded.SET_KEY])
    helpers.write_st(
        p, t, {**meta, sharded.SET_KEY: json.dumps({**rec, "shards": [*rec["shards"], "../outside.safetensors"]})}
    )
    opened: list[Path] = []
    real = files.verify_file
    monkeypatch.setattr(files, "verify_file", lambda f, k, **kw: opened.append(Path(f)) or real(f, k, **kw))
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 1 and not any("outside" in m for m in [*rep.metadata_issues, *rep.notes]), rep.summary()
    assert sorted(f.name for f in opened) == SHARDS and all(f.parent == sealed_ckpt for f in opened)


def test_a_stray_file_that_an_edited_set_record_names_is_said_to_be_named_by_it(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key, key_file: Path
) -> None:
    """The note said 'neither the index nor a sealed set record names it' while the file's edited record did."""
    p = sealed_ckpt / SHARDS[1]
    t, meta = helpers.read_st(p)
    rec = json.loads(meta[sharded.SET_KEY])
    helpers.write_st(
        p, t, {**meta, sharded.SET_KEY: json.dumps({**rec, "shards": [*rec["shards"], "junk.safetensors"]})}
    )
    helpers.write_st(sealed_ckpt / "junk.safetensors", {"x": np.ones(4, np.float32)})  # unsealed
    helpers.write_st(sealed_ckpt / "other.safetensors", {"x": np.ones(4, np.float32)})  # named by nothing
    said = "only a set record that was edited does"
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    notes = {n.split("'")[1]: n for n in rep.notes if "is not a shard" in n}
    assert set(notes) == {"junk.safetensors", "other.safetensors"}, rep.notes
    assert said in notes["junk.safetensors"] and "neither the index nor" not in notes["junk.safetensors"]
    assert said not in notes["other.safetensors"] and "neither the index nor" in notes["other.safetensors"]
    rc, out, err = helpers.run_cli(["recover", sealed_ckpt, tmp_path / "fixed", "--key", key_file])
    assert rc == 0 and "file 'junk.safetensors' is not a shard of this checkpoint (the index does not" in out, err


def _large_checkpoint(tmp_path: Path) -> Path:
    """Two shards large enough to carry header copies in their weights, and their index."""
    rng = np.random.default_rng(6)
    shards = {name: {f"w{i}": helpers.random_tensor(rng, np.float32, (1024, 512))} for i, name in enumerate(SHARDS[:2])}
    return helpers.write_checkpoint(tmp_path / "ckpt", shards)


def test_a_set_record_edited_where_only_the_metadata_digest_is_sealed_cannot_be_trusted(
    tmp_path: Path, key_file: Path
) -> None:
    """With the metadata header gone, the header from the weights keeps only the metadata's digest: an edited
    set record no longer matches it, so it vouches for nothing (not read as a record of another set)."""
    from paramseal.header import METADATA_KEY, SET_KEY

    folder = _large_checkpoint(tmp_path)
    sealed = tmp_path / "sealed"
    assert helpers.run_cli(["seal", folder, sealed, "--key", key_file])[0] == 0
    shard = sealed / SHARDS[1]
    t, meta = helpers.read_st(shard)
    del meta[METADATA_KEY]
    helpers.write_st(shard, t, meta)
    rc, out, _ = helpers.run_cli(["verify", sealed, "--key", key_file])
    assert rc == 0, out  # the header from the weights and the unedited record vouch for the shard
    rec = json.loads(meta[SET_KEY])
    rec["set"] = "0" * len(rec["set"])
    helpers.write_st(shard, t, {**meta, SET_KEY: json.dumps(rec)})
    rc, out, _ = helpers.run_cli(["verify", sealed, "--key", key_file])
    assert rc != 0 and f"shard '{SHARDS[1]}': its set record cannot be trusted (its metadata was edited)" in out, out


def test_a_sealed_file_listed_only_by_an_edited_set_record_is_a_stray_not_a_lost_shard(
    tmp_path: Path, sealed_ckpt: Path, key_file: Path, key: paramseal.Key
) -> None:
    """The shard's authenticated header holds its record as sealed: the edited copy in the metadata lists a file
    (another model sealed under the key) that is no shard; it made the set 'NOT fully recoverable' (exit 2)."""
    from paramseal.header import SET_KEY

    files.seal_file(
        helpers.write_st(tmp_path / "o.safetensors", {"o": np.ones((64, 80), np.float32)}),
        sealed_ckpt / "junk.safetensors",
        key,
    )
    shard = sealed_ckpt / SHARDS[0]
    t, meta = helpers.read_st(shard)
    rec = json.loads(meta[SET_KEY])
    rec["shards"].append("junk.safetensors")
    helpers.write_st(shard, t, {**meta, SET_KEY: json.dumps(rec)})
    rc, out, _ = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file, "--json"])
    d = json.loads(out)
    assert rc == 1 and d["recoverable"], out
    assert d["metadata_issues"] == [f"{SHARDS[0]}: key '{SET_KEY}' was changed"], out
    assert any("junk.safetensors" in n for n in d["notes"]), out
    fixed = tmp_path / "fixed"
    assert helpers.run_cli(["recover", sealed_ckpt, fixed, "--key", key_file])[0] == 0
    assert helpers.run_cli(["verify", fixed, "--key", key_file])[0] == 0


def test_a_lost_index_beside_shards_whose_records_nothing_vouches_for_is_not_rebuilt_naming_no_shard(
    tmp_path: Path, sealed_ckpt: Path, key_file: Path, other_key: paramseal.Key
) -> None:
    """Index deleted and every shard's header overwritten (no key needed): recover said 'OK' (exit 0), writing an
    index that named no shard beside the shards copied unchecked; verify said exit 1. Another key: exit 3."""
    from paramseal.header import METADATA_KEY

    (sealed_ckpt / sharded.INDEX).unlink()
    other = paramseal.write_key(tmp_path / "other.key", other_key)
    for args in (["verify", sealed_ckpt, "--key", other], ["recover", sealed_ckpt, tmp_path / "o", "--key", other]):
        rc, _, err = helpers.run_cli(args)
        assert rc == 3 and "does not match" in err and not (tmp_path / "o").exists(), err
    for s in SHARDS:
        t, meta = helpers.read_st(sealed_ckpt / s)
        helpers.write_st(sealed_ckpt / s, t, {**meta, METADATA_KEY: "overwritten"})
    rc, out, _ = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file])
    assert rc == 2 and all(f"shard '{s}' cannot be verified" in out for s in SHARDS), out
    rc, out, _ = helpers.run_cli(["recover", sealed_ckpt, tmp_path / "fixed", "--key", key_file])
    assert rc == 2 and not (tmp_path / "fixed").exists(), out


def _seal_forged(
    checkpoint: Path, sealed: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, edit: Any
) -> None:
    """Seal ``checkpoint`` with each shard's set record changed by ``edit(record)`` first: forged WITH the key."""
    real = sharded._seal_one

    def forged(src: Path, dst: Path, k: paramseal.Key, level: str, bits: int | None, record: str, *rest: Any) -> str:
        return real(src, dst, k, level, bits, json.dumps(edit(json.loads(record))), *rest)

    with monkeypatch.context() as m:
        m.setattr(sharded, "_seal_one", forged)
        sharded.seal_dir(checkpoint, sealed, key, workers=1)


@pytest.mark.parametrize("lost", [False, True])
def test_a_set_record_listing_shard_names_that_are_no_text_is_malformed_not_a_crash(
    tmp_path: Path, checkpoint: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, lost: bool
) -> None:
    """Forged with the key: names None and 7 in the set's list were sorted with the others (TypeError)."""
    sealed = tmp_path / "sealed"
    _seal_forged(checkpoint, sealed, key, monkeypatch, lambda rec: {**rec, "shards": [*rec["shards"], None, 7]})
    if lost:
        (sealed / sharded.INDEX).unlink()
    rep = sharded.verify_dir(sealed, key, workers=1)
    assert rep.exit_code == 2 and "None" not in rep.summary(), rep.summary()
    assert all(any(f"shard '{s}' has a malformed set record" in m for m in rep.metadata_issues) for s in SHARDS)
    rep = sharded.recover_dir(sealed, tmp_path / "fixed", key, workers=1)
    assert rep.exit_code == 2 and not rep.written and not (tmp_path / "fixed").exists()


@pytest.mark.parametrize(
    "names", [["../outside.safetensors.index.json"] * 3, ["a.safetensors.index.json", "b.safetensors.index.json"] * 2]
)
def test_a_lost_index_is_rebuilt_under_the_conventional_name_unless_the_records_name_one_plain_file(
    tmp_path: Path, checkpoint: Path, key: paramseal.Key, key_file: Path, monkeypatch: pytest.MonkeyPatch,
    names: list[str],
) -> None:  # fmt: skip
    """Records (authenticated) naming the index outside the folder, or naming two indexes, give no name to trust."""
    sealed, it = tmp_path / "sealed", iter(names)
    _seal_forged(checkpoint, sealed, key, monkeypatch, lambda rec: {**rec, "index": next(it)})
    sealed_map = json.loads((sealed / sharded.INDEX).read_text())["weight_map"]
    (sealed / sharded.INDEX).unlink()
    before = sorted(p.name for p in tmp_path.iterdir())
    _recover_rebuilds_the_index(sealed, tmp_path / "fixed", sharded.INDEX, sealed_map, key, key_file)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "fixed"])  # nothing written outside


@pytest.mark.parametrize("lost", [False, True])
def test_a_set_record_naming_its_shard_outside_the_folder_opens_and_writes_nothing_there(
    tmp_path: Path, checkpoint: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, lost: bool
) -> None:
    """A record forged with the key, whose shard (and the set's list) is '../outside.safetensors'."""
    outside = "../outside.safetensors"
    sealed = tmp_path / "sealed"

    def edit(rec: dict[str, Any]) -> dict[str, Any]:
        return {
            **rec,
            "shards": [*SHARDS[:2], outside],
            "shard": outside if rec["shard"] == SHARDS[2] else rec["shard"],
        }

    _seal_forged(checkpoint, sealed, key, monkeypatch, edit)
    shutil.copy(sealed / SHARDS[0], tmp_path / "outside.safetensors")  # a sealed file is there
    if lost:
        (sealed / sharded.INDEX).unlink()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    opened: list[Path] = []
    real = files.verify_file
    monkeypatch.setattr(files, "verify_file", lambda f, k, **kw: opened.append(Path(f)) or real(f, k, **kw))
    rep = sharded.verify_dir(sealed, key, workers=1)
    assert rep.exit_code == 2 and opened and all(f.parent == sealed for f in opened), (opened, rep.summary())
    rep = sharded.recover_dir(sealed, tmp_path / "fixed", key, workers=1)
    assert rep.exit_code == 2 and not rep.written and not (tmp_path / "fixed").exists()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_a_lost_index_still_names_the_tensors_of_a_listed_shard_that_cannot_be_checked(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key: paramseal.Key
) -> None:
    """A shard the set records list but whose own record nothing vouches for (its unsealed file, given the sealed
    record) is still in the index made from the records: its tensors are reported lost with it, not left out."""
    t, meta = helpers.read_st(checkpoint / SHARDS[1])
    record = helpers.read_st(sealed_ckpt / SHARDS[1])[1][sharded.SET_KEY]
    helpers.write_st(sealed_ckpt / SHARDS[1], t, {**meta, sharded.SET_KEY: record})
    (sealed_ckpt / sharded.INDEX).unlink()
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 2 and any(f"shard '{SHARDS[1]}' cannot be verified" in m for m in rep.metadata_issues)
    held = [n for n in rep.tensors if n.startswith("layers.1.")]
    assert len(held) == 3 and all(
        rep.tensors[n].issues == (f"its shard '{SHARDS[1]}' cannot be checked",) for n in held
    ), rep.tensors


def test_shards_swapped_beside_an_indexed_file_without_an_authenticated_record_are_not_placed(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key
) -> None:
    """Placing shards by their records needs every file the index sends us to vouched for: one is not (sealed with
    the key, as a single file: no set record). One with no seal of the key is an added file, and no obstacle."""
    _swap(sealed_ckpt, SHARDS[0], SHARDS[1])
    plain = helpers.write_st(tmp_path / "extra.safetensors", {"extra.weight": np.ones((64, 48), np.float32)})
    paramseal.files.seal_file(plain, sealed_ckpt / "extra.safetensors", key)
    _edit_index(sealed_ckpt, lambda wm: wm.update({"extra.weight": "extra.safetensors"}))
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 2 and any(
        f"shard '{SHARDS[0]}' was sealed as '{SHARDS[1]}'" in m for m in rep.metadata_issues
    )
    assert not any("holds sealed shard" in m for m in rep.metadata_issues), rep.metadata_issues


def test_shards_swapped_in_a_set_whose_records_disagree_on_the_shard_list_are_not_placed(
    tmp_path: Path, checkpoint: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records forged with the key: one set id, but one shard lists the shards in another order (no one seal)."""
    sealed = tmp_path / "sealed"

    def edit(rec: dict[str, Any]) -> dict[str, Any]:
        return {**rec, "shards": rec["shards"][::-1] if rec["shard"] == SHARDS[2] else rec["shards"]}

    _seal_forged(checkpoint, sealed, key, monkeypatch, edit)
    assert sharded.verify_dir(sealed, key, workers=1).status == "intact"
    _swap(sealed, SHARDS[0], SHARDS[1])
    rep = sharded.verify_dir(sealed, key, workers=1)
    assert rep.exit_code == 2 and any(
        f"shard '{SHARDS[0]}' was sealed as '{SHARDS[1]}'" in m for m in rep.metadata_issues
    )
    rep = sharded.recover_dir(sealed, tmp_path / "fixed", key, workers=1)
    assert rep.exit_code == 2 and not rep.written and not (tmp_path / "fixed").exists()


def test_a_partial_verification_counts_only_the_blocks_it_checked_in_a_shard_read_in_part(
    sealed_ckpt: Path, key: paramseal.Key
) -> None:
    rep = sharded.verify_dir(sealed_ckpt, key, tensors="layers.0.attn.weight", workers=1)
    alone = files.verify_file(sealed_ckpt / SHARDS[0], key, tensors="layers.0.attn.weight")
    assert rep.status == "intact" and alone.checked_blocks is not None
    assert rep.checked_blocks == alone.checked_blocks < alone.total_blocks


def _scramble(folder: Path, shard: str, name: str) -> None:
    """Every value of tensor ``name`` in ``shard`` replaced: far past what recover can rebuild."""
    t, meta = helpers.read_st(folder / shard)
    t[name] = helpers.random_tensor(np.random.default_rng(9), t[name].dtype, t[name].shape)
    helpers.write_st(folder / shard, t, meta)


def test_recover_of_a_lost_index_beside_an_unrecoverable_shard_writes_nothing_and_claims_no_rebuild(
    sealed_ckpt: Path, tmp_path: Path, key: paramseal.Key
) -> None:
    (sealed_ckpt / sharded.INDEX).unlink()
    _scramble(sealed_ckpt, SHARDS[1], "layers.1.mlp.weight")
    rep = sharded.recover_dir(sealed_ckpt, tmp_path / "fixed", key, workers=1)
    assert rep.status == "unrecoverable" and not rep.written and not (tmp_path / "fixed").exists()
    assert not any("rebuilt" in n for n in rep.notes), rep.notes  # nothing was


def test_recover_allow_partial_writes_a_set_missing_a_shard_but_rebuilds_no_index_for_it(
    sealed_ckpt: Path, tmp_path: Path, key: paramseal.Key
) -> None:
    """A shard gone (grave): with allow_partial the others are written, the unusable index copied as it was."""
    (sealed_ckpt / sharded.INDEX).write_text('{"weight_map": ')
    (sealed_ckpt / SHARDS[2]).unlink()
    fixed = tmp_path / "fixed"
    rep = sharded.recover_dir(sealed_ckpt, fixed, key, allow_partial=True, workers=1)
    assert rep.exit_code == 2 and rep.written and not any("rebuilt" in n for n in rep.notes), rep.notes
    assert sorted(p.name for p in fixed.iterdir()) == sorted([*SHARDS[:2], sharded.INDEX, "config.json"])
    assert (fixed / sharded.INDEX).read_text() == '{"weight_map": '
    assert all(files.verify_file(fixed / s, key).status == "intact" for s in SHARDS[:2])


def test_a_lost_index_left_under_another_name_is_not_copied_beside_the_rebuilt_one(
    sealed_ckpt: Path, tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    sealed_map = json.loads((sealed_ckpt / sharded.INDEX).read_text())["weight_map"]
    (sealed_ckpt / sharded.INDEX).unlink()
    (sealed_ckpt / "old.safetensors.index.json").write_text("[1, 2]")
    _recover_rebuilds_the_index(sealed_ckpt, tmp_path / "fixed", sharded.INDEX, sealed_map, key, key_file)


@pytest.mark.parametrize(("metadata", "says"), [({"format": "pt"}, "other metadata fields kept"), ({}, "is gone")])
def test_a_rebuilt_index_keeps_the_other_metadata_fields_of_the_unusable_one(
    sealed_ckpt: Path, tmp_path: Path, key_file: Path, metadata: dict[str, str], says: str
) -> None:
    (sealed_ckpt / sharded.INDEX).write_text(json.dumps({"metadata": {"total_size": 5, **metadata}, "weight_map": {}}))
    fixed = tmp_path / "fixed"
    rc, out, err = helpers.run_cli(["recover", sealed_ckpt, fixed, "--key", key_file])
    assert rc == 0 and says in out, (out, err)
    rebuilt = json.loads((fixed / sharded.INDEX).read_text())
    assert rebuilt["metadata"] == {**metadata, "total_size": _total_size(sealed_ckpt)}


@pytest.mark.parametrize("damage", ["missing", "renamed", "truncated"])
def test_inspect_of_a_damaged_set_describes_what_is_there_and_what_is_not(
    sealed_ckpt: Path, key_file: Path, damage: str
) -> None:
    """A shard missing, renamed or truncated made inspect exit 3 with an error about the index: a user inspecting
    a damaged set got nothing of it, where verify reports it (exit 1 or 2). Now inspect describes it, exit 0."""
    shard = sealed_ckpt / SHARDS[1]
    if damage == "missing":
        shard.unlink()
    elif damage == "renamed":
        shard.rename(sealed_ckpt / "other.safetensors")
    else:
        shard.write_bytes(shard.read_bytes()[:100])
    assert helpers.run_cli(["verify", sealed_ckpt, "--key", key_file])[0] in (1, 2)  # verify reports it
    rc, out, err = helpers.run_cli(["inspect", sealed_ckpt, "--json"])
    info = json.loads(out)
    assert rc == 0 and err == "" and info["shards"] == 3 and info["sealed_shards"] == 2 and not info["sealed"], info
    assert info["tensors"] == 6 and sorted(info["per_shard"]) == [SHARDS[0], SHARDS[2]], info
    assert info["seal"]["set_id"] == sharded.inspect_dir(sealed_ckpt)["seal"]["set_id"] is not None
    rc, text, _ = helpers.run_cli(["inspect", sealed_ckpt])
    assert rc == 0 and "in 3 shards (2 sealed)" in text.splitlines()[0], text
    if damage == "truncated":
        assert "missing_shards" not in info and "unlisted_files" not in info, info
        assert "is truncated or not safetensors" in info["unreadable_shards"][SHARDS[1]], info
        assert f"WARNING: shard '{SHARDS[1]}' cannot be read: '{shard}' is truncated" in text, text
        return
    assert info["missing_shards"] == [SHARDS[1]] and "unreadable_shards" not in info, info
    assert f"WARNING: shard '{SHARDS[1]}' is missing from the folder; run verify" in text, text
    if damage == "renamed":  # where it went, by its set record (unchecked: inspect has no key)
        assert info["unlisted_files"] == {"other.safetensors": SHARDS[1]}, info
        said = "file 'other.safetensors' is not named by the index; its set record (unchecked) names shard"
        assert f"{said} '{SHARDS[1]}'" in text, text
    else:
        assert "unlisted_files" not in info, info


def test_inspect_text_escapes_the_shard_names_an_index_gives(sealed_ckpt: Path) -> None:
    """A shard name is the index's text (a missing one need be no file): inspect printed it raw, and an escape
    sequence in it drove the reader's terminal, where verify's report escapes it."""
    odd = "x\x1b[2J\u202e.safetensors"
    _edit_index(sealed_ckpt, lambda wm: wm.update({"layers.0.attn.weight": odd}))
    (sealed_ckpt / SHARDS[2]).rename(sealed_ckpt / "y\x07.safetensors")
    rc, out, err = helpers.run_cli(["inspect", sealed_ckpt])
    assert rc == 0 and "\x1b" not in out and "\u202e" not in out and "\x07" not in out, ascii(out)
    assert "shard 'x\\x1b[2J\\u202e.safetensors' is missing" in out and "file 'y\\x07.safetensors'" in out, out


def test_inspect_of_a_set_whose_every_shard_is_gone_still_exits_0_but_an_unreadable_index_does_not(
    sealed_ckpt: Path,
) -> None:
    for s in SHARDS:
        (sealed_ckpt / s).unlink()
    rc, out, err = helpers.run_cli(["inspect", sealed_ckpt, "--json"])
    info = json.loads(out)
    assert rc == 0 and info["missing_shards"] == SHARDS and info["sealed_shards"] == 0 and info["tensors"] == 0, info
    # the text said "note: only 0 block(s) ..." and "not sealed; what each level would give:", then nothing
    rc, out, err = helpers.run_cli(["inspect", sealed_ckpt])
    assert rc == 0 and "0 block(s)" not in out and "not sealed" not in out, out
    assert out.splitlines()[-1] == "no shard of the set is there to describe; run verify", out
    (sealed_ckpt / sharded.INDEX).write_text("{not json")
    rc, out, err = helpers.run_cli(["inspect", sealed_ckpt])
    assert rc == 3 and out == "" and "is not a valid safetensors index" in err, err


def test_a_tensor_added_where_the_metadata_header_is_gone_is_not_blamed_on_the_index_made_from_the_shards(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """Index lost, one shard's metadata header deleted and a tensor added: the index made from the files maps
    it, but it is the shard's extra tensor, not a wrong index (the made index is not checked against the shards)."""
    from paramseal.header import METADATA_KEY

    rng = np.random.default_rng(6)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for i, name in enumerate(SHARDS[:2]):  # shards large enough to carry header copies in their weights
        helpers.write_st(folder / name, {f"w{i}": helpers.random_tensor(rng, np.float32, (1024, 512))})
    (folder / sharded.INDEX).write_text(json.dumps({"weight_map": {"w0": SHARDS[0], "w1": SHARDS[1]}}))
    sealed = tmp_path / "sealed"
    assert helpers.run_cli(["seal", folder, sealed, "--key", key_file])[0] == 0
    (sealed / sharded.INDEX).unlink()
    t, meta = helpers.read_st(sealed / SHARDS[1])
    del meta[METADATA_KEY]
    helpers.write_st(sealed / SHARDS[1], {**t, "evil": np.ones((4,), np.float32)}, meta)
    rep = sharded.verify_dir(sealed, key, workers=1)
    assert rep.extra_tensors == (f"{SHARDS[1]}:evil",) and rep.exit_code != 0, rep.summary()
    assert not any("'evil'" in m for m in rep.metadata_issues), rep.metadata_issues


def test_only_the_swapped_shards_are_said_to_be_held_by_another_file(sealed_ckpt: Path, key: paramseal.Key) -> None:
    _swap(sealed_ckpt, SHARDS[0], SHARDS[1])
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert [m for m in rep.metadata_issues if "holds sealed shard" in m] == [
        f"file '{SHARDS[1]}' holds sealed shard '{SHARDS[0]}': shards were renamed or swapped (recover writes it as "
        f"'{SHARDS[0]}')",
        f"file '{SHARDS[0]}' holds sealed shard '{SHARDS[1]}': shards were renamed or swapped (recover writes it as "
        f"'{SHARDS[1]}')",
    ], rep.metadata_issues


def test_a_tensor_the_index_puts_in_a_missing_shard_keeps_the_finding_of_the_shard_that_holds_it(
    sealed_ckpt: Path, key: paramseal.Key
) -> None:
    """The index wrong and a shard gone: the tensor verified in its shard is not reported lost with the missing one."""
    _edit_index(sealed_ckpt, lambda wm: wm.update({"layers.0.attn.weight": SHARDS[2]}))
    (sealed_ckpt / SHARDS[2]).unlink()
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 2 and rep.tensors["layers.2.attn.weight"].issues  # lost with its shard
    assert rep.tensors["layers.0.attn.weight"].issues == (), rep.tensors["layers.0.attn.weight"]


def test_a_partial_verification_leaves_out_index_errors_on_tensors_outside_its_pattern(
    sealed_ckpt: Path, key: paramseal.Key
) -> None:
    _edit_index(sealed_ckpt, lambda wm: wm.update({"layers.0.attn.weight": SHARDS[1]}))
    assert sharded.verify_dir(sealed_ckpt, key, tensors="layers.1.*", workers=1).status == "intact"
    rep = sharded.verify_dir(sealed_ckpt, key, tensors="layers.0.*", workers=1)
    assert rep.status == "tampered" and any("'layers.0.attn.weight'" in m for m in rep.metadata_issues)


def test_a_rebuilt_index_keeps_the_order_of_the_wrong_one(
    sealed_ckpt: Path, tmp_path: Path, key: paramseal.Key
) -> None:
    idx = json.loads((sealed_ckpt / sharded.INDEX).read_text())
    order = list(idx["weight_map"])[::-1]  # the last shard's tensors first
    idx["weight_map"] = {n: idx["weight_map"][n] for n in order} | {"layers.0.attn.weight": SHARDS[1]}
    (sealed_ckpt / sharded.INDEX).write_text(json.dumps(idx))
    rep = sharded.recover_dir(sealed_ckpt, tmp_path / "fixed", key, workers=1)
    assert rep.written and rep.status == "recovered", rep.summary()
    assert list(json.loads((tmp_path / "fixed" / sharded.INDEX).read_text())["weight_map"]) == order


def test_a_copied_subfolder_keeps_its_mode(tmp_path: Path, checkpoint: Path, key: paramseal.Key) -> None:
    (checkpoint / "1_Pooling").mkdir()
    (checkpoint / "1_Pooling").chmod(0o750)
    sharded.seal_dir(checkpoint, tmp_path / "out", key, workers=1)
    assert (tmp_path / "out" / "1_Pooling").stat().st_mode & 0o777 == 0o750


def test_a_shard_that_cannot_be_verified_still_counts_in_the_total_blocks(
    sealed_ckpt: Path, checkpoint: Path, key: paramseal.Key
) -> None:
    whole = sharded.verify_dir(sealed_ckpt, key, workers=1).total_blocks
    shutil.copy(checkpoint / SHARDS[1], sealed_ckpt / SHARDS[1])  # unsealed: cannot be verified
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 2 and rep.total_blocks == whole, (rep.total_blocks, whole)


def test_an_index_naming_a_shard_that_is_no_safetensors_file_is_refused_at_seal_time(
    tmp_path: Path, checkpoint: Path, key_file: Path
) -> None:
    (checkpoint / SHARDS[0]).rename(checkpoint / "part-1.bin")
    _edit_index(checkpoint, lambda wm: wm.update({n: "part-1.bin" for n, s in wm.items() if s == SHARDS[0]}))
    rc, _, err = helpers.run_cli(["seal", checkpoint, tmp_path / "out", "--key", key_file])
    assert rc == 3 and "names shard 'part-1.bin', which is not a .safetensors file" in err, err
    assert not (tmp_path / "out").exists()


def test_a_shard_replaced_by_its_weights_sealed_alone_with_the_same_key_carries_no_set_record(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key: paramseal.Key
) -> None:
    files.seal_file(checkpoint / SHARDS[1], tmp_path / "alone.safetensors", key)
    shutil.copy(tmp_path / "alone.safetensors", sealed_ckpt / SHARDS[1])
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 2 and f"shard '{SHARDS[1]}' carries no set record" in " ".join(rep.metadata_issues)


def test_a_partial_verification_says_it_is_partial_once(sealed_ckpt: Path, key: paramseal.Key) -> None:
    rep = sharded.verify_dir(sealed_ckpt, key, tensors="layers.0.attn.weight", workers=1)
    assert rep.status == "intact" and [n for n in rep.notes if "partial verification" in n] == [
        "partial verification: 1 shard(s) checked, 2 not read"
    ], rep.notes


def test_the_note_on_a_rebuilt_wrong_index_says_only_that(
    sealed_ckpt: Path, tmp_path: Path, key: paramseal.Key
) -> None:
    _edit_index(sealed_ckpt, lambda wm: wm.update({"layers.0.attn.weight": SHARDS[1]}))
    rep = sharded.recover_dir(sealed_ckpt, tmp_path / "fixed", key, workers=1)
    assert rep.written and f"{sharded.INDEX} was rebuilt from the shards' sealed headers" in rep.notes, rep.notes


def test_a_renamed_shard_is_not_also_called_a_stray_file(tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key) -> None:
    bad = _with_last_shard_renamed(tmp_path, sealed_ckpt)
    rep = sharded.verify_dir(bad, key, workers=1)
    assert rep.exit_code == 1 and not any("is not a shard of this checkpoint" in n for n in rep.notes), rep.notes
    rep = sharded.recover_dir(bad, tmp_path / "fixed", key, workers=1)
    assert rep.written and not any("is not a shard of this checkpoint" in n for n in rep.notes), rep.notes


def test_a_partial_verification_names_only_the_lost_tensors_it_was_asked_for(
    sealed_ckpt: Path, key: paramseal.Key
) -> None:
    (sealed_ckpt / SHARDS[2]).unlink()
    rep = sharded.verify_dir(sealed_ckpt, key, tensors="layers.2.attn.weight", workers=1)
    assert rep.exit_code == 2 and sorted(n for n, t in rep.tensors.items() if t.issues) == ["layers.2.attn.weight"]


def test_shards_swapped_beside_a_shard_from_another_seal_are_not_placed(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key: paramseal.Key
) -> None:
    """Every list the same, but two set ids: which shard belongs would be a guess."""
    other = tmp_path / "other"
    sharded.seal_dir(checkpoint, other, key, workers=1)
    shutil.copy(other / SHARDS[2], sealed_ckpt / SHARDS[2])
    _swap(sealed_ckpt, SHARDS[0], SHARDS[1])
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 2 and not any("holds sealed shard" in m for m in rep.metadata_issues), rep.metadata_issues
    assert any(f"shard '{SHARDS[0]}' was sealed as '{SHARDS[1]}'" in m for m in rep.metadata_issues)


def test_a_subfolder_named_like_a_shard_is_no_stray_file(sealed_ckpt: Path, key: paramseal.Key) -> None:
    (sealed_ckpt / "extra.safetensors").mkdir()
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.status == "intact" and not any("extra.safetensors" in n for n in rep.notes), rep.notes


def test_a_garbage_metadata_header_on_a_shard_whose_weights_carry_the_header_leaves_its_record_untrusted(
    tmp_path: Path, key: paramseal.Key
) -> None:
    """The shard still verifies from the header in its weights, but nothing vouches for the set record beside the
    garbage: that is a record that cannot be trusted, not a shard sealed outside the set."""
    from paramseal.header import METADATA_KEY

    folder = _large_checkpoint(tmp_path)
    sealed = tmp_path / "sealed"
    sharded.seal_dir(folder, sealed, key, workers=1)
    t, meta = helpers.read_st(sealed / SHARDS[1])
    helpers.write_st(sealed / SHARDS[1], t, {**meta, METADATA_KEY: "garbage"})
    assert files.verify_file(sealed / SHARDS[1], key).recoverable  # read by the header in its weights
    rep = sharded.verify_dir(sealed, key, workers=1)
    issues = " ".join(rep.metadata_issues)
    assert rep.exit_code != 0 and f"shard '{SHARDS[1]}': its set record cannot be trusted" in issues, issues
    assert "carries no set record" not in issues, issues


def test_a_listed_shard_with_no_trusted_record_does_not_take_the_tensors_of_a_vouched_one_when_the_index_is_lost(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key: paramseal.Key
) -> None:
    """A listed shard replaced by another shard's weights sealed alone, given its set record in the metadata (which
    nothing vouches for): the index made from the records keeps each of those tensors in the shard whose record
    vouches for it, though that file sorts first."""
    record = helpers.read_st(sealed_ckpt / SHARDS[1])[1][sharded.SET_KEY]
    files.seal_file(checkpoint / SHARDS[0], tmp_path / "alone.safetensors", key)
    t, meta = helpers.read_st(tmp_path / "alone.safetensors")
    helpers.write_st(sealed_ckpt / SHARDS[1], t, {**meta, sharded.SET_KEY: record})  # the record, unsealed
    (sealed_ckpt / sharded.INDEX).unlink()
    sealed_map = {n: s for n, s in json.loads((checkpoint / sharded.INDEX).read_text())["weight_map"].items()
                  if s != SHARDS[1]}  # fmt: skip
    assert sharded.open_index(sealed_ckpt, key).weight_map == sealed_map
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 2 and f"shard '{SHARDS[1]}' carries no set record" in " ".join(rep.metadata_issues)


def test_an_unusable_index_under_another_name_is_rebuilt_under_that_name_when_the_records_do_not_name_one(
    tmp_path: Path, checkpoint: Path, key: paramseal.Key, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records without the index's name (older ParamSeal): the unusable index there gives it, not the convention."""
    name = "diffusion_pytorch_model.safetensors.index.json"
    (checkpoint / sharded.INDEX).rename(checkpoint / name)
    sealed = tmp_path / "sealed"
    _seal_forged(checkpoint, sealed, key, monkeypatch, lambda rec: {k: v for k, v in rec.items() if k != "index"})
    sealed_map = json.loads((sealed / name).read_text())["weight_map"]
    (sealed / name).write_text('{"weight_map": ')
    rep = sharded.verify_dir(sealed, key, workers=1)
    assert rep.exit_code == 1 and not any("conventional" in m for m in rep.metadata_issues), rep.metadata_issues
    _recover_rebuilds_the_index(sealed, tmp_path / "fixed", name, sealed_map, key, key_file)


def test_a_lost_index_is_not_made_to_name_a_shard_that_is_no_safetensors_file(
    tmp_path: Path, checkpoint: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record forged with the key naming its shard 'x.bin': no shard of a set; the file stays under its own name."""
    sealed = tmp_path / "sealed"
    _seal_forged(
        checkpoint,
        sealed,
        key,
        monkeypatch,
        lambda rec: {**rec, "shard": "x.bin"} if rec["shard"] == SHARDS[2] else rec,
    )
    (sealed / sharded.INDEX).unlink()
    assert set(sharded.open_index(sealed, key).weight_map.values()) == set(SHARDS)
    rep = sharded.verify_dir(sealed, key, workers=1)
    assert rep.exit_code == 2 and f"shard '{SHARDS[2]}' was sealed as 'x.bin'" in " ".join(rep.metadata_issues)
    assert not any("the index names shard 'x.bin'" in m for m in rep.metadata_issues), rep.metadata_issues
    rep = sharded.recover_dir(sealed, tmp_path / "fixed", key, workers=1)
    assert rep.exit_code == 2 and not rep.written and not (tmp_path / "fixed").exists()


@pytest.mark.parametrize("tampered", ["shard", "copy"])
def test_a_listed_file_no_set_record_vouches_for_does_not_speak_for_the_shard_it_copies(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key: paramseal.Key, tampered: str
) -> None:
    """A shard sealed alone (same key, no set record), copied in and listed by an edited index: its findings for
    the tensors it shares with the real shard replaced the real shard's (a flipped bit hidden, or blamed on it)."""
    copy = "copy.safetensors"
    files.seal_file(checkpoint / SHARDS[0], sealed_ckpt / copy, key)
    _edit_index(sealed_ckpt, lambda wm: wm.update({"extra.weight": copy}))
    flipped = SHARDS[0] if tampered == "shard" else copy
    t, meta = helpers.read_st(sealed_ckpt / flipped)
    helpers.write_st(sealed_ckpt / flipped, helpers.flip_bit(t, "layers.0.mlp.weight", 700, 29), meta)
    want = ["layers.0.mlp.weight" if tampered == "shard" else f"{copy}:layers.0.mlp.weight"]
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 2 and f"shard '{copy}' carries no set record" in " ".join(rep.metadata_issues)
    assert rep.tampered_tensors == want and rep.tensors[want[0]].tampered_blocks == [700 // 64], rep.summary()
    rep = sharded.recover_dir(sealed_ckpt, tmp_path / "fixed", key, workers=1)
    assert rep.exit_code == 2 and not rep.written and rep.tampered_tensors == want, rep.summary()


def test_a_shard_deleted_and_dropped_from_the_index_is_not_said_to_be_named_in_it(
    sealed_ckpt: Path, tmp_path: Path, key: paramseal.Key
) -> None:
    """Only the set records list it: 'named in the index is missing' contradicted 'missing from the index'."""
    (sealed_ckpt / SHARDS[2]).unlink()
    _edit_index(sealed_ckpt, lambda wm: [wm.pop(n) for n in [n for n, s in wm.items() if s == SHARDS[2]]])
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 2 and not any("named in the index" in m for m in rep.metadata_issues), rep.summary()
    assert f"shard '{SHARDS[2]}' of the sealed set is missing from the folder" in " ".join(rep.metadata_issues)
    assert f"shard '{SHARDS[2]}' of the sealed set is missing from the index" in " ".join(rep.metadata_issues)


def test_a_wrong_total_size_in_the_index_is_a_note_not_tampering(
    sealed_ckpt: Path, tmp_path: Path, key: paramseal.Key
) -> None:
    """metadata.total_size is not sealed (seal copies the index as it is): a wrong one went unmentioned."""
    size = _total_size(sealed_ckpt)
    for wrong, shown in [(1, "1"), ("many", "not a number")]:  # the fixture's index says 1
        idx = json.loads((sealed_ckpt / sharded.INDEX).read_text())
        (sealed_ckpt / sharded.INDEX).write_text(json.dumps({**idx, "metadata": {"total_size": wrong}}))
        rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
        said = [n for n in rep.notes if "metadata.total_size" in n]
        assert rep.status == "intact" and said and f"is {shown}, but the shards' tensors take {size} bytes" in said[0]
    fixed = tmp_path / "fixed"
    rep = sharded.recover_dir(sealed_ckpt, fixed, key, workers=1)
    assert rep.written and rep.exit_code == 0 and any("total_size" in n and "copied unchanged" in n for n in rep.notes)
    assert (fixed / sharded.INDEX).read_text() == (sealed_ckpt / sharded.INDEX).read_text()
    assert not any("total_size" in n for n in sharded.verify_dir(sealed_ckpt, key, tensors="layers.0.*").notes)
    idx = json.loads((sealed_ckpt / sharded.INDEX).read_text())
    (sealed_ckpt / sharded.INDEX).write_text(json.dumps({**idx, "metadata": {"total_size": size}}))
    assert not any("total_size" in n for n in sharded.verify_dir(sealed_ckpt, key, workers=1).notes)


def test_a_total_size_written_as_a_float_of_the_right_value_is_no_note(sealed_ckpt: Path, key: paramseal.Key) -> None:
    """A JSON float total_size of the right value read 'is 135552.0, but the tensors take 135552 bytes'."""
    size = _total_size(sealed_ckpt)
    idx = json.loads((sealed_ckpt / sharded.INDEX).read_text())
    for right, wrong in [(float(size), float(size + 1)), (size, True)]:
        (sealed_ckpt / sharded.INDEX).write_text(json.dumps({**idx, "metadata": {"total_size": right}}))
        assert not any("total_size" in n for n in sharded.verify_dir(sealed_ckpt, key, workers=1).notes)
        (sealed_ckpt / sharded.INDEX).write_text(json.dumps({**idx, "metadata": {"total_size": wrong}}))
        said = [n for n in sharded.verify_dir(sealed_ckpt, key, workers=1).notes if "metadata.total_size" in n]
        assert said and f"take {size} bytes" in said[0], said


def test_a_single_file_seal_re_sharded_is_verified_and_recovered_as_that_one_model(
    tmp_path: Path, key_file: Path
) -> None:
    """save_pretrained(max_shard_size=...) of a sealed single-file model (MiniLM: 4 shards) gave 'NOT fully
    recoverable', exit 2, every tensor 'missing' twice and 'shard ... cannot be verified' in a 319-line report, and
    recover wrote nothing: each shard was judged alone against the one header its weights carry. The folder is
    now checked as the one model it holds (exit 0, a note says so; a flip in a shard is located, exit 1), and recover
    writes that model to a file OUT, bit for bit as sealed; to a folder OUT it says why not (exit 3, nothing)."""
    rng = np.random.default_rng(11)
    model = {
        "emb.weight": helpers.random_tensor(rng, np.float32, (2000, 64)),
        "fc.weight": helpers.random_tensor(rng, np.float32, (512, 96)),
        "fc.bias": helpers.random_tensor(rng, np.float32, (96,)),
    }
    sealed, tensors, folder = _sealed_file_and_folder(tmp_path, key_file, model)
    parts = {
        "model-00001-of-00002.safetensors": ["emb.weight"],
        "model-00002-of-00002.safetensors": ["fc.weight", "fc.bias"],
    }

    def write(ts: dict[str, np.ndarray]) -> None:
        shards = {shard: {n: ts[n] for n in names} for shard, names in parts.items()}
        helpers.write_checkpoint(folder, shards, {"format": "pt"}, {"total_size": 1})

    write(tensors)
    rc, out, err = helpers.run_cli(["verify", folder, "--key", key_file])
    assert rc == 0 and "sealed as a single file" in out and "missing" not in out, (out, err)
    hit = {n: np.array(a) for n, a in tensors.items()}
    hit["fc.weight"].view(np.uint32).reshape(-1)[100] ^= 1 << 29
    write(hit)
    rc, out, err = helpers.run_cli(["verify", folder, "--key", key_file])
    assert rc == 1 and out.count("tampered block") == 1 and "fc.weight" in out, (out, err)
    rc, out, err = helpers.run_cli(["recover", folder, tmp_path / "outdir", "--key", key_file])
    assert rc == 3 and "OUT.safetensors" in err and not (tmp_path / "outdir").exists(), (out, err)
    fixed = tmp_path / "fixed.safetensors"
    rc, out, err = helpers.run_cli(["recover", folder, fixed, "--key", key_file])
    assert rc == 0, (out, err)
    got, meta = helpers.read_st(fixed)
    helpers.assert_model_equal(got, tensors)
    assert meta == helpers.read_st(sealed)[1]
    assert helpers.run_cli(["verify", fixed, "--key", key_file])[0] == 0


def _sealed_file_and_folder(
    tmp_path: Path, key_file: Path, model: dict[str, np.ndarray]
) -> tuple[Path, dict[str, np.ndarray], Path]:
    """``model`` sealed as one file (with save_pretrained's {"format": "pt"}), its tensors, and an empty folder."""
    plain = helpers.write_st(tmp_path / "plain.safetensors", model, {"format": "pt"})
    sealed = tmp_path / "sealed.safetensors"
    assert helpers.run_cli(["seal", plain, sealed, "--key", key_file])[0] == 0
    folder = tmp_path / "resharded"
    folder.mkdir()
    return sealed, helpers.read_st(sealed)[0], folder


def _re_sharded(tmp_path: Path, key_file: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A single-file seal re-sharded as save_pretrained(max_shard_size=...) writes it (2 shards), and its tensors."""
    rng = np.random.default_rng(12)
    model = {
        "emb.weight": helpers.random_tensor(rng, np.float32, (2000, 64)),
        "fc.weight": helpers.random_tensor(rng, np.float32, (512, 96)),
    }
    sealed, tensors, folder = _sealed_file_and_folder(tmp_path, key_file, model)
    shards = {f"model-0000{i}-of-00002.safetensors": {name: tensors[name]} for i, name in enumerate(model, 1)}
    helpers.write_checkpoint(folder, shards, {"format": "pt"}, {"total_size": 1})
    assert "sealed as a single file" in helpers.run_cli(["verify", folder, "--key", key_file])[1]
    return folder, tensors


def test_inspect_of_a_re_sharded_single_file_seal_says_what_it_is_not_a_set_with_no_id(
    tmp_path: Path, key_file: Path
) -> None:
    """inspect (no key) of a single-file seal re-sharded by save_pretrained warned 'the sealed shards' set records
    name no one set id: ...: none, ...: none', as of a damaged sealed set, where verify checks it as one model:
    it now says every shard carries one seal's header and no set record, gives that seal id (verify's), and warns
    of nothing."""
    folder, _ = _re_sharded(tmp_path, key_file)
    rc, out, err = helpers.run_cli(["inspect", folder])
    assert rc == 0 and "WARNING" not in out and "re-sharded since" in out, (out, err)
    rc, out, _ = helpers.run_cli(["inspect", folder, "--json"])
    seal_id = json.loads(helpers.run_cli(["verify", folder, "--key", key_file, "--json"])[1])["seal_id"]
    assert rc == 0 and json.loads(out)["seal"]["one_file_seal_id"] == seal_id


def test_a_re_sharded_single_file_seal_is_never_recovered_over_its_own_shard(tmp_path: Path, key_file: Path) -> None:
    """recover FOLDER FOLDER/model-00001-of-00002.safetensors of a re-sharded single-file seal replaced that input
    shard with the whole model (exit 0; the folder then held every tensor twice), where a file OUT that is the
    input is refused without --in-place: now exit 3, every file of the folder as it was."""
    folder, _ = _re_sharded(tmp_path, key_file)
    before = helpers.listing(folder)
    for out in before:
        rc, out_, err = helpers.run_cli(["recover", folder, folder / out, "--key", key_file])
        assert rc == 3 and "the input" in err, (out, out_, err)
        assert helpers.listing(folder) == before, out


def test_a_re_sharded_single_file_seal_is_never_recovered_into_its_own_folder(tmp_path: Path, key_file: Path) -> None:
    """recover FOLDER FOLDER/out.safetensors (a new name) wrote the whole model among the shards it was read from
    (exit 0): the input folder changed, and its next verify met a file no index lists. Refused, as a sealed set's
    output folder inside its input is: exit 3, the folder as it was."""
    folder, _ = _re_sharded(tmp_path, key_file)
    before = helpers.listing(folder)
    (folder / "sub").mkdir()
    for out in (folder / "out.safetensors", folder / "sub" / "out.safetensors"):
        rc, out_, err = helpers.run_cli(["recover", folder, out, "--key", key_file])
        assert rc == 3 and "inside" in err and "the input" in err, (out, out_, err)
        assert not out.exists() and helpers.listing(folder) == before


def test_a_re_sharded_single_file_seal_recovered_onto_a_key_file_says_it_holds_a_key(
    tmp_path: Path, key_file: Path
) -> None:
    """recover FOLDER KEYFILE of a re-sharded single-file seal said the shards 'hold one model sealed as a single
    file ... give a file as OUT', as for a folder OUT: the key file was kept (exit 3), but not for the reason said."""
    folder, _ = _re_sharded(tmp_path, key_file)
    held = key_file.read_bytes()
    rc, out, err = helpers.run_cli(["recover", folder, key_file, "--key", key_file])
    assert rc == 3 and "holds a ParamSeal key" in err and "OUT.safetensors" not in err, (out, err)
    assert key_file.read_bytes() == held


def test_a_re_sharded_single_file_seal_whose_index_lies_about_its_shards_is_not_intact(
    tmp_path: Path, key_file: Path
) -> None:
    """The index of a re-sharded single-file seal was never compared with its shards: one mapping 'emb.weight' to
    the shard that does not hold it, and a tensor no shard holds, verified intact (exit 0), where a sealed set's
    index that disagrees is tampering. Now exit 1 naming both; recover writes the one file sealed (no index)."""
    folder, tensors = _re_sharded(tmp_path, key_file)
    idx = json.loads((folder / sharded.INDEX).read_text())
    idx["weight_map"] |= {"emb.weight": "model-00002-of-00002.safetensors", "ghost": "model-00001-of-00002.safetensors"}
    (folder / sharded.INDEX).write_text(json.dumps(idx))
    rc, out, err = helpers.run_cli(["verify", folder, "--key", key_file])
    assert rc == 1 and "tensor 'emb.weight' is mapped to 'model-00002-of-00002.safetensors' but held by" in out, out
    assert "tensor 'ghost' is mapped to 'model-00001-of-00002.safetensors', which does not hold it" in out, (out, err)
    fixed = tmp_path / "fixed.safetensors"
    rc, out, err = helpers.run_cli(["recover", folder, fixed, "--key", key_file])
    assert rc == 0 and "ghost" in out, (out, err)
    helpers.assert_model_equal(helpers.read_st(fixed)[0], tensors)


@pytest.mark.parametrize("index_follows", [False, True])
def test_a_tensor_moved_whole_to_another_shard_is_found_there_and_put_back(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key, key_file: Path, index_follows: bool
) -> None:
    """A tensor moved to another shard, its data unchanged, was only "missing" from its sealed shard: beyond that
    shard's parity (exit 2, "NOT recoverable", nothing written) though every value of it was in the folder."""
    name = "layers.0.attn.weight"  # 6144 of the shard's 11328 values: far past what its parity rebuilds
    bad = tmp_path / "bad"
    shutil.copytree(sealed_ckpt, bad)
    t1, m1 = helpers.move_tensor(name, bad / SHARDS[0], bad / SHARDS[1])
    if index_follows:
        _edit_index(bad, lambda wm: wm.update({name: SHARDS[1]}))
    rc, out, _ = helpers.run_cli(["verify", bad, "--key", key_file, "--json"])
    rep = json.loads(out)
    assert rc == 1 and rep["recoverable"], out
    assert rep["tampered_tensors"] == [name] and rep["extra_tensors"] == [], out
    assert rep["tensors"][name]["issues"] == [f"moved to shard '{SHARDS[1]}'"], out
    assert rep["tensors"][name]["tampered_blocks"] == [], out
    assert any(
        f"tensor '{name}' sealed in shard '{SHARDS[0]}' is held by shard '{SHARDS[1]}'" in m
        for m in rep["metadata_issues"]
    ), out
    fixed = tmp_path / "fixed"
    rc, out, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file])
    assert rc == 0 and f"tensor '{name}' was written back into shard '{SHARDS[0]}'" in out, (out, err)
    assert helpers.run_cli(["verify", fixed, "--key", key_file])[0] == 0
    for s in SHARDS:  # bit-exact: the tensor back in its shard, and gone from the other
        assert (fixed / s).read_bytes() == (sealed_ckpt / s).read_bytes(), s
    rebuilt = json.loads((fixed / sharded.INDEX).read_text())["weight_map"]
    assert rebuilt[name] == SHARDS[0]
    # the tensor asked for by pattern is found there too
    assert sharded.verify_dir(bad, key, tensors="layers.0.*", workers=1).exit_code == 1
    t1[name].reshape(-1)[:6000] = 0  # the copy no longer its data: not taken for the sealed tensor
    helpers.write_st(bad / SHARDS[1], t1, m1)
    rep2 = sharded.verify_dir(bad, key, workers=1)
    assert rep2.exit_code == 2 and "missing" in rep2.tensors[name].issues


def test_a_shard_with_a_tensor_moved_out_is_checked_once_unless_a_copy_is_refused(
    tmp_path: Path, sealed_ckpt: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify checked the shard that lacks a moved tensor twice: the copy alone, then the whole shard with it."""
    from paramseal import _shard_moves

    name = "layers.0.attn.weight"
    t1, m1 = helpers.move_tensor(name, sealed_ckpt / SHARDS[0], sealed_ckpt / SHARDS[1])
    real, checked = _shard_moves.check_loaded, []

    def counted(loaded: Any, path: Path, *a: Any, **kw: Any) -> Any:
        checked.append(path.name)
        return real(loaded, path, *a, **kw)

    monkeypatch.setattr(_shard_moves, "check_loaded", counted)
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 1 and rep.tensors[name].issues == (f"moved to shard '{SHARDS[1]}'",), rep.tensors[name]
    assert checked == [SHARDS[0]]
    t1[name].reshape(-1)[:6000] = 0  # the copy no longer its data: the shard checked again without it
    helpers.write_st(sealed_ckpt / SHARDS[1], t1, m1)
    checked.clear()
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    assert rep.exit_code == 2 and "missing" in rep.tensors[name].issues and checked == [SHARDS[0]] * 2


def test_a_sealed_set_re_sharded_is_checked_seal_by_seal_not_as_a_single_file_seal(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """A sealed *set* re-saved with another shard size (save_pretrained: metadata gone, each sealed shard's header
    copy left in its weights) was called "one model sealed as a single file", checked under one shard's header,
    every other shard's tensor an "extra tensor not in the seal". Each seal's tensors are now checked under it."""
    rng = np.random.default_rng(3)
    shards = {
        shard: {
            f"layers.{i}.attn.weight": helpers.random_tensor(rng, np.float32, (256, 256)),
            f"layers.{i}.norm.weight": helpers.random_tensor(rng, np.float16, (256,)),
        }
        for i, shard in enumerate(SHARDS)
    }
    src = helpers.write_checkpoint(tmp_path / "src", shards, {"format": "pt"})
    sealed = tmp_path / "sealed"
    sharded.seal_dir(src, sealed, key, workers=1)
    tensors = {n: a for s in SHARDS for n, a in helpers.read_st(sealed / s)[0].items()}
    folder = tmp_path / "resharded"
    folder.mkdir()
    parts = {
        "model-00001-of-00002.safetensors": list(tensors)[:3],
        "model-00002-of-00002.safetensors": list(tensors)[3:],
    }

    def write(ts: dict[str, np.ndarray]) -> None:
        shards = {shard: {n: ts[n] for n in names} for shard, names in parts.items()}
        helpers.write_checkpoint(folder, shards, {"format": "pt"}, {"total_size": 1})

    write(tensors)
    rc, out, err = helpers.run_cli(["verify", folder, "--key", key_file, "--json"])
    rep = json.loads(out)
    assert rc == 2 and rep["tampered_tensors"] == [] and rep["extra_tensors"] == [], out
    assert not any("single file" in n for n in rep["notes"]), out
    assert any("re-sharded" in m and "3 sealed shards" in m for m in rep["metadata_issues"]), out
    hit = {n: np.array(a) for n, a in tensors.items()}
    hit["layers.2.attn.weight"].view(np.uint32).reshape(-1)[100] ^= 1 << 29
    write(hit)
    rep = sharded.verify_dir(folder, key, workers=1)
    assert rep.tampered_tensors == ["layers.2.attn.weight"] and rep.tensors["layers.2.attn.weight"].tampered_blocks
    rc, out, err = helpers.run_cli(["recover", folder, tmp_path / "out", "--key", key_file])
    assert rc == 2 and "re-sharded" in out and not (tmp_path / "out").exists(), (out, err)


def test_a_tensor_added_to_a_shard_and_the_index_is_not_said_to_be_absent_from_that_shard(
    tmp_path: Path, sealed_ckpt: Path, key_file: Path
) -> None:
    """A tensor added to a shard and listed in the index: the index "maps it to a shard which does not hold it",
    while the shard does hold it (not sealed with it). The finding now says what is wrong: it is no sealed tensor."""
    t, meta = helpers.read_st(sealed_ckpt / SHARDS[0])
    t["layers.0.added"] = np.ones(8, np.float32)
    helpers.write_st(sealed_ckpt / SHARDS[0], t, meta)
    _edit_index(sealed_ckpt, lambda wm: wm.update({"layers.0.added": SHARDS[0], "ghost": SHARDS[1]}))
    rc, out, _ = helpers.run_cli(["verify", sealed_ckpt, "--key", key_file, "--json"])
    rep = json.loads(out)
    assert rc == 1 and rep["extra_tensors"] == [f"{SHARDS[0]}:layers.0.added"], out
    issues = [m for m in rep["metadata_issues"] if "'layers.0.added'" in m]
    assert issues == [
        f"the index maps tensor 'layers.0.added' to shard '{SHARDS[0]}', which holds it but was not sealed with it"
    ], out
    assert f"the index maps tensor 'ghost' to shard '{SHARDS[1]}', which does not hold it" in rep["metadata_issues"]
    rc, _, _ = helpers.run_cli(["recover", sealed_ckpt, tmp_path / "fixed", "--key", key_file])
    assert (
        rc == 0 and "layers.0.added" not in json.loads((tmp_path / "fixed" / sharded.INDEX).read_text())["weight_map"]
    )


def test_an_existing_file_as_the_output_folder_is_not_called_a_folder(sealed_ckpt: Path, key_file: Path) -> None:
    """recover DIR DIR/SHARD said "output folder '.../model-00001-of-00003.safetensors' already exists"."""
    for argv in (
        ["recover", sealed_ckpt, sealed_ckpt / SHARDS[0]],
        ["recover", sealed_ckpt, sealed_ckpt / "config.json"],
    ):
        before = (Path(argv[2])).read_bytes()
        rc, out, err = helpers.run_cli([*argv, "--key", key_file])
        assert rc == 3 and out == "" and "is an existing file" in err and "output folder" not in err, err
        assert Path(argv[2]).read_bytes() == before


def test_a_partial_verification_notes_a_missing_shard_it_was_not_asked_about(
    sealed_ckpt: Path, key: paramseal.Key
) -> None:
    """verify --tensors 'layers.0.*' on a folder missing another shard said OK and nothing of it: the loader fails."""
    (sealed_ckpt / SHARDS[1]).unlink()
    rep = sharded.verify_dir(sealed_ckpt, key, tensors="layers.0.*", workers=1)
    assert rep.exit_code == 0 and rep.tampered_tensors == []  # what was asked for is intact
    said = [n for n in rep.notes if f"shard '{SHARDS[1]}'" in n]
    assert len(said) == 1 and "missing from the folder" in said[0] and "without --tensors" in said[0], rep.notes
    assert not any(f"shard '{SHARDS[2]}'" in n for n in rep.notes)


def test_a_re_sharded_single_file_seals_header_copies_are_authenticated_once(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """one_file_seal scans every tensor for header copies (several seals may have a carrier each): each copy of
    one seal, the same text, was parsed and authenticated again (the whole header, its tag table included)."""
    from paramseal import _embed, _resharded

    folder, tensors = _re_sharded(tmp_path, key_file)
    texts = [t for n in tensors for _, t in _embed.header_copies({n: tensors[n]})]
    assert len(texts) > 1 and len(set(texts)) == 1  # one seal, a copy in each carrier
    real, calls = _resharded.parse_header, []
    monkeypatch.setattr(_resharded, "parse_header", lambda text, key: calls.append(text) or real(text, key))
    rep = sharded.verify_dir(folder, paramseal.load_key(key_file), workers=1)
    assert rep.ok and len(calls) == 1, (rep.summary(), len(calls))


def test_a_note_every_shard_gives_is_said_once(
    sealed_ckpt: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each shard of a set sealed with the older block MAC gives its long note: the set's report repeated it once
    per shard. The note is made here for this version's MAC, as verify makes it for the older one's."""
    from paramseal import _mac

    monkeypatch.setattr(sys.modules["paramseal.verify"], "MAC_V1", _mac.MAC_NAME)
    rep = sharded.verify_dir(sealed_ckpt, key, workers=1)
    said = [n for n in rep.notes if "older block MAC" in n]
    assert rep.status == "intact" and len(said) == 1 and said[0].startswith("every shard: "), rep.notes
    one = files.verify_file(next(sealed_ckpt.glob("*.safetensors")), key)
    assert sum("older block MAC" in n for n in one.notes) == 1  # a single file's, as before


@pytest.mark.parametrize("verb", ["seal", "recover"])
def test_an_output_folder_inside_the_input_or_the_input_itself_is_refused(
    tmp_path: Path, checkpoint: Path, sealed_ckpt: Path, key_file: Path, verb: str
) -> None:
    """`recover DIR DIR/fixed` wrote the new set inside the one it was made from (and the next recover or seal of
    DIR copied it along): refused before anything is written, as OUT == IN and IN inside OUT are."""
    src = checkpoint if verb == "seal" else sealed_ckpt
    (tmp_path / "alias").symlink_to(src, target_is_directory=True)
    before = helpers.listing(tmp_path)
    for out in (src / "sub", src / "." / "sub", tmp_path / "alias" / "sub", src / "1_Pooling" / "sub"):
        rc, stdout, err = helpers.run_cli([verb, src, out, "--key", key_file])
        assert rc == 3 and stdout == "" and "Traceback" not in err, err
        assert f"output folder '{out}' is inside '{src}', the input" in err and "give a folder outside it" in err, err
        assert helpers.listing(tmp_path) == before
    for out, said in ((src, "onto itself"), (src.parent, "already exists")):
        rc, _, err = helpers.run_cli([verb, src, out, "--key", key_file])
        assert rc == 3 and said in err, err
    assert helpers.listing(tmp_path) == before


def _progress_job(name: str) -> None:  # run in a worker process: module level, to be found there
    from paramseal._progress import Progress

    prog = Progress("verify", 1, enabled=True)
    prog.step(name)
    prog.done()


def test_a_worker_process_progress_line_masks_the_key_like_words(capfd: pytest.CaptureFixture[str]) -> None:
    """Each worker printed its own progress line to the terminal it inherits, key text typed as a pattern unmasked."""
    from paramseal._cli_streams import KeyMask, warnings_escaped
    from paramseal._shard_pool import _map

    secret = "ab" * 32
    with warnings_escaped(KeyMask((secret,))):  # the command's mask, which the workers take
        _map(_progress_job, [(f"{secret}.w",), (f"{secret}.v",)], workers=2)
    err = capfd.readouterr().err
    assert err.count("verify [") == 2 and "<key-like text, not shown>" in err and secret[:16] not in err, err


def _warning_job(text: str) -> None:  # run in a worker process
    import warnings

    warnings.warn(f"\x1b[2J{text}\rOK: forged", UserWarning, stacklevel=1)


def test_a_worker_process_warnings_are_escaped_and_masked_as_the_commands(
    capfd: pytest.CaptureFixture[str], key: paramseal.Key
) -> None:
    """A worker's Python warnings were printed raw: an escape sequence or '\\r' from a name, key text unmasked."""
    from argparse import Namespace

    from paramseal._cli_streams import KeyMask, warnings_escaped
    from paramseal._shard_pool import _map

    typed = "cd" * 32
    with warnings_escaped(KeyMask((typed,), args=Namespace(loaded_key=key))):
        _map(_warning_job, [(typed,), (key.secret.hex().upper(),)], workers=2)  # a key file's digits, either case
    err = capfd.readouterr().err
    assert err.count("warning: UserWarning: \\x1b[2J<key-like text, not shown>\\rOK: forged") == 2, err
    assert "\x1b" not in err and "\r" not in err and typed not in err and key.secret.hex().upper() not in err, err
