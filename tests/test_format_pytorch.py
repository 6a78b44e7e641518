"""PyTorch state-dict files: the shared suite (zip and legacy formats), safe loading, wrappers, no torch."""

from __future__ import annotations

import errno
import importlib
import io
import json
import os
import pickle
import shutil
import sys
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import helpers
import ml_dtypes
import numpy as np
import pytest
from adapter_suite import AdapterTests

import paramseal
from paramseal import FormatError, files
from paramseal._weights_header import header_from_weights
from paramseal.errors import MissingDependencyError
from paramseal.formats import Loaded, adapter_for
from paramseal.formats.pytorch import META_ENTRY

torch = pytest.importorskip("torch")


def to_torch(a: np.ndarray) -> torch.Tensor:
    """The documented lossless conversion (bf16 through an int16 view), done here independently."""
    c = np.array(a, copy=True)
    if c.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(c.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(c)


def from_torch(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return t.numpy().copy()


def with_metadata(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, torch.Tensor]:
    """``state`` with ``metadata`` where the adapter keeps it (none: a plain dict, as most tools write)."""
    if not metadata:
        return state
    out = OrderedDict(state)
    out._metadata = OrderedDict({META_ENTRY: dict(metadata)})  # type: ignore[attr-defined]
    return out


# the suite's models have no room for a header copy in their weights: seal_file warns so (tested below)
@pytest.mark.filterwarnings("ignore::paramseal.ParamSealWarning")
class TestPyTorchSuite(AdapterTests):
    adapter_name = "pytorch"
    suffix = ".pt"
    keeps_metadata = True  # in the state dict's _metadata, under META_ENTRY

    def make_file(self, path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
        torch.save(with_metadata({k: to_torch(v) for k, v in tensors.items()}, metadata), path)

    def read_native(self, path: Path) -> dict[str, np.ndarray]:
        return {k: from_torch(v) for k, v in torch.load(path, weights_only=True).items()}

    def malformed_cases(self) -> dict[str, bytes]:
        buf = io.BytesIO()
        torch.save([torch.ones(3)], buf)  # a list, not a state dict
        other = io.BytesIO()
        torch.save({"w": torch.ones(3), "step": 5}, other)  # a non-tensor entry
        return {"a_list": buf.getvalue(), "non_tensor_entry": other.getvalue()}


class TestPyTorchLegacySuite(TestPyTorchSuite):
    """The pre-1.6 (non-zip) torch.save format, under the Hugging Face ``.bin`` extension."""

    suffix = ".bin"

    def make_file(self, path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
        state = with_metadata({k: to_torch(v) for k, v in tensors.items()}, metadata)
        torch.save(state, path, _use_new_zipfile_serialization=False)


# --------------------------------------------------------------------------- never unpickle code


class Payload:
    """Unpickling this runs ``touch MARKER`` through os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


def _malicious(kind: str, path: Path, marker: Path) -> None:
    obj = {"w": torch.ones(4), "evil": Payload(marker)}
    if kind == "zip":
        torch.save(obj, path)
    elif kind == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle renamed to .pt
        path.write_bytes(pickle.dumps(obj))


@pytest.mark.parametrize("kind", ["zip", "legacy", "bare_pickle"])
def test_malicious_pickle_is_refused_and_its_payload_never_runs(tmp_path: Path, key_file: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    _malicious(kind, bad, marker)
    with pytest.raises(FormatError) as ei:
        adapter_for(bad).read(bad)
    msg = str(ei.value)
    assert "evil.pt" in msg and "weights_only=True" in msg and "never runs code" in msg, msg
    for argv in (["verify", bad, "--key", key_file], ["seal", bad, tmp_path / "o.pt", "--key", key_file],
                 ["inspect", bad]):  # fmt: skip
        rc, out, err = helpers.run_cli(argv)
        assert rc == 3 and "evil.pt" in err and "Traceback" not in err, (rc, out, err)
    assert not (tmp_path / "o.pt").exists()
    assert not marker.exists(), "the pickle payload ran"


def test_the_payload_is_real_so_the_refusal_test_can_fail(tmp_path: Path) -> None:
    """Control: an unsafe load of the same file does run the payload."""
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    _malicious("zip", bad, marker)
    torch.load(bad, weights_only=False)
    assert marker.exists()


# --------------------------------------------------------------------------- what counts as a state dict


def _sd() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"fc.weight": torch.randn(4, 3, generator=g), "fc.bias": torch.randn(4, generator=g)}


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "module"])
def test_training_checkpoint_wrappers_are_unwrapped(tmp_path: Path, wrapper: str) -> None:
    sd = _sd()
    p = tmp_path / "ckpt.pth"
    torch.save({wrapper: sd, "epoch": 3, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, p)
    got = adapter_for(p).read(p)
    helpers.assert_model_equal(got.tensors, {k: v.numpy() for k, v in sd.items()})
    assert list(got.tensors) == list(sd)
    assert got.others == ("epoch", "optimizer")


def test_a_view_larger_than_its_storage_is_refused_before_it_costs_its_size(tmp_path: Path, key_file: Path) -> None:
    """A file of 2 KB held torch.zeros(1).expand(2**31): every command made it an 8 GiB array (found in a review
    of malicious files; under a 6 GB limit, "out of memory" and a traceback). A view within its storage (the
    position_ids buffer Hugging Face models keep, arange(n).expand(1, -1)) still reads."""
    p = tmp_path / "expanded.pt"
    torch.save({**_sd(), "mask": torch.zeros(1).expand(2**20)}, p)
    out = tmp_path / "o.pt"
    for argv in (["inspect", p], ["verify", p, "--key", key_file], ["seal", p, out, "--key", key_file]):
        rc, _, err = helpers.run_cli(argv)
        assert rc == 3 and "tensor 'mask' is a view of 4194304 bytes over a storage of 4" in err, (argv, err)
    assert not out.exists()
    ok = tmp_path / "position_ids.pt"
    torch.save({**_sd(), "position_ids": torch.arange(8).expand(1, -1)}, ok)
    assert adapter_for(ok).read(ok).tensors["position_ids"].tolist() == [list(range(8))]


def test_a_wrapper_key_holding_a_name_does_not_count_as_a_second_state_dict(tmp_path: Path) -> None:
    """Checkpoints often keep the architecture's name under 'model' beside the weights under 'state_dict'."""
    sd = _sd()
    p = tmp_path / "ckpt.pth"
    torch.save({"model": "resnet18", "state_dict": sd, "epoch": 3}, p)
    got = adapter_for(p).read(p)
    assert list(got.tensors) == list(sd) and got.others == ("model", "epoch")


def _sealed_fc(tmp_path: Path, key: paramseal.Key) -> dict[str, torch.Tensor]:
    """The state dict of a sealed .pt (one 300x200 layer), as torch.load reads it."""
    src, sealed = tmp_path / "m.pt", tmp_path / "s.pt"
    g = torch.Generator().manual_seed(0)
    torch.save({"fc.weight": torch.randn(300, 200, generator=g), "fc.bias": torch.randn(300, generator=g)}, src)
    files.seal_file(src, sealed, key)
    sd: dict[str, torch.Tensor] = torch.load(sealed, weights_only=True)
    return sd


def _resaved(path: Path, out: Path) -> Path:
    """``path`` saved again without ParamSeal's _metadata entry, as torch.save(model.state_dict()) writes it."""
    sd = torch.load(path, weights_only=True)
    getattr(sd, "_metadata", {}).pop(META_ENTRY, None)
    torch.save(sd, out)
    return out


def test_a_pt_saved_again_by_torch_and_recovered_gets_its_header_entry_back(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """torch.save(model.state_dict()) drops the '.paramseal' entry; recover wrote its output without it too.

    The output then kept its header in its weights only, as the re-saved file did (a recovered .npz or
    .safetensors was said to have had its metadata 'stripped'), and was not the file seal wrote.
    Saved again under the sealed file's record names (torch names them after the file: 'm/', as seal kept them).
    """
    sd = _sealed_fc(tmp_path, key)
    sd["fc.weight"][-2:] = 0.5  # clear of the header copy at the start
    getattr(sd, "_metadata", {}).pop(META_ENTRY, None)
    bad, fixed = tmp_path / "again" / "m.pt", tmp_path / "fixed.pt"
    bad.parent.mkdir()
    torch.save(sd, bad)
    rc, out, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file])
    assert rc == 0 and "read from the weights" in out, (out, err)  # the input's header came from its weights
    assert META_ENTRY in getattr(torch.load(fixed, weights_only=True), "_metadata", {})
    rc, out, err = helpers.run_cli(["verify", fixed, "--key", key_file])
    assert rc == 0 and "note" not in out, (out, err)
    assert helpers.sha256(fixed) == helpers.sha256(tmp_path / "s.pt")  # the file seal wrote, byte for byte


def _flip_in_record(src: Path, dst: Path, record: str, at: int) -> None:
    """``src`` copied to ``dst`` with one bit of zip member ``record``'s data flipped on disk (its CRC left stale)."""
    import zipfile

    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        start = zf.getinfo(record).header_offset
    name_len, extra_len = (
        int.from_bytes(raw[start + 26 : start + 28], "little"),
        int.from_bytes(raw[start + 28 : start + 30], "little"),
    )
    raw[start + 30 + name_len + extra_len + at] ^= 0x40
    dst.write_bytes(bytes(raw))


def test_a_pt_torch_saved_from_sealed_state_dict_is_recovered_to_its_own_bytes(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """torch.save(sd, 'm.pt') names the zip records 'm/...'; recover wrote 'archive/...', so a bit flipped on
    disk was recovered to the sealed tensors but not to the sealed file. The output keeps the input's names."""
    import zipfile

    import paramseal.torch as pst

    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))
    sealed = tmp_path / "m.pt"
    torch.save(pst.sealed_state_dict(net, pst.seal_module(net, key).header_json), sealed)
    bad, fixed = tmp_path / "m_bad.pt", tmp_path / "m_fixed.pt"
    _flip_in_record(sealed, bad, "m/data/0", 42)
    assert helpers.run_cli(["verify", bad, "--key", key_file])[0] == 1
    assert helpers.run_cli(["recover", bad, fixed, "--key", key_file])[0] == 0
    assert fixed.read_bytes() == sealed.read_bytes()
    # saved again under another name, its records are named after that file: the output keeps that name
    sd = torch.load(sealed, weights_only=True)
    sd["0.weight"][0, 0] += 1
    torch.save(sd, bad)
    assert helpers.run_cli(["recover", bad, fixed, "--key", key_file])[0] == 0
    with zipfile.ZipFile(fixed) as zf:
        assert zf.namelist()[0] == "m_bad/data.pkl"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="the named write of a non-ASCII path needs /proc")
def test_a_pt_moved_into_a_folder_whose_path_is_not_ascii_is_recovered_to_its_own_bytes(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """torch writes a path that is not ASCII through a file object, which names the records 'archive/': the output
    of a file sealed elsewhere ('m/...') and moved into such a folder lost its names again."""
    import paramseal.torch as pst

    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))
    torch.save(pst.sealed_state_dict(net, pst.seal_module(net, key).header_json), tmp_path / "m.pt")
    folder = tmp_path / "modèles"
    folder.mkdir()
    sealed = (tmp_path / "m.pt").rename(folder / "m.pt")
    bad, fixed = folder / "m_bad.pt", folder / "m_fixed.pt"
    _flip_in_record(sealed, bad, "m/data/0", 42)
    assert helpers.run_cli(["recover", bad, fixed, "--key", key_file])[0] == 0
    assert fixed.read_bytes() == sealed.read_bytes()
    assert sorted(p.name for p in folder.iterdir()) == ["m.pt", "m_bad.pt", "m_fixed.pt"]


