"""A guard for formats that cannot store metadata (``.npy``).

Such a file keeps the seal header only as the copy embedded in the weights. A
model too small to hold that copy would be written sealed yet unverifiable, so
writing it is refused before anything reaches the disk. So is a model whose sealed
metadata holds ParamSeal's own entries the format cannot write back in its own terms
(an ONNX model's graph digest): verify checks them, and the file would lack them.
"""

from __future__ import annotations

from .._embed import header_copies
from ..errors import UsageError
from ..header import METADATA_KEY, own_entries, peek_header
from .base import Loaded


def require_header_in_weights(loaded: Loaded, fmt: str, carried: frozenset[str] = frozenset()) -> None:
    """Raise UsageError if ``loaded`` is sealed but its weights carry no copy of the header.

    Or if its metadata holds ParamSeal's own entries (sealed: verify checks them against the
    digest the weights' copy keeps) other than ``carried``, those the format writes back itself.
    """
    lost = sorted(own_entries(loaded.metadata).keys() - carried)
    if lost:
        raise UsageError(
            f"the sealed model's metadata holds {', '.join(map(repr, lost))} (ParamSeal's own: an ONNX model's graph "
            f"digest), which verify checks, and {fmt} files have no metadata to hold it, so the output could never "
            "be verified; write .safetensors or .npz instead (they keep it in their metadata), or .onnx"
        )
    if METADATA_KEY not in loaded.metadata or header_copies(loaded.tensors):
        return
    n = sum(int(a.size) for a in loaded.tensors.values())
    text = loaded.metadata[METADATA_KEY]
    body = peek_header(text)
    from .._inspect import carrier_names  # here: it imports this package

    held = carrier_names(body.get("carriers"), body.get("tensors"))
    # the seal put copies there (a list: the header names them): they lie in blocks left tampered (--allow-partial)
    if isinstance(held, list) and held:
        raise UsageError(
            f"the seal header cannot be written with this model: its copies in the weights "
            f"({', '.join(map(repr, held))}) lie in blocks this partial result leaves tampered, and {fmt} files "
            "have no metadata to hold it, so the output could never be verified; write the partial result to "
            ".safetensors or .npz instead (they keep the header in their metadata)"
        )
    tags = body.get("external_tags") or {}
    # tensors sealed as data (integers, floats holding NaN/Inf) keep their block tags in the header
    why = f", {len(tags)} tensor(s) keeping their block tags in it" if tags else ""
    raise UsageError(
        f"this sealed model ({n} values) is too small to carry its seal header ({len(text)} bytes{why}) in its "
        f"weights, and {fmt} files have no metadata to hold it, so the output could never be verified; write "
        ".safetensors or .npz instead (they keep the header in their metadata)"
    )


__all__ = ["require_header_in_weights"]
