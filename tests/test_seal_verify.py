"""Seal and verify through the Python API: what sealing may change, what verify reports."""

from __future__ import annotations

import json
from pathlib import Path

import helpers
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import paramseal
from paramseal import UnsupportedError, UsageError, files
from paramseal.levels import max_subnormal_change


def test_sealed_model_verifies_intact(sealed: paramseal.SealedModel, key: paramseal.Key, model: dict) -> None:
    r = paramseal.verify(sealed.tensors, key, sealed.header_json, metadata={"author": "tests", "license": "apache-2.0"})
    assert r.status == "intact" and r.recoverable and r.ok
    assert r.exit_code == 0
    assert r.kind == "verify"
    assert r.tampered_tensors == [] and r.extra_tensors == () and r.metadata_issues == ()
    assert r.key_fingerprint == key.fingerprint and r.level == "standard"
    assert r.total_blocks == sum(max(1, -(-a.size // 64)) for a in model.values())
    assert set(r.tensors) == set(model)


def test_sealed_model_keeps_names_order_shapes_and_dtypes(sealed: paramseal.SealedModel, model: dict) -> None:
    assert list(sealed.tensors) == list(model)
    for name, a in model.items():
        assert sealed.tensors[name].shape == a.shape and sealed.tensors[name].dtype == a.dtype


def test_seal_does_not_modify_its_input(key: paramseal.Key) -> None:
    m = helpers.small_model(3)
    before = helpers.copy_model(m)
    for level in paramseal.LEVELS:
        paramseal.seal(m, key, level=level)
    helpers.assert_model_equal(m, before)


def test_sealed_arrays_do_not_alias_the_input(key: paramseal.Key) -> None:
    m = helpers.small_model(4)
    s = paramseal.seal(m, key)
    for name in m:
        assert not np.shares_memory(s.tensors[name], m[name]), name


def test_integer_and_bool_tensors_are_unchanged_by_sealing(sealed: paramseal.SealedModel, model: dict) -> None:
    for name, a in model.items():
        if not helpers.is_float(a.dtype):
            assert helpers.same_bytes(sealed.tensors[name], a), name


def test_sealing_changes_low_bits_of_floats(sealed: paramseal.SealedModel, model: dict) -> None:
    # Not a no-op: the watermark is really in the weights.
    a, s = model["embed.weight"], sealed.tensors["embed.weight"]
    assert (helpers.uview(a) != helpers.uview(s)).mean() > 0.5


def _check_bounds(orig: np.ndarray, sealed: np.ndarray, k: int) -> None:
    total, man, exp = helpers.FLOAT_LAYOUT[orig.dtype]
    u0, u1 = helpers.uview(orig), helpers.uview(sealed)
    hi = ~np.array((1 << k) - 1, dtype=u0.dtype)
    # Only the low k bits may change: sign, exponent and high mantissa bits are kept.
    assert np.array_equal(u0 & hi, u1 & hi)
    x0 = orig.reshape(-1).astype(np.float64)
    x1 = sealed.reshape(-1).astype(np.float64)
    emask = ((1 << exp) - 1) << man
    normal = (u0 & u0.dtype.type(emask)) != 0
    bound = (2**k - 1) * 2.0**-man
    if normal.any():
        rel = np.abs(x1[normal] - x0[normal]) / np.abs(x0[normal])
        assert rel.max() <= bound, (rel.max(), bound)
    if (~normal).any():
        dt = {
            np.dtype(np.float64): "F64",
            np.dtype(np.float32): "F32",
            np.dtype(np.float16): "F16",
            helpers.BF16: "BF16",
        }[orig.dtype]
        assert np.abs(x1[~normal] - x0[~normal]).max() <= max_subnormal_change(dt, k)
    assert np.isfinite(x1).all()


@pytest.mark.parametrize("level", ["light", "standard", "strong"])
@pytest.mark.parametrize("dt", list(helpers.FLOAT_LAYOUT), ids=str)
def test_perturbation_is_bounded_for_every_dtype_and_level(key: paramseal.Key, dt: np.dtype, level: str) -> None:
    rng = np.random.default_rng(7)
    orig = helpers.random_tensor(rng, dt, (40, 50), wild=True)  # every finite bit pattern: subnormals, +-0, huge
    s = paramseal.seal({"w": orig}, key, level=level)
    _check_bounds(orig, s.tensors["w"], helpers.LEVEL_K[level][dt])
    assert paramseal.verify(s.tensors, key, s.header_json).status == "intact"


_float_dtypes = st.sampled_from([np.float16, np.float32, np.float64])


@given(
    a=_float_dtypes.flatmap(
        lambda dt: hnp.arrays(
            dt,
            hnp.array_shapes(min_dims=1, max_dims=3, max_side=40),
            elements=st.floats(allow_nan=False, allow_infinity=False, width=np.dtype(dt).itemsize * 8),
        )
    ),
    bits=st.integers(1, 9),
)
def test_perturbation_bound_holds_for_explicit_bits(key: paramseal.Key, a: np.ndarray, bits: int) -> None:
    s = paramseal.seal({"w": a}, key, bits=bits)
    _check_bounds(a, s.tensors["w"], bits)
    assert paramseal.verify(s.tensors, key, s.header_json).status == "intact"


@given(seed=st.integers(0, 2**32 - 1), shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=70))
def test_bf16_perturbation_bound(key: paramseal.Key, seed: int, shape: tuple[int, ...]) -> None:
    a = helpers.random_tensor(np.random.default_rng(seed), helpers.BF16, shape, wild=True)
    anchor = np.ones(256, np.float32)  # a model needs room for at least one tag
    s = paramseal.seal({"w": a, "anchor": anchor}, key, level="strong")
    _check_bounds(a, s.tensors["w"], 2)
    assert paramseal.verify(s.tensors, key, s.header_json).status == "intact"


@pytest.mark.parametrize("dt", [np.float32, np.float16, np.float64, ml_dtypes.bfloat16])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_tensors_are_sealed_as_data_and_still_protected(key: paramseal.Key, dt: type, bad: float) -> None:
    """Inf has no free low bits: such a tensor carries none (k=0), its values unchanged, and is still protected."""
    a = np.ones((16, 9), dtype=np.float32)
    a[3, 4] = bad
    m = {"ok": np.ones(1000, np.float32), "layer.7.weight": a.astype(dt)}
    s = paramseal.seal(m, key)
    assert [(t.name, t.k > 0) for t in s.header.tensors] == [("ok", True), ("layer.7.weight", False)]
    assert s.tensors["layer.7.weight"].tobytes() == m["layer.7.weight"].tobytes()
    assert paramseal.verify(s.tensors, key, s.header_json).status == "intact"
    hit = {**s.tensors, "layer.7.weight": s.tensors["layer.7.weight"].copy()}
    hit["layer.7.weight"].view(np.uint8)[10] ^= 4
    assert paramseal.verify(hit, key, s.header_json).status == "tampered"
    back = paramseal.recover(hit, key, s.header_json)
    assert back.report.status == "recovered"
    assert back.tensors["layer.7.weight"].tobytes() == m["layer.7.weight"].tobytes()


def test_a_finite_model_is_sealed_without_a_scan_for_nan(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The NaN/Inf scan is an extra pass over the model: paid only when the seal meets one."""
    import importlib

    def scan(*_: object) -> frozenset[str]:
        raise AssertionError("scanned a finite model for NaN/Inf")

    monkeypatch.setattr(importlib.import_module("paramseal.seal"), "non_finite", scan)
    m = {"w": np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32)}
    src = helpers.write_st(tmp_path / "m.safetensors", m)
    files.seal_file(src, tmp_path / "s.safetensors", key)
    assert files.verify_file(tmp_path / "s.safetensors", key).status == "intact"


def test_a_model_whose_only_floats_hold_nan_is_refused(key: paramseal.Key) -> None:
    with pytest.raises(UnsupportedError, match="whose float tensors each hold at least one NaN or Inf value") as ei:
        paramseal.seal({"w": np.full(1000, np.inf, np.float32), "i": np.arange(100)}, key)
    assert ei.value.exit_code == 3


def test_irs_refused_for_a_nan_tensor_says_why(key: paramseal.Key) -> None:
    """A NaN tensor sealed as data can tip the model past irs's quarter: the refusal names that cause."""
    w = {"mask": np.full(4096, -np.inf, np.float32), "w": np.ones(4096, np.float32)}
    with pytest.raises(UnsupportedError, match="holding NaN/Inf, sealed as data"):
        paramseal.SealConfig(code="irs").seal(w, key)


def test_empty_model_is_refused(key: paramseal.Key) -> None:
    with pytest.raises(UsageError, match="empty model"):
        paramseal.seal({}, key)


@pytest.mark.parametrize("lanes", [0, -1, 2.5, True, "3"])
def test_lanes_that_are_not_a_positive_int_are_a_usage_error(key: paramseal.Key, lanes: object) -> None:
    """SealConfig(lanes=0) died in a ZeroDivisionError, lanes=-1 in numpy's ValueError ("negative dimensions"),
    other types in a TypeError: not a ParamSealError (exit 3), and nothing said that lanes was wrong."""
    w = {"w": np.linspace(-1, 1, 4096, dtype=np.float32)}
    with pytest.raises(UsageError, match=r"lanes must be a positive int .*, not " + repr(lanes).replace(".", r"\.")):
        paramseal.SealConfig(lanes=lanes).seal(w, key)  # type: ignore[arg-type]
    assert paramseal.SealConfig(lanes=1).seal(w, key).header.lanes == 1  # the smallest that is valid


@pytest.mark.parametrize("lanes", [65, 300])
def test_more_lanes_than_blocks_are_a_usage_error(key: paramseal.Key, lanes: int) -> None:
    """SealConfig(lanes=10**9) of a 64-block model died in a MemoryError (179 GiB for the lanes' store), not a
    ParamSealError; any count past the blocks leaves lanes empty, and a header recording one is refused on reading."""
    w = {"w": np.linspace(-1, 1, 4096, dtype=np.float32)}
    with pytest.raises(UsageError, match=rf"lanes is {lanes}, more than the model's 64 blocks"):
        paramseal.SealConfig(lanes=lanes).seal(w, key)
    assert paramseal.SealConfig(lanes=64).seal(w, key).header.lanes == 64  # the largest that is valid


def test_lanes_with_the_irs_code_is_refused_not_ignored(key: paramseal.Key) -> None:
    """SealConfig(code="irs", lanes=4) sealed with irs4 and dropped lanes without a word (its header recorded
    none): a setting that cannot apply is a usage error, as an unknown code is."""
    w = {"w": np.linspace(-1, 1, 4096, dtype=np.float32)}
    with pytest.raises(UsageError, match="lanes applies to the lane code only"):
        paramseal.SealConfig(code="irs", lanes=4).seal(w, key)
    assert paramseal.SealConfig(code="lanes", lanes=4).seal(w, key).header.lanes == 4


def test_model_without_float_tensors_is_refused(key: paramseal.Key) -> None:
    with pytest.raises(UnsupportedError, match="without float tensors"):
        paramseal.seal({"i": np.arange(100), "b": np.ones(5, bool)}, key)


def test_unsupported_dtype_is_refused(key: paramseal.Key) -> None:
    with pytest.raises(UnsupportedError, match="not supported"):
        paramseal.seal({"w": np.ones(10, np.float32), "c": np.ones(3, np.complex64)}, key)


def test_non_contiguous_and_fortran_inputs_are_sealed_in_logical_order(key: paramseal.Key) -> None:
    base = np.random.default_rng(0).standard_normal((30, 50)).astype(np.float32)
    m = {"t": base.T, "f": np.asfortranarray(base), "s": base[::2, ::3]}
    s = paramseal.seal(m, key)
    for name, a in m.items():
        assert s.tensors[name].shape == a.shape
        _check_bounds(np.ascontiguousarray(a), s.tensors[name], 8)
        # Verify accepts the sealed values in any memory order.
        assert (
            paramseal.verify({**s.tensors, name: np.asfortranarray(s.tensors[name])}, key, s.header_json).status
            == "intact"
        )


def test_empty_and_scalar_tensors_are_sealed_and_authenticated(key: paramseal.Key) -> None:
    m = {
        "w": np.ones(300, np.float32),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(2.5, np.float32),
        "e_int": np.zeros(0, np.int8),
    }
    s = paramseal.seal(m, key)
    assert s.tensors["empty"].shape == (0, 4) and s.tensors["scalar"].shape == ()
    assert paramseal.verify(s.tensors, key, s.header_json).status == "intact"
    t = helpers.flip_bit(s.tensors, "scalar", 0, 20)
    r = paramseal.verify(t, key, s.header_json)
    assert r.tampered_tensors == ["scalar"] and r.tensors["scalar"].tampered_blocks == (0,)
    t = helpers.copy_model(s.tensors)
    t["empty"] = np.zeros((4, 0), np.float32)
    r = paramseal.verify(t, key, s.header_json)
    assert r.status == "tampered" and r.tampered_tensors == ["empty"]


def test_each_seal_uses_a_fresh_salt(key: paramseal.Key, model: dict) -> None:
    a, b = paramseal.seal(model, key), paramseal.seal(model, key)
    assert a.header.salt != b.header.salt
    assert not helpers.same_bytes(a.tensors["fc.weight"], b.tensors["fc.weight"])
    # A header belongs to its own seal: the other seal's weights do not verify under it.
    r = paramseal.verify(b.tensors, key, a.header_json)
    assert r.status == "tampered"
    assert set(r.tampered_tensors) >= {n for n, x in model.items() if helpers.is_float(x.dtype)}


def test_header_records_every_setting(sealed: paramseal.SealedModel, key: paramseal.Key, model: dict) -> None:
    h = json.loads(sealed.header_json)
    for field in ("scheme", "level", "bits", "block", "mac", "code", "salt", "tensors", "key_fingerprint", "hmac"):
        assert field in h, field
    assert h["scheme"] == "paramseal/2" and h["block"] == 64
    assert h["key_fingerprint"] == key.fingerprint
    assert [t["name"] for t in h["tensors"]] == list(model)
    assert [tuple(t["shape"]) for t in h["tensors"]] == [a.shape for a in model.values()]
    assert h["user_metadata"] == {"author": "tests", "license": "apache-2.0"}
    assert "carriers" in h and "user_metadata_sha256" in h
    assert all("reserved" in t for t in h["tensors"])


def test_seal_config_default_is_the_one_call_default(model: dict, key: paramseal.Key) -> None:
    a = paramseal.SealConfig().seal(model, key)
    b = paramseal.seal(model, key)
    ha, hb = a.header, b.header
    assert (ha.level, ha.bits, ha.lanes, ha.block, ha.mac, ha.code) == (
        hb.level,
        hb.bits,
        hb.lanes,
        hb.block,
        hb.mac,
        hb.code,
    )
    assert [t.k for t in ha.tensors] == [t.k for t in hb.tensors]
    assert paramseal.verify(a.tensors, key, a.header_json).status == "intact"


def test_verify_does_not_modify_its_input(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    t = helpers.flip_bit(sealed.tensors, "fc.weight", 100, 3)
    before = helpers.copy_model(t)
    paramseal.verify(t, key, sealed.header_json)
    paramseal.recover(t, key, sealed.header_json)
    helpers.assert_model_equal(t, before)


def test_verify_accepts_tensors_in_any_order(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    rev = dict(reversed(list(sealed.tensors.items())))
    assert paramseal.verify(rev, key, sealed.header_json).status == "intact"


def test_report_json_round_trips(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    t = helpers.flip_bit(sealed.tensors, "embed.weight", 64 * 5 + 1, 29)
    r = paramseal.verify(t, key, sealed.header_json)
    d = json.loads(r.to_json())
    assert d == r.to_dict()
    assert d["status"] == "tampered" and d["recoverable"] is True
    assert d["tampered_tensors"] == ["embed.weight"]
    assert d["tensors"]["embed.weight"]["tampered_blocks"] == [5]
    assert d["tampered_blocks"] == 1 and d["total_blocks"] == r.total_blocks


@pytest.mark.parametrize("dtype", ["F16", "BF16", "F32", "F64"])
def test_the_non_finite_scan_finds_exactly_the_words_with_an_all_ones_exponent(dtype: str) -> None:
    """The seal's NaN/Inf refusal (value less its sign >= the exponent mask) against the definition."""
    from paramseal._sealing import _has_non_finite
    from paramseal.levels import FLOATS, ST_TO_NP

    fmt, width = FLOATS[dtype], ST_TO_NP[dtype].itemsize * 8
    word = np.dtype(f"u{width // 8}").type
    e_mask = ((1 << fmt.exponent) - 1) << fmt.mantissa
    sign = 1 << (width - 1)
    edges = [0, 1, e_mask - 1, e_mask, e_mask | 1, sign | (e_mask - 1), sign | e_mask, (1 << width) - 1, sign]
    rng = np.random.default_rng(3)
    for x in edges + rng.integers(0, 1 << min(width, 63), 200).tolist():
        u = np.array([0, x, 5], dtype=word)
        assert _has_non_finite(u, dtype) == ((x & e_mask) == e_mask), hex(x)
    assert not _has_non_finite(np.zeros(0, word), dtype)
