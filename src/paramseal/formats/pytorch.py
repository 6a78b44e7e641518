"""PyTorch state-dict files (``.pt``, ``.pth``, ``.bin``), read safely and written plainly.

Reading never runs code from the file: ``torch.load(..., weights_only=True)``
unpickles only tensors and plain containers, and a file whose pickle asks for
anything else (``os.system``, arbitrary classes) is refused with a
:class:`~paramseal.errors.FormatError`. Both the zip format (torch >= 1.6) and
the legacy pickle format are accepted.

What counts as the model:

* a flat mapping ``name -> Tensor`` (what ``module.state_dict()`` gives);
* a training checkpoint wrapping one such mapping under ``"state_dict"``,
  ``"model"`` or ``"module"`` (other entries such as ``"epoch"`` or
  ``"optimizer"`` are not model weights and are not carried to the output; a
  *sealed* file never has them, so verify reports them as tampering: a loader
  might read them instead of the sealed weights);
* anything else (nested mappings, lists, non-tensor values inside the state
  dict) is refused with a message naming the entry.

Writing always produces a plain state dict with exactly the model's tensors and
no extra keys, loadable with ``module.load_state_dict(torch.load(path))``. The
input's per-module version numbers (the ``_metadata`` attribute of what
``module.state_dict()`` gives) are written back with it (`ModuleVersions`):
``load_state_dict`` reads them to migrate old checkpoints, and without them some
modules change sealed values as they load (a quantization observer's ``eps`` is
reset to its default). They are not sealed: verify neither checks nor reports them.
So is the zip archive's record prefix (`Layout`): ``torch.save(sd, "m.pt")`` names the records
``m/data.pkl``, ... and a file object ``archive/...``; written back as the input had it, a recovered
file is the sealed file byte for byte when its records kept their names.
String metadata (the seal header, the user's keys) is kept in the same ``_metadata``
under the entry ``".paramseal"`` (`META_ENTRY`), a prefix no module has, so
``load_state_dict`` passes it to none. A ``.pt`` without that entry (written by other
tools, by ``torch.save(model.state_dict())``, or by ParamSeal before it kept one) holds
no metadata: its seal header is then the copy in its weights. bfloat16 travels through an int16 view
(``torch.from_numpy`` rejects ml_dtypes' bfloat16), which is lossless.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import struct
import tempfile
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from .. import _json
from .._tempname import final_name, name_max, temp_prefix
from ..errors import FormatError
from ._torch_arrays import import_torch, numpy_to_tensor, tensor_to_numpy
from .base import Loaded

#: Keys of training checkpoints that wrap the state dict.
WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model", "module")
#: Metadata entry naming tied tensors (one tensor under several names): JSON ``[[alias, tensor, position], ...]``.
#: A tied tensor is sealed once; the entry is sealed with the metadata, so re-tying is tampering.
TIED_KEY = "paramseal.tied"
#: The ``_metadata`` entry holding the file's string metadata. Module names are never empty, so
#: no module prefix starts with a dot: ``load_state_dict`` gives this entry to no module.
META_ENTRY = ".paramseal"


@dataclass(frozen=True, slots=True)
class ModuleVersions:
    """A state dict's ``_metadata``: module prefix -> its local metadata (``{"version": 2}``), carried in `Layout`.

    ``load_state_dict`` passes each module its entry; a module whose entry is missing takes the
    state dict for its oldest version and migrates it. Not sealed (see the module docstring).
    """

    by_module: dict[str, dict[str, object]]


@dataclass(frozen=True, slots=True)
class Layout:
    """What the writer keeps of an input ``.pt`` besides tensors and metadata, carried as ``source``.

    ``archive``: the zip records' prefix, which torch takes from the name of the file it writes
    (``m`` for ``m.pt``, ``archive`` for a file object); None for a legacy file.
    """

    versions: ModuleVersions | None
    archive: str | None = None


#: The records' prefix torch writes to a file object (`_Sink`).
_STREAM_ARCHIVE = "archive"


def _archive_name(path: Path) -> str | None:
    """The prefix of a torch zip's records (torch's reader takes it from the first), or None (legacy)."""
    try:
        with zipfile.ZipFile(path) as zf:
            first = zf.namelist()[:1]
    except (OSError, zipfile.BadZipFile, ValueError, NotImplementedError):  # zipfile's: 'zip file version 12.8'
        return None
    return first[0].split("/", 1)[0] if first and "/" in first[0] else None


def _nameable(archive: str, folder: Path) -> bool:
    """Whether torch names the records ``archive/...`` when it writes a file named ``archive + '.pt'``.

    It cuts the folder and the last extension from the path, and writes a path that is not ASCII
    through a file object (``archive``); the name must fit the file system.
    """
    if archive in ("", ".", "..") or not (archive.isascii() and archive.isprintable()) or {"/", "\\"} & set(archive):
        return False
    return len(archive) + len(".pt") <= name_max(folder)


def _module_versions(state: Mapping[Any, Any]) -> ModuleVersions | None:
    """The ``_metadata`` ``module.state_dict()`` attaches, or None if absent or not of the shape it writes."""
    meta = getattr(state, "_metadata", None)
    if not isinstance(meta, Mapping):
        return None
    out: dict[str, dict[str, object]] = {}
    for prefix, local in meta.items():
        if prefix == META_ENTRY:
            continue
        if not (isinstance(prefix, str) and isinstance(local, Mapping)):
            return None
        if not all(isinstance(k, str) and (v is None or type(v) in (int, float, str, bool)) for k, v in local.items()):
            return None  # not plain values: a file whose entry torch loads and saves back as it is, but we won't
        out[prefix] = dict(local)
    return ModuleVersions(out)


def _stored_metadata(state: Mapping[Any, Any], path: Path) -> dict[str, str] | None:
    """The metadata the state dict's ``_metadata`` keeps under `META_ENTRY`, or None if it keeps none."""
    meta = getattr(state, "_metadata", None)
    if not isinstance(meta, Mapping) or META_ENTRY not in meta:
        return None
    entry = meta[META_ENTRY]
    if not isinstance(entry, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in entry.items()):
        raise FormatError(
            f"'{path}': the state dict's _metadata entry '{META_ENTRY}', where ParamSeal keeps the file's metadata, "
            "is not a mapping of strings to strings; the file was edited by hand or by another tool. Take the model "
            "from a kept copy, or remove the entry (sd = torch.load(f, weights_only=True); "
            f"del sd._metadata['{META_ENTRY}']; torch.save(sd, f)) to check the weights against the header they carry"
        )
    return dict(entry)


