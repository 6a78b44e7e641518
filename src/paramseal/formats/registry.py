"""Pick an adapter by explicit name, file extension or content."""

from __future__ import annotations

from pathlib import Path

from ..errors import FormatError, UsageError
from .base import Adapter
from .safetensors import SafetensorsAdapter

_ADAPTERS: dict[str, Adapter] = {}


def register(adapter: Adapter) -> None:
    """Make an adapter available by its name and extensions."""
    _ADAPTERS[adapter.name] = adapter


register(SafetensorsAdapter())


def adapter_for(path: Path, fmt: str | None = None, *, must_exist: bool = True) -> Adapter:
    """The adapter for ``path``: ``fmt`` if given, else by extension, else by content."""
    if fmt is not None:
        try:
            return _ADAPTERS[fmt]
        except KeyError:
            raise UsageError(f"unknown format '{fmt}'; known: {', '.join(sorted(_ADAPTERS))}") from None
    suffix = path.suffix.lower()
    for a in _ADAPTERS.values():
        if suffix in a.extensions:
            return a
    if must_exist and path.is_file():
        with open(path, "rb") as f:
            head = f.read(64)
        for a in _ADAPTERS.values():
            if a.sniff(head):
                return a
    known = ", ".join(e for a in _ADAPTERS.values() for e in a.extensions)
    raise FormatError(f"cannot tell the format of '{path}': expected one of {known}")
