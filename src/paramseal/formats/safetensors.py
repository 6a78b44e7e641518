"""safetensors files, read and written with the safetensors library (numpy backend).

The header is validated here first (size, JSON, dtypes, offsets in range,
sorted and non-overlapping, covering the data) because the library accepts
overlapping offsets and a malformed file must fail clearly before anything runs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import safetensors.numpy as stn
from numpy.typing import NDArray
from safetensors import SafetensorError, safe_open

from ..errors import FormatError
from ..levels import ST_TO_NP
from .base import Loaded

_MAX_HEADER = 100 << 20


class SafetensorsAdapter:
    """Adapter for ``.safetensors`` files."""

    name = "safetensors"
    extensions: tuple[str, ...] = (".safetensors", ".st")

    def sniff(self, head: bytes) -> bool:
        """A little-endian header length followed by a JSON object."""
        if len(head) < 9:
            return False
        n = struct.unpack("<Q", head[:8])[0]
        return 2 <= n <= _MAX_HEADER and head[8:9] == b"{"

    def read(self, path: Path) -> Loaded:
        """Validate the header, then load every tensor in file order."""
        order, meta = _validate(path)
        try:
            with safe_open(str(path), framework="numpy") as f:
                tensors = {name: _contiguous(f.get_tensor(name)) for name in order}
        except (SafetensorError, OSError, ValueError, TypeError) as e:
            raise FormatError(f"cannot read safetensors file '{path}': {e}") from None
        return Loaded(tensors, meta)

    def write(self, path: Path, loaded: Loaded) -> None:
        """Write with the library (it orders tensors by dtype alignment, then name)."""
        stn.save_file(
            {k: _contiguous(v) for k, v in loaded.tensors.items()}, str(path), metadata=loaded.metadata or None
        )


def _contiguous(a: NDArray[np.generic]) -> NDArray[np.generic]:
    # np.ascontiguousarray would turn a 0-d tensor into shape (1,)
    return a if a.flags.c_contiguous else a.copy(order="C")


def _validate(path: Path) -> tuple[list[str], dict[str, str]]:
    """Check the header and return tensor names in data order plus the metadata."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise FormatError(f"'{path}' is not a safetensors file: it is {size} bytes, too short for a header")
            n = struct.unpack("<Q", raw)[0]
            if n > _MAX_HEADER or 8 + n > size:
                raise FormatError(
                    f"'{path}' is truncated or not safetensors: header length {n} exceeds the file size {size}"
                )
            text = f.read(n)
    except OSError as e:
        raise FormatError(f"cannot read '{path}': {e.strerror}") from None
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"'{path}' has a malformed safetensors header (invalid JSON: {e})") from None
    if not isinstance(header, dict):
        raise FormatError(f"'{path}' has a malformed safetensors header: not a JSON object")
    meta_raw = header.pop("__metadata__", None) or {}
    if not isinstance(meta_raw, dict) or not all(isinstance(v, str) for v in meta_raw.values()):
        raise FormatError(f"'{path}' has malformed __metadata__: it must map strings to strings")
    spans = []
    data_len = size - 8 - n
    for name, info in header.items():
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            count = 1
            for d in shape:
                if not isinstance(d, int) or d < 0:
                    raise ValueError
                count *= d
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"'{path}': tensor '{name}' has a malformed entry {info!r}") from None
        if dtype not in ST_TO_NP:
            raise FormatError(
                f"'{path}': tensor '{name}' has dtype {dtype}, which ParamSeal does not support; "
                f"supported: {', '.join(sorted(ST_TO_NP))}"
            )
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= data_len):
            raise FormatError(
                f"'{path}': tensor '{name}' has offsets [{start}, {end}] outside the {data_len}-byte data section "
                "(the file is truncated or corrupt)"
            )
        if end - start != count * ST_TO_NP[dtype].itemsize:
            raise FormatError(
                f"'{path}': tensor '{name}' spans {end - start} bytes but dtype {dtype} and shape {shape} need "
                f"{count * ST_TO_NP[dtype].itemsize}"
            )
        spans.append((start, end, name))
    spans.sort()
    pos = 0
    for start, end, name in spans:
        if start < pos:
            raise FormatError(f"'{path}': tensor '{name}' overlaps the tensor before it (offset {start} < {pos})")
        pos = end
    if pos != data_len:
        raise FormatError(f"'{path}': the data section is {data_len} bytes but the tensors cover {pos}")
    return [s[2] for s in spans], {str(k): v for k, v in meta_raw.items()}
