"""``paramseal demo``: the whole story on a small real model, offline, in seconds.

A 3-layer MLP is trained deterministically on the UCI handwritten digits that
ship with ParamSeal, saved as safetensors, sealed, attacked (exponent-bit flips
on its most sensitive weights, a replaced layer, and 5% of another layer's
weights replaced at random places), verified and recovered. Accuracy is
printed at every stage.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from . import _demo_model, files
from .errors import UsageError, cannot_write, one_line
from .formats import Loaded
from .keys import Key, write_key

#: What the demo writes into its folder (``--keep DIR``): the model at each stage, and its key.
_FILES = (
    "model.safetensors",
    "sealed.safetensors",
    "attacked.safetensors",
    "recovered.safetensors",
    "demo.key",
    "update.safetensors",
)


def _acc(path: Path, X: np.ndarray, y: np.ndarray) -> float:
    return _demo_model.accuracy(files.read_model(path).tensors, X, y)


def run_demo(seed: int = 0, keep: str | None = None) -> int:
    """Run the demo; returns 0 when every stage behaved as expected, else 1."""
    if seed < 0:  # numpy's seed sequence takes non-negative integers only: a traceback, exit 3, said "a bug"
        raise UsageError(f"--seed {seed} must be 0 or more")
    t0 = time.monotonic()
    X, y = _demo_model.load_digits()
    _, _, Xte, yte = _demo_model.split(X, y)
    ctx = tempfile.TemporaryDirectory(prefix="paramseal-demo-") if keep is None else None
    d = Path(ctx.name if ctx else keep or ".")
    if ctx is None:  # a kept folder is the user's: `--keep .` replaced their own model.safetensors and demo.key
        if d.exists() and not d.is_dir():
            raise UsageError(f"--keep '{d}' is a file; give a folder to keep the demo files in")
        taken = [n for n in _FILES if os.path.lexists(d / n)]
        if taken:
            raise UsageError(
                f"--keep '{d}' already holds {', '.join(taken)}, which the demo would replace; give a new or empty "
                "folder, or remove them first"
            )
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(d, e) from e
    try:
        weights = _demo_model.train(seed)
        n = sum(int(a.size) for a in weights.values())
        orig, sealed_p, attacked, fixed = (d / n for n in _FILES[:4])
        files.write_model(orig, Loaded(dict(weights.items()), {"model": "digits-mlp", "seed": str(seed)}))
        key = Key.generate()
        write_key(d / _FILES[4], key, overwrite=True)
        print(f"model: MLP 64-128-64-10 on UCI digits, {n} fp32 parameters, 500 held-out test images")
        a0 = _acc(orig, Xte, yte)
        print(f"  original   accuracy {100 * a0:.1f}%")

        files.seal_file(orig, sealed_p, key, level="standard")
        a1 = _acc(sealed_p, Xte, yte)
        s = files.read_model(sealed_p).tensors
        rel = max(
            float(np.max(np.abs(s[k].astype(np.float64) - w.astype(np.float64)) / np.maximum(np.abs(w), 1e-30)))
            for k, w in weights.items()
            if w.size
        )
        print(f"  sealed     accuracy {100 * a1:.1f}%   (level standard: fp32 k=8, max relative change {rel:.1e})")

        rng = np.random.default_rng(seed)
        t = {k: v.copy() for k, v in s.items()}
        w1 = t["fc1.weight"].reshape(-1)
        top = np.argsort(-np.abs(w1))[:10]
        w1.view(np.uint32)[top] ^= np.uint32(1 << 30)  # exponent MSB: |w| grows by 2**128
        t["fc3.weight"] = rng.standard_normal(t["fc3.weight"].shape).astype(np.float32) * 0.3
        w2 = t["fc2.weight"].reshape(-1)
        hit = rng.choice(w2.size, w2.size // 20, replace=False)
        w2[hit] = rng.standard_normal(hit.size).astype(np.float32) * 0.3
        files.write_model(attacked, Loaded(t, files.read_model(sealed_p).metadata))
        a2 = _acc(attacked, Xte, yte)
        print(
            "attack: flipped the top exponent bit of the 10 largest fc1 weights; replaced fc3.weight with random "
            f"values;\n        replaced {hit.size} of the {w2.size} fc2 weights (5%) at random places"
        )
        print(f"  attacked   accuracy {100 * a2:.1f}%")

        rep = files.verify_file(attacked, key)
        flagged = f"{rep.tampered_block_count}/{rep.total_blocks} blocks flagged"
        print(f"verify: {rep.status}, recoverable={rep.recoverable}, {flagged}")
        print(rep.summary())

        res = files.recover_file(attacked, fixed, key)
        a3 = _acc(fixed, Xte, yte)
        exact = all(
            np.array_equal(v.view(np.uint8), files.read_model(fixed).tensors[k].view(np.uint8)) for k, v in s.items()
        )
        rr = res.report
        loc = rr.tensors["fc1.weight"]
        located = sorted(loc.restored_indices) == sorted(int(i) for i in top)
        print(f"recover: {rr.status}, {rr.restored_count} values restored, bit-exact vs sealed: {exact}")
        print(f"  fc1.weight restored indices {sorted(loc.restored_indices)} (the 10 attacked: {located})")
        scattered = set(rr.tensors["fc2.weight"].restored_indices) == {int(i) for i in hit}
        n2 = len(rr.tensors["fc2.weight"].restored_indices)
        print(f"  fc2.weight: {n2} values restored (the {hit.size} attacked: {scattered})")
        print(f"  recovered  accuracy {100 * a3:.1f}%")
        v = files.verify_file(fixed, key)
        print(f"verify recovered file: {v.status}")

        # a rollback: an approved update is sealed (a new seal id); the older sealed file is put back
        update = d / _FILES[5]
        files.write_model(update, Loaded({**s, "fc3.bias": s["fc3.bias"] * np.float32(0.9)}, {"model": "digits-mlp"}))
        new_id = files.seal_file(update, update, key, in_place=True, reseal=True).header.salt.hex()
        own = files.verify_file(sealed_p, key)
        pin = files.verify_file(sealed_p, key, expect_seal=new_id)
        print(f"rollback: an update sealed as seal id {new_id}; the older sealed file put back in its place")
        print(
            f"  verify: {own.status} under its own seal {own.seal_id}; with --expect-seal {new_id}: {pin.status}, "
            f"recoverable={pin.recoverable}"
        )
        where = one_line(str(d)) if keep else "(temporary folder, removed)"
        print(f"demo finished in {time.monotonic() - t0:.1f}s; files in {where}")
        good = rep.status == "tampered" and rr.status == "recovered" and exact and located and scattered
        good &= v.status == "intact" and own.status == "intact" and pin.status == "tampered" and not pin.recoverable
        return 0 if good else 1
    finally:
        if ctx is not None:
            ctx.cleanup()
