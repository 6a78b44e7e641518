"""The seal's strata movers and the keyed offset's keystream, compiled, via ctypes.

``ps_gather``, ``ps_to_strata`` and ``ps_put_strata`` move the words; ``ps_aes256_ctr`` makes the
offset (`StrataMap.pad`) that the first two XOR in. `_strata.Strata.seal_words` gathers each
superblock's words from the model into groups and `Strata.scatter` puts the sealed words back,
through ``[F, ng]`` staging arrays whose rows `row_stride` keeps off one cache set. Callers of the
movers check `_native.portable` first.
"""

from __future__ import annotations

import errno
import os

import numpy as np
from numpy.typing import NDArray

from . import _irs_consts, _native
from ._parallel import halves, parallel_map
from .errors import InputError


def gather(
    w: NDArray[np.uint32],
    g0: int,
    perm: NDArray[np.int16],
    F: int,
    pieces: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint64], NDArray[np.int32]],
    pad: NDArray[np.uint32] | bytes,
    keep: int,
    stage: NDArray[np.uint32] | None = None,
    content: NDArray[np.uint8] | None = None,
) -> int:
    """Fill the float positions of ``w`` (``[ng, 255]``, groups ``g0...``) from ``pieces``: see ``ps_gather``.

    Pieces in a mapped file are read with ``pread`` (into a staging array of ``F`` rows of ``ng`` words
    or more, `row_stride`: ``stage`` if given, else a new one). ``pad``: the keyed offset's words
    (``w``'s shape), or its key where `makes_pad` (the kernel makes the words as it goes).
    ``content``: ``[ng, shard]`` bytes that get each row's outer-code content as it is gathered
    (`_outer.Outer.content` at the free bits ``keep`` clears); only where ``F`` is 255.

    ``perm``: ``[nperm, 255]`` stratum at each position. Returns -1, or ``r * 255 + p`` of a
    NaN/Inf word. The caller keeps the arrays the piece addresses point into alive.
    """
    lib = _native._lib()
    assert lib is not None
    pstart, row_end, base, fd = pieces
    ng = w.shape[0]
    reads = bool((fd >= 0).any())
    if not reads:
        stage = np.empty((1, 1), np.uint32)
    elif stage is None:
        stage = np.empty((F, row_stride(ng)), np.uint32)
    assert stage.dtype == np.uint32 and stage.flags.c_contiguous and stage.ndim == 2
    # pread fills rows of ng words, stage.shape[1] apart: a short buffer would overrun
    assert not reads or (stage.shape[0] >= F and stage.shape[1] >= ng)
    for a in (w, perm, pstart, row_end, base, fd):
        assert a.flags.c_contiguous
    assert w.shape[1] == _irs_consts.N_POS and pstart.size == F + 1
    if content is not None:
        assert F == _irs_consts.N_POS and content.dtype == np.uint8 and content.flags.c_contiguous
        assert content.ndim == 2 and content.shape[0] == ng
    out, shard = (None, 0) if content is None else (content.ctypes.data, content.shape[1])
    if isinstance(pad, bytes):
        assert len(pad) == 32 and makes_pad()
        at, key = None, pad
    else:
        assert pad.shape == w.shape and pad.flags.c_contiguous
        at, key = pad.ctypes.data, None

    def run(r: tuple[int, int]) -> int:
        return int(
            lib.ps_gather(
                w.ctypes.data, r[0], r[1], g0, perm.ctypes.data, perm.shape[0], F, pstart.ctypes.data,
                row_end.ctypes.data, base.ctypes.data, fd.ctypes.data, stage.ctypes.data, stage.shape[1],
                at, key, keep, 1, int(_native.SIMD), out, shard,
            )
        )  # fmt: skip

    got = parallel_map(run, _native._rows(ng))
    if -3 in got:
        raise InputError(
            "reading the model file failed while sealing (an I/O error, or the file was cut short meanwhile)"
        )
    if -2 in got:  # w was left unfilled: never to be taken for "no NaN"
        raise RuntimeError(
            f"compiled seal gather refused {F} float strata, its offset, or the content it was asked for "
            f"(F = 255, a mask of the low free bits, a row of the content's bytes)"
        )
    hits = [h for h in got if h >= 0]
    return min(hits) if hits else -1


def to_strata(
    w: NDArray[np.uint32],
    pad: NDArray[np.uint32],
    g0: int,
    perm: NDArray[np.int16],
    F: int,
    out: NDArray[np.uint32] | None = None,
) -> NDArray[np.uint32]:
    """``[F, ng]``: the float strata of groups ``g0...`` from ``w`` XOR ``pad`` (see ``ps_to_strata``).

    A view of the first ``ng`` words of each row of ``out`` (``[F, >= ng]``) if given, else of a new
    array whose rows are `row_stride` apart.
    """
    lib = _native._lib()
    assert lib is not None
    assert w.flags.c_contiguous and pad.flags.c_contiguous and perm.flags.c_contiguous and w.shape == pad.shape
    ng = w.shape[0]
    out = np.empty((F, row_stride(ng)), np.uint32) if out is None else out
    assert (
        out.ndim == 2 and out.shape[0] == F and out.shape[1] >= ng and out.dtype == np.uint32 and out.flags.c_contiguous
    )
    ld = out.shape[1]
    a = (w.ctypes.data, pad.ctypes.data, perm.ctypes.data, perm.shape[0], F, out.ctypes.data, ld, int(_native.SIMD))
    rcs = parallel_map(lambda r: lib.ps_to_strata(a[0], a[1], r[0], r[1], g0, *a[2:]), _native._rows(ng))
    if any(rcs):
        raise MemoryError("the compiled strata transpose could not allocate its table")
    return out[:, :ng]


