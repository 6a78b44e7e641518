"""The four properties from STYLE.md, stated over random models of every dtype (hypothesis).

1. A sealed model verifies.
2. Any single bit changed anywhere is detected and located (tensor and block).
3. Recovery returns the exact sealed bytes within capacity, and reports the true indices and bits.
4. Beyond capacity, recovery never claims success and names every value it could not restore.
"""

from __future__ import annotations

import helpers
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import paramseal

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz._0123456789", min_size=1, max_size=12)


@st.composite
def models(draw: st.DrawFn, *, carrier: int = 2048) -> tuple[dict[str, np.ndarray], str]:
    """A random model: 1-4 tensors of any supported dtype and shape (incl. scalars and empty ones),
    every finite float bit pattern, plus an fp32 tensor of ``carrier`` values so there is parity room."""
    n = draw(st.integers(1, 4))
    names = draw(st.lists(_names, min_size=n + 1, max_size=n + 1, unique=True))
    dtypes = draw(st.lists(st.sampled_from(helpers.ALL_DTYPES), min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    slot = draw(st.integers(0, n))
    for i in range(n + 1):
        if i == slot:
            out[names[i]] = helpers.random_tensor(rng, np.float32, (carrier,))
            continue
        j = i if i < slot else i - 1
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=24))
        out[names[i]] = helpers.random_tensor(rng, dtypes[j], shape, wild=True)
    level = draw(st.sampled_from(paramseal.LEVELS))
    return out, level


def _ks(s: paramseal.SealedModel) -> dict[str, int]:
    return {t.name: t.k for t in s.header.tensors}


@given(m=models())
def test_sealed_model_verifies(key: paramseal.Key, m: tuple[dict[str, np.ndarray], str]) -> None:
    tensors, level = m
    s = paramseal.seal(tensors, key, level=level)
    r = paramseal.verify(s.tensors, key, s.header_json)
    assert r.status == "intact" and r.exit_code == 0 and r.tampered_tensors == []
    for name, a in tensors.items():
        b = s.tensors[name]
        assert b.dtype == a.dtype and b.shape == a.shape
        k = _ks(s)[name]
        if k == 0:
            assert helpers.same_bytes(a, b)
        else:
            hi = ~np.array((1 << k) - 1, dtype=helpers.uview(a).dtype)
            assert np.array_equal(helpers.uview(a) & hi, helpers.uview(b) & hi)