def test_a_failure_to_open_the_named_write_s_folder_leaves_no_temporary_folder(
    tmp_path: Path, key: paramseal.Key, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder torch writes a non-ASCII path's file in was opened (for /proc/self/fd) outside the block that
    removes it: a failed open (EMFILE) left the hidden '.m_fixed.pt...tmp' folder beside the output."""
    import errno
    import os

    import paramseal.torch as pst

    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))
    folder = tmp_path / "modèles"
    folder.mkdir()
    torch.save(pst.sealed_state_dict(net, pst.seal_module(net, key).header_json), tmp_path / "m.pt")
    sealed = (tmp_path / "m.pt").rename(folder / "m.pt")  # records 'm/...', which the output keeps
    real = os.open

    def no_folder(p: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.path.isdir(p) and str(p).endswith(".tmp"):
            raise OSError(errno.EMFILE, "Too many open files")
        return real(p, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_folder)
    rc, _, err = helpers.run_cli(["recover", sealed, folder / "m_fixed.pt", "--key", key_file])
    monkeypatch.undo()
    assert rc == 3 and "Too many open files" in err, err
    assert sorted(p.name for p in folder.iterdir()) == ["m.pt"]


def test_recover_into_a_small_pt_warns_as_seal_into_it_does(tmp_path: Path, key_file: Path) -> None:
    """A .pt whose weights have no room for a header copy keeps it only in its _metadata entry, which a re-save
    drops: seal into it warned so, recover into it wrote the same file without a word (.npz and .safetensors
    keep the header in metadata a re-save keeps, and warn of nothing)."""
    g = torch.Generator().manual_seed(0)
    src, sealed, bad = tmp_path / "m.pt", tmp_path / "s.safetensors", tmp_path / "bad.safetensors"
    torch.save({"w": torch.randn(128, 128, generator=g), "b": torch.randn(128, generator=g)}, src)
    rc, _, err = helpers.run_cli(["seal", src, tmp_path / "s.pt", "--key", key_file])
    assert rc == 0 and "warning: " in err, err
    seal_warning = err[err.index("warning: ") :].split("; keep the header")[0]
    rc, _, err = helpers.run_cli(["seal", src, sealed, "--key", key_file])
    assert rc == 0 and "warning" not in err, err
    raw = bytearray(sealed.read_bytes())
    raw[-5] ^= 0x01  # a low bit of the last value
    bad.write_bytes(bytes(raw))
    for ext in ("safetensors", "npz"):
        rc, _, err = helpers.run_cli(["recover", bad, tmp_path / f"r.{ext}", "--key", key_file])
        assert rc == 0 and "warning" not in err, (ext, err)
    rc, _, err = helpers.run_cli(["recover", bad, tmp_path / "r.pt", "--key", key_file])
    assert rc == 0 and err.count("warning: ") == 1, err
    assert seal_warning.replace("'" + str(tmp_path / "s.pt"), "'" + str(tmp_path / "r.pt")) in err, err
    assert "or recover to .safetensors" in err, err


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "module"])
def test_a_sealed_state_dict_wrapped_with_other_entries_is_tampered(
    tmp_path: Path, key: paramseal.Key, key_file: Path, wrapper: str
) -> None:
    """A loader may prefer a sibling (timm's use_ema reads 'state_dict_ema'): the seal must not vouch for the file."""
    sd = _sealed_fc(tmp_path, key)
    wrapped = tmp_path / "w.pt"
    torch.save({wrapper: sd, f"{wrapper}_ema": {k: torch.zeros_like(v) for k, v in sd.items()}, "epoch": 3}, wrapped)
    rc, out, _ = helpers.run_cli(["verify", wrapped, "--key", key_file, "--json"])
    rep = json.loads(out)
    assert rc == 1 and rep["status"] == "tampered" and rep["tampered_tensors"] == []
    assert f"'{wrapper}_ema', 'epoch'" in rep["metadata_issues"][0]
    rc, _, _ = helpers.run_cli(["recover", wrapped, tmp_path / "r.pt", "--key", key_file])
    assert rc == 0 and files.verify_file(tmp_path / "r.pt", key).status == "intact"
    assert list(torch.load(tmp_path / "r.pt", weights_only=True)) == list(sd)  # the sealed weights alone


def test_verify_counts_a_sealed_file_s_one_other_entry_in_the_singular(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """verify of a sealed state dict wrapped with one sibling said "the file holds 1 entries besides"."""
    sd = _sealed_fc(tmp_path, key)
    wrapped = tmp_path / "w.pt"
    torch.save({"state_dict": sd, "state_dict_ema": dict(sd)}, wrapped)
    rc, out, _ = helpers.run_cli(["verify", wrapped, "--key", key_file])
    assert rc == 1 and "the file holds 1 entry besides the sealed weights ('state_dict_ema')" in out, out


def test_sealing_a_checkpoint_in_place_does_not_drop_its_other_entries(tmp_path: Path, key_file: Path) -> None:
    """seal --in-place of a training checkpoint wrote the weights alone over it, its optimizer state and epoch gone.

    A sealed file cannot keep them (verify calls them tampering): in place that is refused, nothing written;
    into a new file the input keeps them, and seal says which entries the output lacks.
    """
    ckpt = tmp_path / "ckpt.pt"
    sd = {"fc.weight": torch.randn(300, 200), "fc.bias": torch.randn(300)}
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, "epoch": 3}, ckpt)
    h = helpers.sha256(ckpt)
    rc, out, err = helpers.run_cli(["seal", ckpt, ckpt, "--key", key_file, "--in-place"])
    assert rc == 3 and "'optimizer', 'epoch'" in err and "nothing was written" in err and not out, (out, err)
    assert helpers.sha256(ckpt) == h and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "test.key"]
    rc, out, err = helpers.run_cli(["seal", ckpt, tmp_path / "s.pt", "--key", key_file])
    assert rc == 0 and out.startswith("OK: sealed"), (out, err)
    assert err.startswith("warning: ") and "'optimizer', 'epoch'" in err and "s.pt" in err, err
    assert list(torch.load(tmp_path / "s.pt", weights_only=True)) == list(sd)
    assert helpers.sha256(ckpt) == h