def keep_metadata(meta: MutableMapping[str, Any], metadata: Mapping[str, str]) -> None:
    """Put ``metadata`` into a state dict's ``_metadata`` ``meta`` under `META_ENTRY`, where the reader finds it.

    The ties are left out: they are written as ties, and read from the tensors.
    """
    kept = {k: v for k, v in metadata.items() if k != TIED_KEY}
    if kept:
        meta[META_ENTRY] = kept


# The legacy (non-zip) torch.save format starts with this pickled magic number.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_ZIP_MAGIC = b"PK\x03\x04"


def first_zip_entry(head: bytes) -> str | None:
    """The name of the first member of a zip file from its first bytes, or None if not visible."""
    if len(head) < 30 or head[:4] != _ZIP_MAGIC:
        return None
    n = struct.unpack("<H", head[26:28])[0]
    if len(head) < 30 + n:
        return None
    return head[30 : 30 + n].decode("utf-8", "replace")


class PyTorchAdapter:
    """Adapter for PyTorch state-dict files (``torch.save`` of a mapping of tensors)."""

    name = "pytorch"
    extensions: tuple[str, ...] = (".pt", ".pth", ".bin")
    keeps_metadata = True  # in the state dict's _metadata (`META_ENTRY`)
    carried_metadata = frozenset({TIED_KEY})  # written back as ties

    def sniff(self, head: bytes) -> bool:
        """A torch zip archive (first member ``<archive>/data.pkl``) or the legacy pickle magic."""
        if head.startswith(_LEGACY_MAGIC):
            return True
        entry = first_zip_entry(head)
        return entry is not None and (entry == "data.pkl" or entry.endswith("/data.pkl"))

    def read(self, path: Path) -> Loaded:
        """Load with ``weights_only=True`` and return the state dict's tensors in file order."""
        torch = import_torch(f"reading PyTorch file '{path}'")
        if is_torchscript(path):
            raise torchscript_error(path)
        if path.is_file() and path.stat().st_size == 0:  # torch.load's EOFError has no message: say what it means
            raise FormatError(f"'{path}' is not a PyTorch file: the file is empty")
        try:
            with warnings.catch_warnings():  # e.g. "pickle protocol 4": we validate strictly below anyway
                warnings.simplefilter("ignore")
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if not _starts_as_torch_save(path):  # bytes read as opcodes ("Unsupported operand 139"): no pickle
                raise FormatError(f"cannot read PyTorch file '{path}': {_unread(path, e)}; {_RESAVE}") from None
            first = str(e).strip().splitlines()
            detail = next((ln for ln in first if "GLOBAL" in ln or "Unsupported" in ln), first[0] if first else "")
            raise FormatError(
                f"refused to load '{path}': its pickle asks for code or objects that are not plain tensors "
                f"({detail.strip()}); ParamSeal loads PyTorch files with weights_only=True and never runs code "
                "from a model file. Re-save the weights from a trusted environment with "
                "torch.save(model.state_dict(), path), or convert them to safetensors"
            ) from None
        # AssertionError: torch's legacy reader asserts what the file holds ("storage key ... not found")
        except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError, KeyError, IndexError,
                zipfile.BadZipFile, struct.error, UnicodeDecodeError, MemoryError, AssertionError) as e:  # fmt: skip
            raise FormatError(f"cannot read PyTorch file '{path}': {_unread(path, e)}; {_RESAVE}") from None
        tensors: dict[str, NDArray[np.generic]] = {}
        storages: set[int] = set()
        state, others, versions, stored = _state_dict(obj, path)
        unique, ties = untie(state)
        # the ties are read from the tensors themselves: a tie re-pointed in the file shows, whatever the entry says
        meta = {k: v for k, v in (stored or {}).items() if k != TIED_KEY} | ties
        for name, t in unique.items():
            what = f"'{path}': tensor '{name}'"
            if t.layout != torch.strided:
                tensor_to_numpy(t, what)  # raises: names the layout and how to convert it
            # a view repeating its values (t.expand, stride 0) costs its full size when read: a file of a few
            # bytes could ask for any amount of memory
            if (size := t.numel() * t.element_size()) > (held := t.untyped_storage().nbytes()):
                raise FormatError(
                    f"{what} is a view of {size} bytes over a storage of {held} (its values repeat, as "
                    "tensor.expand makes them): ParamSeal reads tensors whose values the file holds; save it "
                    "with .contiguous() (or .clone()) if it is meant to be so"
                )
            ptr = t.untyped_storage().data_ptr()  # overlapping views (not ties) get their own copy
            # any dtype: seal refuses one it cannot seal, verify reports a sealed tensor retyped as tampered
            tensors[name] = tensor_to_numpy(t, what, copy=ptr in storages, any_dtype=True)
            storages.add(ptr)
        layout = Layout(versions, _archive_name(path))
        return Loaded(tensors, meta, source=layout, others=others, metadata_kept=stored is not None)

    def write(self, path: Path, loaded: Loaded) -> None:
        """``torch.save`` a plain dict of tensors (no extra keys), the metadata in its ``_metadata``.

        With the input's module versions (``loaded.source``) when it had them, as ``module.state_dict()``
        attaches them, and the metadata under `META_ENTRY` (the ties are written as ties, not there).
        The records are named as the input's were (`Layout`), else ``archive/...``.
        """
        torch = import_torch("writing PyTorch (.pt/.pth/.bin) files")
        state = retie({name: numpy_to_tensor(a) for name, a in loaded.tensors.items()}, loaded.metadata, path)
        layout = loaded.source if isinstance(loaded.source, Layout) else Layout(None)
        by_module = layout.versions.by_module if layout.versions is not None else {}
        meta = OrderedDict((k, dict(v)) for k, v in by_module.items())
        keep_metadata(meta, loaded.metadata)
        if meta:
            state = OrderedDict(state)
            state._metadata = meta  # type: ignore[attr-defined]
        archive = layout.archive
        if archive is not None and archive != _STREAM_ARCHIVE and _nameable(archive, path.parent):
            if _save_named(torch, state, path, archive):
                return
        # Through a file of ours: torch's own writer reports a failed write (a full disk, a quota) as a
        # RuntimeError about positions, without its errno; the OSError met in `_Sink.write` has it.
        with open(path, "wb") as f:
            sink = _Sink(f)
            try:
                torch.save(state, sink)
            except RuntimeError as e:
                if sink.error is not None:
                    raise sink.error from None
                raise OSError(errno.EIO, f"torch.save failed: {str(e).splitlines()[0]}") from e


