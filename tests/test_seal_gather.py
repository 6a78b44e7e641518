"""The seal's compiled gather (``ps_gather``) on batches as large as a superblock's: AVX-512 paths and plain C agree."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import helpers
import numpy as np
import pytest

from paramseal import _native, _native_strata

needs_lib = pytest.mark.skipif(_native._lib() is None, reason="compiled library not built")
KEEP = 0xFFFFFF00


Case = tuple[list[np.ndarray], tuple[np.ndarray, ...], np.ndarray]


def _case(seed: int, ng: int, F: int, nperm: int, cut: int) -> Case:
    """Sources of F strata (stratum j in two pieces, cut at row ``cut`` + j: runs of rows end there), pieces, perms."""
    rng = np.random.default_rng(seed)
    srcs = [rng.integers(0, 2**32, ng, dtype=np.uint32) & np.uint32(0xBFFFFFFF) for _ in range(2 * F)]
    pstart = np.arange(0, 2 * F + 1, 2, dtype=np.int64)
    ends = np.array([[min(cut + j, ng), ng] for j in range(F)], np.int64).reshape(-1)
    # piece 2j + 1 starts at row ends[2j]: its address is that of its row 0
    base = np.array([srcs[q].ctypes.data - (4 * int(ends[q - 1]) if q % 2 else 0) for q in range(2 * F)], np.uint64)
    fd = np.full(2 * F, -1, np.int32)
    perm = np.tile(np.arange(255, dtype=np.int16), (nperm, 1))
    for i in range(nperm):
        perm[i, :F] = rng.permutation(F)
    return srcs, (pstart, ends, base, fd), perm


def _gather(ng: int, g0: int, perm: np.ndarray, F: int, pieces: tuple[np.ndarray, ...], pad: np.ndarray) -> tuple:
    w = np.full((ng, 255), 0x5A5A5A5A, np.uint32)  # data positions are left as they are
    return w, _native_strata.gather(w, g0, perm, F, pieces, pad, KEEP)  # type: ignore[arg-type]


@needs_lib
@pytest.mark.parametrize(
    ("ng", "g0", "F", "nperm", "cut"),
    [
        (6000, 250, 255, 256, 2500),  # long runs of rows, the permutations wrapping
        (6000, 3, 200, 256, 100),  # data strata left as they are
        (5000, 7, 255, 1, 4000),  # unpermuted
        (5000, 1, 192, 5, 2100),  # few permutations
    ],
)
def test_long_batches_gather_as_the_plain_loop(
    ng: int, g0: int, F: int, nperm: int, cut: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    srcs, pieces, perm = _case(ng + F, ng, F, nperm, cut)
    pad = np.random.default_rng(1).integers(0, 2**32, (ng, 255), dtype=np.uint32)
    got = {}
    for simd in (True, False):
        monkeypatch.setattr(_native, "SIMD", simd)
        got[simd] = _gather(ng, g0, perm, F, pieces, pad)
    assert got[True][1] == got[False][1] == -1
    assert np.array_equal(got[True][0], got[False][0])
    # the reference itself: position p of row r holds stratum perm[(g0 + r) % nperm][p]'s word, XOR pad, masked
    r = np.arange(ng)
    for p in (0, 77, 254):
        j = perm[(g0 + r) % nperm, p].astype(np.int64)
        fl = j < F
        cuts = pieces[1][0::2]  # piece 2j + 1's row r is word r - cut of its source
        src = np.stack(
            [np.where(r < c, srcs[2 * i], srcs[2 * i + 1][np.maximum(r - c, 0)]) for i, c in enumerate(cuts)]
        )
        want = (src[j[fl], r[fl]] ^ pad[r[fl], p]) & np.uint32(KEEP)
        assert np.array_equal(got[True][0][r[fl], p], want)
        assert (got[True][0][r[~fl], p] == 0x5A5A5A5A).all()


@needs_lib
@pytest.mark.skipif(not _native_strata.makes_pad(), reason="the kernels make the offset with VAES")
@pytest.mark.parametrize("simd", [True, False])
@pytest.mark.parametrize(
    ("ng", "g0", "F", "cut"),
    [
        (6000, 250, 255, 2500),  # long runs: the offset table's gather
        (5000, 1_000_001, 255, 100),  # short runs: the plain vector gather; 255 g0 mod 4 = 3
        (37, 2, 255, 5),  # rows not a whole number of the offset's 16 a refill
        (600, 3, 200, 300),  # data strata
    ],
)
def test_the_gather_makes_the_offset_from_its_key_as_its_words_give_it(
    ng: int, g0: int, F: int, cut: int, simd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pad`` the key: ps_gather makes the keystream 16 groups at a time (pad_src), the words OpenSSL gives."""
    monkeypatch.setattr(_native, "SIMD", simd)
    srcs, pieces, perm = _case(ng + g0 % 97, ng, F, 256, cut)
    key = bytes(range(7, 39))
    want = _gather(ng, g0, perm, F, pieces, helpers.pad_words(key, g0, ng))
    got = _gather(ng, g0, perm, F, pieces, key)  # type: ignore[arg-type]
    assert got[1] == want[1] == -1
    assert np.array_equal(got[0], want[0])


