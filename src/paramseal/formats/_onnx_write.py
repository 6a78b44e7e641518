"""Writing new tensor values into an ONNX model: the protos' fields, and external data in fresh side files.

Kept apart from `onnx_format` (the adapter, which decides what graph to fill) because side files have their
own lifecycle: written under names no file has, put in place with the model, and the replaced model's own
removed only after (see `onnx_format`'s docstring).
"""

from __future__ import annotations

import math
import mmap
import os
import re
import secrets
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._file_attrs import give, kept_of
from .._tempname import cut_name, discard_folder, name_max, private_folder, sync_folder
from ..errors import FormatError, ParamSealError, cannot_write
from ..levels import NIBBLE
from ._onnx_tensors import (
    ALL_TYPED,
    EXTERNAL,
    ONNX_OF,
    TYPED_FIELD,
    external_info,
    parse_model,
    proto_dtype,
    tensor_slots,
)
from .base import Loaded, pack4, stored_size

_ALIGN = 4096  # where a tensor moved to the end of its external-data file starts (onnx's page alignment)


def serialize(model: Any, out: str) -> bytes:
    try:
        data: bytes = model.SerializeToString()
    except ValueError as e:  # protobuf refuses messages over 2 GiB
        raise FormatError(
            f"cannot write '{out}': the ONNX model is too large to store inline ({e}); "
            "keep its weights in external data"
        ) from None
    return data


def side_files(onnx: ModuleType, dst: Path) -> frozenset[Path] | None:
    """The external-data files the model at ``dst`` uses (empty if none is there; None if unreadable)."""
    if not dst.exists():
        return frozenset()
    try:
        slots = tensor_slots(parse_model(onnx, dst))
        locs = (external_info(s.proto, s.where)[0] for s in slots if s.proto.data_location == EXTERNAL)
        return frozenset((dst.parent / loc).resolve() for loc in locs)
    except (FormatError, OSError, RuntimeError):  # a loop of links among them: RuntimeError before Python 3.13
        return None


