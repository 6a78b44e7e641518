"""The compiled kernels (`paramseal._native`) against their numba/numpy references, bit for bit.

Where the library is not built, or the CPU lacks GFNI/AVX-512, these tests skip; CI sets
``PARAMSEAL_NATIVE=require``, so there a missing library fails instead.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import helpers
import numpy as np
import pytest
from numpy.typing import NDArray

import paramseal
from paramseal import (
    _gfni_plan,
    _irs,
    _irs_consts,
    _irs_kernels,
    _native,
    _native_blocks,
    _native_strata,
    _outer,
    _strata,
    files,
)
from paramseal.errors import NonFiniteError
from paramseal.levels import TAG_BITS
from paramseal.seal import SealConfig

needs_native = pytest.mark.skipif(not _native.available(), reason="compiled kernels not built or no GFNI here")
needs_lib = pytest.mark.skipif(_native._lib() is None, reason="compiled library not built")

CODES = [
    (8, 255, 0),
    (8, 255, 2),
    (12, 255, 0),
    (12, 255, 3),  # strong's default
    (12, 230, 2),
    (16, 255, 0),
    (16, 255, 2),
    (8, 200, 0),
    (8, 9, 0),
]


def _cpu_flags() -> set[str] | None:
    """The CPU's flags in /proc/cpuinfo (None where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


def _cpu_has_coding_flags() -> bool | None:
    """Whether /proc/cpuinfo lists what the coding kernels need (None where there is no such file)."""
    flags = _cpu_flags()
    return None if flags is None else {"gfni", "avx512f", "avx512bw", "avx512vbmi"} <= flags


def test_library_present_where_required() -> None:
    if os.environ.get("PARAMSEAL_NATIVE", "").lower() != "require":
        pytest.skip("PARAMSEAL_NATIVE=require not set (CI sets it)")
    assert _native._lib() is not None
    cpu = _cpu_has_coding_flags()
    if cpu is None:
        pytest.skip("no /proc/cpuinfo to tell whether this CPU should run the coding kernels")
    assert _native.available() == cpu  # the coding kernels load exactly where the CPU has GFNI and AVX-512


@needs_lib
def test_require_on_a_cpu_without_gfni_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI on an AVX2-only CPU failed every seal under require: the build was fine, the CPU could not run it."""
    lib = _native._lib()
    monkeypatch.setenv("PARAMSEAL_NATIVE", "require")

    class NoGfni:
        def __getattr__(self, name: str) -> object:
            return (lambda: 0) if name == "ps_gfni" else getattr(lib, name)

    monkeypatch.setattr(_native, "_lib", lambda: NoGfni())
    _native._load.cache_clear()
    try:
        assert _native._load() is None and not _native.available()
    finally:
        _native._load.cache_clear()


@pytest.fixture
def no_native(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every caller falls back to the numba/numpy reference."""
    monkeypatch.setattr(_native, "_load", lambda: None)
    monkeypatch.setattr(_native, "_lib", lambda: None)


def test_phi_is_a_field_isomorphism() -> None:
    fwd, inv = _gfni_plan._phi()
    a = np.arange(256)
    exp, log = _irs_consts.EXP, _irs_consts.LOG
    prod_11d = exp[log[a][:, None] + log[a][None, :]]  # products mod 0x11d (0 where a factor is 0)
    want = fwd[prod_11d.astype(np.uint8)]
    got = np.array([[_gfni_plan._mul_11b(int(fwd[x]), int(fwd[y])) for y in range(256)] for x in range(256)])
    assert np.array_equal(got, want)
    assert np.array_equal(inv[fwd], np.arange(256))
    assert np.array_equal(fwd[a ^ 0x5A], fwd[a] ^ fwd[0x5A])  # linear


@needs_native
@pytest.mark.parametrize("k,F,host", CODES)
def test_encode_equals_the_numba_encoder(k: int, F: int, host: int) -> None:
    code = _irs.code_for(k, F, host)
    rng = np.random.default_rng(k * 1000 + F + host)
    W = rng.integers(0, 2**32, (700, _irs_consts.N_POS), dtype=np.uint64).astype(np.uint32)
    W[:, :F] &= np.uint32(~((1 << k) - 1) & 0xFFFFFFFF)
    W[:5] = 0  # the all-zero group, and a few with one word set
    W[1, 3] = 0xFFFFFFFF & ~((1 << k) - 1)
    want = W.copy()
    _irs._run(0, code, want, None)  # the numba kernel
    got = W.copy()
    assert _native.encode(code, got)
    assert np.array_equal(got, want)
    assert _irs.syndromes_zero(code, got).all()
    # whole free bytes (k = 8, 16) take the GF(2^8) columns, the nibbles of k = 12 the tables: both ran
    assert (_gfni_plan._plan(k, F, host).cols is not None) == (k != 12)