def test_seal_counts_a_checkpoint_s_one_other_entry_in_the_singular(tmp_path: Path, key_file: Path) -> None:
    """seal of a checkpoint with one entry besides its weights warned "holds 1 entries besides the model's weights"."""
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": {"fc.weight": torch.randn(300, 200)}, "epoch": 3}, ckpt)
    rc, out, err = helpers.run_cli(["seal", ckpt, tmp_path / "s.pt", "--key", key_file])
    assert rc == 0 and out.startswith("OK: sealed"), (out, err)
    assert "holds 1 entry besides the model's weights ('epoch')" in err, err


def test_partial_recover_in_place_keeps_a_checkpoint_s_other_entries(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """A partial result written over IN dropped the optimizer state and epoch beside the weights: refused."""
    bad = tmp_path / "bad.pt"
    sd = _sealed_fc(tmp_path, key)
    sd["fc.weight"][-120:] = 0  # past capacity, clear of the header copy at the start
    torch.save({"state_dict": sd, "optimizer": {"lr": 0.1}, "epoch": 3}, bad)
    h = helpers.sha256(bad)
    rc, _, err = helpers.run_cli(["recover", bad, bad, "--key", key_file, "--in-place", "--allow-partial"])
    assert rc == 3 and "'optimizer', 'epoch'" in err and "nothing was written" in err, err
    assert helpers.sha256(bad) == h
    rc, so, _ = helpers.run_cli(["recover", bad, tmp_path / "r.pt", "--key", key_file, "--allow-partial"])
    assert rc == 2 and "partial result written" in so  # into a new file: IN keeps them


def test_a_partial_result_whose_header_copies_stay_tampered_keeps_the_header_in_a_pt_not_in_an_npy(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """The copies in 'fc.weight' lie in blocks left unrecoverable: a .pt keeps the header in its _metadata.

    It was refused (a .pt held no metadata), saying first that the model was "too small to carry its seal
    header", which sealed it there. An .npy still holds none: refused as that, not as too small.
    """
    bad = tmp_path / "bad.pt"
    sd = _sealed_fc(tmp_path, key)
    sd["fc.weight"][:120] = 0  # past capacity, over the header copy at the start
    getattr(sd, "_metadata", {}).pop(META_ENTRY, None)  # the entry lost as well: the header comes from s.pt
    torch.save(sd, bad)
    argv = ["recover", bad, tmp_path / "r.pt", "--key", key_file, "--allow-partial", "--header-from", tmp_path / "s.pt"]
    rc, so, err = helpers.run_cli(argv)
    assert rc == 2 and "partial result written" in so, err
    rc, so, _ = helpers.run_cli(["verify", tmp_path / "r.pt", "--key", key_file])
    assert rc == 2 and "read from the weights" not in so, so  # tampered, judged by the header in its _metadata
    arr = tmp_path / "a.npy"
    np.save(arr, np.random.default_rng(0).standard_normal((300, 200)).astype(np.float32))
    files.seal_file(arr, tmp_path / "s.npy", key)
    damaged = np.load(tmp_path / "s.npy")
    damaged[:120] = 0
    np.save(tmp_path / "bad.npy", damaged)
    argv = ["recover", tmp_path / "bad.npy", tmp_path / "r.npy", "--key", key_file, "--allow-partial"]
    rc, _, err = helpers.run_cli([*argv, "--header-from", tmp_path / "s.npy"])
    assert rc == 3 and "too small" not in err and not (tmp_path / "r.npy").exists(), err
    assert "its copies in the weights ('array') lie in blocks this partial result leaves tampered" in err, err


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_recover_with_the_header_from_a_pt_writes_a_whole_header_where_the_output_keeps_metadata(
    tmp_path: Path, key: paramseal.Key, key_file: Path, suffix: str
) -> None:
    """--header-from a sealed .pt gives the weights' cut-down header: written as it was into an .npz's
    metadata, 'OK: recovered' left a file that verify called tampered (exit 1, 'cut down')."""
    bad = tmp_path / "bad.pt"
    sd = _sealed_fc(tmp_path, key)
    sd["fc.weight"].view(-1)[30000] *= -1
    torch.save(sd, bad)
    out = tmp_path / f"r{suffix}"
    rc, so, _ = helpers.run_cli(["recover", bad, out, "--key", key_file, "--header-from", tmp_path / "s.pt"])
    assert rc == 0 and "OK: recovered" in so, so
    rc, so, _ = helpers.run_cli(["verify", out, "--key", key_file])
    assert rc == 0 and "cut down" not in so, so


@pytest.mark.parametrize(
    ("obj", "expect"),
    [
        ({"encoder": {"w": torch.ones(2)}, "decoder": {"w": torch.ones(2)}}, "entry 'encoder' is a dict"),
        ({"w": torch.ones(2), "step": 5}, "entry 'step' is an int"),
        ({"state_dict": {"w": torch.ones(2)}, "model": {"w": torch.ones(2)}}, "entry 'state_dict' is a dict"),
        ([torch.ones(2)], "holds a list, not a state dict"),
        ((torch.ones(2),), "holds a tuple, not a state dict"),
        ({"w": torch.ones(2), "opt": OrderedDict(lr=0.1)}, "entry 'opt' is an OrderedDict"),
        ({}, "empty state dict"),
        ({1: torch.ones(2)}, "key 1 is an int"),
    ],
    ids=["nested", "non_tensor", "two_wrappers", "list", "tuple", "ordered_dict", "empty", "non_string_key"],
)
def test_anything_but_a_state_dict_is_refused_with_a_hint(tmp_path: Path, obj: object, expect: str) -> None:
    p = tmp_path / "odd.pt"
    torch.save(obj, p)
    with pytest.raises(FormatError) as ei:
        adapter_for(p).read(p)
    assert expect in str(ei.value) and "odd.pt" in str(ei.value), str(ei.value)


def test_non_contiguous_and_shared_storage_tensors_read_as_their_values(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    p = tmp_path / "views.pt"
    torch.save({"t": base.T, "row": base[1], "same": base}, p)
    got = adapter_for(p).read(p).tensors
    assert np.array_equal(got["t"], base.numpy().T) and got["t"].flags.c_contiguous
    assert np.array_equal(got["row"], base.numpy()[1]) and got["same"].shape == (3, 4)
    arrays = list(got.values())
    assert not any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1 :])


def test_a_transposed_view_and_empty_tensors_are_not_ties(tmp_path: Path) -> None:
    """A tie is the same tensor: a transpose starting at the same byte is another one, and so is every empty one."""
    square = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    p = tmp_path / "views.pt"
    torch.save({"w": square, "w_t": square.T, "e1": torch.zeros(0), "e2": torch.zeros(0)}, p)
    got = adapter_for(p).read(p)
    assert list(got.tensors) == ["w", "w_t", "e1", "e2"] and got.metadata == {}
    assert np.array_equal(got.tensors["w_t"], square.numpy().T)


def test_big_endian_arrays_are_written_as_their_values(tmp_path: Path) -> None:
    p = tmp_path / "be.pt"
    adapter_for(p, must_exist=False).write(p, Loaded({"w": np.arange(6, dtype=">f4"), "i": np.arange(3, dtype=">i8")}))
    got = torch.load(p, weights_only=True)
    assert got["w"].dtype == torch.float32 and got["w"].tolist() == list(range(6))
    assert got["i"].dtype == torch.int64 and got["i"].tolist() == [0, 1, 2]


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")  # deprecated in recent torch
def test_a_quantized_tensor_is_refused_with_how_to_dequantize_it(tmp_path: Path) -> None:
    p = tmp_path / "q.pt"
    torch.save({"q": torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8)}, p)
    with pytest.raises(paramseal.UnsupportedError, match=r"'q' is a .*quantized tensor.*dequantize"):
        adapter_for(p).read(p)