@given(m=models(), data=st.data())
def test_any_single_bit_flip_is_detected_located_and_recovered(
    key: paramseal.Key, m: tuple[dict[str, np.ndarray], str], data: st.DataObject
) -> None:
    tensors, level = m
    s = paramseal.seal(tensors, key, level=level)
    name = data.draw(st.sampled_from([n for n, a in s.tensors.items() if a.size]), label="tensor")
    a = s.tensors[name]
    idx = data.draw(st.integers(0, a.size - 1), label="index")
    bit = data.draw(st.integers(0, helpers.width(a.dtype) - 1), label="bit")  # value bits and watermark bits
    t = helpers.flip_bit(s.tensors, name, idx, bit)

    r = paramseal.verify(t, key, s.header_json)
    assert r.status == "tampered" and r.exit_code in (1, 2)
    assert r.tampered_tensors == [name]
    assert r.tensors[name].tampered_blocks == (idx // 64,)

    res = paramseal.recover(t, key, s.header_json)
    helpers.assert_honest_recovery(res, t, s.tensors)
    assert (res.report.status == "recovered") == r.recoverable

    # In one codeword the carrier tensor's parity always covers one lost block: recovery is certain.
    s1 = paramseal.SealConfig(level=level, lanes=1).seal(tensors, key)
    t1 = helpers.flip_bit(s1.tensors, name, idx, bit)
    res = paramseal.recover(t1, key, s1.header_json)
    assert res.report.status == "recovered"
    helpers.assert_model_equal(res.tensors, s1.tensors)
    f = res.report.tensors[name]
    assert f.restored_indices == (idx,) and f.restored_xor == (1 << bit,)
    assert res.report.restored_count == 1


@st.composite
def block_damage(draw: st.DrawFn, tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    blocks = [(n, b) for n, b in helpers.block_list(tensors) if tensors[n].size]
    frac = draw(st.sampled_from([0.02, 0.1, 0.2, 0.3, 0.5, 1.0]))
    count = max(1, int(len(blocks) * frac))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pick = [blocks[i] for i in rng.choice(len(blocks), size=count, replace=False)]
    how = draw(st.sampled_from(["overwrite", "bitflips", "lowbits"]))
    if how == "overwrite":
        return helpers.randomize_blocks(tensors, pick, seed), how
    out = helpers.copy_model(tensors)
    for name, b in pick:
        a = out[name]
        u = helpers.uview(a)
        lo, hi = b * 64, min(a.size, b * 64 + 64)
        i = int(rng.integers(lo, hi))
        w = helpers.width(a.dtype)
        bit = int(rng.integers(0, 4 if how == "lowbits" else w))  # lowbits: inside the watermark of most floats
        u[i] ^= u.dtype.type(1) << u.dtype.type(bit)
        out[name] = helpers.from_uview(u, a)
    return out, how


@given(m=models(), data=st.data())
def test_recovery_is_exact_within_capacity_and_honest_beyond(
    key: paramseal.Key, m: tuple[dict[str, np.ndarray], str], data: st.DataObject
) -> None:
    tensors, level = m
    s = paramseal.SealConfig(level=level, lanes=1).seal(tensors, key)  # one codeword: the bound is exact
    t, _ = data.draw(block_damage(s.tensors), label="damage")
    bad = helpers.changed_blocks(t, s.tensors)
    within = helpers.single_lane_recoverable(s.tensors, _ks(s), bad)

    v = paramseal.verify(t, key, s.header_json)
    assert {n: set(f.tampered_blocks) for n, f in v.tensors.items()} == bad
    assert v.recoverable == within

    res = paramseal.recover(t, key, s.header_json)
    helpers.assert_honest_recovery(res, t, s.tensors)
    if within:
        assert res.report.status == "recovered"
        truth = helpers.changed(t, s.tensors)
        for name, f in res.report.tensors.items():
            assert list(f.restored_indices) == truth[name].tolist()
    else:
        assert res.report.status == "unrecoverable" and res.report.exit_code == 2


@given(
    seed=st.integers(0, 2**32 - 1), p=st.sampled_from([0.005, 0.02, 0.1, 0.3]), level=st.sampled_from(paramseal.LEVELS)
)
def test_scattered_tampering_on_a_multi_lane_model_never_claims_success_wrongly(
    key: paramseal.Key, seed: int, p: float, level: str
) -> None:
    rng = np.random.default_rng(seed)
    m = {
        "w1": helpers.random_tensor(rng, np.float32, (120, 100)),
        "w2": helpers.random_tensor(rng, helpers.BF16, (50, 64)),
        "w3": helpers.random_tensor(rng, np.float16, (3000,)),
        "ids": helpers.random_tensor(rng, np.int32, (500,)),
    }
    s = paramseal.seal(m, key, level=level)
    t = helpers.copy_model(s.tensors)
    for name, a in t.items():
        u = helpers.uview(a)
        idx = rng.choice(u.size, size=max(1, int(u.size * p)), replace=False)
        u[idx] ^= u.dtype.type(1) << rng.integers(0, helpers.width(a.dtype), size=idx.size).astype(u.dtype)
        t[name] = helpers.from_uview(u, a)
    v = paramseal.verify(t, key, s.header_json)
    assert v.status == "tampered"
    assert {n: set(f.tampered_blocks) for n, f in v.tensors.items()} == helpers.changed_blocks(t, s.tensors)
    res = paramseal.recover(t, key, s.header_json)
    helpers.assert_honest_recovery(res, t, s.tensors)
    assert (res.report.status == "recovered") == v.recoverable
