"""Protection levels, explicit --bits, perturbation bounds and recovery capacities (DESIGN.md section 3)."""

from __future__ import annotations

import math
from pathlib import Path

import helpers
import numpy as np
import pytest

import paramseal
from paramseal import UnsupportedError, UsageError
from paramseal.levels import (
    FLOATS,
    bits_for,
    bound_text,
    capacity,
    dtype_name,
    max_relative_change,
    max_subnormal_change,
)


def test_levels_are_light_standard_strong() -> None:
    assert paramseal.LEVELS == ("light", "standard", "strong")


@pytest.mark.parametrize("dt", ["F64", "F32", "F16", "BF16"])
def test_k_grows_with_the_level_and_stays_below_the_mantissa(dt: str) -> None:
    ks = [bits_for(dt, lv, None) for lv in paramseal.LEVELS]
    assert ks == sorted(ks) and ks[0] >= 1
    assert ks[-1] <= FLOATS[dt].mantissa - 1


def test_standard_k_matches_the_documented_choice() -> None:
    assert {dt: bits_for(dt, "standard", None) for dt in FLOATS} == {"F64": 16, "F32": 8, "F16": 2, "BF16": 1}
    assert {dt: bits_for(dt, "strong", None) for dt in FLOATS} == {"F64": 24, "F32": 12, "F16": 4, "BF16": 2}


@pytest.mark.parametrize("dt", ["I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL"])
def test_integer_dtypes_carry_no_bits(dt: str) -> None:
    for lv in paramseal.LEVELS:
        assert bits_for(dt, lv, None) == 0
    assert bits_for(dt, "standard", 5) == 0


@pytest.mark.parametrize("dt, m", [("F64", 52), ("F32", 23), ("F16", 10), ("BF16", 7)])
def test_explicit_bits_range(dt: str, m: int) -> None:
    assert bits_for(dt, "standard", 1) == 1
    assert bits_for(dt, "standard", m - 1) == m - 1
    for bad in (0, -1, m, m + 1, 64):
        with pytest.raises(UsageError, match=f"{bad} is out of range for {dt}"):
            bits_for(dt, "standard", bad)


def test_unknown_level_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown level 'paranoid'"):
        bits_for("F32", "paranoid", None)


@pytest.mark.parametrize(
    "dt, k, want",
    [
        ("F32", 8, 3.0e-5),
        ("F32", 12, 4.9e-4),
        ("F32", 16, 7.8e-3),
        ("F16", 2, 2.9e-3),
        ("F16", 4, 1.5e-2),
        ("BF16", 1, 7.8e-3),
        ("BF16", 2, 2.3e-2),
    ],
)
def test_max_relative_change_matches_the_design_table(dt: str, k: int, want: float) -> None:
    got = max_relative_change(dt, k)
    assert got == (2**k - 1) * 2.0 ** -FLOATS[dt].mantissa
    assert float(f"{got:.1e}") == pytest.approx(want, rel=0.02)


@pytest.mark.parametrize("dt, k, want", [("F32", 8, 0.238), ("F32", 12, 0.365)])
def test_capacity_matches_the_design_bounds(dt: str, k: int, want: float) -> None:
    c = capacity(dt, k)
    assert c.k == k
    assert c.erasure_bound == pytest.approx((k - 0.5) / (FLOATS[dt].bits - 0.5))
    assert round(c.erasure_bound, 3) == want
    assert c.error_bound == pytest.approx(c.erasure_bound / 2)
    assert c.max_relative_change == max_relative_change(dt, k)


@pytest.mark.parametrize(
    "dt, level, want",
    [
        ("BF16", "light", 0.0005),
        ("BF16", "standard", 0.0005),
        ("F16", "light", 0.0005),
        ("F16", "standard", 0.0016),
        ("BF16", "strong", 0.0016),
        ("F32", "light", 0.0018),
        ("F64", "light", 0.0020),
        ("F16", "strong", 0.0040),
        ("F64", "standard", 0.0044),
        ("F64", "strong", 0.0072),
    ],
)
def test_scattered_bound_is_the_share_of_random_parameters_that_fills_the_erasure_bound(
    dt: str, level: str, want: float
) -> None:
    # A parameter replaced at a random place costs its whole 64-value block, so the lane code's
    # scattered capacity is the p whose expected share of hit blocks, 1 - (1 - p)**64, is the bound.
    c = capacity(dt, bits_for(dt, level, None))
    assert 1 - (1 - c.scattered_bound) ** 64 == pytest.approx(c.erasure_bound)
    assert round(c.scattered_bound, 4) == want


def test_max_subnormal_change_is_the_low_bits_at_the_smallest_exponent() -> None:
    # fp16: smallest subnormal is 2**-24; k=2 low bits span at most 3 of them.
    assert max_subnormal_change("F16", 2) == 3 * 2.0**-24
    assert max_subnormal_change("F32", 8) == 255 * 2.0**-149
    assert max_subnormal_change("BF16", 1) == 2.0**-133