@pytest.mark.filterwarnings("ignore:`torch.jit.")  # a DeprecationWarning in torch 2.13, a FutureWarning in 2.14
def test_torchscript_archive_is_refused_without_loading_its_code(tmp_path: Path, key_file: Path) -> None:
    p = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 4)), p)
    with pytest.raises(FormatError, match="TorchScript archive") as ei:
        adapter_for(p).read(p)
    assert "scripted.pt" in str(ei.value) and "weights_only=False" not in str(ei.value)
    with pytest.raises(FormatError, match=r"is a TorchScript archive \(torch\.jit\.save\)"):  # the adapter too
        adapter_for(tmp_path / "any.pt", must_exist=False).read(p)
    rc, _, err = helpers.run_cli(["seal", p, tmp_path / "o.pt", "--key", key_file])
    assert rc == 3 and "TorchScript" in err and not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize("name", ["e.pt", "e.bin"])
def test_an_empty_pytorch_file_says_it_is_empty(tmp_path: Path, key_file: Path, name: str) -> None:
    """Not "(truncated or not a torch.save file): EOFError: " with nothing after it (as an empty .onnx says)."""
    p = tmp_path / name
    p.write_bytes(b"")
    for argv in (["inspect", p], ["seal", p, tmp_path / "o.pt", "--key", key_file]):
        rc, _, err = helpers.run_cli(argv)
        assert rc == 3 and f"'{p}' is not a PyTorch file: the file is empty" in err and "EOFError" not in err, err
    assert not (tmp_path / "o.pt").exists()


def test_unsupported_dtype_is_named(tmp_path: Path, key_file: Path) -> None:
    """Read (verify reports a sealed tensor retyped so), but seal refuses it, naming the file and the tensor."""
    p = tmp_path / "c.pt"
    torch.save({"w": torch.ones(300, 300), "z": torch.ones(2, dtype=torch.complex64)}, p)
    assert adapter_for(p).read(p).tensors["z"].dtype == np.complex64
    rc, _, err = helpers.run_cli(["seal", p, tmp_path / "o.pt", "--key", key_file])
    assert rc == 3 and f"'{p}': cannot seal tensor 'z': dtype complex64 is not supported" in err, err
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_a_sparse_tensor_is_refused_by_name_with_exit_3(tmp_path: Path, key_file: Path, layout: str) -> None:
    """A sparse tensor has no storage to compare for ties: it must reach the dense check, not crash."""
    p = tmp_path / "s.pt"
    dense = torch.eye(8)
    torch.save({"w": torch.ones(300, 300), "s": dense.to_sparse() if layout == "coo" else dense.to_sparse_csr()}, p)
    rc, _, err = helpers.run_cli(["seal", p, tmp_path / "o.safetensors", "--key", key_file])
    assert rc == 3 and f"tensor 's' is a torch.sparse_{layout} tensor" in err and "to_dense()" in err, err
    assert "Traceback" not in err and not (tmp_path / "o.safetensors").exists(), err


def test_sealed_file_is_a_plain_state_dict_that_load_state_dict_accepts(tmp_path: Path, key: paramseal.Key) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.BatchNorm1d(256),
                              torch.nn.Linear(256, 256))  # fmt: skip
    src = tmp_path / "pytorch_model.bin"
    torch.save(net.state_dict(), src)
    out = tmp_path / "sealed.bin"
    files.seal_file(src, out, key)
    raw = torch.load(out, weights_only=True)
    assert isinstance(raw, dict) and list(raw) == list(net.state_dict()), "extra or missing keys"
    fresh = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.BatchNorm1d(256),
                                torch.nn.Linear(256, 256))  # fmt: skip
    fresh.load_state_dict(raw, strict=True)
    for k, v in fresh.state_dict().items():
        assert v.dtype == net.state_dict()[k].dtype and v.shape == net.state_dict()[k].shape
    assert files.verify_file(out, key).status == "intact"


def _observed() -> torch.nn.Module:
    """Modules whose load_state_dict reads their version: a quantization observer, BatchNorm, InstanceNorm."""
    return torch.nn.Sequential(
        torch.nn.Linear(64, 4096), torch.nn.Linear(4096, 64), torch.nn.BatchNorm1d(64),
        torch.nn.InstanceNorm1d(64, affine=True), torch.ao.quantization.MinMaxObserver(eps=1e-3),
    )  # fmt: skip


@pytest.mark.parametrize("wrapper", [None, "state_dict"])
def test_module_versions_are_written_back_so_load_state_dict_keeps_sealed_values(
    tmp_path: Path, key_file: Path, wrapper: str | None
) -> None:
    """state_dict()'s _metadata (module versions) is kept by seal and recover, readable with weights_only=True.

    Without it load_state_dict takes the file for its oldest version: the observer's eps, a
    sealed tensor, was replaced by the default (1.19e-7 for the 1e-3 in the file).
    """
    torch.manual_seed(0)
    net = _observed()
    net[4](torch.randn(10, 64))
    sd = net.state_dict()
    src, sealed = tmp_path / "m.pt", tmp_path / "s.pt"
    torch.save(sd if wrapper is None else {wrapper: sd, "epoch": 3}, src)
    assert helpers.run_cli(["seal", src, sealed, "--key", key_file])[0] == 0
    raw = torch.load(sealed, weights_only=True)
    fresh = _observed()
    fresh.load_state_dict(raw)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, raw[k]), k  # every module holds the file's values
    assert {k: v for k, v in raw._metadata.items() if k != META_ENTRY} == dict(sd._metadata)
    assert helpers.run_cli(["verify", sealed, "--key", key_file])[0] == 0

    raw["1.weight"][3, 7] += 1.0  # tampered, re-saved by torch: recover keeps the versions too
    bad, fixed = tmp_path / "bad.pt", tmp_path / "fixed.pt"
    torch.save(raw, bad)
    rc, out, err = helpers.run_cli(["recover", bad, fixed, "--key", key_file])
    assert rc == 0, (out, err)
    kept = torch.load(fixed, weights_only=True)._metadata
    assert {k: v for k, v in kept.items() if k != META_ENTRY} == dict(sd._metadata) and META_ENTRY in kept


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_state_dict_round_trips_losslessly(tmp_path: Path, dtype: torch.dtype) -> None:
    t = torch.randn(1000, generator=torch.Generator().manual_seed(1)).to(dtype)
    t[:3] = torch.tensor([0.0, -0.0, 1e-8]).to(dtype)
    p = tmp_path / "h.pt"
    torch.save({"h": t}, p)
    a = adapter_for(p)
    loaded = a.read(p)
    q = tmp_path / "h2.pt"
    a.write(q, loaded)
    back = torch.load(q, weights_only=True)["h"]
    assert back.dtype == dtype and torch.equal(back.view(torch.int16), t.view(torch.int16))


