"""What a seal header holds and how it is written: the `Header` fields, their JSON body and its MAC.

Seal builds a `Header` and writes it (`Header.to_json`); `header` reads one back, authenticates
it and checks its fields (`header.parse_header`), and re-exports the public names from here.
Kept apart so that the writer's side reads without the reader's many checks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._layout import TensorSpec
from ._mac import MAC_NAME
from .keys import Key
from .levels import BLOCK

SCHEME = "paramseal/2"
#: v3: the same header with the interleaved Reed–Solomon code (``_irs``) instead of lanes.
SCHEME_IRS = "paramseal/3"
OWN_PREFIX = "paramseal."  # metadata entries ParamSeal itself writes into a model's metadata
CODE_NAME = "rs-gf16-leopard"
SHARD_BYTES = 4  # bytes of a parity shard: one 32-bit word
READS = ("paramseal/1", SCHEME, SCHEME_IRS)
SALT_BYTES = 16


@dataclass(frozen=True, slots=True)
class Header:
    """Authenticated description of one seal."""

    level: str
    bits: int | None
    salt: bytes
    key_fingerprint: str
    lanes: int
    tensors: tuple[TensorSpec, ...]
    external_tags: dict[int, NDArray[np.uint64]] = field(default_factory=dict)
    #: None when unknown: the header was read from the weights and the file's metadata is gone.
    user_metadata: dict[str, str] | None = field(default_factory=dict)
    metadata_digest: str | None = None  # v2: set when user_metadata is None
    own_metadata_digest: str | None = None  # v2: likewise, the digest of ParamSeal's own entries (`own_digest`)
    #: False for a seal made before own_metadata_sha256: written back without it, as sealed (its MAC, its room)
    own_field: bool = True
    carriers: tuple[int, ...] = ()  # v2: tensors holding a copy of this header in their weights
    scheme: str = SCHEME
    block: int = BLOCK
    mac: str = MAC_NAME
    code: str = CODE_NAME
    shard_bytes: int = SHARD_BYTES
    strata: int = 0  # v3: words per stratum (the number of code groups)
    host: int = 0  # v3: free bytes per codeword that carry the outer code
    strata_perms: int = 0  # v3: keyed position permutations of the groups (absent, 0, in the first v3 seals)
    keyed_offset: bool = False  # v3: the code runs on the words plus a keyed pad (absent in the first v3 seals)
    copies: int = 1  # v2+: header copies in each carrier (absent, 1, in seals before there were more)
    #: v2+: the safetensors header length (the file's first 8 bytes) a sealed file was written with, its
    #: padding included, so that recover writes the sealed file back byte for byte (0: not recorded).
    st_room: int = 0

    @property
    def irs(self) -> bool:
        """Whether the parity is the interleaved Reed–Solomon code (v3) rather than lanes."""
        return self.scheme == SCHEME_IRS

    @property
    def digest(self) -> str:
        """SHA-256 of the user metadata the model was sealed with (v2)."""
        if self.user_metadata is None:
            return self.metadata_digest or ""
        return metadata_digest(self.user_metadata)

    @property
    def own_digest(self) -> str | None:
        """SHA-256 of ParamSeal's own metadata entries (a weight tie, a graph digest), None if there are none.

        A file that holds no user metadata (a .pt saved again by torch) keeps only these: without the header's copy
        of the metadata, this digest is what checks them (a tie dropped, added or re-pointed).
        Absent from seals before 2026-12-01: None then says nothing.
        """
        return self.own_metadata_digest if self.user_metadata is None else _own_digest(self.user_metadata)

    def body(self) -> dict[str, Any]:
        """The fields the MAC covers."""
        v1 = self.scheme == "paramseal/1"
        body: dict[str, Any] = {
            "scheme": self.scheme,
            "level": self.level,
            "bits": self.bits,
            "block": self.block,
            "mac": self.mac,
            "code": self.code,
            "shard_bytes": self.shard_bytes,
            "lanes": self.lanes,
            "salt": self.salt.hex(),
            "key_fingerprint": self.key_fingerprint,
            "tensors": [
                {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "k": t.k}
                | ({} if v1 else {"reserved": t.reserved})
                for t in self.tensors
            ],
            "external_tags": {
                str(i): base64.b64encode(v.astype("<u4").tobytes()).decode()
                for i, v in sorted(self.external_tags.items())
            },
        }
        if v1:
            body["user_metadata"] = dict(sorted((self.user_metadata or {}).items()))
        else:
            body["user_metadata_sha256"] = self.digest
            body["carriers"] = list(self.carriers)
            if self.copies != 1:  # absent from older seals: their MAC covers no such field
                body["header_copies"] = self.copies
            if self.st_room:  # absent where no file was written (and from older seals)
                body["safetensors_header_bytes"] = self.st_room
            if self.own_field and (own := self.own_digest) is not None:  # absent where none were sealed
                body["own_metadata_sha256"] = own
        if self.irs:
            body["strata"] = self.strata
            body["outer_host"] = self.host
            if self.strata_perms:  # absent from the first v3 seals: their MAC covers no such field
                body["strata_perms"] = self.strata_perms
            if self.keyed_offset:
                body["keyed_offset"] = 1
        return body

    def to_json(self, key: Key, *, embedded: bool = False) -> str:
        """Serialise and authenticate with a key-derived HMAC.

        ``embedded`` leaves out the user metadata (the MAC covers only its digest):
        that is the copy written into the weights.
        """
        body = self.body()
        body["hmac"] = _mac(key, body)
        if not embedded and self.scheme != "paramseal/1" and self.user_metadata is not None:
            body["user_metadata"] = dict(sorted(self.user_metadata.items()))
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


def own_entries(meta: Mapping[str, str]) -> dict[str, str]:
    """ParamSeal's own entries of the metadata (``paramseal.*``: a weight tie, a graph digest)."""
    return {k: v for k, v in meta.items() if k.startswith(OWN_PREFIX)}


