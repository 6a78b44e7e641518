"""The compiled outer-code encoder (`_rs16.parity`, ``ps_rs_encode``) against ``rsl.encode``, byte for byte.

``rsl.encode`` (reed-solomon-leopard) runs the Rust crate reed-solomon-simd. A small numpy
encoder here, written from the crate's published algorithm with `_rs16`'s tables, first
reproduces it on many small shapes, so the tables the kernel takes are the crate's; then the
kernel is compared with ``rsl.encode`` itself on the shapes the seal uses and their edges.
"""

from __future__ import annotations

import os
from pathlib import Path

import helpers
import ml_dtypes
import numpy as np
import pytest
import reed_solomon_leopard as rsl

import paramseal
from paramseal import _code, _kernels, _native, _outer, _rs16, files

needs_native = pytest.mark.skipif(not _native.available(), reason="compiled kernels not built or no GFNI here")


def _rsl(d: np.ndarray, r: int) -> np.ndarray:
    """``rsl.encode``'s parity of the rows of ``d``, as ``[shard / 64, r, 64]`` (the layout `_rs16.parity` gives)."""
    par = np.frombuffer(b"".join(rsl.encode([row.tobytes() for row in d], r)), np.uint8)
    return par.reshape(r, d.shape[1] // 64, 64).transpose(1, 0, 2)


def _np2(x: int) -> int:
    return 1 << (x - 1).bit_length()


def _ifft(d: np.ndarray, pos: int, size: int, delta: int) -> None:
    sk = _rs16.skew()
    dist = 1
    while dist < size:
        for r in range(0, size, 2 * dist):
            a, b = d[pos + r : pos + r + dist], d[pos + r + dist : pos + r + 2 * dist]
            b ^= a
            if (lm := int(sk[r + dist + delta - 1])) != _rs16.MODULUS:
                a ^= _rs16.mul(b, lm)
        dist *= 2


def _fft(d: np.ndarray, pos: int, size: int, delta: int) -> None:
    sk = _rs16.skew()
    dist = size // 2
    while dist >= 1:
        for r in range(0, size, 2 * dist):
            a, b = d[pos + r : pos + r + dist], d[pos + r + dist : pos + r + 2 * dist]
            if (lm := int(sk[r + dist + delta - 1])) != _rs16.MODULUS:
                a ^= _rs16.mul(b, lm)
            b ^= a
        dist //= 2


def _reference(d: np.ndarray, r: int) -> np.ndarray:
    """The crate's encoder, high and low rate, on symbols (32 low bytes then 32 high bytes per 64)."""
    n, nb = d.shape
    p = d.reshape(n, nb // 64, 2, 32).astype(np.int64)
    x = (p[:, :, 0] | (p[:, :, 1] << 8)).reshape(n, -1)
    n2, r2 = _np2(n), _np2(r)
    high = n2 > r2 or (n2 == r2 and n <= r)  # the crate's DefaultRate choice
    m = r2 if high else n2
    w = np.zeros((-(-(n if high else r) // m) * m, x.shape[1]), np.int64)
    w[:n] = x
    if high:  # IFFT each chunk of m at its skew offset, XOR them, FFT
        _ifft(w, 0, m, m)
        for c in range(m, w.shape[0], m):
            _ifft(w, c, m, c + m)
            w[:m] ^= w[c : c + m]
        _fft(w, 0, m, 0)
    else:  # IFFT the data once, FFT a copy per chunk of parity
        _ifft(w, 0, m, 0)
        w[m:] = np.tile(w[:m], (w.shape[0] // m - 1, 1))
        for c in range(0, w.shape[0], m):
            _fft(w, c, m, c + m)
    s = w[:r].reshape(r, -1, 32)
    return np.stack([s & 255, s >> 8], axis=2).astype(np.uint8).reshape(r, nb // 64, 64).transpose(1, 0, 2)


def test_the_numpy_reference_is_rsl() -> None:
    """The tables and the algorithm `_rs16` describes are the crate's: every small shape, both rates."""
    rng = np.random.default_rng(7)
    sizes = (1, 2, 3, 4, 5, 8, 9, 16, 17, 100, 255, 256, 257, 300)
    for n in sizes:
        for r in sizes:
            d = rng.integers(0, 256, (n, 64 * (1 + (n + r) % 2)), dtype=np.uint8)
            assert np.array_equal(_reference(d, r), _rsl(d, r)), (n, r)


def test_skew_matrices_multiply_by_the_skew_factor() -> None:
    """Each matrix set, applied bit by bit as gf2p8affineqb does, is the product by its skew factor."""
    assert np.count_nonzero(_rs16.skew() == _rs16.MODULUS) > 0
    mats, sk = _rs16.skew_matrices(), _rs16.skew().astype(np.int64)
    rng = np.random.default_rng(3)
    for k in (*range(8), 255, 32767, *rng.integers(0, _rs16.MODULUS, 40)):
        x = rng.integers(0, 65536, 50)
        want = _rs16.mul(x, sk[k]) if sk[k] != _rs16.MODULUS else np.zeros_like(x)
        a = [[(int(mats[k, q]) >> (8 * (7 - b))) & 255 for b in range(8)] for q in range(4)]  # [ll, hh, lh, hl] rows

        def aff(rows: list[int], v: np.ndarray) -> np.ndarray:
            return sum(((np.bitwise_count(v & row).astype(np.int64) & 1) << b) for b, row in enumerate(rows))  # type: ignore[no-any-return]

        lo, hi = x & 255, x >> 8
        got = (aff(a[0], lo) ^ aff(a[2], hi)) | ((aff(a[1], hi) ^ aff(a[3], lo)) << 8)
        assert np.array_equal(got, want), k  # a zero factor (log 65535) has zero matrices


SHAPES = [
    (1, 1, 64),
    (1000, 1, 64),  # r = 1: m = 1, a chunk per shard
    (5000, 64, 128),  # r a power of two
    (5000, 65, 192),  # r just above one
    (3001, 17, 320),  # n not a multiple of m
    (129, 129, 64),  # n < m (high rate while n <= r)
    (150, 170, 128),
    (300, 300, 64),
    (4096, 43, 768),  # what the seal makes
    (16384, 170, 768),  # a full superblock
    (16384, 1, 64),
    (16383, 256, 1024),
]


@needs_native
@pytest.mark.parametrize("n,r,shard", SHAPES)
def test_compiled_parity_is_rsl(n: int, r: int, shard: int) -> None:
    d = np.random.default_rng(n * 7 + r).integers(0, 256, (n, shard), dtype=np.uint8)
    got = _rs16.parity(d, r)
    assert got is not None and got.shape == (shard // 64, r, 64)
    assert np.array_equal(got, _rsl(d, r))


@needs_native
@pytest.mark.parametrize(
    "n,r",
    [(65535, 1), (65534, 2), (65519, 13), (64511, 1000), (32767, 32768), (49151, 16384), (2, 1), (3, 4), (9, 8)],
)
def test_compiled_parity_at_the_field_edge(n: int, r: int) -> None:
    """n + m up to 65536, a partial last chunk, r > n: the skew factors read reach the table's last entries."""
    d = np.random.default_rng(n + r).integers(0, 256, (n, 64), dtype=np.uint8)
    assert _rs16.serves(r, n)
    got = _rs16.parity(d, r)
    assert got is not None and np.array_equal(got, _rsl(d, r))


@pytest.mark.parametrize("n,r", [(65533, 3), (49153, 16383), (32769, 32768), (65536, 1)])
def test_shapes_past_the_field_are_not_served(n: int, r: int) -> None:
    """Where the crate refuses the shape (n + m over 65536), the kernel is not offered it."""
    assert not _rs16.serves(r, n)


@needs_native
def test_compiled_parity_reads_rows_of_a_wider_array() -> None:
    """Outer.parity may be given a slice of a larger buffer: rows further apart than a shard."""
    wide = np.random.default_rng(5).integers(0, 256, (2000, 1000), dtype=np.uint8)
    d = wide[:, 40 : 40 + 768]
    got = _rs16.parity(d, 21)
    assert got is not None and np.array_equal(got, _rsl(np.ascontiguousarray(d), 21))


@pytest.mark.parametrize("n,r", [(4, 3), (100, 170), (2, 1000)])
def test_low_rate_shapes_are_left_to_rsl(n: int, r: int) -> None:
    """Only the high-rate encoder is compiled: the others return None and Outer.parity calls rsl."""
    assert _rs16.parity(np.zeros((n, 64), np.uint8), r) is None


@needs_native
@pytest.mark.parametrize("level", ["standard", "strong"])
def test_seal_is_the_same_file_with_and_without_the_encoder(
    level: str, key: paramseal.Key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = {"w": np.random.default_rng(1).standard_normal(700_000).astype(np.float32)}
    monkeypatch.setattr(os, "urandom", lambda n: bytes(range(n)))  # the salt
    src = helpers.write_st(tmp_path / "m.safetensors", model)
    made: list[int] = []
    real = _rs16.parity

    def spy(c: np.ndarray, r: int) -> np.ndarray | None:
        out = real(c, r)
        if out is not None:
            made.append(r)
        return out

    monkeypatch.setattr(_rs16, "parity", spy)
    files.seal_file(src, tmp_path / "fast.safetensors", key, level=level)
    assert made and min(made) >= _outer.MIN_PARITY  # the compiled encoder made the outer parity
    monkeypatch.setattr(_rs16, "parity", lambda c, r: None)
    files.seal_file(src, tmp_path / "rsl.safetensors", key, level=level)
    assert (tmp_path / "fast.safetensors").read_bytes() == (tmp_path / "rsl.safetensors").read_bytes()


@needs_native
@pytest.mark.parametrize(("K", "lanes", "M"), [(30, 100, 3), (900, 2000, 30), (5000, 64, 160), (40, 21, 12)])
def test_lane_parity_is_rsl(K: int, lanes: int, M: int) -> None:
    """The lane code's batches (4-byte shards per lane, in the split layout) go through the compiled encoder too."""
    data = np.random.default_rng(K).integers(0, 2**32, (K, lanes), dtype=np.uint64).astype(np.uint32)
    split = _code._to_split(data)
    want = np.frombuffer(b"".join(rsl.encode(_kernels.rows_as_bytes(split), M)), np.uint8).reshape(M, -1)
    assert _rs16.serves(M, K) and np.array_equal(_code.encode(data, M), _code._from_split(want, lanes))


@needs_native
@pytest.mark.parametrize(("dtype", "code"), [("bfloat16", None), ("float16", None), ("float32", "lanes")])
def test_lane_seal_is_the_same_file_with_and_without_the_encoder(
    dtype: str, code: str | None, key: paramseal.Key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(2)
    model = {
        f"w{i}": rng.standard_normal(n).astype(np.float32).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
        for i, n in enumerate((300_000, 70_001, 64))
    }
    monkeypatch.setattr(os, "urandom", lambda n: bytes(range(n)))  # the salt
    src = helpers.write_st(tmp_path / "m.safetensors", model)
    made: list[bool] = []
    real_words = _rs16.parity_words

    def spy(d: np.ndarray, out: np.ndarray) -> bool:
        ok = real_words(d, out)
        made.append(ok)
        return ok

    monkeypatch.setattr(_rs16, "parity_words", spy)
    files.seal_file(src, tmp_path / "words.safetensors", key, code=code)
    assert made and all(made)  # the compiled encoder made every batch of the lanes' parity from the words
    monkeypatch.setattr(_rs16, "parity_words", lambda d, out: False)  # then from the split copies
    files.seal_file(src, tmp_path / "split.safetensors", key, code=code)
    monkeypatch.setattr(_rs16, "parity", lambda c, r: None)  # then the library
    files.seal_file(src, tmp_path / "rsl.safetensors", key, code=code)
    sealed = {n: (tmp_path / f"{n}.safetensors").read_bytes() for n in ("words", "split", "rsl")}
    assert sealed["words"] == sealed["rsl"] and sealed["split"] == sealed["rsl"]


@needs_native
@pytest.mark.parametrize(
    ("K", "lanes", "M"), [(30, 5, 3), (900, 37, 30), (257, 16, 200), (5000, 1, 160), (1, 1, 1), (3, 33, 3), (5, 15, 8)]
)
def test_parity_words_reads_and_writes_its_columns_alone(K: int, lanes: int, M: int) -> None:
    """Words straight from strided columns of the store (lanes not a multiple of 16: a partial last column)."""
    rng = np.random.default_rng(K + lanes)
    store = rng.integers(0, 2**32, (K, lanes + 9), dtype=np.uint64).astype(np.uint32)
    data = store[:, 4 : 4 + lanes]
    split = _code._to_split(np.ascontiguousarray(data))
    want = np.frombuffer(b"".join(rsl.encode(_kernels.rows_as_bytes(split), M)), np.uint8).reshape(M, -1)
    parity = rng.integers(0, 2**32, (M, lanes + 7), dtype=np.uint64).astype(np.uint32)
    before = parity.copy()
    assert _rs16.parity_words(data, parity[:, 3 : 3 + lanes])
    assert np.array_equal(parity[:, 3 : 3 + lanes], _code._from_split(want, lanes))
    outside = np.ones(parity.shape, bool)
    outside[:, 3 : 3 + lanes] = False
    assert np.array_equal(parity[outside], before[outside])  # neighbours untouched
    assert not _rs16.parity_words(data.astype(np.int32), parity[:, :lanes])  # another dtype: the caller's path
