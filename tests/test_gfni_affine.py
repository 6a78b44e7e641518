"""The irs4 encoder as one linear map (`_gfni_affine`, ``ps_irs_encode_affine``) against the syndrome encoder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import helpers
import numpy as np
import pytest
from numpy.typing import NDArray
from safetensors.numpy import save_file
from test_native import CODES, needs_native

from paramseal import (
    _gfni_affine,
    _gfni_plan,
    _irs,
    _irs_consts,
    _native,
    _native_strata,
    _outer,
    _strata,
    _strata_map,
    files,
)
from paramseal.keys import Key

KEY = Key.generate()


def _groups(k: int, F: int, n: int, seed: int) -> NDArray[np.uint32]:
    W = np.random.default_rng(seed).integers(0, 2**32, (n, _irs_consts.N_POS), dtype=np.uint64).astype(np.uint32)
    W[:, :F] &= np.uint32(~((1 << k) - 1) & 0xFFFFFFFF)
    W[:3] = 0  # the all-zero group, and one with one word set
    W[1, 7] = 0xFFFFFFFF & ~((1 << k) - 1)
    return W


@needs_native
@pytest.mark.parametrize("k,F,host", CODES)
def test_the_linear_map_encodes_as_the_syndrome_encoder_and_numba(
    k: int, F: int, host: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _irs.code_for(k, F, host)
    W = _groups(k, F, 1003, k * 1000 + F + host)  # not a multiple of the kernel's 32 groups, split over threads
    want = W.copy()
    _irs._run(0, code, want, None)  # numba
    by_syndromes = W.copy()
    monkeypatch.setattr(_native, "AFFINE", False)
    assert _native._encode_gfni(code, by_syndromes)
    monkeypatch.setattr(_native, "AFFINE", True)
    monkeypatch.setattr(_native, "AFFINE_MIN_GROUPS", 0)
    got = W.copy()
    assert _native._encode_gfni(code, got)
    assert np.array_equal(by_syndromes, want)
    assert np.array_equal(got, want)
    a = _native._affine(k, F, host)
    if _gfni_plan._plan(k, F, host).dmax >= 1:  # a code with parity: the map ran
        assert a is not None
        assert set(a.nblk.tolist()) <= {8, 16} and a.mats.size == 8 * int((a.nsrc * a.nblk).sum())


@needs_native
def test_small_calls_do_not_build_the_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """A light recover re-encodes a few groups: the map (30-45 ms to build) is for the seal's superblocks."""
    code = _irs.code_for(8, 255, 2)
    _native._affine_built.cache_clear()
    W = _groups(8, 255, 40, 1)
    assert _native.encode(code, W)
    assert _native._affine_built.cache_info().currsize == 0
    big = _groups(8, 255, _native.AFFINE_MIN_GROUPS, 2)
    assert _native.encode(code, big)
    assert _native._affine_built.cache_info().currsize == 1
    assert _irs.syndromes_zero(code, W).all() and _irs.syndromes_zero(code, big).all()


@needs_native
@pytest.mark.parametrize("stray", ["outside the free bytes", "another codeword's free byte"])
def test_a_map_that_leaves_the_free_bytes_of_its_codeword_is_refused(stray: str) -> None:
    code = _irs.code_for(8, 255, 2)

    def encode(W: NDArray[np.uint32]) -> None:
        assert _native._encode_syndromes(code, W)
        by = W.view(np.uint8).reshape(W.shape[0], -1)
        if stray == "outside the free bytes":
            by[:, 1] ^= 0x10  # byte 1 of word 0 holds data at k = 8
        else:
            # word 136's free byte (codeword 0; past the first quarter, whose words host the outer code) set
            # from its byte 1, which codeword 1 reads
            by[:, 4 * 136] ^= by[:, 4 * 136 + 1]

    assert _gfni_affine.plan(8, 255, 2, encode) is None
    assert _gfni_affine.plan(8, 255, 2, lambda W: _native._encode_syndromes(code, W)) is not None


