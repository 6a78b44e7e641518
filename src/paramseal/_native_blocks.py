"""The compiled block kernels: `_kernels`' numba kernels in C, the tag write and a row sort.

The block MAC's hash, the tag read and write, bit fields, the coder's split layout, and stripes
and blocks to and from the lane store. Separate from `_native`, which loads the library and
holds the seal and recover path's coding and strata kernels. Each function here returns False
or None where the library is missing (`_native`'s ``PARAMSEAL_NATIVE``) or the call does not
apply, and the caller uses its numba or numpy reference.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from . import _native
from ._kernels import _PARALLEL_ROWS
from ._parallel import halves, parallel_map


def mlh(
    words: NDArray[np.uint16],
    keys: NDArray[np.uint64],
    wmask: NDArray[np.uint16],
    internal: NDArray[np.bool_],
    pads: NDArray[np.uint64],
    out: NDArray[np.uint64],
    keys2: NDArray[np.uint64] | None = None,
) -> bool:
    """`_kernels.mlh_tags` compiled (``ps_mlh``), into ``out``; False without the library."""
    lib = _native._lib()
    if lib is None:
        return False
    nb, nw = words.shape
    assert words.dtype == np.uint16 and words.flags.c_contiguous and keys.size >= nw and nw <= 256
    k = np.ascontiguousarray(keys, np.uint64)
    k2 = None if keys2 is None else np.ascontiguousarray(keys2, np.uint64)
    m = np.ascontiguousarray(wmask, np.uint16)
    f = np.ascontiguousarray(internal, np.bool_)
    pd = np.ascontiguousarray(pads, np.uint64)
    pc = pd.shape[1] if pd.ndim == 2 else 0
    assert f.size == nb and pd.shape[0] == nb and pc >= (2 if k2 is None else 3)
    assert out.size == nb and out.flags.c_contiguous and m.size <= nw and (k2 is None or k2.size >= nw)
    a = (words.ctypes.data, k.ctypes.data, m.ctypes.data, f.ctypes.data, pd.ctypes.data, out.ctypes.data)
    a2 = None if k2 is None else k2.ctypes.data
    simd = int(_native.SIMD)  # IFMA where the CPU has it (tests set False: plain C)
    parallel_map(
        lambda r: lib.ps_mlh(a[0], r[0], r[1], nw, a[1], a2, a[2], m.size, a[3], a[4], pc, a[5], simd),
        halves(nb) if nb >= _PARALLEL_ROWS else [(0, nb)],
    )
    return True


def read_tag(
    words: NDArray[np.uint16], wmask: NDArray[np.uint16], wshift: NDArray[np.uint64]
) -> NDArray[np.uint64] | None:
    """`_kernels.read_tag_words` compiled, or None without the library."""
    lib = _native._lib()
    if lib is None:
        return None
    nb, nw = words.shape
    assert words.dtype == np.uint16 and words.flags.c_contiguous
    m = np.ascontiguousarray(wmask, np.uint16)
    sh = np.ascontiguousarray(wshift, np.uint64)
    assert m.size == sh.size <= nw
    out = np.empty(nb, np.uint64)
    lib.ps_read_tag(words.ctypes.data, 0, nb, nw, m.ctypes.data, sh.ctypes.data, m.size, out.ctypes.data)
    return out


def write_tag(
    words: NDArray[np.uint16], wmask: NDArray[np.uint16], wshift: NDArray[np.uint64], tags: NDArray[np.uint64]
) -> bool:
    """`_bits.write_tags` compiled, in place into ``words`` (``[blocks, words]``); False without the library."""
    lib = _native._lib()
    if lib is None:
        return False
    nb, nw = words.shape
    assert words.dtype == np.uint16 and words.flags.c_contiguous and words.flags.writeable
    m = np.ascontiguousarray(wmask, np.uint16)
    sh = np.ascontiguousarray(wshift, np.uint64)
    tg = np.ascontiguousarray(tags, np.uint64)
    assert m.size == sh.size <= nw and tg.size == nb
    lib.ps_write_tag(words.ctypes.data, 0, nb, nw, m.ctypes.data, sh.ctypes.data, m.size, tg.ctypes.data)
    return True


def tag_runs(
    buf: NDArray[np.uint32],
    runs: NDArray[np.int64],
    pad_key: bytes,
    keys: NDArray[np.uint64],
    keys2: NDArray[np.uint64],
    wmask: NDArray[np.uint16],
    wshift: NDArray[np.uint64],
) -> bool:
    """Tag the fp32 blocks ``runs`` (``[n, 4]``) where they lie in ``buf``, in place: see ``ps_tag_runs``.

    False, ``buf`` untouched, without the library or where the CPU lacks VAES.
    """
    lib = _native._lib()
    if lib is None:
        return False
    m = np.ascontiguousarray(wmask, np.uint16)
    sh = np.ascontiguousarray(wshift, np.uint64)
    r = np.ascontiguousarray(runs, np.int64)
    assert buf.dtype == np.uint32 and buf.flags.c_contiguous and buf.flags.writeable and len(pad_key) == 32
    assert r.ndim == 2 and r.shape[1] == 4 and m.size == sh.size <= 32 and keys.size >= 128 and keys2.size >= 128
    ends = r[:, 0] + 64 * r[:, 3]
    assert not r.size or (int(r[:, 0].min()) >= 0 and int(ends.max()) <= buf.size and int(r[:, 3].min()) >= 0)
    k, k2 = np.ascontiguousarray(keys, np.uint64), np.ascontiguousarray(keys2, np.uint64)
    a = (buf.ctypes.data, r.ctypes.data, r.shape[0], pad_key, k.ctypes.data, k2.ctypes.data, m.ctypes.data)
    return bool(lib.ps_tag_runs(*a, sh.ctypes.data, m.size) == 0)


def set_vector(on: bool) -> bool:
    """Let the bit movers use their AVX-512 paths (where the CPU has them) or not; whether they now do.

    The tests compare the two; nothing else turns them off.
    """
    lib = _native._lib()
    return lib is not None and bool(lib.ps_set_vector(int(on)))


def _strides(a: NDArray[np.generic]) -> tuple[int, ...] | None:
    """Strides in elements, or None where one is not a whole number of them."""
    size = a.dtype.itemsize
    return None if any(st % size for st in a.strides) else tuple(st // size for st in a.strides)


def _native_uint(u: NDArray[np.generic]) -> bool:
    """Whether ``u`` holds unsigned words of 2, 4 or 8 bytes in this machine's order, as the C code reads them."""
    return u.dtype.kind == "u" and u.dtype.isnative and u.dtype.itemsize in (2, 4, 8)