# --------------------------------------------------------------------------- torch is optional


def test_without_torch_reading_a_pt_file_says_what_to_install(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "m.pt"
    torch.save(_sd(), p)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(MissingDependencyError) as ei:
        adapter_for(p).read(p)
    assert "pip install 'paramseal[torch]'" in str(ei.value) and "m.pt" in str(ei.value)
    rc, out, err = helpers.run_cli(["verify", p, "--key", key_file])
    assert rc == 3 and "pip install 'paramseal[torch]'" in err, err
    with pytest.raises(MissingDependencyError, match=r"pip install 'paramseal\[torch\]'"):
        adapter_for(tmp_path / "o.pt", must_exist=False).write(tmp_path / "o.pt", Loaded({"w": np.ones(2)}))


def test_without_torch_importing_paramseal_torch_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "paramseal.torch", raising=False)
    with pytest.raises(ImportError) as ei:
        importlib.import_module("paramseal.torch")
    assert isinstance(ei.value, MissingDependencyError)
    assert "pip install 'paramseal[torch]'" in str(ei.value)


class _Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(1000, 64)
        self.mid = torch.nn.Linear(64, 64)
        self.head = torch.nn.Linear(64, 1000, bias=False)
        self.head.weight = self.emb.weight  # tied, as language models tie their embeddings


def test_tied_tensors_are_sealed_once_and_stay_tied(tmp_path: Path, key: paramseal.Key, key_file: Path) -> None:
    """Sealed apart, the two names would differ, and a module loading the file would hold neither seal."""
    torch.manual_seed(0)
    src, out = tmp_path / "tied.pt", tmp_path / "sealed.pt"
    torch.save(_Tied().state_dict(), src)
    files.seal_file(src, out, key)
    sd = torch.load(out, weights_only=True)
    assert list(sd) == ["emb.weight", "mid.weight", "mid.bias", "head.weight"]
    assert sd["head.weight"].data_ptr() == sd["emb.weight"].data_ptr(), "the tie was broken"
    assert out.stat().st_size < 1.2 * src.stat().st_size  # one copy of the tied tensor, not two
    assert files.verify_file(out, key).status == "intact"
    net = _Tied()
    net.load_state_dict(sd)  # the usual round trip: load into the model, save its state again
    torch.save(net.state_dict(), tmp_path / "again.pt")
    assert files.verify_file(tmp_path / "again.pt", key).status == "intact"
    # to safetensors (one copy, the tie in its metadata) and back to a tied .pt
    files.seal_file(src, tmp_path / "s.safetensors", key)
    rc, _, _ = helpers.run_cli(["recover", tmp_path / "s.safetensors", tmp_path / "back.pt", "--key", key_file])
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert rc == 0 and back["head.weight"].data_ptr() == back["emb.weight"].data_ptr()
    # re-pointing the tie at another tensor of the same shape is tampering
    wrong = dict(sd)
    wrong["head.weight"] = torch.zeros_like(sd["emb.weight"])
    torch.save(wrong, tmp_path / "untied.pt")
    rep = files.verify_file(tmp_path / "untied.pt", key)
    assert rep.status == "tampered" and rep.extra_tensors == ("head.weight",)


def test_a_broken_tie_is_never_written_as_recovered_without_the_tied_name(tmp_path: Path, key: paramseal.Key) -> None:
    """An alias replaced by a copy: recover once dropped the alias and called the file recovered."""
    torch.manual_seed(2)
    src, out = tmp_path / "tied.pt", tmp_path / "sealed.pt"
    torch.save(_Tied().state_dict(), src)
    sealed = files.seal_file(src, out, key)
    sd = torch.load(out, weights_only=True)
    sd["head.weight"] = sd["emb.weight"].clone()  # the same values, no longer tied
    torch.save(sd, tmp_path / "broken.pt")  # torch.load kept the _metadata: the file still holds the header
    rep = files.verify_file(tmp_path / "broken.pt", key)
    assert rep.status == "tampered" and rep.metadata_issues == ("key 'paramseal.tied' was removed",), rep
    res = files.recover_file(tmp_path / "broken.pt", tmp_path / "tied.pt", key)
    assert res.report.status == "recovered" and files.verify_file(tmp_path / "tied.pt", key).status == "intact"
    _resaved(tmp_path / "broken.pt", tmp_path / "broken.pt")  # now only the weights' header, which has its digest
    rep = files.verify_file(tmp_path / "broken.pt", key)
    assert rep.status == "tampered" and any("weight ties" in m for m in rep.metadata_issues)
    res = files.recover_file(tmp_path / "broken.pt", tmp_path / "back.pt", key)  # the weights know the tie by digest
    assert res.report.status == "unrecoverable" and res.path is None and not (tmp_path / "back.pt").exists()
    res = files.recover_file(tmp_path / "broken.pt", tmp_path / "back.pt", key, header=sealed.header_json)
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert res.report.status == "recovered" and list(back) == list(sd)
    assert back["head.weight"].data_ptr() == back["emb.weight"].data_ptr()  # tied again
    assert files.verify_file(tmp_path / "back.pt", key).status == "intact"


def test_seal_header_out_keeps_what_re_ties_a_broken_tie_from_the_cli(tmp_path: Path, key_file: Path) -> None:
    """A .pt keeps only a digest of its tie; the header kept with --header-out restores it."""
    torch.manual_seed(4)
    src, out, kept = tmp_path / "tied.pt", tmp_path / "sealed.pt", tmp_path / "h.json"
    torch.save(_Tied().state_dict(), src)
    rc, stdout, _ = helpers.run_cli(["seal", src, out, "--key", key_file, "--header-out", kept])
    assert rc == 0 and f"kept the seal header in {kept}" in stdout
    assert "paramseal.tied" in json.loads(kept.read_text())["user_metadata"]
    sd = torch.load(out, weights_only=True)
    sd["head.weight"] = sd["emb.weight"].clone()  # the tie broken
    getattr(sd, "_metadata", {}).pop(META_ENTRY, None)  # and the header in the file lost: the weights' remains
    torch.save(sd, tmp_path / "broken.pt")
    back = tmp_path / "back.pt"
    assert helpers.run_cli(["recover", tmp_path / "broken.pt", back, "--key", key_file])[0] == 2
    rc, _, err = helpers.run_cli(["recover", tmp_path / "broken.pt", back, "--key", key_file, "--header-from", kept])
    assert rc == 0, err
    fixed = torch.load(back, weights_only=True)
    assert fixed["head.weight"].data_ptr() == fixed["emb.weight"].data_ptr()
    for bad, why in ((tmp_path / "h.txt", "must end in .json"), (tmp_path / "no" / "h.json", "does not exist")):
        rc, _, err = helpers.run_cli(["seal", src, tmp_path / "x.pt", "--key", key_file, "--header-out", bad])
        assert rc == 3 and why in err and not (tmp_path / "x.pt").exists(), err


