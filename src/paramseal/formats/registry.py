"""Pick an adapter by explicit name, file extension or content."""

from __future__ import annotations

from pathlib import Path

from ..errors import FormatError, UsageError
from .base import Adapter
from .numpy import NpyAdapter, NpzAdapter
from .onnx_format import OnnxAdapter
from .pytorch import PyTorchAdapter, is_torchscript, torchscript_error
from .safetensors import SafetensorsAdapter

_ADAPTERS: dict[str, Adapter] = {}


def register(adapter: Adapter) -> None:
    """Make an adapter available by its name and extensions."""
    _ADAPTERS[adapter.name] = adapter


register(SafetensorsAdapter())
register(PyTorchAdapter())
register(NpzAdapter())
register(NpyAdapter())
register(OnnxAdapter())


def adapters() -> tuple[Adapter, ...]:
    """Every registered adapter, in registration order."""
    return tuple(_ADAPTERS.values())


def adapter_for(path: Path, fmt: str | None = None, *, must_exist: bool = True) -> Adapter:
    """The adapter for ``path``: ``fmt`` if given, else the one whose content matches, else by extension."""
    if fmt is not None:
        try:
            return _ADAPTERS[fmt]
        except KeyError:
            raise UsageError(f"unknown format '{fmt}'; known: {', '.join(sorted(_ADAPTERS))}") from None
    if not must_exist and path.is_dir():  # an output path that is a folder: say so, not "cannot tell the format"
        raise UsageError(f"cannot write to '{path}' because it is a directory; give a file path")
    suffix = path.suffix.lower()
    by_ext = [a for a in _ADAPTERS.values() if suffix in a.extensions]
    if must_exist and path.is_file():
        # Content decides when it is clear: ".bin" may hold a torch or a safetensors file. 4 KiB shows
        # a zip's first member name, which tells a torch archive from an .npz.
        with open(path, "rb") as f:
            head = f.read(4096)
        for a in [*by_ext, *_ADAPTERS.values()]:
            if a.sniff(head):
                if by_ext and a not in by_ext and suffix != ".bin":  # .bin names no one format
                    # np.load reads any zip: a torch archive named .npz would verify as one model and
                    # load as another (its extra .npy members)
                    raise FormatError(
                        f"'{path}' is named {suffix} but holds a {a.name} file, which a {suffix} loader would "
                        f"read differently or not at all; rename it to {a.extensions[0]}"
                    )
                return a
    if by_ext:
        return by_ext[0]
    if must_exist and is_torchscript(path):  # silero_vad.jit: say what it is, not just "unknown"
        raise torchscript_error(path)
    known = ", ".join(e for a in _ADAPTERS.values() for e in a.extensions)
    raise FormatError(f"cannot tell the format of '{path}': expected one of {known}")
