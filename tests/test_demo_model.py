"""Tests for the numpy demo MLP and its bundled digits data."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from paramseal import _demo_model as dm

EXPECTED_SHAPES = {
    "fc1.weight": (128, 64),
    "fc1.bias": (128,),
    "fc2.weight": (64, 128),
    "fc2.bias": (64,),
    "fc3.weight": (10, 64),
    "fc3.bias": (10,),
}


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return dm.train()


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    X, y = dm.load_digits()
    _, _, x_te, y_te = dm.split(X, y)
    return x_te, y_te


def test_load_digits_contents() -> None:
    X, y = dm.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    # Pixels are counts 0..16, so X * 16 must be integral.
    assert np.array_equal(X * 16, np.round(X * 16))
    assert set(np.unique(y).tolist()) == set(range(10))


def test_split_is_fixed_and_disjoint() -> None:
    X, y = dm.load_digits()
    idx = np.arange(len(y))
    tr1, _, te1, _ = dm.split(idx, y)
    tr2, _, te2, _ = dm.split(idx, y)
    assert len(tr1) == 1297 and len(te1) == 500
    assert np.array_equal(tr1, tr2) and np.array_equal(te1, te2)
    assert not set(tr1.tolist()) & set(te1.tolist())
    assert sorted(tr1.tolist() + te1.tolist()) == idx.tolist()


def test_split_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        dm.split(np.zeros((600, 2)), np.zeros(599))


def test_names_shapes_dtypes(weights: dict[str, np.ndarray]) -> None:
    assert list(weights) == list(EXPECTED_SHAPES)
    for name, arr in weights.items():
        assert isinstance(arr, np.ndarray)
        assert arr.dtype == np.float32, name
        assert arr.shape == EXPECTED_SHAPES[name], name
        assert arr.flags["C_CONTIGUOUS"], name
        assert np.isfinite(arr).all(), name


def test_training_is_deterministic(weights: dict[str, np.ndarray]) -> None:
    again = dm.train()
    assert list(again) == list(weights)
    for name in weights:
        assert again[name].tobytes() == weights[name].tobytes(), name


def test_different_seed_gives_different_weights(weights: dict[str, np.ndarray]) -> None:
    other = dm.train(seed=1)
    assert other["fc1.weight"].tobytes() != weights["fc1.weight"].tobytes()


def test_test_accuracy_at_least_95(weights: dict[str, np.ndarray], held_out: tuple[np.ndarray, np.ndarray]) -> None:
    assert dm.accuracy(weights, *held_out) >= 0.95


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_low_precision_cast_keeps_accuracy(
    weights: dict[str, np.ndarray],
    held_out: tuple[np.ndarray, np.ndarray],
    dtype: type,
) -> None:
    base = dm.accuracy(weights, *held_out)
    cast = {k: v.astype(dtype) for k, v in weights.items()}
    assert all(v.dtype == np.dtype(dtype) for v in cast.values())
    assert abs(dm.accuracy(cast, *held_out) - base) <= 0.01


def test_accuracy_matches_manual_forward(
    weights: dict[str, np.ndarray], held_out: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = held_out
    h = x.astype(np.float64)
    for i in (1, 2, 3):
        h = h @ weights[f"fc{i}.weight"].astype(np.float64).T + weights[f"fc{i}.bias"]
        if i < 3:
            h = np.maximum(h, 0.0)
    assert dm.accuracy(weights, x, y) == pytest.approx(np.mean(h.argmax(axis=1) == y))


def test_nan_weights_give_low_accuracy_not_crash(
    weights: dict[str, np.ndarray], held_out: tuple[np.ndarray, np.ndarray]
) -> None:
    bad = dict(weights)
    bad["fc1.weight"] = np.full_like(weights["fc1.weight"], np.nan)
    acc = dm.accuracy(bad, *held_out)
    # Every logit is NaN, so no prediction may count as correct.
    assert acc == 0.0


def test_inf_weights_do_not_crash(weights: dict[str, np.ndarray], held_out: tuple[np.ndarray, np.ndarray]) -> None:
    bad = {k: v.copy() for k, v in weights.items()}
    bad["fc2.weight"][::2] = np.inf
    bad["fc2.weight"][1::2] = -np.inf
    acc = dm.accuracy(bad, *held_out)
    assert 0.0 <= acc <= 0.5


def test_accuracy_rejects_mismatched_lengths(
    weights: dict[str, np.ndarray], held_out: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = held_out
    with pytest.raises(ValueError):
        dm.accuracy(weights, x, y[:-1])