def _save_named(torch: Any, state: object, path: Path, archive: str) -> bool:
    """``torch.save`` to ``path`` with its records named ``archive/...``: False if that write failed.

    torch names them after the path it is given, so it writes ``archive.pt`` in a new folder beside
    ``path``, moved over it after. torch's own writer reports a failed write without its errno: the
    caller then writes through `_Sink`, which names it (or gives a good file, records ``archive/``).
    A path that is not ASCII torch writes through a file object too: the folder is then named by its
    descriptor under /proc (Linux), else False.
    """
    folder = Path(tempfile.mkdtemp(prefix=temp_prefix(final_name(path), path.parent), suffix=".tmp", dir=path.parent))
    named = folder / f"{archive}.pt"
    fd = -1
    try:  # the folder is removed whatever fails, opening it included
        where = str(named)
        if not where.isascii():
            fd = os.open(folder, os.O_RDONLY)
            where = f"/proc/self/fd/{fd}/{named.name}"
            if not os.path.isdir(os.path.dirname(where)):
                return False
        try:
            torch.save(state, where)
        except RuntimeError:
            return False
        os.chmod(named, 0o600)  # torch gave it a new file's mode: as `path`'s own, no one else may read it yet
        os.replace(named, path)
        return True
    finally:
        if fd >= 0:
            os.close(fd)
        named.unlink(missing_ok=True)
        folder.rmdir()


