"""The irs4 seal's reused work arrays (`_strata.Scratch`): the same words as fresh arrays, kept per thread."""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import helpers
import numpy as np
import pytest

import paramseal
from paramseal import _native, _native_strata, _outer, _pages, _parallel, _rs16, _sealing, _strata, _strata_map, files
from paramseal.seal import SealConfig

needs_lib = pytest.mark.skipif(_native._lib() is None, reason="compiled library not built")


def _model(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "a": (0.02 * rng.standard_normal((311, 257))).astype(np.float32),
        "b": (0.05 * rng.standard_normal(70_001)).astype(np.float32),
        "ids": np.arange(5000, dtype=np.int64),
    }


def _one_tensor(tmp_path: Path, seed: int, n: int) -> Path:
    """A safetensors file of one fp32 tensor of ``n`` seeded random values."""
    rng = np.random.default_rng(seed)
    return helpers.write_st(tmp_path / "m.safetensors", {"w": rng.standard_normal(n).astype(np.float32)})


def test_scratch_reuses_a_buffer_per_thread_and_grows_it() -> None:
    sc = _strata.Scratch()
    a = sc.get("x", (4, 8), np.uint32)
    b = sc.get("x", (2, 8), np.uint32)
    assert b.shape == (2, 8) and b.dtype == np.uint32 and np.shares_memory(a, b)
    c = sc.get("x", (10, 8), np.uint32)
    assert c.shape == (10, 8) and c.flags.c_contiguous
    assert not np.shares_memory(sc.get("y", (4, 8), np.uint32), c)  # names are apart
    assert sc.get("x", (2, 8), np.uint8).dtype == np.uint8  # another dtype: another array
    got: list[np.ndarray] = []
    th = threading.Thread(target=lambda: got.append(sc.get("x", (2, 8), np.uint8)))
    th.start()
    th.join()
    assert not np.shares_memory(got[0], sc.get("x", (2, 8), np.uint8))  # each thread its own


