"""A guard for formats that cannot store metadata (``.pt``, ``.npy``).

Such a file keeps the seal header only as the copy embedded in the weights. A
model too small to hold that copy would be written sealed yet unverifiable, so
writing it is refused before anything reaches the disk.
"""

from __future__ import annotations

from .._embed import header_copies
from ..errors import UsageError
from ..header import METADATA_KEY
from .base import Loaded


def require_header_in_weights(loaded: Loaded, fmt: str) -> None:
    """Raise UsageError if ``loaded`` is sealed but its weights carry no copy of the header."""
    if METADATA_KEY not in loaded.metadata or header_copies(loaded.tensors):
        return
    n = sum(int(a.size) for a in loaded.tensors.values())
    raise UsageError(
        f"this sealed model ({n} values) is too small to carry its seal header in its weights, and {fmt} files "
        "have no metadata to hold it, so the output could never be verified; write .safetensors or .npz instead "
        "(they keep the header in their metadata)"
    )


__all__ = ["require_header_in_weights"]