class _Sink:
    """A file for ``torch.save`` that keeps the OSError a write met (torch turns it into a RuntimeError)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self._f.flush()


def untie(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The state without its tied names, and the metadata entry that names them (empty if none).

    A tied name is the same tensor again: storage, offset, shape, strides and dtype. A sparse
    tensor has no storage to compare: it is kept, for the reader to refuse with a clear message.
    """
    first: dict[tuple[Any, ...], str] = {}
    unique: dict[str, Any] = {}
    tied: list[list[Any]] = []
    for pos, (name, t) in enumerate(state.items()):
        if t.layout != import_torch("reading tensors").strided:
            unique[name] = t
            continue
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and ident in first:
            tied.append([name, first[ident], pos])
        else:
            first.setdefault(ident, name)
            unique[name] = t
    return unique, ({TIED_KEY: json.dumps(tied, separators=(",", ":"))} if tied else {})


def retie(state: dict[str, Any], metadata: Mapping[str, str], path: Path) -> dict[str, Any]:
    """``state`` with the tied names of ``metadata[TIED_KEY]`` put back, as the same tensor objects."""
    if TIED_KEY not in metadata:
        return state
    bad = FormatError(
        f"cannot write the PyTorch file: the metadata entry '{TIED_KEY}' is not one ParamSeal wrote for these "
        "tensors (it names tensors, or places, that reading the written file would not give back); remove it"
    )
    try:
        tied = _json.loads(metadata[TIED_KEY])
        items = list(state.items())
        for alias, name, pos in sorted(tied, key=lambda e: e[2]):
            if not (isinstance(alias, str) and name in state and alias not in dict(items)):
                raise bad
            if type(pos) is not int or not 0 <= pos <= len(items):
                raise bad
            items.insert(pos, (alias, state[name]))
    except (ValueError, TypeError, KeyError, IndexError):  # IndexError: an entry of fewer than 3 items
        raise bad from None
    out = dict(items)
    unique, again = untie(out)  # reading the file must give this state and entry back
    if list(unique) != list(state) or again != {TIED_KEY: metadata[TIED_KEY]}:
        raise bad
    return out


def torchscript_error(path: Path) -> FormatError:
    """The error for a TorchScript archive (any extension): what it is, and how to get a state dict from it."""
    return FormatError(
        f"'{path}' is a TorchScript archive (torch.jit.save), not a state dict; ParamSeal reads state dicts "
        "and never loads code: save torch.jit.load(path).state_dict() with torch.save from a trusted "
        "environment, or convert it to safetensors"
    )


