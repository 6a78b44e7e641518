"""The public API: ``__all__`` is accurate, the tour in the docstring runs, errors follow the rules."""

from __future__ import annotations
import __future__

import doctest
import inspect
import os
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import helpers
import numpy as np
import pytest

import paramseal
from paramseal import errors
from paramseal.report import Report, Status


def _public_names() -> set[str]:
    """By dir(), not vars(): the package loads most of its names on first use."""
    return {
        n
        for n in dir(paramseal)
        if not n.startswith("_")
        and not isinstance(v := getattr(paramseal, n), types.ModuleType)
        and not isinstance(v, __future__._Feature)
    }


def test_all_names_exist() -> None:
    missing = [n for n in paramseal.__all__ if not hasattr(paramseal, n)]
    assert missing == []
    assert len(set(paramseal.__all__)) == len(paramseal.__all__), "duplicates in __all__"


def test_every_public_name_is_in_all() -> None:
    assert _public_names() - set(paramseal.__all__) == set()
    assert set(paramseal.__all__) - {"__version__"} == _public_names()


def test_star_import_gives_exactly_all() -> None:
    ns: dict[str, object] = {}
    exec("from paramseal import *", ns)
    assert set(ns) - {"__builtins__"} == set(paramseal.__all__)


def test_public_submodules_are_attributes_of_a_fresh_import(tmp_path: Path) -> None:
    """``import paramseal; paramseal.levels.capacity(...)`` (as README writes it): AttributeError once the
    API loaded lazily, since nothing had imported levels, keys, report or header; files and sharded never were."""
    import subprocess
    import sys

    names = ["files", "header", "keys", "levels", "report", "sharded"]
    code = f"import paramseal, types; print([type(getattr(paramseal, n)) is types.ModuleType for n in {names}])"
    env = {**os.environ, "PYTHONPATH": str(Path(paramseal.__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == str([True] * len(names)), out.stderr


def test_one_call_functions_are_functions_not_submodules() -> None:
    for name in ("seal", "verify", "recover"):
        obj = getattr(paramseal, name)
        assert inspect.isfunction(obj), name
        assert obj.__doc__


def test_every_public_item_has_a_docstring() -> None:
    undocumented = [
        n
        for n in paramseal.__all__
        if not n.startswith("__")
        and not isinstance(getattr(paramseal, n), tuple)
        and not (getattr(paramseal, n).__doc__ or "").strip()
    ]
    assert undocumented == []


def test_module_docstring_example_runs() -> None:
    assert paramseal.__doc__ and ">>>" in paramseal.__doc__
    result = doctest.testmod(paramseal, verbose=False, raise_on_error=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5
    assert result.failed == 0


def test_version_is_a_string() -> None:
    assert isinstance(paramseal.__version__, str) and paramseal.__version__.count(".") >= 1


@pytest.mark.parametrize("name", [n for n in errors.__all__ if not issubclass(getattr(errors, n), Warning)])
def test_every_error_is_a_paramseal_error_and_a_builtin_error(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, errors.ParamSealError)
    if cls is not errors.ParamSealError:
        builtin = [b for b in cls.__mro__ if b.__module__ == "builtins" and b not in (Exception, BaseException, object)]
        assert builtin, f"{name} should also derive from a natural built-in error"
    assert cls.exit_code in (1, 2, 3)


def test_the_warning_category_is_a_user_warning_that_no_error_handler_catches() -> None:
    assert [n for n in errors.__all__ if issubclass(getattr(errors, n), Warning)] == ["ParamSealWarning"]
    assert issubclass(paramseal.ParamSealWarning, UserWarning)
    assert not issubclass(paramseal.ParamSealWarning, errors.ParamSealError)  # a result written, not a failure


def test_error_diagnostics_is_the_message() -> None:
    e = paramseal.UsageError("cannot use 'x' because it is a symlink")
    assert e.diagnostics() == str(e)


def test_report_and_finding_are_frozen(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    r = paramseal.verify(sealed.tensors, key, sealed.header_json)
    with pytest.raises(AttributeError):
        r.status = "intact"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        r.tensors["fc.weight"].tampered_blocks = ()  # type: ignore[misc]


def test_exit_codes_follow_the_table() -> None:
    R = paramseal.Report
    assert R("verify", "intact", True).exit_code == 0
    assert R("recover", "recovered", True).exit_code == 0
    assert R("verify", "tampered", True).exit_code == 1
    assert R("verify", "tampered", False).exit_code == 2
    assert R("recover", "unrecoverable", False).exit_code == 2


def test_api_arguments_of_the_wrong_kind_get_clear_errors(tmp_path: Path, key: paramseal.Key) -> None:
    from paramseal import files, levels

    model = {"w": np.linspace(-1, 1, 4096, dtype=np.float32).reshape(64, 64)}
    sealed = paramseal.seal(model, key)
    for bad in (key.secret.hex(), key.secret, str(tmp_path / "k.key")):
        with pytest.raises(paramseal.UsageError, match="must be a paramseal.Key") as ei:
            paramseal.seal(model, bad)  # type: ignore[arg-type]
        assert key.secret.hex() not in str(ei.value)  # never echo what may be key material
        with pytest.raises(paramseal.UsageError, match="must be a paramseal.Key"):
            paramseal.verify(sealed.tensors, bad, sealed.header_json)  # type: ignore[arg-type]
    with pytest.raises(paramseal.UsageError, match="header_json must be the seal header text"):
        paramseal.verify(sealed.tensors, key, None)  # type: ignore[arg-type]
    with pytest.raises(paramseal.UsageError, match="unknown float dtype 'fp32'"):
        levels.capacity("fp32", 8)
    with pytest.raises(paramseal.UsageError, match="out of range"):
        levels.capacity("F32", 99)
    assert levels.capacity("F32", 8).erasure_bound < 1
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(paramseal.UsageError, match="paramseal.sharded"):
        files.verify_file(ckpt, key)


def test_tensors_bits_and_names_of_the_wrong_kind_are_usage_errors(key: paramseal.Key) -> None:
    """They were Python's own AttributeError/TypeError; a name that was not str was sealed under str(name),
    so {1: a, "1": b} sealed one tensor of two."""
    a = np.linspace(-1, 1, 4096, dtype=np.float32)
    sealed = paramseal.seal({"w": a}, key)
    with pytest.raises(paramseal.UsageError, match="tensors must be a mapping of name .* not list"):
        paramseal.seal([a], key)  # type: ignore[arg-type]
    with pytest.raises(paramseal.UsageError, match="tensors must be a mapping of name .* not NoneType"):
        paramseal.verify(None, key, sealed.header_json)  # type: ignore[arg-type]
    for named in ({1: a}, {1: a, "1": a + 1}):
        with pytest.raises(paramseal.UsageError, match=r"tensor names must be str, not int \(1\)"):
            paramseal.seal(named, key)  # type: ignore[arg-type]
    for bits in ("8", 8.0, True, np.int64(8)):
        with pytest.raises(paramseal.UsageError, match="bits must be an int"):
            paramseal.seal({"w": a}, key, bits=bits)  # type: ignore[arg-type]
    assert paramseal.seal({"w": a}, key, bits=8).header.tensors[0].k == 8


def test_metadata_that_is_not_text_is_refused_before_anything_is_sealed(tmp_path: Path, key: paramseal.Key) -> None:
    """An int value was sealed as given and read back as text: the seal never verified again, and
    seal_file wrote a safetensors file whose metadata safetensors (and verify) refuses."""
    from safetensors.numpy import save_file

    from paramseal import files

    model = {"w": np.linspace(-1, 1, 4096, dtype=np.float32).reshape(64, 64)}
    with pytest.raises(paramseal.UsageError, match=r"metadata keys and values must be str.*'epoch'"):
        paramseal.seal(model, key, metadata={"epoch": 3, "ok": "yes"})  # type: ignore[dict-item]
    with pytest.raises(paramseal.UsageError, match="metadata must be a mapping of str to str, not list"):
        paramseal.seal(model, key, metadata=[("a", "b")])  # type: ignore[arg-type]
    save_file(model, str(tmp_path / "m.safetensors"))
    for out in ("s.safetensors", "s.npz"):
        with pytest.raises(paramseal.UsageError, match=r"must be str.*'epoch'"):
            files.seal_file(tmp_path / "m.safetensors", tmp_path / out, key, extra_metadata={"epoch": 3})  # type: ignore[dict-item]
        assert not (tmp_path / out).exists(), f"{out} was written"


def test_metadata_under_the_headers_own_key_is_refused(tmp_path: Path, key: paramseal.Key) -> None:
    """seal_file wrote the header over the user's entry: the fresh seal verified as tampered."""
    from safetensors.numpy import save_file

    from paramseal import files

    model = {"w": np.linspace(-1, 1, 4096, dtype=np.float32).reshape(64, 64)}
    with pytest.raises(paramseal.UsageError, match="'paramseal' is where the seal header goes"):
        paramseal.seal(model, key, metadata={"paramseal": "mine"})
    save_file(model, str(tmp_path / "m.safetensors"))
    with pytest.raises(paramseal.UsageError, match="'paramseal' is where the seal header goes"):
        files.seal_file(tmp_path / "m.safetensors", tmp_path / "s.safetensors", key, extra_metadata={"paramseal": "x"})
    assert not (tmp_path / "s.safetensors").exists()
    files.seal_file(tmp_path / "m.safetensors", tmp_path / "s.safetensors", key, extra_metadata={"paramseal_note": "x"})
    assert files.verify_file(tmp_path / "s.safetensors", key).status == "intact"


def test_raise_for_status_maps_the_report_to_the_exported_errors(key: paramseal.Key) -> None:
    model = {"w": np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)}
    sealed = paramseal.seal(model, key)
    paramseal.verify(sealed.tensors, key, sealed.header_json).raise_for_status()  # intact: no error
    flipped = {"w": sealed.tensors["w"].copy()}
    flipped["w"].view(np.uint32)[0, 3] ^= 1 << 30
    rep = paramseal.verify(flipped, key, sealed.header_json)
    with pytest.raises(paramseal.TamperedError) as ei:
        rep.raise_for_status()
    assert ei.value.report is rep and ei.value.exit_code == 1
    assert "paramseal.recover, paramseal.files.recover_file" in str(ei.value)  # what to call, not "recover it"
    assert "recover it)" not in str(ei.value) and "'paramseal recover'" not in str(ei.value)
    wrecked = {"w": np.zeros_like(sealed.tensors["w"])}
    rep = paramseal.recover(wrecked, key, sealed.header_json).report
    with pytest.raises(paramseal.UnrecoverableError) as ei2:
        rep.raise_for_status()
    assert ei2.value.exit_code == 2
    paramseal.recover(flipped, key, sealed.header_json).report.raise_for_status()  # recovered: whole


@pytest.mark.parametrize(
    ("kind", "status", "recoverable", "code", "error"),
    [
        ("verify", "intact", True, 0, None),
        ("recover", "recovered", True, 0, None),
        ("verify", "tampered", True, 1, paramseal.TamperedError),
        ("verify", "tampered", False, 2, paramseal.UnrecoverableError),
        ("recover", "unrecoverable", False, 2, paramseal.UnrecoverableError),
        # the two fields are set apart (_shard_findings._merge takes the worst status and ANDs the shards'
        # recoverable): should they ever disagree, a model that is not whole never exits 1
        ("recover", "unrecoverable", True, 2, paramseal.UnrecoverableError),
    ],
)
def test_exit_code_and_raise_for_status_follow_the_status_first(
    kind: Literal["verify", "recover"],
    status: Status,
    recoverable: bool,
    code: int,
    error: type[errors.ParamSealError] | None,
) -> None:
    """0 whole, 1 only for a tampered model that can be recovered, 2 otherwise, whatever ``recoverable`` says."""
    rep = Report(kind=kind, status=status, recoverable=recoverable)
    assert rep.exit_code == code and rep.ok == (code == 0)
    if error is None:
        rep.raise_for_status()
        return
    with pytest.raises(error) as ei:
        rep.raise_for_status()
    assert type(ei.value) is error and ei.value.exit_code == code


def test_sealing_sealed_tensors_again_is_refused_unless_reseal(key: paramseal.Key) -> None:
    """The file API refused this while paramseal.seal sealed again silently: tampering laundered by a reseal."""
    rng = np.random.default_rng(0)
    sealed = paramseal.seal({"w": rng.standard_normal((256, 256)).astype(np.float32)}, key)
    tampered = {"w": sealed.tensors["w"].copy()}
    tampered["w"][3, 3] = 7.0
    with pytest.raises(paramseal.UsageError, match="already sealed"):
        paramseal.seal(tampered, key)
    again = paramseal.seal(tampered, key, reseal=True)
    assert paramseal.verify(again.tensors, key, again.header_json).status == "intact"


def test_seal_reads_each_tensor_of_a_mapping_once(key: paramseal.Key) -> None:
    """The check for a seal read a lazy mapping's tensors again and again (20 times each: 20 reads of a model)."""

    class Lazy(Mapping[str, np.ndarray]):
        def __init__(self, d: dict[str, np.ndarray]) -> None:
            self.d, self.reads = d, 0

        def __getitem__(self, name: str) -> np.ndarray:
            self.reads += 1
            return self.d[name].copy()

        def __iter__(self) -> Iterator[str]:
            return iter(self.d)

        def __len__(self) -> int:
            return len(self.d)

    rng = np.random.default_rng(0)
    lazy = Lazy({f"t{i}": rng.standard_normal((256, 256)).astype(np.float32) for i in range(6)})
    paramseal.seal(lazy, key)
    assert lazy.reads == 6


def test_sealing_a_sealed_module_again_is_refused_unless_reseal(key: paramseal.Key) -> None:
    torch = pytest.importorskip("torch")
    pst = pytest.importorskip("paramseal.torch")
    torch.manual_seed(0)
    net = torch.nn.Linear(256, 256)
    pst.seal_module(net, key)
    before = net.weight.detach().clone()
    with pytest.raises(paramseal.UsageError, match="already sealed"):
        pst.seal_module(net, key)
    assert torch.equal(net.weight, before)  # untouched
    h = pst.seal_module(net, key, reseal=True).header_json
    assert pst.verify_module(net, key, h).status == "intact"


def test_a_torch_state_dict_seals_verifies_and_recovers_as_arrays_would(key: paramseal.Key) -> None:
    """bfloat16 and requires_grad tensors too: np.asarray raised torch's TypeError / RuntimeError for them."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.LayerNorm(256))
    for sd in (net.state_dict(keep_vars=True), net.to(torch.bfloat16).state_dict()):
        before = {n: t.detach().clone() for n, t in sd.items()}
        s = paramseal.seal(sd, key)
        assert all(torch.equal(t, before[n]) for n, t in sd.items())  # the caller's tensors are untouched
        assert all(s.tensors[n].dtype.itemsize == t.element_size() for n, t in sd.items())
        # the sealed state dict as torch tensors again, of the dtype and requires_grad given
        sealed = {
            n: torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
            if a.dtype.itemsize == 2
            else torch.from_numpy(a.copy())
            for n, a in s.tensors.items()
        }
        sealed = {n: t.requires_grad_(sd[n].requires_grad) for n, t in sealed.items()}
        assert paramseal.verify(sealed, key, s.header_json).status == "intact"
        with torch.no_grad():
            sealed["0.weight"][3, :40] = 0
        assert paramseal.verify(sealed, key, s.header_json).tampered_tensors == ["0.weight"]
        fixed = paramseal.recover(sealed, key, s.header_json)
        assert fixed.report.status == "recovered"
        assert all(helpers.same_bytes(fixed.tensors[n], s.tensors[n]) for n in s.tensors)


def test_a_torch_tensor_with_its_negative_or_conjugate_bit_set_is_read_as_its_values(key: paramseal.Key) -> None:
    """``z.conj().imag`` is a float32 view with torch's negative bit: tensor.numpy() refuses it, and that read
    as "has dtype torch.float32, which ParamSeal does not support"."""
    torch = pytest.importorskip("torch")
    z = torch.complex(torch.randn(64, 128), torch.randn(64, 128))
    neg = z.conj().imag
    assert neg.is_neg() and neg.dtype == torch.float32
    s = paramseal.seal({"w": neg}, key)
    want = {"w": neg.resolve_neg().numpy()}
    assert paramseal.verify({"w": torch.from_numpy(s.tensors["w"])}, key, s.header_json).status == "intact"
    assert np.allclose(s.tensors["w"], want["w"], rtol=1e-3, atol=1e-6)


def test_a_torch_tensor_retyped_to_a_dtype_paramseal_cannot_seal_is_reported_tampered_not_raised(
    key: paramseal.Key,
) -> None:
    """verify raised UnsupportedError for a state dict whose tensor was made complex (reported tampered before
    cd18646, as a numpy array of it is) or float8 (a quantized model); seal still refuses such a tensor."""
    torch = pytest.importorskip("torch")
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8")
    torch.manual_seed(0)
    sd = {"a": torch.randn(128, 256), "b": torch.randn(64, 256), "c": torch.randn(64, 256)}
    s = paramseal.seal(sd, key)
    retyped = {n: torch.from_numpy(a.copy()) for n, a in s.tensors.items()}
    retyped["a"], retyped["b"] = retyped["a"].to(torch.complex64), retyped["b"].to(torch.float8_e4m3fn)
    report = paramseal.verify(retyped, key, s.header_json)
    assert report.status != "intact" and report.tampered_tensors == ["a", "b"]
    for t in (retyped["a"], retyped["b"]):
        with pytest.raises(paramseal.UnsupportedError, match="not supported"):
            paramseal.seal({"w": t}, key)


def test_threads_may_verify_and_recover_side_by_side(key: paramseal.Key) -> None:
    """A serving process may check several models at once: the shared pool, caches and kernels hold up."""
    import threading

    import ml_dtypes

    rng = np.random.default_rng(7)
    fp32 = {n: rng.standard_normal((256, 256)).astype(np.float32) for n in ("a", "b")}  # irs4
    mixed = {"e": rng.standard_normal((512, 256)).astype(ml_dtypes.bfloat16), "w": fp32["a"]}  # the lane code
    jobs = []
    for i, m in enumerate((fp32, mixed, fp32, mixed)):
        s = paramseal.seal(m, key)
        t = {n: a.copy() for n, a in s.tensors.items()}
        if m is fp32:  # scattered values
            for a in t.values():
                idx = rng.choice(a.size, a.size // 20, replace=False)
                a.reshape(-1)[idx] = rng.standard_normal(idx.size).astype(np.float32)
        else:  # a run of blocks
            t["e"].reshape(-1)[i * 640 : i * 640 + 2048] = 0
        jobs.append((s, t))
    got: list[object] = [None] * len(jobs)

    def run(j: int) -> None:
        s, t = jobs[j]
        try:
            for _ in range(2):
                assert paramseal.verify(t, key, s.header_json).status == "tampered"
                r = paramseal.recover(t, key, s.header_json)
                assert r.report.status == "recovered"
                assert all(helpers.same_bytes(r.tensors[n], s.tensors[n]) for n in s.tensors)
            got[j] = True
        except BaseException as e:  # noqa: BLE001 - reported below, with the job it came from
            got[j] = e

    threads = [threading.Thread(target=run, args=(j,)) for j in range(len(jobs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert got == [True] * len(jobs), got
