"""NumPy files: ``.npz`` archives (many named arrays plus metadata) and ``.npy`` (one array).

Both are read with ``allow_pickle=False`` always: an object array in a file is
refused, never unpickled.

``.npz``: one member ``<name>.npy`` per tensor, in order, uncompressed (what
``np.savez`` writes). String metadata lives in the reserved member
``__paramseal_metadata__.npy``: a 0-d unicode array holding a JSON object of
strings (never a pickle). It is hidden from the tensor mapping, and a tensor may
not use that name.

``.npy``: a single array; its tensor name is always ``"array"`` (not the file
stem, so that sealing ``a.npy`` into ``b.npy`` keeps the name the seal records).
There is no room for metadata (``keeps_metadata = False``).

bfloat16: ``np.save`` writes ml_dtypes' bfloat16 as raw ``V2`` bytes and loses
the type, so ParamSeal writes the header descr ``'bfloat16'``. ``np.load``
reads such a file back as bfloat16 whenever ml_dtypes is imported. A ``V2``
array written by someone else (``V1``: float8; ``<f1``, float8_e5m2, which
``np.load`` cannot read) is read as raw bytes: seal refuses
it, since its real dtype cannot be known, and verify reports a sealed tensor saved
so as retyped (tampering, which recover restores).
"""

from __future__ import annotations

import io
import json
import re
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any, cast

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

from .. import _json
from .._embed import header_copies
from .._pages import CHUNK_BYTES, read
from ..errors import FormatError, UsageError
from ..header import METADATA_KEY
from ._headerless import require_header_in_weights
from .base import Loaded, reason

#: Reserved ``.npz`` member (without ``.npy``) that holds the metadata JSON.
METADATA_ENTRY = "__paramseal_metadata__"
#: Tensor name of the single array in a ``.npy`` file.
NPY_TENSOR_NAME = "array"

_NPY_MAGIC = b"\x93NUMPY"
_BF16 = np.dtype(ml_dtypes.bfloat16)
_STEP = 64 << 20  # bytes read per call
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, struct.error, UnicodeDecodeError,
                SyntaxError, TypeError, MemoryError, zlib.error, NotImplementedError)  # fmt: skip


class NpzAdapter:
    """Adapter for ``.npz`` archives of named arrays."""

    name = "npz"
    extensions: tuple[str, ...] = (".npz",)
    keeps_metadata = True
    carried_metadata: frozenset[str] = frozenset()

    def sniff(self, head: bytes) -> bool:
        """A zip archive whose first member is ``<name>.npy`` (a torch archive starts with ``.../data.pkl``)."""
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            return False
        n = struct.unpack("<H", head[26:28])[0]
        return len(head) >= 30 + n and head[30 : 30 + n].endswith(b".npy")

    def read(self, path: Path) -> Loaded:
        """Read every member in archive order; the reserved metadata member becomes ``metadata``."""
        tensors: dict[str, NDArray[np.generic]] = {}
        meta: dict[str, str] = {}
        bad_crc: list[str] = []
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if not info.filename.endswith(".npy"):
                        raise FormatError(
                            f"'{path}' has member '{info.filename}', which is not a .npy array; "
                            "an .npz model holds only <name>.npy members"
                        )
                    name = info.filename[: -len(".npy")]
                    if info.flag_bits & 0x1:  # zipfile would raise RuntimeError: np.load cannot read it either
                        raise FormatError(
                            f"'{path}': member '{info.filename}' is encrypted, which neither np.load nor ParamSeal "
                            "reads; save the arrays again with np.savez (or the zip flag was damaged: take a good copy)"
                        )
                    with zf.open(info) as raw:
                        # A flipped bit must reach verify (located, recoverable), not fail as a corrupt zip:
                        # zipfile's own CRC-32 check is off and the CRC is compared after the archive is read.
                        raw._expected_crc = None  # type: ignore[attr-defined]
                        f = _CrcReader(raw)
                        arr = _read_npy(cast(IO[bytes], f), f"'{path}': member '{info.filename}'")
                        if f.read(1):
                            raise FormatError(f"'{path}': member '{info.filename}' has bytes after its array data")
                    if f.crc != info.CRC:
                        bad_crc.append(info.filename)
                    if name == METADATA_ENTRY:
                        meta = _parse_metadata(arr, path)
                    elif name in tensors:
                        raise FormatError(f"'{path}' has two members named '{info.filename}'")
                    else:
                        tensors[name] = arr
        except FormatError:
            raise
        except _READ_ERRORS as e:
            raise FormatError(f"cannot read .npz file '{path}' (truncated or corrupt): {reason(e)}") from None
        if not tensors:
            raise FormatError(f"'{path}' holds no arrays: there are no tensors to read")
        shown = ", ".join(repr(n) for n in bad_crc)
        if bad_crc and METADATA_KEY not in meta and not header_copies(tensors):
            raise FormatError(
                f"'{path}' is corrupt: member(s) {shown} fail their CRC-32 check and "
                "the archive is not sealed, so nothing can tell which values changed; restore it from a good copy"
            )
        # The seal covers values, not zip bytes: a CRC edited alone would pass verify yet break np.load.
        issues = (
            f"zip member(s) {shown} fail their CRC-32 check, so np.load refuses the archive (recover writes a new one)",
        )
        return Loaded(tensors, meta, container_issues=issues if bad_crc else ())

    def write(self, path: Path, loaded: Loaded) -> None:
        """Write one uncompressed ``<name>.npy`` member per tensor, then the metadata member if any."""
        if METADATA_ENTRY in loaded.tensors:
            raise UsageError(f"tensor name '{METADATA_ENTRY}' is reserved for ParamSeal's .npz metadata; rename it")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, a in loaded.tensors.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                    write_npy(f, a)
            if loaded.metadata:
                text = json.dumps(dict(loaded.metadata), ensure_ascii=False, sort_keys=True)
                with zf.open(f"{METADATA_ENTRY}.npy", "w", force_zip64=True) as f:
                    write_npy(f, np.array(text))