def test_header_out_in_a_folder_that_cannot_be_written_fails_before_sealing(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model was sealed and written, then --header-out failed: exit 3 with an output left behind."""
    import tempfile

    src = tmp_path / "m.pt"
    torch.save(_Tied().state_dict(), src)
    locked = tmp_path / "locked"
    locked.mkdir()
    mkdtemp = tempfile.mkdtemp

    def refuse(*a: Any, **kw: Any) -> str:  # a folder we may not write (root ignores chmod)
        if Path(kw.get("dir", ".")) == locked:
            raise PermissionError(13, "Permission denied")
        return mkdtemp(*a, **kw)

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)  # the temporary file's own folder
    rc, _, err = helpers.run_cli(["seal", src, tmp_path / "s.pt", "--key", key_file, "--header-out", locked / "h.json"])
    assert rc == 3 and "Permission denied" in err and not (tmp_path / "s.pt").exists(), err
    assert not list(locked.iterdir())


def test_a_header_grown_by_tags_kept_in_it_is_held_by_a_pt_in_its_metadata(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """A -inf mask is sealed as data: its block tags go into the header, too big for the weights to hold.

    Sealing to .pt was refused (exit 3): a .pt held no metadata. Its _metadata holds the header now.
    """
    rng = np.random.default_rng(3)
    model = {"w": rng.standard_normal((512, 512)).astype(np.float32), "mask": np.full((512, 512), -np.inf, np.float32)}
    src = helpers.write_st(tmp_path / "m.safetensors", model)
    rc, _, err = helpers.run_cli(["seal", src, tmp_path / "s.pt", "--key", key_file])
    assert rc == 0 and files.verify_file(tmp_path / "s.pt", key).status == "intact", err
    rc, so, err = helpers.run_cli(["verify", _resaved(tmp_path / "s.pt", tmp_path / "r.pt"), "--key", key_file])
    assert rc == 2 and "--header-from" in err, (so, err)  # saved again without it: the weights hold none


def test_a_sealed_module_saved_with_torch_save_verifies_as_a_file(tmp_path: Path, key: paramseal.Key) -> None:
    import paramseal.torch as pst

    torch.manual_seed(1)
    net = _Tied()
    pst.seal_module(net, key)
    torch.save(net.state_dict(), tmp_path / "m.pt")
    assert files.verify_file(tmp_path / "m.pt", key).status == "intact"


def test_a_pt_sealed_with_user_keys_beside_its_tie_checks_the_tie_and_says_what_it_did_not(
    tmp_path: Path, key: paramseal.Key
) -> None:
    """A .pt holds its tie, never the user's keys: the tie is checked by its own digest, the user keys are named.

    A user key that starts with "paramseal" but not "paramseal." (as the set record "paramseal_set") is the
    user's, not one of ParamSeal's own entries that a .pt keeps.
    """
    torch.manual_seed(5)
    src, out, kept = tmp_path / "tied.pt", tmp_path / "s.pt", tmp_path / "h.json"
    torch.save(_Tied().state_dict(), src)
    user = {"owner": "me", "paramseal_note": "the user's"}
    files.seal_file(src, tmp_path / "full.pt", key, extra_metadata=user, header_out=kept)
    rep = files.verify_file(tmp_path / "full.pt", key)  # its _metadata holds the header and the user's keys
    assert rep.status == "intact" and rep.metadata_issues == () and rep.notes == (), rep
    _resaved(tmp_path / "full.pt", out)  # without them: the header in the weights has their digest only
    rep = files.verify_file(out, key)
    assert rep.status == "intact" and rep.metadata_issues == (), rep
    # a .pt stores them (in its _metadata): the note says that this one does not, not that the format cannot
    assert any(
        "carries no user metadata (an .npy, a module, a .pt saved again by torch): the sealed user keys" in n
        for n in rep.notes
    ), rep.notes
    # the kept header knows the keys: the user's are named as not checked, the tie is checked
    rep = files.verify_file(out, key, header=kept.read_text())
    assert rep.status == "intact" and rep.metadata_issues == (), rep
    assert any("sealed key(s) 'owner', 'paramseal_note' not checked" in n for n in rep.notes), rep.notes
    sd = torch.load(out, weights_only=True)
    del sd["head.weight"]  # the tied name dropped: the tensors are all there, the tie is not
    torch.save(sd, tmp_path / "untied.pt")
    rep = files.verify_file(tmp_path / "untied.pt", key, header=kept.read_text())
    assert rep.status == "tampered" and rep.metadata_issues == ("key 'paramseal.tied' was removed",), rep
    assert files.verify_file(tmp_path / "untied.pt", key).status == "tampered"  # by the tie's digest alone
    # sealed with the tie alone, there are no user keys to leave unchecked
    files.seal_file(src, tmp_path / "t.pt", key)
    rep = files.verify_file(_resaved(tmp_path / "t.pt", tmp_path / "t.pt"), key)
    assert rep.status == "intact" and not any("not checked" in n for n in rep.notes), rep.notes
    # through the API with no metadata given: the weights are checked, the metadata is said not to be
    tensors = adapter_for(out).read(out).tensors
    rep = paramseal.verify(tensors, key, header_from_weights(tensors, key), metadata_kept=False)
    assert rep.status == "intact" and any("sealed metadata could not be" in n for n in rep.notes), rep.notes


@pytest.mark.parametrize(
    "entry",
    [
        '[["head.bias","emb.weight",0]]',
        '[["x","emb.weight",true]]',
        '[["x","emb.weight",-1]]',
        '[["x","nope",1]]',
        "{",
        "[" * 100_000 + "]" * 100_000,
        '[["x","emb.weight"]]',
        '[["x"], ["y","emb.weight",1]]',
    ],
    ids=[
        "before_its_tensor",
        "bool_position",
        "negative",
        "unknown_tensor",
        "not_json",
        "nested_too_deep",
        "short_entry",
        "short_entry_sorted",
    ],
)
def test_a_tie_entry_paramseal_did_not_write_is_refused(tmp_path: Path, key_file: Path, entry: str) -> None:
    """A crafted paramseal.tied in a safetensors file must not make seal write a .pt that never verifies."""
    g = torch.Generator().manual_seed(0)
    src = helpers.write_st(
        tmp_path / "m.safetensors",
        {
            "emb.weight": torch.randn(300, 200, generator=g).numpy(),
            "head.weight": torch.randn(300, 200, generator=g).numpy(),
        },
        {"paramseal.tied": entry},
    )
    rc, _, err = helpers.run_cli(["seal", src, tmp_path / "o.pt", "--key", key_file])
    assert rc == 3 and "paramseal.tied" in err and not (tmp_path / "o.pt").exists(), err
    assert "internal error" not in err and "Traceback" not in err, err


def test_a_torchscript_archive_under_another_extension_is_named(tmp_path: Path, key_file: Path) -> None:
    """silero-vad ships silero_vad.jit: 'cannot tell the format' would not say what it is or what to do."""
    silero = pytest.importorskip("silero_vad")
    jit = Path(silero.__file__).parent / "data" / "silero_vad.jit"
    rc, _, err = helpers.run_cli(["verify", jit, "--key", key_file])
    assert rc == 3 and "TorchScript archive" in err and "state_dict()" in err, err


def test_a_torch_archive_named_npz_is_refused(tmp_path: Path, key_file: Path) -> None:
    """Read by content, it verified intact as a .pt while np.load read an .npy member appended to it."""
    import zipfile

    torch.save({"w": torch.randn(512, 512)}, tmp_path / "m.pt")
    assert helpers.run_cli(["seal", tmp_path / "m.pt", tmp_path / "s.pt", "--key", key_file])[0] == 0
    poly = tmp_path / "poly.npz"
    shutil.copyfile(tmp_path / "s.pt", poly)
    with zipfile.ZipFile(poly) as zf:
        prefix = zf.namelist()[0].split("/")[0]
    buf = io.BytesIO()
    np.save(buf, np.full(4, 666.0, np.float32))
    with zipfile.ZipFile(poly, "a") as zf:
        zf.writestr(f"{prefix}/w.npy", buf.getvalue())
    assert any(np.all(v == 666) for v in np.load(poly).values())  # what a .npz loader reads
    rc, _, err = helpers.run_cli(["verify", poly, "--key", key_file])
    assert rc == 3 and "named .npz but holds a pytorch file" in err and "rename it to .pt" in err, err
    shutil.copyfile(tmp_path / "s.pt", tmp_path / "s.bin")  # .bin names no one format: read by content
    assert helpers.run_cli(["verify", tmp_path / "s.bin", "--key", key_file])[0] == 0


def _file_size_limit_64kib() -> None:
    """``preexec_fn``: no file may grow past 64 KiB (writes past it fail with EFBIG, SIGXFSZ ignored)."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, resource.RLIM_INFINITY))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX rlimits")
def test_a_pt_write_that_fails_says_why_as_other_formats_do(tmp_path: Path, key_file: Path) -> None:
    """torch's writer turned a full disk or quota into 'unexpected pos 704 vs 598' (or 'file write failed'):
    the error met by the write itself is the one reported, as for every other format."""
    import subprocess

    src = tmp_path / "m.pt"
    torch.save({"w": torch.from_numpy(helpers.fp32_model(1 << 16, seed=2)["layer0.weight"])}, src)
    before = helpers.sha256(src)
    out = tmp_path / "o" / "sealed.pt"
    out.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "paramseal", "seal", str(src), str(out), "--key", str(key_file)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=_file_size_limit_64kib, check=False)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip() == f"error: cannot write '{out}': {os.strerror(errno.EFBIG)}", r.stderr
    assert list(out.parent.iterdir()) == [] and helpers.sha256(src) == before