@needs_native
@pytest.mark.parametrize("k,F,host", [(8, 255, 2), (12, 250, 0), (16, 255, 3)])
def test_encoding_and_placing_in_one_pass_gives_what_the_two_passes_give(
    k: int, F: int, host: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_native.encode_placed`: the seal's encode and strata placement in one pass, as `encode` then `to_strata`."""
    monkeypatch.setattr(_native, "AFFINE_MIN_GROUPS", 0)
    code = _irs.code_for(k, F, host)
    rng = np.random.default_rng(k + F)
    ng, g0, nperm, nf = 1003, 1_000_003, 256, F - 3  # ng: a tail past 16 and 32 rows, split over threads
    W = _groups(k, F, ng, 7)
    pad = rng.integers(0, 2**32, W.shape, dtype=np.uint64).astype(np.uint32)
    perm = np.stack([rng.permutation(_irs_consts.N_POS) for _ in range(nperm)]).astype(np.int16)
    # the outer parity's bytes, put by the one pass (where the code hosts any) and by the caller before two
    at = (4 * code.hosted.reshape(-1)).astype(np.int16)
    hosted = (rng.integers(0, 256, (ng, at.size), dtype=np.uint8), at) if host else None
    want_w = W.copy()
    if hosted is not None:
        _outer.Outer.put_hosted(want_w, hosted)
        assert not np.array_equal(want_w, W)
    assert _native.encode(code, want_w)
    want = _native_strata.to_strata(want_w, pad, g0, perm, nf, np.zeros((nf, ng), np.uint32))
    out = np.full((nf, _native_strata.row_stride(ng)), 0xA5A5A5A5, np.uint32)
    got_w = W.copy()
    assert _native.encode_placed(code, got_w, pad, g0, perm, nf, out, hosted)
    assert np.array_equal(got_w, want_w)
    assert np.array_equal(out[:, :ng], want)
    assert (out[:, ng:] == 0xA5A5A5A5).all()  # nothing past the groups' columns
    monkeypatch.setattr(_native, "SIMD", False)  # the placement's vector path off: the caller does both
    again = W.copy()
    assert not _native.encode_placed(code, again, pad, g0, perm, nf, out)
    assert np.array_equal(again, W)


@needs_native
@pytest.mark.skipif(not _native_strata.makes_pad(), reason="the kernels make the offset with VAES")
@pytest.mark.parametrize("g0", [0, 1_000_003, 2**33 + 1])
def test_the_one_pass_makes_the_offset_from_its_key_as_its_words_give_it(
    g0: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_native.encode_placed` given the offset's key: the placement's pad_src rows are OpenSSL's keystream."""
    monkeypatch.setattr(_native, "AFFINE_MIN_GROUPS", 0)
    code = _irs.code_for(8, 255, 2)
    ng, key = 1003, bytes(range(40, 72))
    rng = np.random.default_rng(5)
    perm = np.stack([rng.permutation(_irs_consts.N_POS) for _ in range(256)]).astype(np.int16)
    W = _groups(8, 255, ng, 3)
    outs, words = [], []
    for pad in (helpers.pad_words(key, g0, ng), key):
        out = np.zeros((255, _native_strata.row_stride(ng)), np.uint32)
        w = W.copy()
        assert _native.encode_placed(code, w, pad, g0, perm, 255, out)
        outs.append(out)
        words.append(w)
    assert np.array_equal(words[0], words[1]) and np.array_equal(outs[0], outs[1])
    wrong = np.zeros_like(outs[0])
    assert _native.encode_placed(code, W.copy(), bytes(32), g0, perm, 255, wrong)
    assert not np.array_equal(wrong, outs[0])  # another key, another placement: the key is used


def _sealed_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tensors: dict[str, np.ndarray], patch: Callable[[bool], tuple]
) -> tuple[Path, bytes, bytes]:
    """Seal ``tensors`` with ``patch(True)``, then ``patch(False)`` (target, name, value), one salt: both files."""
    src = tmp_path / "m.safetensors"
    save_file(tensors, str(src))
    for on in (True, False):
        with monkeypatch.context() as m:
            m.setattr("os.urandom", lambda n: b"\x07" * n)  # the same salt both ways
            m.setattr(*patch(on))
            files.seal_file(src, tmp_path / f"{on}.safetensors", KEY)
    out = tmp_path / "True.safetensors"
    return out, out.read_bytes(), (tmp_path / "False.safetensors").read_bytes()


@needs_native
@pytest.mark.skipif(not _native_strata.makes_pad(), reason="the kernels make the offset with VAES")
def test_a_seal_making_the_offset_writes_the_file_its_words_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gather and the one pass made the offset from its key (or not): the same sealed file."""
    rng = np.random.default_rng(8)
    tensors = {"a": rng.standard_normal(2_000_003).astype(np.float32), "c": rng.standard_normal(999).astype(np.float32)}
    made = []
    real = _strata_map.Offset.__init__

    def patch(on: bool) -> tuple:
        def init(self: Any, *a: Any) -> None:
            real(self, *a)
            self.key = self.key if on else None
            made.append(self.key is not None)

        return _strata_map.Offset, "__init__", init

    out, made_one, words_one = _sealed_both_ways(tmp_path, monkeypatch, tensors, patch)
    assert made.count(True) == made.count(False) > 0
    assert made_one == words_one
    assert files.verify_file(out, KEY).status == "intact"


@needs_native
def test_a_seal_encoding_and_placing_in_one_pass_writes_the_file_two_passes_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    tensors = {"a": rng.standard_normal(2_000_003).astype(np.float32), "b": np.arange(999, dtype=np.int64)}
    calls = []
    real = _strata.Strata.encode_placed

    def patch(one_pass: bool) -> tuple:
        def placed(*a: Any) -> Any:
            got = real(*a) if one_pass else None
            calls.append(got is not None)
            return got

        return _strata.Strata, "encode_placed", placed

    out, one, two = _sealed_both_ways(tmp_path, monkeypatch, tensors, patch)
    assert True in calls and calls.count(True) == calls.count(False)
    assert one == two
    assert files.verify_file(out, KEY).status == "intact"
