"""The seal header: every setting that shapes the watermark, authenticated with HMAC-SHA256.

It travels as a JSON string under the ``paramseal`` key of the file's metadata.
A verifier configures itself from the header alone, after checking the key
fingerprint and the header MAC. This module reads headers (`parse_header`, `peek_header`) and
checks their fields; what a header holds and how seal writes it are `_header_body`'s.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _embed, _embed_merge, _json, _outer, _strata
from ._header_body import (
    CODE_NAME,
    HMAC_FIELD_CHARS,
    READS,
    SALT_BYTES,
    SCHEME,
    SCHEME_IRS,
    SHARD_BYTES,
    Header,
    _canonical,
    _fields,
    _mac,
    _mac_of,
    _MissingFields,
    _own_digest,
    metadata_digest,
    missing_fields,
    no_fields,
    own_entries,
)
from ._layout import TensorSpec
from ._mac import MACS
from .errors import FormatError, KeyMismatchError, cut
from .keys import Key
from .levels import BLOCK, FLOATS, LEVELS, ST_TO_NP

#: Schemes this version reads. v2 added the header copy embedded in the weights (``_embed``) and keeps
#: only a digest of the user metadata under the MAC, so that copy verifies without the metadata.
METADATA_KEY = "paramseal"
SET_KEY = "paramseal_set"  # a sharded checkpoint's set record, sealed in each shard (see sharded)
_MAX_HEADER_CHARS = 64 << 20
# A header nests 4 deep (body, tensor table, entry, shape); deeper is an edit. Checked after parsing:
# JSON nested just under the recursion limit parses, then fails to be serialised for the MAC or printed.
_MAX_HEADER_DEPTH = 16


#: What `Key.fingerprint` gives; anything else in an unauthenticated header (terminal escapes, a forged 'OK:' line,
#: megabytes) is an edit, never quoted as "the key the model was sealed with".
_FINGERPRINT = re.compile("[0-9a-f]{16}")


class HeaderAuthError(FormatError):
    """The header's MAC does not verify: it was edited or corrupted.

    ``reason`` says what is wrong with the header alone ("does not authenticate (...)"), for a
    message that goes on to the copy in the weights, where the full message's consequences do not hold.
    """

    exit_code = 2

    def __init__(self, message: str, *, reason: str = "", unreadable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason or message
        self.unreadable = unreadable  # no ParamSeal header at all (a damaged copy's bytes), not an edited one


def max_header_chars() -> int:
    """The longest header `parse_header` reads; seal refuses to write a longer one (`_sealing.probe_header`)."""
    return _MAX_HEADER_CHARS


def _too_deep(value: object) -> bool:
    """Whether JSON ``value`` nests deeper than `_MAX_HEADER_DEPTH` (walked without recursion)."""
    level: list[object] = [value]
    for _ in range(_MAX_HEADER_DEPTH + 1):
        level = [c for v in level for c in (v.values() if isinstance(v, dict) else v if isinstance(v, list) else ())]
        if not level:
            return False
    return True


def _loads(text: str) -> Any:
    """``json.loads`` of a header, refusing one nested too deep to be serialised or printed again."""
    body = _json.loads(text)
    if _too_deep(body):
        raise _json.TooDeepError
    return body


def _malformed(text: str, e: BaseException) -> str:
    """What is wrong with a header that does not parse, in words: not the JSON decoder's line and column."""
    if isinstance(e, json.JSONDecodeError):
        return "it is empty" if not text.strip() else "it is not JSON"
    if isinstance(e, _json.TooDeepError):
        return "it is nested too deep"
    if isinstance(e, _MissingFields):
        return f"it has {no_fields(e.fields)}"
    if isinstance(e, KeyError):
        return f"it has no {e} field"
    return str(e)


# Without these the MAC cannot be checked: a header missing one is malformed, whatever else it lacks.
_TO_AUTHENTICATE = ("scheme", "key_fingerprint", "hmac")