@needs_lib
@pytest.mark.parametrize("row", [10, 2600, 5999])
def test_long_batches_report_the_first_nan_as_the_plain_loop(row: int, monkeypatch: pytest.MonkeyPatch) -> None:
    ng, F = 6000, 255
    srcs, pieces, perm = _case(9, ng, F, 256, 2500)
    j = 17
    cut = int(pieces[1][2 * j])
    src, at = (srcs[2 * j], row) if row < cut else (srcs[2 * j + 1], row - cut)
    src[at] = 0x7F800000  # Inf
    src[min(at + 1, src.size - 1)] = 0xFFC00000  # a NaN after it
    pad = np.zeros((ng, 255), np.uint32)
    hits = []
    for simd in (True, False):
        monkeypatch.setattr(_native, "SIMD", simd)
        hits.append(_gather(ng, 0, perm, F, pieces, pad)[1])
    assert hits[0] == hits[1] == row * 255 + int(np.flatnonzero(perm[row % 256] == j)[0])


@needs_lib
def test_a_staging_buffer_too_short_for_the_pieces_read_from_a_file_is_refused(tmp_path: Path) -> None:
    """ps_gather preads [F, ng] words into ``stage``; a reused buffer (the seal keeps one a thread) was checked for
    its type and layout only, so one too short would have been written past its end."""
    ng, F = 64, 8
    _, (pstart, ends, base, fd), perm = _case(3, ng, F, 1, 10)
    with open(tmp_path / "model.bin", "wb+") as f:
        f.write(bytes(4 * ng * 2 * F))
        f.flush()
        in_file = (pstart, ends, np.zeros_like(base), np.full_like(fd, f.fileno()))
        w = np.zeros((ng, 255), np.uint32)
        with pytest.raises(AssertionError):
            _native_strata.gather(w, 0, perm, F, in_file, np.zeros_like(w), KEEP, np.empty((F, ng - 1), np.uint32))  # type: ignore[arg-type]


def test_staging_rows_are_kept_off_one_cache_set() -> None:
    """Rows a multiple of 4 KiB apart put one column's words in one L1 set (ps_to_strata ran 3-5x slower)."""
    for ng in (1, 15, 16, 1000, 1024, 16195, 16384, 65536):
        ld = _native_strata.row_stride(ng)
        assert ng <= ld < ng + 1024 and (4 * ld) % 4096 == 64


@needs_lib
@pytest.mark.parametrize("ld_extra", [None, 0, 37])
def test_the_gather_reads_a_file_through_staging_rows_any_distance_apart(ld_extra: int | None, tmp_path: Path) -> None:
    """Pieces read from a file (pread into ``stage``, rows ``stage.shape[1]`` apart) give the words the same pieces
    give from memory; None: the gather's own staging array (`row_stride` apart)."""
    ng, F = 3000, 200
    srcs, (pstart, ends, base, fd), perm = _case(5, ng, F, 256, 1200)
    pad = np.random.default_rng(2).integers(0, 2**32, (ng, 255), dtype=np.uint32)
    want, hit = _gather(ng, 9, perm, F, (pstart, ends, base, fd), pad)
    assert hit == -1
    with open(tmp_path / "model.bin", "wb+") as f:
        at = np.cumsum([0] + [s.nbytes for s in srcs])
        f.write(b"".join(s.tobytes() for s in srcs))
        f.flush()
        # piece q's row 0 lies 4 * (its first row) bytes before its data, as in memory
        off = np.array([at[q] - (4 * int(ends[q - 1]) if q % 2 else 0) for q in range(2 * F)], np.uint64)
        in_file = (pstart, ends, off, np.full_like(fd, f.fileno()))
        stage = None if ld_extra is None else np.full((F, ng + ld_extra), 7, np.uint32)
        w = np.full((ng, 255), 0x5A5A5A5A, np.uint32)
        assert _native_strata.gather(w, 9, perm, F, in_file, pad, KEEP, stage) == -1  # type: ignore[arg-type]
    assert np.array_equal(w, want)


