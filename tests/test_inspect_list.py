"""``paramseal inspect --list``: each tensor's name, dtype, shape, values and watermark bits."""

from __future__ import annotations

import json
from pathlib import Path

import helpers
import numpy as np
from safetensors.numpy import save_file

from paramseal import files


def _model(path: Path) -> Path:
    rng = np.random.default_rng(3)
    save_file(
        {
            "w\x1b[31m": helpers.random_tensor(rng, np.float32, (300, 70)),  # a name with a terminal escape
            "h": helpers.random_tensor(rng, np.float16, (4, 1000)),
            "ids": np.arange(10, dtype=np.int64),
        },
        str(path),
    )
    return path


def test_list_names_every_tensor_with_its_dtype_shape_values_and_sealed_bits(tmp_path: Path, key_file: Path) -> None:
    sealed = tmp_path / "s.safetensors"
    assert helpers.run_cli(["seal", _model(tmp_path / "m.safetensors"), sealed, "--key", key_file])[0] == 0
    rc, out, err = helpers.run_cli(["inspect", sealed, "--list"])
    assert rc == 0, err
    rows = out[out.index("tensors (name") :].splitlines()[1:]
    assert sorted(rows) == sorted(
        ["  w\\x1b[31m  F32  300x70  21000  k=8", "  h  F16  4x1000  4000  k=2", "  ids  I64  10  10  k=0"]
    )
    rc, out, _ = helpers.run_cli(["inspect", sealed, "--list", "--json"])
    got = {r["name"]: r for r in json.loads(out)["tensor_list"]}
    assert got["h"] == {"name": "h", "dtype": "F16", "shape": [4, 1000], "values": 4000, "k": 2}
    assert got["w\x1b[31m"]["k"] == 8 and got["ids"]["k"] == 0


def test_an_unsealed_model_is_listed_without_bits_and_without_list_nothing_is(tmp_path: Path) -> None:
    model = _model(tmp_path / "m.safetensors")
    rc, out, _ = helpers.run_cli(["inspect", model, "--list", "--json"])
    assert rc == 0
    assert {r["name"]: r["shape"] for r in json.loads(out)["tensor_list"]} == {
        "w\x1b[31m": [300, 70],
        "h": [4, 1000],
        "ids": [10],
    }
    assert all("k" not in r for r in json.loads(out)["tensor_list"])
    for argv in (["inspect", model], ["inspect", model, "--json"]):
        rc, out, _ = helpers.run_cli(argv)
        assert rc == 0 and "tensor_list" not in out and "tensors (name" not in out
    # the API always gives the table
    assert sorted(r["name"] for r in files.inspect_file(model)["tensor_list"]) == ["h", "ids", "w\x1b[31m"]


def test_a_sharded_folder_is_listed_shard_by_shard(tmp_path: Path, key_file: Path) -> None:
    rng = np.random.default_rng(4)
    shards = {
        f"model-0000{i + 1}-of-00002.safetensors": {f"l{i}.w": helpers.random_tensor(rng, np.float32, (64, 80))}
        for i in range(2)
    }
    folder = helpers.write_checkpoint(tmp_path / "ckpt", shards, {"format": "pt"}, {"total_size": 1})
    sealed = tmp_path / "sealed"
    assert helpers.run_cli(["seal", folder, sealed, "--key", key_file])[0] == 0
    rc, out, err = helpers.run_cli(["inspect", sealed, "--list"])
    assert rc == 0, err
    assert "shard model-00001-of-00002.safetensors:\n  l0.w  F32  64x80  5120  k=8\n" in out
    assert "shard model-00002-of-00002.safetensors:\n  l1.w  F32  64x80  5120  k=8\n" in out
    rc, out, _ = helpers.run_cli(["inspect", sealed, "--json"])
    assert all("tensor_list" not in s for s in json.loads(out)["per_shard"].values())
