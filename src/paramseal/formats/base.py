"""The adapter interface every format implements."""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from ..levels import NIBBLE

#: Metadata entry holding the sealed `Loaded.graph` digest.
GRAPH_KEY = "paramseal.graph"


def reason(e: BaseException) -> str:
    """Why a reader could not read a file, in words: a library's own message, never Python's class names.

    numpy's header checks and zipfile say what is wrong in words (their first line is kept: a reader's
    refusal may go on with advice for its own caller, numpy's allow_pickle for a long .npy header); a
    KeyError's, struct's ("unpack requires a buffer of 4 bytes") or a codec's text says nothing to the user.
    """
    for kind, said in _SAID:
        if isinstance(e, kind):
            return said
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if type(e) in (ValueError, zipfile.BadZipFile) and first and " object at 0x" not in first:  # ast's node repr
        return first
    return "its contents do not parse"


_SAID: tuple[tuple[type[BaseException], str], ...] = (
    (EOFError, "it ends early"),
    (MemoryError, "it asks for more memory than is free"),
    (UnicodeDecodeError, "text in it is not valid UTF-8"),
    (struct.error, "a record in it is cut short or malformed"),
    (zlib.error, "a compressed member of it is damaged"),
)


def _umask() -> int:
    """The process umask, read from /proc where it is there.

    ``os.umask`` can only read it by setting it, and for that moment a file another thread
    creates gets the wrong mode.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_mode(folder: bool = False) -> int:
    """The mode the umask gives a new file (or folder): what mkstemp's 0600 and mkdtemp's 0700 become."""
    return (0o777 if folder else 0o666) & ~_umask()


def shape_error(shape: tuple[int, ...], dtype: np.dtype[np.generic]) -> str | None:
    """Why numpy cannot make an array of this shape and dtype, or None.

    Too many dimensions, or more bytes than it can address: numpy counts the other dimensions
    even when one is 0, so an empty tensor's header can still name a shape no array can have.
    """
    try:
        np.broadcast_to(np.empty((), dtype), shape)  # a view: nothing is allocated
    except ValueError as e:
        return str(e)
    return None


def stored_size(dtype: np.dtype[np.generic], count: int) -> int:
    """Bytes ``count`` values of ``dtype`` take in a file: a 4-bit dtype (levels.NIBBLE) packs two a byte."""
    return (count + 1) // 2 if dtype in NIBBLE else count * dtype.itemsize


def unpack4(raw: bytes | NDArray[np.generic], dt: np.dtype[np.generic], shape: tuple[int, ...]) -> NDArray[np.generic]:
    """4-bit values packed two a byte, low nibble first (ONNX's order), as ``dt`` one a byte (a copy)."""
    b = np.frombuffer(raw, np.uint8) if isinstance(raw, bytes) else raw.reshape(-1).view(np.uint8)
    out = np.empty(2 * b.size, np.uint8)
    out[0::2], out[1::2] = b & 0x0F, b >> 4
    return out[: math.prod(shape)].view(dt).reshape(shape)


def pack4(a: NDArray[np.generic]) -> NDArray[np.uint8]:
    """``a``'s 4-bit values (one a byte, in the low nibble) packed two a byte; an odd count's last high nibble is 0."""
    u = np.ascontiguousarray(a).reshape(-1).view(np.uint8) & 0x0F
    if u.size % 2:
        u = np.concatenate((u, np.zeros(1, np.uint8)))
    out: NDArray[np.uint8] = u[0::2] | (u[1::2] << np.uint8(4))
    return out


@dataclass(frozen=True, slots=True)
class Loaded:
    """Tensors (name -> array, in file order) and the file's string metadata."""

    tensors: dict[str, NDArray[np.generic]]
    metadata: dict[str, str] = field(default_factory=dict)
    #: What the adapter needs besides the tensors to write the same file again (an ONNX graph);
    #: ``files`` passes it from the input to the output. None for formats that need nothing.
    source: object | None = field(default=None, repr=False, compare=False)
    #: Entries the file holds besides the model, which the adapter read past (the other entries of a
    #: training checkpoint). A sealed file never has any: verify reports them, recover drops them.
    others: tuple[str, ...] = ()
    #: Damage to the file's container outside the tensors and metadata, one message each (an .npz
    #: member whose zip CRC-32 no longer matches: np.load refuses the file though its values verify).
    #: A sealed file never has any: verify reports them as tampering, recover writes a new container.
    container_issues: tuple[str, ...] = ()
    #: A digest of what the file holds besides tensor values that a loader runs (an ONNX graph: nodes,
    #: attributes, inputs, outputs), or None. Sealed with the metadata under ``GRAPH_KEY``.
    graph: str | None = None
    #: Whether this file holds its metadata, where its format only may (a ``.pt`` written before its
    #: state dict kept ParamSeal's entry holds none); None: as the format's ``keeps_metadata`` says.
    metadata_kept: bool | None = None


@runtime_checkable
class Adapter(Protocol):
    """Reads and writes one model file format."""

    @property
    def name(self) -> str:
        """Short format name, as given to ``--format``."""
        ...

    @property
    def extensions(self) -> tuple[str, ...]:
        """Lower-case file extensions, with the dot."""
        ...

    @property
    def keeps_metadata(self) -> bool:
        """Whether the format stores string metadata (the seal header and the user's)."""
        ...

    @property
    def carried_metadata(self) -> frozenset[str]:
        """Metadata keys written back in the file's own terms where it stores no metadata (a .pt's ties)."""
        ...

    def sniff(self, head: bytes) -> bool:
        """Whether the first bytes of a file look like this format."""
        ...

    def read(self, path: Path) -> Loaded:
        """Read every tensor and the metadata; raise FormatError on malformed input."""
        ...

    def write(self, path: Path, loaded: Loaded) -> None:
        """Write to ``path`` (the caller makes the write atomic)."""
        ...
