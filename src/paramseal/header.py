"""The seal header: every setting that shapes the watermark, authenticated with HMAC-SHA256.

It travels as a JSON string under the ``paramseal`` key of the file's metadata.
A verifier configures itself from the header alone, after checking the key
fingerprint and the header MAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._layout import TensorSpec
from .errors import FormatError, KeyMismatchError
from .keys import Key
from .levels import BLOCK

SCHEME = "paramseal/1"
METADATA_KEY = "paramseal"
MAC_NAME = "mlh-p32+aes256ctr"
CODE_NAME = "rs-gf16-leopard"
_MAX_HEADER_CHARS = 64 << 20


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
    user_metadata: dict[str, str] = field(default_factory=dict)
    scheme: str = SCHEME
    block: int = BLOCK
    mac: str = MAC_NAME
    code: str = CODE_NAME
    shard_bytes: int = 4

    def body(self) -> dict[str, Any]:
        """The JSON-able fields, without the MAC."""
        return {
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
            "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "k": t.k} for t in self.tensors],
            "external_tags": {
                str(i): base64.b64encode(v.astype("<u4").tobytes()).decode()
                for i, v in sorted(self.external_tags.items())
            },
            "user_metadata": dict(sorted(self.user_metadata.items())),
        }

    def to_json(self, key: Key) -> str:
        """Serialise and authenticate with a key-derived HMAC."""
        body = self.body()
        body["hmac"] = _mac(key, body)
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _mac(key: Key, body: dict[str, Any]) -> str:
    return hmac.new(key.derive("header"), _canonical(body), hashlib.sha256).hexdigest()


class HeaderAuthError(FormatError):
    """The header's MAC does not verify: it was edited or corrupted."""

    exit_code = 2


def parse_header(text: str, key: Key) -> Header:
    """Parse and authenticate a header; raise on a wrong key or an edited header."""
    try:
        if len(text) > _MAX_HEADER_CHARS:
            raise ValueError(f"{len(text)} characters")
        body = json.loads(text)
        if not isinstance(body, dict):
            raise ValueError("not an object")
        stored_fp = str(body["key_fingerprint"])
        claimed = body.pop("hmac")
        if not (isinstance(claimed, str) and len(claimed) == 64 and all(c in "0123456789abcdef" for c in claimed)):
            raise ValueError("its MAC is not 64 hex digits")
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise HeaderAuthError(
            f"the ParamSeal header is malformed ({e}); it was edited or corrupted, so the model cannot be trusted"
        ) from None
    if not str(body.get("scheme", "")).startswith("paramseal/"):
        raise HeaderAuthError(f"the ParamSeal header names no ParamSeal scheme ({body.get('scheme')!r}): it was edited")
    if body.get("scheme") != SCHEME:
        raise FormatError(
            f"seal scheme {body.get('scheme')!r} is not supported by this ParamSeal (it reads {SCHEME}); "
            "upgrade ParamSeal, or the header was edited"
        )
    if stored_fp != key.fingerprint:
        # With the fingerprint put back, does the header authenticate under this key? Then the
        # key is right and the fingerprint was edited: that is tampering, not a key mix-up.
        if hmac.compare_digest(claimed, _mac(key, {**body, "key_fingerprint": key.fingerprint})):
            raise HeaderAuthError("the ParamSeal header does not authenticate: its key fingerprint was edited")
        raise KeyMismatchError(stored_fp, key.fingerprint)
    if not hmac.compare_digest(claimed, _mac(key, body)):
        raise HeaderAuthError(
            "the ParamSeal header does not authenticate: its settings or tensor table were edited; "
            "the weights cannot be checked against an untrusted header"
        )
    # The MAC covers every parsed field, not the JSON bytes: re-serialising the same fields
    # (another indent or key order, as JSON tools do) keeps the seal; any change of meaning fails.
    try:
        tensors = tuple(
            TensorSpec(str(t["name"]), str(t["dtype"]), tuple(int(d) for d in t["shape"]), int(t["k"]))
            for t in body["tensors"]
        )
        ext = {
            int(i): np.frombuffer(base64.b64decode(v), dtype="<u4").astype(np.uint64)
            for i, v in body["external_tags"].items()
        }
        return Header(
            level=str(body["level"]),
            bits=None if body["bits"] is None else int(body["bits"]),
            salt=bytes.fromhex(body["salt"]),
            key_fingerprint=stored_fp,
            lanes=int(body["lanes"]),
            tensors=tensors,
            external_tags=ext,
            user_metadata={str(k): str(v) for k, v in body["user_metadata"].items()},
            block=int(body["block"]),
            mac=str(body["mac"]),
            code=str(body["code"]),
            shard_bytes=int(body["shard_bytes"]),
        )
    except (KeyError, TypeError, ValueError) as e:  # authenticated but unreadable: a writer bug
        raise FormatError(f"the ParamSeal header is authentic but unreadable: {e}") from None


def peek_header(text: str) -> dict[str, Any]:
    """Read a header without a key (for ``inspect``); nothing in it is trusted."""
    try:
        if len(text) > _MAX_HEADER_CHARS:
            raise ValueError(f"it is {len(text)} characters long")
        body = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise FormatError(f"the ParamSeal header is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise FormatError("the ParamSeal header is not a JSON object")
    return body


__all__ = ["METADATA_KEY", "SCHEME", "Header", "HeaderAuthError", "parse_header", "peek_header"]