@needs_lib
@pytest.mark.parametrize("simd", [True, False])
def test_a_memory_piece_between_file_pieces_is_read_from_memory(
    simd: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """File pieces all lie in their stratum's staging row, so a run of rows goes on across them (long runs take
    the offset table's gather); a piece from memory between two of them ends the run: its rows are not staged."""
    monkeypatch.setattr(_native, "SIMD", simd)
    ng, F = 6000, 255
    rng = np.random.default_rng(6)
    ends = np.array([[300 + j, 2600 + 3 * j, ng] for j in range(F)], np.int64)  # stratum j: file, memory, file
    srcs = [rng.integers(0, 2**32, ng, dtype=np.uint32) & np.uint32(0xBFFFFFFF) for _ in range(3 * F)]
    first = np.concatenate([np.zeros((F, 1), np.int64), ends[:, :2]], axis=1).reshape(-1)  # each piece's first row
    mem = np.array([s.ctypes.data for s in srcs], np.int64) - 4 * first  # its row 0's address
    pieces = (np.arange(0, 3 * F + 1, 3, dtype=np.int64), ends.reshape(-1))
    perm = np.stack([rng.permutation(255) for _ in range(256)]).astype(np.int16)
    pad = rng.integers(0, 2**32, (ng, 255), dtype=np.uint32)
    want, hit = _gather(ng, 11, perm, F, (*pieces, mem.astype(np.uint64), np.full(3 * F, -1, np.int32)), pad)
    assert hit == -1
    with open(tmp_path / "model.bin", "wb+") as f:
        at = np.cumsum([0] + [s.nbytes for s in srcs])[:-1]
        f.write(b"".join(s.tobytes() for s in srcs))
        f.flush()
        in_file = np.arange(3 * F) % 3 != 1
        base = np.where(in_file, at - 4 * first, mem).astype(np.uint64)
        fd = np.where(in_file, f.fileno(), -1).astype(np.int32)
        stage = np.full((F, _native_strata.row_stride(ng)), 7, np.uint32)  # the memory rows: never staged
        w = np.full((ng, 255), 0x5A5A5A5A, np.uint32)
        assert _native_strata.gather(w, 11, perm, F, (*pieces, base, fd), pad, KEEP, stage) == -1  # type: ignore[arg-type]
    assert np.array_equal(w, want)


@needs_lib
def test_strata_rows_any_distance_apart_are_written_as_contiguous_ones() -> None:
    """`to_strata` hands back a view of rows `row_stride` apart; `put_strata` writes it as it writes a copy."""
    ng, F = 2000, 180
    rng = np.random.default_rng(3)
    w, pad = (rng.integers(0, 2**32, (ng, 255), dtype=np.uint32) for _ in range(2))
    perm = np.stack([rng.permutation(255) for _ in range(4)]).astype(np.int16)
    wt = _native_strata.to_strata(w, pad, 5, perm, F)
    assert wt.shape == (F, ng) and wt.strides[0] == 4 * _native_strata.row_stride(ng)
    outs = [np.zeros((F, ng), np.uint32) for _ in range(2)]
    for src, out in zip((wt, np.ascontiguousarray(wt)), outs, strict=True):
        # stratum j in one piece: its rows to row j of out
        pieces = (
            np.arange(F + 1, dtype=np.int64),
            np.full(F, ng, np.int64),
            np.array([out[j].ctypes.data for j in range(F)], np.uint64),
            np.full(F, -1, np.int32),
        )
        _native_strata.put_strata(src, pieces)
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], wt)


