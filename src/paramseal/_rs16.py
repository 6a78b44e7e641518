"""The outer code's parity compiled: reed-solomon-simd's GF(2^16) encoder (what ``rsl.encode`` runs) in C.

``rsl.encode`` (reed-solomon-leopard, a binding of the Rust crate reed-solomon-simd) holds the GIL
and copies every shard in and out as bytes. ``_native.c``'s ``ps_rs_encode`` computes the same
parity with GFNI and AVX-512 straight from the content array, without the GIL. This module
builds its tables: the field's log and exp tables in the Cantor basis, the FFT's skew factors and,
for each skew factor, the four 8x8 bit matrices of multiplying by it (the GFNI affine operands).
Where the library, the instructions or the shape (only the high-rate encoder is compiled) are
missing, `parity` returns None and the caller uses ``rsl.encode``. `parity_words` serves the lane
code: the same parity from its store's words, each 64 bytes put in the library's split layout as
the kernel loads them (and back as it stores them), so no split copy is made.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from typing import cast

import numpy as np
from numpy.typing import NDArray

from . import _irs_consts, _native

MODULUS = 65535  # the multiplicative order; also the log of zero
POLY = 0x1002D
CANTOR = (
    *(0x0001, 0xACCA, 0x3C0E, 0x163E, 0xC582, 0xED2E, 0x914C, 0x4012),
    *(0x6C98, 0x10D8, 0x6A72, 0xB900, 0xFDB8, 0xFB34, 0xFF38, 0x991E),
)  # the crate's basis: element bit i stands for CANTOR[i] of the polynomial basis


@functools.lru_cache(maxsize=1)
def exp_log() -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``(exp, log)``: the crate's tables, logs taken of elements written in the Cantor basis."""
    # the LFSR's states x^i mod POLY, 256 by a loop, then doubled: x^(n + i) = x^n x^i, the product by
    # x^n (GF(2)-linear) as two byte tables (a loop of 65535 steps took 10-13 ms)
    state = np.zeros(65536, np.int64)
    x = 1
    for i in range(256):
        state[i] = x
        x = _times_x(x)
    n = 256
    while n < MODULUS:
        basis = [int(state[n - 1])]  # x^n x^b for each input bit b, from x^(n - 1)
        for _ in range(16):
            basis.append(_times_x(basis[-1]))
        lo, hi = _irs_consts.xor_span(basis[1:9]), _irs_consts.xor_span(basis[9:])
        m = min(n, MODULUS - n)
        state[n : n + m] = lo[state[:m] & 0xFF] ^ hi[state[:m] >> 8]
        n += m
    lfsr = np.zeros(65536, np.int64)
    lfsr[state[:MODULUS]] = np.arange(MODULUS)
    lfsr[0] = MODULUS
    log = lfsr[_irs_consts.xor_span(CANTOR)]
    exp = np.zeros(65536, np.int64)
    exp[log] = np.arange(65536)
    exp[MODULUS] = exp[0]
    return exp, log


def _times_x(y: int) -> int:
    """``y`` times x, mod POLY (polynomial basis)."""
    return (y << 1) ^ (POLY if y & 0x8000 else 0)


def add_mod(a: NDArray[np.int64] | int, b: NDArray[np.int64] | int) -> NDArray[np.int64]:
    """Logs added modulo 65535 (the crate's ``add_mod``: 65535 stays 65535)."""
    s = np.asarray(a, np.int64) + b
    return np.asarray((s + (s >> 16)) & 0xFFFF, np.int64)


def mul(x: NDArray[np.int64] | int, log_m: NDArray[np.int64] | int) -> NDArray[np.int64]:
    """Elements ``x`` times the element of log ``log_m``."""
    exp, log = exp_log()
    x = np.asarray(x, np.int64)
    return np.where(x == 0, 0, exp[add_mod(log[x], log_m)])


@functools.lru_cache(maxsize=1)
def skew() -> NDArray[np.uint16]:
    """The FFT's skew factors (logs; 65535 for a zero factor), the crate's ``initialize_skew``."""
    _, log = exp_log()
    temp = [1 << i for i in range(1, 16)]
    sk = np.zeros(MODULUS, np.int64)
    for m in range(15):
        sk[(1 << m) - 1] = 0
        for i in range(m, 15):
            s = 1 << (i + 1)
            j = np.arange((1 << m) - 1, s, 1 << (m + 1))
            sk[j + s] = sk[j] ^ temp[i]
        temp[m] = MODULUS - int(log[_mul1(temp[m], int(log[temp[m] ^ 1]))])
        for i in range(m + 1, 15):
            temp[i] = _mul1(temp[i], _add_mod1(int(log[temp[i] ^ 1]), temp[m]))
    return np.asarray(log[sk], np.uint16)


def _mul1(x: int, log_m: int) -> int:
    """`mul` of ints (its numpy calls on scalars were most of `skew`'s time)."""
    exp, log = exp_log()
    return 0 if x == 0 else int(exp[_add_mod1(int(log[x]), log_m)])