def parse_header(text: str, key: Key) -> Header:
    """Parse and authenticate a header; raise on a wrong key or an edited header."""
    try:
        if len(text) > _MAX_HEADER_CHARS:
            raise ValueError(f"{len(text)} characters")
        body = _loads(text)
        if not isinstance(body, dict):
            raise ValueError(_no_object(body))
        if (missing := missing_fields(body)) and set(missing) & set(_TO_AUTHENTICATE):
            raise _MissingFields(missing)  # all named, as inspect names them, not the first one read
        stored_fp = body["key_fingerprint"]
        if not (isinstance(stored_fp, str) and _FINGERPRINT.fullmatch(stored_fp)):  # quoted as another key's below
            raise ValueError("its key fingerprint is not 16 hex digits")
        claimed = body.pop("hmac")
        # v2: the user metadata travels beside the MAC'd body; only its digest is authenticated
        meta_copy = body.pop("user_metadata", None) if body.get("scheme") != "paramseal/1" else None
        if not (isinstance(claimed, str) and len(claimed) == 64 and all(c in "0123456789abcdef" for c in claimed)):
            raise ValueError("its MAC is not 64 hex digits")
    except (ValueError, KeyError, TypeError) as e:
        why = _malformed(text, e)
        raise HeaderAuthError(
            f"the ParamSeal header is malformed ({why}); it was edited or corrupted, so the model cannot be trusted",
            reason=f"is malformed ({why})",
            unreadable=True,
        ) from None
    scheme = _cut(repr(body.get("scheme")))  # not yet authenticated: any length
    if not str(body.get("scheme", "")).startswith("paramseal/"):
        raise HeaderAuthError(
            f"the ParamSeal header names no ParamSeal scheme ({scheme}): it was edited",
            reason=f"names no ParamSeal scheme ({scheme})",
        )
    if body.get("scheme") not in READS:
        raise FormatError(
            f"seal scheme {scheme} is not supported by this ParamSeal (it reads {', '.join(READS)}); "
            "upgrade ParamSeal, or the header was edited"
        )
    if stored_fp != key.fingerprint:
        # With the fingerprint put back, does the header authenticate under this key? Then the
        # key is right and the fingerprint was edited: that is tampering, not a key mix-up.
        if hmac.compare_digest(claimed, _mac(key, {**body, "key_fingerprint": key.fingerprint})):
            raise HeaderAuthError(
                "the ParamSeal header does not authenticate: its key fingerprint was edited",
                reason="does not authenticate (its key fingerprint was edited)",
            )
        raise KeyMismatchError(stored_fp, key.fingerprint)
    canonical = _canonical(body)
    if not hmac.compare_digest(claimed, _mac_of(key, canonical)):
        edited = "its settings or tensor table were edited" + (f": it has {no_fields(missing)}" if missing else "")
        raise HeaderAuthError(
            f"the ParamSeal header does not authenticate: {edited}; "
            "the weights cannot be checked against an untrusted header",
            reason=f"does not authenticate ({edited})",
        )
    v1 = body["scheme"] == "paramseal/1"
    user_meta: dict[str, str] | None = None
    if v1:
        user_meta = body.get("user_metadata")
        if not isinstance(user_meta, dict):  # under the MAC in v1: authentic, but no metadata to read
            what = "it has no 'user_metadata' field" if user_meta is None else "its user_metadata is not an object"
            raise FormatError(f"the ParamSeal header is authentic but unreadable: {what}")
    elif meta_copy is not None:
        if (
            not isinstance(meta_copy, dict)
            or not all(isinstance(v, str) for v in meta_copy.values())
            or metadata_digest(meta_copy) != body.get("user_metadata_sha256")
            # absent from seals made before the field: their full digest above covers these entries
            or ("own_metadata_sha256" in body and _own_digest(meta_copy) != body["own_metadata_sha256"])
        ):
            raise HeaderAuthError(
                "the ParamSeal header does not authenticate: its copy of the user metadata was edited",
                reason="does not authenticate (its copy of the user metadata was edited)",
            )
        user_meta = meta_copy
    # The MAC covers every parsed field, not the JSON bytes: re-serialising the same fields
    # (another indent or key order, as JSON tools do) keeps the seal; any change of meaning fails.
    try:
        tensors = tuple(
            TensorSpec(
                str(t["name"]),
                str(t["dtype"]),
                tuple(int(d) for d in t["shape"]),
                int(t["k"]),
                0 if v1 else int(t["reserved"]),
            )
            for t in body["tensors"]
        )
        carriers = () if v1 else tuple(int(i) for i in body["carriers"])
        ext = {
            int(i): np.frombuffer(base64.b64decode(v), dtype="<u4").astype(np.uint64)
            for i, v in body["external_tags"].items()
        }
        h = Header(
            level=str(body["level"]),
            bits=None if body["bits"] is None else int(body["bits"]),
            salt=bytes.fromhex(body["salt"]),
            key_fingerprint=stored_fp,
            lanes=int(body["lanes"]),
            tensors=tensors,
            external_tags=ext,
            user_metadata=None if user_meta is None else {str(k): str(v) for k, v in user_meta.items()},
            metadata_digest=None if v1 else str(body["user_metadata_sha256"]),
            own_metadata_digest=None if user_meta is not None else _hex_digest(body.get("own_metadata_sha256")),
            own_field="own_metadata_sha256" in body,
            carriers=carriers,
            scheme=str(body["scheme"]),
            block=int(body["block"]),
            mac=str(body["mac"]),
            code=str(body["code"]),
            shard_bytes=int(body["shard_bytes"]),
            strata=int(body["strata"]) if body["scheme"] == SCHEME_IRS else 0,
            host=int(body["outer_host"]) if body["scheme"] == SCHEME_IRS else 0,
            strata_perms=int(body.get("strata_perms", 0)) if body["scheme"] == SCHEME_IRS else 0,
            keyed_offset=body.get("keyed_offset", 0) == 1 if body["scheme"] == SCHEME_IRS else False,
            copies=1 if v1 else int(body.get("header_copies", 1)),
            st_room=0 if v1 else _room(body.get("safetensors_header_bytes", 0)),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as e:  # authenticated but unreadable: a writer bug
        why = f"it has {no_fields(missing)}" if missing else _malformed(text, e)
        raise FormatError(f"the ParamSeal header is authentic but unreadable: {why}") from None
    # Past _unreadable_fields, ``body`` is what ``h`` writes again (`_not_as_written`): its canonical JSON and the
    # MAC are the embedded copy's, whose length the carriers must hold (without writing the header once more).
    if problems := _unreadable_fields(h, body) or _reserved_problems(h, len(canonical) + HMAC_FIELD_CHARS):
        raise FormatError(
            f"the ParamSeal header is authentic but unreadable: {_listed(problems)}. Seal never writes these: "
            "the header was written by another tool, by hand, or by a newer ParamSeal (upgrade ParamSeal, or "
            "seal the original model again with this one)"
        )
    return h


def _unreadable_fields(h: Header, body: Mapping[str, Any]) -> list[str]:
    """What in authentic header ``h`` (parsed from ``body``, the fields its MAC covers) the engine cannot do.

    Each entry names the field, the value found and the value expected. Only the key holder makes an
    authentic header, but a tool other than seal (or a hand edit, MAC'd again) can record settings that
    the engine would otherwise ignore, verifying the model under its own.
    """
    out = [why for t in h.tensors if (why := _check_spec(t))]
    names = [t.name for t in h.tensors]
    if len(set(names)) != len(names):  # a model's tensors are named apart: recover wrote a corrupt file of it
        twice = sorted(n for n, times in Counter(names).items() if times > 1)
        out.append(f"its tensor table names {', '.join(map(repr, twice[:3]))} more than once, expected distinct names")
    if not all(0 <= i < len(h.tensors) for i in h.carriers):
        out.append(f"its carriers {list(h.carriers)} are not all tensors of its table")
    elif len(set(h.carriers)) != len(h.carriers):
        out.append(f"its carriers {list(h.carriers)} name a tensor twice, expected distinct tensors")
    code = _strata.CODE_NAME if h.irs else CODE_NAME
    fixed: list[tuple[str, object, tuple[object, ...]]] = [("block", h.block, (BLOCK,)), ("mac", h.mac, MACS)]
    fixed += [("code", h.code, (code,)), ("shard_bytes", h.shard_bytes, (SHARD_BYTES,))]
    out += [
        f"{name} is {got!r}, expected {' or '.join(map(repr, want))}" for name, got, want in fixed if got not in want
    ]
    if h.level not in LEVELS:
        out.append(f"level is {h.level!r}, expected one of {', '.join(map(repr, LEVELS))}")
    top = max(f.mantissa for f in FLOATS.values()) - 1
    if h.bits is not None and not 1 <= h.bits <= top:
        out.append(f"bits is {h.bits}, expected null or 1..{top} (the low bits each value carries)")
    if len(h.salt) != SALT_BYTES:
        out.append(f"salt is {len(h.salt)} byte(s) long, expected {SALT_BYTES}")
    if h.irs and h.lanes != 0:
        out.append(f"lanes is {h.lanes}, expected 0 (an irs4 seal has no lanes)")
    elif not h.irs and h.lanes < 1:  # any number above, to a block each: SealConfig(lanes=) chooses it
        out.append(f"lanes is {h.lanes}, expected a positive number of lanes")
    elif not h.irs and h.lanes > (blocks := max(1, sum(t.nblocks for t in h.tensors))):  # recover allocates lanes
        out.append(f"lanes is {h.lanes}, expected 1..{blocks} (a block each at least)")
    if h.irs:
        if h.host not in (0, *_outer.KNOWN_HOSTS):
            out.append(f"outer_host is {h.host}, expected one of {', '.join(map(str, (0, *_outer.KNOWN_HOSTS)))}")
        if h.strata_perms not in (0, _strata.PERMS):
            out.append(f"strata_perms is {h.strata_perms}, expected {_strata.PERMS} (or absent)")
        if not out:  # a table that passed the checks above
            out += _irs_table_problems(h)
    if not 1 <= h.copies <= _embed.MAX_COPIES:
        out.append(f"header_copies is {h.copies}, expected 1..{_embed.MAX_COPIES}")
    if h.metadata_digest is not None and not _is_hex_digest(h.metadata_digest):
        out.append(f"user_metadata_sha256 is {h.metadata_digest!r}, expected a SHA-256 digest (64 hex digits)")
    if not out:  # the external tags are sized by the table: only once it holds
        out += _external_problems(h)
    # Last, what the parse above left out or read otherwise (an unknown field, keyed_offset 2, a number
    # written as text): the header seal writes for the values read must be the one given.
    if not out:
        out += _not_as_written(h, body)
    return out


_LISTED = 8  # problems an error names (a table of 200000 tensors lacking their tags made a message of 12 MB)


def _listed(problems: list[str]) -> str:
    """The first `_LISTED` of ``problems``, each cut to a length a message can quote, and how many more there are."""
    shown = [cut(p, 200) for p in problems[:_LISTED]]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more else "")


