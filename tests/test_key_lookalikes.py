"""A SHA-256 checksum file holds what a key file holds (64 hex digits): refused as a key is, with a way on."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np

import paramseal
from paramseal import files
from tests import helpers


def _checkpoint(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    shards = {
        f"model-0000{i}-of-00002.safetensors": {f"layers.{i}.weight": helpers.random_tensor(rng, np.float32, (64, 48))}
        for i in (1, 2)
    }
    return helpers.write_checkpoint(tmp_path / "ckpt", shards, {"format": "pt"}, {"total_size": 1})


def _digest_file(path: Path, of: Path) -> str:
    digest = hashlib.sha256(of.read_bytes()).hexdigest()  # `sha256sum F | cut -c1-64 > F.sha256`: a key's bytes
    path.write_text(digest + "\n")
    return digest


def test_a_checksum_file_in_a_checkpoint_is_refused_with_what_to_do(tmp_path: Path, key_file: Path) -> None:
    """keygen writes 64 lowercase hex digits and a newline, under any name; so does sha256sum: the two cannot be
    told apart, and a key shipped with a model is worse than a refusal. The refusal said the file 'holds a
    ParamSeal key', which left the owner of a model.sha256 with no way on; it says how to go on now."""
    ckpt = _checkpoint(tmp_path)
    shard = next(ckpt.glob("*.safetensors"))
    digest = _digest_file(ckpt / "model.sha256", shard)
    assert paramseal.load_key(ckpt / "model.sha256")  # the same text as a key file: it loads as one
    before = helpers.listing(tmp_path)
    rc, out, err = helpers.run_cli(["seal", ckpt, tmp_path / "out", "--key", key_file])
    assert rc == 3 and helpers.listing(tmp_path) == before and digest not in out + err, (out, err)
    assert "SHA-256 checksum file, which cannot be told from a key" in err, err
    assert f"move it out of '{ckpt}' (nothing was written), and for a checksum, make one of the output anew" in err
    shutil.move(ckpt / "model.sha256", tmp_path / "model.sha256")  # as the message says
    rc, out, err = helpers.run_cli(["seal", ckpt, tmp_path / "out", "--key", key_file])
    assert rc == 0 and "error" not in err and not (tmp_path / "out" / "model.sha256").exists(), (out, err)


def test_an_output_over_a_checksum_file_is_refused_with_what_to_do(
    tmp_path: Path, model_file: Path, key_file: Path
) -> None:
    """The output's refusal too: it said 'holds a ParamSeal key ... give another output path' of a checksum file."""
    target = tmp_path / "model.safetensors.sha256"
    digest = _digest_file(target, model_file)
    argv = ["seal", model_file, target, "--key", key_file]
    rc, out, err = helpers.run_cli(argv)
    assert rc == 3 and target.read_text() == digest + "\n" and digest not in out + err, (out, err)
    assert "SHA-256 checksum file, which cannot be told from a key" in err, err
    assert f"give another output path, or remove '{target}' first if it holds no key" in err, err
    out_file = tmp_path / "sealed.safetensors"  # an output of a model's name over a checksum: refused the same
    _digest_file(out_file, model_file)
    assert helpers.run_cli(["seal", model_file, out_file, "--key", key_file])[0] == 3
    out_file.unlink()  # removed first, as the message says: the output is written
    rc, out, err = helpers.run_cli(["seal", model_file, out_file, "--key", key_file])
    assert rc == 0 and files.verify_file(out_file, paramseal.load_key(key_file)).status == "intact", (out, err)