def _add_mod1(a: int, b: int) -> int:
    """`add_mod` of two ints."""
    s = a + b
    return (s + (s >> 16)) & 0xFFFF


@functools.lru_cache(maxsize=1)
def skew_matrices() -> NDArray[np.uint64]:
    """``[65535, 4]``: for each skew factor, the affine matrices ``[A_ll, A_hh, A_lh, A_hl]`` of times it.

    ``A_oi`` maps the input's byte ``i`` (low or high) to its part of the product's byte ``o``; in
    gf2p8affineqb's layout, output bit ``b`` is the parity of the input AND the matrix's byte ``7 - b``.
    """
    sk = skew().astype(np.int64)
    cols = np.empty((MODULUS, 16), "<u2")  # [K, 16]: product of each input bit, a column at a time (all
    for b in range(16):  # at once, its [K, 16] int64 temporaries were most of these tables' time, in page faults)
        cols[:, b] = mul(1 << b, sk)
    by = cols.view(np.uint8).reshape(MODULUS, 16, 2)  # [K, input bit, product byte]
    out = np.zeros((MODULUS, 4), np.uint64)
    for q, (o, i) in enumerate(((0, 0), (1, 1), (0, 1), (1, 0))):
        x = np.ascontiguousarray(by[:, 8 * i : 8 * i + 8, o]).view("<u8")[:, 0]  # byte = input bit, bit = output bit
        out[:, q] = _transpose8(x).byteswap()  # then byte 7 - b = output bit b, bit = input bit
    out[skew() == MODULUS] = 0  # a zero factor: the kernel's butterfly is then the XOR alone, as the crate's
    return out


def _transpose8(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Each 8x8 bit matrix (byte = row, bit = column) transposed (Hacker's Delight 7-3)."""
    for sh, mask in ((7, 0x00AA00AA00AA00AA), (14, 0x0000CCCC0000CCCC), (28, 0x00000000F0F0F0F0)):
        t = (x ^ (x >> np.uint64(sh))) & np.uint64(mask)
        x = x ^ t ^ (t << np.uint64(sh))
    return x


@functools.lru_cache(maxsize=4)
def _typed(lib: ctypes.CDLL, name: str) -> Callable[..., int]:
    f = getattr(lib, name)
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    f.argtypes = [p, i64, i64, i64, i64, p, p] + ([i64] if name == "ps_rs_encode_words" else [])
    f.restype = ctypes.c_int
    return cast("Callable[..., int]", f)


def serves(r: int, n: int) -> bool:
    """Whether `parity` computes ``r`` parity shards of ``n`` here (as ``ps_rs_encode`` checks): no GIL is then held."""
    m, np2 = 1 << max(0, r - 1).bit_length(), 1 << max(0, n - 1).bit_length()
    high_rate = n >= 1 and r >= 1 and m + n <= 65536 and np2 >= m and not (np2 == m and n > r)
    return high_rate and _native.available()


def parity(content: NDArray[np.uint8], r: int) -> NDArray[np.uint8] | None:
    """``rsl.encode``'s ``r`` parity shards of the rows of ``content`` ``[n, shard]``, as ``[shard / 64, r, 64]``.

    Column ``c`` of parity shard ``j`` is ``out[c, j]``. None where the kernel does not serve.
    """
    lib = _native._load()  # each call, so that turning the library off (tests, PARAMSEAL_NATIVE) reaches here
    if lib is None or r < 1 or content.ndim != 2 or content.dtype != np.uint8:
        return None
    (n, shard), (step, one) = content.shape, content.strides
    if one != 1 or step < shard:
        return None
    out = np.empty((shard // 64, r, 64), np.uint8)
    mats = skew_matrices()
    if _typed(lib, "ps_rs_encode")(content.ctypes.data, n, step, shard, r, mats.ctypes.data, out.ctypes.data):
        return None
    return out


def parity_words(data: NDArray[np.uint32], out: NDArray[np.uint32]) -> bool:
    """The lane code's parity words: ``out`` ``[r, lanes]`` from ``data`` ``[n, lanes]``, in place.

    The words ``rsl.encode`` gives for ``_code._to_split(data)`` read back by ``_code._from_split``,
    without those copies: the kernel splits each 64 bytes as it loads them. Rows may be strided
    (a batch of the lane store's columns). False, ``out`` untouched, where the kernel does not serve.
    """
    lib = _native._load()
    if lib is None or data.ndim != 2 or out.ndim != 2 or data.dtype != np.uint32 or out.dtype != np.uint32:
        return False
    (n, lanes), (r, width) = data.shape, out.shape
    if width != lanes or r < 1 or data.strides[1] != 4 or out.strides[1] != 4 or not out.flags.writeable:
        return False
    if data.strides[0] < 4 * lanes or out.strides[0] < 4 * lanes:
        return False
    mats = skew_matrices()
    f = _typed(lib, "ps_rs_encode_words")
    return not f(data.ctypes.data, n, data.strides[0], lanes, r, mats.ctypes.data, out.ctypes.data, out.strides[0])


__all__ = ["add_mod", "exp_log", "mul", "parity", "parity_words", "serves", "skew", "skew_matrices"]