class NpyAdapter:
    """Adapter for ``.npy`` files: one array, named ``"array"``, no metadata."""

    name = "npy"
    extensions: tuple[str, ...] = (".npy",)
    keeps_metadata = False
    carried_metadata: frozenset[str] = frozenset()

    def sniff(self, head: bytes) -> bool:
        """The .npy magic bytes (0x93 then ``NUMPY``)."""
        return head.startswith(_NPY_MAGIC)

    def read(self, path: Path) -> Loaded:
        """Read the single array as tensor ``"array"``."""
        try:
            with open(path, "rb") as f:
                arr = _read_npy(f, f"'{path}'")
                if f.read(1):
                    raise FormatError(f"'{path}' has bytes after its array data (corrupt or not a .npy file)")
        except FormatError:
            raise
        except _READ_ERRORS as e:
            raise FormatError(f"cannot read .npy file '{path}' (truncated or corrupt): {reason(e)}") from None
        return Loaded({NPY_TENSOR_NAME: arr}, {})

    def write(self, path: Path, loaded: Loaded) -> None:
        """Write the model's only tensor; a model of several tensors needs ``.npz``."""
        if len(loaded.tensors) != 1:
            raise UsageError(
                f"a .npy file holds exactly one array, but this model has {len(loaded.tensors)} tensors; "
                "write it as .npz or .safetensors instead"
            )
        require_header_in_weights(loaded, ".npy", self.carried_metadata)
        with open(path, "wb") as f:
            write_npy(f, next(iter(loaded.tensors.values())))


def write_npy(f: IO[bytes], a: NDArray[np.generic]) -> None:
    """Write ``a`` in .npy format 1.0/2.0, C order; bfloat16 gets the descr ``'bfloat16'``."""
    c = a if a.flags.c_contiguous else a.copy(order="C")
    if c.dtype.hasobject:
        raise UsageError("object arrays cannot be written: ParamSeal never pickles")
    descr: Any = "bfloat16" if c.dtype == _BF16 else np.lib.format.dtype_to_descr(c.dtype)
    header = {"descr": descr, "fortran_order": False, "shape": c.shape}
    try:
        np.lib.format.write_array_header_1_0(f, header)
    except ValueError:  # header over 64 KiB (a huge shape tuple): version 2.0
        np.lib.format.write_array_header_2_0(f, header)
    raw = c.reshape(-1).view(np.uint8)
    for i in range(0, raw.size, CHUNK_BYTES):  # an input file's values with pread: one cut short is an error
        f.write(read(raw[i : i + CHUNK_BYTES]).data)


