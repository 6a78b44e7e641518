"""The interleaved Reed–Solomon code over GF(2^8): bit-exact parity in free nibbles, collaborative decoding.

A batch is ``uint32[ng, 255]``; codeword t of a group takes byte (t + j) & 3 of word j.
The reference syndromes here are computed independently (own GF tables, numpy).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from paramseal import _irs, _irs_consts
from paramseal._irs_consts import FLAG_BAD, FLAG_PAD

# independent GF(2^8) tables (primitive polynomial 0x11d)
_EXP = np.zeros(255, np.int64)
_LOG = np.zeros(256, np.int64)
_x = 1
for _i in range(255):
    _EXP[_i], _LOG[_x] = _x, _i
    _x = (_x << 1) ^ (0x11D if _x & 0x80 else 0)

LEVELS = [(k, f) for k in (8, 12, 16) for f in (255, 254, 200)]


def ref_syndromes(code: _irs.Code, row: np.ndarray) -> list[np.ndarray]:
    """S_i = r(alpha^(i + b_t)), i < d_t, of each codeword of one group, the slow way."""
    out = []
    j = np.arange(255)
    for t in range(4):
        r = (row.astype(np.int64) >> (8 * ((t + j) & 3))) & 255
        nz = r != 0
        i = np.arange(int(code.d[t]))[:, None]
        terms = _EXP[(_LOG[r[nz]][None, :] + (i + int(code.first[t])) * j[nz][None, :]) % 255]
        out.append(np.bitwise_xor.reduce(terms, axis=1) if terms.size else np.zeros(int(code.d[t]), np.int64))
    return out


def free_mask(code: _irs.Code) -> np.ndarray:
    m = np.zeros(255, np.uint32)
    m[: code.free_strata] = (1 << code.k) - 1
    return m


def sealed(code: _irs.Code, ng: int, rng: np.random.Generator) -> np.ndarray:
    W = rng.integers(0, 2**32, (ng, 255), dtype=np.uint32) & ~free_mask(code)
    _irs.encode(code, W)
    return W


def tag_bytes(W: np.ndarray, flags: np.ndarray, rng: np.random.Generator, per_codeword: int, limit: int) -> None:
    """Overwrite byte 0 of per_codeword entries of each residue j mod 4 (one codeword each), as tags do."""
    for g in range(W.shape[0]):
        for c in range(4):
            js = rng.choice(np.arange(c, limit, 4), per_codeword, replace=False)
            W[g, js] = (W[g, js] & np.uint32(0xFFFFFF00)) | rng.integers(0, 256, js.size, dtype=np.uint32)
            flags[g, js] |= 1


def replace(W: np.ndarray, rng: np.random.Generator, n: int, cols: np.ndarray | None = None) -> np.ndarray:
    """Replace n distinct entries of every group by different random words; returns the mask."""
    hit = np.zeros(W.shape, bool)
    cols = np.arange(255) if cols is None else cols
    for g in range(W.shape[0]):
        js = rng.choice(cols, n, replace=False)
        W[g, js] ^= rng.integers(1, 2**32, n, dtype=np.uint32)
        hit[g, js] = True
    return hit


# --------------------------------------------------------------------------- construction
def test_code_matches_the_design_and_is_cached() -> None:
    c8, c12 = _irs.code_for(8), _irs.code_for(12)
    assert c8.d.tolist() == [64, 63, 64, 64] and c12.d.tolist() == [96, 95, 95, 96]
    for c in (c8, c12, _irs.code_for(16), _irs.code_for(8, 255, 2), _irs.code_for(12, 200, 2)):
        # every root run passes through alpha^0, so a constant word is never a codeword
        assert all(b == 0 or b + dt > 255 for b, dt in zip(c.first.tolist(), c.d.tolist(), strict=True))
    assert _irs.code_for(16).d.tolist() == [128, 127, 127, 128]
    with pytest.raises(ValueError, match="k=4"):  # no root run through alpha^0 is solvable at k=4
        _irs.code_for(4)
    assert _irs.code_for(8) is c8
    assert _irs.radius(c8) == pytest.approx(255 / 5)
    assert _irs.radius(c8, 1.0) == pytest.approx(251 / 5)
    assert not c8.syn.flags.writeable and not c8.d.flags.writeable
    for c in (c8, c12, _irs.code_for(8, 255, 2)):  # a table row is one cache line, not two (the encoder's speed)
        assert c.syn.ctypes.data % 64 == 0 and c.enc.ctypes.data % 64 == 0
        assert c.syn.flags.c_contiguous and c.enc.flags.c_contiguous


@pytest.mark.parametrize(("k", "free"), [(7, 255), (0, 255), (8, 0), (8, 256)])
def test_code_for_rejects_bad_parameters(k: int, free: int) -> None:
    with pytest.raises(ValueError, match="expected"):
        _irs.code_for(k, free)


def test_inputs_are_checked() -> None:
    code = _irs.code_for(8)
    with pytest.raises(ValueError, match="C-contiguous uint32"):
        _irs.encode(code, np.zeros((2, 255), np.int32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="C-contiguous uint32"):
        _irs.encode(code, np.zeros((4, 510), np.uint32)[:, ::2])
    ro = np.zeros((2, 255), np.uint32)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        _irs.decode(code, ro, np.zeros((2, 255), np.uint8))
    with pytest.raises(ValueError, match="flags must be"):
        _irs.decode(code, np.zeros((2, 255), np.uint32), np.zeros((3, 255), np.uint8))


# --------------------------------------------------------------------------- encode
@pytest.mark.parametrize(("k", "free"), LEVELS)
def test_encode_makes_codewords_touching_only_free_bits(k: int, free: int) -> None:
    rng = np.random.default_rng(k * 1000 + free)
    code = _irs.code_for(k, free)
    data = rng.integers(0, 2**32, (40, 255), dtype=np.uint32) & ~free_mask(code)
    W = data.copy()
    _irs.encode(code, W)
    assert not ((W ^ data) & ~free_mask(code)).any()  # data bits and data-only columns untouched
    assert (W != data).any()
    for g in range(3):
        assert all(not s.any() for s in ref_syndromes(code, W[g]))
    assert _irs.syndromes_zero(code, W).all()
    W2 = data[5:6].copy()  # each group on its own gives the same parity
    _irs.encode(code, W2)
    assert np.array_equal(W2[0], W[5])
    W[7, 100] ^= np.uint32(1 << 20)
    assert _irs.syndromes_zero(code, W).tolist() == [g != 7 for g in range(40)]


def test_untouched_batch_decodes_clean_and_unchanged() -> None:
    rng = np.random.default_rng(1)
    for k in (8, 12, 16):
        code = _irs.code_for(k)
        W = sealed(code, 300, rng)
        before = W.copy()
        st0 = _irs.decode(code, W, np.zeros(W.shape, np.uint8))
        assert st0.dtype == np.int8 and (st0 == _irs_consts.CLEAN).all() and np.array_equal(W, before)
        # flagged but untouched: still nothing to correct, in both modes
        for nflag in (5, 255):
            fl = np.zeros(W.shape, np.uint8)
            fl[:, :nflag] = FLAG_BAD
            assert (_irs.decode(code, W, fl) == _irs_consts.CLEAN).all() and np.array_equal(W, before)


def test_tiny_free_strata_give_codewords_without_parity() -> None:
    code = _irs.code_for(8, 1)  # byte 0 of position 0 only: codeword 0 gets one parity symbol
    assert code.d.tolist() == [1, 0, 0, 0]
    rng = np.random.default_rng(2)
    W = sealed(code, 20, rng)
    assert _irs.syndromes_zero(code, W).all()
    assert (_irs.decode(code, W.copy(), np.zeros(W.shape, np.uint8)) == 0).all()
    # an erasure in codeword 2 (d_2 = 0) cannot be filled
    fl = np.zeros(W.shape, np.uint8)
    fl[:, 2] = 1
    assert (_irs.decode(code, W.copy(), fl) == _irs_consts.TOO_MANY).all()
    # a change in codeword 0 (d_0 = 1) is detected, not corrected (one syndrome cannot locate it)
    bad = W.copy()
    bad[:, 4] ^= np.uint32(0x5A)
    st = _irs.decode(code, bad, np.full(W.shape, FLAG_BAD, np.uint8))
    assert (st == _irs_consts.TOO_MANY).all() and np.array_equal(bad[:, 4], W[:, 4] ^ np.uint32(0x5A))
    st = _irs.decode(code, bad, np.zeros(W.shape, np.uint8))
    assert (st == _irs_consts.INCONSISTENT).all()


# --------------------------------------------------------------------------- decode within capacity
@pytest.mark.parametrize(("k", "free"), LEVELS)
def test_errors_within_90_percent_of_the_radius_decode_exactly(k: int, free: int) -> None:
    rng = np.random.default_rng(10 * k + free)
    code = _irs.code_for(k, free)
    clean = sealed(code, 60, rng)
    W, fl = clean.copy(), np.zeros(clean.shape, np.uint8)
    tag_bytes(W, fl, rng, 1, free)
    e = int(0.9 * _irs.radius(code, 1.0))
    replace(W, rng, e)
    fl |= FLAG_BAD
    st = _irs.decode(code, W, fl)
    assert (st == _irs_consts.CORRECTED).all()
    assert np.array_equal(W, clean)  # tag bytes re-derived too


@pytest.mark.parametrize("k", [8, 16])
def test_errors_at_exactly_the_radius_decode(k: int) -> None:
    """At the largest L with sum_t (d_t - L) >= L, met with equality, the locator is still found.

    free_strata 200 gives 4 codewords of equal length (the case the collaborative bound is tight for).
    """
    rng = np.random.default_rng(60 + k)
    code = _irs.code_for(k, 200)
    L = max(n for n in range(1, 256) if np.maximum(code.d - n, 0).sum() >= n)
    assert np.maximum(code.d - L, 0).sum() == L  # the boundary itself
    clean = sealed(code, 100, rng)
    W = clean.copy()
    replace(W, rng, L)
    st = _irs.decode(code, W, np.full(W.shape, FLAG_BAD, np.uint8))
    ok = (st == _irs_consts.CORRECTED) & (W == clean).all(axis=1)
    assert ok.sum() >= 0.9 * W.shape[0]
    assert ((st >= 0) <= ok).all()


@pytest.mark.parametrize(("k", "free"), LEVELS)
def test_flagged_entries_decode_as_erasures_up_to_d(k: int, free: int) -> None:
    rng = np.random.default_rng(20 * k + free)
    code = _irs.code_for(k, free)
    clean = sealed(code, 60, rng)
    W, fl = clean.copy(), np.zeros(clean.shape, np.uint8)
    tag_bytes(W, fl, rng, 1, free)
    n = int(code.d.min()) - 1  # with one tag byte per codeword: exactly d_t erasures in the smallest
    hit = replace(W, rng, n)
    fl[hit] |= FLAG_BAD
    st = _irs.decode(code, W, fl)
    assert (st == _irs_consts.CORRECTED).all() and np.array_equal(W, clean)


@pytest.mark.parametrize("k", [8, 12, 16])
def test_fits_holds_at_exactly_d_flagged_entries_and_not_one_more(k: int) -> None:
    """`fits` (the erasure bound the first irs layout trusts alone) is d_t flagged entries inclusive:
    at d = min d_t every flagged entry is wrong and the group still decodes exactly; one more does not fit."""
    rng = np.random.default_rng(k)
    code = _irs.code_for(k)
    d = int(code.d.min())
    clean = sealed(code, 2, rng)
    W, fl = clean.copy(), np.zeros(clean.shape, np.uint8)
    fl[0, replace(W[:1], rng, d)[0]] = FLAG_BAD
    fl[1, replace(W[1:], rng, d + 1)[0]] = FLAG_BAD
    assert _irs.fits(code, fl).tolist() == [True, False]
    assert _irs.within_reach(code, fl)[0]
    st = _irs.decode(code, W, fl)
    assert st[0] == _irs_consts.CORRECTED and np.array_equal(W[0], clean[0])


def test_fits_ignores_padding_even_when_flagged_bad() -> None:
    """Padding is never an error position for `decode`, so `fits` does not count it among the flagged entries."""
    rng = np.random.default_rng(11)
    code = _irs.code_for(8)
    d = int(code.d.min())
    clean = sealed(code, 1, rng)
    W, fl = clean.copy(), np.zeros(clean.shape, np.uint8)
    wrong = replace(W, rng, d)[0]
    fl[0, wrong] = FLAG_BAD
    fl[0, np.flatnonzero(~wrong)[:8]] = FLAG_PAD | FLAG_BAD  # a failed block's padding: still known content
    assert _irs.fits(code, fl)[0] and _irs.within_reach(code, fl)[0]
    assert _irs.decode(code, W, fl)[0] == _irs_consts.CORRECTED and np.array_equal(W, clean)


@pytest.mark.parametrize("k", [8, 12, 16])
@pytest.mark.parametrize("share", [0, 2, 4])
def test_within_reach_is_exactly_what_decodes_when_every_flagged_entry_is_wrong(k: int, share: int) -> None:
    """The prediction partial verification relies on, group by group for 1 to max d_t wrong flagged entries.

    ``share``: a fraction (share / 4) of codeword 0's parity is lost to fixed bytes in entries
    not flagged. With half of it gone the errors-only radius of the other codewords is far larger
    than codeword 0 can take (each wrong entry costs an unknown value in it): no claim may rest on it.
    """
    rng = np.random.default_rng(k + share)
    code = _irs.code_for(k)
    counts = np.arange(1, int(code.d.max()) + 1)
    fixed_js = np.arange(0, 4 * (int(code.d[0]) * share // 8), 4)  # byte 0 of j = 0 mod 4: codeword 0
    clean = sealed(code, counts.size, rng)
    W, fl = clean.copy(), np.zeros(clean.shape, np.uint8)
    fl[:, fixed_js] |= 1
    W[:, fixed_js] ^= np.uint32(0x5A)
    cols = np.setdiff1d(np.arange(255), fixed_js)
    for g, n in enumerate(counts):
        fl[g, replace(W[g : g + 1], rng, int(n), cols)[0]] |= FLAG_BAD
    pred = _irs.within_reach(code, fl)
    st = _irs.decode(code, W, fl)
    exact = (st >= 0) & (W == clean).all(axis=1)
    assert pred.any() and (~pred).any()
    assert exact[pred].all()  # every group it calls within reach decodes exactly
    assert not exact[~pred].any()  # and it gives up on none that would


@pytest.mark.parametrize(("k", "free"), LEVELS)
def test_fixed_bytes_are_rederived(k: int, free: int) -> None:
    rng = np.random.default_rng(30 * k + free)
    code = _irs.code_for(k, free)
    clean = sealed(code, 50, rng)
    W, fl = clean.copy(), np.zeros(clean.shape, np.uint8)
    tag_bytes(W, fl, rng, 3, free)
    assert (W != clean).any()
    st = _irs.decode(code, W, fl)
    assert (st == _irs_consts.CLEAN).all() and np.array_equal(W, clean)


def test_data_only_columns_are_protected() -> None:
    rng = np.random.default_rng(4)
    code = _irs.code_for(8, 200)
    clean = sealed(code, 50, rng)
    W = clean.copy()
    replace(W, rng, 30, np.arange(200, 255))  # errors only in the integer words
    assert (_irs.decode(code, W, np.full(W.shape, FLAG_BAD, np.uint8)) == _irs_consts.CORRECTED).all()
    assert np.array_equal(W, clean)
    W = clean.copy()
    hit = replace(W, rng, 45, np.arange(200, 255))
    assert (_irs.decode(code, W, np.where(hit, FLAG_BAD, 0).astype(np.uint8)) == 1).all()
    assert np.array_equal(W, clean)


def test_bad_entries_with_fixed_bytes_in_errors_mode() -> None:
    rng = np.random.default_rng(5)
    code = _irs.code_for(12)
    clean = sealed(code, 50, rng)
    W, fl = clean.copy(), np.zeros(clean.shape, np.uint8)
    tag_bytes(W, fl, rng, 2, 255)
    hit = replace(W, rng, 50)
    fl |= FLAG_BAD  # too many to erase: errors only, some errors on entries holding a tag byte
    assert (hit & (fl & 1 == 1)).any()
    assert (_irs.decode(code, W, fl) == _irs_consts.CORRECTED).all() and np.array_equal(W, clean)


def test_radius_at_k8_with_four_fixed_bytes_per_codeword() -> None:
    rng = np.random.default_rng(6)
    code = _irs.code_for(8)
    clean = sealed(code, 200, rng)
    W, fl = clean.copy(), np.zeros(clean.shape, np.uint8)
    tag_bytes(W, fl, rng, 4, 255)
    replace(W, rng, 45)  # radius (255 - 16) / 5 = 47.8
    fl |= FLAG_BAD
    st = _irs.decode(code, W, fl)
    ok = (st == _irs_consts.CORRECTED) & (W == clean).all(axis=1)
    assert ok.sum() >= 198
    assert ((st >= 0) <= ok).all()  # no claimed group is wrong


def test_padding_is_rederived_and_never_an_error() -> None:
    rng = np.random.default_rng(7)
    code = _irs.code_for(8)
    data = rng.integers(0, 2**32, (30, 255), dtype=np.uint32) & ~free_mask(code)
    data[:, 250:] = 0  # padding: content zero
    clean = data.copy()
    _irs.encode(code, clean)
    W, fl = clean.copy(), np.zeros(clean.shape, np.uint8)
    W[:, 250:] = 0  # the pads' parity is not stored anywhere
    fl[:, 250:] = FLAG_PAD | 1
    assert (_irs.decode(code, W, fl) == _irs_consts.CLEAN).all() and np.array_equal(W, clean)
    # a changed pad word cannot be "corrected": pads are never error positions, even flagged bad
    W[:, 252] = np.uint32(0x12345600)
    fl[:, 252] |= FLAG_BAD
    fl[:, :40] |= FLAG_BAD
    before = W.copy()
    st = _irs.decode(code, W, fl)
    assert (st < 0).all() and np.array_equal(W, before)


# --------------------------------------------------------------------------- failures
@pytest.mark.parametrize("k", [8, 12, 16])
def test_beyond_capacity_fails_and_leaves_rows_unchanged(k: int) -> None:
    rng = np.random.default_rng(40 + k)
    code = _irs.code_for(k)
    clean = sealed(code, 100, rng)
    W = clean.copy()
    replace(W, rng, int(2 * _irs.radius(code)))
    before = W.copy()
    st = _irs.decode(code, W, np.full(W.shape, FLAG_BAD, np.uint8))
    assert (st < 0).all() and np.array_equal(W, before)
    assert set(st.tolist()) <= {
        _irs_consts.TOO_MANY,
        _irs_consts.ROOT_COUNT,
        _irs_consts.ROOT_LOCATION,
        _irs_consts.INCONSISTENT,
    }


@pytest.mark.parametrize("k", [8, 12])
def test_no_false_claims_just_beyond_the_radius(k: int) -> None:
    rng = np.random.default_rng(50 + k)
    code = _irs.code_for(k)
    clean = sealed(code, 1500, rng)
    r = _irs.radius(code, 1.0)
    W, fl = clean.copy(), np.zeros(clean.shape, np.uint8)
    tag_bytes(W, fl, rng, 1, 255)
    for g in range(W.shape[0]):  # from the radius to twice it
        n = int(rng.integers(int(r), int(2 * r) + 1))
        js = rng.choice(255, n, replace=False)
        W[g, js] ^= rng.integers(1, 2**32, n, dtype=np.uint32)
    fl |= FLAG_BAD
    st = _irs.decode(code, W, fl)
    exact = (W == clean).all(axis=1)
    assert int(((st >= 0) & ~exact).sum()) == 0
    assert (st < 0).sum() > 1000  # the damage really was beyond capacity for most groups


def test_errors_on_unflagged_entries_are_rejected() -> None:
    rng = np.random.default_rng(8)
    code = _irs.code_for(8)
    clean = sealed(code, 60, rng)
    # errors-only: all but the tampered entries flagged
    W = clean.copy()
    hit = replace(W, rng, 3)
    fl = np.where(hit, 0, FLAG_BAD).astype(np.uint8)
    before = W.copy()
    st = _irs.decode(code, W, fl)
    assert (st == _irs_consts.ROOT_LOCATION).all() and np.array_equal(W, before)
    # erasures: a few flagged entries, and one changed entry that is not flagged
    W = clean.copy()
    hit = replace(W, rng, 11)
    fl = np.where(hit, FLAG_BAD, 0).astype(np.uint8)
    fl[np.arange(60), np.argmax(hit, axis=1)] = 0
    before = W.copy()
    st = _irs.decode(code, W, fl)
    assert (st == _irs_consts.INCONSISTENT).all() and np.array_equal(W, before)
    # nothing flagged at all
    W = clean.copy()
    W[:, 9] ^= np.uint32(1 << 31)
    before = W.copy()
    st = _irs.decode(code, W, np.zeros(W.shape, np.uint8))
    assert (st == _irs_consts.INCONSISTENT).all() and np.array_equal(W, before)


def test_too_many_fixed_bytes_fail() -> None:
    code = _irs.code_for(8)
    W = sealed(code, 4, np.random.default_rng(9))
    fl = np.zeros(W.shape, np.uint8)
    fl[:, :] = 0b0001  # every byte 0 erased: 64 in codeword 0 and 63 in codeword 1 fit, but not all
    fl[:, 0] = 0b0011
    before = W.copy()
    st = _irs.decode(code, W, fl)
    assert (st == _irs_consts.TOO_MANY).all() and np.array_equal(W, before)


def test_a_mixed_batch_corrects_each_group_on_its_own() -> None:
    rng = np.random.default_rng(11)
    code = _irs.code_for(12)
    clean = sealed(code, 300, rng)
    W = clean.copy()
    bad_groups = rng.choice(300, 40, replace=False)
    for g in range(300):
        n = 160 if g in bad_groups else int(rng.integers(0, 60))
        js = rng.choice(255, n, replace=False)
        W[g, js] ^= rng.integers(1, 2**32, n, dtype=np.uint32)
    before = W.copy()
    st = _irs.decode(code, W, np.full(W.shape, FLAG_BAD, np.uint8))
    fail = np.zeros(300, bool)
    fail[bad_groups] = True
    assert (st[fail] < 0).all() and np.array_equal(W[fail], before[fail])
    assert (st[~fail] >= 0).all() and np.array_equal(W[~fail], clean[~fail])


@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.sampled_from([8, 12, 16]),
    free=st.sampled_from([255, 230, 101]),
    load=st.floats(0.0, 2.2),
    flagged=st.floats(0.0, 1.0),
)
def test_recovery_is_exact_within_capacity_and_never_wrong_beyond(
    seed: int, k: int, free: int, load: float, flagged: float
) -> None:
    rng = np.random.default_rng(seed)
    code = _irs.code_for(k, free)
    clean = sealed(code, 64, rng)
    W, fl = clean.copy(), np.zeros(clean.shape, np.uint8)
    tag_bytes(W, fl, rng, 1, min(free, 255))
    n = min(255, int(load * _irs.radius(code, 1.0)))
    hit = replace(W, rng, n)
    extra = rng.random(W.shape) < flagged  # flagged entries that were not changed
    fl[hit | extra] |= FLAG_BAD
    st = _irs.decode(code, W, fl)
    exact = (W == clean).all(axis=1)
    assert ((st >= 0) == exact).all()  # success is exact, failure leaves the word damaged
    if load <= 0.9:
        assert exact.all()
