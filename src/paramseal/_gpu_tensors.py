"""The per-tensor state of `paramseal.gpu`'s verifier, and its blocks read from a live tensor for the torch engine.

Each tensor's plan (its spec, device, key material and share of the flag buffer), the checks
that refuse what cannot be read in place, the host copy, the 16-bit words of its blocks and the
tag test of the torch-ops engine. Separate from `paramseal.gpu` (the verifier and its settings)
and `_gpu_triton` (the Triton engine), which both use these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ._layout import TensorSpec
from ._mac import P
from .errors import UnsupportedError, UsageError
from .formats.pytorch import import_torch, tensor_to_numpy
from .levels import BLOCK
from .torch import _refuse_lazy

_torch = import_torch("paramseal.gpu")

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True, slots=True, repr=False)  # key material: never in a repr (a _Plan's or a traceback's)
class _Consts:
    """Per (device, words per block, k): the hash keys and where a block keeps its tag bits."""

    keys64: torch.Tensor  # [W] int64, each < p
    keys32: torch.Tensor  # [W] int32, the same keys as uint32 bit patterns (Triton)
    wmask: torch.Tensor  # [NM] int64: tag bits of each of the first NM words
    shift: torch.Tensor  # [NM] int64: where those bits go in the 32-bit tag
    nm: int  # a power of two covering every word with tag bits (at least 16)
    keep32: torch.Tensor  # [W] int32: 0xFFFF less the tag bits (Triton)
    mask32: torch.Tensor  # [NM] int32 copy of wmask (Triton)
    shift32: torch.Tensor  # [NM] int32 copy of shift (Triton)
    keys2_64: torch.Tensor  # [W] int64: the second hash's keys k'_i (zeros for the older MACs)
    keys2_32: torch.Tensor  # [W] int32, the same as uint32 bit patterns (Triton)
    two: bool  # the MAC has the second hash (the torch engine skips it otherwise)


@dataclass(slots=True)
class _Plan:
    """One tensor: its spec, device, key material and its share of the flag buffer."""

    t: int
    spec: TensorSpec
    device: torch.device
    words: int  # 16-bit words per block
    full_internal: bool  # every block but the last keeps its tag in its low bits
    last_internal: bool
    ext_ok: bool  # the header holds the tags of the blocks that keep none
    consts: _Consts
    dtype: torch.dtype
    c: torch.Tensor = field(repr=False)  # [nblocks] int64 (uint64 bits): per-block r << 32 | c, see _constants
    flags: torch.Tensor = field(repr=False)  # [nblocks] uint8, written by every check
    x: torch.Tensor = field(repr=False)  # [nblocks] int64: per-block x, the second hash's weight (0: older MACs)


_TORCH_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip


def _dtype_name(x: torch.Tensor) -> str:
    for name, attr in _TORCH_DTYPES.items():
        if getattr(_torch, attr, None) == x.dtype:
            return name
    return str(x.dtype).removeprefix("torch.")


def _refuse_unreadable(tensors: Mapping[str, torch.Tensor]) -> None:
    """Raise a clear error for a value that is not a dense torch tensor with data (as the CPU engine refuses it)."""
    _refuse_lazy(tensors, "tensor(s)")
    for name, x in tensors.items():
        if not isinstance(x, _torch.Tensor):
            raise UsageError(
                f"'{name}' is a {type(x).__name__}, not a torch.Tensor: GpuVerifier checks torch tensors "
                "(paramseal.verify checks numpy arrays)"
            )
        if x.layout != _torch.strided or x.is_quantized or x.is_meta:
            kind = "quantized" if x.is_quantized else "meta" if x.is_meta else str(x.layout)
            raise UnsupportedError(
                f"tensor '{name}' is a {kind} tensor; ParamSeal checks dense tensors that hold their data: convert "
                "it with .to_dense() / .dequantize(), or load the weights, first"
            )


def _host(tensors: Mapping[str, torch.Tensor]) -> dict[str, NDArray[np.generic]]:
    return {n: tensor_to_numpy(x, f"tensor '{n}'") for n, x in tensors.items()}


def _words_of(plan: _Plan, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The tensor's whole blocks as ``[nfull, W]`` 16-bit words, and its last block zero-padded as ``[1, W]``."""
    spec, w = plan.spec, plan.words
    if flat.dtype == _torch.bool:
        flat = flat.view(_torch.uint8)
    nfull = spec.numel // BLOCK
    per_value = spec.width // 8
    full_bytes = nfull * BLOCK * per_value
    if per_value == 1:
        if flat.storage_offset() % 2:  # a 16-bit view needs an even byte offset; a slice may start at an odd one
            flat = flat.clone()
        full = flat[:full_bytes].view(_torch.int16).view(nfull, w)
        rest = flat[full_bytes:]
    else:
        words = flat.view(_torch.int16)
        full = words[: nfull * w].view(nfull, w)
        rest = words[nfull * w :]
    tail = _torch.zeros(BLOCK * per_value, dtype=_torch.uint8, device=flat.device)
    tail[: rest.numel() * rest.element_size()] = rest.view(_torch.uint8)
    return full, tail.view(_torch.int16).view(1, w)


def _mulmod(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The products a * b mod p, a and b in [0, p): 64 unsigned bits, so b is taken in 16-bit halves (int64)."""
    out: torch.Tensor = ((a * (b >> 16) % P) * 65536 + a * (b & 0xFFFF)) % P
    return out


def _tags_bad(
    w16: torch.Tensor, c: torch.Tensor, x: torch.Tensor, inside: torch.Tensor, k: _Consts, ext_ok: bool
) -> torch.Tensor:
    """Failing flags of ``[n, W]`` blocks: (r H + c) mod p against the stored tag (c: r << 32 | c, see _constants).

    H = H_k + x H_k' (its second term only where the MAC has it, ``k.two``).
    """
    w = w16.to(_torch.int64) & 0xFFFF
    head = w[:, : k.nm] & k.wmask  # the tag bits: left out of the hash where the block keeps its tag
    hm = ((w * k.keys64).sum(1) - _torch.where(inside, (head * k.keys64[: k.nm]).sum(1), 0)) % P
    if k.two:
        h2 = ((w * k.keys2_64).sum(1) - _torch.where(inside, (head * k.keys2_64[: k.nm]).sum(1), 0)) % P
        hm = (hm + _mulmod(x, h2)) % P
    stored = _torch.where(inside, (head << k.shift).sum(1), 0)
    r, c = (c >> 32) & 0xFFFFFFFF, c & 0xFFFFFFFF
    tag = (_mulmod(r, hm) + c) % P
    bad: torch.Tensor = tag != stored
    if not ext_ok:
        bad |= ~inside
    return bad
