"""The benchmark scripts refuse arguments that would give a traceback or a figure that means nothing.

They are scripts, not package code: each is loaded from ``benchmarks/`` by path. Nothing here
starts a worker process or asserts on a time (the write floor's op runs in this process, on a small file).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from paramseal import _native
from paramseal.verify import Check

_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(script: str) -> ModuleType:
    name = f"paramseal_bench_{script}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _DIR / f"{script}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    ("script", "args"),
    [
        *[("bench_core", a) for a in (["--size-gib", "0"], ["--size-gib", "-1"], ["--size-gib", "nan"])],
        ("bench_core", ["--size-gib", "0.01", "--repeats", "0"]),
        *[
            ("seal_write_floor", a)
            for a in (["--rounds", "2"], ["--size-gib", "0"], ["--size-gib", "-1"], ["--size-gib", "nan"])
        ],
    ],
)
def test_timing_benchmarks_refuse_nonsense_arguments(
    script: str, args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = _load(script)

    def started(*a: object, **k: object) -> None:
        raise AssertionError("the benchmark started a worker")

    # seal_write_floor's workers are those of the bench_core it imported
    monkeypatch.setattr(getattr(mod, "bench_core", mod), "spawn", started)
    with pytest.raises(SystemExit) as e:
        mod.main([*args, "--dir", str(tmp_path)])
    assert e.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_bench_core_targets_need_a_true_outcome() -> None:
    outcome = _load("bench_core").outcome
    assert outcome("verify", "intact", None) == (True, False, "")
    assert outcome("verify", "tampered", None)[:2] == (False, True)
    assert outcome("recover", "recovered", True) == (True, False, "")
    for exact in (False, None):  # compared and different, or no output to compare
        ok, wrong, note = outcome("recover", "recovered", exact)
        assert not ok and wrong and "FALSE CLAIM" in note
    # said so itself: honest (the run is not wrong), but a fast failure cannot pass a recover target
    ok, wrong, note = outcome("recover", "unrecoverable", False)
    assert not ok and not wrong and "not fully recovered" in note


@pytest.mark.parametrize(
    "args", [["--trials", "0"], ["--rates", "0.1,1.5"], ["--rates", "0"], ["--rates", "-0.1"], ["--params", "0"]]
)
def test_recovery_rates_refuses_nonsense_arguments(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rates = _load("recovery_rates")
    with pytest.raises(SystemExit) as e:
        rates.main(["--params", "20000", "--levels", "standard", "--attacks", "contiguous-blocks", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "must be" in err or "fractions" in err


def test_recovery_rates_contiguous_attack_of_one_block() -> None:
    """A rate that rounds to fewer blocks than the 2-5 runs drawn still makes a run per block."""
    rates = _load("recovery_rates")
    tg = rates.make_target(rates.build_model(20_000), "standard")
    for seed in range(8):
        tp = rates.attack_contiguous_blocks(tg, 1 / tg.total_blocks, np.random.default_rng(seed))
        assert sum(b.size for b in rates.changed_blocks(tg, tp.out).values()) == 1


def test_bench_gpu_dry_run_on_the_cpu_uses_tiny_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    # '--device cpu' promised a dry run of tiny sizes but built the GPU's 1 GiB probe model and
    # timed it with the torch engine on the CPU: over 400 s before its first result
    pytest.importorskip("torch")
    bench = _load("bench_gpu")
    sizes: list[float] = []

    def model(label: str, gib: float, *a: object) -> dict[str, float]:
        sizes.append(gib)
        return {"seal_s": 1.0, "bytes": gib * 2**30}

    monkeypatch.setattr(bench, "bench_model", model)
    monkeypatch.setenv("PARAMSEAL_COMMIT", "test")  # no 'git rev-parse' pipe left for the GC to close
    monkeypatch.setattr(sys, "argv", ["bench_gpu.py", "--device", "cpu"])
    bench.main()
    assert sizes == [0.01, 0.01, 0.01]
    monkeypatch.setattr(sys, "argv", ["bench_gpu.py", "--device", "cpu", "--gib", "0.02", "--bf16-gib", "0"])
    sizes.clear()
    bench.main()
    assert sizes == [0.01, 0.02]  # sizes given are kept; 0 skips the bf16 model


def test_onnx_declared_shapes_gives_the_readme_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """README's ONNX section quotes these outputs of ONNX Runtime and verify's exit codes (onnxruntime 1.32.0)."""
    pytest.importorskip("onnxruntime")
    import paramseal

    _load("onnx_declared_shapes").part1(tmp_path, paramseal.Key.generate())
    rows = {line[:34].strip(): line[34:].split() for line in capsys.readouterr().out.splitlines()[2:]}
    for edit in ("value_info y [5]", "main output y [5]", "Loop body input vi [5]"):
        assert rows[edit] == ["[31.5]", "[15.0]", "[31.5]", "exit", "2"], (edit, rows[edit])
    assert rows["If: both branches [5]"][:2] == ["[7]", "[5]"]
    assert rows["open dim: y=Slice(x*w,0,k) [5]"] == ["[42.0]", "[22.5]", "[42.0]", "exit", "0"]
    assert rows["Loop, vi grows by 4: vi [4]"] == [
        "[4,",
        "8,",
        "12]",
        "[4,",
        "4,",
        "4]",
        "[4,",
        "8,",
        "12]",
        "exit",
        "2",
    ]


@pytest.mark.parametrize("args", [["--trials", "0"], ["--n", "-5"], ["--n", "100"], ["--configs", "fp8-standard"]])
def test_verdict_agreement_refuses_nonsense_arguments(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        _load("verdict_agreement").main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "must be" in err or "too small" in err or "unknown configuration" in err


def test_verdict_agreement_counts_a_verdict_recover_does_not_bear_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Four trials past and within reach agree (exit 0); with verify's verdict forced to yes, those past reach
    are counted as disagreements (exit 1)."""
    bench = _load("verdict_agreement")
    argv = ["--trials", "4", "--n", "20000", "--configs", "fp32-standard", "--seed", "1"]
    assert bench.main(argv) == 0
    assert "disagreements 0" in capsys.readouterr().out
    monkeypatch.setattr(Check, "recoverable", lambda self: True)
    assert bench.main(argv) == 1
    assert "DANGER: yes, not restored" in capsys.readouterr().out


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_lane_seal_phases_hooks_every_step_the_seal_runs(
    dtype: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = _load("lane_seal_phases")
    for owner, name, _ in mod.STEPS:  # restored after the test: the script wraps them in place
        monkeypatch.setattr(owner, name, getattr(owner, name))
    assert mod.main(["--size-gib", "0.002", "--dtype", dtype, "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "never called" not in out and "whole stripes into the store" in out


def test_bench_outer_parity_refuses_no_repeats(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _load("bench_outer_parity")
    monkeypatch.setattr(sys, "argv", ["bench_outer_parity.py", "--repeats", "0"])
    with pytest.raises(SystemExit) as e:
        bench.main()
    assert e.value.code == 2 and "--repeats must be at least 1" in capsys.readouterr().err


@pytest.mark.skipif(not _native.portable(), reason="compiled library not built")
def test_bench_strata_rows_gives_the_same_strata_every_way(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load("bench_strata_rows")
    assert bench.main(["--repeats", "1", "--ng", "100", "1024"]) == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines()[1:]]
    assert len(rows) == 8 and all(r[-1] == "True" for r in rows)  # 2 sizes x 2 paths x 2 row layouts
    assert {r[1] for r in rows} == {"AVX-512", "plain"} and _native.SIMD  # both paths shown; the switch put back
    with pytest.raises(SystemExit) as e:
        bench.main(["--repeats", "0"])
    assert e.value.code == 2


def test_bench_core_write_floor_writes_the_file_size_and_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _load("bench_core")
    src, dst = tmp_path / "src.bin", tmp_path / "out.tmp"
    size = 3 * bench.WRITE_PIECE + 1234  # a short last piece
    src.write_bytes(b"\0" * size)
    bench.worker("write", [str(src), str(dst)])  # in this process: the op itself, not a worker
    assert not dst.exists()  # removed once timed: no GiB left behind
    timed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert timed["seconds"] >= timed["copy_s"] >= 0  # the copy into the page cache is part of the whole
    kept: list[int] = []
    unlink = bench.os.unlink

    def keep(p: str, **kw: object) -> None:  # the op's own unlink skipped; others (pytest's) go on
        if kw or Path(p) != dst:
            unlink(p, **kw)  # type: ignore[arg-type]
            return
        kept.append(Path(p).stat().st_size)

    monkeypatch.setattr(bench.os, "unlink", keep)
    bench.worker("write", [str(src), str(dst)])
    assert kept == [size]
    got = np.fromfile(dst, np.uint8)
    assert got.size == size and np.count_nonzero(got) > size // 2  # real bytes, not a sparse file's zeros
    assert np.array_equal(got[: bench.WRITE_PIECE], np.arange(bench.WRITE_PIECE).astype(np.uint8))


def test_seal_write_floor_rank_correlation() -> None:
    spearman = _load("seal_write_floor").spearman
    assert spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 35.0, 90.0]) == pytest.approx(1.0)  # monotone, not linear
    assert spearman([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert spearman([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 1.0, 3.0]) == pytest.approx(0.0)


def test_seal_phases_runs_its_seal_and_recover_with_every_step_timed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    mod = _load("seal_phases")
    seal = mod.importlib.import_module("paramseal._sealing")
    for owner, name, _ in mod.seal_steps(seal):  # restored after the test: the script wraps them in place
        monkeypatch.setattr(owner, name, getattr(owner, name))
    monkeypatch.setattr(seal, "task_map", seal.task_map)
    # a tiny model's calls would skip the encoder's map, whose cache the seal reads through the timer
    monkeypatch.setattr(_native, "AFFINE_MIN_GROUPS", 1)
    built = _native._affine_built
    mod.phases(tmp_path / "m.safetensors", tmp_path / "s.safetensors", tmp_path / "b.safetensors", 0.002)
    out = capfd.readouterr().out
    assert "seal of 0.00 GiB" in out and "recover --in-place of 100 bit flips, fresh process (recovered)" in out
    # the steps a seal always runs were timed (a step shows once its timer ran)
    steps = ("pass: superblocks (two at a time)", "gather (read words", "final flush")
    assert all(f"  {step}" in out for step in steps)
    # timed, and still an lru_cache under its timer (the seal reads its misses)
    assert _native._affine_built is not built and _native._affine_built.cache_info() == built.cache_info()
