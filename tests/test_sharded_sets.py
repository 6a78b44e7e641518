"""Sharded sets: what a folder's set records say when its index is gone, and files added to a sealed set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