def pack(u: NDArray[np.unsignedinteger], shift: int, width: int) -> NDArray[np.uint8] | None:
    """`_kernels.pack_fields` compiled (``ps_pack``), or None where it does not apply."""
    lib = _native._lib()
    st = _strides(u)
    if lib is None or st is None or u.ndim != 2 or st[1] != 1 or not _native_uint(u):
        return None
    nb, n = u.shape
    assert 0 < width <= 56 and width * n % 8 == 0
    out = np.empty((nb, width * n // 8), np.uint8)
    size, ld = u.dtype.itemsize, st[0]
    parallel_map(
        lambda r: lib.ps_pack(u.ctypes.data, size, ld, r[0], r[1], n, shift, width, out.ctypes.data),
        _native._rows(nb, _PARALLEL_ROWS),
    )
    return out


def find_packed(u: NDArray[np.unsignedinteger], k: int, skip: int, pat: bytes, start: int) -> int | None:
    """``ps_find_packed``: where ``pat`` first lies at or past ``start`` in the blocks' storage, -1: nowhere.

    The storage is each row's low ``k`` bits packed as by `pack` less its first ``skip`` bytes (the tag), the
    rows end to end. None where the library is missing or ``u`` is not ``[nb, 64]`` contiguous words.
    """
    lib = _native._lib()
    if lib is None or u.ndim != 2 or u.shape[1] != 64 or not u.flags.c_contiguous or not _native_uint(u):
        return None
    if not (0 < k <= min(56, 8 * u.dtype.itemsize) and 0 <= skip and pat):
        raise ValueError(f"cannot search {k} low bits of {u.dtype}, skipping {skip} bytes, for {len(pat)} bytes")
    at = int(lib.ps_find_packed(u.ctypes.data, u.dtype.itemsize, u.shape[0], k, skip, pat, len(pat), start))
    if at == -2:
        raise MemoryError("no memory for the search's buffers")
    assert at >= -1, "ps_find_packed refused arguments checked here"
    return at


def unpack(data: NDArray[np.uint8], u: NDArray[np.unsignedinteger], shift: int, width: int) -> bool:
    """`_kernels.unpack_fields` compiled (``ps_unpack``), in place; False where it does not apply."""
    lib = _native._lib()
    st = _strides(u)
    if lib is None or st is None or u.ndim != 2 or st[1] != 1 or not _native_uint(u):
        return False
    nb, n = u.shape
    assert 0 < width <= 56 and width * n % 8 == 0 and u.flags.writeable
    d = np.ascontiguousarray(data, np.uint8)
    assert d.shape == (nb, width * n // 8)
    size, ld = u.dtype.itemsize, st[0]
    parallel_map(
        lambda r: lib.ps_unpack(d.ctypes.data, r[0], r[1], n, shift, width, u.ctypes.data, size, ld),
        _native._rows(nb, _PARALLEL_ROWS),
    )
    return True


def split(a: NDArray[np.uint32]) -> NDArray[np.uint8] | None:
    """`_kernels.to_split` compiled (``ps_split``, any strides), or None without the library."""
    lib = _native._lib()
    st = _strides(a)
    if lib is None or st is None or a.dtype != np.uint32 or a.ndim != 2:
        return None
    n, lanes = a.shape
    out = np.empty((n, 64 * -(-2 * lanes // 32)), dtype=np.uint8)  # every byte is written, padding as zeros
    parallel_map(
        lambda r: lib.ps_split(a.ctypes.data, st[0], st[1], r[0], r[1], lanes, out.ctypes.data, out.shape[1]),
        _native._rows(n, _PARALLEL_ROWS),
    )
    return out


def stripes(store: NDArray[np.uint32], off: int, perm: NDArray[np.int64], x: NDArray[np.uint32], out: bool) -> bool:
    """`_kernels.scatter_stripes` compiled (``out``: `gather_stripes`, into ``x``); False where it does not apply."""
    lib = _native._lib()
    st, xs = _strides(store), _strides(x)
    if lib is None or st is None or xs is None or store.dtype != np.uint32 or x.dtype != np.uint32:
        return False
    ns, g, d = x.shape
    pm = np.ascontiguousarray(perm, np.int64)
    assert pm.shape == (ns, g) and (out or store.flags.writeable) and (not out or x.flags.writeable)
    a = (store.ctypes.data, pm.ctypes.data, x.ctypes.data)
    # stripes write disjoint rows of the store: they split over the cores
    parallel_map(
        lambda r: lib.ps_stripes(a[0], st[0], st[1], off, d, a[1], g, r[0], r[1], a[2], *xs, out),
        _native._rows(ns, 2) if ns * g >= _PARALLEL_ROWS else [(0, ns)],
    )
    return True


def blocks(
    store: NDArray[np.uint32],
    offs: NDArray[np.int64],
    lanes: NDArray[np.int64],
    counts: NDArray[np.int64],
    x: NDArray[np.uint32],
    out: bool,
) -> bool:
    """`_kernels.scatter_blocks` compiled (``out``: `gather_blocks`, into ``x``); False where it does not apply."""
    lib = _native._lib()
    st, xs = _strides(store), _strides(x)
    if lib is None or st is None or xs is None or store.dtype != np.uint32 or x.dtype != np.uint32:
        return False
    nb, w = x.shape
    o, ln, c = (np.ascontiguousarray(v, np.int64) for v in (offs, lanes, counts))
    assert o.size == ln.size == c.size == nb and int(c.max(initial=0)) <= w
    assert (out or store.flags.writeable) and (not out or x.flags.writeable)
    # one thread: blocks may share a store cell, and the last one written must win, as in the reference
    lib.ps_blocks(store.ctypes.data, *st, o.ctypes.data, ln.ctypes.data, c.ctypes.data, 0, nb, x.ctypes.data, *xs, out)
    return True


def max_masked(u: NDArray[np.unsignedinteger], mask: int) -> int | None:
    """``int((u & mask).max())`` of 16-bit values in one pass (``ps_max_masked16``), or None where it does not apply."""
    lib = _native._lib()
    if lib is None or u.dtype != np.uint16 or not u.flags.c_contiguous or not u.size:
        return None
    return int(lib.ps_max_masked16(u.ctypes.data, u.size, mask))


def argsort_rows(keys: NDArray[np.uint64]) -> NDArray[np.int64] | None:
    """``np.argsort(keys, axis=1, kind="stable")`` compiled (``ps_argsort_rows``), or None without the library."""
    lib = _native._lib()
    if lib is None or keys.ndim != 2 or keys.dtype.kind not in "bu":  # signed or float keys change order as uint64
        return None
    k = np.ascontiguousarray(keys, np.uint64)
    n, g = k.shape
    out = np.empty((n, g), np.int64)
    rcs = parallel_map(
        lambda r: lib.ps_argsort_rows(k.ctypes.data, r[0], r[1], g, out.ctypes.data),
        _native._rows(n, 2) if n * g >= 1 << 15 else [(0, n)],
    )
    return out if not any(rcs) else None


__all__ = [
    "argsort_rows",
    "blocks",
    "find_packed",
    "max_masked",
    "mlh",
    "pack",
    "read_tag",
    "set_vector",
    "split",
    "stripes",
    "unpack",
    "write_tag",
]
