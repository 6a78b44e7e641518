"""The erasure code: Reed-Solomon over GF(2^16), many independent lanes per call.

Shards are 4-byte words; arrays are shard-major: data ``[K, lanes]``, parity ``[M, lanes]``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from paramseal import _code


def _data(seed: int, K: int, lanes: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**32, size=(K, lanes), dtype=np.uint32)


def test_encode_is_deterministic_and_lane_independent() -> None:
    data = _data(0, 40, 21)
    p = _code.encode(data, 12)
    assert p.shape == (12, 21) and p.dtype == np.uint32
    assert np.array_equal(p, _code.encode(data.copy(), 12))
    # Each lane's parity depends on that lane only, whatever batch it is coded in.
    assert np.array_equal(p[:, 2:3], _code.encode(np.ascontiguousarray(data[:, 2:3]), 12))
    d2 = data.copy()
    d2[7, 0] ^= 1
    p2 = _code.encode(d2, 12)
    assert not np.array_equal(p2[:, 0], p[:, 0]) and np.array_equal(p2[:, 1:], p[:, 1:])


def test_encode_without_parity_is_empty() -> None:
    assert _code.encode(_data(0, 10, 3), 0).shape == (0, 3)


@given(
    seed=st.integers(0, 2**32 - 1),
    lanes=st.integers(1, 40),
    K=st.integers(1, 60),
    M=st.integers(1, 30),
    frac=st.floats(0, 1.5),
)
def test_decode_restores_any_erasures_up_to_M_and_reports_the_rest(
    seed: int, lanes: int, K: int, M: int, frac: float
) -> None:
    rng = np.random.default_rng(seed)
    data = _data(seed, K, lanes)
    parity = _code.encode(data, M)
    # Per lane, lose a random number of shards around the decodable limit.
    lost_d = np.zeros((lanes, K), dtype=bool)
    lost_p = np.zeros((lanes, M), dtype=bool)
    for g in range(lanes):
        n = min(K + M, int(rng.integers(0, int(frac * M) + 2)))
        pos = rng.choice(K + M, size=n, replace=False)
        lost_d[g, pos[pos < K]] = True
        lost_p[g, pos[pos >= K] - K] = True
    broken = data.copy()
    broken[lost_d.T] = rng.integers(0, 2**32, size=int(lost_d.sum()), dtype=np.uint32)
    bparity = parity.copy()
    bparity[lost_p.T] = 0
    ok = _code.decode(broken, bparity, np.arange(lanes), lost_d, lost_p)
    want_ok = (lost_d.sum(1) == 0) | (lost_d.sum(1) + lost_p.sum(1) <= M)
    assert np.array_equal(ok, want_ok)
    assert np.array_equal(broken[:, ok], data[:, ok]), "a lane reported decoded must be exact"
