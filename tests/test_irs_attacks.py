"""Keyless forgery attempts against the irs4 code (security review).

The attacker knows the public construction and the header, not the key. A forgery is a
"recovered" report (or an output that verifies intact) whose bytes differ from the sealed
model. Every test asserts the safe outcome; ground truth is a byte comparison.
"""

from __future__ import annotations

from collections.abc import Callable

import helpers
import numpy as np
import pytest

import paramseal
from paramseal import _irs
from paramseal.header import parse_header

Model = dict[str, np.ndarray]


def _fp32(seed: int = 11) -> Model:
    rng = np.random.default_rng(seed)
    return {"w": (0.02 * rng.standard_normal(255 * 1024)).astype(np.float32)}  # no padding at all


def _with_int64(seed: int = 11) -> Model:
    rng = np.random.default_rng(seed)
    return _fp32(seed) | {"ids": rng.integers(0, 50_000, 4096).astype(np.int64)}


_CACHE: dict[tuple[str, str], paramseal.SealedModel] = {}


def _sealed(kind: str, level: str, key: paramseal.Key) -> paramseal.SealedModel:
    if (kind, level) not in _CACHE:
        s = paramseal.seal(_fp32() if kind == "fp32" else _with_int64(), key, level=level)
        assert parse_header(s.header_json, key).irs
        _CACHE[kind, level] = s
    return _CACHE[kind, level]


def _same(a: Model, b: Model) -> bool:
    return list(a) == list(b) and all(helpers.same_bytes(a[n], b[n]) for n in a)


def _assert_safe(s: paramseal.SealedModel, bad: Model, key: paramseal.Key) -> None:
    """Recover must refuse or give back the sealed bytes; its output never verifies intact otherwise."""
    res = paramseal.recover(bad, key, s.header_json)
    if res.report.status == "recovered":
        assert _same(res.tensors, s.tensors), "forgery: recovered to a model that was never sealed"
    else:
        assert res.report.status == "unrecoverable"
    if not _same(res.tensors, s.tensors):
        assert paramseal.verify(res.tensors, key, s.header_json).status == "tampered"
    for name, t in res.report.tensors.items():  # values reported restored (a partial result) must be sealed bytes
        if t.restored_indices:
            idx = np.asarray(t.restored_indices)
            got = helpers.uview(res.tensors[name]).reshape(-1)[idx]
            assert np.array_equal(got, helpers.uview(s.tensors[name]).reshape(-1)[idx]), name


def _attack(s: paramseal.SealedModel, f: Callable[[np.ndarray], None], floats_only: bool = True) -> Model:
    bad = helpers.copy_model(s.tensors)
    for a in bad.values():
        if a.dtype == np.float32 or not floats_only:
            f(a.reshape(-1).view(np.uint32) if a.dtype == np.float32 else a.reshape(-1).view(np.uint8))
    return bad


LEVELS = ["standard", "strong"]
KINDS = ["fp32", "fp32+int64"]


# ------------------------------------------------------------------ constants invariant under every keyed layout


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "pattern",
    [0x80000000, 0x000000FF, 0x0000FF00, 0x00010000, 0x01000000, 0x01020304, 0x7F800000, 0xFFFFFFFF],
)
def test_per_lane_constants_xored_into_every_float_are_never_recovered(
    key: paramseal.Key, level: str, kind: str, pattern: int
) -> None:
    """A constant per byte lane is the same under every rotation and permutation (sign flips included)."""
    s = _sealed(kind, level, key)
    _assert_safe(s, _attack(s, lambda u: u.__ixor__(np.uint32(pattern))), key)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("pattern", [0x01, 0x80, 0xFF])
def test_constants_in_the_data_region_only_are_never_recovered(key: paramseal.Key, level: str, pattern: int) -> None:
    s = _sealed("fp32+int64", level, key)
    bad = helpers.copy_model(s.tensors)
    bad["ids"].reshape(-1).view(np.uint8)[:] ^= np.uint8(pattern)
    _assert_safe(s, bad, key)


@pytest.mark.parametrize("level", LEVELS)
def test_one_constant_in_both_regions_is_never_recovered(key: paramseal.Key, level: str) -> None:
    s = _sealed("fp32+int64", level, key)
    bad = _attack(
        s, lambda u: u.__ixor__(np.uint8(0x01)) if u.dtype == np.uint8 else u.__ixor__(np.uint32(0x01010101)), False
    )
    _assert_safe(s, bad, key)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kind", KINDS)
