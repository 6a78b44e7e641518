"""JSON read from outside (a file, a header, metadata, a set record): every way it fails is a ValueError.

Python's parser recurses once per level of nesting, so ``"[" * 100000`` raises RecursionError, which
is no ValueError: a site that caught only ValueError let a crafted file end in a traceback. Sites
parse through `loads` (and `raw_decode`) and catch ValueError alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

_DECODER = json.JSONDecoder()


class TooDeepError(ValueError):
    """JSON nested deeper than the parser can follow."""

    def __init__(self) -> None:
        super().__init__("nested too deep to read")


def loads(text: str | bytes, *, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """``json.loads`` of untrusted ``text``, raising only ValueError (`TooDeepError` where it nests too deep).

    Bytes are read as UTF-8 (a UnicodeDecodeError is a ValueError): json.loads would guess UTF-16 or
    UTF-32 and skip a byte order mark, which no writer of the files read here puts there.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except RecursionError:
        raise TooDeepError from None


def raw_decode(text: str, at: int) -> tuple[Any, int]:
    """The JSON value starting at ``text[at]`` and where it ends, raising only ValueError (as `loads`)."""
    try:
        return _DECODER.raw_decode(text, at)
    except RecursionError:
        raise TooDeepError from None


__all__ = ["TooDeepError", "loads", "raw_decode"]