def _reserved_problems(h: Header, copy: int) -> list[str]:
    """The tensors whose reserved blocks cannot hold what recover writes back into them (`_embed.reserved_content`).

    A carrier holds a record and its header copies (``copy`` bytes each, ``h.to_json(key, embedded=True)``): one seal
    never chose (an integer tensor, one too small) made recover end in an internal error. Seal sized a carrier from
    a bound on the header's length that its versions drew otherwise (the fields of its probe header), so only too
    few blocks there are refused. Any other tensor holds a record's blocks where one fits, else none (v2 on): a count
    seal never chooses verified intact.
    """
    out = []
    for i, t in enumerate(h.tensors):
        if i in h.carriers:
            need = _embed_merge.RECORD_BYTES + h.copies * copy
            if t.reserved * _embed_merge.block_bytes(t.k) < need:
                why = f"too few for a record and {h.copies} header copies ({need} bytes)"
                out.append(f"tensor {t.name!r} has {t.reserved} reserved blocks, {why}")
        elif h.scheme != "paramseal/1" and t.reserved != (want := _record_blocks(t)):
            why = "a record's" if want else "no room for a record"
            out.append(f"tensor {t.name!r} has {t.reserved} reserved blocks, expected {want} ({why})")
    return out


def _record_blocks(t: TensorSpec) -> int:
    """The blocks seal reserves in ``t`` when it is no carrier (`_embed.plan`): a record's where one fits, else 0."""
    n = _embed_merge.blocks_needed(t.k, _embed_merge.RECORD_BYTES)
    return n if t.is_float and t.numel // BLOCK >= n else 0


