"""verify's ``recoverable`` verdict and recover's outcome agree, near and past the code's reach.

verify decides without rebuilding anything (irs4: decoding only; lanes: counting lost shards); recover
rebuilds, checks tags and, past reach, restores what the decoded groups corrected. A yes from verify must
be a bit-exact recovery; a no must never be an exit 0 with a model that verifies. Each configuration is a
seeded sweep that straddles its edge, so both verdicts occur (a verdict that were always True, or always
False, fails here). benchmarks/verdict_agreement.py runs the same comparison on larger models, many trials.
"""

from __future__ import annotations

import helpers
import numpy as np
import pytest

import paramseal

# (dtype, level, [(damage kind, fraction of values)...]): fractions around the edge at this model size
CASES = {
    "fp32-standard": (np.float32, "standard", [("scatter", 0.09), ("scatter", 0.15), ("runs", 0.2), ("runs", 0.3),
                                              ("flips", 0.09), ("flips", 0.15)]),
    "fp32-strong": (np.float32, "strong", [("scatter", 0.16), ("scatter", 0.24), ("runs", 0.3), ("runs", 0.55),
                                          ("flips", 0.16), ("flips", 0.24)]),
    "bf16-standard": (helpers.BF16, "standard", [("scatter", 1e-4), ("scatter", 2e-3), ("runs", 0.02),
                                                ("runs", 0.08), ("flips", 1e-4), ("flips", 2e-3)]),
    "fp16-strong": (np.float16, "strong", [("scatter", 1e-3), ("scatter", 1e-2), ("runs", 0.05),
                                          ("runs", 0.25), ("flips", 1e-3), ("flips", 1e-2)]),
}  # fmt: skip


def _damage(rng: np.random.Generator, tensors: dict[str, np.ndarray], kind: str, frac: float) -> dict[str, np.ndarray]:
    """A copy of ``tensors`` with ``frac`` of all values replaced at random (scattered, or in 1-4 runs) or flipped."""
    names = list(tensors)  # all as wide as the float dtype: one flat view
    flat = np.concatenate([helpers.uview(tensors[n]) for n in names])
    count = max(1, round(frac * flat.size))
    width = flat.dtype.itemsize * 8
    if kind == "runs":
        runs = int(rng.integers(1, 5))
        for _ in range(runs):
            s = int(rng.integers(0, flat.size - count // runs))
            flat[s : s + count // runs] = rng.integers(0, 1 << width, count // runs, dtype=np.uint64)
    else:
        at = rng.choice(flat.size, count, replace=False)
        if kind == "scatter":
            flat[at] = rng.integers(0, 1 << width, at.size, dtype=np.uint64).astype(flat.dtype)
        else:
            flat[at] ^= np.left_shift(1, rng.integers(0, width, at.size)).astype(flat.dtype)
    parts = np.split(flat, np.cumsum([tensors[n].size for n in names])[:-1])
    return {n: helpers.from_uview(p, tensors[n]) for n, p in zip(names, parts, strict=True)}


@pytest.mark.parametrize("config", list(CASES))
def test_verify_says_recoverable_exactly_when_recover_restores_the_seal(
    config: str, monkeypatch: pytest.MonkeyPatch, key: paramseal.Key
) -> None:
    dtype, level, damages = CASES[config]
    rng = np.random.default_rng(list(config.encode()))
    helpers.pin_salt(monkeypatch, rng.bytes(16))
    model = {
        f"layer{i}.weight": (rng.standard_normal((150, 96)) * 0.05).astype(np.float32).astype(dtype) for i in range(3)
    }
    # tags kept in the header: a last block of 2 values, and an integer tensor (recover checks these rebuilt blocks)
    model["head.bias"] = (rng.standard_normal(130) * 0.05).astype(np.float32).astype(dtype)
    model["position_ids"] = np.arange(300, dtype=np.int32 if np.dtype(dtype).itemsize == 4 else np.int16)
    s = paramseal.seal(model, key, level=level)
    verdicts = []
    for kind, frac in damages:
        bad = _damage(rng, s.tensors, kind, frac)
        rep = paramseal.verify(bad, key, s.header_json)
        assert rep.status == "tampered", (kind, frac)
        res = paramseal.recover(bad, key, s.header_json)
        again = paramseal.verify(res.tensors, key, s.header_json)
        whole = res.report.exit_code == 0 and again.status == "intact"
        exact = all(helpers.same_bytes(res.tensors[n], s.tensors[n]) for n in s.tensors)
        assert whole == exact, (kind, frac)  # a recovery claimed is the sealed model's bytes
        assert rep.recoverable == whole, (kind, frac, rep.recoverable, res.report.status)
        assert res.report.exit_code == (0 if rep.recoverable else 2), (kind, frac)
        verdicts.append(rep.recoverable)
    assert set(verdicts) == {True, False}, verdicts  # the sweep straddles the edge: both verdicts are checked
