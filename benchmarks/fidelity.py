"""Accuracy impact of sealing, per dtype and level, on the demo MLP (UCI digits, 500 test images).

Prints a markdown table: measured max relative change of normal values, its bound,
and test accuracy before and after sealing. Usage: python benchmarks/fidelity.py [--seeds N]
"""

from __future__ import annotations

import argparse

import ml_dtypes
import numpy as np

import paramseal
from paramseal import _demo_model
from paramseal.levels import FLOATS, LEVELS, bits_for, bound_text, max_relative_change


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=3, help="models trained with seeds 0..N-1")
    args = ap.parse_args()
    X, y = _demo_model.load_digits()
    _, _, Xte, yte = _demo_model.split(X, y)
    key = paramseal.Key.generate()
    casts = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
    print(
        "| dtype | level | k | max rel. change (bound) | measured max rel. change | accuracy before | accuracy sealed |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, dt in casts.items():
        for level in LEVELS:
            k = bits_for(name, level, None)
            accs0, accs1, rel = [], [], 0.0
            for seed in range(args.seeds):
                w = {n: a.astype(dt) for n, a in _demo_model.train(seed).items()}
                s = paramseal.seal(w, key, level=level).tensors
                for n, a in w.items():
                    a64, s64 = a.astype(np.float64), s[n].astype(np.float64)
                    tiny = np.finfo(np.float16).tiny if name == "F16" else np.finfo(np.float32).tiny
                    normal = np.abs(a64) >= tiny
                    if normal.any():
                        rel = max(rel, float(np.max(np.abs(s64 - a64)[normal] / np.abs(a64[normal]))))
                accs0.append(_demo_model.accuracy(w, Xte, yte))
                accs1.append(_demo_model.accuracy(s, Xte, yte))
            print(
                f"| {name} | {level} | {k} | {bound_text(max_relative_change(name, k))} | {rel:.2e} | "
                f"{100 * np.mean(accs0):.2f}% | {100 * np.mean(accs1):.2f}% |"
            )
    assert set(casts) <= set(FLOATS)


if __name__ == "__main__":
    main()
