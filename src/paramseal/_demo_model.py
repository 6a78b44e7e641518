"""Tiny numpy-only MLP on the bundled digits data, used by demos, tests and benchmarks.

It gives ParamSeal a real (if small) checkpoint whose accuracy visibly collapses when
its weights are tampered with, without depending on torch or scikit-learn.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from importlib import resources
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

__all__ = ["LAYER_SIZES", "N_TEST", "accuracy", "load_digits", "split", "train"]

#: Widths of the MLP layers, input first: 64 -> 128 -> 64 -> 10.
LAYER_SIZES: tuple[int, ...] = (64, 128, 64, 10)
#: Number of held-out samples returned by :func:`split`.
N_TEST = 500

_SPLIT_SEED = 0
_EPOCHS = 40
_BATCH = 64
_LR = 2e-3
_BETA1 = 0.9
_BETA2 = 0.999
_EPS = 1e-8

_S = TypeVar("_S", bound=np.generic)
_T = TypeVar("_T", bound=np.generic)


def load_digits() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Load the bundled 8x8 digits data set.

    Returns ``(X, y)``: ``X`` is float32 of shape ``(1797, 64)`` scaled to ``[0, 1]``
    (pixel counts 0..16 divided by 16) and ``y`` is int64 of shape ``(1797,)`` with
    labels ``0..9``.
    """
    # read_bytes() works whether the package lives on disk or inside a zip/wheel.
    raw = resources.files("paramseal.data").joinpath("digits.npz").read_bytes()
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        x_u8 = npz["X"]
        y_u8 = npz["y"]
    X = x_u8.astype(np.float32) / np.float32(16.0)
    y = y_u8.astype(np.int64)
    return X, y


def split(X: NDArray[_S], y: NDArray[_T]) -> tuple[NDArray[_S], NDArray[_T], NDArray[_S], NDArray[_T]]:
    """Split ``(X, y)`` into a fixed train/test partition.

    The partition is a permutation drawn from ``numpy.random.default_rng(0)``, so it
    is the same on every call; the last :data:`N_TEST` permuted samples form the
    test set (1297 train / 500 test for the bundled data).

    Returns ``(X_train, y_train, X_test, y_test)``. Raises ``ValueError`` if ``X`` and
    ``y`` disagree in length or there are not more than :data:`N_TEST` samples.
    """
    n = len(y)
    if len(X) != n:
        raise ValueError(f"X has {len(X)} rows but y has {n}")
    if n <= N_TEST:
        raise ValueError(f"need more than {N_TEST} samples to split, got {n}")
    perm = np.random.default_rng(_SPLIT_SEED).permutation(n)
    tr, te = perm[: n - N_TEST], perm[n - N_TEST :]
    return X[tr], y[tr], X[te], y[te]


def _forward_train(
    params: list[NDArray[np.float32]], x: NDArray[np.float32]
) -> tuple[list[NDArray[np.float32]], list[NDArray[np.float32]]]:
    """Return pre-activations and layer inputs for one batch (float32)."""
    inputs: list[NDArray[np.float32]] = []
    pre: list[NDArray[np.float32]] = []
    h = x
    n_layers = len(params) // 2
    for i in range(n_layers):
        w, b = params[2 * i], params[2 * i + 1]
        inputs.append(h)
        z = h @ w.T + b
        pre.append(z)
        h = np.maximum(z, np.float32(0.0)) if i < n_layers - 1 else z
    return pre, inputs


