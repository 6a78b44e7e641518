"""Protection levels: how many low mantissa bits each float dtype gives up.

Replacing the lowest ``k`` of ``M`` mantissa bits changes a normal value by at
most ``(2**k - 1) * 2**-M`` of its magnitude. The levels below are chosen from
the measurements in DESIGN.md section 3 (accuracy and embedding cosine with
random low bits). ``capacity`` gives the recovery bounds that ``inspect`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Literal

import ml_dtypes
import numpy as np

from .errors import UnsupportedError, UsageError

LevelName = Literal["light", "standard", "strong"]
LEVELS: tuple[LevelName, ...] = ("light", "standard", "strong")

#: Parameters per authenticated block; one 32-bit tag per block.
BLOCK = 64
TAG_BITS = 32


@dataclass(frozen=True, slots=True)
class FloatFormat:
    """Bit layout of one IEEE-style float dtype."""

    name: str  # safetensors dtype name
    bits: int  # total bits per value
    mantissa: int  # explicit mantissa bits
    exponent: int
    uint: type[np.unsignedinteger]  # unsigned view of the same width
    levels: dict[str, int]  # level name -> k


FLOATS: dict[str, FloatFormat] = {
    "F64": FloatFormat("F64", 64, 52, 11, np.uint64, {"light": 8, "standard": 16, "strong": 24}),
    "F32": FloatFormat("F32", 32, 23, 8, np.uint32, {"light": 4, "standard": 8, "strong": 12}),
    "F16": FloatFormat("F16", 16, 10, 5, np.uint16, {"light": 1, "standard": 2, "strong": 4}),
    "BF16": FloatFormat("BF16", 16, 7, 8, np.uint16, {"light": 1, "standard": 1, "strong": 2}),
}

_NP_TO_ST: dict[np.dtype[np.generic], str] = {
    np.dtype(np.float64): "F64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(ml_dtypes.bfloat16): "BF16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint64): "U64",
    np.dtype(np.uint32): "U32",
    np.dtype(np.uint16): "U16",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}
ST_TO_NP: dict[str, np.dtype[np.generic]] = {v: k for k, v in _NP_TO_ST.items()}
# Read from files but never sealed: a sealed tensor retyped to one is tampering to report, not a file to refuse.
ST_UNSEALED: dict[str, np.dtype[np.generic]] = {
    "C64": np.dtype(np.complex64),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E4M3FNUZ": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "F8_E5M2FNUZ": np.dtype(ml_dtypes.float8_e5m2fnuz),
    "F8_E8M0": np.dtype(ml_dtypes.float8_e8m0fnu),  # MX block scales: safetensors.torch writes float8_e8m0fnu so
    "F4": np.dtype(ml_dtypes.float4_e2m1fn),  # safetensors.torch's float4_e2m1fn_x2: two values a byte (NIBBLE)
}
#: 4-bit dtypes (ONNX INT4 / UINT4 / FLOAT4E2M1, safetensors F4), which files pack two values a byte, low nibble
#: first: held here one value a byte in its low 4 bits, as ml_dtypes' types (the formats unpack and pack them), so
#: a sealed tensor retyped to one keeps its shape and dtype name. Never sealed, as float8: no mantissa bits to spare.
NIBBLE: frozenset[np.dtype[np.generic]] = frozenset(
    {np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4), np.dtype(ml_dtypes.float4_e2m1fn)}
)


def value_bits(dt: np.dtype[np.generic]) -> int:
    """Bits a value of ``dt`` holds in a file: 4 for the NIBBLE dtypes (held in a byte here), else its width."""
    return 4 if np.dtype(dt) in NIBBLE else np.dtype(dt).itemsize * 8


def _raw_void(size: int) -> str:
    """Why raw values of ``size`` bytes (ml_dtypes' types as ``np.save`` writes them) are refused, and what to do."""
    what = f"{size}-byte values of unknown type (np.save writes"
    if size == 2:
        return (
            f"{what} bfloat16 this way and loses its type); save it with ParamSeal, as a uint16 view, or as safetensors"
        )
    if size == 1:
        return (
            f"{what} float8 this way and loses its type); ParamSeal does not seal them, nor 8-bit "
            "floats: save it as a uint8 view to have it sealed as integer data"
        )
    tail = "ParamSeal does not seal them: save the array in its real dtype"
    return f"{what} ml_dtypes' types this way and loses the type); {tail}"


def dtype_name(dt: np.dtype[np.generic]) -> str:
    """Return the safetensors name of a numpy dtype, or raise UnsupportedError."""
    try:
        return _NP_TO_ST[np.dtype(dt)]
    except KeyError:
        if np.dtype(dt).type is np.void and np.dtype(dt).names is None:  # raw bytes: a .npy of ml_dtypes' types
            raise UnsupportedError(f"raw dtype {np.dtype(dt).str}: {_raw_void(np.dtype(dt).itemsize)}") from None
        supported = ", ".join(sorted(_NP_TO_ST.values()))
        if np.dtype(dt) in NIBBLE:  # two values a byte in the file: no mantissa bits to carry a watermark
            raise UnsupportedError(
                f"dtype {dt} is not supported (4-bit values: ParamSeal does not seal them; save the codes as "
                f"uint8, one a byte, to have them sealed as integer data); supported: {supported}"
            ) from None
        native = np.dtype(dt).newbyteorder("=")
        hint = f" (convert it to this machine's byte order: a.astype('{native.str}'))" if native in _NP_TO_ST else ""
        raise UnsupportedError(f"dtype {dt} is not supported{hint}; supported: {supported}") from None


def bits_for(dtype: str, level: str, bits: int | None) -> int:
    """Return k, the low bits a tensor of ``dtype`` carries at ``level`` (0 for integers)."""
    if bits is not None and type(bits) is not int:  # bool, float, numpy ints: the header records it as JSON
        raise UsageError(f"bits must be an int (the low bits each value carries), not {type(bits).__name__}")
    fmt = FLOATS.get(dtype)
    if fmt is None:
        return 0
    if bits is not None:
        if not 1 <= bits <= fmt.mantissa - 1:
            raise UsageError(f"--bits {bits} is out of range for {dtype} (bits= in the API): use 1..{fmt.mantissa - 1}")
        return min(bits, fmt.mantissa - 1)
    if level not in fmt.levels:
        raise UsageError(f"unknown level '{level}'; choose one of {', '.join(LEVELS)}")
    return fmt.levels[level]


def max_relative_change(dtype: str, k: int) -> float:
    """Worst-case relative change of a normal value when its low ``k`` bits change."""
    fmt = FLOATS[dtype]
    return float((2**k - 1) * 2.0 ** (-fmt.mantissa))


def bound_text(bound: float, digits: int = 2) -> str:
    """``bound`` in ``e`` notation with ``digits`` after the point, rounded up: a printed bound never understates it.

    ``f"{2**-7:.2e}"`` is ``7.81e-03``, under BF16's k=1 bound of 0.0078125; this gives ``7.82e-03``.
    """
    exact = Decimal(bound)  # the float's exact binary value, not its shortest repr
    if exact <= 0:
        return f"{bound:.{digits}e}"
    exp = exact.adjusted()
    lead = exact.scaleb(-exp).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_CEILING)
    if lead >= 10:  # 9.999 up to 10.00: one more power of ten
        lead, exp = (lead / 10).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_CEILING), exp + 1
    return f"{lead:.{digits}f}e{exp:+03d}"


