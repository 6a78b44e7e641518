"""Recovery targets on a ~1M-parameter fp32 model: bit-exact self-recovery within capacity.

The attacks and the transformer-shaped model come from ``benchmarks/recovery_rates.py``
(so the benchmark itself is exercised here); every assertion is made in this file.
A trial passes only when ``recover`` says "recovered", every output tensor is
byte-identical to the sealed one, and verify localised exactly the blocks that changed.
The full 50-trials-per-point versions are marked ``slow``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import paramseal

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "recovery_rates.py"
N_PARAMS = 1_050_000
SEED = 20240601  # independent of the benchmark's default seed


def _load_bench() -> ModuleType:
    name = "paramseal_bench_recovery_rates"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()


@pytest.fixture(autouse=True)
def _slow_only_when_selected(request: pytest.FixtureRequest) -> None:
    """Run ``slow`` tests only when selected with ``-m slow`` (the CI run leaves them out)."""
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("slow: run with -m slow")


@pytest.fixture(scope="module")
def big_model() -> dict[str, np.ndarray]:
    m = bench.build_model(N_PARAMS)
    assert sum(a.size for a in m.values() if a.dtype == np.float32) >= 1_000_000
    assert any(a.dtype == np.int64 for a in m.values())
    return m


SALT = bytes(range(16))  # the seals under test (see `targets`)


@pytest.fixture(scope="module")
def targets(big_model: dict[str, np.ndarray]) -> dict[str, Any]:
    """Seal once per level for the whole module, with a pinned salt.

    The salt keys the layout. With 2 hosted bytes strong's 20% scattered point failed a trial
    now and then over fresh salts; 3 bytes widened its margin (README, Recovery capacity).
    Pinned, each run tests the same seal, so a failure is a change, not chance.
    """
    with pytest.MonkeyPatch.context() as mp:
        real = os.urandom
        mp.setattr(os, "urandom", lambda n: SALT if n == 16 else real(n))
        return {lv: bench.make_target(big_model, lv) for lv in ("standard", "strong")}


# --------------------------------------------------------------------------- helpers


def _assert_bit_exact(tg: Any, out: dict[str, np.ndarray], where: str) -> None:
    assert list(out) == tg.names, where
    for name in tg.names:
        a, b = tg.sealed[name], out[name]
        assert b.dtype == a.dtype and b.shape == a.shape, f"{where}: {name} dtype/shape"
        ua = np.ascontiguousarray(a).view(np.uint8)
        ub = np.ascontiguousarray(b).view(np.uint8)
        assert np.array_equal(ua, ub), f"{where}: {name} differs in {int((ua != ub).sum())} bytes"


def _assert_localized(tg: Any, tampered: dict[str, np.ndarray], report: paramseal.Report, where: str) -> None:
    truth = bench.changed_blocks(tg, tampered)
    found = {n: f.tampered_blocks for n, f in report.tensors.items() if f.tampered_blocks}
    assert found.keys() == truth.keys(), where
    for n, blocks in truth.items():
        assert np.array_equal(np.asarray(found[n]), blocks), f"{where}: {n}"


def _run_recovered(tg: Any, attack: str, rate: float, trials: int, seed: int = SEED) -> None:
    """Every trial must recover bit-exactly; failures are collected and reported together."""
    failures = []
    for i in range(trials):
        rng = bench.trial_rng(seed, tg.level, attack, rate, i)
        tp = bench.ATTACKS[attack](tg, rate, rng)
        r = paramseal.recover(tp.out, bench.KEY, tg.header_json)
        where = f"{tg.level} {attack} {rate} trial {i}"
        if r.report.status != "recovered":
            failures.append(f"{where}: status {r.report.status}, lanes failed {r.report.lanes_failed}")
            continue
        _assert_bit_exact(tg, r.tensors, where)
        _assert_localized(tg, tp.out, r.report, where)
    assert not failures, f"{len(failures)}/{trials} trials failed:\n" + "\n".join(failures)


def _run_beyond(tg: Any, attack: str, rate: float, trials: int, seed: int = SEED) -> None:
    """Beyond capacity: never claim success, never touch a block that was not tampered with."""
    for i in range(trials):
        rng = bench.trial_rng(seed, tg.level, attack, rate, i)
        tp = bench.ATTACKS[attack](tg, rate, rng)
        r = paramseal.recover(tp.out, bench.KEY, tg.header_json)
        where = f"{tg.level} {attack} {rate} trial {i}"
        assert r.report.status == "unrecoverable", where
        assert not r.report.recoverable and not r.report.ok, where
        assert r.report.unrecoverable_count > 0, where
        assert not bench.bit_exact(tg, r.tensors), where
        truth = bench.changed_blocks(tg, tp.out)
        for t, name in enumerate(tg.names):
            a = np.ascontiguousarray(tg.sealed[name]).reshape(-1)
            b = np.ascontiguousarray(r.tensors[name]).reshape(-1)
            w = f"u{a.itemsize}"
            diff = a.view(w) != b.view(w)
            pad = int(tg.nblocks[t]) * 64 - diff.size
            bad = np.flatnonzero(np.concatenate([diff, np.zeros(pad, bool)]).reshape(-1, 64).any(axis=1))
            # Output may differ from the sealed model only inside blocks that were tampered with.
            assert np.isin(bad, truth.get(name, np.empty(0, np.int64))).all(), f"{where}: {name}"


# --------------------------------------------------------------------------- fast (CI) targets


def test_model_shape(big_model: dict[str, np.ndarray], targets: dict[str, Any]) -> None:
    sizes = sorted({a.size for a in big_model.values() if a.ndim == 2 and a.dtype == np.float32})
    assert len(sizes) >= 4  # several weight matrices of different sizes
    assert any(a.size % 64 for a in big_model.values())  # partial last blocks exist
    for tg in targets.values():
        r = paramseal.recover(tg.sealed, bench.KEY, tg.header_json)
        assert r.report.status == "intact"
        _assert_bit_exact(tg, r.tensors, "intact")


def test_contiguous_18pct_standard(targets: dict[str, Any]) -> None:
    _run_recovered(targets["standard"], "contiguous-blocks", 0.18, trials=10)


def test_contiguous_30pct_strong(targets: dict[str, Any]) -> None:
    _run_recovered(targets["strong"], "contiguous-blocks", 0.30, trials=10)


def test_whole_tensors_18pct_standard(targets: dict[str, Any]) -> None:
    _run_recovered(targets["standard"], "whole-tensors", 0.18, trials=3)


def test_scattered_10pct_standard(targets: dict[str, Any]) -> None:
    _run_recovered(targets["standard"], "scattered", 0.10, trials=3)


def test_scattered_20pct_strong(targets: dict[str, Any]) -> None:
    _run_recovered(targets["strong"], "scattered", 0.20, trials=2)


@pytest.mark.parametrize("level", ["standard", "strong"])
def test_1000_bitflips(targets: dict[str, Any], level: str) -> None:
    _run_recovered(targets[level], "bitflips", 1000, trials=3)


def test_bitflips_in_int_tensor_and_exponents(targets: dict[str, Any]) -> None:
    """Flips aimed at the int64 tensor and at float sign/exponent bits (NaN/Inf included)."""
    tg = targets["standard"]
    rng = np.random.default_rng(SEED)
    tampered = dict(tg.sealed)
    ints = [n for n in tg.names if tg.sealed[n].dtype == np.int64]
    assert ints
    for name in ints:
        a = tg.sealed[name].copy()
        u = a.reshape(-1).view(np.uint64)
        idx = rng.choice(u.size, 5, replace=False)
        u[idx] ^= np.uint64(1) << rng.integers(0, 64, 5).astype(np.uint64)
        tampered[name] = a
    w = tg.sealed["layers.1.mlp.fc1.weight"].copy()
    u = w.reshape(-1).view(np.uint32)
    idx = rng.choice(u.size, 40, replace=False)
    u[idx] ^= np.uint32(1) << rng.integers(23, 32, 40).astype(np.uint32)
    u[idx[0]] = 0x7F800000  # +Inf
    u[idx[1]] = 0x7FC00001  # NaN
    tampered["layers.1.mlp.fc1.weight"] = w
    r = paramseal.recover(tampered, bench.KEY, tg.header_json)
    assert r.report.status == "recovered"
    _assert_bit_exact(tg, r.tensors, "int/exponent flips")
    _assert_localized(tg, tampered, r.report, "int/exponent flips")


def test_40pct_contiguous_standard_never_claims_success(targets: dict[str, Any]) -> None:
    _run_beyond(targets["standard"], "contiguous-blocks", 0.40, trials=3)


def test_16pct_scattered_standard_never_claims_success(targets: dict[str, Any]) -> None:
    _run_beyond(targets["standard"], "scattered", 0.16, trials=2)


# --------------------------------------------------------------------------- slow: 50 trials per point


@pytest.mark.slow
@pytest.mark.parametrize(
    ("level", "attack", "rate"),
    [
        ("standard", "contiguous-blocks", 0.18),
        ("standard", "whole-tensors", 0.18),
        ("strong", "contiguous-blocks", 0.30),
        ("strong", "whole-tensors", 0.30),
        ("standard", "scattered", 0.10),
        ("strong", "scattered", 0.20),
        ("standard", "bitflips", 1000),
        ("strong", "bitflips", 1000),
    ],
)
def test_targets_50_trials(targets: dict[str, Any], level: str, attack: str, rate: float) -> None:
    _run_recovered(targets[level], attack, rate, trials=50)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("level", "attack", "rate"),
    [
        ("standard", "contiguous-blocks", 0.40),
        ("strong", "contiguous-blocks", 0.50),
        ("standard", "scattered", 0.16),
        ("strong", "scattered", 0.25),
    ],
)
def test_beyond_capacity_50_trials(targets: dict[str, Any], level: str, attack: str, rate: float) -> None:
    _run_beyond(targets[level], attack, rate, trials=50)
