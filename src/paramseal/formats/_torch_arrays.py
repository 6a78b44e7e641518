"""torch tensors as numpy arrays and back, with the same dtype, shape and bytes; and torch imported lazily.

Kept apart from `pytorch` (the ``.pt`` adapter): `paramseal.torch` and `paramseal.gpu` convert a live
module's tensors with the same functions, and none of them needs the file format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

from .._pages import read
from ..errors import MissingDependencyError, UnsupportedError
from ..levels import NIBBLE, dtype_name
from .base import pack4, unpack4

if TYPE_CHECKING:  # pragma: no cover
    import torch as torch_t


def import_torch(what: str) -> Any:
    """Import torch, or raise MissingDependencyError naming ``what`` and the extra to install."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(what, "torch") from None
    return torch


def tensor_to_numpy(t: torch_t.Tensor, what: str, *, copy: bool = True, any_dtype: bool = False) -> NDArray[np.generic]:
    """A C-contiguous numpy array of a dense tensor on any device, bfloat16 as ml_dtypes.bfloat16.

    With ``copy=False`` a contiguous CPU tensor's memory is shared, not copied (for tensors
    nobody else holds, such as those just loaded from a file). ``any_dtype``: a dtype ParamSeal
    does not seal (complex, float8 as ml_dtypes') is read too, for the caller to judge: to verify,
    a sealed tensor now in another dtype is tampered with, as a numpy array of it is.
    """
    torch = import_torch(what)
    if t.is_meta:
        raise UnsupportedError(
            f"{what} is on the meta device and holds no values; give the module its weights first "
            "(e.g. module.to_empty(device='cpu') and load_state_dict, or load it without device='meta')"
        )
    if t.layout != torch.strided or t.is_quantized:
        raise UnsupportedError(
            f"{what} is a {t.layout} {'quantized ' if t.is_quantized else ''}tensor; "
            "ParamSeal seals dense tensors: convert it with .to_dense() / .dequantize() first"
        )
    t = t.detach().cpu().resolve_conj().resolve_neg()  # a lazy negated view (z.conj().imag): its values
    unsupported = UnsupportedError(
        f"{what} has dtype {t.dtype}, which ParamSeal does not support; "
        "supported: float64/32/16, bfloat16, (u)int8/16/32/64, bool"
    )
    float8 = getattr(ml_dtypes, str(t.dtype).removeprefix("torch."), None) if t.element_size() == 1 else None
    if t.dtype == torch.bfloat16:
        a = t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    elif any_dtype and t.dtype == getattr(torch, "float4_e2m1fn_x2", None) and t.dim():
        # two E2M1 values a byte: one a byte here (levels.NIBBLE), the last dimension doubled, as safetensors does
        raw = t.contiguous().view(torch.uint8).numpy()
        a = unpack4(raw, np.dtype(ml_dtypes.float4_e2m1fn), (*t.shape[:-1], 2 * t.shape[-1]))
    elif any_dtype and float8 is not None and t.is_floating_point():  # numpy has no float8: ml_dtypes' bytes
        a = t.contiguous().view(torch.uint8).numpy().view(float8)
    else:
        try:
            a = t.numpy()
        except (TypeError, RuntimeError):
            raise unsupported from None
    if not any_dtype:
        try:
            dtype_name(a.dtype)
        except UnsupportedError:
            raise unsupported from None
    out: NDArray[np.generic] = a.copy(order="C") if copy or not a.flags.c_contiguous else a
    return out


def numpy_to_tensor(a: NDArray[np.generic]) -> torch_t.Tensor:
    """A CPU tensor with the same dtype, shape and bytes as ``a`` (bfloat16 and float8 via an integer view)."""
    torch = import_torch("converting arrays to torch tensors")
    c = read(a)  # an input file's values with pread (a new array): one cut short is an error, not SIGBUS
    c = np.array(a, copy=True, order="C") if c is a else c  # writable and contiguous; 0-d stays 0-d
    if c.dtype == np.dtype(ml_dtypes.bfloat16):
        t: torch_t.Tensor = torch.from_numpy(c.view(np.int16)).view(torch.bfloat16)
        return t
    float8 = getattr(torch, c.dtype.name, None) if c.dtype.itemsize == 1 and c.dtype.name.startswith("float8") else None
    if float8 is not None:  # a retyped tensor read as ml_dtypes' (`tensor_to_numpy`), written back as it was
        return torch.from_numpy(c.view(np.uint8)).view(float8)  # type: ignore[no-any-return]
    if c.dtype in NIBBLE:
        x2 = getattr(torch, "float4_e2m1fn_x2", None)
        if c.dtype != np.dtype(ml_dtypes.float4_e2m1fn) or x2 is None or not c.ndim or c.shape[-1] % 2:
            raise UnsupportedError(
                f"cannot write {c.dtype} values of shape {list(c.shape)} to a .pt file: torch holds 4-bit values "
                "only as float4_e2m1fn_x2, two a byte along the last dimension; write them to the format they "
                "were read from"
            )
        return torch.from_numpy(pack4(c).reshape(*c.shape[:-1], c.shape[-1] // 2)).view(x2)  # type: ignore[no-any-return]
    if c.dtype.byteorder == ">":
        c = c.astype(c.dtype.newbyteorder("="))
    t = torch.from_numpy(c)
    return t