def max_subnormal_change(dtype: str, k: int) -> float:
    """Worst-case absolute change of a subnormal (or zero) value."""
    fmt = FLOATS[dtype]
    emin = 2 - 2 ** (fmt.exponent - 1)
    return float((2**k - 1) * 2.0 ** (emin - fmt.mantissa))


@dataclass(frozen=True, slots=True)
class Capacity:
    """Recovery bounds for a dtype at k bits (fractions of parameters)."""

    k: int
    max_relative_change: float
    erasure_bound: float  # tampered positions known (whole blocks): (k - a) / (b - a)
    error_bound: float  # positions unknown: half the erasure bound
    scattered_bound: float  # parameters replaced at random places: each costs its whole block


def capacity(dtype: str, k: int) -> Capacity:
    """The lane code's theoretical recovery bounds at ``k`` bits with 32-bit tags per 64 values.

    ``dtype`` is a safetensors name (F32, F16, BF16, F64). fp32 models sealed with irs4 have
    their own bounds (`paramseal.files.inspect_file` shows the ones a model gets).
    """
    fmt = FLOATS.get(dtype)
    if fmt is None:
        raise UsageError(f"unknown float dtype '{dtype}'; use one of {', '.join(FLOATS)}")
    if isinstance(k, str) and k in fmt.levels:
        raise UsageError(
            f"capacity takes k, the low bits, not a level: capacity('{dtype}', bits_for('{dtype}', '{k}', None))"
        )
    if not isinstance(k, int) or isinstance(k, bool):
        raise UsageError(f"k must be an int number of low bits, not {type(k).__name__}")
    bits_for(dtype, "standard", k)  # refuses a k out of the dtype's range
    a = TAG_BITS / BLOCK
    er = max(0.0, (k - a) / (fmt.bits - a))
    # p such that the expected share of blocks hit, 1 - (1 - p)**BLOCK, is the erasure bound.
    return Capacity(k, max_relative_change(dtype, k), er, er / 2, 1 - (1 - er) ** (1 / BLOCK))


__all__ = [
    "BLOCK",
    "FLOATS",
    "LEVELS",
    "NIBBLE",
    "ST_TO_NP",
    "ST_UNSEALED",
    "TAG_BITS",
    "Capacity",
    "FloatFormat",
    "bits_for",
    "bound_text",
    "capacity",
    "dtype_name",
    "max_relative_change",
    "max_subnormal_change",
    "value_bits",
]