@needs_native
@pytest.mark.parametrize("k,F,host", CODES)
def test_encode_without_the_free_bytes_equals_encoding_every_byte(
    k: int, F: int, host: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quarters whose free bytes the syndromes skip (`_gfni_plan._compact`) give what all 16 chunks give."""
    code = _irs.code_for(k, F, host)
    W = np.random.default_rng(F + k).integers(0, 2**32, (301, _irs_consts.N_POS), dtype=np.uint64).astype(np.uint32)
    got = {}
    for compact in (True, False):
        monkeypatch.setattr(_native, "COMPACT", compact)
        got[compact] = W.copy()
        assert _native._encode_gfni(code, got[compact])
    assert np.array_equal(got[True], got[False])
    p = _gfni_plan._plan(k, F, host)
    # float words at k = 8 and 12 have a free byte 0: the middle quarters drop them (the first's words host the
    # outer code; the last's may be data). At k = 16 (two free bytes) a vector would span three chunks: none.
    if k in (8, 12) and F >= 192:
        assert p.cmask & 0b0110 == 0b0110
    if k == 16:
        assert p.cmask == 0
    assert p.cidx.shape == (4, 3, 64) and p.cpowers.shape == (p.dmax, 4, 3, 64)


def test_gf_columns_refuse_tables_that_are_not_gf256_linear() -> None:
    p = _gfni_plan._plan(8, 255, 0)
    fwd, inv = _gfni_plan._phi()
    assert _gfni_plan._gf_columns(p.tabs, p.d.astype(np.int64), fwd, inv) is not None
    bent = p.tabs.copy()
    bent[2, 6, 1, 0] ^= 0x10  # one table row no longer the image of a GF(2^8) multiple
    assert _gfni_plan._gf_columns(bent, p.d.astype(np.int64), fwd, inv) is None


@needs_lib
@pytest.mark.parametrize("k,F,host", CODES)
def test_decoder_syndromes_equal_the_numba_kernel(k: int, F: int, host: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding with the compiled syndromes (GFNI, or the tables without it): the same words and statuses as numba."""
    code = _irs.code_for(k, F, host)
    rng = np.random.default_rng(7 * k + F + host)
    ng = 600
    W = rng.integers(0, 2**32, (ng, _irs_consts.N_POS), dtype=np.uint64).astype(np.uint32)
    W[:, :F] &= np.uint32(~((1 << k) - 1) & 0xFFFFFFFF)
    _irs._run(0, code, W, None)
    flags = np.zeros(W.shape, np.uint8)
    flags[:, :6] |= rng.integers(0, 16, (ng, 6)).astype(np.uint8)  # fixed bytes (erasures; content ignored)
    W[:, :6] ^= rng.integers(0, 2**32, (ng, 6), dtype=np.uint64).astype(np.uint32) & _irs.byte_mask(~flags[:, :6])
    hit = rng.integers(6, _irs_consts.N_POS, (ng, 3))
    for c in range(3):  # up to 3 replaced words per group, flagged; some groups past the radius
        rows = rng.random(ng) < 0.7
        flags[rows, hit[rows, c]] |= _irs_consts.FLAG_BAD
        W[rows, hit[rows, c]] ^= rng.integers(1, 2**32, int(rows.sum()), dtype=np.uint64).astype(np.uint32)
    W[::50] = rng.integers(0, 2**32, (len(W[::50]), _irs_consts.N_POS), dtype=np.uint64).astype(np.uint32)  # wrecked
    flags[::50, ::2] |= _irs_consts.FLAG_BAD
    got_w, got_f = W.copy(), flags.copy()
    got = _irs.decode(code, got_w, got_f)
    zero_native = _irs.syndromes_zero(code, W)
    with monkeypatch.context() as m:
        m.setattr(_native, "_load", lambda: None)
        m.setattr(_native, "_lib", lambda: None)
        want_w = W.copy()
        want = _irs.decode(code, want_w, flags.copy())
        assert np.array_equal(_irs.syndromes_zero(code, W), zero_native)
    assert np.array_equal(got, want) and np.array_equal(got_w, want_w)
    if code.d.min() >= 8:  # both outcomes were exercised (a tiny code corrects little)
        assert (want == _irs_consts.CORRECTED).sum() > ng // 2 and (want < 0).any()
    pre = _native.syndromes(code, W, flags)
    assert pre is not None and pre.shape == (4 * ng, code.words)


@needs_lib
@pytest.mark.parametrize("k,F,host", CODES)
def test_table_kernels_equal_numba(k: int, F: int, host: int) -> None:
    """The coding kernels of CPUs without GFNI (numba's nibble tables in C): encoder and syndromes."""
    code = _irs.code_for(k, F, host)
    rng = np.random.default_rng(k * 1000 + F + host + 1)
    W = rng.integers(0, 2**32, (700, _irs_consts.N_POS), dtype=np.uint64).astype(np.uint32)
    W[:, :F] &= np.uint32(~((1 << k) - 1) & 0xFFFFFFFF)
    W[:5] = 0
    W[600:] |= np.uint32(0xA5)  # free bits set: both read only the bits the code covers
    want = W.copy()
    _irs._run(0, code, want, None)  # the numba kernel
    got = W.copy()
    assert _native._encode_tab(code, got)
    assert np.array_equal(got, want)
    assert _irs.syndromes_zero(code, got[:600]).all()
    flags = rng.integers(0, 256, W.shape, dtype=np.uint8)
    for fl in (None, flags):  # with flags, the fixed bytes count as zero
        want_s = _irs_kernels._batch_shares(W, flags, fl is not None, 0, W.shape[0], code.syn, 0, code.free_strata)
        assert np.array_equal(_native._syndromes_tab(code, W, fl), want_s)
    broken = got.copy()
    broken[np.arange(0, 600, 7), 9] ^= np.uint32(1 << 30)
    assert np.array_equal(_irs.syndromes_zero(code, broken[:600]), np.arange(600) % 7 != 0)


@needs_lib
def test_encode_ignores_free_bits_like_the_reference() -> None:
    # the encoder's input has its free bits clear; with them set both read only the data bits
    code = _irs.code_for(8, 255, 2)
    W = np.random.default_rng(5).integers(0, 2**32, (64, _irs_consts.N_POS), dtype=np.uint64).astype(np.uint32)
    want = W.copy()
    _irs._run(0, code, want, None)
    got = W.copy()
    _native.encode(code, got)
    assert np.array_equal(got, want)


@needs_native
@pytest.mark.parametrize("k,F,host", [(8, 255, 2), (12, 255, 3), (16, 40, 0)])
@pytest.mark.parametrize("ng", [1, 2, 3, 5, 6, 9, 258, 263])
def test_gfni_kernels_take_groups_four_at_a_time_and_any_tail(k: int, F: int, host: int, ng: int) -> None:
    """The GFNI encoder and syndromes run four groups at once: a count that is not a multiple of 4 (and
    a call per core starting mid-quad, at 258 and 263) gives numba's words and syndrome bytes."""
    code = _irs.code_for(k, F, host)
    rng = np.random.default_rng(ng * 31 + k)
    W = rng.integers(0, 2**32, (ng, _irs_consts.N_POS), dtype=np.uint64).astype(np.uint32)
    W[:, :F] &= np.uint32(~((1 << k) - 1) & 0xFFFFFFFF)
    want = W.copy()
    _irs._run(0, code, want, None)  # the numba kernel
    got = W.copy()
    assert _native._encode_gfni(code, got)
    assert np.array_equal(got, want)
    got[:, 100] ^= rng.integers(0, 2**32, ng, dtype=np.uint64).astype(np.uint32)  # nonzero syndromes
    flags = rng.integers(0, 256, got.shape, dtype=np.uint8)
    for fl in (None, flags):  # with flags, the fixed bytes count as zero
        want_s = _irs_kernels._batch_shares(got, flags, fl is not None, 0, ng, code.syn, 0, code.free_strata)
        assert want_s.any()
        assert np.array_equal(_native._syndromes_gfni(code, got, fl), want_s)


@needs_lib
@pytest.mark.parametrize("gfni", [True, False])
@pytest.mark.parametrize("k", [8, 12, 16])
@pytest.mark.parametrize("F", [255, 200, 17, 3])
def test_content_equals_the_numba_kernel(k: int, F: int, gfni: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if gfni and not _native.available():
        pytest.skip("no GFNI here")
    if not gfni:  # the portable kernel
        monkeypatch.setattr(_native, "_load", lambda: None)
    o = _outer.plan(5000, k, F, 0)
    w = np.random.default_rng(F).integers(0, 2**32, (333, _irs_consts.N_POS), dtype=np.uint64).astype(np.uint32)
    want = np.zeros((333, o.shard), np.uint8)
    _outer._content_nb(w, F, k, want)
    got = _native.content(w, F, k, o.shard)
    assert got is not None and np.array_equal(got, want)


def test_outer_parity_of_joined_columns_equals_column_by_column() -> None:
    # parity() encodes several 64-byte columns in one leopard call; each column alone is the definition
    import reed_solomon_leopard as rsl

    o = _outer.plan(3000, 8, 255, 2)
    content = np.random.default_rng(2).integers(0, 256, (3000, o.shard), dtype=np.uint8)
    got = o.parity(content, 0)
    r = o.parity_count(0)
    assert r >= 4 and got.shape == (o.columns, r, 64)
    for c in range(o.columns):
        col = [content[i, 64 * c : 64 * (c + 1)].tobytes() for i in range(3000)]
        assert np.frombuffer(b"".join(rsl.encode(col, r)), np.uint8).reshape(r, 64).tobytes() == got[c].tobytes()


@pytest.mark.parametrize("shape", [(3000, 1024), (5, 0), (0, 64)])
def test_rows_as_bytes_are_the_rows(shape: tuple[int, int]) -> None:
    """leopard's shards, unpacked from the array's buffer: each row's bytes, of a slice (a copy) too."""
    from paramseal._kernels import rows_as_bytes

    a = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    assert rows_as_bytes(a) == [row.tobytes() for row in a]
    part = a[:, 3 : max(3, shape[1] - 5)]  # not contiguous
    assert rows_as_bytes(part) == [row.tobytes() for row in part]


def _mixed_model(seed: int) -> dict[str, np.ndarray]:
    """fp32 tensors of awkward sizes (strata cut inside tensors, padding, wrap-around) and integer data."""
    rng = np.random.default_rng(seed)
    return {
        "a": (0.02 * rng.standard_normal((311, 257))).astype(np.float32),
        "tiny": np.array([1.5, -2.0, 0.25], np.float32),
        "empty": np.zeros((0, 4), np.float32),
        "b": (0.05 * rng.standard_normal(70_001)).astype(np.float32),
        "ids": np.arange(5000, dtype=np.int64),
        "c": (0.01 * rng.standard_normal((129, 300))).astype(np.float32),
    }


@needs_lib
@pytest.mark.parametrize("simd", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_seal_words_and_scatter_equal_the_reference(
    seed: int, simd: bool, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_native, "SIMD", simd)  # AVX-512 where the CPU has it, and the plain C every CPU has
    model = _mixed_model(seed)
    from paramseal.seal import SealConfig

    specs = SealConfig(level="standard").specs(model)
    flats = [helpers.uview(np.ascontiguousarray(model[s.name])).reshape(-1) for s in specs]
    st = _strata.plan(specs, key, bytes(range(16)))
    assert st.free_strata < _irs_consts.N_POS  # data strata too
    data = st.pack_data(flats)
    for g0, g1 in [(0, st.G), (3, 7), (st.G - 5, st.G)]:
        g = np.arange(g0, g1, dtype=np.int64)
        pad = st.pad(g)
        got = st.seal_words(flats, data, g0, g1, pad)
        want = st.groups(flats, data, g, seal=True)[0] ^ pad
        want[:, : st.free_strata] &= np.uint32(~((1 << st.k) - 1) & 0xFFFFFFFF)
        assert np.array_equal(got, want)
        assert np.array_equal(
            _native_strata.to_strata(got, pad, g0, st._perm16(), st.free_strata), st.to_strata(got ^ pad, g0)
        )


@needs_lib
@pytest.mark.parametrize("mapped", [False, True])
def test_scatter_writes_as_the_reference_writes(mapped: bool, key: paramseal.Key, tmp_path: Path) -> None:
    """The compiled writes of `Strata.scatter` (ps_put_strata: a copy, or pwrite into a mapped output)
    leave every output word as the reference's loop of `write_run` calls does, padding untouched."""
    from paramseal._pages import Mapping

    model = _mixed_model(1)
    specs = SealConfig(level="standard").specs(model)
    st = _strata.plan(specs, key, bytes(range(16)))
    sizes = [s.numel * s.width // 8 for s in specs]
    maps = []

    def outs_of(name: str) -> list[np.ndarray]:
        if not mapped:
            raw = np.full(sum(sizes), 0xA5, np.uint8)
        else:
            m = Mapping(tmp_path / name, write=True, size=sum(sizes))
            maps.append(m)
            raw = m.buf
            raw[:] = 0xA5
        at = np.cumsum([0, *sizes])
        return [raw[at[i] : at[i + 1]].view(helpers.uview(model[s.name]).dtype) for i, s in enumerate(specs)]

    try:
        got, want = outs_of("got"), outs_of("want")
        rng = np.random.default_rng(3)
        for g0, g1 in [(0, st.G), (st.G - 5, st.G), (3, 7)]:  # from the second: the strata wrap
            w = rng.integers(0, 1 << 32, (g1 - g0, _irs_consts.N_POS), dtype=np.uint32)
            pad = rng.integers(0, 1 << 32, (g1 - g0, _irs_consts.N_POS), dtype=np.uint32)
            st.scatter(got, w, g0, g1, pad)  # compiled
            st.scatter(want, w ^ pad, g0, g1)  # the reference: numba placement, write_run per piece
            for a, b in zip(got, want, strict=True):
                assert np.array_equal(a.view(np.uint8), b.view(np.uint8))
    finally:
        for m in maps:
            m.close()
    if mapped:
        assert (tmp_path / "got").read_bytes() == (tmp_path / "want").read_bytes()


@needs_lib
@pytest.mark.parametrize("misaligned", [False, True])
def test_seal_gather_finds_the_first_nan_with_and_without_simd(misaligned: bool, key: paramseal.Key) -> None:
    """ps_gather's AVX-512 rows return the same words and the same first NaN/Inf index as its plain loop.

    ``misaligned``: one tensor starts at an odd byte address, so no common base serves the gather's
    32-bit word offsets and the plain loop must take those rows.
    """
    from paramseal.seal import SealConfig

    model = _mixed_model(2)
    specs = SealConfig(level="standard").specs(model)
    flats = [helpers.uview(np.ascontiguousarray(model[s.name])).reshape(-1) for s in specs]
    if misaligned:
        t = next(i for i, s in enumerate(specs) if s.name == "b")
        raw = np.zeros(flats[t].nbytes + 1, np.uint8)
        raw[1:] = flats[t].view(np.uint8)
        flats[t] = raw[1:].view(np.uint32)
        assert flats[t].ctypes.data % 4 == 1
    st = _strata.plan(specs, key, bytes(range(16)))
    rng = np.random.default_rng(5)
    g0, g1 = st.G - 40, st.G  # the strata wrap: pieces start inside the batch
    ng = g1 - g0
    zeros = np.zeros(ng, np.uint32)
    pad = st.pad(np.arange(g0, g1, dtype=np.int64))
    v = st.vindex(np.arange(g0, g1, dtype=np.int64))
    floats = np.flatnonzero(v.reshape(-1) < st.n_float)
    for nans in (0, 1, 3):
        for x in rng.choice(floats, nans, replace=False):  # Inf, NaN and -NaN at float words of the batch
            t = int(st.owner(v.reshape(-1)[x : x + 1])[0])
            flats[t][v.reshape(-1)[x] - st.start[t]] = rng.choice([0x7F800000, 0x7FC00001, 0xFFC00000])
        got = []
        for simd in (True, False):
            _native.SIMD = simd
            try:
                w = np.zeros((ng, _irs_consts.N_POS), np.uint32)
                pieces = st._native_pieces(flats, g0, ng, zeros)
                hit = _native_strata.gather(w, g0, st._perm16(), st.free_strata, pieces, pad, int(st._clear_mask()))
            finally:
                _native.SIMD = True
            got.append((hit, w))
        assert got[0][0] == got[1][0]
        assert (got[0][0] >= 0) == (nans > 0)
        if nans == 0:  # after a NaN the rows left are not filled
            assert np.array_equal(got[0][1], got[1][1])
        else:
            r, p = divmod(got[0][0], _irs_consts.N_POS)
            words = st.read(flats, st.pack_data(flats), v)[0]
            bad = ((words >> 23) & 0xFF == 0xFF) & (v < st.n_float)
            assert bad[r, p] and not bad[:r].any() and not bad[r, :p].any()  # the first one, row by row


@needs_lib
@pytest.mark.parametrize("level", ["standard", "strong"])
def test_float_only_seals_make_the_outer_content_in_the_gather(
    level: str, key: paramseal.Key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every stratum a float one (F = 255, as in a model of fp32 weights): the gather writes the outer code's
    content and no pass of its own runs; the sealed file is the one sealed without the compiled library."""
    rng = np.random.default_rng(8)
    model = {"w": (0.02 * rng.standard_normal((300, 1000))).astype(np.float32), "b": np.ones(77, np.float32)}
    st = _strata.plan(SealConfig(level=level).specs(model), key, bytes(16))
    assert st.free_strata == _irs_consts.N_POS and st.host  # the outer code, no data strata
    monkeypatch.setattr(os, "urandom", lambda n: bytes(range(n)))  # the salt
    src = helpers.write_st(tmp_path / "m.safetensors", model)
    calls: list[str] = []
    for mod, name in ((_native_strata, "gather"), (_native, "content")):
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _f=real, _n=name, **k: calls.append(_n) or _f(*a, **k))
    files.seal_file(src, tmp_path / "native.safetensors", key, level=level)
    assert "gather" in calls and "content" not in calls
    with monkeypatch.context() as m:
        m.setattr(_native, "_load", lambda: None)
        m.setattr(_native, "_lib", lambda: None)
        files.seal_file(src, tmp_path / "ref.safetensors", key, level=level)
    assert (tmp_path / "native.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    assert files.verify_file(tmp_path / "native.safetensors", key).status == "intact"


@needs_lib
def test_seal_words_refuses_nan_naming_the_tensor(key: paramseal.Key) -> None:
    model = _mixed_model(0)
    model["c"][7, 9] = np.inf
    with pytest.raises(NonFiniteError, match="tensor 'c'") as ei:  # the first try, with bits in every float tensor
        SealConfig()._seal(model, key, None, None, 0, frozenset())
    assert ei.value.tensor == "c"
    assert [t.k for t in paramseal.seal(model, key).header.tensors if t.name == "c"] == [0]  # then as data


@needs_lib
@pytest.mark.parametrize("simd", [True, False])
@pytest.mark.parametrize("level", ["standard", "strong"])
def test_sealed_bytes_do_not_depend_on_the_kernels(
    level: str, simd: bool, key: paramseal.Key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same salt, with and without the compiled kernels: the same model, in memory and file to file."""
    monkeypatch.setattr(_native, "SIMD", simd)
    model = _mixed_model(3)
    monkeypatch.setattr(os, "urandom", lambda n: bytes(range(n)))  # the salt
    src = helpers.write_st(tmp_path / "m.safetensors", model)
    calls: list[str] = []
    for mod, name in (
        (_native, "encode"),
        (_native_strata, "gather"),
        (_native_strata, "to_strata"),
        (_native, "content"),
    ):
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _f=real, _n=name, **k: calls.append(_n) or _f(*a, **k))
    mem = paramseal.seal(model, key, level=level)
    files.seal_file(src, tmp_path / "native.safetensors", key, level=level)
    assert {"encode", "gather", "to_strata"} <= set(calls)  # the compiled path really ran
    assert "content" in calls or level == "strong"
    with monkeypatch.context() as m:
        m.setattr(_native, "_load", lambda: None)
        m.setattr(_native, "_lib", lambda: None)
        ref = paramseal.seal(model, key, level=level)
        files.seal_file(src, tmp_path / "ref.safetensors", key, level=level)
    assert mem.header_json == ref.header_json
    helpers.assert_model_equal(mem.tensors, ref.tensors)
    assert (tmp_path / "native.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    assert files.verify_file(tmp_path / "native.safetensors", key).status == "intact"


def test_fallback_seals_and_verifies(no_native: None, key: paramseal.Key) -> None:
    model = _mixed_model(4)
    assert not _native.available()
    sealed = paramseal.seal(model, key)
    assert paramseal.verify(sealed.tensors, key, sealed.header_json).status == "intact"
    bad = {n: a.copy() for n, a in sealed.tensors.items()}
    bad["b"][1000:3000] = 0.5  # whole blocks replaced, then recovered by the numba decoder
    bad["a"].reshape(-1).view(np.uint32)[[5, 40_000]] ^= np.uint32(1 << 30)
    res = paramseal.recover(bad, key, sealed.header_json)
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, sealed.tensors)


@needs_lib
@pytest.mark.parametrize("simd", [True, False])
@pytest.mark.parametrize("two", [False, True])
@pytest.mark.parametrize("nw,nm", [(128, 10), (64, 4), (256, 32), (256, 256), (128, 0), (3, 2), (13, 11)])
def test_mlh_equals_the_numpy_reference(
    nw: int, nm: int, two: bool, simd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ps_mlh`` as the numpy reference, with the current MAC's second hash (``two``: x_b-weighted keys2) or not,
    by its IFMA path (where the CPU has it; counts of words not a multiple of 8 take its masked tail) and plain C."""
    from paramseal import _kernels

    monkeypatch.setattr(_native, "SIMD", simd)

    rng = np.random.default_rng(nw + nm)
    nb = 9000  # above the threaded size
    words = rng.integers(0, 1 << 16, (nb, nw), dtype=np.uint16)
    words[:3] = 0xFFFF  # the largest terms
    keys = rng.integers(0, (1 << 32) - 5, 512, dtype=np.uint64)
    keys[:nw][:2] = (1 << 32) - 6
    wmask = rng.integers(0, 1 << 16, nm, dtype=np.uint16)
    internal = rng.integers(0, 2, nb).astype(np.bool_)
    pads = rng.integers(0, (1 << 32) - 5, (nb, 3), dtype=np.uint64)
    pads[:3] = (1 << 32) - 6  # the largest products and sum
    keys2 = rng.integers(0, (1 << 32) - 5, 512, dtype=np.uint64) if two else None
    if keys2 is not None:
        keys2[:2] = (1 << 32) - 6
    want = _kernels.mlh_tags_numpy(words, keys, wmask, internal, pads, keys2)
    got = np.empty(nb, np.uint64)
    assert _native_blocks.mlh(words, keys, wmask, internal, pads, got, keys2)
    assert np.array_equal(got, want)
    if two:  # a two-column pad (the older MACs) is read as such: the same tags as one without x_b
        one = np.empty(nb, np.uint64)
        assert _native_blocks.mlh(words, keys, wmask, internal, np.ascontiguousarray(pads[:, :2]), one)
        assert np.array_equal(one, _kernels.mlh_tags_numpy(words, keys, wmask, internal, pads))


def _mlh_inputs(
    rng: np.random.Generator, nb: int, nw: int, internal: bool | None = None
) -> tuple[
    NDArray[np.uint16],
    NDArray[np.uint64],
    NDArray[np.uint64],
    NDArray[np.uint16],
    NDArray[np.bool_],
    NDArray[np.uint64],
]:
    """Random ``ps_mlh`` inputs: words, keys, keys2, a 10-word tag mask, internal flags (all ``internal`` if given),
    pads (3 columns), every key and pad below p = 2^32 - 5."""
    p = (1 << 32) - 5
    words = rng.integers(0, 1 << 16, (nb, nw), dtype=np.uint16)
    keys, keys2 = (rng.integers(0, p, nw, dtype=np.uint64) for _ in range(2))
    wmask = rng.integers(0, 1 << 16, 10, dtype=np.uint16)
    flags = rng.integers(0, 2, nb).astype(np.bool_) if internal is None else np.full(nb, internal)
    return words, keys, keys2, wmask, flags, rng.integers(0, p, (nb, 3), dtype=np.uint64)


@needs_lib
@pytest.mark.skipif(not {"avx512bw", "avx512vl", "avx512ifma"} <= (_cpu_flags() or set()), reason="no IFMA path here")
@pytest.mark.parametrize("column", [0, 1, 2])
def test_mlh_pads_of_32_bits_or_more_end_as_plain_c(column: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The IFMA path ends 8 blocks at once with 32-bit products (``vpmuludq``); where a block's r_b (column 1)
    or x_b (column 2) is 2^32 or more, its 8 are ended as plain C ends them. s_b (column 0) is added, not
    multiplied: up to 2^64 - 1 it stays in the vector ending, whose reduction must fold any 64-bit sum (the
    add wraps as plain C's does). The same tags with SIMD on and off."""
    rng = np.random.default_rng(column)
    nb = 37  # four groups of 8 and a shorter one
    words, keys, keys2, wmask, internal, pads = _mlh_inputs(rng, nb, 128)
    if column == 0:
        pads[[3, 20, 36], 0] = [(1 << 64) - 1, (1 << 64) - 3, 1 << 63]
    else:
        pads[[3, 20, 36], column] += rng.integers(1, 1 << 30, 3, dtype=np.uint64) << np.uint64(32)
    got = {}
    for simd in (True, False):
        monkeypatch.setattr(_native, "SIMD", simd)
        got[simd] = np.empty(nb, np.uint64)
        assert _native_blocks.mlh(words, keys, wmask, internal, pads, got[simd], keys2)
    assert np.array_equal(got[True], got[False])


@needs_lib
def test_mlh_ends_sums_just_past_p(monkeypatch: pytest.MonkeyPatch) -> None:
    """A block's tag is (z + s_b) mod p with z < p: with s_b = p - z + d the sum lies in [p, 2^32 + 32), which
    random pads almost never reach and only the vector ending's last subtraction brings to d, as plain C does."""
    p = (1 << 32) - 5
    nb = 40
    words, keys, keys2, wmask, internal, pads = _mlh_inputs(np.random.default_rng(11), nb, 128, internal=True)
    pads[:, 0] = 0
    z = np.empty(nb, np.uint64)
    assert _native_blocks.mlh(words, keys, wmask, internal, pads, z, keys2)  # the tags with s_b = 0: z itself
    d = (np.arange(nb) % 32).astype(np.uint64)
    pads[:, 0] = np.uint64(p) - z + d
    for simd in (True, False):
        monkeypatch.setattr(_native, "SIMD", simd)
        got = np.empty(nb, np.uint64)
        assert _native_blocks.mlh(words, keys, wmask, internal, pads, got, keys2)
        assert np.array_equal(got, d), simd


@needs_lib
def test_read_tag_equals_the_numpy_reference() -> None:
    rng = np.random.default_rng(9)
    words = rng.integers(0, 1 << 16, (500, 128), dtype=np.uint16)
    wmask = rng.integers(0, 1 << 16, 12, dtype=np.uint16)
    wshift = (4 * np.arange(12)).astype(np.uint64)
    want = np.zeros(500, np.uint64)
    for i in range(12):
        want |= (words[:, i] & wmask[i]).astype(np.uint64) << wshift[i]
    got = _native_blocks.read_tag(words, wmask, wshift)
    assert got is not None and np.array_equal(got, want)


@needs_lib
@pytest.mark.parametrize(
    "dtype,k", [(np.uint32, 8), (np.uint32, 12), (np.uint16, 3), (np.uint64, 20), (np.uint64, 8), (np.uint32, 7)]
)
def test_write_tags_compiled_equals_the_numpy_version(dtype: type, k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """`_bits.write_tags` with and without the library: the same values, and `read_tags` gives the tags back."""
    from paramseal import _bits

    rng = np.random.default_rng(k)
    ub = rng.integers(0, np.iinfo(dtype).max, (700, 64), dtype=dtype, endpoint=True)
    tags = rng.integers(0, 1 << 32, 700, dtype=np.uint64)
    got = ub.copy()
    calls: list[int] = []
    real = _native_blocks.write_tag
    monkeypatch.setattr(_native_blocks, "write_tag", lambda *a: calls.append(1) or real(*a))
    _bits.write_tags(got, tags, k)
    assert calls
    want = ub.copy()
    monkeypatch.setattr(_native, "_lib", lambda: None)
    _bits.write_tags(want, tags, k)
    assert np.array_equal(got, want)
    assert np.array_equal(_bits.read_tags(got, k), tags)
    mask = _bits.tag_mask(k, 8 * np.dtype(dtype).itemsize)
    assert np.array_equal(got & ~mask, ub & ~mask)  # nothing but the tag bits changed


@needs_lib
def test_the_vector_bit_movers_equal_the_scalar_loops() -> None:
    """The vector paths of the bit fields (pext packs, 1- and 2-bit low fields) and of the tag write, against the loops.

    Every 16-bit k, tags in the first words of wider values too, and tags past 32 bits (left to the loop).
    """
    from paramseal import _bits

    if not _native_blocks.set_vector(True):
        pytest.skip("this CPU has no AVX-512BW: only the loops run")
    rng = np.random.default_rng(11)
    try:
        for k in range(1, 16):
            big = rng.integers(0, 1 << 16, (1500, 70), dtype=np.uint16)
            big[:2] = 0xFFFF  # every bit set: nothing spills over a field
            for shift, width in ((0, k), (k, 16 - k)):  # both fields packed: pext where the vectors are
                packed = []
                for on in (True, False):
                    _native_blocks.set_vector(on)
                    packed.append(_native_blocks.pack(big[:, :64], shift, width))
                assert packed[0] is not None and packed[1] is not None and np.array_equal(packed[0], packed[1])
            data = rng.integers(0, 256, (1500, 8 * k), dtype=np.uint8)
            got = []
            for on in (True, False):
                _native_blocks.set_vector(on)
                b = big.copy()
                assert _native_blocks.unpack(data, b[:, :64], 0, k)  # rows 70 values apart
                got.append(b)
            assert np.array_equal(got[0], got[1]) and not np.array_equal(got[0], big)
        cases = [(np.uint16, 1), (np.uint16, 2), (np.uint16, 5), (np.uint16, 15), (np.uint32, 1), (np.uint32, 3)]
        for dtype, k in [*cases, (np.uint64, 1)]:
            ub = rng.integers(0, np.iinfo(dtype).max, (900, 64), dtype=dtype, endpoint=True)
            tags = rng.integers(0, 1 << 32, 900, dtype=np.uint64)
            tags[:3] = (1 << 32) - 1, 0, (1 << 40) + 12345  # the last: past 32 bits
            got = []
            for on in (True, False):
                _native_blocks.set_vector(on)
                u = ub.copy()
                _bits.write_tags(u, tags, k)
                got.append(u)
            assert np.array_equal(got[0], got[1]) and not np.array_equal(got[0], ub)
    finally:
        _native_blocks.set_vector(True)


@needs_lib
def test_the_non_finite_check_is_one_compiled_pass_and_equals_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seal's NaN/Inf refusal of 16-bit chunks: ``ps_max_masked16`` against numpy's masked max, planted values."""
    from paramseal import _sealing

    rng = np.random.default_rng(12)
    for dtype, top in (("BF16", 0x7F80), ("F16", 0x7C00)):  # the smallest magnitude with every exponent bit set
        for n in (1, 63, 64, 4097):
            for planted in (None, top, top - 1, top | 0x8000, 0xFFFF, 0x7FFF):
                sign = rng.choice([0, 0x8000], n).astype(np.uint16)
                u = (rng.integers(0, top, n, dtype=np.uint16) | sign).reshape(-1, 1)  # finite values
                if planted is not None:
                    u[rng.integers(0, n)] = planted
                    u[-1] = planted if n % 2 else u[-1]  # the last value too
                got = _native_blocks.max_masked(u, 0x7FFF)
                assert got == int((u & np.uint16(0x7FFF)).max())
                want = planted is not None and (planted & 0x7FFF) >= top
                assert _sealing._has_non_finite(u, dtype) == want
    calls: list[int] = []
    real = _native_blocks.max_masked
    monkeypatch.setattr(_native_blocks, "max_masked", lambda *a: calls.append(1) or real(*a))
    assert not _sealing._has_non_finite(np.zeros((4, 64), np.uint16), "BF16") and calls  # the compiled pass ran
    assert _native_blocks.max_masked(np.zeros((4, 64), np.uint16)[:, ::2], 0x7FFF) is None  # strided: numpy's


def test_keyed_offset_in_parts_equals_one_keystream(key: paramseal.Key) -> None:
    """The pad is cut across threads for large runs; it must stay the AES-CTR keystream it was defined as."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    st = _strata.plan(
        paramseal.SealConfig(level="standard").specs({"w": np.zeros(300_000, np.float32)}), key, bytes(16)
    )
    assert st.pad_key is not None
    for g0, g1 in [(3, 1500), (0, 7), (1, 1029)]:  # above and below the threaded size; odd word offsets
        got = st.pad(np.arange(g0, g1, dtype=np.int64))
        w0, w1 = 255 * g0, 255 * g1
        enc = Cipher(algorithms.AES(st.pad_key), modes.CTR((w0 // 4).to_bytes(16, "big"))).encryptor()
        ks = np.frombuffer(enc.update(bytes(4 * (w1 - w0 // 4 * 4))), "<u4")[w0 % 4 :]
        assert np.array_equal(got.reshape(-1), ks)


@needs_lib
def test_a_library_built_from_other_source_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library carries its source's hash: after an edit of _native.c, the old build is refused."""
    import shutil

    lib = tmp_path / _native.library_path().name
    shutil.copyfile(_native.library_path(), lib)
    src = _native.library_path().with_name("_native.c")
    monkeypatch.setattr(_native, "library_path", lambda: lib)
    monkeypatch.delenv("PARAMSEAL_NATIVE", raising=False)
    (tmp_path / "_native.c").write_bytes(src.read_bytes())
    assert _native._lib.__wrapped__() is not None  # type: ignore[attr-defined]
    (tmp_path / "_native.c").write_bytes(src.read_bytes() + b"\n/* edited */\n")
    assert _native._lib.__wrapped__() is None  # type: ignore[attr-defined]
    monkeypatch.setenv("PARAMSEAL_NATIVE", "require")
    with pytest.raises(RuntimeError, match="other source"):
        _native._lib.__wrapped__()  # type: ignore[attr-defined]


def test_require_without_the_library_is_a_clear_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sealed_file: Path, key_file: Path
) -> None:
    """An install without a C compiler under PARAMSEAL_NATIVE=require ended in a RuntimeError traceback (exit 1)."""
    monkeypatch.setattr(_native, "library_path", lambda: tmp_path / "missing" / "_psnative.so")
    monkeypatch.setenv("PARAMSEAL_NATIVE", "require")
    _native._lib.cache_clear()
    _native._load.cache_clear()
    try:
        rc, _, err = helpers.run_cli(["verify", sealed_file, "--key", key_file])
    finally:
        monkeypatch.undo()
        _native._lib.cache_clear()
        _native._load.cache_clear()
    assert rc == 3 and "PARAMSEAL_NATIVE=require" in err and "C compiler" in err and "Traceback" not in err, err


def _damaged_groups(code: _irs.Code, rng: np.random.Generator, ng: int) -> tuple[np.ndarray, np.ndarray]:
    """Encoded groups under every kind of damage the decoder tells apart, with their flags.

    Per group: a number of replaced words (0 to 60) that are all flagged, some extra flagged words
    left intact (scattered damage flags whole blocks), fixed bytes, padding; a few groups with an
    unflagged error or wrecked whole.
    """
    W = rng.integers(0, 2**32, (ng, _irs_consts.N_POS), dtype=np.uint64).astype(np.uint32)
    W[:, : code.free_strata] &= np.uint32(~((1 << code.k) - 1) & 0xFFFFFFFF)
    _irs.encode(code, W)
    flags = np.zeros(W.shape, np.uint8)
    dmax = int(code.d.max())
    nerr = rng.choice([0, 1, 2, 3, 5, 8, 9, 12, 20, 30, 60, dmax // 3, dmax // 2, dmax - 2, dmax + 5], ng)
    nflag = np.minimum(_irs_consts.N_POS, nerr + rng.choice([0, 0, 2, 10, 40, 120], ng))
    for g in range(ng):
        js = rng.permutation(_irs_consts.N_POS)
        flags[g, js[: nflag[g]]] |= _irs_consts.FLAG_BAD
        W[g, js[: nerr[g]]] ^= rng.integers(1, 2**32, nerr[g], dtype=np.uint64).astype(np.uint32)
    fixed = rng.random(ng) < 0.3
    flags[fixed, 200:204] |= rng.integers(1, 16, (int(fixed.sum()), 4)).astype(np.uint8)
    flags[::17, 250:] |= _irs_consts.FLAG_PAD
    W[::17, 250:] = 0
    W[5::23, 7] ^= 1 << 20  # an error in an entry not flagged
    W[::41] = rng.integers(0, 2**32, (len(W[::41]), _irs_consts.N_POS), dtype=np.uint64).astype(np.uint32)
    return W, flags


@needs_lib
@pytest.mark.parametrize("k,F,host", CODES)
def test_compiled_decoder_equals_the_numba_decoder(k: int, F: int, host: int) -> None:
    """Same syndromes in, the same corrected words and the same status per group out, every path taken."""
    code = _irs.code_for(k, F, host)
    W, flags = _damaged_groups(code, np.random.default_rng(100 * k + F + host), 1500)
    pre = _native.syndromes(code, W, flags)
    assert pre is not None
    got_w = W.copy()
    got = _native.decode(code, got_w, flags, pre)
    want_w, want = W.copy(), np.zeros(W.shape[0], np.int8)
    _irs_kernels.run_nb(
        1, want_w, flags, code.syn, code.fn, code.d, code.first, 0, code.free_strata, pre,
        np.zeros(W.shape[0], np.bool_), want,
    )  # fmt: skip
    assert got is not None
    assert np.array_equal(got, want) and np.array_equal(got_w, want_w)
    seen = set(np.unique(want).tolist())
    assert {_irs_consts.CLEAN, _irs_consts.CORRECTED, _irs_consts.TOO_MANY} <= seen
    if code.d.min() >= 8:  # every outcome of the decoder was compared
        want_all = {
            _irs_consts.CLEAN,
            _irs_consts.CORRECTED,
            _irs_consts.TOO_MANY,
            _irs_consts.ROOT_COUNT,
            _irs_consts.ROOT_LOCATION,
            _irs_consts.INCONSISTENT,
        }
        assert seen == want_all


@needs_lib
@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_gather_with_flags_equals_the_numba_kernel(
    seed: int, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Strata.groups` with failed blocks: words and flags of any groups, compiled and numba alike."""
    model = _mixed_model(seed)
    from paramseal.seal import SealConfig

    specs = SealConfig(level="standard").specs(model)
    flats = [helpers.uview(np.ascontiguousarray(model[s.name])).reshape(-1) for s in specs]
    st = _strata.plan(specs, key, bytes(range(16)))
    data = st.pack_data(flats)
    rng = np.random.default_rng(seed)
    bad = [rng.random(max(1, s.nblocks)) < 0.2 for s in specs]
    calls: list[int] = []
    real = _native.gather_runs
    monkeypatch.setattr(_native, "gather_runs", lambda *a: calls.append(1) or real(*a))
    for g in (np.arange(st.G, dtype=np.int64), np.array([0, 1, 2, 9, st.G - 1], np.int64)):
        got_w, got_f = st.groups(flats, data, g, bad)
        got_s = st.groups(flats, data, g, seal=True)[0]
        with monkeypatch.context() as m:
            m.setattr(_native, "portable", lambda: False)
            want_w, want_f = st.groups(flats, data, g, bad)
            want_s = st.groups(flats, data, g, seal=True)[0]
        assert np.array_equal(got_w, want_w) and np.array_equal(got_f, want_f) and np.array_equal(got_s, want_s)
        assert got_f is not None and (got_f & _irs_consts.FLAG_BAD).any() and (got_f & _irs_consts.FLAG_PAD).any()
    assert calls  # the compiled kernel ran


@needs_lib
@pytest.mark.parametrize("k,F,host", [(8, 255, 2), (16, 255, 0), (8, 9, 0)])
def test_compiled_decoder_equals_numba_on_garbage(k: int, F: int, host: int) -> None:
    """Any flags byte and any syndromes (a file the attacker wrote): the same words and statuses, and no crash."""
    code = _irs.code_for(k, F, host)
    rng = np.random.default_rng(k + F + host)
    ng = 3000
    W = rng.integers(0, 2**32, (ng, _irs_consts.N_POS), dtype=np.uint64).astype(np.uint32)
    flags = rng.integers(0, 256, W.shape, dtype=np.uint8)
    flags[: ng // 2] &= rng.choice(np.array([0, 0x10, 0x1F, 0x20, 0x0F, 0xFF], np.uint8), (ng // 2, _irs_consts.N_POS))
    real = _native.syndromes(code, W, flags)
    assert real is not None
    for pre in (real, rng.integers(0, 2**64 - 1, real.shape, dtype=np.uint64, endpoint=True)):
        got_w, want_w, want = W.copy(), W.copy(), np.zeros(ng, np.int8)
        got = _native.decode(code, got_w, flags, pre)
        _irs_kernels.run_nb(
            1, want_w, flags, code.syn, code.fn, code.d, code.first, 0, code.free_strata, pre,
            np.zeros(ng, np.bool_), want,
        )  # fmt: skip
        assert got is not None and np.array_equal(got, want) and np.array_equal(got_w, want_w)


# ---------------------------------------------------------------- the lane code's data movers


@needs_lib
@pytest.mark.parametrize(
    "dtype,shift,width",
    [(np.uint16, 1, 15), (np.uint16, 0, 1), (np.uint16, 0, 3), (np.uint16, 5, 11), (np.uint16, 4, 15),
     (np.uint32, 4, 28), (np.uint32, 0, 4), (np.uint32, 3, 29), (np.uint64, 8, 56), (np.uint64, 0, 36),
     (np.uint64, 12, 52)],
)  # fmt: skip
def test_pack_and_unpack_equal_the_numba_kernels(dtype: type, shift: int, width: int) -> None:
    """Every width the bit fields take (fp16/bf16 k=1..5, fp32 light, fp64), rows strided and threaded."""
    from paramseal import _kernels

    rng = np.random.default_rng(width * 64 + shift)
    big = rng.integers(0, np.iinfo(dtype).max, (9000, 80), dtype=dtype, endpoint=True)
    big[:2] = np.iinfo(dtype).max  # every bit set: nothing spills over a field
    u = big[:, :64]  # rows 80 values apart, as a block view of a wider array
    want = np.empty((u.shape[0], width * 8), np.uint8)
    _kernels._SER["pack"](u, shift, width, want)
    got = _native_blocks.pack(u, shift, width)
    assert got is not None and np.array_equal(got, want)
    data = rng.integers(0, 256, want.shape, dtype=np.uint8)
    a, b = big.copy(), big.copy()
    _kernels._SER["unpack"](data, shift, width, a[:, :64])
    assert _native_blocks.unpack(data, b[:, :64], shift, width)
    assert np.array_equal(a, b)  # the bits outside the field and the columns past the view are kept
    assert not np.array_equal(a, big)


@needs_lib
@pytest.mark.parametrize("dtype,k", [(np.uint16, 1), (np.uint16, 7), (np.uint32, 1), (np.uint32, 3), (np.uint32, 8),
                                     (np.uint32, 22), (np.uint64, 13), (np.uint64, 51)])  # fmt: skip
def test_find_packed_equals_bytes_find_over_the_storage(dtype: type, k: int) -> None:
    """``ps_find_packed`` against ``bytes.find`` over `_embed._storage`: a pattern planted across blocks'
    edges and the kernel's 256-block chunks' (its carried bytes), before the start, twice, and nowhere."""
    from paramseal import _bits, _embed, _embed_find

    pat = _embed_find.COPY_START
    rng = np.random.default_rng(k)
    u = rng.integers(0, np.iinfo(dtype).max, (600, 64), dtype=dtype, endpoint=True)
    lo = _bits.lo_bytes(u, k)
    sb = lo.shape[1] - TAG_BITS // 8  # a block's storage
    clean = _embed._storage(u, k)
    assert clean.find(pat) < 0 and _native_blocks.find_packed(u, k, TAG_BITS // 8, pat, 0) == -1
    for at in (0, 5, sb - 3, 256 * sb - 7, 256 * sb - 1, 512 * sb - 4, 600 * sb - 8, int(rng.integers(600 * sb - 8))):
        store = np.frombuffer(clean, np.uint8).copy()
        store[at : at + 8] = np.frombuffer(pat, np.uint8)
        store[at + 16 : at + 24] = np.frombuffer(pat, np.uint8)[: max(0, min(8, store.size - at - 16))]
        planted = lo.copy()
        planted[:, TAG_BITS // 8 :] = store.reshape(600, sb)
        v = u.copy()
        _bits.set_lo(v, planted, k)
        data = _embed._storage(v, k)
        for start in (0, at, at + 1, at + 17):
            got = _native_blocks.find_packed(v, k, TAG_BITS // 8, pat, start)
            assert got == data.find(pat, start), (at, start)
        assert _native_blocks.find_packed(v, k, TAG_BITS // 8, pat, 0) == at
    assert _native_blocks.find_packed(np.zeros((4, 80), dtype)[:, :64], k, 4, pat, 0) is None  # rows apart


@needs_lib
@pytest.mark.parametrize("k", range(1, 16))
def test_16bit_fields_equal_the_numpy_bits(k: int) -> None:
    """The unrolled 16-bit path (one per width): both fields of every k against `_bits`' numpy reference."""
    from paramseal import _bits

    rng = np.random.default_rng(k)
    big = rng.integers(0, 1 << 16, (3000, 70), dtype=np.uint16)
    big[:2] = 0xFFFF  # every bit set: nothing spills over a field
    u = big[:, :64]  # rows 70 values apart
    for shift, width, ref in ((0, k, _bits.lo_bytes), (k, 16 - k, _bits.hi_bytes)):
        want = ref(u, k, kernel=False)
        got = _native_blocks.pack(u, shift, width)
        assert got is not None and np.array_equal(got, want)
        data = rng.integers(0, 256, want.shape, dtype=np.uint8)
        a, b = big.copy(), big.copy()
        (_bits.set_lo if shift == 0 else _bits.set_hi)(a[:, :64], data, k, kernel=False)
        assert _native_blocks.unpack(data, b[:, :64], shift, width)
        assert np.array_equal(a, b) and not np.array_equal(a, big)


@needs_lib
@pytest.mark.parametrize("vector", [True, False])
def test_32bit_fields_of_every_width_equal_the_numpy_bits(vector: bool) -> None:
    """The 32-bit pack (``pext`` where the vector paths are on, else the plain loop): the low and the high field
    of every width 1..31 against `_bits`' numpy reference."""
    from paramseal import _bits

    if vector and not _native_blocks.set_vector(True):
        pytest.skip("no AVX-512 here: the pext path is off")
    try:
        _native_blocks.set_vector(vector)
        rng = np.random.default_rng(32)
        big = rng.integers(0, 1 << 32, (700, 70), dtype=np.uint32)
        big[:2] = 0xFFFFFFFF  # every bit set: nothing spills over a field
        u = big[:, :64]  # rows 70 values apart
        for k in range(1, 32):
            for shift, width, ref in ((0, k, _bits.lo_bytes), (k, 32 - k, _bits.hi_bytes)):
                got = _native_blocks.pack(u, shift, width)
                assert got is not None and np.array_equal(got, ref(u, k, kernel=False)), (k, shift)
    finally:
        _native_blocks.set_vector(True)


@needs_lib
@pytest.mark.parametrize("lanes", [1, 15, 16, 17, 300])
def test_split_equals_the_numba_kernel_for_any_strides(lanes: int) -> None:
    from paramseal import _kernels

    rng = np.random.default_rng(lanes)
    a = rng.integers(0, 1 << 32, (9000, lanes), dtype=np.uint64).astype(np.uint32)
    for view in (a, a.T.copy().T, a[::2]):  # row-major, lane-major (a transposed store), every other row
        want = np.zeros((view.shape[0], 64 * -(-2 * lanes // 32)), np.uint8)
        _kernels._SER["split"](view, want)
        got = _native_blocks.split(view)
        assert got is not None and np.array_equal(got, want)


@needs_lib
@pytest.mark.parametrize("lanes", [16, 128, 133])
def test_split_of_a_batch_of_lanes_equals_numpy(lanes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The vectorised rows (contiguous words, as encode_into's batches of the store) against the numpy path."""
    from paramseal import _code, _kernels

    rng = np.random.default_rng(lanes)
    store = rng.integers(0, 1 << 32, (3000, 700), dtype=np.uint64).astype(np.uint32)
    store[:2] = 0xFFFFFFFF
    batch = store[:, 300 : 300 + lanes]
    got = _native_blocks.split(batch)
    monkeypatch.setattr(_kernels, "to_split", lambda a: None)  # _code's numpy layout
    assert got is not None and np.array_equal(got, _code._to_split(batch))


@needs_lib
@pytest.mark.parametrize("lane_major", [False, True])
def test_stripes_and_blocks_equal_the_numba_kernels(lane_major: bool) -> None:
    """Whole stripes and single blocks into a store and back, in the store's two layouts."""
    from paramseal import _kernels

    rng = np.random.default_rng(int(lane_major))
    ns, g, d, off = 40, 300, 7, 5
    perm = np.argsort(rng.random((ns, g)), axis=1).astype(np.int64)
    x = rng.integers(0, 1 << 32, (ns, g, d + 1), dtype=np.uint64).astype(np.uint32)[:, :, 1:]  # strided, as parity is

    def store() -> np.ndarray:
        s = rng.integers(0, 1 << 32, (off + ns * d + 3, g), dtype=np.uint64).astype(np.uint32)
        return s.T.copy().T if lane_major else s  # lane-major: a transposed view

    want, got = store(), None
    got = want.copy(order="F" if lane_major else "C")
    (_kernels._scatter_lm_nb if lane_major else _kernels._stripes_in_nb)(want, off, d, perm, x)
    assert _native_blocks.stripes(got, off, perm, x, out=False)
    assert np.array_equal(got, want)
    back_want, back_got = np.empty(x.shape, np.uint32), np.empty((ns, g, d + 2), np.uint32)[:, :, 2:]
    _kernels._stripes_out_nb(want, off, d, perm, back_want)
    assert _native_blocks.stripes(got, off, perm, back_got, out=True)
    assert np.array_equal(back_got, back_want) and np.array_equal(back_got, x)

    nb = 500
    offs = rng.integers(0, off + ns * d - d, nb).astype(np.int64)
    lanes = rng.integers(0, g, nb).astype(np.int64)
    counts = rng.integers(0, d + 1, nb).astype(np.int64)
    xb = rng.integers(0, 1 << 32, (nb, d + 1), dtype=np.uint64).astype(np.uint32)[:, 1:]
    _kernels._blocks_in_nb(want, offs, lanes, counts, xb)  # overlapping blocks: the last one wins in both
    assert _native_blocks.blocks(got, offs, lanes, counts, xb, out=False)
    assert np.array_equal(got, want)
    out_want, out_got = np.zeros(xb.shape, np.uint32), np.zeros(xb.shape, np.uint32)
    _kernels._blocks_out_nb(want, offs, lanes, counts, out_want)
    assert _native_blocks.blocks(got, offs, lanes, counts, out_got, out=True)
    assert np.array_equal(out_got, out_want)


def test_threads_of_the_callers_take_turns_in_numba_parallel_kernels() -> None:
    """Without the library, numba's parallel kernels (irs4 encode, the threaded hash) do the work; its
    workqueue threading layer (no OpenMP, no TBB) aborted the process when two threads sealed at once."""
    import subprocess
    import sys
    import textwrap

    pytest.importorskip("numba")
    script = textwrap.dedent(
        """
        import threading, numpy as np, paramseal
        key = paramseal.Key.generate()
        rng = np.random.default_rng(3)
        models = [{"w": rng.standard_normal((600, 1024)).astype(np.float32)} for _ in range(3)]  # 9600 blocks
        got = {}
        def run(i):
            for _ in range(2):
                s = paramseal.seal(models[i], key)
                got[i] = paramseal.verify(s.tensors, key, s.header_json).status
        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        import numba
        print(numba.threading_layer(), sorted(got.values()))
        """
    )
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "PARAMSEAL_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["workqueue", "['intact',", "'intact',", "'intact']"], out.stdout


def test_a_child_forked_while_a_thread_is_in_a_parallel_kernel_may_seal() -> None:
    """The lock is a parent thread's at the fork, and no thread of the child's ever releases it: the child's
    first seal through numba's parallel kernels waited forever (the workqueue layer itself is fork safe)."""
    import subprocess
    import sys
    import textwrap

    pytest.importorskip("numba")
    if not hasattr(os, "fork"):
        pytest.skip("needs fork")
    script = textwrap.dedent(
        """
        import os, threading, time, numpy as np, paramseal
        from paramseal import _parallel
        inside, leave = threading.Event(), threading.Event()
        def kernel():  # a caller's thread in a parallel kernel while another thread forks
            with _parallel.PARALLEL_LOCK:
                inside.set()
                leave.wait()
        t = threading.Thread(target=kernel)
        t.start()
        inside.wait()
        pid = os.fork()
        if pid == 0:
            key = paramseal.Key.generate()
            w = {"w": np.random.default_rng(3).standard_normal((600, 1024)).astype(np.float32)}  # 9600 blocks
            s = paramseal.seal(w, key)
            os._exit(0 if paramseal.verify(s.tensors, key, s.header_json).status == "intact" else 1)
        leave.set()
        t.join()
        for _ in range(600):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                print("child exit", os.waitstatus_to_exitcode(status))
                break
            time.sleep(0.1)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            print("child hung")
        """
    )
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "PARAMSEAL_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["child", "exit", "0"], out.stdout + out.stderr[-2000:]


@needs_lib
def test_a_light_recover_of_a_bf16_model_loads_no_numba_kernel(tmp_path: Path) -> None:
    """The lane code's data movers are compiled: a few flips in a bf16 file are recovered without numba."""
    import subprocess
    import sys
    import textwrap

    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(5)
    model = {"w": (0.02 * rng.standard_normal((512, 768))).astype(ml_dtypes.bfloat16)}
    key = paramseal.Key.generate()
    (tmp_path / "k").write_bytes(key.secret)
    src = helpers.write_st(tmp_path / "m.safetensors", model)
    files.seal_file(src, tmp_path / "s.safetensors", key)
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        import paramseal, paramseal.files as f
        from safetensors.numpy import load_file, save_file
        key = paramseal.Key(open({str(tmp_path / "k")!r}, "rb").read())
        m = load_file({str(tmp_path / "s.safetensors")!r})
        from safetensors import safe_open
        with safe_open({str(tmp_path / "s.safetensors")!r}, "np") as fh:
            meta = fh.metadata()
        m["w"].reshape(-1).view(np.uint16)[[3, 70_000, 200_000]] ^= np.uint16(1 << 9)
        save_file(m, {str(tmp_path / "t.safetensors")!r}, metadata=meta)
        r = f.recover_file({str(tmp_path / "t.safetensors")!r}, {str(tmp_path / "r.safetensors")!r}, key)
        assert r.report.status == "recovered", r.report.status
        print(r.report.status, sorted(n for n in sys.modules if n == "numba" or n.startswith("numba.core.registry")))
        from paramseal import _kernels
        print("compiled", [n for n, k in vars(_kernels).items() if hasattr(k, "signatures") and k.signatures])
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "compiled []" in out.stdout, out.stdout  # no numba kernel was loaded or compiled
    assert files.verify_file(tmp_path / "r.safetensors", key).status == "intact"


@needs_lib
@pytest.mark.parametrize("dtype,level", [("bfloat16", "standard"), ("float16", "strong"), ("float64", "standard"),
                                         ("float32", "light")])  # fmt: skip
def test_lane_code_bytes_and_recovery_do_not_depend_on_the_kernels(
    dtype: str, level: str, key: paramseal.Key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lane code sealed and recovered with the compiled data movers and with numba: the same bytes."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(len(dtype))
    model = {
        "a": (0.02 * rng.standard_normal((301, 257))).astype(dt),  # stripes cut inside tensors
        "tiny": np.array([1.5, -2.0, 0.25], dt),
        "b": (0.05 * rng.standard_normal(40_001)).astype(dt),
        "ids": np.arange(3000, dtype=np.int64),
    }
    monkeypatch.setattr(os, "urandom", lambda n: bytes(range(n)))  # the salt
    src = helpers.write_st(tmp_path / "m.safetensors", model)
    calls: list[str] = []
    for name in ("pack", "unpack", "split", "stripes", "blocks"):
        real = getattr(_native_blocks, name)
        monkeypatch.setattr(_native_blocks, name, lambda *a, _f=real, _n=name, **k: calls.append(_n) or _f(*a, **k))

    def run(tag: str) -> tuple[str, bytes]:
        sealed = paramseal.seal(model, key, level=level)
        files.seal_file(src, tmp_path / f"{tag}.safetensors", key, level=level)
        bad = {n: a.copy() for n, a in sealed.tensors.items()}
        bad["a"].reshape(-1)[500:700] = 0  # whole blocks replaced
        bad["b"].reshape(-1).view(np.uint8)[[7, 30_001]] ^= np.uint8(0x40)
        res = paramseal.recover(bad, key, sealed.header_json)
        assert res.report.status == "recovered"
        helpers.assert_model_equal(res.tensors, sealed.tensors)
        return sealed.header_json, (tmp_path / f"{tag}.safetensors").read_bytes()

    mine = run("native")
    assert {"split", "stripes"} <= set(calls) and ("pack" in calls or dtype == "float64")  # fp64: whole bytes
    with monkeypatch.context() as m:
        m.setattr(_native, "_lib", lambda: None)
        m.setattr(_native, "_load", lambda: None)
        ref = run("ref")
    assert mine == ref


@needs_lib
@pytest.mark.parametrize("g", [1, 2, 3, 64, 2049, 9000])
def test_argsort_rows_equals_numpys_stable_argsort(g: int) -> None:
    """The lane code's keyed permutations: random keys, keys equal in their top bits, and whole-key ties."""
    from paramseal._layout import stable_argsort_rows

    rng = np.random.default_rng(g)
    r = rng.integers(0, 2**64 - 1, (40, g), dtype=np.uint64, endpoint=True)
    r[:6] >>= np.uint64(35)  # every key shares its top 35 bits: the insertion pass orders them all
    r[6:10] %= np.uint64(3)  # whole keys tie: index order must be kept
    r[10] = np.uint64(2**64 - 1)
    want = np.argsort(r, axis=1, kind="stable")
    got = _native_blocks.argsort_rows(r)
    assert got is not None and np.array_equal(got, want)
    assert np.array_equal(stable_argsort_rows(r), want)


@needs_lib
@pytest.mark.parametrize("dtype", [np.int64, np.float64, np.int32])
def test_argsort_rows_of_keys_it_cannot_cast_is_numpys(dtype: type) -> None:
    """Signed or float keys do not keep their order as uint64: numpy sorts them, not the radix sort."""
    from paramseal._layout import stable_argsort_rows

    r = np.array([[-1, 0, 3, -5, 2], [0.5, -0.25, 2.0, 1.5, -3]], dtype)
    want = np.argsort(r, axis=1, kind="stable")
    got = _native_blocks.argsort_rows(r)
    assert got is None or np.array_equal(got, want)
    assert np.array_equal(stable_argsort_rows(r), want)


@needs_lib
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.dtype(">u4")])
def test_pack_and_unpack_leave_values_that_are_not_native_unsigned_to_the_reference(dtype: type) -> None:
    """The C code reads raw native words: floats, signed values and swapped bytes are not what numba sees."""
    from paramseal import _kernels

    rng = np.random.default_rng(3)
    u = (rng.standard_normal((16, 64)) * 3000).astype(dtype)
    shift, width = (4, 14) if np.dtype(dtype).itemsize == 2 else (20, 20)  # past the top bit of an int16
    want = np.empty((16, 8 * width), np.uint8)
    if np.dtype(dtype).isnative:
        _kernels._SER["pack"](u, shift, width, want)
    got = _native_blocks.pack(u, shift, width)
    assert got is None or (np.dtype(dtype).isnative and np.array_equal(got, want))
    assert not _native_blocks.unpack(np.zeros_like(want), u.copy(), shift, width)


def test_a_big_endian_host_does_not_use_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels read little-endian words; elsewhere numba does the work (and `require` says why)."""
    import sys

    monkeypatch.setattr(sys, "byteorder", "big")
    monkeypatch.delenv("PARAMSEAL_NATIVE", raising=False)
    _native._lib.cache_clear()
    try:
        assert _native._lib() is None
        monkeypatch.setenv("PARAMSEAL_NATIVE", "require")
        _native._lib.cache_clear()
        with pytest.raises(RuntimeError, match="big-endian"):
            _native._lib()
    finally:
        monkeypatch.undo()
        _native._lib.cache_clear()
        _native._load.cache_clear()


@pytest.mark.parametrize("value", ["bogus", "reqiure", "2"])
def test_an_unknown_native_setting_is_an_error_not_the_default(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """A typo of PARAMSEAL_NATIVE=require must not pass silently as 'on where it builds'."""
    from paramseal import UsageError

    monkeypatch.setenv("PARAMSEAL_NATIVE", value)
    with pytest.raises(UsageError, match="is not a setting"):
        _native._mode()
    for ok in ("", "0", "OFF", "require", " Require "):
        monkeypatch.setenv("PARAMSEAL_NATIVE", ok)
        assert _native._mode() == ok.strip().lower()


@needs_lib
def test_seal_gather_refusing_its_strata_is_an_error_not_a_clean_batch() -> None:
    """ps_gather returns -2 for a strata count it does not take; that once read as 'no NaN' with w unfilled."""
    w, pad = np.zeros((2, _irs_consts.N_POS), np.uint32), np.zeros((2, _irs_consts.N_POS), np.uint32)
    perm = np.arange(_irs_consts.N_POS, dtype=np.int16)[None, :]
    pieces = (np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.uint64), np.full(1, -1, np.int32))
    with pytest.raises(RuntimeError, match="refused 0 float strata"):
        _native_strata.gather(w, 0, perm, 0, pieces, pad, 0xFFFFFFFF)


@needs_lib
@pytest.mark.parametrize("n", [1, 7, 64, 65, 130, 512])
def test_compiled_gf2_inverse_equals_the_python_elimination(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every seal and recover inverts four of these (the parity solvers): compiled, and the same inverse."""
    rng = np.random.default_rng(n)
    for trial in range(4):
        m = rng.integers(0, 2, (n, n), dtype=np.uint8)
        if trial == 3 and n > 1:
            m[n - 1] = m[0] ^ m[n // 2]  # singular
        got = _irs._gf2_inverse(m)
        with monkeypatch.context() as mp:
            mp.setattr(_native, "_lib", lambda: None)
            want = _irs._gf2_inverse(m)
        assert (got is None) == (want is None)
        if want is not None:
            assert got is not None and np.array_equal(got, want)
            assert np.array_equal((m.astype(np.int64) @ got) % 2, np.eye(n, dtype=np.int64))
    assert _irs._gf2_inverse(np.eye(3, dtype=np.uint8)[[0, 0, 2]]) is None


@needs_native
def test_with_gfni_seal_and_recover_never_build_the_table_kernels_tables(
    key: paramseal.Key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The syndrome and encoder tables serve only the table kernels: building them was half of each code's set-up."""

    def refuse(code: _irs.Code) -> None:
        raise AssertionError(f"the tables of code k={code.k} were built")

    monkeypatch.setattr(_irs, "_build_tables", refuse)
    for cached in (_irs.code_for, _gfni_plan._plan):
        cached.cache_clear()
    rng = np.random.default_rng(11)
    model = {"w": rng.standard_normal((300, 1000)).astype(np.float32), "b": rng.standard_normal(77).astype(np.float32)}
    src = helpers.write_st(tmp_path / "m.safetensors", model)
    for level in ("standard", "strong"):
        sealed = tmp_path / f"{level}.safetensors"
        files.seal_file(src, sealed, key, level=level)
        raw = bytearray(sealed.read_bytes())
        for at in (-4, -40_000, -900_000):  # flip bits inside the tensor data (the header is at the start)
            raw[at] ^= 0x10
        (tmp_path / "t.safetensors").write_bytes(bytes(raw))
        got = files.recover_file(tmp_path / "t.safetensors", tmp_path / "r.safetensors", key)
        assert got.report.status == "recovered" and got.report.restored_count == 3
        assert (tmp_path / "r.safetensors").read_bytes() == sealed.read_bytes()


@needs_lib
def test_table_kernels_keep_the_tables_alive_while_they_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled table kernels took the raw address of ``code.enc`` / ``code.syn``, which `_irs._tables` builds
    on first use: held by an LRU cache only, another thread evicting them (more codes than the cache keeps) while
    a kernel ran freed the memory it read. The kernels hold the tables, and so does the code they are given."""
    code = _irs.code_for(8, _irs_consts.N_POS, 0)
    rng = np.random.default_rng(5)
    W = rng.integers(0, 2**32, (700, _irs_consts.N_POS), dtype=np.uint64).astype(np.uint32)
    W[:, : _irs_consts.N_POS] &= np.uint32(~0xFF & 0xFFFFFFFF)
    want = W.copy()
    _irs._run(0, code, want, None)
    flags = np.zeros(W.shape, np.uint8)
    want_s = _irs_kernels._batch_shares(W, flags, False, 0, W.shape[0], code.syn, 0, code.free_strata)
    run = _native.parallel_map
    kept: list[np.ndarray] = []

    def evicting(fn, items):  # type: ignore[no-untyped-def]
        _irs.code_for.cache_clear()  # what 16 other codes would do from another thread
        gc.collect()
        kept.extend(np.full(n, 0x5A5A5A5A5A5A5A5A, np.uint64) for n in (code.words * 255 * 128,) * 4)
        return run(fn, items)

    monkeypatch.setattr(_native, "parallel_map", evicting)
    got = W.copy()
    assert _native._encode_tab(code, got)
    assert np.array_equal(got, want)
    assert np.array_equal(_native._syndromes_tab(code, W, None), want_s)


def test_threads_sharing_a_new_code_build_its_tables_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads meeting a code whose tables were not built yet each built them in turn (4 threads: 4 builds)."""
    import threading

    _irs.code_for.cache_clear()
    code = _irs.code_for(8, 200, 0)
    built: list[int] = []
    build = _irs._build_tables
    monkeypatch.setattr(_irs, "_build_tables", lambda c: built.append(c.k) or build(c))
    start = threading.Barrier(4)
    got: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: (start.wait(), got.append(code.enc))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == [8] and len(got) == 4 and all(g is got[0] for g in got)
    assert code.syn is code.syn and not code.syn.flags.writeable


needs_vaes = pytest.mark.skipif(not _native_strata.aes256_ctr(bytes(32), 0, np.zeros(16, np.uint8)), reason="no VAES")


@needs_vaes
@pytest.mark.parametrize("n", [1, 3, 4, 5, 15, 16, 17, 63, 1000])
@pytest.mark.parametrize("ctr", [0, 7, (1 << 32) - 3, (1 << 64) - 2000])
def test_vaes_keystream_is_openssls(n: int, ctr: int) -> None:
    """``ps_aes256_ctr`` gives `cryptography`'s AES-256-CTR bytes (counters carrying past 32 bits too), and
    writes no byte past the blocks asked for."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = np.random.default_rng(n + ctr % 1000).integers(0, 256, 32, dtype=np.uint8).tobytes()
    buf = np.full(16 * n + 16, 0xA5, np.uint8)
    assert _native_strata.aes256_ctr(key, ctr, buf[: 16 * n])
    want = Cipher(algorithms.AES(key), modes.CTR(ctr.to_bytes(16, "big"))).encryptor().update(bytes(16 * n))
    assert buf[: 16 * n].tobytes() == want and (buf[16 * n :] == 0xA5).all()
    assert not _native_strata.aes256_ctr(key[:16], ctr, buf[:16])  # AES-128 keys: OpenSSL's
    assert not _native_strata.aes256_ctr(key, (1 << 64) - 1, buf[:32])  # past 64 bits of counter: OpenSSL's


@needs_vaes  # without it both sides are OpenSSL's
def test_keyed_offset_is_the_same_with_and_without_vaes(key: paramseal.Key, monkeypatch: pytest.MonkeyPatch) -> None:
    """`StrataMap.pad` of consecutive groups (one part, and two parts made side by side above 1 MiB of
    keystream) and of scattered ones: the VAES keystream gives the offset OpenSSL's gives."""
    specs = SealConfig(level="standard").specs({"w": np.zeros((3000, 1000), np.float32)})
    st = _strata.plan(specs, key, bytes(range(16)))
    assert st.pad_key is not None and st.G > 1200
    runs = [np.arange(3, 40), np.arange(1, st.G), np.array([0, 5, 6, 7, st.G - 1])]
    got = [st.pad(g).copy() for g in runs]
    monkeypatch.setattr(_native_strata, "aes256_ctr", lambda *a: False)  # OpenSSL only
    for g, v in zip(runs, got, strict=True):
        assert np.array_equal(v, st.pad(g))
    assert got[1].any() and not np.array_equal(got[1][0], got[1][1])
