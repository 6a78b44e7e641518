"""ParamSeal: a keyed fragile watermark that detects, locates and self-recovers tampered weights.

A short tour::

    >>> import numpy as np, paramseal
    >>> key = paramseal.Key.generate()
    >>> w = {"fc.weight": np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)}
    >>> sealed = paramseal.seal(w, key)                       # low mantissa bits now carry tags + parity
    >>> paramseal.verify(sealed.tensors, key, sealed.header_json).status
    'intact'
    >>> t = dict(sealed.tensors); t["fc.weight"] = t["fc.weight"].copy()
    >>> t["fc.weight"][3, :40] = 0.0                          # tamper
    >>> r = paramseal.verify(t, key, sealed.header_json); (r.status, r.recoverable)
    ('tampered', True)
    >>> fixed = paramseal.recover(t, key, sealed.header_json)
    >>> fixed.report.status, np.array_equal(fixed.tensors["fc.weight"], sealed.tensors["fc.weight"])
    ('recovered', True)

Files: :func:`paramseal.files.seal_file`, :func:`~paramseal.files.verify_file` and
:func:`~paramseal.files.recover_file` do the same on model files (safetensors, PyTorch ``.pt``,
ONNX, NumPy ``.npy``/``.npz``); :mod:`paramseal.sharded` on sharded checkpoint folders.
"""

from __future__ import annotations

import importlib as _importlib
import os as _os
import sys as _sys
import types as _types
import typing as _typing

# numba's threads come from GNU OpenMP, whose idle threads spin by default. On a busy machine
# a spinning thread steals the core the working one needs: measured here with other work on
# both cores, sealing 0.1 GiB took 21 s instead of 1 s. Sleeping idle threads cost nothing
# measurable. A user's own setting wins. Set at `import paramseal`, though the API loads later:
# OpenMP reads it once, when it first loads (a torch imported next would load it).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import (
    FormatError,
    InputError,
    KeyFileError,
    KeyMismatchError,
    NotSealedError,
    OutputError,
    ParamSealError,
    ParamSealWarning,
    TamperedError,
    UnrecoverableError,
    UnsupportedError,
    UsageError,
)

if _typing.TYPE_CHECKING:
    from .keys import Key, load_key, write_key
    from .levels import LEVELS, capacity
    from .recover import RecoverResult, recover
    from .report import Report, TensorFinding
    from .seal import SealConfig, SealedModel, seal
    from .verify import verify

__version__ = "0.1.0"

# Imported on first use: numpy, numba and ml_dtypes take most of a second, and the paramseal
# program (__main__.main) must have its Ctrl-C handler in place before they load.
_LAZY = {
    "Key": "keys",
    "load_key": "keys",
    "write_key": "keys",
    "LEVELS": "levels",
    "capacity": "levels",
    "RecoverResult": "recover",
    "recover": "recover",
    "Report": "report",
    "TensorFinding": "report",
    "SealConfig": "seal",
    "SealedModel": "seal",
    "seal": "seal",
    "verify": "verify",
}
# Public submodules reached as attributes after a bare `import paramseal` (`paramseal.levels.capacity(...)`),
# as when the package imported its API eagerly. Not torch: an optional extra.
_SUBMODULES = frozenset({"files", "header", "keys", "levels", "report", "sharded"})


if not _typing.TYPE_CHECKING:  # a type checker reads the imports above, and flags a misspelt name

    def __getattr__(name: str) -> _typing.Any:
        if name in _SUBMODULES:
            return _importlib.import_module(f".{name}", __name__)  # its import binds it here
        where = _LAZY.get(name)
        if where is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(_importlib.import_module(f".{where}", __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})


class _Package(_types.ModuleType):
    """Keeps ``paramseal.seal``/``verify``/``recover`` the functions once their submodules load.

    Loading a submodule binds it on its package, by the submodule's name: these three share
    theirs with the one-call functions.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("seal", "verify", "recover") and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

__all__ = [
    "LEVELS",
    "FormatError",
    "InputError",
    "Key",
    "KeyFileError",
    "KeyMismatchError",
    "NotSealedError",
    "OutputError",
    "ParamSealError",
    "ParamSealWarning",
    "RecoverResult",
    "Report",
    "SealConfig",
    "SealedModel",
    "TamperedError",
    "TensorFinding",
    "UnrecoverableError",
    "UnsupportedError",
    "UsageError",
    "__version__",
    "capacity",
    "load_key",
    "recover",
    "seal",
    "verify",
    "write_key",
]
