"""`_embed.scan`, seal's "already sealed?" check of every tensor: one read a tensor, the records a search by k finds."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import paramseal
from paramseal import _embed


def _by_each_k(a: np.ndarray, damaged: bool) -> _embed.Found | None:
    """The reference: `read_record` at each k in turn, the first record found."""
    for k in _embed._ks(str(paramseal.levels.dtype_name(a.dtype))):
        if (f := _embed.read_record(a, k, damaged=damaged)) is not None:
            return f
    return None


@pytest.fixture(scope="module")
def sealed(key: paramseal.Key) -> paramseal.SealedModel:
    rng = np.random.default_rng(5)
    model = {
        "w": (0.02 * rng.standard_normal((300, 256))).astype(np.float32),
        "h": (0.02 * rng.standard_normal(40_000)).astype(np.float16),
        "small": (0.02 * rng.standard_normal(60)).astype(np.float32),
    }
    return paramseal.seal(model, key, level="strong")


@pytest.mark.parametrize("damaged", [False, True])
def test_scan_finds_the_records_the_search_by_k_finds(sealed: paramseal.SealedModel, damaged: bool) -> None:
    for name, a in sealed.tensors.items():
        got, want = _embed.scan(a, damaged=damaged), _by_each_k(a, damaged)
        assert got == want, name
    assert _embed.scan(sealed.tensors["w"]) is not None


def test_scan_finds_a_record_whose_magic_lost_a_bit_only_when_damaged(sealed: paramseal.SealedModel) -> None:
    k = next(s.k for s in sealed.header.tensors if s.name == "w")
    a = sealed.tensors["w"].copy()
    lo = paramseal._bits.lo_bytes(a.reshape(-1, 64)[:1].view(np.uint32), k)
    lo[0, 4] ^= 1  # the magic's first bit (after the 4 tag bytes)
    paramseal._bits.set_lo(a.reshape(-1, 64)[:1].view(np.uint32), lo, k)
    assert _embed.scan(a) is None and _by_each_k(a, False) is None
    found = _embed.scan(a, damaged=True)
    assert found is not None and found == _by_each_k(a, True) and found.k == k


def test_scan_of_an_unsealed_tensor_reads_no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tensor without a record's magic at any k: no record is read (a read per k made a tenth of the seal)."""
    a = (0.02 * np.random.default_rng(1).standard_normal(1 << 16)).astype(np.float32)
    calls: list[int] = []
    real = _embed.read_record
    monkeypatch.setattr(_embed, "read_record", lambda x, k, **kw: calls.append(k) or real(x, k, **kw))
    assert _embed.scan(a) is None and _embed.scan(a, damaged=True) is None
    assert calls == []
    assert _embed.scan(a[:10]) is None  # shorter than a block


TAG_BYTES = paramseal.levels.TAG_BITS // 8


def _magic_fits_by_packing(first: np.ndarray, k: int, damaged: bool) -> bool:
    """The reference: the block's low k bits packed (`lo_bytes`), the magic's bytes compared as `read_record` does."""
    lo = paramseal._bits.lo_bytes(first, k)[0, TAG_BYTES : TAG_BYTES + len(_embed.MAGIC)].tobytes()
    wrong = (int.from_bytes(lo, "little") ^ int.from_bytes(_embed.MAGIC, "little")).bit_count()
    return wrong <= 2 if damaged else wrong == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64, "bfloat16"])
def test_magic_ks_finds_the_ks_that_packing_each_k_finds(dtype: object) -> None:
    """Every k at once (`magic_ks`) against one packing per k: a magic planted at each k, whole or with 1-3 flips."""
    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    ks = list(_embed._ks(str(paramseal.levels.dtype_name(dt))))
    rng = np.random.default_rng(11)
    uint = paramseal._bits.uint_view(np.zeros(1, dt)).dtype
    hits = 0
    for k in ks:
        for flips in (0, 1, 2, 3):
            first = rng.integers(0, np.iinfo(uint).max, (1, 64), dtype=uint, endpoint=True)
            lo = paramseal._bits.lo_bytes(first, k)
            lo[0, TAG_BYTES : TAG_BYTES + len(_embed.MAGIC)] = np.frombuffer(_embed.MAGIC, np.uint8)
            for bit in rng.choice(32, flips, replace=False):
                lo[0, TAG_BYTES + bit // 8] ^= np.uint8(1 << (bit % 8))
            paramseal._bits.set_lo(first, lo, k)
            for damaged in (False, True):
                want = [j for j in ks if _magic_fits_by_packing(first, j, damaged)]
                assert _embed.magic_ks(first, ks, damaged) == want, (k, flips, damaged)
                hits += k in want
    assert hits == 4 * len(ks)  # the planted k: exact with no flip (twice), damaged with one or two