@needs_lib
@pytest.mark.parametrize("in_file", [True, False])
def test_get_strata_reads_back_what_put_strata_wrote(tmp_path: Path, in_file: bool) -> None:
    """Pieces in a file (pread) or in memory (a copy), with padding (-2) read as nothing: the rows come back."""
    F, ng = 5, 300
    rng = np.random.default_rng(11)
    wt = rng.integers(0, 2**32, (F, ng), dtype=np.uint32)
    store = np.zeros(F * ng + 64, np.uint32)  # stratum j's rows at word 7 + j * ng, one word past padding
    ends = np.array([ng, 100, ng, ng, 40, ng, ng], np.int64)  # stratum 1 and 3 in two pieces (1's second: padding)
    pstart = np.array([0, 1, 3, 4, 6, 7], np.int64)
    row0 = np.array([7 + j * ng for j in (0, 1, 1, 2, 3, 3, 4)], np.int64)
    fd = np.full(ends.size, -1, np.int32)
    fd[2] = -2
    with open(tmp_path / "s.bin", "w+b") as f:
        f.truncate(store.nbytes)
        if in_file:
            fd[fd == -1] = f.fileno()
            base = (4 * row0).astype(np.uint64)
        else:
            base = (store.ctypes.data + 4 * row0).astype(np.uint64)
        pieces = (pstart, ends, base, fd)
        _native_strata.put_strata(wt, pieces)
        back = np.full((F, ng), 0xA5A5A5A5, np.uint32)
        _native_strata.get_strata(back, pieces)
        written = np.fromfile(tmp_path / "s.bin", np.uint32) if in_file else store
    assert np.array_equal(back[:, :100], wt[:, :100]) and np.array_equal(back[[0, 2, 3, 4]], wt[[0, 2, 3, 4]])
    assert (back[1, 100:] == 0xA5A5A5A5).all()  # the padding piece: neither written nor read
    assert np.array_equal(written[7 : 7 + ng], wt[0]) and (written[7 + ng + 100 : 7 + 2 * ng] == 0).all()


def _to_strata_reference(w: np.ndarray, pad: np.ndarray, g0: int, perm: np.ndarray, F: int) -> np.ndarray:
    """out[j][r] = (w ^ pad)[r][p] for the position p of stratum j < F under group g0 + r's permutation."""
    ng = w.shape[0]
    out = np.zeros((F, ng), np.uint32)
    rows = np.arange(ng)
    pr = perm[(g0 + rows) % perm.shape[0]].astype(np.int64)  # [ng, 255]: stratum at each position
    keep = pr < F
    out[pr[keep], np.broadcast_to(rows[:, None], pr.shape)[keep]] = (w ^ pad)[keep]
    return out


