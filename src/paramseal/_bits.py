"""Split each value into high bits (the data to protect) and low bits (where the watermark lives).

Tensors are handled as ``[nblocks, 64]`` arrays of unsigned integers of the
value's width, padded with zeros. Fields are packed little-endian, least
significant bit first, so the layout is the same on every machine.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from . import _kernels as _k
from .levels import BLOCK

U8 = NDArray[np.uint8]
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def uint_view(a: NDArray[np.generic]) -> NDArray[np.unsignedinteger]:
    """View any array's flat buffer as unsigned integers of the same width (no copy if contiguous)."""
    flat = np.ascontiguousarray(a).reshape(-1)
    if flat.dtype == np.bool_:
        return flat.view(np.uint8)
    return flat.view(_UINT[flat.dtype.itemsize])


def to_blocks(flat: NDArray[np.unsignedinteger], *, copy: bool = True) -> NDArray[np.unsignedinteger]:
    """Return ``flat`` as ``[nblocks, 64]``, zero-padded (a view if ``copy`` is False and no padding is needed)."""
    nb = max(1, -(-flat.size // BLOCK))
    if not copy and flat.size == nb * BLOCK:
        return flat.reshape(nb, BLOCK)
    out = np.zeros((nb, BLOCK), dtype=flat.dtype)
    out.reshape(-1)[: flat.size] = flat
    return out


def value_bits(u: NDArray[np.unsignedinteger]) -> U8:
    """Bits of each value, LSB first: shape ``[..., width]``."""
    w = u.dtype.itemsize * 8
    b = np.unpackbits(np.ascontiguousarray(u).view(np.uint8), bitorder="little")
    return b.reshape(*u.shape, w)


def _from_bits(bits: U8, width: int) -> NDArray[np.unsignedinteger]:
    """Inverse of ``value_bits`` for the first ``bits.shape[-1]`` bits, into ``width``-bit ints."""
    pad = width - bits.shape[-1]
    if pad:
        bits = np.concatenate([bits, np.zeros((*bits.shape[:-1], pad), np.uint8)], axis=-1)
    packed = np.packbits(bits, axis=-1, bitorder="little")
    return packed.view(_UINT[width // 8]).reshape(bits.shape[:-1])


def _kernel_pays(kernel: bool, nb: int, k: int) -> bool:
    """Whether to pack with a kernel (compiled, else numba): not for whole bytes (a strided copy), nor a few blocks.

    Loading a first numba kernel costs about 0.2 s; the seal's reserved blocks are a handful.
    """
    return kernel and k % 8 != 0 and nb >= _KERNEL_BLOCKS


_KERNEL_BLOCKS = 512  # fewer blocks are packed in numpy (a few milliseconds at most)


def hi_bytes(ub: NDArray[np.unsignedinteger], k: int, *, kernel: bool = True) -> U8:
    """Pack the high ``w - k`` bits of every value: ``[nblocks, 8 * (w - k)]`` bytes."""
    nb, n = ub.shape
    size = ub.dtype.itemsize
    if _kernel_pays(kernel, nb, k) and (fast := _k.pack_fields(ub, k, size * 8 - k)) is not None:
        return fast
    if k % 8 == 0:  # byte-aligned: a strided copy is enough
        return np.ascontiguousarray(ub.view(np.uint8).reshape(nb, n, size)[:, :, k // 8 :]).reshape(nb, -1)
    bits = value_bits(ub)[:, :, k:]
    return np.packbits(bits.reshape(nb, -1), axis=1, bitorder="little")


def set_hi(ub: NDArray[np.unsignedinteger], data: U8, k: int, *, kernel: bool = True) -> None:
    """Write packed high bits ``data`` (from ``hi_bytes``) into ``ub`` in place, keeping low bits."""
    nb, n = ub.shape
    size = ub.dtype.itemsize
    if _kernel_pays(kernel, nb, k) and _k.unpack_fields(data, ub, k, size * 8 - k):
        return
    if k % 8 == 0:
        ub.view(np.uint8).reshape(nb, n, size)[:, :, k // 8 :] = data.reshape(nb, n, size - k // 8)
        return
    w = size * 8
    bits = np.unpackbits(data, axis=1, bitorder="little").reshape(nb, n, w - k)
    hi = _from_bits(bits, w).astype(ub.dtype)
    ub &= ub.dtype.type((1 << k) - 1)
    ub |= hi << ub.dtype.type(k)


def lo_bytes(ub: NDArray[np.unsignedinteger], k: int, *, kernel: bool = True) -> U8:
    """Pack the low ``k`` bits of every value: ``[nblocks, 8 * k]`` bytes."""
    nb, n = ub.shape
    if _kernel_pays(kernel, nb, k) and (fast := _k.pack_fields(ub, 0, k)) is not None:
        return fast
    if k % 8 == 0:
        size = ub.dtype.itemsize
        return np.ascontiguousarray(ub.view(np.uint8).reshape(nb, n, size)[:, :, : k // 8]).reshape(nb, -1)
    bits = value_bits(ub)[:, :, :k]
    return np.packbits(bits.reshape(nb, -1), axis=1, bitorder="little")


def set_lo(ub: NDArray[np.unsignedinteger], lo: U8, k: int, *, kernel: bool = True) -> None:
    """Replace the low ``k`` bits of every value in ``ub`` with ``lo`` (from ``lo_bytes``)."""
    nb, n = ub.shape
    if _kernel_pays(kernel, nb, k) and _k.unpack_fields(lo, ub, 0, k):
        return
    w = ub.dtype.itemsize * 8
    if k % 8 == 0:
        ub.view(np.uint8).reshape(nb, n, w // 8)[:, :, : k // 8] = lo.reshape(nb, n, k // 8)
        return
    bits = np.unpackbits(lo, axis=1, bitorder="little").reshape(nb, n, k)
    low = _from_bits(bits, max(8, 1 << (k - 1).bit_length())).astype(ub.dtype)
    ub &= ~ub.dtype.type((1 << k) - 1)
    ub |= low


def tag_mask(k: int, width: int) -> NDArray[np.unsignedinteger]:
    """Per-position masks (length 64) of the low bits that hold the 32-bit tag."""
    m = np.zeros(BLOCK, dtype=_UINT[width // 8])
    for j in range(BLOCK):
        lo, hi = j * k, min((j + 1) * k, 32)
        if lo >= 32:
            break
        m[j] = (1 << (hi - lo)) - 1
    return m


def read_tags(ub: NDArray[np.unsignedinteger], k: int) -> NDArray[np.uint64]:
    """Read the 32-bit tag stored in the first low bits of each block."""
    wm, shift = tag_words(tag_mask(k, ub.dtype.itemsize * 8), ub.dtype.itemsize // 2, k)
    words = np.ascontiguousarray(ub).view(np.uint16).reshape(ub.shape[0], -1)
    return _k.read_tag_words(words, wm, shift)


def tag_words(mask: NDArray[np.unsignedinteger], per: int, k: int) -> tuple[NDArray[np.uint16], NDArray[np.uint64]]:
    """The tag mask per 16-bit word (``per`` to a value) up to the last that holds tag bits, and each one's shift."""
    wm = mask.view(np.uint16)
    nw = int(np.flatnonzero(wm).max()) + 1
    # word i belongs to value i // per; its masked bits start at tag bit k * value + 16 * (i % per)
    i = np.arange(nw)
    shift = (k * (i // per) + 16 * (i % per)).astype(np.uint64)
    shift[wm[:nw] == 0] = 0  # no tag bits there; the shift could pass 63 (undefined in C)
    return wm[:nw].copy(), shift


def write_tags(ub: NDArray[np.unsignedinteger], tags: NDArray[np.uint64], k: int) -> None:
    """Write 32-bit ``tags`` into the first low bits of each block, in place."""
    mask = tag_mask(k, ub.dtype.itemsize * 8)
    if ub.flags.c_contiguous and ub.flags.writeable and ub.ndim == 2:  # the compiled kernel, where it is built
        from . import _native_blocks

        wm, shift = tag_words(mask, ub.dtype.itemsize // 2, k)
        if _native_blocks.write_tag(ub.view(np.uint16).reshape(ub.shape[0], -1), wm, shift, tags):
            return
    for j in np.flatnonzero(mask):
        part = ((tags >> np.uint64(j * k)) & np.uint64(int(mask[j]))).astype(ub.dtype)
        ub[:, j] = (ub[:, j] & ~mask[j]) | part


__all__ = [
    "hi_bytes",
    "lo_bytes",
    "read_tags",
    "set_hi",
    "set_lo",
    "tag_mask",
    "tag_words",
    "to_blocks",
    "uint_view",
    "write_tags",
]
