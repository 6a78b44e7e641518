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
:func:`~paramseal.files.recover_file` do the same on safetensors files.
"""

from __future__ import annotations

from .errors import (
    FormatError,
    InputError,
    KeyFileError,
    KeyMismatchError,
    NotSealedError,
    OutputError,
    ParamSealError,
    TamperedError,
    UnrecoverableError,
    UnsupportedError,
    UsageError,
)
from .keys import Key, load_key, write_key
from .levels import LEVELS, capacity
from .recover import RecoverResult, recover
from .report import Report, TensorFinding
from .seal import SealConfig, SealedModel, seal
from .verify import verify

__version__ = "0.1.0"

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