@needs_lib
@pytest.mark.parametrize("simd", [True, False])
@pytest.mark.parametrize(
    "ng,F,nperm,g0",
    [(1, 255, 256, 0), (15, 255, 1, 3), (16, 200, 256, 250), (17, 255, 256, 255), (300, 255, 256, 999), (999, 7, 5, 2)],
)
def test_to_strata_puts_each_word_in_its_stratum(
    ng: int, F: int, nperm: int, g0: int, simd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The AVX-512 transpose (16 rows at a time, the rest in plain C; at 300 and 999 rows a second call per
    core starts mid-block) and the plain C both give each stratum's words, where the permutations wrap too."""
    monkeypatch.setattr(_native, "SIMD", simd)
    rng = np.random.default_rng(ng + F)
    w, pad = (rng.integers(0, 2**32, (ng, 255), dtype=np.uint32) for _ in range(2))
    perm = np.stack([rng.permutation(255) for _ in range(nperm)]).astype(np.int16)
    got = _native_strata.to_strata(w, pad, g0, perm, F)
    assert np.array_equal(got, _to_strata_reference(w, pad, g0, perm, F))


def _content(w: np.ndarray, keep: int, shard: int) -> np.ndarray:
    """The outer code's content of rows w (every position a float one), from its definition: each word masked
    with ``keep``, its whole cleared low bytes dropped (little-endian), then zeros up to ``shard`` bytes."""
    lo = ((keep & -keep).bit_length() - 1) // 8  # the low bytes keep clears whole
    by = (w & np.uint32(keep)).view(np.uint8).reshape(w.shape[0], 255, 4)[:, :, lo:].reshape(w.shape[0], -1)
    return np.concatenate([by, np.zeros((w.shape[0], shard - by.shape[1]), np.uint8)], axis=1)


@needs_lib
@pytest.mark.parametrize("keep", [0xFFFFFF00, 0xFFFFF000, 0xFFFF0000, 0xFFFFFFF0])  # k = 8, 12 (strong), 16, 4
@pytest.mark.parametrize(
    ("ng", "g0", "nperm", "cut"),
    [
        (6000, 250, 256, 2500),  # long runs: the offset table's gather
        (3000, 5, 7, 100),  # short runs (a piece ends every row from 100 on): the plain vector gather
    ],
)
def test_the_gather_makes_each_rows_outer_content(
    ng: int, g0: int, nperm: int, cut: int, keep: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``content``, ps_gather writes each row's outer-code content (the seal's, at F = 255) as it gathers
    it, on every path (AVX-512 with its VBMI row, the plain loop with the portable one), over whatever was there."""
    srcs, pieces, perm = _case(ng + nperm, ng, 255, nperm, cut)
    pad = np.random.default_rng(2).integers(0, 2**32, (ng, 255), dtype=np.uint32)
    shard = -(-255 * (4 - ((keep & -keep).bit_length() - 1) // 8) // 64) * 64
    for simd in (True, False):
        monkeypatch.setattr(_native, "SIMD", simd)
        w = np.full((ng, 255), 0x5A5A5A5A, np.uint32)
        content = np.full((ng, shard), 0xA5, np.uint8)
        assert _native_strata.gather(w, g0, perm, 255, pieces, pad, keep, None, content) == -1  # type: ignore[arg-type]
        plain = np.full_like(w, 0x5A5A5A5A)
        assert _native_strata.gather(plain, g0, perm, 255, pieces, pad, keep) == -1  # type: ignore[arg-type]
        assert np.array_equal(w, plain)  # the words as without content
        assert np.array_equal(content, _content(w, keep, shard))


@needs_lib
@pytest.mark.parametrize("simd", [True, False])
def test_the_plain_loop_makes_the_content_where_a_source_is_misaligned(
    simd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source at an odd byte address: no common base serves the vector gather's word offsets, so the plain
    loop gathers every row, with the VBMI content row where SIMD is on (the portable one where it is off)."""
    ng, keep = 300, 0xFFFFFF00
    srcs, (pstart, ends, base, fd), perm = _case(11, ng, 255, 256, 100)
    raw = np.zeros(4 * ng + 1, np.uint8)
    raw[1:] = srcs[0].view(np.uint8)
    base = base.copy()
    base[0] = raw.ctypes.data + 1  # piece 0 (stratum 0's first) at an odd address
    pieces = (pstart, ends, base, fd)
    pad = np.random.default_rng(3).integers(0, 2**32, (ng, 255), dtype=np.uint32)
    monkeypatch.setattr(_native, "SIMD", simd)
    w = np.zeros((ng, 255), np.uint32)
    content = np.full((ng, 768), 0xA5, np.uint8)
    assert _native_strata.gather(w, 0, perm, 255, pieces, pad, keep, None, content) == -1  # type: ignore[arg-type]
    col = int(np.flatnonzero(perm[0] == 0)[0])  # row 0: stratum 0's word sits at this position
    assert w[0, col] == (srcs[0][0] ^ pad[0, col]) & np.uint32(keep)
    assert np.array_equal(content, _content(w, keep, 768))


@needs_lib
@pytest.mark.parametrize(
    ("F", "keep", "shard"),
    [
        (255, KEEP, 764),  # a shard too short for a row's 765 bytes
        (200, KEEP, 832),  # data strata: their words come after the gather
        (255, 0xFF000000, 768),  # k = 24: three whole bytes, past what the content drops
        (255, 0xFFFF0F00, 768),  # not a mask of the low bits
        (255, 0, 768),
    ],
)
def test_the_compiled_gather_refuses_content_it_cannot_make(F: int, keep: int, shard: int) -> None:
    """ps_gather itself (not only its Python caller's asserts) refuses, and writes nothing."""
    ng = 40
    _, (pstart, ends, base, fd), perm = _case(4, ng, F, 1, 10)
    pad = np.zeros((ng, 255), np.uint32)
    w = np.full((ng, 255), 7, np.uint32)
    stage = np.zeros((1, 1), np.uint32)
    content = np.full((ng, shard), 0xA5, np.uint8)
    lib = _native._lib()
    assert lib is not None
    got = lib.ps_gather(
        w.ctypes.data, 0, ng, 0, perm.ctypes.data, perm.shape[0], F, pstart.ctypes.data, ends.ctypes.data,
        base.ctypes.data, fd.ctypes.data, stage.ctypes.data, 1, pad.ctypes.data, None, keep, 1, 1,
        content.ctypes.data, shard,
    )  # fmt: skip
    assert got == -2
    assert (w == 7).all() and (content == 0xA5).all()


@needs_lib
def test_the_gather_refuses_content_it_cannot_make() -> None:
    ng = 40
    _, pieces, perm = _case(4, ng, 255, 1, 10)
    pad = np.zeros((ng, 255), np.uint32)
    w = np.zeros((ng, 255), np.uint32)
    with pytest.raises(RuntimeError, match="refused"):  # a shard too short for a row's 765 bytes
        _native_strata.gather(w, 0, perm, 255, pieces, pad, KEEP, None, np.zeros((ng, 764), np.uint8))  # type: ignore[arg-type]
    _, pieces, perm = _case(4, ng, 200, 1, 10)
    with pytest.raises(AssertionError):  # data strata: their words come after the gather
        _native_strata.gather(w, 0, perm, 200, pieces, pad, KEEP, None, np.zeros((ng, 832), np.uint8))  # type: ignore[arg-type]


def _resident(path: Path, size: int) -> np.ndarray:
    """Whether each page of the file's first ``size`` bytes is in the page cache (``mincore`` of a map of it)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    vec = np.zeros(-(-size // page), np.uint8)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as mm:
        addr = np.frombuffer(mm, np.uint8).ctypes.data
        if libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec.ctypes.data_as(ctypes.c_void_p)) != 0:
            pytest.skip(f"mincore failed (errno {ctypes.get_errno()})")
    return (vec & 1).astype(bool)


@needs_lib
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page-cache residency through Linux's mincore")
def test_the_gather_asks_for_the_next_batches_pieces_ahead(tmp_path: Path) -> None:
    """A file piece's gather asks the kernel for the next two batches' rows, which follow it in the file: the F
    pieces are F interleaved streams, which the kernel's readahead takes for random reads (it reads what is
    asked), so each page not in memory was a read the seal waited for. Pieces of 64 KiB (a seal's), their page
    cache dropped first: after the gather of batch 0, the next two batches' rows of each stratum come into
    memory, and the rows from the fourth batch on stay out."""
    F, ng, page = 6, 1 << 14, 4096
    region = 8 * 4 * ng  # bytes a stratum: batch 0, the two ahead, and five more
    rng = np.random.default_rng(4)
    words = rng.integers(0, 2**30, (F + 1) * region // 4, dtype=np.uint32)
    path = tmp_path / "strata.bin"
    with open(path, "wb") as f:
        f.write(words.tobytes())
        f.flush()
        os.fsync(f.fileno())
    size = (F + 1) * region
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if _resident(path, size).any():
            pytest.skip("this file system keeps the file's pages in memory (tmpfs?): nothing to read ahead")
        base = np.arange(1, F + 1, dtype=np.uint64) * np.uint64(region)  # none at the file's start, read as a stream
        pieces = (np.arange(F + 1, dtype=np.int64), np.full(F, ng, np.int64), base, np.full(F, fd, np.int32))
        perm = np.arange(255, dtype=np.int16)[None, :]
        w = np.zeros((ng, 255), np.uint32)
        pad = np.zeros((ng, 255), np.uint32)
        assert _native_strata.gather(w, 0, perm, F, pieces, pad, 0xFFFFFFFF) == -1  # type: ignore[arg-type]
        assert np.array_equal(w[:, :F], words.reshape(F + 1, -1)[1:, :ng].T)  # the words themselves, read
        ahead, past = np.zeros(size // page, bool), np.zeros(size // page, bool)
        for j in range(1, F + 1):
            ahead[(j * region + 4 * ng) // page : (j * region + 12 * ng) // page] = True  # batches 1 and 2
            past[(j * region + 16 * ng) // page : (j + 1) * region // page] = True  # from batch 4 on
        deadline = time.monotonic() + 20  # the reads it asked for finish in their own time
        while not (got := _resident(path, size))[ahead].all() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got[ahead].all(), f"{int((~got[ahead]).sum())} of {int(ahead.sum())} pages ahead not read"
        assert not got[past].any(), f"{int(got[past].sum())} pages read beyond the two batches ahead"
    finally:
        os.close(fd)
