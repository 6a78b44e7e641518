"""The irs4 code inside the engine: which models get it, and seal/verify/recover end to end.

Ground truth comes from byte comparisons with the sealed model, never from the engine's report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import helpers
import numpy as np
import pytest
import safetensors.numpy as stn

import paramseal
from paramseal import _irs_recover, cli, files
from paramseal._weights_header import header_from_weights
from paramseal.header import SCHEME_IRS, parse_header
from paramseal.keys import write_key

_T = TypeVar("_T")


def _model(n: int = 200_000, seed: int = 3) -> dict[str, np.ndarray]:
    """fp32 matrices of several sizes, a tiny and an empty tensor, and integer tensors (data words)."""
    rng = np.random.default_rng(seed)
    d = int(np.sqrt(n / 3))
    return {
        "embed": (0.02 * rng.standard_normal((d, d))).astype(np.float32),
        "w1": (0.05 * rng.standard_normal((d, 2 * d))).astype(np.float32),
        "b1": (0.01 * rng.standard_normal(2 * d)).astype(np.float32),
        "tiny": np.array([1.5, -2.0, 0.25], np.float32),
        "empty": np.zeros((0, 4), np.float32),
        "ids": np.arange(3 * d, dtype=np.int64),
        "mask": rng.integers(0, 2, 37).astype(np.bool_),
        "steps": np.array([7], np.int8),
    }


@pytest.fixture(scope="module")
def model() -> dict[str, np.ndarray]:
    return _model()


@pytest.fixture(scope="module", params=["standard", "strong"])
def sealed(request: pytest.FixtureRequest, model: dict[str, np.ndarray], key: paramseal.Key) -> paramseal.SealedModel:
    return paramseal.seal(model, key, level=request.param)


def _bytes_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(
        a[n].dtype == b[n].dtype
        and a[n].shape == b[n].shape
        and np.ascontiguousarray(a[n]).tobytes() == np.ascontiguousarray(b[n]).tobytes()
        for n in a
    )


def _scatter(sealed: dict[str, np.ndarray], rate: float, seed: int) -> dict[str, np.ndarray]:
    """Replace ``rate`` of all values (every tensor, integers included) with random words."""
    rng = np.random.default_rng(seed)
    out = helpers.copy_model(sealed)
    for a in out.values():
        if a.size == 0:
            continue
        u = a.reshape(-1).view(f"u{a.itemsize}")
        idx = rng.choice(a.size, max(0, round(rate * a.size)), replace=False)
        new = rng.integers(0, 1 << min(63, 8 * a.itemsize), idx.size, dtype=np.uint64).astype(u.dtype)
        if a.dtype == np.bool_:
            new &= 1
        u[idx] = new
    return out


def test_fp32_models_get_the_irs_code_and_others_the_lane_code(
    model: dict[str, np.ndarray], key: paramseal.Key
) -> None:
    s = paramseal.seal(model, key)
    h = parse_header(s.header_json, key)
    assert h.scheme == SCHEME_IRS and h.irs and h.code == "irs4-gf256" and h.strata > 0
    half = {n: (a.astype(np.float16) if a.dtype == np.float32 else a) for n, a in model.items()}
    assert not parse_header(paramseal.seal(half, key).header_json, key).irs
    forced = paramseal.SealConfig(code="lanes").seal(model, key)
    assert not parse_header(forced.header_json, key).irs
    assert paramseal.verify(forced.tensors, key, forced.header_json).status == "intact"
    with pytest.raises(paramseal.UnsupportedError, match="irs code needs"):
        paramseal.SealConfig(code="irs").seal(half, key)
    with pytest.raises(paramseal.UnsupportedError, match="irs code needs"):
        paramseal.SealConfig(code="irs", bits=7).seal(model, key)


def test_seal_changes_only_the_low_bits_and_verifies(
    sealed: paramseal.SealedModel, model: dict[str, np.ndarray], key: paramseal.Key
) -> None:
    k = parse_header(sealed.header_json, key).tensors[0].k
    for name, a in model.items():
        b = sealed.tensors[name]
        if a.dtype == np.float32:
            diff = a.reshape(-1).view(np.uint32) ^ b.reshape(-1).view(np.uint32)
            assert not np.any(diff >> np.uint32(k)), name
        else:
            assert np.array_equal(a, b), name
    rep = paramseal.verify(sealed.tensors, key, sealed.header_json)
    assert rep.status == "intact" and rep.exit_code == 0


@pytest.mark.parametrize("seed", range(3))
def test_scattered_damage_within_capacity_is_undone_bit_exactly(
    sealed: paramseal.SealedModel, key: paramseal.Key, seed: int
) -> None:
    level = parse_header(sealed.header_json, key).level
    rate = 0.10 if level == "standard" else 0.18
    bad = _scatter(sealed.tensors, rate, seed)
    v = paramseal.verify(bad, key, sealed.header_json)
    assert v.status == "tampered" and v.recoverable and v.exit_code == 1
    res = paramseal.recover(bad, key, sealed.header_json)
    assert res.report.status == "recovered", res.report.summary()
    assert _bytes_equal(res.tensors, sealed.tensors)
    # every restored index is one that really changed, with the bits that really changed
    for name, f in res.report.tensors.items():
        a = sealed.tensors[name].reshape(-1)
        u, t = a.view(f"u{a.itemsize}"), bad[name].reshape(-1).view(f"u{a.itemsize}")
        truth = np.flatnonzero(u != t)
        assert np.array_equal(np.asarray(f.restored_indices, np.int64), truth), name
        assert [int(x) for x in (u ^ t)[truth]] == list(f.restored_xor), name


def test_contiguous_runs_within_capacity_are_undone(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    level = parse_header(sealed.header_json, key).level
    bad = helpers.copy_model(sealed.tensors)
    flat = bad["w1"].reshape(-1)
    n = flat.size + bad["embed"].size
    span = int((0.18 if level == "standard" else 0.30) * n)  # of the float values, in one run
    rng = np.random.default_rng(1)
    a = int(bad["embed"].size * 0.5)
    e = bad["embed"].reshape(-1)
    e[a:] = rng.standard_normal(e.size - a).astype(np.float32)
    flat[: span - (e.size - a)] = rng.standard_normal(span - (e.size - a)).astype(np.float32)
    res = paramseal.recover(bad, key, sealed.header_json)
    assert res.report.status == "recovered", res.report.summary()
    assert _bytes_equal(res.tensors, sealed.tensors)


def test_single_bit_flips_anywhere_are_restored(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    """Tag bits, parity bits, the header copy's bits, content bits and integer bits."""
    spots = [("embed", 0, 0), ("embed", 1, 3), ("embed", 2, 7), ("embed", 5, 2), ("embed", 70, 30), ("w1", 64, 9)]
    spots += [("ids", 5, 40), ("mask", 3, 0), ("steps", 0, 6), ("tiny", 2, 1), ("b1", 10, 31)]
    for name, idx, bit in spots:
        bad = helpers.flip_bit(sealed.tensors, name, idx, bit)
        v = paramseal.verify(bad, key, sealed.header_json)
        assert v.tampered_tensors == [name] and v.tensors[name].tampered_blocks == (idx // 64,), (name, idx, bit)
        res = paramseal.recover(bad, key, sealed.header_json)
        assert res.report.status == "recovered", (name, idx, bit)
        assert _bytes_equal(res.tensors, sealed.tensors), (name, idx, bit)
        assert res.report.tensors[name].restored_indices == (idx,), (name, idx, bit)


def test_beyond_capacity_names_what_is_lost_and_never_claims(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    bad = _scatter(sealed.tensors, 0.45, 9)
    v = paramseal.verify(bad, key, sealed.header_json)
    assert v.status == "tampered" and not v.recoverable and v.exit_code == 2
    res = paramseal.recover(bad, key, sealed.header_json)
    assert res.report.status == "unrecoverable" and res.report.exit_code == 2
    assert res.report.unrecoverable_count > 0 and res.report.lanes_failed > 0
    # whatever was restored is right; whatever is named lost really differs or was not rebuilt
    for name, f in res.report.tensors.items():
        a = sealed.tensors[name].reshape(-1).view(f"u{sealed.tensors[name].itemsize}")
        out = res.tensors[name].reshape(-1).view(a.dtype)
        lost = np.zeros(a.size, np.bool_)
        for lo, hi in f.unrecoverable_ranges:
            lost[lo:hi] = True
        assert np.array_equal(a[~lost], out[~lost]), name


def test_file_round_trip_streams_and_restores(tmp_path: Path, model: dict[str, np.ndarray], key: paramseal.Key) -> None:
    src, out, rec = tmp_path / "m.safetensors", tmp_path / "s.safetensors", tmp_path / "r.safetensors"
    stn.save_file(model, str(src), metadata={"note": "x"})
    kf = write_key(tmp_path / "k.key", key)
    assert cli.main(["seal", str(src), str(out), "--key", str(kf), "--level", "strong"]) == 0
    sealed = stn.load_file(str(out))
    bad = _scatter(sealed, 0.15, 4)
    tam = tmp_path / "t.safetensors"
    from safetensors import safe_open

    with safe_open(str(out), "np") as f:
        meta = f.metadata()
    stn.save_file(bad, str(tam), metadata=meta)
    assert cli.main(["verify", str(tam), "--key", str(kf)]) == 1
    assert cli.main(["recover", str(tam), str(rec), "--key", str(kf)]) == 0
    assert _bytes_equal(stn.load_file(str(rec)), sealed)
    assert files.verify_file(rec, key).status == "intact"


def test_cli_code_lanes_is_honoured(tmp_path: Path, model: dict[str, np.ndarray], key: paramseal.Key) -> None:
    src, out = tmp_path / "m.safetensors", tmp_path / "s.safetensors"
    stn.save_file(model, str(src))
    kf = write_key(tmp_path / "k.key", key)
    assert cli.main(["seal", str(src), str(out), "--key", str(kf), "--code", "lanes"]) == 0
    assert files.verify_file(out, key).status == "intact"
    from safetensors import safe_open

    with safe_open(str(out), "np") as f:
        assert '"scheme":"paramseal/2"' in f.metadata()["paramseal"]


def test_header_in_the_weights_alone_is_enough(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    text = header_from_weights(sealed.tensors, key)
    assert parse_header(text, key).irs
    bad = _scatter(sealed.tensors, 0.05, 2)
    res = paramseal.recover(bad, key, text)
    assert res.report.status == "recovered" and _bytes_equal(res.tensors, sealed.tensors)


def test_inspect_names_the_code_and_its_bounds(
    tmp_path: Path, model: dict[str, np.ndarray], key: paramseal.Key, capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = tmp_path / "m.safetensors", tmp_path / "s.safetensors"
    stn.save_file(model, str(src))
    assert cli.main(["inspect", str(src)]) == 0
    text = capsys.readouterr().out
    assert "standard  F32   k=8" in text and "code irs" in text and "light     F32   k=4" in text
    assert "code lanes" in text  # light (k=4) keeps the lane code
    kf = write_key(tmp_path / "k.key", key)
    assert cli.main(["seal", str(src), str(out), "--key", str(kf)]) == 0
    assert "code irs" in capsys.readouterr().out
    assert cli.main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["seal"]["scheme"] == "paramseal/3" and info["seal"]["code"] == "irs4-gf256"
    assert info["seal"]["strata"] > 0 and "lanes" not in info["seal"]
    f32 = info["levels"]["standard"]["F32"]
    assert f32["code"] == "irs" and 0.15 < f32["scattered_radius_per_group"] < f32["contiguous_bound"] < 0.25


def test_range_and_word_by_word_reads_agree(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    """Recovery reads dense damage by runs and light damage word by word: both must see the same."""
    from paramseal import _irs_recover
    from paramseal.verify import check

    bad = _scatter(sealed.tensors, 0.01, 5)
    chk = check(bad, key, sealed.header_json)
    st = _irs_recover.strata_of(chk)
    flats = [ub.reshape(-1)[: s.numel] for s, ub in zip(chk.specs, chk.blocks, strict=True)]
    data = st.pack_data(flats)
    ok = check(sealed.tensors, key, sealed.header_json)
    clean = [ub.reshape(-1)[: s.numel] for s, ub in zip(ok.specs, ok.blocks, strict=True)]
    clean_data = st.pack_data(clean)
    for g0, g1 in [(0, st.G), (st.G // 3, st.G // 3 + 17), (st.G - 5, st.G)]:
        g = np.arange(g0, g1, dtype=np.int64)
        words, flags = st.groups(flats, data, g, chk.bad)  # the compiled kernel
        assert np.array_equal(st.gather(flats, data, g0, g1, seal=False), words)
        # sealing reads (of the untampered model: random words include NaN, which sealing refuses)
        sealing = st.groups(clean, clean_data, g, seal=True)[0]  # float words' free bits cleared, data kept
        assert np.array_equal(sealing, st.gather(clean, clean_data, g0, g1, seal=True))
        assert not np.array_equal(sealing, st.groups(clean, clean_data, g)[0])
        assert np.array_equal(st.flags_range(g0, g1, chk.bad), flags)
        v = st.vindex(g)
        assert np.array_equal(st.read(flats, data, v, chk.bad)[0], words)
        assert np.array_equal(st.flags(v, chk.bad), flags)
    rng = np.random.default_rng(3)  # scattered groups: single ones and short runs, as light damage gives
    g = np.unique(np.concatenate([rng.integers(0, st.G, 40), st.G - 3 + np.arange(3), 7 + np.arange(20)]))
    words, flags = st.groups(flats, data, g, chk.bad)
    ref_w, ref_f = st.read(flats, data, st.vindex(g), chk.bad)
    assert np.array_equal(words, ref_w) and np.array_equal(flags, ref_f)
    assert np.array_equal(st.groups(flats, data, g)[0], ref_w)  # without flags
    f = st.flags_range(0, st.G, chk.bad)
    assert (f & _irs_recover.FLAG_BAD).any() and (f & 0x0F).any() and (f & 0x20).any()  # bad, fixed and padding


@pytest.mark.parametrize("level", ["standard", "strong"])
@pytest.mark.parametrize("pattern", [0x01010101, 0x80808080, 0x00FF00FF])
def test_one_constant_xored_into_every_value_is_never_recovered(key: paramseal.Key, level: str, pattern: int) -> None:
    """The constant word is a codeword of any RS code whose roots miss alpha^0, and no keyed
    permutation changes a constant: the code must exclude it, or recover "restores" a forgery."""
    g = 1024
    rng = np.random.default_rng(11)
    m = {"w": (0.02 * rng.standard_normal(255 * g)).astype(np.float32)}  # no padding at all
    s = paramseal.seal(m, key, level=level)
    bad = helpers.copy_model(s.tensors)
    bad["w"].view(np.uint32)[:] ^= np.uint32(pattern)
    res = paramseal.recover(bad, key, s.header_json)
    assert res.report.status == "unrecoverable" and res.report.exit_code == 2
    assert paramseal.verify(res.tensors, key, s.header_json).status == "tampered"


def test_block_runs_match_the_word_by_word_mapping(sealed: paramseal.SealedModel, key: paramseal.Key) -> None:
    """Damaged and failed blocks are found from runs of groups per block: the same as mapping every word."""
    st, chk, words = _bad_blocks(sealed, key, 0.004)
    got = _irs_recover.damaged_groups(st, chk)
    assert got.any() and not got.all() and np.array_equal(got, _reference_groups(st, words))
    st, chk, words = _bad_blocks(sealed, key, 0.02)
    assert _failed_outcomes(st, chk, words, 0.01) == {True, False}  # the comparison had blocks of each kind


def test_block_runs_in_a_model_whose_strata_are_shorter_than_a_block(key: paramseal.Key) -> None:
    rng = np.random.default_rng(2)
    m = {"ids": np.arange(100, dtype=np.int64), "w": rng.standard_normal(3000).astype(np.float32)}
    sealed = paramseal.seal(m, key)
    assert json.loads(sealed.header_json)["strata"] < 64  # G words per stratum: a block spans several
    st, chk, words = _bad_blocks(sealed, key, 0.02)
    got = _irs_recover.damaged_groups(st, chk)
    assert got.all() and np.array_equal(got, _reference_groups(st, words))  # each block spans every group
    assert _failed_outcomes(st, chk, words, 0.2) == {True}
    # the blocks' words really cross strata
    starts = np.concatenate([st.start[t] + np.flatnonzero(b) * st.words_per_block(t) for t, b in enumerate(chk.bad)])
    assert (starts % st.G + 64 > st.G).all()


def _bad_blocks(sealed: paramseal.SealedModel, key: paramseal.Key, rate: float):  # type: ignore[no-untyped-def]
    """The strata, a check with ``rate`` of the blocks marked failed, and every word of those blocks."""
    from paramseal.verify import check

    chk = check(sealed.tensors, key, sealed.header_json)
    st = _irs_recover.strata_of(chk)
    rng = np.random.default_rng(8)
    chk.bad = [rng.random(b.size) < rate for b in chk.bad]
    words = []
    for t, b in enumerate(chk.bad):
        wpb = st.words_per_block(t)
        v = st.start[t] + np.flatnonzero(b)[:, None] * wpb + np.arange(wpb)
        words.append((t, v, v < st.start[t] + st.nwords[t]))
    return st, chk, words


def _reference_groups(st, words) -> np.ndarray:  # type: ignore[no-untyped-def]
    ref = np.zeros(st.G, np.bool_)
    for _, v, ok in words:
        ref[st.groups_of(v[ok])] = True
    return ref


def _failed_outcomes(st, chk, words, fail_rate: float) -> set[bool]:  # type: ignore[no-untyped-def]
    """`_failed_blocks` against the word-by-word answer, with ``fail_rate`` of the groups undecoded."""
    status = np.where(np.random.default_rng(9).random(st.G) < fail_rate, -1, 0)
    assert 0 < (status < 0).sum() < st.G
    lost = np.r_[0, np.cumsum(status < 0)]
    outcomes: set[bool] = set()
    for t, v, ok in words:
        rows = np.flatnonzero(chk.bad[t])
        expect = np.array([(status[st.groups_of(v[i][ok[i]])] < 0).any() for i in range(rows.size)], np.bool_)
        assert np.array_equal(_irs_recover._failed_blocks(st, t, rows, lost), expect)
        outcomes |= set(expect.tolist())
    return outcomes


def test_keystream_zeros_stay_whole_when_threads_grow_the_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads growing the shared zero buffer at once: each must get as many bytes as it asked for.

    A shorter buffer makes AES write a shorter keystream into an uninitialised array: a wrong keyed
    offset, silently. The interleaving is forced: the small request's allocation waits until the large
    request has made its buffer, and the large one waits, while marking its buffer read-only, until
    the small one has finished.
    """
    import threading

    from paramseal import _strata_map

    small_in, big_made, small_done = threading.Event(), threading.Event(), threading.Event()

    class Held(np.ndarray):  # the large buffer: marking it read-only lets the small request finish first
        @property
        def flags(self):  # type: ignore[no-untyped-def, override]
            big_made.set()
            small_done.wait(5)
            return super().flags

    class Numpy:
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(np, name)

        def zeros(self, n: int, dtype: type) -> np.ndarray:
            if n < 1000:
                small_in.set()
                big_made.wait(5)
                return np.zeros(n, dtype)
            return np.zeros(n, dtype).view(Held)

    monkeypatch.setattr(_strata_map, "_ZEROS", np.zeros(0, np.uint8))
    monkeypatch.setattr(_strata_map, "np", Numpy())
    got: dict[str, int] = {}

    def small() -> None:
        got["small"] = len(_strata_map._zeros(10))
        small_done.set()

    th = threading.Thread(target=small)
    th.start()
    assert small_in.wait(5)
    got["big"] = len(_strata_map._zeros(4000))
    th.join(5)
    assert got == {"small": 10, "big": 4000}


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_the_thread_pool_works_in_a_process_forked_after_using_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """multiprocessing forks by default on Linux: a child of a process that used the pool must not hang in it.

    The child inherits the pool object but none of its threads; work queued there never ran.
    """
    import os
    import signal
    import threading
    import time
    import warnings

    from paramseal import _parallel

    monkeypatch.setattr(_parallel, "_cores", lambda: 4)  # the pool is used only with more than one core
    monkeypatch.setattr(_parallel, "_POOL", None)  # a pool of its own, of four workers
    meet = threading.Barrier(4, timeout=10)  # all four workers started: the pool starts no more

    def double(x: int) -> int:
        meet.wait()
        return 2 * x

    assert _parallel.parallel_map(double, range(4)) == [0, 2, 4, 6]
    time.sleep(0.5)  # the workers go idle
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork with threads running
        pid = os.fork()
    if pid == 0:  # the child answers with its exit status; a hang ends at the alarm
        code = 1
        try:
            signal.alarm(20)
            code = 0 if _parallel.parallel_map(lambda x: 3 * x, range(8)) == [3 * x for x in range(8)] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    pool = _parallel._POOL
    assert pool is not None
    pool.shutdown()
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.fixture()
def two_task_cores(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """task_map and parallel_map with pools of their own, as on two cores (even on one), shut down after."""
    from paramseal import _parallel

    monkeypatch.setattr(_parallel, "_cores", lambda: 2)
    monkeypatch.setattr(_parallel, "_TASKS", None)
    monkeypatch.setattr(_parallel, "_POOL", None)
    yield
    for pool in (_parallel._TASKS, _parallel._POOL):
        if pool is not None:
            pool.shutdown()


def test_task_map_keeps_order_runs_nested_work_inline_and_raises_the_first_failure(two_task_cores: None) -> None:
    import threading
    import time

    from paramseal import _parallel

    meet = threading.Barrier(2, timeout=10)  # two tasks at once, or this times out

    def task(x: int) -> tuple[int, set[int]]:
        if x < 2:
            meet.wait()
        # a task's own parallel_map runs on its thread: the pool's threads may all be taken by tasks
        where = set(_parallel.parallel_map(lambda _: threading.get_ident(), range(4)))
        return 10 * x, where

    out = _parallel.task_map(task, range(5))
    assert [r for r, _ in out] == [0, 10, 20, 30, 40]
    assert all(len(w) == 1 and threading.get_ident() not in w for _, w in out)
    assert len({next(iter(w)) for _, w in out}) == 2  # both task threads worked

    done: list[int] = []

    def fails(x: int) -> int:
        time.sleep(0.05 * (4 - x))  # later items finish first
        if x in (1, 3):
            raise ValueError(f"item {x}")
        done.append(x)
        return x

    with pytest.raises(ValueError, match="item 1"):  # the first in item order, not in time
        _parallel.task_map(fails, range(6))
    ran = list(done)
    time.sleep(0.3)
    assert done == ran  # nothing was still running (or started) after task_map returned


def test_work_is_cut_into_one_part_where_it_would_run_in_turn(two_task_cores: None) -> None:
    """`halves` gives one part per core, but one part in a task whose peers fill the cores and in an item of the
    pool: there `parallel_map` runs the parts in turn on one thread, and a seal's superblock kernels each ran as
    two calls (each with its own reads, offset table and keyed offset set-up)."""
    from paramseal import _parallel

    assert _parallel.halves(1000) == [(0, 500), (500, 1000)]
    assert _parallel.halves(1000, parts=3) == [(0, 333), (333, 666), (666, 1000)]
    in_task = _parallel.task_map(lambda _: _parallel.halves(1000), range(2))
    assert in_task == [[(0, 1000)], [(0, 1000)]]
    in_pool = _parallel.parallel_map(lambda _: _parallel.halves(1000), range(2))
    assert in_pool == [[(0, 1000)], [(0, 1000)]]
    assert _parallel.task_map(lambda _: _parallel.halves(1000, parts=2), range(2))[0] == [(0, 500), (500, 1000)]


def test_a_seal_of_several_superblocks_is_the_same_in_parallel_and_in_turn(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, two_task_cores: None
) -> None:
    """Superblocks and tag chunks run side by side (task_map): the file must not depend on it."""
    import importlib
    import os

    from paramseal import _outer

    seal_mod = importlib.import_module("paramseal._sealing")
    real = os.urandom
    monkeypatch.setattr(os, "urandom", lambda n: bytes(range(16)) if n == 16 else real(n))
    rng = np.random.default_rng(11)
    model = {  # 8.6M values: three superblocks; "a" is over a tag chunk (16 MiB), so it is tagged in parts
        "a": (0.02 * rng.standard_normal((3000, 1500))).astype(np.float32),
        "b": (0.05 * rng.standard_normal((2000, 2047))).astype(np.float32),
        "c": (0.01 * rng.standard_normal(77)).astype(np.float32),
        "ids": np.arange(5000, dtype=np.int64),
    }
    src = helpers.write_st(tmp_path / "m.safetensors", model)
    together = files.seal_file(src, tmp_path / "p.safetensors", key)
    assert together.header.scheme == SCHEME_IRS
    assert -(-together.header.strata // _outer.SUPER_MAX) >= 3
    monkeypatch.setattr(seal_mod, "task_map", seal_mod.in_turn)
    files.seal_file(src, tmp_path / "s.safetensors", key)
    assert (tmp_path / "p.safetensors").read_bytes() == (tmp_path / "s.safetensors").read_bytes()
    assert files.verify_file(tmp_path / "p.safetensors", key).status == "intact"


def test_a_recover_of_several_batches_is_the_same_in_parallel_and_in_turn(
    sealed: paramseal.SealedModel, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, two_task_cores: None
) -> None:
    """Batches of damaged groups are decoded side by side (task_map): what is restored must not depend on it."""
    from paramseal import _native, _parallel

    monkeypatch.setattr(_irs_recover, "GROUP_BATCH", 97)  # about 9 batches of this model's groups
    batches: list[int] = []

    def spy(fn: Callable[[int], _T], items: range) -> list[_T]:
        batches.append(len(items))
        return _parallel.task_map(fn, items)

    monkeypatch.setattr(_irs_recover, "task_map", spy)
    bad = _scatter(sealed.tensors, 0.05, 7)
    side = paramseal.recover(bad, key, sealed.header_json)
    if _native.portable():  # the compiled decoder: the batches went to task_map, several of them
        assert batches and max(batches) >= 5, batches
    monkeypatch.setattr(_irs_recover, "task_map", _parallel.in_turn)
    turn = paramseal.recover(bad, key, sealed.header_json)
    assert side.report.status == turn.report.status == "recovered"
    assert _bytes_equal(side.tensors, sealed.tensors) and _bytes_equal(turn.tensors, sealed.tensors)
    assert side.report.to_dict() == turn.report.to_dict()


def test_corrections_found_among_flagged_words_equal_those_found_in_whole_batches(
    sealed: paramseal.SealedModel, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sparse damage looks for each batch's corrections among its flagged words only, heavy damage compares
    whole batches: the same blocks, words and report either way, for either kind of damage."""
    monkeypatch.setattr(_irs_recover, "GROUP_BATCH", 97)  # several batches
    from paramseal.verify import check

    sparse = helpers.copy_model(sealed.tensors)
    name = max(sparse, key=lambda n: sparse[n].size)
    sparse[name].reshape(-1)[100:740] += np.float32(0.5)  # 11 blocks in a row
    scattered = _scatter(sealed.tensors, 0.05, 7)
    real = _irs_recover._few_failed
    for bad, few in ((sparse, True), (scattered, False)):
        assert real(check(bad, key, sealed.header_json)) is few  # the default choice for each
        got = []
        for forced in (True, False):
            monkeypatch.setattr(_irs_recover, "_few_failed", lambda chk, forced=forced: forced)
            got.append(paramseal.recover(bad, key, sealed.header_json))
        assert got[0].report.status == got[1].report.status == "recovered"
        assert _bytes_equal(got[0].tensors, sealed.tensors) and _bytes_equal(got[1].tensors, sealed.tensors)
        assert got[0].report.to_dict() == got[1].report.to_dict()
        assert got[0].report.tensors[name].restored_indices  # something was corrected


def test_the_progress_bar_goes_on_through_a_heavy_decode(
    tmp_path: Path, key: paramseal.Key, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Scattered damage decodes for seconds a GiB after the check: the bar stood full and still meanwhile."""
    monkeypatch.setattr(_irs_recover, "GROUP_BATCH", 97)
    src = helpers.write_st(tmp_path / "m.safetensors", _model())
    sealed = files.seal_file(src, tmp_path / "s.safetensors", key)
    assert sealed.header.scheme == SCHEME_IRS
    t, meta = helpers.read_st(tmp_path / "s.safetensors")
    bad = helpers.write_st(tmp_path / "bad.safetensors", _scatter(t, 0.05, 3), meta)
    n = -(-sealed.header.strata // 97)  # every group is damaged
    for run in (
        lambda: files.verify_file(bad, key, progress=True).status,
        lambda: files.recover_file(bad, tmp_path / "r.safetensors", key, progress=True).report.status,
    ):
        capsys.readouterr()
        assert run() in ("tampered", "recovered")
        err = capsys.readouterr().err
        assert f"decode 1/{n}" in err and f"decode {n}/{n}" in err, err[-300:]
        assert "done in" in err


def test_a_nan_found_by_one_of_several_superblocks_leaves_no_output_of_the_first_try(
    tmp_path: Path, key: paramseal.Key, two_task_cores: None
) -> None:
    rng = np.random.default_rng(12)
    a = (0.02 * rng.standard_normal((3000, 1500))).astype(np.float32)
    b = (0.05 * rng.standard_normal((2000, 2047))).astype(np.float32)
    b[1999, 2000] = np.inf  # near the end of the stream: not in the first superblock's reads alone
    src = helpers.write_st(tmp_path / "m.safetensors", {"a": a, "b": b})
    before = src.read_bytes()
    sealed = files.seal_file(src, tmp_path / "out.safetensors", key)  # tried with b carrying bits, then as data
    assert [(s.name, s.k) for s in sealed.header.tensors] == [("a", 8), ("b", 0)]
    # the first try's output is gone: no temporary file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "out.safetensors"]
    assert src.read_bytes() == before
    assert files.verify_file(tmp_path / "out.safetensors", key).status == "intact"


def _without_deadlock(fn: Callable[[], _T], what: str) -> _T:
    """``fn()`` on a thread of its own, which must finish within 20 s."""
    import threading

    result: list[_T] = []
    t = threading.Thread(target=lambda: result.append(fn()))
    t.start()
    t.join(20)
    assert not t.is_alive(), f"{what} deadlocked"
    return result[0]


def test_nested_parallel_map_runs_inline(two_task_cores: None) -> None:
    """A parallel_map item that calls parallel_map (a sort inside a split of stripes) must not wait on its own pool."""
    from paramseal import _parallel

    got = _without_deadlock(
        lambda: _parallel.parallel_map(lambda x: _parallel.parallel_map(lambda y: x * y, range(3)), range(4)),
        "nested parallel_map",
    )
    assert got == [[x * y for y in range(3)] for x in range(4)]


def test_nested_task_map_runs_inline_on_many_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """More cores than TASKS_MAX: the tasks do not fill the cores, yet a nested task_map must not wait on their pool."""
    from paramseal import _parallel

    monkeypatch.setattr(_parallel, "_cores", lambda: 8)
    monkeypatch.setattr(_parallel, "_TASKS", None)
    monkeypatch.setattr(_parallel, "_POOL", None)
    got = _without_deadlock(
        lambda: _parallel.task_map(lambda x: _parallel.task_map(lambda y: x * y, range(3)), range(6)), "nested task_map"
    )
    assert got == [[x * y for y in range(3)] for x in range(6)]
    for pool in (_parallel._TASKS, _parallel._POOL):
        if pool is not None:
            pool.shutdown()


def test_task_map_waits_for_running_tasks_through_a_second_interrupt(
    monkeypatch: pytest.MonkeyPatch, two_task_cores: None
) -> None:
    import concurrent.futures
    import time

    from paramseal import _parallel

    done: list[int] = []
    started: list[int] = []
    real_wait = concurrent.futures.wait
    calls = {"n": 0}

    def interrupted_wait(fs, *a, **k):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        while len(started) < 2:  # both workers are busy: what the interrupt finds running
            time.sleep(0.01)
        if calls["n"] <= 3:  # the first wait and two more: a user pressing Ctrl-C repeatedly
            raise KeyboardInterrupt
        return real_wait(fs, *a, **k)

    monkeypatch.setattr(_parallel, "wait", interrupted_wait)

    def slow(x: int) -> int:
        started.append(x)
        time.sleep(0.3)
        done.append(x)
        return x

    with pytest.raises(KeyboardInterrupt):
        _parallel.task_map(slow, range(6))
    ran = sorted(done)
    assert ran == [0, 1]  # the two running tasks finished; no later item started
    time.sleep(0.5)
    assert sorted(done) == ran


def test_parallel_map_interrupted_waits_for_running_items(two_task_cores: None) -> None:
    """Ctrl-C during a parallel_map: the items running (native kernels on the caller's arrays) finish first.

    Returning at once let them write into arrays freed as the caller unwound: an interrupted
    recover ended in a segfault instead of exit 130.
    """
    import signal
    import threading
    import time

    from paramseal import _parallel

    started: list[int] = []
    done: list[int] = []

    def item(x: int) -> int:
        started.append(x)
        time.sleep(0.2)
        if x == 0:  # a real SIGINT, which wakes the caller's wait as Ctrl-C does
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        time.sleep(0.2)
        done.append(x)
        return x

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            _parallel.parallel_map(item, range(6))
    finally:
        signal.signal(signal.SIGINT, old)
    assert started and sorted(done) == sorted(started)  # nothing was still running when it returned
    ran = sorted(done)
    time.sleep(0.5)
    assert sorted(done) == ran  # and nothing started after


def _seal_under_the_workqueue_layer(tmp_path: Path, setup: str, native: str = "0", after: str = "") -> None:
    """Seal and verify, in a child without the compiled library (or ``native`` as PARAMSEAL_NATIVE), the
    model ``setup`` (code) makes; then run ``after`` (code).

    numba's workqueue threading layer aborts the process when two threads enter a parallel kernel.
    """
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import numpy as np, ml_dtypes
        from pathlib import Path
        import paramseal
        import safetensors.numpy as stn
        from paramseal import files, _native, _pages
        rng = np.random.default_rng(5)
        """
    )
    script += textwrap.dedent(setup) + textwrap.dedent(
        f"""
        src = Path({str(tmp_path)!r}) / "m.safetensors"
        stn.save_file(model, str(src))
        key = paramseal.Key.generate()
        files.seal_file(src, src.with_name("s.safetensors"), key)
        print(files.verify_file(src.with_name("s.safetensors"), key).status)
        """
    )
    script += textwrap.dedent(after)
    env = {**os.environ, "PARAMSEAL_NATIVE": native, "NUMBA_THREADING_LAYER": "workqueue"}
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("intact")


def test_a_seal_without_the_coding_kernels_survives_numbas_workqueue_layer(tmp_path: Path) -> None:
    """The numba fallback encoder is a parallel kernel: two threads must not enter it."""
    _seal_under_the_workqueue_layer(
        tmp_path,
        """
        assert not _native.available()
        model = {"a": (0.02 * rng.standard_normal((2200, 2000))).astype(np.float32)}  # two superblocks
        """,
    )


def test_a_seal_with_the_table_kernels_runs_superblocks_side_by_side_and_no_numba_parallel_kernel(
    tmp_path: Path,
) -> None:
    """With the library on any CPU, seal runs superblocks in task_map (`_native.encodes`): nothing in a
    superblock (gather, content, encoder, placement) nor in the tagging, verify or a recover in
    place may enter numba's parallel kernels, which would abort under the workqueue layer."""
    from paramseal import _native

    if _native._lib() is None:
        pytest.skip("compiled library not built")
    _seal_under_the_workqueue_layer(
        tmp_path,
        """
        import importlib, numba
        sealing = importlib.import_module("paramseal._sealing")
        ran = []
        real = sealing.task_map
        sealing.task_map = lambda fn, xs: ran.append(1) or real(fn, xs)
        model = {"a": (0.02 * rng.standard_normal((2200, 2000))).astype(np.float32),  # two superblocks
                 "ids": np.arange(40_000, dtype=np.int64)}
        """,
        native="",
        after="""
        out = src.with_name("s.safetensors")
        raw = bytearray(out.read_bytes())
        raw[-400_000:-300_000] = bytes(100_000)  # a damaged stretch of "a": recovered in place
        out.write_bytes(bytes(raw))
        assert files.recover_file(out, out, key, in_place=True).report.status == "recovered"
        try:
            numba.threading_layer()
            raise AssertionError("a numba parallel kernel ran")
        except ValueError:  # "Threading layer is not initialized": none ran
            pass
        assert ran
        print("intact")
        """,
    )


def test_the_lane_code_seals_side_by_side_with_the_numba_kernels_under_the_workqueue_layer(tmp_path: Path) -> None:
    """The lane seal's chunks run two at a time (task_map); numba's parallel kernels must not be entered there."""
    _seal_under_the_workqueue_layer(
        tmp_path,
        """
        assert not _native.portable()
        _pages.CHUNK_BYTES = 2 << 20  # chunks of 16k blocks: past the threaded kernels' threshold, many of them
        model = {"w": (0.02 * rng.standard_normal((2048, 2048))).astype(ml_dtypes.bfloat16),
                 "v": (0.02 * rng.standard_normal(3 * 2**20 + 5)).astype(ml_dtypes.bfloat16)}
        """,
    )


def test_the_threaded_and_serial_builds_of_a_kernel_are_cached_apart() -> None:
    """numba's cache keys a build by function name, signature and bytecode, not by parallel=.

    One name for both loaded the threaded build as the serial one, which a task_map task then
    entered (the workqueue abort above).
    """
    from paramseal import _kernels

    if not _kernels.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    for name, par in _kernels._PAR.items():
        assert par._cache._cache_file._index_name != _kernels._SER[name]._cache._cache_file._index_name