def _irs_table_problems(h: Header) -> list[str]:
    """An irs4 table holds fp32 tensors that carry one of `_strata.KS` bits, and strata as seal lays them out."""
    ks = sorted({t.k for t in h.tensors if t.is_float})
    other = sorted({t.dtype for t in h.tensors if t.is_float and t.dtype != "F32"})
    if other or len(ks) != 1 or ks[0] not in _strata.KS:
        allowed = " or ".join(map(str, _strata.KS))
        found = f"{', '.join(other)} tensors carrying bits" if other else f"k = {ks or 'none'}"
        return [f"its tensor table holds {found}, expected fp32 tensors that all carry k = {allowed} (irs4)"]
    g = _strata.words_per_stratum(list(h.tensors))
    return [] if h.strata == g else [f"strata is {h.strata}, expected {g} (words per stratum of its tensor table)"]


def _external_problems(h: Header) -> list[str]:
    """The external tags (of blocks with no room for their own tag) must be one for each such block."""
    out = [
        f"external_tags names tensor {i}, expected only tensors of its table (0..{len(h.tensors) - 1})"
        for i in sorted(h.external_tags)
        if not 0 <= i < len(h.tensors)
    ]
    for i, t in enumerate(h.tensors):
        want = _external_count(t)
        got = h.external_tags.get(i)
        if (got.size if got is not None else 0) != want or (got is not None and not want):
            n = "none" if got is None else f"{got.size} tags"
            out.append(f"external_tags holds {n} for tensor {t.name!r}, expected {want or 'none'}")
    return out


