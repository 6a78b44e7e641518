"""The bit codec: splitting values into high bits (protected data) and low bits (watermark)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from paramseal import _bits

# The compiled kernels and the numpy fallback must agree bit for bit; test both where both exist.
KERNEL_CHOICES = [True, False] if "kernel" in inspect.signature(_bits.hi_bytes).parameters else [None]


@pytest.fixture(autouse=True, scope="module")
def _kernel_for_any_size() -> Iterator[None]:
    """The packing kernel is skipped below a few hundred blocks; these tests use a few and mean to reach it."""
    with pytest.MonkeyPatch.context() as mp:
        if hasattr(_bits, "_KERNEL_BLOCKS"):
            mp.setattr(_bits, "_KERNEL_BLOCKS", 0)
        yield


def _kw(kernel: bool | None) -> dict[str, bool]:
    return {} if kernel is None else {"kernel": kernel}


UINTS = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def _rand_blocks(seed: int, w: int, nb: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 2**w, size=(nb, 64), dtype=UINTS[w], endpoint=False)
        if w < 64
        else rng.integers(0, 2**63, size=(nb, 64), dtype=np.uint64) * np.uint64(2)
        + rng.integers(0, 2, size=(nb, 64), dtype=np.uint64)
    )


def _lowmask(w: int, k: int) -> np.unsignedinteger:
    return UINTS[w]((1 << k) - 1)


widths_and_k = st.sampled_from([16, 32, 64]).flatmap(lambda w: st.tuples(st.just(w), st.integers(1, w - 1)))


def test_uint_view_is_a_same_width_view() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    u = _bits.uint_view(a)
    assert u.dtype == np.uint32 and u.shape == (6,)
    assert np.array_equal(u.view(np.float32), a.reshape(-1))
    b = np.array([True, False, True])
    assert _bits.uint_view(b).dtype == np.uint8
    # A transposed (non-contiguous) view is read in logical C order.
    assert np.array_equal(_bits.uint_view(a.T).view(np.float32), a.T.reshape(-1))


@given(n=st.integers(0, 300))
def test_to_blocks_pads_with_zeros(n: int) -> None:
    flat = np.arange(1, n + 1, dtype=np.uint16)
    b = _bits.to_blocks(flat)
    assert b.shape == (max(1, -(-n // 64)), 64)
    assert np.array_equal(b.reshape(-1)[:n], flat)
    assert not b.reshape(-1)[n:].any()


@pytest.mark.parametrize("kernel", KERNEL_CHOICES)
@given(wk=widths_and_k, seed=st.integers(0, 2**32 - 1), nb=st.integers(1, 4))
def test_hi_and_lo_split_and_join_losslessly(kernel: bool | None, wk: tuple[int, int], seed: int, nb: int) -> None:
    w, k = wk
    kw = _kw(kernel)
    ub = _rand_blocks(seed, w, nb)
    hi = _bits.hi_bytes(ub, k, **kw)
    lo = _bits.lo_bytes(ub, k, **kw)
    assert hi.shape == (nb, 8 * (w - k)) and lo.shape == (nb, 8 * k)
    other = _rand_blocks(seed + 1, w, nb)
    # Putting ub's high bits into other keeps other's low bits, and vice versa.
    x = other.copy()
    _bits.set_hi(x, hi, k, **kw)
    m = _lowmask(w, k)
    assert np.array_equal(x & ~m, ub & ~m)
    assert np.array_equal(x & m, other & m)
    _bits.set_lo(x, lo, k, **kw)
    assert np.array_equal(x, ub)


@given(wk=widths_and_k, seed=st.integers(0, 2**32 - 1))
def test_hi_bytes_ignore_low_bits_and_lo_bytes_ignore_high_bits(wk: tuple[int, int], seed: int) -> None:
    w, k = wk
    ub = _rand_blocks(seed, w, 2)
    m = _lowmask(w, k)
    assert np.array_equal(_bits.hi_bytes(ub, k), _bits.hi_bytes(ub & ~m, k))
    assert np.array_equal(_bits.lo_bytes(ub, k), _bits.lo_bytes(ub & m, k))


@pytest.mark.skipif(KERNEL_CHOICES == [None], reason="no compiled bit-packing path in this version")
@given(wk=widths_and_k, seed=st.integers(0, 2**32 - 1))
def test_compiled_and_numpy_bit_packing_agree(wk: tuple[int, int], seed: int) -> None:
    w, k = wk
    ub = _rand_blocks(seed, w, 3)
    assert np.array_equal(_bits.hi_bytes(ub, k, kernel=True), _bits.hi_bytes(ub, k, kernel=False))
    assert np.array_equal(_bits.lo_bytes(ub, k, kernel=True), _bits.lo_bytes(ub, k, kernel=False))


@given(wk=widths_and_k)
def test_tag_mask_holds_exactly_32_low_bits_in_the_first_values(wk: tuple[int, int]) -> None:
    w, k = wk
    m = _bits.tag_mask(k, w)
    assert m.dtype == UINTS[w] and m.shape == (64,)
    assert sum(bin(int(x)).count("1") for x in m) == 32
    assert all(int(x) < (1 << k) for x in m)  # only low bits
    used = np.flatnonzero(m)
    assert used.tolist() == list(range(used.size))  # the first values, contiguous


@given(wk=widths_and_k, seed=st.integers(0, 2**32 - 1))
def test_tags_round_trip_and_touch_only_their_bits(wk: tuple[int, int], seed: int) -> None:
    w, k = wk
    ub = _rand_blocks(seed, w, 3)
    tags = np.random.default_rng(seed).integers(0, 2**32, size=3, dtype=np.uint64)
    x = ub.copy()
    _bits.write_tags(x, tags, k)
    assert np.array_equal(_bits.read_tags(x, k), tags)
    m = _bits.tag_mask(k, w)
    assert np.array_equal(x & ~m, ub & ~m)


@pytest.mark.parametrize(("user_setting", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_importing_paramseal_makes_idle_openmp_threads_sleep_unless_the_user_chose(
    user_setting: str | None, expected: str
) -> None:
    """Spinning OpenMP threads made a 0.1 GiB seal take 21 s instead of 1 s on a busy 2-core machine."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user_setting is not None:
        env["OMP_WAIT_POLICY"] = user_setting
    code = "import os, paramseal; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