def test_dtype_name_covers_every_supported_dtype_and_rejects_others() -> None:
    names = {dtype_name(dt) for dt in helpers.ALL_DTYPES}
    assert names == {"F64", "F32", "F16", "BF16", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL"}
    for bad in (
        np.complex64,
        np.float128 if hasattr(np, "float128") else np.complex128,
        np.dtype("U3"),
        np.dtype(object),
    ):
        with pytest.raises(UnsupportedError, match="not supported"):
            dtype_name(np.dtype(bad))


@pytest.mark.parametrize("level", ["light", "standard", "strong"])
def test_seal_uses_the_level_k_for_every_float_tensor(
    model: dict[str, np.ndarray], key: paramseal.Key, level: str
) -> None:
    s = paramseal.seal(model, key, level=level)
    assert s.header.level == level and s.header.bits is None
    for spec in s.header.tensors:
        dt = model[spec.name].dtype
        assert spec.k == helpers.LEVEL_K[level].get(dt, 0), spec


def test_explicit_bits_apply_to_every_float_tensor(key: paramseal.Key) -> None:
    m = {
        "a": np.ones(100, np.float32),
        "b": np.ones(100, np.float16),
        "c": np.ones(100, np.float64),
        "i": np.ones(3, np.int16),
    }
    s = paramseal.seal(m, key, bits=5)
    assert {t.name: t.k for t in s.header.tensors} == {"a": 5, "b": 5, "c": 5, "i": 0}
    assert s.header.bits == 5
    assert paramseal.verify(s.tensors, key, s.header_json).level == "bits=5"


@pytest.mark.parametrize("bits", [0, -3, 7, 23, 40])
def test_seal_refuses_bits_out_of_range_for_any_tensor(
    model: dict[str, np.ndarray], key: paramseal.Key, bits: int
) -> None:
    # The model holds bf16 (7 mantissa bits): 7 and above are out of range for it.
    with pytest.raises(UsageError, match="out of range"):
        paramseal.seal(model, key, bits=bits)


def test_seal_refuses_unknown_level(model: dict[str, np.ndarray], key: paramseal.Key) -> None:
    with pytest.raises(UsageError, match="unknown level"):
        paramseal.seal(model, key, level="max")


def test_capacity_helper_is_exported_and_monotone_in_k() -> None:
    prev = -math.inf
    for k in range(1, 23):
        c = paramseal.capacity("F32", k)
        assert c.erasure_bound > prev and c.max_relative_change < 2.0**-23 * 2**k
        prev = c.erasure_bound


def test_capacity_given_a_level_or_a_non_int_says_what_it_takes() -> None:
    with pytest.raises(UsageError, match=r"not a level: capacity\('F32', bits_for\('F32', 'standard', None\)\)"):
        paramseal.capacity("F32", "standard")  # type: ignore[arg-type]
    for bad in (8.0, True, None, "8"):
        with pytest.raises(UsageError, match="k must be an int"):
            paramseal.capacity("F16", bad)  # type: ignore[arg-type]
    assert capacity("F32", bits_for("F32", "standard", None)) == capacity("F32", 8)


def test_a_big_endian_array_is_read_as_its_values(key: paramseal.Key) -> None:
    """A '>f4' array holds the values a '<f4' one does, as a big-endian .npy file does (whose reader converts it).

    seal refused it (saying how to convert it) while verify called the sealed model, given so, tampered
    ("dtype changed from F32 to >f4", every block) and recover called it unrecoverable.
    """
    other = ">" if np.little_endian else "<"
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(other + "f4")
    s = paramseal.seal({"w": w}, key)
    native = s.tensors["w"]
    assert native.dtype.isnative and paramseal.verify(s.tensors, key, s.header_json).status == "intact"
    swapped = {"w": native.astype(native.dtype.newbyteorder(other))}
    assert paramseal.verify(swapped, key, s.header_json).status == "intact"
    assert paramseal.recover(swapped, key, s.header_json).report.status == "intact"
    # dtype_name, for a caller that asks it directly, still says how to convert one
    with pytest.raises(UnsupportedError, match=r"byte order: a\.astype\('[<>]f4'\)"):
        dtype_name(w.dtype)
    with pytest.raises(UnsupportedError, match=r"complex64 is not supported; supported"):
        dtype_name(np.dtype(np.complex64))


@pytest.mark.parametrize("dt", ["F64", "F32", "F16", "BF16"])
def test_printed_bounds_round_up_to_the_next_figure_at_or_above_the_bound(dt: str) -> None:
    """f"{2**-7:.2e}" printed BF16's k=1 bound 0.0078125 as 7.81e-03: under it. Printed bounds round up, to the
    smallest figure at or above them (exact where the bound is one)."""
    from decimal import Decimal

    for k in range(1, FLOATS[dt].mantissa):
        for bound, digits in [(max_relative_change(dt, k), 2), (max_subnormal_change(dt, k), 1)]:
            text = bound_text(bound, digits)
            assert len(text.split("e")[0]) == digits + 2 and Decimal(text) >= Decimal(bound), (dt, k, text)
            step = Decimal(1).scaleb(Decimal(text).adjusted() - digits)
            assert Decimal(text) - step < Decimal(bound), (dt, k, text)
    assert bound_text(2.0**-7) == "7.82e-03" and bound_text(15 * 2.0**-10) == "1.47e-02"
    assert bound_text(0.25) == "2.50e-01" and bound_text(9.9999e-3) == "1.00e-02"


def test_inspect_prints_the_bf16_bound_rounded_up(tmp_path: Path, key_file: Path) -> None:
    import ml_dtypes

    rng = np.random.default_rng(0)
    plain = helpers.write_st(tmp_path / "m.safetensors", {"w": rng.standard_normal(4096).astype(ml_dtypes.bfloat16)})
    sealed = tmp_path / "s.safetensors"
    assert helpers.run_cli(["seal", plain, sealed, "--key", key_file])[0] == 0
    rc, out, _ = helpers.run_cli(["inspect", sealed])
    assert rc == 0 and "BF16  k=1   max relative change 7.82e-03" in out and "7.81e-03" not in out, out
    rc, _, err = helpers.run_cli(["seal", plain, tmp_path / "b.safetensors", "--key", key_file, "--bits", "5"])
    assert rc == 0 and "by up to 2.5e-01 of their magnitude, against 2.4e-02 at level strong" in err, err