def makes_pad() -> bool:
    """Whether `gather` and `_native.encode_placed` make the keyed offset from its key (VAES), no array needed."""
    lib = _native._lib()
    return lib is not None and bool(lib.ps_vaes())


def aes256_ctr(key: bytes, ctr: int, out: NDArray[np.uint8]) -> bool:
    """Fill ``out`` (whole 16-byte blocks) with AES-256-CTR keystream from counter ``ctr``, as OpenSSL makes it.

    The keyed offset's keystream (`StrataMap.pad`) by ``ps_aes256_ctr`` (VAES); False where the library
    or the CPU's VAES is missing, ``out`` untouched: the caller asks OpenSSL.
    """
    lib = _native._lib()
    nblocks = out.size // 16
    assert out.dtype == np.uint8 and out.flags.c_contiguous and out.size % 16 == 0
    if lib is None or len(key) != 32 or not 0 <= ctr < (1 << 64) - nblocks:  # the counter's high half stays 0
        return False
    return bool(lib.ps_aes256_ctr(key, ctr, nblocks, out.ctypes.data) == 0)


def row_stride(ng: int) -> int:
    """Words per row of a ``[F, ng]`` staging array: ``ng`` or more, 4 KiB + 64 bytes apart modulo 4 KiB.

    ``ps_to_strata``'s plain C walks the F rows at one column, then the next: rows a multiple of 4 KiB
    apart share one L1 set and evict each other's lines (it ran 3.8x as long at ng = 16384). Its
    AVX-512 path, which stores 16 words of a row at a time, and the gather measured the same either way.
    """
    return ng + (16 - ng) % 1024


def put_strata(
    wt: NDArray[np.uint32],
    pieces: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint64], NDArray[np.int32]],
) -> None:
    """Write the float strata ``wt`` (``[F, ng]``, rows any whole number of words apart) where ``pieces`` say.

    See ``ps_put_strata``. The caller keeps the arrays the piece addresses point into alive.
    """
    _move_strata(wt, pieces, write=True)


def get_strata(
    wt: NDArray[np.uint32],
    pieces: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint64], NDArray[np.int32]],
) -> None:
    """Read into ``wt`` what `put_strata` would write from it (``ps_get_strata``); padding is left as it is."""
    _move_strata(wt, pieces, write=False)


def move_parts(
    flat: NDArray[np.uint32], src: NDArray[np.int64], row: NDArray[np.int64], slot: NDArray[np.int64],
    n: NDArray[np.int64], rows: NDArray[np.uint32], *, to_rows: bool,
) -> None:  # fmt: skip
    """``flat[src[p] : src[p] + n[p]]`` into ``rows[row[p], slot[p] : slot[p] + n[p]]`` (or back) for each part p.

    ``ps_move_parts``: a memcpy a part, not numpy's masked gathers over ``[parts, 64]`` (slower: docs/performance.md).
    """
    lib = _native._lib()
    assert lib is not None
    ints = [np.ascontiguousarray(a, np.int64) for a in (src, row, slot, n)]
    m = ints[0].size
    assert flat.dtype == rows.dtype == np.uint32 and flat.flags.c_contiguous and rows.flags.c_contiguous
    assert rows.ndim == 2 and rows.shape[1] == 64 and all(a.size == m for a in ints)
    if not m:
        return
    src, row, slot, n = ints
    assert min(src.min(), row.min(), slot.min(), n.min()) >= 0 and (slot + n).max() <= 64
    assert (src + n).max() <= flat.size and row.max() < rows.shape[0]
    assert flat.flags.writeable if not to_rows else rows.flags.writeable
    lib.ps_move_parts(flat.ctypes.data, *(a.ctypes.data for a in ints), m, rows.ctypes.data, int(to_rows))


def _move_strata(
    wt: NDArray[np.uint32],
    pieces: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint64], NDArray[np.int32]],
    *,
    write: bool,
) -> None:
    lib = _native._lib()
    assert lib is not None
    fn = lib.ps_put_strata if write else lib.ps_get_strata
    pstart, row_end, base, fd = pieces
    for a in (pstart, row_end, base, fd):
        assert a.flags.c_contiguous
    F, ng = wt.shape
    assert wt.dtype == np.uint32 and wt.strides[1] == 4 and wt.strides[0] % 4 == 0 and wt.strides[0] >= 4 * ng
    assert write or wt.flags.writeable
    ld = wt.strides[0] // 4  # rows may be `row_stride` apart (a view of `to_strata`'s array)
    assert pstart.size == F + 1
    args = (pstart.ctypes.data, row_end.ctypes.data, base.ctypes.data, fd.ctypes.data)
    got = parallel_map(
        lambda r: int(fn(wt.ctypes.data, ld, r[0], r[1], *args)),
        halves(F) if ng * F >= 1 << 16 else [(0, F)],
    )
    if -100000 in got:
        raise OSError(errno.EIO, "the file took no more bytes" if write else "the file ended before its tensors did")
    for e in got:
        if e < 0:
            raise OSError(-e, os.strerror(-e))


__all__ = ["aes256_ctr", "gather", "get_strata", "makes_pad", "move_parts", "put_strata", "row_stride", "to_strata"]
