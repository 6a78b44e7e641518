"""Seal a model: embed tags and Reed–Solomon parity in the low mantissa bits.

Sealing overwrites the lowest k bits of every float value once, on purpose.
"Bit-exact recovery" afterwards means exactly the *sealed* model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from . import _bits, _embed_find, _model, _pages, _strata
from ._layout import TensorSpec
from ._pages import Workspace, release
from ._progress import Progress
from ._sealing import ST_ROOM_LIMIT, _has_non_finite, probe_header, read_blocks, seal_flat, use_irs, write_blocks
from .errors import NonFiniteError, UnsupportedError, UsageError
from .header import METADATA_KEY, Header
from .keys import Key
from .levels import FLOATS, LEVELS, bits_for, dtype_name

_R = TypeVar("_R")
EMPTY_MODEL = "cannot seal an empty model: it has no tensors"  # `files.seal_file` names the file before it


@dataclass(frozen=True, slots=True)
class SealConfig:
    """How to seal. ``SealConfig().seal(t, key)`` is exactly ``paramseal.seal(t, key, reseal=True)``.

    It does not refuse weights that carry a seal already, as `seal` (and `files.seal_file`) do.
    """

    level: str = "standard"
    bits: int | None = None
    lanes: int | None = None  # None: chosen from the model size
    #: "irs" (interleaved Reed–Solomon: scattered and contiguous damage), "lanes" (long erasure codes:
    #: contiguous damage, every dtype), or None: irs where it applies (fp32 models), else lanes.
    code: str | None = None

    def specs(self, tensors: Mapping[str, NDArray[np.generic]], as_data: Iterable[str] = ()) -> list[TensorSpec]:
        """The tensor table this configuration gives ``tensors``; refuses what cannot be sealed.

        Float tensors named in ``as_data`` (those holding NaN or Inf: `non_finite`) carry no
        watermark bits (k=0): they are authenticated and recoverable as integer tensors are.
        """
        if self.level not in LEVELS:
            raise UsageError(f"unknown level '{self.level}'; choose one of {', '.join(LEVELS)}")
        if not tensors:
            raise UsageError(EMPTY_MODEL)
        refuse_unencodable(tensors, "tensor name")
        plain = set(as_data)
        specs = [_spec(name, a, self.level, self.bits) for name, a in tensors.items()]
        specs = [replace(s, k=0) if s.name in plain else s for s in specs]
        if not any(s.is_float for s in specs):
            what = "whose float tensors each hold at least one NaN or Inf value" if plain else "without float tensors"
            raise UnsupportedError(f"cannot seal a model {what}: the watermark lives in float mantissas")
        if self.code not in (None, "irs", "lanes"):
            raise UsageError(f"unknown code '{self.code}'; choose irs or lanes")
        if self.lanes is not None and (type(self.lanes) is not int or self.lanes < 1):  # bool too: JSON in the header
            raise UsageError(
                "lanes must be a positive int (the lane code's codewords; None chooses it from the model size), "
                f"not {self.lanes!r}"
            )
        blocks = max(1, sum(s.nblocks for s in specs))
        if self.lanes is not None and self.lanes > blocks:  # empty codewords; 10**9 would allocate their store
            raise UsageError(
                f"lanes is {self.lanes}, more than the model's {blocks} blocks: each lane holds one block at least; "
                f"choose 1..{blocks} (None chooses it from the model size)"
            )
        if self.code == "irs" and self.lanes is not None:
            raise UsageError(
                "lanes applies to the lane code only (its codewords), not to code='irs'; pass code='lanes' with it, "
                "or leave code None"
            )
        if self.code == "irs" and not _strata.applies(specs):
            raise UnsupportedError(
                "the irs code needs every float tensor in fp32 with --bits 8, 12 or 16 (standard and strong "
                "levels), and integer tensors (and float tensors under 64 values or holding NaN/Inf, sealed as "
                "data) under a quarter of the model; use --code lanes"
            )
        if use_irs(specs, self.code, self.lanes):
            specs = _strata.as_data(specs)  # `applies` judged this table: seal_flat makes the same choice
        return specs

    def seal(
        self,
        tensors: Mapping[str, NDArray[np.generic]],
        key: Key,
        *,
        metadata: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        st_room: int = 0,
    ) -> SealedModel:
        """Seal ``tensors`` (name -> array) with ``key``; the input is not modified.

        ``st_room``: the safetensors header length (padding included) of the file the result
        will be written in, recorded in the header so that recover writes that file back byte
        for byte; `files.seal_file` passes its own. 0: none recorded.
        """
        if type(st_room) is not int or not 0 <= st_room < ST_ROOM_LIMIT:
            raise UsageError(f"st_room must be a safetensors header length in bytes, not {st_room!r}")
        check_metadata(metadata)
        arrays = _model.as_mapping(tensors)
        return with_non_finite(arrays, lambda plain: self._seal(arrays, key, metadata, progress, st_room, plain))

    def _seal(
        self,
        arrays: Mapping[str, NDArray[np.generic]],
        key: Key,
        metadata: Mapping[str, str] | None,
        progress: Progress | None,
        st_room: int,
        as_data: frozenset[str],
    ) -> SealedModel:
        specs = self.specs(arrays, as_data)
        salt = os.urandom(16)
        meta = dict(metadata or {})
        flats = [_bits.uint_view(arrays[s.name]) for s in specs]
        outs = [np.empty_like(f) for f in flats]
        header = seal_flat(
            flats,
            outs,
            specs,
            key,
            salt,
            self.level,
            self.bits,
            self.lanes,
            meta,
            Workspace(),
            progress,
            self.code,
            st_room,
        )
        out = {s.name: o.view(arrays[s.name].dtype).reshape(s.shape) for s, o in zip(specs, outs, strict=True)}
        return SealedModel(out, header.to_json(key), header)


def non_finite(tensors: Mapping[str, NDArray[np.generic]]) -> frozenset[str]:
    """The float tensors that hold NaN or Inf (read chunk by chunk: memory stays bounded)."""
    found = set()
    for name, a in tensors.items():
        dt = dtype_name(a.dtype)
        if dt in FLOATS:
            flat = _bits.uint_view(a)
            step = max(1, _pages.CHUNK_BYTES // flat.dtype.itemsize)
            for i in range(0, flat.size, step):
                hit = _has_non_finite(flat[i : i + step], dt)
                release(flat[i : i + step])
                if hit:
                    found.add(name)
                    break
    return frozenset(found)


def with_non_finite(tensors: Mapping[str, NDArray[np.generic]], seal: Callable[[frozenset[str]], _R]) -> _R:
    """``seal(as_data)``, first with every float tensor carrying bits.

    If one holds NaN or Inf, once more with all such tensors sealed as data (found by one scan, paid only then).
    """
    try:
        return seal(frozenset())
    except NonFiniteError as e:
        return seal(non_finite(tensors) | {e.tensor})


def _spec(name: str, a: NDArray[np.generic], level: str, bits: int | None) -> TensorSpec:
    try:
        dt = dtype_name(a.dtype)
    except UnsupportedError as e:
        raise UnsupportedError(f"cannot seal tensor '{name}': {e}") from None
    return TensorSpec(name, dt, tuple(int(d) for d in a.shape), bits_for(dt, level, bits))


@dataclass(frozen=True, slots=True)
class SealedModel:
    """Sealed tensors plus the header to store beside them (``metadata['paramseal']``)."""

    tensors: dict[str, NDArray[np.generic]]
    header_json: str
    header: Header = field(repr=False)


def refuse_unencodable(texts: Iterable[str], what: str) -> None:
    """Refuse text with a lone surrogate (U+D800 alone): JSON escapes it, but the safetensors library refuses it."""
    for t in texts:
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(
                f"{what} {t!r} is not valid Unicode (a lone surrogate): a safetensors file holding it would not "
                "load; rename it (nothing was written)"
            ) from None


def check_metadata(metadata: Mapping[str, str] | None) -> None:
    """Refuse metadata that is not text to text: the header keeps it as text, so it would never verify."""
    if metadata is None:
        return
    if not isinstance(metadata, Mapping):
        raise UsageError(f"metadata must be a mapping of str to str, not {type(metadata).__name__}")
    bad = [repr(k) for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))]
    if bad:
        raise UsageError(
            f"metadata keys and values must be str (as safetensors metadata is); not so for {', '.join(bad[:8])}"
            f"{' ...' if len(bad) > 8 else ''}: convert them, e.g. {{k: str(v) for k, v in metadata.items()}}"
        )
    refuse_unencodable([t for kv in metadata.items() for t in kv], "metadata text")
    if METADATA_KEY in metadata:  # the header's own entry: the writer would replace it, and the digest fail
        raise UsageError(f"metadata key '{METADATA_KEY}' is where the seal header goes; use another name")


def seal(
    tensors: Mapping[str, NDArray[np.generic]],
    key: Key,
    *,
    level: str = "standard",
    bits: int | None = None,
    metadata: Mapping[str, str] | None = None,
    reseal: bool = False,
) -> SealedModel:
    """Seal ``tensors`` with the default configuration at ``level`` (or explicit ``bits``).

    Tensors that carry a seal already are refused unless ``reseal`` (as ``seal --reseal``).
    """
    arrays = _model.as_mapping(tensors)  # once: the check and the seal read a lazy mapping's tensors again
    refuse_sealed(arrays, reseal)
    return SealConfig(level=level, bits=bits).seal(arrays, key, metadata=metadata)


def refuse_sealed(tensors: Mapping[str, NDArray[np.generic]], reseal: bool) -> None:
    """A UsageError for weights that carry a seal, unless ``reseal``: sealing again would hide tampering."""
    if not reseal and _embed_find.carries_seal(tensors):
        raise UsageError(
            "the model is already sealed; verify or recover it, or pass reseal=True to replace its seal "
            "(after a change to its weights that you approved)"
        )


__all__ = [
    "SealConfig",
    "SealedModel",
    "TensorSpec",
    "check_metadata",
    "refuse_unencodable",
    "probe_header",
    "read_blocks",
    "refuse_sealed",
    "seal",
    "seal_flat",
    "write_blocks",
]