def test_module_versions_holding_more_than_plain_values_are_not_carried_to_the_output(
    tmp_path: Path, key: paramseal.Key
) -> None:
    """_metadata is not sealed: a tensor or container hidden in it must not reach the sealed file."""
    sd = torch.nn.Linear(1024, 512).state_dict()
    sd._metadata[""]["stowaway"] = torch.arange(4.0)  # type: ignore[attr-defined]
    src, out = tmp_path / "m.pt", tmp_path / "s.pt"
    torch.save(sd, src)
    assert isinstance(torch.load(src, weights_only=True)._metadata[""]["stowaway"], torch.Tensor)
    files.seal_file(src, out, key)
    raw = torch.load(out, weights_only=True)
    assert list(raw._metadata) == [META_ENTRY]  # the seal's metadata alone
    assert files.verify_file(out, key).status == "intact"
    plain = torch.nn.Linear(1024, 512).state_dict()  # plain version numbers are still carried
    torch.save(plain, src)
    files.seal_file(src, out, key)
    kept = torch.load(out, weights_only=True)._metadata
    assert {k: v for k, v in kept.items() if k != META_ENTRY} == dict(plain._metadata)


def test_attack_on_a_sealed_tied_pt_writes_a_tied_pt(tmp_path: Path, key: paramseal.Key, key_file: Path) -> None:
    """A .pt keeps its ties as ties: attack refused every .pt output of a tied sealed .pt ('cannot hold metadata')."""
    torch.manual_seed(5)
    src, out, bad = tmp_path / "tied.pt", tmp_path / "sealed.pt", tmp_path / "bad.pt"
    torch.save(_Tied().state_dict(), src)
    files.seal_file(src, out, key)
    rc, stdout, err = helpers.run_cli(["attack", out, bad, "--kind", "bitflip", "--n", "3", "--seed", "1"])
    assert rc == 0, err
    sd = torch.load(bad, weights_only=True)
    assert sd["head.weight"].data_ptr() == sd["emb.weight"].data_ptr()  # still tied
    assert files.verify_file(bad, key).status == "tampered"
    rc, _, _ = helpers.run_cli(["recover", bad, tmp_path / "back.pt", "--key", key_file])
    assert rc == 0 and files.verify_file(tmp_path / "back.pt", key).status == "intact"
    # a .npy cannot keep the tie: still refused, naming the entry
    rc, _, err = helpers.run_cli(["attack", out, tmp_path / "bad.npz", "--kind", "bitflip"])
    assert rc == 0
    rc, _, err = helpers.run_cli(["attack", out, tmp_path / "bad.npy", "--kind", "bitflip"])
    assert rc == 3 and "paramseal.tied" in err


def test_attack_keeps_the_module_versions_of_a_pt(tmp_path: Path, key: paramseal.Key, key_file: Path) -> None:
    """attack wrote a .pt without the input's ``_metadata``, a change its ground truth did not list.

    Recover cannot put them back (they are carried, not sealed), so the drill's recovered file lost them too.
    """
    torch.manual_seed(6)
    net = torch.nn.Sequential(torch.nn.Linear(64, 2048), torch.nn.BatchNorm1d(2048)).eval()
    src, out, bad, back = tmp_path / "m.pt", tmp_path / "s.pt", tmp_path / "bad.pt", tmp_path / "back.pt"
    torch.save(net.state_dict(), src)
    files.seal_file(src, out, key)
    want = dict(torch.load(out, weights_only=True)._metadata)
    assert want["1"]["version"] == 2
    rc, _, err = helpers.run_cli(["attack", out, bad, "--kind", "bitflip", "--seed", "1"])
    assert rc == 0, err
    assert dict(torch.load(bad, weights_only=True)._metadata) == want
    rc, _, _ = helpers.run_cli(["recover", bad, back, "--key", key_file])
    assert rc == 0 and dict(torch.load(back, weights_only=True)._metadata) == want


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_recover_of_a_pt_whose_sealed_metadata_it_lacks_into_a_metadata_format_is_refused(
    tmp_path: Path, key_file: Path, suffix: str
) -> None:
    """A .pt sealed from a file with user metadata keeps it in its _metadata, and is recovered into .npz with it.

    Saved again without that entry (torch.save(model.state_dict())), the weights keep only its digest:
    'OK: written' to .npz left a file verify called tampered (exit 2, metadata stripped). Refused, nothing
    written; --header-from restores it.
    """
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    src, sealed, kept = tmp_path / "m.safetensors", tmp_path / "s.pt", tmp_path / "h.json"
    save_file({f"l{i}": rng.standard_normal((256, 128)).astype(np.float32) for i in range(4)}, src, {"run": "7"})
    assert helpers.run_cli(["seal", src, sealed, "--key", key_file, "--header-out", kept])[0] == 0
    whole = tmp_path / f"whole{suffix}"
    assert helpers.run_cli(["recover", sealed, whole, "--key", key_file])[0] == 0
    rc, stdout, err = helpers.run_cli(["verify", whole, "--key", key_file])
    assert rc == 0 and "intact" in stdout, err
    _resaved(sealed, sealed)
    out = tmp_path / f"out{suffix}"
    rc, _, err = helpers.run_cli(["recover", sealed, out, "--key", key_file])
    assert rc == 3 and "never verify" in err and "--header-from" in err and not out.exists(), err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("out")] == []  # no temporary left either
    assert helpers.run_cli(["recover", sealed, tmp_path / "same.pt", "--key", key_file])[0] == 0  # its own format
    assert helpers.run_cli(["recover", sealed, out, "--key", key_file, "--header-from", kept])[0] == 0
    rc, stdout, err = helpers.run_cli(["verify", out, "--key", key_file])
    assert rc == 0 and "intact" in stdout, err


def test_a_pt_keeps_its_header_in_its_metadata_so_scattered_damage_is_recovered(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """A .pt held its header only as copies in its weights, which 1% of its values replaced destroyed in every trial.

    ParamSeal's .pt keeps it in the state dict's _metadata now: 3% scattered is recovered bit for bit, as from
    a safetensors file, and the file still loads into its module.
    """
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 512), torch.nn.Linear(512, 256))
    src, sealed, bad, out = (tmp_path / f"{n}.pt" for n in ("m", "s", "bad", "out"))
    torch.save(net.state_dict(), src)
    assert helpers.run_cli(["seal", src, sealed, "--key", key_file])[0] == 0
    sd = torch.load(sealed, weights_only=True)
    ref = {k: v.clone() for k, v in sd.items()}
    rng = np.random.default_rng(2)
    for t in sd.values():
        flat = t.view(-1)
        idx = torch.from_numpy(rng.choice(flat.numel(), int(0.03 * flat.numel()), replace=False))
        flat[idx] = torch.from_numpy(rng.standard_normal(idx.numel()).astype(np.float32))
    torch.save(sd, bad)  # torch.load kept the _metadata, as a script editing the file does
    rc, so, err = helpers.run_cli(["recover", bad, out, "--key", key_file])
    assert rc == 0 and "recovered" in so, (so, err)
    back = torch.load(out, weights_only=True)
    assert all(torch.equal(back[k].view(torch.int32), ref[k].view(torch.int32)) for k in ref)
    net.load_state_dict(back)  # the entry is handed to no module


def test_a_pt_whose_metadata_entry_is_not_strings_is_refused_naming_it(tmp_path: Path, key_file: Path) -> None:
    """An entry of another shape (edited by hand) is not taken for metadata nor ignored: exit 3, naming it."""
    sd = OrderedDict(w=torch.ones(4))
    sd._metadata = OrderedDict({META_ENTRY: {"paramseal": 5}})  # type: ignore[attr-defined]
    torch.save(sd, tmp_path / "m.pt")
    rc, _, err = helpers.run_cli(["verify", tmp_path / "m.pt", "--key", key_file])
    assert rc == 3 and f"'{META_ENTRY}'" in err and "not a mapping of strings to strings" in err, err


