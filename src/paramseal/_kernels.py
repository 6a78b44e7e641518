"""Compiled kernels (numba) for the hot paths, with the numpy versions as fallback and test oracle.

The multilinear hash accumulates k_i * m_i in uint64: k_i < 2**32 and
m_i < 2**16, so 256 terms stay below 2**56 and one reduction mod p per block
is exact.
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct
import types
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import _parallel
from ._jit import available, njit, prange

P = (1 << 32) - 5

HAVE_NUMBA = available()  # installed and not turned off; imported on the first kernel call (_jit)


def _mlh_nb_py(words, keys, keys2, wmask, internal, pads, out):  # type: ignore[no-untyped-def]
    nblocks, nw = words.shape
    nm = wmask.shape[0]
    two = keys2.shape[0] > 0  # the third MAC: a second sum, weighted by the block's x_b
    p = np.uint64(P)
    for b in prange(nblocks):
        acc = np.uint64(0)
        acc2 = np.uint64(0)
        if two:
            for i in range(nw):
                m = np.uint64(words[b, i])
                acc += keys[i] * m
                acc2 += keys2[i] * m
            if internal[b]:
                for i in range(nm):  # remove the tag bits' share (the hash is linear)
                    m = np.uint64(words[b, i] & wmask[i])
                    acc -= keys[i] * m
                    acc2 -= keys2[i] * m
            acc = (acc % p + (acc2 % p) * pads[b, 2] % p) % p
        else:
            for i in range(nw):
                acc += keys[i] * np.uint64(words[b, i])
            if internal[b]:
                for i in range(nm):
                    acc -= keys[i] * np.uint64(words[b, i] & wmask[i])
        out[b] = ((acc % p) * pads[b, 1] % p + pads[b, 0]) % p


@njit(cache=True, nogil=True)
def _read_tag_nb(words, wmask, wshift, out):  # type: ignore[no-untyped-def]
    for b in range(words.shape[0]):
        t = np.uint64(0)
        for i in range(wmask.shape[0]):
            t |= np.uint64(words[b, i] & wmask[i]) << np.uint64(wshift[i])
        out[b] = t


def _split_nb_py(a, out):  # type: ignore[no-untyped-def]
    # a: [n, lanes] uint32 -> out: [n, chunks*64] bytes; element e of chunk c at bytes e, e+32
    n, lanes = a.shape
    for i in prange(n):
        for g in range(lanes):
            v = a[i, g]
            for h in range(2):
                e = 2 * g + h
                c, j = e // 32, e % 32
                x = (v >> np.uint32(16 * h)) & np.uint32(0xFFFF)
                out[i, 64 * c + j] = np.uint8(x & np.uint32(0xFF))
                out[i, 64 * c + 32 + j] = np.uint8(x >> np.uint32(8))


def _pack_nb_py(u, shift, width, out):  # type: ignore[no-untyped-def]
    # u: [nblocks, 64] uint; out: [nblocks, 8 * width] uint8; LSB-first bit stream per block
    nblocks, n = u.shape
    mask = (np.uint64(1) << np.uint64(width)) - np.uint64(1)
    for b in prange(nblocks):
        acc = np.uint64(0)
        nbits = 0
        pos = 0
        for j in range(n):
            v = (np.uint64(u[b, j]) >> np.uint64(shift)) & mask
            acc |= v << np.uint64(nbits)
            nbits += width
            while nbits >= 8:
                out[b, pos] = np.uint8(acc & np.uint64(0xFF))
                acc >>= np.uint64(8)
                nbits -= 8
                pos += 1


def _unpack_nb_py(data, shift, width, u):  # type: ignore[no-untyped-def]
    # inverse of _pack_nb: replaces bits [shift, shift + width) of every value in u
    nblocks, n = u.shape
    mask = (np.uint64(1) << np.uint64(width)) - np.uint64(1)
    keep = ~(mask << np.uint64(shift))
    for b in prange(nblocks):
        acc = np.uint64(0)
        nbits = 0
        pos = 0
        for j in range(n):
            while nbits < width:
                acc |= np.uint64(data[b, pos]) << np.uint64(nbits)
                nbits += 8
                pos += 1
            v = acc & mask
            acc >>= np.uint64(width)
            nbits -= width
            u[b, j] = (np.uint64(u[b, j]) & keep) | (v << np.uint64(shift))


_TILE = 64  # lanes per tile: a tile's blocks (64 x d words) stay in L1 while its rows are written


# One kernel per direction: numba types every branch, so a kernel that could also write its
# source would not compile for a read-only one (a memory-mapped model's blocks, a mapped store).
@njit(cache=True, nogil=True)
def _stripes_in_nb(store, off, d, perm, x):  # type: ignore[no-untyped-def]
    # store[off + s*d + i, perm[s, j]] = x[s, j, i]: whole stripes into a [shards, lanes] store.
    # Tiled transpose: the store is walked along its rows, one tile of lanes' blocks in L1 meanwhile.
    ns, g = perm.shape
    inv = np.empty(g, dtype=np.int64)
    for s in range(ns):
        for j in range(g):
            inv[perm[s, j]] = j
        base = off + s * d
        for l0 in range(0, g, _TILE):
            l1 = min(g, l0 + _TILE)
            for i in range(d):
                row = store[base + i]
                for lane in range(l0, l1):
                    row[lane] = x[s, inv[lane], i]


@njit(cache=True, nogil=True)
def _stripes_out_nb(store, off, d, perm, x):  # type: ignore[no-untyped-def]
    # the inverse of _stripes_in_nb: x[s, j, i] = store[off + s*d + i, perm[s, j]]
    ns, g = perm.shape
    inv = np.empty(g, dtype=np.int64)
    for s in range(ns):
        for j in range(g):
            inv[perm[s, j]] = j
        base = off + s * d
        for l0 in range(0, g, _TILE):
            l1 = min(g, l0 + _TILE)
            for i in range(d):
                row = store[base + i]
                for lane in range(l0, l1):
                    x[s, inv[lane], i] = row[lane]


@njit(cache=True, nogil=True)
def _blocks_in_nb(store, offs, lanes, counts, x):  # type: ignore[no-untyped-def]
    # Blocks anywhere (partial stripes): store[offs[b] + i, lanes[b]] = x[b, i] for i < counts[b]
    for b in range(x.shape[0]):
        o, lane = offs[b], lanes[b]
        for i in range(counts[b]):
            store[o + i, lane] = x[b, i]


@njit(cache=True, nogil=True)
def _blocks_out_nb(store, offs, lanes, counts, x):  # type: ignore[no-untyped-def]
    # the inverse of _blocks_in_nb
    for b in range(x.shape[0]):
        o, lane = offs[b], lanes[b]
        for i in range(counts[b]):
            x[b, i] = store[o + i, lane]


@njit(cache=True, nogil=True)
def _scatter_lm_nb(out, off, d, perm, x):  # type: ignore[no-untyped-def]
    # the scatter for a lane-major store (a transposed view): each block's shards are contiguous there
    ns, g = perm.shape
    for s in range(ns):
        base = off + s * d
        for j in range(g):
            lane = perm[s, j]
            for i in range(d):
                out[base + i, lane] = x[s, j, i]


# The hash also exists threaded: threads pay off on big inputs, but starting them costs
# milliseconds on a busy machine, which would dominate small chunks. The bit packers are
# bound by memory, not by a core, so they run on one thread.
_PY: list[tuple[str, Any]] = [
    ("mlh", _mlh_nb_py),
    ("split", _split_nb_py),
    ("pack", _pack_nb_py),
    ("unpack", _unpack_nb_py),
]


def _named(f: Any, name: str) -> Any:
    # numba's cache keys a kernel by its function's name, signature and bytecode, not by
    # parallel=: the threaded build under the serial one's name would be loaded for both.
    g = types.FunctionType(f.__code__, f.__globals__, name, f.__defaults__, f.__closure__)
    g.__qualname__ = name
    return g


_PAR = {"mlh": njit(cache=True, parallel=True, nogil=True)(_named(_mlh_nb_py, "_mlh_par_py"))}
_SER = {n: njit(cache=True, nogil=True)(f) for n, f in _PY}


_PARALLEL_ROWS = 8192  # rows (blocks) from which the threaded kernels are used


def _kernel(name: str, rows: int) -> Any:
    # never the parallel one in a task_map task: numba's workqueue layer aborts on a second thread
    if rows >= _PARALLEL_ROWS and name in _PAR and not getattr(_parallel._IN_TASK, "task", False):
        return _PAR[name]
    return _SER[name]


def mlh_tags_numpy(
    words: NDArray[np.uint16],
    keys: NDArray[np.uint64],
    wmask: NDArray[np.uint16],
    internal: NDArray[np.bool_],
    pads: NDArray[np.uint64],
    keys2: NDArray[np.uint64] | None = None,
) -> NDArray[np.uint64]:
    """Reference implementation, chunked to bound temporaries."""
    nb, nw = words.shape
    out = np.empty(nb, dtype=np.uint64)
    p = np.uint64(P)
    step = 1 << 14
    for s in range(0, nb, step):  # chunks of 16k blocks, not one per block
        w = words[s : s + step].astype(np.uint64)
        if wmask.size:
            w[:, : wmask.size] &= np.where(internal[s : s + step, None], ~wmask.astype(np.uint64), ~np.uint64(0))
        acc = (w * keys[:nw]).sum(axis=1, dtype=np.uint64) % p
        pd = pads[s : s + step]
        if keys2 is not None:
            acc2 = (w * keys2[:nw]).sum(axis=1, dtype=np.uint64) % p
            acc = (acc + acc2 * pd[:, 2] % p) % p
        out[s : s + step] = (acc * pd[:, 1] % p + pd[:, 0]) % p
    return out


def mlh_tags(
    words: NDArray[np.uint16],
    keys: NDArray[np.uint64],
    wmask: NDArray[np.uint16],
    internal: NDArray[np.bool_],
    pads: NDArray[np.uint64],
    keys2: NDArray[np.uint64] | None = None,
) -> NDArray[np.uint64]:
    """Tags of every row of ``words``: (r * h + s) mod p, tag bits masked where internal.

    h = sum k_i m_i mod p, plus x * (sum k2_i m_i mod p) with ``keys2`` (the third MAC).
    ``pads``: ``[rows, 2]`` or ``[rows, 3]``, each row's (s, r[, x]), all below 2**32 (`_mac.BlockMac.pads`);
    x is read only with ``keys2``.

    The compiled library where it is built (no numba kernel to load: half of a verify's time);
    else numba, else numpy.
    """
    from . import _native_blocks  # imports this module

    out = np.empty(words.shape[0], dtype=np.uint64)
    if words.flags.c_contiguous and _native_blocks.mlh(words, keys, wmask, internal, pads, out, keys2):
        return out
    if not HAVE_NUMBA:
        return mlh_tags_numpy(words, keys, wmask, internal, pads, keys2)
    k2 = np.zeros(0, np.uint64) if keys2 is None else keys2[: words.shape[1]]
    kernel = _kernel("mlh", words.shape[0])
    if kernel is _PAR["mlh"]:
        with _parallel.PARALLEL_LOCK:
            kernel(words, keys[: words.shape[1]], k2, wmask, internal, pads, out)
    else:
        kernel(words, keys[: words.shape[1]], k2, wmask, internal, pads, out)
    return out


def to_split(a: NDArray[np.uint32]) -> NDArray[np.uint8] | None:
    """Compiled ``_code._to_split`` (the library's, else numba's); None without either."""
    from . import _native_blocks

    fast = _native_blocks.split(a)
    if fast is not None or not HAVE_NUMBA:
        return fast
    n, lanes = a.shape
    out = np.zeros((n, 64 * -(-2 * lanes // 32)), dtype=np.uint8)
    _kernel("split", n)(a, out)  # any strides: a copy would cost a pass over the lane store
    return out


def scatter_stripes(out: NDArray[np.uint32], off: int, perm: NDArray[np.int64], x: NDArray[np.uint32]) -> None:
    """``out[off + s*d + i, perm[s, j]] = x[s, j, i]`` for ``x`` ``[stripes, lanes, d]`` (any strides in ``out``)."""
    from . import _native_blocks

    ns, g, d = x.shape
    if _native_blocks.stripes(out, off, perm, x, out=False):
        return
    if HAVE_NUMBA:
        if out.strides[0] < out.strides[1]:
            _scatter_lm_nb(out, off, d, perm, x)
        else:
            _stripes_in_nb(out, off, d, perm, x)
        return
    view = out[off : off + ns * d].reshape(ns, d, g)
    view[np.arange(ns)[:, None], :, perm] = x


def gather_stripes(src: NDArray[np.uint32], off: int, perm: NDArray[np.int64], d: int) -> NDArray[np.uint32]:
    """Inverse of :func:`scatter_stripes`: ``[stripes, lanes, d]``."""
    from . import _native_blocks

    ns, g = perm.shape
    out = np.empty((ns, g, d), dtype=np.uint32)
    if _native_blocks.stripes(src, off, perm, out, out=True):
        return out
    if HAVE_NUMBA:
        _stripes_out_nb(src, off, d, perm, out)
        return out
    view = src[off : off + ns * d].reshape(ns, d, g)
    got: NDArray[np.uint32] = view[np.arange(ns)[:, None], :, perm]
    return got


def scatter_blocks(
    store: NDArray[np.uint32],
    offs: NDArray[np.int64],
    lanes: NDArray[np.int64],
    counts: NDArray[np.int64],
    x: NDArray[np.uint32],
) -> None:
    """``store[offs[b] + i, lanes[b]] = x[b, i]`` for ``i < counts[b]``: single blocks, any strides."""
    from . import _native_blocks

    if _native_blocks.blocks(store, offs, lanes, counts, x, out=False):
        return
    if HAVE_NUMBA:
        _blocks_in_nb(store, offs, lanes, counts, x)
        return
    rows = offs[:, None] + np.arange(x.shape[1])
    valid = np.arange(x.shape[1])[None, :] < counts[:, None]
    store[rows[valid], np.broadcast_to(lanes[:, None], rows.shape)[valid]] = x[valid]


def gather_blocks(
    store: NDArray[np.uint32], offs: NDArray[np.int64], lanes: NDArray[np.int64], counts: NDArray[np.int64], w: int
) -> NDArray[np.uint32]:
    """Inverse of :func:`scatter_blocks`: ``[blocks, w]``, zero past each block's count."""
    from . import _native_blocks

    out = np.zeros((offs.size, w), dtype=np.uint32)
    if _native_blocks.blocks(store, offs, lanes, counts, out, out=True):
        return out
    if HAVE_NUMBA:
        _blocks_out_nb(store, offs, lanes, counts, out)
        return out
    rows = offs[:, None] + np.arange(w)
    valid = np.arange(w)[None, :] < counts[:, None]
    out[valid] = store[np.where(valid, rows, 0), np.broadcast_to(lanes[:, None], rows.shape)][valid]
    return out


def read_tag_words(
    words: NDArray[np.uint16], wmask: NDArray[np.uint16], wshift: NDArray[np.uint64]
) -> NDArray[np.uint64]:
    """Assemble each block's stored tag from the masked low bits of its first words."""
    from . import _native_blocks

    fast = _native_blocks.read_tag(words, wmask, wshift) if words.flags.c_contiguous else None
    if fast is not None:
        return fast
    out = np.zeros(words.shape[0], dtype=np.uint64)
    if HAVE_NUMBA:
        _read_tag_nb(words, wmask, wshift, out)
        return out
    for i in range(wmask.size):  # at most 32 words, never per block
        out |= (words[:, i] & wmask[i]).astype(np.uint64) << wshift[i]
    return out


def pack_fields(u: NDArray[np.unsignedinteger], shift: int, width: int) -> NDArray[np.uint8] | None:
    """Bits ``[shift, shift+width)`` of every value, packed per block; None when no kernel applies."""
    from . import _native_blocks

    if width > 56 or width * u.shape[1] % 8:
        return None
    fast = _native_blocks.pack(u, shift, width)
    if fast is not None or not HAVE_NUMBA:
        return fast
    out = np.empty((u.shape[0], width * u.shape[1] // 8), dtype=np.uint8)
    _kernel("pack", u.shape[0])(u, shift, width, out)
    return out


def unpack_fields(data: NDArray[np.uint8], u: NDArray[np.unsignedinteger], shift: int, width: int) -> bool:
    """Write packed fields back into ``u`` in place; False when no kernel applies."""
    from . import _native_blocks

    if width > 56 or width * u.shape[1] % 8:
        return False
    if _native_blocks.unpack(data, u, shift, width):
        return True
    if not HAVE_NUMBA:
        return False
    _kernel("unpack", u.shape[0])(np.ascontiguousarray(data), shift, width, u)
    return True


def rows_as_bytes(rows: NDArray[np.uint8]) -> list[bytes]:
    """Each row of ``rows`` as one ``bytes`` (one C call, not one per row; leopard takes bytes only).

    Unpacked from the array's own buffer: a ``tobytes`` copy first cost a superblock's content in
    fresh pages each time.
    """
    raw = np.ascontiguousarray(rows)
    return list(_splitter(rows.shape[0], rows.shape[1]).unpack_from(raw.data))


@functools.lru_cache(maxsize=8)
def _splitter(n: int, width: int) -> struct.Struct:
    return struct.Struct(f"{width}s" * n)


_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads")


def _numpys_openblas(path: bytes) -> bool:
    """Whether a mapped path is numpy's OpenBLAS (its wheel's ``numpy.libs``, or scipy-openblas)."""
    p = path.lower()
    return path[:1] == b"/" and b"openblas" in p and (b"numpy" in p or b"scipy_openblas" in p)


def one_blas_thread() -> int:
    """Run numpy's OpenBLAS on one thread in this process; returns how many libraries were set.

    ParamSeal's kernels use no BLAS, but numpy's OpenBLAS threads spin while idle after any call:
    on a busy machine that made `paramseal demo` take 15 to 30 s instead of 0.5 s. The CLI calls
    this for its own process; a library user's threads are left alone, and so is another
    library's OpenBLAS (torch's, on ARM: the `eval` models train with it). Linux only (elsewhere 0).
    """
    try:
        with open("/proc/self/maps", "rb") as f:  # paths are bytes: a non-UTF-8 one must not stop the program
            libs = {os.fsdecode(ln.split()[-1]) for ln in f if _numpys_openblas(ln.split()[-1])}
    except OSError:
        return 0
    done = 0
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        fn = next((getattr(lib, n) for n in _BLAS_SETTERS if hasattr(lib, n)), None)
        if fn is not None:
            fn.argtypes, fn.restype = [ctypes.c_int], None
            fn(1)
            done += 1
    return done


__all__ = [
    "rows_as_bytes",
    "HAVE_NUMBA",
    "gather_stripes",
    "mlh_tags",
    "mlh_tags_numpy",
    "pack_fields",
    "gather_blocks",
    "read_tag_words",
    "scatter_blocks",
    "scatter_stripes",
    "to_split",
    "unpack_fields",
]