def is_torchscript(path: Path) -> bool:
    """A zip archive with TorchScript code members (``<archive>/code/...`` or ``constants.pkl``)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in n or n.endswith("/constants.pkl") for n in zf.namelist())
    except (OSError, zipfile.BadZipFile, ValueError, NotImplementedError):  # NotImplementedError: a newer zip version
        return False  # torch.load reports the damage


def _state_dict(
    obj: object, path: Path
) -> tuple[dict[str, Any], tuple[str, ...], ModuleVersions | None, dict[str, str] | None]:
    """The state dict, the other entries' keys of a checkpoint that wraps it, its module versions and metadata."""
    torch = import_torch(f"reading PyTorch file '{path}'")
    if not isinstance(obj, Mapping):
        raise FormatError(
            f"'{path}' holds {_a(obj)}, not a state dict; expected a mapping of tensor names to "
            "tensors, as saved by torch.save(model.state_dict(), path)"
        )
    state: Mapping[Any, Any] = obj
    others: tuple[str, ...] = ()
    if state and not all(isinstance(v, torch.Tensor) for v in state.values()):
        wrapped = [k for k in WRAPPER_KEYS if isinstance(state.get(k), Mapping)]
        if len(wrapped) == 1:
            others = tuple(str(k) for k in state if k != wrapped[0])
            state = state[wrapped[0]]
    for name, v in state.items():
        if not isinstance(name, str):
            raise FormatError(f"'{path}': key {name!r} is {_a(name)}; state-dict keys must be strings")
        if not isinstance(v, torch.Tensor):
            raise FormatError(
                f"'{path}': entry '{name}' is {_a(v)}, not a tensor; ParamSeal reads a flat state dict "
                f"(or one wrapped under {', '.join(repr(k) for k in WRAPPER_KEYS)}). Save just the weights with "
                "torch.save(model.state_dict(), path)"
            )
    if not state:
        raise FormatError(f"'{path}' holds an empty state dict: there are no tensors to read")
    return dict(state), others, _module_versions(state), _stored_metadata(state, path)


def _a(obj: object) -> str:
    """``obj``'s type with its article, as a message says it ('an int', 'a list')."""
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


_RESAVE = (
    "save the weights again with torch.save(model.state_dict(), path), or give a file of another format its own "
    "extension"
)


def _starts_as_torch_save(path: Path) -> bool:
    """Whether ``path`` begins as torch.save writes: a zip archive, or (legacy) a pickle of its magic number.

    A pickle of protocol 2 or later begins with PROTO (0x80); torch's legacy writer at protocol 0 or 1
    begins with the magic number as a LONG ('L').
    """
    head = _head(path)
    return head is None or head.startswith((*_ZIPS, b"\x80", b"L"))  # None: torch.load's own error says it


_ZIPS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive begins with a local header, or (empty) its end record


def _head(path: Path) -> bytes | None:
    """The first bytes of ``path``; None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError:
        return None


def _unread(path: Path, e: BaseException) -> str:
    """Why torch.load could not read ``path``, in words: not the exception's class and text.

    torch.load's unpickler fails on bytes that are no pickle with whatever the bytes lead it to
    (an IndexError from an empty stack, a KeyError for an unknown opcode), and its zip reader with
    its C++ checks ("[enforce fail at inline_container.cc]"); none of that helps the user.
    """
    if isinstance(e, MemoryError):
        return "its data asks for more memory than is free (a corrupt file, or one too large for this machine)"
    if isinstance(e, OSError) and e.strerror:
        return f"reading it failed: {e.strerror}"
    if (_head(path) or b"").startswith(_ZIPS):  # not zipfile.is_zipfile: it raises on a damaged end record
        return "it is a zip archive, but not one torch.save writes (a folder holding data.pkl, data/ and version)"
    if isinstance(e, EOFError):
        return "it ends early (truncated, or not a torch.save file)"
    return "torch.load cannot parse it (truncated, damaged or not a torch.save file)"


__all__ = [
    "META_ENTRY",
    "WRAPPER_KEYS",
    "PyTorchAdapter",
    "first_zip_entry",
    "import_torch",
    "keep_metadata",
    "numpy_to_tensor",
    "tensor_to_numpy",
]