def _read_npy(f: IO[bytes], what: str) -> NDArray[np.generic]:
    """Read one .npy stream without pickles; non-native byte order and Fortran order become native C order."""
    magic = f.read(6)
    if magic != _NPY_MAGIC:
        raise FormatError(f"{what} is not a .npy array (it does not start with the \\x93NUMPY magic)")
    ver = f.read(2)
    if len(ver) != 2:
        raise FormatError(f"{what} is truncated inside its .npy header")
    read_header = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }.get((ver[0], ver[1]))
    if read_header is None:
        raise FormatError(f"{what} has .npy format version {ver[0]}.{ver[1]}; supported: 1.0, 2.0")
    seen = _Recorder(f)
    try:
        try:
            shape, fortran, dtype = read_header(seen)
        except ValueError:
            # np.save writes ml_dtypes' float8_e5m2 as '<f1', which numpy cannot read back: read its bytes as the
            # raw |V1 np.save writes the other float8 types as (verify reports a sealed tensor saved so as retyped)
            raw = re.sub(rb"('descr':\s*')[<>|=]f1'", rb"\1|V1'", seen.data, count=1)  # same length
            if raw == seen.data:
                raise
            shape, fortran, dtype = read_header(io.BytesIO(raw))
    except tokenize.TokenError:  # from numpy's fallback parser (for Python 2 headers), not a ValueError
        raise FormatError(
            f"{what} has a malformed .npy header (a bracket or string in it is never closed): it is corrupt"
        ) from None
    if dtype.hasobject:
        raise FormatError(f"{what} is an object array; ParamSeal never unpickles, so it reads numeric arrays only")
    if dtype.subdtype is not None:  # only a crafted header holds one: numpy writes its base type, a longer shape
        base, sub = dtype.subdtype
        raise FormatError(
            f"{what} has a subarray dtype ({base.str} in blocks of shape {sub}); ParamSeal reads plain numeric "
            f"arrays: save the data as a {base.str} array of shape {tuple(shape) + tuple(sub)} (np.save writes it so)"
        )
    if dtype.names is not None:  # also kind "V": not a raw bfloat16
        raise FormatError(
            f"{what} is a structured array (dtype {dtype.descr}); ParamSeal reads plain numeric arrays: "
            "save each field as an array of its own (np.savez(path, **{n: a[n] for n in a.dtype.names}))"
        )
    # a raw void (ml_dtypes' types as np.save writes them) is read as such: seal refuses it (levels.dtype_name),
    # verify reports a sealed tensor saved so as retyped
    count = 1
    for d in shape:
        count *= int(d)
    nbytes = count * dtype.itemsize
    # Read in place: a writable array without a second copy of the data. np.empty, not bytearray,
    # which zero-fills: a header that promises more than the file holds must not cost that memory.
    buf = np.empty(nbytes, np.uint8)
    view, got = buf.data, 0
    while got < nbytes:
        # in steps: a zip member's reader copies what each call asks for into a new buffer first
        n = f.readinto(view[got : got + _STEP])  # type: ignore[attr-defined]
        if not n:
            raise FormatError(f"{what} is truncated: its header promises {nbytes} bytes of data, found {got}")
        got += n
    arr: NDArray[np.generic] = np.frombuffer(buf, dtype=dtype).reshape(shape[::-1] if fortran else shape)
    if fortran:
        arr = arr.T.copy(order="C")
    if dtype.byteorder == ">":
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


class _Recorder:
    """Reads through ``f`` and keeps what was read (a .npy header, to read again if numpy refuses its dtype)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.data = b""

    def read(self, n: int = -1) -> bytes:
        got = self._f.read(n)
        self.data += got
        return got


class _CrcReader(io.RawIOBase):
    """Reads through ``f`` and keeps the CRC-32 of every byte read."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.crc = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n: int = self._f.readinto(b)  # type: ignore[attr-defined]
        self.crc = zlib.crc32(memoryview(b)[:n], self.crc)
        return n


def _parse_metadata(arr: NDArray[np.generic], path: Path) -> dict[str, str]:
    bad = f"'{path}': the reserved member '{METADATA_ENTRY}.npy' must be a 0-d string holding a JSON object of strings"
    if arr.dtype.kind != "U" or arr.shape != ():
        raise FormatError(f"{bad}; found dtype {arr.dtype} and shape {arr.shape}")
    # numpy makes a str of any 32-bit code, and one past U+10FFFF is a str Python's own code fails on (SystemError)
    codes = np.frombuffer(np.ascontiguousarray(arr).tobytes(), dtype=np.uint32)
    if (past := codes[codes > 0x10FFFF]).size:
        raise FormatError(f"{bad}; it holds {int(past[0]):#x}, which is no Unicode character: the file is corrupt")
    try:
        meta = _json.loads(str(arr[()]))
    except ValueError as e:
        raise FormatError(f"{bad}; it is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise FormatError(f"{bad}; found {type(meta).__name__} with non-string entries")
    return meta


__all__ = ["METADATA_ENTRY", "NPY_TENSOR_NAME", "NpyAdapter", "NpzAdapter", "write_npy"]