def named_by_others(files: list[Path], model: Path) -> dict[Path, list[str]]:
    """Of ``files``, those another ``.onnx`` file beside ``model`` may use: its bytes hold the name.

    Two models may share one data file (a copy of a model file), and a name alone does not tell whose
    it is. A location is a relative path under the model's folder, stored as a plain string; a file that
    cannot be read counts as using them all.
    """
    found: dict[Path, list[str]] = {}
    if not files:
        return found
    me = model.resolve()
    try:
        others = sorted(f for f in model.parent.iterdir() if f.suffix.lower() == ".onnx" and f.resolve() != me)
    except (OSError, RuntimeError):  # RuntimeError: a loop of links, before Python 3.13
        return {p: ["another model"] for p in files}
    for other in others:
        try:
            if not other.is_file() or not other.stat().st_size:  # mmap refuses a length of 0
                continue
            with open(other, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as raw:
                named = [p for p in files if _locates(raw, os.fsencode(p.name))]
        except OSError:
            named = files
        for p in named:
            found.setdefault(p, []).append(other.name)
    return found


def _locates(raw: mmap.mmap, name: bytes) -> bool:
    """Whether a model's bytes name the file ``name``: as a whole location, or after a folder in one.

    A location is a protobuf string, its length just before it: 'next.onnx.data' holds 'ext.onnx.data',
    which a plain search takes for a use.
    """
    n, size = len(name), b""
    while True:  # the varint of the length
        size += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            break
    i = raw.find(name)
    while i >= 0:
        if raw[max(0, i - len(size)) : i] == size or raw[i - 1 : i] in (b"/", b"\\"):
            return True
        i = raw.find(name, i + 1)
    return False


def our_names(stem: str) -> re.Pattern[str]:
    """The names `SidePlan.relocate` gives side files of an output whose names start with ``stem``."""
    return re.compile(re.escape(stem) + r"(\.[0-9]+)?(\.[0-9a-f]{8})?\.data")


def container(onnx: ModuleType, loaded: Loaded) -> Any:
    """A graph-less model of initializers, for tensors that come from no ONNX graph."""
    inits = []
    for name in loaded.tensors:
        t = onnx.TensorProto()
        t.name = name
        t.raw_data = b""
        inits.append(t)
    graph = onnx.helper.make_graph([], "paramseal", [], [], initializer=inits)
    return onnx.helper.make_model(graph, producer_name="paramseal")


def fill(t: Any, a: NDArray[np.generic], name: str, plan: SidePlan) -> None:
    if a.dtype not in ONNX_OF:
        raise FormatError(f"cannot write tensor '{name}' to ONNX: dtype {a.dtype} has no ONNX equivalent here")
    external = t.data_location == EXTERNAL
    # the length read at its offset (the slot), before the dtype and dims change
    read = stored_size(proto_dtype(t, f"tensor '{name}'"), math.prod(t.dims)) if external else 0
    t.data_type = ONNX_OF[a.dtype]
    del t.dims[:]
    t.dims.extend(a.shape)
    flat = np.ascontiguousarray(a).reshape(-1)
    if external:
        plan.add(t, _stored(flat), name, read)
    elif t.HasField("raw_data") or flat.size == 0:
        t.raw_data = _stored(flat)
    else:
        field = TYPED_FIELD[t.data_type]
        for f in ALL_TYPED:
            t.ClearField(f)
        if a.dtype in NIBBLE:  # one packed byte (two values) in each int32
            vals = pack4(flat).astype(np.int32)
        elif a.dtype.kind == "c":  # real and imaginary parts in float_data (complex64) or double_data
            vals = flat.view(np.float32 if a.dtype == np.complex64 else np.float64)
        elif a.dtype.itemsize <= 2 and a.dtype.kind in "fV":  # float16 / bfloat16 / float8 bit patterns
            vals = flat.view(f"u{a.dtype.itemsize}").astype(np.int32)
        elif field == "int32_data":
            vals = flat.astype(np.int32)
        else:
            vals = flat
        getattr(t, field).extend(vals.tolist())


def _stored(flat: NDArray[np.generic]) -> bytes:
    """``flat``'s values as ONNX stores them: little-endian, and 4-bit ones two a byte."""
    return pack4(flat).tobytes() if flat.dtype in NIBBLE else flat.astype(flat.dtype.newbyteorder("<")).tobytes()


class SidePlan:
    """External-data side files of the output, same tensors at the same offsets, written atomically."""

    def __init__(self, folder: Path, out_name: str) -> None:
        self.folder = folder
        self.out_name = out_name
        self.stem = out_name  # what the side files' names start with (`relocate`)
        self.files: dict[str, list[tuple[int, bytes]]] = {}  # original location -> (offset, bytes)
        self.protos: list[tuple[Any, str]] = []
        self.names: dict[str, str] = {}  # original location -> new side file name
        self.moved: list[tuple[Any, str, bytes]] = []  # tensors that no longer fit their slot (`place_moved`)

    def add(self, t: Any, data: bytes, name: str, read: int) -> None:
        """Write ``data`` at the tensor's offset if it has its slot's length, else after the rest of its file.

        The slot's length is the entry's, or ``read`` where it gives none; the others go to `place_moved`.
        The slot is no other tensor's: reading refuses tensors whose bytes overlap (`refuse_shared`).
        """
        loc, offset, length = external_info(t, f"tensor '{name}'")
        if len(data) != (read if length is None else length):  # e.g. restored from complex64: twice its size
            self.moved.append((t, loc, data))
            return
        self.files.setdefault(loc, []).append((offset, data))
        self.protos.append((t, loc))

    def place_moved(self) -> None:
        """Put the tensors that no longer fit their slot after the rest of their file (the others stay put)."""
        for t, loc, data in self.moved:
            parts = self.files.setdefault(loc, [])
            end = max((o + len(d) for o, d in parts), default=0)
            offset = -(-end // _ALIGN) * _ALIGN
            keep = {e.key: e.value for e in t.external_data} | {"offset": str(offset), "length": str(len(data))}
            del t.external_data[:]
            for k, v in keep.items():
                t.external_data.add(key=k, value=v)
            parts.append((offset, data))
            self.protos.append((t, loc))
        self.moved.clear()

    def relocate(self) -> None:
        """Point every external tensor at its new side file, named after the output.

        A name some file already has gets a fresh suffix instead: it may be the input's or the
        replaced model's data (renaming over it would pair the old model with the new data) or
        another model's.
        """
        n = len(self.files)
        # named after the output, cut where a name would pass the file system's limit (a legal output name)
        room = name_max(self.folder) - len(f".{n}.{secrets.token_hex(4)}.data")
        self.stem = cut_name(self.out_name, room)
        for i, loc in enumerate(self.files, 1):
            stem = self.stem if n == 1 else f"{self.stem}.{i}"
            name = f"{stem}.data"
            while self._taken(name):
                name = f"{stem}.{secrets.token_hex(4)}.data"
            self.names[loc] = name
        for t, loc in self.protos:
            # a checksum of the old file would now be wrong, and ONNX treats it as optional
            keep = [(e.key, self.names[loc] if e.key == "location" else e.value) for e in t.external_data]
            del t.external_data[:]
            for k, v in keep:
                if k != "checksum":
                    t.external_data.add(key=k, value=v)

    def _taken(self, name: str) -> bool:
        # any file already there: the replaced model's or the input's (renaming over it would pair
        # the old model with the new data), or another model's that shares the folder
        return name in self.names.values() or os.path.lexists(self.folder / name)

    def stale(self, old: frozenset[Path] | None, inputs: frozenset[Path], in_place: bool) -> list[Path]:
        """Side files of the replaced model to remove once the new one is in place.

        Only those named by ParamSeal for this output: another file may be shared with other models.
        An input's file goes only when the input itself is replaced.
        """
        ours = our_names(self.stem)
        new = {(self.folder / n).resolve() for n in self.names.values()}
        return sorted(
            p
            for p in old or ()
            if p.parent == self.folder.resolve()
            and ours.fullmatch(p.name)
            and p not in new
            and (in_place or p not in inputs)
        )

    def commit(self, model: bytes, tmp: Path, dst: Path, stale: list[Path]) -> None:
        """Write the side files and the model so that the model at ``dst`` always has complete data.

        The side files take names the current model does not use, so the model's own rename is the
        moment the new pair replaces the old one; the old side files are removed after it. ``tmp``
        (the caller's temporary file, unless it is ``dst``) gets the same bytes first, for the caller's
        rename, which then changes nothing.
        """
        if tmp != dst:
            tmp.write_bytes(model)
        # as _paths.atomic_path: a replaced model keeps its mode, owner and attributes, and its data takes
        # the same access (the caller's rename warns of what could not be kept)
        kept = kept_of(dst)
        placed: list[Path] = []
        target = dst  # the file being made, for the message: a side file's temporary would read as an input
        work: Path | None = None  # the temporary files' folder: ours alone, so no link can be put there
        try:
            work = private_folder(dst.name, self.folder)
            temps = [work / self.names[loc] for loc in self.files]
            for loc, parts in self.files.items():
                target = self.folder / self.names[loc]
                t = _new(work / self.names[loc])
                with open(t, "r+b") as f:
                    for offset, data in sorted(parts, key=lambda p: p[0]):
                        f.seek(offset)
                        f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                give(t, kept, target, xattrs=False, warn=False)  # a read-only model's new data is read-only too
            for loc, t in zip(self.files, temps, strict=True):
                target = self.folder / self.names[loc]
                os.replace(t, target)
                placed.append(target)
            target = dst
            t = _new(work / f"{dst.name}.model" if dst.name in self.names.values() else work / dst.name)
            with open(t, "r+b") as f:
                f.write(model)
                f.flush()
                os.fsync(f.fileno())
            give(t, kept, dst, warn=False)
            os.replace(t, dst)
            sync_folder(self.folder)
        except BaseException as e:
            for p in placed:
                p.unlink(missing_ok=True)
            if isinstance(e, OSError) and not isinstance(e, ParamSealError):
                raise cannot_write(target, e) from e
            raise
        finally:
            if work is not None:
                discard_folder(work)
        for p in stale:
            try:
                p.unlink(missing_ok=True)
            except OSError:  # the new pair is complete; an old file left over does no harm
                pass


def _new(path: Path) -> Path:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600))
    return path
