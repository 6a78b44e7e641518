"""Found walking through the README as a new user: what a script or a typing slip meets on the command line."""

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

run = helpers.run_cli


def test_seal_json_gives_the_seal_id_and_settings_to_a_script(
    tmp_path: Path, key_file: Path, key: paramseal.Key
) -> None:
    """seal had no --json: a script had to scrape 'seal id: ...' from a text line (verify's `seal_id` is JSON)."""
    model = helpers.write_st(tmp_path / "model.safetensors", helpers.fp32_model(20_000, tensors=2))
    out_path, kept = tmp_path / "sealed.safetensors", tmp_path / "h.json"
    rc, out, err = run(["seal", model, out_path, "--key", key_file, "--json", "--header-out", kept])
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["kind"] == "seal" and doc["status"] == "sealed" and doc["tensors"] == 2
    assert doc["output"] == str(out_path) and doc["header_out"] == str(kept)
    assert doc["key_fingerprint"] == key.fingerprint and doc["level"] == "standard" and doc["bits"] is None
    assert doc["code"] == "irs" and doc["k"] == {"F32": 8}
    rc, vout, _ = run(["verify", out_path, "--key", key_file, "--json"])
    assert rc == 0 and doc["seal_id"] == json.loads(vout)["seal_id"]
    assert key.secret.hex() not in out + err


def test_seal_json_of_a_sharded_folder_and_of_an_error_are_documents(tmp_path: Path, key_file: Path) -> None:
    m = helpers.fp32_model(4_000, tensors=2)
    shards = {f"model-0000{i + 1}-of-00002.safetensors": {n: m[n]} for i, n in enumerate(m)}
    folder = helpers.write_checkpoint(tmp_path / "model", shards)
    rc, out, err = run(["seal", folder, tmp_path / "sealed", "--key", key_file, "--json", "--bits", "16"])
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["kind"] == "seal" and doc["shards"] == 2 and doc["output"] == str(tmp_path / "sealed")
    assert doc["bits"] == 16 and doc["level"] is None
    rc, vout, _ = run(["verify", tmp_path / "sealed", "--key", key_file, "--json"])
    assert rc == 0 and doc["seal_id"] == json.loads(vout)["seal_id"]
    rc, out, err = run(["seal", tmp_path / "none.safetensors", tmp_path / "o.safetensors", "--key", key_file, "--json"])
    assert rc == 3 and json.loads(out) == {
        "kind": "seal",
        "status": "error",
        "recoverable": False,
        "exit_code": 3,
        "error": err.strip().removeprefix("error: "),
    }


def test_a_dash_for_the_key_says_how_to_read_a_key_from_standard_input(
    tmp_path: Path, sealed_file: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """`--key -` said "create it with 'paramseal keygen -'", and `keygen -` wrote a key file named '-'."""
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(["verify", sealed_file, "--key", "-"])
    assert rc == 3 and "keygen -" not in err and "--key /dev/stdin" in err, err
    rc, out, err = run(["verify", sealed_file, "--key=-", "--json"])
    assert rc == 3 and "--key /dev/stdin" in json.loads(out)["error"]
    rc, out, err = run(["keygen", "-"])
    assert rc == 3 and "./-" in err and not (tmp_path / "-").exists(), (out, err)
    assert run(["keygen", "./-"])[0] == 0 and (tmp_path / "-").is_file()  # a file of that name, asked for plainly
    rc, out, err = run(["verify", sealed_file, "--key", "-"])  # that file now exists: it is the key file given
    assert rc == 3 and "key does not match" in err, err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["verify", "--help"]])
def test_help_on_a_full_disk_is_exit_3_not_a_silent_0(argv: list[str]) -> None:
    """`paramseal --help > /dev/full` lost the text and exited 0, where any other output that fails is exit 3."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "paramseal", *argv], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120
        )
    assert proc.returncode == 3 and "standard output: No space left" in proc.stderr, proc
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert helpers.run_cli(argv)[0] == 0  # a standard output that takes it: exit 0 as before


class _OwnWeights:
    """A task model whose loss runs on weights of its own, none of the file's (as minilm's on the demo MLP)."""

    name = "own"
    finetune_tensors = ("encoder.weight",)

    def __init__(self) -> None:
        import torch

        self.w = torch.ones(3, requires_grad=True)

    def loss(self, params: dict, batch: int | None):  # type: ignore[no-untyped-def]
        return (self.w**2).sum()


def test_bfa_and_finetune_on_another_task_models_weights_are_usage_errors(tmp_path: Path) -> None:
    """`attack --kind bfa --model minilm` on the demo MLP was an internal error (IndexError; finetune: ValueError)."""
    pytest.importorskip("torch")
    from paramseal.attacks import AttackSpec, attack
    from paramseal.errors import UsageError
    from paramseal.formats import Loaded

    m = Loaded({"fc1.weight": np.full((4, 16), 0.5, np.float32)}, {})
    for spec in (AttackSpec("bfa", n=2), AttackSpec("finetune", steps=1)):
        with pytest.raises(UsageError, match=r"--model own\)"):
            attack(m, spec, model=_OwnWeights())


def test_attack_model_help_names_every_built_in_task_model() -> None:
    """`attack --help` said '(mlp or cnn)', while --model minilm runs bfa and finetune on MiniLM too."""
    from paramseal._cli_parser import build_parser
    from paramseal.evaluation.models import MODELS

    helps = {a.dest: a.help for a in build_parser().commands["attack"]._actions}
    assert all(m in str(helps["model"]) for m in MODELS), helps["model"]


def test_a_key_or_header_file_given_twice_is_refused_not_the_last_taken(
    tmp_path: Path, sealed_file: Path, key_file: Path, model_file: Path
) -> None:
    """`--key a.key --key b.key` used b.key alone, and two --header-out kept the header in the second file only."""
    other = paramseal.write_key(tmp_path / "other.key", paramseal.Key.generate())
    rc, out, err = run(["verify", sealed_file, "--key", other, "--key", key_file])
    assert rc == 3 and "--key given twice" in err and "OK" not in out, (out, err)
    kept = tmp_path / "h.json"
    rc, out, err = run(
        ["seal", model_file, tmp_path / "o.safetensors", "--key", key_file, "--reseal"]
        + ["--header-out", kept, "--header-out", tmp_path / "h2.json"]
    )
    assert rc == 3 and "--header-out given twice" in err and not (tmp_path / "o.safetensors").exists(), err
    rc, out, err = run(["verify", sealed_file, "--key", key_file, "--header-from", sealed_file, "--header-from", kept])
    assert rc == 3 and "--header-from given twice" in err, err
    assert run(["verify", sealed_file, "--key", key_file, "--header-from", sealed_file])[0] == 0