def test_the_last_float_stratum_rewritten_with_lane_constants_is_never_recovered(
    key: paramseal.Key, level: str, kind: str
) -> None:
    """The last float stratum keeps its position in every group: any word there, plus lane constants elsewhere."""
    s = _sealed(kind, level, key)
    st_g = len(s.tensors["w"].reshape(-1)) // 255 if kind == "fp32" else None
    rng = np.random.default_rng(5)
    for _ in range(3):
        bad = helpers.copy_model(s.tensors)
        u = bad["w"].reshape(-1).view(np.uint32)
        g = st_g or -(-(u.size + 4096 * 2) // 255)
        sf = -(-u.size // g)
        u[(sf - 1) * g :] ^= np.uint32(rng.integers(1, 1 << 32, dtype=np.uint64))
        u[: (sf - 1) * g] ^= np.uint32(rng.integers(0, 1 << 32, dtype=np.uint64))
        _assert_safe(s, bad, key)


# ------------------------------------------------------------------ value-dependent and structural rewrites


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kind", KINDS)
def test_value_dependent_rewrites_are_never_recovered(key: paramseal.Key, level: str, kind: str) -> None:
    s = _sealed(kind, level, key)
    attacks = [
        lambda u: u.__iand__(np.uint32(0xFFFFFF00)),  # every weight's low byte zeroed
        lambda u: u.__iand__(np.uint32(0xFFFF0000)),  # low half zeroed
        lambda u: np.bitwise_xor(u, np.where(u & np.uint32(1 << 20), np.uint32(1 << 31), np.uint32(0)), out=u),
        lambda u: np.bitwise_xor(u, np.where(u & np.uint32(1 << 31), np.uint32(0x00010000), np.uint32(0)), out=u),
        lambda u: u.__setitem__(slice(None), u.view(np.float32).__neg__().view(np.uint32)),  # negate (= sign flip)
        lambda u: u.__setitem__(slice(None), (u.view(np.float32) * np.float32(2)).view(np.uint32)),  # scale by 2
        lambda u: u.__setitem__(slice(None), u.byteswap()),  # bytes of every word reversed
        lambda u: u.__setitem__(slice(None), u[::-1].copy()),  # every float tensor reversed
    ]
    for f in attacks:
        _assert_safe(s, _attack(s, f), key)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kind", KINDS)
def test_identical_changes_in_many_places_are_never_recovered(key: paramseal.Key, level: str, kind: str) -> None:
    """The same change at a fixed stride in every stratum: one change per group in many groups (outer code)."""
    s = _sealed(kind, level, key)
    for stride, pattern in ((255, 0x00010000), (97, 0x80000000), (1024, 0x01010101)):
        bad = helpers.copy_model(s.tensors)
        bad["w"].reshape(-1).view(np.uint32)[::stride] ^= np.uint32(pattern)
        _assert_safe(s, bad, key)


# ------------------------------------------------------------------ GF(256)-linear images of the sealed words


def _gf_scale(beta: int) -> np.ndarray:
    return _irs._gf_mul(np.arange(256), np.full(256, beta)).astype(np.uint8)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("beta", [0, 2, 0x8E])
@pytest.mark.parametrize("kind", ["fp32", "fp32+int64"])
def test_every_byte_scaled_in_gf256_is_never_recovered(key: paramseal.Key, level: str, beta: int, kind: str) -> None:
    """beta = 0: every value replaced with 0. The zero vector and any GF(2^8) multiple of a codeword
    are codewords of any linear code, whatever the key's rotations and permutations: the keyed
    offset (the code runs on the words plus a keyed pad) is what makes them fail."""
    s = _sealed(kind, level, key)
    mul = _gf_scale(beta)
    bad = helpers.copy_model(s.tensors)
    for a in bad.values():
        b = a.reshape(-1).view(np.uint8)
        b[:] = mul[b]
    _assert_safe(s, bad, key)


@pytest.mark.parametrize("level", LEVELS)
def test_floats_scaled_next_to_integer_tensors_are_never_recovered(key: paramseal.Key, level: str) -> None:
    """With integer tensors (tags in the header), scaling only the float bytes leaves no codeword."""
    s = _sealed("fp32+int64", level, key)
    mul = _gf_scale(2)
    bad = helpers.copy_model(s.tensors)
    b = bad["w"].reshape(-1).view(np.uint8)
    b[:] = mul[b]
    _assert_safe(s, bad, key)