@pytest.mark.parametrize("width", [16, 32, 64])
def test_tag_word_shifts_stay_below_64(width: int) -> None:
    """The compiled tag kernels shift a uint64 by these: 64 or more is undefined behaviour in C."""
    for k in range(1, 21):
        if k >= width:
            continue
        wm, shift = _bits.tag_words(_bits.tag_mask(k, width), width // 16, k)
        assert shift.max() < 64 and wm.size == shift.size


def test_byte_aligned_and_small_packing_needs_no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """A seal at k = 8 or 16, and a few reserved blocks at any k, must not pay numba's first-kernel load."""
    from paramseal import _kernels

    def refuse(*a: object) -> None:
        raise AssertionError("the packing kernel was used")

    monkeypatch.setattr(_kernels, "pack_fields", refuse)
    monkeypatch.setattr(_kernels, "unpack_fields", refuse)
    monkeypatch.setattr(_bits, "_KERNEL_BLOCKS", 512)
    for k, nb in ((8, 2000), (16, 2000), (12, 511), (3, 4)):
        ub = _rand_blocks(k, 32, nb)
        lo, hi = _bits.lo_bytes(ub, k), _bits.hi_bytes(ub, k)
        back = np.zeros_like(ub)
        _bits.set_lo(back, lo, k)
        _bits.set_hi(back, hi, k)
        assert np.array_equal(back, ub)
    with pytest.raises(AssertionError, match="kernel was used"):  # from 512 blocks, unaligned k: the kernel
        _bits.lo_bytes(_rand_blocks(1, 32, 512), 12)