def metadata_digest(meta: dict[str, str]) -> str:
    """SHA-256 (hex) of user metadata in canonical JSON."""
    return hashlib.sha256(_canonical(dict(sorted(meta.items())))).hexdigest()


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _mac(key: Key, body: dict[str, Any]) -> str:
    return _mac_of(key, _canonical(body))


def _mac_of(key: Key, canonical: bytes) -> str:
    """The header MAC of a body already in canonical JSON (`_canonical`)."""
    return hmac.new(key.derive("header"), canonical, hashlib.sha256).hexdigest()


#: What `Header.to_json` adds to the canonical body for the MAC: ``,"hmac":"<64 hex digits>"`` (all ASCII).
HMAC_FIELD_CHARS = len(',"hmac":""') + 64


def _own_digest(meta: dict[str, str]) -> str | None:
    own = own_entries(meta)
    return metadata_digest(own) if own else None


def _fields(scheme: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """The fields every header of ``scheme`` holds (in the order written), and those it may hold.

    Both are read off what `Header.body` writes: the serializer is the one list, so a field it gains
    is required here with it (or allowed, once ``full`` below sets what makes it written).
    """
    bare = Header("standard", None, bytes(SALT_BYTES), "", 0, (), scheme=scheme, own_field=False)
    full = replace(
        bare,
        user_metadata={OWN_PREFIX + "x": ""},
        own_field=True,
        carriers=(0,),
        copies=2,
        st_room=1,
        strata_perms=1,
        keyed_offset=True,
    )
    return (*bare.body(), "hmac"), frozenset(full.body()) | {"hmac", "user_metadata"}


def missing_fields(body: Mapping[str, Any]) -> list[str]:
    """The fields `parse_header` needs that a (peeked, untrusted) header lacks, in the order written.

    For a header without a scheme, those every scheme this version reads needs; none for a scheme it
    does not read (that is what to report of it).
    """
    scheme = body.get("scheme")
    if scheme in READS:
        need = list(_fields(scheme)[0])
    elif "scheme" in body:
        return []
    else:
        each = [_fields(s)[0] for s in READS]
        need = [f for f in each[-1] if all(f in fs for fs in each)]
    return [f for f in need if f not in body]


class _MissingFields(ValueError):
    """A header lacks fields it needs (`missing_fields`), all named in one message."""

    def __init__(self, fields: list[str]) -> None:
        super().__init__(fields)
        self.fields = fields


def no_fields(fields: list[str]) -> str:
    """``no 'a', 'b' fields``: the missing fields, as inspect and verify both name them."""
    return f"no {', '.join(map(repr, fields))} {'field' if len(fields) == 1 else 'fields'}"