def train(seed: int = 0) -> dict[str, NDArray[np.float32]]:
    """Train the demo MLP deterministically on the training split.

    The network is ``64 -> 128 -> 64 -> 10`` with ReLU and softmax cross-entropy,
    trained with minibatch Adam in float32. The same ``seed`` gives bit-identical
    weights on repeated runs in the same environment (same numpy/BLAS build).

    Returns a checkpoint-like dict of C-contiguous float32 arrays ``fc1.weight``,
    ``fc1.bias``, ..., ``fc3.bias``; weights are ``(out, in)`` as in PyTorch.
    """
    rng = np.random.default_rng(seed)
    X, y = load_digits()
    x_tr, y_tr, _, _ = split(X, y)
    n = len(y_tr)
    n_classes = LAYER_SIZES[-1]
    onehot = np.eye(n_classes, dtype=np.float32)[y_tr]

    params: list[NDArray[np.float32]] = []
    for fan_in, fan_out in zip(LAYER_SIZES[:-1], LAYER_SIZES[1:], strict=True):
        # He init suits ReLU; zero biases.
        std = np.float32(np.sqrt(2.0 / fan_in))
        params.append(rng.standard_normal((fan_out, fan_in), dtype=np.float32) * std)
        params.append(np.zeros(fan_out, dtype=np.float32))
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    n_layers = len(params) // 2

    step = 0
    for _ in range(_EPOCHS):
        order = rng.permutation(n)
        for start in range(0, n, _BATCH):
            idx = order[start : start + _BATCH]
            xb, tb = x_tr[idx], onehot[idx]
            pre, inputs = _forward_train(params, xb)

            logits = pre[-1]
            # Subtract the row max so exp() cannot overflow.
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = e / e.sum(axis=1, keepdims=True)
            grad_z = (probs - tb) / np.float32(len(idx))

            grads: list[NDArray[np.float32]] = [np.empty(0, dtype=np.float32)] * len(params)
            for i in reversed(range(n_layers)):
                grads[2 * i] = grad_z.T @ inputs[i]
                grads[2 * i + 1] = grad_z.sum(axis=0)
                if i > 0:
                    grad_z = (grad_z @ params[2 * i]) * (pre[i - 1] > 0)

            step += 1
            # Python-float bias corrections keep the update in float32 (NEP 50).
            lr_t = _LR * np.sqrt(1.0 - _BETA2**step) / (1.0 - _BETA1**step)
            for p, g, m_i, v_i in zip(params, grads, m, v, strict=True):
                m_i *= _BETA1
                m_i += (1.0 - _BETA1) * g
                v_i *= _BETA2
                v_i += (1.0 - _BETA2) * (g * g)
                p -= lr_t * m_i / (np.sqrt(v_i) + _EPS)

    out: dict[str, NDArray[np.float32]] = {}
    for i in range(n_layers):
        out[f"fc{i + 1}.weight"] = np.ascontiguousarray(params[2 * i], dtype=np.float32)
        out[f"fc{i + 1}.bias"] = np.ascontiguousarray(params[2 * i + 1], dtype=np.float32)
    return out


def accuracy(tensors: Mapping[str, NDArray[Any]], X: NDArray[Any], y: NDArray[Any]) -> float:
    """Top-1 accuracy of the demo MLP given by ``tensors`` on ``(X, y)``.

    The forward pass runs in float64 whatever the stored dtype (float32, float16,
    ml_dtypes bfloat16, ...). Non-finite weights never raise: a sample whose logits
    contain NaN counts as a wrong prediction.

    Returns the fraction of correctly classified samples, in ``[0, 1]``. Raises
    ``KeyError`` if a ``fcN.weight``/``fcN.bias`` tensor is missing and
    ``ValueError`` if ``X`` and ``y`` disagree in length or are empty.
    """
    labels = np.asarray(y).astype(np.int64)
    h = np.asarray(X).astype(np.float64)
    if len(h) != len(labels):
        raise ValueError(f"X has {len(h)} rows but y has {len(labels)}")
    if len(labels) == 0:
        raise ValueError("cannot compute accuracy on an empty set")
    n_layers = len(LAYER_SIZES) - 1
    # A tampered model may hold NaN/Inf; silence the resulting FP warnings.
    with np.errstate(all="ignore"):
        for i in range(1, n_layers + 1):
            w = np.asarray(tensors[f"fc{i}.weight"]).astype(np.float64)
            b = np.asarray(tensors[f"fc{i}.bias"]).astype(np.float64)
            h = h @ w.T + b
            if i < n_layers:
                h = np.maximum(h, 0.0)  # propagates NaN, unlike np.fmax
        pred = np.argmax(h, axis=1)
        correct = (pred == labels) & ~np.isnan(h).any(axis=1)
    return float(np.mean(correct))
