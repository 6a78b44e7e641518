"""The index of a sharded checkpoint: finding the folder's one safetensors index, parsing it, checking it.

`read_index` checks the index on its own; `_check_index`, before sealing, against the tensors
the shards hold. `set_files` finds, without the key, the files that carry a set record: a folder
whose index is lost is still a sealed checkpoint when they are there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _json
from ._tempname import cut_name, name_max
from .errors import FormatError, InputError, ParamSealError, UsageError
from .formats import safetensors as st_format
from .header import SET_KEY

INDEX = "model.safetensors.index.json"
INDEX_SUFFIX = ".safetensors.index.json"  # what every safetensors index's name ends with


def index_files(folder: Path) -> list[str]:
    """The names of the safetensors indexes (``*.safetensors.index.json``) in ``folder``, sorted."""
    try:
        return sorted(p.name for p in folder.iterdir() if p.name.endswith(INDEX_SUFFIX) and p.is_file())
    except OSError:  # not a folder, or one we cannot list: no index (the caller says what is wrong)
        return []


def index_name(folder: Path) -> str:
    """The name of the folder's one safetensors index (``INDEX`` when it has none, which reading then reports).

    Several (a variant's beside the default, ``model.fp16.safetensors.index.json``) are refused:
    they name different shards, and picking one would seal, verify or recover a set the user did
    not choose.
    """
    names = index_files(folder)
    if len(names) > 1:
        raise UsageError(
            f"'{folder}' holds {len(names)} safetensors indexes ({', '.join(map(repr, names))}): ParamSeal "
            "takes one sharded checkpoint per folder; move each index with the shards it names into a folder "
            "of its own (the other files copied to each) and seal, verify or recover each folder"
        )
    return names[0] if names else INDEX


def set_files(folder: Path) -> list[str]:
    """The ``.safetensors`` files in ``folder`` whose metadata carries a set record, sorted (unauthenticated).

    Only their headers are read: enough to tell a sealed sharded checkpoint whose index is lost
    from a folder of plain files. The key authenticates the records later (`_shard_set`).
    """
    try:
        paths = sorted(p for p in folder.iterdir() if p.suffix == ".safetensors" and p.is_file())
    except OSError:
        return []
    out = []
    for p in paths:
        try:
            if SET_KEY in st_format.read_layout(p).metadata:
                out.append(p.name)
        except (ParamSealError, OSError):
            continue  # unreadable: not a shard we can recognise (verify reports it if a record lists it)
    return out


@dataclass(frozen=True, slots=True)
class Index:
    """A parsed safetensors index (``name``: its file name in ``folder``).

    ``lost`` says why the folder's index could not be used (missing, malformed, empty); the
    index is then made from the shards' set records and sealed headers (`_shard_set.open_index`),
    ``name`` is the one the records give, and ``raw`` what could be read of the old one.
    """

    folder: Path
    raw: dict[str, Any]
    weight_map: dict[str, str]
    name: str = INDEX
    lost: str | None = None

    @property
    def shards(self) -> list[str]:
        """Shard file names, in order of first use."""
        return list(dict.fromkeys(self.weight_map.values()))

    def tensors_in(self, shard: str) -> list[str]:
        """The tensors the index maps to ``shard``."""
        return [n for n, f in self.weight_map.items() if f == shard]

    def absent(self) -> list[str]:
        """Shards the index names that are not in the folder (looked up now: call once)."""
        return [s for s in self.shards if not (self.folder / s).is_file()]


def read_index(folder: Path, *, missing_ok: bool = False) -> Index:
    """Parse and check the index: a JSON object whose ``weight_map`` names shard files in this folder.

    With ``missing_ok`` (verify and recover, where a deleted shard is tampering) shards may be
    missing, even all of them.
    """
    name = index_name(folder)
    p = folder / name
    if not p.exists():
        raise FormatError(f"'{folder}' has no safetensors index ('{INDEX}', or another '*{INDEX_SUFFIX}')")
    if not p.is_file():  # a FIFO would block the read, a link to /dev/zero never end it
        raise InputError(f"cannot read '{p}': it is not a regular file")
    try:
        text = p.read_bytes()
    except OSError as e:  # unreadable is not tampering (recover would replace it): a bad input
        raise InputError(f"cannot read '{p}': {e.strerror or e}") from None
    try:
        raw = _json.loads(text)
        if not isinstance(raw, dict):  # else Python's own words ("list indices must be integers...")
            raise TypeError(f"it holds a JSON {type(raw).__name__}, not an object")
        wm = raw["weight_map"]
        if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
            raise TypeError("weight_map must map tensor names to file names")
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(
            f"'{p}' is not a valid safetensors index ({e}); expected {{\"weight_map\": {{...}}}}"
        ) from None
    if not wm:
        raise FormatError(f"'{p}' names no shards: its weight_map is empty")
    longest = name_max(folder)
    for shard in set(wm.values()):
        if Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise FormatError(f"'{p}' names shard '{shard}', which is not a .safetensors file in the same folder")
        if len(os.fsencode(shard)) > longest:  # every look at it (is it there?) would raise ENAMETOOLONG
            raise FormatError(
                f"'{p}' names shard '{cut_name(shard, 60)}...', a name of {len(os.fsencode(shard))} bytes, longer "
                f"than this file system allows ({longest})"
            )
    idx = Index(folder, raw, dict(wm), name)
    gone = [] if missing_ok else idx.absent()
    if gone:
        raise FormatError(f"'{p}' names shard '{gone[0]}', which does not exist in '{folder}'")
    return idx


def salvage(path: Path) -> dict[str, Any]:
    """What can be read of a broken index: its JSON object, or nothing."""
    try:
        raw = _json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _size_note(idx: Index, shards: list[Path], done: str) -> list[str]:
    """A note when the index's ``metadata.total_size`` is not the bytes the ``shards``' tensors take.

    Not tampering: nothing seals it (no set record lists it, and seal copies the index as it is),
    and loaders take it for information only. ``done``: what recover does with it.
    """
    meta = idx.raw.get("metadata")
    if idx.lost is not None or not isinstance(meta, dict) or "total_size" not in meta:
        return []
    try:
        size = sum(e.end - e.start for p in shards for e in st_format.read_layout(p).entries)
    except (ParamSealError, OSError):
        return []
    old = meta["total_size"]
    number = type(old) in (int, float)  # a JSON float (1e3, 135552.0) is a number too; a bool is none
    if number and old == size:
        return []
    shown = str(old) if number else "not a number"
    return [
        f"{idx.name}: metadata.total_size is {shown}, but the shards' tensors take {size} bytes (not tampering: "
        f"it is not sealed, and loaders take it for information only); {done}"
    ]


def _check_index(idx: Index) -> None:
    """Refuse to seal a checkpoint whose index disagrees with its shards (verify would call it tampered)."""
    issues = disagreements(idx)
    if issues:
        raise FormatError(
            f"'{idx.folder / idx.name}' disagrees with its shards: " + "; ".join(issues) + "; fix the index so that it "
            "maps every tensor to the one shard holding it, then seal (a sealed set would fail verify)"
        )


def disagreements(idx: Index, readable: list[str] | None = None) -> list[str]:
    """Each way the index disagrees with its shards' headers (read here; none may be missing).

    A tensor a shard holds that the index omits or maps elsewhere, one the index maps to a shard
    that does not hold it. ``readable``: only these shards are read (``inspect`` on a folder missing one),
    and a tensor mapped to another one is not judged.
    """
    shards = idx.shards if readable is None else [s for s in idx.shards if s in readable]
    held: dict[str, list[str]] = {}
    for shard in shards:
        for e in st_format.read_layout(idx.folder / shard).entries:
            held.setdefault(e.name, []).append(shard)
    issues = []
    for name, where in held.items():
        mapped = idx.weight_map.get(name)
        if mapped is None:
            issues.append(f"tensor '{name}' in shard '{where[0]}' is not in the index")
        elif mapped not in where or len(where) > 1:
            issues.append(f"tensor '{name}' is mapped to '{mapped}' but held by {', '.join(map(repr, where))}")
    unheld = [(n, s) for n, s in idx.weight_map.items() if n not in held and s in shards]
    issues += [f"tensor '{n}' is mapped to '{s}', which does not hold it" for n, s in unheld]
    return issues


__all__ = [
    "INDEX",
    "INDEX_SUFFIX",
    "Index",
    "disagreements",
    "index_files",
    "index_name",
    "read_index",
    "salvage",
    "set_files",
]