def _external_count(t: TensorSpec) -> int:
    """Blocks of ``t`` whose tag is not in their own low bits (`TensorSpec.block_storage`, without its arrays)."""
    _, (full_inside, last_inside) = t.block_storage_ends()
    return (t.nblocks - 1) * (not full_inside) + (not last_inside)


def _not_as_written(h: Header, body: Mapping[str, Any]) -> list[str]:
    """The fields of ``body`` that ``h``, written again, does not hold as given: read otherwise, or not at all."""
    again = h.body()
    if _canonical(dict(body)) == _canonical(again):  # as written, the usual case: one serialisation, not one a field
        return []
    out = _differences(body, again, _fields(h.scheme)[1])
    given = body.get("tensors")
    if isinstance(given, list) and len(given) == len(again["tensors"]):  # name the entries, field by field
        out = [w for w in out if not w.startswith("tensors ")]
        for a, b in zip(given, again["tensors"], strict=True):
            if isinstance(a, dict):
                out += [f"tensor {b['name']!r}: {w}" for w in _differences(a, b, frozenset(b))]
    return out


def _differences(given: Mapping[str, Any], again: Mapping[str, Any], known: frozenset[str]) -> list[str]:
    """Each field of ``given`` that ``again`` (the same values written again) holds otherwise or not at all."""
    out = []
    for name in sorted(set(given) | set(again)):
        if name not in again:
            why = "expected it absent (seal leaves it out at that value)" if name in known else "a field never read"
            out.append(f"{name} is {_short(given[name])}, {why}")
        elif name not in given:
            out.append(f"{name} is absent, expected {_short(again[name])}")
        elif _canonical({"v": given[name]}) != _canonical({"v": again[name]}):
            out.append(f"{name} is {_short(given[name])}, read as {_short(again[name])}")
    return out


def _short(value: object) -> str:
    """``value`` as JSON, cut to a length a message can quote."""
    return _cut(json.dumps(value, sort_keys=True))


def _cut(text: str) -> str:
    """``text`` cut to a length a message can quote."""
    return cut(text, 80)


def _check_spec(t: TensorSpec) -> str:
    """What is wrong with a table entry seal never writes ('' if nothing): the code that reads it assumes these."""
    fmt = FLOATS.get(t.dtype)
    if t.dtype not in ST_TO_NP:
        return f"tensor {t.name!r} has dtype {t.dtype!r}, which is never sealed"
    if not (0 <= t.k < fmt.mantissa if fmt else t.k == 0):  # 0: a float tensor left unsealed
        return f"tensor {t.name!r} carries k={t.k} low bits, out of range for {t.dtype}"
    if any(d < 0 for d in t.shape) or not 0 <= t.reserved <= t.nblocks:
        return f"tensor {t.name!r} has shape {list(t.shape)} and {t.reserved} reserved blocks"
    return ""


def _is_hex_digest(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _hex_digest(value: object) -> str | None:
    """``own_metadata_sha256``: 64 hex digits, or absent."""
    if value is None or isinstance(value, str) and _is_hex_digest(value):
        return value
    raise ValueError(f"own_metadata_sha256 is {value!r}, not a SHA-256 digest")


def _room(value: object) -> int:
    """``safetensors_header_bytes``: a whole number of bytes (0: none recorded)."""
    if type(value) is not int or value < 0:
        raise ValueError(f"safetensors_header_bytes is {value!r}, not a number of bytes")
    return value


class MalformedHeaderError(FormatError):
    """A header that is no JSON object (`peek_header`); ``why`` says how in words, for a message naming where it lay."""

    def __init__(self, why: str) -> None:
        super().__init__(f"the ParamSeal header is malformed ({why})")
        self.why = why


def peek_header(text: str) -> dict[str, Any]:
    """Read a header without a key (for ``inspect``); nothing in it is trusted."""
    try:
        if len(text) > _MAX_HEADER_CHARS:
            raise ValueError(f"it is {len(text)} characters long")
        body = _loads(text)
    except ValueError as e:
        raise MalformedHeaderError(_malformed(text, e)) from None
    if not isinstance(body, dict):
        raise MalformedHeaderError(_no_object(body))
    return body


def _no_object(body: Any) -> str:
    """What a header's JSON is instead of an object, in the words both verify and inspect give."""
    kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(body), "number")
    return f"it is a JSON {kind}, not an object"


__all__ = [
    "METADATA_KEY",
    "READS",
    "SCHEME",
    "SCHEME_IRS",
    "Header",
    "HeaderAuthError",
    "MalformedHeaderError",
    "metadata_digest",
    "missing_fields",
    "no_fields",
    "own_entries",
    "parse_header",
    "peek_header",
]