@needs_lib
def test_batches_with_scratch_give_the_words_of_fresh_arrays(key: paramseal.Key) -> None:
    model = _model(0)
    specs = SealConfig(level="standard").specs(model)
    flats = [helpers.uview(np.ascontiguousarray(model[s.name])).reshape(-1) for s in specs]
    st = _strata.plan(specs, key, bytes(range(16)))
    data = st.pack_data(flats)
    sc = _strata.Scratch()
    words = []
    for g0, g1 in [(0, st.G // 2), (st.G // 2, st.G), (3, 7)]:
        g = np.arange(g0, g1, dtype=np.int64)
        want_pad = st.pad(g)
        pad = st.pad(g, sc)
        assert np.array_equal(pad, want_pad)
        want = st.seal_words(flats, data, g0, g1, want_pad)
        got = st.seal_words(flats, data, g0, g1, pad, sc)
        assert np.array_equal(got, want)
        words.append(got)
        outs = [np.zeros_like(f) for f in flats]
        ref = [np.zeros_like(f) for f in flats]
        st.scatter(outs, got, g0, g1, pad, sc)
        st.scatter(ref, want, g0, g1, want_pad)
        assert all(np.array_equal(a, b) for a, b in zip(outs, ref, strict=True))
    assert np.shares_memory(words[0], words[1])  # the second batch reused the first's array


@needs_lib
def test_file_seal_keeps_its_work_arrays(key: paramseal.Key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file seal takes its superblock and tag arrays from a Scratch, and seals the same bytes as one without."""
    monkeypatch.setattr(os, "urandom", lambda n: bytes(range(n)))  # the salt
    src = helpers.write_st(tmp_path / "m.safetensors", _model(1))
    names: set[str] = set()
    real = _strata.Scratch.get
    monkeypatch.setattr(_strata.Scratch, "get", lambda self, n, *a: names.add(n) or real(self, n, *a))
    files.seal_file(src, tmp_path / "a.safetensors", key)
    # the int64 tensor's tag chunks (the fp32 ones are tagged where the strata are staged: `_seal_tags`)
    assert {"pad", "words", "strata", "blocks <u8"} <= names
    assert "stage" not in names  # the gather reads into the strata buffer, which is free until encoding
    with monkeypatch.context() as m:  # fresh arrays everywhere: the same file
        m.setattr(_strata.Scratch, "get", lambda self, n, shape, dtype: np.empty(shape, dtype))
        files.seal_file(src, tmp_path / "b.safetensors", key)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


@needs_lib
def test_superblock_arrays_are_let_go_before_the_tag_pass(
    key: paramseal.Key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The superblocks' Scratch (about 44 MiB a thread) is gone when the tag pass reads its chunks."""
    src = helpers.write_st(tmp_path / "m.safetensors", _model(2))
    made: list[weakref.ref[_strata.Scratch]] = []
    real_init = _strata.Scratch.__init__
    monkeypatch.setattr(_strata.Scratch, "__init__", lambda self: made.append(weakref.ref(self)) or real_init(self))
    seen: list[bool] = []
    real_read = _sealing.read_blocks

    def read(flat: np.ndarray, spec: object, r0: int, r1: int, scratch: object = None) -> np.ndarray:
        if scratch is not None:
            seen.append(made[0]() is None and made[-1]() is scratch)  # (__init__ runs again in each thread)
        return real_read(flat, spec, r0, r1, scratch)  # type: ignore[arg-type]

    monkeypatch.setattr(_sealing, "read_blocks", read)
    files.seal_file(src, tmp_path / "a.safetensors", key)
    assert seen and all(seen)  # the first (the superblocks') is gone


@needs_lib
def test_superblocks_sealed_side_by_side_write_their_strata_in_turn(
    key: paramseal.Key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two superblocks at a time, but one's pwrites at a time (the kernel's file lock made the other spin)."""
    src = _one_tensor(tmp_path, 4, 5_000_003)
    lock = threading.Lock()
    inside, most, threads = [0], [0], set()
    real = _native_strata.put_strata

    def put(wt: np.ndarray, pieces: object) -> None:
        if sys._getframe(1).f_code.co_name != "scatter":  # the tag pass's few blocks: not the superblocks'
            return real(wt, pieces)  # type: ignore[arg-type]
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            threads.add(threading.current_thread().name)
        time.sleep(0.05)  # long enough for the other superblock's writes to come meanwhile
        real(wt, pieces)  # type: ignore[arg-type]
        with lock:
            inside[0] -= 1

    monkeypatch.setattr(_native_strata, "put_strata", put)
    files.seal_file(src, tmp_path / "a.safetensors", key)
    assert most[0] == 1
    assert len(threads) == min(2, _parallel._cores())  # the superblocks did run side by side
    assert files.verify_file(tmp_path / "a.safetensors", key).status == "intact"


@pytest.mark.skipif(not _native.available(), reason="no GFNI coding kernels: neither table is built")
def test_the_tables_the_superblocks_share_are_built_once_before_them(
    key: paramseal.Key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encoder's map and the outer code's skew tables: built by the caller before the pass, not by its threads."""
    src = _one_tensor(tmp_path, 5, 2_500_003)
    monkeypatch.setattr(_outer, "SUPER_MAX", 4096)  # superblocks of 4096, 4096 and 1612 groups
    monkeypatch.setattr(_parallel, "_cores", lambda: 2)  # side by side even on one core
    callers: dict[str, list[threading.Thread]] = {}
    reals = {"_affine_built": _native._affine_built, "skew_matrices": _rs16.skew_matrices}
    for name, real in reals.items():
        real.cache_clear()  # built afresh by this seal

        def spy(*a: object, name: str = name, real: Any = real) -> Any:
            callers.setdefault(name, []).append(threading.current_thread())
            return real(*a)

        spy.cache_info = real.cache_info  # type: ignore[attr-defined]  # read to know whether it was built
        monkeypatch.setattr(_native if name == "_affine_built" else _rs16, name, spy)
    trims: list[list[int]] = []  # when the heap was trimmed: the calls of each table so far
    real_trim = _pages.trim_heap
    monkeypatch.setattr(_pages, "trim_heap", lambda: trims.append([len(c) for c in callers.values()]) or real_trim())
    files.seal_file(src, tmp_path / "a.safetensors", key)
    for name, real in reals.items():
        assert callers[name][0] is threading.current_thread(), name
        assert len(callers[name]) > 1  # the superblocks asked for it too
        assert real.cache_info().misses == 1, name  # and found it built
    assert trims == [[1, 1]]  # the tables' temporaries given back once both were built, before the superblocks
    assert files.verify_file(tmp_path / "a.safetensors", key).status == "intact"
    files.seal_file(src, tmp_path / "b.safetensors", key)
    assert len(trims) == 1  # built already: nothing to give back, the heap left as it is


@pytest.mark.skipif(not _native.available(), reason="no GFNI coding kernels: no map is built anyway")
def test_a_model_too_small_for_the_encoders_map_does_not_build_it(key: paramseal.Key, tmp_path: Path) -> None:
    """Fewer groups than the map pays for (`_native.AFFINE_MIN_GROUPS`): the encoder codes by its syndromes."""
    src = helpers.write_st(tmp_path / "m.safetensors", _model(3))  # about 590 groups
    _native._affine_built.cache_clear()
    files.seal_file(src, tmp_path / "a.safetensors", key)
    assert _native._affine_built.cache_info().currsize == 0
    assert files.verify_file(tmp_path / "a.safetensors", key).status == "intact"


@needs_lib
def test_a_superblock_computes_its_piece_table_once(
    key: paramseal.Key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its gather, writes (and tags) ask for the same pieces: the first call computes them, the others reuse them."""
    src = _one_tensor(tmp_path, 5, 9_000_001)
    asked: list[tuple[int, int]] = []
    made: list[tuple[int, int]] = []
    real, real_made = _strata.StrataMap.piece_table, _strata.StrataMap._piece_table
    monkeypatch.setattr(
        _strata.StrataMap, "piece_table", lambda s, ts, g0, ng: asked.append((g0, ng)) or real(s, ts, g0, ng)
    )
    monkeypatch.setattr(
        _strata.StrataMap, "_piece_table", lambda s, ts, g0, ng: made.append((g0, ng)) or real_made(s, ts, g0, ng)
    )
    files.seal_file(src, tmp_path / "a.safetensors", key)
    assert sorted(made) == sorted(set(asked)) and len(made) > 1  # each batch's pieces made once
    assert all(asked.count(b) >= 2 for b in made)  # and asked for again (writes; tags where made in the pass)
    assert files.verify_file(tmp_path / "a.safetensors", key).status == "intact"


def test_piece_tables_kept_are_few_and_read_only(key: paramseal.Key) -> None:
    specs = SealConfig(level="standard").specs(_model(6))
    st = _strata.plan(specs, key, bytes(range(16)))
    ts = [t for t, s in enumerate(specs) if s.is_float]
    first = st.piece_table(ts, 0, 5)
    assert all(not a.flags.writeable for a in first)
    for g0 in range(1, 3 * _strata_map._KEPT_TABLES):
        st.piece_table(ts, g0, 5)
    assert len(st._tables) == _strata_map._KEPT_TABLES  # the oldest were let go
    again = st.piece_table(ts, 0, 5)
    assert again is not first and all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_array_lists_are_read_once_each_by_their_arrays(key: paramseal.Key) -> None:
    """`StrataMap._held` (the float tensors' layout check, addresses and files, asked four times a superblock) is
    made once per set of arrays, whatever list holds them, and never served for other arrays."""
    model = _model(7)
    specs = SealConfig(level="standard").specs(model)
    st = _strata.plan(specs, key, bytes(range(16)))
    flat = [np.ascontiguousarray(model[s.name]).reshape(-1).view(np.uint32) for s in specs]
    ts = [t for t, s in enumerate(specs) if s.is_float]
    held = st._held(flat)
    assert held.ok and list(held.ts) == ts == st.flat_words(flat)
    assert held.addr.tolist() == [flat[t].ctypes.data for t in ts]
    assert (held.fds == -1).all()  # arrays in memory, no file
    assert st._held(list(flat)) is held  # another list of the same arrays
    copies = [a.copy() for a in flat]
    other = st._held(copies)
    assert other is not held and other.addr.tolist() == [copies[t].ctypes.data for t in ts]
    strided = list(flat)
    strided[ts[0]] = np.repeat(flat[ts[0]], 2)[::2]  # the same words, not contiguous
    assert st.flat_words(strided) is None
    for _ in range(2 * _strata_map._KEPT_HELD):
        st._held([a.copy() for a in flat])
    assert len(st._held_of) == _strata_map._KEPT_HELD  # the oldest were let go
    assert st._held(flat) is not held and st._held(flat).addr.tolist() == held.addr.tolist()
