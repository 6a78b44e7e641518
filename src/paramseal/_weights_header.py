"""The seal header a model's weights carry, for a model whose metadata lost it: its copies found and authenticated.

Separate from `verify`, which checks a model against a header it is given: this finds that header
(copies as they are, rebuilt from damaged ones, or located where seal put them; a model widened to
another float dtype narrowed back) and raises the error that says why none is found.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

from . import _embed, _embed_find
from ._findings import raw_void
from .errors import FormatError, KeyMismatchError, NotSealedError, ParamSealError
from .header import HeaderAuthError, parse_header
from .keys import Key
from .levels import dtype_name
from .verify import best_header

#: What a raw 2-byte void may be: np.save writes ml_dtypes' bfloat16 as ``|V2`` (float16 keeps its type).
_VOID_AS = (np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16))


def header_from_weights(tensors: Mapping[str, NDArray[np.generic]], key: Key) -> str:
    """The seal header embedded in the weights, authenticated with ``key`` (see `_header_from_weights`).

    Tensors saved as raw 2-byte voids (``np.savez`` of ml_dtypes bfloat16 arrays keeps their bytes but
    not their type) are read as each 2-byte float in turn when the weights hold no copy as they are.
    """
    try:
        return _header_from_weights(tensors, key)
    except NotSealedError:
        for typed in typed_voids(tensors):
            try:
                return _header_from_weights(typed, key)
            except NotSealedError:
                continue
        raise


def typed_voids(tensors: Mapping[str, NDArray[np.generic]]) -> Iterator[dict[str, NDArray[np.generic]]]:
    """``tensors`` with their raw 2-byte voids read as each 2-byte float in turn; nothing if none is one."""
    voids = {n: a for n, a in tensors.items() if raw_void(a.dtype) and a.dtype.itemsize == 2}
    for dt in _VOID_AS if voids else ():
        yield {**tensors, **{n: a.view(dt) for n, a in voids.items()}}


def _header_from_weights(tensors: Mapping[str, NDArray[np.generic]], key: Key) -> str:
    """The seal header embedded in the weights, authenticated with ``key``.

    Each copy is tried, then headers rebuilt from damaged copies (`_embed_find.merged_copies`: a
    plurality by byte and by nibble, mixes of two), then copies whose record is gone, found where seal put
    them (`_embed_find.located_copies`), each authenticated like the copies. Raises NotSealedError
    when no copy is found, KeyMismatchError when every copy names the same other key, and
    HeaderAuthError when nothing authenticates.
    """
    copies = _embed.header_copies(tensors)
    errs: list[ParamSealError] = []
    authentic: list[str] = []
    for _, text in copies:
        try:
            parse_header(text, key)
            if text not in authentic:
                authentic.append(text)
        except (KeyMismatchError, HeaderAuthError, FormatError) as e:
            errs.append(e)
    if len(authentic) == 1:
        return authentic[0]
    if authentic:
        # Two authentic headers: one is another seal's under this key (an older seal's copy pasted into a
        # carrier, or added as a tensor). The weights say which seal they are: the header the largest share of
        # its blocks verify under.
        return best_header(tensors, key, authentic)
    # Another key only when every copy names the same well-formed one: a flipped fingerprint is damage.
    named = {e.stored if isinstance(e, KeyMismatchError) else "" for e in errs}
    other_key = bool(errs) and len(named) == 1 and _FP.fullmatch(next(iter(named))) is not None
    if other_key and len(copies) > 1:
        raise errs[0]
    # Damaged copies (also ones no longer valid UTF-8, or behind a damaged record): rebuild the header from them.
    for text in _embed_find.merged_copies(tensors):
        try:
            parse_header(text, key)
            return text
        except (KeyMismatchError, HeaderAuthError, FormatError):
            continue
    if other_key:
        raise errs[0]
    # Copies whose record is gone (a burst over a carrier's first blocks), found where seal put them.
    located: list[KeyMismatchError] = []
    tried = 0
    for text in _embed_find.located_copies(tensors):
        tried += 1
        try:
            parse_header(text, key)
            return text
        except KeyMismatchError as e:
            located.append(e)
        except (HeaderAuthError, FormatError):
            continue  # the destroyed copy, or a length that was not the header's
    # another key when the copies found that name a key all name one well-formed key (the destroyed copy names none)
    if not errs and located and len({e.stored for e in located}) == 1:
        if _FP.fullmatch(located[0].stored):
            raise located[0]
    if errs:
        # a copy that is no header at all (its bytes damaged, as zeroed values leave it) has no reason to quote, nor
        # one that does not authenticate: its message is the metadata header's ("its settings or tensor table were
        # edited; the weights cannot be checked"), where a bit flipped in a copy here is the likelier cause
        why = next((str(e) for e in errs if not isinstance(e, (KeyMismatchError, HeaderAuthError))), "")
        lost = "cannot be read" if any(_unreadable(e) for e in errs) else "do not authenticate"
        cause = "damaged" if lost == "cannot be read" else "damaged or edited"
        # damage, but a copy may name the sealing key: a user holding the wrong key must learn it here
        mismatches = [e for e in [*errs, *located] if isinstance(e, KeyMismatchError)]
        keys = sorted({e.stored for e in mismatches if _FP.fullmatch(e.stored)})
        other = (
            f". A copy names key fingerprint {' or '.join(keys)}, not the given key's ({key.fingerprint}): if the "
            "model was sealed with that key, check it with that key"
            if keys
            else ""
        )
        raise HeaderAuthError(
            f"{why or f'the copies of the ParamSeal header in the weights {lost} (they were {cause})'}. "
            f"{HEADER_HINT}{other}"
        ) from None
    n, never_had_copies = _embed.sealed_traces(tensors)
    if n and never_had_copies:
        raise HeaderOnlyInMetadata(
            f"the model was sealed (ParamSeal records remain in {n} of its tensors) but its weights had no room for "
            "a copy of its header (a small model, or a header made long by block tags kept in it, as for tensors "
            f"holding NaN/Inf), and its metadata, which held the header, is gone. {HEADER_HINT}"
        )
    if n:
        raise RecordsWithoutHeader(
            f"the model was sealed (ParamSeal records remain in {n} of its tensors), but no copy of its header in "
            "the weights is intact: they were tampered with, and nothing can be checked or rebuilt without the "
            f"header. {HEADER_HINT}"
        )
    if tried:
        raise HeaderAuthError(
            "the model's weights hold copies of a ParamSeal header where a seal puts them, but their records are "
            "gone and none of them authenticates with this key: they were tampered with, and nothing can be checked "
            f"or rebuilt without the header. {HEADER_HINT}"
        )
    raise NotSealedError(
        "the model carries no ParamSeal header: none in the file's metadata and no copy in the weights; "
        "seal it first with 'paramseal seal' if it never was (a model too small to hold a copy needs its "
        f"original metadata). {NOT_SEALED_WARNING}"
    )


#: Float dtypes a sealed float tensor may have been widened from, tried in turn (`widened_seal`).
_NARROWER = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


def widened_seal(tensors: Mapping[str, NDArray[np.generic]], key: Key) -> dict[str, tuple[str, str]] | None:
    """Where a model with no header copy of its own has one once its floats are narrowed back, what was widened.

    A sealed float32 model saved as float64 keeps every value but not the bits its header copies are
    written in. For each narrower float dtype, the tensors whose every value it holds exactly are
    narrowed, and the copies authenticated with ``key``: name -> (its dtype, the one narrowed to) for
    the first that gives a header, or None.
    """
    floats = {n: a for n, a in tensors.items() if a.dtype.kind == "f" and a.size}
    for target in _NARROWER:
        narrowed: dict[str, NDArray[np.generic]] = {}
        for name, a in floats.items():
            if a.dtype.itemsize > target.itemsize and (b := _narrowed(a, target)) is not None:
                narrowed[name] = b
        if not narrowed:
            continue
        try:
            header_from_weights({**tensors, **narrowed}, key)
        except ParamSealError:
            continue
        return {n: (dtype_name(tensors[n].dtype), dtype_name(target)) for n in narrowed}
    return None


#: Values of a tensor tried first (`_narrowed`): a model never sealed is rejected without converting it whole.
_PROBE = 4096


def _narrowed(a: NDArray[np.generic], target: np.dtype[Any]) -> NDArray[np.generic] | None:
    """``a`` as ``target`` when that holds every value exactly, else None.

    Its first values are tried first: weights that were never narrower fail there, where converting
    and comparing the whole tensor read every value of a large unsealed model (the error path).
    """
    head = a.flat[:_PROBE]
    if not np.array_equal(head.astype(target).astype(a.dtype), head, equal_nan=True):
        return None
    b = a.astype(target)
    return b if np.array_equal(b.astype(a.dtype), a, equal_nan=True) else None


NOT_SEALED_WARNING = (
    "If it should be sealed, treat it as tampered: a seal can be stripped whole (metadata, header copies and "
    "records), and sealing it again would approve whatever it now holds"
)


class HeaderOnlyInMetadata(NotSealedError):
    """A sealed model too small to carry its header in its weights, read without its metadata: not whole (exit 2)."""

    exit_code = 2


class RecordsWithoutHeader(HeaderAuthError):
    """ParamSeal records in the weights, and no intact header copy: a sealed model's, or a sealed tensor's moved."""


_FP = re.compile("[0-9a-f]{16}")  # a well-formed key fingerprint


def _unreadable(e: ParamSealError) -> bool:
    return isinstance(e, HeaderAuthError) and e.unreadable


HEADER_HINT = (
    "Pass the header of a copy of the sealed model that keeps it (--header-from FILE: the sealed model file as "
    "written by seal, or its header in a .json file, as seal --header-out keeps it) to verify and recover; do not "
    "seal this file again unless you approve its weights"
)


__all__ = [
    "HEADER_HINT",
    "NOT_SEALED_WARNING",
    "HeaderOnlyInMetadata",
    "RecordsWithoutHeader",
    "header_from_weights",
    "typed_voids",
    "widened_seal",
]