def test_the_remedy_for_a_pt_metadata_entry_that_is_not_strings_works(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """The message said to pass --header-from, which hit the same refusal (exit 3): the remedy it names now works."""
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 256))
    sealed, bad = tmp_path / "s.pt", tmp_path / "bad.pt"
    torch.save(net.state_dict(), tmp_path / "m.pt")
    assert (
        helpers.run_cli(["seal", tmp_path / "m.pt", sealed, "--key", key_file, "--header-out", tmp_path / "h.json"])[0]
        == 0
    )
    sd = torch.load(sealed, weights_only=True)
    sd._metadata[META_ENTRY]["paramseal"] = None
    torch.save(sd, bad)
    rc, _, err = helpers.run_cli(["verify", bad, "--key", key_file, "--header-from", tmp_path / "h.json"])
    assert rc == 3 and "--header-from" not in err, err  # the header given does not get past the entry
    assert f"del sd._metadata['{META_ENTRY}']" in err, err
    del sd._metadata[META_ENTRY]  # as the message says
    torch.save(sd, bad)
    assert files.verify_file(bad, key).status == "intact"


def test_sealing_a_pt_whose_header_only_its_metadata_entry_holds_warns(tmp_path: Path, key_file: Path) -> None:
    """Such a .pt was refused (exit 3); written now, a torch.save(model.state_dict()) of it cannot verify alone.

    Seal says so (with the remedy) where the weights hold no copy of the header and no --header-out kept it.
    """
    torch.manual_seed(1)
    small = torch.nn.Linear(64, 64)
    torch.save(small.state_dict(), tmp_path / "m.pt")
    rc, _, err = helpers.run_cli(["seal", tmp_path / "m.pt", tmp_path / "s.pt", "--key", key_file])
    assert rc == 0 and "torch.save(model.state_dict())" in err and "--header-out" in err, err
    rc, _, err2 = helpers.run_cli(["verify", _resaved(tmp_path / "s.pt", tmp_path / "r.pt"), "--key", key_file])
    assert rc == 2 and "--header-from" in err2, err2  # what the warning foretold
    h = tmp_path / "h.json"
    rc, _, err = helpers.run_cli(["seal", tmp_path / "m.pt", tmp_path / "s2.pt", "--key", key_file, "--header-out", h])
    assert rc == 0 and "warning" not in err, err
    assert helpers.run_cli(["verify", tmp_path / "r.pt", "--key", key_file, "--header-from", tmp_path / "s.pt"])[0] == 0
    rc, _, err = helpers.run_cli(["seal", tmp_path / "m.pt", tmp_path / "s.safetensors", "--key", key_file])
    assert rc == 0 and "warning" not in err, err
    big = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 512), torch.nn.Linear(512, 256))
    torch.save(big.state_dict(), tmp_path / "big.pt")
    rc, _, err = helpers.run_cli(["seal", tmp_path / "big.pt", tmp_path / "sbig.pt", "--key", key_file])
    assert rc == 0 and "warning" not in err, err  # its weights hold the header: a re-save verifies
    assert helpers.run_cli(["verify", _resaved(tmp_path / "sbig.pt", tmp_path / "rbig.pt"), "--key", key_file])[0] == 0


def test_seal_file_to_such_a_pt_warns_through_pythons_warnings_and_the_cli_prints_it_once(
    tmp_path: Path, key: paramseal.Key, key_file: Path
) -> None:
    """Only the CLI warned (its own print): an API caller of files.seal_file got a .pt whose re-save cannot verify
    alone, or (from an ONNX model) fails verify, without a word. The API now warns with ParamSealWarning, pointing
    at the caller's line; the CLI prints each once, in its own 'warning: ' form, and Python does not print it again.
    """
    torch.manual_seed(1)
    torch.save(torch.nn.Linear(64, 64).state_dict(), tmp_path / "m.pt")
    _matmul_onnx(tmp_path / "m.onnx", 64)
    for src, want in (("m.pt", ["keeps its seal header only"]), ("m.onnx", ["keeps its seal header only", "graph"])):
        out = tmp_path / f"api_{src}.pt"
        with pytest.warns(paramseal.ParamSealWarning) as got:
            files.seal_file(tmp_path / src, out, key)
        assert [w.filename for w in got] == [__file__] * len(want)  # the caller's line
        assert all(m in str(w.message) and f"'{out}'" in str(w.message) for m, w in zip(want, got, strict=True))
        cli_out = tmp_path / f"cli_{src}.pt"
        rc, _, err = helpers.run_cli(["seal", tmp_path / src, cli_out, "--key", key_file])  # a warning escaping fails
        assert rc == 0 and err == "".join(f"warning: {str(w.message).replace(str(out), str(cli_out))}\n" for w in got)
    h = tmp_path / "h.json"  # the header kept: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        files.seal_file(tmp_path / "m.pt", tmp_path / "kept.pt", key, header_out=h)
    import subprocess

    code = "import sys; from paramseal.cli import main; sys.exit(main())"  # Python's own warning filters
    argv = ["seal", tmp_path / "m.pt", tmp_path / "sub.pt", "--key", key_file]
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0 and proc.stderr.count("keeps its seal header only") == 1, proc.stderr
    assert proc.stderr.startswith("warning: ") and "ParamSealWarning" not in proc.stderr, proc.stderr


def test_sealing_an_onnx_model_into_a_pt_warns_that_a_torch_resave_loses_its_graph_digest(
    tmp_path: Path, key_file: Path
) -> None:
    """The graph digest is sealed: a .pt saved again without the entry fails verify (exit 2). Seal says so."""
    _matmul_onnx(tmp_path / "m.onnx", 512)
    rc, _, err = helpers.run_cli(["seal", tmp_path / "m.onnx", tmp_path / "s.pt", "--key", key_file])
    assert rc == 0 and "graph" in err and "torch.save(model.state_dict())" in err, err
    assert helpers.run_cli(["verify", tmp_path / "s.pt", "--key", key_file])[0] == 0
    rc, so, err = helpers.run_cli(["verify", _resaved(tmp_path / "s.pt", tmp_path / "r.pt"), "--key", key_file])
    assert rc == 2 and "graph digest" in so and "re-pointed" not in so, (so, err)  # no tie was there to re-point


def _matmul_onnx(path: Path, n: int) -> None:
    """An ONNX model of one MatMul by an n x n fp32 initializer 'W' (skips without onnx)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, n])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def test_float4_e2m1fn_x2_element_order_is_torch_s(tmp_path: Path) -> None:
    """A .pt float4_e2m1fn_x2 tensor is read and written with element 0 in each byte's low nibble, as torch has it
    (c10's Float4_e2m1fn_x2.h: 'val1 : val0' = bits 7654 : 3210). The oracle is torch's own unpacker (its ONNX
    exporter's), not a packer of ours: a reversed order would show every retyped value's neighbour."""
    torch = pytest.importorskip("torch")
    if not hasattr(torch, "float4_e2m1fn_x2"):
        pytest.skip("this torch has no float4_e2m1fn_x2")
    casting = pytest.importorskip("torch.onnx._internal.exporter._type_casting")
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (3, 5), dtype=np.uint8)  # every byte value: each pair of nibbles differs somewhere
    x2 = torch.from_numpy(codes).view(torch.float4_e2m1fn_x2)
    torch.save({"q": x2}, tmp_path / "q.pt")
    got = files.read_model(tmp_path / "q.pt").tensors["q"]
    want = casting.unpack_float4x2_as_uint8(x2)  # torch's element order, one code a byte
    assert got.dtype == ml_dtypes.float4_e2m1fn and got.shape == (3, 10) and np.array_equal(got.view(np.uint8), want)
    files.write_model(tmp_path / "w.pt", Loaded({"q": want.view(ml_dtypes.float4_e2m1fn)}))
    back = torch.load(tmp_path / "w.pt", weights_only=True)["q"]
    assert back.dtype == torch.float4_e2m1fn_x2 and np.array_equal(back.view(torch.uint8).numpy(), codes)
